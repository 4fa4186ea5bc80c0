"""Mailers: the one narrow interface every transport implements.

`SmtpMailer` talks to a relay over a connection kept open between messages;
`OutboxMailer` writes one `.eml` file per message (development, demo);
`MemoryMailer` keeps messages in a list (tests, previews).
Each `send` returns a SendResult or raises a DeliveryError whose class says what to
do: TemporaryDeliveryError (retry later), ThrottledError (retry later, and slow down
for the whole domain), PermanentDeliveryError (never retry this recipient),
HardBounceError (never retry, and suppress the address). Replies are classified once,
here (`classify_reply`); callers decide by class.
"""

from __future__ import annotations

import contextlib
import re
import select
import smtplib
import socket
import ssl
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from newsletter import metrics
from newsletter.config import MailTarget, OutboxTarget, SmtpTarget
from newsletter.errors import (
    DeliveryError,
    HardBounceError,
    PermanentDeliveryError,
    RelayUnavailableError,
    TemporaryDeliveryError,
    ThrottledError,
)

# Replies that mean the server wants us to slow down rather than that this one
# recipient has a problem: pause the whole domain. 450/451 alone are often
# greylisting of one recipient, so they count only when their text says so.
THROTTLING_WORDS = ("rate limit", "rate-limit", "ratelimit", "throttl", "too many", "slow down")
# Permanent replies that say the mailbox does not exist or cannot take mail.
HARD_BOUNCE_CODES = frozenset({550, 551, 553})


@dataclass(frozen=True)
class OutgoingMessage:
    sender: str  # envelope MAIL FROM
    recipient: str  # envelope RCPT TO
    data: bytes  # the whole RFC 5322 message, CRLF line ends
    message_id: str
    # No line of `data` starts with "." (MessageTemplate makes sure): SMTP sends it
    # as it is, without the dot-stuffing scan.
    dot_free: bool = False


@dataclass(frozen=True)
class SendResult:
    reply: str = "250 OK"


class Mailer(Protocol):
    def send(self, message: OutgoingMessage) -> SendResult: ...

    def close(self) -> None: ...


# What became of one message of several: its result, or the error `send` would raise.
Handed = tuple[OutgoingMessage, SendResult | DeliveryError]


def send_each(mailer: Mailer, messages: Iterable[OutgoingMessage]) -> Iterator[Handed]:
    """Each message through `mailer`, its result yielded as soon as it is known (the
    caller records it before the next message goes). A mailer with `send_many` (a
    relay pool) may overlap one message's end with the next one's envelope; `messages`
    is read one ahead of the results then, never further."""
    many = getattr(mailer, "send_many", None)
    if many is not None:
        yield from many(messages)
    else:
        yield from one_by_one(mailer.send, messages)


def one_by_one(
    send: Callable[[OutgoingMessage], SendResult], messages: Iterable[OutgoingMessage]
) -> Iterator[Handed]:
    for message in messages:
        try:
            yield message, send(message)
        except DeliveryError as exc:
            yield message, exc


@dataclass
class MemoryMailer:
    """Keeps every message; for tests and previews."""

    messages: list[OutgoingMessage] = field(default_factory=list)

    def send(self, message: OutgoingMessage) -> SendResult:
        self.messages.append(message)
        return SendResult("250 stored in memory")

    def close(self) -> None:
        pass


_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


class OutboxMailer:
    """Writes each message to `<folder>/<message-id>.eml` (atomically, via a rename)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)

    def send(self, message: OutgoingMessage) -> SendResult:
        name = _UNSAFE_FILENAME.sub("_", message.message_id.strip("<>")) + ".eml"
        path = self.folder / name
        partial = path.with_suffix(".eml.part")
        try:
            partial.write_bytes(message.data)
            partial.replace(path)
        except OSError as exc:
            raise TemporaryDeliveryError(f"cannot write {path}: {exc}") from exc
        return SendResult(f"250 written to {path.name}")

    def close(self) -> None:
        pass


_NOT_IN_ADDRESS = re.compile(r"[\r\n<> ]")


def _reply_text(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {' '.join(text.split())}"[:1000]


def classify_reply(code: int, message: bytes | str) -> None:
    """Raise the delivery error an SMTP reply means; return for 2xx."""
    if 200 <= code < 300:
        return
    text = _reply_text(code, message)
    if 400 <= code < 500:
        lowered = text.lower()
        if code == 421 or any(word in lowered for word in THROTTLING_WORDS):
            raise ThrottledError(text, code)
        raise TemporaryDeliveryError(text, code)
    if 500 <= code < 600:
        if code in HARD_BOUNCE_CODES:
            raise HardBounceError(text, code)
        raise PermanentDeliveryError(text, code)
    raise TemporaryDeliveryError(f"unexpected SMTP reply: {text}", code)


# Replies to a command the server does not know ("syntax error, command unrecognized",
# "not implemented", "parameter not implemented").
_NOT_RECOGNIZED = frozenset({500, 502, 504})


class _BdatNotRecognized(Exception):
    """A relay that offered CHUNKING answered BDAT as an unknown command."""

    def __init__(self, code: int, text: bytes) -> None:
        super().__init__(code, text)
        self.code = code


def _has_lone_dot_line(data: bytes) -> bool:
    """Whether a line of `data` is a lone "." with any line end (CRLF, LF, CR).

    Such a message never goes with BDAT: a relay that offers CHUNKING without knowing
    BDAT reads the chunk as commands, and a "DATA" line followed by a "." line in it
    would be a message of its own (SMTP smuggling). Without a lone "." nothing the
    chunk says can complete a transaction.
    """
    for start in (b"\n.", b"\r."):
        at = data.find(start)
        while at >= 0:
            if data[at + 2 : at + 3] in (b"\r", b"\n"):
                return True
            at = data.find(start, at + 1)
    return False


def _undeliverable(message: OutgoingMessage) -> str | None:
    """The envelope address we cannot send (we do not speak SMTPUTF8), if any."""
    for address in (message.sender, message.recipient):
        if not address.isascii() or _NOT_IN_ADDRESS.search(address) is not None:
            return address
    return None


def _envelope(message: OutgoingMessage) -> bytes:
    return (f"MAIL FROM:<{message.sender}>\r\nRCPT TO:<{message.recipient}>\r\nDATA\r\n").encode(
        "ascii"
    )


def _relay_has_spoken(smtp: smtplib.SMTP) -> bool:
    """Whether the relay sent something (a 421, a TLS alert) or hung up on a session
    that is between transactions: then it read nothing we send next."""
    sock = smtp.sock
    if sock is None:
        return True
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)  # POLLHUP and POLLERR come unasked
    return bool(poller.poll(0))


class SmtpMailer:
    """One SMTP connection, opened on first use and kept open between messages (and
    reopened after `max_messages` of them, as providers cap messages per session).

    No session at all (refused, timed out, 421 or another refusal at the greeting, TLS
    or login failing) is a RelayUnavailableError: nothing was handed over. A dropped
    connection, timeout or 4xx reply during a transaction is a TemporaryDeliveryError
    and the connection is reopened on the next send; a 5xx reply is a
    PermanentDeliveryError. Not thread-safe: a pool (relays.py) gives each thread its own.

    A message goes with BDAT (RFC 3030 CHUNKING) where the relay offers CHUNKING and
    PIPELINING: MAIL, RCPT, `BDAT <size> LAST` and the message in one write, one round
    trip, no dot-stuffing (see `_bdat_transaction`); otherwise with DATA.
    """

    def __init__(self, target: SmtpTarget, max_messages: int = 0) -> None:
        self.target = target
        self.max_messages = max_messages  # 0: no limit
        self.sent_on_connection = 0
        self._smtp: smtplib.SMTP | None = None
        self._handing_over = False  # the message itself is being sent: it may arrive
        # The relay offered CHUNKING but answered BDAT "not recognized": DATA from now on,
        # on every session of this connection.
        self.bdat_refused = False
        # The next message's envelope, written with the end of the one before, and the
        # relay's replies to it (`send_many`): the session is in its DATA phase then.
        self._ahead: tuple[OutgoingMessage, list[tuple[int, bytes]]] | None = None

    def _connect(self) -> smtplib.SMTP:
        t = self.target
        smtp: smtplib.SMTP
        if t.ssl:
            smtp = smtplib.SMTP_SSL(
                t.host, t.port, timeout=t.timeout, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(t.host, t.port, timeout=t.timeout)
        try:
            # Each command group and each message goes in one write of its own, so
            # Nagle's algorithm saves nothing; with TLS it held the last record of
            # every message until the relay's delayed ACK (40 ms a message).
            if smtp.sock is not None:
                smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            smtp.ehlo()
            if t.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if t.username:
                smtp.login(t.username, t.password or "")
        except BaseException:
            with contextlib.suppress(OSError):
                smtp.close()
            raise
        return smtp

    def _open(self) -> smtplib.SMTP:
        """A new session, or RelayUnavailableError saying why there is none."""
        name = self.target.name
        try:
            smtp = self._connect()
        except smtplib.SMTPResponseException as exc:
            metrics.count_smtp_reply(exc.smtp_code)
            text = _reply_text(exc.smtp_code, exc.smtp_error)
            kind = "busy" if 400 <= exc.smtp_code < 500 else "down"
            raise RelayUnavailableError(f"relay {name} refused us: {text}", kind) from exc
        except (ssl.SSLError, ssl.CertificateError, smtplib.SMTPNotSupportedError) as exc:
            metrics.count_smtp_reply(None, dropped=True)
            raise RelayUnavailableError(f"TLS with relay {name} failed: {exc!r}", "tls") from exc
        except TimeoutError as exc:
            metrics.count_smtp_reply(None)
            raise RelayUnavailableError(f"relay {name} did not answer: {exc!r}", "down") from exc
        except (smtplib.SMTPException, OSError) as exc:
            metrics.count_smtp_reply(None, dropped=True)
            raise RelayUnavailableError(f"cannot connect to relay {name}: {exc!r}", "down") from exc
        self.sent_on_connection = 0
        return smtp

    def _drop(self) -> None:
        self._ahead = None
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            with contextlib.suppress(OSError):
                smtp.close()

    @property
    def connected(self) -> bool:
        return self._smtp is not None

    def send(self, message: OutgoingMessage, after: OutgoingMessage | None = None) -> SendResult:
        """Hand `message` over; with `after` (the message this connection sends next,
        for certain), its envelope may go in the same write as this message's end
        (see `send_many`)."""
        if self._ahead is not None and self._ahead[0] is not message:
            # An envelope went ahead for a message that is not coming: the session is
            # in that message's DATA phase, and only a new one is safe.
            self._drop()
        address = _undeliverable(message)
        if address is not None:  # it can never go through us
            raise PermanentDeliveryError(f"not a deliverable address: {address!r}")
        try:
            return self._hand_over(message, after)
        except _BdatNotRecognized:
            # Refused, so not handed over; the session was dropped (the relay read the
            # message as commands) and this connection now speaks DATA: again at once.
            return self._hand_over(message, None)

    def send_many(self, messages: Iterable[OutgoingMessage]) -> Generator[Handed, None, None]:
        """The messages over this connection in turn, each result yielded when the
        relay has answered it. Over DATA with PIPELINING, a message's end (its last
        bytes and ".") and the next one's MAIL, RCPT and DATA go in one write, as
        Postfix's client does: one round trip a message instead of two, and a write
        and a read fewer. Still one message at a time is handed over: the next one's
        text goes only after this one's result is yielded (and journalled by the
        caller), so a killed worker leaves at most one unrecorded message a connection.
        Ends early when a message cannot be handed over here (no session): that
        message, and the one read after it, come with the RelayUnavailableError, for
        the caller to send them and the rest elsewhere."""
        queue = iter(messages)
        message = next(queue, None)
        try:
            while message is not None:
                after = next(queue, None)
                try:
                    yield message, self.send(message, after)
                except RelayUnavailableError as exc:
                    yield message, exc
                    if after is not None:  # read, not sent: the caller's too
                        yield after, exc
                    return
                except DeliveryError as exc:
                    yield message, exc
                message = after
        finally:
            if self._ahead is not None:  # the caller stopped before the message ahead
                self._drop()

    def _hand_over(self, message: OutgoingMessage, after: OutgoingMessage | None) -> SendResult:
        if self._smtp is None:
            self._smtp = self._open()
        reused = self.sent_on_connection > 0
        self._handing_over = False
        if after is not None and (
            _undeliverable(after) is not None
            or (self.max_messages and self.sent_on_connection + 1 >= self.max_messages)
        ):
            after = None  # it goes alone (refused, or on the next session)
        # Each hand-over's answer is counted by class here, where it is read
        # (newsletter_smtp_reply_total): a reply code, a timeout, or no answer at all.
        try:
            reply = self._transaction(self._smtp, message, after)
        except _BdatNotRecognized as exc:
            metrics.count_smtp_reply(exc.code)
            raise
        except smtplib.SMTPResponseException as exc:
            metrics.count_smtp_reply(exc.smtp_code)
            self._after_error(exc.smtp_code)
            classify_reply(exc.smtp_code, exc.smtp_error)
            raise TemporaryDeliveryError(_reply_text(exc.smtp_code, exc.smtp_error)) from exc
        except TimeoutError as exc:
            metrics.count_smtp_reply(None)
            self._drop()
            raise TemporaryDeliveryError(f"connection problem: {exc!r}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            # Dropped connections: try again later.
            metrics.count_smtp_reply(None, dropped=True)
            self._drop()
            if reused and not self._handing_over:
                # A kept connection the relay had closed (idle too long) before the
                # message went: nothing was handed over, a new session may take it.
                raise RelayUnavailableError(f"connection closed: {exc!r}", "stale") from exc
            raise TemporaryDeliveryError(f"connection problem: {exc!r}") from exc
        metrics.count_smtp_reply(250)
        self.sent_on_connection += 1
        if self.max_messages and self.sent_on_connection >= self.max_messages:
            self.close()  # the relay's limit per session: the next send opens a new one
        return SendResult(reply)

    def _transaction(
        self, smtp: smtplib.SMTP, message: OutgoingMessage, after: OutgoingMessage | None
    ) -> str:
        """The message handed over in one transaction; its 250 reply, or an
        SMTPResponseException with the first refusal, or the connection's error."""
        pipelining = smtp.has_extn("pipelining")
        bdat = pipelining and smtp.has_extn("chunking") and not self.bdat_refused
        if bdat:  # (BDAT already takes one round trip: no envelope goes ahead)
            if self._ahead is None and (message.dot_free or not _has_lone_dot_line(message.data)):
                return self._bdat_transaction(smtp, message)
            after = None
        return self._data_transaction(smtp, message, pipelining, after)

    def _data_transaction(
        self,
        smtp: smtplib.SMTP,
        message: OutgoingMessage,
        pipelining: bool,
        after: OutgoingMessage | None,
    ) -> str:
        """MAIL, RCPT, DATA and the message; with PIPELINING (RFC 2920) the three
        commands go in one write, saving two round trips a message, and with `after`
        they go in the write that ends the message before (`send_many`)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:  # the envelope went with the message before
            replies = ahead[1]
        elif pipelining:
            smtp.send(_envelope(message))
            replies = [smtp.getreply() for _ in range(3)]
        else:
            commands = _envelope(message).split(b"\r\n")[:3]
            replies = []
            for command in commands:
                smtp.send(command + b"\r\n")
                replies.append(smtp.getreply())
                if replies[-1][0] >= 400:
                    break
        for code, text in replies:
            if code == 354:
                break
            if code >= 400:
                if replies[-1][0] == 354:  # DATA was accepted after all: end it empty
                    smtp.send(b".\r\n")
                    smtp.getreply()
                raise smtplib.SMTPResponseException(code, text)
        body = message.data
        if not message.dot_free:
            # Dot-stuffing (RFC 5321 4.5.2): 50 µs for 27 KB, hence `dot_free`.
            body = body.replace(b"\n.", b"\n..")
            if body.startswith(b"."):
                body = b"." + body
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        self._handing_over = True
        ahead_of = after if pipelining and after is not None else None
        smtp.send(body + b".\r\n" + (_envelope(ahead_of) if ahead_of else b""))
        code, text = smtp.getreply()
        if ahead_of is not None and code != 421:
            self._read_ahead(smtp, ahead_of)
        if code != 250:
            raise smtplib.SMTPResponseException(code, text)
        return _reply_text(code, text)

    def _read_ahead(self, smtp: smtplib.SMTP, message: OutgoingMessage) -> None:
        """The relay's replies to the envelope that went ahead, kept for `message`'s
        own send. If the session fails here, the message before is already the
        relay's, and this one was not handed over: its send opens a new session."""
        try:
            self._ahead = (message, [smtp.getreply() for _ in range(3)])
        except (smtplib.SMTPException, OSError):
            metrics.count_smtp_reply(None, dropped=True)
            self._drop()

    def _bdat_transaction(self, smtp: smtplib.SMTP, message: OutgoingMessage) -> str:
        """MAIL, RCPT, `BDAT <size> LAST` and the message as it is (a chunk has a
        size, so nothing is dot-stuffed) in one write, then the three replies: one
        round trip a message instead of DATA's two.

        Refusals are classified by the first failing reply: a RCPT refused with 550
        is a hard bounce though BDAT is then refused too (503/554); a 421 ends the
        session; after any other refusal the relay has read the whole chunk (its size
        says where it ends) and RSET keeps the session usable. A relay that offered
        CHUNKING but answers BDAT 500/502/504 ("not recognized") read the message as
        commands: the session is dropped and the connection speaks DATA from then on
        (`bdat_refused`; `send` tries the message again at once).

        When was the message handed over? Envelope and message go in one write, so a
        connection that fails after it cannot tell "the relay had closed this idle
        session and read nothing" from "the relay took the message and its 250 was
        lost": with SMTP a message is the relay's once it has decided to answer 250
        to BDAT LAST, whether or not that answer reaches us. A message is retried at
        once (RelayUnavailableError "stale", via `send`) only if the relay cannot
        have it:
        - the relay had already hung up or spoken (a 421 timeout) on the kept
          session before the write: one poll() of the socket, before anything goes;
        - the write itself failed (EPIPE, ECONNRESET, timeout): its last bytes, the
          end of the chunk, never left, and no relay accepts a chunk short of its
          size.
        Any failure after the write is `_handing_over`: deferred, never resent at
        once, since a duplicate is worse than a delay. Only a relay that closes
        the session in the instant between the poll and its arrival costs a
        deferral that was not needed.
        """
        if _relay_has_spoken(smtp):
            raise smtplib.SMTPServerDisconnected("the relay closed the idle connection")
        smtp.send(
            f"MAIL FROM:<{message.sender}>\r\nRCPT TO:<{message.recipient}>\r\n".encode("ascii")
            + b"BDAT %d LAST\r\n" % len(message.data)
            + message.data
        )
        self._handing_over = True
        refusal: tuple[int, bytes] | None = None
        for step in ("MAIL", "RCPT", "BDAT"):
            try:
                code, text = smtp.getreply()
            except smtplib.SMTPServerDisconnected:
                if refusal is None:
                    raise
                break  # refused before the message: it cannot have been taken
            if step == "BDAT" and code in _NOT_RECOGNIZED:
                self.bdat_refused = True
                self._drop()
                if refusal is None:
                    raise _BdatNotRecognized(code, text)
            elif refusal is None and not 200 <= code < 300:
                refusal = (code, text)
            if code == 421:
                break  # the relay is closing the session: nothing more will come
        if refusal is not None:
            raise smtplib.SMTPResponseException(*refusal)
        if code != 250:
            raise smtplib.SMTPResponseException(code, text)
        return _reply_text(code, text)

    def _after_error(self, code: int) -> None:
        # 421 means the server is closing the connection; after any other error the
        # session stays usable once reset.
        if code == 421 or self._smtp is None:
            self._drop()
            return
        if self._ahead is not None:
            # The refusal ended the message's transaction and the next envelope is in:
            # the session is in the next message's DATA phase, where RSET would be text.
            return
        try:
            self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def close(self) -> None:
        if self._smtp is not None and self._ahead is None:  # (else QUIT would be text)
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._smtp.quit()
        self._drop()


def make_mailer(target: MailTarget) -> Mailer:
    if isinstance(target, OutboxTarget):
        return OutboxMailer(target.path)
    return SmtpMailer(target)
