"""Reading one returned email: bounce (RFC 3464 and plain text), complaint, auto-reply.

`classify(raw)` takes the bytes of one message as it arrived in the bounce mailbox
and returns a `BounceReport`; it never raises for malformed mail (broken MIME,
unknown charsets, truncated bodies), it just finds less. The steps are tried in
order and the first that recognises the message wins:

1. an Amazon SES notification mailed by SNS (a JSON document in the body);
2. an ARF feedback report (`multipart/report; report-type=feedback-report`): complaint;
3. a Hotmail/Outlook.com JMRP complaint (a message carrying
   `X-HmXmrOriginalRecipient`, forwarded or the reported newsletter itself);
4. RFC 3464 delivery-status fields (`Final-Recipient`, `Action`, `Status`,
   `Diagnostic-Code`), from a `message/delivery-status` part or, when the MIME
   structure is broken or missing, from the text itself;
5. a plain-text bounce from a mailer daemon (qmail, Exim, Gmail, Yahoo, OpenSMTPD,
   Exchange 5.5 to Office 365, SMTP32, Domino): recipients from `X-Failed-Recipients`
   or the notice, codes from the text; a failure notice naming no address (old
   Exchange names a display name) is still a bounce, with no recipient;
6. an unsubscribe request sent by a mail client (`X-Apple-Unsubscribe: true`, or a
   subject starting with "unsubscribe"): kind *unsubscribe*, not a bounce;
7. an auto-reply (RFC 3834 `Auto-Submitted`, vacation headers, "out of office").

Anything else is `not-bounce`. Only the report's own parts are read: the returned
original message (`message/rfc822`, or the text after "Below this line is a copy
of the message") is never taken for the report, so addresses quoted in it do not
count.

Per recipient: `Action: delayed` (or "warning, will retry" text) is *delayed*; a
full mailbox or quota (x.2.2, even with a 5.x.x status, or said in words in English,
German, French, Spanish, Italian, Portuguese, Dutch or Russian) is *soft*; a 4.x.x
failure the sending MTA gave up on is *soft*; any other 5.x.x failure is *hard*.
Without a code the words decide: a bad address ("user unknown", "unrouteable
address", "not listed in Domino Directory") is *hard*, a temporary cause (a
time-out) *soft*, a notice calling itself permanent ("failed permanently") *hard*,
and a failure that says nothing *soft*.
"""

from __future__ import annotations

import enum
import hashlib
import html
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from email import message_from_bytes, message_from_string
from email.errors import MessageError
from email.header import Header, decode_header, make_header
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses, parseaddr
from typing import Any, NamedTuple


class Kind(enum.StrEnum):
    """What a report says about an address (the values are the corpus labels)."""

    hard = "hard"
    soft = "soft"
    delayed = "delayed"
    complaint = "complaint"
    autoreply = "autoreply"
    unsubscribe = "unsubscribe"  # a reader asking to leave, by mail (bounces/unsubscribes.py)
    not_bounce = "not-bounce"


# A message naming several recipients is as serious as its worst one.
SEVERITY = (Kind.complaint, Kind.hard, Kind.soft, Kind.delayed)


@dataclass(frozen=True)
class RecipientResult:
    """What happened to one recipient, as the report tells it."""

    address: str  # verbatim from the report (Final-Recipient, the JSON, the notice)
    kind: Kind
    status: str = ""  # enhanced status code such as "5.1.1", or ""
    diagnostic: str = ""
    # The address as we sent it, when the reporting MTA rewrote it (alias expansion).
    original_address: str = ""


@dataclass(frozen=True)
class BounceReport:
    """One report (an email or one provider event) and every recipient it names.

    `kind` is the worst kind among the recipients, or the kind of the whole message
    (complaint without a named recipient, autoreply, not-bounce). `event_id`
    identifies the report for replay protection: the Message-ID of a report email
    (else a hash of its bytes), or the provider's event id.
    """

    kind: Kind
    event_id: str
    recipients: tuple[RecipientResult, ...] = ()
    status: str = ""  # the first recipient's, or the message's own (SES delivery: 2.6.0)
    diagnostic: str = ""
    feedback_type: str = ""  # complaints: ARF Feedback-Type or SES complaintFeedbackType

    @property
    def recipient(self) -> str:
        """The first address the report names, or "" when it names none."""
        return self.recipients[0].address if self.recipients else ""


def make_report(
    kind: Kind | None,
    event_id: str,
    recipients: Sequence[RecipientResult] = (),
    status: str = "",
    feedback_type: str = "",
) -> BounceReport:
    """A report whose kind (when not given) is the worst of its recipients'."""
    if kind is None:
        kinds = {r.kind for r in recipients}
        kind = next((k for k in SEVERITY if k in kinds), Kind.not_bounce)
    first = recipients[0] if recipients else None
    return BounceReport(
        kind=kind,
        event_id=event_id,
        recipients=tuple(recipients),
        status=first.status if first and first.status else status,
        diagnostic=first.diagnostic if first else "",
        feedback_type=feedback_type,
    )


class _Finding(NamedTuple):
    kind: Kind | None  # None: the worst kind among the recipients
    recipients: list[RecipientResult]
    status: str = ""
    feedback_type: str = ""


def classify(raw: bytes) -> BounceReport:
    """What this email says: a bounce, complaint, auto-reply or nothing of the kind."""
    message = message_from_bytes(raw, policy=compat32)
    event_id = message_event_id(message, raw)
    text = _own_text(message)
    for step in (
        _ses_notification,
        _feedback_report,
        _jmrp_complaint,
        _delivery_status,
        _plain_text_bounce,
        _unsubscribe_request,
        _auto_reply,
    ):
        found = step(message, text)
        if found is not None:
            return make_report(
                found.kind, event_id, found.recipients, found.status, found.feedback_type
            )
    return make_report(Kind.not_bounce, event_id)


def message_event_id(message: Message, raw: bytes) -> str:
    """The report's Message-ID, or a hash of its bytes when it has none."""
    message_id = " ".join(_header(message, "Message-ID").split())
    if message_id and len(message_id) <= 300:
        return message_id
    return "sha256:" + hashlib.sha256(raw).hexdigest()


# --- text helpers ----------------------------------------------------------------------

_FAILURE_CODE = re.compile(r"(?<![\w.])([45]\.\d{1,3}\.\d{1,3})(?!\.?\d)")
_SUCCESS_CODE = re.compile(r"(?<![\w.])(2\.\d{1,3}\.\d{1,3})(?!\.?\d)")
# "550 5.1.1", "552-5.2.2", "450 450 4.2.2": the enhanced code right after a reply code.
_REPLY_AND_CODE = re.compile(r"(?<!\d)[45]\d\d[ \t-]+'?([45]\.\d{1,3}\.\d{1,3})(?!\.?\d)")
_REPLY_CODE = re.compile(r"(?<![\d.])([45])\d\d(?=[ \t-])")
# A full mailbox, as servers say it in words (many give no 5.2.2, or a wrong code).
_MAILBOX_FULL = re.compile(
    "|".join(
        (
            # English
            r"mail ?box\b[^.\n]{0,30}\b(?:full|over ?quota)|quota|out of storage|"
            r"storage (?:space|allocation)|insufficient (?:system |disk )?(?:storage|space)|"
            r"mailbox size limit|disk ?space|not (?:have )?enough (?:storage |disk )?space|"
            r"mailbox exceeds|exceeds? (?:the |its )?(?:allowed|maximum) (?:mailbox )?size|"
            r"mailbox (?:has )?exceeded|mail ?box (?:is )?too (?:big|large)|inbox is full",
            # German
            r"(?:postfach|mailbox)\b[^.\n]{0,40}\b(?:voll|überfüllt)\b|speicherplatz|"
            r"speicherbegrenzung|kontingent",
            # French
            r"bo[iî]te\b[^.\n]{0,40}\bpleine|"
            r"espace (?:disque|de stockage) insuffisant|"
            r"capacit[ée] (?:de stockage )?d[ée]pass[ée]e",
            # Spanish
            r"(?:buz[oó]n|mailbox)\b[^.\n]{0,40}\b(?:lleno|completo)\b|"
            r"casilla\b[^.\n]{0,40}\bllena\b|espacio en (?:la )?casilla|cuota",
            # Italian
            r"casella\b[^.\n]{0,40}\bpiena\b|spazio (?:su disco |di archiviazione )?"
            r"(?:esaurito|insufficiente)",
            # Portuguese
            r"caixa\b[^.\n]{0,40}\b(?:cheia|lotada)\b|"
            r"cota excedida|espa[cç]o insuficiente",
            # Dutch
            r"(?:mailbox|postvak|brievenbus)\b[^.\n]{0,30}\bvol\b|quotum",
            # Russian
            r"(?:ящик|ящика) переполнен|переполнен|превышен[аоы]? (?:квот|лимит|размер)|"
            r"недостаточно (?:места|дискового пространства)|квот[аы]",
        )
    ),
    re.IGNORECASE,
)
# Said by failures that name no status code but leave no doubt the address is bad.
_NO_SUCH_ADDRESS = re.compile(
    r"user unknown|unknown user|no such (?:user|mailbox|recipient|address|domain)|"
    r"does not exist|unknown or illegal alias|(?:recipient|user|mailbox|account) not found|"
    r"address rejected|invalid (?:recipient|mailbox|address)|unrouteable (?:mail domain|address)|"
    r"not listed in (?:the )?(?:domino directory|public name & address book)|"
    r"(?:host or )?domain name not found|no mailbox here|mailbox unavailable|"
    r"account (?:has been |is )?(?:disabled|discontinued|expired|deactivated|closed)|"
    r"casilla ha expirado|doesn't have an? \S+ account",
    re.IGNORECASE,
)
# A failure notice calling itself permanent, where no code or cause says more.
_PERMANENT = re.compile(r"failed permanently|permanent (?:fatal )?(?:error|failure)", re.IGNORECASE)
# A cause the sending MTA gave up on although it was temporary.
_TEMPORARY = re.compile(
    r"temp_failure|temporar(?:y|ily)|timed? ?out|connection (?:was )?(?:dropped|refused|reset|"
    r"lost|closed)|could not initiate|retry timeout exceeded|try again later",
    re.IGNORECASE,
)
_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*")


def _header(message: Message, name: str) -> str:
    value = message.get(name)
    return "" if value is None else str(value)


def _decoded_header(message: Message, name: str) -> str:
    value = _header(message, name)
    try:
        return str(make_header(decode_header(value)))
    except (MessageError, LookupError, UnicodeError, ValueError):  # e.g. a mangled charset
        return value


def _field_text(value: object) -> str:
    """A DSN field's value with its 8-bit bytes read as UTF-8 (as servers write them),
    else Latin-1; the email package keeps such values as undecoded Header objects."""
    if isinstance(value, Header):
        raw = b"".join(
            part if isinstance(part, bytes) else part.encode("utf-8", "surrogateescape")
            for part, _ in decode_header(value)
        )
    else:
        raw = str(value).encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _unify_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _own_parts(message: Message) -> Iterator[Message]:
    """The message's leaf parts, not descending into attached messages."""
    if message.is_multipart() and message.get_content_maintype() != "message":
        for part in message.get_payload():
            if isinstance(part, Message):
                yield from _own_parts(part)
    else:
        yield message


def _decoded_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = (part.get_content_charset() or "utf-8").lower()
    if charset in ("us-ascii", "ascii"):
        charset = "utf-8"  # a superset: 8-bit bytes in "ascii" parts are common
    try:
        text = payload.decode(charset, errors="replace")
    except LookupError:  # unknown charset names such as unicode-1-1-utf-7
        text = payload.decode("utf-8", errors="replace")
    return _unify_newlines(text)


def _own_text(message: Message) -> str:
    """The report's own plain text (HTML reduced to text when there is no plain part)."""
    plain, markup = [], []
    for part in _own_parts(message):
        content_type = part.get_content_type()
        if content_type == "text/plain":
            plain.append(_decoded_text(part))
        elif content_type == "text/html":
            markup.append(_decoded_text(part))
    if plain:
        return "\n".join(plain)
    return "\n".join(html.unescape(re.sub(r"<[^>]*>", " ", page)) for page in markup)


# Where a plain-text bounce starts quoting the returned message.
_ORIGINAL_FOLLOWS = re.compile(
    r"^[ \t]*(?:-+ ?original message ?-+|-+ ?message headers? follows? ?-+|"
    r"-+ ?below this line is a copy of the message|"
    r"-+ this is a copy of the message|\s*below is a copy of the original message|"
    r"bounced e-mail:|original message headers:|original message details|"
    r"original message follows|the first \d+ lines of your original message|"
    r"content-type: message/rfc822)",
    re.IGNORECASE | re.MULTILINE,
)


def _notice(text: str) -> str:
    """The text before the returned original message."""
    match = _ORIGINAL_FOLLOWS.search(text)
    return text[: match.start()] if match else text


def _looks_like_address(value: str) -> bool:
    return bool(_ADDRESS.match(value))


def _bare_address(value: str) -> str:
    """`rfc822; <a@b.example>` → `a@b.example`; "" when no address is there."""
    value = value.split(";", 1)[1] if ";" in value else value
    value = value.strip().strip("<>").strip()
    return value if "@" in value else ""


def _without_type(diagnostic: str) -> str:
    """`smtp; 550 5.1.1 …` → `550 5.1.1 …` (the RFC 3464 diagnostic-type goes)."""
    kind, sep, rest = diagnostic.partition(";")
    return rest.strip() if sep and _FIELD_NAME.fullmatch(kind.strip()) else diagnostic.strip()


def failure_code(text: str) -> str:
    """The enhanced status code a failure text gives, preferring one after a reply code."""
    match = _REPLY_AND_CODE.search(text) or _FAILURE_CODE.search(text)
    return match.group(1) if match else ""


def is_mailbox_full(codes: Sequence[str], text: str) -> bool:
    return any(code.split(".")[1:] == ["2", "2"] for code in codes) or bool(
        _MAILBOX_FULL.search(text)
    )


def _failure_kind(status: str, text: str, notice: str = "") -> Kind:
    """Hard or soft, for a recipient the reporting MTA gave up on.

    A full mailbox is soft whatever the class: 5.2.2 is often temporary in fact, and
    the Diagnostic-Code may hold the real cause behind a generic 5.0.0 Status. A
    4.x.x failure the MTA gave up on is soft. Other 5.x.x failures are hard,
    including 5.7.x policy blocks (see the corpus test for why). Without a code, the
    words decide: a bad address ("user unknown", "unrouteable address") is hard; a
    temporary cause (a time-out) is soft; else a notice that calls the failure
    permanent ("failed permanently", `notice` being the whole notice) is hard.
    """
    codes = [c for c in (status, *_FAILURE_CODE.findall(text)) if c]
    if is_mailbox_full(codes, text):
        return Kind.soft
    reply = _REPLY_CODE.search(text)
    status_class = codes[0][0] if codes else (reply.group(1) if reply else "")
    if status_class == "4":
        return Kind.soft
    if status_class == "5" or _NO_SUCH_ADDRESS.search(text):
        return Kind.hard
    if _TEMPORARY.search(text) or _TEMPORARY.search(notice):
        return Kind.soft
    if _PERMANENT.search(text) or _PERMANENT.search(notice):
        return Kind.hard
    # A failure that says nothing about its cause: count it, do not suppress at once.
    return Kind.soft


def _field_blocks(text: str) -> list[dict[str, str]]:
    """`Name: value` blocks separated by blank lines, continuation lines folded in."""
    blocks: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    last: str | None = None
    for line in text.split("\n"):
        if not line.strip():
            if fields:
                blocks.append(fields)
            fields, last = {}, None
        elif line[0] in " \t":
            if last is not None:
                fields[last] = f"{fields[last]} {line.strip()}".strip()
        else:
            name, sep, value = line.partition(":")
            if sep and _FIELD_NAME.fullmatch(name.strip()):
                last = name.strip().lower()
                fields.setdefault(last, value.strip())
            else:
                last = None
    if fields:
        blocks.append(fields)
    return blocks


def _embedded_messages(part: Message) -> list[Message]:
    """The header blocks or message inside a `message/*` part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [item for item in payload if isinstance(item, Message)]
    if isinstance(payload, str) and payload.strip():
        return [message_from_string(_unify_newlines(payload), policy=compat32)]
    return []


# --- 1. Amazon SES notifications -------------------------------------------------------

_SES_JSON = re.compile(r'\{\s*"(?:notificationType|eventType)"')


def _ses_notification(message: Message, text: str) -> _Finding | None:
    start = _SES_JSON.search(text)
    if start is None:
        return None
    # SNS email wraps long lines, marking each break with "!" and a leading space.
    document = re.sub(r"!\n ", "", text[start.start() :])
    try:
        notification, _ = json.JSONDecoder().raw_decode(document)
    except (ValueError, RecursionError):
        return None
    if not isinstance(notification, dict):
        return None
    report = ses_notification_report(notification, "")
    return _Finding(report.kind, list(report.recipients), report.status, report.feedback_type)


def ses_notification_report(notification: Mapping[str, Any], event_id: str) -> BounceReport:
    """An SES notification (`notificationType`) or event (`eventType`) as a report.

    Permanent bounces are hard unless the recipient's mailbox is full; transient and
    undetermined ones are soft; complaints name `complainedRecipients`; delivery
    delays are delayed; everything else (Delivery, Send, Open…) is not a bounce.
    """
    name = str(notification.get("notificationType") or notification.get("eventType") or "")
    if name == "Bounce":
        bounce = _mapping(notification.get("bounce"))
        permanent = bounce.get("bounceType") == "Permanent"
        recipients = []
        for entry in _mappings(bounce.get("bouncedRecipients")):
            status = failure_code(str(entry.get("status") or ""))
            diagnostic = _without_type(str(entry.get("diagnosticCode") or ""))
            full = is_mailbox_full([status], diagnostic)
            kind = Kind.hard if permanent and not full else Kind.soft
            address = str(entry.get("emailAddress") or "")
            recipients.append(RecipientResult(address, kind, status, diagnostic))
        return make_report(None, event_id, recipients)
    if name == "Complaint":
        complaint = _mapping(notification.get("complaint"))
        recipients = [
            RecipientResult(str(entry.get("emailAddress") or ""), Kind.complaint)
            for entry in _mappings(complaint.get("complainedRecipients"))
        ]
        feedback = str(complaint.get("complaintFeedbackType") or "")
        return make_report(Kind.complaint, event_id, recipients, feedback_type=feedback)
    if name == "DeliveryDelay":
        delay = _mapping(notification.get("deliveryDelay"))
        recipients = [
            RecipientResult(
                str(entry.get("emailAddress") or ""),
                Kind.delayed,
                failure_code(str(entry.get("status") or "")),
                _without_type(str(entry.get("diagnosticCode") or "")),
            )
            for entry in _mappings(delay.get("delayedRecipients"))
        ]
        return make_report(Kind.delayed, event_id, recipients)
    status = ""
    if name == "Delivery":
        match = _SUCCESS_CODE.search(
            str(_mapping(notification.get("delivery")).get("smtpResponse"))
        )
        status = match.group(1) if match else ""
    return make_report(Kind.not_bounce, event_id, status=status)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _mappings(value: object) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


# --- 2. ARF feedback reports -----------------------------------------------------------


def _feedback_report(message: Message, text: str) -> _Finding | None:
    part = next(
        (p for p in _own_parts(message) if p.get_content_type() == "message/feedback-report"),
        None,
    )
    if part is None:
        return None
    feedback_type, addresses = "", []
    for block in _embedded_messages(part):
        feedback_type = feedback_type or _header(block, "Feedback-Type").strip().lower()
        for name in ("Original-Rcpt-To", "Removal-Recipient"):
            for value in block.get_all(name) or []:
                address = _bare_address(str(value))
                # Redacted reports name "redacted" or "redacted@": no one to act on.
                if _looks_like_address(address) and address not in addresses:
                    addresses.append(address)
    recipients = [RecipientResult(address, Kind.complaint) for address in addresses]
    return _Finding(Kind.complaint, recipients, feedback_type=feedback_type or "abuse")


# --- 3. Hotmail / Outlook.com JMRP -----------------------------------------------------


def _jmrp_complaint(message: Message, text: str) -> _Finding | None:
    # Microsoft's Junk Mail Reporting Program forwards the reported message whole,
    # with the complaining recipient in a header of its own; there is no ARF part.
    # Some reports are the reported message itself, the header at the top.
    address = _bare_address(_header(message, "X-HmXmrOriginalRecipient"))
    if address:
        return _Finding(Kind.complaint, [RecipientResult(address, Kind.complaint)], "", "abuse")
    for part in _own_parts(message):
        if part.get_content_type() != "message/rfc822":
            continue
        for inner in _embedded_messages(part):
            address = _bare_address(_header(inner, "X-HmXmrOriginalRecipient"))
            if address:
                return _Finding(
                    Kind.complaint, [RecipientResult(address, Kind.complaint)], "", "abuse"
                )
    return None


# --- 4. RFC 3464 delivery status -------------------------------------------------------


def _delivery_status(message: Message, text: str) -> _Finding | None:
    blocks: list[dict[str, str]] = []
    for part in _own_parts(message):
        if part.get_content_type() == "message/delivery-status":
            for block in _embedded_messages(part):
                blocks.append(
                    {
                        name.lower(): " ".join(_field_text(value).split())
                        for name, value in block.items()
                    }
                )
    if not any("final-recipient" in block for block in blocks):
        # A broken boundary (or no MIME at all) leaves the same fields in the text.
        blocks = _field_blocks(text)
    recipients = [r for r in map(_dsn_recipient, blocks) if r is not None]
    if not recipients:
        recipients = _unnamed_dsn_recipients(blocks, text)
    return _Finding(None, recipients) if recipients else None


def _unnamed_dsn_recipients(
    blocks: Sequence[Mapping[str, str]], text: str
) -> list[RecipientResult]:
    """Recipients of a DSN whose Final-Recipient names no address (`system;<>`):
    the addresses of the notice, with the status the DSN gives."""
    failed = [
        b
        for b in blocks
        if "final-recipient" in b and (b.get("action", "").split() or [""])[0].lower() == "failed"
    ]
    if not failed:
        return []
    notice = _notice(text)
    status = failure_code(failed[0].get("status", ""))
    diagnostic = _without_type(failed[0].get("diagnostic-code", ""))
    return [
        RecipientResult(
            address, _failure_kind(status, diagnostic or segment, notice), status, diagnostic
        )
        for address, segment in _segments(notice, _addresses_in_notice(notice))
    ]


def _dsn_recipient(fields: Mapping[str, str]) -> RecipientResult | None:
    address = _bare_address(fields.get("final-recipient", ""))
    if not address:
        return None
    action = (fields.get("action", "").split() or [""])[0].lower()
    if action in ("delivered", "relayed", "expanded"):
        return None
    status = failure_code(fields.get("status", ""))
    diagnostic = _without_type(fields.get("diagnostic-code", ""))
    kind = Kind.delayed if action == "delayed" else _failure_kind(status, diagnostic)
    original = _bare_address(fields.get("original-recipient", ""))
    return RecipientResult(
        address, kind, status, diagnostic, original if original != address else ""
    )


# --- 5. plain-text bounces -------------------------------------------------------------

_DAEMONS = frozenset({"mailer-daemon", "mailerdaemon", "postmaster", "mail-daemon"})
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (?:status notification|failure|has failed|notification|problem)|"
    r"failure notice|returned mail|mail delivery failed|bounce notification|non-?delivery|"
    r"mail failure|not delivered|unzustellbar|non remis|onbestelbaar|no se puede entregar|"
    r"non recapitabile|n[ãa]o (?:foi )?entregue|olevererbar|не доставлено|недоставлен",
    re.IGNORECASE,
)
# A notice that a message failed, when it names no address we can read.
_FAILURE_NOTICE = re.compile(
    r"did not reach the following recipient|could not be delivered|couldn't be delivered|"
    r"was not delivered|delivery (?:has )?failed|failed permanently|permanent (?:error|failure)|"
    r"(?:user|recipient|mailbox) not found|user unknown|unknown user",
    re.IGNORECASE,
)
_DELAY_NOTICE = re.compile(
    r"warning message only|warning only|has been delayed|delivery incomplete|"
    r"will (?:keep trying|retry|be retried)|still being retried",
    re.IGNORECASE,
)
_DELAY_SUBJECT = re.compile(r"\(delay\)|delayed mail|^\s*warning:", re.IGNORECASE)
_NOTICE_ADDRESSES = (
    re.compile(r"^\s*<([^<>\s]+@[^<>\s]+)>", re.MULTILINE),  # "<a@b>: host said…"
    re.compile(r"^([^<>\s:]+@[^<>\s:]+):\s", re.MULTILINE),  # "a@b: 550 …" (OpenSMTPD)
    re.compile(r"^[ \t]*([^<>\s\"']+@[^<>\s\"']+)[ \t]*$", re.MULTILINE),  # alone on a line
    re.compile(r"^[ \t]*\"([^<>\s\"]+@[^<>\s\"]+)\"[ \t]*$", re.MULTILINE),  # "a@b", alone
    # Exchange 2000/2003: "a@b on 05/04/2009 10:12"
    re.compile(r"^[ \t]*([^<>\s]+@[^<>\s]+) on \d", re.MULTILINE),
    re.compile(r"failed to deliver to '<?([^<>'\s]+@[^<>'\s]+?)>?'", re.IGNORECASE),
    # SMTP32 and kin: "Delivery failed 10 attempts: a@b", "Unknown user: a@b"
    re.compile(
        r"^(?!(?:to|from|cc|bcc|sender|reply-to|return-path|delivered-to|message-id|"
        r"in-reply-to|references|x-[\w-]+)\s*:)"
        r"[A-Za-z][^:\n]{2,60}:[ \t]*<?([^<>\s:]+@[^<>\s]+?)>?[ \t]*$",
        re.IGNORECASE | re.MULTILINE,
    ),
    re.compile(r"target mail address:\s*<?([^<>\s]+@[^<>\s]+?)>?\s*$", re.I | re.M),
    re.compile(r"your message to <?([^<>\s]+@[^<>\s]+?)>? couldn't be delivered", re.I),
    re.compile(r"<mailto:([^<>\s]+@[^<>\s]+)>", re.IGNORECASE),  # Exchange "Name<mailto:a@b>"
)


def _from_mailer(message: Message) -> bool:
    sender = parseaddr(_header(message, "From"))[1].lower()
    return (
        sender.partition("@")[0] in _DAEMONS
        or message.get("X-Failed-Recipients") is not None
        or bool(_BOUNCE_SUBJECT.search(_decoded_header(message, "Subject")))
    )


def _addresses_in_notice(notice: str) -> list[str]:
    found = sorted(
        (match.start(), match.group(1).rstrip(".,;"))
        for pattern in _NOTICE_ADDRESSES
        for match in pattern.finditer(notice)
    )
    addresses: list[str] = []
    for _, address in found:
        if _looks_like_address(address) and address.lower() not in map(str.lower, addresses):
            addresses.append(address)
    return addresses


def _plain_text_bounce(message: Message, text: str) -> _Finding | None:
    if not _from_mailer(message):
        return None
    notice = _notice(text)
    failed = [a for _, a in getaddresses(message.get_all("X-Failed-Recipients") or []) if a]
    addresses = failed or _addresses_in_notice(notice)
    delayed = bool(
        _DELAY_NOTICE.search(notice) or _DELAY_SUBJECT.search(_decoded_header(message, "Subject"))
    )
    if not addresses:
        # Old Exchange names the recipient by display name only: still a bounce (never
        # an auto-reply), though there is no one to act on.
        if not _FAILURE_NOTICE.search(notice):
            return None
        kind = Kind.delayed if delayed else _failure_kind(failure_code(notice), notice, notice)
        return _Finding(kind, [], failure_code(notice))
    recipients = []
    for address, segment in _segments(notice, addresses):
        status = failure_code(segment) or failure_code(notice)
        kind = Kind.delayed if delayed else _failure_kind(status, segment, notice)
        diagnostic = _diagnostic(segment) or _diagnostic(notice)
        recipients.append(RecipientResult(address, kind, status, diagnostic))
    return _Finding(None, recipients)


def _segments(notice: str, addresses: Sequence[str]) -> Iterator[tuple[str, str]]:
    """Each address with the notice text from the line of its first mention to the
    next address's (SMTP32 writes the reason before the address: "Unknown user: a@b")."""
    lowered = notice.lower()
    found = [lowered.find(a.lower()) for a in addresses]
    starts = [lowered.rfind("\n", 0, s) + 1 if s >= 0 else -1 for s in found]
    ordered = sorted(s for s in starts if s >= 0)
    for address, start in zip(addresses, starts, strict=True):
        if start < 0:
            yield address, notice
            continue
        end = next((s for s in ordered if s > start), len(notice))
        yield address, notice[start:end]


def _diagnostic(text: str) -> str:
    """The server's reply from the reply code on, else the line naming the cause."""
    match = _REPLY_AND_CODE.search(text) or _REPLY_CODE.search(text)
    if match:
        return " ".join(text[match.start() :].split())[:300]
    match = _MAILBOX_FULL.search(text) or _NO_SUCH_ADDRESS.search(text)
    if match:
        start = text.rfind("\n", 0, match.start()) + 1
        end = text.find("\n", match.end())
        return " ".join(text[start : end if end >= 0 else None].split())[:300]
    return ""


# --- 6. unsubscribe requests and 7. auto-replies ---------------------------------------


_UNSUBSCRIBE_SUBJECT = re.compile(r"^\s*unsubscribe\b", re.IGNORECASE)


def _unsubscribe_request(message: Message, text: str) -> _Finding | None:
    # Apple Mail's one-tap unsubscribe mails the List-Unsubscribe address, marked
    # Auto-Submitted like an auto-reply; other clients mail it with the subject the
    # mailto: URI gives ("unsubscribe <token>"). A request to leave, not a bounce:
    # bounces/unsubscribes.py acts on it when it carries a valid signed token.
    if _header(message, "X-Apple-Unsubscribe").strip().lower() == "true":
        return _Finding(Kind.unsubscribe, [])
    if _UNSUBSCRIBE_SUBJECT.match(_decoded_header(message, "Subject")):
        return _Finding(Kind.unsubscribe, [])
    return None


_AUTO_SUBJECT = re.compile(
    r"^\s*(?:auto(?:matic)?[ -]?(?:reply|respon|antwort)|out of (?:the )?office|"
    r"abwesenheit|r[ée]ponse automatique|vacation|away from)",
    re.IGNORECASE,
)
_OUT_OF_OFFICE = re.compile(r"out of (?:the )?office", re.IGNORECASE)


def _auto_reply(message: Message, text: str) -> _Finding | None:
    auto_submitted = _header(message, "Auto-Submitted").strip().lower()
    is_auto_reply = (
        auto_submitted.startswith("auto-replied")
        or any(
            message.get(name) is not None
            for name in ("X-Autoreply", "X-Autorespond", "X-Auto-Reply", "X-Vacation")
        )
        or _header(message, "Precedence").strip().lower() == "auto_reply"
        or _header(message, "X-Apple-Action").strip().upper() == "VACATION"
        or bool(_AUTO_SUBJECT.search(_decoded_header(message, "Subject")))
        or bool(_OUT_OF_OFFICE.search(text[:2000]))
    )
    return _Finding(Kind.autoreply, []) if is_auto_reply else None
