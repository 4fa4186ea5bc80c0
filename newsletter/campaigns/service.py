"""Creating, scheduling and describing campaigns; choosing their articles."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.accounts import audit
from newsletter.audience.lists import get_list, require_postal_address
from newsletter.audience.models import Segment, TrackingMode
from newsletter.audience.segments import segment_id_for
from newsletter.campaigns.content import get_campaign, select_articles
from newsletter.campaigns.models import Campaign, CampaignStatus, ContentKind
from newsletter.campaigns.templates import check_campaign_template
from newsletter.db import utcnow
from newsletter.errors import InvalidInputError, Remedy
from newsletter.events.outbox import emit
from newsletter.recurrence import check_cron, next_occurrence, zone
from newsletter.rendering.library import BUILTIN, TemplateLibrary
from newsletter.runs.ledger import AudienceCount, audience_count
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
                "choose the content with exactly one of articles, latest, series, since_last, tag",
                remedy=Remedy("choose", "campaign content"),
            )
        if self.latest < 0 or (self.latest == 0 and not any(chosen)):
            raise InvalidInputError("latest: must be at least 1")
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
    segment: str | None = None,
) -> Campaign:
    """A draft campaign; lists, articles, segment and template are checked now, not at
    send time. `segment` (a slug) narrows the lists' members to those matching it."""
    if not name.strip():
        raise InvalidInputError("name: must not be empty")
    if not subject.strip():
        raise InvalidInputError("subject: must not be empty")
    if "\n" in subject or "\r" in subject:
        raise InvalidInputError("subject: must be one line")
    if not list_slugs:
        raise InvalidInputError("lists: choose at least one list")
    kind, args = content.kind_and_args()
    campaign = Campaign(
        name=name.strip(),
        subject=subject.strip(),
        preheader=preheader,
        template=template,
        content_kind=kind,
        content_args=args,
        lists=[get_list(session, slug) for slug in dict.fromkeys(list_slugs)],
        segment_id=segment_id_for(session, segment),
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
    audit.record(session, "campaign.create", f"campaign:{campaign.id}", after=audited(campaign))
    return campaign


def segment_slug(session: Session, campaign: Campaign) -> str | None:
    if campaign.segment_id is None:
        return None
    return session.scalar(select(Segment.slug).where(Segment.id == campaign.segment_id))


def audited(campaign: Campaign) -> dict[str, Any]:
    """What the audit log keeps of a campaign, before and after a change."""
    return {
        "name": campaign.name,
        "subject": campaign.subject,
        "preheader": campaign.preheader,
        "template": campaign.template,
        "content": {"kind": campaign.content_kind.value, **campaign.content_args},
        "lists": sorted(ml.slug for ml in campaign.lists),
        "segment_id": campaign.segment_id,
        "status": campaign.status.value,
        "send_at": campaign.send_at.isoformat() if campaign.send_at else None,
        "cron": campaign.cron,
        "timezone": campaign.timezone,
        "skip_if_empty": campaign.skip_if_empty,
        "local_time": campaign.local_time,
    }


def campaign_version(campaign: Campaign) -> str:
    """A strong validator of the campaign's editable state and status (its ETag)."""
    text = json.dumps(audited(campaign), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def update_campaign(
    session: Session,
    campaign_id: int,
    *,
    name: str | None = None,
    subject: str | None = None,
    preheader: str | None = None,
    template: str | None = None,
    list_slugs: list[str] | None = None,
    content: ContentSpec | None = None,
    library: TemplateLibrary = BUILTIN,
    planned_at: datetime | bool | None = False,
    segment: str | None = None,
) -> Campaign:
    """Change a draft; checked as `create_campaign` checks a new one. `planned_at`
    is a date the draft is planned for (the calendar shows it as planned; nothing
    sends a draft): None removes it, False leaves it. `segment`: a slug, "" for none,
    None leaves it."""
    campaign = get_campaign(session, campaign_id)
    if campaign.status is not CampaignStatus.draft:
        raise InvalidInputError(
            f"campaign {campaign_id} is {campaign.status.value}; only a draft can be edited"
        )
    before = audited(campaign)
    if name is not None:
        if not name.strip():
            raise InvalidInputError("name: must not be empty")
        campaign.name = name.strip()
    if subject is not None:
        if not subject.strip() or "\n" in subject or "\r" in subject:
            raise InvalidInputError("subject must be one line, not empty")
        campaign.subject = subject.strip()
    if preheader is not None:
        campaign.preheader = preheader
    if template is not None:
        campaign.template = template
    if list_slugs is not None:
        if not list_slugs:
            raise InvalidInputError("lists: name at least one list")
        campaign.lists = [get_list(session, slug) for slug in dict.fromkeys(list_slugs)]
    if segment is not None:
        campaign.segment_id = segment_id_for(session, segment)
    if planned_at is not False:
        campaign.send_at = planned_at if isinstance(planned_at, datetime) else None
    if content is not None:
        campaign.content_kind, campaign.content_args = content.kind_and_args()
        if not (content.since_last or content.tag) and not select_articles(session, campaign):
            raise InvalidInputError("the chosen content has no published article")
    check_campaign_template(
        session, campaign.template, campaign.subject, campaign.preheader, library
    )
    session.flush()
    after = audited(campaign)
    if after != before:
        audit.record(
            session, "campaign.update", f"campaign:{campaign.id}", before=before, after=after
        )
    return campaign


def list_campaigns(
    session: Session,
    after_id: int = 0,
    limit: int | None = None,
    status: CampaignStatus | None = None,
) -> list[Campaign]:
    query = select(Campaign).where(Campaign.id > after_id).order_by(Campaign.id)
    if status is not None:
        query = query.where(Campaign.status == status)
    return list(session.scalars(query.limit(limit) if limit else query))


def recipients_now(session: Session, campaign_id: int) -> AudienceCount:
    """How many people a run of the campaign started now would mail: its lists'
    distinct confirmed members, less suppressed addresses. Without its segment: a
    campaign with one is counted by services/segments.campaign_recipients."""
    campaign = get_campaign(session, campaign_id)
    return audience_count(session, [ml.id for ml in campaign.lists])


@dataclass(frozen=True)
class ScheduleRequest:
    """When to send: once `at` a time read in `timezone`, `now`, or every `cron`
    occurrence (from `at`, else from now) in `timezone`."""

    at: str | None = None
    timezone: str = "UTC"
    now: bool = False
    cron: str | None = None
    skip_if_empty: bool = False
    local_time: bool = False
    # NEWSLETTER_POSTAL_ADDRESS (lists may have their own): no email goes without one.
    postal_address: str = ""


def schedule(session: Session, campaign_id: int, request: ScheduleRequest) -> str:
    """Schedule the campaign as asked; returns a sentence saying when it goes."""
    if request.cron is not None:
        if request.now:
            raise InvalidInputError(
                "cron and now do not go together", remedy=Remedy("choose", "campaign schedule")
            )
        starting = parse_local_time(request.at, request.timezone) if request.at else utcnow()
        schedule_recurring(
            session,
            campaign_id,
            request.cron,
            request.timezone,
            skip_if_empty=request.skip_if_empty,
            starting=starting,
            local_time=request.local_time,
            postal_address=request.postal_address,
        )
        first = next_occurrence(request.cron, request.timezone, starting)
        return (
            f"campaign {campaign_id} recurs at {request.cron!r} in {request.timezone}; "
            f"next {first:%Y-%m-%d %H:%M} UTC"
        )
    if request.now == (request.at is not None):
        raise InvalidInputError(
            "give exactly one of a time to send at, now, or a cron expression",
            remedy=Remedy("choose", "campaign schedule"),
        )
    send_at = utcnow() if request.now else parse_local_time(request.at or "", request.timezone)
    schedule_campaign(
        session,
        campaign_id,
        send_at,
        request.timezone,
        local_time=request.local_time,
        postal_address=request.postal_address,
    )
    # Read by people (CLI, API, console): minutes, like every time the console shows.
    if request.local_time:  # the wall-clock time chosen, as each reader's zone shows it
        chosen = send_at.astimezone(ZoneInfo(request.timezone))
        return (
            f"campaign {campaign_id} scheduled for {chosen:%Y-%m-%d %H:%M} in each "
            "subscriber's time zone"
        )
    return f"campaign {campaign_id} scheduled for {send_at:%Y-%m-%d %H:%M} UTC"


def parse_local_time(value: str, zone: str) -> datetime:
    """An ISO time read in `zone` (unless it carries an offset), as UTC."""
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInputError(f"time zone: {zone!r} is unknown") from exc
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInputError(
            f"at: {value!r} is not an ISO time like 2026-12-01T09:00",
            remedy=Remedy("give", "campaign schedule", field="at"),
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(UTC)


def _scheduled_event(session: Session, campaign: Campaign) -> None:
    data = {
        "campaign_id": campaign.id,
        "name": campaign.name,
        "send_at": campaign.send_at.isoformat() if campaign.send_at else None,
        "cron": campaign.cron,
        "timezone": campaign.timezone,
    }
    emit(session, "campaign.scheduled", data)


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
    before = audited(campaign)
    campaign.cron = check_cron(cron)
    campaign.timezone = timezone
    campaign.skip_if_empty = skip_if_empty
    campaign.local_time = local_time
    campaign.send_at = starting or utcnow()
    campaign.status = CampaignStatus.scheduled
    session.flush()
    _scheduled_event(session, campaign)
    audit.record(
        session,
        "campaign.schedule",
        f"campaign:{campaign.id}",
        before=before,
        after=audited(campaign),
    )
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
    try:
        zone(timezone)
    except InvalidInputError as exc:
        raise InvalidInputError(f"time zone: {exc}") from exc
    before = audited(campaign)
    campaign.send_at = send_at
    campaign.timezone = timezone
    campaign.cron = None
    campaign.local_time = local_time
    campaign.status = CampaignStatus.scheduled
    session.flush()
    _scheduled_event(session, campaign)
    audit.record(
        session,
        "campaign.schedule",
        f"campaign:{campaign.id}",
        before=before,
        after=audited(campaign),
    )
    return campaign


def set_campaign_tracking(
    session: Session, campaign_id: int, tracking: str | None, track_opens: bool | None
) -> Campaign:
    """A campaign's own tracking: a mode ("off", "anonymous", "individual"; "" to follow
    its lists again) that can only make its lists' modes more private, and the open
    pixel (None: unchanged). Audited; flushes."""
    campaign = get_campaign(session, campaign_id)
    before = {"tracking": campaign.tracking, "track_opens": campaign.track_opens}
    if tracking is not None:
        if tracking == "":
            campaign.tracking = None
        else:
            try:
                campaign.tracking = TrackingMode(tracking)
            except ValueError as exc:
                raise InvalidInputError(
                    f"tracking {tracking!r} is not one of off, anonymous, individual"
                ) from exc
    if track_opens is not None:
        campaign.track_opens = track_opens
    after = {"tracking": campaign.tracking, "track_opens": campaign.track_opens}
    if after != before:
        audit.record(
            session,
            "campaign.tracking",
            f"campaign:{campaign.id}",
            before={k: str(v) if v is not None else None for k, v in before.items()},
            after={k: str(v) if v is not None else None for k, v in after.items()},
        )
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
        "segment": segment_slug(session, campaign),
        "send_at": campaign.send_at.isoformat() if campaign.send_at else None,
        "cron": campaign.cron,
        "timezone": campaign.timezone,
        "skip_if_empty": campaign.skip_if_empty,
        "local_time": campaign.local_time,
        "tracking": {
            "mode": campaign.tracking.value if campaign.tracking else None,
            "track_opens": campaign.track_opens,
        },
        "articles": [a.slug for a in select_articles(session, campaign)],
        "runs": [run_progress(session, run, campaign.name).as_json() for run in campaign.runs],
    }
