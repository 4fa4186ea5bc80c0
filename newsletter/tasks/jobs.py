"""Celery tasks: thin wrappers that take ids, open a session and call domain code.

Every task is safe to run twice: the ledger decides what is left to do.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from newsletter.audience.importer import run_import_job
from newsletter.audience.signup import Confirmation
from newsletter.audience.tokens import TokenSigner
from newsletter.campaigns.runs import prepare_campaign_run
from newsletter.content.feeds import feed_fetcher, poll_due_feeds
from newsletter.runs.ledger import Chunk
from newsletter.services.confirmation import (
    ConfirmationSender,
    pending_confirmation,
    send_confirmation,
)
from newsletter.services.segments import segment_filter
from newsletter.services.webhooks import Post, deliver, http_poster
from newsletter.tasks.app import app, runtime

# Publishing a task waits for the broker at most about this long (then the web
# process logs it and the reader can ask again): never longer, since it runs in a
# small queue of threads that other confirmations wait behind.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 1}


def enqueue_chunk(chunk: Chunk) -> None:
    send_chunk.delay(chunk.run_id, chunk.first, chunk.last)


@app.task(name="newsletter.prepare_run")  # type: ignore[untyped-decorator]
def prepare_run(run_id: int) -> int:
    """Freeze the run's content, write its ledger and enqueue its chunks; returns recipients."""
    rt = runtime()
    return prepare_campaign_run(rt.sessions, run_id, rt.settings, enqueue_chunk, segment_filter)


_posters: dict[tuple[int, int], Post] = {}


def _poster(rt: Any) -> Post:
    """One HTTP client per process and settings (its connections are reused)."""
    key = (os.getpid(), id(rt.settings))
    if key not in _posters:
        _posters[key] = http_poster(rt.settings)
    return _posters[key]


@app.task(name="newsletter.deliver_webhook")  # type: ignore[untyped-decorator]
def deliver_webhook(outbox_id: int) -> str:
    """POST one outbox row to its endpoint; the outbox row says what is left to do."""
    rt = runtime()
    return deliver(rt.sessions, outbox_id, rt.settings, _poster(rt))


@app.task(name="newsletter.send_chunk", bind=True)  # type: ignore[untyped-decorator]
def send_chunk(self: Any, run_id: int, first: int, last: int) -> dict[str, int]:
    """Send one chunk. The task id is the claim: a redelivered task resumes its own rows."""
    rt = runtime()
    claim = str(self.request.id or f"local-{run_id}-{first}-{last}")
    with rt.sessions() as session:
        return rt.sender.send_chunk(session, Chunk(run_id, first, last), claim)


@app.task(name="newsletter.poll_feeds")  # type: ignore[untyped-decorator]
def poll_feeds(at: str) -> int:
    """Import new entries of every feed due at `at` (ISO time); returns how many were
    polled. Safe to run twice at once: each feed is taken by a conditional update."""
    rt = runtime()
    with rt.sessions() as session:
        fetch = feed_fetcher(rt.settings.feeds_allowed)
        return len(poll_due_feeds(session, datetime.fromisoformat(at), fetch))


def enqueue_confirmation(confirmation: Confirmation) -> None:
    """Hand a confirmation email to the workers (called off the request path)."""
    list_ids = [item.list_id for item in confirmation.lists]
    send_confirmation_mail.apply_async(
        args=[confirmation.subscriber_id, list_ids],
        retry=True,
        retry_policy=PUBLISH_RETRY_POLICY,
    )


@app.task(name="newsletter.send_confirmation")  # type: ignore[untyped-decorator]
def send_confirmation_mail(subscriber_id: int, list_ids: list[int]) -> bool:
    """Send the confirmation email still due for these lists; True when one went out.

    Safe to run twice: a second run mails a fresh link only while the lists are still
    unconfirmed, as a second sign-up would."""
    rt = runtime()
    with rt.sessions() as session:
        confirmation = pending_confirmation(session, subscriber_id, list_ids)
    if confirmation is None:
        return False
    cfg = rt.settings
    return send_confirmation(
        TokenSigner(cfg.secret_key), ConfirmationSender.from_settings(cfg), confirmation
    )


@app.task(name="newsletter.import_subscribers")  # type: ignore[untyped-decorator]
def import_subscribers(job_id: int) -> None:
    """Save a background subscriber import, resuming after its last committed batch."""
    run_import_job(runtime().sessions, job_id)
