"""MongoStore: the `Store` interface on MongoDB (or a MongoDB-compatible server).

Only the commands that both MongoDB and FerretDB implement are used:
find, findAndModify (upsert, no projection), createIndexes, bulk writes.

Every write is acknowledged with write concern `majority` (and journaled where
the server honours it): an Upsert is reported as done only once MongoDB would
keep it through a primary failover. FerretDB accepts and ignores write
concerns; its own writes are durable when they return.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pymongo
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    PyMongoError,
    ServerSelectionTimeoutError,
)
from pymongo.write_concern import WriteConcern

from internal.service.ports import (
    DependencyError,
    StoredMovie,
    StoreTimeout,
    StoreUnavailable,
    UpsertOutcome,
)
from internal.store.mapping import (
    MOVIE_FIELDS,
    VERSION_FIELD,
    document_to_movie,
    document_to_theater,
    format_lastupdated,
    movie_to_document,
)
from movies.v1.movies_pb2 import Movie, Theater

log = logging.getLogger(__name__)

MOVIES = "movies"
THEATERS = "theaters"


class MongoStore:
    def __init__(
        self,
        url: str,
        database: str,
        *,
        selection_timeout_seconds: float = 2.0,
        app_name: str = "movieservice",
        event_listeners: Sequence[Any] = (),
    ) -> None:
        self._client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            url,
            appname=app_name,
            serverSelectionTimeoutMS=int(selection_timeout_seconds * 1000),
            connectTimeoutMS=int(selection_timeout_seconds * 1000),
            event_listeners=list(event_listeners),
            tz_aware=True,
        )
        db = self._client.get_database(database)
        self._movies = db.get_collection(MOVIES, write_concern=WriteConcern(w="majority", j=True))
        self._theaters = db.get_collection(THEATERS)
        self._db = db

    def get_movie(self, movie_id: str, timeout: float) -> StoredMovie | None:
        with _deadline(timeout):
            doc = self._movies.find_one({"_id": ObjectId(movie_id)})
        return None if doc is None else _stored(doc)

    def get_movies(self, movie_ids: Sequence[str], timeout: float) -> dict[str, StoredMovie]:
        if not movie_ids:
            return {}
        with _deadline(timeout):
            docs = list(self._movies.find({"_id": {"$in": [ObjectId(i) for i in movie_ids]}}))
        return {str(doc["_id"]): _stored(doc) for doc in docs}

    def upsert_movie(self, movie: Movie, timeout: float) -> UpsertOutcome:
        movie_id = ObjectId(movie.id) if movie.id else ObjectId()
        fields = movie_to_document(movie)
        fields["lastupdated"] = format_lastupdated(datetime.now(UTC))
        update: dict[str, Any] = {"$set": fields, "$inc": {VERSION_FIELD: 1}}
        removed = {name: "" for name in MOVIE_FIELDS if name not in fields}
        if removed:
            update["$unset"] = removed
        with _deadline(timeout):
            try:
                before = self._find_and_upsert(movie_id, update)
            except DuplicateKeyError:
                # Two upserts creating the same id raced; the loser updates.
                before = self._find_and_upsert(movie_id, update)
        version = int(before.get(VERSION_FIELD, 0)) + 1 if before else 1
        stored = {"_id": movie_id, **fields, VERSION_FIELD: version}
        return UpsertOutcome(stored=_stored(stored), created=before is None)

    def _find_and_upsert(self, movie_id: ObjectId, update: Mapping[str, Any]) -> dict[str, Any] | None:
        return self._movies.find_one_and_update(
            {"_id": movie_id}, update, upsert=True, return_document=ReturnDocument.BEFORE
        )

    def movie_ratings(self, timeout: float) -> list[StoredMovie]:
        projection = {"imdb": 1, "genres": 1, VERSION_FIELD: 1}
        with _deadline(timeout):
            docs = list(self._movies.find({}, projection))
        return [_stored(doc) for doc in docs]

    def theaters(self, timeout: float) -> list[Theater]:
        with _deadline(timeout):
            docs = list(self._theaters.find({}))
        return [document_to_theater(doc) for doc in docs]

    def ping(self, timeout: float) -> None:
        with _deadline(timeout):
            self._db.command("ping")

    def close(self) -> None:
        self._client.close()

    # Used by `movieservice seed`, not by the service.
    def insert_missing(self, collection: str, docs: Sequence[dict[str, Any]]) -> int:
        """Insert the `docs` whose `_id` is not in `collection` yet; returns how many.

        Bulk inserts rather than upserts: on FerretDB a bulk of replace-upserts
        takes tens of milliseconds per document, an insert well under one.
        """
        target = self._db.get_collection(collection)
        with _deadline(300):
            existing = {doc["_id"] for doc in target.find({"_id": {"$in": [d["_id"] for d in docs]}}, {"_id": 1})}
            new = [doc for doc in docs if doc["_id"] not in existing]
            if new:
                target.insert_many(new, ordered=False)
        return len(new)

    def replace_documents(self, collection: str, docs: Sequence[dict[str, Any]]) -> None:
        """Insert or replace each of `docs` by `_id`."""
        target = self._db.get_collection(collection)
        with _deadline(300):
            for doc in docs:
                target.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    def ensure_indexes(self) -> None:
        with _deadline(60):
            self._theaters.create_index("theaterId", unique=True)

    def count(self, collection: str) -> int:
        with _deadline(60):
            return self._db.get_collection(collection).count_documents({})


def _stored(doc: Mapping[str, Any]) -> StoredMovie:
    return StoredMovie(movie=document_to_movie(doc), version=int(doc.get(VERSION_FIELD, 0)))


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Bound every operation inside by `seconds` and translate driver errors.

    A server that cannot be selected (down, unreachable) is StoreUnavailable
    even when selection gave up because the deadline ran out.
    """
    try:
        with pymongo.timeout(seconds):
            yield
    except ServerSelectionTimeoutError as error:
        raise StoreUnavailable("MongoDB is unavailable") from error
    except DependencyError:
        raise
    except PyMongoError as error:
        if error.timeout:
            raise StoreTimeout("MongoDB did not answer before the deadline") from error
        if isinstance(error, ConnectionFailure):
            raise StoreUnavailable("MongoDB is unavailable") from error
        raise
