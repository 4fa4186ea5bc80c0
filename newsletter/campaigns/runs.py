"""Runs: claiming due campaigns, freezing a run's content, finishing it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from newsletter.campaigns.models import Campaign, CampaignStatus, Run, RunStatus
from newsletter.campaigns.service import select_articles
from newsletter.config import Settings
from newsletter.content.models import Article
from newsletter.content.series import series_place
from newsletter.db import utcnow
from newsletter.delivery.models import Delivery, DeliveryStatus
from newsletter.errors import InvalidInputError
from newsletter.rendering.render import ArticleView, EmailContent, Link, Snapshot, render_email


def claim_due_campaigns(session: Session, now: datetime) -> list[int]:
    """Start a run for each scheduled campaign that is due; returns the new run ids.

    The conditional update is the claim: of two schedulers ticking at once, only one
    sees its UPDATE change the row (PostgreSQL re-checks the WHERE after the other
    commits), and the unique (campaign, occurrence) row backs that up.
    """
    due = session.scalars(
        select(Campaign.id).where(
            Campaign.status == CampaignStatus.scheduled, Campaign.send_at <= now
        )
    ).all()
    run_ids = []
    for campaign_id in due:
        claimed = session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.scheduled)
            .values(status=CampaignStatus.running, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            continue
        campaign = session.get_one(Campaign, campaign_id)
        session.refresh(campaign)
        assert campaign.send_at is not None
        run = Run(
            campaign_id=campaign_id, occurrence_at=campaign.send_at, status=RunStatus.preparing
        )
        session.add(run)
        session.flush()
        run_ids.append(run.id)
    return run_ids


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


def email_content(
    session: Session, campaign: Campaign, settings: Settings, web_url: str
) -> EmailContent:
    articles = select_articles(session, campaign)
    if not articles:
        raise InvalidInputError(f"campaign {campaign.id} has no published article to send")
    from email.utils import parseaddr

    sender_name = parseaddr(settings.from_address)[0] or settings.sender_domain
    return EmailContent(
        subject=campaign.subject,
        preheader=campaign.preheader,
        articles=tuple(article_view(session, a, settings.base_url) for a in articles),
        list_name=", ".join(ml.name for ml in campaign.lists),
        sender_name=sender_name,
        web_url=web_url,
    )


def freeze_run(session: Session, run: Run, settings: Settings) -> Snapshot:
    """Render the run's email once and store it; later calls return the stored copy.

    Freezing makes the run's content immune to later edits of articles or campaign.
    """
    if run.snapshot is not None:
        return Snapshot.from_json(run.snapshot)
    content = email_content(session, run.campaign, settings, run_web_url(settings, run.id))
    snapshot = render_email(run.campaign.template, content)
    run.snapshot = snapshot.to_json()
    run.started_at = utcnow()
    session.flush()
    return snapshot


def fail_run(session: Session, run_id: int, error: str) -> None:
    """A run that cannot be prepared: record why, and put its campaign back to draft
    so staff can fix it and schedule it again."""
    run = session.get_one(Run, run_id)
    run.status = RunStatus.failed
    run.error = error[:5000]
    run.finished_at = utcnow()
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
    session.execute(
        update(Campaign)
        .where(Campaign.id == run.campaign_id, Campaign.status == CampaignStatus.running)
        .values(status=CampaignStatus.finished, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return True
