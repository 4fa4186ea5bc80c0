"""Delivery results written ahead of the ledger: an append-only file per worker process.

Writing each result to the database the moment the SMTP server answers costs a
database round trip per message, more CPU than building the message. Instead each
result is appended to this process's journal with one write(2), which outlives the
process being killed (the data is in the kernel, not in our buffers), and the ledger
is updated in batches: one statement for up to FLUSH_ROWS results (and the sender
flushes at least once a second, and before a chunk ends, pauses or hands rows back).

A journal whose process died (its lock is free) is replayed into the ledger by the
next worker on this machine before that worker claims any row, and claims carry a
tag of the machine and journal directory, so only a worker that can see the journal
resumes a dead task's rows at once; anyone else waits for the claim to expire. So a
killed worker still re-sends at most the one message it was handing over. Only when
a whole machine is lost for good (or its journal directory) can the results since
its last flush, at most FLUSH_ROWS per process, be sent again.

Replaying is safe to repeat: a result applies only while its row is still `sending`
under the claim that sent it.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import secrets
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from newsletter import metrics
from newsletter.db import UtcDateTime

log = logging.getLogger(__name__)

FLUSH_ROWS = 250  # results per ledger update
SUFFIX = ".journal"

# One result per line, tab-separated: delivery id, claim, status, message id, sent at,
# next attempt at, recorded at (Unix seconds, or empty), reply (flattened to one line).
_FIELDS = 8

_UPDATE_ONE = (
    "UPDATE deliveries SET status = {p}, attempts = attempts + 1, smtp_reply = {p},"
    " message_id = {p}, sent_at = {p}, next_attempt_at = {p}, claim = '', lease_until = NULL,"
    " updated_at = {p} WHERE id = {p} AND status = 'sending' AND claim = {p}"
)
_PLACEHOLDERS = {"format": "%s", "pyformat": "%s", "qmark": "?"}
# PostgreSQL parses the journal's lines itself: the whole batch is one text parameter.
_UPDATE_MANY_PG = (
    "UPDATE deliveries AS d SET status = r.status, attempts = d.attempts + 1,"
    " smtp_reply = r.reply, message_id = r.message_id,"
    " sent_at = to_timestamp(nullif(r.sent_at, '')::float8),"
    " next_attempt_at = to_timestamp(nullif(r.next_at, '')::float8),"
    " claim = '', lease_until = NULL, updated_at = to_timestamp(r.updated_at::float8)"
    " FROM (SELECT f[1]::integer AS id, f[2] AS claim, f[3] AS status, f[4] AS message_id,"
    " f[5] AS sent_at, f[6] AS next_at, f[7] AS updated_at, f[8] AS reply"
    " FROM (SELECT string_to_array(line, E'\\t') AS f"
    " FROM unnest(string_to_array(%s, E'\\n')) AS line) AS lines"
    " WHERE array_length(f, 1) = 8) AS r"
    " WHERE d.id = r.id AND d.status = 'sending' AND d.claim = r.claim"
)


def result_line(
    delivery_id: int,
    claim: str,
    status: str,
    message_id: str,
    sent_at: float | None,
    next_attempt_at: float | None,
    recorded_at: float,
    reply: str,
) -> bytes:
    """One journal line (times in Unix seconds)."""
    if not reply.isprintable():  # tabs and line breaks would split the record
        reply = " ".join(reply.replace("\x00", "").split())
    sent = "" if sent_at is None else repr(sent_at)
    later = "" if next_attempt_at is None else repr(next_attempt_at)
    return (
        f"{delivery_id}\t{claim}\t{status}\t{message_id}\t{sent}\t{later}\t"
        f"{recorded_at!r}\t{reply[:1000]}\n"
    ).encode()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def apply_results(engine: Engine, lines: str) -> None:
    """Write journal lines into the ledger in one transaction (rows no longer held by
    the claim that sent them are left alone, so applying twice changes nothing). A
    line that is not whole (a write cut short by a full disk) is skipped."""
    if not lines:
        return
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql(_UPDATE_MANY_PG, (lines,))
            return
        to_db = UtcDateTime().bind_processor(engine.dialect) or (lambda value: value)

        def when(value: str) -> Any:
            return to_db(datetime.fromtimestamp(float(value), UTC)) if value else None

        rows = []
        for line in lines.splitlines():
            fields = line.split("\t", _FIELDS - 1)
            if len(fields) != _FIELDS or not fields[0].isdigit():
                continue
            id_, claim, status, message_id, sent, later, now, reply = fields
            rows.append(
                (status, reply, message_id, when(sent), when(later), when(now), int(id_), claim)
            )
        if rows:
            sql = _UPDATE_ONE.format(p=_PLACEHOLDERS[engine.dialect.paramstyle])
            connection.exec_driver_sql(sql, rows)


class Journal:
    """This process's journal for one database; see the module's docstring."""

    def __init__(self, directory: Path, database_url: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        # Journals of other databases in the same directory are never replayed here.
        self.prefix = _digest(database_url)
        # Part of every claim: the machine and directory that can replay our journal.
        self.tag = _digest(f"{socket.gethostname()}:{directory.resolve()}")
        self.pending: list[bytes] = []
        # Sending threads of one process share the journal (sending.py); the lock is
        # re-entrant because a full batch flushes inside `write`.
        self.lock = threading.RLock()
        self._open()

    def _open(self) -> None:
        name = f"{self.prefix}-{os.getpid()}-{secrets.token_hex(4)}"
        # Locked before it gets the name replayers look for, so none can take a new
        # journal for a dead one; the lock is held while we live.
        creating = self.directory / f"{name}.new"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        self.fd = os.open(creating, flags, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.path = creating.rename(self.directory / f"{name}{SUFFIX}")

    def write(self, engine: Engine, line: bytes) -> None:
        """Record one result (a `result_line`): in the journal now, in the ledger at
        the next flush. Safe to call from several threads."""
        with self.lock:
            self._write(engine, line)

    def _write(self, engine: Engine, line: bytes) -> None:
        try:
            if os.write(self.fd, line) != len(line):
                raise OSError("short write")
        except OSError as exc:
            # A full or broken disk: the result goes straight to the database instead.
            log.warning("journal %s: %s; writing the ledger directly", self.path, exc)
            self.pending.append(line)
            self.flush(engine)
            return
        self.pending.append(line)
        if len(self.pending) >= FLUSH_ROWS:
            self.flush(engine)

    def flush(self, engine: Engine) -> None:
        """Write the pending results into the ledger, then empty the journal.

        If the database cannot take them, the journal file is handed over: we close it
        (freeing its lock), so whoever claims rows next replays it, and go on with a
        new one. Holding on to them would leave rows that look abandoned once their
        claim expires, while their results sat in a live process.
        """
        with self.lock:
            self._flush(engine)

    def _flush(self, engine: Engine) -> None:
        if not self.pending:
            return
        try:
            apply_results(engine, b"".join(self.pending).decode())
        except Exception:
            self.pending = []
            os.close(self.fd)
            self._open()
            raise
        self.pending = []
        os.ftruncate(self.fd, 0)
        # The send path's counts reach the shared metrics files with its results.
        metrics.publish()

    def replay_orphans(self, engine: Engine) -> int:
        """Apply the journals that dead processes left for this database, then remove
        them; returns how many results were replayed. Empty orphans of any database
        are removed too."""
        replayed = 0
        for path in self.directory.glob(f"*{SUFFIX}"):
            if path == self.path:
                continue
            replayed += self._replay(engine, path)
        return replayed

    def _replay(self, engine: Engine, path: Path) -> int:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0  # someone else replayed it just now
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # its process is alive
            size = os.fstat(fd).st_size
            if size and not path.name.startswith(self.prefix + "-"):
                return 0  # another database's
            lines = os.pread(fd, size, 0).decode("utf-8", "replace") if size else ""
            apply_results(engine, lines)
            if lines:
                log.info("replayed %d delivery results from %s", lines.count("\n"), path.name)
            path.unlink(missing_ok=True)
            return lines.count("\n")
        finally:
            os.close(fd)

    def close(self, engine: Engine) -> None:
        """Flush and remove the journal (a process that stops cleanly leaves none)."""
        try:
            self.flush(engine)
        finally:
            if not self.pending:
                self.path.unlink(missing_ok=True)
            os.close(self.fd)


def claimed_by(task_claim: str, tag: str) -> str:
    """The claim written on rows: the task's own id and where its journal lives."""
    return f"{task_claim[:48]}@{tag}"
