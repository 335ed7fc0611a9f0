"""The authorization matrix: every mutation, run by everyone who might run it.

Each mutation in the schema has a row; each row has five cells, one per actor:

    anonymous            no token, on the first agent's data
    agent, own           the first agent, on data that is theirs (assigned to them, their call)
    agent, another's     the first agent, on the second agent's data
    manager, admin       each on the second agent's data

Each cell names its outcome: OK, or the extensions.code of the refusal (UNAUTHENTICATED,
FORBIDDEN, or a rule's code). A refused cell must have written nothing (every table is
compared before and after); an OK cell must have written what it says. A mutation added
to the schema without a row fails test_the_matrix_has_a_row_for_every_mutation. The rules
are the README's "Who may do what".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from helpers import (
    CREATE_PROSPECT,
    END_CALL,
    PASSWORD,
    START_CALL,
    Api,
    Team,
    add_prospect,
    next_phone,
    start,
)

from settings import Settings

OK = "OK"
U, F = "UNAUTHENTICATED", "FORBIDDEN"
ASSIGNED = "ASSIGNED_TO_OTHER_AGENT"
ACTORS = ("anonymous", "agent, own", "agent, another's", "manager", "admin")
ASSIGN = "mutation($p: ID!, $a: ID!) { assignLead(prospectId: $p, agentId: $a) { id agentId } }"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No background sweep: it folds report rollups, which would look like a cell's write."""
    return replace(settings, stale_call_sweep_seconds=3600)


@dataclass
class Floor:
    """The server, the database and the team a row runs against, and how to make data."""

    api: Api
    pool: asyncpg.Pool
    team: Team

    async def prospect(self, owner: dict[str, Any] | None) -> str:
        """A fresh prospect, assigned to owner (None: unassigned); its id."""
        manager = self.team.manager["token"]
        prospect_id: str = (await add_prospect(self.api, manager, next_phone()))["id"]
        if owner is not None:
            await self.api.data(ASSIGN, {"p": prospect_id, "a": owner["id"]}, manager)
        return prospect_id

    async def call(self, owner: dict[str, Any]) -> dict[str, str]:
        """A fresh prospect of owner's, on a call owner started: {p, c}."""
        prospect_id = await self.prospect(owner)
        started = await start(self.api, owner["token"], prospect_id)
        return {"p": prospect_id, "c": started["callLogId"]}


Person = dict[str, Any]
# (floor, actor or None for anonymous, owner of the data) -> the variables; a "_token" key
# replaces the actor's token (logout revokes the token it is sent with).
Arrange = Callable[[Floor, Person | None, Person], Awaitable[dict[str, Any]]]
# (floor, actor, variables, data) -> None, asserting the write an OK cell made.
Landed = Callable[[Floor, Person, dict[str, Any], dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Row:
    """One mutation: a valid request for it, and who may run it."""

    query: str
    arrange: Arrange
    expect: tuple[str, str, str, str, str]  # by ACTORS
    landed: Landed
    # Tables a refusal writes on purpose (a failed login is counted).
    refusal_writes: tuple[str, ...] = ()


def in_a_day() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).isoformat()


async def one(floor: Floor, query: str, *args: Any) -> Any:
    return await floor.pool.fetchval(query, *args)


def e164(phone: str) -> str:
    """next_phone()'s '+1 212 555 0123' as stored."""
    return phone.replace(" ", "")


# -- arranging ------------------------------------------------------------------------------


async def owners_prospect(floor: Floor, actor: Person | None, owner: Person) -> dict[str, Any]:
    return {"p": await floor.prospect(owner)}


async def prospect_and_time(floor: Floor, actor: Person | None, owner: Person) -> dict[str, Any]:
    return {"p": await floor.prospect(owner), "at": in_a_day()}


async def owners_call(floor: Floor, actor: Person | None, owner: Person) -> dict[str, Any]:
    return await floor.call(owner)


async def nothing(floor: Floor, actor: Person | None, owner: Person) -> dict[str, Any]:
    return {}


async def fresh_phone(floor: Floor, actor: Person | None, owner: Person) -> dict[str, Any]:
    return {"phone": next_phone()}


async def listed_phone(floor: Floor, actor: Person | None, owner: Person) -> dict[str, Any]:
    phone = next_phone()
    await floor.api.data(
        "mutation($phone: String!) { addDoNotCall(phone: $phone) { id } }",
        {"phone": phone},
        floor.team.manager["token"],
    )
    return {"phone": phone}


async def callable_lead(floor: Floor, actor: Person | None, owner: Person) -> dict[str, Any]:
    await floor.prospect(owner)
    return {}


async def stale_call(floor: Floor, actor: Person | None, owner: Person) -> dict[str, Any]:
    await floor.call(owner)
    return {}


async def csv_of_one(floor: Floor, actor: Person | None, owner: Person) -> dict[str, Any]:
    return {"csv": f"name,phone\nImported Person,{next_phone()}\n"}


async def list_of_one(floor: Floor, actor: Person | None, owner: Person) -> dict[str, Any]:
    return {"csv": f"{next_phone()}\n"}


async def credentials(floor: Floor, actor: Person | None, owner: Person) -> dict[str, Any]:
    """Signing in as oneself (or, anonymously, as the owner) with the right password; as
    someone else, without theirs."""
    if actor is None or actor is owner:
        return {"e": owner["email"], "p": PASSWORD}
    return {"e": owner["email"], "p": "not their password"}


async def own_session(floor: Floor, actor: Person | None, owner: Person) -> dict[str, Any]:
    """Logout revokes the token it is sent with: a fresh one, so the actor's stays."""
    if actor is None:
        return {}
    return {"_token": await floor.api.login(actor["email"])}


async def new_prospect(floor: Floor, actor: Person | None, owner: Person) -> dict[str, Any]:
    return {"input": {"name": "Matrix Prospect", "phone": next_phone()}}


async def unassigned_for_owner(floor: Floor, actor: Person | None, owner: Person) -> dict[str, Any]:
    return {"p": await floor.prospect(None), "a": owner["id"]}


counter = iter(range(1, 10**6))


async def a_number(floor: Floor, actor: Person | None, owner: Person) -> dict[str, Any]:
    return {"n": next(counter) + 10}


async def a_window(floor: Floor, actor: Person | None, owner: Person) -> dict[str, Any]:
    return {"h": [{"weekday": 1, "opensAt": "09:00", "closesAt": f"{12 + next(counter) % 9}:00"}]}


async def new_user(floor: Floor, actor: Person | None, owner: Person) -> dict[str, Any]:
    email = f"new{next(counter)}@test.example"
    return {"input": {"email": email, "password": PASSWORD, "role": "agent"}}


# -- what OK cells wrote --------------------------------------------------------------------


async def exported(floor: Floor, actor: Person, variables: dict[str, Any], data: Any) -> None:
    assert data["exportProspect"]
    kinds = await one(
        floor,
        "SELECT array_agg(kind) FROM privacy_requests WHERE prospect_id = $1 AND requested_by = $2",
        variables["p"],
        actor["id"],
    )
    assert kinds == ["export"]


async def erased(floor: Floor, actor: Person, variables: dict[str, Any], data: Any) -> None:
    assert await one(floor, "SELECT erased_at FROM prospects WHERE id = $1", variables["p"])


async def imported(floor: Floor, actor: Person, variables: dict[str, Any], data: Any) -> None:
    phone = e164(variables["csv"].splitlines()[1].split(",")[1])
    assert data["importProspects"]["inserted"] == 1
    assert await one(floor, "SELECT count(*) FROM prospects WHERE phone = $1", phone) == 1


async def listed(floor: Floor, actor: Person, variables: dict[str, Any], data: Any) -> None:
    phone = e164(variables.get("phone") or variables["csv"].strip())
    assert await one(
        floor, "SELECT count(*) FROM do_not_call WHERE phone = $1 AND removed_at IS NULL", phone
    )


async def unlisted(floor: Floor, actor: Person, variables: dict[str, Any], data: Any) -> None:
    assert data["removeDoNotCall"] is True
    phone = e164(variables["phone"])
    assert not await one(
        floor, "SELECT count(*) FROM do_not_call WHERE phone = $1 AND removed_at IS NULL", phone
    )


async def took_a_lead(floor: Floor, actor: Person, variables: dict[str, Any], data: Any) -> None:
    lead = data["nextLead"]
    if not lead["nothingCallable"]:
        caller = await one(
            floor,
            "SELECT caller_id::text FROM active_calls WHERE call_log_id = $1",
            lead["callLogId"],
        )
        assert caller == actor["id"]
    if actor["role"] == "agent":
        # Never on a prospect assigned to another agent.
        taken = await one(
            floor,
            "SELECT count(*) FROM active_calls c JOIN lead_assignments a"
            " ON a.prospect_id = c.prospect_id AND a.active"
            " WHERE c.caller_id = $1 AND a.agent_id <> $1",
            actor["id"],
        )
        assert taken == 0


async def scheduled(floor: Floor, actor: Person, variables: dict[str, Any], data: Any) -> None:
    assert await one(
        floor,
        "SELECT count(*) FROM callbacks WHERE prospect_id = $1 AND created_by = $2",
        variables["p"],
        actor["id"],
    )


async def hours_set(floor: Floor, actor: Person, variables: dict[str, Any], data: Any) -> None:
    closes = await one(
        floor, "SELECT to_char(closes_at, 'FMHH24:MI') FROM calling_hours WHERE weekday = 1"
    )
    assert closes == variables["h"][0]["closesAt"]


async def rules_set(floor: Floor, actor: Person, variables: dict[str, Any], data: Any) -> None:
    assert await one(floor, "SELECT max_attempts_per_day FROM dialing_rules") == variables["n"]


async def outcome_set(floor: Floor, actor: Person, variables: dict[str, Any], data: Any) -> None:
    delay = await one(
        floor, "SELECT extract(epoch FROM recycle_delay) FROM dispositions WHERE name = 'Busy'"
    )
    assert delay == variables["n"]


async def signed_in(floor: Floor, actor: Person, variables: dict[str, Any], data: Any) -> None:
    token = data["login"]["token"]
    viewer = await floor.api.data("{ viewer { email } }", token=token)
    assert viewer["viewer"]["email"] == variables["e"]


async def signed_out(floor: Floor, actor: Person, variables: dict[str, Any], data: Any) -> None:
    assert data["logout"] is True
    assert await floor.api.error_code("{ viewer { id } }", token=variables["_token"]) == U


async def created(floor: Floor, actor: Person, variables: dict[str, Any], data: Any) -> None:
    phone = e164(variables["input"]["phone"])
    assert (
        await one(floor, "SELECT id::text FROM prospects WHERE phone = $1", phone)
        == (data["createProspect"]["id"])
    )


async def updated(floor: Floor, actor: Person, variables: dict[str, Any], data: Any) -> None:
    status = await one(floor, "SELECT status FROM prospects WHERE id = $1", variables["p"])
    assert status == "Qualified"


async def in_call(floor: Floor, actor: Person, variables: dict[str, Any], data: Any) -> None:
    caller = await one(
        floor, "SELECT caller_id::text FROM active_calls WHERE prospect_id = $1", variables["p"]
    )
    assert caller == actor["id"]


async def ended(floor: Floor, actor: Person, variables: dict[str, Any], data: Any) -> None:
    assert await one(floor, "SELECT ended_at FROM call_logs WHERE id = $1", variables["c"])
    assert not await one(
        floor, "SELECT count(*) FROM active_calls WHERE prospect_id = $1", variables["p"]
    )


async def kept_alive(floor: Floor, actor: Person, variables: dict[str, Any], data: Any) -> None:
    live = await one(
        floor, "SELECT id::text FROM active_calls WHERE call_log_id = $1", variables["c"]
    )
    assert data["heartbeatCall"]["id"] == live


async def released(floor: Floor, actor: Person, variables: dict[str, Any], data: Any) -> None:
    assert data["releaseStaleCalls"] >= 1
    assert await one(floor, "SELECT count(*) FROM active_calls") == 0


async def assigned(floor: Floor, actor: Person, variables: dict[str, Any], data: Any) -> None:
    agent = await one(
        floor,
        "SELECT agent_id::text FROM lead_assignments WHERE prospect_id = $1 AND active",
        variables["p"],
    )
    assert agent == variables["a"]


async def unassigned(floor: Floor, actor: Person, variables: dict[str, Any], data: Any) -> None:
    assert data["unassignLead"] is True
    assert not await one(
        floor,
        "SELECT count(*) FROM lead_assignments WHERE prospect_id = $1 AND active",
        variables["p"],
    )


async def user_made(floor: Floor, actor: Person, variables: dict[str, Any], data: Any) -> None:
    email = variables["input"]["email"]
    assert await one(floor, "SELECT role FROM users WHERE email = $1", email) == "agent"


# -- the matrix -----------------------------------------------------------------------------

#                       anonymous  own  another's  manager  admin
SUPERVISORS_ONLY = (U, F, F, OK, OK)
ADMINS_ONLY = (U, F, F, F, OK)
ANYONE_SIGNED_IN = (U, OK, OK, OK, OK)
OWNERS_AND_SUPERVISORS = (U, OK, ASSIGNED, OK, OK)
OWN_CALLS_AND_SUPERVISORS = (U, OK, F, OK, OK)

MATRIX: dict[str, Row] = {
    "exportProspect": Row(
        "mutation($p: ID!) { exportProspect(id: $p) }", owners_prospect, ADMINS_ONLY, exported
    ),
    "eraseProspect": Row(
        "mutation($p: ID!) { eraseProspect(id: $p) { erasedAt } }",
        owners_prospect,
        ADMINS_ONLY,
        erased,
    ),
    "importProspects": Row(
        "mutation($csv: String!) { importProspects(csv: $csv) { inserted } }",
        csv_of_one,
        SUPERVISORS_ONLY,
        imported,
    ),
    "importDoNotCall": Row(
        "mutation($csv: String!) { importDoNotCall(csv: $csv) { added } }",
        list_of_one,
        SUPERVISORS_ONLY,
        listed,
    ),
    "nextLead": Row(
        "mutation { nextLead { nothingCallable callLogId prospect { id } } }",
        callable_lead,
        ANYONE_SIGNED_IN,
        took_a_lead,
    ),
    "scheduleCallback": Row(
        "mutation($p: ID!, $at: DateTime!) { scheduleCallback(prospectId: $p, at: $at) { id } }",
        prospect_and_time,
        OWNERS_AND_SUPERVISORS,
        scheduled,
    ),
    "addDoNotCall": Row(
        "mutation($phone: String!) { addDoNotCall(phone: $phone) { id } }",
        fresh_phone,
        SUPERVISORS_ONLY,
        listed,
    ),
    "removeDoNotCall": Row(
        "mutation($phone: String!) { removeDoNotCall(phone: $phone) }",
        listed_phone,
        SUPERVISORS_ONLY,
        unlisted,
    ),
    "setCallingHours": Row(
        "mutation($h: [CallingHoursInput!]!) { setCallingHours(hours: $h) { weekday } }",
        a_window,
        SUPERVISORS_ONLY,
        hours_set,
    ),
    "updateDialingRules": Row(
        "mutation($n: Int!) { updateDialingRules(input: {maxAttemptsPerDay: $n})"
        " { maxAttemptsPerDay } }",
        a_number,
        SUPERVISORS_ONLY,
        rules_set,
    ),
    "updateDisposition": Row(
        'mutation($n: Int!) { updateDisposition(name: "Busy", input: {recycleDelaySeconds: $n})'
        " { name } }",
        a_number,
        SUPERVISORS_ONLY,
        outcome_set,
    ),
    "login": Row(
        "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
        credentials,
        (OK, OK, U, U, U),
        signed_in,
        refusal_writes=("login_failures",),
    ),
    # Logout acts on the caller's own token only: there is no other's data to reach.
    "logout": Row("mutation { logout }", own_session, ANYONE_SIGNED_IN, signed_out),
    "createProspect": Row(CREATE_PROSPECT, new_prospect, ANYONE_SIGNED_IN, created),
    "updateProspect": Row(
        'mutation($p: ID!) { updateProspect(id: $p, input: {status: "Qualified"}) { id } }',
        owners_prospect,
        OWNERS_AND_SUPERVISORS,
        updated,
    ),
    "startCall": Row(START_CALL, owners_prospect, OWNERS_AND_SUPERVISORS, in_call),
    "endCall": Row(
        END_CALL.replace("$o: String!", '$o: String! = "No Answer"'),
        owners_call,
        OWN_CALLS_AND_SUPERVISORS,
        ended,
    ),
    "heartbeatCall": Row(
        "mutation($c: ID!) { heartbeatCall(callLogId: $c) { id } }",
        owners_call,
        OWN_CALLS_AND_SUPERVISORS,
        kept_alive,
    ),
    "releaseStaleCalls": Row(
        "mutation { releaseStaleCalls(olderThan: 0) }", stale_call, SUPERVISORS_ONLY, released
    ),
    "assignLead": Row(ASSIGN, unassigned_for_owner, SUPERVISORS_ONLY, assigned),
    "unassignLead": Row(
        "mutation($p: ID!) { unassignLead(prospectId: $p) }",
        owners_prospect,
        SUPERVISORS_ONLY,
        unassigned,
    ),
    "createUser": Row(
        "mutation($input: CreateUserInput!) { createUser(input: $input) { id } }",
        new_user,
        ADMINS_ONLY,
        user_made,
    ),
}


async def snapshot(pool: asyncpg.Pool, leave_out: tuple[str, ...]) -> dict[str, list[str]]:
    """Every row of every table (as sorted text), but those a refusal writes on purpose."""
    tables = await pool.fetch(
        "SELECT quote_ident(table_name) AS name FROM information_schema.tables"
        " WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
    )
    rows = {}
    for table in tables:
        if table["name"] in leave_out:
            continue
        found = await pool.fetch(f"SELECT t::text AS row FROM {table['name']} t")
        rows[table["name"]] = sorted(row["row"] for row in found)
    return rows


async def test_the_matrix_has_a_row_for_every_mutation(api: Api) -> None:
    names = await api.data('{ __type(name: "Mutation") { fields { name } } }')
    mutations = {field["name"] for field in names["__type"]["fields"]}
    # A new mutation needs a row here: who may run it, and what it writes.
    assert set(MATRIX) == mutations


@pytest.mark.parametrize("mutation", sorted(MATRIX))
async def test_who_may_run(mutation: str, api: Api, team: Team, pool: asyncpg.Pool) -> None:
    row = MATRIX[mutation]
    floor = Floor(api=api, pool=pool, team=team)
    first, second = team.agents
    cells = (
        (None, first),
        (first, first),
        (first, second),
        (team.manager, second),
        (team.admin, second),
    )
    problems = []
    for actor_name, (actor, owner), expected in zip(ACTORS, cells, row.expect, strict=True):
        variables = await row.arrange(floor, actor, owner)
        token = variables.pop("_token", None) or (actor["token"] if actor else None)
        before = await snapshot(pool, row.refusal_writes)
        body = await api.graphql(row.query, variables, token)
        errors = body.get("errors") or []
        outcome = errors[0]["extensions"]["code"] if errors else OK
        if outcome != expected or len(errors) > 1:
            problems.append(f"{actor_name}: expected {expected}, got {errors or 'OK'}")
            continue
        if expected != OK:
            after = await snapshot(pool, row.refusal_writes)
            written = [table for table in after if after[table] != before[table]]
            if written:
                problems.append(f"{actor_name}: refused with {outcome} but wrote {written}")
            continue
        assert actor is not None or row.expect[0] == OK
        try:
            await row.landed(floor, actor or owner, {**variables, "_token": token}, body["data"])
        except AssertionError as error:
            problems.append(f"{actor_name}: OK, but the write is not there: {error!r}")
    assert not problems, f"{mutation}:\n" + "\n".join(problems)
