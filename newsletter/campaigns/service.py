"""Creating, scheduling and describing campaigns; choosing their articles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from newsletter.audience.lists import get_list
from newsletter.campaigns.models import Campaign, CampaignStatus, ContentKind, Run
from newsletter.campaigns.templates import check_campaign_template
from newsletter.content.models import Article
from newsletter.content.series import get_article, get_series, published_in_order
from newsletter.db import utcnow
from newsletter.delivery.ledger import delivery_counts
from newsletter.delivery.models import DeliveryStatus
from newsletter.errors import InvalidInputError, NotFoundError
from newsletter.recurrence import check_cron, zone


@dataclass(frozen=True)
class ContentSpec:
    """Which articles a campaign sends: exactly one of the content choices.

    `latest` also limits `since_last` and `tag` (default 10 for those)."""

    slugs: tuple[str, ...] = ()
    latest: int = 0
    series: str = ""
    since_last: bool = False
    tag: str = ""

    def kind_and_args(self) -> tuple[ContentKind, dict[str, Any]]:
        chosen = [bool(self.slugs), bool(self.series), self.since_last, bool(self.tag)]
        if (
            sum(chosen) > 1
            or (sum(chosen) == 0 and not self.latest)
            or (self.latest and (self.slugs or self.series))
        ):
            raise InvalidInputError(
                "choose the content with exactly one of --articles, --latest, --series, "
                "--since-last, --tag"
            )
        if self.latest < 0 or (self.latest == 0 and not any(chosen)):
            raise InvalidInputError("--latest must be at least 1")
        if self.slugs:
            return ContentKind.articles, {"slugs": list(self.slugs)}
        if self.series:
            return ContentKind.series, {"series": self.series}
        if self.since_last:
            return ContentKind.since_last, {"count": self.latest or 10}
        if self.tag:
            return ContentKind.tag, {"tag": self.tag, "count": self.latest or 10}
        return ContentKind.latest, {"count": self.latest}


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
    if content.since_last or content.tag:
        pass  # may well be empty today; each run decides (see skip_if_empty)
    elif not select_articles(session, campaign):
        raise InvalidInputError("the chosen content has no published article")
    # A built-in template or a stored (sandboxed) one; renders once now so a broken
    # subject or template is refused here, not when the run starts.
    check_campaign_template(session, template, campaign.subject, preheader)
    session.add(campaign)
    session.flush()
    return campaign


def select_articles(
    session: Session,
    campaign: Campaign,
    now: datetime | None = None,
    since: datetime | None = None,
) -> list[Article]:
    """The published articles a campaign sends at `now`, in the order they appear.

    `since` bounds "published since the previous run" digests (exclusive)."""
    args = campaign.content_args
    now = now or utcnow()
    if campaign.content_kind is ContentKind.articles:
        articles = [get_article(session, slug) for slug in args["slugs"]]
        return [a for a in articles if a.published_at is not None and a.published_at <= now]
    if campaign.content_kind in (ContentKind.latest, ContentKind.since_last, ContentKind.tag):
        query = (
            select(Article)
            .where(Article.published_at.is_not(None), Article.published_at <= now)
            .order_by(Article.published_at.desc(), Article.id.desc())
        )
        if campaign.content_kind is ContentKind.since_last and since is not None:
            # New since the previous run: published since then, or imported since then
            # (a feed polled a little late must not lose an entry between two runs).
            query = query.where(or_(Article.published_at > since, Article.created_at > since))
        if campaign.content_kind is ContentKind.tag:
            # Tags are a JSON list; filtering in Python keeps this portable and the
            # scan is bounded to recent articles.
            recent = session.scalars(query.limit(1000))
            tagged = [a for a in recent if args["tag"] in (a.tags or [])]
            return tagged[: int(args["count"])]
        return list(session.scalars(query.limit(int(args["count"]))))
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


def schedule_recurring(
    session: Session,
    campaign_id: int,
    cron: str,
    timezone: str,
    *,
    skip_if_empty: bool = False,
    starting: datetime | None = None,
    local_time: bool = False,
) -> Campaign:
    """Send the campaign at every occurrence of `cron` in `timezone`, from `starting` on."""
    campaign = get_campaign(session, campaign_id)
    if campaign.status not in (CampaignStatus.draft, CampaignStatus.scheduled):
        raise InvalidInputError(
            f"campaign {campaign_id} is {campaign.status.value}; only a draft or scheduled "
            "campaign can be scheduled"
        )
    zone(timezone)
    campaign.cron = check_cron(cron)
    campaign.timezone = timezone
    campaign.skip_if_empty = skip_if_empty
    campaign.local_time = local_time
    campaign.send_at = starting or utcnow()
    campaign.status = CampaignStatus.scheduled
    session.flush()
    return campaign


def schedule_campaign(
    session: Session,
    campaign_id: int,
    send_at: datetime,
    timezone: str = "UTC",
    *,
    local_time: bool = False,
) -> Campaign:
    """Mark a draft (or rescheduled) campaign to start at `send_at` (UTC).

    With `local_time`, each subscriber gets it at send_at's wall-clock time (read in
    `timezone`) in their own time zone, over the 26 hours the zones span."""
    campaign = get_campaign(session, campaign_id)
    if campaign.status not in (CampaignStatus.draft, CampaignStatus.scheduled):
        raise InvalidInputError(
            f"campaign {campaign_id} is {campaign.status.value}; only a draft or scheduled "
            "campaign can be scheduled"
        )
    campaign.send_at = send_at
    campaign.timezone = timezone
    campaign.cron = None
    campaign.local_time = local_time
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
    counts = delivery_counts(session, run.id)
    return RunCounts(
        run_id=run.id,
        status=run.status.value,
        occurrence_at=run.occurrence_at,
        recipients=run.recipients,
        by_status={status.value: count for status, count in counts.items()},
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
        "cron": campaign.cron,
        "timezone": campaign.timezone,
        "skip_if_empty": campaign.skip_if_empty,
        "local_time": campaign.local_time,
        "articles": [a.slug for a in select_articles(session, campaign)],
        "runs": [run_counts(session, run).as_json() for run in campaign.runs],
    }
