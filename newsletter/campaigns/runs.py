"""Runs: claiming due campaigns, freezing a run's content, finishing it."""

from __future__ import annotations

from datetime import datetime, timedelta
from email.utils import parseaddr

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session

from newsletter.audience.models import MailingList
from newsletter.campaigns.models import Campaign, CampaignStatus, Run, RunStatus
from newsletter.campaigns.service import select_articles
from newsletter.campaigns.templates import render_campaign_email
from newsletter.config import Settings
from newsletter.content.models import Article
from newsletter.content.series import series_place
from newsletter.db import upsert_insert, utcnow
from newsletter.delivery.models import Delivery, DeliveryStatus
from newsletter.errors import InvalidInputError, NewsletterError
from newsletter.recurrence import (
    LOCAL_TIME_LEAD,
    earliest_local,
    latest_due,
    occurrences,
    previous_occurrence,
)
from newsletter.rendering.render import ArticleView, EmailContent, Link, Snapshot, render_email
from newsletter.sequences.models import Sequence


def claim_due_campaigns(
    session: Session, now: datetime, catch_up: timedelta = timedelta(hours=6)
) -> list[int]:
    """Start a run for each campaign occurrence that is due; returns the new run ids.

    One-off campaigns: the conditional update is the claim; of two schedulers ticking
    at once only one sees its UPDATE change the row (PostgreSQL re-checks the WHERE
    after the other commits). Recurring campaigns: the run is unique per campaign and
    occurrence, so the insert is the claim. Missed occurrences (scheduler down) fold
    into the latest one, which is sent once, or skipped when older than `catch_up`.
    """
    due = session.execute(
        select(
            Campaign.id, Campaign.cron, Campaign.local_time, Campaign.send_at, Campaign.timezone
        ).where(
            Campaign.status == CampaignStatus.scheduled,
            or_(
                Campaign.send_at <= now,
                # Local-time sends start when the first time zone reaches them.
                and_(Campaign.local_time, Campaign.send_at <= now + LOCAL_TIME_LEAD),
            ),
        )
    ).all()
    run_ids = []
    for campaign_id, cron, local_time, send_at, tz in due:
        if cron:
            run_id = _claim_recurring(session, campaign_id, now, catch_up)
        elif local_time and send_at is not None and earliest_local(send_at, tz) > now:
            continue
        else:
            run_id = _claim_one_off(session, campaign_id, now)
        if run_id is not None:
            run_ids.append(run_id)
    return run_ids


def _claim_one_off(session: Session, campaign_id: int, now: datetime) -> int | None:
    claimed = session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.scheduled)
        .values(status=CampaignStatus.running, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    campaign = session.get_one(Campaign, campaign_id)
    session.refresh(campaign)
    assert campaign.send_at is not None
    run = Run(
        campaign_id=campaign_id,
        occurrence_at=campaign.send_at,
        status=RunStatus.preparing,
        last_progress_at=now,
    )
    session.add(run)
    session.flush()
    return run.id


def _claim_recurring(
    session: Session, campaign_id: int, now: datetime, catch_up: timedelta
) -> int | None:
    campaign = session.get_one(Campaign, campaign_id)
    assert campaign.cron and campaign.send_at
    last = session.scalar(select(func.max(Run.occurrence_at)).where(Run.campaign_id == campaign_id))
    # Occurrences at or after the start time, after the last run, not older than catch_up.
    after = max(last or (campaign.send_at - timedelta(microseconds=1)), now - catch_up)
    if campaign.local_time:
        occurrence = _local_time_due(campaign.cron, campaign.timezone, after, now)
    else:
        occurrence = latest_due(campaign.cron, campaign.timezone, after, now)
    if occurrence is None:
        return None
    inserted = session.execute(
        upsert_insert(session, Run)
        .values(
            campaign_id=campaign_id,
            occurrence_at=occurrence,
            status=RunStatus.preparing,
            recipients=0,
            error="",
            created_at=now,
            last_progress_at=now,
        )
        .on_conflict_do_nothing()
        .returning(Run.id)
    ).scalar()
    return inserted


def _local_time_due(cron: str, tz: str, after: datetime, now: datetime) -> datetime | None:
    """The latest occurrence whose wall-clock time some time zone has already reached."""
    latest = None
    for instant in occurrences(cron, tz, after):
        if earliest_local(instant, tz) > now:
            break
        latest = instant
    return latest


def _human_date(moment: datetime | None) -> str:
    return f"{moment.day} {moment:%B %Y}" if moment else ""


def article_url(article: Article, base_url: str) -> str:
    return article.url or f"{base_url}/articles/{article.slug}"


def article_view(session: Session, article: Article, base_url: str) -> ArticleView:
    """Plain data for templates, with the article's place in its series."""
    place = series_place(session, article)

    def link(other: Article | None) -> Link | None:
        return Link(other.title, article_url(other, base_url)) if other else None

    return ArticleView(
        title=article.title,
        url=article_url(article, base_url),
        summary=article.summary,
        body_html=article.body_html,
        author=article.author,
        image=article.image,
        published=_human_date(article.published_at),
        tags=tuple(article.tags or ()),
        series_title=place.series_title if place else "",
        part=place.index if place else 0,
        parts=place.total if place else 0,
        previous=link(place.previous) if place else None,
        next=link(place.next) if place else None,
    )


def run_web_url(settings: Settings, run_id: int) -> str:
    return f"{settings.base_url}/archive/runs/{run_id}"


class NothingToSend(NewsletterError):
    """A recurring digest found nothing new and skips empty runs."""


def _sender_name(settings: Settings) -> str:
    return parseaddr(settings.from_address)[0] or settings.sender_domain


def email_content(
    session: Session,
    campaign: Campaign,
    settings: Settings,
    web_url: str,
    run: Run | None = None,
) -> EmailContent:
    """What a campaign's email shows; for a run, the articles of that occurrence."""
    now, since = utcnow(), None
    if run is not None:
        now = max(run.occurrence_at, now) if campaign.cron is None else run.occurrence_at
        since = previous_send(session, campaign, run)
    articles = select_articles(session, campaign, now=now, since=since)
    if not articles:
        if campaign.skip_if_empty:
            raise NothingToSend("nothing new since the previous run")
        raise InvalidInputError(f"campaign {campaign.id} has no published article to send")
    return EmailContent(
        subject=campaign.subject,
        preheader=campaign.preheader,
        articles=tuple(article_view(session, a, settings.base_url) for a in articles),
        list_name=", ".join(ml.name for ml in campaign.lists),
        sender_name=_sender_name(settings),
        web_url=web_url,
    )


def previous_send(session: Session, campaign: Campaign, run: Run) -> datetime | None:
    """Where a "since the previous run" digest starts: the previous run's occurrence,
    else the cron's previous occurrence, else when the campaign was created."""
    previous = session.scalar(
        select(func.max(Run.occurrence_at)).where(
            Run.campaign_id == campaign.id, Run.occurrence_at < run.occurrence_at
        )
    )
    if previous is not None:
        return previous
    if campaign.cron:
        return previous_occurrence(campaign.cron, campaign.timezone, run.occurrence_at)
    return campaign.created_at


def sequence_content(session: Session, run: Run, settings: Settings, web_url: str) -> EmailContent:
    """A drip step: one article of the series, sent to the sequence's list."""
    assert run.sequence_id is not None and run.article_id is not None
    sequence = session.get_one(Sequence, run.sequence_id)
    article = session.get_one(Article, run.article_id)
    return EmailContent(
        # The subject is a template (campaign subjects are written by staff); the title
        # goes in as data, so braces in a title are shown, not run.
        subject="{{ article.title }}",
        preheader=article.summary,
        articles=(article_view(session, article, settings.base_url),),
        list_name=sequence.mailing_list.name,
        sender_name=_sender_name(settings),
        web_url=web_url,
        extra={"sequence": True},
    )


def run_lists(session: Session, run: Run) -> list[MailingList]:
    """The lists a run's recipients belong to (for List-Id and unsubscribe scope)."""
    if run.campaign is not None:
        return list(run.campaign.lists)
    assert run.sequence_id is not None
    return [session.get_one(Sequence, run.sequence_id).mailing_list]


def freeze_run(session: Session, run: Run, settings: Settings) -> Snapshot:
    """Render the run's email once and store it; later calls return the stored copy.

    Freezing makes the run's content immune to later edits of articles or campaign.
    """
    if run.snapshot is not None:
        return Snapshot.from_json(run.snapshot)
    web_url = run_web_url(settings, run.id)
    if run.campaign is not None:
        content = email_content(session, run.campaign, settings, web_url, run)
        snapshot = render_campaign_email(session, run.campaign.template, content)
    else:
        snapshot = render_email("article", sequence_content(session, run, settings, web_url))
    run.snapshot = snapshot.to_json()
    run.started_at = utcnow()
    session.flush()
    return snapshot


def skip_run(session: Session, run_id: int, reason: str) -> None:
    run = session.get_one(Run, run_id)
    run.status = RunStatus.skipped
    run.error = reason
    run.finished_at = utcnow()
    session.flush()


def fail_run(session: Session, run_id: int, error: str) -> None:
    """A run that cannot be prepared: record why. A one-off campaign goes back to
    draft so staff can fix it and schedule it again; a recurring one keeps its
    schedule (the next occurrence may well work)."""
    run = session.get_one(Run, run_id)
    run.status = RunStatus.failed
    run.error = error[:5000]
    run.finished_at = utcnow()
    if run.campaign is not None and not run.campaign.cron:
        run.campaign.status = CampaignStatus.draft
    session.flush()


def finish_run_if_done(session: Session, run_id: int) -> bool:
    """Mark a sending run (and its one-off campaign) finished once nothing is left to send."""
    open_work = exists().where(
        Delivery.run_id == run_id,
        Delivery.status.in_(
            (DeliveryStatus.pending, DeliveryStatus.sending, DeliveryStatus.deferred)
        ),
    )
    if session.scalar(select(open_work)):
        return False
    done = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.sending)
        .values(status=RunStatus.finished, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        return False
    run = session.get_one(Run, run_id)
    if run.campaign_id is None:
        return True
    session.execute(
        update(Campaign)
        .where(Campaign.id == run.campaign_id, Campaign.status == CampaignStatus.running)
        .values(status=CampaignStatus.finished, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return True
