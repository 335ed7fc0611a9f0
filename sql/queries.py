"""Named queries: every `sql/queries/*.sql` file, split at `-- name:` headers."""

from __future__ import annotations

import re
from pathlib import Path

QUERIES_DIR = Path(__file__).resolve().parent / "queries"
_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def parse_queries(text: str, source: str) -> dict[str, str]:
    """Split one file into {name: sql}; text before the first header is a file comment."""
    parts = _HEADER.split(text)
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise ValueError(f"query {name!r} is defined twice in {source}")
        found[name] = body.strip()
    return found


def load_queries(directory: Path = QUERIES_DIR) -> dict[str, str]:
    """Load every named query once; a name defined twice anywhere is an error."""
    queries: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        for name, sql in parse_queries(path.read_text(), path.name).items():
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice ({path.name})")
            queries[name] = sql
    return queries


QUERIES = load_queries()
