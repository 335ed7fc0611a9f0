"""Bulk data in: prospects from CSV."""

from __future__ import annotations

import strawberry


@strawberry.type
class ImportMutations:
    """Import mutations, merged into Mutation."""
