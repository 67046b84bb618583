"""The use cases of MovieService, free of any transport or driver.

Read with cache-aside, write-through, TopRated, Nearby, index rebuilds and
cache repairs take plain values and a `Deadline`, raise the service's own
errors (`errors.py`) and talk to a cache and a store through the `Cache` and
`Store` ports (`ports.py`). Nothing here imports grpc, redis or pymongo (a
test checks): `movieservice.grpcserver` maps these use cases onto gRPC, and
`movieservice.cache` / `movieservice.store` implement the ports.
"""
