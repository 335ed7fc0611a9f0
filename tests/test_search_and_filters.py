"""The prospect list's filters answer the same whichever plan prospects_page() picks.

prospects_page() (sql/functions/prospects.sql) chooses how to find a page: walking the list
order for a budget of prospects, then the trigram index or the agent's assignments for the
rest. The answer must be the one the plain query gives (REFERENCE below: the query the list
ran before the index). The differential test asks both for every filter of a corpus, with
walk budgets small enough to force each way, with and without the trigram index; the API
tests pin the search's meaning (phone digits in any writing, wildcards taken literally,
case ignored, cursors, live assignments only, filters combined).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from helpers import Team, nodes, read_plans, running_server, traced_connection

from resolvers.phones import phone_digits
from resolvers.prospects import encode_cursor, like_pattern
from settings import Settings

# The list's query before prospects_page(): every filter in one WHERE clause.
REFERENCE = """
SELECT p.id, p.created_at
FROM prospects p
WHERE ($1::text IS NULL OR p.status = $1)
  AND ($2::text IS NULL
       OR p.name ILIKE '%' || $2 || '%'
       OR p.email ILIKE '%' || $2 || '%'
       OR p.company ILIKE '%' || $2 || '%'
       OR ($7::text IS NOT NULL AND p.phone LIKE '%' || $7 || '%'))
  AND ($3::uuid IS NULL OR EXISTS (
        SELECT 1 FROM lead_assignments la
        WHERE la.prospect_id = p.id AND la.agent_id = $3 AND assignment_is_live(la, now())))
  AND ($4::timestamptz IS NULL OR (p.created_at, p.id) < ($4, $5::uuid))
ORDER BY p.created_at DESC, p.id DESC
LIMIT $6
"""
PAGE = """
SELECT id, created_at FROM prospects_page($1, $2, $7, $3, $4, $5, $6, $8)
ORDER BY created_at DESC, id DESC
"""

FIRST = ["Ann", "Bob", "Cleo", "Dmitri", "Élodie", "ÉMILE", "Zoë", "Quinn", "Mary", "Ole"]
LAST = ["Smith", "SMITHERS", "Nguyen", "Müller", "O'Brien", "Vandelay", "50% Off", "a_b", "x\\y"]
COMPANIES = [None, "Acme Corp", "Initech", "Globex 100%", "under_score", "Back\\slash", "ÉCOLE"]
DOMAINS = ["example.com", "mail.test", "corp.example"]
STATUSES = ["New"] * 8 + ["Qualified", "Contacted"]
SEED_PROSPECTS = 1200

TERMS = [
    None,
    "smith",
    "SMITHERS",
    "mary smith",
    "zoë",
    "ÉLODIE",
    "o'brien",
    "50%",
    "%",
    "_",
    "a_b",
    "\\",
    "x\\y",
    "a",
    "qu",
    "xq",
    "acme corp",
    "globex 100",
    "@mail",
    "mail test",
    "example.com",
    "555-0123",
    "(212) 555",
    "+1 212 555 0123",
    "2125550",
    "646",
    "99",
    "absent-term",
]


async def seed(connection: asyncpg.Connection) -> dict[str, UUID]:
    """Prospects with every kind of text the terms look for, statuses, creation times with
    ties, and assignments live, expired and inactive; the agents' ids by name."""
    rng = random.Random(12)
    agents = {
        name: await connection.fetchval(
            "INSERT INTO users (email, name, password_hash, role)"
            " VALUES ($1, $2, 'x', 'agent') RETURNING id",
            f"{name}@search.test",
            name,
        )
        for name in ("many", "few")
    }
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for n in range(SEED_PROSPECTS):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        email = (
            None
            if n % 7 == 0
            else f"{first.lower()}.{n}@{rng.choice(DOMAINS)}".replace("'", "").replace(" ", "")
        )
        area = rng.choice(["212", "646", "718"])
        phone = f"+1{area}555{n:04d}" if n % 5 else f"+1{area}{rng.randrange(2000000, 9999999)}"
        # Ties: several prospects share a creation time, so the id decides their order.
        created = start + timedelta(minutes=n // 3)
        rows.append(
            (
                f"{first} {last}",
                phone,
                email,
                rng.choice(COMPANIES),
                rng.choice(STATUSES),
                created,
            )
        )
    await connection.executemany(
        "INSERT INTO prospects (name, phone, email, company, status, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (phone) DO NOTHING",
        rows,
    )
    ids = [r["id"] for r in await connection.fetch("SELECT id FROM prospects ORDER BY id")]
    rng.shuffle(ids)
    now = datetime.now(UTC)
    assignments = []
    for index, prospect in enumerate(ids[:400]):
        agent = agents["many"] if index < 360 else agents["few"]
        kind = index % 4
        active = kind != 3  # every fourth: inactive history
        expires = {1: now + timedelta(days=3), 2: now - timedelta(hours=1)}.get(kind)
        assignments.append((prospect, agent, expires, active))
    await connection.executemany(
        "INSERT INTO lead_assignments (prospect_id, agent_id, expires_at, active)"
        " VALUES ($1, $2, $3, $4)",
        assignments,
    )
    await connection.execute("ANALYZE")
    return agents


@pytest.fixture
async def seeded(database_url: str) -> AsyncIterator[tuple[asyncpg.Connection, dict[str, UUID]]]:
    """A connection to a database seeded for searching, and the agents' ids."""
    connection = await asyncpg.connect(database_url)
    try:
        agents = await seed(connection)
        yield connection, agents
    finally:
        await connection.close()


async def compare_everything(
    connection: asyncpg.Connection, agents: dict[str, UUID], budgets: list[int]
) -> int:
    """Every filter of the corpus, at every budget, from the start and after cursors:
    prospects_page() answers what REFERENCE answers. Returns how many pages were compared."""
    compared = 0
    for term, status, agent in itertools.product(
        TERMS, [None, "Qualified", "New"], [None, agents["many"], agents["few"]]
    ):
        pattern = like_pattern(term) if term else None
        digits = phone_digits(term) if term else None
        whole = await connection.fetch(
            REFERENCE, status, pattern, agent, None, None, 10_000, digits
        )
        # From the start, and after a cursor in the middle and near the end.
        cursors: list[tuple[Any, Any]] = [(None, None)]
        for at in {len(whole) // 2, len(whole) - 2}:
            if 0 <= at < len(whole):
                cursors.append((whole[at]["created_at"], whole[at]["id"]))
        for (after_at, after_id), limit, budget in itertools.product(cursors, [1, 21], budgets):
            expected = await connection.fetch(
                REFERENCE, status, pattern, agent, after_at, after_id, limit, digits
            )
            got = await connection.fetch(
                PAGE, status, pattern, agent, after_at, after_id, limit, digits, budget
            )
            assert [r["id"] for r in got] == [r["id"] for r in expected], (
                f"term={term!r} status={status} agent={agent} after={after_at},{after_id}"
                f" limit={limit} budget={budget}"
            )
            compared += 1
    return compared


async def test_every_plan_answers_as_the_plain_query(
    seeded: tuple[asyncpg.Connection, dict[str, UUID]],
) -> None:
    connection, agents = seeded
    # 1: the walk reads one prospect, then the indexes do the rest; 40: a bit of each;
    # 5000: the walk reads everything.
    assert await compare_everything(connection, agents, [1, 40, 5000]) > 3_000


async def test_without_the_trigram_index_the_answers_are_the_same(
    seeded: tuple[asyncpg.Connection, dict[str, UUID]],
) -> None:
    connection, agents = seeded
    # A server without pg_trgm has no such index (migration 018).
    await connection.execute("DROP INDEX prospects_search_idx")
    assert await compare_everything(connection, agents, [1, 40]) > 2_000


async def test_paging_through_a_filtered_list_with_cursors(
    seeded: tuple[asyncpg.Connection, dict[str, UUID]],
) -> None:
    connection, agents = seeded
    for term, agent, status in [
        ("smith", None, None),
        ("555", None, None),
        (None, agents["many"], None),
        ("mail", agents["many"], "New"),
        ("é", None, None),
    ]:
        pattern = like_pattern(term) if term else None
        digits = phone_digits(term) if term else None
        whole = await connection.fetch(
            REFERENCE, status, pattern, agent, None, None, 10_000, digits
        )
        assert len(whole) > 20, term
        for size, budget in [(7, 1), (20, 30)]:
            seen: list[UUID] = []
            after: tuple[Any, Any] = (None, None)
            while True:
                page = await connection.fetch(
                    PAGE, status, pattern, agent, *after, size + 1, digits, budget
                )
                seen += [r["id"] for r in page[:size]]
                if len(page) <= size:
                    break
                after = (page[size - 1]["created_at"], page[size - 1]["id"])
            assert seen == [r["id"] for r in whole], (term, size, budget)


# --- the plans --------------------------------------------------------------------------

PLAN_PROSPECTS = 30_000


async def test_a_rare_term_is_found_through_the_trigram_index(database_url: str) -> None:
    """The index's expression (migration 018) and prospects_page()'s must stay the same
    text, or the planner stops using the index and every rare term reads the whole list."""
    arrange = f"""
        INSERT INTO prospects (name, phone, email, created_at)
        SELECT 'Prospect ' || g, '+1212' || lpad(g::text, 7, '0'),
               'p' || g || '@example.com', now() - g * interval '1 second'
        FROM generate_series(1, {PLAN_PROSPECTS}) g;
        UPDATE prospects SET name = 'Zebulon Quixote' WHERE phone = '+12120029000';
        ANALYZE prospects;
        """
    async with traced_connection(database_url, arrange) as (connection, plans):
        zebulon = await connection.fetchval(
            "SELECT id FROM prospects WHERE name = 'Zebulon Quixote'"
        )
        plans.clear()
        rows = await connection.fetch(PAGE, None, "zebulon", None, None, None, 21, None, 100)
        assert [r["id"] for r in rows] == [zebulon]
        every_node = [node for plan in read_plans(plans) for node in nodes(plan)]
        assert "prospects_search_idx" in {n.get("Index Name") for n in every_node}
        scanned = {n["Relation Name"] for n in every_node if n["Node Type"] == "Seq Scan"}
        assert "prospects" not in scanned


# --- through the API --------------------------------------------------------------------

LIST = """
query($first: Int, $after: String, $filter: ProspectFilter) {
  prospects(first: $first, after: $after, filter: $filter) {
    edges { cursor node { name phone } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


async def named(
    pool: asyncpg.Pool, prospects: list[tuple[str, str, str | None, str | None]]
) -> None:
    """Prospects (name, E.164 phone, email, company), one second apart, the first oldest."""
    start = datetime(2026, 3, 1, tzinfo=UTC)
    await pool.executemany(
        "INSERT INTO prospects (name, phone, email, company, created_at)"
        " VALUES ($1, $2, $3, $4, $5)",
        [(*row, start + timedelta(seconds=n)) for n, row in enumerate(prospects)],
    )


async def test_search_means_what_it_says(
    settings: Settings, pool: asyncpg.Pool, team: Team
) -> None:
    await named(
        pool,
        [
            ("Zebulon Quixote", "+12125550123", "zq@vandelay.example", "Vandelay Industries"),
            ("Art Vandelay", "+12125550124", None, None),
            ("Fifty Percent", "+12125550125", None, "50% Off Ltd"),
            ("Under Score", "+12125550126", "under_score@example.com", None),
            ("Back Slash", "+12125550127", None, "A\\B Corp"),
            ("Élodie Müller", "+33612345678", "elodie@exemple.fr", None),
            ("Plain Person", "+16465550199", "plain@example.com", "Plainly"),
        ],
    )
    async with running_server(settings) as api:

        async def names(search: str) -> list[str]:
            data = await api.data(LIST, {"filter": {"search": search}}, team.agent["token"])
            return [edge["node"]["name"] for edge in data["prospects"]["edges"]]

        # Phone digits in any writing find the number, wherever they sit in it.
        for writing in (
            "555-0123",
            "(212) 555-0123",
            "+1 212 555 0123",
            "212.555.0123",
            "2125550123",
            "1-212-555-0123",
        ):
            assert await names(writing) == ["Zebulon Quixote"], writing
        assert await names("(212) 555") == [
            "Back Slash",
            "Under Score",
            "Fifty Percent",
            "Art Vandelay",
            "Zebulon Quixote",
        ]
        assert await names("+33 6 12 34 56 78") == ["Élodie Müller"]
        # Case is ignored, in names, emails and companies, accents included.
        assert await names("VANDELAY") == ["Art Vandelay", "Zebulon Quixote"]
        assert await names("vandelay.EXAMPLE") == ["Zebulon Quixote"]
        assert await names("élodie MÜLLER") == ["Élodie Müller"]
        assert await names("ÉLODIE") == ["Élodie Müller"]
        # LIKE's wildcards are plain characters.
        assert await names("%") == ["Fifty Percent"]
        assert await names("50%") == ["Fifty Percent"]
        assert await names("_") == ["Under Score"]
        assert await names("r_s") == ["Under Score"]
        assert await names("\\") == ["Back Slash"]
        assert await names("a\\b") == ["Back Slash"]
        assert await names("u%e") == []
        # Nothing found is an empty page, short or long.
        assert await names("xq") == []
        assert await names("Xylophonist") == []


async def test_filters_combine_and_pages_follow_each_other(
    settings: Settings, pool: asyncpg.Pool, team: Team
) -> None:
    agent, other = UUID(team.agents[0]["id"]), UUID(team.agents[1]["id"])
    await named(
        pool,
        [(f"Smith {n:02d}", f"+1212555{1000 + n}", f"s{n}@example.com", None) for n in range(30)]
        + [(f"Jones {n:02d}", f"+1212555{2000 + n}", f"j{n}@example.com", None) for n in range(30)],
    )
    await pool.execute("UPDATE prospects SET status = 'Qualified' WHERE name LIKE '% _5'")
    await pool.execute(
        """
        INSERT INTO lead_assignments (prospect_id, agent_id, expires_at, active)
        SELECT id, $1,
               CASE WHEN right(name, 1) = '3' THEN now() - interval '1 minute'
                    WHEN right(name, 1) = '6' THEN now() + interval '1 day' END,
               right(name, 1) <> '4'
        FROM prospects WHERE right(name, 1) IN ('3', '4', '5', '6', '7')
        """,
        agent,
    )
    # Another agent's live assignment, and this agent's inactive one before it (history).
    await pool.execute(
        "INSERT INTO lead_assignments (prospect_id, agent_id, active)"
        " SELECT id, $1, true FROM prospects WHERE name IN ('Smith 08', 'Jones 08')",
        other,
    )
    await pool.execute(
        "INSERT INTO lead_assignments (prospect_id, agent_id, active)"
        " SELECT id, $1, false FROM prospects WHERE name IN ('Smith 08', 'Jones 08')",
        agent,
    )
    async with running_server(settings) as api:

        async def every_page(filter: dict[str, Any], first: int) -> list[str]:
            names: list[str] = []
            after = None
            cursors: set[str] = set()
            while True:
                data = await api.data(
                    LIST, {"first": first, "after": after, "filter": filter}, team.agent["token"]
                )
                page = data["prospects"]
                names += [edge["node"]["name"] for edge in page["edges"]]
                cursors |= {edge["cursor"] for edge in page["edges"]}
                if not page["pageInfo"]["hasNextPage"]:
                    return names
                after = page["pageInfo"]["endCursor"]
                assert after == page["edges"][-1]["cursor"]

        def newest_first(*names: str) -> list[str]:
            order = [f"Jones {n:02d}" for n in reversed(range(30))] + [
                f"Smith {n:02d}" for n in reversed(range(30))
            ]
            return [name for name in order if name in names]

        live = {
            f"{who} {n:02d}" for who in ("Smith", "Jones") for n in range(30) if n % 10 in (5, 6, 7)
        }
        assert await every_page({"assignedTo": str(agent)}, 4) == newest_first(*live)
        assert await every_page({"assignedTo": str(agent), "search": "smith"}, 2) == newest_first(
            *(name for name in live if name.startswith("Smith"))
        )
        assert await every_page({"assignedTo": str(agent), "status": "Qualified"}, 3) == (
            newest_first(*(name for name in live if name.endswith("5")))
        )
        assert await every_page(
            {"assignedTo": str(agent), "status": "Qualified", "search": "JONES"}, 1
        ) == ["Jones 25", "Jones 15", "Jones 05"]
        assert await every_page({"assignedTo": str(other)}, 5) == ["Jones 08", "Smith 08"]
        assert await every_page({"status": "Qualified", "search": "s1"}, 1) == ["Smith 15"]
        assert await every_page({"search": "smith"}, 7) == newest_first(
            *(f"Smith {n:02d}" for n in range(30))
        )
        assert await every_page({"search": "555-1"}, 6) == newest_first(
            *(f"Smith {n:02d}" for n in range(30))
        )
        assert await every_page({}, 25) == newest_first(
            *(f"{who} {n:02d}" for who in ("Smith", "Jones") for n in range(30))
        )
        # A cursor is the same wherever the page came from.
        data = await api.data(
            LIST, {"first": 1, "filter": {"search": "Smith 29"}}, team.agent["token"]
        )
        record = await pool.fetchrow("SELECT id, created_at FROM prospects WHERE name = 'Smith 29'")
        assert data["prospects"]["edges"][0]["cursor"] == encode_cursor(record)
