"""MIME messages built once per run and spliced per recipient.

The run's subject, text and HTML are quoted-printable encoded once, split at their
slots. Per recipient we encode only the short slot values and join bytes: the cost
does not depend on the size of the email. Output is 7-bit clean with CRLF line ends,
so any SMTP server accepts it without 8BITMIME.
"""

from __future__ import annotations

import binascii
import html
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate, make_msgid

from newsletter.errors import InvalidInputError
from newsletter.rendering.render import Snapshot
from newsletter.rendering.slots import SlotTemplate

CRLF = b"\r\n"
SOFT_BREAK = b"=\r\n"


class HeaderInjectionError(InvalidInputError):
    """A header value contained CR or LF."""


def safe_header_value(value: str, field: str) -> str:
    if "\r" in value or "\n" in value:
        raise HeaderInjectionError(f"header {field}: value contains a line break")
    return value


def encode_header(value: str, field: str) -> str:
    """A header value, RFC 2047 encoded when it is not plain ASCII, folded to short lines."""
    safe_header_value(value, field)
    if value.isascii() and len(value) + len(field) < 76:
        return value
    return Header(value, "utf-8", header_name=field).encode(linesep="\r\n")


def encode_address(name: str, address: str) -> str:
    safe_header_value(name, "To")
    safe_header_value(address, "To")
    return formataddr((name, address), charset="utf-8")


def _qp(text: str) -> str:
    """Quoted-printable, CRLF line ends; the last line leaves room for a soft break."""
    encoded = binascii.b2a_qp(text.encode("utf-8")).replace(b"\n", CRLF)
    return _shorten_last_line(encoded).decode("ascii")


def _qp_slot(value: str) -> str:
    """A slot value on lines of its own, joined to its neighbours by soft breaks."""
    return f"=\r\n{_qp(value)}=\r\n"


def _shorten_last_line(encoded: bytes) -> bytes:
    # b2a_qp allows 76 characters a line; we append a soft break ("=") after a part,
    # so the last line must leave room for it. Split it where no "=XX" is cut.
    start = encoded.rfind(b"\n") + 1
    last = encoded[start:]
    if len(last) <= 74:
        return encoded
    cut = 70
    while cut > 0 and b"=" in last[max(0, cut - 2) : cut]:
        cut -= 1
    return encoded[:start] + last[:cut] + SOFT_BREAK + last[cut:]


@dataclass(frozen=True)
class Recipient:
    """One recipient's slot values and envelope."""

    email: str
    name: str
    values: Mapping[str, str]  # slot key → plain value (escaping is ours)
    message_id: str


@dataclass(frozen=True)
class ListHeaders:
    """Values of the list headers that are the same for every recipient."""

    from_address: str
    list_id: str  # e.g. '"Clinic news" <clinic-news.clinic.example>'
    feedback_id: str  # e.g. "42:7:newsletter:clinic.example"
    unsubscribe_mailto: str = ""


class MessageTemplate:
    """A run's message, encoded once; `build` splices one recipient in."""

    def __init__(self, snapshot: Snapshot, headers: ListHeaders) -> None:
        self.fallbacks = snapshot.fallbacks
        self.boundary = self._choose_boundary(snapshot)
        self.subject = SlotTemplate.compile(snapshot.subject)
        self.text = SlotTemplate.compile(snapshot.text).map_parts(_qp)
        self.html = SlotTemplate.compile(snapshot.html).map_parts(_qp)
        self.fixed_headers = (
            f"From: {safe_header_value(headers.from_address, 'From')}\r\n"
            f"List-Id: {encode_header(headers.list_id, 'List-Id')}\r\n"
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
            f"Feedback-ID: {safe_header_value(headers.feedback_id, 'Feedback-ID')}\r\n"
            "Precedence: bulk\r\n"
            "Auto-Submitted: auto-generated\r\n"
            "MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/alternative; boundary="{self.boundary}"\r\n'
        ).encode("ascii")
        self.unsubscribe_mailto = headers.unsubscribe_mailto
        b = self.boundary.encode("ascii")
        part = b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        self.text_head = b"\r\n--" + b + b'\r\nContent-Type: text/plain; charset="utf-8"\r\n' + part
        self.html_head = b"\r\n--" + b + b'\r\nContent-Type: text/html; charset="utf-8"\r\n' + part
        self.tail = b"\r\n--" + b + b"--\r\n"

    @staticmethod
    def _choose_boundary(snapshot: Snapshot) -> str:
        while True:
            boundary = "=_nl_" + secrets.token_hex(12)
            if boundary not in snapshot.html and boundary not in snapshot.text:
                return boundary

    def _values(self, recipient: Recipient) -> dict[str, str]:
        values = dict(self.fallbacks)
        values.update({k: v for k, v in recipient.values.items() if v})
        return values

    def build(self, recipient: Recipient, date: str | None = None) -> bytes:
        """The whole RFC 5322 message for one recipient, as bytes with CRLF line ends."""
        values = self._values(recipient)
        unsubscribe = safe_header_value(values["unsubscribe_url"], "List-Unsubscribe")
        list_unsubscribe = f"<{unsubscribe}>"
        if self.unsubscribe_mailto:
            list_unsubscribe += f", <mailto:{self.unsubscribe_mailto}?subject=unsubscribe>"
        headers = (
            f"Date: {date or formatdate(localtime=False, usegmt=True)}\r\n"
            f"Message-ID: {safe_header_value(recipient.message_id, 'Message-ID')}\r\n"
            f"To: {encode_address(recipient.name, recipient.email)}\r\n"
            f"Subject: {encode_header(self.subject.fill(values), 'Subject')}\r\n"
            f"List-Unsubscribe: {list_unsubscribe}\r\n"
        ).encode("ascii")
        text_values = {k: _qp_slot(v) for k, v in values.items()}
        html_values = {k: _qp_slot(html.escape(v)) for k, v in values.items()}
        return b"".join(
            (
                headers,
                self.fixed_headers,
                self.text_head,
                self.text.fill(text_values).encode("ascii"),
                self.html_head,
                self.html.fill(html_values).encode("ascii"),
                self.tail,
            )
        )


def new_message_id(domain: str) -> str:
    return make_msgid(domain=domain)
