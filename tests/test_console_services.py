"""The service functions the console added (the CLI and the API may call them too):
the calendar, what needs attention, background imports, recipients after
suppressions, previews of unsaved drafts, template versions, link checks and the
settings page; on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter.accounts import audit
from newsletter.audience import importer
from newsletter.audience.lists import get_list
from newsletter.audience.models import ImportJob, Subscription, SubscriptionStatus
from newsletter.audience.subscriptions import suppress_address
from newsletter.campaigns import service
from newsletter.campaigns.models import Campaign
from newsletter.campaigns.templates import (
    diff_versions,
    get_template,
    restore_version,
    save_template,
    template_versions,
)
from newsletter.config import effective_settings
from newsletter.db import make_sessionmaker, utcnow
from newsletter.delivery.linkcheck import GMAIL_CLIP_BYTES, check_email
from newsletter.delivery.previews import preview_for
from newsletter.runs.models import Run, RunStatus
from newsletter.services.attention import needs_attention
from newsletter.services.calendar import calendar
from newsletter.services.data_rights import timeline
from tests.factories import (
    POSTAL_ADDRESS,
    add_member,
    import_sample,
    make_list,
    series_digest,
    settings_for,
    start_run,
)
from tests.feed_server import FeedServer, Route
from tests.test_console import open_template


def _digest(session: Session, name: str) -> Campaign:
    return service.create_campaign(
        session,
        name=name,
        list_slugs=["clinic-news"],
        subject=name,
        content=service.ContentSpec(latest=2),
    )


@pytest.fixture
def news(session: Session) -> Session:
    import_sample(session)
    make_list(session)
    session.flush()
    return session


def test_a_timeline_names_a_subscription_source_only_when_there_is_one(news: Session) -> None:
    news_list = get_list(news, "clinic-news")
    reader = add_member(news, news_list, "ann@example.org", "Ann")
    news.flush()
    subscription = news.scalars(select(Subscription)).one()

    subscribed = [e.detail for e in timeline(news, reader.id) if e.what == "subscribed"]
    subscription.source = "import"
    with_source = [e.detail for e in timeline(news, reader.id) if e.what == "subscribed"]

    assert subscribed == ["Clinic news"]
    assert with_source == ["Clinic news (import)"]


def test_a_timeline_says_one_attempt_not_one_attempts(news: Session) -> None:
    from newsletter.runs.models import Delivery

    reader = add_member(news, get_list(news, "clinic-news"), "ann@example.org", "Ann")
    run_id, _chunks = start_run(news, _digest(news, "Weekly"))
    news.execute(update(Delivery).values(attempts=1))

    [delivery] = [e.detail for e in timeline(news, reader.id) if e.what == "delivery"]

    assert delivery == f"Weekly (run {run_id}): pending, 1 attempt"


def test_scheduling_says_when_in_minutes_not_an_iso_timestamp(news: Session) -> None:
    once, weekly = _digest(news, "Once"), _digest(news, "Weekly")
    at = service.ScheduleRequest(
        at="2027-01-05T09:00", timezone="Europe/Berlin", postal_address=POSTAL_ADDRESS
    )
    cron = service.ScheduleRequest(
        cron="0 9 * * MON", timezone="America/New_York", postal_address=POSTAL_ADDRESS
    )

    said = [service.schedule(news, once.id, at), service.schedule(news, weekly.id, cron)]

    assert said[0] == f"campaign {once.id} scheduled for 2027-01-05 08:00 UTC"
    assert re.fullmatch(
        rf"campaign {weekly.id} recurs at '0 9 \* \* MON' in America/New_York; "
        r"next \d{4}-\d\d-\d\d 1[34]:00 UTC",
        said[1],
    ), said[1]


# --- the calendar ---------------------------------------------------------------------------


def test_recurring_occurrences_are_expanded_in_their_zone_and_clock_changes_marked(
    news: Session,
) -> None:
    weekly = _digest(news, "Weekly")
    service.schedule_recurring(
        news,
        weekly.id,
        "0 9 * * MON",
        "America/New_York",
        starting=datetime(2027, 3, 1, tzinfo=UTC),
        postal_address=POSTAL_ADDRESS,
    )

    entries = calendar(news, date(2027, 3, 1), date(2027, 3, 21))

    assert {e.local for e in entries} == {"09:00 America/New_York"}
    assert [(e.at, e.clock_change) for e in entries] == [
        (datetime(2027, 3, 1, 14, 0, tzinfo=UTC), ""),
        (datetime(2027, 3, 8, 14, 0, tzinfo=UTC), ""),
        # Clocks go forward on 14 March: 09:00 is now 13:00 UTC.
        (datetime(2027, 3, 15, 13, 0, tzinfo=UTC), "UTC-05:00 → UTC-04:00"),
    ]
    assert {e.state for e in entries} == {"recurring"}


def test_a_planned_draft_is_shown_apart_from_a_scheduled_send(news: Session) -> None:
    planned = _digest(news, "Planned")
    service.update_campaign(news, planned.id, planned_at=datetime(2027, 1, 5, 9, tzinfo=UTC))
    scheduled = _digest(news, "Scheduled")
    service.schedule_campaign(
        news, scheduled.id, datetime(2027, 1, 6, 9, tzinfo=UTC), postal_address=POSTAL_ADDRESS
    )
    untimed = _digest(news, "No date yet")

    entries = {e.title: e for e in calendar(news, date(2027, 1, 1), date(2027, 1, 31))}

    assert entries["Planned"].state == "planned" and entries["Planned"].planned
    assert entries["Scheduled"].state == "scheduled" and not entries["Scheduled"].planned
    assert untimed.name not in entries


def test_a_local_time_send_is_a_band_over_the_zones(news: Session) -> None:
    campaign = _digest(news, "Each reader at nine")
    service.schedule_campaign(
        news,
        campaign.id,
        datetime(2027, 2, 10, 9, tzinfo=UTC),
        "UTC",
        local_time=True,
        postal_address=POSTAL_ADDRESS,
    )

    [entry] = calendar(news, date(2027, 2, 1), date(2027, 2, 28))

    # 09:00 reaches UTC+14 at 19:00 UTC the day before, and UTC-12 at 21:00 UTC.
    assert entry.state == "local" and entry.day == date(2027, 2, 9)
    assert entry.band_from == datetime(2027, 2, 9, 19, tzinfo=UTC)
    assert entry.band_until == datetime(2027, 2, 10, 21, tzinfo=UTC)


def test_a_local_time_send_is_confirmed_at_the_wall_clock_time_chosen(news: Session) -> None:
    campaign = _digest(news, "Each reader at nine")
    request = service.ScheduleRequest(
        at="2027-02-10T09:00",
        timezone="Europe/Berlin",
        local_time=True,
        postal_address=POSTAL_ADDRESS,
    )

    said = service.schedule(news, campaign.id, request)

    # Nine in Berlin is 08:00 UTC; what each reader gets is nine, not eight.
    assert said.endswith("scheduled for 2027-02-10 09:00 in each subscriber's time zone")


def test_runs_and_articles_due_for_publication_appear_on_their_day(news: Session) -> None:
    campaign = series_digest(news, ["clinic-news"])
    add_member(news, get_list(news, "clinic-news"), "ann@example.org")
    run_id, _ = start_run(news, campaign)
    today = utcnow().date()

    entries = calendar(news, today, today)
    september = calendar(news, date(2026, 9, 1), date(2026, 9, 30))

    assert [(e.kind, e.campaign_id) for e in entries if e.kind == "run"] == [("run", campaign.id)]
    assert [e.title for e in september if e.kind == "article"][:1] == [
        "Ketamine infusions: what they are and what the evidence says"
    ]
    assert run_id


# --- needs attention ------------------------------------------------------------------------


def test_a_sending_run_without_progress_is_stalled_and_failures_are_counted(
    news: Session,
) -> None:
    campaign = series_digest(news, ["clinic-news"])
    mailing_list = campaign.lists[0]
    for i in range(3):
        add_member(news, mailing_list, f"r{i}@example.org")
    run_id, _ = start_run(news, campaign)
    now = utcnow()

    fresh = needs_attention(news, now, timedelta(seconds=60))
    news.execute(
        update(Run).where(Run.id == run_id).values(last_progress_at=now - timedelta(minutes=5))
    )
    stale = needs_attention(news, now, timedelta(seconds=60))

    assert [r.run for r in fresh.running] == [run_id] and fresh.stalled == []
    assert [r.run for r in stale.stalled] == [run_id]
    assert news.get_one(Run, run_id).status is RunStatus.sending
    assert not stale.quiet


# --- background imports ---------------------------------------------------------------------


def _csv(count: int) -> str:
    rows = [f"person{i}@example.org,Person {i}" for i in range(count)]
    return "email,name\n" + "\n".join(rows) + "\nbroken,Row\n"


def _sessions(session: Session) -> sessionmaker[Session]:
    return make_sessionmaker(session.get_bind())  # type: ignore[arg-type]


def test_a_background_import_resumes_after_its_last_committed_batch(
    news: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "BATCH_SIZE", 10)
    job = importer.queue_import(news, _csv(35), "people.csv", "clinic-news")
    news.commit()
    assert importer.claim_import_jobs(news, utcnow(), timedelta(seconds=60)) == [job.id]
    news.commit()
    # A worker saved the first batch, then died: its progress is in the job.
    first = importer.read_subscriber_rows(_csv(35)).rows[:10]
    report = importer.SubscriberImportReport()
    importer._save_batch(news, job.list_id, first, "csv", importer.OURS, report)
    news.execute(update(ImportJob).where(ImportJob.id == job.id).values(processed=10, created=10))
    news.commit()

    importer.run_import_job(_sessions(news), job.id)
    importer.run_import_job(_sessions(news), job.id)  # a redelivered task does nothing

    news.expire_all()
    done = news.get_one(ImportJob, job.id)
    assert (done.status, done.processed, done.total, done.created) == ("finished", 35, 35, 35)
    assert done.source_text is None  # the file is not kept once imported
    assert done.problems == [
        {"where": "row 37", "reason": done.problems[0]["reason"], "row": "broken,Row"}
    ]
    members = news.scalar(
        select(func.count(Subscription.id)).where(
            Subscription.status == SubscriptionStatus.confirmed
        )
    )
    assert members == 35
    assert importer.rejected_rows_csv(done).splitlines()[1].startswith("37,")


def test_a_claimed_import_is_not_claimed_again_until_it_stalls(news: Session) -> None:
    job = importer.queue_import(news, _csv(3), "people.csv", "clinic-news")
    news.commit()
    now = utcnow()

    first = importer.claim_import_jobs(news, now, timedelta(seconds=60))
    second = importer.claim_import_jobs(news, now + timedelta(seconds=10), timedelta(seconds=60))
    later = importer.claim_import_jobs(news, now + timedelta(minutes=5), timedelta(seconds=60))

    assert (first, second, later) == ([job.id], [], [job.id])


def test_an_unreadable_file_is_refused_before_anything_is_queued(news: Session) -> None:
    with pytest.raises(importer.InvalidInputError, match="email"):
        importer.queue_import(news, "name,city\nAnn,Paris\n", "people.csv", "clinic-news")
    assert news.scalar(select(func.count(ImportJob.id))) == 0


def test_a_dry_run_keeps_its_file_for_the_real_import_and_not_longer(news: Session) -> None:
    dry, _ = importer.run_import(
        news, _csv(2), "people.csv", "clinic-news", dry_run=True, keep_file=True
    )
    news.commit()
    stale, _ = importer.run_import(
        news, _csv(2), "old.csv", "clinic-news", dry_run=True, keep_file=True
    )
    stale.created_at = utcnow() - timedelta(hours=2)
    news.commit()

    real = importer.queue_from_dry_run(news, dry.id)
    dropped = importer.drop_stale_uploads(news, utcnow())

    assert real.status == "queued" and real.total == 2 and dry.source_text is None
    assert dropped == 1
    news.refresh(stale)
    assert stale.source_text is None
    with pytest.raises(importer.InvalidInputError, match="upload it again"):
        importer.queue_from_dry_run(news, stale.id)


# --- recipients, previews -------------------------------------------------------------------


def test_recipients_now_counts_each_person_once_less_the_suppressed(news: Session) -> None:
    news_list = get_list(news, "clinic-news")
    other = make_list(news, "other", "Other")
    for address in ("a@example.org", "b@example.org", "c@example.org"):
        add_member(news, news_list, address)
    add_member(news, other, "a@example.org")  # on both lists: one email
    add_member(news, other, "d@example.org", status=SubscriptionStatus.unconfirmed)
    suppress_address(news, "b@example.org", "manual", "")
    campaign = service.create_campaign(
        news,
        name="Both",
        list_slugs=["clinic-news", "other"],
        subject="Hi",
        content=service.ContentSpec(latest=1),
    )

    count = service.recipients_now(news, campaign.id)

    assert (count.members, count.suppressed, count.recipients) == (3, 1, 2)


def test_a_preview_of_unsaved_edits_shows_them_and_writes_nothing(news: Session) -> None:
    campaign = series_digest(news, ["clinic-news"], subject="Saved subject")
    news.commit()
    settings = settings_for("sqlite://")
    changes = {"subject": "Unsaved {{ slot('name') }}", "content": service.ContentSpec(latest=1)}

    shown = preview_for(news, campaign.id, settings, changes=changes)

    assert shown.subject == "Unsaved Alex"
    news.expire_all()
    assert news.get_one(Campaign, campaign.id).subject == "Saved subject"
    with pytest.raises(service.InvalidInputError, match="one line"):
        preview_for(news, campaign.id, settings, changes={"subject": "two\nlines"})


# --- templates ------------------------------------------------------------------------------


def test_every_template_save_is_a_version_that_can_be_compared_and_restored(
    session: Session,
) -> None:
    audit.act_as(session, audit.Actor("ann@clinic.example (console)", "session", 1))
    sources = open_template()
    save_template(session, "plain", "First", sources["html"], sources["text"])
    save_template(session, "plain", "Second", sources["html"], sources["text"])
    save_template(session, "plain", "Second", sources["html"], sources["text"])  # no change

    template = get_template(session, "plain")
    versions = template_versions(session, template)
    assert [v.version for v in versions] == [2, 1]
    assert versions[0].saved_by == "ann@clinic.example (console)"
    assert diff_versions(versions[1], versions[0]) == [
        ("@", "subject"),
        ("-", "First"),
        ("+", "Second"),
    ]
    restore_version(session, "plain", 1)
    assert template.subject == "First"
    assert [v.version for v in template_versions(session, template)] == [3, 2, 1]


# --- checks before sending ------------------------------------------------------------------


def test_the_link_check_fetches_each_link_and_the_size_check_knows_gmails_limit(
    feed_server: FeedServer,
) -> None:
    feed_server.routes["/fine"] = Route(b"<p>hello</p>")
    html = (
        f'<a href="{feed_server.url("/fine")}">ok</a> <a href="{feed_server.url("/gone")}">x</a>'
        '<a href="#unsubscribe">Unsubscribe</a>'
    )

    checked = check_email(html, allow_private=True)
    guarded = check_email(html)
    big = check_email("<p>" + "x" * GMAIL_CLIP_BYTES + "</p>", follow=False)

    assert [(link.ok, link.answer) for link in checked.links] == [(True, "200"), (False, "404")]
    assert checked.has_unsubscribe and not checked.clipped
    assert all(not link.ok and "not checked" in link.answer for link in guarded.links)
    assert big.clipped and not big.has_unsubscribe


def test_the_settings_page_never_shows_a_secret() -> None:
    settings = settings_for(
        "postgresql://app:hunter2@db/news",
        mail_url="smtp://user:smtp-pass@relay.example.org:587",
        webhook_mailgun_key="mailgun-secret",
    )

    shown = dict(effective_settings(settings))

    text = " ".join(shown.values())
    for secret in ("hunter2", "smtp-pass", "mailgun-secret", settings.secret_key):
        assert secret not in text
    assert shown["NEWSLETTER_SECRET_KEY"] == "•••• (set)"
    assert shown["NEWSLETTER_DATABASE_URL"] == "postgresql+psycopg://app:••••@db/news"
    assert shown["NEWSLETTER_CHUNK_SIZE"] == "2000"


def test_the_settings_page_shows_values_as_the_environment_writes_them() -> None:
    settings = settings_for("sqlite://", allow_http=True, lease_seconds=120.0, rate_limit=2.5)

    shown = dict(effective_settings(settings))

    assert shown["NEWSLETTER_ALLOW_HTTP"] == "true"
    assert shown["NEWSLETTER_ALLOW_PRIVATE_URLS"] == "false"
    assert shown["NEWSLETTER_LEASE_SECONDS"] == "120"
    assert shown["NEWSLETTER_RATE_LIMIT"] == "2.5"
    assert shown["NEWSLETTER_TEMPLATES_DIR"] == "(not set)"
    assert not any(value in {"True", "False", ""} for value in shown.values())


def test_an_hourly_campaign_is_one_calendar_entry_a_day_and_one_home_line(
    news: Session,
) -> None:
    hourly = _digest(news, "Hourly")
    service.schedule_recurring(
        news,
        hourly.id,
        "0 * * * *",
        "UTC",
        starting=datetime(2027, 4, 1, tzinfo=UTC),
        postal_address=POSTAL_ADDRESS,
    )

    entries = calendar(news, date(2027, 4, 1), date(2027, 4, 2))
    home = needs_attention(news, datetime(2027, 4, 1, 0, 30, tzinfo=UTC), timedelta(60), days=2)

    assert [(e.day, e.count) for e in entries] == [(date(2027, 4, 1), 24), (date(2027, 4, 2), 24)]
    assert (entries[0].at, entries[0].until) == (
        datetime(2027, 4, 1, 0, tzinfo=UTC),
        datetime(2027, 4, 1, 23, tzinfo=UTC),
    )
    assert [(u.when[:10], u.count) for u in home.upcoming] == [
        ("2027-04-01", 23),
        ("2027-04-02", 24),
        ("2027-04-03", 1),
    ]
