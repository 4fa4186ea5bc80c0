"""Import subscribers into a mailing list from a CSV file: ours, or another tool's export.

The whole file is read and checked first, so a file that cannot be imported at all
(not UTF-8, no email column, a column mapping naming a column the file lacks) changes
nothing.
The layout of the file is recognised from its header (layouts.py: Mailchimp, listmonk,
Substack, Kit, Buttondown, Ghost members, Sendy); each row gets one of four statuses,
and only `subscribed` people become confirmed members. People who opted out are kept
as unsubscribed, and bounced or blocklisted addresses are suppressed, so an import can
never put anyone back on the audience a run sends to.

Rows are saved in batches: one SELECT of the batch's known addresses, one bulk INSERT
of new subscribers and one of new subscriptions, whatever the batch size, so 100,000
rows cost a few hundred statements rather than a few hundred thousand.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter import metrics
from newsletter.accounts import audit
from newsletter.audience.addresses import email_hash, normalise_email
from newsletter.audience.layouts import (
    ATTRIBUTE_PREFIX,
    ATTRIBUTES_JSON,
    CLEANED_AT,
    EMAIL,
    EMAIL_DISABLED,
    FIRST_NAME,
    IGNORE,
    LAST_NAME,
    NAME,
    OURS,
    SENDY,
    STATUS,
    SUBSCRIBED,
    UNSUBSCRIBED_AT,
    Layout,
    RowStatus,
    is_true,
    recognise,
    sendy_status,
)
from newsletter.audience.lists import get_list
from newsletter.audience.models import (
    ImportJob,
    MailingList,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
)
from newsletter.db import upsert_insert, utcnow
from newsletter.errors import InvalidInputError, NotFoundError, Problem, Remedy
from newsletter.events.outbox import emit
from newsletter.importing import ImportReport, import_transaction

BATCH_SIZE = 1000
MAX_NAME = 300
_UNSTORABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_SOURCE = 100
MAX_DETAIL = 2000
SUPPRESSION_REASON = "imported"
UNSUBSCRIBED_EARLIER = "unsubscribed from this list earlier; not re-subscribed"
FORGOTTEN = "this person asked us to forget them; not imported"
# The less mailable of two statuses wins when one person is in a file twice.
_RANK = {
    RowStatus.subscribed: 0,
    RowStatus.pending: 1,
    RowStatus.unsubscribed: 2,
    RowStatus.suppressed: 3,
}


@dataclass(frozen=True)
class SubscriberRow:
    """One valid data row: `line` is its line in the file (the header is line 1)."""

    line: int
    email: str
    name: str  # "" when not given: an import never clears a name
    attributes: dict[str, Any] = field(default_factory=dict)
    status: RowStatus = RowStatus.subscribed
    why: str = ""  # the value the status was read from, for the suppression's detail


@dataclass
class SubscriberImportReport(ImportReport):
    """A subscriber import: besides created/updated/unchanged (confirmed members), the
    people kept as pending, unsubscribed or suppressed, and the layout recognised."""

    pending: int = 0
    unsubscribed: int = 0
    suppressed: int = 0
    layout: str = OURS.label

    @property
    def imported(self) -> int:
        return super().imported + self.pending + self.unsubscribed + self.suppressed

    def summary(self) -> str:
        return (
            f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.pending} pending, {self.unsubscribed} unsubscribed, "
            f"{self.suppressed} suppressed, {self.skipped} skipped"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            **super().as_json(),
            "layout": self.layout,
            "pending": self.pending,
            "unsubscribed": self.unsubscribed,
            "suppressed": self.suppressed,
        }


def import_subscribers_csv(
    session: Session,
    path: Path,
    list_slug: str,
    *,
    source: str = "csv",
    mapping: dict[str, str] | None = None,
    default_status: RowStatus | None = None,
    dry_run: bool = False,
) -> SubscriberImportReport:
    """Import every valid row of the CSV file into the list, and commit (or, with
    `dry_run`, undo everything and only report).

    `mapping` ({lower-cased column: field}, see layouts.parse_mapping) maps or
    overrides columns; `default_status` is the status of rows when the file has no
    status column (else: subscribed). Subscribers are matched by normalised address; a
    known subscriber gets the row's name (when not empty) and its attributes merged.

    Counts per valid row: `created` when it added a confirmed member, `updated` when
    it changed a known member (profile, or a pending subscription now confirmed),
    `unchanged` otherwise; `pending`, `unsubscribed` and `suppressed` for people
    recorded with that status. Someone who unsubscribed from the list is never
    re-subscribed: counted unchanged, with a warning. Rejected rows are reported as
    Problem("row N", "<column> …").

    Raises NotFoundError for an unknown list and InvalidInputError when the file
    cannot be read as UTF-8 CSV with an email column.
    """
    return import_subscribers_text(
        session,
        read_csv_file(path),
        str(path),
        list_slug,
        source=source,
        mapping=mapping,
        default_status=default_status,
        dry_run=dry_run,
    )


def import_subscribers_text(
    session: Session,
    text: str,
    name: str,
    list_slug: str,
    *,
    source: str = "csv",
    mapping: dict[str, str] | None = None,
    default_status: RowStatus | None = None,
    dry_run: bool = False,
) -> SubscriberImportReport:
    """`import_subscribers_csv` of CSV text (an upload); `name` names it in messages."""
    if not source or len(source) > MAX_SOURCE:
        raise InvalidInputError(f"source must be 1 to {MAX_SOURCE} characters")
    mailing_list = get_list(session, list_slug)
    reading = read_subscriber_rows(text, name, mapping=mapping, default_status=default_status)
    report = SubscriberImportReport(dry_run=dry_run, layout=reading.layout.label)
    problems = list(reading.problems)
    warnings: list[tuple[int, Problem]] = []
    with import_transaction(session, dry_run=dry_run):
        rows, forgotten = _without_forgotten(session, reading.rows)
        problems.extend(forgotten)
        for start in range(0, len(rows), BATCH_SIZE):
            batch = rows[start : start + BATCH_SIZE]
            warnings.extend(
                _save_batch(session, mailing_list.id, batch, source, reading.layout, report)
            )
    report.problems = _in_line_order(problems)
    report.warnings = _in_line_order(warnings)
    if not dry_run:
        metrics.count_import_rows(
            report.created, report.updated, report.unchanged, len(report.problems)
        )
    return report


def upsert_rows(
    session: Session,
    list_id: int,
    rows: list[SubscriberRow],
    problems: list[tuple[int, Problem]],
    source: str,
) -> SubscriberImportReport:
    """Save checked rows (people given one by one or in bulk, not a file) with the
    rules of an import, batch by batch; flushes."""
    report = SubscriberImportReport(layout=OURS.label)
    rows, forgotten = _without_forgotten(session, rows)
    found = [*problems, *forgotten]
    warnings: list[tuple[int, Problem]] = []
    for start in range(0, len(rows), BATCH_SIZE):
        batch = rows[start : start + BATCH_SIZE]
        warnings.extend(_save_batch(session, list_id, batch, source, OURS, report))
    report.problems = _in_line_order(found)
    report.warnings = _in_line_order(warnings)
    return report


def _in_line_order(found: list[tuple[int, Problem]]) -> list[Problem]:
    return [problem for _line, problem in sorted(found, key=lambda item: item[0])]


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


@dataclass
class RowsReading:
    """The file read: its layout, its valid rows and (line, problem) for the others."""

    layout: Layout
    rows: list[SubscriberRow]
    problems: list[tuple[int, Problem]]


def read_subscriber_rows(
    text: str,
    name: str = "the file",
    *,
    mapping: dict[str, str] | None = None,
    default_status: RowStatus | None = None,
) -> RowsReading:
    """Parse and check CSV text: its layout, the valid rows, and the rejected ones.

    Raises InvalidInputError when there is no email column (after `mapping`), a
    column name appears twice, `mapping` names a column the file lacks, or a Sendy
    export (no header row) does not say the status of its people; `name` names the
    file in those messages.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, [])
    except csv.Error as exc:
        raise InvalidInputError(f"{name}: row 1: {exc}") from exc
    plan = _ColumnPlan.for_header(header, name, mapping or {}, default_status)
    rows: list[SubscriberRow] = []
    problems: list[tuple[int, Problem]] = []
    first_of: dict[str, int] = {}
    numbered = _numbered(reader, name, reader.line_num)
    if plan.header_is_data:
        numbered = itertools.chain([(1, header)], numbered)
    for line, cells in numbered:
        if not any(cell.strip() for cell in cells):
            continue  # blank lines, and the empty rows spreadsheets leave at the end
        try:
            row = plan.row(cells, line)
        except InvalidInputError as exc:
            problems.append((line, Problem(f"row {line}", str(exc))))
            continue
        earlier = first_of.setdefault(row.email, len(rows))
        if earlier != len(rows):
            first = rows[earlier]
            reason = f"duplicate of row {first.line}"
            if _RANK[row.status] > _RANK[first.status]:
                # Someone listed twice is not mailed on the strength of the other row.
                rows[earlier] = SubscriberRow(
                    first.line, first.email, first.name, first.attributes, row.status, row.why
                )
                reason += f"; this row's status ({row.status}) applies"
            problems.append((line, Problem(f"row {line}", reason)))
            continue
        rows.append(row)
    return RowsReading(plan.layout, rows, problems)


def _numbered(reader: Any, name: str, last_line: int) -> Iterator[tuple[int, list[str]]]:
    """Each row of a csv.reader with the line it starts on (quoted cells may span lines)."""
    while True:
        try:
            cells = next(reader, None)
        except csv.Error as exc:
            raise InvalidInputError(f"{name}: row {last_line + 1}: {exc}") from exc
        if cells is None:
            return
        line_num = reader.line_num
        yield last_line + 1, cells
        last_line = line_num


@dataclass
class _ColumnPlan:
    """What each column of a file means, and how a row becomes a SubscriberRow."""

    layout: Layout
    header: list[str]
    targets: list[str]
    file_status: RowStatus | None
    default_status: RowStatus
    header_is_data: bool = False

    @classmethod
    def for_header(
        cls,
        header: list[str],
        name: str,
        mapping: dict[str, str],
        default_status: RowStatus | None,
    ) -> _ColumnPlan:
        columns = [cell.strip() for cell in header]
        folded = [column.lower() for column in columns]
        for column in mapping:
            if column not in folded:
                found = ", ".join(repr(c) for c in columns if c) or "none"
                raise InvalidInputError(
                    f"{name}: the column mapping names column {column!r}, which is not in "
                    f"the header row (found: {found})",
                    remedy=Remedy("give", "subscriber import", field="map"),
                )
        layout = recognise(columns)
        if EMAIL not in (mapping.get(c) or _target(layout, c) for c in folded if c):
            if _looks_like_sendy(columns):
                return cls._sendy(columns, name, default_status)
            found = ", ".join(repr(c) for c in columns if c) or "none"
            raise InvalidInputError(
                f"{name}: no 'email' column in the header row (found: {found}); "
                "call the column of addresses 'email'",
                remedy=Remedy("give", "subscriber import", field="email"),
            )
        for column in folded:
            if column and folded.count(column) > 1:
                raise InvalidInputError(f"{name}: column {column!r} appears more than once")
        targets = [(mapping.get(c) or _target(layout, c)) if c else IGNORE for c in folded]
        file_status = next(
            (
                status
                for column, status in layout.file_statuses.items()
                if column in folded and column not in mapping
            ),
            None,
        )
        return cls(
            layout=layout,
            header=columns,
            targets=targets,
            file_status=file_status,
            default_status=default_status or RowStatus.subscribed,
        )

    @classmethod
    def _sendy(cls, cells: list[str], name: str, default_status: RowStatus | None) -> _ColumnPlan:
        status = default_status or sendy_status(Path(name).name)
        if status is None:
            raise InvalidInputError(
                f"{name}: a Sendy export (no header row) says who is subscribed only in its "
                "file name (…-active.csv, -unconfirmed, -unsubscribed, -bounced, "
                "-marked-as-spam); an '-all' export mixes them: export each status",
                remedy=Remedy("choose", "subscriber import", field="status"),
            )
        header = ["Name", "Email", *(f"field {index}" for index in range(3, len(cells) + 1))]
        targets = [NAME, EMAIL, *(f"{ATTRIBUTE_PREFIX}field_{i}" for i in range(3, len(cells) + 1))]
        return cls(SENDY, header, targets, status, status, header_is_data=True)

    def row(self, cells: Sequence[str], line: int) -> SubscriberRow:
        if len(cells) != len(self.targets) and not self.header_is_data:
            raise InvalidInputError(f"expected {len(self.targets)} columns, found {len(cells)}")
        email = ""
        names: dict[str, str] = {}
        attributes: dict[str, Any] = {}
        statuses: list[tuple[RowStatus, str]] = []
        for column, target, raw in zip(self.header, self.targets, cells, strict=False):
            value = raw.strip()
            if _UNSTORABLE.search(value):
                # A NUL (or another control code but tab and line breaks) is no text a
                # person wrote; the database would refuse the NUL outright.
                raise InvalidInputError(f"{column}: contains control characters")
            if target == EMAIL:
                email = self._email(column, value)
            elif target in (NAME, FIRST_NAME, LAST_NAME):
                names[target] = value
            elif target == ATTRIBUTES_JSON:
                attributes.update(_json_attributes(column, value))
            elif target in (STATUS, UNSUBSCRIBED_AT, CLEANED_AT, EMAIL_DISABLED, SUBSCRIBED):
                found = self._status(column, target, value)
                if found is not None:
                    statuses.append((found, f"{column} {value}".strip()))
            elif target.startswith(ATTRIBUTE_PREFIX) and value:
                attributes[target[len(ATTRIBUTE_PREFIX) :]] = value
            elif target != IGNORE and value:
                attributes[column] = value
        name = names.get(NAME) or " ".join(
            part for part in (names.get(FIRST_NAME, ""), names.get(LAST_NAME, "")) if part
        )
        if len(name) > MAX_NAME:
            raise InvalidInputError(f"name is longer than {MAX_NAME} characters")
        if any(unicodedata.category(char).startswith("C") for char in name):
            # A name goes into the To header of every message: a line break there
            # would make every send to this reader fail.
            raise InvalidInputError("name contains line breaks or control characters")
        status, why = self._row_status(statuses)
        return SubscriberRow(line, email, name, attributes, status, why)

    def _email(self, column: str, value: str) -> str:
        if not value:
            raise InvalidInputError(f"{column}: no email address")
        try:
            return normalise_email(value)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{column} {value!r}: {exc}") from exc

    def _status(self, column: str, target: str, value: str) -> RowStatus | None:
        if target == STATUS:
            status = self.layout.status_of(value) if value else None
            if status is None:
                raise InvalidInputError(
                    f"{column} {value!r} is not a status we know; the row is not imported "
                    "(nobody is mailed on a guess)"
                )
            return status
        if target in (UNSUBSCRIBED_AT, CLEANED_AT):
            if not value:
                return None
            return RowStatus.unsubscribed if target == UNSUBSCRIBED_AT else RowStatus.suppressed
        flag = is_true(value)
        if flag is None:
            raise InvalidInputError(f"{column} {value!r} must be true or false")
        opted_out = flag if target == EMAIL_DISABLED else not flag
        return RowStatus.unsubscribed if opted_out else None

    def _row_status(self, found: list[tuple[RowStatus, str]]) -> tuple[RowStatus, str]:
        if self.file_status is not None:
            found = [*found, (self.file_status, f"{self.layout.label} {self.file_status} export")]
        if not found:
            return self.default_status, ""
        return max(found, key=lambda item: _RANK[item[0]])


def _target(layout: Layout, column: str) -> str:
    """What a (lower-cased) column means in this layout; ours: email, name, else an
    attribute named as the column."""
    if column in layout.columns:
        return layout.columns[column]
    if column in (EMAIL, NAME) and layout is OURS:
        return column
    return ""  # an attribute keyed by the column's own name


def _looks_like_sendy(cells: list[str]) -> bool:
    """A header row that is data: a name, then an address (Sendy writes no header)."""
    return len(cells) >= 2 and "@" in cells[1] and " " not in cells[1].strip()


def _json_attributes(column: str, value: str) -> dict[str, Any]:
    if not value:
        return {}
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{column} is not JSON: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise InvalidInputError(f"{column} must be a JSON object")
    return {
        str(key): item if isinstance(item, str) else json.dumps(item)
        for key, item in data.items()
        if item not in (None, "")
    }


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


def _save_batch(
    session: Session,
    list_id: int,
    rows: Sequence[SubscriberRow],
    source: str,
    layout: Layout,
    report: SubscriberImportReport,
) -> list[tuple[int, Problem]]:
    """Upsert one batch of subscribers and their subscriptions; count each row; the
    warnings about rows that were not applied as asked."""
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
    newly_suppressed = _suppress(
        session, [row for row in rows if row.status is RowStatus.suppressed], layout
    )
    new_subscriptions: list[dict[str, object]] = []
    warnings: list[tuple[int, Problem]] = []
    for row in rows:
        subscription = subscriptions.get(subscriber_ids[row.email])
        if (
            row.status is RowStatus.subscribed
            and subscription is not None
            and subscription.status is SubscriptionStatus.unsubscribed
        ):
            # Their choice outranks whoever holds the spreadsheet.
            report.unchanged += 1
            warnings.append((row.line, Problem(f"row {row.line}", UNSUBSCRIBED_EARLIER)))
            continue
        profile_changed = row.email in known and _merge_profile(known[row.email], row)
        if subscription is None:
            new_subscriptions.append(
                _new_subscription(subscriber_ids[row.email], list_id, row, source, now)
            )
            _count_new(report, row.status)
            continue
        status_changed = _apply_status(subscription, row.status, now)
        if row.status is RowStatus.suppressed and (status_changed or row.email in newly_suppressed):
            report.suppressed += 1
        elif row.status is RowStatus.unsubscribed and status_changed:
            report.unsubscribed += 1
        elif status_changed or profile_changed:
            report.updated += 1
        else:
            report.unchanged += 1
    if new_subscriptions:
        session.execute(insert(Subscription), new_subscriptions)
    session.flush()
    return warnings


_SUBSCRIPTION_STATUS = {
    RowStatus.subscribed: SubscriptionStatus.confirmed,
    RowStatus.pending: SubscriptionStatus.unconfirmed,
    RowStatus.unsubscribed: SubscriptionStatus.unsubscribed,
    RowStatus.suppressed: SubscriptionStatus.unsubscribed,
}


def _new_subscription(
    subscriber_id: int, list_id: int, row: SubscriberRow, source: str, now: Any
) -> dict[str, object]:
    status = _SUBSCRIPTION_STATUS[row.status]
    return {
        "subscriber_id": subscriber_id,
        "list_id": list_id,
        "status": status,
        "source": source,
        "confirmed_at": now if status is SubscriptionStatus.confirmed else None,
        "unsubscribed_at": now if status is SubscriptionStatus.unsubscribed else None,
    }


def _count_new(report: SubscriberImportReport, status: RowStatus) -> None:
    if status is RowStatus.subscribed:
        report.created += 1
    elif status is RowStatus.pending:
        report.pending += 1
    elif status is RowStatus.unsubscribed:
        report.unsubscribed += 1
    else:
        report.suppressed += 1


def _apply_status(subscription: Subscription, status: RowStatus, now: Any) -> bool:
    """Move a known member's subscription as the row says, only ever towards less mail
    (a pending row leaves a confirmed member confirmed); True if it changed."""
    if status is RowStatus.subscribed:
        if subscription.status is SubscriptionStatus.unconfirmed:
            subscription.status = SubscriptionStatus.confirmed
            subscription.confirmed_at = now
            return True
        return False
    if status is RowStatus.pending:
        return False
    if subscription.status is SubscriptionStatus.unsubscribed:
        return False
    subscription.status = SubscriptionStatus.unsubscribed
    subscription.unsubscribed_at = now
    return True


def _suppress(session: Session, rows: Sequence[SubscriberRow], layout: Layout) -> set[str]:
    """Add the rows' addresses to the suppression list; the ones that were not on it."""
    if not rows:
        return set()
    emails = [row.email for row in rows]
    already = set(session.scalars(select(Suppression.email).where(Suppression.email.in_(emails))))
    fresh = [row for row in rows if row.email not in already]
    if fresh:
        detail = {row.email: f"{layout.label}: {row.why}"[:MAX_DETAIL] for row in fresh}
        session.execute(
            upsert_insert(session, Suppression).on_conflict_do_nothing(),
            [
                {"email": row.email, "reason": SUPPRESSION_REASON, "detail": detail[row.email]}
                for row in fresh
            ],
        )
    return {row.email for row in fresh}


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
    ids = {email: subscriber_id for subscriber_id, email in inserted}
    for email, subscriber_id in ids.items():
        emit(session, "subscriber.created", {"subscriber_id": subscriber_id, "email": email})
    return ids


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


def run_import(
    session: Session,
    text: str,
    filename: str,
    list_slug: str,
    *,
    dry_run: bool = False,
    mapping: dict[str, str] | None = None,
    default_status: RowStatus | None = None,
    keep_file: bool = False,
) -> tuple[ImportJob, SubscriberImportReport]:
    """Import CSV text into a list and keep the outcome as an import job (a dry run
    reports what would change and changes nothing but the job); the one import of the
    CLI and the API. Flushes the job; the import itself is committed (or undone).
    `keep_file`: a dry run keeps the text for an hour, to be imported for real
    (`queue_from_dry_run`) without uploading it again.

    Unreadable text (no email column, broken quoting) raises InvalidInputError and
    records nothing."""
    mailing_list = get_list(session, list_slug)
    name = filename or "upload.csv"
    report = import_subscribers_text(
        session,
        text,
        name,
        list_slug,
        mapping=mapping,
        default_status=default_status,
        dry_run=dry_run,
    )
    lines = text.splitlines() if report.problems else []
    job = ImportJob(
        list_id=mailing_list.id,
        filename=Path(name).name[:300],
        dry_run=dry_run,
        status="finished",
        rows=report.imported + report.skipped,
        created=report.created,
        updated=report.updated,
        unchanged=report.unchanged,
        problems=[_rejected(p, lines) for p in report.problems],
        finished_at=utcnow(),
        source_text=text if dry_run and keep_file else None,
    )
    session.add(job)
    session.flush()
    if not dry_run:
        data = {"import_id": job.id, "list": list_slug, "rejected": len(report.problems)}
        emit(session, "import.finished", data)
    audit.record(
        session,
        "subscribers.import_dry_run" if dry_run else "subscribers.import",
        f"list:{list_slug}",
        detail={
            "job": job.id,
            "layout": report.layout,
            "created": report.created,
            "updated": report.updated,
            "unchanged": report.unchanged,
            "pending": report.pending,
            "unsubscribed": report.unsubscribed,
            "suppressed": report.suppressed,
            "problems": len(report.problems),
        },
    )
    return job, report


def describe_job(job: ImportJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "list": job.mailing_list.slug,
        "filename": job.filename,
        "dry_run": job.dry_run,
        "status": job.status,
        "progress": job_progress(job),
        "rows": job.rows,
        "created": job.created,
        "updated": job.updated,
        "unchanged": job.unchanged,
        "problems": list(job.problems),
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def job_progress(job: ImportJob) -> float:
    """From 0 to 1: how much of the import is saved."""
    if job.status == FINISHED:
        return 1.0
    return round(job.processed / job.total, 3) if job.total else 0.0


def get_job(session: Session, job_id: int) -> ImportJob:
    job = session.get(ImportJob, job_id)
    if job is None:
        raise NotFoundError(f"no import {job_id}")
    return job


# --- background imports (the console) ----------------------------------------------------

QUEUED = "queued"
RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
MAX_REJECTED_LINE = 2000


def queue_import(session: Session, text: str, filename: str, list_slug: str) -> ImportJob:
    """An import to run in the background (`run_import_job`, claimed by the scheduler's
    tick): the file is read and checked now, so one that cannot be imported at all is
    refused at once (InvalidInputError) and queues nothing. Flushes the job."""
    mailing_list = get_list(session, list_slug)
    name = filename or "upload.csv"
    reading = read_subscriber_rows(text, name)
    job = ImportJob(
        list_id=mailing_list.id,
        filename=Path(name).name[:300],
        dry_run=False,
        status=QUEUED,
        rows=len(reading.rows) + len(reading.problems),
        total=len(reading.rows),
        processed=0,
        source_text=text,
        problems=[],
    )
    session.add(job)
    session.flush()
    audit.record(
        session,
        "subscribers.import",
        f"list:{list_slug}",
        detail={"job": job.id, "layout": reading.layout.label, "rows": job.rows, "queued": True},
    )
    return job


def claim_import_jobs(session: Session, now: Any, stall: Any) -> list[int]:
    """Queued imports, and running ones without progress for `stall` (their worker
    died or their task was lost), claimed for a task each; the caller commits, then
    enqueues. A conditional update is the claim: two schedulers never take one job."""
    claimed = []
    candidates = session.scalars(
        select(ImportJob.id).where(
            (ImportJob.status == QUEUED)
            | ((ImportJob.status == RUNNING) & (ImportJob.progress_at < now - stall))
        )
    ).all()
    for job_id in candidates:
        result = session.execute(
            update(ImportJob)
            .where(
                ImportJob.id == job_id,
                (ImportJob.status == QUEUED)
                | ((ImportJob.status == RUNNING) & (ImportJob.progress_at < now - stall)),
            )
            .values(status=RUNNING, progress_at=now)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            claimed.append(job_id)
    return claimed


def run_import_job(sessions: sessionmaker[Session], job_id: int) -> None:
    """Save a background import batch by batch, each batch committed with the job's
    `processed` count (checked, so a second task on the same job stops at once), and
    finish it: rejected rows kept with their reasons, the CSV dropped. Safe to run
    twice and to kill at any moment: it resumes after the last committed batch."""
    with sessions() as session:
        job = session.get(ImportJob, job_id)
        if job is None or job.status not in (QUEUED, RUNNING) or job.source_text is None:
            return
        text, name, list_id = job.source_text, job.filename, job.list_id
    try:
        reading = read_subscriber_rows(text, name)
    except InvalidInputError as exc:
        _fail_job(sessions, job_id, str(exc))
        return
    with sessions() as session:
        rows, forgotten = _without_forgotten(session, reading.rows)
        job = session.get_one(ImportJob, job_id)
        start = job.processed
        job.total = len(rows)
        session.commit()
    while start < len(rows):
        batch = rows[start : start + BATCH_SIZE]
        with sessions() as session:
            report = SubscriberImportReport(layout=reading.layout.label)
            _save_batch(session, list_id, batch, "csv", reading.layout, report)
            moved = session.execute(
                update(ImportJob)
                .where(
                    ImportJob.id == job_id,
                    ImportJob.processed == start,
                    ImportJob.status == RUNNING,
                )
                .values(
                    processed=start + len(batch),
                    created=ImportJob.created + report.created,
                    updated=ImportJob.updated + report.updated + report.pending,
                    unchanged=ImportJob.unchanged
                    + report.unchanged
                    + report.unsubscribed
                    + report.suppressed,
                    progress_at=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                session.rollback()  # another task has this batch, or the job ended
                return
            session.commit()
        start += len(batch)
    lines = text.splitlines()
    rejected = [
        _rejected(problem, lines) for problem in _in_line_order([*reading.problems, *forgotten])
    ]
    with sessions() as session:
        session.execute(
            update(ImportJob)
            .where(ImportJob.id == job_id, ImportJob.status == RUNNING)
            .values(
                status=FINISHED,
                problems=rejected,
                source_text=None,
                finished_at=utcnow(),
                progress_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        slug = session.scalar(
            select(MailingList.slug)
            .join(ImportJob, ImportJob.list_id == MailingList.id)
            .where(ImportJob.id == job_id)
        )
        data = {"import_id": job_id, "list": slug, "rejected": len(rejected)}
        emit(session, "import.finished", data)
        session.commit()


def _rejected(problem: Problem, lines: list[str]) -> dict[str, str]:
    """A rejected row: where, why, and the row as it was in the file (to fix it)."""
    found = {"where": problem.where, "reason": problem.reason}
    number = problem.where.removeprefix("row ")
    if number.isdigit() and 0 < int(number) <= len(lines):
        found["row"] = lines[int(number) - 1][:MAX_REJECTED_LINE]
    return found


def _fail_job(sessions: sessionmaker[Session], job_id: int, error: str) -> None:
    with sessions() as session:
        session.execute(
            update(ImportJob)
            .where(ImportJob.id == job_id)
            .values(status=FAILED, error=error, source_text=None, finished_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        session.commit()


def rejected_rows_csv(job: ImportJob) -> str:
    """The rows an import rejected, as CSV: row number, reason, and the row itself."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["row", "reason", "original"])
    for problem in job.problems:
        writer.writerow(
            [
                problem.get("where", "").removeprefix("row "),
                problem["reason"],
                problem.get("row", ""),
            ]
        )
    return out.getvalue()


UPLOAD_KEPT = 3600.0  # seconds a dry run keeps its file for "import it for real"


def queue_from_dry_run(session: Session, dry_run_id: int) -> ImportJob:
    """Import for real the file a dry run read (kept with it for an hour)."""
    dry = get_job(session, dry_run_id)
    if not dry.dry_run or dry.source_text is None:
        raise InvalidInputError(
            "that dry run's file is no longer kept: upload it again to import it"
        )
    job = queue_import(session, dry.source_text, dry.filename, dry.mailing_list.slug)
    dry.source_text = None
    return job


def drop_stale_uploads(session: Session, now: Any) -> int:
    """Files kept by dry runs nobody followed up within UPLOAD_KEPT (personal data is
    not kept longer than its use)."""
    from datetime import timedelta

    result = session.execute(
        update(ImportJob)
        .where(
            ImportJob.dry_run.is_(True),
            ImportJob.source_text.is_not(None),
            ImportJob.created_at < now - timedelta(seconds=UPLOAD_KEPT),
        )
        .values(source_text=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
