"""The Redis cache: the only code that knows redis-py."""
