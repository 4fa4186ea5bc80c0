"""Recording a hit: one event, its rollup row, the message's firsts, the ledger.

Every genuine hit is recorded, a machine's too (labelled, with its reason): nothing
is dropped, and reports show human and machine side by side. Per hit, in one
transaction:

1. the raw event (kind, run, link, list, ledger row in individual mode, time, user
   agent class, machine flag and reason, a day-salted client hash; no IP address);
2. its rollup row (run, list, kind, link, hour; a day after the run's first two days)
   gains one, human or machine: the counts that outlive pruned events;
3. the message's firsts (`TrackedMessage`, and `TrackedMessageLink` for a click):
   when it was first opened or clicked by a human, and by a machine;
4. in individual mode the ledger row's first open / first click: a machine's first
   event is replaced by a later human one ("a later human event upgrades").

Then, for a click, in a second transaction (so that concurrent clicks of one scanner
see each other): if the message's clicks within the burst window cover three links (or
all of them, when fewer but at least two), they are all relabelled machine, and the
counts and firsts are corrected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from newsletter.db import upsert_insert, utcnow
from newsletter.runs.models import Delivery, Run
from newsletter.tracking.classify import Verdict, classify, client_hash
from newsletter.tracking.models import (
    NO_LINK,
    EventKind,
    TrackedLink,
    TrackedMessage,
    TrackedMessageLink,
    TrackingEvent,
    TrackingRollup,
)
from newsletter.tracking.tokens import PIXEL, TrackedHit

HOURLY_FOR = timedelta(days=2)  # rollups are hourly this long after a run starts, then daily
BURST_LINKS = 3


@dataclass(frozen=True)
class HitRequest:
    """What the web request says, and nothing more is kept of it than its class."""

    method: str
    user_agent: str
    headers: Mapping[str, str]  # lower-case names
    client_address: str


@dataclass(frozen=True)
class TrackingConfig:
    secret_key: str
    machine_seconds: float
    burst_seconds: float


def bucket_for(started: datetime, at: datetime) -> datetime:
    """The rollup bucket of a hit at `at` for a run started at `started`."""
    if at - started < HOURLY_FOR:
        return at.replace(minute=0, second=0, microsecond=0)
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def record_hit(
    session: Session,
    hit: TrackedHit,
    kind: EventKind,
    request: HitRequest,
    config: TrackingConfig,
    now: datetime | None = None,
) -> str | None:
    """Record the hit and commit. Returns where a click goes ("" for an open), or None
    when the token names no link or run of ours (answer 404, nothing counted)."""
    now = now or utcnow()
    run = session.get(Run, hit.run_id)
    if run is None:
        return None
    destination = ""
    if kind is EventKind.click:
        link = session.get(TrackedLink, hit.link_id)
        if link is None or link.run_id != run.id:
            return None
        destination = link.destination
    elif hit.link_id != PIXEL:
        return None
    if hit.individual:
        delivery = session.get(Delivery, hit.ident)
        if delivery is None or delivery.run_id != run.id:
            # A forgotten reader's old email: the link still works, nothing is counted.
            return destination
    seconds = (now - datetime.fromtimestamp(hit.sent_at, UTC)).total_seconds()
    verdict = classify(
        request.method,
        request.user_agent,
        request.headers,
        seconds if hit.sent_at else None,
        config.machine_seconds,
    )
    event = _add_event(session, run, hit, kind, verdict, request, config, now)
    _count(session, event, human=0 if event.machine else 1, machine=1 if event.machine else 0)
    _firsts(session, event, hit.delivery_id)
    session.commit()
    if kind is EventKind.click and config.burst_seconds > 0:
        _relabel_burst(session, event, config.burst_seconds)
        session.commit()
    return destination


def _add_event(
    session: Session,
    run: Run,
    hit: TrackedHit,
    kind: EventKind,
    verdict: Verdict,
    request: HitRequest,
    config: TrackingConfig,
    now: datetime,
) -> TrackingEvent:
    event = TrackingEvent(
        run_id=run.id,
        kind=kind,
        link_id=hit.link_id if kind is EventKind.click else None,
        list_id=hit.list_id,
        delivery_id=hit.delivery_id,
        message_key=hit.message_key,
        occurred_at=now,
        bucket=bucket_for(run.started_at or run.created_at, now),
        user_agent_class=verdict.user_agent_class,
        machine=verdict.machine,
        machine_reason=verdict.machine_reason[:200],
        client_hash=client_hash(config.secret_key, request.client_address, now)
        if request.client_address
        else "",
    )
    session.add(event)
    session.flush()
    return event


def _count(session: Session, event: TrackingEvent, human: int, machine: int) -> None:
    """Add to the event's rollup row (created on first use)."""
    insert = upsert_insert(session, TrackingRollup)
    statement = insert.values(
        run_id=event.run_id,
        list_id=event.list_id,
        kind=event.kind,
        link_id=event.link_id or NO_LINK,
        bucket=event.bucket,
        human=human,
        machine=machine,
    ).on_conflict_do_update(
        index_elements=["run_id", "list_id", "kind", "link_id", "bucket"],
        set_={
            "human": TrackingRollup.human + insert.excluded.human,
            "machine": TrackingRollup.machine + insert.excluded.machine,
        },
    )
    session.execute(statement)


def _message(session: Session, event: TrackingEvent, delivery_id: int | None) -> TrackedMessage:
    session.execute(
        upsert_insert(session, TrackedMessage)
        .values(
            run_id=event.run_id,
            message_key=event.message_key,
            list_id=event.list_id,
            delivery_id=delivery_id,
        )
        .on_conflict_do_nothing()
    )
    return session.scalars(
        select(TrackedMessage).where(
            TrackedMessage.run_id == event.run_id,
            TrackedMessage.message_key == event.message_key,
        )
    ).one()


def _first(session: Session, model: type, row_id: int, column: str, at: datetime) -> None:
    """Set `column` to `at` unless it holds an earlier time."""
    field = getattr(model, column)
    session.execute(
        update(model)
        .where(model.id == row_id, (field.is_(None)) | (field > at))  # type: ignore[attr-defined]
        .values({column: at})
        .execution_options(synchronize_session=False)
    )


def _firsts(session: Session, event: TrackingEvent, delivery_id: int | None) -> None:
    message = _message(session, event, delivery_id)
    prefix = "machine_" if event.machine else ""
    column = f"{prefix}{'opened' if event.kind is EventKind.open else 'clicked'}_at"
    _first(session, TrackedMessage, message.id, column, event.occurred_at)
    if event.kind is EventKind.click and event.link_id is not None:
        session.execute(
            upsert_insert(session, TrackedMessageLink)
            .values(message_id=message.id, link_id=event.link_id, run_id=event.run_id)
            .on_conflict_do_nothing()
        )
        link_row = session.scalars(
            select(TrackedMessageLink).where(
                TrackedMessageLink.message_id == message.id,
                TrackedMessageLink.link_id == event.link_id,
            )
        ).one()
        _first(session, TrackedMessageLink, link_row.id, f"{prefix}clicked_at", event.occurred_at)
    if delivery_id is not None:
        _ledger_first(session, delivery_id, event.kind, event.machine, event.occurred_at)
    session.expire_all()


def _ledger_first(
    session: Session, delivery_id: int, kind: EventKind, machine: bool, at: datetime
) -> None:
    """The ledger row's first open or click: a human's replaces a machine's."""
    at_column = Delivery.first_open_at if kind is EventKind.open else Delivery.first_click_at
    flag = Delivery.first_open_machine if kind is EventKind.open else Delivery.first_click_machine
    condition: Any = at_column.is_(None)
    if not machine:
        condition = condition | flag.is_(True) | (at_column > at)
    session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, condition)
        .values({at_column.key: at, flag.key: machine})
        .execution_options(synchronize_session=False)
    )


# --- bursts: a scanner following every link -------------------------------------------


def _relabel_burst(session: Session, event: TrackingEvent, burst_seconds: float) -> None:
    since = event.occurred_at - timedelta(seconds=burst_seconds)
    recent = list(
        session.scalars(
            select(TrackingEvent).where(
                TrackingEvent.run_id == event.run_id,
                TrackingEvent.message_key == event.message_key,
                TrackingEvent.kind == EventKind.click,
                TrackingEvent.occurred_at >= since,
            )
        )
    )
    clicked = {e.link_id for e in recent}
    links = session.scalar(
        select(func.count()).select_from(TrackedLink).where(TrackedLink.run_id == event.run_id)
    )
    needed = min(BURST_LINKS, int(links or 0))
    if needed < 2 or len(clicked) < needed:
        return
    reason = f"{len(clicked)} links of one message clicked within {burst_seconds:g} s"
    for found in recent:
        if not found.machine:
            relabel(session, found, reason)


def relabel(session: Session, event: TrackingEvent, reason: str) -> bool:
    """Make a human event a machine's (once, whoever races): counts and firsts follow."""
    changed = session.execute(
        update(TrackingEvent)
        .where(TrackingEvent.id == event.id, TrackingEvent.machine.is_(False))
        .values(machine=True, machine_reason=reason[:200])
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.execute(
        update(TrackingRollup)
        .where(
            TrackingRollup.run_id == event.run_id,
            TrackingRollup.list_id == event.list_id,
            TrackingRollup.kind == event.kind,
            TrackingRollup.link_id == (event.link_id or NO_LINK),
            TrackingRollup.bucket == event.bucket,
        )
        .values(human=TrackingRollup.human - 1, machine=TrackingRollup.machine + 1)
        .execution_options(synchronize_session=False)
    )
    session.expire_all()
    _refirst(session, event)
    return True


def _human_clicks(session: Session, event: TrackingEvent, link_id: int | None) -> datetime | None:
    query = select(func.min(TrackingEvent.occurred_at)).where(
        TrackingEvent.run_id == event.run_id,
        TrackingEvent.message_key == event.message_key,
        TrackingEvent.kind == EventKind.click,
        TrackingEvent.machine.is_(False),
    )
    if link_id is not None:
        query = query.where(TrackingEvent.link_id == link_id)
    return session.scalar(query)


def _refirst(session: Session, event: TrackingEvent) -> None:
    """Firsts after `event` (a click) turned out a machine's: a human first that was
    this event becomes the next human click, if any; the machine first takes it."""
    at = event.occurred_at
    message = session.scalars(
        select(TrackedMessage).where(
            TrackedMessage.run_id == event.run_id,
            TrackedMessage.message_key == event.message_key,
        )
    ).one_or_none()
    if message is None:
        return
    rows: list[tuple[TrackedMessage | TrackedMessageLink, int | None]] = [(message, None)]
    link_row = session.scalars(
        select(TrackedMessageLink).where(
            TrackedMessageLink.message_id == message.id,
            TrackedMessageLink.link_id == event.link_id,
        )
    ).one_or_none()
    if link_row is not None:
        rows.append((link_row, event.link_id))
    for row, link_id in rows:
        if row.clicked_at is not None and row.clicked_at >= at:
            row.clicked_at = _human_clicks(session, event, link_id)
        if row.machine_clicked_at is None or row.machine_clicked_at > at:
            row.machine_clicked_at = at
    if message.delivery_id is not None:
        delivery = session.get(Delivery, message.delivery_id)
        if (
            delivery is not None
            and delivery.first_click_at is not None
            and not delivery.first_click_machine
            and delivery.first_click_at >= at
        ):
            human = _human_clicks(session, event, None)
            delivery.first_click_at = human or message.machine_clicked_at
            delivery.first_click_machine = human is None
    session.flush()
