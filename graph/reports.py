"""Manager reports (the seed's Monitoring queries), archiving and privacy requests."""

from __future__ import annotations

import strawberry


@strawberry.type
class ReportQueries:
    """Report fields, merged into Query."""


@strawberry.type
class ReportMutations:
    """Privacy mutations, merged into Mutation."""
