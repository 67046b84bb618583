"""The web UI: `make ui` (or `movieservice ui`, or `movieservice dev --ui`).

A Streamlit page over the gRPC API, as the original demo had: look movies up
and watch the cache answer (x-cache, latency), browse TopRated, find theaters
nearby, write a movie, and follow the service live from /metrics. It is a
client like any other: everything it knows comes from MovieService, health and
/metrics (movieservice.ui.calls and movieservice.ui.live hold the logic).

Settings (environment): UI_TARGET (host:port of the service, default
localhost:$GRPC_PORT or localhost:50051), UI_METRICS_URL (default
http://127.0.0.1:$METRICS_PORT/metrics, 9464), UI_REFRESH_SECONDS (3),
UI_PROMETHEUS_URL (empty: the live panel scrapes UI_METRICS_URL itself).
"""

from __future__ import annotations

import os
import time
from typing import Any

import pandas as pd
import plotly.express as px
import streamlit as st

from movieservice.proto.movies.v1 import movies_pb2
from movieservice.ui import live
from movieservice.ui.calls import Answer, MovieClient, NewMovie, Problem

TARGET = os.environ.get("UI_TARGET") or f"localhost:{os.environ.get('GRPC_PORT', '50051')}"
METRICS_URL = os.environ.get("UI_METRICS_URL") or f"http://127.0.0.1:{os.environ.get('METRICS_PORT', '9464')}/metrics"
REFRESH_SECONDS = float(os.environ.get("UI_REFRESH_SECONDS", "3"))
# Set, the live panel asks this Prometheus (all instances) instead of scraping METRICS_URL.
PROMETHEUS_URL = os.environ.get("UI_PROMETHEUS_URL", "")

GENRES = [
    "",
    "Action",
    "Adventure",
    "Animation",
    "Biography",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Family",
    "Fantasy",
    "History",
    "Horror",
    "Music",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Short",
    "Sport",
    "Thriller",
    "War",
    "Western",
]
CITIES = {
    "New York, NY": (40.7580, -73.9855),
    "Los Angeles, CA": (34.0522, -118.2437),
    "Chicago, IL": (41.8781, -87.6298),
    "Minneapolis, MN": (44.9778, -93.2650),
    "San Francisco, CA": (37.7749, -122.4194),
    "Seattle, WA": (47.6062, -122.3321),
    "Houston, TX": (29.7604, -95.3698),
}
TYPED = "a point I type"
# The Upsert form's fields, by the field path the service names in its violations.
FORM_FIELDS = {"movie.id": "id", "movie.title": "title", "movie.year": "year", "movie.genres": "genres"}
FORM_FIELDS |= {"movie.imdb.rating": "rating", "movie.imdb.votes": "votes"}


@st.cache_resource
def movie_client(target: str) -> MovieClient:
    return MovieClient(target)


def main() -> None:
    st.set_page_config(page_title="movieservice", layout="wide")
    client = movie_client(TARGET)
    sidebar(client)
    st.title("movieservice")
    st.caption(f"A gRPC client of {TARGET}: every answer below came over MovieService.")
    movie_tab, top_tab, nearby_tab, upsert_tab, live_tab = st.tabs(["Movie", "Top rated", "Nearby", "Upsert", "Live"])
    with movie_tab:
        movie_section(client)
    with top_tab:
        top_rated_section(client)
    with nearby_tab:
        nearby_section(client)
    with upsert_tab:
        upsert_section(client)
    with live_tab:
        live_section(client)


def sidebar(client: MovieClient) -> None:
    with st.sidebar:
        st.subheader("Service")
        st.text(f"gRPC  {client.target}\nmetrics  {METRICS_URL}")
        st.markdown(health_line(client.health()))


def health_line(states: dict[str, str]) -> str:
    """`service: serving · MongoDB: serving · Redis: not serving`, colored."""
    colors = {"SERVING": "green", "NOT_SERVING": "red"}
    return "  \n".join(
        f":{colors.get(state, 'gray')}[●] **{name}**: :{colors.get(state, 'gray')}[{state.lower().replace('_', ' ')}]"
        for name, state in states.items()
    )


def show_problem(problem: Problem) -> None:
    text = f"**{problem.title}.** {problem.message}"
    if problem.code == "NOT_FOUND":
        st.warning(text)
    else:
        st.error(text)
    for path, description in problem.fields.items():
        st.markdown(f"- `{path}`: {description}")


# Get


def movie_section(client: MovieClient) -> None:
    st.text_input("Movie id", key="movie_id", placeholder="573a1390f29313caabcd42e8")
    asked = st.button("Look up", key="lookup")
    if asked or st.session_state.pop("lookup_now", False):
        look_up(client, st.session_state.movie_id, "movie_answer")
    answer = st.session_state.get("movie_answer")
    if answer is not None:
        show_movie(answer)
    history = st.session_state.get("lookups", [])
    if history:
        st.subheader("Lookups")
        st.caption("Newest first: ask for the same movie twice and see the cache answer the second time.")
        st.dataframe(pd.DataFrame(history[::-1]), hide_index=True, width="stretch")


def look_up(client: MovieClient, movie_id: str, key: str) -> None:
    answer = client.get(movie_id)
    st.session_state[key] = answer
    cache = answer.cache
    row = {
        "id": movie_id.strip(),
        "title": answer.value.title if answer.value is not None else "",
        "cache": cache.outcome or "-",
        "latency ms": round(answer.latency_ms, 2),
        "server cache ms": cache.cache_ms,
        "server store ms": cache.store_ms,
        "status": answer.problem.code if answer.problem else "OK",
    }
    st.session_state.setdefault("lookups", []).append(row)
    del st.session_state["lookups"][:-20]


def cache_line(answer: Answer[Any]) -> None:
    cache = answer.cache
    color = {"hit": "green", "near_hit": "green", "negative_hit": "violet", "miss": "orange"}.get(
        cache.outcome or "", "red"
    )
    parts = [f":{color}-badge[x-cache: {cache.outcome or 'none'}]", f"**{answer.latency_ms:.1f} ms**", cache.label]
    server = [f"{name} {ms:.2f} ms" for name, ms in (("cache", cache.cache_ms), ("store", cache.store_ms)) if ms]
    if server:
        parts.append("server: " + ", ".join(server))
    st.markdown(" · ".join(parts))


def show_movie(answer: Answer[movies_pb2.Movie]) -> None:
    cache_line(answer)
    if answer.problem is not None:
        show_problem(answer.problem)
        return
    movie = answer.value
    assert movie is not None
    poster, facts = st.columns([1, 3])
    with poster:
        if movie.HasField("poster"):
            st.image(movie.poster, width=180)
        else:
            st.caption("no poster")
    with facts:
        st.subheader(f"{movie.title} ({movie.year or '?'})")
        line = [x for x in (movie.rated if movie.HasField("rated") else "", ", ".join(movie.genres)) if x]
        if movie.HasField("runtime"):
            line.append(f"{movie.runtime} min")
        st.caption(" · ".join(line) + f" · id {movie.id}")
        if movie.HasField("plot") or movie.HasField("fullplot"):
            st.write(movie.fullplot if movie.HasField("fullplot") else movie.plot)
        if movie.directors:
            st.markdown("**Directed by** " + ", ".join(movie.directors))
        if movie.cast:
            st.markdown("**Cast** " + ", ".join(movie.cast))
        ratings = st.columns(4)
        ratings[0].metric(
            "IMDb",
            f"{movie.imdb.rating:.1f}" if movie.imdb.HasField("rating") else "-",
            f"{movie.imdb.votes:,} votes" if movie.imdb.HasField("votes") else None,
            delta_color="off",
        )
        viewer, critic = movie.tomatoes.viewer, movie.tomatoes.critic
        ratings[1].metric("Tomatoes viewers", f"{viewer.rating:.1f}/5" if viewer.HasField("rating") else "-")
        ratings[2].metric("Tomatoes critics", f"{critic.rating:.1f}/10" if critic.HasField("rating") else "-")
        ratings[3].metric("Metacritic", movie.metacritic if movie.HasField("metacritic") else "-")
        awards = movie.awards
        if awards.HasField("text"):
            st.markdown(f"**Awards** {awards.text}")
        elif awards.HasField("wins") or awards.HasField("nominations"):
            st.markdown(f"**Awards** {awards.wins} wins, {awards.nominations} nominations")


# TopRated


def reset_pages() -> None:
    st.session_state.top_pages = [("", 0)]


def top_rated_section(client: MovieClient) -> None:
    if "top_pages" not in st.session_state:
        reset_pages()
    genre_column, size_column = st.columns(2)
    genre = genre_column.selectbox(
        "Genre", GENRES, key="top_genre", format_func=lambda g: g or "all genres", on_change=reset_pages
    )
    size = int(size_column.number_input("Page size", 1, 100, 10, key="top_size", on_change=reset_pages))
    pages: list[tuple[str, int]] = st.session_state.top_pages
    token, offset = pages[-1]
    # Asked again only when the page changes (or after a write): not on every click elsewhere.
    if st.session_state.get("top_key") != (genre, size, token):
        st.session_state.top_answer_page = client.top_rated(genre, size, token)
        st.session_state.top_key = (genre, size, token)
    answer: Answer[movies_pb2.TopRatedResponse] = st.session_state.top_answer_page
    st.markdown(f"Page {len(pages)} · **{answer.latency_ms:.1f} ms**")
    if answer.problem is not None:
        show_problem(answer.problem)
        return
    assert answer.value is not None
    movies = list(answer.value.movies)
    previous, following = st.columns(2)
    if previous.button("Previous page", key="top_previous", disabled=len(pages) == 1):
        pages.pop()
        st.rerun()
    if following.button("Next page", key="top_next", disabled=not answer.value.next_page_token):
        pages.append((answer.value.next_page_token, offset + len(movies)))
        st.rerun()
    if not movies:
        st.info("No rated movies in this genre.")
        return
    table = pd.DataFrame(
        {
            "rank": range(offset + 1, offset + len(movies) + 1),
            "title": [m.title for m in movies],
            "year": [m.year or None for m in movies],
            "IMDb rating": [m.imdb.rating for m in movies],
            "votes": [m.imdb.votes for m in movies],
            "genres": [", ".join(m.genres) for m in movies],
            "id": [m.id for m in movies],
        }
    )
    chart = px.bar(
        table,
        x="IMDb rating",
        y="title",
        orientation="h",
        hover_data=["votes", "year"],
        color="votes",
        color_continuous_scale="Blues",
        range_x=[0, 10],
        height=max(240, 28 * len(movies)),
    )
    chart.update_yaxes(autorange="reversed", title=None)
    picked = st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="single-row",
        key="top_table",
    )
    st.plotly_chart(chart, width="stretch")
    rows = picked.selection.rows if picked is not None else []
    labels = {m.id: f"#{offset + i + 1} {m.title} ({m.year or '?'})" for i, m in enumerate(movies)}
    chosen = st.selectbox("Open a movie", ["", *labels], key="top_open", format_func=lambda i: labels.get(i, "…"))
    movie_id = movies[rows[0]].id if rows else chosen
    if movie_id:
        if st.session_state.get("top_opened") != movie_id:
            look_up(client, movie_id, "top_answer")
            st.session_state.top_opened = movie_id
        show_movie(st.session_state.top_answer)


# Nearby


def place_city() -> None:
    city = st.session_state.near_city
    if city in CITIES:
        st.session_state.near_lat, st.session_state.near_lon = CITIES[city]


def nearby_section(client: MovieClient) -> None:
    if "near_lat" not in st.session_state:
        st.session_state.near_lat, st.session_state.near_lon = CITIES["Minneapolis, MN"]
    st.selectbox("Near", [*CITIES, TYPED], index=3, key="near_city", on_change=place_city)
    columns = st.columns(4)
    latitude = columns[0].number_input("Latitude", format="%.4f", key="near_lat")
    longitude = columns[1].number_input("Longitude", format="%.4f", key="near_lon")
    radius = columns[2].slider("Radius (km)", 1, 200, 10, key="near_radius")
    limit = columns[3].slider("At most", 1, 100, 10, key="near_limit")
    if st.button("Search", key="near_search"):
        st.session_state.near_answer = client.nearby(latitude, longitude, radius, limit)
    answer: Answer[movies_pb2.NearbyResponse] | None = st.session_state.get("near_answer")
    if answer is None:
        return
    st.markdown(f"**{answer.latency_ms:.1f} ms**")
    if answer.problem is not None:
        show_problem(answer.problem)
        return
    assert answer.value is not None
    found = list(answer.value.theaters)
    if not found:
        st.info("No theaters within that radius.")
        return
    table = pd.DataFrame(
        {
            "km": [round(t.distance_km, 2) for t in found],
            "theater": [t.theater.theater_id for t in found],
            "address": [f"{t.theater.address.street1}, {t.theater.address.city}" for t in found],
            "state": [t.theater.address.state for t in found],
            "zip": [t.theater.address.zipcode for t in found],
            "lat": [t.theater.latitude for t in found],
            "lon": [t.theater.longitude for t in found],
        }
    )
    st.caption(f"{len(found)} theaters, nearest first")
    # deck.gl draws the points itself, so they show even where the base map's tiles cannot load.
    points = pd.concat(
        [
            table.assign(color="#1f77b4", size=radius * 12.0)[["lat", "lon", "color", "size"]],
            pd.DataFrame({"lat": [latitude], "lon": [longitude], "color": ["#d62728"], "size": [radius * 18.0]}),
        ]
    )
    st.map(points, latitude="lat", longitude="lon", color="color", size="size", height=420)
    st.dataframe(table.drop(columns=["lat", "lon"]), hide_index=True, width="stretch")


# Upsert


def upsert_section(client: MovieClient) -> None:
    st.caption("Creates a movie (or replaces one, given its id): MongoDB first, then Redis, before the answer.")
    slots: dict[str, Any] = {}
    with st.form("upsert", clear_on_submit=False):
        token = st.text_input("Write token", type="password", key="up_token", help="`dev-token` under `make run`")
        st.text_input("Title", key="up_title")
        slots["title"] = st.empty()
        st.number_input("Year", value=2024, step=1, key="up_year", help="0 (unknown) or 1870-2100")
        slots["year"] = st.empty()
        st.multiselect("Genres", [g for g in GENRES if g], key="up_genres")
        slots["genres"] = st.empty()
        rating_column, votes_column = st.columns(2)
        rating_column.number_input("IMDb rating", value=8.0, step=0.1, key="up_rating", help="0-10")
        slots["rating"] = rating_column.empty()
        votes_column.number_input("IMDb votes", value=5000, step=100, key="up_votes")
        slots["votes"] = votes_column.empty()
        st.text_input("Id (empty: a new movie)", key="up_id")
        slots["id"] = st.empty()
        submitted = st.form_submit_button("Upsert")
    if submitted:
        new = NewMovie(
            title=st.session_state.up_title,
            year=int(st.session_state.up_year),
            genres=st.session_state.up_genres,
            imdb_rating=float(st.session_state.up_rating),
            imdb_votes=int(st.session_state.up_votes),
            movie_id=st.session_state.up_id.strip(),
        )
        st.session_state.up_answer = client.upsert(new, token)
        written = st.session_state.up_answer.value
        if written is not None:
            look_up(client, written.movie.id, "up_get")
            genre = written.movie.genres[0] if written.movie.genres else ""
            st.session_state.up_ranks = {g: client.rank(written.movie.id, g).value for g in dict.fromkeys([genre, ""])}
            st.session_state.top_key = None  # the shown TopRated page may have changed
    answer: Answer[movies_pb2.UpsertResponse] | None = st.session_state.get("up_answer")
    if answer is None:
        return
    if answer.problem is not None:
        unplaced = {}
        for path, description in answer.problem.fields.items():
            slot = next((slots[name] for prefix, name in FORM_FIELDS.items() if path.startswith(prefix)), None)
            if slot is not None:
                slot.error(description)
            else:
                unplaced[path] = description
        st.error(f"**{answer.problem.title}.** {answer.problem.message}")
        for path, description in unplaced.items():
            st.markdown(f"- `{path}`: {description}")
        return
    assert answer.value is not None
    movie = answer.value.movie
    st.success(
        f"{'Created' if answer.value.created else 'Replaced'} {movie.title} ({movie.id}) in {answer.latency_ms:.1f} ms"
    )
    ranks: dict[str, int | None] = st.session_state.get("up_ranks", {})
    for genre, place in ranks.items():
        where = f"TopRated {genre or 'all genres'}"
        st.markdown(f"**{where}:** " + (f"#{place}" if place else "not ranked (no rating)"))
    st.markdown("**Get, right after:**")
    show_movie(st.session_state.up_get)


# Live


def live_section(client: MovieClient) -> None:
    source = f"Prometheus at {PROMETHEUS_URL}" if PROMETHEUS_URL else METRICS_URL
    st.caption(f"From {source}, every {REFRESH_SECONDS:g} s.")

    @st.fragment(run_every=REFRESH_SECONDS)
    def panel() -> None:
        st.markdown(health_line(client.health()))
        stats = live_stats()
        if stats is None:
            return
        history: list[dict[str, Any]] = st.session_state.setdefault("live_history", [])
        now = pd.Timestamp.now()
        history.extend({"time": now, "rpc": m, "requests/s": r} for m, r in stats.rps.items())
        del history[: max(0, len(history) - 400)]
        columns = st.columns(4)
        columns[0].metric("Requests/s", f"{sum(stats.rps.values()):.1f}")
        columns[1].metric("Get cache hit ratio", "-" if stats.hit_ratio is None else f"{stats.hit_ratio:.0%}")
        columns[2].metric("p50", _ms(stats.p50_ms["all"]))
        columns[3].metric("p99", _ms(stats.p99_ms["all"]))
        per_rpc = pd.DataFrame(
            {
                "rpc": list(stats.rps),
                "requests/s": [round(r, 2) for r in stats.rps.values()],
                "p50": [_ms(stats.p50_ms.get(m)) for m in stats.rps],
                "p99": [_ms(stats.p99_ms.get(m)) for m in stats.rps],
            }
        )
        st.dataframe(per_rpc, hide_index=True, width="stretch")
        if history:
            figure = px.line(pd.DataFrame(history), x="time", y="requests/s", color="rpc", height=300)
            st.plotly_chart(figure, width="stretch")
        st.caption(f"Over the last {stats.seconds:.0f} s.")

    panel()


def live_stats() -> live.LiveStats | None:
    """From Prometheus when UI_PROMETHEUS_URL is set, else from two scrapes of /metrics
    (None, with a message, until there are numbers to show)."""
    if PROMETHEUS_URL:
        stats = live.prometheus_stats(PROMETHEUS_URL)
        if stats is None:
            st.warning(f"**No metrics.** Prometheus at {PROMETHEUS_URL} does not answer; retrying.")
        return stats
    text = live.fetch_metrics(METRICS_URL)
    if text is None:
        st.warning(f"**No metrics.** Nothing answers at {METRICS_URL}; retrying every {REFRESH_SECONDS:g} s.")
        return None
    window: live.Window = st.session_state.setdefault("live_window", live.Window())
    stats = window.add(live.parse_metrics(text, time.monotonic()))
    if stats is None:
        st.info("Collecting: the numbers appear after the next refresh.")
    return stats


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


if __name__ == "__main__":  # as `streamlit run` (and AppTest) run it
    main()
