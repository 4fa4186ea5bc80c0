"""Every change of a run's status, in one place.

    preparing ──freeze, fan out──► sending ──nothing left──► finished
        │  ╲                        │  ▲
        │   ╲ nothing to send       │  │ resume (re-enqueued from the ledger)
        │    ► skipped              ▼  │
        │                         paused
        ├─ cannot render ─► failed
        └─ (any of the first three) ── cancel ──► cancelled

A campaign occurrence's run is opened `preparing` (the unique (campaign, occurrence)
row is the scheduler's claim); a drip step's run is opened `sending` and opens again
(`reopen_step`) when new readers reach the step. A run with no progress for a while
has lost its queued tasks (Redis flushed, workers killed): `recover_stalled` hands back
what must be prepared or re-enqueued, rebuilt from the ledger.

Callers own their campaign or sequence: this module knows runs and the ledger only.
Functions flush or execute; the caller commits.

Each run's start, pause, resume, stall, recovery and end is logged here, once, at
INFO, with the run's id and its campaign or sequence as fields of the record (JSON
logs show them as keys; see logs.py). A stall is logged when recovery first finds
the run without progress (`stalled_at` is set then, and cleared by the next real
progress); while it stays stalled, later recoveries log at DEBUG only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.orm import Session

from newsletter.db import upsert_insert, utcnow
from newsletter.errors import InvalidInputError, NotFoundError
from newsletter.events.outbox import emit
from newsletter.rendering.model import Snapshot
from newsletter.runs.ledger import Chunk, cancel_unsent, has_open_rows, open_chunks
from newsletter.runs.models import Run, RunStatus, SchedulerHeartbeat

log = logging.getLogger(__name__)

# A resumed run's last progress is set this far back so the next tick re-enqueues it.
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
# A failed (or skipped) occurrence may be tried again: staff fix and reschedule it.
_RETRYABLE = (RunStatus.failed, RunStatus.skipped)


def about(run: Run | None, run_id: int | None = None) -> dict[str, Any]:
    """The log record fields naming a run (see logs.CONTEXT_FIELDS)."""
    if run is None:
        return {"run_id": run_id}
    return {"run_id": run.id, "campaign_id": run.campaign_id, "sequence_id": run.sequence_id}


def _run_or_none(session: Session, run_id: int) -> Run | None:
    return session.get(Run, run_id)


def open_campaign_run(
    session: Session, campaign_id: int, occurrence_at: datetime, now: datetime
) -> int | None:
    """The run of one campaign occurrence, `preparing`; None when that occurrence has a
    run already (another scheduler claimed it first). An occurrence whose run failed or
    was skipped is prepared again under the same run."""
    inserted = session.execute(
        upsert_insert(session, Run)
        .values(
            campaign_id=campaign_id,
            occurrence_at=occurrence_at,
            status=RunStatus.preparing,
            recipients=0,
            error="",
            created_at=now,
            last_progress_at=now,
        )
        .on_conflict_do_nothing()
        .returning(Run.id)
    ).scalar()
    if inserted is not None:
        return int(inserted)
    retried = session.execute(
        update(Run)
        .where(
            Run.campaign_id == campaign_id,
            Run.occurrence_at == occurrence_at,
            Run.status.in_(_RETRYABLE),
        )
        .values(
            status=RunStatus.preparing,
            snapshot=None,
            error="",
            started_at=None,
            finished_at=None,
            last_progress_at=now,
        )
        .returning(Run.id)
        .execution_options(synchronize_session=False)
    ).scalar()
    return None if retried is None else int(retried)


def open_step_run(session: Session, sequence_id: int, article_id: int, now: datetime) -> int:
    """The run of one drip step (sequence, article), created `sending` on first need."""
    session.execute(
        upsert_insert(session, Run)
        .values(
            sequence_id=sequence_id,
            article_id=article_id,
            occurrence_at=now,
            status=RunStatus.sending,
            recipients=0,
            error="",
            created_at=now,
            last_progress_at=now,
        )
        .on_conflict_do_nothing()
    )
    run_id = session.scalar(
        select(Run.id).where(Run.sequence_id == sequence_id, Run.article_id == article_id)
    )
    assert run_id is not None
    return run_id


def reopen_step(session: Session, run_id: int, now: datetime) -> None:
    """A drip step that had finished sends again, to the readers who just reached it."""
    session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(status=RunStatus.sending, finished_at=None, last_progress_at=now)
        .execution_options(synchronize_session=False)
    )


def frozen_snapshot(run: Run) -> Snapshot | None:
    """The run's frozen email, or None before it was frozen."""
    return Snapshot.from_json(run.snapshot) if run.snapshot is not None else None


def freeze(session: Session, run: Run, snapshot: Snapshot) -> Snapshot:
    """Keep the run's rendered email: later edits of its content change nothing."""
    run.snapshot = snapshot.to_json()
    run.started_at = utcnow()
    session.flush()
    return snapshot


def start_sending(session: Session, run_id: int, recipients: int) -> None:
    """The ledger is written: a preparing run starts sending to its `recipients`."""
    started = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.preparing)
        .values(status=RunStatus.sending, recipients=recipients)
        .execution_options(synchronize_session=False)
    )
    if started.rowcount == 1:  # type: ignore[attr-defined]
        run = _run_or_none(session, run_id)
        log.info(
            "run %s started: sending to %d recipients", run_id, recipients, extra=about(run, run_id)
        )
        if run is not None and run.campaign_id is not None:
            data = {"campaign_id": run.campaign_id, "run_id": run_id, "recipients": recipients}
            emit(session, "campaign.started", data)


def skip(session: Session, run_id: int, reason: str) -> None:
    """Nothing to send (an empty digest that skips empty runs)."""
    run = session.get_one(Run, run_id)
    run.status = RunStatus.skipped
    run.error = reason
    run.finished_at = utcnow()
    session.flush()
    log.info("run %s skipped: %s", run_id, reason, extra=about(run))


def fail(session: Session, run_id: int, error: str) -> Run:
    """The run cannot be prepared: record why (nothing was sent)."""
    run = session.get_one(Run, run_id)
    run.status = RunStatus.failed
    run.error = error[:5000]
    run.finished_at = utcnow()
    session.flush()
    first_line = error.splitlines()[0] if error else ""
    log.info("run %s failed: %s", run_id, first_line, extra=about(run))
    if run.campaign_id is not None:
        data = {"campaign_id": run.campaign_id, "run_id": run_id, "error": first_line[:500]}
        emit(session, "campaign.failed", data)
    return run


def finish_if_done(session: Session, run_id: int) -> bool:
    """Mark a sending run finished once no ledger row is left to send; True if it was
    this call that finished it."""
    if has_open_rows(session, run_id):
        return False
    done = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.sending)
        .values(status=RunStatus.finished, finished_at=utcnow(), stalled_at=None)
        .execution_options(synchronize_session=False)
    )
    finished = bool(done.rowcount == 1)  # type: ignore[attr-defined]
    if finished:
        run = _run_or_none(session, run_id)
        log.info("run %s finished", run_id, extra=about(run, run_id))
        if run is not None:
            _finished_event(session, run)
    return finished


def _finished_event(session: Session, run: Run) -> None:
    if run.campaign_id is not None:
        data = {"campaign_id": run.campaign_id, "run_id": run.id, "recipients": run.recipients}
        emit(session, "campaign.finished", data)
    elif run.sequence_id is not None:
        # A drip step's run finishes each time the readers who reached it are mailed.
        step = {"sequence_id": run.sequence_id, "run_id": run.id, "article_id": run.article_id}
        emit(session, "sequence.step_sent", step)


def pause(session: Session, runs: Iterable[Run]) -> None:
    """Preparing and sending runs stop; their workers hand unsent rows back (pending)
    within a second or two."""
    for run in runs:
        if run.status in (RunStatus.sending, RunStatus.preparing):
            run.status = RunStatus.paused
            log.info("run %s paused", run.id, extra=about(run))
    session.flush()


def resume(session: Session, runs: Iterable[Run]) -> None:
    """Paused runs go on where they stopped: marked as stalled, so the next scheduler
    tick rebuilds their queue from the ledger, whichever broker and process."""
    for run in runs:
        if run.status is RunStatus.paused:
            run.status = RunStatus.sending if run.snapshot is not None else RunStatus.preparing
            run.last_progress_at = LONG_AGO
            log.info("run %s resumed", run.id, extra=about(run))
    session.flush()


def cancel(session: Session, runs: Iterable[Run]) -> None:
    """Stop for good: what was sent stays recorded, what waited is marked cancelled."""
    now = utcnow()
    for run in runs:
        if run.status in (RunStatus.sending, RunStatus.preparing, RunStatus.paused):
            run.status = RunStatus.cancelled
            run.finished_at = now
            cancel_unsent(session, run.id, now)
            log.info("run %s cancelled", run.id, extra=about(run))
    session.flush()


def current_status(session: Session, run_id: int) -> RunStatus | None:
    """The run's status as committed now (a plain query: workers ask every second)."""
    status = session.scalar(text("SELECT status FROM runs WHERE id = :id"), {"id": run_id})
    return RunStatus(status) if status else None


def may_send(status: RunStatus | None) -> bool:
    """Whether a run in `status` still sends (not paused, cancelled or over)."""
    return status is RunStatus.sending or status is RunStatus.preparing


def recover_stalled(
    session: Session, now: datetime, stall: timedelta, chunk_size: int
) -> tuple[list[int], list[Chunk]]:
    """Runs with no progress for `stall`: their queued tasks were lost (Redis flushed,
    workers killed). Returns runs to prepare again and chunks to enqueue again, rebuilt
    from the ledger; repeats are harmless because rows are claimed, never re-sent."""
    stalled = session.scalars(
        select(Run).where(
            Run.status.in_((RunStatus.preparing, RunStatus.sending)),
            or_(Run.last_progress_at.is_(None), Run.last_progress_at < now - stall),
        )
    ).all()
    prepare, chunks = [], []
    for run in stalled:
        # A resumed run is marked LONG_AGO so that this rebuilds its queue: no stall.
        resumed = run.last_progress_at is not None and run.last_progress_at <= LONG_AGO
        first_stall = not resumed and run.stalled_at is None
        if first_stall:
            run.stalled_at = now
            since = run.last_progress_at.isoformat() if run.last_progress_at else "its start"
            log.info("run %s stalled: no progress since %s", run.id, since, extra=about(run))
            emit(session, "run.stalled", {**about(run), "no_progress_since": since})
        run.last_progress_at = now
        if run.status is RunStatus.preparing:
            prepare.append(run.id)
            found = "prepared again"
        else:
            found_chunks = open_chunks(session, run.id, chunk_size, now)
            chunks.extend(found_chunks)
            found = f"{len(found_chunks)} chunk(s) enqueued again from the ledger"
        log.log(
            logging.INFO if first_stall else logging.DEBUG,
            "run %s recovery: %s",
            run.id,
            found,
            extra=about(run),
        )
    return prepare, chunks


def stalled_runs(session: Session, now: datetime, stall: timedelta) -> list[Run]:
    """Runs that may send but have not moved: found stalled by recovery and without
    progress since, or without progress for `stall` (also when no scheduler runs to
    find them), oldest first."""
    return list(
        session.scalars(
            select(Run)
            .where(
                Run.status.in_((RunStatus.preparing, RunStatus.sending)),
                or_(
                    Run.stalled_at.is_not(None),
                    Run.last_progress_at.is_(None),
                    (Run.last_progress_at < now - stall) & (Run.last_progress_at > LONG_AGO),
                ),
            )
            .order_by(Run.id)
        )
    )


def reopen_for_retry(session: Session, run_id: int) -> Run:
    """A run whose failed rows staff hand back to the ledger sends again: a finished
    run is sending again, marked so that the next scheduler tick enqueues its rows
    (a paused run stays paused; its rows go when it is resumed). InvalidInputError for
    a run that can send nothing again (cancelled, failed before sending, skipped)."""
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"no run {run_id}")
    if run.status in (RunStatus.cancelled, RunStatus.failed, RunStatus.skipped):
        raise InvalidInputError(f"run {run_id} is {run.status.value}: it sends nothing again")
    if run.status in (RunStatus.finished, RunStatus.sending):
        if run.status is RunStatus.finished:
            log.info(
                "run %s reopened: deliveries handed back to send again", run_id, extra=about(run)
            )
        run.status = RunStatus.sending
        run.finished_at = None
        run.last_progress_at = LONG_AGO
    session.flush()
    return run


def record_tick(session: Session, scheduler: str, now: datetime) -> None:
    """The scheduler `scheduler` (host and process) finished a tick at `now`."""
    session.execute(
        upsert_insert(session, SchedulerHeartbeat)
        .values(scheduler=scheduler[:200], ticked_at=now)
        .on_conflict_do_update(index_elements=["scheduler"], set_={"ticked_at": now})
    )


def last_tick(session: Session) -> datetime | None:
    """When any scheduler last finished a tick (None: never)."""
    return session.scalar(select(func.max(SchedulerHeartbeat.ticked_at)))


def sending_runs(session: Session) -> list[int]:
    """Ids of every run now sending (the tick closes those that are done)."""
    return list(session.scalars(select(Run.id).where(Run.status == RunStatus.sending)))
