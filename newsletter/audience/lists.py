"""Mailing lists: creating them, finding them by slug, and counting their members."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.accounts import audit
from newsletter.audience.models import (
    ArchiveVisibility,
    MailingList,
    OptIn,
    Subscription,
    SubscriptionStatus,
    TrackingMode,
)
from newsletter.errors import InvalidInputError, NotFoundError, Remedy
from newsletter.rendering.model import Sender

SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_SLUG = 200
MAX_NAME = 300
MAX_DESCRIPTION = 2000
MAX_IDENTITY = 500


def create_list(
    session: Session,
    slug: str,
    name: str,
    opt_in: OptIn = OptIn.double,
    description: str = "",
    public: bool = False,
    *,
    archive: ArchiveVisibility = ArchiveVisibility.private,
    organization: str = "",
    postal_address: str = "",
    footer_note: str = "",
    tracking: TrackingMode = TrackingMode.anonymous,
    track_opens: bool = False,
) -> MailingList:
    """Add a mailing list and flush it (the caller commits). Only a `public` list is
    offered on the sign-up form and on preferences pages; a private one is joined
    only through staff (imports, the API). Its archive is private unless asked
    otherwise; "" identity fields use the settings' values.

    Raises InvalidInputError when the slug is malformed or taken, or the name is empty.
    """
    if not SLUG_RE.match(slug) or len(slug) > MAX_SLUG:
        raise InvalidInputError(
            f"list slug {slug!r} must be lower-case letters, digits and single hyphens"
        )
    name = name.strip()
    if not name:
        raise InvalidInputError("a list needs a name")
    if len(name) > MAX_NAME:
        raise InvalidInputError(f"list name is longer than {MAX_NAME} characters")
    if len(description) > MAX_DESCRIPTION:
        raise InvalidInputError(f"list description is longer than {MAX_DESCRIPTION} characters")
    if session.scalar(select(MailingList.id).where(MailingList.slug == slug)) is not None:
        raise InvalidInputError(f"list '{slug}' already exists")
    mailing_list = MailingList(
        slug=slug,
        name=name,
        opt_in=opt_in,
        description=description,
        archive=archive,
        organization=clean_identity("organization", organization),
        postal_address=clean_identity("postal_address", postal_address),
        footer_note=clean_identity("footer_note", footer_note),
        public=public,
        tracking=tracking,
        track_opens=track_opens,
    )
    try:
        # A savepoint, so losing a race with another creator leaves the caller's
        # transaction usable.
        with session.begin_nested():
            session.add(mailing_list)
    except IntegrityError as exc:
        raise InvalidInputError(f"list '{slug}' already exists") from exc
    audit.record(
        session,
        "list.create",
        f"list:{slug}",
        after={"name": name, "opt_in": opt_in.value, "description": description},
    )
    return mailing_list


def get_list(session: Session, slug: str) -> MailingList:
    """The list with this slug; NotFoundError (whose remedy: create it) otherwise."""
    mailing_list = session.scalar(select(MailingList).where(MailingList.slug == slug))
    if mailing_list is None:
        raise NotFoundError(f"no list '{slug}'", remedy=Remedy("create", "list", slug))
    return mailing_list


def list_lists(session: Session) -> list[tuple[MailingList, int]]:
    """Every list, by slug, with its number of confirmed subscriptions."""
    confirmed = (
        select(func.count(Subscription.id))
        .where(
            Subscription.list_id == MailingList.id,
            Subscription.status == SubscriptionStatus.confirmed,
        )
        .correlate(MailingList)
        .scalar_subquery()
    )
    rows = session.execute(select(MailingList, confirmed).order_by(MailingList.slug))
    return [(mailing_list, count) for mailing_list, count in rows]


def list_sender(
    lists: Sequence[MailingList], organization: str, postal_address: str, footer_note: str
) -> Sender:
    """Who sends to these lists, as the footer says it: the first list's own values
    (lists of different brands), each falling back to the settings' (given here)."""
    first = min(lists, key=lambda ml: ml.id) if lists else None
    return Sender(
        organization=(first.organization if first else "") or organization,
        postal_address=(first.postal_address if first else "") or postal_address,
        footer_note=(first.footer_note if first else "") or footer_note,
    )


def require_postal_address(lists: Sequence[MailingList], default: str) -> None:
    """InvalidInputError naming the setting unless every list has a postal address of
    its own or `default` (NEWSLETTER_POSTAL_ADDRESS) is set."""
    missing = [ml.slug for ml in lists if not ml.postal_address]
    if default or not missing:
        return
    raise InvalidInputError(
        "NEWSLETTER_POSTAL_ADDRESS is not set: every campaign email must show the sender's "
        f"postal address (US CAN-SPAM). Set it, or give list '{missing[0]}' a postal address",
        remedy=Remedy("update", "list", missing[0], "postal_address"),
    )


def update_list(
    session: Session,
    slug: str,
    *,
    name: str | None = None,
    organization: str | None = None,
    postal_address: str | None = None,
    footer_note: str | None = None,
    archive: ArchiveVisibility | None = None,
    tracking: TrackingMode | None = None,
    track_opens: bool | None = None,
) -> MailingList:
    """Change a list's name, sender identity, archive visibility or tracking (None:
    unchanged; "" for an identity field: use the settings' value). Flushes; a change of
    tracking is audited (it is about readers' privacy)."""
    mailing_list = get_list(session, slug)
    if tracking is not None or track_opens is not None:
        before = {"tracking": mailing_list.tracking.value, "track_opens": mailing_list.track_opens}
        if tracking is not None:
            mailing_list.tracking = tracking
        if track_opens is not None:
            mailing_list.track_opens = track_opens
        after = {"tracking": mailing_list.tracking.value, "track_opens": mailing_list.track_opens}
        if after != before:
            audit.record(session, "list.tracking", f"list:{slug}", before=before, after=after)
    if name is not None:
        if not name.strip() or len(name.strip()) > MAX_NAME:
            raise InvalidInputError(f"list name must be 1 to {MAX_NAME} characters")
        mailing_list.name = name.strip()
    for field, value in (
        ("organization", organization),
        ("postal_address", postal_address),
        ("footer_note", footer_note),
    ):
        if value is not None:
            setattr(mailing_list, field, clean_identity(field, value))
    if archive is not None:
        mailing_list.archive = archive
    session.flush()
    return mailing_list


def clean_identity(field: str, value: str) -> str:
    """An organisation, postal address or note on one line (several lines are joined
    with ", "); InvalidInputError naming the option when too long or holding control
    characters."""
    lines = [" ".join(line.split()) for line in value.replace("\r", "\n").split("\n")]
    text = ", ".join(line for line in lines if line)
    option = "--" + field.replace("_", "-")
    if len(text) > MAX_IDENTITY:
        raise InvalidInputError(f"{option} is longer than {MAX_IDENTITY} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidInputError(f"{option} must be plain text without control characters")
    return text


def list_growth(
    session: Session, list_id: int, now: datetime, weeks: int = 8
) -> list[tuple[date, int, int]]:
    """(week's Monday, people who joined as confirmed members, people who left) for the
    last `weeks` weeks, oldest first."""
    first = (now - timedelta(days=now.weekday() + 7 * (weeks - 1))).date()
    start = datetime.combine(first, datetime.min.time(), tzinfo=now.tzinfo)
    rows = session.execute(
        select(Subscription.confirmed_at, Subscription.unsubscribed_at).where(
            Subscription.list_id == list_id,
            (Subscription.confirmed_at >= start) | (Subscription.unsubscribed_at >= start),
        )
    ).all()
    weeks_of = [first + timedelta(days=7 * n) for n in range(weeks)]
    joined = dict.fromkeys(weeks_of, 0)
    left = dict.fromkeys(weeks_of, 0)
    for confirmed_at, unsubscribed_at in rows:
        for moment, counts in ((confirmed_at, joined), (unsubscribed_at, left)):
            if moment is not None and moment >= start:
                day = moment.date()
                counts[day - timedelta(days=day.weekday())] += 1
    return [(week, joined[week], left[week]) for week in weeks_of]
