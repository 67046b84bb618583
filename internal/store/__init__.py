"""The MongoDB store: the only code that knows pymongo."""
