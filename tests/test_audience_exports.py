"""Moving an audience in: the exports of Mailchimp, listmonk, Substack, Kit and others.

The Mailchimp and Substack files under tests/data/audience are those tools' export
layouts as Ghost's migration tools test with them (see SOURCES.md there); listmonk,
Kit, Ghost, Buttondown and Sendy files are written here in their tools' layouts, with
made-up people. Whoever opted out or bounced must never be mailed: the tests send a
real run through the chunk sender and look at who got it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.audience.importer import SubscriberImportReport, import_subscribers_csv
from newsletter.audience.layouts import parse_mapping, parse_status
from newsletter.audience.lists import get_list
from newsletter.audience.models import Subscriber, Subscription, SubscriptionStatus, Suppression
from newsletter.delivery.mailers import MemoryMailer
from newsletter.delivery.sending import ChunkSender
from newsletter.errors import InvalidInputError, Problem
from newsletter.runs.models import Delivery
from tests.factories import (
    add_member,
    import_sample,
    make_list,
    series_digest,
    settings_for,
    start_run,
)

AUDIENCE = Path(__file__).resolve().parent / "data" / "audience"
MAILCHIMP = AUDIENCE / "mailchimp"
SUBSTACK = AUDIENCE / "substack"
LIST = "clinic-news"


def listmonk_row(number: int, name: str, attributes: str, status: str) -> str:
    """A row as listmonk's ExportSubscribers writes it (times are Go's time.String())."""
    uuid = f"5e3c1b7a-0000-4000-8000-00000000000{number}"
    when = f"2024-03-0{number + 4} 10:11:12.123456 +0000 UTC"
    return f"{uuid},{name.lower()}@example.org,{name},{attributes},{status},{when},{when}\n"


LISTMONK = (
    "uuid,email,name,attributes,status,created_at,updated_at\n"
    + listmonk_row(1, "Ada", '"{""city"": ""Leeds"", ""plan"": ""pro""}"', "enabled")
    + listmonk_row(2, "Ben", "{}", "disabled")
    + listmonk_row(3, "Cyd", "{}", "blocklisted")
    + listmonk_row(4, "Dot", "{}", "enabled")
)
KIT = """\
first_name,email_address,state,created_at,tags
Ann,ann@example.org,active,2023-01-02T03:04:05Z,"readers, early"
Bea,bea@example.org,inactive,2023-01-03T03:04:05Z,
Cal,cal@example.org,cancelled,2023-01-04T03:04:05Z,
Dee,dee@example.org,bounced,2023-01-05T03:04:05Z,
Eli,eli@example.org,complained,2023-01-06T03:04:05Z,
Fay,fay@example.org,active,2023-01-07T03:04:05Z,
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def mailed(session: Session, database_url: str) -> list[str]:
    """Who a real run of a digest to the list reaches: the ledger's fan-out, then the
    chunk sender with a mailer that keeps what it is given."""
    import_sample(session)
    campaign = series_digest(session, [LIST])
    _, chunks = start_run(session, campaign)
    mailer = MemoryMailer()
    sender = ChunkSender(settings_for(database_url), mailer)
    for chunk in chunks:
        sender.send_chunk(session, chunk, "task")
    return sorted(message.recipient for message in mailer.messages)


def statuses(session: Session) -> dict[str, SubscriptionStatus]:
    rows = session.execute(select(Subscriber.email, Subscription.status).join(Subscription)).all()
    return {email: status for email, status in rows}


def suppressed(session: Session) -> set[str]:
    return {email for email in session.scalars(select(Suppression.email)) if email}


@pytest.fixture
def news(session: Session) -> str:
    make_list(session)
    session.commit()
    return LIST


def test_mailchimp_exports_subscribed_unsubscribed_and_cleaned(
    session: Session, news: str, database_url: str
) -> None:
    reports = [
        import_subscribers_csv(session, MAILCHIMP / f"{name}.csv", news)
        for name in ("subscribed", "unsubscribed", "cleaned")
    ]

    assert {report.layout for report in reports} == {"Mailchimp"}
    assert [(r.created, r.unsubscribed, r.suppressed) for r in reports] == [
        (5, 0, 0),
        (0, 5, 0),
        (0, 0, 5),
    ]
    assert all(report.problems == [] for report in reports)
    assert suppressed(session) == {f"c{i}@example.com" for i in range(1, 6)}
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == "u3@example.com"))
    assert subscriber is not None and subscriber.name == "Lorem Ipsum"
    assert subscriber.attributes["optin_time"] == "2020-12-25 13:35:34"
    assert subscriber.attributes["confirm_time"] == "2020-12-25 13:35:34"
    assert subscriber.attributes["unsubscribed_at"] == "2022-12-05 21:01:47"
    assert subscriber.attributes["Company"] == "Example foundation"
    assert "LEID" not in subscriber.attributes and "leid" not in subscriber.attributes
    assert mailed(session, database_url) == [f"s{i}@example.com" for i in range(1, 6)]


def test_listmonk_blocklisted_and_disabled_people_are_not_mailed(
    session: Session, news: str, database_url: str, tmp_path: Path
) -> None:
    report = import_subscribers_csv(session, write(tmp_path, "subscribers.csv", LISTMONK), news)

    assert report.layout == "listmonk"
    assert (report.created, report.unsubscribed, report.suppressed) == (2, 1, 1)
    assert report.problems == []
    assert statuses(session)["ben@example.org"] is SubscriptionStatus.unsubscribed
    assert suppressed(session) == {"cyd@example.org"}
    ada = session.scalar(select(Subscriber).where(Subscriber.email == "ada@example.org"))
    assert ada is not None
    assert ada.attributes == {
        "city": "Leeds",
        "plan": "pro",
        "signed_up_at": "2024-03-05 10:11:12.123456 +0000 UTC",
    }
    assert mailed(session, database_url) == ["ada@example.org", "dot@example.org"]


def test_substack_readers_who_turned_email_off_are_not_mailed(
    session: Session, news: str, database_url: str
) -> None:
    report = import_subscribers_csv(session, SUBSTACK / "fixtures_signup_emails.csv", news)

    assert report.layout == "Substack"
    assert (report.created, report.unsubscribed, report.problems) == (19, 2, [])
    recipients = mailed(session, database_url)
    # Every confirmed reader is in the run's ledger; the two who turned email off are not.
    in_ledger = set(session.scalars(select(Delivery.email)))
    assert len(in_ledger) == 19
    assert {"maguirec086@comm.ca", "nottimferris@gmail.com"}.isdisjoint(in_ledger)
    assert set(recipients) <= in_ledger
    assert "maguirec086@comm.ca" not in recipients


def test_substack_paid_subscribers_export_keeps_plan_and_opt_outs(
    session: Session, news: str
) -> None:
    report = import_subscribers_csv(session, SUBSTACK / "fixtures_subscriber_emails.csv", news)

    assert report.layout == "Substack"
    assert report.problems == []
    assert report.created + report.unsubscribed == 17
    assert statuses(session)["maguirec086@comm.ca"] is SubscriptionStatus.unsubscribed
    comp = session.scalar(select(Subscriber).where(Subscriber.email == "maguirec086@comm.ca"))
    assert comp is not None and comp.attributes["plan"] == "comp"


def test_kit_states(session: Session, news: str, database_url: str, tmp_path: Path) -> None:
    report = import_subscribers_csv(session, write(tmp_path, "kit.csv", KIT), news)

    assert report.layout == "Kit (ConvertKit)"
    assert (report.created, report.pending, report.unsubscribed, report.suppressed) == (2, 1, 1, 2)
    found = statuses(session)
    assert found["bea@example.org"] is SubscriptionStatus.unconfirmed
    assert found["cal@example.org"] is SubscriptionStatus.unsubscribed
    assert suppressed(session) == {"dee@example.org", "eli@example.org"}
    ann = session.scalar(select(Subscriber).where(Subscriber.email == "ann@example.org"))
    assert ann is not None and ann.name == "Ann"
    assert ann.attributes == {"signed_up_at": "2023-01-02T03:04:05Z", "tags": "readers, early"}
    assert mailed(session, database_url) == ["ann@example.org", "fay@example.org"]


def test_ghost_members_and_buttondown_layouts(session: Session, news: str, tmp_path: Path) -> None:
    ghost = write(
        tmp_path,
        "members.csv",
        "id,email,name,note,subscribed_to_emails,complimentary_plan,stripe_customer_id,"
        "created_at,deleted_at,labels,tiers\n"
        "1,gil@example.org,Gil,,true,false,,2022-01-01T00:00:00.000Z,,vip,\n"
        "2,hal@example.org,Hal,,false,false,,2022-01-02T00:00:00.000Z,,,\n",
    )
    buttondown = write(
        tmp_path,
        "buttondown.csv",
        "email,subscriber_type,creation_date,notes\n"
        "ivy@example.org,regular,2021-01-01,\n"
        "jon@example.org,unsubscribed,2021-01-02,\n"
        "kim@example.org,undeliverable,2021-01-03,\n"
        "lee@example.org,unactivated,2021-01-04,\n",
    )

    first = import_subscribers_csv(session, ghost, news)
    second = import_subscribers_csv(session, buttondown, news)

    assert (first.layout, first.created, first.unsubscribed) == ("Ghost members", 1, 1)
    assert (second.layout, second.created, second.unsubscribed) == ("Buttondown", 1, 1)
    assert (second.suppressed, second.pending) == (1, 1)
    assert suppressed(session) == {"kim@example.org"}


def test_sendy_exports_have_their_status_in_the_file_name(
    session: Session, news: str, tmp_path: Path
) -> None:
    rows = '"Mo","mo@example.org","Leeds"\n"Nia","nia@example.org","York"\n'

    report = import_subscribers_csv(
        session, write(tmp_path, "readers-unsubscribed.csv", rows), news
    )

    assert (report.layout, report.unsubscribed, report.problems) == ("Sendy", 2, [])
    mo = session.scalar(select(Subscriber).where(Subscriber.email == "mo@example.org"))
    assert mo is not None and (mo.name, mo.attributes) == ("Mo", {"field_3": "Leeds"})
    with pytest.raises(InvalidInputError, match=r"Sendy export .* file name"):
        import_subscribers_csv(session, write(tmp_path, "readers-all.csv", rows), news)


def test_columns_can_be_mapped(session: Session, news: str, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "crm.csv",
        "Mail,Full name,Opted out,Plan,Internal id\n"
        "pam@example.org,Pam,no,gold,77\n"
        "quin@example.org,Quin,yes,silver,78\n",
    )
    mapping = parse_mapping(
        "Mail=email, Full name=name, Opted out=email_disabled, Plan=attr.plan, Internal id=-"
    )

    report = import_subscribers_csv(session, path, news, mapping=mapping)

    assert (report.created, report.unsubscribed) == (1, 1)
    pam = session.scalar(select(Subscriber).where(Subscriber.email == "pam@example.org"))
    assert pam is not None and (pam.name, pam.attributes) == ("Pam", {"plan": "gold"})


def test_mapping_can_rename_a_recognised_layouts_column(
    session: Session, news: str, tmp_path: Path
) -> None:
    path = write(tmp_path, "kit.csv", KIT)

    import_subscribers_csv(session, path, news, mapping=parse_mapping("tags=attr.kit_tags"))

    ann = session.scalar(select(Subscriber).where(Subscriber.email == "ann@example.org"))
    assert ann is not None and ann.attributes["kit_tags"] == "readers, early"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Mail=email,Nope", r"'Nope' must be 'Column=field'"),
        ("Mail=shoe_size", r"'shoe_size' for column 'Mail' is not a field"),
        ("Mail=attr.two words", r"is not a field"),
    ],
)
def test_bad_mapping_is_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_mapping(text)


def test_mapping_a_column_the_file_lacks_is_refused_whole(
    session: Session, news: str, tmp_path: Path
) -> None:
    path = write(tmp_path, "crm.csv", "Mail,Name\npam@example.org,Pam\n")

    named = r"the column mapping names column 'e-mail'.*'Mail', 'Name'"
    with pytest.raises(InvalidInputError, match=named):
        import_subscribers_csv(session, path, news, mapping=parse_mapping("E-Mail=email"))
    assert session.scalar(select(func.count(Subscriber.id))) == 0


def test_bad_rows_name_row_and_column_and_the_rest_imports(
    session: Session, news: str, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "kit.csv",
        "first_name,email_address,state\n"
        "Ann,ann@example.org,active\n"
        "Bob,not-an-address,active\n"
        "Cy,cy@example.org,sleeping\n"
        "Di,di@example.org,\n",
    )

    report = import_subscribers_csv(session, path, news)

    assert report.problems == [
        Problem("row 3", "email_address 'not-an-address': not an email address"),
        Problem(
            "row 4",
            "state 'sleeping' is not a status we know; the row is not imported "
            "(nobody is mailed on a guess)",
        ),
        Problem(
            "row 5",
            "state '' is not a status we know; the row is not imported "
            "(nobody is mailed on a guess)",
        ),
    ]
    assert report.created == 1


def test_someone_listed_twice_gets_the_less_mailable_status(
    session: Session, news: str, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "kit.csv",
        "first_name,email_address,state\nAnn,ann@example.org,active\nAnn,ann@example.org,bounced\n",
    )

    report = import_subscribers_csv(session, path, news)

    assert report.problems == [
        Problem("row 3", "duplicate of row 2; this row's status (suppressed) applies")
    ]
    assert (report.created, report.suppressed) == (0, 1)
    assert suppressed(session) == {"ann@example.org"}


def test_an_opt_out_in_the_export_unsubscribes_a_confirmed_member(
    session: Session, news: str, database_url: str
) -> None:
    add_member(session, get_list(session, news), "u1@example.com")
    session.commit()

    report = import_subscribers_csv(session, MAILCHIMP / "unsubscribed.csv", news)

    assert report.unsubscribed == 5
    assert statuses(session)["u1@example.com"] is SubscriptionStatus.unsubscribed
    assert mailed(session, database_url) == []


def test_an_unsubscribed_member_stays_unsubscribed_whatever_the_export_says(
    session: Session, news: str, tmp_path: Path
) -> None:
    import_subscribers_csv(session, MAILCHIMP / "unsubscribed.csv", news)
    resubscribe = write(tmp_path, "subscribed.csv", (MAILCHIMP / "unsubscribed.csv").read_text())
    mapping = parse_mapping("UNSUB_TIME=ignore")

    report = import_subscribers_csv(session, resubscribe, news, mapping=mapping)

    assert (report.created, report.unchanged) == (0, 5)
    assert {w.reason for w in report.warnings} == {
        "unsubscribed from this list earlier; not re-subscribed"
    }
    assert set(statuses(session).values()) == {SubscriptionStatus.unsubscribed}


def test_dry_run_reports_every_outcome_and_writes_nothing(
    session: Session, news: str, tmp_path: Path
) -> None:
    report = import_subscribers_csv(session, write(tmp_path, "kit.csv", KIT), news, dry_run=True)

    assert report.dry_run
    assert report.summary() == (
        "2 created, 0 updated, 0 unchanged, 1 pending, 1 unsubscribed, 2 suppressed, 0 skipped"
    )
    assert session.scalar(select(func.count(Subscriber.id))) == 0
    assert session.scalar(select(func.count(Suppression.id))) == 0


def test_status_option_sets_the_status_of_a_file_without_one(
    session: Session, news: str, tmp_path: Path
) -> None:
    path = write(tmp_path, "left.csv", "email\nrae@example.org\n")

    report = import_subscribers_csv(
        session, path, news, default_status=parse_status("Unsubscribed")
    )

    assert isinstance(report, SubscriberImportReport)
    assert (report.created, report.unsubscribed) == (0, 1)


def test_status_option_names_its_choices() -> None:
    with pytest.raises(InvalidInputError, match="subscribed, pending, unsubscribed, suppressed"):
        parse_status("gone")
