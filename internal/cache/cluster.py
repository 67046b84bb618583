"""RedisClusterCache: the `Cache` port on a Redis Cluster (REDIS_CLUSTER=1).

redis-py's own cluster client (`redis.asyncio.cluster.RedisCluster`) routes
each command to the master of its key's slot and follows MOVED and ASK. The
key schema is `ClusterKeys` (keys.py): a movie's copy, fill lease and version
fence share one slot, so a fill and the movie part of a write stay single
atomic scripts, as on one node. What changes:

- **Writes** are one script in the movie's slot (write_movie_slot.lua), then
  one per ranking it enters or leaves (rank_entry.lua), each in its sorted
  set's slot with its own per-movie versions. An Upsert is no longer atomic
  across rankings; each ranking still only ever moves to a newer version of
  the movie, whatever order the scripts arrive in.
- **Replication**: a write is acknowledged by Redis only once a replica has it
  (WAIT on the write's own connection), so a failover to that replica cannot
  lose it; otherwise it fails (and the service records a repair).
- **TopRated** reads top:ready and the page's slot side by side, then the
  movies' copies (one pipeline, split per node).
- **Scans** (index rebuilds, `movieservice seed` clearing the keys) run on
  every master.
- **No near cache**: CLIENT TRACKING would have to be set on every master and
  set again on each new master after a failover or a resharding, and the
  invalidations of writes in between would be lost. NEAR_CACHE_SIZE is
  ignored, with a warning at start.
- No auto-pipelining (pipelining.py is for one connection to one node): the
  cluster client sends each command on a pooled connection to its node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.backoff import NoBackoff
from redis.exceptions import ClusterError, MovedError, RedisClusterException, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from movieservice.cache import scripts
from movieservice.cache.keys import ClusterKeys, Keys
from movieservice.cache.redis_cache import _GEO_FORMAT, RedisCache, _jitter, geo_entries
from movieservice.core.ports import RankedId, RankEntry, StoredMovie, TopCursor
from movieservice.metrics import DependencyMetrics
from movieservice.proto.movies.v1.movies_pb2 import Theater

T = TypeVar("T")
log = logging.getLogger(__name__)

# Movies applied at once; each sends a few commands (the client's pools hold 100 connections a node).
_REBUILD_BATCH = 25
# How long a write waits for its replicas to confirm it (WAIT's timeout), as a
# share of the Redis timeout.
_WAIT_SHARE = 0.4


def _closed_transport(error: RuntimeError) -> bool:
    """uvloop refuses a write to a transport the peer has closed with a
    RuntimeError ("... the handler is closed"), where asyncio's own loop drops
    the write and the read fails with the ConnectionError redis-py handles (a
    master killed under load did this to an Upsert: INTERNAL). redis-py has
    dropped the connection by then; the next command reconnects."""
    return "closed" in str(error)


class ReplicationUnconfirmed(RedisError):
    """A write reached its master, but no replica confirmed it in time."""


class RedisClusterCache(RedisCache):
    keys: ClusterKeys

    def __init__(
        self, url: str, metrics: DependencyMetrics, *, wait_replicas: int = 1, near_cache_size: int = 0, **options: Any
    ) -> None:
        """`wait_replicas`: how many replicas must confirm a write (WAIT) before
        it counts as cached; 0 for a cluster without replicas."""
        if near_cache_size:
            log.warning(
                "NEAR_CACHE_SIZE=%d is ignored on a Redis Cluster: the near cache needs invalidations "
                "from every master, which do not survive failovers (README: Redis Cluster)",
                near_cache_size,
            )
        self._url = url
        self._wait_replicas = wait_replicas
        # Each master's replicas as its last write found them (ROLE).
        self._replicas: dict[str, int] = {}
        super().__init__(url, metrics, near_cache_size=0, **options)
        # WAIT gives up before the socket timeout, so that its answer (how many
        # replicas confirmed) arrives.
        self._wait_ms = max(1, int(self._timeout_seconds * 1000 * _WAIT_SHARE))

    def _connect(self, url: str, timeout_seconds: float, tls: Mapping[str, Any]) -> scripts.Execute:
        # One attempt, as on one node: a failing slot opens the breaker and the
        # service reads the store. A connection error marks the client's slot
        # map stale; the next command (the breaker's probe) reloads it, which is
        # how a promoted replica is found.
        self._cluster = RedisCluster.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0),
            protocol=2,
            **tls,
        )
        return self._cluster.execute_command

    def _connection_options(self) -> Mapping[str, Any]:
        parts = urlsplit(self._url)
        return {"host": parts.hostname or "localhost", "port": parts.port or 6379, "db": 0}

    @staticmethod
    def _key_schema(prefix: str) -> Keys:
        return ClusterKeys(prefix)

    async def _disconnect(self) -> None:
        await self._cluster.aclose()

    async def _ping_servers(self) -> None:
        # Every master: the breaker closes only once each answers (after a
        # failover: once the slot map names the new master).
        await self._cluster.execute_command("PING", target_nodes=RedisCluster.PRIMARIES)

    async def _run(self, operation: str, call: Callable[[], Awaitable[T]], *, always_try: bool = False) -> T:
        # The cluster client raises some failures (a slot no master covers,
        # mid-failover) outside RedisError: they are Redis being unavailable too.
        async def translated() -> T:
            try:
                return await call()
            except RedisClusterException as error:
                raise ClusterError(f"{type(error).__name__}: {error}") from error
            except RuntimeError as error:
                if not _closed_transport(error):
                    raise
                raise RedisConnectionError(f"the connection was closed: {error}") from error

        return await super()._run(operation, translated, always_try=always_try)

    # Writes

    async def write_movie(self, stored: StoredMovie, rank: RankEntry) -> None:
        await self._run("write", lambda: self._write(rank, stored.data, self._replicated), always_try=True)

    async def _write(self, rank: RankEntry, body: bytes, execute: scripts.Execute) -> None:
        """The movie's slot first (its copy, fence and genres), then every ranking it enters or leaves."""
        keys = self.keys
        ttl_ms = self._ttl_ms * _jitter()
        genres = "\n".join(rank.genres)
        _, index, previous = await scripts.WRITE_MOVIE_SLOT.run(
            execute,
            fence=keys.fence(rank.movie_id),
            genres_of=keys.genres_of(rank.movie_id),
            entry=keys.movie(rank.movie_id),
            lease=keys.fill_lease(rank.movie_id),
            movie_id=rank.movie_id,
            version=rank.version,
            genres=genres,
            body=body,
            ttl_ms=int(ttl_ms),
            expires_at_ms=int(time.time() * 1000 + ttl_ms),
        )
        if not index:
            return  # a newer version is fenced: its writer updates the rankings
        score = "" if rank.score is None else repr(-rank.score)
        rankings = {keys.top_all: score}
        for genre in (previous or b"").decode().split("\n"):
            if genre:
                rankings[keys.top_genre(genre)] = ""
        for genre in rank.genres:
            rankings[keys.top_genre(genre)] = score
        await asyncio.gather(
            *(
                scripts.RANK_ENTRY.run(
                    execute,
                    ranking=ranking,
                    versions=keys.ranking_versions(ranking),
                    movie_id=rank.movie_id,
                    version=rank.version,
                    score=ranking_score,
                )
                for ranking, ranking_score in rankings.items()
            )
        )

    async def _replicated(self, *args: Any) -> Any:
        """Run a script (EVALSHA/EVAL with its keys) on its slot's master and
        WAIT, on the same connection, until the master's replicas have it (up
        to `wait_replicas`). A master with fewer replicas than that (its own
        replica was promoted away, or died) is waited for with the ones it has:
        with none, no failover can lose the write either."""
        if not self._wait_replicas:
            return await self._cluster.execute_command(*args)
        await self._cluster.initialize()
        node: ClusterNode | None = self._cluster.get_node_from_key(args[3])
        if node is None:
            raise ClusterError(f"no master serves the slot of {args[3]!r}")
        wanted = min(self._wait_replicas, self._replicas.get(node.name, self._wait_replicas))
        commands = [
            PipelineCommand(0, *args),
            PipelineCommand(1, "WAIT", wanted, self._wait_ms),
            PipelineCommand(2, "ROLE"),
        ]
        try:
            await node.execute_pipeline(commands)
        except (RedisError, OSError, RuntimeError) as error:
            if isinstance(error, RuntimeError) and not _closed_transport(error):
                raise
            # Through the client, whose error handling reloads the slot map; the
            # script is idempotent (versions). Unconfirmed either way.
            await self._cluster.execute_command(*args)
            raise ReplicationUnconfirmed(f"the write's connection failed: {error}") from error
        result, confirmed, role = (cast(Any, command.result) for command in commands)
        if isinstance(result, MovedError):
            # The slot moved (a failover, a resharding): the client follows
            # MOVED and reloads its map; the script is idempotent (versions).
            await self._cluster.execute_command(*args)
            raise ReplicationUnconfirmed(f"slot moved during the write: {result}")
        for reply in (result, confirmed, role):
            if isinstance(reply, Exception):
                raise reply
        # ROLE of a master: [b"master", offset, [[host, port, offset], ...]]
        replicas = len(role[2]) if role[0] == b"master" else 0
        self._replicas[node.name] = replicas
        if int(confirmed) < min(self._wait_replicas, replicas):
            raise ReplicationUnconfirmed(f"{confirmed} of {replicas} replicas confirmed the write")
        return result

    # TopRated

    async def top_page(self, genre: str, after: TopCursor | None, limit: int) -> list[RankedId] | None:
        ranking = self.keys.top_genre(genre) if genre else self.keys.top_all

        async def page() -> list[RankedId] | None:
            ready, flat = await asyncio.gather(
                self._cluster.execute_command("GET", self.keys.top_ready),
                scripts.RANKING_PAGE.run(
                    self._execute,
                    ranking=ranking,
                    after_score="" if after is None else repr(-after.score),
                    after_id="" if after is None else after.movie_id,
                    limit=limit,
                ),
            )
            if ready != self._tag.encode():
                return None
            ids = [flat[i].decode() for i in range(0, len(flat), 2)]
            bodies: list[Any] = []
            if ids:
                pipe = self._cluster.pipeline()
                for movie_id in ids:
                    pipe.execute_command("HGET", self.keys.movie(movie_id), "b")
                bodies = await pipe.execute()
            return [
                RankedId(movie_id=movie_id, score=-float(flat[2 * i + 1]), data=bodies[i] or None)
                for i, movie_id in enumerate(ids)
            ]

        return await self._run("top_page", page)

    async def rebuild_top_index(self, load_entries: Callable[[], Awaitable[Iterable[RankEntry]]]) -> int:
        """As on one node: the old rankings (and top:ready) go first, then the
        store is read, so every write is in that snapshot or lands after the
        delete, and the per-slot versions order the two. The movies' fences and
        genres stay: they are as true as before."""

        async def clear() -> None:
            stale = await self._scan(self.keys.top_pattern)
            await self._unlink([self.keys.top_ready, *(key.decode() for key in stale)])

        await self._run("rebuild", clear)
        entries = list(await load_entries())

        async def apply() -> None:
            for start in range(0, len(entries), _REBUILD_BATCH):
                batch = entries[start : start + _REBUILD_BATCH]
                await asyncio.gather(*(self._write(r, b"", self._execute) for r in batch))
            await self._execute("SET", self.keys.top_ready, self._tag)

        await self._run("rebuild", apply)
        return len(entries)

    async def _scan(self, match: str) -> list[bytes]:
        """Every key matching `match` on every master."""
        return [
            key async for key in self._cluster.scan_iter(match=match, count=1000, target_nodes=RedisCluster.PRIMARIES)
        ]

    async def _unlink(self, keys: Sequence[str | bytes]) -> None:
        """UNLINK each key in its own slot (one pipeline per 1000, split per node)."""
        for start in range(0, len(keys), 1000):
            pipe = self._cluster.pipeline()
            for key in keys[start : start + 1000]:
                pipe.execute_command("UNLINK", key)
            await pipe.execute()

    # Nearby

    async def rebuild_geo_index(self, theaters: Sequence[Theater]) -> None:
        locations, details = geo_entries(theaters)

        async def rebuild() -> None:
            # The three keys share the {theaters} slot: one MULTI/EXEC on its master.
            pipe = self._cluster.pipeline(transaction=True)
            pipe.execute_command("DEL", self.keys.geo, self.keys.geo_details, self.keys.geo_ready)
            if theaters:
                pipe.execute_command("GEOADD", self.keys.geo, *locations)
                pipe.execute_command("HSET", self.keys.geo_details, *details)
            pipe.execute_command("SET", self.keys.geo_ready, _GEO_FORMAT)
            await pipe.execute()

        await self._run("rebuild", rebuild)

    # Lifecycle

    async def clear(self) -> int:
        """Delete every key under the prefix, on every master."""

        async def clear() -> int:
            keys = await self._scan(self.keys.prefix + "*")
            await self._unlink(keys)
            return len(keys)

        return await self._run("clear", clear)
