"""Content scheduling: drip sequences over simulated weeks, recurring campaigns across
daylight-saving changes, and two schedulers racing on PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.campaigns.service import (
    ContentSpec,
    create_campaign,
    schedule_campaign,
    schedule_recurring,
)
from newsletter.config import Settings
from newsletter.content.models import Article
from newsletter.db import make_engine, make_sessionmaker, utcnow
from newsletter.delivery.content import run_email
from newsletter.runs.models import Delivery, DeliveryStatus, Run, RunStatus
from newsletter.sequences.models import Enrollment
from newsletter.sequences.service import create_sequence
from newsletter.tasks.app import app, configure, runtime
from newsletter.tasks.scheduler import tick
from tests.factories import (
    SAMPLE_ARTICLES,
    SERIES,
    add_member,
    import_sample,
    make_list,
    settings_for,
)
from tests.feed_server import FeedServer, Route
from tests.processes import settings_env
from tests.test_cli import Cli, parse_eml

pytestmark = pytest.mark.slow

TITLES = [
    "Ketamine infusions: what they are and what the evidence says",
    "What happens at an infusion appointment",
    "Continuing your care during treatment",
    "Transcranial magnetic stimulation (TMS): a plain guide",
    "After a course of treatment: what to expect",
]
NEW_ARTICLE = """---
title: "Looking after yourself between appointments"
slug: between-appointments
summary: "Small, steady habits that support recovery, and when to call us."
author: "Riverside Clinic care team"
published: 2027-01-20T09:00:00+00:00
series: understanding-treatment
position: 6
---
Sleep, movement and keeping in touch with people you trust can all help. Please talk
to your own clinician about what suits you.
"""


def received_by(cli: Cli, address: str, seen: set[Path]) -> list[str]:
    """Subjects of the messages to `address` that arrived since the last call."""
    subjects = []
    for path in cli.eml_files():
        if path in seen:
            continue
        seen.add(path)
        message = parse_eml(path)
        if message["To"].addresses[0].addr_spec == address:
            subjects.append(str(message["Subject"]))
    return subjects


def test_a_reader_joining_in_week_3_gets_the_series_in_order_then_waits(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli.ok("db", "upgrade")
    cli.ok("articles", "import", SAMPLE_ARTICLES)
    cli.ok("lists", "create", "clinic-news", "--name", "Clinic news")
    (tmp_path / "early.csv").write_text("email,name\nearly@example.org,Early Reader\n")
    cli.ok("subscribers", "import", "early.csv", "--list", "clinic-news")
    cli.ok(
        "sequences",
        "create",
        "--series",
        "understanding-treatment",
        "--list",
        "clinic-news",
        "--every",
        "7d",
    )
    start = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # a Monday
    seen: set[Path] = set()
    late: list[list[str]] = []
    for week in range(8):
        if week == 2:  # week 3: a new reader confirms
            (tmp_path / "late.csv").write_text("email,name\nlate@example.org,Late Reader\n")
            cli.ok("subscribers", "import", "late.csv", "--list", "clinic-news")
        at = start + timedelta(weeks=week)
        cli.ok("scheduler", "tick", "--at", at.isoformat())
        late.append(received_by(cli, "late@example.org", seen))
    # Nothing before joining, then one article a week, in series order, then nothing.
    assert late == [[], [], [TITLES[0]], [TITLES[1]], [TITLES[2]], [TITLES[3]], [TITLES[4]], []]
    messages = {
        str(m["Subject"]): m
        for m in map(parse_eml, cli.eml_files())
        if m["To"].addresses[0].addr_spec == "late@example.org"
    }
    for k, title in enumerate(TITLES):
        text = messages[title].get_body(("plain",)).get_content()
        html = messages[title].get_body(("html",)).get_content()
        assert f"Part {k + 1} of 5" in text
        assert (f"Previous: {TITLES[k - 1]}" in text) == (k > 0)
        if k < 4:
            assert f"Next: {TITLES[k + 1]}" in text
        else:
            assert "Next:" not in text
        assert ("Send me the next one now" in html) == (k < 4)
    # A sixth article is appended: the caught-up reader gets it once.
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "06.md").write_text(NEW_ARTICLE)
    cli.ok("articles", "import", tmp_path / "new")
    later = start + timedelta(weeks=7, days=2)
    cli.ok("scheduler", "tick", "--at", later.isoformat())
    assert received_by(cli, "late@example.org", seen) == [
        "Looking after yourself between appointments"
    ]
    cli.ok("scheduler", "tick", "--at", (later + timedelta(days=8)).isoformat())
    assert received_by(cli, "late@example.org", set(seen)) == []
    counts = Counter(m["To"].addresses[0].addr_spec for m in map(parse_eml, cli.eml_files()))
    assert counts == {"early@example.org": 6, "late@example.org": 6}


@pytest.fixture
def embedded(sqlite_url: str, tmp_path: Path) -> Iterator[Settings]:
    """`scheduler tick` as the CLI runs it on the embedded default: tasks inline."""
    settings = settings_for(
        sqlite_url, mail_url=f"outbox:{tmp_path / 'outbox'}", broker_url="memory://localhost/"
    )
    configure(settings)
    app.conf.task_always_eager = True
    yield settings
    app.conf.task_always_eager = False
    runtime().close()


def daily_campaign(settings: Settings, cron: str, tz: str, readers: int = 3) -> int:
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        import_sample(session)
        news = make_list(session)
        for i in range(readers):
            add_member(session, news, f"reader{i}@example.org")
        campaign = create_campaign(
            session,
            name="Daily",
            list_slugs=["clinic-news"],
            subject="Daily note",
            content=ContentSpec(latest=1),
        )
        schedule_recurring(
            session, campaign.id, cron, tz, starting=datetime(2026, 1, 1, tzinfo=UTC)
        )
        session.commit()
        campaign_id = campaign.id
    engine.dispose()
    return campaign_id


def tick_hourly(first: datetime, hours: int) -> None:
    for h in range(hours):
        # Ticks land a few minutes past each hour, as a real scheduler's would.
        tick(runtime(), first + timedelta(hours=h, minutes=3))


# The day before each change (2027: after the sample articles' publication dates).
DST_DAYS = [
    ("Europe/Berlin", date(2027, 3, 27)),  # spring forward on the 28th
    ("Europe/Berlin", date(2027, 10, 30)),  # fall back on the 31st
    ("America/New_York", date(2027, 3, 13)),  # spring forward on the 14th
    ("America/New_York", date(2027, 11, 6)),  # fall back on the 7th
]


@pytest.mark.parametrize(("tz", "first_day"), DST_DAYS, ids=[f"{z}-{d}" for z, d in DST_DAYS])
def test_a_daily_9am_campaign_sends_once_a_day_at_9_local_across_dst(
    embedded: Settings, tz: str, first_day: date
) -> None:
    campaign_id = daily_campaign(embedded, "0 9 * * *", tz)
    zone = ZoneInfo(tz)
    start = datetime.combine(first_day, datetime.min.time(), zone).astimezone(UTC)
    tick_hourly(start, 24 * 3)
    with runtime().sessions() as session:
        runs = session.scalars(
            select(Run).where(Run.campaign_id == campaign_id).order_by(Run.occurrence_at)
        ).all()
        local = [run.occurrence_at.astimezone(zone) for run in runs]
        assert [(t.date(), t.hour, t.minute) for t in local] == [
            (first_day + timedelta(days=d), 9, 0) for d in range(3)
        ]
        sent = session.scalar(
            select(func.count())
            .select_from(Delivery)
            .join(Run, Run.id == Delivery.run_id)
            .where(Run.campaign_id == campaign_id, Delivery.status == DeliveryStatus.sent)
        )
    assert sent == 3 * 3


@pytest.mark.parametrize(("tz", "first_day"), DST_DAYS, ids=[f"{z}-{d}" for z, d in DST_DAYS])
def test_a_campaign_at_a_missing_or_doubled_hour_still_sends_once_a_day(
    embedded: Settings, tz: str, first_day: date
) -> None:
    campaign_id = daily_campaign(embedded, "30 2 * * *", tz)
    zone = ZoneInfo(tz)
    start = datetime.combine(first_day, datetime.min.time(), zone).astimezone(UTC)
    tick_hourly(start, 24 * 3)
    with runtime().sessions() as session:
        occurrences = session.scalars(
            select(Run.occurrence_at).where(Run.campaign_id == campaign_id)
        ).all()
    local_days = Counter(t.astimezone(zone).date() for t in occurrences)
    assert local_days == {first_day + timedelta(days=d): 1 for d in range(3)}


def test_a_missed_occurrence_is_caught_up_once_and_an_old_one_skipped(embedded: Settings) -> None:
    campaign_id = daily_campaign(embedded, "0 9 * * *", "UTC")
    # The scheduler was down for three days; at 11:00 it sends today's 09:00 once.
    tick(runtime(), datetime(2026, 12, 10, 11, 0, tzinfo=UTC))
    tick(runtime(), datetime(2026, 12, 10, 11, 5, tzinfo=UTC))
    # Down again until 20:00 the next day: more than 6 hours late, so skipped.
    tick(runtime(), datetime(2026, 12, 11, 20, 0, tzinfo=UTC))
    with runtime().sessions() as session:
        occurrences = session.scalars(
            select(Run.occurrence_at).where(Run.campaign_id == campaign_id)
        ).all()
    assert occurrences == [datetime(2026, 12, 10, 9, 0, tzinfo=UTC)]


def test_two_schedulers_start_no_run_and_no_sequence_step_twice(
    pg_url: str, tmp_path: Path
) -> None:
    broker = "redis://127.0.0.1:6379/13"  # tasks pile up unconsumed: only the ledger matters
    redis.Redis.from_url(broker).flushdb()
    settings = settings_for(pg_url, mail_url=f"outbox:{tmp_path / 'outbox'}", broker_url=broker)
    engine = make_engine(pg_url)
    with make_sessionmaker(engine)() as session:
        import_sample(session)
        news = make_list(session)
        for i in range(40):
            add_member(session, news, f"reader{i}@example.org")
        for n in range(5):
            campaign = create_campaign(
                session,
                name=f"Daily {n}",
                list_slugs=["clinic-news"],
                subject="Daily",
                content=ContentSpec(latest=1),
            )
            schedule_recurring(
                session,
                campaign.id,
                "0 9 * * *",
                "UTC",
                starting=datetime(2026, 12, 1, tzinfo=UTC),
            )
        create_sequence(
            session, series_slug="understanding-treatment", list_slug="clinic-news", every="1d"
        )
        session.commit()
    script = str(Path(sys.executable).parent / "newsletter")
    env = settings_env(settings)
    times = [datetime(2026, 12, 7 + d, 9, 1, tzinfo=UTC).isoformat() for d in range(3)]
    failures: list[str] = []

    def scheduler() -> None:
        for at in times:
            barrier.wait()
            done = subprocess.run(
                [script, "scheduler", "tick", "--at", at],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if done.returncode:
                failures.append(done.stderr)

    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    redis.Redis.from_url(broker).flushdb()
    assert not failures
    with make_sessionmaker(engine)() as session:
        campaign_runs = Counter(
            session.execute(
                select(Run.campaign_id, Run.occurrence_at).where(Run.campaign_id.is_not(None))
            ).all()
        )
        assert len(campaign_runs) == 5 * 3 and set(campaign_runs.values()) == {1}
        steps = Counter(
            session.execute(
                select(Delivery.subscriber_id, Run.article_id)
                .join(Run, Run.id == Delivery.run_id)
                .where(Run.sequence_id.is_not(None))
            ).all()
        )
        assert len(steps) == 40 * 3 and set(steps.values()) == {1}
        assert set(session.scalars(select(Enrollment.sent_count))) == {3}
    engine.dispose()


def test_local_time_sending_reaches_each_reader_at_9_in_their_own_zone(
    embedded: Settings,
) -> None:
    zones = {
        "tokyo@example.org": "Asia/Tokyo",
        "berlin@example.org": "Europe/Berlin",
        "newyork@example.org": "America/New_York",
        "nozone@example.org": None,  # falls back to the list's zone (UTC)
    }
    engine = make_engine(embedded.database_url)
    with make_sessionmaker(engine)() as session:
        import_sample(session)
        news = make_list(session)
        for email, tz in zones.items():
            add_member(session, news, email).timezone = tz
        campaign = create_campaign(
            session,
            name="Morning",
            list_slugs=["clinic-news"],
            subject="Good morning",
            content=ContentSpec(latest=1),
        )
        schedule_campaign(
            session, campaign.id, datetime(2026, 12, 7, 9, 0, tzinfo=UTC), "UTC", local_time=True
        )
        session.commit()
    engine.dispose()
    sent_at: dict[str, datetime] = {}
    first = datetime(2026, 12, 6, 12, 3, tzinfo=UTC)
    for hour in range(36):
        now = first + timedelta(hours=hour)
        tick(runtime(), now)
        with runtime().sessions() as session:
            for email in session.scalars(
                select(Delivery.email).where(Delivery.status == DeliveryStatus.sent)
            ):
                sent_at.setdefault(email, now)
    for email, tz in zones.items():
        nine = datetime(2026, 12, 7, 9, 0, tzinfo=ZoneInfo(tz or "UTC"))
        assert nine <= sent_at[email] < nine + timedelta(hours=1), email


def clinic_rss(items: list[tuple[str, str, datetime]]) -> bytes:
    entries = "".join(
        f"<item><guid>{guid}</guid><title>{title}</title>"
        f"<link>https://clinic.example/blog/{guid}</link>"
        f"<description>A short note from the clinic. Talk to your clinician.</description>"
        f"<pubDate>{format_datetime(published)}</pubDate></item>"
        for guid, title, published in items
    )
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Clinic blog</title>'
        f"<link>https://clinic.example/blog/</link>{entries}</channel></rss>"
    ).encode()


def test_rss_to_email_a_polled_feed_feeds_a_weekly_digest_of_whats_new(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    monday = datetime(2027, 1, 4, 9, 0, tzinfo=UTC)
    feed_server.routes["/blog.rss"] = Route(
        clinic_rss([("a1", "Sleep and recovery", monday - timedelta(days=3))])
    )
    cli = Cli(tmp_path)
    cli.env["NEWSLETTER_FEEDS_ALLOWED_NETWORKS"] = "127.0.0.1/32"  # the feed server's
    cli.ok("db", "upgrade")
    cli.ok("lists", "create", "clinic-news", "--name", "Clinic news")
    (tmp_path / "readers.csv").write_text("email,name\nreader@example.org,Reader\n")
    cli.ok("subscribers", "import", "readers.csv", "--list", "clinic-news")
    cli.ok("feeds", "add", feed_server.url("/blog.rss"), "--series", "blog", "--every", "1h")
    cli.ok("scheduler", "tick", "--at", (monday - timedelta(days=2)).isoformat())
    campaign = cli.json(
        "campaigns",
        "create",
        "--name",
        "Weekly",
        "--list",
        "clinic-news",
        "--subject",
        "This week at the clinic",
        "--since-last",
    )["id"]
    cli.ok(
        "campaigns",
        "schedule",
        str(campaign),
        "--cron",
        "0 9 * * MON",
        "--tz",
        "UTC",
        "--skip-if-empty",
        "--at",
        (monday - timedelta(days=1)).isoformat(),
    )
    # A second entry appears on the feed before Monday's digest.
    feed_server.routes["/blog.rss"] = Route(
        clinic_rss(
            [
                ("a1", "Sleep and recovery", monday - timedelta(days=3)),
                ("a2", "Staying active with chronic pain", monday - timedelta(hours=2)),
            ]
        )
    )
    cli.ok("scheduler", "tick", "--at", (monday + timedelta(minutes=5)).isoformat())
    [digest] = [parse_eml(p) for p in cli.eml_files()]
    text = digest.get_body(("plain",)).get_content()
    assert "Staying active with chronic pain" in text and "Sleep and recovery" in text
    # The next Monday nothing new was published: the digest is skipped.
    next_monday = monday + timedelta(weeks=1, minutes=5)
    cli.ok("scheduler", "tick", "--at", next_monday.isoformat())
    assert len(cli.eml_files()) == 1
    runs = cli.json("campaigns", "show", str(campaign))["runs"]
    assert [r["status"] for r in runs] == ["finished", "skipped"]


def test_a_drip_step_shows_an_article_title_with_braces_as_written(session: Session) -> None:
    import_sample(session)
    make_list(session)
    sequence = create_sequence(session, series_slug=SERIES, list_slug="clinic-news", every="7d")
    article = session.scalars(select(Article).order_by(Article.id)).first()
    assert article is not None
    article.title = "Dosing {{ weight * 2 }} {% if x %}and {# notes #}"
    run = Run(
        sequence_id=sequence.id,
        article_id=article.id,
        occurrence_at=utcnow(),
        status=RunStatus.sending,
    )
    session.add(run)
    session.flush()
    snapshot = run_email(session, run, settings_for("sqlite://"))
    assert snapshot.subject == article.title
