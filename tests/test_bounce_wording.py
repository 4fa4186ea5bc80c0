"""What a bounce says in words: full mailboxes in many languages, permanent failures
without a status code, and notices from older mailers (SMTP32, Exchange 5.5/2003)."""

from __future__ import annotations

import pytest

from newsletter.bounces.dsn import Kind, classify


def plain_bounce(
    body: str, subject: str = "Undeliverable Mail", sender: str = "postmaster"
) -> bytes:
    return (
        f"From: Mail Delivery System <{sender}@mx.example.net>\r\n"
        "To: bounces@news.example.org\r\n"
        f"Subject: {subject}\r\n"
        "Message-ID: <report-1@mx.example.net>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n" + body.replace("\n", "\r\n")
    ).encode()


def dsn(diagnostic: str, status: str = "5.0.0") -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.net\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <report-2@mx.example.net>\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n'
        "\r\n--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--b\r\nContent-Type: message/delivery-status; charset=utf-8\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        "Final-Recipient: rfc822; reader@example.com\r\nAction: failed\r\n"
        f"Status: {status}\r\nDiagnostic-Code: smtp; {diagnostic}\r\n--b--\r\n"
    ).encode()


FULL_MAILBOX = {
    "english": "552 Mailbox is full",
    "english, disk space": "550 user has exceeded the disk space limit",
    "english, quota": "550 The user is over their storage quota",
    "german": "550 Das Postfach ist voll",
    "german, storage": "554 Nicht genügend Speicherplatz im Postfach des Empfängers",
    "french": "550 La boîte aux lettres est pleine",
    "spanish": "550 El buzón del destinatario está lleno",
    "italian": "552 La casella di posta è piena",
    "portuguese": "550 A caixa postal do destinatário está cheia",
    "dutch": "550 De mailbox is vol",
    "russian": "550 Почтовый ящик переполнен",
    "russian, quota": "552 Превышена квота почтового ящика",
}


@pytest.mark.parametrize("words", FULL_MAILBOX.values(), ids=FULL_MAILBOX.keys())
def test_a_full_mailbox_in_words_is_soft_whatever_the_5xx(words: str) -> None:
    report = classify(dsn(words))

    assert report.kind == Kind.soft


@pytest.mark.parametrize("words", FULL_MAILBOX.values(), ids=FULL_MAILBOX.keys())
def test_a_full_mailbox_in_a_plain_notice_is_soft(words: str) -> None:
    body = f"Delivery to the following recipient failed:\n\n<reader@example.com>: {words}\n"

    report = classify(plain_bounce(body))

    assert report.kind == Kind.soft
    assert report.recipient == "reader@example.com"


STATUSLESS_PERMANENT = {
    "domino": "User reader (reader@example.com) not listed in Domino Directory",
    "exim unrouteable": 'reader@example.com:\n    unrouteable mail domain "example.com"',
    "expired account": "<reader@example.com>:\nThis account has been disabled or discontinued",
}


@pytest.mark.parametrize("words", STATUSLESS_PERMANENT.values(), ids=STATUSLESS_PERMANENT.keys())
def test_a_permanent_failure_without_a_code_is_hard(words: str) -> None:
    body = f"Your message was not delivered to:\n  reader@example.com\nbecause:\n  {words}\n"

    assert classify(plain_bounce(body)).kind == Kind.hard


def test_gmail_failed_permanently_with_no_details_is_hard() -> None:
    body = (
        "This is an automatically generated Delivery Status Notification\n\n"
        "Delivery to the following recipient failed permanently:\n\n"
        "     reader@example.com\n"
    )
    report = classify(plain_bounce(body, "Delivery Status Notification (Failure)", "mailer-daemon"))

    assert (report.kind, report.recipient) == (Kind.hard, "reader@example.com")


def test_gmail_failed_permanently_after_a_time_out_is_soft() -> None:
    body = (
        "Delivery to the following recipient failed permanently:\n\n"
        "     reader@example.com\n\n"
        "Technical details of permanent failure:\n"
        "TEMP_FAILURE: Could not initiate SMTP conversation with any hosts:\n"
        "[example.com (1): Connection timed out]\n"
    )
    report = classify(plain_bounce(body, "Delivery Status Notification (Failure)", "mailer-daemon"))

    assert report.kind == Kind.soft


def test_a_mail_ru_user_not_found_is_a_hard_bounce_not_an_auto_reply() -> None:
    raw = (
        "From: Mail Delivery System <mailer-daemon@corp.mail.ru>\r\n"
        "Subject: Mail failure.\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "Сообщение не было доставлено.\r\n\r\n"
        "Message was not delivered to the following addresses:\r\n\r\n"
        "reader@mail.ru\r\n"
        "SMTP error from remote mail server after RCPT TO:<reader@mail.ru>:\r\n"
        "host mxs.mail.ru: 550 Message was not accepted -- invalid mailbox.\r\n"
        "Local mailbox reader@mail.ru is unavailable: user not found\r\n"
    ).encode()

    report = classify(raw)

    assert (report.kind, report.recipient) == (Kind.hard, "reader@mail.ru")


def test_an_smtp32_notice_names_its_recipient_after_the_reason() -> None:
    body = (
        "Unknown user: reader@example.com\n\nOriginal message follows.\n\nTo: other@example.com\n"
    )

    report = classify(plain_bounce(body))

    assert (report.kind, report.recipient) == (Kind.hard, "reader@example.com")


def test_an_smtp32_full_mailbox_is_soft() -> None:
    body = "User mailbox exceeds allowed size: reader@example.com\n\nOriginal message follows.\n"

    assert classify(plain_bounce(body)).kind == Kind.soft


def test_an_exchange_2003_notice_names_the_recipient_before_the_date() -> None:
    body = (
        "Your message did not reach some or all of the intended recipients.\n\n"
        "The following recipient(s) cannot be reached:\n\n"
        "      reader@example.com on 05/04/2009 10:12\n"
        "            The e-mail account does not exist at the organization this message "
        "was sent to.\n"
        "            <mx.example.com #5.1.1>\n"
    )
    report = classify(plain_bounce(body, "Undeliverable: News"))

    assert (report.kind, report.recipient, report.status) == (
        Kind.hard,
        "reader@example.com",
        "5.1.1",
    )


def test_an_exchange_55_notice_with_a_display_name_only_is_a_bounce_without_recipient() -> None:
    body = (
        "Your message\n\n  Subject: News\n\ndid not reach the following recipient(s):\n\n"
        "Reader Name on Fri, 14 Sep 2007 18:52:54 +0300\n"
        "    The recipient was unavailable to take delivery of the message\n"
    )
    report = classify(plain_bounce(body, "Undeliverable: News"))

    assert (report.kind, report.recipients) == (Kind.soft, ())


def test_a_hotmail_complaint_that_is_the_newsletter_itself() -> None:
    raw = (
        b"From: news@news.example.org\r\n"
        b"To: reader@hotmail.com\r\n"
        b"Subject: This week\r\n"
        b"X-HmXmrOriginalRecipient: reader@hotmail.com\r\n"
        b"Content-Type: text/plain\r\n\r\nThe newsletter.\r\n"
    )

    report = classify(raw)

    assert (report.kind, report.recipient) == (Kind.complaint, "reader@hotmail.com")


def test_an_out_of_office_reply_mentioning_a_full_inbox_is_not_a_bounce() -> None:
    raw = (
        b"From: Reader <reader@example.com>\r\n"
        b"Subject: Out of office: This week\r\n"
        b"Auto-Submitted: auto-replied\r\n"
        b"Content-Type: text/plain\r\n\r\n"
        b"I am away until Monday; my mailbox is full, so please write again later.\r\n"
    )

    assert classify(raw).kind == Kind.autoreply
