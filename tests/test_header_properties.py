"""Headers hold whatever names, subjects and URLs they are given, and nothing more.

For arbitrary text (line breaks, NUL, Unicode line separators, encoded-word lookalikes,
very long values) `MessageTemplate.build` either refuses the value with an
InvalidInputError or writes a message whose header is exactly the expected fields,
each once, on lines of at most 998 bytes of printable ASCII, and whose To name,
Subject and List-Unsubscribe read back as what was put in.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import replace
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from newsletter.errors import InvalidInputError
from newsletter.rendering.mime import ListHeaders, MessageTemplate, Recipient
from newsletter.rendering.model import Snapshot
from tests.test_mime import REQUIRED_HEADERS, addresses, rfc2047_decoded, unfolded_header

HEADERS = ListHeaders(
    from_address="Riverside Clinic <news@clinic.example>",
    list_name="Clinic news",
    list_id="clinic-news.clinic.example",
    feedback_id="7:42:newsletter:clinic.example",
)
UNSUBSCRIBE = "https://news.example.org/unsubscribe/"
ADDRESS = "zoe@example.org"
FALLBACK = "there"
# Characters that have broken mail software: line breaks of every kind, NUL and other
# controls, RFC 2047 and RFC 5322 syntax, and a few that need several UTF-8 bytes.
TRICKY = [
    "\r",
    "\n",
    "\r\n",
    "\x00",
    "\t",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x7f",
    "\x85",
    "\u2028",
    "\u2029",
    "=?",
    "?=",
    "=?utf-8?b?QmNj?=",
    '"',
    "\\",
    "<",
    ">",
    ",",
    ":",
    ";",
    "@",
    " ",
    "  ",
    "Bcc: evil@example.org",
    "é",
    "東",
    "🙂",
]
PIECES = st.one_of(st.sampled_from(TRICKY), st.text(max_size=8))
SHORT_TEXT = st.lists(PIECES, max_size=12).map("".join)
LONG_TEXT = st.builds(
    lambda filler, n, tail: filler * n + tail,
    st.sampled_from(["x", "é", "東", "ab ", "=?", "\u2028"]),
    st.integers(300, 1100),
    SHORT_TEXT,
)
TEXT = st.one_of(SHORT_TEXT, SHORT_TEXT, SHORT_TEXT, LONG_TEXT)
URI_TEXT = st.text(st.sampled_from("abcXYZ0189-._~:/?#[]@!$&'()*+,;=%"), max_size=80)
URL_TAIL = st.one_of(
    URI_TEXT,
    URI_TEXT,
    SHORT_TEXT,
    st.integers(800, 1100).map(lambda n: "a" * n),
)


def snapshot(subject: str) -> Snapshot:
    """A run's snapshot whose subject holds the name slot between static text."""
    return Snapshot(
        subject=subject,
        html="<p>Hello __slot_name__</p>\n",
        text="Hello __slot_name__\n",
        fallbacks={"name": FALLBACK},
    )


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def header_block(data: bytes) -> bytes:
    head, separator, _ = data.partition(b"\r\n\r\n")
    assert separator
    return head


def assert_header_is_well_formed(data: bytes) -> None:
    """Only the expected fields, each once, on short lines of printable ASCII."""
    lines = header_block(data).split(b"\r\n")
    assert all(len(line) <= 998 for line in lines)
    assert all(re.fullmatch(rb"[\x20-\x7e\t]*", line) for line in lines), "control or 8-bit"
    assert not re.search(rb"\r(?!\n)|(?<!\r)\n", data), "bare CR or LF"
    names = [line.split(b":", 1)[0].decode() for line in lines if not line[:1].isspace()]
    assert sorted(names) == sorted(REQUIRED_HEADERS)
    assert all(re.fullmatch(rb"[ \t]+\S.*", line) for line in lines if line[:1].isspace())


def build(template: MessageTemplate, name: str, unsubscribe_url: str) -> bytes | None:
    """The message, or None when build refused the values as it may."""
    values = {"name": name, "email": ADDRESS, "unsubscribe_url": unsubscribe_url}
    try:
        return template.build(Recipient(ADDRESS, name, values, "<nl.1.1@clinic.example>"))
    except InvalidInputError:  # HeaderInjectionError and UnsupportedAddressError included
        event("refused")
        return None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=TEXT, before=SHORT_TEXT, after=SHORT_TEXT)
@example(name="Zoë\r\nBcc: evil@example.org", before="", after="")
@example(name="Zoë\u2028Bcc: evil@example.org", before="News for ", after="")
@example(name="=?utf-8?q?Admin?=", before="", after="")
@example(name="x", before="=?utf-8?b?QmNj?=", after="")
@example(name="a\x00b", before="", after="\x0b")
@example(name="  spaced  out  ", before="", after="")
def test_names_and_subjects_never_add_a_header(name: str, before: str, after: str) -> None:
    try:
        template = MessageTemplate(snapshot(f"{before}__slot_name__{after}"), HEADERS)
    except InvalidInputError:
        return
    data = build(template, name, UNSUBSCRIBE + "abc.def")
    if data is None:
        assert re.search(r"[\r\n]", name + before + after)
        return

    assert_header_is_well_formed(data)
    assert data.isascii()
    assert addresses(data, "To") == [(name, ADDRESS)]
    assert parse(data)["To"].addresses[0].addr_spec == ADDRESS
    assert subject_of(data) == f"{before}{name or FALLBACK}{after}"


def subject_of(data: bytes) -> str:
    return rfc2047_decoded(unfolded_header(data, "Subject"))


@settings(max_examples=200, deadline=None)
@given(tail=URL_TAIL, mailto=st.booleans())
@example(tail="x>, <mailto:evil@example.org", mailto=False)
@example(tail="x\r\nBcc: evil@example.org", mailto=False)
@example(tail="ü", mailto=True)
@example(tail="a" * 960, mailto=True)
def test_unsubscribe_urls_never_add_a_header_or_a_target(tail: str, mailto: bool) -> None:
    headers = replace(HEADERS, unsubscribe_mailto="leave@clinic.example" if mailto else "")
    url = UNSUBSCRIBE + tail
    data = build(MessageTemplate(snapshot("News"), headers), "Zoë", url)
    if data is None:
        return

    assert_header_is_well_formed(data)
    mailto_target = ", <mailto:leave@clinic.example?subject=unsubscribe>"
    expected = f"<{url}>" + (mailto_target if mailto else "")
    assert unfolded_header(data, "List-Unsubscribe") == expected


@pytest.mark.parametrize(
    "url",
    [
        UNSUBSCRIBE + "x>, <mailto:evil@example.org",
        UNSUBSCRIBE + "ü",
        UNSUBSCRIBE + "a b",
        UNSUBSCRIBE + "a" * 1000,
    ],
)
def test_an_unsubscribe_url_a_header_cannot_hold_is_refused(url: str) -> None:
    template = MessageTemplate(snapshot("News"), HEADERS)

    with pytest.raises(InvalidInputError, match="List-Unsubscribe"):
        template.build(Recipient(ADDRESS, "", {"unsubscribe_url": url}, "<1@clinic.example>"))


@settings(max_examples=100, deadline=None)
@given(list_name=TEXT)
def test_list_names_never_add_a_header(list_name: str) -> None:
    try:
        template = MessageTemplate(snapshot("News"), replace(HEADERS, list_name=list_name))
    except InvalidInputError:
        assert re.search(r"[\r\n]", list_name)
        return
    data = build(template, "Zoë", UNSUBSCRIBE + "abc")
    assert data is not None

    assert_header_is_well_formed(data)
    phrase = unfolded_header(data, "List-Id").rsplit(" <", 1)[0] if list_name else ""
    assert phrase_text(phrase) == list_name


def phrase_text(phrase: str) -> str:
    """What a reader sees of a phrase: a quoted-string unquoted, else RFC 2047 decoded."""
    if re.fullmatch(r'"(?:[^"\\]|\\.)*"', phrase):
        return re.sub(r"\\(.)", r"\1", phrase[1:-1])
    return rfc2047_decoded(phrase)


@pytest.mark.parametrize(
    "mailto",
    ["leave", "leave@clinic.example?subject=x", "a b@clinic.example", "é@x.example", "a>@b.c"],
)
def test_a_mailto_a_header_cannot_hold_is_refused(mailto: str) -> None:
    with pytest.raises(InvalidInputError, match="List-Unsubscribe mailto"):
        MessageTemplate(snapshot("News"), replace(HEADERS, unsubscribe_mailto=mailto))
