"""What the store asks of MongoDB, read off the wire: reads from the primary
with read concern majority and writes with write concern majority, even when
the connection string asks for something weaker (README "MongoDB beyond one
node")."""

from __future__ import annotations

from dataclasses import replace

import grpc
from bson import ObjectId

from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc
from movieservice.proto.movies.v1.movies_pb2 import Movie
from tests.conftest import WRITER, serve_in_process
from tests.support.proxy import FaultProxy
from tests.support.rpc import rpc_error

WEAKER = "?readPreference=secondaryPreferred&readConcernLevel=local&w=1"


def test_reads_and_writes_ask_for_majority_whatever_the_url_says(settings, server_loop, mongo_proxy: FaultProxy):
    running = serve_in_process(server_loop, replace(settings, mongo_url=settings.mongo_url + WEAKER))
    try:
        stub = movies_pb2_grpc.MovieServiceStub(grpc.insecure_channel(running.target))
        mongo_proxy.tap.reset()
        written = Movie(id=str(ObjectId()), title="majority")
        stub.Upsert(movies_pb2.UpsertRequest(movie=written), metadata=WRITER, timeout=10)
        missing = str(ObjectId())  # a miss: read from MongoDB
        assert rpc_error(stub.Get, movies_pb2.GetRequest(id=missing), timeout=10).code() == grpc.StatusCode.NOT_FOUND
    finally:
        running.stop()
    commands = mongo_proxy.tap.commands
    writes = [c for c in commands if c.get("findAndModify") in ("movies", "cache_repairs")]
    assert len(writes) >= 2, commands  # the write's intent and the write
    for write in writes:
        assert write["writeConcern"] == {"w": "majority", "j": True}, write
    reads = [c for c in commands if c.get("find") == "movies"]
    assert reads, commands
    for read in reads:
        assert read.get("readConcern") == {"level": "majority"}, read
        assert read.get("$readPreference", {"mode": "primary"})["mode"] == "primary", read
