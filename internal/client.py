"""`movieservice client`: a small command-line client for people who prefer it to grpcurl.

    movieservice client get 573a1390f29313caabcd42e8
    movieservice client top --genre Drama [--page-size 10] [--page-token T]
    movieservice client nearby 44.85 -93.24 [--radius 10] [--limit 10]
    movieservice client upsert --title "My Movie" [--id ID] [--year 2024] [--genre Drama ...]
                               [--rating 8.1 --votes 5000]

It talks to --target (default localhost:GRPC_PORT) and, for upsert, sends
AUTH_TOKEN (or --token) as a bearer token. With --cacert (the CA that signed
the server's certificate) it connects over TLS, and with --cert and --key it
presents a client certificate (mTLS). Errors print the status code, the
message and any field violations, and exit with status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    client = commands.add_parser("client", help="call the service from the command line")
    client.add_argument("--target", help="host:port (default localhost:$GRPC_PORT or localhost:50051)")
    client.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
    client.add_argument("--cacert", help="connect over TLS, trusting the CA certificates in this PEM file")
    client.add_argument("--cert", help="client certificate (PEM) for mTLS; needs --key")
    client.add_argument("--key", help="the client certificate's private key (PEM)")
    calls = client.add_subparsers(dest="call", required=True)
    get = calls.add_parser("get", help="a movie by id")
    get.add_argument("id")
    top = calls.add_parser("top", help="the best-rated movies")
    top.add_argument("--genre", default="")
    top.add_argument("--page-size", type=int, default=10)
    top.add_argument("--page-token", default="")
    nearby = calls.add_parser("nearby", help="theaters near a point")
    nearby.add_argument("latitude", type=float)
    nearby.add_argument("longitude", type=float)
    nearby.add_argument("--radius", type=float, default=10.0, help="kilometres")
    nearby.add_argument("--limit", type=int, default=10)
    upsert = calls.add_parser("upsert", help="create or replace a movie")
    upsert.add_argument("--id", default="")
    upsert.add_argument("--title", required=True)
    upsert.add_argument("--year", type=int, default=0)
    upsert.add_argument("--genre", action="append", default=[])
    upsert.add_argument("--rating", type=float)
    upsert.add_argument("--votes", type=int)
    upsert.add_argument("--token", default=None, help="bearer token (default $AUTH_TOKEN)")


def run(args: argparse.Namespace) -> int:
    target = args.target or f"localhost:{os.environ.get('GRPC_PORT', '50051')}"
    if bool(args.cert) != bool(args.key):
        print("--cert and --key go together", file=sys.stderr)
        return 2
    try:
        channel = _channel(target, args)
    except OSError as error:
        print(f"cannot read {error.filename}: {error.strerror}", file=sys.stderr)
        return 2
    with channel:
        stub = movies_pb2_grpc.MovieServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            for line in _call(stub, args):
                print(line)
        except grpc.RpcError as error:
            print(_describe(error), file=sys.stderr)
            return 1
    return 0


def _channel(target: str, args: argparse.Namespace) -> grpc.Channel:
    """Plaintext, or TLS when any of --cacert/--cert/--key is given (without
    --cacert, the system's CA certificates are trusted)."""
    if not (args.cacert or args.cert):
        return grpc.insecure_channel(target)

    def read(path: str | None) -> bytes | None:
        return Path(path).read_bytes() if path else None

    credentials = grpc.ssl_channel_credentials(read(args.cacert), read(args.key), read(args.cert))
    return grpc.secure_channel(target, credentials)


def _call(stub: movies_pb2_grpc.MovieServiceStub, args: argparse.Namespace) -> list[str]:
    if args.call == "get":
        return _movie_lines(stub.Get(movies_pb2.GetRequest(id=args.id), timeout=args.timeout).movie)
    if args.call == "top":
        top = movies_pb2.TopRatedRequest(genre=args.genre, page_size=args.page_size, page_token=args.page_token)
        response = stub.TopRated(top, timeout=args.timeout)
        lines = [
            f"{rank:3}. {_rating(m)}  {m.title} ({m.year or '?'})  {m.id}" for rank, m in enumerate(response.movies, 1)
        ]
        if response.next_page_token:
            lines.append(f"next page: --page-token {response.next_page_token}")
        return lines or ["no movies"]
    if args.call == "nearby":
        near = movies_pb2.NearbyRequest(
            latitude=args.latitude, longitude=args.longitude, radius_km=args.radius, limit=args.limit
        )
        found = stub.Nearby(near, timeout=args.timeout)
        return [
            f"{t.distance_km:7.2f} km  #{t.theater.theater_id}  {t.theater.address.street1}, "
            f"{t.theater.address.city}, {t.theater.address.state} {t.theater.address.zipcode}"
            for t in found.theaters
        ] or ["no theaters within that radius"]
    movie = movies_pb2.Movie(id=args.id, title=args.title, year=args.year, genres=args.genre)
    if args.rating is not None or args.votes is not None:
        movie.imdb.CopyFrom(movies_pb2.Imdb(rating=args.rating, votes=args.votes))
    token = args.token if args.token is not None else os.environ.get("AUTH_TOKEN", "")
    response = stub.Upsert(
        movies_pb2.UpsertRequest(movie=movie), metadata=(("authorization", f"Bearer {token}"),), timeout=args.timeout
    )
    return [("created " if response.created else "replaced ") + response.movie.id, *_movie_lines(response.movie)]


def _rating(movie: movies_pb2.Movie) -> str:
    return f"{movie.imdb.rating:4.1f} ({movie.imdb.votes:,} votes)" if movie.imdb.HasField("rating") else "   -"


def _movie_lines(movie: movies_pb2.Movie) -> list[str]:
    lines = [f"{movie.title} ({movie.year or '?'})  {movie.id}"]
    if movie.genres:
        lines.append("  genres:    " + ", ".join(movie.genres))
    if movie.directors:
        lines.append("  directors: " + ", ".join(movie.directors))
    if movie.cast:
        lines.append("  cast:      " + ", ".join(movie.cast[:6]) + (" ..." if len(movie.cast) > 6 else ""))
    if movie.imdb.HasField("rating"):
        lines.append(f"  IMDb:      {_rating(movie)}")
    if movie.HasField("plot"):
        lines.append(f"  plot:      {movie.plot}")
    return lines


def _describe(error: grpc.RpcError) -> str:
    lines = [f"{error.code().name}: {error.details()}"]
    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            lines += [f"  {v.field}: {v.description}" for v in bad_request.field_violations]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="movieservice")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))
