"""Segments: every operator compiled and run on PostgreSQL and SQLite against one
population; the one-line form; errors naming the rule; a segmented campaign's run."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter.accounts import audit
from newsletter.accounts.models import AuditEntry
from newsletter.audience.models import Subscriber, SubscriptionStatus, Suppression
from newsletter.audience.segment_rules import RuleError, format_line, parse_line
from newsletter.campaigns.models import Campaign, CampaignStatus
from newsletter.campaigns.runs import claim_due_campaigns, fan_out_campaign_run
from newsletter.campaigns.service import ContentSpec, create_campaign, schedule_campaign
from newsletter.db import make_engine, make_sessionmaker, utcnow
from newsletter.errors import InvalidInputError
from newsletter.runs.ledger import Chunk, SegmentCompilerMissing
from newsletter.runs.models import Delivery
from newsletter.services import segments
from newsletter.tasks.app import configure, embedded_worker, runtime
from newsletter.tasks.scheduler import tick
from tests.factories import (
    SERIES,
    add_member,
    import_sample,
    make_list,
    series_digest,
    settings_for,
    start_run,
)
from tests.smtp_sink import SmtpSink


def _people(session: Session) -> None:
    """ann, ben, cai, dee and eve on clinic-news (eve suppressed, dee soft-bounced),
    fay unconfirmed there but confirmed on `other`."""
    news = make_list(session)
    other = make_list(session, "other", "Other list")
    population: dict[str, dict[str, Any]] = {
        "ann": {"city": "Oslo", "age": "42", "born": "1980-05-01", "vip": True, "plan": "Gold"},
        "ben": {"city": "Bergen", "age": 35, "born": "1991-11-30"},
        "cai": {"city": "Trondheim", "age": "n/a", "born": "unknown"},
        "dee": {},
        "eve": {"city": "Oslo", "age": 70, "vip": False},
    }
    zones = {"ann": "Europe/Oslo", "cai": "America/New_York"}
    for name, attributes in population.items():
        person = add_member(session, news, f"{name}@example.org")
        person.attributes = attributes
        person.timezone = zones.get(name)
    fay = add_member(session, news, "fay@example.org", status=SubscriptionStatus.unconfirmed)
    fay.attributes = {"city": "Bergen"}
    add_member(session, other, "fay@example.org")
    session.execute(
        update(Subscriber).where(Subscriber.email == "dee@example.org").values(soft_bounces=2)
    )
    session.add(Suppression(email="eve@example.org", reason="complaint"))
    # Everyone but ann joined long ago.
    session.execute(
        update(Subscriber)
        .where(Subscriber.email != "ann@example.org")
        .values(created_at=utcnow() - timedelta(days=400))
    )
    session.flush()


@pytest.fixture
def people(session: Session) -> Session:
    _people(session)
    return session


def matching(session: Session, rules: dict[str, Any] | str) -> set[str]:
    where = segments.compile_rules(segments.read_rules(rules), segments.dialect_of(session))
    emails = session.scalars(select(Subscriber.email).where(where))
    return {email.split("@")[0] for email in emails}


def rule(field: str, op: str, value: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"field": field, "op": op}
    if value is not None:
        out["value"] = value
    return out


EVERYONE = {"ann", "ben", "cai", "dee", "eve", "fay"}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (rule("attr.city", "eq", "Oslo"), {"ann", "eve"}),
        (rule("attr.city", "ne", "Oslo"), {"ben", "cai", "dee", "fay"}),
        (rule("attr.city", "in", ["Oslo", "Bergen"]), {"ann", "ben", "eve", "fay"}),
        (rule("attr.city", "contains", "ONDH"), {"cai"}),
        (rule("attr.plan", "contains", "%"), set()),  # a wildcard is a plain character
        (rule("attr.age", "gt", 40), {"ann", "eve"}),  # "42" counts; "n/a" is no error
        (rule("attr.age", "gte", 42), {"ann", "eve"}),
        (rule("attr.age", "lt", 42), {"ben"}),
        (rule("attr.age", "lte", 35.0), {"ben"}),
        (rule("attr.age", "eq", 35), {"ben"}),
        (rule("attr.born", "lt", "1990-01-01"), {"ann"}),
        (rule("attr.born", "gte", "1990-01-01"), {"ben"}),
        (rule("attr.vip", "eq", True), {"ann"}),
        (rule("attr.vip", "eq", False), {"eve"}),
        (rule("attr.plan", "present"), {"ann"}),
        (rule("attr.city", "absent"), {"dee"}),
        (rule("timezone", "eq", "Europe/Oslo"), {"ann"}),
        (rule("timezone", "in", ["Europe/Oslo", "America/New_York"]), {"ann", "cai"}),
        (rule("timezone", "ne", "Europe/Oslo"), EVERYONE - {"ann"}),
        (rule("timezone", "present"), {"ann", "cai"}),
        (rule("timezone", "absent"), EVERYONE - {"ann", "cai"}),
        (rule("list", "eq", "clinic-news"), {"ann", "ben", "cai", "dee", "eve"}),
        (rule("list", "in", ["other"]), {"fay"}),
        (rule("list", "ne", "clinic-news"), {"fay"}),
        (rule("list.clinic-news", "eq", "unconfirmed"), {"fay"}),
        (rule("status", "eq", "unconfirmed"), {"fay"}),
        (rule("status", "in", ["unconfirmed", "unsubscribed"]), {"fay"}),
        (rule("bounce", "eq", "suppressed"), {"eve"}),
        (rule("bounce", "eq", "soft"), {"dee"}),
        (rule("bounce", "eq", "none"), {"ann", "ben", "cai", "fay"}),
        (rule("bounce", "ne", "none"), {"dee", "eve"}),
        (rule("subscribed_since", "eq", "30d"), {"ann"}),
        (rule("subscribed_before", "eq", "30d"), EVERYONE - {"ann"}),
        (rule("subscribed_since", "eq", "2000-01-01"), EVERYONE),
    ],
)
def test_each_operator_selects_the_right_people(
    people: Session, condition: dict[str, Any], expected: set[str]
) -> None:
    assert matching(people, condition) == expected


def test_groups_and_negation_combine(people: Session) -> None:
    rules = {
        "match": "all",
        "rules": [
            rule("list", "eq", "clinic-news"),
            {
                "match": "any",
                "rules": [rule("attr.city", "eq", "Oslo"), rule("attr.age", "lt", 40)],
            },
            {"not": rule("bounce", "eq", "suppressed")},
        ],
    }
    assert matching(people, rules) == {"ann", "ben"}


def _engage(session: Session) -> None:
    """A past run to ann, ben and cai: ann clicked 3 days ago, ben opened 3 days ago,
    cai's 'click' was a link scanner's (a machine: no engagement), all of it human
    but cai's."""
    import_sample(session)
    campaign = series_digest(session, ["clinic-news"])
    run_id, _ = start_run(session, campaign)
    recent = utcnow() - timedelta(days=3)
    values = {
        "ann": {"first_click_at": recent, "first_open_at": recent},
        "ben": {"first_open_at": recent},
        "cai": {"first_click_at": recent, "first_click_machine": True},
    }
    for name, columns in values.items():
        session.execute(
            update(Delivery)
            .where(Delivery.run_id == run_id, Delivery.email == f"{name}@example.org")
            .values(**columns)
        )
    session.commit()


def test_engagement_counts_human_events_only(people: Session) -> None:
    _engage(people)
    assert matching(people, "clicked_within=30d") == {"ann"}
    assert matching(people, "opened_within=30d") == {"ann", "ben"}
    assert matching(people, "engaged_within=30d") == {"ann", "ben"}
    assert matching(people, "clicked_within=2d") == set()
    assert matching(people, "list=clinic-news and not engaged_within=30d") == {
        "cai",
        "dee",
        "eve",
    }


def test_the_one_line_form_reads_and_prints_the_same_rules() -> None:
    line = 'status=confirmed and attr.city in (Oslo, "Bergen") and clicked_within=30d'
    node = parse_line(line)
    assert (
        format_line(node)
        == "status=confirmed and attr.city in (Oslo, Bergen) and clicked_within=30d"
    )
    assert parse_line(format_line(node)) == node
    nested = parse_line('not (attr.plan present or attr.name contains "and") or attr.age>=18.5')
    assert format_line(nested) == (
        'not (attr.plan present or attr.name contains "and") or attr.age>=18.5'
    )
    assert parse_line(format_line(nested)) == nested


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            {"match": "all", "rules": [{}, {}, rule("attr.age", "gt_", 3)]},
            "rules[0].field: missing",
        ),
        (
            {
                "match": "all",
                "rules": [
                    rule("status", "eq", "confirmed"),
                    rule("status", "eq", "a"),
                    rule("attr.age", "gt_", 3),
                ],
            },
            "rules[1].value: must be one of unconfirmed, confirmed, unsubscribed, not 'a'",
        ),
        (
            {
                "match": "all",
                "rules": [
                    rule("list", "eq", "x"),
                    rule("list", "eq", "x"),
                    rule("attr.age", "gt_", 3),
                ],
            },
            "rules[2].op: unknown operator 'gt_'",
        ),
        ({"match": "some", "rules": []}, "match: must be 'all' or 'any', not 'some'"),
        ({"not": rule("colour", "eq", "red")}, "not.field: unknown field 'colour'"),
        (rule("timezone", "contains", "Oslo"), "op: timezone does not take 'contains'"),
        (rule("attr.age", "gt", "forty"), "value: 'gt' compares with a number or a date"),
        (rule("clicked_within", "eq", "30"), "value: must be a number of days like '30d'"),
        (rule("attr.city", "in", []), "value: 'in' takes a non-empty list"),
        (rule("attr.city", "present", "x"), "value: 'present' takes no value"),
        ("attr.city ~ Oslo", "unknown operator '~' after 'attr.city'"),
        ('attr.city = "Oslo', "cannot read the rule at character 13"),
        ("attr.city = ", "the rule ends too early"),
        ("attr.city in Oslo", "'in' takes a list in parentheses"),
        ("(status=confirmed", "missing ')'"),
    ],
)
def test_bad_rules_are_refused_naming_the_rule(rules: Any, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        segments.read_rules(rules)
    assert str(caught.value).startswith(message), str(caught.value)


def test_saved_segments_are_checked_audited_and_counted(people: Session) -> None:
    audit.act_as(people, audit.Actor.cli())
    segment = segments.create_segment(
        people, "oslo", "Readers in Oslo", 'attr.city="Oslo" and bounce=none'
    )
    assert segment.rules == {
        "match": "all",
        "rules": [rule("attr.city", "eq", "Oslo"), rule("bounce", "eq", "none")],
    }
    assert segments.count_matching(people, segment.rules) == 1
    assert segments.count_matching(people, "attr.city=Bergen") == 2
    assert segments.count_matching(people, "attr.city=Bergen", ["clinic-news"]) == 1
    with pytest.raises(InvalidInputError, match="nope"):
        segments.create_segment(people, "bad", "Bad", "list=nope")
    with pytest.raises(InvalidInputError, match="exists already"):
        segments.create_segment(people, "oslo", "Again", "status=confirmed")
    segments.update_segment(people, "oslo", rules="attr.city in (Oslo, Bergen)")
    described = segments.describe_segment(people, segments.get_segment(people, "oslo"), True)
    assert described["line"] == "attr.city in (Oslo, Bergen)"
    assert described["count"] == 4
    actions = people.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert actions == ["segment.create", "segment.update"]


def test_a_segmented_campaign_writes_ledger_rows_only_for_matching_readers(
    people: Session,
) -> None:
    import_sample(people)
    segments.create_segment(people, "oslo", "Readers in Oslo", "attr.city=Oslo")
    campaign = create_campaign(
        people,
        name="Oslo digest",
        list_slugs=["clinic-news"],
        subject="News",
        content=ContentSpec(series=SERIES),
        segment="oslo",
    )
    with pytest.raises(InvalidInputError, match="used by campaign"):
        segments.delete_segment(people, "oslo")
    assert segments.campaign_recipients(people, campaign.id).members == 2  # ann, eve
    schedule_campaign(people, campaign.id, utcnow())
    [run_id] = claim_due_campaigns(people, utcnow())
    people.commit()
    sessions = make_sessionmaker(people.get_bind())  # type: ignore[arg-type]
    chunks: list[Chunk] = []
    with pytest.raises(SegmentCompilerMissing):
        fan_out_campaign_run(sessions, run_id, 10, chunks.append)
    # ben moves to Oslo after the campaign was made: the segment reads at fan-out.
    people.execute(
        update(Subscriber)
        .where(Subscriber.email == "ben@example.org")
        .values(attributes={"city": "Oslo"})
    )
    people.commit()
    fan_out_campaign_run(sessions, run_id, 10, chunks.append, segments.segment_filter)
    rows = people.execute(select(Delivery.email, Delivery.status).where(Delivery.run_id == run_id))
    assert {(email.split("@")[0], status.value) for email, status in rows} == {
        ("ann", "pending"),
        ("ben", "pending"),
        ("eve", "suppressed"),
    }


def test_a_segmented_campaign_mails_only_matching_readers_through_the_worker(
    sqlite_url: str, smtp_sink: SmtpSink
) -> None:
    settings = settings_for(sqlite_url, mail_url=smtp_sink.url, broker_url="memory://localhost/")
    engine = make_engine(sqlite_url)
    with make_sessionmaker(engine)() as session:
        _people(session)
        import_sample(session)
        segments.create_segment(
            session, "oslo-or-young", "Oslo or young", "attr.city=Oslo or attr.age<40"
        )
        campaign = create_campaign(
            session,
            name="Segmented digest",
            list_slugs=["clinic-news"],
            subject="News",
            content=ContentSpec(series=SERIES),
            segment="oslo-or-young",
        )
        schedule_campaign(session, campaign.id, utcnow())
        session.commit()
        campaign_id = campaign.id
    engine.dispose()
    configure(settings)
    with embedded_worker():
        deadline = time.monotonic() + 90
        while True:
            tick(runtime())
            with runtime().sessions() as session:
                if session.get_one(Campaign, campaign_id).status is CampaignStatus.finished:
                    break
            assert time.monotonic() < deadline, "the run did not finish in time"
            time.sleep(0.2)
    runtime().close()
    # ann (Oslo) and ben (35); eve is in Oslo but suppressed; the rest do not match.
    assert sorted(smtp_sink.handler.recipients()) == ["ann@example.org", "ben@example.org"]


def test_a_sequence_with_a_segment_enrols_only_matching_members(people: Session) -> None:
    from newsletter.sequences.engine import run_sequences
    from newsletter.sequences.models import Enrollment
    from newsletter.sequences.service import create_sequence, describe_sequence

    import_sample(people)
    segments.create_segment(people, "bergen", "Readers in Bergen", "attr.city=Bergen")
    sequence = create_sequence(
        people, series_slug=SERIES, list_slug="clinic-news", every="7d", segment="bergen"
    )
    assert describe_sequence(people, sequence)["segment"] == "bergen"
    with pytest.raises(InvalidInputError, match="used by sequence"):
        segments.delete_segment(people, "bergen")
    people.commit()
    with pytest.raises(SegmentCompilerMissing):
        run_sequences(people, utcnow(), 100)
    people.rollback()
    run_sequences(people, utcnow(), 100, segments.segment_filter)
    enrolled = people.scalars(
        select(Subscriber.email).join(Enrollment, Enrollment.subscriber_id == Subscriber.id)
    ).all()
    assert enrolled == ["ben@example.org"]  # fay is in Bergen but unconfirmed there


def test_the_consoles_rule_rows_make_the_same_rules_and_name_a_bad_row() -> None:
    from newsletter.audience.segment_rules import rules_from_rows

    rows = [
        ("attr.city", "in", "Oslo, Bergen"),
        ("", "=", ""),  # left empty
        ("attr.age", ">=", "40"),
        ("clicked_within", "=", "30d"),
    ]
    rules = rules_from_rows("all", rows)
    assert rules is not None
    assert format_line(parse_line(format_line(segments.read_rules(rules)))) == (
        "attr.city in (Oslo, Bergen) and attr.age>=40 and clicked_within=30d"
    )
    assert rules_from_rows("any", [("", "=", "")] * 3) is None
    with pytest.raises(RuleError, match=r"^rules\[1\]\.value: 'in' takes a non-empty list$"):
        rules_from_rows("all", [("timezone", "present", ""), ("list", "in", " , ")])
