"""What a run sends and to which lists, for campaign runs and drip steps alike."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from newsletter.audience.models import MailingList
from newsletter.campaigns.content import freeze_campaign_run, get_campaign
from newsletter.config import Settings
from newsletter.rendering.mime import ListHeaders
from newsletter.rendering.model import Snapshot
from newsletter.runs.models import Run
from newsletter.sequences.content import freeze_step_run
from newsletter.sequences.models import Sequence as DripSequence


def run_email(session: Session, run: Run, settings: Settings) -> Snapshot:
    """The run's frozen email. A campaign run was frozen when it was prepared; a drip
    step is frozen by the first chunk that sends it."""
    if run.campaign_id is not None:
        return freeze_campaign_run(session, run, settings)
    return freeze_step_run(session, run, settings)


def run_lists(session: Session, run: Run) -> list[MailingList]:
    """The lists a run's recipients belong to (for List-Id and unsubscribe scope)."""
    if run.campaign_id is not None:
        return list(get_campaign(session, run.campaign_id).lists)
    assert run.sequence_id is not None
    return [session.get_one(DripSequence, run.sequence_id).mailing_list]


def list_headers(
    settings: Settings, lists: Sequence[MailingList], tag: str, occurrence: str
) -> ListHeaders:
    """List-Id names the first list; Feedback-ID tags the campaign (or sequence) and
    the occurrence, so a provider's feedback loop reports them apart."""
    first = min(lists, key=lambda ml: ml.id)
    return ListHeaders(
        from_address=settings.from_address,
        list_name=first.name,
        list_id=f"{first.slug}.{settings.list_id_domain}",
        feedback_id=f"{occurrence}:{tag}:newsletter:{settings.sender_domain}",
        unsubscribe_mailto=settings.list_unsubscribe_mailto,
    )
