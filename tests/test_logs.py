"""JSON logs (NEWSLETTER_LOG_FORMAT=json): one object per line, with what a line is
about; the run lifecycle logged once; no address or token in any line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from newsletter.campaigns.runs import claim_due_campaigns
from newsletter.campaigns.service import schedule_campaign
from newsletter.db import utcnow
from newsletter.logs import JsonFormatter, RedactPersonalData, log_context
from newsletter.runs import lifecycle
from tests.factories import add_member, import_sample, make_list, series_digest


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactPersonalData())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_run_starts_and_finishes_once_at_info_with_its_ids(
    session: Session, json_lines: io.StringIO
) -> None:
    import_sample(session)
    add_member(session, make_list(session), "ann@example.org")
    campaign = series_digest(session, ["clinic-news"])
    schedule_campaign(session, campaign.id, utcnow())
    [run_id] = claim_due_campaigns(session, utcnow())
    lifecycle.start_sending(session, run_id, 1)
    lifecycle.start_sending(session, run_id, 1)  # a repeat changes nothing, logs nothing
    session.execute(
        lifecycle.update(lifecycle.Run).where(lifecycle.Run.id == run_id).values(recipients=1)
    )
    from newsletter.runs.models import Delivery

    session.query(Delivery).delete()
    assert lifecycle.finish_if_done(session, run_id)
    assert not lifecycle.finish_if_done(session, run_id)

    found = [r for r in records(json_lines) if r["logger"] == "newsletter.runs.lifecycle"]
    assert [r["message"] for r in found] == [
        f"run {run_id} started: sending to 1 recipients",
        f"run {run_id} finished",
    ]
    for record in found:
        assert record["level"] == "INFO"
        assert record["run_id"] == run_id and record["campaign_id"] == campaign.id


def test_task_context_and_redaction(json_lines: io.StringIO) -> None:
    log = logging.getLogger("newsletter.test")
    with log_context(task_id="abc-123", run_id=7, chunk="1-500"):
        log.info("sent to ann.lee@example.org via /unsubscribe/eyJzIjo.abc?x=1")
    log.info("outside")
    inside, outside = records(json_lines)
    assert inside["task_id"] == "abc-123" and inside["run_id"] == 7 and inside["chunk"] == "1-500"
    assert inside["message"] == "sent to a…@example.org via /unsubscribe/[token]?x=1"
    assert "task_id" not in outside
