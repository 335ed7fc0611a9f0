"""Configuration from the environment (and a `.env` file, as the seed did)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from dotenv import load_dotenv

from resolvers.auth import LoginLimits
from sql.database import Pooler, SessionSettings

# A checkout keeps its .env and .data beside the code; an installed wheel (whose code
# lives in site-packages) keeps them in the directory it is started from.
_CODE = Path(__file__).resolve().parent
PROJECT_ROOT = _CODE if (_CODE / "pyproject.toml").is_file() else Path.cwd()
# The re-call gap; min_call_interval() in SQL falls back to the same when a connection has
# no app.min_call_interval_seconds (psql, a hand-written job). tests/test_limits.py checks.
DEFAULT_MIN_CALL_INTERVAL_SECONDS = 300
# A call's lease; active_call_timeout() in SQL falls back to the same without
# app.active_call_timeout_seconds. tests/test_limits.py checks.
DEFAULT_ACTIVE_CALL_TIMEOUT_SECONDS = 3600
# How far ahead a callback may be scheduled; callback_max_ahead() in SQL falls back to the
# same without app.callback_max_days.
DEFAULT_CALLBACK_MAX_DAYS = 90
# The GraphQL document limits: the server's, and create_schema()'s defaults.
DEFAULT_MAX_QUERY_DEPTH = 8
DEFAULT_MAX_ALIASES = 30
# A document's size, whitespace and comments included: parsing costs about 13 ms of CPU
# per 64 KiB, and clients send data as variables, not as literals.
DEFAULT_MAX_QUERY_BYTES = 64 * 1024
# Fields, fragment spreads and inline fragments in one document, counted as it is parsed:
# validation compares them pairwise (1,000 repeated selections took 1.5 s), 150 stay
# within a few tens of milliseconds; the introspection query GraphiQL sends has about 80.
DEFAULT_MAX_QUERY_FIELDS = 150
# Every request body, GraphQL and REST: anything longer is refused with 413 unread.
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
POOLING_MODES = ("session", "transaction")


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def database_url_from_environment() -> str | None:
    """DATABASE_URL, else one built from the seed's DB_* variables, else None (embedded)."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if url:
        return url
    host = os.environ.get("DB_HOST", "").strip()
    if not host:
        return None
    user = quote(os.environ.get("DB_USER", "postgres"), safe="")
    password = quote(os.environ.get("DB_PASSWORD", ""), safe="")
    port = os.environ.get("DB_PORT", "5432")
    name = quote(os.environ.get("DB_NAME", "callfloor"), safe="")
    credentials = f"{user}:{password}@" if password else f"{user}@"
    return f"postgresql://{credentials}{host}:{port}/{name}"


@dataclass(frozen=True)
class Settings:
    """Everything the server reads from its environment, read once."""

    database_url: str | None = None
    # A direct connection (never through a transaction pooler) for LISTEN and the
    # migrator's lock; None: database_url.
    database_listen_url: str | None = None
    # "session" (direct, or a pooler in session mode) or "transaction" (PgBouncer with
    # pool_mode = transaction): how the pool's connections keep the app.* settings.
    database_pooling: str = "session"
    statement_cache_size: int = 100
    data_dir: Path = PROJECT_ROOT / ".data"
    host: str = "127.0.0.1"
    port: int = 8000
    min_call_interval_seconds: int = DEFAULT_MIN_CALL_INTERVAL_SECONDS
    bcrypt_rounds: int = 12
    token_ttl_seconds: int = 12 * 3600
    default_phone_region: str = "US"
    max_query_depth: int = DEFAULT_MAX_QUERY_DEPTH
    max_aliases: int = DEFAULT_MAX_ALIASES
    max_query_bytes: int = DEFAULT_MAX_QUERY_BYTES
    max_query_fields: int = DEFAULT_MAX_QUERY_FIELDS
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    login_max_failures: int = 5
    login_max_address_failures: int = 20
    login_backoff_seconds: float = 1.0
    login_backoff_max_seconds: float = 900.0
    login_failure_window_seconds: float = 3600.0
    pool_min_size: int = 2
    pool_max_size: int = 20
    graphiql: bool = True
    active_call_timeout_seconds: int = DEFAULT_ACTIVE_CALL_TIMEOUT_SECONDS
    stale_call_sweep_seconds: float = 15.0
    callback_max_days: int = DEFAULT_CALLBACK_MAX_DAYS
    held_back_cache_seconds: float = 5.0
    subscriber_queue_size: int = 256
    max_subscriptions_per_connection: int = 10
    listener_health_seconds: float = 2.0
    ws_ping_seconds: float = 20.0
    allowed_origins: tuple[str, ...] = ()
    # uvicorn's own default: a proxy on this host may say who the client is.
    forwarded_allow_ips: str = "127.0.0.1,::1"
    access_log: bool = False
    ws_compression: bool = False
    # uvicorn's WebSocket protocol: auto (websockets-sansio), websockets, wsproto.
    ws_implementation: str = "auto"
    workers: int = 1
    # /metrics answers only this bearer token; None: /metrics is off.
    metrics_token: str | None = None
    # Reads the compiler knows run as one SQL statement (graph/reads.py); off for diagnosis.
    compiled_reads: bool = True

    @classmethod
    def from_environment(cls) -> Settings:
        """Read the process environment after loading `.env` (real variables win)."""
        load_dotenv(PROJECT_ROOT / ".env", override=False)
        pooling = os.environ.get("DATABASE_POOLING", "session").strip().lower() or "session"
        if pooling not in POOLING_MODES:
            raise SystemExit(f"DATABASE_POOLING must be session or transaction, not {pooling!r}")
        return cls(
            database_url=database_url_from_environment(),
            database_listen_url=os.environ.get("DATABASE_LISTEN_URL", "").strip() or None,
            database_pooling=pooling,
            # Named prepared statements do not survive a transaction pooler older than
            # PgBouncer 1.21: off by default behind one (docs/deploy.md).
            statement_cache_size=_int(
                "DB_STATEMENT_CACHE_SIZE", 0 if pooling == "transaction" else 100
            ),
            data_dir=Path(os.environ.get("DATA_DIR", str(PROJECT_ROOT / ".data"))),
            host=os.environ.get("HOST", "127.0.0.1"),
            port=_int("PORT", 8000),
            min_call_interval_seconds=_int(
                "MIN_CALL_INTERVAL_SECONDS", DEFAULT_MIN_CALL_INTERVAL_SECONDS
            ),
            bcrypt_rounds=_int("BCRYPT_ROUNDS", 12),
            token_ttl_seconds=_int("TOKEN_TTL_SECONDS", 12 * 3600),
            default_phone_region=os.environ.get("DEFAULT_PHONE_REGION", "US").upper(),
            max_query_depth=_int("MAX_QUERY_DEPTH", DEFAULT_MAX_QUERY_DEPTH),
            max_aliases=_int("MAX_ALIASES", DEFAULT_MAX_ALIASES),
            max_query_bytes=_int("MAX_QUERY_BYTES", DEFAULT_MAX_QUERY_BYTES),
            max_query_fields=_int("MAX_QUERY_FIELDS", DEFAULT_MAX_QUERY_FIELDS),
            max_request_bytes=_int("MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES),
            login_max_failures=_int("LOGIN_MAX_FAILURES", 5),
            login_max_address_failures=_int("LOGIN_MAX_FAILURES_PER_ADDRESS", 20),
            login_backoff_seconds=_float("LOGIN_BACKOFF_SECONDS", 1.0),
            login_backoff_max_seconds=_float("LOGIN_BACKOFF_MAX_SECONDS", 900.0),
            login_failure_window_seconds=_float("LOGIN_FAILURE_WINDOW_SECONDS", 3600.0),
            pool_min_size=_int("DB_POOL_MIN_SIZE", 2),
            pool_max_size=_int("DB_POOL_MAX_SIZE", 20),
            graphiql=os.environ.get("GRAPHIQL", "1") not in {"0", "false", "no"},
            active_call_timeout_seconds=_int(
                "ACTIVE_CALL_TIMEOUT_SECONDS", DEFAULT_ACTIVE_CALL_TIMEOUT_SECONDS
            ),
            stale_call_sweep_seconds=_float("STALE_CALL_SWEEP_SECONDS", 15.0),
            callback_max_days=_int("CALLBACK_MAX_DAYS", DEFAULT_CALLBACK_MAX_DAYS),
            held_back_cache_seconds=_float("HELD_BACK_CACHE_SECONDS", 5.0),
            subscriber_queue_size=_int("SUBSCRIBER_QUEUE_SIZE", 256),
            max_subscriptions_per_connection=_int("MAX_SUBSCRIPTIONS_PER_CONNECTION", 10),
            listener_health_seconds=_float("LISTENER_HEALTH_SECONDS", 2.0),
            ws_ping_seconds=_float("WS_PING_SECONDS", 20.0),
            access_log=os.environ.get("ACCESS_LOG", "0") in {"1", "true", "yes"},
            ws_compression=os.environ.get("WS_COMPRESSION", "0") in {"1", "true", "yes"},
            ws_implementation=os.environ.get("WS_IMPLEMENTATION", "auto").strip() or "auto",
            workers=_int("WEB_CONCURRENCY", 1),
            metrics_token=os.environ.get("METRICS_TOKEN", "").strip() or None,
            compiled_reads=os.environ.get("COMPILED_READS", "1") not in {"0", "false", "no"},
            allowed_origins=tuple(
                origin.strip()
                for origin in os.environ.get("ALLOWED_ORIGINS", "").split(",")
                if origin.strip()
            ),
            # Set but empty trusts no proxy, as in uvicorn.
            forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1"),
        )

    @property
    def login_limits(self) -> LoginLimits:
        """How failed logins slow a client down."""
        return LoginLimits(
            max_failures=self.login_max_failures,
            max_address_failures=self.login_max_address_failures,
            backoff_seconds=self.login_backoff_seconds,
            backoff_max_seconds=self.login_backoff_max_seconds,
            window_seconds=self.login_failure_window_seconds,
            token_ttl_seconds=self.token_ttl_seconds,
            bcrypt_rounds=self.bcrypt_rounds,
        )

    @property
    def pooler(self) -> Pooler:
        """What stands between the pool and PostgreSQL (sql/database.py)."""
        return Pooler(
            transaction_mode=self.database_pooling == "transaction",
            statement_cache_size=self.statement_cache_size,
        )

    def listen_url(self, database_url: str) -> str:
        """The direct connection's URL, for a pool on database_url."""
        return self.database_listen_url or database_url

    @property
    def session(self) -> SessionSettings:
        """What the server's database connections start with."""
        return SessionSettings(
            min_call_interval_seconds=self.min_call_interval_seconds,
            active_call_timeout_seconds=self.active_call_timeout_seconds,
            callback_max_days=self.callback_max_days,
        )
