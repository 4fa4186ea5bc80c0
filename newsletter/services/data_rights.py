"""Data rights: export a list, export everything about one person, forget a person.

What we hold about a person, and what `forget` does with it:

| where                      | holds                                   | forget                |
|----------------------------|-----------------------------------------|-----------------------|
| subscribers                | address, name, attributes, time zone    | deleted               |
| subscriptions, enrollments | lists and sequences, dates              | deleted               |
| deliveries (the ledger)    | address, message ids, SMTP replies      | deleted               |
| bounce_events              | address, the report's text              | anonymised            |
| suppressions               | address, reason, the server's reply     | hashed                |
| tracking_events            | their opens and clicks (individual mode)| deleted               |
| tracked_messages           | first open/click of their messages      | unlinked (counts stay)|

A forgotten reader's sent messages are still counted as sent in campaign reports
(`runs.forgotten_sent`), so rates keep their denominator.

Deliveries are deleted rather than anonymised: a ledger row belongs to a subscriber
(the column cannot be empty), so it goes with them. Past runs keep their recipient
count; their per-status counts lose one. Bounce events keep their (source, event id)
key with the address and text blanked, so a report replayed later finds its key taken
and is ignored instead of suppressing the address in plain text again. Exactly one
suppression remains, holding only `email_hash` (signup.email_hash: SHA-256 of the
normalised address), so a signup with the address is refused and nobody learns it.

Outside the database the address may still be in the outbox folder (.eml files) and
in logs; `forget` cannot reach those. A message a worker was handing over at that
very moment may still go out.
"""

from __future__ import annotations

import csv
import json
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.accounts import audit
from newsletter.audience.addresses import email_hash, normalise_email
from newsletter.audience.lists import get_list
from newsletter.audience.models import (
    BounceEvent,
    ImportJob,
    MailingList,
    Subscriber,
    Subscription,
    Suppression,
)
from newsletter.campaigns.models import Campaign
from newsletter.content.models import Series
from newsletter.db import utcnow
from newsletter.errors import InvalidInputError, NotFoundError
from newsletter.events.models import WebhookOutbox
from newsletter.events.outbox import emit
from newsletter.runs.models import Delivery, DeliveryStatus, Run
from newsletter.sequences.models import Enrollment, Sequence
from newsletter.tracking.models import TrackedLink, TrackedMessage, TrackingEvent

LIST_COLUMNS = (
    "email",
    "name",
    "status",
    "subscribed_at",
    "confirmed_at",
    "unsubscribed_at",
)
# Spreadsheets run a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
FORGOTTEN_REASON = "forgotten"
_BATCH = 1000


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _address(raw: str) -> str:
    try:
        return normalise_email(raw)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{raw!r} is not an email address: {exc}") from exc


# --- a list as CSV -------------------------------------------------------------------


def _cell(value: Any) -> str:
    """A value as text for a spreadsheet; free text that would run as a formula gets a
    leading apostrophe (numbers such as -5 stay as they are)."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if text.startswith(_FORMULA_START):
        try:
            float(text)
        except ValueError:
            return "'" + text
    return text


def _attribute_columns(session: Session, list_id: int) -> dict[str, str]:
    """Attribute key → column name, for every key any member of the list has; a key
    that would clash with a fixed column is written as attr.<key>."""
    keys: set[str] = set()
    query = (
        select(Subscriber.attributes)
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(Subscription.list_id == list_id)
        .execution_options(yield_per=_BATCH)
    )
    for attributes in session.scalars(query):
        keys.update(attributes or {})
    return {key: f"attr.{key}" if key in LIST_COLUMNS else key for key in sorted(keys)}


def export_list_csv(session: Session, list_slug: str, out: TextIO) -> int:
    """Write every member of the list, whatever their status, as CSV to `out`; returns
    how many. Columns: email, name, status, subscribed_at, confirmed_at,
    unsubscribed_at (ISO 8601, UTC), then one per attribute any member has.

    Rows come in subscriber order, streamed; addresses, names, attributes and attribute
    column names that a spreadsheet would run as a formula start with an apostrophe.
    """
    mailing_list = get_list(session, list_slug)
    audit.record(session, "list.export", f"list:{list_slug}")
    attribute_columns = _attribute_columns(session, mailing_list.id)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*LIST_COLUMNS, *(_cell(name) for name in attribute_columns.values())])
    query = (
        select(Subscriber, Subscription)
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(Subscription.list_id == mailing_list.id)
        .order_by(Subscriber.id)
        .execution_options(yield_per=_BATCH)
    )
    count = 0
    for subscriber, subscription in session.execute(query):
        attributes = subscriber.attributes or {}
        writer.writerow(
            [
                _cell(subscriber.email),  # "=cmd@example.org" is a valid address
                _cell(subscriber.name),
                subscription.status.value,
                _iso(subscription.created_at) or "",
                _iso(subscription.confirmed_at) or "",
                _iso(subscription.unsubscribed_at) or "",
                *(_cell(attributes.get(key)) for key in attribute_columns),
            ]
        )
        count += 1
    return count


# --- everything about one person -----------------------------------------------------


def _subscriber_data(subscriber: Subscriber) -> dict[str, Any]:
    return {
        "id": subscriber.id,
        "email": subscriber.email,
        "name": subscriber.name,
        "timezone": subscriber.timezone,
        "attributes": subscriber.attributes or {},
        "soft_bounces": subscriber.soft_bounces,
        "created_at": _iso(subscriber.created_at),
    }


def _subscriptions(session: Session, subscriber_id: int) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Subscription, MailingList)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(Subscription.subscriber_id == subscriber_id)
        .order_by(MailingList.slug)
    )
    return [
        {
            "list": ml.slug,
            "list_name": ml.name,
            "status": sub.status.value,
            "source": sub.source,
            "subscribed_at": _iso(sub.created_at),
            "confirmed_at": _iso(sub.confirmed_at),
            "unsubscribed_at": _iso(sub.unsubscribed_at),
        }
        for sub, ml in rows
    ]


def _enrollments(session: Session, subscriber_id: int) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Enrollment, Series.slug, MailingList.slug)
        .join(Sequence, Sequence.id == Enrollment.sequence_id)
        .join(Series, Series.id == Sequence.series_id)
        .join(MailingList, MailingList.id == Sequence.list_id)
        .where(Enrollment.subscriber_id == subscriber_id)
        .order_by(Enrollment.id)
    )
    return [
        {
            "sequence": enrollment.sequence_id,
            "series": series_slug,
            "list": list_slug,
            "status": enrollment.status.value,
            "articles_sent": enrollment.sent_count,
            "next_due_at": _iso(enrollment.next_due_at),
            "enrolled_at": _iso(enrollment.created_at),
            "updated_at": _iso(enrollment.updated_at),
        }
        for enrollment, series_slug, list_slug in rows
    ]


def _deliveries(session: Session, subscriber_id: int | None, address: str) -> list[dict[str, Any]]:
    whose = Delivery.email == address
    if subscriber_id is not None:
        whose = or_(whose, Delivery.subscriber_id == subscriber_id)
    rows = session.execute(
        select(Delivery, Run, Campaign.name)
        .join(Run, Run.id == Delivery.run_id)
        .outerjoin(Campaign, Campaign.id == Run.campaign_id)
        .where(whose)
        .order_by(Delivery.id)
    )
    return [
        {
            "run": run.id,
            "campaign": run.campaign_id,
            "campaign_name": campaign_name,
            "sequence": run.sequence_id,
            "address": delivery.email,
            "status": delivery.status.value,
            "attempts": delivery.attempts,
            "message_id": delivery.message_id,
            "smtp_reply": delivery.smtp_reply,
            "sent_at": _iso(delivery.sent_at),
            "updated_at": _iso(delivery.updated_at),
        }
        for delivery, run, campaign_name in rows
    ]


def _bounce_events(session: Session, address: str) -> list[dict[str, Any]]:
    events = session.scalars(
        select(BounceEvent).where(BounceEvent.email == address).order_by(BounceEvent.id)
    )
    return [
        {
            "source": event.source,
            "event_id": event.event_id,
            "kind": event.kind,
            "detail": event.detail,
            "received_at": _iso(event.received_at),
        }
        for event in events
    ]


def _suppressions_of(address: str) -> Any:
    return or_(Suppression.email == address, Suppression.email_hash == email_hash(address))


def _suppressions(session: Session, address: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(Suppression).where(_suppressions_of(address)).order_by(Suppression.id)
    )
    return [
        {
            "kept_as": "address" if row.email else "hash of the address",
            "reason": row.reason,
            "detail": row.detail,
            "created_at": _iso(row.created_at),
        }
        for row in rows
    ]


def export_data(session: Session, email: str) -> dict[str, Any]:
    """Everything we hold on the person with this address, as JSON-ready data:
    subscriber fields and attributes, subscriptions, sequence enrollments, deliveries
    (run, campaign, status, dates, message ids, SMTP replies), bounce events and
    suppressions. NotFoundError when we hold nothing at all.
    """
    address = _address(email)
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == address))
    subscriber_id = subscriber.id if subscriber is not None else None
    data: dict[str, Any] = {
        "email": address,
        "exported_at": _iso(utcnow()),
        "subscriber": _subscriber_data(subscriber) if subscriber is not None else None,
        "subscriptions": _subscriptions(session, subscriber_id) if subscriber_id else [],
        "enrollments": _enrollments(session, subscriber_id) if subscriber_id else [],
        "deliveries": _deliveries(session, subscriber_id, address),
        "bounce_events": _bounce_events(session, address),
        "suppressions": _suppressions(session, address),
        "tracking_events": _tracking_events(session, subscriber_id),
    }
    readable = [data[key] for key in ("subscriber", "deliveries", "bounce_events")]
    readable += [row for row in data["suppressions"] if row["kept_as"] == "address"]
    if not any(readable):
        hashed = " (only a hash of the address, on the suppression list)"
        raise NotFoundError(f"we hold no data on {address}{hashed if data['suppressions'] else ''}")
    audit.record(session, "subscriber.export_data", f"email_hash:{email_hash(address)}")
    return data


# --- forgetting --------------------------------------------------------------------------


@dataclass(frozen=True)
class ForgetReport:
    """What `forget` changed, by table."""

    subscriber: bool  # a subscriber row was deleted
    subscriptions: int
    enrollments: int
    deliveries: int
    bounce_events: int  # anonymised
    suppression: str  # "created", "converted" (a plain entry now hashed) or "kept"
    tracking_events: int = 0  # their opens and clicks, deleted (the counts stay)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _changed(session: Session, statement: Any) -> int:
    """Rows a DELETE or UPDATE changed."""
    result = session.execute(statement.execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]


def _keep_hashed_suppression(session: Session, address: str) -> str:
    """Leave exactly one suppression for the address, holding only its hash."""
    hashed = email_hash(address)
    rows = list(session.scalars(select(Suppression).where(_suppressions_of(address))))
    keeper = next((row for row in rows if row.email_hash == hashed), None) or next(iter(rows), None)
    for row in rows:
        if row is not keeper:
            session.delete(row)
    if keeper is None:
        keeper = Suppression(email_hash=hashed, reason=FORGOTTEN_REASON)
        outcome = "created"
    else:
        outcome = "converted" if keeper.email else "kept"
    # The detail is often the receiving server's reply, which quotes the address.
    keeper.email, keeper.email_hash, keeper.detail = None, hashed, ""
    try:
        with session.begin_nested():
            session.add(keeper)
    except IntegrityError:
        # Someone forgot the same address at the same moment; their entry stands.
        if session.scalar(select(Suppression.id).where(Suppression.email_hash == hashed)) is None:
            raise
        outcome = "kept"
    return outcome


def _forget_tracking(session: Session, subscriber_id: int) -> int:
    """Delete the reader's opens and clicks; their messages' firsts stay in the counts
    under a new random key, tied to nobody. Returns how many events went."""
    theirs = select(Delivery.id).where(Delivery.subscriber_id == subscriber_id)
    sent_runs = select(Delivery.run_id).where(
        Delivery.subscriber_id == subscriber_id, Delivery.status == DeliveryStatus.sent
    )
    _changed(
        session,
        update(Run).where(Run.id.in_(sent_runs)).values(forgotten_sent=Run.forgotten_sent + 1),
    )
    events = _changed(session, delete(TrackingEvent).where(TrackingEvent.delivery_id.in_(theirs)))
    for message in session.scalars(
        select(TrackedMessage).where(TrackedMessage.delivery_id.in_(theirs))
    ):
        message.delivery_id = None
        message.message_key = "f" + secrets.token_hex(8)
    session.flush()
    return events


def _tracking_events(session: Session, subscriber_id: int | None) -> list[dict[str, Any]]:
    if subscriber_id is None:
        return []
    rows = session.execute(
        select(TrackingEvent, TrackedLink.url)
        .join(Delivery, Delivery.id == TrackingEvent.delivery_id)
        .outerjoin(TrackedLink, TrackedLink.id == TrackingEvent.link_id)
        .where(Delivery.subscriber_id == subscriber_id)
        .order_by(TrackingEvent.id)
    )
    return [
        {
            "run": event.run_id,
            "kind": event.kind.value,
            "link": url,
            "at": _iso(event.occurred_at),
            "user_agent_class": event.user_agent_class,
            "machine": event.machine,
            "machine_reason": event.machine_reason,
        }
        for event, url in rows
    ]


def _scrub_rejected_rows(session: Session, address: str) -> None:
    """Rows an import rejected are kept as they were in the file, so staff can fix
    them; forgetting a person removes the ones that hold their address."""
    for job in session.scalars(select(ImportJob).where(ImportJob.problems.is_not(None))):
        kept = [p for p in job.problems or [] if address not in str(p.get("row", "")).lower()]
        if len(kept) != len(job.problems or []):
            job.problems = kept


def _forget_webhook_events(session: Session, subscriber_id: int | None, address: str) -> int:
    """Webhook events naming the person (sent or not) go, with their delivery log."""
    about = WebhookOutbox.data["email"].as_string() == address
    if subscriber_id is not None:
        about = or_(about, WebhookOutbox.data["subscriber_id"].as_integer() == subscriber_id)
    return _changed(session, delete(WebhookOutbox).where(about))


def forget(session: Session, email: str) -> ForgetReport:
    """Erase what we hold on the person with this address (see the module's table)
    and keep them from ever being mailed again. Flushes; the caller commits.

    Safe to repeat, and useful for an address we never held: either way it leaves
    one hashed suppression.
    """
    address = _address(email)
    subscriber_id = session.scalar(select(Subscriber.id).where(Subscriber.email == address))
    counts = {"subscriptions": 0, "enrollments": 0, "deliveries": 0, "tracking_events": 0}
    if subscriber_id is not None:
        counts["tracking_events"] = _forget_tracking(session, subscriber_id)
        counts["deliveries"] = _changed(
            session, delete(Delivery).where(Delivery.subscriber_id == subscriber_id)
        )
        counts["enrollments"] = _changed(
            session, delete(Enrollment).where(Enrollment.subscriber_id == subscriber_id)
        )
        counts["subscriptions"] = _changed(
            session, delete(Subscription).where(Subscription.subscriber_id == subscriber_id)
        )
        _changed(session, delete(Subscriber).where(Subscriber.id == subscriber_id))
    # Ledger rows of another subscriber row that carried this address (none normally).
    counts["deliveries"] += _changed(session, delete(Delivery).where(Delivery.email == address))
    anonymised = _changed(
        session, update(BounceEvent).where(BounceEvent.email == address).values(email="", detail="")
    )
    _scrub_rejected_rows(session, address)
    _forget_webhook_events(session, subscriber_id, address)
    if subscriber_id is not None:
        # Receivers learn the id to forget; the address is in no event any more.
        emit(session, "subscriber.forgotten", {"subscriber_id": subscriber_id})
    suppression = _keep_hashed_suppression(session, address)
    # The log names the person by the hash the suppression keeps, never in the clear.
    audit.record(
        session,
        "subscriber.forget",
        f"email_hash:{email_hash(address)}",
        detail={"subscriber": subscriber_id, **counts, "bounce_events": anonymised},
    )
    session.flush()
    # Objects of the deleted rows may still sit in the identity map; drop them.
    session.expire_all()
    return ForgetReport(
        subscriber=subscriber_id is not None,
        bounce_events=anonymised,
        suppression=suppression,
        **counts,
    )


# --- a subscriber's timeline ---------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEvent:
    at: str  # ISO time
    what: str  # subscribed, confirmed, unsubscribed, delivery, bounce, complaint, suppressed
    detail: str


def timeline(session: Session, subscriber_id: int) -> list[TimelineEvent]:
    """What happened to one subscriber, oldest first: subscriptions, confirmations,
    every delivery with its outcome, bounces and complaints, unsubscribes, suppression.
    (Reading it is not an export: nothing is recorded.)"""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise NotFoundError(f"no subscriber {subscriber_id}")
    events: list[TimelineEvent] = []
    for sub in _subscriptions(session, subscriber_id):
        where = sub["list_name"]
        if sub["subscribed_at"]:
            source = f" ({sub['source']})" if sub["source"] else ""  # no "()" when unknown
            events.append(TimelineEvent(sub["subscribed_at"], "subscribed", f"{where}{source}"))
        if sub["confirmed_at"]:
            events.append(TimelineEvent(sub["confirmed_at"], "confirmed", where))
        if sub["unsubscribed_at"]:
            events.append(TimelineEvent(sub["unsubscribed_at"], "unsubscribed", where))
    for row in _deliveries(session, subscriber_id, subscriber.email):
        what = row["campaign_name"] or f"drip sequence {row['sequence']}"
        reply = f" — {row['smtp_reply']}" if row["smtp_reply"] else ""
        tries = f"{row['attempts']} attempt{'' if row['attempts'] == 1 else 's'}"
        events.append(
            TimelineEvent(
                row["sent_at"] or row["updated_at"] or "",
                "delivery",
                f"{what} (run {row['run']}): {row['status']}, {tries}{reply}",
            )
        )
    for event in _bounce_events(session, subscriber.email):
        kind = "complaint" if event["kind"] == "complaint" else "bounce"
        events.append(
            TimelineEvent(event["received_at"] or "", kind, f"{event['kind']}: {event['detail']}")
        )
    for row in _suppressions(session, subscriber.email):
        events.append(TimelineEvent(row["created_at"] or "", "suppressed", row["reason"]))
    return sorted(events, key=lambda e: e.at)
