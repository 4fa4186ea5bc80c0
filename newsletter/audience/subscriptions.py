"""Changing a subscriber's membership of a list."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter import metrics
from newsletter.accounts import audit
from newsletter.audience.addresses import email_hash
from newsletter.audience.models import (
    MailingList,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
)
from newsletter.db import utcnow
from newsletter.errors import NotFoundError
from newsletter.events.outbox import emit


@dataclass(frozen=True)
class Membership:
    list_slug: str
    list_name: str
    list_id: int
    status: SubscriptionStatus


class ConfirmOutcome(enum.StrEnum):
    confirmed = "confirmed"  # this call confirmed it
    already = "already"  # it was confirmed before; nothing changed
    cancelled = "cancelled"  # the subscriber left the list since; nothing changed


def find_subscription(session: Session, subscriber_id: int, list_id: int) -> Subscription | None:
    return session.scalar(
        select(Subscription).where(
            Subscription.subscriber_id == subscriber_id, Subscription.list_id == list_id
        )
    )


def add_subscription(
    session: Session, subscriber_id: int, list_id: int, status: SubscriptionStatus, source: str
) -> Subscription:
    """The subscriber's subscription to the list, created with `status` if there is none.

    An existing subscription is returned unchanged. Losing a race with a concurrent
    creator is harmless: the insert runs in a savepoint and the winner's row is used.
    """
    existing = find_subscription(session, subscriber_id, list_id)
    if existing is not None:
        return existing
    subscription = Subscription(
        subscriber_id=subscriber_id,
        list_id=list_id,
        status=status,
        source=source[:100],
        confirmed_at=utcnow() if status is SubscriptionStatus.confirmed else None,
    )
    try:
        with session.begin_nested():
            session.add(subscription)
    except IntegrityError:
        winner = find_subscription(session, subscriber_id, list_id)
        if winner is None:
            raise
        return winner
    return subscription


def subscriber_event(session: Session, event: str, subscriber_id: int, list_id: int) -> None:
    """Queue a webhook event about the subscriber's subscription to the list."""
    email = session.scalar(select(Subscriber.email).where(Subscriber.id == subscriber_id))
    slug = session.scalar(select(MailingList.slug).where(MailingList.id == list_id))
    emit(session, event, {"subscriber_id": subscriber_id, "email": email, "list": slug})


def confirm_pending(session: Session, subscriber_id: int, list_id: int) -> ConfirmOutcome:
    """Confirm an unconfirmed subscription (the confirmation link was followed).

    Confirming twice changes nothing; a subscription the subscriber has left since
    stays left (an old confirmation link never re-subscribes anyone). Raises
    NotFoundError when there is no such subscription.
    """
    subscription = find_subscription(session, subscriber_id, list_id)
    if subscription is None:
        raise NotFoundError("no such subscription")
    if subscription.status is SubscriptionStatus.confirmed:
        return ConfirmOutcome.already
    if subscription.status is SubscriptionStatus.unsubscribed:
        return ConfirmOutcome.cancelled
    subscription.status = SubscriptionStatus.confirmed
    subscription.confirmed_at = utcnow()
    session.flush()
    subscriber_event(session, "subscriber.confirmed", subscriber_id, list_id)
    return ConfirmOutcome.confirmed


def join(session: Session, subscriber_id: int, list_id: int, source: str) -> None:
    """Make the subscriber a confirmed member of the list, whatever they were before.

    Only for callers that have proven the subscriber controls the address (a signed
    link we mailed them) or for single opt-in lists. Joining twice changes nothing.
    """
    before = find_subscription(session, subscriber_id, list_id)
    if before is not None and before.status is SubscriptionStatus.confirmed:
        return
    subscription = add_subscription(
        session, subscriber_id, list_id, SubscriptionStatus.confirmed, source
    )
    if subscription.status is not SubscriptionStatus.confirmed:
        subscription.status = SubscriptionStatus.confirmed
        subscription.confirmed_at = utcnow()
        subscription.unsubscribed_at = None
        subscription.source = source[:100]
        session.flush()
    subscriber_event(session, "subscriber.confirmed", subscriber_id, list_id)


def unsubscribe(session: Session, subscriber_id: int, list_id: int, source: str) -> MailingList:
    """Record that the subscriber left the list; repeating it changes nothing."""
    subscription = find_subscription(session, subscriber_id, list_id)
    if subscription is None:
        raise NotFoundError("no such subscription")
    if subscription.status is not SubscriptionStatus.unsubscribed:
        subscription.status = SubscriptionStatus.unsubscribed
        subscription.unsubscribed_at = utcnow()
        subscription.source = source[:100]
        session.flush()
        metrics.count_unsubscribe(source)
        subscriber_event(session, "subscriber.unsubscribed", subscriber_id, list_id)
    return subscription.mailing_list


def memberships(session: Session, subscriber_id: int) -> tuple[Subscriber, list[Membership]]:
    """The subscriber and every list they have a subscription to (in any state), by name.

    Raises NotFoundError when there is no such subscriber.
    """
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise NotFoundError("no such subscriber")
    rows = session.execute(
        select(MailingList, Subscription.status)
        .join(Subscription, Subscription.list_id == MailingList.id)
        .where(Subscription.subscriber_id == subscriber_id)
        .order_by(MailingList.name)
    ).all()
    return subscriber, [Membership(ml.slug, ml.name, ml.id, status) for ml, status in rows]


def suppress_address(session: Session, email: str, reason: str, detail: str) -> None:
    """Never mail `email` again (hard bounce, complaint, manual); a second call keeps
    the first reason."""
    if session.scalar(select(Suppression.id).where(Suppression.email == email)) is None:
        session.add(Suppression(email=email, reason=reason, detail=detail[:2000]))
        session.flush()
        audit.record(
            session, "suppression.add", f"email_hash:{email_hash(email)}", detail={"reason": reason}
        )
