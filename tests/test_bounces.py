"""Bounce mail: the labelled corpus, what each kind of report does, mailbox import."""

from __future__ import annotations

import csv
import mailbox
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from newsletter.audience.models import (
    BounceEvent,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
)
from newsletter.bounces.actions import apply_bounce, apply_report
from newsletter.bounces.dsn import BounceReport, Kind, RecipientResult, classify, make_report
from newsletter.bounces.mailbox import MailboxError, fetch_imap, import_mailbox
from newsletter.cli.bounces import app as bounces_cli
from tests.factories import add_member, make_list

CORPUS = Path(__file__).parent / "data" / "bounces"
LABELS = list(csv.DictReader((CORPUS / "labels.csv").open(encoding="utf-8", newline="")))


def corpus(name: str) -> bytes:
    return next(CORPUS.glob(f"{name}*.eml")).read_bytes()


# --- the corpus ------------------------------------------------------------------------


def test_every_corpus_file_has_a_label() -> None:
    assert sorted(p.name for p in CORPUS.glob("*.eml")) == sorted(r["file"] for r in LABELS)
    assert len(LABELS) == 44


# Where our rule and the label could part, the label wins and the test says why:
# - 03 (5.7.26 SPF fail) and 04 (5.7.1 IP reputation) are permanent 5.7.x policy
#   blocks; sisimai does not count them as hard bounces because the mailbox may be
#   valid. We follow the label: a 5.x.x failure other than a full mailbox is hard.
# - 21 is soft although its Status is 5.0.0: the Diagnostic-Code names the real
#   cause, 5.2.2 mailbox full. 20 is soft although qmail calls it permanent (4.2.2).
# - 25 has no DSN and no status code; "reject reason: Mailbox full" makes it soft
#   (sisimai keeps it among its non-bounces).
# - 30 is a delay warning whose cause is a full mailbox: delayed, not soft.
# - 34 is a DMARC failure report (ARF auth-failure): kind complaint, as labelled;
#   acting on it is another matter (test_dmarc_failure_report_unsubscribes_nobody).
# - 44 is Apple Mail's unsubscribe request, marked Auto-Submitted: an unsubscribe, not a bounce.
@pytest.mark.parametrize("row", LABELS, ids=[r["file"][:2] for r in LABELS])
def test_corpus_message_is_classified_as_labelled(row: dict[str, str]) -> None:
    report = classify((CORPUS / row["file"]).read_bytes())

    assert report.kind == Kind(row["kind"])
    assert ";".join(r.address for r in report.recipients) == row["recipient"]
    statuses = [r.status for r in report.recipients] or [report.status]
    assert ";".join(statuses) == row["status"]


def test_original_recipient_is_kept_when_an_alias_was_expanded() -> None:
    (recipient,) = classify(corpus("03")).recipients

    assert recipient.address == "kijitora@google.example.com"
    assert recipient.original_address == "neko@example.co.jp"


def test_feedback_type_is_read_from_the_arf_report() -> None:
    assert classify(corpus("33")).feedback_type == "opt-out"
    assert classify(corpus("34")).feedback_type == "auth-failure"


def test_report_without_message_id_is_known_by_a_hash_of_its_bytes() -> None:
    raw = corpus("08")  # qmail: no Message-ID header

    assert classify(raw).event_id == classify(raw).event_id
    assert classify(raw).event_id.startswith("sha256:")
    assert classify(raw + b"\n").event_id != classify(raw).event_id


def test_exchange_ndr_without_a_delivery_status_part_is_read_from_its_text() -> None:
    raw = (
        b"From: postmaster@mail.example.com\r\nTo: news@clinic.example\r\n"
        b"Subject: Undeliverable: Clinic news\r\nMessage-ID: <ndr-1@mail.example.com>\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        b"Delivery has failed to these recipients or distribution lists:\r\n\r\n"
        b"Ann<mailto:ann@example.com>\r\nThe recipient's e-mail address was not found.\r\n\r\n"
        b"Diagnostic information for administrators:\r\n\r\n"
        b"#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##\r\n\r\n"
        b"Original message headers:\r\n\r\nTo: Bob <bob@example.com>\r\n"
    )

    report = classify(raw)

    assert (report.kind, report.recipient, report.status) == (
        Kind.hard,
        "ann@example.com",
        "5.1.1",
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe\x00garbage",
        b"Content-Type: multipart/report; boundary=x\n\n--x\n",
        b"From: MAILER-DAEMON@example.org\nSubject: =?ut\xff-8?B?Zm9v?=\n\nhello\n",
    ],
    ids=["empty", "binary", "unclosed multipart", "unknown charset in subject"],
)
def test_malformed_mail_is_not_a_bounce_and_does_not_raise(raw: bytes) -> None:
    assert classify(raw).kind is Kind.not_bounce


# --- acting on reports -----------------------------------------------------------------


def hard(address: str, event_id: str = "<hard-1@mta.example>") -> BounceReport:
    return make_report(None, event_id, [RecipientResult(address, Kind.hard, "5.1.1")])


def soft(address: str, event_id: str) -> BounceReport:
    return make_report(None, event_id, [RecipientResult(address, Kind.soft, "4.2.2")])


def suppressed(session: Session) -> dict[str, str]:
    return {s.email or "": s.reason for s in session.scalars(select(Suppression))}


def event_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(BounceEvent)) or 0


def statuses(session: Session, subscriber: Subscriber) -> list[tuple[SubscriptionStatus, str]]:
    rows = session.scalars(
        select(Subscription)
        .where(Subscription.subscriber_id == subscriber.id)
        .order_by(Subscription.list_id)
    )
    return [(s.status, s.source) for s in rows]


def test_hard_bounce_suppresses_the_address_at_once(session: Session) -> None:
    add_member(session, make_list(session), "ann@example.org")

    said = apply_bounce(session, hard("ann@example.org"), "dsn")

    assert suppressed(session) == {"ann@example.org": "hard-bounce"}
    assert said == "suppressed ann@example.org (hard bounce)"


def test_address_is_matched_whatever_its_case(session: Session) -> None:
    add_member(session, make_list(session), "Ann@example.org")

    apply_bounce(session, hard("ANN@EXAMPLE.Org"), "dsn")

    assert suppressed(session) == {"ann@example.org": "hard-bounce"}


def test_soft_bounces_suppress_only_when_they_reach_the_limit(session: Session) -> None:
    ann = add_member(session, make_list(session), "ann@example.org")

    first = apply_bounce(session, soft("ann@example.org", "<s1@mta>"), "dsn", 2)
    assert suppressed(session) == {}
    second = apply_bounce(session, soft("ann@example.org", "<s2@mta>"), "dsn", 2)

    session.refresh(ann)
    assert ann.soft_bounces == 2
    assert suppressed(session) == {"ann@example.org": "soft-bounces"}
    assert first == "soft bounce 1 of 2 for ann@example.org"
    assert second == "suppressed ann@example.org (soft bounce 2 of 2)"


def test_default_limit_is_three_soft_bounces(session: Session) -> None:
    add_member(session, make_list(session), "ann@example.org")

    for n in (1, 2):
        apply_bounce(session, soft("ann@example.org", f"<s{n}@mta>"), "dsn")
    assert suppressed(session) == {}
    apply_bounce(session, soft("ann@example.org", "<s3@mta>"), "dsn")

    assert suppressed(session) == {"ann@example.org": "soft-bounces"}


def test_replayed_soft_bounce_is_counted_once(session: Session) -> None:
    report = classify(corpus("17"))  # a real Postfix quota bounce
    ann = add_member(session, make_list(session), report.recipient)

    apply_bounce(session, report, "dsn")
    said = apply_bounce(session, report, "dsn")

    session.refresh(ann)
    assert ann.soft_bounces == 1
    assert event_count(session) == 1
    assert said == "replay of dsn event: nothing changed"


def test_same_event_id_from_another_source_is_another_event(session: Session) -> None:
    add_member(session, make_list(session), "ann@example.org")

    apply_bounce(session, soft("ann@example.org", "42"), "sendgrid")
    apply_bounce(session, soft("ann@example.org", "42"), "postmark")

    assert event_count(session) == 2


def test_complaint_unsubscribes_from_every_list_and_suppresses(session: Session) -> None:
    news, offers = make_list(session), make_list(session, "offers", "Offers")
    kim = add_member(session, news, "kijitora@y.example.com")
    add_member(session, offers, "kijitora@y.example.com")
    add_member(session, news, "other@example.org")

    said = apply_bounce(session, classify(corpus("32")), "dsn")  # Yahoo FBL via SES

    unsubscribed = SubscriptionStatus.unsubscribed
    assert statuses(session, kim) == [(unsubscribed, "complaint"), (unsubscribed, "complaint")]
    assert all(
        s.unsubscribed_at
        for s in session.scalars(select(Subscription).filter_by(subscriber_id=kim.id))
    )
    assert suppressed(session) == {"kijitora@y.example.com": "complaint"}
    assert said.startswith("unsubscribed kijitora@y.example.com from 2 list(s)")


def test_dmarc_failure_report_unsubscribes_nobody(session: Session) -> None:
    # ARF auth-failure (RFC 6591) says our message failed DMARC at the receiver,
    # not that the reader complained: it is recorded and nothing else.
    kim = add_member(session, make_list(session), "kijitora@example.com")

    said = apply_bounce(session, classify(corpus("34")), "dsn")

    assert statuses(session, kim) == [(SubscriptionStatus.confirmed, "")]
    assert suppressed(session) == {}
    assert event_count(session) == 1
    assert said == "recorded auth-failure report for kijitora@example.com: no action"


def test_delayed_and_autoreply_never_suppress(session: Session) -> None:
    add_member(session, make_list(session), "kijitora@example.com")

    delayed = apply_bounce(session, classify(corpus("28")), "dsn")
    autoreply = apply_bounce(session, classify(corpus("37")), "dsn")

    assert suppressed(session) == {}
    assert delayed == "recorded delayed for kijitora@example.com"
    assert autoreply == "ignored: autoreply"
    assert event_count(session) == 1  # auto-replies are not recorded


def test_bounce_for_an_expanded_alias_suppresses_the_address_we_mailed(
    session: Session,
) -> None:
    add_member(session, make_list(session), "neko@example.co.jp")

    apply_bounce(session, classify(corpus("03")), "dsn")

    assert suppressed(session) == {"neko@example.co.jp": "hard-bounce"}


def test_report_with_several_recipients_acts_on_each(session: Session) -> None:
    outcomes = apply_report(session, classify(corpus("16")), "dsn")

    assert [o.action for o in outcomes] == ["suppressed", "recorded", "suppressed"]
    assert set(suppressed(session)) == {"kijitora@nyaan.example.com", "mikeneko@neko.example.or.jp"}
    assert [o.action for o in apply_report(session, classify(corpus("16")), "dsn")] == [
        "replayed"
    ] * 3


def test_redacted_complaint_names_no_one_to_act_on(session: Session) -> None:
    assert apply_bounce(session, classify(corpus("31")), "dsn") == (
        "ignored: complaint naming no recipient"
    )


# --- mailboxes -------------------------------------------------------------------------

MAILBOX_FILES = ["01", "17", "26", "32", "37", "41"]  # hard, soft, delayed, complaint, …


def test_maildir_import_acts_on_bounces_and_a_second_import_changes_nothing(
    session: Session, tmp_path: Path
) -> None:
    maildir = mailbox.Maildir(tmp_path / "Bounces", create=True)
    for name in MAILBOX_FILES:
        maildir.add(corpus(name))
    news = make_list(session)
    add_member(session, news, "kijitora@example.co.jp")
    add_member(session, news, "kijitora@y.example.com")

    first = import_mailbox(session, tmp_path / "Bounces")
    second = import_mailbox(session, tmp_path / "Bounces")

    assert first.messages == 6
    assert first.kinds == {
        "hard": 1,
        "soft": 1,
        "delayed": 1,
        "complaint": 1,
        "autoreply": 1,
        "not-bounce": 1,
    }
    assert first.actions == {"suppressed": 1, "unsubscribed": 1, "recorded": 2, "ignored": 2}
    assert second.actions == {"replayed": 4, "ignored": 2}
    assert suppressed(session) == {
        "kijitora@example.co.jp": "hard-bounce",
        "kijitora@y.example.com": "complaint",
    }


def test_mbox_import_reads_every_message(session: Session, tmp_path: Path) -> None:
    box = mailbox.mbox(tmp_path / "bounces.mbox")
    for name in MAILBOX_FILES:
        box.add(corpus(name))
    box.close()

    report = import_mailbox(session, tmp_path / "bounces.mbox")

    assert report.messages == 6
    assert report.kinds["hard"] == report.kinds["complaint"] == 1


def test_folder_of_eml_files_is_imported(session: Session, tmp_path: Path) -> None:
    for name in ("07", "19"):
        (tmp_path / f"{name}.eml").write_bytes(corpus(name))

    report = import_mailbox(session, tmp_path)

    assert report.kinds == {"hard": 1, "soft": 1}


class FakeImap:
    """Speaks the few imaplib calls fetch_imap makes, from a dict of uid → message."""

    def __init__(self, messages: dict[str, bytes], session: Session) -> None:
        self.messages, self.session = messages, session
        self.seen: set[str] = set()
        self.selected = ""
        self.events_when_seen: dict[str, int] = {}

    def login(self, user: str, password: str) -> Any:
        if password != "right":
            import imaplib

            raise imaplib.IMAP4.error("[AUTHENTICATIONFAILED] Invalid credentials")
        return "OK", [b"Logged in"]

    def select(self, mailbox: str = "INBOX", readonly: bool = False) -> tuple[str, Any]:
        self.selected = mailbox
        return "OK", [str(len(self.messages)).encode()]

    def uid(self, command: str, *args: str) -> tuple[str, Any]:
        if command == "SEARCH":
            unseen = [u for u in self.messages if u not in self.seen]
            return "OK", [" ".join(unseen).encode()]
        if command == "FETCH":
            uid = args[0]
            return "OK", [(f"1 (UID {uid} BODY[] {{9}}".encode(), self.messages[uid]), b")"]
        if command == "STORE":
            uid = args[0]
            # Seen only after the effects were committed (a new session sees them).
            with Session(self.session.get_bind()) as other:
                self.events_when_seen[uid] = event_count(other)
            self.seen.add(uid)
            return "OK", []
        raise AssertionError(command)

    def logout(self) -> Any:
        return "BYE", []


def test_imap_fetch_processes_unseen_messages_and_marks_them_seen_after_commit(
    session: Session,
) -> None:
    server = FakeImap({"7": corpus("01"), "8": corpus("37")}, session)

    report = fetch_imap(
        session,
        "imap.example.org",
        "bounces",
        "right",
        "Bounce box",
        connect=lambda host, port, ssl: server,
    )
    again = fetch_imap(
        session,
        "imap.example.org",
        "bounces",
        "right",
        "Bounce box",
        connect=lambda host, port, ssl: server,
    )

    assert server.selected == '"Bounce box"'
    assert server.seen == {"7", "8"}
    assert server.events_when_seen == {"7": 1, "8": 1}
    assert report.kinds == {"hard": 1, "autoreply": 1}
    assert again.messages == 0


def test_imap_login_failure_is_a_mailbox_error(session: Session) -> None:
    server = FakeImap({}, session)

    with pytest.raises(MailboxError, match="AUTHENTICATIONFAILED"):
        fetch_imap(
            session, "imap.example.org", "bounces", "wrong", connect=lambda host, port, ssl: server
        )


# --- the command -----------------------------------------------------------------------


@pytest.fixture
def cli_env(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name in ("NEWSLETTER_DATABASE_URL", "NEWSLETTER_SOFT_BOUNCE_LIMIT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", sqlite_url)
    yield sqlite_url


def test_cli_classify_prints_kind_and_recipients(cli_env: str) -> None:
    result = CliRunner().invoke(bounces_cli, ["classify", str(next(CORPUS.glob("16*.eml")))])

    assert result.exit_code == 0, result.output
    assert result.output.endswith(
        ": hard: kijitora@nyaan.example.com hard 5.0.0, sabatora@cat.example.net delayed "
        "4.0.0, mikeneko@neko.example.or.jp hard 5.0.0\n"
    )


def test_cli_import_reports_what_it_did(cli_env: str, tmp_path: Path) -> None:
    for name in ("01", "37"):
        (tmp_path / f"{name}.eml").write_bytes(corpus(name))

    first = CliRunner().invoke(bounces_cli, ["import", str(tmp_path)])
    second = CliRunner().invoke(bounces_cli, ["import", str(tmp_path), "--json"])

    assert first.exit_code == 0, first.output
    assert first.output == ("mailbox: 2 messages (1 autoreply, 1 hard); 1 ignored, 1 suppressed\n")
    assert '"replayed": 1' in second.output
