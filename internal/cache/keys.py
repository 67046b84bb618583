"""The Redis key schema, in one place. Every key starts with a configurable
prefix (REDIS_KEY_PREFIX, default "movieservice:").

  movie:<id>           hash {v: version, b: serialized Movie, e: expiry (ms since
                       the epoch), d: how long the store read took (ms)}, with a
                       TTL; no "b" and v = -1 for a movie known not to exist
  top:version          hash id -> last version applied to the indexes (no TTL):
                       the fences that keep an older fill from landing
  top:genres           hash id -> the genres (lowercase, "\\n"-separated) it is indexed under
  top:all              sorted set of ranked movies, score = -rank score (best first)
  top:genre:<genre>    the same, per lowercase genre
  top:ready            the ranking tag the indexes were built with
  geo:theaters         GEO set of theater ids
  geo:theater          hash id -> exact coordinates + serialized Theater
  geo:ready            the format geo:theater was built in, once both keys are complete
  lease:<id>           a movie's fill lease: a random token, taken by a miss before
                       its store read (TTL 2 s); a fill lands only while it is
                       still there, and every write of the movie deletes it
  lock:<name>          short-lived locks (index rebuilds)

Index keys have no TTL: run Redis with `maxmemory-policy volatile-lru` (or
volatile-lfu) so that only movie copies are evicted under memory pressure.

On a Redis Cluster (REDIS_CLUSTER=1) the keys are `ClusterKeys`: every script
touches one hash slot, so the names carry hash tags (`{...}`) that put what a
script reads and writes together.
"""

from __future__ import annotations


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.movie_prefix = prefix + "movie:"
        self.top_version = prefix + "top:version"
        self.top_genres = prefix + "top:genres"
        self.top_all = prefix + "top:all"
        self.top_genre_prefix = prefix + "top:genre:"
        self.top_ready = prefix + "top:ready"
        self.geo = prefix + "geo:theaters"
        self.geo_details = prefix + "geo:theater"
        self.geo_ready = prefix + "geo:ready"

    def movie(self, movie_id: str) -> str:
        return self.movie_prefix + movie_id

    def movie_id(self, key: str | bytes) -> str:
        """The id in a movie key (as Redis' invalidation messages name them)."""
        text = key.decode() if isinstance(key, bytes) else key
        return text.removeprefix(self.movie_prefix)

    def top_genre(self, genre: str) -> str:
        return self.top_genre_prefix + genre

    def fill_lease(self, movie_id: str) -> str:
        return f"{self.prefix}lease:{movie_id}"

    def fence(self, movie_id: str) -> str:
        """The hash holding `movie_id` -> the last version applied to the indexes."""
        return self.top_version

    def lock(self, name: str) -> str:
        return f"{self.prefix}lock:{name}"

    def top_indexes(self) -> list[str]:
        """The TopRated keys with fixed names (the per-genre sets are found by SCAN)."""
        return [self.top_ready, self.top_version, self.top_genres, self.top_all]


class ClusterKeys(Keys):
    """The key schema on a Redis Cluster, where a script may only touch keys
    of one hash slot. Hash tags group them:

      movie:{<id>}            the cached copy, as `movie:<id>` above (TTL)
      lease:{<id>}            its fill lease (TTL 2 s)
      version:{<id>}          hash <id> -> the last version applied (the fence; no TTL)
      genres:{<id>}           hash {g: the genres it is indexed under, p: every genre
                              of its earlier versions} (no TTL): which sorted sets
                              a write must take it out of
      top:{all}               sorted set of ranked movies, score = -rank score
      top:genre:{g:<genre>}   the same, per lowercase genre
      <ranking>:version       hash id -> the last version applied to that sorted set
                              (no TTL): per-slot fences, so a stale update of one
                              ranking cannot overwrite a newer one
      top:ready               the ranking tag the indexes were built with (one
                              key, checked beside each page read)
      geo:{theaters}, geo:{theaters}:details, geo:{theaters}:ready
                              the theater index, one slot (replaced in MULTI/EXEC)
      lock:<name>             short-lived locks

    A movie's copy, lease and fence share the slot of `{<id>}`, so the fill
    and write scripts stay atomic; each sorted set and its versions share
    their own slot, updated one slot at a time.
    """

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self.top_all = prefix + "top:{all}"
        self.top_genre_prefix = prefix + "top:genre:{g:"
        self.geo = prefix + "geo:{theaters}"
        self.geo_details = prefix + "geo:{theaters}:details"
        self.geo_ready = prefix + "geo:{theaters}:ready"
        self.top_pattern = prefix + "top:*"

    def movie(self, movie_id: str) -> str:
        return f"{self.prefix}movie:{{{movie_id}}}"

    def movie_id(self, key: str | bytes) -> str:
        text = key.decode() if isinstance(key, bytes) else key
        return text.removeprefix(self.movie_prefix).strip("{}")

    def fill_lease(self, movie_id: str) -> str:
        return f"{self.prefix}lease:{{{movie_id}}}"

    def fence(self, movie_id: str) -> str:
        return f"{self.prefix}version:{{{movie_id}}}"

    def genres_of(self, movie_id: str) -> str:
        return f"{self.prefix}genres:{{{movie_id}}}"

    def top_genre(self, genre: str) -> str:
        # "g:" keeps the tag non-empty whatever the genre starts with (a "}").
        return f"{self.top_genre_prefix}{genre}}}"

    @staticmethod
    def ranking_versions(ranking: str) -> str:
        """Beside `ranking`, in its slot: the hash tag is the same first {...}."""
        return ranking + ":version"
