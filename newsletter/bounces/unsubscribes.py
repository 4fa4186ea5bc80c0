"""Unsubscribe requests by mail: the `mailto:` entry of List-Unsubscribe.

With `NEWSLETTER_LIST_UNSUBSCRIBE_MAILTO` set, every list message offers
`<mailto:ADDRESS?subject=unsubscribe%20TOKEN>` beside the https link; TOKEN is the
same signed unsubscribe token as the link's, naming the reader and the list. Mail
clients send that message when the reader asks them to unsubscribe: Apple Mail's
one-tap form (`X-Apple-Unsubscribe: true`), Gmail's and others' "unsubscribe", or a
reader writing by hand. Reading the mailbox of that address (`bounces import`,
`bounces fetch`, `unsubscribes import`, `unsubscribes fetch`), each such message
unsubscribes the reader from the list its token names, recorded with source
`mailto`, exactly as the link would.

The token is looked for in the subject and in the recipient address's
`+tag` (unsubscribe+TOKEN@…), so a provider that keeps only one of them still works.
A message without a valid token changes nothing: a From header proves nothing, and
anyone could otherwise unsubscribe anyone. A message read twice changes nothing the
second time (its event is recorded once, and leaving a list twice is leaving it once).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses

from sqlalchemy.orm import Session

from newsletter.audience.models import Subscriber
from newsletter.audience.subscriptions import unsubscribe
from newsletter.audience.tokens import InvalidTokenError, Purpose, TokenSigner
from newsletter.bounces.actions import Action, Outcome, record_event
from newsletter.bounces.dsn import Kind, message_event_id
from newsletter.errors import NotFoundError

SOURCE = "mailto"
# A signed token: base64url payload "." base64url signature (audience/tokens.py).
_TOKEN = re.compile(r"(?<![A-Za-z0-9_.-])([A-Za-z0-9_-]{8,200}\.[A-Za-z0-9_-]{16,64})(?![\w.-])")
_RECIPIENT_HEADERS = ("To", "Delivered-To", "X-Original-To", "Envelope-To", "Cc")


@dataclass(frozen=True)
class UnsubscribeRequest:
    """What a message asking to leave carries: its event id and candidate tokens."""

    event_id: str
    tokens: tuple[str, ...]


def _subject(message: Message) -> str:
    value = str(message.get("Subject", ""))
    try:
        return str(make_header(decode_header(value)))
    except (LookupError, UnicodeError, ValueError):
        return value


def read_request(raw: bytes) -> UnsubscribeRequest:
    """The tokens a message carries: in its subject, then in recipient `+tags`."""
    message = message_from_bytes(raw, policy=compat32)
    found = _TOKEN.findall(_subject(message))
    values = [str(v) for name in _RECIPIENT_HEADERS for v in message.get_all(name, [])]
    for _, address in getaddresses(values):
        local = address.rsplit("@", 1)[0]
        if "+" in local:
            found.extend(_TOKEN.findall(local.split("+", 1)[1]))
    return UnsubscribeRequest(message_event_id(message, raw), tuple(dict.fromkeys(found)))


def apply_unsubscribe_request(session: Session, signer: TokenSigner, raw: bytes) -> Outcome | None:
    """Unsubscribe the reader the message's token names; None when it has no valid
    token (nothing changed). Flushes; the caller commits."""
    request = read_request(raw)
    for token in request.tokens:
        try:
            claims = signer.verify(token, Purpose.unsubscribe)
        except InvalidTokenError:
            continue
        subscriber = session.get(Subscriber, claims.subscriber_id)
        if subscriber is None:
            continue
        email = subscriber.email
        if not record_event(
            session, SOURCE, request.event_id, email, Kind.unsubscribe, f"list {claims.list_id}"
        ):
            return Outcome(Action.replayed, email, "replay of mailto event: nothing changed")
        try:
            mailing_list = unsubscribe(session, subscriber.id, claims.list_id, source=SOURCE)
        except NotFoundError:
            return Outcome(Action.recorded, email, f"{email} is not on that list")
        return Outcome(
            Action.unsubscribed, email, f"unsubscribed {email} from {mailing_list.slug} (mailto)"
        )
    return None
