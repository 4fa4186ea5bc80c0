"""The report and ops pages in a real browser (issues 11, 12, 13).

Headless Chromium (tests/console_browser.py) against `newsletter serve`'s app on
uvicorn, PostgreSQL, a private Redis, a real Celery worker process, a real scheduler
process and an aiosmtpd sink that refuses part of the first send with 554. Readers'
opens and clicks are recorded from the emails the sink received, by the function the
public routes call. Then: an analyst reads the report (axe-core, 375 px, screenshots);
ops retries the refused deliveries from the ops page and each of those readers
reaches the sink exactly once, sent rows untouched; an analyst has no retry button
and their POST is refused.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from newsletter.accounts.users import create_user
from newsletter.audience.models import TrackingMode
from newsletter.campaigns.service import schedule_campaign
from newsletter.config import Settings
from newsletter.db import utcnow
from newsletter.runs.models import Delivery, Run, RunStatus
from newsletter.tracking.models import EventKind
from tests.api_server import PASSWORD
from tests.console_browser import (
    ConsolePages,
    console_in_chromium,
    page_width,
    screenshot,
    sending_stack,
    set_width,
    wait_for,
)
from tests.factories import (
    BROWSER,
    PIXEL,
    SCANNER,
    TRACKED,
    hit,
    html_of,
    series_digest,
    tracked_readers,
)
from tests.smtp_sink import SinkHandler, SmtpSink

pytestmark = pytest.mark.slow

ADMIN, OPS, ANALYST = "ann@clinic.example", "olu@clinic.example", "alex@clinic.example"
READERS = 30
REFUSED = "554 5.7.1 relay access denied for now"


def refused(address: str) -> bool:
    """reader1 and reader10-19: 11 of 30."""
    return address.startswith("reader1")


@dataclass
class Stack(ConsolePages):
    settings: Settings
    sink: SmtpSink
    refusing: dict[str, bool]
    sessions: Any
    campaign_id: int = 0
    run_id: int = 0

    def ledger(self) -> dict[str, tuple[Any, ...]]:
        with self.sessions() as session:
            return {
                d.email: (d.status.value, d.attempts, d.message_id, d.sent_at)
                for d in session.scalars(select(Delivery).where(Delivery.run_id == self.run_id))
            }


def _wait_until(condition: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _prepare(sessions: Any) -> int:
    with sessions() as session:
        for email, role in ((ADMIN, "admin"), (OPS, "ops"), (ANALYST, "analyst")):
            create_user(session, email, role, password=PASSWORD)
        tracked_readers(session, TrackingMode.individual, readers=READERS)
        campaign = series_digest(session, ["clinic-news"])
        schedule_campaign(session, campaign.id, utcnow())
        session.commit()
        return campaign.id


def _readers_open_and_click(stack: Stack) -> None:
    """A person (reader0), a link checker's HEAD (reader2), a scanner (reader3)."""
    mail = {r.recipient: html_of(r.message) for r in stack.sink.handler.received}

    def hit_by(reader: int, kind: EventKind, agent: str = BROWSER, method: str = "GET") -> None:
        html = mail[f"reader{reader}@example.org"]
        token = (PIXEL if kind is EventKind.open else TRACKED).findall(html)[0]
        with stack.sessions() as session:
            hit(session, stack.settings, token, kind, agent, method)

    hit_by(0, EventKind.open)
    hit_by(0, EventKind.click)
    hit_by(2, EventKind.click, method="HEAD")
    hit_by(3, EventKind.open, agent=SCANNER)
    hit_by(3, EventKind.click, agent=SCANNER)
    hit_by(4, EventKind.open)


@pytest.fixture(scope="module")
def stack(pg_database_url: str) -> Iterator[Stack]:
    refusing = {"on": True}

    def relay(recipients: list[str]) -> str | None:
        return REFUSED if refusing["on"] and recipients and refused(recipients[0]) else None

    handler = SinkHandler(data_reply=relay)
    with sending_stack(pg_database_url, handler, tracking_machine_seconds=0) as running:
        settings, sink, sessions = running
        campaign_id = _prepare(sessions)
        with console_in_chromium(settings) as (url, browser):
            stack = Stack(url, browser, settings, sink, refusing, sessions, campaign_id)

            def finished() -> bool:
                with sessions() as session:
                    run = session.scalar(select(Run).where(Run.campaign_id == campaign_id))
                    if run is not None:
                        stack.run_id = run.id
                    return run is not None and run.status is RunStatus.finished

            _wait_until(finished, "the first send to finish")
            _readers_open_and_click(stack)
            yield stack


def test_the_report_page_reads_well_in_chromium_at_1280_and_375(stack: Stack) -> None:
    stack.log_in(ANALYST, check=False)
    stack.open(f"/admin/campaigns/{stack.campaign_id}")
    stack.submit("#report-link")
    stack.check()

    def metric(path: str) -> str:
        return str(stack.find(f"[data-metric='{path}']").text)

    assert stack.browser.title.startswith("Report of “Series digest”")
    assert metric("delivery.recipients") == str(READERS)
    assert metric("delivery.sent") == str(READERS - 11)
    assert metric("delivery.failed") == "11"
    assert metric("opens.unique.human") == "2" and metric("opens.unique.machine") == "1"
    assert metric("clicks.unique.human") == "1" and metric("clicks.unique.machine") == "2"
    assert metric("opens.rate") == "10.5 %"  # 2 of 19 delivered
    assert "Apple Mail Privacy Protection" in stack.find("#limits").text
    assert len(stack.all("figure.chart svg")) == 3
    # The link map: the email as sent, in its sandboxed frame, with the clicks.
    stack.browser.switch_to.frame(stack.find("#link-map"))
    wait_for(stack.browser, lambda b: "human ·" in stack.find("body").text)
    stack.browser.switch_to.default_content()

    set_width(stack.browser, 375)
    assert page_width(stack.browser) <= 375, "the report scrolls sideways at 375 px"
    after = stack.browser.execute_script(
        "const w = document.getElementById('h-after').parentElement;"
        "return [w.scrollWidth, w.clientWidth]"
    )
    assert after[0] <= after[1], "the counts after sending are off to the side at 375 px"
    address = stack.find("#links td code").size["width"]
    assert address >= 150, f"a link's address is squeezed to {address} px at 375 px"
    stack.check()
    set_width(stack.browser, 1280, dark=True)
    stack.check()
    set_width(stack.browser, 1280)
    stack.open(f"/admin/campaigns/{stack.campaign_id}/report/who-clicked")
    assert [e.text for e in stack.all("[data-reader]")] == ["reader0@example.org"]

    path = f"/admin/campaigns/{stack.campaign_id}/report"
    shots = [
        screenshot(stack.browser, "report", width, lambda: stack.open(path, check=False))
        for width in (1280, 375)
    ]
    assert all(shot.stat().st_size > 10_000 for shot in shots)
    broken = {page: found for page, found in stack.visited.items() if found}
    assert broken == {}, broken


def test_ops_retries_the_refused_deliveries_and_each_arrives_once(stack: Stack) -> None:
    before = stack.ledger()
    failed = sorted(e for e, row in before.items() if row[0] == "failed")
    assert failed == sorted(
        f"reader{i}@example.org" for i in range(READERS) if refused(f"reader{i}")
    )
    stack.refusing["on"] = False  # the relay fixed its policy
    stack.log_in(OPS, check=False)
    assert stack.all("nav a[href='/admin/ops']")
    stack.open("/admin/ops")
    assert stack.find(f"[data-failed='{stack.run_id}']").text == "11"
    assert stack.find("#last-tick").text.endswith(" s")  # the scheduler ticks
    assert stack.find("#workers").text == "1"
    shots = [
        screenshot(stack.browser, "ops", width, lambda: stack.open("/admin/ops", check=False))
        for width in (1280, 375)
    ]
    stack.submit(f"[data-failed='{stack.run_id}']")
    stack.check()
    rows = [r.text for r in stack.all("#deliveries tbody tr td:first-child")]
    assert sorted(rows) == failed
    set_width(stack.browser, 375)
    assert page_width(stack.browser) <= 375, "the run's deliveries scroll sideways at 375 px"
    set_width(stack.browser, 1280)
    run_page = f"/admin/ops/runs/{stack.run_id}?status=failed"
    shots += [
        screenshot(stack.browser, "ops-run", width, lambda: stack.open(run_page, check=False))
        for width in (1280, 375)
    ]

    stack.find("#retry-reason").send_keys("relay fixed its policy")
    stack.submit("#retry-failed")
    assert "11 failed deliveries of run" in stack.find("#retry-count").text
    stack.check()
    assert stack.ledger() == before  # nothing until confirmed
    stack.submit("#confirm-retry")
    assert "11 failed deliveries handed back" in stack.find("p.notice").text
    stack.check()

    def all_arrived() -> bool:
        return sorted(set(stack.sink.handler.recipients())) == sorted(before)

    _wait_until(all_arrived, "the retried deliveries to reach the sink")
    with stack.sessions() as session:
        _wait_until(
            lambda: (
                session.get_one(Run, stack.run_id, populate_existing=True).status
                is RunStatus.finished
            ),
            "the run to finish again",
        )
    received = Counter(stack.sink.handler.recipients())
    assert all(count == 1 for count in received.values()), received
    after = stack.ledger()
    for email, row in after.items():
        if email in failed:
            assert row[0] == "sent" and row[1] == 2
        else:
            assert row == before[email]  # sent rows untouched
    assert all(shot.stat().st_size > 10_000 for shot in shots)
    broken = {page: found for page, found in stack.visited.items() if found}
    assert broken == {}, broken


def test_an_analyst_sees_no_retry_button_and_their_post_is_refused(stack: Stack) -> None:
    stack.log_in(ANALYST, check=False)
    stack.open(f"/admin/ops/runs/{stack.run_id}")

    assert stack.all("#retry-form") == [] and stack.all("#retry-failed") == []
    status = stack.browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const csrf = document.querySelector("input[name=csrf]").value;
        fetch(arguments[0], {method: "POST", body: new URLSearchParams(
            {csrf, status: "failed", reason: "curious"})}).then(r => done(r.status));
        """,
        f"/admin/ops/runs/{stack.run_id}/retry",
    )
    assert status == 403
    # Last (its steps would reach the sink): a drip sequence's funnel page.
    from newsletter.sequences.service import create_sequence
    from tests.factories import SERIES

    with stack.sessions() as session:
        sequence = create_sequence(session, series_slug=SERIES, list_slug="clinic-news", every="7d")
        session.commit()
        sequence_id = sequence.id
    stack.open("/admin/sequences")
    stack.submit(f"a[href='/admin/sequences/{sequence_id}/report']")
    assert stack.browser.title.startswith("Funnel of")
    stack.check()
    broken = {page: found for page, found in stack.visited.items() if found}
    assert broken == {}, broken
