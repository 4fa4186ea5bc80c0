"""Signing up through the public form, without telling anyone who is subscribed.

The form answers the same whatever the address's state; what differs is only what
happens in the database and in the address's own mailbox:

| state of the address (per list)   | double opt-in list        | single opt-in list |
|-----------------------------------|---------------------------|--------------------|
| new                               | unconfirmed + confirm mail | confirmed          |
| unconfirmed (pending)             | confirm mail again         | confirmed          |
| confirmed                         | nothing                    | nothing            |
| unsubscribed                      | nothing                    | nothing            |
| suppressed or forgotten           | nothing at all, no row     | nothing at all     |

A form anyone can post must not re-subscribe someone who left, nor mail someone
who bounced, complained or asked to be forgotten; a reader who left rejoins from
the preferences page of any email we sent them (that link proves the mailbox).
An existing subscriber's name is never changed from the form, so strangers cannot
put words into the greeting of someone else's newsletter.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter import metrics
from newsletter.audience.addresses import forgotten_hashes, normalise_email
from newsletter.audience.models import (
    MailingList,
    OptIn,
    Subscriber,
    SubscriptionStatus,
    Suppression,
)
from newsletter.audience.subscriptions import add_subscription, confirm_pending
from newsletter.errors import InvalidInputError
from newsletter.events.outbox import emit

MAX_NAME = 300
MAX_LISTS = 50
SOURCE = "signup form"


class FieldError(InvalidInputError):
    """One field of a form was rejected; `field` names it (email, name, list, timezone…)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


@dataclass(frozen=True)
class SignupRequest:
    """A well-formed signup: a canonical address, a clean name, one or more slugs."""

    email: str
    name: str
    list_slugs: tuple[str, ...]
    typed: str = ""  # the address as typed (matches hashes left before canonical spelling)


@dataclass(frozen=True)
class ListToConfirm:
    list_id: int
    list_name: str


@dataclass(frozen=True)
class Confirmation:
    """The confirmation email a signup calls for: one link per list to confirm."""

    subscriber_id: int
    email: str
    lists: tuple[ListToConfirm, ...]


def parse_signup(email: str, name: str, list_slugs: Sequence[str]) -> SignupRequest:
    """The signup as we store it; FieldError naming the first bad field."""
    try:
        address = normalise_email(email)
    except InvalidInputError as exc:
        raise FieldError("email", f"this is not a valid email address ({exc})") from exc
    if not address.isascii():
        # We do not speak SMTPUTF8: such an address could never get its confirmation.
        raise FieldError("email", "we cannot send to addresses with non-ASCII characters")
    return SignupRequest(address, clean_name(name), _clean_slugs(list_slugs), email.strip())


def clean_name(name: str) -> str:
    """The name stripped; FieldError("name") when too long or holding control codes."""
    name = name.strip()
    if len(name) > MAX_NAME:
        raise FieldError("name", f"longer than {MAX_NAME} characters")
    if any(unicodedata.category(char).startswith("C") for char in name):
        raise FieldError("name", "contains line breaks or control characters")
    return name


def _clean_slugs(list_slugs: Sequence[str]) -> tuple[str, ...]:
    slugs = tuple(dict.fromkeys(s.strip() for s in list_slugs if s.strip()))
    if not slugs:
        raise FieldError("list", "choose at least one list")
    if len(slugs) > MAX_LISTS:
        raise FieldError("list", f"at most {MAX_LISTS} lists at once")
    return slugs


def find_lists(session: Session, slugs: Sequence[str]) -> list[MailingList]:
    """The public lists with these slugs, in that order; FieldError naming an unknown
    one (a private list is unknown to strangers: the same answer, nothing to learn)."""
    found = {
        ml.slug: ml
        for ml in session.scalars(
            select(MailingList).where(MailingList.slug.in_(slugs), MailingList.public)
        )
    }
    for slug in slugs:
        if slug not in found:
            raise FieldError("list", f"there is no list '{slug}'")
    return [found[slug] for slug in slugs]


def is_suppressed(session: Session, address: str, typed: str = "") -> bool:
    """True when the canonical address, or a hash a forgotten person left (of it, or of
    the spelling `typed`), is on the suppression list."""
    hashes = forgotten_hashes(typed or address)
    match = or_(Suppression.email == address, Suppression.email_hash.in_(hashes))
    return session.scalar(select(Suppression.id).where(match).limit(1)) is not None


def _subscriber_for(session: Session, address: str, name: str) -> Subscriber:
    """The subscriber with this address, created (with this name) when there is none."""
    existing = session.scalar(select(Subscriber).where(Subscriber.email == address))
    if existing is not None:
        return existing
    subscriber = Subscriber(email=address, name=name, attributes={})
    try:
        with session.begin_nested():
            session.add(subscriber)
    except IntegrityError:
        # Two signups of one new address at once: the other one created it.
        winner = session.scalar(select(Subscriber).where(Subscriber.email == address))
        if winner is None:
            raise
        return winner
    emit(session, "subscriber.created", {"subscriber_id": subscriber.id, "email": address})
    return subscriber


def request_subscription(
    session: Session, request: SignupRequest, lists: Sequence[MailingList]
) -> Confirmation | None:
    """Record the signup (see the module's table) and flush; the caller commits.

    Returns the confirmation email to send after the commit, or None when nobody is
    to be mailed.
    """
    if is_suppressed(session, request.email, request.typed):
        metrics.count_signup("suppressed")
        return None
    subscriber = _subscriber_for(session, request.email, request.name)
    to_confirm = []
    joined = False
    for mailing_list in lists:
        subscription = add_subscription(
            session, subscriber.id, mailing_list.id, SubscriptionStatus.unconfirmed, SOURCE
        )
        if subscription.status is not SubscriptionStatus.unconfirmed:
            continue
        if mailing_list.opt_in is OptIn.single:
            confirm_pending(session, subscriber.id, mailing_list.id)
            joined = True
        else:
            to_confirm.append(ListToConfirm(mailing_list.id, mailing_list.name))
    session.flush()
    metrics.count_signup("pending" if to_confirm else "confirmed" if joined else "unchanged")
    if not to_confirm:
        return None
    return Confirmation(subscriber.id, subscriber.email, tuple(to_confirm))
