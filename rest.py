"""The seed's REST endpoints: same paths and JSON, over the same resolvers as GraphQL."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import metrics
from graph.extensions import UNAVAILABLE_MESSAGE, is_database_unavailable
from resolvers import calls, prospects
from resolvers.auth import Actor, authenticate, bearer_token, login, require_user
from resolvers.calls import CallOutcome
from resolvers.errors import (
    BadUserInput,
    CallRuleRefusal,
    DomainError,
    TooManyRequests,
    parse_id,
)
from resolvers.inputs import check_json_text
from settings import Settings

log = logging.getLogger("callfloor.rest")

Handler = Callable[[Request], Awaitable[Response]]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value


def row_json(record: asyncpg.Record) -> dict[str, Any]:
    """A database row as the seed's JSON: column names as keys."""
    return {key: _jsonable(value) for key, value in record.items()}


def error_response(error: DomainError) -> JSONResponse:
    """A domain error as JSON with its HTTP status; rule refusals keep the seed's reason."""
    body: dict[str, Any] = {"error": error.message, "code": error.code, **error.extensions}
    if isinstance(error, CallRuleRefusal):
        body["reason"] = error.message
    headers = {}
    if isinstance(error, TooManyRequests) and "retryAfterSeconds" in error.extensions:
        headers["Retry-After"] = str(error.extensions["retryAfterSeconds"])
    return JSONResponse(body, status_code=error.http_status, headers=headers)


def endpoint(handler: Handler) -> Handler:
    """Turn DomainErrors into their status codes and mask everything unexpected."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except DomainError as error:
            return error_response(error)
        except Exception as error:
            if is_database_unavailable(error):
                return JSONResponse(
                    {"error": UNAVAILABLE_MESSAGE, "code": "SERVICE_UNAVAILABLE"}, status_code=503
                )
            log.exception("unexpected error in %s %s", request.method, request.url.path)
            return JSONResponse(
                {"error": "Internal server error", "code": "INTERNAL_SERVER_ERROR"},
                status_code=500,
            )

    return wrapped


async def _actor(request: Request) -> Actor:
    token = bearer_token(request.headers.get("authorization"))
    actor = await authenticate(request.app.state.pool, token) if token else None
    return require_user(actor)


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    # RecursionError: a body nested thousands of levels deep is bad input too.
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise BadUserInput("Body must be JSON") from None
    if not isinstance(body, dict):
        raise BadUserInput("Body must be a JSON object")
    # Once for the whole body: no NUL or unpaired surrogate reaches bcrypt or the database.
    check_json_text(body, "body")
    return body


def _text(body: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise BadUserInput(f"{key} is required", field=key)
        return None
    if not isinstance(value, str):
        raise BadUserInput(f"{key} must be a string", field=key)
    return value


def _prospect_id(request: Request) -> UUID:
    return parse_id(request.path_params["prospect_id"], "id")


@endpoint
async def login_endpoint(request: Request) -> Response:
    """POST /api/auth/login {email, password} -> {token, user}."""
    body = await _body(request)
    settings: Settings = request.app.state.settings
    with metrics.counting_login_failures():
        token, user = await login(
            request.app.state.pool,
            _text(body, "email", required=True) or "",
            _text(body, "password", required=True) or "",
            request.client.host if request.client else None,
            settings.login_limits,
        )
    public = {key: _jsonable(user[key]) for key in ("id", "email", "name", "role")}
    return JSONResponse({"token": token, "user": public})


@endpoint
async def can_call_endpoint(request: Request) -> Response:
    """GET /api/prospects/{id}/can-call -> the seed's {allowed, reason, ...}."""
    actor = await _actor(request)
    prospect_id = _prospect_id(request)
    await prospects.get_prospect(request.app.state.pool, prospect_id)
    answer = await calls.can_call_prospect(request.app.state.pool, actor, prospect_id)
    return JSONResponse(answer)


@endpoint
async def start_call_endpoint(request: Request) -> Response:
    """POST /api/prospects/{id}/start-call {phoneNumber, fromNumber} -> {activeCallId, ...}."""
    actor = await _actor(request)
    body = await _body(request)
    record = await calls.start_call(
        request.app.state.pool,
        actor,
        _prospect_id(request),
        _text(body, "phoneNumber"),
        _text(body, "fromNumber"),
        request.app.state.settings.default_phone_region,
    )
    return JSONResponse(
        {"activeCallId": str(record["active_call_id"]), "callLogId": str(record["call_log_id"])},
        status_code=201,
    )


@endpoint
async def end_call_endpoint(request: Request) -> Response:
    """POST /api/prospects/{id}/end-call {callLogId, outcome, duration, notes, recordingUrl}."""
    actor = await _actor(request)
    body = await _body(request)
    duration = body.get("duration")
    if duration is not None and (not isinstance(duration, int) or isinstance(duration, bool)):
        raise BadUserInput("duration must be a whole number of seconds", field="duration")
    record = await calls.end_call(
        request.app.state.pool,
        actor,
        _prospect_id(request),
        parse_id(_text(body, "callLogId", required=True) or "", "callLogId"),
        CallOutcome(
            outcome=_text(body, "outcome", required=True) or "",
            duration=duration,
            notes=_text(body, "notes"),
            recording_url=_text(body, "recordingUrl"),
        ),
    )
    return JSONResponse(row_json(record))


async def _history(request: Request, loader_query: str) -> Response:
    await _actor(request)
    prospect_id = _prospect_id(request)
    pool = request.app.state.pool
    await prospects.get_prospect(pool, prospect_id)
    limit = request.query_params.get("limit", "100")
    # isdecimal, not isdigit: int() refuses "²"; the length check keeps int() off huge strings.
    if not limit.isdecimal() or len(limit) > 4 or not 1 <= int(limit) <= 1000:
        raise BadUserInput("limit must be between 1 and 1000", field="limit")
    [rows] = await prospects.histories_for_prospects(
        pool, loader_query, [(prospect_id, int(limit))]
    )
    return JSONResponse([row_json(row) for row in rows])


@endpoint
async def call_history_endpoint(request: Request) -> Response:
    """GET /api/prospects/{id}/call-history -> call_logs rows, newest first."""
    return await _history(request, "call_history_for_prospects")


@endpoint
async def status_history_endpoint(request: Request) -> Response:
    """GET /api/prospects/{id}/status-history -> prospect_status_log rows, newest first."""
    return await _history(request, "status_history_for_prospects")


@endpoint
async def active_calls_endpoint(request: Request) -> Response:
    """GET /api/active-calls -> active_calls rows, oldest first."""
    await _actor(request)
    rows = await calls.list_active_calls(request.app.state.pool)
    return JSONResponse([row_json(row) for row in rows])


async def healthz(request: Request) -> Response:
    """200 only when the database answers."""
    try:
        await request.app.state.pool.fetchval("SELECT 1", timeout=2)
    except Exception as error:
        log.warning("health check failed: %r", error)
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})


routes = [
    Route("/api/auth/login", login_endpoint, methods=["POST"]),
    Route("/api/prospects/{prospect_id}/can-call", can_call_endpoint, methods=["GET"]),
    Route("/api/prospects/{prospect_id}/start-call", start_call_endpoint, methods=["POST"]),
    Route("/api/prospects/{prospect_id}/end-call", end_call_endpoint, methods=["POST"]),
    Route("/api/prospects/{prospect_id}/call-history", call_history_endpoint, methods=["GET"]),
    Route("/api/prospects/{prospect_id}/status-history", status_history_endpoint, methods=["GET"]),
    Route("/api/active-calls", active_calls_endpoint, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
]
