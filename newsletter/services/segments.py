"""Segments: saved filters over subscribers, compiled to SQLAlchemy expressions.

The rules and their one-line form are audience/segment_rules.py's; here they become a
condition over `Subscriber` (never raw SQL), the same on PostgreSQL and SQLite:
attributes are JSON, read with SQLAlchemy's JSON operators, and a value is compared
as a number or a date only when it looks like one (so "n/a" in an age column is no
error, just no match). Engagement is tracking/engagement.py's (human events only).

A campaign's segment is compiled when its run fans out (`segment_filter`, passed to
campaigns/runs.py): who matches *then* gets a ledger row; nobody else does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    String,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.orm import Session

from newsletter.accounts import audit
from newsletter.audience.lists import get_list
from newsletter.audience.models import (
    MailingList,
    Segment,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
)
from newsletter.audience.segment_rules import (
    Condition,
    Group,
    Node,
    Not,
    days,
    format_line,
    parse_line,
    parse_rules,
    to_json,
)
from newsletter.campaigns.models import Campaign
from newsletter.campaigns.service import update_campaign
from newsletter.db import utcnow
from newsletter.errors import InvalidInputError, NotFoundError
from newsletter.runs.ledger import AudienceCount, audience_count
from newsletter.sequences.models import Sequence
from newsletter.tracking.engagement import Engagement, engaged_subscribers

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,199}$")
_NUMERIC = r"^\s*-?[0-9]+(\.[0-9]+)?\s*$"
_DATE_PREFIX = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
_KIND: dict[str, Engagement] = {
    "opened_within": "open",
    "clicked_within": "click",
    "engaged_within": "any",
}

# --- compiling -------------------------------------------------------------------------


def compile_rules(node: Node, dialect: str, now: datetime | None = None) -> ColumnElement[bool]:
    """The condition over `Subscriber` that `node` describes; relative times ("the
    last 30 days") are read from `now`. `dialect` is the session's ("postgresql" or
    "sqlite"): the few JSON type checks differ."""
    return _Compiler(dialect, now or utcnow()).node(node)


class _Compiler:
    def __init__(self, dialect: str, now: datetime) -> None:
        self.dialect = dialect
        self.now = now

    def node(self, node: Node) -> ColumnElement[bool]:
        if isinstance(node, Group):
            parts = [self.node(rule) for rule in node.rules]
            return and_(true(), *parts) if node.match == "all" else or_(false(), *parts)
        if isinstance(node, Not):
            return not_(self.node(node.rule))
        return self.condition(node)

    def condition(self, c: Condition) -> ColumnElement[bool]:
        if c.field.startswith("attr."):
            return self.attribute(c.field[5:], c.op, c.value)
        if c.field == "list":
            return self.equality(c, lambda slug: _member(str(slug)))
        if c.field.startswith("list."):
            slug = c.field[5:]
            return self.equality(c, lambda status: _member(slug, str(status)))
        if c.field == "status":
            return self.equality(c, lambda status: _member(None, str(status)))
        if c.field == "bounce":
            return self.equality(c, lambda state: _bounce(str(state)))
        if c.field == "timezone":
            return self.timezone(c)
        if c.field == "subscribed_since":
            return Subscriber.created_at >= self.instant(str(c.value))
        if c.field == "subscribed_before":
            return Subscriber.created_at < self.instant(str(c.value))
        since = self.now - timedelta(days=days(str(c.value)))
        return Subscriber.id.in_(engaged_subscribers(since, _KIND[c.field]))

    def equality(
        self, c: Condition, matches: Callable[[Any], ColumnElement[bool]]
    ) -> ColumnElement[bool]:
        if c.op == "in":
            assert isinstance(c.value, tuple)
            return or_(false(), *(matches(v) for v in c.value))
        return matches(c.value) if c.op == "eq" else not_(matches(c.value))

    def instant(self, value: str) -> datetime:
        if value.endswith("d"):
            return self.now - timedelta(days=days(value))
        return datetime.combine(date.fromisoformat(value), time(), UTC)

    def timezone(self, c: Condition) -> ColumnElement[bool]:
        zone = Subscriber.timezone
        if c.op == "present":
            return and_(zone.is_not(None), zone != "")
        if c.op == "absent":
            return or_(zone.is_(None), zone == "")
        if c.op == "in":
            assert isinstance(c.value, tuple)
            return zone.in_([str(v) for v in c.value])
        if c.op == "eq":
            return zone == str(c.value)
        return or_(zone.is_(None), zone != str(c.value))

    # Attributes: JSON values read as text (numbers as their digits), then compared
    # as text, as numbers (only text that is a number) or as dates (YYYY-MM-DD…).
    def attribute(self, key: str, op: str, value: Any) -> ColumnElement[bool]:
        text = cast(Subscriber.attributes[key].as_string(), String)
        present = and_(text.is_not(None), text != "")
        if op == "present":
            return present
        if op == "absent":
            return not_(present)
        if op == "contains":
            return func.lower(text).contains(str(value).lower(), autoescape=True)
        if op == "in":
            return or_(false(), *(self.equals(key, text, v) for v in value))
        if op == "eq":
            return self.equals(key, text, value)
        if op == "ne":
            return or_(text.is_(None), not_(self.equals(key, text, value)))
        if isinstance(value, str):  # a date (checked by the rules)
            day = func.substr(text, 1, 10)
            operand: Any = case((text.regexp_match(_DATE_PREFIX), day), else_=None)
        else:
            operand = self.number(text)
        compared: ColumnElement[bool] = {
            "gt": operand > value,
            "gte": operand >= value,
            "lt": operand < value,
            "lte": operand <= value,
        }[op]
        return compared

    def equals(self, key: str, text: Any, value: Any) -> ColumnElement[bool]:
        if isinstance(value, bool):
            return self.boolean(key, value)
        if isinstance(value, int | float):
            return and_(text.regexp_match(_NUMERIC), self.number(text) == value)
        equal: ColumnElement[bool] = text == value
        return equal

    def number(self, text: Any) -> Any:
        return case((text.regexp_match(_NUMERIC), cast(text, Float)), else_=None)

    def boolean(self, key: str, value: bool) -> ColumnElement[bool]:
        if self.dialect == "postgresql":
            element = Subscriber.attributes[key]
            return and_(
                func.jsonb_typeof(element) == "boolean",
                element.as_string() == ("true" if value else "false"),
            )
        path = '$."' + key + '"'
        return func.json_type(Subscriber.attributes, path) == ("true" if value else "false")


def _member(slug: str | None, status: str = SubscriptionStatus.confirmed.value) -> Any:
    """Whether the subscriber has a subscription in `status` (to the list `slug`, or
    to any list)."""
    query = select(Subscription.id).where(
        Subscription.subscriber_id == Subscriber.id,
        Subscription.status == SubscriptionStatus(status),
    )
    if slug is not None:
        query = query.join(MailingList, MailingList.id == Subscription.list_id).where(
            MailingList.slug == slug
        )
    return query.exists()


def _bounce(state: str) -> ColumnElement[bool]:
    suppressed = exists().where(Suppression.email == Subscriber.email)
    soft = func.coalesce(Subscriber.soft_bounces, 0) > 0
    if state == "suppressed":
        return suppressed
    if state == "soft":
        return and_(soft, not_(suppressed))
    return and_(not_(soft), not_(suppressed))


def dialect_of(session: Session) -> str:
    return session.get_bind().dialect.name


def segment_filter(session: Session, segment_id: int) -> ColumnElement[bool]:
    """The saved segment's condition as it reads now (for campaigns/runs.py)."""
    segment = session.get(Segment, segment_id)
    if segment is None:
        raise NotFoundError(f"segment {segment_id} does not exist")
    return compile_rules(parse_rules(segment.rules), dialect_of(session))


# --- saved segments ------------------------------------------------------------------


def read_rules(rules: dict[str, Any] | str) -> Node:
    """Rules given as JSON (a dict) or as the one-line form (a str), checked."""
    return parse_line(rules) if isinstance(rules, str) else parse_rules(rules)


def _check_lists(session: Session, node: Node) -> None:
    """Every list a rule names exists (a typo would silently match nobody)."""
    if isinstance(node, Group):
        for rule in node.rules:
            _check_lists(session, rule)
    elif isinstance(node, Not):
        _check_lists(session, node.rule)
    elif node.field == "list" or node.field.startswith("list."):
        values = node.value if isinstance(node.value, tuple) else (node.value,)
        for slug in values if node.field == "list" else (node.field[5:],):
            if session.scalar(select(MailingList.id).where(MailingList.slug == slug)) is None:
                raise InvalidInputError(f"rules: no list {slug!r} (in {format_line(node)})")


def get_segment(session: Session, ref: str | int) -> Segment:
    """A segment by slug or id."""
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        segment = session.get(Segment, int(ref))
    else:
        segment = session.scalar(select(Segment).where(Segment.slug == ref))
    if segment is None:
        raise NotFoundError(f"no segment {ref}")
    return segment


def saved_rules(session: Session, slug: str) -> dict[str, Any] | None:
    """The rules of the segment `slug`, or None when there is no such segment."""
    return session.scalar(select(Segment.rules).where(Segment.slug == slug))


def _audited(segment: Segment) -> dict[str, Any]:
    return {
        "slug": segment.slug,
        "name": segment.name,
        "description": segment.description,
        "rules": segment.rules,
    }


def create_segment(
    session: Session,
    slug: str,
    name: str,
    rules: dict[str, Any] | str,
    description: str = "",
) -> Segment:
    """A saved segment; rules are checked (and lists they name must exist)."""
    if not _SLUG.match(slug) or slug == "count":  # /segments/count is the live count
        raise InvalidInputError("slug: lower-case letters, digits and '-', at most 200")
    if not name.strip():
        raise InvalidInputError("name: must not be empty")
    if session.scalar(select(Segment.id).where(Segment.slug == slug)) is not None:
        raise InvalidInputError(f"slug: a segment {slug!r} exists already")
    node = read_rules(rules)
    _check_lists(session, node)
    segment = Segment(
        slug=slug, name=name.strip()[:300], description=description[:2000], rules=to_json(node)
    )
    session.add(segment)
    session.flush()
    audit.record(session, "segment.create", f"segment:{segment.id}", after=_audited(segment))
    return segment


def update_segment(
    session: Session,
    ref: str | int,
    *,
    name: str | None = None,
    rules: dict[str, Any] | str | None = None,
    description: str | None = None,
) -> Segment:
    """Change a segment; campaigns using it see the change at their next fan-out."""
    segment = get_segment(session, ref)
    before = _audited(segment)
    if name is not None:
        if not name.strip():
            raise InvalidInputError("name: must not be empty")
        segment.name = name.strip()[:300]
    if description is not None:
        segment.description = description[:2000]
    if rules is not None:
        node = read_rules(rules)
        _check_lists(session, node)
        segment.rules = to_json(node)
    session.flush()
    after = _audited(segment)
    if after != before:
        audit.record(session, "segment.update", f"segment:{segment.id}", before=before, after=after)
    return segment


def delete_segment(session: Session, ref: str | int) -> None:
    """Remove a segment no campaign uses."""
    segment = get_segment(session, ref)
    users = session.scalars(select(Campaign.id).where(Campaign.segment_id == segment.id)).all()
    if users:
        raise InvalidInputError(
            f"segment {segment.slug!r} is used by campaign(s) {', '.join(map(str, users))}"
        )
    drips = session.scalars(select(Sequence.id).where(Sequence.segment_id == segment.id)).all()
    if drips:
        raise InvalidInputError(
            f"segment {segment.slug!r} is used by sequence(s) {', '.join(map(str, drips))}"
        )
    before = _audited(segment)
    session.delete(segment)
    session.flush()
    audit.record(session, "segment.delete", f"segment:{segment.id}", before=before)


def list_segments(session: Session, after_id: int = 0, limit: int | None = None) -> list[Segment]:
    query = select(Segment).where(Segment.id > after_id).order_by(Segment.id)
    return list(session.scalars(query.limit(limit) if limit else query))


def count_matching(
    session: Session, rules: dict[str, Any] | str | Node, list_slugs: list[str] | None = None
) -> int:
    """How many subscribers match the rules now (only confirmed members of the lists,
    when lists are given): the live count."""
    node = rules if isinstance(rules, Condition | Group | Not) else read_rules(rules)
    where = compile_rules(node, dialect_of(session))
    if list_slugs:
        list_ids = [get_list(session, slug).id for slug in list_slugs]
        return audience_count(session, list_ids, where).members
    return session.scalar(select(func.count(Subscriber.id)).where(where)) or 0


def campaign_recipients(session: Session, campaign_id: int) -> AudienceCount:
    """Who a run of the campaign started now would mail: its lists' confirmed members
    matching its segment (if any), of whom some are suppressed."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFoundError(f"no campaign {campaign_id}")
    where = None
    if campaign.segment_id is not None:
        where = segment_filter(session, campaign.segment_id)
    return audience_count(session, [ml.id for ml in campaign.lists], where)


def describe_segment(session: Session, segment: Segment, count: bool = False) -> dict[str, Any]:
    """A segment as plain data (CLI --json, API); `count` adds the live count."""
    out: dict[str, Any] = {
        "id": segment.id,
        "slug": segment.slug,
        "name": segment.name,
        "description": segment.description,
        "rules": segment.rules,
        "line": format_line(parse_rules(segment.rules)),
        "created_at": segment.created_at.isoformat(),
        "updated_at": segment.updated_at.isoformat(),
    }
    if count:
        out["count"] = count_matching(session, segment.rules)
    return out


def choose_campaign_segment(
    session: Session, campaign_id: int, slug: str = "", rules: dict[str, Any] | str = ""
) -> str | None:
    """The composer's choice for a draft: rules given (one line, or JSON built from the
    rule rows) become the campaign's own saved segment (`campaign-<id>`, created or
    updated); else the saved segment `slug`; else none. Returns the slug used."""
    if isinstance(rules, str):
        rules = rules.strip()
    if rules:
        own = f"campaign-{campaign_id}"
        name = f"Audience of campaign {campaign_id}"
        if saved_rules(session, own) is None:
            create_segment(session, own, name, rules)
        else:
            update_segment(session, own, rules=rules)
        slug = own
    update_campaign(session, campaign_id, segment=slug)
    return slug or None
