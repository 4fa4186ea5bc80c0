"""Acting on a bounce report: suppress, count, unsubscribe; each event once.

Every recipient of a report is first recorded as a `BounceEvent`, keyed by the
report's source and event id; the insert is `ON CONFLICT DO NOTHING`, so a replayed
notification (the same email imported twice, a provider retrying a webhook, two
workers racing) finds its key taken and changes nothing. Then, per recipient:

- hard bounce: the address is suppressed at once (reason `hard-bounce`);
- soft bounce: the subscriber's `soft_bounces` goes up by one, and the address is
  suppressed (reason `soft-bounces`) when it reaches the limit;
- complaint: every subscription of the subscriber is unsubscribed (source
  `complaint`) and the address suppressed (reason `complaint`);
- delayed: recorded only.

Auto-replies and messages that are not bounces are ignored and not recorded.
Addresses are matched as `normalise_email` spells them (domain case-folded). The
caller owns the transaction: these functions flush, the caller commits.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from newsletter import metrics
from newsletter.audience.addresses import normalise_email
from newsletter.audience.models import BounceEvent, Subscriber, Subscription, Suppression
from newsletter.audience.subscriptions import suppress_address, unsubscribe
from newsletter.bounces.dsn import BounceReport, Kind, RecipientResult
from newsletter.errors import InvalidInputError
from newsletter.events.outbox import emit

DEFAULT_SOFT_BOUNCE_LIMIT = 3
# Feedback reports that are not a reader asking to stop: a DMARC failure report
# (RFC 6591) says our message failed authentication, "not-spam" says the opposite
# of a complaint. They are recorded, and nobody is unsubscribed for them.
NOT_A_COMPLAINT = frozenset({"auth-failure", "not-spam"})
MAX_EVENT_ID = 500  # BounceEvent.event_id


class Action(enum.StrEnum):
    suppressed = "suppressed"  # hard bounce, or soft bounces reaching the limit
    unsubscribed = "unsubscribed"  # complaint: left every list, and suppressed
    counted = "counted"  # a soft bounce below the limit
    recorded = "recorded"  # kept for the record, nothing else changed
    replayed = "replayed"  # this event was processed before: nothing changed
    ignored = "ignored"  # not a bounce, or no usable address


@dataclass(frozen=True)
class Outcome:
    """What was done for one recipient of a report."""

    action: Action
    email: str
    detail: str

    def __str__(self) -> str:
        return self.detail


def apply_bounce(
    session: Session,
    report: BounceReport,
    source: str,
    soft_bounce_limit: int = DEFAULT_SOFT_BOUNCE_LIMIT,
) -> str:
    """Act on the report once and say what was done, one clause per recipient."""
    return "; ".join(str(o) for o in apply_report(session, report, source, soft_bounce_limit))


def apply_report(
    session: Session,
    report: BounceReport,
    source: str,
    soft_bounce_limit: int = DEFAULT_SOFT_BOUNCE_LIMIT,
) -> list[Outcome]:
    """Act on the report once: one outcome per recipient (see the module docstring).

    `source` names where the report came from (`dsn`, `ses`, `sendgrid`, `mailgun`,
    `postmark`); with the report's event id it identifies the event.
    """
    if soft_bounce_limit < 1:
        raise InvalidInputError("the soft bounce limit must be at least 1")
    if not report.event_id:
        raise InvalidInputError("a bounce report needs an event id")
    if report.kind in (Kind.autoreply, Kind.not_bounce, Kind.unsubscribe):
        # (An unsubscribe request is acted on by unsubscribes.py, when its token is valid.)
        return [Outcome(Action.ignored, "", f"ignored: {report.kind}")]
    if not report.recipients:
        return [Outcome(Action.ignored, "", f"ignored: {report.kind} naming no recipient")]
    outcomes = []
    for recipient in report.recipients:
        address = _normalised(recipient.address)
        detail = _detail(recipient, report.feedback_type)
        if not record_event(
            session,
            source,
            _event_key(report, recipient),
            address or recipient.address,
            recipient.kind,
            detail,
        ):
            outcomes.append(
                Outcome(
                    Action.replayed, address or "", f"replay of {source} event: nothing changed"
                )
            )
        elif address is None:
            outcomes.append(
                Outcome(Action.ignored, "", f"ignored: {recipient.address!r} is not an address")
            )
        else:
            outcomes.append(
                _act(session, recipient, address, report.feedback_type, detail, soft_bounce_limit)
            )
    return outcomes


def _act(
    session: Session,
    recipient: RecipientResult,
    address: str,
    feedback_type: str,
    detail: str,
    limit: int,
) -> Outcome:
    subscriber = _find_subscriber(session, recipient, address)
    # Suppress the address we mail (the subscriber's), not an alias it expanded to.
    email = subscriber.email if subscriber is not None else address
    subscriber_id = subscriber.id if subscriber is not None else None
    if recipient.kind is Kind.hard:
        metrics.count_bounce("hard")
        data = {"subscriber_id": subscriber_id, "email": email, "kind": "hard"}
        emit(session, "subscriber.bounced", data)
        return _suppress(session, email, "hard-bounce", detail, "hard bounce")
    if recipient.kind is Kind.soft:
        metrics.count_bounce("soft")
        data = {"subscriber_id": subscriber_id, "email": email, "kind": "soft"}
        emit(session, "subscriber.bounced", data)
        return _count_soft_bounce(session, subscriber, email, detail, limit)
    if recipient.kind is Kind.complaint:
        if feedback_type in NOT_A_COMPLAINT:
            return Outcome(
                Action.recorded, email, f"recorded {feedback_type} report for {email}: no action"
            )
        metrics.count_complaint()
        emit(session, "subscriber.complained", {"subscriber_id": subscriber_id, "email": email})
        return _complain(session, subscriber, email, detail)
    return Outcome(Action.recorded, email, f"recorded {recipient.kind} for {email}")


def _count_soft_bounce(
    session: Session, subscriber: Subscriber | None, email: str, detail: str, limit: int
) -> Outcome:
    if subscriber is None:
        return Outcome(Action.recorded, email, f"recorded soft bounce for {email}: no subscriber")
    # One UPDATE, not read-modify-write: two reports at once both count.
    count = session.execute(
        update(Subscriber)
        .where(Subscriber.id == subscriber.id)
        .values(soft_bounces=Subscriber.soft_bounces + 1)
        .returning(Subscriber.soft_bounces)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    session.expire(subscriber, ["soft_bounces"])
    if count >= limit:
        return _suppress(
            session,
            email,
            "soft-bounces",
            f"{count} soft bounces; last: {detail}",
            f"soft bounce {count} of {limit}",
        )
    return Outcome(Action.counted, email, f"soft bounce {count} of {limit} for {email}")


def _complain(session: Session, subscriber: Subscriber | None, email: str, detail: str) -> Outcome:
    left = 0
    if subscriber is not None:
        subscriptions = session.scalars(
            select(Subscription).where(Subscription.subscriber_id == subscriber.id)
        ).all()
        for subscription in subscriptions:
            unsubscribe(session, subscriber.id, subscription.list_id, source="complaint")
        left = len(subscriptions)
    suppressed = _suppress(session, email, "complaint", detail, "complaint")
    return Outcome(
        Action.unsubscribed,
        email,
        f"unsubscribed {email} from {left} list(s); {suppressed.detail}",
    )


def _suppress(session: Session, email: str, reason: str, detail: str, why: str) -> Outcome:
    exists = session.scalar(select(Suppression.id).where(Suppression.email == email))
    if exists is not None:
        return Outcome(Action.suppressed, email, f"{email} already suppressed ({why})")
    suppress_address(session, email, reason, detail)
    return Outcome(Action.suppressed, email, f"suppressed {email} ({why})")


def record_event(
    session: Session, source: str, event_id: str, email: str, kind: Kind, detail: str
) -> bool:
    """Insert the event unless its (source, event_id) exists; True if inserted."""
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = (
        insert(BounceEvent)
        .values(
            source=source[:50],
            event_id=event_id,
            email=email[:320],
            kind=str(kind),
            detail=detail[:2000],
        )
        .on_conflict_do_nothing(index_elements=["source", "event_id"])
        .returning(BounceEvent.id)
    )
    # A row comes back only when it was inserted (rowcount is not portable here).
    return session.execute(statement).scalar_one_or_none() is not None


def _event_key(report: BounceReport, recipient: RecipientResult) -> str:
    """The report's event id, made unique per recipient when it names several."""
    key = report.event_id
    if len(report.recipients) > 1:
        key = f"{key} {recipient.address}"
    if len(key) > MAX_EVENT_ID:
        key = "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    return key


def _find_subscriber(
    session: Session, recipient: RecipientResult, address: str
) -> Subscriber | None:
    # The Original-Recipient, when the MTA gave one, is the address we mailed.
    candidates = [a for a in (_normalised(recipient.original_address), address) if a]
    for candidate in candidates:
        subscriber = session.scalar(select(Subscriber).where(Subscriber.email == candidate))
        if subscriber is not None:
            return subscriber
    return None


def _normalised(address: str) -> str | None:
    if not address:
        return None
    try:
        return normalise_email(address)
    except InvalidInputError:
        return None


def _detail(recipient: RecipientResult, feedback_type: str) -> str:
    parts = [recipient.status, recipient.diagnostic]
    if recipient.kind is Kind.complaint:
        parts.append(f"feedback: {feedback_type or 'unspecified'}")
    return " ".join(p for p in parts if p)[:2000]
