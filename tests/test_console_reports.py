"""The console's campaign report (issue 12) over real HTTP: the numbers on the page are
the CLI's (`campaigns report --json`) and the API's, one by one; the CSV is the API's;
who clicked only in individual mode and only for roles that read subscribers; the link
map is a sandboxed document; the page keeps the console's CSP.

A run is sent by the real chunk sender into a MemoryMailer on PostgreSQL, and hits are
recorded by the function the public routes call (`record_hit`), through the helpers
tests/test_tracking.py uses too (tests/factories.py): a person, a link checker's
HEAD, a scanner and a burst of every link within a second."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from lxml import html as lxml_html

from newsletter.accounts.users import create_user
from newsletter.audience.models import TrackingMode
from newsletter.cli.processes import build_app
from newsletter.config import Settings
from newsletter.db import make_engine, make_sessionmaker
from newsletter.tracking.models import EventKind
from tests.api_server import PASSWORD, ServerThread, Staff
from tests.factories import (
    PIXEL,
    SCANNER,
    TRACKED,
    drip_with_events,
    hit,
    html_of,
    import_sample,
    make_list,
    send_into_memory,
    series_digest,
    settings_for,
    tracked_readers,
)
from tests.processes import settings_env
from tests.test_console import Browser

NEWSLETTER = os.path.join(os.path.dirname(sys.executable), "newsletter")
ANALYST, OPS = "alex@clinic.example", "olu@clinic.example"
# What the page shows as text or leaves out on purpose, not as a number of its own.
NOT_METRICS = re.compile(
    r"^(links\.\d+\.url|links\.\d+\.position|links\.\d+\.unique\.total"
    r"|over_time\.[^.]+\.(bucket|opens\.total|clicks\.total)"
    r"|lists\.[^.]*\.(list|name)|runs\.\d+\.(run|occurrence_at|status))$"
)


@dataclass
class Sent:
    settings: Settings
    campaign_id: int
    run_id: int
    links: int


def _send(settings: Settings, mode: TrackingMode, readers: int) -> tuple[int, int, dict[str, str]]:
    """A digest to `readers` readers of a list tracked in `mode`; their HTML by address."""
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        tracked_readers(session, mode, readers=readers)
        campaign = series_digest(session, ["clinic-news"])
        session.commit()
        campaign_id = campaign.id
        run_id, mail = send_into_memory(session, settings, campaign)
    engine.dispose()
    return campaign_id, run_id, {address: html_of(message) for address, message in mail.items()}


def _users(settings: Settings) -> None:
    with make_sessionmaker(make_engine(settings.database_url))() as session:
        create_user(session, ANALYST, "analyst", password=PASSWORD)
        create_user(session, OPS, "ops", password=PASSWORD)
        session.commit()


@pytest.fixture
def sent(pg_url: str) -> Sent:
    """Five readers, individually tracked, and a known mix of people and machines."""
    settings = settings_for(pg_url, tracking_machine_seconds=0, tracking_burst_seconds=2)
    campaign_id, run_id, mail = _send(settings, TrackingMode.individual, readers=5)
    links = [list(dict.fromkeys(TRACKED.findall(mail[f"reader{i}@example.org"]))) for i in range(5)]
    pixels = [PIXEL.findall(mail[f"reader{i}@example.org"])[0] for i in range(5)]
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        # Reader 0, a person: opens, clicks the first link twice.
        hit(session, settings, pixels[0], EventKind.open)
        hit(session, settings, links[0][0])
        hit(session, settings, links[0][0])
        # Reader 1: a link checker's HEAD. Reader 2: a scanner clicks and loads the pixel.
        hit(session, settings, links[1][0], method="HEAD")
        hit(session, settings, links[2][0], agent=SCANNER)
        hit(session, settings, pixels[2], EventKind.open, agent=SCANNER)
        # Reader 3: every link at once, in a browser's name (a scanner behind it).
        for token in links[3]:
            hit(session, settings, token)
    engine.dispose()
    _users(settings)
    return Sent(settings, campaign_id, run_id, len(links[0]))


def flatten(report: dict[str, Any]) -> dict[str, str]:
    """The report's numbers by path, as the page names them in data-metric (values as
    the page writes them in data-value: None as empty)."""
    found: dict[str, str] = {}

    def walk(path: str, data: Any) -> None:
        if isinstance(data, dict):
            for key, value in data.items():
                walk(f"{path}.{key}", value)
        elif not NOT_METRICS.match(path):
            found[path] = "" if data is None else str(data)

    for section in ("delivery", "opens", "clicks", "machine_reasons"):
        walk(section, report[section])
    for link in report["links"]:
        walk(f"links.{link['position']}", link)
    for row in report["lists"]:
        walk(f"lists.{row['list']}", row)
    for row in report["over_time"]:
        walk(f"over_time.{row['bucket']}", row)
    for row in report["runs"]:
        walk(f"runs.{row['run']}", row)
    return found


def page_metrics(page: str) -> dict[str, str]:
    tree = lxml_html.document_fromstring(page)
    found: dict[str, str] = {}
    for element in tree.xpath("//*[@data-metric]"):
        path = element.get("data-metric")
        assert path not in found, f"{path} shown twice"
        found[path] = element.get("data-value")
        shown = element.text_content().strip()
        if found[path].isdigit():
            assert shown == found[path], path  # the number people read is the same one
    return found


def cli_json(settings: Settings, *command: str) -> dict[str, Any]:
    """What `newsletter COMMAND --json` prints, read as JSON."""
    done = subprocess.run(
        [NEWSLETTER, *command, "--json"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


@pytest.fixture
def server(sent: Sent) -> Iterator[str]:
    with ServerThread(build_app(sent.settings)) as running:
        yield running.url


def _logged_in(url: str, who: str) -> Browser:
    browser = Browser(url)
    assert browser.log_in(who).status_code == 303
    return browser


def test_the_report_page_shows_the_numbers_of_the_cli_and_the_api(sent: Sent, server: str) -> None:
    analyst = _logged_in(server, ANALYST)
    page = analyst.get(f"/admin/campaigns/{sent.campaign_id}/report")
    assert page.status_code == 200, page.text
    staff = Staff(server, sent.settings)
    with staff.client(staff.token(ANALYST)) as client:
        api = client.get(f"/campaigns/{sent.campaign_id}/report").json()
        api_csv = client.get(f"/campaigns/{sent.campaign_id}/report", params={"format": "csv"})
    cli = cli_json(sent.settings, "campaigns", "report", str(sent.campaign_id))

    shown = page_metrics(page.text)
    assert cli == api
    assert shown == flatten(cli)
    # The mix above, as the page says it: one person opened, one scanner; one person
    # clicked, three machines (a HEAD, a scanner, a burst of every link).
    n = sent.links
    assert shown["opens.unique.human"] == "1" and shown["opens.unique.machine"] == "1"
    assert shown["clicks.unique.human"] == "1" and shown["clicks.unique.machine"] == "3"
    assert shown["clicks.total.machine"] == str(2 + n)
    assert shown["opens.rate"] == "0.2" and shown["clicks.click_to_open"] == "1.0"
    assert shown["delivery.delivered"] == "5"
    assert shown["machine_reasons.links of one message clicked within 2 s"] == str(n)
    assert shown["machine_reasons.HEAD request"] == "1"
    tree = lxml_html.document_fromstring(page.text)
    mode = tree.xpath("string(//*[@id='tracking-mode'])")
    assert "clinic-news: individual: opens and clicks counted per reader" in " ".join(mode.split())
    limits = " ".join(li.text_content() for li in tree.xpath("//*[@id='limits']/li"))
    assert "Apple Mail Privacy Protection" in limits and "Gmail" in limits
    assert "images" in limits
    # Charts are SVG in the page, drawn from the same numbers; no chart script.
    svgs = tree.xpath("//figure[@class='chart']/svg")
    assert len(svgs) == 3
    assert "Opened: 1 human" in page.text
    assert all(script.get("src") for script in tree.iter("script"))
    # The CSV is the API's.
    download = analyst.get(f"/admin/campaigns/{sent.campaign_id}/report.csv")
    assert download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    assert download.text == api_csv.text
    # And the campaign page leads here.
    campaign = analyst.get(f"/admin/campaigns/{sent.campaign_id}")
    assert f'href="/admin/campaigns/{sent.campaign_id}/report"' in campaign.text


def test_the_report_page_keeps_the_consoles_csp_and_the_link_map_is_sandboxed(
    sent: Sent, server: str
) -> None:
    analyst = _logged_in(server, ANALYST)
    page = analyst.get(f"/admin/campaigns/{sent.campaign_id}/report")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    tree = lxml_html.document_fromstring(page.text)
    assert not [el for el in tree.iter() if el.get("style")]
    assert not [n for el in tree.iter() for n in el.attrib if n.startswith("on")]
    [frame] = tree.xpath("//iframe[@id='link-map']")
    assert frame.get("sandbox") == ""

    document = analyst.get(frame.get("src"))

    assert document.status_code == 200
    framed = document.headers["content-security-policy"]
    assert "sandbox" in framed and "script-src" not in framed
    assert "2 human · 3 machine clicks" in document.text  # the first link
    assert "<script" not in document.text.lower()


def test_who_clicked_names_people_only_and_needs_a_role_that_reads_subscribers(
    sent: Sent, server: str
) -> None:
    analyst = _logged_in(server, ANALYST)
    ops = _logged_in(server, OPS)
    base = f"/admin/campaigns/{sent.campaign_id}/report"

    report = analyst.get(base)
    who = analyst.get(base + "/who-clicked")
    csv = analyst.get(base + f"/who-clicked.csv?run={sent.run_id}")
    ops_report = ops.get(base)

    assert 'id="who-clicked"' in report.text
    tree = lxml_html.document_fromstring(who.text)
    assert [td.text for td in tree.xpath("//td[@data-reader]")] == ["reader0@example.org"]
    lines = csv.text.splitlines()
    assert lines[0] == "email,first_click_at,first_open_at,links"
    assert [line.split(",")[0] for line in lines[1:]] == ["reader0@example.org"]
    # ops reads reports but not subscribers: the numbers, never the names.
    assert ops_report.status_code == 200 and 'id="who-clicked"' not in ops_report.text
    for path in (base + "/who-clicked", base + "/who-clicked.csv"):
        refused = ops.get(path)
        assert refused.status_code == 403 and "subscribers:read" in refused.text


def test_an_anonymous_run_lists_nobody_and_says_why(pg_url: str) -> None:
    settings = settings_for(pg_url, tracking_machine_seconds=0)
    campaign_id, run_id, mail = _send(settings, TrackingMode.anonymous, readers=2)
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        hit(session, settings, TRACKED.findall(mail["reader0@example.org"])[0])
    engine.dispose()
    _users(settings)
    with ServerThread(build_app(settings)) as running:
        analyst = _logged_in(running.url, ANALYST)
        report = analyst.get(f"/admin/campaigns/{campaign_id}/report?run={run_id}")
        who = analyst.get(f"/admin/campaigns/{campaign_id}/report/who-clicked")
        missing = analyst.get(f"/admin/campaigns/{campaign_id}/report?run={run_id + 99}")

    assert report.status_code == 200
    assert 'id="who-clicked"' not in report.text
    assert "nobody can be listed" in report.text
    assert page_metrics(report.text)["clicks.unique.human"] == "1"
    assert who.status_code == 404 and "anonymously" in who.text
    assert missing.status_code == 404 and "Traceback" not in missing.text


def test_the_drip_funnel_page_shows_the_clis_steps(pg_url: str) -> None:
    settings = settings_for(pg_url, tracking_machine_seconds=0)
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        sequence_id, _articles = drip_with_events(session, settings)
    engine.dispose()
    _users(settings)
    cli = cli_json(settings, "sequences", "report", str(sequence_id))
    with ServerThread(build_app(settings)) as running:
        analyst = _logged_in(running.url, ANALYST)
        listing = analyst.get("/admin/sequences")
        page = analyst.get(f"/admin/sequences/{sequence_id}/report")

    assert f'href="/admin/sequences/{sequence_id}/report"' in listing.text
    expected = {
        f"steps.{step['step']}.{key}": "" if step[key] is None else str(step[key])
        for step in cli["steps"]
        for key in step
        if key not in ("step", "run", "article", "title")
    }
    shown = page_metrics(page.text)
    assert shown == expected
    assert (shown["steps.1.sent"], shown["steps.1.opened"], shown["steps.1.clicked"]) == (
        "3",
        "2",
        "1",
    )
    assert shown["steps.1.next_step"] == "2" and shown["steps.2.next_step"] == ""


def test_a_campaign_without_a_run_has_a_report_that_says_so(sqlite_url: str) -> None:
    settings = settings_for(sqlite_url)
    with make_sessionmaker(make_engine(sqlite_url))() as session:
        import_sample(session)
        make_list(session)
        campaign_id = series_digest(session, ["clinic-news"]).id
        session.commit()
    _users(settings)
    with ServerThread(build_app(settings)) as running:
        analyst = _logged_in(running.url, ANALYST)
        page = analyst.get(f"/admin/campaigns/{campaign_id}/report")
        download = analyst.get(f"/admin/campaigns/{campaign_id}/report.csv")
        frame = analyst.get(f"/admin/campaigns/{campaign_id}/report/link-map.html")
        campaign = analyst.get(f"/admin/campaigns/{campaign_id}")

    assert page.status_code == 200 and 'id="no-run"' in page.text
    assert page_metrics(page.text) == {}
    assert download.text == "section,item,measure,value\n"
    assert frame.status_code == 404 and "no run yet" in frame.text
    assert 'id="report-link"' not in campaign.text  # nothing to report yet
