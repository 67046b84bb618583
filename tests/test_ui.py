"""The web UI's logic, run with Streamlit's AppTest against a real service
process (and its /metrics) over the session's Redis and FerretDB: what a person
sees after each action, the cache at work, and every error as a message.
(tests/test_ui_browser.py drives the same page in a real Chromium.)"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from streamlit.testing.v1 import AppTest

from movieservice.devstack.processes import UI_APP, free_port
from movieservice.devstack.stack import ServiceProcess
from movieservice.metrics import Metrics
from movieservice.proto.movies.v1 import movies_pb2
from movieservice.ui import calls, live
from tests.support.ui import UI_TOKEN, metrics_url, ui_service

GREAT_TRAIN_ROBBERY = "573a1390f29313caabcd42e8"


PREFIX = f"ui-{secrets.token_hex(4)}:"


@pytest.fixture(scope="module")
def service(settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    process = ui_service(settings, tmp_path_factory.mktemp("ui"), PREFIX)
    yield process
    process.stop()


@pytest.fixture
def page(service: ServiceProcess, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("UI_TARGET", service.target)
    monkeypatch.setenv("UI_METRICS_URL", metrics_url(service))
    monkeypatch.setenv("UI_REFRESH_SECONDS", "3600")  # AppTest runs the live panel once per run
    return AppTest.from_file(str(UI_APP), default_timeout=60).run()


def texts(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown]


def cache_lines(at: AppTest) -> list[str]:
    return [text for text in texts(at) if "x-cache:" in text]


def look_up(at: AppTest, movie_id: str) -> AppTest:
    at.text_input(key="movie_id").input(movie_id).run()
    return at.button(key="lookup").click().run()


def a_movie_id(service: ServiceProcess, seeded_ids: list[str], redis_client) -> str:
    """A seeded movie (real or synthetic) out of the cache: not on TopRated's first
    page, which the page loads (and whose movies it caches in the background)."""
    client = calls.MovieClient(service.target)
    try:
        answer = client.top_rated("", 10)
        assert answer.value is not None, answer.problem
        shown = {movie.id for movie in answer.value.movies}
    finally:
        client.close()
    movie_id = next(movie_id for movie_id in seeded_ids[len(seeded_ids) // 2 :] if movie_id not in shown)
    redis_client.delete(f"{PREFIX}movie:{movie_id}")
    return movie_id


def test_the_page_loads_with_the_service_healthy(page):
    assert not page.exception
    assert page.title[0].value == "movieservice"
    assert any("**service**: :green[serving]" in text for text in texts(page))


def test_a_repeated_lookup_shows_the_cache_at_work(page, service, seeded_ids, redis_client):
    movie_id = a_movie_id(service, seeded_ids, redis_client)
    look_up(page, movie_id)
    assert "x-cache: miss" in cache_lines(page)[0]
    assert "store" in cache_lines(page)[0]
    # The fill runs in the background after the answer: look again until it landed.
    for _ in range(50):
        page.button(key="lookup").click().run()
        if "x-cache: hit" in cache_lines(page)[0]:
            break
    assert "x-cache: hit" in cache_lines(page)[0]
    history = page.dataframe[0].value
    assert history["cache"].iloc[0] == "hit" and history["cache"].iloc[-1] == "miss"
    assert set(history["id"]) == {movie_id}
    assert page.subheader[0].value.startswith(str(history["title"].iloc[0]))


def test_a_movie_shows_its_plot_cast_and_ratings(page, service, seeded_ids, redis_client):
    client = calls.MovieClient(service.target)
    movie = client.get(a_movie_id(service, seeded_ids, redis_client)).value
    client.close()
    assert movie is not None
    look_up(page, movie.id)
    assert page.subheader[0].value == f"{movie.title} ({movie.year or '?'})"
    if movie.cast:
        assert f"**Cast** {', '.join(movie.cast)}" in texts(page)
    imdb = next(metric for metric in page.metric if metric.label == "IMDb")
    assert imdb.value == (f"{movie.imdb.rating:.1f}" if movie.imdb.HasField("rating") else "-")


def test_an_unknown_movie_is_not_found_and_then_a_negative_hit(page):
    look_up(page, "0" * 24)
    assert page.warning[0].value.startswith("**Not found.** Movie 000000000000000000000000 not found")
    assert "x-cache: miss" in cache_lines(page)[0]
    for _ in range(50):
        page.button(key="lookup").click().run()
        if "negative_hit" in cache_lines(page)[0]:
            break
    assert "x-cache: negative_hit" in cache_lines(page)[0]
    assert not page.exception


def test_an_invalid_id_names_the_field(page):
    look_up(page, "not-an-id")
    assert page.error[0].value.startswith("**Invalid input.**")
    assert "- `id`: must be 24 hexadecimal digits (a MongoDB ObjectId)" in texts(page)


def test_top_rated_pages_forward_and_back(page):
    page.selectbox(key="top_genre").select("Drama").run()
    page.number_input(key="top_size").set_value(5).run()
    first = page.dataframe[0].value
    assert list(first["rank"]) == [1, 2, 3, 4, 5]
    assert all("Drama" in genres for genres in first["genres"])
    page.button(key="top_next").click().run()
    second = page.dataframe[0].value
    assert list(second["rank"]) == [6, 7, 8, 9, 10]
    assert not set(first["id"]) & set(second["id"])
    assert list(first["IMDb rating"])[-1] >= 0 and any("Page 2" in text for text in texts(page))
    page.button(key="top_previous").click().run()
    assert list(page.dataframe[0].value["id"]) == list(first["id"])


def test_opening_a_movie_from_top_rated(page):
    top = page.dataframe[0].value
    chosen = top["id"].iloc[2]
    page.selectbox(key="top_open").select(chosen).run()
    assert any(s.value.startswith(str(top["title"].iloc[2])) for s in page.subheader)
    assert cache_lines(page), "the opened movie shows its cache outcome"


def test_nearby_lists_theaters_nearest_first_within_the_radius(page):
    page.selectbox(key="near_city").select("New York, NY").run()
    assert page.number_input(key="near_lat").value == pytest.approx(40.758)
    page.slider(key="near_radius").set_value(20).run()
    page.slider(key="near_limit").set_value(7).run()
    page.button(key="near_search").click().run()
    table = next(frame.value for frame in page.dataframe if "km" in frame.value.columns)
    assert 0 < len(table) <= 7
    assert list(table["km"]) == sorted(table["km"]) and max(table["km"]) <= 20
    assert set(table["state"]) <= {"NY", "NJ", "CT"}


def test_nearby_with_a_typed_point_out_of_range_is_invalid(page):
    page.selectbox(key="near_city").select("a point I type").run()
    page.number_input(key="near_lat").set_value(95.0).run()
    page.button(key="near_search").click().run()
    assert page.error[0].value.startswith("**Invalid input.**")
    assert "- `latitude`: must be between -90 and 90 degrees" in texts(page)


def fill_form(at: AppTest, token: str, title: str, year: int = 2024, rating: float = 8.7) -> AppTest:
    at.text_input(key="up_token").input(token)
    at.text_input(key="up_title").input(title)
    at.number_input(key="up_year").set_value(year)
    at.multiselect(key="up_genres").select("Western")
    at.number_input(key="up_rating").set_value(rating)
    at.number_input(key="up_votes").set_value(250_000)
    return next(b for b in at.button if b.label == "Upsert").click().run()


def test_an_upsert_without_the_token_is_refused(page):
    fill_form(page, "", "Nobody's Movie")
    assert page.error[0].value.startswith("**Not signed in.**")


def test_an_upsert_with_invalid_fields_shows_each_beside_its_field(page):
    fill_form(page, UI_TOKEN, "Out of Range", year=3000, rating=11.0)
    errors = [e.value for e in page.error]
    assert "must be 0 (unknown) or between 1870 and 2100" in errors
    assert "must be between 0 and 10" in errors
    assert any(e.startswith("**Invalid input.**") for e in errors)


def test_an_upsert_shows_the_movie_in_get_and_its_place_in_top_rated(page):
    title = f"UI test {secrets.token_hex(3)}"
    fill_form(page, UI_TOKEN, title)
    assert page.success[0].value.startswith(f"Created {title} (")
    places = [t for t in texts(page) if t.startswith("**TopRated")]
    assert len(places) == 2 and all("#" in place for place in places), places
    assert any(s.value == f"{title} (2024)" for s in page.subheader)
    # Written through: the Get right after is a cache hit.
    assert any("x-cache: hit" in line for line in cache_lines(page))


def test_the_live_panel_shows_rates_hits_and_latency(page):
    look_up(page, GREAT_TRAIN_ROBBERY)
    page.run()  # a second scrape: rates need two
    panel = {metric.label: metric.value for metric in page.metric}
    assert float(panel["Requests/s"]) > 0
    assert panel["Get cache hit ratio"].endswith("%") or panel["Get cache hit ratio"] == "-"
    assert panel["p50"].endswith(" ms") and panel["p99"].endswith(" ms")
    per_rpc = next(frame.value for frame in page.dataframe if "requests/s" in frame.value.columns)
    assert "Get" in set(per_rpc["rpc"])


@pytest.mark.slow
def test_the_page_survives_a_service_restart(settings, service, monkeypatch, tmp_path):
    """Its own service process, stopped and started again on the same ports."""
    prefix = f"ui-restart-{secrets.token_hex(3)}:"
    port, metrics_port = free_port(), free_port()
    restarted = ui_service(settings, tmp_path, prefix, port, metrics_port)
    monkeypatch.setenv("UI_TARGET", restarted.target)
    monkeypatch.setenv("UI_METRICS_URL", metrics_url(restarted))
    monkeypatch.setenv("UI_REFRESH_SECONDS", "3600")
    at = AppTest.from_file(str(UI_APP), default_timeout=60).run()
    assert restarted.stop() == 0
    look_up(at, GREAT_TRAIN_ROBBERY)
    assert not at.exception
    assert at.error[0].value.startswith("**The service is not answering.**")
    assert any("**service**: :gray[unreachable]" in text for text in texts(at))
    assert any("No metrics." in w.value for w in at.warning)
    restarted = ui_service(settings, tmp_path, prefix, port, metrics_port, name="ui-service-again")
    try:
        for _ in range(100):  # the channel reconnects within its backoff (at most 2 s)
            at.button(key="lookup").click().run()
            if not at.error:
                break
        assert not at.error and not at.exception
        assert "x-cache:" in cache_lines(at)[0]
    finally:
        restarted.stop()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed: run `make setup`")
def test_the_live_panel_from_prometheus(service, tmp_path, monkeypatch):
    """With UI_PROMETHEUS_URL the panel asks Prometheus (which scrapes the service) instead."""
    from tests.test_monitoring import start_prometheus, wait_until

    process, api, log = start_prometheus(tmp_path, service.metrics_port)
    try:
        client = calls.MovieClient(service.target)

        def asked() -> live.LiveStats | None:
            # rate() needs two scrapes (1 s apart here) with calls between them.
            for _ in range(5):
                client.get(GREAT_TRAIN_ROBBERY)
            stats = live.prometheus_stats(api.base)
            return stats if stats and stats.rps.get("Get") else None

        stats = wait_until(asked, 60, lambda: f"Prometheus never had a rate of Gets:\n{log.read_text()[-2000:]}")
        client.close()
        assert stats.hit_ratio is not None and 0 < stats.hit_ratio <= 1
        assert stats.p50_ms["Get"] is not None and stats.p99_ms["all"] is not None
        monkeypatch.setenv("UI_TARGET", service.target)
        monkeypatch.setenv("UI_PROMETHEUS_URL", api.base)
        monkeypatch.setenv("UI_REFRESH_SECONDS", "3600")
        at = AppTest.from_file(str(UI_APP), default_timeout=60).run()
        panel = {metric.label: metric.value for metric in at.metric}
        assert float(panel["Requests/s"]) > 0 and panel["Get cache hit ratio"].endswith("%")
        assert any(f"Prometheus at {api.base}" in caption.value for caption in at.caption)
    finally:
        process.terminate()
        process.wait(30)
    assert live.prometheus_stats(api.base) is None  # gone: the panel says so, nothing raises


# The logic on its own


def test_server_timing_entries():
    assert calls.server_timings("cache;dur=0.184, store;dur=1.702") == {"cache": 0.184, "store": 1.702}
    assert calls.server_timings('cache;desc="x";dur="2.5", broken;dur=x, ;dur=1') == {"cache": 2.5}
    assert calls.server_timings("") == {}


def test_cache_report_from_trailing_metadata():
    report = calls.cache_report((("x-cache", "miss"), ("server-timing", "cache;dur=0.2, store;dur=3.1")))
    assert report == calls.CacheReport("miss", 0.2, 3.1)
    assert report.label == "cache miss (read from MongoDB)"
    assert calls.cache_report(None) == calls.CacheReport()
    assert calls.cache_report((("grpc-status-details-bin", b"\x98\x00"),)) == calls.CacheReport()


def test_quantiles_interpolate_within_buckets():
    buckets = {0.005: 50.0, 0.01: 90.0, 0.1: 100.0, float("inf"): 100.0}
    assert live.quantile(0.5, buckets) == pytest.approx(0.005)
    assert live.quantile(0.7, buckets) == pytest.approx(0.0075)
    assert live.quantile(0.99, buckets) == pytest.approx(0.091)
    assert live.quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    assert live.quantile(0.99, {0.1: 1.0, float("inf"): 10.0}) == pytest.approx(0.1)


def test_live_stats_from_the_services_own_metrics():
    metrics = Metrics(CollectorRegistry())
    observe = metrics.grpc  # the same families the service exports
    before = live.parse_metrics(generate_latest(metrics.registry).decode(), at=0.0)
    for _ in range(30):
        metrics.cache_lookup("movie", "hit")
    for _ in range(10):
        metrics.cache_lookup("movie", "miss")
    record_calls(observe, "Get", 40, 0.002)
    after = live.parse_metrics(generate_latest(metrics.registry).decode(), at=10.0)
    stats = live.live_stats(before, after)
    assert stats.rps["Get"] == pytest.approx(4.0)
    assert stats.hit_ratio == pytest.approx(0.75)
    assert stats.p50_ms["Get"] is not None and 1.0 <= stats.p50_ms["Get"] <= 2.5
    # A restart resets the counters: what the new process counted is the increase.
    restarted = live.parse_metrics(generate_latest(Metrics(CollectorRegistry()).registry).decode(), at=20.0)
    assert live.live_stats(after, restarted).rps.get("Get", 0.0) == 0.0


def record_calls(grpc_metrics, method: str, count: int, seconds: float) -> None:
    labels = ("unary", "movies.v1.MovieService", method)
    for _ in range(count):
        grpc_metrics.handled.labels(*labels, "OK").inc()
        grpc_metrics.handling_seconds.labels(*labels).observe(seconds)


def test_problems_people_understand():
    class Failed(grpc.RpcError):
        def __init__(self, code: grpc.StatusCode, details: str) -> None:
            self._code, self._details = code, details

        def code(self) -> grpc.StatusCode:
            return self._code

        def details(self) -> str:
            return self._details

        def trailing_metadata(self) -> tuple[()]:
            return ()

    down = calls.problem_of(Failed(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses"), "h:1")
    assert down.title == "The service is not answering" and "h:1" in down.message
    assert "failed to connect" not in down.message
    store = calls.problem_of(Failed(grpc.StatusCode.UNAVAILABLE, "MongoDB is unavailable"), "h:1")
    assert store.title == "A dependency is down"
    assert calls.problem_of(Failed(grpc.StatusCode.PERMISSION_DENIED, ""), "h:1").title == "Writes are disabled"
    assert movies_pb2.Movie(title="x") == calls.NewMovie("x").message()
