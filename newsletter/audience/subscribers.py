"""Subscribers as staff see them: added one by one or in bulk, searched, described.

Adding people by hand or in bulk makes them confirmed members of a list, with the
same rules as a CSV import (importer.py): a forgotten address is never added back,
someone who left the list stays left, a known subscriber's name and attributes are
merged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.accounts import audit
from newsletter.audience.addresses import normalise_email
from newsletter.audience.importer import MAX_NAME, SubscriberRow, upsert_rows
from newsletter.audience.lists import get_list
from newsletter.audience.models import MailingList, Subscriber, Subscription, SubscriptionStatus
from newsletter.errors import InvalidInputError, NotFoundError, Problem
from newsletter.importing import ImportReport

MAX_BULK = 10_000


def check_row(item: Mapping[str, Any], index: int) -> SubscriberRow:
    """One person given as {"email", "name", "attributes"}; InvalidInputError naming
    the item and the field."""
    where = f"item {index}"
    raw = item.get("email")
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInputError(f"{where}: email is missing")
    try:
        email = normalise_email(raw)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where}: email: {exc}") from exc
    name = item.get("name") or ""
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise InvalidInputError(f"{where}: name must be text of at most {MAX_NAME} characters")
    attributes = item.get("attributes") or {}
    if not isinstance(attributes, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int | float | bool)
        for k, v in attributes.items()
    ):
        raise InvalidInputError(f"{where}: attributes must map names to plain values")
    return SubscriberRow(
        line=index,
        email=email,
        name=name.strip(),
        attributes={k: str(v) for k, v in attributes.items()},
    )


def upsert_subscribers(
    session: Session, list_slug: str, items: Sequence[Mapping[str, Any]], source: str = "api"
) -> ImportReport:
    """Make every valid item a confirmed member of the list (see the module's rules);
    invalid items are reported as problems by their index (1-based). Flushes."""
    if len(items) > MAX_BULK:
        raise InvalidInputError(f"at most {MAX_BULK:,} subscribers at once")
    mailing_list = get_list(session, list_slug)
    rows: list[SubscriberRow] = []
    problems: list[tuple[int, Problem]] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items, 1):
        try:
            row = check_row(item, index)
        except InvalidInputError as exc:
            problems.append((index, Problem(f"item {index}", str(exc).split(": ", 1)[-1])))
            continue
        if row.email in seen:
            problems.append(
                (index, Problem(f"item {index}", f"duplicate of item {seen[row.email]}"))
            )
            continue
        seen[row.email] = index
        rows.append(row)
    report = upsert_rows(session, mailing_list.id, rows, problems, source)
    audit.record(
        session,
        "subscribers.upsert",
        f"list:{list_slug}",
        detail={
            "items": len(items),
            "created": report.created,
            "updated": report.updated,
            "unchanged": report.unchanged,
            "problems": len(report.problems),
        },
    )
    return report


def get_subscriber(session: Session, subscriber_id: int) -> Subscriber:
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise NotFoundError(f"no subscriber {subscriber_id}")
    return subscriber


def describe_subscriber(session: Session, subscriber: Subscriber) -> dict[str, Any]:
    rows = session.execute(
        select(MailingList.slug, Subscription.status)
        .join(Subscription, Subscription.list_id == MailingList.id)
        .where(Subscription.subscriber_id == subscriber.id)
        .order_by(MailingList.slug)
    ).all()
    return {
        "id": subscriber.id,
        "email": subscriber.email,
        "name": subscriber.name,
        "timezone": subscriber.timezone,
        "attributes": subscriber.attributes or {},
        "soft_bounces": subscriber.soft_bounces,
        "created_at": subscriber.created_at.isoformat() if subscriber.created_at else None,
        "lists": {slug: status.value for slug, status in rows},
    }


def search_subscribers(
    session: Session,
    *,
    email: str | None = None,
    name: str | None = None,
    status: str | None = None,
    list_slug: str | None = None,
    attribute: str | None = None,
    after_id: int = 0,
    limit: int = 50,
    list_ids: Sequence[int] | None = None,
) -> list[Subscriber]:
    """Subscribers by id (keyset: those after `after_id`), filtered: `email` and `name`
    match a part, case-insensitively; `status` (with `list_slug`, on that list) is a
    subscription status; `attribute` is "key=value" (or "key" for present).
    `list_ids` limits the search to members of those lists (a scoped user)."""
    query = select(Subscriber).where(Subscriber.id > after_id)
    if email:
        query = query.where(func.lower(Subscriber.email).contains(email.strip().lower()))
    if name:
        query = query.where(func.lower(Subscriber.name).contains(name.strip().lower()))
    if status is not None or list_slug is not None or list_ids is not None:
        membership = select(Subscription.subscriber_id)
        if status is not None:
            try:
                membership = membership.where(Subscription.status == SubscriptionStatus(status))
            except ValueError as exc:
                names = ", ".join(s.value for s in SubscriptionStatus)
                raise InvalidInputError(f"status must be one of {names}") from exc
        if list_slug is not None:
            membership = membership.where(Subscription.list_id == get_list(session, list_slug).id)
        if list_ids is not None:
            membership = membership.where(Subscription.list_id.in_(list(list_ids)))
        query = query.where(Subscriber.id.in_(membership))
    if attribute:
        key, sep, value = attribute.partition("=")
        if not key.strip():
            raise InvalidInputError("attribute must be key=value or key")
        field = Subscriber.attributes[key.strip()].as_string()
        query = query.where(field == value if sep else field.is_not(None))
    return list(session.scalars(query.order_by(Subscriber.id).limit(limit)))


def update_subscriber(
    session: Session, subscriber: Subscriber, *, name: str, timezone: str | None
) -> Subscriber:
    """Staff correct a subscriber's name or time zone (None: their list's). The audit
    log names the fields changed, never their values (they are personal data)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = name.strip()
    if len(name) > MAX_NAME:
        raise InvalidInputError(f"name: at most {MAX_NAME} characters")
    if timezone:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidInputError(f"time zone {timezone!r} is unknown") from exc
    changed = [
        field
        for field, old, new in (
            ("name", subscriber.name, name),
            ("timezone", subscriber.timezone, timezone or None),
        )
        if old != new
    ]
    subscriber.name = name
    subscriber.timezone = timezone or None
    session.flush()
    if changed:
        audit.record(
            session, "subscriber.update", f"subscriber:{subscriber.id}", detail={"fields": changed}
        )
    return subscriber


def unsubscribe_by_staff(session: Session, subscriber: Subscriber, list_slug: str) -> None:
    """Staff take a subscriber off a list (at their request, by phone or letter)."""
    from newsletter.audience.subscriptions import unsubscribe

    mailing_list = get_list(session, list_slug)
    unsubscribe(session, subscriber.id, mailing_list.id, "staff")
    audit.record(
        session,
        "subscriber.unsubscribe",
        f"subscriber:{subscriber.id}",
        detail={"list": list_slug},
    )
