"""Sending a chunk: fill each recipient's slots, build the MIME bytes, hand over, record.

Each result is committed as soon as the mailer returns, so a killed worker leaves at
most the one message it was handing over unrecorded (it may go twice; nobody is
skipped). The run's email was encoded once (`MessageTemplate`); per recipient we
only sign two tokens and splice short values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.utils import formatdate, parseaddr
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from newsletter.audience.tokens import Purpose, TokenSigner
from newsletter.campaigns.models import Campaign, Run, RunStatus
from newsletter.campaigns.runs import finish_run_if_done, freeze_run
from newsletter.config import Settings
from newsletter.db import utcnow
from newsletter.delivery.ledger import Chunk, pending_in_chunk, record_result, retry_delay
from newsletter.delivery.mailers import Mailer, OutgoingMessage
from newsletter.delivery.models import DeliveryStatus
from newsletter.errors import PermanentDeliveryError, TemporaryDeliveryError
from newsletter.rendering.mime import ListHeaders, MessageTemplate, Recipient
from newsletter.rendering.slots import ATTRIBUTE_PREFIX


def subscriber_links(
    settings: Settings, signer: TokenSigner, subscriber_id: int, list_id: int
) -> dict[str, str]:
    """The signed unsubscribe and preferences URLs of one subscriber on one list."""
    unsubscribe = signer.sign(Purpose.unsubscribe, subscriber_id, list_id)
    preferences = signer.sign(Purpose.preferences, subscriber_id, list_id)
    return {
        "unsubscribe_url": f"{settings.base_url}/unsubscribe/{unsubscribe}",
        "preferences_url": f"{settings.base_url}/preferences/{preferences}",
    }


def recipient_values(
    settings: Settings,
    signer: TokenSigner,
    row: Any,
    attribute_keys: tuple[str, ...],
) -> dict[str, str]:
    values = {"name": row.name or "", "email": row.email}
    values.update(subscriber_links(settings, signer, row.subscriber_id, row.list_id))
    attributes = row.attributes or {}
    for key in attribute_keys:
        value = attributes.get(key.removeprefix(ATTRIBUTE_PREFIX))
        values[key] = "" if value is None else str(value)
    return values


def list_headers(settings: Settings, campaign: Campaign, occurrence: str) -> ListHeaders:
    """List-Id names the campaign's first list; Feedback-ID tags campaign and occurrence."""
    first = min(campaign.lists, key=lambda ml: ml.id)
    return ListHeaders(
        from_address=settings.from_address,
        list_id=f'"{first.name}" <{first.slug}.{settings.list_id_domain}>',
        feedback_id=f"{occurrence}:{campaign.id}:newsletter:{settings.sender_domain}",
    )


@dataclass
class CompiledRun:
    template: MessageTemplate
    attribute_keys: tuple[str, ...]


@dataclass
class ChunkSender:
    """Sends chunks for one worker process: keeps compiled runs and the mailer."""

    settings: Settings
    mailer: Mailer
    compiled: dict[int, CompiledRun] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.signer = TokenSigner(self.settings.secret_key)
        self.envelope_from = parseaddr(self.settings.from_address)[1]

    def _compile(self, session: Session, run: Run) -> CompiledRun:
        compiled = self.compiled.get(run.id)
        if compiled is None:
            template = MessageTemplate(
                freeze_run(session, run, self.settings),
                list_headers(self.settings, run.campaign, str(run.id)),
            )
            keys = tuple(
                dict.fromkeys(
                    k
                    for k in (*template.text.keys, *template.html.keys, *template.subject.keys)
                    if k.startswith(ATTRIBUTE_PREFIX)
                )
            )
            compiled = self.compiled[run.id] = CompiledRun(template, keys)
        return compiled

    def send_chunk(self, session: Session, chunk: Chunk) -> dict[str, int]:
        """Send every pending delivery of the chunk; returns counts by outcome."""
        counts = {"sent": 0, "deferred": 0, "failed": 0}
        run = session.get(Run, chunk.run_id)
        if run is None or run.status not in (RunStatus.sending, RunStatus.preparing):
            return counts
        if session.get_bind().dialect.name == "postgresql":
            # A commit per message must be cheap; losing the last few milliseconds of
            # commits is only possible if PostgreSQL itself crashes, not a worker.
            session.execute(text("SET synchronous_commit = off"))
        compiled = self._compile(session, run)
        session.commit()
        date = formatdate(usegmt=True)
        for row in pending_in_chunk(session, chunk):
            if not row.still_subscribed:
                record_result(
                    session, row.id, DeliveryStatus.suppressed, "left the list before sending", ""
                )
                session.commit()
                continue
            message_id = f"<nl.{chunk.run_id}.{row.id}@{self.settings.sender_domain}>"
            recipient = Recipient(
                email=row.email,
                name=row.name or "",
                values=recipient_values(self.settings, self.signer, row, compiled.attribute_keys),
                message_id=message_id,
            )
            outgoing = OutgoingMessage(
                self.envelope_from, row.email, compiled.template.build(recipient, date), message_id
            )
            try:
                result = self.mailer.send(outgoing)
            except TemporaryDeliveryError as exc:
                record_result(
                    session,
                    row.id,
                    DeliveryStatus.deferred,
                    str(exc),
                    message_id,
                    next_attempt_at=utcnow() + retry_delay(row.attempts + 1),
                )
                counts["deferred"] += 1
            except PermanentDeliveryError as exc:
                record_result(session, row.id, DeliveryStatus.failed, str(exc), message_id)
                counts["failed"] += 1
            else:
                record_result(session, row.id, DeliveryStatus.sent, result.reply, message_id)
                counts["sent"] += 1
            session.commit()
        finish_run_if_done(session, chunk.run_id)
        session.commit()
        return counts
