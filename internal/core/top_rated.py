"""TopRated: pages of the best-rated movies, from sorted sets in the cache
that every write keeps current (see `ranking.py` for the score)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from movieservice.core.background import Background
from movieservice.core.deadline import Deadline
from movieservice.core.errors import InvalidArgument, Unavailable, Violation
from movieservice.core.indexes import Indexes
from movieservice.core.paging import InvalidPageToken, PageTokens
from movieservice.core.ports import Cache, CacheUnavailable, RankedId, RankEntry, ServiceEvents, Store, TopCursor
from movieservice.core.ranking import Ranking, genre_key
from movieservice.core.reads import MovieReads
from movieservice.core.store_calls import store_errors
from movieservice.core.validation import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, check_genre, check_page_size

# The largest message every gRPC client accepts by default is 4 MiB; a page
# holds as many movies as fit in it, with room for the page token, and ends
# early (with a next_page_token) when the movies asked for would not fit.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
MAX_PAGE_BYTES = MAX_RESPONSE_BYTES - 4 * 1024
MOVIE_FRAMING_BYTES = 5  # its field tag and length


@dataclass(frozen=True)
class TopRatedPage:
    movies: list[bytes]  # serialized Movies, best first
    next_page_token: str  # empty on the last page


class TopRatedPages:
    def __init__(
        self,
        cache: Cache,
        store: Store,
        events: ServiceEvents,
        ranking: Ranking,
        reads: MovieReads,
        indexes: Indexes,
        background: Background,
        page_tokens: PageTokens,
    ) -> None:
        self._cache = cache
        self._store = store
        self._events = events
        self._ranking = ranking
        self._reads = reads
        self._indexes = indexes
        self._background = background
        self._page_tokens = page_tokens

    async def page(self, genre: str, page_size: int, page_token: str, deadline: Deadline) -> TopRatedPage:
        """InvalidArgument (page size, genre, page token), Unavailable, DeadlineExceeded."""
        problems = check_page_size(page_size) + check_genre(genre)
        if problems:
            raise InvalidArgument(problems)
        genre = genre_key(genre)
        page_size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        cursor = None
        if page_token:
            try:
                cursor = self._page_tokens.decode(page_token, genre)
            except InvalidPageToken as error:
                raise InvalidArgument([Violation("page_token", str(error))]) from None
        # One more than asked for tells whether there is a next page.
        ranked = await self._ranked(genre, cursor, page_size + 1, deadline)
        page = ranked[:page_size]
        movies = await self._movies(page, deadline)
        last = page[-1] if len(ranked) > page_size else None
        size = 0
        for index, (_, data) in enumerate(movies):
            size += len(data) + MOVIE_FRAMING_BYTES
            if size > MAX_PAGE_BYTES and index:
                # The rest would not fit in what every client accepts: next page.
                movies, last = movies[:index], movies[index - 1][0]
                break
        next_token = ""
        if last is not None:
            next_token = self._page_tokens.encode(genre, TopCursor(score=last.score, movie_id=last.movie_id))
        return TopRatedPage([data for _, data in movies], next_token)

    async def _ranked(self, genre: str, cursor: TopCursor | None, limit: int, deadline: Deadline) -> list[RankedId]:
        try:
            ranked = await self._cache.top_page(genre, cursor, limit)
            self._events.cache_lookup("top_rated", "miss" if ranked is None else "hit")
            if ranked is None:
                # A rebuild, once begun, ends even if this caller goes away.
                await self._background.finish(self._indexes.ensure_top(deadline))
                ranked = await self._cache.top_page(genre, cursor, limit)
        except CacheUnavailable:
            self._events.cache_lookup("top_rated", "error")
            self._events.fallback("TopRated")
            with store_errors():
                ratings = await self._store.movie_ratings(deadline.timeout())
            return top_page_of([self._ranking.entry(s) for s in ratings], genre, cursor, limit)
        if ranked is None:
            raise Unavailable("the TopRated index is being rebuilt; retry")
        return ranked

    async def _movies(self, page: Sequence[RankedId], deadline: Deadline) -> list[tuple[RankedId, bytes]]:
        """The serialized movies of `page`, in order: cached ones as they are,
        the others read from the store (and cached in the background); a movie
        the store no longer has is left out."""
        found = {entry.movie_id: entry.data for entry in page if entry.data is not None}
        missing = [entry.movie_id for entry in page if entry.data is None]
        if missing:
            # A page without any cached movie came from the store because the
            # cache is down: no coalescing then (see MovieReads.get).
            coalesce = len(missing) < len(page) or self._cache.available()
            found.update(await self._reads.load_many(missing, deadline, coalesce=coalesce))
        return [(entry, data) for entry in page if (data := found.get(entry.movie_id)) is not None]


def top_page_of(entries: Sequence[RankEntry], genre: str, cursor: TopCursor | None, limit: int) -> list[RankedId]:
    """A TopRated page computed in memory, in the index's order (score desc, id asc)."""
    ranked = sorted(
        ((e.score, e.movie_id) for e in entries if e.score is not None and (not genre or genre in e.genres)),
        key=lambda item: (-item[0], item[1]),
    )
    if cursor is not None:
        ranked = [r for r in ranked if (-r[0], r[1]) > (-cursor.score, cursor.movie_id)]
    return [RankedId(movie_id=movie_id, score=score) for score, movie_id in ranked[:limit]]
