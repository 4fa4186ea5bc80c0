"""What an import did: the reports of the article and the subscriber importers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from newsletter.errors import Problem


@contextmanager
def import_transaction(session: Session, *, dry_run: bool) -> Iterator[None]:
    """Everything an import writes inside, committed at the end, or undone when
    `dry_run` (and on an error).

    The work runs inside a savepoint: SQLite's driver opens a transaction only before
    the first write, so the per-item savepoints of an import would each commit on their
    own; an outer savepoint makes the whole import one unit that can be undone.
    """
    savepoint = session.begin_nested()
    try:
        yield
    except BaseException:
        if savepoint.is_active:
            savepoint.rollback()
        raise
    if dry_run:
        savepoint.rollback()  # the caller's own work before the import is left alone
    else:
        savepoint.commit()
        session.commit()


@dataclass
class ImportReport:
    """Counts of imported items by outcome, the items that were skipped, and warnings.

    An item counted in `created`, `updated` or `unchanged` was imported (or already
    matched the database); an item in `problems` was skipped, with the reason. A
    `warnings` entry is about an item that was imported all the same (an ignored
    field, a path that is not an address…). With `dry_run` the counts say what the
    import would have done; nothing was written.
    """

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    dry_run: bool = False

    @property
    def skipped(self) -> int:
        return len(self.problems)

    @property
    def imported(self) -> int:
        return self.created + self.updated + self.unchanged

    def summary(self) -> str:
        """One line for people: "3 created, 1 updated, 0 unchanged, 2 skipped"."""
        return (
            f"{self.created} created, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.skipped} skipped"
        )

    def merge(self, other: ImportReport) -> None:
        """Add another import's counts, problems and warnings to this one."""
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.problems.extend(other.problems)
        self.warnings.extend(other.warnings)

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "problems": [{"where": p.where, "reason": p.reason} for p in self.problems],
            "warnings": [{"where": p.where, "reason": p.reason} for p in self.warnings],
        }


@dataclass
class ArticleImportReport(ImportReport):
    """An article import: also how many of the imported articles are drafts."""

    drafts: int = 0

    def merge(self, other: ImportReport) -> None:
        super().merge(other)
        if isinstance(other, ArticleImportReport):
            self.drafts += other.drafts

    def summary(self) -> str:
        """One line: "3 created, 1 updated, 0 unchanged, 1 draft, 2 skipped, 1 warning"."""
        return (
            f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged, "
            f"{_count(self.drafts, 'draft')}, {self.skipped} skipped, "
            f"{_count(len(self.warnings), 'warning')}"
        )

    def as_json(self) -> dict[str, Any]:
        return {**super().as_json(), "drafts": self.drafts}


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
