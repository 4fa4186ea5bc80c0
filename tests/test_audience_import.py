"""Importing subscribers from CSV, with the address and list rules it relies on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from newsletter.audience.addresses import normalise_email
from newsletter.audience.importer import import_subscribers_csv
from newsletter.audience.lists import create_list, get_list, list_lists
from newsletter.audience.models import (
    MailingList,
    OptIn,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from newsletter.errors import InvalidInputError, NotFoundError, Problem, Remedy


def write_csv(folder: Path, text: str, name: str = "people.csv", bom: bool = False) -> Path:
    path = folder / name
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8"))
    return path


def subscriber(session: Session, email: str) -> Subscriber:
    found = session.scalar(select(Subscriber).where(Subscriber.email == email))
    assert found is not None, email
    return found


def subscription(session: Session, email: str, mailing_list: MailingList) -> Subscription:
    found = session.scalar(
        select(Subscription)
        .join(Subscriber)
        .where(Subscriber.email == email, Subscription.list_id == mailing_list.id)
    )
    assert found is not None, email
    return found


def count(session: Session, model: type[Any]) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


@pytest.fixture
def news(session: Session) -> MailingList:
    mailing_list = create_list(session, "news", "News")
    session.commit()
    return mailing_list


# --- importing ----------------------------------------------------------------------


def test_valid_rows_are_imported_as_confirmed_members(
    session: Session, news: MailingList, tmp_path: Path
) -> None:
    path = write_csv(tmp_path, "email,name\nAnn@Example.COM,Ann\n  bob@example.org  ,\n")

    report = import_subscribers_csv(session, path, "news", source="spring-fair")

    assert (report.created, report.updated, report.unchanged) == (2, 0, 0)
    assert report.problems == []
    assert subscriber(session, "ann@example.com").name == "Ann"
    assert subscriber(session, "bob@example.org").name == ""
    member = subscription(session, "ann@example.com", news)
    assert member.status is SubscriptionStatus.confirmed
    assert member.source == "spring-fair"
    assert member.confirmed_at is not None


def test_bad_rows_are_reported_with_row_numbers_and_reasons(
    session: Session, news: MailingList, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path,
        "email,name\n"
        "ann@example.com,Ann\n"  # row 2
        "not-an-address,Nobody\n"  # row 3
        "cy@example.com\n"  # row 4: one column short
        "ANN@EXAMPLE.COM,Ann again\n"  # row 5: the same mailbox in capitals (M2)
        "ann@Example.com,Ann twice\n"  # row 6: same as row 2 once normalised
        "dee@localhost,Dee\n"  # row 7
        "eve@example.com,Eve\n",  # row 8
    )

    report = import_subscribers_csv(session, path, "news")

    assert report.problems == [
        Problem("row 3", "email 'not-an-address': not an email address"),
        Problem("row 4", "expected 2 columns, found 1"),
        Problem("row 5", "duplicate of row 2"),
        Problem("row 6", "duplicate of row 2"),
        Problem("row 7", "email 'dee@localhost': domain has no dot"),
    ]
    assert report.created == 2
    assert {s.email for s in session.scalars(select(Subscriber))} == {
        "ann@example.com",
        "eve@example.com",
    }
    assert subscriber(session, "ann@example.com").name == "Ann"


def test_row_numbers_count_file_lines_across_quoted_newlines(
    session: Session, news: MailingList, tmp_path: Path
) -> None:
    path = write_csv(tmp_path, 'email,note\na@example.com,"two\nlines"\n\nbad,x\n')

    report = import_subscribers_csv(session, path, "news")

    assert report.problems == [Problem("row 5", "email 'bad': not an email address")]
    assert subscriber(session, "a@example.com").attributes == {"note": "two\nlines"}


def test_extra_columns_become_attributes_and_empty_cells_are_omitted(
    session: Session, news: MailingList, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path, "Name,EMAIL,City,Plan,\nAnn,ann@example.com,Leeds,,\nBob,bob@example.com,,pro,\n"
    )

    import_subscribers_csv(session, path, "news")

    assert subscriber(session, "ann@example.com").attributes == {"City": "Leeds"}
    assert subscriber(session, "bob@example.com").attributes == {"Plan": "pro"}
    assert subscriber(session, "bob@example.com").name == "Bob"


def test_reimport_creates_nothing_new(session: Session, news: MailingList, tmp_path: Path) -> None:
    path = write_csv(tmp_path, "email,name,city\nann@example.com,Ann,Leeds\nbob@example.com,,\n")
    import_subscribers_csv(session, path, "news")

    report = import_subscribers_csv(session, path, "news")

    assert (report.created, report.updated, report.unchanged) == (0, 0, 2)
    assert count(session, Subscriber) == 2
    assert count(session, Subscription) == 2


def test_reimport_merges_new_name_and_attributes(
    session: Session, news: MailingList, tmp_path: Path
) -> None:
    first = write_csv(tmp_path, "email,name,city\nann@example.com,Ann,Leeds\n", "first.csv")
    second = write_csv(tmp_path, "email,name,plan\nann@example.com,Ann Smith,pro\n", "second.csv")
    import_subscribers_csv(session, first, "news")

    report = import_subscribers_csv(session, second, "news")

    assert (report.created, report.updated, report.unchanged) == (0, 1, 0)
    ann = subscriber(session, "ann@example.com")
    assert ann.name == "Ann Smith"
    assert ann.attributes == {"city": "Leeds", "plan": "pro"}


def test_existing_subscriber_joins_another_list_without_a_duplicate(
    session: Session, news: MailingList, tmp_path: Path
) -> None:
    offers = create_list(session, "offers", "Offers")
    path = write_csv(tmp_path, "email\nann@example.com\n")
    import_subscribers_csv(session, path, "news")

    report = import_subscribers_csv(session, path, "offers")

    assert report.created == 1
    assert count(session, Subscriber) == 1
    assert subscription(session, "ann@example.com", offers).status is SubscriptionStatus.confirmed


def test_unsubscribed_member_is_not_resubscribed(
    session: Session, news: MailingList, tmp_path: Path
) -> None:
    gone = Subscriber(email="gone@example.com", name="Gone")
    session.add(gone)
    session.flush()
    session.add(
        Subscription(subscriber_id=gone.id, list_id=news.id, status=SubscriptionStatus.unsubscribed)
    )
    session.commit()
    path = write_csv(tmp_path, "email,name\ngone@example.com,New name\nnew@example.com,New\n")

    report = import_subscribers_csv(session, path, "news")

    assert (report.created, report.updated, report.unchanged) == (1, 0, 1)
    assert report.problems == []
    assert report.warnings == [
        Problem("row 2", "unsubscribed from this list earlier; not re-subscribed")
    ]
    session.expire_all()
    assert subscription(session, "gone@example.com", news).status is SubscriptionStatus.unsubscribed
    assert subscriber(session, "gone@example.com").name == "Gone"


def test_pending_subscription_is_confirmed_by_import(
    session: Session, news: MailingList, tmp_path: Path
) -> None:
    pending = Subscriber(email="pending@example.com")
    session.add(pending)
    session.flush()
    session.add(
        Subscription(
            subscriber_id=pending.id, list_id=news.id, status=SubscriptionStatus.unconfirmed
        )
    )
    session.commit()

    report = import_subscribers_csv(
        session, write_csv(tmp_path, "email\npending@example.com\n"), "news"
    )

    assert report.updated == 1
    member = subscription(session, "pending@example.com", news)
    assert member.status is SubscriptionStatus.confirmed
    assert member.confirmed_at is not None


def test_missing_email_header_is_an_error_naming_the_headers(
    session: Session, news: MailingList, tmp_path: Path
) -> None:
    path = write_csv(tmp_path, "e-mail,name,city\nann@example.com,Ann,Leeds\n")

    with pytest.raises(InvalidInputError, match=r"no 'email' column.*'e-mail', 'name', 'city'"):
        import_subscribers_csv(session, path, "news")
    assert count(session, Subscriber) == 0


def test_byte_order_mark_and_header_case_are_ignored(
    session: Session, news: MailingList, tmp_path: Path
) -> None:
    path = write_csv(tmp_path, "Email,NAME\r\nann@example.com,Ann\r\n", bom=True)

    report = import_subscribers_csv(session, path, "news")

    assert report.created == 1
    assert subscriber(session, "ann@example.com").name == "Ann"


def test_file_that_is_not_utf8_is_rejected_whole(
    session: Session, news: MailingList, tmp_path: Path
) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("email,name\nann@example.com,Ann\nzoe@example.com,Zoë\n".encode("latin-1"))

    with pytest.raises(InvalidInputError, match="row 3 is not UTF-8"):
        import_subscribers_csv(session, path, "news")
    assert count(session, Subscriber) == 0


def test_import_into_unknown_list_is_not_found(session: Session, tmp_path: Path) -> None:
    path = write_csv(tmp_path, "email\nann@example.com\n")

    with pytest.raises(NotFoundError, match="no list 'ghosts'"):
        import_subscribers_csv(session, path, "ghosts")


def test_large_import_uses_batches_not_a_query_per_row(
    session: Session, news: MailingList, tmp_path: Path
) -> None:
    rows = "".join(f"user{n}@example.com,User {n}\n" for n in range(2500))
    path = write_csv(tmp_path, "email,name\n" + rows + "user7@example.com,Again\n")
    statements: list[str] = []
    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    report = import_subscribers_csv(session, path, "news")
    again = import_subscribers_csv(session, path, "news")

    assert report.created == 2500
    assert report.problems == [Problem("row 2502", "duplicate of row 9")]
    assert again.unchanged == 2500
    assert count(session, Subscription) == 2500
    # Three batches per import, about four statements each: nowhere near one per row.
    assert len(statements) < 40


# --- addresses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Ann.Smith+news@Example.COM \n", "ann.smith+news@example.com"),
        ("o'brien@sub.example.co.uk", "o'brien@sub.example.co.uk"),
        ("ann@Bücher.Example", "ann@xn--bcher-kva.example"),
    ],
)
def test_normalise_email_gives_one_canonical_lower_case_spelling(raw: str, expected: str) -> None:
    assert normalise_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "not an email address"),
        ("ann.example.com", "not an email address"),
        ("ann@b@example.com", "more than one '@'"),
        ('"ann smith"@example.com', "contains spaces"),
        ('"ann"@example.com', "quoted local parts are not supported"),
        ("ann smith@example.com", "contains spaces"),
        ("ann\x00@example.com", "control characters"),
        ("ann@localhost", "domain has no dot"),
        ("ann@-bad.example", "not a valid host name"),
        ("ann@exa_mple.com", "not a valid host name"),
        ("ann@192.168.0.1", "not a valid host name"),
        ("ann..smith@example.com", "misplaced dot"),
        ("@example.com", "nothing before the '@'"),
        ("ann@", "nothing after the '@'"),
        ("a" * 65 + "@example.com", "too long"),
        ("ann@" + ".".join(["a" * 50] * 5) + ".com", "domain too long"),
        ("a" * 64 + "@" + ".".join(["b" * 46] * 4) + ".com", "^too long$"),
    ],
)
def test_normalise_email_rejects_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        normalise_email(raw)


# --- lists --------------------------------------------------------------------------


def test_create_list_rejects_taken_and_malformed_slugs(session: Session) -> None:
    create_list(session, "news", "News", opt_in=OptIn.single)

    with pytest.raises(InvalidInputError, match="list 'news' already exists"):
        create_list(session, "news", "Other news")
    with pytest.raises(InvalidInputError, match="must be lower-case"):
        create_list(session, "Big News", "Big news")
    assert get_list(session, "news").opt_in is OptIn.single


def test_get_list_names_a_missing_list_and_its_remedy_creating_it(session: Session) -> None:
    with pytest.raises(NotFoundError) as raised:
        get_list(session, "weekly")

    assert str(raised.value) == "no list 'weekly'"
    assert raised.value.remedy == Remedy("create", "list", "weekly")


def test_list_lists_counts_only_confirmed_members(
    session: Session, news: MailingList, tmp_path: Path
) -> None:
    create_list(session, "empty", "Empty")
    import_subscribers_csv(
        session, write_csv(tmp_path, "email\na@example.com\nb@example.com\n"), "news"
    )
    pending = Subscriber(email="pending@example.com")
    session.add(pending)
    session.flush()
    session.add(
        Subscription(
            subscriber_id=pending.id, list_id=news.id, status=SubscriptionStatus.unconfirmed
        )
    )
    session.flush()

    assert [(ml.slug, members) for ml, members in list_lists(session)] == [
        ("empty", 0),
        ("news", 2),
    ]
