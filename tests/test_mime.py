"""MIME built once per run and spliced per recipient equals a full render, on the wire."""

from __future__ import annotations

import email
import email.policy
import html
import re
import secrets
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.errors import InvalidInputError, NewsletterError
from newsletter.rendering.mime import (
    HeaderInjectionError,
    ListHeaders,
    MessageTemplate,
    Recipient,
    UnsupportedAddressError,
    encode_header,
    safe_header_value,
)
from newsletter.rendering.model import ArticleView, EmailContent, Link, Sender, Snapshot
from newsletter.rendering.render import render_email
from newsletter.rendering.slots import SlotTemplate, find_unfilled, sentinel

SUBJECT = "{{ slot('name', 'Reader') }}, news for {{ slot('attr.city', 'your area') }}"
HEADERS = ListHeaders(
    from_address="Riverside Clinic <news@clinic.example>",
    list_name="Clinic news",
    list_id="clinic-news.clinic.example",
    feedback_id="7:42:newsletter:clinic.example",
)
VALUES = {
    "name": "Zoë",
    "email": "zoe@example.org",
    "unsubscribe_url": "https://news.example.org/unsubscribe/abc.def",
    "preferences_url": "https://news.example.org/preferences/ghi.jkl",
    "attr.city": "Köln",
}
REQUIRED_HEADERS = {
    "Date",
    "Message-ID",
    "To",
    "Subject",
    "From",
    "MIME-Version",
    "Content-Type",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Feedback-ID",
    "Precedence",
    "Auto-Submitted",
}


def make_snapshot(subject: str = SUBJECT) -> Snapshot:
    first = ArticleView(
        title="Why treatment helps",
        url="https://news.example.org/articles/why",
        summary="The short answer, and the long one.",
        series_title="Treatment basics",
        part=1,
        parts=2,
        next=Link("Choosing together", "https://news.example.org/articles/choosing"),
    )
    other = ArticleView(
        title="Flu season — what to do",
        url="https://news.example.org/articles/flu",
        summary="Get your shot in autumn; it takes two weeks to work.",
    )
    return render_email(
        "digest",
        EmailContent(
            subject=subject,
            preheader="This month at the clinic",
            articles=(first, other),
            list_name="Clinic news",
            sender_name="Riverside Clinic",
            web_url="https://news.example.org/archive/emails/abc",
            sender=Sender("Riverside Clinic", "12 River Road, Springfield, IL 62701, USA"),
        ),
    )


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    return make_snapshot()


@pytest.fixture(scope="module")
def template(snapshot: Snapshot) -> MessageTemplate:
    return MessageTemplate(snapshot, HEADERS)


def recipient(
    values: dict[str, str] | None = None,
    name: str = "Zoë Example",
    address: str = "zoe@example.org",
    message_id: str = "<nl.7.1@clinic.example>",
) -> Recipient:
    return Recipient(address, name, VALUES if values is None else values, message_id)


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(message: EmailMessage) -> tuple[EmailMessage, EmailMessage]:
    text, html_part = message.iter_parts()
    assert isinstance(text, EmailMessage) and isinstance(html_part, EmailMessage)
    return text, html_part


def expected_bodies(snapshot: Snapshot, values: dict[str, str]) -> tuple[bytes, bytes]:
    """What a full render would send: raw values in text, escaped in HTML, CRLF, UTF-8."""
    merged = {**snapshot.fallbacks, **{k: v for k, v in values.items() if v}}
    text = SlotTemplate.compile(snapshot.text, snapshot.marker).fill(merged)
    escaped = {k: html.escape(v) for k, v in merged.items()}
    html_body = SlotTemplate.compile(snapshot.html, snapshot.marker).fill(escaped)
    return (
        text.replace("\n", "\r\n").encode("utf-8"),
        html_body.replace("\n", "\r\n").encode("utf-8"),
    )


def decoded_bodies(data: bytes) -> tuple[bytes, bytes]:
    text, html_part = parts(parse(data))
    text_bytes = text.get_payload(decode=True)
    html_bytes = html_part.get_payload(decode=True)
    assert isinstance(text_bytes, bytes) and isinstance(html_bytes, bytes)
    return text_bytes, html_bytes


def header_lines(data: bytes) -> Iterator[bytes]:
    head = data.split(b"\r\n\r\n", 1)[0]
    yield from head.split(b"\r\n")


def body_lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n\r\n", 1)[1].split(b"\r\n")


def unfolded_header(data: bytes, field: str) -> str:
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    match = re.search(rf"^{field}: ([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", head, re.MULTILINE)
    assert match, field
    return re.sub(r"\r\n[ \t]", " ", match.group(1))


def rfc2047_decoded(text: str) -> str:
    return str(make_header(decode_header(text)))


def addresses(data: bytes, field: str) -> list[tuple[str, str]]:
    """(display name, address) pairs as an RFC 2047 reader sees them.

    Python 3.11's address parser keeps the space between two adjacent encoded-words
    of a display name, which RFC 2047 6.2 says to ignore (CPython gh-128110), so a
    name folded into several encoded-words is decoded here with email.header.
    """
    pairs = getaddresses([unfolded_header(data, field)])
    return [(rfc2047_decoded(name), address) for name, address in pairs]


# --- structure -------------------------------------------------------------------------


def test_message_is_multipart_alternative_text_then_html(template: MessageTemplate) -> None:
    message = parse(template.build(recipient()))

    assert message.get_content_type() == "multipart/alternative"
    text, html_part = parts(message)
    assert text.get_content_type() == "text/plain"
    assert html_part.get_content_type() == "text/html"
    for part in (text, html_part):
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"


def test_message_parses_without_defects(template: MessageTemplate) -> None:
    message = parse(template.build(recipient()))

    assert [part.defects for part in message.walk()] == [[], [], []]
    for field in ("To", "Subject", "From", "List-Id"):
        assert not message[field].defects, field


def test_bodies_equal_a_full_fill_of_the_snapshot(
    snapshot: Snapshot, template: MessageTemplate
) -> None:
    data = template.build(recipient())

    assert decoded_bodies(data) == expected_bodies(snapshot, VALUES)
    text, html_part = parts(parse(data))
    assert "Hello Zoë," in text.get_content()
    assert "Hello Zoë," in html_part.get_content()
    assert find_unfilled(data.decode("ascii"), snapshot.marker) == []


def test_empty_values_fall_back(snapshot: Snapshot, template: MessageTemplate) -> None:
    values = {**VALUES, "name": "", "attr.city": ""}

    data = template.build(recipient(values))

    text, _ = parts(parse(data))
    assert "Hello there," in text.get_content()
    assert parse(data)["Subject"] == "Reader, news for your area"  # the subject's own
    assert decoded_bodies(data) == expected_bodies(snapshot, values)


TRICKY_VALUES = [
    "=",
    "==",
    "=3D",
    "a=b&c",
    "<b>bold</b> & 'quotes' \"too\"",
    "trailing spaces  ",
    "trailing tab\t",
    "  leading spaces",
    ".",
    ".starts with a dot",
    "From the start",
    "__slot_email__",
    "Zoë",
    "東京",
    "emoji 🙂 here",
    "é" * 40,
    "=" * 80,
    "x" * 75 + "é",
    "https://news.example.org/unsubscribe/" + "a=1&b=2;" * 58,  # ~500 characters
    "https://news.example.org/u/" + "z" * 473,
]


@pytest.mark.parametrize("value", TRICKY_VALUES)
def test_slot_values_decode_exactly(
    snapshot: Snapshot, template: MessageTemplate, value: str
) -> None:
    values = {
        "name": value,
        "email": value,
        "unsubscribe_url": "https://news.example.org/unsubscribe/abc.def",
        "preferences_url": value,
        "attr.city": value,
    }

    data = template.build(recipient(values))

    assert decoded_bodies(data) == expected_bodies(snapshot, values)


@pytest.mark.parametrize("length", range(60, 84))
@pytest.mark.parametrize("filler", ["a", "é", "=", " "])
def test_values_near_the_line_limit_decode_exactly(
    snapshot: Snapshot, template: MessageTemplate, length: int, filler: str
) -> None:
    # Quoted-printable lines are at most 76 characters; escapes ("=C3") must not be cut.
    value = "b" + filler * (length - 2) + "é"
    values = {**VALUES, "name": value, "preferences_url": value}

    data = template.build(recipient(values))

    assert decoded_bodies(data) == expected_bodies(snapshot, values)
    assert max(len(line) for line in body_lines(data)) <= 76


def test_long_snapshot_lines_decode_exactly() -> None:
    long_summary = "A long summary line with = signs and é accents. " * 30
    article = ArticleView(
        title="T" * 200, url="https://x.example/" + "p" * 300, summary=long_summary
    )
    snapshot = render_email(
        "digest",
        EmailContent("S", "", (article,), "Clinic news", "Riverside", "https://x.example/w"),
    )

    data = MessageTemplate(snapshot, HEADERS).build(recipient())

    assert decoded_bodies(data) == expected_bodies(snapshot, VALUES)


# --- no line starts with a dot ---------------------------------------------------------
# SMTP ends a message at a line of one "."; a mailer dot-stuffs every line that starts
# with one (RFC 5321 4.5.2). Ours are written "=2E", so the relay gets the message as
# it is (OutgoingMessage.dot_free) and must still read exactly what was written.

DOTTY = st.text(st.sampled_from([".", "a", " ", "=", "é", "\n"]), max_size=240)


@settings(max_examples=150, deadline=None)
@given(literal=DOTTY, value=DOTTY, name=st.text(st.sampled_from([".", "b", " "]), max_size=160))
def test_no_line_of_a_message_starts_with_a_dot(literal: str, value: str, name: str) -> None:
    marker = "A1B2C3D4E5F6"
    text = f".{literal}\n{sentinel('name', marker)}{literal}.\n.\n{sentinel('attr.city', marker)}"
    html_body = f"<p>{literal}</p>\n.{sentinel('name', marker)}\n.{literal}"
    snapshot = Snapshot("Hello", html_body, text, {"name": "", "attr.city": ""}, marker=marker)
    template = MessageTemplate(snapshot, HEADERS)
    values = {**VALUES, "name": name, "attr.city": value}

    data = template.build(recipient(values))

    assert template.dot_free
    assert not data.startswith(b".") and b"\n." not in data
    assert max(len(line) for line in body_lines(data)) <= 76
    assert decoded_bodies(data) == expected_bodies(snapshot, values)


def test_the_sample_digest_is_dot_free_and_reads_the_same(
    snapshot: Snapshot, template: MessageTemplate
) -> None:
    values = {**VALUES, "name": ".Zoë", "attr.city": "." * 200}

    data = template.build(recipient(values))

    assert template.dot_free and b"\n." not in data
    assert decoded_bodies(data) == expected_bodies(snapshot, values)


# --- headers -------------------------------------------------------------------------


def test_all_required_headers_are_present(template: MessageTemplate) -> None:
    message = parse(template.build(recipient()))

    assert set(message.keys()) == REQUIRED_HEADERS
    assert len(message.keys()) == len(REQUIRED_HEADERS)  # none twice
    assert message["From"] == "Riverside Clinic <news@clinic.example>"
    assert message["To"].addresses[0].addr_spec == "zoe@example.org"
    assert message["Subject"] == "Zoë, news for Köln"
    assert message["Message-ID"] == "<nl.7.1@clinic.example>"
    assert message["MIME-Version"] == "1.0"
    assert message["List-Id"] == '"Clinic news" <clinic-news.clinic.example>'
    assert message["List-Unsubscribe"] == "<https://news.example.org/unsubscribe/abc.def>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Precedence"] == "bulk"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Feedback-ID"] == "7:42:newsletter:clinic.example"
    assert parsedate_to_datetime(message["Date"]).tzinfo is not None


def test_list_unsubscribe_is_an_https_url_in_angle_brackets(template: MessageTemplate) -> None:
    message = parse(template.build(recipient()))

    assert re.fullmatch(r"<https://[^<>\s]+>", message["List-Unsubscribe"])


def test_list_unsubscribe_offers_mailto_when_configured(snapshot: Snapshot) -> None:
    headers = replace(HEADERS, unsubscribe_mailto="leave@clinic.example")

    message = parse(MessageTemplate(snapshot, headers).build(recipient()))

    assert message["List-Unsubscribe"] == (
        "<https://news.example.org/unsubscribe/abc.def>, "
        "<mailto:leave@clinic.example?subject=unsubscribe>"
    )


def test_given_date_is_used(template: MessageTemplate) -> None:
    date = "Mon, 07 Sep 2026 09:00:00 GMT"

    assert unfolded_header(template.build(recipient(), date), "Date") == date


def test_the_date_is_utc_with_a_numeric_zone(template: MessageTemplate) -> None:
    date = unfolded_header(template.build(recipient()), "Date")

    assert date.endswith(" +0000")  # not the obsolete "GMT" (RFC 5322 4.3)
    assert abs(parsedate_to_datetime(date) - datetime.now(UTC)) < timedelta(minutes=1)


def test_lines_are_short_and_end_in_crlf(template: MessageTemplate) -> None:
    long_values = {**VALUES, "unsubscribe_url": "https://news.example.org/u/" + "a" * 473}

    data = template.build(recipient(long_values, name="Zoë " * 40))

    assert data.endswith(b"\r\n")
    assert not re.search(rb"[^\r]\n", data), "bare LF"
    assert not re.search(rb"\r[^\n]", data), "bare CR"
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    assert max(len(line) for line in body_lines(data)) <= 76


def test_message_is_seven_bit_ascii(template: MessageTemplate) -> None:
    values = {**VALUES, "name": "東京 🙂", "attr.city": "Zürich"}

    data = template.build(recipient(values, name="Zoë 東京"))

    assert data.isascii()


@pytest.mark.parametrize(
    "name",
    [
        "Zoë",
        "東京",
        "Zoë Müller-Łukasiewicz",
        "Ann O'Neil",
        "Smith, John",
        'Dr "Doc" Brown',
        "back\\slash",
        "Bcc: evil@example.org",
        "a <b@c.d>",
        "東京 " * 30 + "end",
        "x" * 120,
    ],
)
def test_display_name_and_subject_round_trip(template: MessageTemplate, name: str) -> None:
    values = {**VALUES, "name": name}

    message = parse(template.build(recipient(values, name=name)))

    assert addresses(template.build(recipient(values, name=name)), "To") == [
        (name, "zoe@example.org")
    ]
    assert [address.addr_spec for address in message["To"].addresses] == ["zoe@example.org"]
    assert message["Subject"] == f"{name}, news for Köln"
    assert set(message.keys()) == REQUIRED_HEADERS


def test_long_ascii_subject_is_folded_and_round_trips(snapshot: Snapshot) -> None:
    subject = "A rather long subject line about flu shots, " * 5 + "{{ slot('name') }}"
    template = MessageTemplate(make_snapshot(subject), HEADERS)

    data = template.build(recipient())

    assert parse(data)["Subject"] == " ".join(subject.split()[:-3]) + " Zoë"
    assert max(len(line) for line in header_lines(data)) <= 78


def test_non_ascii_subject_is_rfc2047_encoded(template: MessageTemplate) -> None:
    data = template.build(recipient({**VALUES, "name": "東京"}))

    subject = unfolded_header(data, "Subject")
    assert subject.startswith("=?utf-8?")
    assert parse(data)["Subject"] == "東京, news for Köln"


# --- header injection ----------------------------------------------------------------

LINE_BREAKS = [
    "\r",
    "\n",
    "\r\n",
    "Zoë\r\nBcc: evil@example.org",
    "Zoë\nBcc: evil@example.org",
    "Zoë\rBcc: evil@example.org",
    "trailing\n",
    "\nleading",
    "folded\r\n continuation",
    "東京\r\n",
]


@pytest.mark.parametrize("evil", LINE_BREAKS)
def test_line_break_in_recipient_name_is_refused(template: MessageTemplate, evil: str) -> None:
    with pytest.raises(HeaderInjectionError):
        template.build(recipient(name=evil))


@pytest.mark.parametrize("evil", LINE_BREAKS)
def test_line_break_in_recipient_address_is_refused(template: MessageTemplate, evil: str) -> None:
    with pytest.raises(HeaderInjectionError):
        template.build(recipient(address="zoe@example.org" + evil))


@pytest.mark.parametrize("evil", LINE_BREAKS)
def test_line_break_in_unsubscribe_url_is_refused(template: MessageTemplate, evil: str) -> None:
    values = {**VALUES, "unsubscribe_url": "https://news.example.org/u/x" + evil}

    with pytest.raises(HeaderInjectionError):
        template.build(recipient(values))


@pytest.mark.parametrize("evil", LINE_BREAKS)
def test_line_break_in_a_subject_slot_is_refused(template: MessageTemplate, evil: str) -> None:
    with pytest.raises(HeaderInjectionError):
        template.build(recipient({**VALUES, "attr.city": evil}))


@pytest.mark.parametrize("evil", LINE_BREAKS)
def test_line_break_in_message_id_is_refused(template: MessageTemplate, evil: str) -> None:
    with pytest.raises(HeaderInjectionError):
        template.build(recipient(message_id="<1@clinic.example>" + evil))


@pytest.mark.parametrize("field", ["from_address", "list_name", "list_id", "feedback_id"])
@pytest.mark.parametrize("evil", ["\r\nBcc: evil@example.org", "\n", "\r"])
def test_line_break_in_list_headers_is_refused(snapshot: Snapshot, field: str, evil: str) -> None:
    headers = replace(HEADERS, **{field: getattr(HEADERS, field) + evil})

    with pytest.raises(HeaderInjectionError):
        MessageTemplate(snapshot, headers)


@pytest.mark.parametrize("evil", LINE_BREAKS)
def test_header_helpers_refuse_line_breaks(evil: str) -> None:
    with pytest.raises(HeaderInjectionError):
        safe_header_value(evil, "X-Test")
    with pytest.raises(HeaderInjectionError):
        encode_header(evil, "X-Test")


def test_header_injection_error_is_invalid_input() -> None:
    assert issubclass(HeaderInjectionError, InvalidInputError)


@pytest.mark.parametrize("line_break", ["\u2028", "\u2029", "\x85", "\x0c"])
def test_unicode_line_separators_cannot_add_headers(
    template: MessageTemplate, line_break: str
) -> None:
    name = f"Zoë{line_break}Bcc: evil@example.org"

    data = template.build(recipient({**VALUES, "name": name}, name=name))

    message = parse(data)
    assert set(message.keys()) == REQUIRED_HEADERS
    assert [a.addr_spec for a in message["To"].addresses] == ["zoe@example.org"]
    assert not any(line.lower().startswith(b"bcc:") for line in header_lines(data))


# --- the boundary --------------------------------------------------------------------


def test_boundary_occurs_only_as_delimiters(template: MessageTemplate) -> None:
    data = template.build(recipient())
    boundary = parse(data).get_boundary()

    assert boundary is not None
    text, html_body = decoded_bodies(data)
    assert boundary.encode() not in text and boundary.encode() not in html_body
    assert data.count(boundary.encode()) == 4  # Content-Type, two parts, the close
    assert data.count(b"--" + boundary.encode() + b"--") == 1


def test_boundary_that_occurs_in_the_content_is_not_chosen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken = "0" * 24
    snapshot = make_snapshot(subject=f"News =_nl_{taken}")
    snapshot = Snapshot(
        snapshot.subject, snapshot.html, snapshot.text + f"=_nl_{taken}\n", snapshot.fallbacks
    )
    candidates = iter([taken, "1" * 24])
    monkeypatch.setattr(secrets, "token_hex", lambda nbytes: next(candidates))

    template = MessageTemplate(snapshot, HEADERS)

    assert template.boundary == "=_nl_" + "1" * 24
    data = template.build(recipient())
    assert parse(data).get_boundary() == template.boundary
    assert decoded_bodies(data) == expected_bodies(snapshot, VALUES)


# --- non-ASCII and long names, non-ASCII addresses ------------------------------------


def encoded_word_lines(data: bytes) -> list[bytes]:
    return [line for line in header_lines(data) if b"=?" in line]


def test_non_ascii_sender_name_is_rfc2047_encoded(snapshot: Snapshot) -> None:
    headers = replace(HEADERS, from_address="Clínica Riverside <news@clinic.example>")

    data = MessageTemplate(snapshot, headers).build(recipient())

    assert data.isascii()
    assert unfolded_header(data, "From").startswith("=?utf-8?")
    assert unfolded_header(data, "From").endswith(" <news@clinic.example>")
    assert parse(data)["From"] == "Clínica Riverside <news@clinic.example>"
    assert not parse(data)["From"].defects


def test_sender_name_with_specials_is_quoted(snapshot: Snapshot) -> None:
    headers = replace(HEADERS, from_address='"Riverside Clinic, Dr. Lee" <news@clinic.example>')

    data = MessageTemplate(snapshot, headers).build(recipient())

    assert unfolded_header(data, "From") == '"Riverside Clinic, Dr. Lee" <news@clinic.example>'
    assert parse(data)["From"].addresses[0].display_name == "Riverside Clinic, Dr. Lee"


def test_sender_without_a_name_is_the_bare_address(snapshot: Snapshot) -> None:
    headers = replace(HEADERS, from_address="news@clinic.example")

    data = MessageTemplate(snapshot, headers).build(recipient())

    assert unfolded_header(data, "From") == "news@clinic.example"


def test_sender_without_an_address_is_refused(snapshot: Snapshot) -> None:
    with pytest.raises(InvalidInputError, match="From"):
        MessageTemplate(snapshot, replace(HEADERS, from_address="Riverside Clinic"))


def test_non_ascii_list_name_keeps_the_list_id_readable(snapshot: Snapshot) -> None:
    headers = replace(
        HEADERS, list_name="Noticias de la clínica", list_id="noticias.clinic.example"
    )

    data = MessageTemplate(snapshot, headers).build(recipient())

    # RFC 2919: only the phrase is encoded; the <list-id> that filters match on is plain.
    raw = unfolded_header(data, "List-Id")
    assert re.fullmatch(r"(=\?utf-8\?b\?[A-Za-z0-9+/=]+\?= )+<noticias\.clinic\.example>", raw)
    assert parse(data)["List-Id"] == "Noticias de la clínica <noticias.clinic.example>"


def test_list_name_with_quotes_stays_one_phrase(snapshot: Snapshot) -> None:
    headers = replace(HEADERS, list_name='The "Clinic" news \\ notes')

    data = MessageTemplate(snapshot, headers).build(recipient())

    assert unfolded_header(data, "List-Id") == (
        '"The \\"Clinic\\" news \\\\ notes" <clinic-news.clinic.example>'
    )


def test_long_list_name_is_folded(snapshot: Snapshot) -> None:
    name = "Noticias de la clínica " * 12

    data = MessageTemplate(snapshot, replace(HEADERS, list_name=name)).build(recipient())

    assert max(len(line) for line in header_lines(data)) <= 78
    assert max(len(line) for line in encoded_word_lines(data)) <= 76  # RFC 2047
    phrase, list_id = unfolded_header(data, "List-Id").rsplit(" ", 1)
    assert list_id == "<clinic-news.clinic.example>"
    assert rfc2047_decoded(phrase) == name


def test_list_id_with_angle_brackets_is_refused(snapshot: Snapshot) -> None:
    headers = replace(HEADERS, list_id="<clinic-news.clinic.example>")

    with pytest.raises(InvalidInputError, match="list-id"):
        MessageTemplate(snapshot, headers)


def test_list_without_a_name_has_only_its_list_id(snapshot: Snapshot) -> None:
    data = MessageTemplate(snapshot, replace(HEADERS, list_name="")).build(recipient())

    assert unfolded_header(data, "List-Id") == "<clinic-news.clinic.example>"


@pytest.mark.parametrize(
    "name", ["東" * 300, "é" * 300, "Zoë Ünal " * 33 + "end", "Ann Smith " * 29 + "end"]
)
def test_longest_allowed_name_keeps_lines_within_998_bytes(
    template: MessageTemplate, name: str
) -> None:
    data = template.build(recipient(name=name))

    assert max(len(line) for line in header_lines(data)) <= 78
    assert max(len(line) for line in encoded_word_lines(data)) <= 76  # RFC 2047
    assert all(len(word) <= 75 for word in re.findall(rb"=\?[^?]+\?b\?[^?]*\?=", data))
    assert not parse(data)["To"].defects
    assert addresses(data, "To") == [(name, "zoe@example.org")]


def test_long_ascii_name_without_spaces_stays_readable(template: MessageTemplate) -> None:
    name = "x" * 300

    data = template.build(recipient(name=name))

    # Nowhere to fold it: one long line, within RFC 5322's hard limit.
    assert unfolded_header(data, "To") == f"{name} <zoe@example.org>"
    assert max(len(line) for line in header_lines(data)) <= 998
    assert parse(data)["To"].addresses[0].display_name == name


@pytest.mark.parametrize("name", ["x" * 1000, '"quoted", ' * 100])
def test_ascii_name_too_long_for_one_line_is_encoded(template: MessageTemplate, name: str) -> None:
    data = template.build(recipient(name=name))

    assert max(len(line) for line in header_lines(data)) <= 78
    assert max(len(line) for line in encoded_word_lines(data)) <= 76
    assert addresses(data, "To") == [(name, "zoe@example.org")]


def test_long_name_with_a_long_address_keeps_lines_within_998_bytes(
    template: MessageTemplate,
) -> None:
    address = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + ".example"

    data = template.build(recipient(name="東" * 300, address=address))

    assert max(len(line) for line in header_lines(data)) <= 998
    assert parse(data)["To"].addresses[0].addr_spec == address


def test_short_names_stay_on_one_line(template: MessageTemplate) -> None:
    data = template.build(recipient(name="Zoë Example"))

    assert re.fullmatch(
        r"=\?utf-8\?b\?[A-Za-z0-9+/=]+\?= <zoe@example\.org>", unfolded_header(data, "To")
    )
    assert unfolded_header(template.build(recipient(name="Zoe Example")), "To") == (
        "Zoe Example <zoe@example.org>"
    )


def test_name_that_looks_encoded_is_encoded_itself(template: MessageTemplate) -> None:
    name = "=?utf-8?q?Admin?="

    data = template.build(recipient(name=name))

    assert parse(data)["To"].addresses[0].display_name == name


@pytest.mark.parametrize(
    "address", ["zoë@example.org", "zoe@exämple.org", "東京@example.org", "zoe\t@example.org"]
)
def test_non_ascii_address_is_refused_with_a_newsletter_error(
    template: MessageTemplate, address: str
) -> None:
    with pytest.raises(UnsupportedAddressError, match="address") as caught:
        template.build(recipient(address=address))

    assert isinstance(caught.value, InvalidInputError)
    assert isinstance(caught.value, NewsletterError)


def test_non_ascii_sender_address_is_refused(snapshot: Snapshot) -> None:
    headers = replace(HEADERS, from_address="Clinic <zoë@clinic.example>")

    with pytest.raises(UnsupportedAddressError):
        MessageTemplate(snapshot, headers)
