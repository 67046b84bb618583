"""Probabilistic early expiration (XFetch: Vattani, Chierichetti, Lowenstein,
"Optimal Probabilistic Cache Stampede Prevention", VLDB 2015).

A hit on an entry close to expiry refreshes it with probability
exp(-time left / (beta * load time)): the closer to expiry and the costlier
the reload, the likelier, so a hot entry is reloaded once, before it expires,
instead of by a burst of misses when it does.
"""

from __future__ import annotations

import math
import random
import time

# Above 1 favours earlier refreshes.
BETA = 1.0
# Beyond this many load times before expiry the probability is below e**-30: skip the draw.
_HORIZON = 30


def refresh_early(expiry_ms: bytes | float | None, load_ms: bytes | float | None, now_ms: float | None = None) -> bool:
    """Whether this hit should refresh the entry: now - delta * beta * ln(U) >= expiry, U in (0, 1]."""
    if expiry_ms is None or load_ms is None:
        return False
    delta = float(load_ms) * BETA
    if delta <= 0:
        return False
    expiry = float(expiry_ms)
    if now_ms is None:
        now_ms = time.time() * 1000
    if now_ms < expiry - _HORIZON * delta:
        return False
    return now_ms - delta * math.log(1.0 - random.random()) >= expiry
