"""How TopRated ranks: IMDb's weighted rating (a Bayesian average).

    score = (v * R + m * C) / (v + m)

R is the movie's IMDb rating, v its number of votes, m the votes a movie needs
before its own rating outweighs the prior, and C the prior rating. A film with
a handful of votes stays close to C; a well-established one keeps its own
rating. m and C are fixed settings, not collection averages, so a movie's
score depends on that movie alone and every write can update the index
without touching any other entry. Ties break by id, ascending.
"""

from __future__ import annotations

from dataclasses import dataclass

from movieservice.core.ports import RankEntry, StoredMovie


@dataclass(frozen=True)
class Ranking:
    min_votes: float = 1000.0
    prior_rating: float = 6.5

    @property
    def tag(self) -> str:
        """Identifies the formula; an index built with another one is rebuilt."""
        return f"weighted-rating:m={self.min_votes!r}:C={self.prior_rating!r}"

    def score(self, rating: float | None, votes: int) -> float | None:
        """The rank score, or None for a movie without a rating (not ranked)."""
        if rating is None:
            return None
        votes = max(votes, 0)
        if votes + self.min_votes == 0:
            return rating
        return (votes * rating + self.min_votes * self.prior_rating) / (votes + self.min_votes)

    def entry(self, stored: StoredMovie) -> RankEntry:
        imdb = stored.movie.imdb
        return RankEntry(
            movie_id=stored.movie.id,
            version=stored.version,
            score=self.score(imdb.rating if imdb.HasField("rating") else None, imdb.votes),
            genres=tuple(sorted({genre_key(g) for g in stored.movie.genres} - {""})),
        )


def genre_key(genre: str) -> str:
    """The form genres are indexed and queried in: "Film-Noir" and "film-noir " match."""
    return genre.strip().lower()
