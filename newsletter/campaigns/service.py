"""Creating, scheduling and describing campaigns; choosing their articles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from newsletter.audience.lists import get_list, require_postal_address
from newsletter.campaigns.content import get_campaign, select_articles
from newsletter.campaigns.models import Campaign, CampaignStatus, ContentKind
from newsletter.campaigns.templates import check_campaign_template
from newsletter.db import utcnow
from newsletter.errors import InvalidInputError
from newsletter.recurrence import check_cron, zone
from newsletter.rendering.library import BUILTIN, TemplateLibrary
from newsletter.runs.progress import run_progress


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
    library: TemplateLibrary = BUILTIN,
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
    check_campaign_template(session, template, campaign.subject, preheader, library)
    session.add(campaign)
    session.flush()
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
    postal_address: str = "",
) -> Campaign:
    """Send the campaign at every occurrence of `cron` in `timezone`, from `starting` on.

    `postal_address` is NEWSLETTER_POSTAL_ADDRESS: without it, every list of the
    campaign needs one of its own (InvalidInputError naming the setting)."""
    campaign = get_campaign(session, campaign_id)
    if campaign.status not in (CampaignStatus.draft, CampaignStatus.scheduled):
        raise InvalidInputError(
            f"campaign {campaign_id} is {campaign.status.value}; only a draft or scheduled "
            "campaign can be scheduled"
        )
    require_postal_address(campaign.lists, postal_address)
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
    postal_address: str = "",
) -> Campaign:
    """Mark a draft (or rescheduled) campaign to start at `send_at` (UTC).

    With `local_time`, each subscriber gets it at send_at's wall-clock time (read in
    `timezone`) in their own time zone, over the 26 hours the zones span.
    `postal_address` is NEWSLETTER_POSTAL_ADDRESS: without it, every list of the
    campaign needs one of its own (InvalidInputError naming the setting)."""
    campaign = get_campaign(session, campaign_id)
    if campaign.status not in (CampaignStatus.draft, CampaignStatus.scheduled):
        raise InvalidInputError(
            f"campaign {campaign_id} is {campaign.status.value}; only a draft or scheduled "
            "campaign can be scheduled"
        )
    require_postal_address(campaign.lists, postal_address)
    campaign.send_at = send_at
    campaign.timezone = timezone
    campaign.cron = None
    campaign.local_time = local_time
    campaign.status = CampaignStatus.scheduled
    session.flush()
    return campaign


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
        "runs": [run_progress(session, run, campaign.name).as_json() for run in campaign.runs],
    }
