"""Bounce mailboxes: a Maildir, an mbox file, a folder of .eml files, or IMAP.

Every message is classified (`dsn.classify`) and acted on (`actions.apply_report`)
with source `dsn`; given the token signer, a reader's request to unsubscribe by mail
is acted on too (`unsubscribes.apply_unsubscribe_request`, source `mailto`).
Reading the same mailbox twice is harmless: each report is known by its Message-ID
(or a hash of its bytes), so the second pass changes nothing.
"""

from __future__ import annotations

import contextlib
import imaplib
import mailbox
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.orm import Session

from newsletter.audience.tokens import TokenSigner
from newsletter.bounces.actions import DEFAULT_SOFT_BOUNCE_LIMIT, apply_report
from newsletter.bounces.dsn import Kind, classify
from newsletter.bounces.unsubscribes import apply_unsubscribe_request
from newsletter.errors import NewsletterError, NotFoundError, Problem

SOURCE = "dsn"
# What a message carrying an unsubscribe token may be classified as (a hand-written
# request need not start its subject with "unsubscribe"; Apple's looks auto-submitted).
_MAY_ASK_TO_LEAVE = (Kind.unsubscribe, Kind.not_bounce, Kind.autoreply)


class MailboxError(NewsletterError):
    """A bounce mailbox could not be read (IMAP refused, a folder is missing…)."""


@dataclass
class MailboxReport:
    """What reading a mailbox found and did."""

    messages: int = 0
    kinds: Counter[str] = field(default_factory=Counter)  # hard, soft, complaint…
    actions: Counter[str] = field(default_factory=Counter)  # suppressed, counted, replayed…
    problems: list[Problem] = field(default_factory=list)
    # Reads unsubscribe requests (the List-Unsubscribe mailto:) when given.
    signer: TokenSigner | None = None

    def add(self, session: Session, raw: bytes, soft_bounce_limit: int) -> None:
        report = classify(raw)
        self.messages += 1
        self.kinds[report.kind] += 1
        if self.signer is not None and report.kind in _MAY_ASK_TO_LEAVE:
            outcome = apply_unsubscribe_request(session, self.signer, raw)
            if outcome is not None:
                self.actions[outcome.action] += 1
                return
        for outcome in apply_report(session, report, SOURCE, soft_bounce_limit):
            self.actions[outcome.action] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "kinds": dict(self.kinds),
            "actions": dict(self.actions),
            "problems": [str(p) for p in self.problems],
        }


def import_mailbox(
    session: Session,
    path: Path,
    soft_bounce_limit: int = DEFAULT_SOFT_BOUNCE_LIMIT,
    signer: TokenSigner | None = None,
) -> MailboxReport:
    """Read every message at `path` and act on the bounces among them.

    `path` is a Maildir (a folder with cur/ and new/), a folder of `.eml` files, a
    single `.eml` file, or an mbox file. Messages are left where they are. The
    session is flushed, not committed. A message that cannot be read is reported in
    `problems` and the rest are still processed. With `signer`, unsubscribe requests
    carrying a valid token unsubscribe their reader.
    """
    result = MailboxReport(signer=signer)
    for where, raw in _messages_at(path, result.problems):
        try:
            result.add(session, raw, soft_bounce_limit)
        except UnicodeError as exc:  # the parser is lenient; this is a last resort
            result.problems.append(Problem(where, f"unreadable message: {exc}"))
    return result


def _messages_at(path: Path, problems: list[Problem]) -> Iterator[tuple[str, bytes]]:
    if not path.exists():
        raise NotFoundError(f"no mailbox at {path}")
    if path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir():
        maildir = mailbox.Maildir(path, factory=None, create=False)
        for key in sorted(maildir.keys()):
            yield f"{path}:{key}", maildir.get_bytes(key)
    elif path.is_dir():
        for file in sorted(path.glob("*.eml")):
            try:
                yield str(file), file.read_bytes()
            except OSError as exc:
                problems.append(Problem(str(file), exc.strerror or str(exc)))
    elif path.suffix.lower() == ".eml":
        yield str(path), path.read_bytes()
    else:
        box = mailbox.mbox(path, factory=None, create=False)
        try:
            for key in box.iterkeys():  # iterating the box itself yields messages
                yield f"{path}#{key}", box.get_bytes(key)
        finally:
            box.close()


class ImapClient(Protocol):
    """The part of `imaplib.IMAP4` that `fetch_imap` uses."""

    def login(self, user: str, password: str) -> Any: ...

    def select(self, mailbox: str = ..., readonly: bool = ...) -> tuple[str, Any]: ...

    def uid(self, command: str, *args: str) -> tuple[str, Any]: ...

    def logout(self) -> Any: ...


def connect_imap(host: str, port: int, ssl: bool) -> ImapClient:
    """A real IMAP connection (TLS from the start when `ssl`)."""
    return imaplib.IMAP4_SSL(host, port) if ssl else imaplib.IMAP4(host, port)


def fetch_imap(
    session: Session,
    host: str,
    user: str,
    password: str,
    folder: str = "INBOX",
    ssl: bool = True,
    port: int | None = None,
    soft_bounce_limit: int = DEFAULT_SOFT_BOUNCE_LIMIT,
    connect: Callable[[str, int, bool], ImapClient] = connect_imap,
    signer: TokenSigner | None = None,
) -> MailboxReport:
    """Process the folder's unseen messages, then mark each one seen.

    Each message's effects are committed before it is flagged \\Seen, so a crash in
    between leaves it unseen and the next run reads it again, harmlessly (replay).
    Messages are fetched with BODY.PEEK, so a failure never marks one seen early.
    IMAP and network errors raise MailboxError. With `signer`, unsubscribe requests
    are acted on as `import_mailbox` does.
    """
    result = MailboxReport(signer=signer)
    try:
        client = connect(host, port or (993 if ssl else 143), ssl)
    except (imaplib.IMAP4.error, OSError) as exc:
        raise MailboxError(f"cannot connect to IMAP server {host}: {exc}") from exc
    try:
        client.login(user, password)
        status, _ = client.select(_quoted(folder))
        if status != "OK":
            raise MailboxError(f"IMAP folder {folder!r} cannot be opened")
        for uid in _unseen(client):
            raw = _fetch(client, uid)
            if raw is None:
                result.problems.append(Problem(f"{folder} uid {uid}", "could not be fetched"))
                continue
            result.add(session, raw, soft_bounce_limit)
            session.commit()
            client.uid("STORE", uid, "+FLAGS", "(\\Seen)")
    except (imaplib.IMAP4.error, OSError) as exc:
        raise MailboxError(f"IMAP {host}: {exc}") from exc
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            client.logout()  # the connection is gone either way
    return result


def _unseen(client: ImapClient) -> list[str]:
    status, data = client.uid("SEARCH", "UNSEEN")
    if status != "OK":
        raise MailboxError("IMAP search for unseen messages failed")
    first = data[0] if data else b""
    return [uid.decode("ascii") for uid in (first or b"").split()]


def _fetch(client: ImapClient, uid: str) -> bytes | None:
    status, data = client.uid("FETCH", uid, "(BODY.PEEK[])")
    if status != "OK":
        return None
    # imaplib answers [(b'1 (UID 7 BODY[] {123}', b'<message>'), b')'].
    for item in data or []:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
            return item[1]
    return None


def _quoted(folder: str) -> str:
    escaped = folder.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
