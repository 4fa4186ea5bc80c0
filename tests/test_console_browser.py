"""The staff console in a real browser, end to end.

Headless Chromium (Debian's chromium and chromium-driver, through Selenium; one
browser for the module) against `newsletter serve`'s app on a real uvicorn server,
PostgreSQL, a private Redis, a real Celery worker process, a real scheduler process
and an aiosmtpd sink. The tests run in order, as one member of staff's morning:
log in, build a list by importing a CSV (a dry run first), import the articles and
reorder their series, compose a digest and watch its preview, test-send it and read
it from the sink, schedule it, watch it finish, and ask "did this reader get it?".
Then other roles try what they may not do. axe-core checks every page it visits;
the main pages must not scroll sideways at 375 px; screenshots of home, calendar,
composer and campaign pages at 1280 and 375 px go to test-artifacts/console/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from sqlalchemy import select

from newsletter.accounts.models import AuditEntry
from newsletter.accounts.users import create_user
from newsletter.audience.models import Subscriber
from newsletter.audience.subscriptions import suppress_address
from newsletter.campaigns.models import Campaign
from newsletter.campaigns.service import (
    ContentSpec,
    create_campaign,
    schedule_campaign,
    schedule_recurring,
    update_campaign,
)
from newsletter.config import Settings
from newsletter.db import utcnow
from tests.api_server import PASSWORD
from tests.console_browser import (
    ConsolePages,
    console_in_chromium,
    page_gone,
    page_width,
    screenshot,
    sending_stack,
    set_width,
    wait_for,
)
from tests.factories import POSTAL_ADDRESS, SAMPLE_ARTICLES, SERIES, wrong_totp_code
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.slow

ADMIN, SENDER, ANALYST = "ann@clinic.example", "sam@clinic.example", "alex@clinic.example"
READERS = 30
SUPPRESSED = "reader7@example.org"


@dataclass
class Console(ConsolePages):
    """The running stack and the browser looking at it."""

    settings: Settings
    sink: SmtpSink
    sessions: Any
    campaign_id: int = 0
    draft_id: int = 0

    def session(self) -> Any:
        return self.sessions()


@pytest.fixture(scope="module")
def console(pg_database_url: str) -> Iterator[Console]:
    with sending_stack(pg_database_url) as (settings, sink, sessions):
        with sessions() as session:
            create_user(session, ADMIN, "admin", password=PASSWORD)
            create_user(session, SENDER, "sender", password=PASSWORD)
            create_user(session, ANALYST, "analyst", password=PASSWORD)
            session.commit()
        with console_in_chromium(settings) as (url, browser):
            yield Console(url, browser, settings, sink, sessions)


def test_logging_in_opens_the_home_page_that_says_what_needs_attention(console: Console) -> None:
    console.open("/admin/")  # not logged in: sent to the login page, then back

    assert "/admin/login?next=/admin/" in console.browser.current_url
    console.check()
    console.find("#email").send_keys(ADMIN)
    console.find("#password").send_keys("wrong password, long enough")
    console.submit("form.stack button[type=submit]")
    assert "wrong" in console.find("#login-error").text
    console.find("#password").send_keys(PASSWORD)
    console.submit("form.stack button[type=submit]")

    assert console.browser.current_url.endswith("/admin/")
    assert console.browser.title.startswith("Home")
    assert "Nothing is sending" in console.find("#running").text
    console.check()


def _write_csv(tmp: Path) -> Path:
    rows = ["email,name,city"]
    rows += [f"reader{i}@example.org,Reader {i},Springfield" for i in range(READERS)]
    rows += ["not-an-address,Broken Row,Nowhere", "reader3@example.org,Twice,Springfield"]
    path = tmp / "readers.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_csv_import_is_a_dry_run_first_then_a_background_import_with_progress(
    console: Console, tmp_path_factory: pytest.TempPathFactory
) -> None:
    console.open("/admin/lists")
    console.find("#l-slug").send_keys("clinic-news")
    console.find("#l-name").send_keys("Clinic news")
    console.submit("form[action='/admin/lists'] button")
    assert "clinic-news created" in console.notice()
    csv_file = _write_csv(tmp_path_factory.mktemp("csv"))

    console.open("/admin/imports/new?list=clinic-news")
    console.find("#i-file").send_keys(str(csv_file))
    console.submit("form[action='/admin/imports/dry-run'] button")

    assert "dry run" in console.find("#import-status").text
    assert console.find("#count-created").text == str(READERS)
    assert console.find("#count-rejected").text == "2"
    rejected = console.find("table").text
    assert "row 32" in rejected and "not-an-address" in rejected
    assert "duplicate of row 5" in rejected
    console.check()
    with console.session() as session:  # a dry run changes nothing
        assert session.scalar(select(Campaign.id)) is None
    console.submit("#import-for-real")

    assert "Import started" in console.notice()
    wait_for(console.browser, lambda b: console.find("#import-status").text == "finished", 60)
    assert console.find("#count-created").text == str(READERS)
    assert "30 of 30 rows saved" in console.find("#import-progress").text
    link = console.find("a[href$='rejected.csv']").get_attribute("href")
    assert link.endswith("/rejected.csv")
    console.check()
    with console.session() as session:
        suppress_address(session, SUPPRESSED, "manual", "asked on the phone")
        session.commit()


def test_imported_articles_form_a_series_that_reorders_from_the_keyboard(
    console: Console,
) -> None:
    from selenium.webdriver.common.keys import Keys

    console.open("/admin/articles")
    files = sorted(str(p) for p in SAMPLE_ARTICLES.glob("*.md"))
    console.find("#md-files").send_keys("\n".join(files))
    console.submit("form[action='/admin/articles/import'] button")
    assert console.notice().startswith("5 created")
    console.check()

    console.open(f"/admin/series/{SERIES}")
    before = [li.get_attribute("data-slug") for li in console.all("#series-order li")]
    down = console.all("#series-order li")[0].find_element("css selector", "button[value='1']")
    old = console.find("html")
    down.send_keys(Keys.ENTER)  # the keyboard way: focus "Down", press Enter
    wait_for(console.browser, lambda b: page_gone(old))

    items = console.all("#series-order li")
    assert [li.get_attribute("data-slug") for li in items] == [before[1], before[0], *before[2:]]
    first_title = items[0].find_element("css selector", ".title a").text
    assert f"previous: {first_title}" in items[1].text  # as readers will see it
    console.check()
    # Put it back by dragging: the first item dropped below the second (console.js,
    # loaded from /admin/static under the CSP, rewrites the order the form posts).
    console.browser.execute_script(DRAG, *console.all("#series-order li")[:2])
    assert console.find("#order-field").get_attribute("value") == ",".join(before)
    console.submit("#save-order")
    assert [li.get_attribute("data-slug") for li in console.all("#series-order li")] == before


# HTML5 drag and drop as a browser fires it: dragstart on the item, dragover on the
# target's lower half, drop, dragend.
DRAG = """
const [item, target] = arguments;
const data = new DataTransfer();
const box = target.getBoundingClientRect();
const at = {bubbles: true, cancelable: true, dataTransfer: data,
            clientX: box.left + 5, clientY: box.bottom - 2};
item.dispatchEvent(new DragEvent("dragstart", {bubbles: true, dataTransfer: data}));
target.dispatchEvent(new DragEvent("dragover", at));
target.dispatchEvent(new DragEvent("drop", at));
item.dispatchEvent(new DragEvent("dragend", {bubbles: true, dataTransfer: data}));
"""


def test_the_composer_preview_follows_the_subject_and_a_test_reaches_the_sink(
    console: Console,
) -> None:
    console.open("/admin/campaigns/new")
    console.find("#name").send_keys("Series digest")
    console.find("#list-clinic-news").click()
    console.find("#subject").send_keys("{{ slot('name', 'friend') }}, the series")
    console.find("#kind-series").click()
    from selenium.webdriver.support.ui import Select

    Select(console.find("#series")).select_by_value(SERIES)
    console.submit("form#composer button[type=submit]")
    assert "Draft saved" in console.notice()
    console.campaign_id = int(re.findall(r"/campaigns/(\d+)/edit", console.browser.current_url)[0])
    wait_for(console.browser, lambda b: "Alex, the series" in console.find("#preview").text)
    frames = console.all("#preview iframe")
    assert [f.get_attribute("title") for f in frames] == [
        "Desktop preview, 600 px",
        "Mobile preview, 375 px",
    ]
    console.check()

    subject = console.find("#subject")
    subject.clear()
    subject.send_keys("{{ slot('name', 'friend') }}, your December reading")
    wait_for(
        console.browser, lambda b: "Alex, your December reading" in console.find("#preview").text
    )
    console.browser.switch_to.frame(console.all("#preview iframe")[0])
    assert "What happens at an infusion appointment" in console.find("body").text
    console.browser.switch_to.default_content()
    console.submit("form#composer button[type=submit]")  # save the new subject

    console.open(f"/admin/campaigns/{console.campaign_id}")
    console.find("#test-to").send_keys("editor@clinic.example")
    console.submit("form[action$='/test'] button")

    assert "Test sent" in console.notice() and "250" in console.notice()
    [received] = [
        r for r in console.sink.handler.received if r.recipient == "editor@clinic.example"
    ]
    assert received.message["Subject"] == "[Test] Alex, your December reading"
    html = received.message.get_body(("html",)).get_content()
    assert "What happens at an infusion appointment" in html


def test_scheduling_confirms_the_recipients_and_progress_reaches_finished(
    console: Console,
) -> None:
    console.open(f"/admin/campaigns/{console.campaign_id}")
    console.submit("#schedule-button")
    assert console.browser.current_url.endswith("/schedule")
    console.check()
    console.submit("form[action$='/schedule/confirm'] button")

    # Thirty people on the list, one of them suppressed: 29 will get it.
    assert console.find("#recipient-count").text == f"{READERS - 1} recipients"
    console.check()
    console.submit("#confirm-schedule")
    assert "scheduled for" in console.notice()

    wait_for(
        console.browser,
        lambda b: any(e.text == "finished" for e in console.all("[data-run-status]")),
        120,
    )
    assert console.find("[data-count='sent']").text == str(READERS - 1)
    console.open(f"/admin/campaigns/{console.campaign_id}")
    assert console.find("#campaign-status").text == "finished"
    readers = [r for r in console.sink.handler.recipients() if r.startswith("reader")]
    assert len(readers) == READERS - 1 and SUPPRESSED not in readers


def test_looking_up_one_recipient_shows_sent_with_the_smtp_reply(console: Console) -> None:
    console.open(f"/admin/campaigns/{console.campaign_id}")
    console.find("#lookup-email").send_keys("Reader12@Example.org")
    console.find("form[action$='/lookup'] button").click()

    wait_for(console.browser, lambda b: console.all("#lookup-result"))
    assert console.find("[data-delivery-status]").text == "sent"
    assert console.find("[data-smtp-reply]").text.startswith("250")
    console.check()
    console.find("#lookup-email").clear()
    console.find("#lookup-email").send_keys(SUPPRESSED)
    console.find("form[action$='/lookup'] button").click()
    wait_for(console.browser, lambda b: "suppressed" in console.find("#lookup").text)


def test_every_write_of_the_morning_is_in_the_audit_log(console: Console) -> None:
    console.open("/admin/audit")

    table = console.find("#audit-table").text
    for action in (
        "list.create",
        "subscribers.import_dry_run",
        "subscribers.import",
        "articles.import",
        "series.reorder",
        "campaign.create",
        "campaign.update",
        "campaign.test_send",
        "campaign.schedule",
        "session.login",
    ):
        assert action in table, action
    lines = console.browser.execute_script(
        "return [...document.querySelectorAll('#audit-table tbody td:nth-child(3) code')]"
        ".map(e => [e.textContent, e.getClientRects().length])"
    )
    assert lines and all(n == 1 for _action, n in lines), f"actions broken over lines: {lines}"
    with console.session() as session:
        actors = set(session.scalars(select(AuditEntry.actor)))
    assert f"{ADMIN} (console)" in actors


def test_a_sender_cannot_open_the_users_page(console: Console) -> None:
    console.log_out()
    console.log_in(SENDER)

    assert not console.all("nav a[href='/admin/users']")
    console.open("/admin/users")
    assert console.browser.title.startswith("Not allowed")
    assert "users:read" in console.find("p.error").text


def test_an_analyst_has_no_send_button_and_their_post_is_refused(console: Console) -> None:
    with console.session() as session:
        draft = create_campaign(
            session,
            name="Analyst may not send",
            list_slugs=["clinic-news"],
            subject="Draft",
            content=ContentSpec(series=SERIES),
        )
        session.commit()
        draft_id = console.draft_id = draft.id
    console.log_out()
    console.log_in(ANALYST)
    console.open(f"/admin/campaigns/{draft_id}")

    assert console.all("#schedule-button") == []
    assert console.all("form[action$='/test']") == []
    status = console.browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const csrf = document.querySelector("input[name=csrf]").value;
        fetch(arguments[0], {method: "POST", body: new URLSearchParams({csrf, mode: "now"})})
          .then(r => done(r.status));
        """,
        f"/admin/campaigns/{draft_id}/schedule",
    )
    assert status == 403
    with console.session() as session:
        assert session.get_one(Campaign, draft_id).status.value == "draft"


MAIN_PAGES = ("/admin/", "/admin/calendar", "/admin/campaigns", "/admin/subscribers")
NARROW_TOO = ("/admin/campaigns/new", "/admin/lists", "/admin/articles", "/admin/audit")


def _templates_and_a_sequence(console: Console) -> None:
    from newsletter.accounts.audit import Actor, act_as
    from newsletter.campaigns.templates import save_template
    from newsletter.sequences.service import create_sequence
    from tests.test_console import open_template

    with console.session() as session:
        act_as(session, Actor(f"{ADMIN} (console)", "session", 1))
        sources = open_template()
        save_template(session, "plain", "First", sources["html"], sources["text"])
        save_template(session, "plain", "Second", sources["html"], sources["text"])
        create_sequence(session, series_slug=SERIES, list_slug="clinic-news", every="7d")
        session.commit()


def test_every_page_has_no_axe_violation_and_main_pages_fit_375_px(console: Console) -> None:
    console.log_out()
    console.log_in(ADMIN)
    _templates_and_a_sequence(console)
    console.open("/admin/tokens")
    console.find("#tok-name").send_keys("reports")
    console.find("#scope-1").click()
    console.submit("form[action='/admin/tokens'] button[type=submit]")
    assert console.find("#new-token").text.startswith("nl_")
    console.check()
    with console.session() as session:
        reader = session.scalars(select(Subscriber.id).order_by(Subscriber.id)).first()
    more = [
        "/admin/templates/plain",
        "/admin/templates/plain/diff/2",
        "/admin/calendar?view=week",
        "/admin/campaigns/new",
        f"/admin/campaigns/{console.campaign_id}/preview",
        f"/admin/campaigns/{console.campaign_id}/check",
        f"/admin/subscribers/{reader}",
        f"/admin/subscribers/{reader}/forget",
        "/admin/lists",
        "/admin/imports/new",
        "/admin/articles",
        "/admin/articles/tms",
        "/admin/series",
        "/admin/sequences",
        "/admin/templates",
        "/admin/templates/new",
        "/admin/users",
        "/admin/tokens",
        "/admin/settings",
        "/admin/account",
        "/admin/no-such-page",
    ]
    for path in (*MAIN_PAGES, *more):
        console.open(path)
    console.open(f"/admin/subscribers/{reader}", check=False)
    forget, save = console.find("a.button.danger"), console.find("form.stack button")
    assert forget.value_of_css_property("background-color") != save.value_of_css_property(
        "background-color"
    ), "the link that forgets a reader looks like any other button"
    for path in (*MAIN_PAGES, *NARROW_TOO, f"/admin/campaigns/{console.campaign_id}"):
        console.open(path, check=False)
        set_width(console.browser, 375)
        assert page_width(console.browser) <= 375, f"{path} scrolls sideways at 375 px"
        console.check()
        set_width(console.browser, 1280)
    set_width(console.browser, 1280, dark=True)
    console.open("/admin/")
    console.open(f"/admin/campaigns/{console.campaign_id}")
    set_width(console.browser, 1280)

    broken = {path: found for path, found in console.visited.items() if found}
    assert broken == {}, broken
    assert len(console.visited) >= 25


def test_the_keyboard_reaches_everything_with_a_visible_focus_and_titles_name_pages(
    console: Console,
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    titles = {
        "/admin/": "Home",
        "/admin/calendar": "Calendar",
        "/admin/campaigns": "Campaigns",
        "/admin/subscribers": "Subscribers",
        f"/admin/campaigns/{console.campaign_id}": "Campaign “Series digest”",
    }
    for path, title in titles.items():
        console.open(path, check=False)
        assert console.browser.title == f"{title} · Newsletter console"
    console.open("/admin/")
    focused = []
    for _ in range(4):
        ActionChains(console.browser).send_keys(Keys.TAB).perform()
        focused.append(
            console.browser.execute_script(
                "const e = document.activeElement; const s = getComputedStyle(e);"
                "return [e.textContent.trim(), s.outlineStyle, parseFloat(s.outlineWidth)];"
            )
        )

    assert [text for text, _style, _width in focused] == [
        "Skip to content",
        "Newsletter",
        "Home",
        "Calendar",
    ]
    assert all(style == "solid" and width >= 3 for _text, style, width in focused)
    ActionChains(console.browser).send_keys(Keys.ENTER).perform()  # follow "Calendar"
    wait_for(console.browser, lambda b: b.current_url.endswith("/admin/calendar"))


def test_the_theme_toggle_is_remembered_without_script(console: Console) -> None:
    console.open("/admin/")
    assert console.find("html").get_attribute("data-theme") == "auto"
    console.submit("button[data-theme-toggle]")

    assert console.find("html").get_attribute("data-theme") == "dark"
    background = console.browser.execute_script(
        "return getComputedStyle(document.body).backgroundColor"
    )
    assert background == "rgb(20, 23, 27)"
    console.check()
    console.open("/admin/calendar")
    assert console.find("html").get_attribute("data-theme") == "dark"
    console.submit("button[data-theme-toggle]")  # dark → light
    console.submit("button[data-theme-toggle]")  # light → system
    assert console.find("html").get_attribute("data-theme") == "auto"


def _plan_the_coming_days(console: Console) -> None:
    """What a real calendar holds: a weekly digest in New York, a send tomorrow, one at
    each reader's 09:00, and a planned draft."""
    now = utcnow()
    with console.session() as session:

        def digest(name: str) -> int:
            made = create_campaign(
                session,
                name=name,
                list_slugs=["clinic-news"],
                subject=name,
                content=ContentSpec(latest=3),
            )
            return made.id

        schedule_recurring(
            session,
            digest("Weekly digest"),
            "0 9 * * MON",
            "America/New_York",
            postal_address=POSTAL_ADDRESS,
        )
        schedule_campaign(
            session,
            digest("Open day invitation"),
            now + timedelta(days=1, hours=2),
            "Europe/Berlin",
            postal_address=POSTAL_ADDRESS,
        )
        schedule_campaign(
            session,
            digest("Flu season reminder"),
            now + timedelta(days=3),
            "UTC",
            local_time=True,
            postal_address=POSTAL_ADDRESS,
        )
        update_campaign(session, console.draft_id, planned_at=now + timedelta(days=5))
        session.commit()


def test_screenshots_of_the_main_pages_at_1280_and_375(console: Console) -> None:
    _plan_the_coming_days(console)
    pages = {
        "home": "/admin/",
        "calendar": f"/admin/calendar?day={(utcnow() + timedelta(days=2)).date()}",
        "composer": f"/admin/campaigns/{console.draft_id}/edit",
        "campaign": f"/admin/campaigns/{console.campaign_id}/lookup?email=reader12@example.org",
    }
    shots = []
    for name, path in pages.items():

        def load(path: str = path, name: str = name) -> None:
            console.open(path, check=False)
            if name == "composer":
                console.wait_for_preview_frames()

        for width in (1280, 375):
            shots.append(screenshot(console.browser, name, width, load))
    assert all(shot.stat().st_size > 10_000 for shot in shots) and len(shots) == 8


def test_an_authenticator_is_set_up_on_the_account_page_and_on_only_by_its_first_code(
    console: Console,
) -> None:
    """A colleague of their own (the other tests' users keep logging in with a password)."""
    tess = "tess@clinic.example"
    with console.session() as session:
        create_user(session, tess, "editor", password=PASSWORD)
        session.commit()
    console.browser.delete_all_cookies()
    console.log_in(tess)
    console.open("/admin/account")
    console.submit("form[action='/admin/account/totp'] button")

    assert console.browser.current_url.endswith("/admin/account/totp")
    console.check()
    secret = console.find(".secret").text
    console.find("#code").send_keys(wrong_totp_code(secret))
    console.submit("form[action='/admin/account/totp/confirm'] button")
    assert "still off" in console.find("#totp-error").text
    console.check()
    console.find("#code").send_keys(pyotp.TOTP(secret).now())
    console.submit("form[action='/admin/account/totp/confirm'] button")

    assert "/admin/login" in console.browser.current_url
    assert "log in again" in console.notice()
    console.find("#email").send_keys(tess)
    console.find("#password").send_keys(PASSWORD)
    console.find("#code").send_keys(pyotp.TOTP(secret).now())
    console.submit("form.stack button[type=submit]")
    assert console.browser.current_url.endswith("/admin/")
    console.open("/admin/account")
    assert "An authenticator is on" in console.find("main").text
    console.find("#proof").send_keys(PASSWORD)
    console.submit("form[action='/admin/account/totp/off'] button")
    assert "is off" in console.notice()
    console.check()
    broken = {path: found for path, found in console.visited.items() if found and "account" in path}
    assert broken == {}, broken
    console.browser.delete_all_cookies()
