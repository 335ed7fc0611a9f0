"""Every code the database can name reaches the client as that code, from one list."""

from __future__ import annotations

import re

import asyncpg

from resolvers.errors import ERROR_CLASSES, RULE_CODES, CallRuleRefusal, domain_error_from_code
from sql.migrator import FUNCTIONS_DIR

# A code raised by name, a rule call_eligibility() reports, a count held_back*() reports.
_RAISED = re.compile(r"raise_domain_error\(\s*'([A-Z_]+)'")
_RULE = re.compile(r"^\s*\(\d+, '([A-Z_]+)'", re.MULTILINE)
_COUNTED = re.compile(r"\('([A-Z_]+)', t\.|SELECT '([A-Z_]+)', count")


def codes_in_sql() -> tuple[set[str], set[str]]:
    """(codes raised by name, rule and count codes) written in sql/functions."""
    raised: set[str] = set()
    rules: set[str] = set()
    for path in FUNCTIONS_DIR.glob("*.sql"):
        text = path.read_text()
        raised.update(_RAISED.findall(text))
        rules.update(_RULE.findall(text))
        rules.update(code for pair in _COUNTED.findall(text) for code in pair if code)
    return raised, rules


def test_every_code_the_sql_names_is_known() -> None:
    raised, rules = codes_in_sql()
    assert rules, "no rule codes found: has call_eligibility() changed shape?"
    known = set(RULE_CODES) | set(ERROR_CLASSES)
    assert raised - known == set()
    # NOT_FOUND is call_eligibility()'s answer for an unknown prospect, not a rule.
    assert rules - {"NOT_FOUND"} <= set(RULE_CODES)
    # And the list holds nothing the SQL no longer names.
    assert set(RULE_CODES) <= rules | raised


def test_each_code_becomes_the_error_that_carries_it() -> None:
    for code in RULE_CODES:
        error = domain_error_from_code(code, "refused")
        assert isinstance(error, CallRuleRefusal)
        assert (error.code, error.http_status) == (code, 409)
    for code, cls in ERROR_CLASSES.items():
        assert type(domain_error_from_code(code, "no")) is cls


async def test_call_eligibility_lists_the_rules_in_the_listed_order(
    pool: asyncpg.Pool,
) -> None:
    prospect = await pool.fetchval(
        "INSERT INTO prospects (name, phone) VALUES ('Rule Order', '+12125550100') RETURNING id"
    )
    rows = await pool.fetch("SELECT code FROM call_eligibility($1, NULL)", prospect)
    reported = list(dict.fromkeys(row["code"] for row in rows))  # three caps share a code
    assert len(reported) == 11
    assert reported == [code for code in RULE_CODES if code in reported]
