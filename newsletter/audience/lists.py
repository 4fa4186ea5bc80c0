"""Mailing lists: creating them, finding them by slug, and counting their members."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.accounts import audit
from newsletter.audience.models import MailingList, OptIn, Subscription, SubscriptionStatus
from newsletter.errors import InvalidInputError, NotFoundError

SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_SLUG = 200
MAX_NAME = 300
MAX_DESCRIPTION = 2000


def create_list(
    session: Session,
    slug: str,
    name: str,
    opt_in: OptIn = OptIn.double,
    description: str = "",
    public: bool = False,
) -> MailingList:
    """Add a mailing list and flush it (the caller commits). Only a `public` list is
    offered on the sign-up form and on preferences pages; a private one is joined
    only through staff (imports, the API).

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
        slug=slug, name=name, opt_in=opt_in, description=description, public=public
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
    """The list with this slug; NotFoundError (saying how to create it) otherwise."""
    mailing_list = session.scalar(select(MailingList).where(MailingList.slug == slug))
    if mailing_list is None:
        raise NotFoundError(
            f"no list '{slug}'; create it with `newsletter lists create {slug} --name …`"
        )
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
