"""Opens and clicks end to end: a run through a real Celery worker into aiosmtpd, its
emails read back, their tracked links and pixels followed over HTTP (uvicorn) by
people, link checkers, a scanner and Apple's proxy; then one report, the same in the
CLI, the API and the console's data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
import redis

from newsletter.api.app import create_staff_app
from newsletter.audience.models import TrackingMode
from newsletter.campaigns.models import Campaign, CampaignStatus
from newsletter.campaigns.service import schedule_campaign
from newsletter.config import Settings
from newsletter.db import make_engine, make_sessionmaker, utcnow
from newsletter.rendering.model import Snapshot
from newsletter.rendering.tracking import trackable_links
from newsletter.runs.models import Run
from newsletter.services import reports
from newsletter.tasks.app import configure, runtime
from newsletter.tasks.scheduler import tick
from newsletter.tracking.models import TrackingEvent
from newsletter.web.app import create_app
from tests.api_server import ServerThread, Staff
from tests.factories import add_member, import_sample, make_list, series_digest, settings_for
from tests.processes import WorkerProcess, settings_env
from tests.smtp_sink import SmtpSink, free_port

pytestmark = pytest.mark.slow

BROWSER = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36"
)
SCANNER = "Barracuda Sentinel (EE)"
APPLE_MPP = "Mozilla/5.0"
READERS = 5
NEWSLETTER = os.path.join(os.path.dirname(sys.executable), "newsletter")
TRACKED = re.compile(r'href="([^"]*/t/c/[^"]+)"')
PIXEL = re.compile(r'src="([^"]*/t/o/[^"]+\.gif)"')


@pytest.fixture
def tracked_stack(pg_url: str, smtp_sink: SmtpSink) -> Iterator[Settings]:
    """Settings whose base URL is a running public web app, a Celery worker on Redis."""
    broker = os.environ.get("NEWSLETTER_TEST_REDIS_URL", "redis://127.0.0.1:6379") + "/13"
    redis.Redis.from_url(broker).flushdb()
    port = free_port()
    settings = settings_for(
        pg_url,
        base_url=f"http://127.0.0.1:{port}",
        mail_url=smtp_sink.url,
        broker_url=broker,
        # Links are followed right after sending here: the "seconds after sending" rule
        # has a test of its own (test_tracking.py).
        tracking_machine_seconds=0,
        tracking_burst_seconds=2,
    )
    worker = WorkerProcess(settings).start()
    try:
        with ServerThread(create_app(settings), port=port):
            yield settings
    finally:
        worker.stop()
        runtime().close()


def send_campaign(settings: Settings) -> int:
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        import_sample(session)
        news = make_list(session)
        news.tracking, news.track_opens = TrackingMode.individual, True
        for i in range(READERS):
            add_member(session, news, f"reader{i}@example.org", f"Reader {i}")
        campaign = series_digest(session, ["clinic-news"])
        schedule_campaign(session, campaign.id, utcnow())
        session.commit()
        campaign_id = campaign.id
    engine.dispose()
    configure(settings)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        tick(runtime())
        with runtime().sessions() as session:
            if session.get_one(Campaign, campaign_id).status is CampaignStatus.finished:
                return campaign_id
        time.sleep(0.2)
    raise AssertionError("the run did not finish in time")


def inbox(sink: SmtpSink) -> dict[str, EmailMessage]:
    return {r.recipient: r.message for r in sink.handler.received}


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def links_of(message: EmailMessage) -> list[str]:
    """The message's distinct tracked links, in the order of the email."""
    return list(dict.fromkeys(TRACKED.findall(html_of(message))))


def pixel_of(message: EmailMessage) -> str:
    [pixel] = PIXEL.findall(html_of(message))
    return pixel


def get(
    client: httpx.Client, url: str, agent: str = BROWSER, method: str = "GET"
) -> httpx.Response:
    return client.request(method, url, headers={"User-Agent": agent})


def cli_report(settings: Settings, campaign_id: int, *options: str) -> Any:
    done = subprocess.run(
        [NEWSLETTER, "campaigns", "report", str(campaign_id), *options],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in options else done.stdout


def api_report(settings: Settings, campaign_id: int) -> dict[str, Any]:
    with ServerThread(create_staff_app(settings)) as server:
        staff = Staff(server.url, settings)
        token = staff.token("analyst@clinic.example", role="analyst")
        with staff.client(token) as client:
            answer = client.get(f"/campaigns/{campaign_id}/report")
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


def test_opens_and_clicks_are_counted_human_and_machine_alike_in_every_face(
    tracked_stack: Settings, smtp_sink: SmtpSink
) -> None:
    settings = tracked_stack
    campaign_id = send_campaign(settings)
    mail = inbox(smtp_sink)
    assert len(mail) == READERS
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        run = session.query(Run).filter_by(campaign_id=campaign_id).one()
        originals = trackable_links(
            Snapshot.from_json(run.snapshot or {}).html, f"{settings.base_url}/archive/emails/"
        )
    reader = [mail[f"reader{i}@example.org"] for i in range(READERS)]
    links = [links_of(m) for m in reader]
    assert len(originals) >= 3 and all(len(found) == len(originals) for found in links)

    with httpx.Client(follow_redirects=False, timeout=30) as client:
        # Reader 0, a person: opens, clicks the first link twice; each link goes where
        # the email pointed.
        assert get(client, pixel_of(reader[0])).headers["content-type"] == "image/gif"
        for url, original in zip(links[0], originals, strict=True):
            if url == links[0][0]:
                answer = get(client, url)
                assert answer.status_code == 302 and answer.headers["location"] == original
        assert get(client, links[0][0]).status_code == 302
        # A forged or altered token: 404, nothing counted.
        token = links[0][0].rsplit("/", 1)[1]
        for at in (5, len(token) - 3):  # in the link's part, in the reader's part
            altered = token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]
            assert get(client, links[0][0].replace(token, altered)).status_code == 404
        assert get(client, pixel_of(reader[0]).replace(".gif", "x.gif")).status_code == 404
        # Reader 1: a link checker's HEAD, then Apple's proxy loading the pixel.
        assert get(client, links[1][0], method="HEAD").status_code == 302
        assert get(client, pixel_of(reader[1]), agent=APPLE_MPP).status_code == 200
        # Reader 2: a security scanner follows the first link and loads the pixel.
        assert get(client, links[2][0], agent=SCANNER).status_code == 302
        assert get(client, pixel_of(reader[2]), agent=SCANNER).status_code == 200
        # Reader 3: every link within two seconds, in a browser's name.
        started = time.monotonic()
        for url in links[3]:
            assert get(client, url).status_code == 302
        assert time.monotonic() - started < 2, "the machine is too slow for this test"
        # Reader 4 opens nothing; two readers unsubscribe in one click: from the header
        # (as a mailbox provider does) and from the link in the body. Neither link was
        # rewritten.
        header = str(reader[4]["List-Unsubscribe"]).split(",")[0].strip("<> ")
        body_link = re.search(r'href="([^"]*/unsubscribe/[^"]+)"', html_of(reader[1]))
        preferences = re.search(r'href="([^"]*/preferences/[^"]+)"', html_of(reader[1]))
        assert body_link is not None and preferences is not None
        for url in (header, body_link.group(1), preferences.group(1)):
            assert url.startswith(settings.base_url + "/") and "/t/" not in url
        for url in (header, body_link.group(1)):
            answer = client.post(url, data={"List-Unsubscribe": "One-Click"})
            assert answer.status_code == 200 and "unsubscribed" in answer.text
        assert get(client, preferences.group(1)).status_code == 200

    n = len(originals)
    expected_opens = {
        "unique": {"human": 1, "machine": 2, "total": 3},
        "total": {"human": 1, "machine": 2, "total": 3},
        "rate": 0.2,
    }
    expected_clicks = {
        "unique": {"human": 1, "machine": 3, "total": 4},
        "total": {"human": 2, "machine": 2 + n, "total": 4 + n},
        "rate": 0.2,
        "click_to_open": 1.0,
    }
    with make_sessionmaker(engine)() as session:
        console = reports.campaign_report(session, campaign_id)
        charts = reports.report_charts(console)
        events = session.query(TrackingEvent).count()
    engine.dispose()
    assert events == 2 + 1 + 2 + 2 + n  # every genuine hit, none of the forged ones
    assert console["opens"] == expected_opens
    assert console["clicks"] == expected_clicks
    first = console["links"][0]
    assert first["destination"] == originals[0]
    assert first["unique"] == {"human": 1, "machine": 3, "total": 4}
    assert first["total"] == {"human": 2, "machine": 3, "total": 5}
    assert all(link["total"]["machine"] >= 1 for link in console["links"])
    assert console["machine_reasons"] == {
        "Apple Mail Privacy Protection proxy": 1,
        "HEAD request": 1,
        "known scanner (barracuda)": 2,
        "links of one message clicked within 2 s": n,
    }
    delivery = console["delivery"]
    assert (delivery["sent"], delivery["delivered"]) == (READERS, READERS)
    assert delivery["unsubscribes"] == {
        "one_click": 2,
        "page": 0,
        "mailto": 0,
        "other": 0,
        "total": 2,
    }
    # The console's charts draw these numbers.
    assert (
        "Opened: 1 human" in charts["engagement"] and "Clicked: 3 machine" in charts["engagement"]
    )
    # One set of numbers everywhere.
    assert cli_report(settings, campaign_id, "--json") == console
    said = cli_report(settings, campaign_id)
    assert "opens: unique 1 human + 2 machine, total 1 human + 2 machine, rate 20.0%" in said
    assert f"clicks: unique 1 human + 3 machine, total 2 human + {2 + n} machine" in said
    who = cli_report(settings, campaign_id, "--who-clicked").splitlines()
    assert who[0] == "email,first_click_at,first_open_at,links"
    assert [line.split(",")[0] for line in who[1:]] == ["reader0@example.org"]
    assert api_report(settings, campaign_id) == console
