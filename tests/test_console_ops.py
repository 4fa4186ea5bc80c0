"""The console's ops page (issues 11 and 13) over real HTTP, without a browser: a run
whose relay refused part of it (aiosmtpd answering 554 to some recipients, through the
real chunk sender), its failed rows page by page, a retry behind a confirmation that
counts them, audited with its reason, sent rows untouched; roles and CSRF. The browser
test (test_console_ops_browser.py) follows the retried rows to the sink."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from lxml import html as lxml_html
from sqlalchemy import select

from newsletter.accounts.models import AuditEntry
from newsletter.accounts.users import create_user
from newsletter.cli.processes import build_app
from newsletter.config import Settings
from newsletter.db import make_engine, make_sessionmaker, utcnow
from newsletter.delivery.mailers import make_mailer
from newsletter.delivery.sending import ChunkSender
from newsletter.runs.models import Delivery, DeliveryStatus, Run
from tests.api_server import PASSWORD, ServerThread
from tests.factories import add_member, import_sample, make_list, series_digest, settings_for
from tests.smtp_sink import SinkHandler, SmtpSink
from tests.test_console import Browser

ADMIN, OPS, ANALYST = "ann@clinic.example", "olu@clinic.example", "alex@clinic.example"
READERS = 130
REFUSED = "554 5.7.1 relay access denied for now"


def refused(address: str) -> bool:
    """reader1, 5, 10-19, 50-59, 100-129: 52 of 130, more than a page (50)."""
    return address.startswith(("reader1", "reader5"))


@dataclass
class Stack:
    url: str
    settings: Settings
    run_id: int


def _send_with_refusals(settings: Settings) -> int:
    engine = make_engine(settings.database_url)
    from tests.factories import start_run

    with make_sessionmaker(engine)() as session:
        for email, role in ((ADMIN, "admin"), (OPS, "ops"), (ANALYST, "analyst")):
            create_user(session, email, role, password=PASSWORD)
        import_sample(session)
        news = make_list(session)
        for i in range(READERS):
            add_member(session, news, f"reader{i}@example.org", f"Reader {i}")
        campaign = series_digest(session, ["clinic-news"])
        session.commit()
        run_id, chunks = start_run(session, campaign)
        sender = ChunkSender(settings, make_mailer(settings.mail_target))
        for chunk in chunks:
            sender.send_chunk(session, chunk, "test-claim")
        sender.close(engine)
    engine.dispose()
    return run_id


@pytest.fixture
def stack(pg_url: str) -> Iterator[Stack]:
    handler = SinkHandler(data_reply=lambda rcpts: REFUSED if refused(rcpts[0]) else None)
    with SmtpSink(handler) as sink:
        broker = os.environ.get("NEWSLETTER_TEST_REDIS_URL", "redis://127.0.0.1:6379") + "/14"
        redis.Redis.from_url(broker).flushdb()
        settings = settings_for(pg_url, mail_url=sink.url, broker_url=broker)
        run_id = _send_with_refusals(settings)
        with ServerThread(build_app(settings)) as server:
            yield Stack(server.url, settings, run_id)


def _rows(settings: Settings) -> dict[str, tuple[str, int, str | None]]:
    with make_sessionmaker(make_engine(settings.database_url))() as session:
        return {
            d.email: (d.status.value, d.attempts, d.message_id)
            for d in session.scalars(select(Delivery))
        }


def _logged_in(url: str, who: str) -> Browser:
    browser = Browser(url)
    assert browser.log_in(who).status_code == 303
    return browser


def test_ops_sees_the_failed_rows_page_by_page_and_retries_them_after_confirming(
    stack: Stack,
) -> None:
    before = _rows(stack.settings)
    failed = sorted(e for e, (status, _, _) in before.items() if status == "failed")
    assert failed == sorted(
        f"reader{i}@example.org" for i in range(READERS) if refused(f"reader{i}")
    )
    assert len(failed) == 52
    ops = _logged_in(stack.url, OPS)

    overview = ops.get("/admin/ops")
    assert overview.status_code == 200
    assert f'data-failed="{stack.run_id}"' in overview.text
    assert "/admin/ops" in re.findall(r"<nav.*?</nav>", overview.text, re.S)[0]
    first = ops.get(f"/admin/ops/runs/{stack.run_id}?status=failed")
    tree = lxml_html.document_fromstring(first.text)
    shown = [tr.findtext("td") for tr in tree.xpath("//table[@id='deliveries']/tbody/tr")]
    assert tree.findtext(".//*[@data-count='failed']") == "52" and len(shown) == 50
    assert all(REFUSED in code.text for code in tree.xpath("//table[@id='deliveries']//code"))
    [more] = tree.xpath("//a[@id='next-page']")
    second = ops.get(more.get("href"))
    shown += [
        tr.findtext("td")
        for tr in lxml_html.document_fromstring(second.text).xpath(
            "//table[@id='deliveries']/tbody/tr"
        )
    ]
    assert sorted(shown) == failed  # 50, then 2: everyone once

    ops.get(f"/admin/ops/runs/{stack.run_id}")
    confirm = ops.post(
        f"/admin/ops/runs/{stack.run_id}/retry/confirm",
        {"status": "failed", "reason": "relay fixed its policy"},
    )
    assert confirm.status_code == 200
    assert "52 failed deliveries of run" in confirm.text
    assert _rows(stack.settings) == before  # nothing happens before the confirmation
    done = ops.post(
        f"/admin/ops/runs/{stack.run_id}/retry",
        {"status": "failed", "reason": "relay fixed its policy"},
        follow_redirects=True,
    )

    assert "52 failed deliveries handed back" in done.text
    after = _rows(stack.settings)
    for email, row in after.items():
        if email in failed:
            assert row[0] == "pending"
        else:
            assert row == before[email] and row[0] == "sent"  # sent rows untouched
    with make_sessionmaker(make_engine(stack.settings.database_url))() as session:
        [entry] = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "deliveries.retry")
        ).all()
        assert entry.actor == f"{OPS} (console)" and entry.via == "session"
        assert entry.detail["requeued"] == 52
        assert entry.detail["reason"] == "relay fixed its policy"
        assert session.get_one(Run, stack.run_id).status.value == "sending"
        assert (
            session.scalar(select(Delivery.id).where(Delivery.status == DeliveryStatus.failed))
            is None
        )
    # Until a scheduler sends them, the reopened run waits on the ops page; once found
    # without progress (as recovery marks it) it is listed as stalled too.
    waiting = lxml_html.document_fromstring(ops.get("/admin/ops").text)
    [row] = waiting.xpath(f"//table[@id='running-runs']//tr[@data-run='{stack.run_id}']")
    assert [td.text_content().strip() for td in row.findall("td")][3] == "52"
    assert waiting.findtext(".//*[@id='oldest-pending']").endswith(" s")
    assert not waiting.xpath("//table[@id='stalled']")
    with make_sessionmaker(make_engine(stack.settings.database_url))() as session:
        session.get_one(Run, stack.run_id).stalled_at = utcnow()
        session.commit()
    stalled = lxml_html.document_fromstring(ops.get("/admin/ops").text)
    [row] = stalled.xpath("//table[@id='stalled']/tbody/tr")
    assert f"Run {stack.run_id}" in row.text_content() and row.findall("td")[3].text == "52"


def test_an_analyst_reads_the_ops_page_but_has_no_retry_and_a_post_is_403(
    stack: Stack,
) -> None:
    analyst = _logged_in(stack.url, ANALYST)
    before = _rows(stack.settings)

    page = analyst.get(f"/admin/ops/runs/{stack.run_id}")
    assert page.status_code == 200 and 'id="retry-form"' not in page.text
    for path in (
        f"/admin/ops/runs/{stack.run_id}/retry/confirm",
        f"/admin/ops/runs/{stack.run_id}/retry",
    ):
        answer = analyst.post(path, {"status": "failed", "reason": "why not"})
        assert answer.status_code == 403 and "deliveries:write" in answer.text

    assert _rows(stack.settings) == before


def test_a_retry_without_its_csrf_token_or_with_a_bad_status_changes_nothing(
    stack: Stack,
) -> None:
    admin = _logged_in(stack.url, ADMIN)
    before = _rows(stack.settings)
    admin.get(f"/admin/ops/runs/{stack.run_id}")

    forged = admin.http.post(
        f"/admin/ops/runs/{stack.run_id}/retry", data={"status": "failed", "reason": "x"}
    )
    sent = admin.post(f"/admin/ops/runs/{stack.run_id}/retry", {"status": "sent"})
    unknown = admin.post("/admin/ops/runs/9999/retry", {"status": "failed"})

    assert forged.status_code == 403 and "security token" in forged.text
    assert sent.status_code == 422 and "status" in sent.text and "Traceback" not in sent.text
    assert unknown.status_code == 404
    assert _rows(stack.settings) == before


def test_the_ops_page_says_when_the_scheduler_never_ticked_and_reads_the_queue(
    stack: Stack,
) -> None:
    ops = _logged_in(stack.url, OPS)

    page = ops.get("/admin/ops")

    tree = lxml_html.document_fromstring(page.text)
    assert tree.findtext(".//*[@id='last-tick']").strip() == "never ticked"
    assert tree.findtext(".//*[@data-queue='newsletter']") == "0"  # read from Redis
    assert tree.findtext(".//*[@id='workers']") == "0"  # no worker runs here
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert not [el for el in tree.iter() if el.get("style")]
