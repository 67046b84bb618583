"""Local Redis and MongoDB-compatible servers for development and tests.

`movieservice dev` (the README's run command) and the test suite start their
dependencies with this module: real `redis-server` and FerretDB processes on
loopback ports, with their data in a directory of the caller's choosing.
"""
