"""Keeping the near cache honest: Redis' CLIENT TRACKING in broadcast mode
sends the name of every changed key under the movie prefix to one connection
of ours, and the entry is dropped from the near cache.

The connection is a redis-py PubSub: `CLIENT TRACKING on REDIRECT <itself>
BCAST PREFIX <movie prefix>`, then SUBSCRIBE to `__redis__:invalidate` (RESP2).
The near cache serves only while that connection is up and the cache's
circuit breaker is closed; when either fails every entry is dropped, as
Redis' tracking rules require, since invalidations may have been missed. A
reconnect that redis-py makes by itself would come back without tracking, so
it counts as a failure too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from movieservice.cache.near import NearCache

log = logging.getLogger(__name__)

_CHANNEL = "__redis__:invalidate"
_RETRY_SECONDS = 0.5


class InvalidationListener:
    def __init__(
        self,
        url: str,
        timeout_seconds: float,
        movie_prefix: str,
        near: NearCache,
        cache_healthy: Callable[[], bool],
        *,
        tls: Mapping[str, Any] | None = None,
    ) -> None:
        # RESP2: tracking redirected to a connection that is subscribed to the channel.
        self._client = aioredis.Redis.from_url(
            url, protocol=2, socket_connect_timeout=timeout_seconds, retry=Retry(NoBackoff(), 0), **(tls or {})
        )
        self._movie_prefix = movie_prefix
        self._near = near
        self._cache_healthy = cache_healthy
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()

    async def _run(self) -> None:
        while not self._stop.is_set():
            pubsub = self._client.pubsub()
            session = _Session()
            try:
                await self._track(pubsub, session)
                while not self._stop.is_set() and not session.reconnected:
                    if self._cache_healthy() and not self._near.enabled:
                        self._near.enable()
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        self._invalidate(message["data"])
            except (RedisError, OSError) as error:
                log.debug("near cache invalidations interrupted: %s", error)
            except Exception:
                log.exception("near cache invalidations failed; the near cache is off until they are back")
            finally:
                self._near.disable()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_RETRY_SECONDS):
                    await self._stop.wait()

    async def _track(self, pubsub: aioredis.client.PubSub, session: _Session) -> None:
        await pubsub.execute_command("CLIENT", "ID")
        client_id = await pubsub.parse_response(block=True)
        await pubsub.execute_command(
            "CLIENT", "TRACKING", "on", "REDIRECT", client_id, "BCAST", "PREFIX", self._movie_prefix
        )
        await pubsub.parse_response(block=True)
        await pubsub.subscribe(_CHANNEL)
        assert pubsub.connection is not None
        pubsub.connection.register_connect_callback(session.on_connect)

    def _invalidate(self, keys: Any) -> None:
        """`keys` None (or not a list): everything was flushed."""
        if not isinstance(keys, list):
            self._near.invalidate(None)
            return
        prefix = self._movie_prefix.encode()
        self._near.invalidate([key.removeprefix(prefix).decode() for key in keys])


class _Session:
    """One tracking connection's life: any later (re)connect ends it."""

    def __init__(self) -> None:
        self.reconnected = False

    async def on_connect(self, connection: Any) -> None:
        self.reconnected = True
