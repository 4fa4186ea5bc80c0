"""Unsubscribing by mail: the mailto: entry of List-Unsubscribe, read from a Maildir.

The readers' messages are built the way mail clients build them from the header of
the email they received: a client's plain "unsubscribe" message to the address with
the subject the URI gives, and Apple Mail's one-tap form (X-Apple-Unsubscribe).
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from newsletter.audience.models import (
    BounceEvent,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from newsletter.audience.tokens import Purpose, TokenSigner
from newsletter.bounces.dsn import Kind, classify
from newsletter.bounces.mailbox import import_mailbox
from newsletter.config import Settings
from newsletter.delivery.mailers import MemoryMailer
from newsletter.delivery.sending import ChunkSender
from newsletter.runs.models import Delivery
from tests.factories import (
    add_member,
    import_sample,
    make_list,
    series_digest,
    settings_for,
    start_run,
)

MAILTO = "unsubscribe@clinic.example"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return settings_for(database_url, list_unsubscribe_mailto=MAILTO)


def send_campaign(session: Session, settings: Settings, subject: str) -> MemoryMailer:
    campaign = series_digest(session, ["clinic-news"], subject=subject)
    run_id, chunks = start_run(session, campaign)
    mailer = MemoryMailer()
    for chunk in chunks:
        ChunkSender(settings, mailer).send_chunk(session, chunk, f"claim-{run_id}")
    return mailer


def mailto_of(raw: bytes) -> tuple[str, str]:
    """The mailto: address and subject of a message's List-Unsubscribe header."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    header = " ".join(str(message["List-Unsubscribe"]).split())
    found = re.search(r"<mailto:([^?>]+)\?subject=([^>]+)>", header)
    assert found is not None, header
    return found.group(1), unquote(found.group(2))


def plain_request(reader: str, to: str, subject: str, n: int) -> bytes:
    """What a mail client sends for the reader from a mailto: URI."""
    return (
        f"From: {reader}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <plain-{n}@mail.example.org>\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nPlease take me off this list.\r\n"
    ).encode()


def apple_request(reader: str, to: str, subject: str, n: int) -> bytes:
    """Apple Mail's one-tap unsubscribe (as in tests/data/bounces/44-…)."""
    return (
        f"From: {reader}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <apple-{n}@icloud.com>\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n"
        "Auto-Submitted: auto-replied\r\nX-Apple-Unsubscribe: true\r\n"
        "Content-Type: text/plain; charset=UTF-8\r\n\r\n"
        "Apple Mail sent this email to unsubscribe from the message.\r\n"
    ).encode()


def maildir_with(path: Path, *messages: bytes) -> Path:
    box = mailbox.Maildir(path, create=True)
    for raw in messages:
        box.add(raw)
    box.close()
    return path


def status(session: Session, address: str) -> tuple[SubscriptionStatus, str]:
    session.expire_all()
    subscription = session.execute(
        select(Subscription).join(Subscriber).where(Subscriber.email == address)
    ).scalar_one()
    return subscription.status, subscription.source


def test_the_mailto_entry_carries_the_readers_signed_token(
    session: Session, settings: Settings
) -> None:
    import_sample(session)
    news = make_list(session)
    reader = add_member(session, news, "ann@example.org")
    session.commit()

    [message] = send_campaign(session, settings, "News").messages

    address, subject = mailto_of(message.data)
    assert address == MAILTO
    verb, token = subject.split(" ")
    claims = TokenSigner(settings.secret_key).verify(token, Purpose.unsubscribe)
    assert verb == "unsubscribe"
    assert (claims.subscriber_id, claims.list_id) == (reader.id, news.id)


def test_a_mailto_unsubscribe_plain_and_apple_one_tap_unsubscribes_and_no_later_run_mails_them(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    import_sample(session)
    news = make_list(session)
    for address in ("ann@example.org", "bob@icloud.example", "cy@example.org"):
        add_member(session, news, address)
    session.commit()
    first = {m.recipient: m.data for m in send_campaign(session, settings, "First").messages}
    ann_to, ann_subject = mailto_of(first["ann@example.org"])
    bob_to, bob_subject = mailto_of(first["bob@icloud.example"])
    inbox = maildir_with(
        tmp_path / "Unsubscribes",
        plain_request("ann@example.org", ann_to, ann_subject, 1),
        apple_request("bob@icloud.example", bob_to, bob_subject, 2),
    )
    assert classify(apple_request("b@x.example", MAILTO, "unsubscribe", 3)).kind is Kind.unsubscribe

    signer = TokenSigner(settings.secret_key)
    report = import_mailbox(session, inbox, signer=signer)
    session.commit()
    again = import_mailbox(session, inbox, signer=signer)
    session.commit()

    assert report.actions == {"unsubscribed": 2}
    assert again.actions == {"replayed": 2}
    assert status(session, "ann@example.org") == (SubscriptionStatus.unsubscribed, "mailto")
    assert status(session, "bob@icloud.example") == (SubscriptionStatus.unsubscribed, "mailto")
    assert status(session, "cy@example.org")[0] is SubscriptionStatus.confirmed
    events = session.scalars(select(BounceEvent).where(BounceEvent.source == "mailto")).all()
    assert sorted(e.email for e in events) == ["ann@example.org", "bob@icloud.example"]

    later = send_campaign(session, settings, "Second")
    assert [m.recipient for m in later.messages] == ["cy@example.org"]
    assert session.scalars(
        select(Delivery.email).where(Delivery.email == "ann@example.org")
    ).all() == ["ann@example.org"]  # the first run's row only


def test_a_request_without_a_valid_token_unsubscribes_nobody(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    news = make_list(session)
    reader = add_member(session, news, "ann@example.org")
    session.commit()
    forged = TokenSigner("another-key").sign(Purpose.unsubscribe, reader.id, news.id)
    wrong_purpose = TokenSigner(settings.secret_key).sign(Purpose.preferences, reader.id, news.id)
    inbox = maildir_with(
        tmp_path / "Unsubscribes",
        plain_request("ann@example.org", MAILTO, "unsubscribe", 1),  # From proves nothing
        plain_request("ann@example.org", MAILTO, f"unsubscribe {forged}", 2),
        apple_request("ann@example.org", MAILTO, f"unsubscribe {wrong_purpose}", 3),
    )

    report = import_mailbox(session, inbox, signer=TokenSigner(settings.secret_key))

    assert report.kinds == {"unsubscribe": 3}
    assert report.actions == {"ignored": 3}
    assert status(session, "ann@example.org")[0] is SubscriptionStatus.confirmed


def test_a_token_in_the_address_tag_works_too(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    news = make_list(session)
    reader = add_member(session, news, "ann@example.org")
    session.commit()
    token = TokenSigner(settings.secret_key).sign(Purpose.unsubscribe, reader.id, news.id)
    inbox = maildir_with(
        tmp_path / "Unsubscribes",
        plain_request("ann@example.org", f"unsubscribe+{token}@clinic.example", "Stop", 1),
    )

    import_mailbox(session, inbox, signer=TokenSigner(settings.secret_key))

    assert status(session, "ann@example.org") == (SubscriptionStatus.unsubscribed, "mailto")


def test_unsubscribes_import_reads_a_maildir_from_the_cli(
    session: Session, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from newsletter.cli import app

    news = make_list(session)
    reader = add_member(session, news, "ann@example.org")
    session.commit()
    token = TokenSigner(settings.secret_key).sign(Purpose.unsubscribe, reader.id, news.id)
    inbox = maildir_with(
        tmp_path / "Unsubscribes",
        apple_request("ann@example.org", MAILTO, f"unsubscribe {token}", 1),
    )
    for name, value in settings.model_dump().items():
        monkeypatch.setenv(f"NEWSLETTER_{name.upper()}", str(value))

    result = CliRunner().invoke(app, ["unsubscribes", "import", str(inbox)])

    assert result.exit_code == 0, result.output
    assert "1 messages (1 unsubscribe); 1 unsubscribed" in result.output
    assert status(session, "ann@example.org") == (SubscriptionStatus.unsubscribed, "mailto")
