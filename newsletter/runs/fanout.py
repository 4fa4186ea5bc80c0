"""Fanning a run out: its ledger written page by page, each page enqueued as a chunk.

The audience is the confirmed members of the run's lists (narrowed by a compiled
segment, if any: a reader not matching it now gets no ledger row), scanned by
subscriber id (keyset pagination). Each page is committed before its chunk is enqueued, so a task
never sees an uncommitted row; then the run starts sending.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from newsletter.runs.ledger import (
    AudienceFilter,
    Chunk,
    add_deliveries,
    audience_page,
    count_rows,
    insert_page,
    mark_progress,
    page_bounds,
)
from newsletter.runs.lifecycle import start_sending

# For local-time sends: when an audience row (id, email, timezone, list_id) is due.
DeliverAt = Callable[[Any], datetime]


def fan_out(
    sessions: sessionmaker[Session],
    run_id: int,
    list_ids: Sequence[int],
    chunk_size: int,
    enqueue: Callable[[Chunk], None],
    deliver_at: DeliverAt | None = None,
    where: AudienceFilter | None = None,
) -> int:
    """Write the run's ledger for the lists' confirmed members (those matching `where`,
    if given), enqueueing each page as a chunk after commit; returns the recipient
    count.

    Without `deliver_at` every row is due now (written by the database itself, INSERT
    … SELECT); with it, each row waits as deferred until its own time. Safe to repeat:
    rows that exist are kept, and sending a chunk twice sends nothing new. Ends by
    moving the run from preparing to sending.
    """
    after = 0
    while True:
        with sessions() as session:
            bounds = page_bounds(session, list_ids, after, chunk_size, where)
            if bounds is None:
                break
            if deliver_at is None:
                insert_page(session, run_id, list_ids, *bounds, where)
            else:  # each row's time is computed here, from its zone
                page = audience_page(session, list_ids, *bounds, where)
                add_deliveries(session, run_id, page, deliver_at)
            mark_progress(session, run_id)
            session.commit()
        chunk = Chunk(run_id, *bounds)
        enqueue(chunk)
        after = chunk.last
    with sessions() as session:
        total = count_rows(session, run_id)
        start_sending(session, run_id, total)
        session.commit()
    return total
