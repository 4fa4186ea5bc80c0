"""Import subscribers into a mailing list from a CSV file.

The whole file is read and checked first, so a file that cannot be imported at all
(not UTF-8, no `email` column) changes nothing. Rows are then saved in batches:
one SELECT of the batch's known addresses, one bulk INSERT of new subscribers and
one of new subscriptions, whatever the batch size, so 100,000 rows cost a few
hundred statements rather than a few hundred thousand.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from newsletter.accounts import audit
from newsletter.audience.addresses import email_hash, normalise_email
from newsletter.audience.lists import get_list
from newsletter.audience.models import (
    ImportJob,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
)
from newsletter.db import utcnow
from newsletter.errors import InvalidInputError, NotFoundError, Problem
from newsletter.importing import ImportReport

BATCH_SIZE = 1000
MAX_NAME = 300
MAX_SOURCE = 100
UNSUBSCRIBED_EARLIER = "unsubscribed from this list earlier; not re-subscribed"


@dataclass(frozen=True)
class SubscriberRow:
    """One valid data row: `line` is its line in the file (the header is line 1)."""

    line: int
    email: str
    name: str  # "" when not given: an import never clears a name
    attributes: dict[str, str] = field(default_factory=dict)


def import_subscribers_csv(
    session: Session, path: Path, list_slug: str, *, source: str = "csv"
) -> ImportReport:
    """`import_subscribers_text` of a file's text; commits."""
    report = import_subscribers_text(
        session, read_csv_file(path), str(path), list_slug, source=source
    )
    session.commit()
    return report


def import_subscribers_text(
    session: Session, text: str, name: str, list_slug: str, *, source: str = "csv"
) -> ImportReport:
    """Subscribe every valid row of the CSV text to the list, as confirmed; flushes.

    Subscribers are matched by normalised address; a known subscriber gets the row's
    name (when not empty) and its extra columns merged into their attributes. Counts
    per valid row: `created` when the row added a member to the list, `updated` when
    it changed a known member (profile, or a pending subscription now confirmed),
    `unchanged` otherwise. Someone who unsubscribed from the list is left alone,
    counted unchanged and reported. Rejected rows are reported as Problem("row N", …).

    Raises NotFoundError for an unknown list and InvalidInputError when the text
    is not CSV with an `email` column (`name` names it in that message).
    """
    if not source or len(source) > MAX_SOURCE:
        raise InvalidInputError(f"source must be 1 to {MAX_SOURCE} characters")
    mailing_list = get_list(session, list_slug)
    rows, problems = read_subscriber_rows(text, name)
    return upsert_rows(session, mailing_list.id, rows, problems, source)


def upsert_rows(
    session: Session,
    list_id: int,
    rows: list[SubscriberRow],
    problems: list[tuple[int, Problem]],
    source: str,
) -> ImportReport:
    """Save checked rows as confirmed members of the list, batch by batch; flushes."""
    rows, forgotten = _without_forgotten(session, rows)
    problems = [*problems, *forgotten]
    report = ImportReport()
    for start in range(0, len(rows), BATCH_SIZE):
        batch = rows[start : start + BATCH_SIZE]
        problems.extend(_save_batch(session, list_id, batch, source, report))
    report.problems = [problem for _line, problem in sorted(problems, key=lambda p: p[0])]
    return report


def run_import(
    session: Session, text: str, filename: str, list_slug: str, *, dry_run: bool = False
) -> ImportJob:
    """Import CSV text into a list and keep the outcome as an import job; a dry run
    does the same work, reports what would change and rolls it back. Flushes.

    Unreadable text (no `email` column, broken quoting) raises InvalidInputError and
    records nothing."""
    mailing_list = get_list(session, list_slug)
    name = filename or "upload.csv"
    if dry_run:
        savepoint = session.begin_nested()
        try:
            report = import_subscribers_text(session, text, name, list_slug, source="csv")
        finally:
            savepoint.rollback()
    else:
        report = import_subscribers_text(session, text, name, list_slug, source="csv")
    job = ImportJob(
        list_id=mailing_list.id,
        filename=name[:300],
        dry_run=dry_run,
        status="finished",
        rows=report.created + report.updated + report.unchanged + _rejected(report),
        created=report.created,
        updated=report.updated,
        unchanged=report.unchanged,
        problems=[{"where": p.where, "reason": p.reason} for p in report.problems],
        finished_at=utcnow(),
    )
    session.add(job)
    session.flush()
    audit.record(
        session,
        "subscribers.import_dry_run" if dry_run else "subscribers.import",
        f"list:{list_slug}",
        detail={
            "job": job.id,
            "created": job.created,
            "updated": job.updated,
            "unchanged": job.unchanged,
            "problems": len(job.problems),
        },
    )
    return job


def _rejected(report: ImportReport) -> int:
    """Rows skipped outright (a problem not also counted as unchanged)."""
    return sum(1 for p in report.problems if p.reason != UNSUBSCRIBED_EARLIER)


def describe_job(job: ImportJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "list": job.mailing_list.slug,
        "filename": job.filename,
        "dry_run": job.dry_run,
        "status": job.status,
        "progress": 1.0 if job.status == "finished" else 0.0,
        "rows": job.rows,
        "created": job.created,
        "updated": job.updated,
        "unchanged": job.unchanged,
        "problems": list(job.problems),
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def get_job(session: Session, job_id: int) -> ImportJob:
    job = session.get(ImportJob, job_id)
    if job is None:
        raise NotFoundError(f"no import {job_id}")
    return job


FORGOTTEN = "this person asked us to forget them; not imported"


def _without_forgotten(
    session: Session, rows: list[SubscriberRow]
) -> tuple[list[SubscriberRow], list[tuple[int, Problem]]]:
    """Rows whose address was erased on request (a hashed suppression) are never
    imported again: that would store and mail them anew."""
    hashes = {row.email: email_hash(row.email) for row in rows}
    gone: set[str] = set()
    values = list(hashes.values())
    for start in range(0, len(values), BATCH_SIZE):
        gone.update(
            session.scalars(
                select(Suppression.email_hash).where(
                    Suppression.email_hash.in_(values[start : start + BATCH_SIZE])
                )
            )
        )
    kept = [row for row in rows if hashes[row.email] not in gone]
    skipped = [
        (row.line, Problem(f"row {row.line}", FORGOTTEN))
        for row in rows
        if hashes[row.email] in gone
    ]
    return kept, skipped


def read_subscriber_rows(
    text: str, name: str = "the file"
) -> tuple[list[SubscriberRow], list[tuple[int, Problem]]]:
    """Parse and check CSV text: the valid rows, and (line, problem) for the others.

    Raises InvalidInputError when there is no header row with an `email` column or a
    column name appears twice; `name` names the file in that message.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, [])
    except csv.Error as exc:
        raise InvalidInputError(f"{name}: row 1: {exc}") from exc
    columns = [cell.strip() for cell in header]
    email_at, name_at = _find_columns(columns, name)
    extras = [
        (at, column)
        for at, column in enumerate(columns)
        if column and at not in (email_at, name_at)
    ]
    rows: list[SubscriberRow] = []
    problems: list[tuple[int, Problem]] = []
    first_line_of: dict[str, int] = {}
    last_line = reader.line_num
    while True:
        try:
            cells = next(reader, None)
        except csv.Error as exc:
            raise InvalidInputError(f"{name}: row {last_line + 1}: {exc}") from exc
        if cells is None:
            break
        line, last_line = last_line + 1, reader.line_num
        if not any(cell.strip() for cell in cells):
            continue  # blank lines, and the empty rows spreadsheets leave at the end
        try:
            row = _check_row(cells, line, len(columns), email_at, name_at, extras)
        except InvalidInputError as exc:
            problems.append((line, Problem(f"row {line}", str(exc))))
            continue
        earlier = first_line_of.setdefault(row.email, line)
        if earlier != line:
            problems.append((line, Problem(f"row {line}", f"duplicate of row {earlier}")))
            continue
        rows.append(row)
    return rows, problems


def read_csv_file(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InvalidInputError(f"{path}: row {line} is not UTF-8 text") from exc


def _find_columns(columns: Sequence[str], name: str) -> tuple[int, int | None]:
    """The positions of the email and name columns (header names match in any case)."""
    folded = [column.lower() for column in columns]
    if "email" not in folded:
        found = ", ".join(repr(column) for column in columns if column) or "none"
        raise InvalidInputError(f"{name}: no 'email' column in the header row (found: {found})")
    for column in folded:
        if column and folded.count(column) > 1:
            raise InvalidInputError(f"{name}: column {column!r} appears more than once")
    name_at = folded.index("name") if "name" in folded else None
    return folded.index("email"), name_at


def _check_row(
    cells: Sequence[str],
    line: int,
    width: int,
    email_at: int,
    name_at: int | None,
    extras: Sequence[tuple[int, str]],
) -> SubscriberRow:
    if len(cells) != width:
        raise InvalidInputError(f"expected {width} columns, found {len(cells)}")
    raw_email = cells[email_at].strip()
    if not raw_email:
        raise InvalidInputError("no email address")
    try:
        email = normalise_email(raw_email)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{exc}: {raw_email!r}") from exc
    name = cells[name_at].strip() if name_at is not None else ""
    if len(name) > MAX_NAME:
        raise InvalidInputError(f"name is longer than {MAX_NAME} characters")
    attributes = {column: value for at, column in extras if (value := cells[at].strip())}
    return SubscriberRow(line=line, email=email, name=name, attributes=attributes)


def _save_batch(
    session: Session,
    list_id: int,
    rows: Sequence[SubscriberRow],
    source: str,
    report: ImportReport,
) -> list[tuple[int, Problem]]:
    """Upsert one batch of subscribers and their subscriptions; count each row."""
    now = utcnow()
    known = {
        subscriber.email: subscriber
        for subscriber in session.scalars(
            select(Subscriber).where(Subscriber.email.in_([row.email for row in rows]))
        )
    }
    subscriber_ids = {email: subscriber.id for email, subscriber in known.items()}
    subscriber_ids.update(_insert_subscribers(session, [r for r in rows if r.email not in known]))
    subscriptions = {
        subscription.subscriber_id: subscription
        for subscription in session.scalars(
            select(Subscription).where(
                Subscription.list_id == list_id,
                Subscription.subscriber_id.in_([s.id for s in known.values()]),
            )
        )
    }
    new_subscriptions: list[dict[str, object]] = []
    problems: list[tuple[int, Problem]] = []
    for row in rows:
        subscriber_id = subscriber_ids[row.email]
        subscription = subscriptions.get(subscriber_id)
        if subscription is not None and subscription.status is SubscriptionStatus.unsubscribed:
            # Their choice outranks whoever holds the spreadsheet.
            report.unchanged += 1
            problems.append((row.line, Problem(f"row {row.line}", UNSUBSCRIBED_EARLIER)))
            continue
        changed = row.email in known and _merge_profile(known[row.email], row)
        if subscription is None:
            new_subscriptions.append(
                {
                    "subscriber_id": subscriber_id,
                    "list_id": list_id,
                    "status": SubscriptionStatus.confirmed,
                    "source": source,
                    "confirmed_at": now,
                }
            )
            report.created += 1
            continue
        if subscription.status is SubscriptionStatus.unconfirmed:
            subscription.status = SubscriptionStatus.confirmed
            subscription.confirmed_at = now
            changed = True
        if changed:
            report.updated += 1
        else:
            report.unchanged += 1
    if new_subscriptions:
        session.execute(insert(Subscription), new_subscriptions)
    session.flush()
    return problems


def _insert_subscribers(session: Session, rows: Sequence[SubscriberRow]) -> dict[str, int]:
    """Insert new subscribers in one statement; their ids by address."""
    if not rows:
        return {}
    # Matched up by address, not by order: asking for parameter order makes SQLite
    # fall back to one INSERT per row.
    inserted = session.execute(
        insert(Subscriber).returning(Subscriber.id, Subscriber.email),
        [{"email": row.email, "name": row.name, "attributes": row.attributes} for row in rows],
    )
    return {email: subscriber_id for subscriber_id, email in inserted}


def _merge_profile(subscriber: Subscriber, row: SubscriberRow) -> bool:
    """Give the subscriber the row's name and attributes when given; True if that changed them."""
    changed = False
    if row.name and subscriber.name != row.name:
        subscriber.name = row.name
        changed = True
    merged = {**subscriber.attributes, **row.attributes}
    if merged != subscriber.attributes:
        # A new dict: the JSON column does not notice changes made in place.
        subscriber.attributes = merged
        changed = True
    return changed
