"""The old mock store (a JSON file of users, prospects and call history), migrated in.

Everything is read and checked first, then written in one transaction, one savepoint per
prospect: a prospect is written with all of its calls or not at all. Records are matched
to what is already in the database (users by email in any case, prospects by E.164
phone, calls by prospect, caller and start time), so a second run changes nothing.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import bcrypt

from resolvers.auth import MAX_PASSWORD_BYTES, MIN_PASSWORD_LENGTH, ROLES
from resolvers.bulk_phones import PhoneNormalizer
from resolvers.errors import BadUserInput, translate_database_error
from resolvers.import_files import Connection, loose_key
from resolvers.limits import (
    EMAIL_PATTERN,
    MAX_COMPANY_LENGTH,
    MAX_DURATION_SECONDS,
    MAX_EMAIL_LENGTH,
    MAX_NOTES_LENGTH,
    MAX_PROSPECT_NAME_LENGTH,
    MAX_RECORDING_URL_LENGTH,
    MAX_USER_NAME_LENGTH,
    MIN_DURATION_SECONDS,
)
from sql.queries import QUERIES

# Any constant will do: two imports of mock stores at once would race on the same rows.
MOCK_IMPORT_LOCK_KEY = 7_243_311_004
_BCRYPT_HASH = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
DRY_RUN_HASH = "not-hashed-in-a-dry-run"

# Key spellings the mock store may use for each field: the first one present wins.
USER_KEYS = {
    "id": ("id", "_id", "userId", "user_id"),
    "email": ("email", "emailAddress", "email_address"),
    "name": ("name", "fullName", "full_name", "displayName"),
    "first_name": ("firstName", "first_name"),
    "last_name": ("lastName", "last_name"),
    "role": ("role",),
    "active": ("active", "isActive", "is_active"),
    "password_hash": ("passwordHash", "password_hash", "hash"),
    "password": ("password",),
    "created_at": ("createdAt", "created_at"),
}
PROSPECT_KEYS = {
    "id": ("id", "_id", "prospectId", "prospect_id"),
    "name": ("name", "fullName", "full_name"),
    "first_name": ("firstName", "first_name"),
    "last_name": ("lastName", "last_name"),
    "phone": ("phone", "phoneNumber", "phone_number", "mobile"),
    "email": ("email",),
    "company": ("company", "companyName", "company_name"),
    "status": ("status",),
    "last_call": ("lastCall", "last_call", "lastCalledAt", "last_called_at"),
    "created_at": ("createdAt", "created_at"),
    "updated_at": ("updatedAt", "updated_at"),
    "calls": ("callHistory", "call_history", "calls"),
}
CALL_KEYS = {
    "id": ("id", "_id", "callId", "call_id"),
    "prospect": ("prospectId", "prospect_id", "leadId", "lead_id"),
    "caller": ("callerId", "caller_id", "userId", "user_id", "agentId", "agent_id"),
    "caller_email": ("callerEmail", "caller_email", "agentEmail", "agent_email"),
    "phone": ("phoneNumber", "phone_number", "phone", "to"),
    "from": ("fromNumber", "from_number", "from"),
    "started_at": ("startedAt", "started_at", "startTime", "timestamp", "createdAt", "date"),
    "ended_at": ("endedAt", "ended_at", "endTime"),
    "outcome": ("outcome", "disposition", "result"),
    "duration": ("duration", "durationSeconds", "duration_seconds"),
    "notes": ("notes", "note"),
    "recording_url": ("recordingUrl", "recording_url", "recording"),
}
SECTIONS = {
    "users": ("users",),
    "prospects": ("prospects", "leads"),
    "calls": ("calls", "callHistory", "call_history", "callLogs", "call_logs"),
}


class RowProblem(ValueError):
    """A mock record that cannot be imported, and why."""


@dataclass(frozen=True)
class MockError:
    """A record that was not imported: where it is in the file and why."""

    position: str
    reason: str


@dataclass
class MockReport:
    """What a mock-store import did (or, in a dry run, would do)."""

    dry_run: bool
    users_created: int = 0
    users_existing: int = 0
    users_merged: int = 0
    prospects_created: int = 0
    prospects_existing: int = 0
    prospects_filled: int = 0
    prospects_merged: int = 0
    prospects_rejected: int = 0
    calls_created: int = 0
    calls_existing: int = 0
    calls_duplicate: int = 0
    calls_rejected: int = 0
    errors: list[MockError] = field(default_factory=list)
    warnings: list[MockError] = field(default_factory=list)
    merges: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# Reading values.


def _pick(record: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = record.get(key)
        if value is not None:
            return value
    return None


def _text(value: Any, what: str) -> str | None:
    """A trimmed string (numbers are written out), None when empty."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RowProblem(f"{what} must be text")
    text = str(value).strip()
    if "\x00" in text:
        raise RowProblem(f"{what} contains a NUL character")
    return text or None


def _time(value: Any, what: str) -> datetime | None:
    """ISO 8601 (no zone means UTC) or JavaScript epoch milliseconds."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value / 1000, UTC)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value.strip())
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise RowProblem(f"{what} {str(value)[:40]!r} is not a time (ISO 8601 or epoch milliseconds)")


def _name(record: dict[str, Any], keys: dict[str, tuple[str, ...]], max_length: int) -> str | None:
    name = _text(_pick(record, keys["name"]), "name")
    if name is None:
        parts = [
            _text(_pick(record, keys[part]), part.replace("_", " "))
            for part in ("first_name", "last_name")
        ]
        name = " ".join(p for p in parts if p) or None
    if name is not None and len(name) > max_length:
        raise RowProblem(f"name is longer than {max_length} characters")
    return name


def _email(value: Any) -> str | None:
    email = _text(value, "email")
    if email is not None and (len(email) > MAX_EMAIL_LENGTH or not EMAIL_PATTERN.fullmatch(email)):
        raise RowProblem(f"email {email[:100]!r} is not a valid address")
    return email


def _ref(value: Any) -> str | None:
    """A mock id as text: ids may be numbers in one place and strings in another."""
    if value is None or isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value).strip() or None


# ---------------------------------------------------------------------------------------
# The records, checked.


@dataclass
class MockUser:
    position: str
    mock_id: str | None
    email: str
    name: str
    role: str
    active: bool
    password_hash: str | None
    password: str | None
    created_at: datetime | None
    user_id: UUID | None = None


@dataclass
class MockCall:
    position: str
    caller_ref: str | None
    caller_email: str | None
    phone_number: str | None
    from_number: str | None
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None
    duration: int | None
    notes: str | None
    recording_url: str | None


@dataclass
class MockProspect:
    position: str
    index: int
    mock_id: str | None
    name: str | None
    phone: str
    phone_time_zones: list[str]
    email: str | None
    company: str | None
    status: str | None
    last_call: datetime | None
    created_at: datetime | None
    updated_at: datetime | None


@dataclass
class ProspectGroup:
    """Mock prospects with one phone, merged into one, with all their calls."""

    phone: str
    records: list[MockProspect] = field(default_factory=list)
    calls: list[MockCall] = field(default_factory=list)
    problems: list[MockError] = field(default_factory=list)
    unreadable_calls: int = 0


def read_user(raw: Any, position: str) -> MockUser:
    """A user record, checked; RowProblem when it cannot be imported."""
    if not isinstance(raw, dict):
        raise RowProblem("a user must be a JSON object")
    email = _email(_pick(raw, USER_KEYS["email"]))
    if email is None:
        raise RowProblem("email is missing")
    role = (_text(_pick(raw, USER_KEYS["role"]), "role") or "agent").lower()
    if role not in ROLES:
        raise RowProblem(f"role {role!r} is not one of {', '.join(ROLES)}")
    active = _pick(raw, USER_KEYS["active"])
    if active is not None and not isinstance(active, bool):
        raise RowProblem("active must be true or false")
    stored_hash = _text(_pick(raw, USER_KEYS["password_hash"]), "passwordHash")
    password = _pick(raw, USER_KEYS["password"])
    if stored_hash is not None and not _BCRYPT_HASH.fullmatch(stored_hash):
        raise RowProblem("passwordHash is not a bcrypt hash ($2a$, $2b$ or $2y$)")
    if stored_hash is None:
        if not isinstance(password, str) or not password:
            raise RowProblem("neither a password nor a passwordHash")
        if _BCRYPT_HASH.fullmatch(password):
            # Some stores kept the hash in the password field; a hash is kept as it is.
            stored_hash, password = password, None
        elif len(password.encode()) > MAX_PASSWORD_BYTES:
            raise RowProblem(f"password is longer than {MAX_PASSWORD_BYTES} bytes (bcrypt's limit)")
    return MockUser(
        position=position,
        mock_id=_ref(_pick(raw, USER_KEYS["id"])),
        email=email,
        name=_name(raw, USER_KEYS, MAX_USER_NAME_LENGTH) or "",
        role=role,
        active=True if active is None else active,
        password_hash=stored_hash,
        password=password if stored_hash is None else None,
        created_at=_time(_pick(raw, USER_KEYS["created_at"]), "createdAt"),
    )


def read_prospect(
    raw: dict[str, Any],
    position: str,
    index: int,
    phones: PhoneNormalizer,
    statuses: dict[str, str],
) -> MockProspect:
    """A prospect record, checked; RowProblem when it cannot be imported."""
    raw_phone = _text(_pick(raw, PROSPECT_KEYS["phone"]), "phone")
    if raw_phone is None:
        raise RowProblem("phone is missing")
    normalized = phones.normalize(raw_phone)
    if normalized is None:
        raise RowProblem(f"phone {raw_phone[:64]!r} is not a valid phone number")
    phone, phone_time_zones = normalized
    company = _text(_pick(raw, PROSPECT_KEYS["company"]), "company")
    if company is not None and len(company) > MAX_COMPANY_LENGTH:
        raise RowProblem(f"company is longer than {MAX_COMPANY_LENGTH} characters")
    status = _text(_pick(raw, PROSPECT_KEYS["status"]), "status")
    if status is not None:
        known = statuses.get(loose_key(status))
        if known is None:
            raise RowProblem(f"unknown status {status[:64]!r} (add it to prospect_statuses first)")
        status = known
    return MockProspect(
        position=position,
        index=index,
        mock_id=_ref(_pick(raw, PROSPECT_KEYS["id"])),
        name=_name(raw, PROSPECT_KEYS, MAX_PROSPECT_NAME_LENGTH),
        phone=phone,
        phone_time_zones=list(phone_time_zones),
        email=_email(_pick(raw, PROSPECT_KEYS["email"])),
        company=company,
        status=status,
        last_call=_time(_pick(raw, PROSPECT_KEYS["last_call"]), "lastCall"),
        created_at=_time(_pick(raw, PROSPECT_KEYS["created_at"]), "createdAt"),
        updated_at=_time(_pick(raw, PROSPECT_KEYS["updated_at"]), "updatedAt"),
    )


def read_call(
    raw: dict[str, Any], position: str, phones: PhoneNormalizer, outcomes: dict[str, str]
) -> MockCall:
    """A call record, checked (its prospect and caller are resolved later)."""
    started_at = _time(_pick(raw, CALL_KEYS["started_at"]), "startedAt")
    if started_at is None:
        raise RowProblem("startedAt is missing")
    duration_value = _pick(raw, CALL_KEYS["duration"])
    duration: int | None = None
    if duration_value is not None:
        if isinstance(duration_value, bool) or not isinstance(duration_value, int | float):
            raise RowProblem("duration must be a number of seconds")
        duration = round(duration_value)
        if not MIN_DURATION_SECONDS <= duration <= MAX_DURATION_SECONDS:
            raise RowProblem(
                f"duration must be between {MIN_DURATION_SECONDS} and {MAX_DURATION_SECONDS} "
                "seconds"
            )
    ended_at = _time(_pick(raw, CALL_KEYS["ended_at"]), "endedAt")
    if ended_at is not None and ended_at < started_at:
        raise RowProblem("endedAt is before startedAt")
    if duration is None and ended_at is not None:
        duration = min(round((ended_at - started_at).total_seconds()), MAX_DURATION_SECONDS)
    if ended_at is None:
        # A call in the old store is over: it ended when its talk time says.
        ended_at = started_at + timedelta(seconds=duration or 0)
    outcome = _text(_pick(raw, CALL_KEYS["outcome"]), "outcome")
    if outcome is not None:
        known = outcomes.get(loose_key(outcome))
        if known is None:
            raise RowProblem(f"unknown outcome {outcome[:64]!r} (add it to dispositions first)")
        outcome = known
    notes = _text(_pick(raw, CALL_KEYS["notes"]), "notes")
    if notes is not None and len(notes) > MAX_NOTES_LENGTH:
        raise RowProblem(f"notes are longer than {MAX_NOTES_LENGTH} characters")
    recording_url = _text(_pick(raw, CALL_KEYS["recording_url"]), "recordingUrl")
    if recording_url is not None and len(recording_url) > MAX_RECORDING_URL_LENGTH:
        raise RowProblem(f"recordingUrl is longer than {MAX_RECORDING_URL_LENGTH} characters")
    numbers: dict[str, str | None] = {}
    for key, what in (("phone", "phoneNumber"), ("from", "fromNumber")):
        raw_number = _text(_pick(raw, CALL_KEYS[key]), what)
        normalized = phones.normalize(raw_number) if raw_number else None
        if raw_number and normalized is None:
            raise RowProblem(f"{what} {raw_number[:64]!r} is not a valid phone number")
        numbers[key] = normalized[0] if normalized else None
    caller_email = _text(_pick(raw, CALL_KEYS["caller_email"]), "callerEmail")
    return MockCall(
        position=position,
        caller_ref=_ref(_pick(raw, CALL_KEYS["caller"])),
        caller_email=caller_email.lower() if caller_email else None,
        phone_number=numbers["phone"],
        from_number=numbers["from"],
        started_at=started_at,
        ended_at=ended_at,
        outcome=outcome,
        duration=duration,
        notes=notes,
        recording_url=recording_url,
    )


# ---------------------------------------------------------------------------------------
# The plan: every record read and checked, prospects grouped by phone.


@dataclass
class MockPlan:
    """What the file holds, checked, before anything is written."""

    report: MockReport
    users: list[MockUser] = field(default_factory=list)
    users_by_ref: dict[str, MockUser] = field(default_factory=dict)
    users_by_email: dict[str, MockUser] = field(default_factory=dict)
    rejected_users: dict[str, str] = field(default_factory=dict)
    groups: dict[str, ProspectGroup] = field(default_factory=dict)


def _section(data: dict[str, Any], name: str) -> tuple[str, list[Any]]:
    for key in SECTIONS[name]:
        if key in data:
            value = data[key]
            if not isinstance(value, list):
                raise BadUserInput(f"{key} must be a JSON array")
            return key, value
    return SECTIONS[name][0], []


def plan_import(
    data: Any, *, phones: PhoneNormalizer, statuses: list[str], outcomes: list[str], dry_run: bool
) -> MockPlan:
    """Read and check every record; problems are reported with their position."""
    if not isinstance(data, dict):
        raise BadUserInput("The mock store must be a JSON object with users, prospects and calls")
    plan = MockPlan(report=MockReport(dry_run=dry_run))
    report = plan.report
    status_names: dict[str, str] = {}
    for status in statuses:
        status_names.setdefault(loose_key(status), status)
    outcome_names: dict[str, str] = {}
    for outcome in outcomes:
        outcome_names.setdefault(loose_key(outcome), outcome)

    def add_call(group: ProspectGroup, raw: Any, position: str) -> None:
        """A call joins its prospect's group; a bad one will keep the group out."""
        try:
            if not isinstance(raw, dict):
                raise RowProblem("a call must be a JSON object")
            group.calls.append(read_call(raw, position, phones, outcome_names))
        except RowProblem as problem:
            group.problems.append(MockError(position, str(problem)))
            group.unreadable_calls += 1

    users_key, users = _section(data, "users")
    for index, raw in enumerate(users):
        position = f"{users_key}[{index}]"
        try:
            user = read_user(raw, position)
        except RowProblem as problem:
            report.errors.append(MockError(position, str(problem)))
            if isinstance(raw, dict) and (ref := _ref(_pick(raw, USER_KEYS["id"]))):
                plan.rejected_users[ref] = position
            continue
        first = plan.users_by_email.get(user.email.lower())
        if first is None:
            plan.users.append(user)
            plan.users_by_email[user.email.lower()] = user
            first = user
            if user.password is not None and len(user.password) < MIN_PASSWORD_LENGTH:
                report.warnings.append(MockError(position, "password is short; imported as it was"))
        else:
            report.users_merged += 1
            report.merges.append(
                f"{position} has the email of {first.position} ({first.email}): "
                f"the first one is kept and calls by either go to it"
            )
        if user.mock_id is not None:
            plan.users_by_ref.setdefault(user.mock_id, first)

    prospects_key, prospects = _section(data, "prospects")
    prospects_by_ref: dict[str, MockProspect] = {}
    rejected_prospects: dict[str, str] = {}
    for index, raw in enumerate(prospects):
        position = f"{prospects_key}[{index}]"
        if not isinstance(raw, dict):
            report.errors.append(MockError(position, "a prospect must be a JSON object"))
            report.prospects_rejected += 1
            continue
        nested_key = next((k for k in PROSPECT_KEYS["calls"] if k in raw), None)
        nested = raw.get(nested_key) if nested_key else None
        try:
            if nested is not None and not isinstance(nested, list):
                raise RowProblem(f"{nested_key} must be a JSON array")
            prospect = read_prospect(raw, position, index, phones, status_names)
            if prospect.mock_id is not None and prospect.mock_id in prospects_by_ref:
                other = prospects_by_ref[prospect.mock_id].position
                raise RowProblem(f"id {prospect.mock_id!r} is also the id of {other}")
        except RowProblem as problem:
            report.errors.append(MockError(position, str(problem)))
            report.prospects_rejected += 1
            report.calls_rejected += len(nested or [])
            if ref := _ref(_pick(raw, PROSPECT_KEYS["id"])):
                rejected_prospects.setdefault(ref, position)
            continue
        if prospect.mock_id is not None:
            prospects_by_ref[prospect.mock_id] = prospect
        group = plan.groups.setdefault(prospect.phone, ProspectGroup(prospect.phone))
        group.records.append(prospect)
        for call_index, raw_call in enumerate(nested or []):
            add_call(group, raw_call, f"{position}.{nested_key}[{call_index}]")

    calls_key, calls = _section(data, "calls")
    for index, raw in enumerate(calls):
        position = f"{calls_key}[{index}]"
        ref = _ref(_pick(raw, CALL_KEYS["prospect"])) if isinstance(raw, dict) else None
        owner = prospects_by_ref.get(ref) if ref is not None else None
        if owner is None:
            if not isinstance(raw, dict):
                reason = "a call must be a JSON object"
            elif ref is None:
                reason = "prospectId is missing"
            elif ref in rejected_prospects:
                reason = f"its prospect {rejected_prospects[ref]} was not imported"
            else:
                reason = f"prospectId {ref!r} is not a prospect in the file"
            report.errors.append(MockError(position, reason))
            report.calls_rejected += 1
            continue
        add_call(plan.groups[owner.phone], raw, position)
    return plan


# ---------------------------------------------------------------------------------------
# Merging a group and writing it.

_OLDEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class MergedProspect:
    """One prospect made of the records that share a phone."""

    name: str | None
    email: str | None
    company: str | None
    status: str
    last_call: datetime | None
    created_at: datetime | None
    updated_at: datetime | None
    description: str | None


def merge_group(group: ProspectGroup) -> MergedProspect:
    """The newest record wins (updatedAt, else createdAt, else the later in the file);
    its empty fields are filled from the others, newest first. The earliest createdAt
    and the latest lastCall or call start are kept."""
    ordered = sorted(
        group.records,
        key=lambda r: (r.updated_at or r.created_at or _OLDEST, r.index),
        reverse=True,
    )
    winner = ordered[0]
    filled: list[str] = []

    def first(attribute: str) -> Any:
        for record in ordered:
            value = getattr(record, attribute)
            if value is not None:
                if record is not winner:
                    filled.append(f"{attribute} from {record.position}")
                return value
        return None

    name, email, company, status = (first(a) for a in ("name", "email", "company", "status"))
    description = None
    if len(group.records) > 1:
        positions = ", ".join(r.position for r in group.records)
        description = f"{positions} share {group.phone}: merged, {winner.position} is newest"
        if filled:
            description += "; " + ", ".join(filled)
    starts = [r.last_call for r in group.records if r.last_call] + [
        c.started_at for c in group.calls
    ]
    return MergedProspect(
        name=name,
        email=email,
        company=company,
        status=status or "New",
        last_call=max(starts, default=None),
        created_at=min((r.created_at for r in group.records if r.created_at), default=None),
        updated_at=max((r.updated_at for r in group.records if r.updated_at), default=None),
        description=description,
    )


async def _hash_password(user: MockUser, rounds: int, dry_run: bool) -> str:
    """The stored bcrypt hash, kept; or the plaintext hashed, off the event loop.

    Unlike new accounts, migrated ones keep short passwords: refusing them would lock
    people out of the floor on the day of the move (a warning names them instead).
    """
    if user.password_hash is not None:
        return user.password_hash
    if dry_run:
        return DRY_RUN_HASH
    assert user.password is not None
    hashed = await asyncio.to_thread(bcrypt.hashpw, user.password.encode(), bcrypt.gensalt(rounds))
    return hashed.decode()


def _database_reason(error: asyncpg.PostgresError) -> str:
    translated = translate_database_error(error)
    return translated.message if translated is not None else f"database refused it: {error}"


async def _write_users(
    connection: Connection, plan: MockPlan, bcrypt_rounds: int, dry_run: bool
) -> None:
    report = plan.report
    new: list[MockUser] = []
    for user in plan.users:
        existing = await connection.fetchrow(QUERIES["user_by_email"], user.email)
        if existing is not None:
            user.user_id = existing["id"]
            report.users_existing += 1
        else:
            new.append(user)
    hashes = await asyncio.gather(*(_hash_password(u, bcrypt_rounds, dry_run) for u in new))
    for user, password_hash in zip(new, hashes, strict=True):
        try:
            async with connection.transaction():
                user.user_id = await connection.fetchval(
                    QUERIES["insert_imported_user"],
                    user.email,
                    user.name,
                    password_hash,
                    user.role,
                    user.active,
                    user.created_at,
                )
        except asyncpg.PostgresError as error:
            report.errors.append(MockError(user.position, _database_reason(error)))
            continue
        if user.user_id is None:  # created by someone else a moment ago
            existing = await connection.fetchrow(QUERIES["user_by_email"], user.email)
            user.user_id = existing["id"] if existing else None
            report.users_existing += 1
        else:
            report.users_created += 1


class _Callers:
    """Who made each call: a user of the file by id or email, or a user already here."""

    def __init__(self, connection: Connection, plan: MockPlan) -> None:
        self.connection = connection
        self.plan = plan
        self.by_email: dict[str, UUID | None] = {}

    async def resolve(self, call: MockCall) -> UUID | str:
        """The caller's user id, or why there is none."""
        plan = self.plan
        if call.caller_ref is not None and call.caller_ref in plan.users_by_ref:
            user = plan.users_by_ref[call.caller_ref]
            return user.user_id or f"its caller {user.position} was not imported"
        if call.caller_email is not None:
            if call.caller_email in plan.users_by_email:
                user = plan.users_by_email[call.caller_email]
                return user.user_id or f"its caller {user.position} was not imported"
            if call.caller_email not in self.by_email:
                row = await self.connection.fetchrow(QUERIES["user_by_email"], call.caller_email)
                self.by_email[call.caller_email] = row["id"] if row else None
            found = self.by_email[call.caller_email]
            return found or f"callerEmail {call.caller_email!r} is not a user"
        if call.caller_ref is None:
            return "callerId is missing"
        if call.caller_ref in plan.rejected_users:
            return f"its caller {plan.rejected_users[call.caller_ref]} was not imported"
        return f"callerId {call.caller_ref!r} is not a user in the file"


async def _write_group(
    connection: Connection, group: ProspectGroup, callers: _Callers, report: MockReport
) -> None:
    """One prospect and its calls, all or nothing (a savepoint)."""
    where = group.records[0].position if len(group.records) == 1 else f"prospect {group.phone}"
    calls: list[tuple[UUID, MockCall]] = []
    seen: set[tuple[UUID, datetime]] = set()
    duplicates = 0
    for call in group.calls:
        caller = await callers.resolve(call)
        if isinstance(caller, str):
            group.problems.append(MockError(call.position, caller))
        elif (caller, call.started_at) in seen:
            duplicates += 1
        else:
            seen.add((caller, call.started_at))
            calls.append((caller, call))
    merged = merge_group(group)

    def reject(reason: str) -> None:
        count = len(group.calls) + group.unreadable_calls
        report.errors.extend(group.problems)
        report.errors.append(MockError(where, f"{reason}; not imported, nor its {count} call(s)"))
        report.prospects_rejected += 1
        report.calls_rejected += count

    if group.problems:
        reject("a record of this prospect has a problem (listed)")
        return
    try:
        async with connection.transaction():
            filled = False
            prospect_id = None
            existing = await connection.fetchrow(QUERIES["prospect_for_import"], group.phone)
            if existing is None:
                if merged.name is None:
                    raise RowProblem("name is missing")
                prospect_id = await connection.fetchval(
                    QUERIES["insert_imported_prospect"],
                    merged.name,
                    group.phone,
                    merged.email,
                    merged.company,
                    merged.status,
                    merged.last_call,
                    merged.created_at,
                    merged.updated_at,
                    group.records[0].phone_time_zones,
                )
                if prospect_id is None:  # created through the API a moment ago
                    existing = await connection.fetchrow(
                        QUERIES["prospect_for_import"], group.phone
                    )
                    assert existing is not None
            if existing is not None:
                # The database wins for a prospect it already has: the file only fills
                # empty fields and moves last_call forward; name and status stay.
                prospect_id = existing["id"]
                values = (
                    existing["email"] or merged.email,
                    existing["company"] or merged.company,
                    max((t for t in (existing["last_call"], merged.last_call) if t), default=None),
                )
                if values != (existing["email"], existing["company"], existing["last_call"]):
                    await connection.execute(
                        QUERIES["fill_imported_prospect"], prospect_id, *values
                    )
                    filled = True
            added = await connection.fetchval(
                QUERIES["insert_imported_calls"],
                prospect_id,
                [caller for caller, _ in calls],
                [call.phone_number or group.phone for _, call in calls],
                [call.from_number for _, call in calls],
                [call.started_at for _, call in calls],
                [call.ended_at for _, call in calls],
                [call.outcome for _, call in calls],
                [call.duration for _, call in calls],
                [call.notes for _, call in calls],
                [call.recording_url for _, call in calls],
            )
    except RowProblem as problem:
        reject(str(problem))
        return
    except asyncpg.PostgresError as error:
        reject(_database_reason(error))
        return
    if existing is None:
        report.prospects_created += 1
    else:
        report.prospects_existing += 1
        report.prospects_filled += filled
    report.prospects_merged += len(group.records) - 1
    if merged.description:
        report.merges.append(merged.description)
    report.calls_created += added
    report.calls_existing += len(calls) - added
    report.calls_duplicate += duplicates


def _position_key(error: MockError) -> tuple[int, list[Any]]:
    section = error.position.split("[", 1)[0]
    rank = next((i for i, names in enumerate(SECTIONS.values()) if section in names), 1)
    parts = re.split(r"(\d+)", error.position)
    return rank, [int(p) if p.isdigit() else p for p in parts]


async def import_mock_store(
    connection: Connection,
    data: Any,
    *,
    region: str,
    bcrypt_rounds: int,
    dry_run: bool = False,
) -> MockReport:
    """Migrate the mock store's users, prospects and calls in one transaction."""
    transaction = connection.transaction()
    await transaction.start()
    try:
        await connection.execute(QUERIES["lock_mock_import"], MOCK_IMPORT_LOCK_KEY)
        statuses = [r["name"] for r in await connection.fetch(QUERIES["known_statuses"])]
        outcomes = [r["name"] for r in await connection.fetch(QUERIES["known_dispositions"])]
        plan = plan_import(
            data,
            phones=PhoneNormalizer(region),
            statuses=statuses,
            outcomes=outcomes,
            dry_run=dry_run,
        )
        await _write_users(connection, plan, bcrypt_rounds, dry_run)
        callers = _Callers(connection, plan)
        groups = sorted(plan.groups.values(), key=lambda g: g.records[0].index)
        for group in groups:
            await _write_group(connection, group, callers, plan.report)
    except BaseException:
        await transaction.rollback()
        raise
    if dry_run:
        await transaction.rollback()
    else:
        await transaction.commit()
    plan.report.errors.sort(key=_position_key)
    return plan.report
