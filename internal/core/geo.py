"""Great-circle distance, the definition Nearby's results follow."""

from __future__ import annotations

import math
from collections.abc import Iterable

# Mean Earth radius (IUGG), in kilometres.
EARTH_RADIUS_KM = 6371.0088


def distances_km(latitude: float, longitude: float, points: Iterable[tuple[float, float]]) -> list[float]:
    """Haversine distance from (latitude, longitude) to each (latitude, longitude) of `points`.

    One call per Nearby request: the origin's terms are computed once.
    """
    radians, sin, cos = math.radians, math.sin, math.cos
    phi1 = radians(latitude)
    cos_phi1 = cos(phi1)
    distances = []
    for point_latitude, point_longitude in points:
        phi2 = radians(point_latitude)
        a = sin((phi2 - phi1) / 2) ** 2 + cos_phi1 * cos(phi2) * sin(radians(point_longitude - longitude) / 2) ** 2
        distances.append(2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a))))
    return distances
