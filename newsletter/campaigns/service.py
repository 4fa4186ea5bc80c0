"""Creating, scheduling and describing campaigns; choosing their articles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.audience.lists import get_list
from newsletter.campaigns.models import Campaign, CampaignStatus, ContentKind, Run
from newsletter.content.models import Article
from newsletter.content.series import get_article, get_series, published_in_order
from newsletter.db import utcnow
from newsletter.delivery.models import Delivery, DeliveryStatus
from newsletter.errors import InvalidInputError, NotFoundError
from newsletter.rendering.render import EMAIL_TEMPLATES, check_templates


@dataclass(frozen=True)
class ContentSpec:
    """Which articles a campaign sends: exactly one of the three."""

    slugs: tuple[str, ...] = ()
    latest: int = 0
    series: str = ""

    def kind_and_args(self) -> tuple[ContentKind, dict[str, Any]]:
        chosen = [bool(self.slugs), bool(self.latest), bool(self.series)]
        if sum(chosen) != 1:
            raise InvalidInputError(
                "choose the content with exactly one of --articles, --latest, --series"
            )
        if self.slugs:
            return ContentKind.articles, {"slugs": list(self.slugs)}
        if self.latest:
            if self.latest < 1:
                raise InvalidInputError("--latest must be at least 1")
            return ContentKind.latest, {"count": self.latest}
        return ContentKind.series, {"series": self.series}


def create_campaign(
    session: Session,
    *,
    name: str,
    list_slugs: list[str],
    subject: str,
    content: ContentSpec,
    template: str = "digest",
    preheader: str = "",
) -> Campaign:
    """A draft campaign; lists, articles and template are checked now, not at send time."""
    if not name.strip():
        raise InvalidInputError("--name must not be empty")
    if not subject.strip():
        raise InvalidInputError("--subject must not be empty")
    if "\n" in subject or "\r" in subject:
        raise InvalidInputError("--subject must be one line")
    if template not in EMAIL_TEMPLATES:
        raise InvalidInputError(f"--template must be one of {', '.join(EMAIL_TEMPLATES)}")
    if not list_slugs:
        raise InvalidInputError("name at least one --list")
    kind, args = content.kind_and_args()
    campaign = Campaign(
        name=name.strip(),
        subject=subject.strip(),
        preheader=preheader,
        template=template,
        content_kind=kind,
        content_args=args,
        lists=[get_list(session, slug) for slug in dict.fromkeys(list_slugs)],
    )
    if not select_articles(session, campaign):
        raise InvalidInputError("the chosen content has no published article")
    check_templates(template, campaign.subject, preheader)
    session.add(campaign)
    session.flush()
    return campaign


def select_articles(session: Session, campaign: Campaign) -> list[Article]:
    """The published articles a campaign sends now, in the order they appear."""
    args = campaign.content_args
    now = utcnow()
    if campaign.content_kind is ContentKind.articles:
        articles = [get_article(session, slug) for slug in args["slugs"]]
        return [a for a in articles if a.published_at is not None and a.published_at <= now]
    if campaign.content_kind is ContentKind.latest:
        query = (
            select(Article)
            .where(Article.published_at.is_not(None), Article.published_at <= now)
            .order_by(Article.published_at.desc(), Article.id.desc())
            .limit(int(args["count"]))
        )
        return list(session.scalars(query))
    return published_in_order(session, get_series(session, args["series"]).id)


def get_campaign(session: Session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFoundError(f"no campaign {campaign_id}")
    return campaign


def parse_local_time(value: str, zone: str) -> datetime:
    """An ISO time read in `zone` (unless it carries an offset), as UTC."""
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInputError(f"--tz: unknown time zone {zone!r}") from exc
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInputError(
            f"--at: {value!r} is not an ISO time like 2026-12-01T09:00"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(UTC)


def schedule_campaign(
    session: Session, campaign_id: int, send_at: datetime, timezone: str = "UTC"
) -> Campaign:
    """Mark a draft (or rescheduled) campaign to start at `send_at` (UTC)."""
    campaign = get_campaign(session, campaign_id)
    if campaign.status not in (CampaignStatus.draft, CampaignStatus.scheduled):
        raise InvalidInputError(
            f"campaign {campaign_id} is {campaign.status.value}; only a draft or scheduled "
            "campaign can be scheduled"
        )
    campaign.send_at = send_at
    campaign.timezone = timezone
    campaign.status = CampaignStatus.scheduled
    session.flush()
    return campaign


@dataclass(frozen=True)
class RunCounts:
    run_id: int
    status: str
    occurrence_at: datetime
    recipients: int
    by_status: dict[str, int]
    error: str

    def as_json(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "status": self.status,
            "occurrence_at": self.occurrence_at.isoformat(),
            "recipients": self.recipients,
            "error": self.error,
            **{s.value: self.by_status.get(s.value, 0) for s in DeliveryStatus},
        }


def run_counts(session: Session, run: Run) -> RunCounts:
    rows = session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.run_id == run.id)
        .group_by(Delivery.status)
    ).all()
    return RunCounts(
        run_id=run.id,
        status=run.status.value,
        occurrence_at=run.occurrence_at,
        recipients=run.recipients,
        by_status={status.value: count for status, count in rows},
        error=run.error,
    )


def describe_campaign(session: Session, campaign: Campaign) -> dict[str, Any]:
    """A campaign as plain data (for `campaigns show` and --json)."""
    return {
        "id": campaign.id,
        "name": campaign.name,
        "status": campaign.status.value,
        "subject": campaign.subject,
        "template": campaign.template,
        "content": {"kind": campaign.content_kind.value, **campaign.content_args},
        "lists": [ml.slug for ml in campaign.lists],
        "send_at": campaign.send_at.isoformat() if campaign.send_at else None,
        "timezone": campaign.timezone,
        "articles": [a.slug for a in select_articles(session, campaign)],
        "runs": [run_counts(session, run).as_json() for run in campaign.runs],
    }
