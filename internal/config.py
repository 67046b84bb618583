"""Settings from the environment and an optional `.env` file.

The real environment wins over `.env`, as in the original demo. Every setting
has a default that works for local development; see the README's
configuration table.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from dotenv import dotenv_values

_GLOB = re.compile(r"[*?\[\]\\]")
_WRITER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MIN_KEY_LENGTH = 16


class ConfigError(ValueError):
    """A setting has a value the service cannot use; the message names it."""


@dataclass(frozen=True)
class Settings:
    mongo_url: str = "mongodb://localhost:27017"
    mongo_db: str = "sample_mflix"
    redis_url: str = "redis://localhost:6379/0"
    grpc_host: str = "[::]"
    grpc_port: int = 50051
    # TLS: the server's certificate chain and private key (PEM), both or
    # neither; reloaded when the files change (grpcserver/tls.py).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # mTLS: the CA bundle (PEM) client certificates must chain to; set, every
    # client must present one.
    tls_client_ca_file: str = ""
    # rediss:// URLs: the CA bundle the Redis server's certificate must chain
    # to (empty: the system's), and a client certificate and key if Redis asks.
    redis_ca_file: str = ""
    redis_cert_file: str = ""
    redis_key_file: str = ""
    # 0 disables the /metrics endpoint.
    metrics_port: int = 9464
    # Where /metrics listens; empty: GRPC_HOST (`movieservice dev`: loopback).
    metrics_host: str = ""
    # Server reflection (what grpcurl uses to list and describe the API).
    reflection: bool = True
    workers: int = 1
    # Calls handled at once per worker (their request has arrived); the next
    # one gets RESOURCE_EXHAUSTED at once. Calls still receiving their request
    # and idle streams do not count.
    max_concurrent_calls: int = 1000
    # Every connection is closed gracefully after this long (load spreads
    # again over instances added since); its calls get GRACE_PERIOD_SECONDS.
    max_connection_age_seconds: float = 600.0
    # The server pings a connection idle this long; one that does not answer is closed.
    keepalive_seconds: float = 60.0
    # Bearer token that Upsert requires; empty (and no AUTH_TOKENS) disables writes.
    auth_token: str = field(default="", repr=False)
    # Named writers, "name:token,name:token", rotated one at a time.
    auth_tokens: tuple[str, ...] = field(default=(), repr=False)
    # Client-certificate common names (mTLS) that may write without a token.
    auth_client_subjects: tuple[str, ...] = ()
    # Failed Upsert authentications allowed per client address per minute
    # (then RESOURCE_EXHAUSTED until the allowance returns); 0: no limit.
    auth_failures_per_minute: int = 10
    # Keys of TopRated page tokens (HMAC): the first signs, every one verifies.
    page_token_keys: tuple[str, ...] = field(default=(), repr=False)
    movie_ttl_seconds: float = 3600.0
    # Lifetime of "this movie does not exist" entries.
    negative_ttl_seconds: float = 10.0
    # Movies kept in each process' memory in front of Redis; 0 (the default)
    # keeps the strict guarantee (see README: "The near cache").
    near_cache_size: int = 0
    near_cache_ttl_seconds: float = 30.0
    # Deadline applied to store calls when the client sets none.
    request_timeout_seconds: float = 5.0
    index_rebuild_timeout_seconds: float = 120.0
    grace_period_seconds: float = 10.0
    # On SIGTERM, how long the server keeps serving with health NOT_SERVING
    # before it stops taking calls: time for load balancers to stop sending.
    drain_seconds: float = 0.0
    # Weighted-rating parameters of TopRated (see README "How TopRated ranks").
    toprated_min_votes: float = 1000.0
    toprated_prior_rating: float = 6.5
    redis_key_prefix: str = "movieservice:"
    # REDIS_URL names one node of a Redis Cluster (the client finds the rest);
    # see README "Redis Cluster".
    redis_cluster: bool = False
    # On a cluster: replicas that must confirm each write (WAIT) before it
    # counts as cached; 0 for a cluster without replicas.
    redis_cluster_wait_replicas: int = 1
    log_level: str = "INFO"
    log_format: str = "text"
    # Buckets of grpc_server_handling_seconds (GRPC_HISTOGRAM_BUCKETS="0.001,0.005,...").
    grpc_histogram_buckets: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __post_init__(self) -> None:
        _check_port("GRPC_PORT", self.grpc_port, allow_zero=True)
        _check_port("METRICS_PORT", self.metrics_port, allow_zero=True)
        if self.workers < 1:
            raise ConfigError(f"WORKERS must be at least 1, got {self.workers}")
        if self.max_concurrent_calls < 1:
            raise ConfigError(f"MAX_CONCURRENT_CALLS must be at least 1, got {self.max_concurrent_calls}")
        if self.auth_failures_per_minute < 0:
            raise ConfigError(f"AUTH_FAILURES_PER_MINUTE must be >= 0, got {self.auth_failures_per_minute}")
        if self.near_cache_size < 0:
            raise ConfigError(f"NEAR_CACHE_SIZE must be >= 0, got {self.near_cache_size}")
        for name in (
            "movie_ttl_seconds",
            "negative_ttl_seconds",
            "near_cache_ttl_seconds",
            "request_timeout_seconds",
            "index_rebuild_timeout_seconds",
            "max_connection_age_seconds",
            "keepalive_seconds",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name.upper()} must be a positive number, got {value}")
        if not (math.isfinite(self.grace_period_seconds) and self.grace_period_seconds >= 0):
            raise ConfigError(f"GRACE_PERIOD_SECONDS must be >= 0, got {self.grace_period_seconds}")
        if not (math.isfinite(self.drain_seconds) and self.drain_seconds >= 0):
            raise ConfigError(f"DRAIN_SECONDS must be >= 0, got {self.drain_seconds}")
        if not (math.isfinite(self.toprated_min_votes) and self.toprated_min_votes >= 0):
            raise ConfigError("TOPRATED_MIN_VOTES must be >= 0")
        if not (0 <= self.toprated_prior_rating <= 10):
            raise ConfigError("TOPRATED_PRIOR_RATING must be between 0 and 10")
        if self.workers > 1 and self.grpc_port == 0:
            raise ConfigError("WORKERS > 1 needs a fixed GRPC_PORT (all workers share it)")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"LOG_FORMAT must be 'text' or 'json', got {self.log_format!r}")
        if not self.mongo_url.startswith(("mongodb://", "mongodb+srv://")):
            raise ConfigError("MONGO_URL must start with mongodb:// or mongodb+srv://")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
        if not self.redis_key_prefix or _GLOB.search(self.redis_key_prefix):
            raise ConfigError(
                "REDIS_KEY_PREFIX must be non-empty without glob characters (* ? [ ] \\), "
                f"got {self.redis_key_prefix!r}"
            )
        if self.redis_cluster:
            if self.redis_url.startswith("unix://"):
                raise ConfigError("REDIS_CLUSTER needs a redis:// or rediss:// REDIS_URL (clusters speak TCP)")
            if "{" in self.redis_key_prefix or "}" in self.redis_key_prefix:
                raise ConfigError("REDIS_KEY_PREFIX must not hold { or } with REDIS_CLUSTER (they make hash tags)")
        if self.redis_cluster_wait_replicas < 0:
            raise ConfigError(f"REDIS_CLUSTER_WAIT_REPLICAS must be >= 0, got {self.redis_cluster_wait_replicas}")
        self._check_tls_files()
        self.writers()  # each AUTH_TOKENS entry is name:token
        if self.auth_client_subjects and not self.tls_client_ca_file:
            raise ConfigError("AUTH_CLIENT_SUBJECTS names client certificates: it needs mTLS (TLS_CLIENT_CA_FILE)")
        for key in self.page_token_keys:
            if len(key) < MIN_KEY_LENGTH:
                raise ConfigError(f"each PAGE_TOKEN_KEYS key must be at least {MIN_KEY_LENGTH} characters")

    def _check_tls_files(self) -> None:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("TLS_CERT_FILE and TLS_KEY_FILE go together: set both (TLS) or neither (plaintext)")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ConfigError("TLS_CLIENT_CA_FILE (mTLS) needs TLS_CERT_FILE and TLS_KEY_FILE too")
        if bool(self.redis_cert_file) != bool(self.redis_key_file):
            raise ConfigError("REDIS_CERT_FILE and REDIS_KEY_FILE go together: set both or neither")
        redis_tls = {"REDIS_CA_FILE": self.redis_ca_file, "REDIS_CERT_FILE": self.redis_cert_file}
        for name, value in redis_tls.items():
            if value and not self.redis_url.startswith("rediss://"):
                raise ConfigError(f"{name} is for TLS connections to Redis: REDIS_URL must start with rediss://")
        for name in TLS_FILE_SETTINGS:
            _check_readable(name.upper(), getattr(self, name))

    @property
    def grpc_address(self) -> str:
        return f"{self.grpc_host}:{self.grpc_port}"

    def writers(self) -> dict[str, str]:
        """Each writer's name and bearer token: AUTH_TOKENS, and AUTH_TOKEN as the writer "default"."""
        writers = {"default": self.auth_token} if self.auth_token else {}
        for entry in self.auth_tokens:
            name, colon, token = entry.partition(":")
            if not colon or not _WRITER_NAME.fullmatch(name) or not token:
                raise ConfigError(
                    "AUTH_TOKENS must be name:token pairs separated by commas (names: letters, digits, - _ .)"
                )
            if name in writers:
                raise ConfigError(f"AUTH_TOKENS names the writer {name!r} twice (or as AUTH_TOKEN's 'default')")
            writers[name] = token
        return writers


# The settings that name certificate and key files (read at start, and passed on to servers the
# dev stack spawns).
TLS_FILE_SETTINGS = (
    "tls_cert_file",
    "tls_key_file",
    "tls_client_ca_file",
    "redis_ca_file",
    "redis_cert_file",
    "redis_key_file",
)


def _check_readable(name: str, path: str) -> None:
    """A file setting names a file this process can read (its contents are
    checked where they are used)."""
    if not path:
        return
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as error:
        raise ConfigError(f"{name}: cannot read {path!r}: {error.strerror or error}") from None


def _check_port(name: str, port: int, *, allow_zero: bool) -> None:
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise ConfigError(f"{name} must be a port number, got {port}")


def load_settings(environ: Mapping[str, str] | None = None, dotenv_path: Path | None = Path(".env")) -> Settings:
    """Read settings from `environ` (default: os.environ) over the `.env` file."""
    values: dict[str, str] = {}
    if dotenv_path is not None and dotenv_path.is_file():
        values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    values.update(os.environ if environ is None else environ)

    kwargs: dict[str, object] = {}
    for setting in fields(Settings):
        raw = values.get(setting.name.upper())
        if raw is None or raw == "":
            continue
        kwargs[setting.name] = _parse(setting.name.upper(), raw, setting.type)
    if "redis_url" not in kwargs and values.get("REDIS_HOST"):
        kwargs["redis_url"] = _redis_url_from_parts(values)
    return Settings(**kwargs)  # type: ignore[arg-type]


def _parse(name: str, raw: str, kind: object) -> object:
    # `kind` is the field's annotation, a string under `from __future__ import annotations`.
    if kind == "tuple[float, ...]":
        try:
            buckets = tuple(sorted(float(part) for part in raw.split(",") if part.strip()))
        except ValueError:
            raise ConfigError(f"{name} must be comma-separated numbers, got {raw!r}") from None
        if not buckets or not all(math.isfinite(b) and b > 0 for b in buckets):
            raise ConfigError(f"{name} must be positive numbers, got {raw!r}")
        return buckets
    if kind == "tuple[str, ...]":
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if kind == "bool":
        if raw.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if raw.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be 1 or 0 (true or false), got {raw!r}")
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    return raw.strip()


def _redis_url_from_parts(values: Mapping[str, str]) -> str:
    """The original demo configured Redis with REDIS_HOST/REDIS_PORT/REDIS_PASSWORD."""
    host = values["REDIS_HOST"].strip()
    port = values.get("REDIS_PORT", "6379").strip() or "6379"
    if not port.isdigit():
        raise ConfigError(f"REDIS_PORT must be a number, got {port!r}")
    password = values.get("REDIS_PASSWORD", "")
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/0"


def redact_url(url: str) -> str:
    """The URL without its secrets, for logs and error messages: the password
    of its user part and the value of any query option that holds one
    (`?password=`, MongoDB's `tlsCertificateKeyFilePassword=`, ...)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if colon else netloc
    query = "&".join(
        f"{name}=***" if _SECRET_OPTION.search(name) else option
        for option in parts.query.split("&")
        for name in [option.partition("=")[0]]
    )
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # (urlunsplit would also drop the "//" of "unix:///path")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


_SECRET_OPTION = re.compile(r"password|secret|token|credential", re.IGNORECASE)


def configured_names(environ: Mapping[str, str] | None = None, dotenv_path: Path = Path(".env")) -> set[str]:
    """The names of the settings given explicitly, in the environment or `.env`."""
    names = {name for name, value in (os.environ if environ is None else environ).items() if value}
    if dotenv_path.is_file():
        names |= {name for name, value in dotenv_values(dotenv_path).items() if value}
    return names
