"""What a drip step's email holds: one article of the series, rendered and frozen."""

from __future__ import annotations

from sqlalchemy.orm import Session

from newsletter.audience.lists import list_sender, require_postal_address
from newsletter.config import Settings
from newsletter.content.models import Article
from newsletter.content.views import article_view
from newsletter.rendering.library import template_library
from newsletter.rendering.model import EmailContent, Snapshot
from newsletter.rendering.render import render_email
from newsletter.runs import lifecycle
from newsletter.runs.models import Run
from newsletter.sequences.models import Sequence


def step_content(session: Session, run: Run, settings: Settings, web_url: str) -> EmailContent:
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
        sender_name=settings.sender_name,
        web_url=web_url,
        extra={"sequence": True},
        sender=list_sender(
            [sequence.mailing_list],
            settings.organization_name,
            settings.postal_address,
            settings.footer_note,
        ),
    )


def freeze_step_run(session: Session, run: Run, settings: Settings) -> Snapshot:
    """Render the step's email once and keep it with the run (a run frozen before keeps
    its email)."""
    frozen = lifecycle.frozen_snapshot(run)
    if frozen is not None:
        return frozen
    assert run.sequence_id is not None
    sequence = session.get_one(Sequence, run.sequence_id)
    require_postal_address([sequence.mailing_list], settings.postal_address)
    content = step_content(session, run, settings, settings.base_url + run.archive_path)
    library = template_library(settings.templates_dir)
    return lifecycle.freeze(session, run, render_email("article", content, library=library))
