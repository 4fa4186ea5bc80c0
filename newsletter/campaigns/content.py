"""What a campaign's email holds: its articles at an occurrence, rendered and frozen."""

from __future__ import annotations

import time
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from newsletter import metrics
from newsletter.audience.lists import list_sender, require_postal_address
from newsletter.campaigns.models import Campaign, ContentKind
from newsletter.campaigns.templates import render_campaign_email
from newsletter.config import Settings
from newsletter.content.models import Article
from newsletter.content.series import get_article, get_series, published_in_order
from newsletter.content.views import article_view
from newsletter.db import utcnow
from newsletter.errors import InvalidInputError, NewsletterError, NotFoundError
from newsletter.recurrence import previous_occurrence
from newsletter.rendering.library import template_library
from newsletter.rendering.model import EmailContent, Sender, Snapshot
from newsletter.runs import lifecycle
from newsletter.runs.models import Run


class NothingToSend(NewsletterError):
    """A recurring digest found nothing new and skips empty runs."""


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
        sender_name=settings.sender_name,
        web_url=web_url,
        sender=campaign_sender(campaign, settings),
    )


def campaign_sender(campaign: Campaign, settings: Settings) -> Sender:
    """Who sends the campaign, as its footer says it (its first list's, else the
    settings')."""
    return list_sender(
        campaign.lists, settings.organization_name, settings.postal_address, settings.footer_note
    )


def get_campaign(session: Session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFoundError(f"no campaign {campaign_id}")
    return campaign


def render_now(session: Session, campaign: Campaign, settings: Settings) -> Snapshot:
    """The campaign's email as it would go out now, outside any run (previews, tests)."""
    content = email_content(session, campaign, settings, web_url=f"{settings.base_url}/archive")
    library = template_library(settings.templates_dir)
    return render_campaign_email(session, campaign.template, content, library)


def freeze_campaign_run(session: Session, run: Run, settings: Settings) -> Snapshot:
    """Render the run's email once and keep it with the run (later edits of articles or
    campaign change nothing); a run frozen before keeps its email.

    Raises NothingToSend for an empty digest that skips empty runs, InvalidInputError
    when the content or template cannot be rendered."""
    frozen = lifecycle.frozen_snapshot(run)
    if frozen is not None:
        return frozen
    assert run.campaign_id is not None
    campaign = get_campaign(session, run.campaign_id)
    require_postal_address(campaign.lists, settings.postal_address)
    content = email_content(session, campaign, settings, settings.base_url + run.archive_path, run)
    library = template_library(settings.templates_dir)
    started = time.perf_counter()
    snapshot = render_campaign_email(session, campaign.template, content, library)
    metrics.observe_render(time.perf_counter() - started)
    return lifecycle.freeze(session, run, snapshot)
