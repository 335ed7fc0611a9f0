"""Configuration from the environment (and a `.env` file, as the seed did)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from dotenv import load_dotenv

from sql.database import SessionSettings

PROJECT_ROOT = Path(__file__).resolve().parent
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
    data_dir: Path = PROJECT_ROOT / ".data"
    host: str = "127.0.0.1"
    port: int = 8000
    min_call_interval_seconds: int = DEFAULT_MIN_CALL_INTERVAL_SECONDS
    bcrypt_rounds: int = 12
    token_ttl_seconds: int = 12 * 3600
    default_phone_region: str = "US"
    max_query_depth: int = DEFAULT_MAX_QUERY_DEPTH
    max_aliases: int = DEFAULT_MAX_ALIASES
    login_max_failures: int = 5
    login_failure_window_seconds: int = 900
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
    access_log: bool = False
    ws_compression: bool = False
    # uvicorn's WebSocket protocol: auto (websockets-sansio), websockets, wsproto.
    ws_implementation: str = "auto"
    workers: int = 1

    @classmethod
    def from_environment(cls) -> Settings:
        """Read the process environment after loading `.env` (real variables win)."""
        load_dotenv(PROJECT_ROOT / ".env", override=False)
        return cls(
            database_url=database_url_from_environment(),
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
            login_max_failures=_int("LOGIN_MAX_FAILURES", 5),
            login_failure_window_seconds=_int("LOGIN_FAILURE_WINDOW_SECONDS", 900),
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
            allowed_origins=tuple(
                origin.strip()
                for origin in os.environ.get("ALLOWED_ORIGINS", "").split(",")
                if origin.strip()
            ),
        )

    @property
    def session(self) -> SessionSettings:
        """What the server's database connections start with."""
        return SessionSettings(
            min_call_interval_seconds=self.min_call_interval_seconds,
            active_call_timeout_seconds=self.active_call_timeout_seconds,
            callback_max_days=self.callback_max_days,
        )
