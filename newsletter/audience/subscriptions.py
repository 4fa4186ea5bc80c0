"""Changing a subscriber's membership of a list."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.audience.models import MailingList, Subscriber, Subscription, SubscriptionStatus
from newsletter.db import utcnow
from newsletter.errors import NotFoundError


@dataclass(frozen=True)
class Membership:
    list_slug: str
    list_name: str
    list_id: int
    status: SubscriptionStatus


def unsubscribe(session: Session, subscriber_id: int, list_id: int, source: str) -> MailingList:
    """Record that the subscriber left the list; repeating it changes nothing."""
    subscription = session.scalar(
        select(Subscription).where(
            Subscription.subscriber_id == subscriber_id, Subscription.list_id == list_id
        )
    )
    if subscription is None:
        raise NotFoundError("no such subscription")
    if subscription.status is not SubscriptionStatus.unsubscribed:
        subscription.status = SubscriptionStatus.unsubscribed
        subscription.unsubscribed_at = utcnow()
        subscription.source = source[:100]
        session.flush()
    return subscription.mailing_list


def memberships(session: Session, subscriber_id: int) -> tuple[Subscriber, list[Membership]]:
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
