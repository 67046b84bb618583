"""An optional in-process copy of hot Redis entries (a "near cache"), kept
honest by Redis itself: CLIENT TRACKING in BCAST mode pushes the name of every
changed key under the tracked prefix to a dedicated connection, and the entry
is dropped.

Why optional: an invalidation reaches other server processes a moment after
the write that caused it, so a process other than the writer can serve the
previous version for that moment (measured in BENCHMARKS.md; the process that
took the write drops its own copy before acknowledging, so it reads its
writes). Without it every hit costs a Redis round trip; with it a hit is a
dictionary lookup.

Races handled:
- a read that started before an invalidation of its key arrived is not
  stored (each key remembers the sequence number of its last invalidation);
- when the invalidation connection breaks, every entry is dropped and the
  near cache stays off until the connection is back (Redis' tracking rule).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NearEntry:
    value: Any
    stored_at: float


class NearCache:
    """A bounded LRU of entries that invalidations remove. Used from one event
    loop's thread (no locks: nothing here awaits)."""

    def __init__(self, max_entries: int, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_entries
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[str, NearEntry] = OrderedDict()
        # key -> sequence number of its last invalidation (bounded like the entries)
        self._invalidated: OrderedDict[str, int] = OrderedDict()
        self._sequence = 0
        # Reads that started before this sequence number store nothing.
        self._floor = 0
        self._enabled = False

    @property
    def sequence(self) -> int:
        """Take before reading Redis; pass to `put`."""
        return self._sequence

    @property
    def enabled(self) -> bool:
        return self._enabled

    def enable(self) -> None:
        """Start serving entries; call once invalidations are being received."""
        self._enabled = True

    def disable(self) -> None:
        """Stop serving and forget everything (invalidations may have been missed)."""
        self._enabled = False
        self.invalidate(None)

    def get(self, key: str) -> Any | None:
        if not self._enabled:
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() - entry.stored_at > self._ttl:
            self._entries.pop(key, None)
            return None
        return entry.value

    def put(self, key: str, value: Any, read_sequence: int) -> None:
        """Store `value`, read from Redis after `read_sequence` was taken, unless
        the key was invalidated since (the value may be older than Redis)."""
        if not self._enabled or read_sequence < self._floor or self._invalidated.get(key, -1) > read_sequence:
            return
        self._entries[key] = NearEntry(value, self._clock())
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def invalidate(self, keys: Iterable[str] | None) -> None:
        """Drop `keys` (all entries when None)."""
        self._sequence += 1
        if keys is None:
            self._entries.clear()
            self._invalidated.clear()
            # Reads in flight must not store what they read before this.
            self._floor = self._sequence
            return
        for key in keys:
            self._entries.pop(key, None)
            self._invalidated[key] = self._sequence
            self._invalidated.move_to_end(key)
        while len(self._invalidated) > 4 * self._max:
            self._invalidated.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
