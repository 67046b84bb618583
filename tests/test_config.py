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


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"REDIS_KEY_PREFIX": "*"}, "REDIS_KEY_PREFIX must be non-empty without glob characters"),
        ({"REDIS_KEY_PREFIX": "movies[1]:"}, "REDIS_KEY_PREFIX must be non-empty without glob characters"),
        ({"AUTH_TOKENS": "no-name-here"}, "AUTH_TOKENS must be name:token pairs"),
        ({"AUTH_TOKENS": "a:1,a:2"}, "AUTH_TOKENS names the writer 'a' twice"),
        ({"AUTH_TOKENS": "default:x", "AUTH_TOKEN": "y"}, "AUTH_TOKENS names the writer 'default' twice"),
        ({"PAGE_TOKEN_KEYS": "short"}, "each PAGE_TOKEN_KEYS key must be at least 16 characters"),
        ({"REFLECTION": "maybe"}, "REFLECTION must be 1 or 0"),
    ],
)
def test_bad_security_settings_name_the_setting(environ, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_settings(environ, None)


def test_writers_are_named_and_secrets_stay_out_of_the_settings_repr():
    settings = load_settings(
        {
            "AUTH_TOKEN": "legacy-secret",
            "AUTH_TOKENS": "ci:ci-secret, alice:alice:secret",
            "PAGE_TOKEN_KEYS": "0123456789abcdef-new,0123456789abcdef-old",
            "REFLECTION": "0",
        },
        None,
    )
    assert settings.writers() == {"default": "legacy-secret", "ci": "ci-secret", "alice": "alice:secret"}
    assert settings.page_token_keys == ("0123456789abcdef-new", "0123456789abcdef-old")
    assert settings.reflection is False
    assert "secret" not in repr(settings) and "0123456789abcdef" not in repr(settings)


def test_secrets_in_query_options_are_redacted_too():
    assert (
        redact_url("mongodb://u:p@h1:1,h2:2/db?authSource=admin&tlsCertificateKeyFilePassword=k&password=y")
        == "mongodb://u:***@h1:1,h2:2/db?authSource=admin&tlsCertificateKeyFilePassword=***&password=***"
    )
    assert redact_url("redis://h:6379/0?password=abc") == "redis://h:6379/0?password=***"
    assert redact_url("unix:///run/redis.sock?db=0") == "unix:///run/redis.sock?db=0"


def test_drain_seconds_defaults_to_zero_and_must_not_be_negative():
    assert load_settings({}, None).drain_seconds == 0
    assert load_settings({"DRAIN_SECONDS": "7.5"}, None).drain_seconds == 7.5
    for bad in ("-1", "nan", "inf"):
        with pytest.raises(ConfigError, match="DRAIN_SECONDS must be >= 0"):
            load_settings({"DRAIN_SECONDS": bad}, None)
