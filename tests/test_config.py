"""Settings from the environment and .env (unit tests)."""

from __future__ import annotations

import pytest

from movieservice.config import ConfigError, Settings, configured_names, load_settings, redact_url


def test_defaults(tmp_path):
    settings = load_settings({}, tmp_path / ".env")
    assert settings == Settings()
    assert (settings.mongo_db, settings.grpc_port, settings.workers) == ("sample_mflix", 50051, 1)


def test_environment_overrides_dotenv(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("MONGO_DB=from_file\nGRPC_PORT=6000\n# comment\nAUTH_TOKEN='quoted secret'\n")
    settings = load_settings({"GRPC_PORT": "7000"}, dotenv)
    assert (settings.mongo_db, settings.grpc_port, settings.auth_token) == ("from_file", 7000, "quoted secret")
    assert {"MONGO_DB", "GRPC_PORT", "AUTH_TOKEN"} <= configured_names({}, dotenv)


def test_the_demos_redis_host_and_port_are_accepted(tmp_path):
    settings = load_settings({"REDIS_HOST": "cache.internal", "REDIS_PORT": "6380", "REDIS_PASSWORD": "p@ss"}, None)
    assert settings.redis_url == "redis://:p%40ss@cache.internal:6380/0"
    # REDIS_URL wins when both are given.
    both = load_settings({"REDIS_URL": "redis://other:1/0", "REDIS_HOST": "cache.internal"}, None)
    assert both.redis_url == "redis://other:1/0"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"GRPC_PORT": "http"}, "GRPC_PORT must be a number, got 'http'"),
        ({"GRPC_PORT": "70000"}, "GRPC_PORT must be a port number, got 70000"),
        ({"WORKERS": "0"}, "WORKERS must be at least 1"),
        ({"MOVIE_TTL_SECONDS": "-1"}, "MOVIE_TTL_SECONDS must be a positive number"),
        ({"REQUEST_TIMEOUT_SECONDS": "nan"}, "REQUEST_TIMEOUT_SECONDS must be a positive number"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be 'text' or 'json'"),
        ({"MONGO_URL": "localhost:27017"}, "MONGO_URL must start with mongodb://"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL must start with redis://"),
        ({"REDIS_HOST": "h", "REDIS_PORT": "x"}, "REDIS_PORT must be a number"),
    ],
)
def test_bad_values_name_the_setting(environ, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_settings(environ, None)


def test_urls_are_redacted_for_logs():
    assert (
        redact_url("mongodb+srv://user:secret@cluster0.example.net/db")
        == "mongodb+srv://user:***@cluster0.example.net/db"
    )
    assert redact_url("redis://:secret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"
