"""A subscriber's own preferences: name, time zone, lists, and paused sequences.

Whoever holds a preferences link (mailed only to the subscriber) may change
everything here, including joining a double opt-in list at once: the link already
proves the mailbox is theirs.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.accounts import audit
from newsletter.audience.addresses import email_hash, normalise_email
from newsletter.audience.models import (
    MailingList,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from newsletter.audience.signup import FieldError, clean_name
from newsletter.audience.subscriptions import join, unsubscribe
from newsletter.content.models import Series
from newsletter.errors import NotFoundError
from newsletter.sequences.models import Enrollment, EnrollmentStatus, Sequence
from newsletter.tracking.policy import describe, effective

SOURCE = "preferences"
MAX_TIMEZONE = 64
_PAUSABLE = (EnrollmentStatus.active, EnrollmentStatus.caught_up)


@dataclass(frozen=True)
class ListChoice:
    slug: str
    name: str
    list_id: int
    status: SubscriptionStatus | None  # None: never subscribed
    tracking: str = ""  # how the list counts opens and clicks (policy.describe)

    @property
    def subscribed(self) -> bool:
        return self.status is SubscriptionStatus.confirmed


@dataclass(frozen=True)
class EnrollmentChoice:
    enrollment_id: int
    series_title: str
    list_name: str
    status: EnrollmentStatus

    @property
    def paused(self) -> bool:
        return self.status is EnrollmentStatus.paused


@dataclass(frozen=True)
class Preferences:
    """What the preferences page shows: every list, and every enrollment not stopped."""

    email: str
    name: str
    timezone: str | None
    lists: list[ListChoice]
    enrollments: list[EnrollmentChoice]
    no_tracking: bool = False  # "don't track me"


@dataclass(frozen=True)
class PreferencesChange:
    """A validated submission of the preferences form."""

    name: str
    timezone: str | None
    list_slugs: frozenset[str]  # the lists wanted; every other list is left
    paused_enrollments: frozenset[int]  # enrollment ids to pause; every other resumes
    no_tracking: bool = False


def validate_timezone(value: str) -> str | None:
    """An IANA time zone name (None for empty); FieldError("timezone") otherwise."""
    value = value.strip()
    if not value:
        return None
    try:
        if len(value) > MAX_TIMEZONE:
            raise ValueError(value)
        ZoneInfo(value)
    except (ValueError, ZoneInfoNotFoundError) as exc:
        raise FieldError("timezone", f"unknown time zone {value!r}") from exc
    return value


def parse_preferences(
    name: str,
    timezone: str,
    list_slugs: Collection[str],
    paused: Collection[str],
    no_tracking: bool = False,
) -> PreferencesChange:
    """The form's fields checked; FieldError naming the first bad one."""
    try:
        paused_ids = frozenset(int(value) for value in paused)
    except ValueError as exc:
        raise FieldError("paused", "not a sequence of ours") from exc
    return PreferencesChange(
        name=clean_name(name),
        timezone=validate_timezone(timezone),
        list_slugs=frozenset(list_slugs),
        paused_enrollments=paused_ids,
        no_tracking=no_tracking,
    )


def load_preferences(session: Session, subscriber_id: int) -> Preferences:
    """The subscriber's preferences; NotFoundError when there is no such subscriber."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise NotFoundError("no such subscriber")
    return Preferences(
        email=subscriber.email,
        name=subscriber.name,
        timezone=subscriber.timezone,
        lists=_list_choices(session, subscriber_id),
        enrollments=_enrollment_choices(session, subscriber_id),
        no_tracking=subscriber.no_tracking,
    )


def _list_choices(session: Session, subscriber_id: int) -> list[ListChoice]:
    """The public lists, and the private ones the subscriber is (or was) on: a private
    list is neither shown to nor joinable by anyone else."""
    rows = session.execute(
        select(MailingList, Subscription.status)
        .outerjoin(
            Subscription,
            (Subscription.list_id == MailingList.id)
            & (Subscription.subscriber_id == subscriber_id),
        )
        .where(MailingList.public | Subscription.id.is_not(None))
        .order_by(MailingList.name, MailingList.id)
    ).all()
    return [
        ListChoice(
            ml.slug, ml.name, ml.id, status, describe(effective(ml.tracking, ml.track_opens))
        )
        for ml, status in rows
    ]


def _enrollment_choices(session: Session, subscriber_id: int) -> list[EnrollmentChoice]:
    rows = session.execute(
        select(Enrollment.id, Series.title, MailingList.name, Enrollment.status)
        .join(Sequence, Sequence.id == Enrollment.sequence_id)
        .join(Series, Series.id == Sequence.series_id)
        .join(MailingList, MailingList.id == Sequence.list_id)
        .where(
            Enrollment.subscriber_id == subscriber_id,
            Enrollment.status != EnrollmentStatus.stopped,
        )
        .order_by(Series.title, Enrollment.id)
    ).all()
    return [EnrollmentChoice(*row) for row in rows]


def apply_preferences(session: Session, subscriber_id: int, change: PreferencesChange) -> None:
    """Make the subscriber's state what the form says, and flush; the caller commits.

    A ticked list is joined (confirmed), an unticked confirmed one is left; a list
    pending confirmation stays pending unless ticked. Only this subscriber's own
    enrollments are touched: ticked ones pause, unticked paused ones resume. Saving
    an unchanged form changes nothing. NotFoundError when there is no such subscriber.
    """
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise NotFoundError("no such subscriber")
    subscriber.name = change.name
    subscriber.timezone = change.timezone
    subscriber.no_tracking = change.no_tracking
    for choice in _list_choices(session, subscriber_id):
        if choice.slug in change.list_slugs and not choice.subscribed:
            join(session, subscriber_id, choice.list_id, SOURCE)
        elif choice.slug not in change.list_slugs and choice.subscribed:
            unsubscribe(session, subscriber_id, choice.list_id, SOURCE)
    _pause_or_resume(session, subscriber_id, change.paused_enrollments)
    session.flush()


def _pause_or_resume(session: Session, subscriber_id: int, paused: frozenset[int]) -> None:
    enrollments = session.scalars(
        select(Enrollment).where(
            Enrollment.subscriber_id == subscriber_id,
            Enrollment.status != EnrollmentStatus.stopped,
        )
    )
    for enrollment in enrollments:
        if enrollment.id in paused and enrollment.status in _PAUSABLE:
            enrollment.status = EnrollmentStatus.paused
        elif enrollment.id not in paused and enrollment.status is EnrollmentStatus.paused:
            # The scheduler finds out whether it is due or has everything (caught up).
            enrollment.status = EnrollmentStatus.active


def set_tracking(session: Session, email: str, track: bool) -> str:
    """Record a reader's "don't track me" (`track` False) or undo it; the address as
    stored. Audited by address hash; flushes. NotFoundError for an unknown address."""
    address = normalise_email(email)
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == address))
    if subscriber is None:
        raise NotFoundError(f"no subscriber {address}")
    if subscriber.no_tracking == (not track):
        return address
    subscriber.no_tracking = not track
    audit.record(
        session,
        "subscriber.tracking",
        f"email_hash:{email_hash(address)}",
        detail={"track": track},
    )
    session.flush()
    return address
