"""Data rights: a list as CSV, one person's data as JSON, forgetting a person."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from newsletter.audience.addresses import email_hash
from newsletter.audience.models import (
    BounceEvent,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
)
from newsletter.audience.signup import is_suppressed
from newsletter.cli.subscribers import app as subscribers_app
from newsletter.content.models import Series
from newsletter.db import Base, utcnow
from newsletter.errors import InvalidInputError, NotFoundError
from newsletter.runs.models import Delivery, DeliveryStatus, Run, RunStatus
from newsletter.sequences.models import Enrollment, Sequence
from newsletter.services.data_rights import export_data, export_list_csv, forget
from tests.factories import SERIES, add_member, import_sample, make_list, series_digest

ANN = "ann@example.org"
BOB = "bob@example.org"


def person_with_history(session: Session) -> Subscriber:
    """Ann: on two lists, in a sequence, sent a campaign once, bounced once, suppressed."""
    import_sample(session)
    news = make_list(session)
    other = make_list(session, "offers", "Offers")
    ann = add_member(session, news, ANN, "Ann", city="Berlin", plan="gold")
    add_member(session, other, ANN, status=SubscriptionStatus.unsubscribed)
    add_member(session, news, BOB, "Bob", city="Oslo")
    series_id = session.scalar(select(Series.id).where(Series.slug == SERIES))
    assert series_id is not None
    sequence = Sequence(series_id=series_id, list_id=news.id, every_seconds=86400)
    session.add(sequence)
    session.flush()
    session.add(Enrollment(sequence_id=sequence.id, subscriber_id=ann.id, sent_count=2))
    campaign = series_digest(session, ["clinic-news"])
    run = Run(campaign_id=campaign.id, occurrence_at=utcnow(), status=RunStatus.finished)
    session.add(run)
    session.flush()
    session.add(
        Delivery(
            run_id=run.id,
            subscriber_id=ann.id,
            list_id=news.id,
            email=ANN,
            status=DeliveryStatus.sent,
            message_id="<nl.1.1.x@clinic.example>",
            smtp_reply="250 2.0.0 OK <ann@example.org>",
            sent_at=utcnow(),
        )
    )
    session.add(
        BounceEvent(
            source="dsn", event_id="e1", email=ANN, kind="soft", detail="452 ann@example.org full"
        )
    )
    session.add(Suppression(email=ANN, reason="complaint", detail="ann@example.org complained"))
    session.commit()
    return ann


def rows_mentioning(session: Session, needle: str) -> list[str]:
    """Every table whose rows mention `needle` anywhere, as text."""
    found = []
    for table in Base.metadata.sorted_tables:
        for row in session.execute(select(table)):
            if needle in json.dumps(list(row), default=str):
                found.append(table.name)
                break
    return found


# --- the list export ---------------------------------------------------------------------


def exported(session: Session, slug: str = "clinic-news") -> list[dict[str, str]]:
    out = io.StringIO()
    count = export_list_csv(session, slug, out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == count
    return rows


def test_list_export_has_members_dates_and_attribute_columns(session: Session) -> None:
    person_with_history(session)

    rows = exported(session)

    assert [r["email"] for r in rows] == [ANN, BOB]
    assert list(rows[0]) == [
        "email",
        "name",
        "status",
        "subscribed_at",
        "confirmed_at",
        "unsubscribed_at",
        "city",
        "plan",
    ]
    assert rows[0]["name"] == "Ann" and rows[0]["status"] == "confirmed"
    assert rows[0]["confirmed_at"].startswith(str(utcnow().year))
    assert (rows[0]["city"], rows[0]["plan"]) == ("Berlin", "gold")
    assert (rows[1]["city"], rows[1]["plan"]) == ("Oslo", "")


def test_list_export_includes_people_who_left(session: Session) -> None:
    person_with_history(session)

    rows = exported(session, "offers")

    assert [(r["email"], r["status"]) for r in rows] == [(ANN, "unsubscribed")]
    assert rows[0]["unsubscribed_at"] == ""  # never recorded for this import-made row


def test_list_export_defuses_spreadsheet_formulas(session: Session) -> None:
    news = make_list(session)
    add_member(session, news, ANN, '=HYPERLINK("http://evil.example")', balance="-5", note="@x")

    [row] = exported(session)

    assert row["name"] == '\'=HYPERLINK("http://evil.example")'
    assert (row["balance"], row["note"]) == ("-5", "'@x")


def test_exporting_an_unknown_list_is_not_found(session: Session) -> None:
    with pytest.raises(NotFoundError, match="no list 'nope'"):
        export_list_csv(session, "nope", io.StringIO())


# --- one person's data -------------------------------------------------------------------


def test_export_data_holds_everything_about_the_person(session: Session) -> None:
    person_with_history(session)

    data = export_data(session, ANN)

    assert data["subscriber"]["name"] == "Ann"
    assert data["subscriber"]["attributes"] == {"city": "Berlin", "plan": "gold"}
    assert [(s["list"], s["status"]) for s in data["subscriptions"]] == [
        ("clinic-news", "confirmed"),
        ("offers", "unsubscribed"),
    ]
    assert [(e["series"], e["articles_sent"]) for e in data["enrollments"]] == [(SERIES, 2)]
    [delivery] = data["deliveries"]
    assert delivery["status"] == "sent" and delivery["message_id"] == "<nl.1.1.x@clinic.example>"
    assert delivery["campaign_name"] == "Series digest" and delivery["sent_at"]
    assert [(b["source"], b["kind"]) for b in data["bounce_events"]] == [("dsn", "soft")]
    assert [(s["reason"], s["kept_as"]) for s in data["suppressions"]] == [("complaint", "address")]
    assert json.loads(json.dumps(data)) == data  # plain JSON


def test_export_data_holds_nothing_about_anyone_else(session: Session) -> None:
    person_with_history(session)

    data = export_data(session, BOB)

    assert data["subscriber"]["email"] == BOB
    assert not data["deliveries"] and not data["bounce_events"] and not data["suppressions"]
    assert ANN not in json.dumps(data)


def test_export_data_reads_the_address_as_it_is_stored(session: Session) -> None:
    person_with_history(session)

    assert export_data(session, "  ann@EXAMPLE.org ")["subscriber"]["email"] == ANN


def test_export_data_of_a_stranger_is_not_found(session: Session) -> None:
    with pytest.raises(NotFoundError, match=r"no data on nobody@example\.org"):
        export_data(session, "nobody@example.org")


def test_a_malformed_address_is_refused(session: Session) -> None:
    with pytest.raises(InvalidInputError, match="not an email address"):
        export_data(session, "not an address")


# --- forgetting --------------------------------------------------------------------------


def test_forget_leaves_the_address_nowhere(session: Session) -> None:
    person_with_history(session)

    report = forget(session, ANN)
    session.commit()

    assert rows_mentioning(session, ANN) == []
    assert rows_mentioning(session, "Berlin") == []  # attributes went with the row
    assert report.subscriber and report.subscriptions == 2 and report.enrollments == 1
    assert (report.deliveries, report.bounce_events) == (1, 1)


def test_forget_keeps_one_hashed_suppression(session: Session) -> None:
    person_with_history(session)

    report = forget(session, ANN)
    session.commit()

    [suppression] = session.scalars(select(Suppression)).all()
    assert suppression.email is None and suppression.detail == ""
    assert suppression.email_hash == email_hash(ANN)
    assert report.suppression == "converted"
    assert is_suppressed(session, ANN)


def test_forget_anonymises_bounce_events_but_keeps_their_key(session: Session) -> None:
    person_with_history(session)

    forget(session, ANN)
    session.commit()

    [event] = session.scalars(select(BounceEvent)).all()
    assert (event.source, event.event_id, event.kind) == ("dsn", "e1", "soft")
    assert (event.email, event.detail) == ("", "")


def test_forget_leaves_other_people_alone(session: Session) -> None:
    person_with_history(session)

    forget(session, ANN)
    session.commit()

    bob = session.scalar(select(Subscriber).where(Subscriber.email == BOB))
    assert bob is not None and bob.attributes == {"city": "Oslo"}
    assert session.scalar(select(Subscription.id).where(Subscription.subscriber_id == bob.id))
    assert not is_suppressed(session, BOB)


def test_forgetting_twice_changes_nothing_more(session: Session) -> None:
    person_with_history(session)
    forget(session, ANN)
    session.commit()

    again = forget(session, ANN)
    session.commit()

    assert not again.subscriber and again.suppression == "kept"
    assert len(session.scalars(select(Suppression)).all()) == 1


def test_forgetting_a_stranger_still_keeps_them_from_being_mailed(session: Session) -> None:
    report = forget(session, "stranger@example.org")
    session.commit()

    assert report.suppression == "created" and not report.subscriber
    assert is_suppressed(session, "stranger@example.org")
    with pytest.raises(NotFoundError, match="only a hash of the address"):
        export_data(session, "stranger@example.org")


def test_forget_merges_a_plain_and_a_hashed_suppression(session: Session) -> None:
    session.add(Suppression(email=ANN, reason="hard-bounce", detail="550 ann@example.org"))
    session.add(Suppression(email_hash=email_hash(ANN), reason="forgotten"))
    session.commit()

    forget(session, ANN)
    session.commit()

    [kept] = session.scalars(select(Suppression)).all()
    assert (kept.email, kept.email_hash) == (None, email_hash(ANN))


def test_forgotten_rows_really_left_the_database(session: Session) -> None:
    ann = person_with_history(session)
    ann_id = ann.id

    forget(session, ANN)
    session.commit()

    for table in ("subscriptions", "enrollments", "deliveries"):
        count = session.scalar(
            text(f"SELECT count(*) FROM {table} WHERE subscriber_id = :id"), {"id": ann_id}
        )
        assert count == 0, table


# --- the commands ------------------------------------------------------------------------


def test_export_command_writes_a_private_csv(
    session: Session, database_url: str, tmp_path: Path
) -> None:
    person_with_history(session)
    out = tmp_path / "news.csv"

    result = CliRunner().invoke(
        subscribers_app,
        ["export", "--list", "clinic-news", "--out", str(out)],
        env={"NEWSLETTER_DATABASE_URL": database_url},
    )

    assert result.exit_code == 0, result.output
    assert [r["email"] for r in csv.DictReader(out.open(encoding="utf-8"))] == [ANN, BOB]
    assert out.stat().st_mode & 0o077 == 0


def test_export_data_command_prints_json(session: Session, database_url: str) -> None:
    person_with_history(session)

    result = CliRunner().invoke(
        subscribers_app, ["export-data", ANN], env={"NEWSLETTER_DATABASE_URL": database_url}
    )

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["subscriber"]["email"] == ANN


def test_forget_command_asks_first(session: Session, database_url: str) -> None:
    person_with_history(session)
    env = {"NEWSLETTER_DATABASE_URL": database_url}

    declined = CliRunner().invoke(subscribers_app, ["forget", ANN], input="n\n", env=env)
    session.expire_all()
    still_there = session.scalar(select(Subscriber.id).where(Subscriber.email == ANN))
    confirmed = CliRunner().invoke(subscribers_app, ["forget", ANN], input="y\n", env=env)

    assert declined.exit_code == 1 and still_there is not None
    assert confirmed.exit_code == 0, confirmed.output
    assert "forgotten: subscriber deleted" in confirmed.output
    session.expire_all()
    assert session.scalar(select(Subscriber.id).where(Subscriber.email == ANN)) is None


def test_forget_command_with_yes_does_not_ask(session: Session, database_url: str) -> None:
    person_with_history(session)

    result = CliRunner().invoke(
        subscribers_app,
        ["forget", ANN, "--yes", "--json"],
        env={"NEWSLETTER_DATABASE_URL": database_url},
    )

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["suppression"] == "converted"
