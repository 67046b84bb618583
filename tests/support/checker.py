"""A consistency checker for the guarantee "a Get that starts after an Upsert
was acknowledged returns that version or a newer one".

Each movie has one writer that upserts increasing versions ("<movie> v<N>"
in the title) and records when each was acknowledged; readers Get random
movies from random servers and record when each Get started and which
version it returned. A read is stale when a newer version had been
acknowledged before the read started. All times come from one monotonic clock
in this process.
"""

from __future__ import annotations

import bisect
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc


@dataclass
class StaleRead:
    movie: str
    returned: int
    acknowledged: int
    # How long before the read began the newer version had been acknowledged.
    lag_seconds: float
    # Whether the read went to the server process that took that write.
    same_server: bool


@dataclass
class Report:
    reads: int = 0
    writes: int = 0
    stale: list[StaleRead] = field(default_factory=list)
    read_codes: Counter[str] = field(default_factory=Counter)
    write_codes: Counter[str] = field(default_factory=Counter)


class ConsistencyChecker:
    def __init__(
        self,
        targets: list[str],
        movie_ids: list[str],
        token: str,
        readers: int = 8,
        pin_writers: bool = False,
        write_pause: float = 0.0,
    ) -> None:
        """With `pin_writers`, each movie is always written through the same
        server, so that stale reads can be told apart by server. With
        `write_pause`, each writer rests a random 0 to 2x that many seconds
        between writes (a stale copy then lives until the next write)."""
        self._channels = [grpc.insecure_channel(target) for target in targets]
        self._stubs = [movies_pb2_grpc.MovieServiceStub(channel) for channel in self._channels]
        self._movies = movie_ids
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._readers = readers
        self._lock = threading.Lock()
        # Per movie: acknowledgement times and versions, in order.
        self._acked_at: dict[str, list[float]] = {m: [] for m in movie_ids}
        self._acked_version: dict[str, list[int]] = {m: [] for m in movie_ids}
        self._acked_server: dict[str, list[int]] = {m: [] for m in movie_ids}
        self._pin = pin_writers
        self._write_pause = write_pause
        self.report = Report()

    def run(self, seconds: float, during: Callable[[], None] | None = None) -> Report:
        """Write and read for `seconds`; `during` runs meanwhile (a fault, say)."""
        stop = threading.Event()
        threads = [threading.Thread(target=self._write, args=(m, stop)) for m in self._movies]
        threads += [threading.Thread(target=self._read, args=(i, stop)) for i in range(self._readers)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        try:
            if during is not None:
                during()
            time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        for channel in self._channels:
            channel.close()
        return self.report

    def _write(self, movie_id: str, stop: threading.Event) -> None:
        number = 0
        pinned = self._movies.index(movie_id) % len(self._stubs)
        rng = random.Random(movie_id)
        while not stop.is_set():
            if self._write_pause:
                stop.wait(rng.uniform(0, 2 * self._write_pause))
            number += 1
            server = pinned if self._pin else random.randrange(len(self._stubs))
            stub = self._stubs[server]
            movie = movies_pb2.Movie(id=movie_id, title=f"{movie_id} v{number}", genres=["Drama"])
            try:
                stub.Upsert(movies_pb2.UpsertRequest(movie=movie), metadata=self._metadata, timeout=10)
                acknowledged = time.monotonic()
                code = "OK"
            except grpc.RpcError as error:
                code = error.code().name
                time.sleep(0.05)
            with self._lock:
                self.report.writes += 1
                self.report.write_codes[code] += 1
                if code == "OK":
                    self._acked_at[movie_id].append(acknowledged)
                    self._acked_version[movie_id].append(number)
                    self._acked_server[movie_id].append(server)

    def _read(self, index: int, stop: threading.Event) -> None:
        rng = random.Random(index)
        while not stop.is_set():
            movie_id = rng.choice(self._movies)
            server = rng.randrange(len(self._stubs))
            stub = self._stubs[server]
            started = time.monotonic()
            try:
                title = stub.Get(movies_pb2.GetRequest(id=movie_id), timeout=10).movie.title
                code = "OK"
            except grpc.RpcError as error:
                code = error.code().name
                time.sleep(0.01)
            with self._lock:
                self.report.reads += 1
                self.report.read_codes[code] += 1
                if code != "OK":
                    continue
                returned = int(title.rsplit(" v", 1)[1]) if " v" in title else 0
                position = bisect.bisect_left(self._acked_at[movie_id], started)
                if position:
                    acknowledged = self._acked_version[movie_id][position - 1]
                    if returned < acknowledged:
                        # The oldest acknowledged write the read missed.
                        first = position - 1
                        while first > 0 and self._acked_version[movie_id][first - 1] > returned:
                            first -= 1
                        self.report.stale.append(
                            StaleRead(
                                movie=movie_id,
                                returned=returned,
                                acknowledged=acknowledged,
                                lag_seconds=started - self._acked_at[movie_id][first],
                                same_server=self._acked_server[movie_id][first] == server,
                            )
                        )
