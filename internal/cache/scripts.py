"""The Lua scripts (in lua/*.lua), each with its KEYS and ARGV named once.

Every script opens by naming its inputs (`local entry = KEYS[1]`); the
`LuaScript` here lists the same names in the same order, and callers pass
them by name, so no caller depends on a position. A test checks that each
script's declarations and its `LuaScript` agree.

Scripts run with EVALSHA; a server that does not know one yet (a new or
restarted Redis) gets it with EVAL, which also loads it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

Execute = Callable[..., Awaitable[Any]]


class LuaScript:
    def __init__(self, name: str, keys: tuple[str, ...], args: tuple[str, ...]) -> None:
        self.name = name
        self.keys = keys
        self.args = args
        self.source = resources.files(__package__).joinpath("lua", f"{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def run(self, execute: Execute, **values: Any) -> Any:
        """Run with every key and argument given by name (KeyError if one is missing)."""
        if len(values) != len(self.keys) + len(self.args):
            unknown = set(values) - set(self.keys) - set(self.args)
            raise TypeError(f"{self.name}.lua: unknown inputs {sorted(unknown)}")
        inputs = [values[name] for name in self.keys]
        inputs += [values[name] for name in self.args]
        try:
            return await execute("EVALSHA", self.sha, len(self.keys), *inputs)
        except NoScriptError:
            return await execute("EVAL", self.source, len(self.keys), *inputs)


PUT_MOVIE = LuaScript(
    "put_movie",
    keys=("entry", "versions", "lease"),
    args=("version", "body", "movie_id", "ttl_ms", "expires_at_ms", "load_ms", "token"),
)
WRITE_MOVIE = LuaScript(
    "write_movie",
    keys=("versions", "genres_of", "ranked", "entry", "lease"),
    args=("movie_id", "version", "score", "genres", "genre_prefix", "body", "ttl_ms", "expires_at_ms"),
)
TOP_PAGE = LuaScript(
    "top_page",
    keys=("ready", "ranking"),
    args=("tag", "after_score", "after_id", "limit", "movie_prefix"),
)
NEARBY = LuaScript(
    "nearby",
    keys=("theaters", "details", "ready"),
    args=("longitude", "latitude", "radius_km", "count", "format"),
)
UNLOCK = LuaScript("unlock", keys=("lock",), args=("token",))
# Redis Cluster only (cluster.py): a write split into one script per slot.
WRITE_MOVIE_SLOT = LuaScript(
    "write_movie_slot",
    keys=("fence", "genres_of", "entry", "lease"),
    args=("movie_id", "version", "genres", "body", "ttl_ms", "expires_at_ms"),
)
RANK_ENTRY = LuaScript("rank_entry", keys=("ranking", "versions"), args=("movie_id", "version", "score"))
RANKING_PAGE = LuaScript("ranking_page", keys=("ranking",), args=("after_score", "after_id", "limit"))

ALL = (PUT_MOVIE, WRITE_MOVIE, TOP_PAGE, NEARBY, UNLOCK, WRITE_MOVIE_SLOT, RANK_ENTRY, RANKING_PAGE)
