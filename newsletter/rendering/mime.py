"""MIME messages built once per run and spliced per recipient.

The run's subject, text and HTML are quoted-printable encoded once, split at their
slots. Per recipient we encode only the short slot values and join bytes: the cost
does not depend on the size of the email. Output is 7-bit clean with CRLF line ends,
so any SMTP server accepts it without 8BITMIME.
"""

from __future__ import annotations

import binascii
import html
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid, parseaddr

from newsletter.errors import InvalidInputError
from newsletter.rendering.model import Snapshot
from newsletter.rendering.slots import SlotTemplate, slot_values

CRLF = b"\r\n"
MAX_LINE = 78  # RFC 5322 2.1.1 (998 is the hard limit)
MAX_ENCODED_LINE = 76  # RFC 2047 2: a line holding an encoded-word
_QP_LINE = 72  # characters of a slot value per line, before its soft break
# 39 UTF-8 bytes are 52 base64 characters, so an encoded-word ("=?utf-8?b?…?=") is at
# most 64 characters and fits after "List-Id: " within MAX_ENCODED_LINE.
_WORD_BYTES = 39
# A plain phrase folds only at its spaces; a longer one is encoded, so that no line
# can pass RFC 5322's 998 characters.
_MAX_PLAIN = 900
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')  # as email.utils.formataddr
_ESCAPES = re.compile(r'([\\"])')
# RFC 2919 list-id: dot-atom-text with at least one dot, e.g. clinic-news.clinic.example
_LIST_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)+")
# List-Unsubscribe targets: the characters RFC 3986 allows in a URI, so a URL can
# neither close its angle brackets nor need encoding; short enough for one line.
_HEADER_URL = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]{1,900}")


class HeaderInjectionError(InvalidInputError):
    """A header value contained CR or LF."""


class UnsupportedAddressError(InvalidInputError):
    """An address we cannot write into a header: not printable ASCII.

    Such an address needs SMTPUTF8 (RFC 6531), which we do not support; the caller
    records the delivery as failed.
    """


def safe_header_value(value: str, field: str) -> str:
    if "\r" in value or "\n" in value:
        raise HeaderInjectionError(f"header {field}: value contains a line break")
    return value


def encode_header(value: str, field: str) -> str:
    """An unstructured header value (Subject) folded to short lines; RFC 2047 encoded
    unless a reader would see exactly `value` in plain text.

    Plain text must be printable ASCII without "=?" (it would read as an encoded-word)
    and without spaces at either end (dropped when the header is parsed). Anything
    else, control characters and Unicode line separators included, is encoded-words,
    which decode to `value` exactly.
    """
    safe_header_value(value, field)
    plain = (
        value.isascii()
        and value.isprintable()
        and "=?" not in value
        and value == value.strip(" ")
        and len(value) <= _MAX_PLAIN
    )
    if plain and len(value) + len(field) < 76:
        return value
    if plain:
        return _fold(field, value.split(" "), MAX_LINE)
    return _fold(field, encoded_words(value), MAX_ENCODED_LINE)


def encoded_words(text: str) -> list[str]:
    """`text` as RFC 2047 encoded-words (UTF-8, base64) of at most 64 characters each.

    A word never splits a character, so each decodes on its own (RFC 2047 5).
    """
    data = text.encode("utf-8")
    words = []
    start = 0
    while start < len(data):
        end = min(start + _WORD_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a continuation byte
            end -= 1
        encoded = binascii.b2a_base64(data[start:end], newline=False).decode("ascii")
        words.append(f"=?utf-8?b?{encoded}?=")
        start = end
    return words


def _fold(field: str, tokens: list[str], width: int) -> str:
    """Tokens joined by spaces; a token that would pass `width` starts a new line.

    The first token always stays on the header's first line, and a line is never
    only whitespace; a token longer than `width` gets a line of its own.
    """
    out = [tokens[0]]
    column = len(field) + 2 + len(tokens[0])
    for token in tokens[1:]:
        if token and column + 1 + len(token) > width:
            out.append("\r\n " + token)
            column = 1 + len(token)
        else:
            out.append(" " + token)
            column += 1 + len(token)
    return "".join(out)


def _with_phrase(field: str, phrase: str, angle: str, quote: bool) -> str:
    """`phrase <angle>` folded to short lines; only the phrase is ever encoded.

    Printable ASCII stays readable, quoted when `quote` or when it holds specials,
    and folds at its spaces. Anything else becomes RFC 2047 encoded-words, which
    fold between words on lines of at most 76 characters.
    """
    if phrase.isascii() and phrase.isprintable() and "=?" not in phrase:
        # ("=?" would be read back as an encoded-word, even inside quotes.)
        # Quoted when the spacing would otherwise be lost ("  Ann  " reads as "Ann").
        spaced = "  " in phrase or phrase != phrase.strip(" ")
        plain = _quoted(phrase) if quote or spaced or _SPECIALS.search(phrase) else phrase
        value = f"{plain} <{angle}>"
        if len(field) + 2 + len(value) <= MAX_LINE:
            return value
        if len(plain) <= _MAX_PLAIN:
            return _fold(field, [*plain.split(" "), f"<{angle}>"], MAX_LINE)
    return _fold(field, [*encoded_words(phrase), f"<{angle}>"], MAX_ENCODED_LINE)


def _quoted(text: str) -> str:
    return '"' + _ESCAPES.sub(r"\\\1", text) + '"'


def encode_address(name: str, address: str, field: str = "To") -> str:
    """`name <address>` for an address header, folded to short lines.

    A name that is not printable ASCII is RFC 2047 encoded. An address that is not
    printable ASCII raises UnsupportedAddressError.
    """
    safe_header_value(name, field)
    safe_header_value(address, field)
    if not (address.isascii() and address.isprintable()):
        raise UnsupportedAddressError(
            f"{field}: address {address!r} is not plain ASCII "
            "(it needs SMTPUTF8, which we do not support)"
        )
    if not name:
        return address
    return _with_phrase(field, name, address, quote=False)


def encode_list_id(list_name: str, list_id: str) -> str:
    """An RFC 2919 List-Id value, `"List name" <list-id>`; only the name may be encoded."""
    safe_header_value(list_name, "List-Id")
    safe_header_value(list_id, "List-Id")
    if not _LIST_ID.fullmatch(list_id):
        raise InvalidInputError(
            f"List-Id: {list_id!r} is not a list-id such as clinic-news.clinic.example"
        )
    if not list_name:
        return f"<{list_id}>"
    return _with_phrase("List-Id", list_name, list_id, quote=True)


def encode_from(from_address: str) -> str:
    """The From value for a configured sender such as 'Clínica Riverside <news@x.example>'."""
    safe_header_value(from_address, "From")
    name, address = parseaddr(from_address)
    if "@" not in address:
        raise InvalidInputError(
            f"From: {from_address!r} is not an address such as 'Clinic <news@clinic.example>'"
        )
    return encode_address(name, address, "From")


def _qp(text: str) -> str:
    """Quoted-printable, CRLF line ends, no line starting with "." (see `_qp_lines`);
    the last line leaves room for a soft break."""
    return _qp_lines(binascii.b2a_qp(text.encode("utf-8")).replace(b"\n", CRLF)).decode("ascii")


def _qp_slot(value: str) -> str:
    """A slot value on lines of its own, joined to its neighbours by soft breaks."""
    if value.isascii() and value.isprintable() and "=" not in value:
        # The common case (names, addresses, signed URLs): quoted-printable leaves
        # these characters as they are, so only the soft breaks are ours to add, and
        # a "." starting a line is written "=2E" (as `_qp_lines` does).
        # (A space before a break is safe: the "=" after it keeps it.)
        if len(value) <= _QP_LINE:
            return f"=\r\n{_no_dot(value)}=\r\n"
        lines = [_no_dot(value[i : i + _QP_LINE]) for i in range(0, len(value), _QP_LINE)]
        return "=\r\n" + "=\r\n".join(lines) + "=\r\n"
    return f"=\r\n{_qp(value)}=\r\n"


def _no_dot(line: str) -> str:
    return "=2E" + line[1:] if line.startswith(".") else line


def _qp_lines(encoded: bytes) -> bytes:
    """Quoted-printable from b2a_qp made ready to splice: a "." starting a line is
    written "=2E", so no line of a message starts with a dot and SMTP needs no
    dot-stuffing for it (RFC 5321 4.5.2; `MessageTemplate.dot_free`); lines stay within
    76 characters, the last within 74, since we append a soft break ("=") after a
    part. A line made too long is split where no "=XX" is cut."""
    lines = encoded.split(CRLF)
    out: list[bytes] = []
    for number, line in enumerate(lines, 1):
        limit = 74 if number == len(lines) else 76
        while True:
            if line.startswith(b"."):
                line = b"=2E" + line[1:]
            if len(line) <= limit:
                out.append(line)
                break
            cut = limit - 1  # and the soft break
            while cut > 0 and b"=" in line[max(0, cut - 2) : cut]:
                cut -= 1
            out.append(line[:cut] + b"=")
            line = line[cut:]
    return CRLF.join(out)


# A recipient value that is no slot: the signed unsubscribe token, which the mailto
# entry of List-Unsubscribe carries in its subject.
UNSUBSCRIBE_TOKEN = "unsubscribe_token"


@dataclass(frozen=True)
class Recipient:
    """One recipient's slot values and envelope."""

    email: str
    name: str
    values: Mapping[str, str]  # slot key → plain value (escaping is ours)
    message_id: str


@dataclass(frozen=True)
class SenderHeaders:
    """The headers of a transactional message (a confirmation): no list, no opt-out."""

    from_address: str  # e.g. "Riverside Clinic <news@clinic.example>"; any display name


@dataclass(frozen=True)
class ListHeaders(SenderHeaders):
    """Values of the list headers that are the same for every recipient."""

    list_name: str = ""  # List-Id's phrase, e.g. "Clinic news"; any text, or ""
    list_id: str = ""  # RFC 2919 list-id, no angle brackets: "clinic-news.clinic.example"
    feedback_id: str = ""  # e.g. "42:7:newsletter:clinic.example"
    unsubscribe_mailto: str = ""


class MessageTemplate:
    """A message encoded once; `build` splices one recipient in.

    With ListHeaders it is a list message (a campaign run, a drip step, a test send):
    List-Id, one-click List-Unsubscribe (RFC 2369, RFC 8058), Feedback-ID, bulk
    precedence; every recipient needs an `unsubscribe_url`. With SenderHeaders it is
    a transactional message (a confirmation) with none of those.
    """

    def __init__(self, snapshot: Snapshot, headers: SenderHeaders) -> None:
        self.boundary = self._choose_boundary(snapshot)
        marker = snapshot.marker
        self.subject = SlotTemplate.compile(snapshot.subject, marker)
        self.text = SlotTemplate.compile(snapshot.text, marker).map_parts(_qp)
        self.html = SlotTemplate.compile(snapshot.html, marker).map_parts(_qp)
        # Every key gets a fallback: a sentinel written out in an article (not through
        # slot()) must fill with "" rather than fail every message with a KeyError.
        keys = (*self.subject.keys, *self.text.keys, *self.html.keys)
        self.fallbacks = {**dict.fromkeys(keys, ""), **snapshot.fallbacks}
        # The subject's slots have fallbacks of their own ('Reader' there, 'there' in
        # the greeting).
        self.subject_fallbacks = {
            **dict.fromkeys(self.subject.keys, ""),
            **snapshot.subject_slot_fallbacks,
        }
        self.is_list = isinstance(headers, ListHeaders)
        list_fields = ""
        self.unsubscribe_mailto = ""
        if isinstance(headers, ListHeaders):
            list_fields = (
                f"List-Id: {encode_list_id(headers.list_name, headers.list_id)}\r\n"
                "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
                f"Feedback-ID: {safe_header_value(headers.feedback_id, 'Feedback-ID')}\r\n"
                "Precedence: bulk\r\n"
            )
            self.unsubscribe_mailto = check_unsubscribe_mailto(headers.unsubscribe_mailto)
        self.fixed_headers = (
            f"From: {encode_from(headers.from_address)}\r\n"
            + list_fields
            + "Auto-Submitted: auto-generated\r\n"
            "MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/alternative; boundary="{self.boundary}"\r\n'
        ).encode("ascii")
        b = self.boundary.encode("ascii")
        part = b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        text_head = b"\r\n--" + b + b'\r\nContent-Type: text/plain; charset="utf-8"\r\n' + part
        html_head = b"\r\n--" + b + b'\r\nContent-Type: text/html; charset="utf-8"\r\n' + part
        # The message after the per-recipient headers, as one list of byte strings
        # with a hole for each slot: (position, key, whether the part is HTML).
        self.pieces: list[bytes] = [b"", self.fixed_headers]
        self.holes: list[tuple[int, str, bool]] = []
        for head, body, is_html in ((text_head, self.text, False), (html_head, self.html, True)):
            self.pieces.append(head)
            for literal, key in zip(body.parts, body.keys, strict=False):
                self.pieces.append(literal.encode("ascii"))
                self.holes.append((len(self.pieces), key, is_html))
                self.pieces.append(b"")
            self.pieces.append(body.parts[-1].encode("ascii"))
        self.pieces.append(b"\r\n--" + b + b"--\r\n")
        # Each distinct (key, part) is escaped and encoded once per message, however
        # many holes show it (a tracked link's slot is in every link of the email).
        self.slot_kinds = list(dict.fromkeys((key, is_html) for _, key, is_html in self.holes))
        kind_index = {kind: i for i, kind in enumerate(self.slot_kinds)}
        self.hole_kinds = [(pos, kind_index[(key, is_html)]) for pos, key, is_html in self.holes]
        # No line after the per-recipient headers starts with "." (the encoders write
        # "=2E"; every piece starts a line, so a piece starting with one would): SMTP
        # may hand the message over without dot-stuffing it, a scan of every message's
        # 27 KB saved. Checked here once, not assumed.
        self.dot_free = not any(p.startswith(b".") or b"\n." in p for p in self.pieces[1:])

    def _list_unsubscribe(self, url: str, token: str) -> str:
        unsubscribe = _header_url(url, "List-Unsubscribe")
        value = f"<{unsubscribe}>"
        if self.unsubscribe_mailto:
            # RFC 2369 allows folding between the entries; a long URL keeps its own line.
            # The subject carries the same signed token as the URL, so a mail sent to
            # this address (Apple's one-tap, a client's "unsubscribe") names its list.
            fold = ",\r\n " if len(unsubscribe) > 40 else ", "
            subject = "unsubscribe"
            if token:
                subject += "%20" + _header_url(token, "List-Unsubscribe mailto token")
            value += f"{fold}<mailto:{self.unsubscribe_mailto}?subject={subject}>"
        return f"List-Unsubscribe: {value}\r\n"

    @staticmethod
    def _choose_boundary(snapshot: Snapshot) -> str:
        while True:
            boundary = "=_nl_" + secrets.token_hex(12)
            if boundary not in snapshot.html and boundary not in snapshot.text:
                return boundary

    def build(self, recipient: Recipient, date: str | None = None) -> bytes:
        """The whole RFC 5322 message for one recipient, as bytes with CRLF line ends.

        Raises UnsupportedAddressError for an address we cannot send to (not ASCII).
        """
        values = slot_values(self.fallbacks, recipient.values)
        subject_values = (
            slot_values(self.subject_fallbacks, recipient.values) if self.subject.keys else values
        )
        headers = (
            f"Date: {date or message_date()}\r\n"
            f"Message-ID: {safe_header_value(recipient.message_id, 'Message-ID')}\r\n"
            f"To: {encode_address(recipient.name, recipient.email)}\r\n"
            f"Subject: {encode_header(self.subject.fill(subject_values), 'Subject')}\r\n"
            + (
                self._list_unsubscribe(
                    values["unsubscribe_url"], recipient.values.get(UNSUBSCRIBE_TOKEN, "")
                )
                if self.is_list
                else ""
            )
        ).encode("ascii")
        pieces = self.pieces.copy()
        pieces[0] = headers
        # Encoded once per distinct text: a URL or a plain name reads the same in the
        # text part and, unescaped, in the HTML part.
        encoded: dict[str, bytes] = {}
        filled: list[bytes] = []
        for key, is_html in self.slot_kinds:
            value = _escape(values[key]) if is_html else values[key]
            data = encoded.get(value)
            if data is None:
                data = encoded[value] = _qp_slot(value).encode("ascii")
            filled.append(data)
        for position, kind in self.hole_kinds:
            pieces[position] = filled[kind]
        return b"".join(pieces)


_HTML_SPECIAL = re.compile(r"[&<>\"']")


def _escape(value: str) -> str:
    """html.escape, which most values (names, addresses, URLs) do not need."""
    return html.escape(value) if _HTML_SPECIAL.search(value) is not None else value


def _header_url(url: str, field: str) -> str:
    """`url` if it can stand between angle brackets in a header; InvalidInputError if not
    (HeaderInjectionError for a line break)."""
    safe_header_value(url, field)
    if not _HEADER_URL.fullmatch(url):
        raise InvalidInputError(
            f"{field}: {url[:100]!r} is not a URL of at most 900 plain ASCII characters "
            "(percent-encode anything else)"
        )
    return url


def check_unsubscribe_mailto(address: str) -> str:
    """`address` if it can follow "mailto:" in List-Unsubscribe ("" for none): plain
    ASCII URI characters with an "@" and no "?". InvalidInputError otherwise; settings
    can check it at start-up, and MessageTemplate checks it once per run."""
    if address and ("@" not in address or "?" in address):
        raise InvalidInputError(
            f"List-Unsubscribe mailto: {address!r} is not an address such as leave@clinic.example"
        )
    return _header_url(address, "List-Unsubscribe mailto") if address else ""


def message_date(moment: datetime | None = None) -> str:
    """A Date value in UTC with a numeric zone, "Sun, 29 Nov 2026 09:00:00 +0000"
    (RFC 5322 3.3; "GMT" is the obsolete form)."""
    return format_datetime((moment or datetime.now(UTC)).astimezone(UTC))


def new_message_id(domain: str) -> str:
    return make_msgid(domain=domain)
