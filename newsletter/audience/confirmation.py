"""The double opt-in confirmation email: built from fixed wording, sent once.

Anyone can make us send this email to any address, so it carries no text the
requester chose except the address itself: not their name, not a message. The
list names are ours (set by staff), the wording is the template's.

Steps, each a short function: sign one expiring link per list → render the text and
HTML templates → build the MIME message (headers through rendering.mime's encoders)
→ hand it to a Mailer. No List-Unsubscribe: the reader is not on any list yet.
"""

from __future__ import annotations

import binascii
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate, parseaddr

from newsletter.audience.signup import Confirmation
from newsletter.audience.tokens import Purpose, TokenSigner
from newsletter.delivery.mailers import Mailer, OutgoingMessage
from newsletter.errors import DeliveryError, InvalidInputError
from newsletter.rendering.mime import encode_address, encode_from, encode_header, new_message_id
from newsletter.rendering.render import render_package_template

log = logging.getLogger(__name__)

SUBJECT = "Please confirm your subscription"


@dataclass(frozen=True)
class ConfirmationLink:
    list_name: str
    url: str


@dataclass(frozen=True)
class ConfirmationSender:
    """What a confirmation needs from the settings, resolved once per app."""

    from_address: str  # the From header, e.g. "Riverside Clinic <news@clinic.example>"
    base_url: str
    sender_domain: str  # right-hand side of Message-IDs
    ttl_seconds: int  # how long a confirmation link works
    sign_message: Callable[[bytes], bytes] = lambda data: data  # e.g. DKIM

    @property
    def sender_name(self) -> str:
        return parseaddr(self.from_address)[0] or self.sender_domain

    @property
    def envelope_from(self) -> str:
        return parseaddr(self.from_address)[1]


def human_duration(seconds: int) -> str:
    """'3 days', '12 hours', '45 minutes': the largest unit that divides evenly."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def confirmation_links(
    signer: TokenSigner, sender: ConfirmationSender, confirmation: Confirmation
) -> list[ConfirmationLink]:
    """One signed link per list to confirm, each expiring after the sender's TTL."""
    return [
        ConfirmationLink(
            item.list_name,
            f"{sender.base_url}/confirm/"
            + signer.sign(
                Purpose.confirm, confirmation.subscriber_id, item.list_id, sender.ttl_seconds
            ),
        )
        for item in confirmation.lists
    ]


def render_bodies(
    sender: ConfirmationSender, address: str, links: list[ConfirmationLink]
) -> tuple[str, str]:
    """The text and HTML bodies: fixed wording, our list names, the address, the links."""
    context = {
        "sender_name": sender.sender_name,
        "address": address,
        "links": links,
        "valid_for": human_duration(sender.ttl_seconds),
    }
    text = render_package_template("email/confirm.txt", context)
    html = render_package_template("email/confirm.html", context)
    return text, html


def _quoted_printable(text: str) -> bytes:
    """UTF-8 quoted-printable with CRLF line ends (7-bit clean, lines ≤ 76)."""
    unix = text.replace("\r\n", "\n").replace("\r", "\n")
    return binascii.b2a_qp(unix.encode("utf-8")).replace(b"\n", b"\r\n")


def build_mime(
    sender: ConfirmationSender, address: str, text: str, html: str, message_id: str
) -> bytes:
    """A multipart/alternative message to `address` (no display name), CRLF line ends.

    Raises InvalidInputError when the address cannot go in a header (not ASCII).
    """
    # Quoted-printable never contains "=_", so this boundary cannot occur in a part.
    boundary = "=_nl_" + secrets.token_hex(12)
    head = (
        f"Date: {formatdate(localtime=False, usegmt=True)}\r\n"
        f"Message-ID: {message_id}\r\n"
        f"From: {encode_from(sender.from_address)}\r\n"
        f"To: {encode_address('', address)}\r\n"
        f"Subject: {encode_header(SUBJECT, 'Subject')}\r\n"
        "Auto-Submitted: auto-generated\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'
    ).encode("ascii")
    parts = []
    for subtype, body in (("plain", text), ("html", html)):
        parts.append(
            f'\r\n--{boundary}\r\nContent-Type: text/{subtype}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n".encode("ascii")
            + _quoted_printable(body)
        )
    return head + b"".join(parts) + f"\r\n--{boundary}--\r\n".encode("ascii")


def confirmation_message(
    signer: TokenSigner, sender: ConfirmationSender, confirmation: Confirmation
) -> OutgoingMessage:
    """The whole confirmation email for this signup, ready for a Mailer."""
    links = confirmation_links(signer, sender, confirmation)
    text, html = render_bodies(sender, confirmation.email, links)
    message_id = new_message_id(sender.sender_domain)
    data = build_mime(sender, confirmation.email, text, html, message_id)
    return OutgoingMessage(
        sender.envelope_from, confirmation.email, sender.sign_message(data), message_id
    )


def send_confirmation(
    signer: TokenSigner,
    sender: ConfirmationSender,
    make_mailer: Callable[[], Mailer],
    confirmation: Confirmation,
) -> bool:
    """Build the confirmation and hand it to a fresh mailer; False (logged) on failure.

    Runs after the web answer was sent, so no failure can change that answer (which
    must not tell whether an address was mailed); the reader can simply ask again.
    """
    try:
        message = confirmation_message(signer, sender, confirmation)
    except InvalidInputError as exc:
        log.error("confirmation for subscriber %s not built: %s", confirmation.subscriber_id, exc)
        return False
    mailer = make_mailer()
    try:
        mailer.send(message)
    except DeliveryError as exc:
        log.error("confirmation email %s not sent: %s", message.message_id, exc)
        return False
    finally:
        mailer.close()
    return True
