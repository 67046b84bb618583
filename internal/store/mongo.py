"""MongoStore: the `Store` port on MongoDB (or a MongoDB-compatible server),
with pymongo's asyncio client.

Only the commands that both MongoDB and FerretDB implement are used:
find, findAndModify (upsert, no projection), createIndexes, bulk writes.

Every write is acknowledged with write concern `majority` (and journaled where
the server honours it): an Upsert is reported as done only once MongoDB would
keep it through a primary failover. Every read goes to the primary with read
concern `majority`, whatever the connection string says: a secondary may lag
behind an acknowledged write, and a read of a write a failover later rolls
back would put a version into the cache that the store then reuses for other
content. Writes and reads are retried once on a failover (retryWrites,
retryReads). FerretDB accepts and ignores write and read concerns; its own
writes are durable when they return, and it has no replica sets, so failover
is exercised here only by reasoning (README "MongoDB beyond one node").
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo
from bson import ObjectId
from pymongo import AsyncMongoClient, ReadPreference, ReturnDocument
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    PyMongoError,
    ServerSelectionTimeoutError,
)
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from movieservice.breaker import CircuitBreaker
from movieservice.core.ports import (
    CacheRepair,
    DependencyError,
    StoredMovie,
    StoreTimeout,
    StoreUnavailable,
    UpsertOutcome,
)
from movieservice.metrics import DependencyMetrics
from movieservice.proto.movies.v1.movies_pb2 import Movie, Theater
from movieservice.store.mapping import (
    MOVIE_FIELDS,
    VERSION_FIELD,
    document_to_movie,
    document_to_theater,
    format_lastupdated,
    movie_to_document,
)

log = logging.getLogger(__name__)

MOVIES = "movies"
THEATERS = "theaters"
# Movies whose latest write could not be applied to the cache (see Store.record_cache_repair).
CACHE_REPAIRS = "cache_repairs"
WRITE_CONCERN = WriteConcern(w="majority", j=True)
READ_CONCERN = ReadConcern("majority")
# The server's code for a write that breaks a unique index (an `_id` already there).
_DUPLICATE_KEY = 11000
OPERATIONS = (
    "get", "get_many", "upsert", "ratings", "theaters", "ping", "record_repair", "repairs", "clear_repair", "seed",
)  # fmt: skip


class MongoStore:
    def __init__(
        self,
        url: str,
        database: str,
        metrics: DependencyMetrics,
        *,
        selection_timeout_seconds: float = 2.0,
        app_name: str = "movieservice",
        event_listeners: Sequence[Any] = (),
    ) -> None:
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            url,
            appname=app_name,
            serverSelectionTimeoutMS=int(selection_timeout_seconds * 1000),
            connectTimeoutMS=int(selection_timeout_seconds * 1000),
            event_listeners=list(event_listeners),
            tz_aware=True,
            retryWrites=True,
            retryReads=True,
        )
        db = self._client.get_database(database, read_preference=ReadPreference.PRIMARY, read_concern=READ_CONCERN)
        self._movies = db.get_collection(MOVIES, write_concern=WRITE_CONCERN)
        self._theaters = db.get_collection(THEATERS)
        self._repairs = db.get_collection(CACHE_REPAIRS, write_concern=WRITE_CONCERN)
        self._db = db
        self._metrics = metrics
        self._latency = {op: metrics.latency("mongodb", op) for op in OPERATIONS}
        # After 3 consecutive "unavailable" errors, fail at once for a second
        # instead of making every call wait for server selection.
        self._breaker = CircuitBreaker(
            "mongodb",
            failure_threshold=3,
            reset_seconds=1.0,
            probe=self._ping_server,
            close_on_success=True,
            on_change=metrics.breaker_state,
        )

    async def get_movie(self, movie_id: str, timeout: float) -> StoredMovie | None:
        async with self._call("get", timeout):
            doc = await self._movies.find_one({"_id": ObjectId(movie_id)})
        return None if doc is None else _stored(doc)

    async def get_movies(self, movie_ids: Sequence[str], timeout: float) -> dict[str, StoredMovie]:
        if not movie_ids:
            return {}
        async with self._call("get_many", timeout):
            docs = await self._movies.find({"_id": {"$in": [ObjectId(i) for i in movie_ids]}}).to_list()
        return {str(doc["_id"]): _stored(doc) for doc in docs}

    async def upsert_movie(self, movie: Movie, timeout: float) -> UpsertOutcome:
        movie_id = ObjectId(movie.id) if movie.id else ObjectId()
        fields = movie_to_document(movie)
        fields["lastupdated"] = format_lastupdated(datetime.now(UTC))
        update: dict[str, Any] = {"$set": fields, "$inc": {VERSION_FIELD: 1}}
        removed = {name: "" for name in MOVIE_FIELDS if name not in fields}
        if removed:
            update["$unset"] = removed
        async with self._call("upsert", timeout):
            try:
                before = await self._find_and_upsert(movie_id, update)
            except DuplicateKeyError:
                # Two upserts creating the same id raced; the loser updates.
                before = await self._find_and_upsert(movie_id, update)
        version = int(before.get(VERSION_FIELD, 0)) + 1 if before else 1
        stored = {"_id": movie_id, **fields, VERSION_FIELD: version}
        return UpsertOutcome(stored=_stored(stored), created=before is None)

    async def _find_and_upsert(self, movie_id: ObjectId, update: Mapping[str, Any]) -> dict[str, Any] | None:
        return await self._movies.find_one_and_update(
            {"_id": movie_id}, update, upsert=True, return_document=ReturnDocument.BEFORE
        )

    async def movie_ratings(self, timeout: float) -> list[StoredMovie]:
        projection = {"imdb": 1, "genres": 1, VERSION_FIELD: 1}
        async with self._call("ratings", timeout):
            docs = await self._movies.find({}, projection).to_list()
        return [_stored(doc) for doc in docs]

    async def theaters(self, timeout: float) -> list[Theater]:
        async with self._call("theaters", timeout):
            docs = await self._theaters.find({}).to_list()
        return [document_to_theater(doc) for doc in docs]

    async def ping(self, timeout: float) -> None:
        async with self._call("ping", timeout):
            await self._db.command("ping")

    async def close(self) -> None:
        await self._breaker.close()
        await self._client.close()

    # Cache repairs: a durable to-do list shared by every server process.

    async def record_cache_repair(self, movie_id: str, timeout: float, due_in_seconds: float = 0.0) -> CacheRepair:
        now = datetime.now(UTC)
        async with self._call("record_repair", timeout):
            doc = await self._repairs.find_one_and_update(
                {"_id": movie_id},
                {"$set": {"at": now, "due": now + timedelta(seconds=due_in_seconds)}, "$inc": {"n": 1}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        assert doc is not None  # an upsert returning the document after it
        return CacheRepair(movie_id=movie_id, count=int(doc["n"]))

    async def cache_repairs(self, timeout: float) -> list[CacheRepair]:
        # (Records from before due times existed are due.)
        due = {"$or": [{"due": {"$lte": datetime.now(UTC)}}, {"due": {"$exists": False}}]}
        async with self._call("repairs", timeout):
            docs = await self._repairs.find(due).limit(1000).to_list()
        return [CacheRepair(movie_id=doc["_id"], count=int(doc.get("n", 0))) for doc in docs]

    async def clear_cache_repair(self, repair: CacheRepair, timeout: float) -> None:
        async with self._call("clear_repair", timeout):
            await self._repairs.delete_one({"_id": repair.movie_id, "n": repair.count})

    @asynccontextmanager
    async def _call(self, operation: str, seconds: float) -> AsyncIterator[None]:
        """Bound the operations inside by `seconds`, time them, translate driver errors.

        A server that cannot be selected (down, unreachable) is StoreUnavailable
        even when selection gave up because the deadline ran out.
        """
        if not self._breaker.allow():
            self._metrics.error("mongodb", "circuit_open")
            raise StoreUnavailable("MongoDB is unavailable")
        started = time.perf_counter()
        started_at = self._breaker.now()
        try:
            with pymongo.timeout(seconds):
                yield
        except ServerSelectionTimeoutError as error:
            self._failed("unavailable", started_at)
            raise StoreUnavailable("MongoDB is unavailable") from error
        except DependencyError:
            raise
        except PyMongoError as error:
            if error.timeout:
                self._metrics.error("mongodb", "timeout")
                raise StoreTimeout("MongoDB did not answer before the deadline") from error
            if isinstance(error, ConnectionFailure):
                self._failed("unavailable", started_at)
                raise StoreUnavailable("MongoDB is unavailable") from error
            # The server failed the operation (an InternalError while it shuts
            # down, say): the client may retry; the driver's text stays in the log.
            self._metrics.error("mongodb", "error")
            log.warning("MongoDB failed %s: %s", operation, error)
            raise StoreUnavailable("MongoDB could not complete the operation") from error
        finally:
            # Failed operations are timed too: a dependency that is timing out
            # shows as high latency, not only as errors.
            self._latency[operation].observe(time.perf_counter() - started)
        self._breaker.success()

    async def _ping_server(self) -> None:
        with pymongo.timeout(2):
            await self._db.command("ping")

    def _failed(self, kind: str, started_at: float) -> None:
        self._breaker.failure(started_at)
        self._metrics.error("mongodb", kind)

    # Used by `movieservice seed` and the local stack, not by the service.

    async def insert_missing(self, collection: str, docs: Sequence[dict[str, Any]]) -> int:
        """Insert the `docs` whose `_id` is not in `collection` yet; returns how many.

        One unordered bulk insert: each document already there fails alone on
        the unique `_id` index (a duplicate-key error, expected and skipped)
        while the others go in. Neither upserts (on FerretDB a bulk of
        replace-upserts looks each document up by `_id`: 0.5 ms each with the
        index the local stack adds, tens of ms without) nor a look-up first (an
        `_id: {$in: ...}` find per batch, which FerretDB answers by reading the
        whole collection: seeding grew with the square of its size, 108 s for
        23,500 movies).
        """
        if not docs:
            return 0  # insert_many refuses an empty list
        target = self._db.get_collection(collection)
        async with self._call("seed", 300):
            try:
                result = await target.insert_many(list(docs), ordered=False)
            except BulkWriteError as error:
                errors = error.details.get("writeErrors", [])
                if any(entry.get("code") != _DUPLICATE_KEY for entry in errors):
                    raise
                return int(error.details.get("nInserted", 0))
        return len(result.inserted_ids)

    async def replace_documents(self, collection: str, docs: Sequence[dict[str, Any]]) -> None:
        """Insert or replace each of `docs` by `_id`."""
        target = self._db.get_collection(collection)
        async with self._call("seed", 300):
            for doc in docs:
                await target.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    async def ensure_indexes(self) -> None:
        async with self._call("seed", 60):
            await self._theaters.create_index("theaterId", unique=True)

    async def count(self, collection: str) -> int:
        async with self._call("seed", 60):
            return await self._db.get_collection(collection).count_documents({})

    async def movie_ids(self) -> list[str]:
        """Every movie id, sorted (for tests, the benchmark and the load tests)."""
        async with self._call("seed", 120):
            return sorted([str(doc["_id"]) async for doc in self._movies.find({}, {"_id": 1})])


def _stored(doc: Mapping[str, Any]) -> StoredMovie:
    return StoredMovie(movie=document_to_movie(doc), version=int(doc.get(VERSION_FIELD, 0)))
