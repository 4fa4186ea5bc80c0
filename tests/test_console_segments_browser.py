"""Segments and webhooks in the console, in real headless Chromium (one browser for the
module) against `newsletter serve`'s app on uvicorn and PostgreSQL: a segment saved
on its page, the composer's rule editor with its live count (and the same count
without JavaScript), an endpoint created, tested and read in its delivery log, and
what an analyst may not do. axe-core finds no violation on any page visited."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from newsletter.accounts.models import AuditEntry
from newsletter.accounts.users import create_user
from newsletter.campaigns.models import Campaign
from newsletter.config import Settings
from newsletter.db import make_engine, make_sessionmaker, utcnow
from newsletter.services import webhooks
from tests.api_server import PASSWORD
from tests.console_browser import LOGINS, ConsolePages, console_in_chromium, screenshot, wait_for
from tests.factories import SERIES, add_member, import_sample, make_list, settings_for
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.slow

ADMIN, ANALYST = "ann@clinic.example", "alex@clinic.example"


@dataclass
class Console(ConsolePages):
    settings: Settings
    sessions: Any
    receiver: Receiver


@pytest.fixture(scope="module")
def console(pg_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    from tests.conftest import _truncate_all

    engine = make_engine(pg_database_url)
    _truncate_all(engine)
    with Receiver(tmp_path_factory.mktemp("receiver")) as receiver:
        settings = settings_for(
            pg_database_url,
            webhooks_allow_private=True,
            webhooks_ca_file=str(receiver.cert),
            **LOGINS,
        )
        sessions = make_sessionmaker(engine)
        with sessions() as session:
            create_user(session, ADMIN, "admin", password=PASSWORD)
            create_user(session, ANALYST, "analyst", password=PASSWORD)
            import_sample(session)
            news = make_list(session)
            for name, city in [("ann", "Oslo"), ("ben", "Bergen"), ("cai", "Oslo"), ("dee", "")]:
                add_member(session, news, f"{name}@example.org", city=city)
            session.commit()
        try:
            with console_in_chromium(settings) as (url, browser):
                yield Console(url, browser, settings, sessions, receiver, check_submitted=True)
        finally:
            engine.dispose()


def test_a_segment_is_saved_on_its_page_and_bad_rules_name_the_problem(console: Console) -> None:
    console.log_in(ADMIN)
    console.open("/admin/segments")
    console.find("#seg-slug").send_keys("oslo")
    console.find("#seg-name").send_keys("Readers in Oslo")
    console.find("#seg-rules").send_keys("attr.city=Oslo and bounce=none")
    console.submit("#segment-form button[type=submit]")
    assert "Segment saved." in console.find("p.notice").text
    row = console.find("tbody tr").text
    assert "attr.city=Oslo and bounce=none" in row and row.rstrip().endswith("2 delete")
    console.find("#seg-slug").send_keys("typo")
    console.find("#seg-rules").send_keys("attr.city ~ Oslo")
    console.submit("#segment-form button[type=submit]")
    assert console.find("#segment-error").text == "unknown operator '~' after 'attr.city'"
    console.open("/admin/segments/oslo")
    assert console.find("#segment-matching").text == "2"
    rules = console.find("#seg-rules")
    rules.clear()
    rules.send_keys("attr.city in (Oslo, Bergen)")
    console.submit("#segment-edit button[type=submit]")
    assert "Segment saved." in console.find("p.notice").text
    assert console.find("#segment-matching").text == "3"


def test_the_composer_counts_readers_live_and_saves_the_segment(console: Console) -> None:
    console.open("/admin/campaigns/new")
    console.find("#name").send_keys("Oslo digest")
    console.find("#list-clinic-news").click()
    console.find("#subject").send_keys("News for Oslo")
    counter = console.find("#segment-count")
    from selenium.webdriver.support.ui import Select

    # Built in the rule rows: one rule, then a second one narrows it.
    console.find("#seg_field_1").send_keys("attr.city")
    Select(console.find("#seg_op_1")).select_by_value("in")
    console.find("#seg_value_1").send_keys("Oslo, Bergen")
    wait_for(console.browser, lambda b: "3 readers match" in counter.text)
    console.find("#seg_field_2").send_keys("attr.city")
    Select(console.find("#seg_op_2")).select_by_value("!=")
    console.find("#seg_value_2").send_keys("Bergen")
    wait_for(console.browser, lambda b: "2 readers match" in counter.text)
    assert "(attr.city in (Oslo, Bergen) and attr.city!=Bergen)" in counter.text
    # The one-line form, when given, is used instead of the rows.
    console.find("#segment_rules").send_keys("attr.city=Bergen")
    wait_for(console.browser, lambda b: "1 reader matches" in counter.text)
    console.find("#segment_rules").clear()
    console.find("#segment_rules").send_keys("attr.city present and not attr.city=Bergen")
    wait_for(console.browser, lambda b: "2 readers match" in counter.text)
    console.check()
    console.submit("#composer button[type=submit]:not(.secondary)")
    assert "Draft saved." in console.find("p.notice").text
    with console.sessions() as session:
        campaign = session.scalars(select(Campaign).where(Campaign.name == "Oslo digest")).one()
        assert campaign.segment_id is not None
        campaign_id = campaign.id
    assert console.find("#segment_rules").get_attribute("value") == (
        "attr.city present and not attr.city=Bergen"
    )
    # Without JavaScript the button posts the form to a page that shows the count.
    console.browser.execute_script("document.getElementById('segment-count-button').click()")
    wait_for(console.browser, lambda b: "/admin/segments/count" in b.current_url)
    console.ready()
    assert "2 readers match" in console.find("#segment-count").text
    console.check()
    console.open(f"/admin/campaigns/{campaign_id}/edit")
    # A saved draft's composer also has the live preview: the count lands in its own
    # line and never in the preview pane, which keeps its two frames.
    counter = console.find("#segment-count")
    wait_for(console.browser, lambda b: "2 readers match" in counter.text)
    wait_for(console.browser, lambda b: len(console.all("#preview iframe")) == 2)
    assert "readers match" not in console.find("#preview").text
    console.find("#segment_rules").clear()
    console.find("#segment_rules").send_keys("attr.city=Bergen")
    wait_for(console.browser, lambda b: "1 reader matches" in counter.text)
    wait_for(console.browser, lambda b: len(console.all("#preview iframe")) == 2)
    assert "reader matches" not in console.find("#preview").text


def test_a_webhook_is_created_tested_and_its_log_shows_the_answer(console: Console) -> None:
    console.open("/admin/webhooks")
    console.find("#hook-url").send_keys(console.receiver.url)
    console.find("#event-all").click()
    console.submit("#webhook-form button[type=submit]")
    secret = console.find("#new-secret").text
    assert secret.startswith("whsec_")
    console.find("tbody a").click()
    console.ready()
    console.check()
    console.submit("#webhook-test")
    assert "Test event queued" in console.find("p.notice").text
    sessions = make_sessionmaker(make_engine(console.settings.database_url))
    with sessions() as session:  # the scheduler's sweep and a worker, in this process
        ids = webhooks.claim_due(session, utcnow())
        session.commit()
    post = webhooks.http_poster(console.settings)
    assert [webhooks.deliver(sessions, i, console.settings, post) for i in ids] == ["delivered"]
    console.browser.refresh()
    console.ready()
    log = console.find("#webhook-log tbody").text
    assert "webhook.test" in log and "delivered (200)" in log and '{"ok": true}' in log
    request = console.receiver.received[-1]
    assert webhooks.verify(secret, request.headers["newsletter-signature"], request.body)
    console.check()
    console.submit("#webhook-disable")
    assert console.find("#webhook-state").text == "disabled: disabled by staff"
    with console.sessions() as session:
        actions = set(session.scalars(select(AuditEntry.action)))
    assert {"segment.create", "webhook.create", "webhook.test", "webhook.disable"} <= actions


def test_a_drip_sequence_can_enrol_only_a_segment(console: Console) -> None:
    from selenium.webdriver.support.ui import Select

    console.open("/admin/sequences")
    Select(console.find("#q-series")).select_by_value(SERIES)
    console.find("#q-every").send_keys("7d")
    Select(console.find("#q-segment")).select_by_value("oslo")
    console.submit("form[action='/admin/sequences'] button[type=submit]")
    assert "Sequence created." in console.find("p.notice").text
    assert "(segment oslo)" in console.find("main h2").text


def test_an_analyst_reads_segments_but_cannot_write_or_open_webhooks(console: Console) -> None:
    console.log_in(ANALYST)
    console.open("/admin/segments")
    assert console.all("#segment-form") == []
    assert "Webhooks" not in console.find("nav").text
    cookies = {c["name"]: c["value"] for c in console.browser.get_cookies()}
    with httpx.Client(base_url=console.url, cookies=cookies) as http:
        assert http.get("/admin/webhooks").status_code == 403
        page = http.get("/admin/segments").text
        token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        refused = http.post(
            "/admin/segments", data={"csrf": token, "slug": "x", "rules": "attr.city=Oslo"}
        )
        assert refused.status_code == 403
        no_token = http.post("/admin/webhooks/1/test", data={})
        assert no_token.status_code == 403


def test_screenshots_of_the_segment_and_webhook_pages(console: Console) -> None:
    console.log_in(ADMIN)
    with console.sessions() as session:
        campaign_id = session.scalars(
            select(Campaign.id).where(Campaign.name == "Oslo digest")
        ).one()
    pages = {
        "segments": "/admin/segments",
        "composer-segment": f"/admin/campaigns/{campaign_id}/edit",
        "webhook": "/admin/webhooks/1",
    }

    def load(name: str, path: str) -> None:
        console.open(path)
        if name == "composer-segment":
            _composer_shown(console)

    shots = [
        screenshot(console.browser, name, width, lambda name=name, path=path: load(name, path))
        for name, path in pages.items()
        for width in (1280, 375)
    ]
    assert len(shots) == 6 and all(shot.stat().st_size > 10_000 for shot in shots)


def _composer_shown(console: Console) -> None:
    """The count in its own line and both preview frames showing the email, so the
    screenshot is of the page as a person sees it once it has settled."""
    wait_for(console.browser, lambda b: "readers match" in console.find("#segment-count").text)
    console.wait_for_preview_frames()


def test_every_page_visited_has_no_axe_violation(console: Console) -> None:
    assert len(console.visited) >= 8
    problems = {path: found for path, found in console.visited.items() if found}
    assert problems == {}, problems
