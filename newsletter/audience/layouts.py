"""The audience exports of other newsletter tools, and how their columns map to ours.

Each tool writes its own columns and its own words for who may be mailed. A layout
names the columns it is recognised by, what each of its columns means here, and how
its status values translate into one of four outcomes:

    subscribed     a confirmed member, mailed
    pending        never confirmed: kept, not mailed
    unsubscribed   opted out: kept as unsubscribed, never mailed again by an import
    suppressed     bounced, cleaned, blocklisted, complained: the address is suppressed

A file whose columns match no layout is read as ours (`email`, `name`, anything else
an attribute); a column mapping ("Header=field") maps or overrides columns in either case.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from newsletter.errors import InvalidInputError, Remedy


class RowStatus(enum.StrEnum):
    subscribed = "subscribed"
    pending = "pending"
    unsubscribed = "unsubscribed"
    suppressed = "suppressed"


# What a column can mean. Anything else is an attribute (`attr.<key>`) or ignored.
EMAIL = "email"
NAME = "name"
FIRST_NAME = "first_name"
LAST_NAME = "last_name"
STATUS = "status"  # a word: active, unsubscribed, cleaned…
UNSUBSCRIBED_AT = "unsubscribed_at"  # not empty: the person unsubscribed
CLEANED_AT = "cleaned_at"  # not empty: the address bounced (Mailchimp "cleaned")
EMAIL_DISABLED = "email_disabled"  # true: the person turned email off
SUBSCRIBED = "subscribed"  # false: the person is not subscribed to emails
ATTRIBUTES_JSON = "attributes"  # a JSON object of attributes (listmonk)
IGNORE = "ignore"
ATTRIBUTE_PREFIX = "attr."
FIELDS = (
    EMAIL,
    NAME,
    FIRST_NAME,
    LAST_NAME,
    STATUS,
    UNSUBSCRIBED_AT,
    CLEANED_AT,
    EMAIL_DISABLED,
    SUBSCRIBED,
    ATTRIBUTES_JSON,
    IGNORE,
)
STATUS_FIELDS = frozenset({STATUS, UNSUBSCRIBED_AT, CLEANED_AT, EMAIL_DISABLED, SUBSCRIBED})
_ATTRIBUTE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

# Status words of every tool below, lower-cased. A word that is not here makes the row
# an error: nobody is mailed on a guess.
STATUS_WORDS: Mapping[str, RowStatus] = {
    **dict.fromkeys(
        (
            "subscribed",
            "active",
            "enabled",
            "confirmed",
            "regular",
            "premium",
            "paid",
            "free",
            "comp",
            "gifted",
            "trialed",
            "churning",
            "past_due",
            "unpaid",
        ),
        RowStatus.subscribed,
    ),
    **dict.fromkeys(("pending", "unconfirmed", "unactivated", "not confirmed"), RowStatus.pending),
    **dict.fromkeys(
        (
            "unsubscribed",
            "inactive",
            "cancelled",
            "canceled",
            "disabled",
            "removed",
            "paused",
            "opted out",
            "opted-out",
        ),
        RowStatus.unsubscribed,
    ),
    **dict.fromkeys(
        (
            "cleaned",
            "bounced",
            "blocklisted",
            "blacklisted",
            "blocked",
            "complained",
            "complaint",
            "spam",
            "spammy",
            "marked as spam",
            "undeliverable",
            "suppressed",
        ),
        RowStatus.suppressed,
    ),
}
TRUE_WORDS = frozenset({"true", "yes", "1", "y", "t"})
FALSE_WORDS = frozenset({"false", "no", "0", "n", "f", ""})


@dataclass(frozen=True)
class Layout:
    """One tool's export: the columns that identify it and what its columns mean.

    `columns` maps lower-cased header names to a field, `attr.<key>` or `ignore`;
    `statuses` overrides STATUS_WORDS for words this tool uses differently;
    `file_statuses` gives every row of a file that has such a column that status
    (Mailchimp writes unsubscribed and cleaned people to files of their own).
    """

    name: str
    label: str
    identified_by: frozenset[str]
    columns: Mapping[str, str]
    statuses: Mapping[str, RowStatus] = field(default_factory=dict)
    file_statuses: Mapping[str, RowStatus] = field(default_factory=dict)

    def matches(self, header: set[str]) -> bool:
        return self.identified_by <= header

    def status_of(self, word: str) -> RowStatus | None:
        folded = " ".join(word.lower().replace("_", " ").split())
        return (
            self.statuses.get(folded)
            or STATUS_WORDS.get(folded)
            or STATUS_WORDS.get(folded.replace(" ", "_"))
        )


_MAILCHIMP_INTERNAL = (
    "member_rating",
    "latitude",
    "longitude",
    "gmtoff",
    "dstoff",
    "cc",
    "region",
    "last_changed",
    "leid",
    "euid",
    "unsub_campaign_id",
    "clean_campaign_id",
    "email_type",
)

LAYOUTS: tuple[Layout, ...] = (
    # Mailchimp writes one file per status: subscribed, unsubscribed (UNSUB_TIME) and
    # cleaned (CLEAN_TIME, bounced addresses).
    Layout(
        name="mailchimp",
        label="Mailchimp",
        identified_by=frozenset({"email address"}),
        columns={
            "email address": EMAIL,
            "first name": FIRST_NAME,
            "last name": LAST_NAME,
            "optin_time": "attr.optin_time",
            "optin_ip": "attr.optin_ip",
            "confirm_time": "attr.confirm_time",
            "confirm_ip": "attr.confirm_ip",
            "timezone": "attr.timezone",
            "tags": "attr.tags",
            "notes": "attr.notes",
            "unsub_time": "attr.unsubscribed_at",
            "unsub_reason": "attr.unsubscribe_reason",
            "clean_time": "attr.cleaned_at",
            **dict.fromkeys(_MAILCHIMP_INTERNAL, IGNORE),
        },
        # The column is there in the whole file, even where a time is missing.
        file_statuses={"unsub_time": RowStatus.unsubscribed, "clean_time": RowStatus.suppressed},
    ),
    # listmonk's "Export" of subscribers (cmd/subscribers.go): status is the
    # subscriber's, enabled, disabled or blocklisted.
    Layout(
        name="listmonk",
        label="listmonk",
        identified_by=frozenset({"uuid", "email", "name", "attributes", "status"}),
        columns={
            "uuid": IGNORE,
            "email": EMAIL,
            "name": NAME,
            "attributes": ATTRIBUTES_JSON,
            "status": STATUS,
            "created_at": "attr.signed_up_at",
            "updated_at": IGNORE,
        },
    ),
    # Substack's "Total email list" (email_disabled: the reader turned email off) and
    # its "Subscribers" export of paid, comp and gift subscriptions.
    Layout(
        name="substack",
        label="Substack",
        identified_by=frozenset({"email", "email_disabled"}),
        columns={
            "email": EMAIL,
            "email_disabled": EMAIL_DISABLED,
            "created_at": "attr.signed_up_at",
            "active_subscription": "attr.paid_subscription",
            "expiry": "attr.subscription_expiry",
            "plan": "attr.plan",
            "type": "attr.plan",
            "first_payment_at": "attr.first_payment_at",
            "prefer_digests": IGNORE,
            "stripe_connected_customer_id": IGNORE,
        },
    ),
    # Kit (ConvertKit): states active, inactive (never confirmed), cancelled, bounced,
    # complained.
    Layout(
        name="kit",
        label="Kit (ConvertKit)",
        identified_by=frozenset({"email_address"}),
        columns={
            "email_address": EMAIL,
            "first_name": FIRST_NAME,
            "last_name": LAST_NAME,
            "state": STATUS,
            "status": STATUS,
            "created_at": "attr.signed_up_at",
            "tags": "attr.tags",
            "id": IGNORE,
        },
        statuses={"inactive": RowStatus.pending},
    ),
    # Buttondown: one subscriber_type per person (regular, premium, unactivated,
    # unsubscribed, removed, spammy, undeliverable…).
    Layout(
        name="buttondown",
        label="Buttondown",
        identified_by=frozenset({"email", "subscriber_type"}),
        columns={
            "email": EMAIL,
            "subscriber_type": STATUS,
            "creation_date": "attr.signed_up_at",
            "notes": "attr.notes",
            "tags": "attr.tags",
            "metadata": ATTRIBUTES_JSON,
            "id": IGNORE,
            "secondary_id": IGNORE,
        },
    ),
    # Ghost members (Members → Export): subscribed_to_emails false means no newsletter.
    Layout(
        name="ghost",
        label="Ghost members",
        identified_by=frozenset({"email", "subscribed_to_emails"}),
        columns={
            "id": IGNORE,
            "email": EMAIL,
            "name": NAME,
            "note": "attr.note",
            "subscribed_to_emails": SUBSCRIBED,
            "complimentary_plan": "attr.complimentary_plan",
            "stripe_customer_id": IGNORE,
            "created_at": "attr.signed_up_at",
            "deleted_at": IGNORE,
            "labels": "attr.labels",
            "products": "attr.tiers",
            "tiers": "attr.tiers",
        },
    ),
)

# Sendy exports have no header row: "Name","Email", then custom fields; the status is
# in the file name Sendy gives each export.
SENDY = Layout(
    name="sendy",
    label="Sendy",
    identified_by=frozenset(),
    columns={"name": NAME, "email": EMAIL},
)
SENDY_FILE_STATUSES = (
    ("-active", RowStatus.subscribed),
    ("-unconfirmed", RowStatus.pending),
    ("-unsubscribed", RowStatus.unsubscribed),
    ("-bounced", RowStatus.suppressed),
    ("-marked-as-spam", RowStatus.suppressed),
)
OURS = Layout(name="csv", label="CSV", identified_by=frozenset({"email"}), columns={})


def recognise(header: Sequence[str]) -> Layout:
    """The layout whose identifying columns the header has; ours when none does."""
    folded = {column.strip().lower() for column in header if column.strip()}
    return next((layout for layout in LAYOUTS if layout.matches(folded)), OURS)


def sendy_status(file_name: str) -> RowStatus | None:
    """The status a Sendy export's file name says its people have."""
    stem = file_name.lower().rsplit(".", 1)[0]
    return next((status for suffix, status in SENDY_FILE_STATUSES if stem.endswith(suffix)), None)


_MAP = Remedy("give", "subscriber import", field="map")


def parse_mapping(text: str) -> dict[str, str]:
    """A column mapping, "Email Address=email,First Name=name,Plan=attr.plan,LEID=ignore",
    as {lower-cased header: field}. Raises InvalidInputError naming what is wrong."""
    mapping: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        column, equals, target = part.partition("=")
        column, target = column.strip(), target.strip()
        if not equals or not column or not target:
            raise InvalidInputError(
                f"column mapping: {part.strip()!r} must be 'Column=field'", remedy=_MAP
            )
        if target.lower() in FIELDS:
            target = target.lower()
        elif target.lower() in ("-", "skip"):
            target = IGNORE
        elif not target.startswith(ATTRIBUTE_PREFIX) or not _ATTRIBUTE_KEY.match(
            target[len(ATTRIBUTE_PREFIX) :]
        ):
            choices = ", ".join(FIELDS)
            raise InvalidInputError(
                f"column mapping: {target!r} for column {column!r} is not a field: use one "
                f"of {choices} or attr.<name> (letters, digits, '-' and '_')",
                remedy=_MAP,
            )
        mapping[column.lower()] = target
    return mapping


def parse_status(text: str) -> RowStatus:
    """A status given for every row ("pending") as a RowStatus; InvalidInputError
    naming the choices."""
    try:
        return RowStatus(text.strip().lower())
    except ValueError as exc:
        choices = ", ".join(status.value for status in RowStatus)
        raise InvalidInputError(
            f"status: must be one of {choices}, not {text!r}",
            remedy=Remedy("give", "subscriber import", field="status"),
        ) from exc


def is_true(value: str) -> bool | None:
    """True, False, or None when the text is neither."""
    folded = value.strip().lower()
    if folded in TRUE_WORDS:
        return True
    if folded in FALSE_WORDS:
        return False
    return None
