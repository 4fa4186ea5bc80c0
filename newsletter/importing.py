"""What an import did: the report shared by the article and the subscriber importers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from newsletter.errors import Problem


@dataclass
class ImportReport:
    """Counts of imported items by outcome, and every input item that was rejected.

    An item counted in `created`, `updated` or `unchanged` was imported (or already
    matched the database); an item that only appears in `problems` was skipped. A
    problem may also be a warning about an item that was still imported; its reason
    then says so.
    """

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    problems: list[Problem] = field(default_factory=list)

    def summary(self) -> str:
        """One line for people: "3 created, 1 updated, 0 unchanged, 2 problems"."""
        problems = len(self.problems)
        noun = "problem" if problems == 1 else "problems"
        return (
            f"{self.created} created, {self.updated} updated, "
            f"{self.unchanged} unchanged, {problems} {noun}"
        )

    def merge(self, other: ImportReport) -> None:
        """Add another import's counts and problems to this one."""
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.problems.extend(other.problems)

    def as_json(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "problems": [{"where": p.where, "reason": p.reason} for p in self.problems],
        }
