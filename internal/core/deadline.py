"""How long a call may still take."""

from __future__ import annotations

import time
from dataclasses import dataclass

from movieservice.core.errors import DeadlineExceeded


@dataclass(frozen=True)
class Deadline:
    """A point in time (time.monotonic()) by which the call must be answered."""

    at: float

    @classmethod
    def within(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def timeout(self) -> float:
        """The seconds left for a dependency call; DeadlineExceeded when none are."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("deadline exceeded")
        return left
