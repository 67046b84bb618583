"""MovieService over gRPC (grpc.aio): the one thin servicer that maps the use
cases of `movieservice.core` onto the RPCs, the interceptor, health, and the
server's serving model (see server.py)."""
