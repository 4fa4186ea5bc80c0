"""The delivery journal: results written ahead of the ledger survive a killed worker
and are replayed before anyone can send those rows again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from newsletter.config import Settings
from newsletter.db import make_engine, make_sessionmaker, utcnow
from newsletter.delivery.content import run_email
from newsletter.delivery.journal import Journal, claimed_by, result_line
from newsletter.delivery.mailers import make_mailer
from newsletter.delivery.sending import ChunkSender
from newsletter.errors import ConfigError
from newsletter.runs.ledger import Chunk, claim_chunk
from newsletter.runs.models import Delivery, DeliveryStatus, Run
from tests.factories import (
    add_member,
    import_sample,
    make_list,
    series_digest,
    settings_for,
    start_run,
)
from tests.processes import settings_env
from tests.smtp_sink import SmtpSink

READERS = 120
TASK = "3f1c-task-id"

# A worker process sending one chunk, as a Celery task would, until it is killed.
CHILD = """
import sys
from newsletter.config import load_settings
from newsletter.db import make_engine, make_sessionmaker
from newsletter.runs.ledger import Chunk
from newsletter.delivery.mailers import make_mailer
from newsletter.delivery.sending import ChunkSender

settings = load_settings()
sender = ChunkSender(settings, make_mailer(settings.mail_target))
with make_sessionmaker(make_engine(settings.database_url))() as session:
    sender.send_chunk(session, Chunk(int(sys.argv[1]), 0, 10**9), sys.argv[2])
"""


def prepare_run(settings: Settings, readers: int = READERS) -> int:
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        import_sample(session)
        news = make_list(session)
        for i in range(readers):
            add_member(session, news, f"reader{i:03d}@example.org")
        run_id, _ = start_run(session, series_digest(session, ["clinic-news"]))
        run_email(session, session.get_one(Run, run_id), settings)
        session.commit()
    engine.dispose()
    return run_id


def kill_mid_chunk(settings: Settings, sink: SmtpSink, run_id: int, after: int) -> None:
    """Start a sending process and kill -9 it once the server has `after` messages."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run_id), TASK], env=settings_env(settings)
    )
    deadline = time.monotonic() + 60
    while sink.handler.count() < after:
        assert child.poll() is None, "the sending process ended early"
        assert time.monotonic() < deadline, "the sending process sent nothing"
        time.sleep(0.002)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()


def ledger(engine: Engine, run_id: int) -> Counter[DeliveryStatus]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(Delivery.status, func.count())
            .where(Delivery.run_id == run_id)
            .group_by(Delivery.status)
        ).all()
    return Counter({status: count for status, count in rows})


def send_again(settings: Settings, run_id: int) -> None:
    """The task redelivered to a worker with these settings (same task id)."""
    engine = make_engine(settings.database_url)
    sender = ChunkSender(settings, make_mailer(settings.mail_target))
    with make_sessionmaker(engine)() as session:
        sender.send_chunk(session, Chunk(run_id, 0, 10**9), TASK)
    sender.close(engine)
    engine.dispose()


def assert_everyone_once_but(sink: SmtpSink, duplicates: int) -> None:
    received = Counter(sink.handler.recipients())
    assert set(received) == {f"reader{i:03d}@example.org" for i in range(READERS)}
    assert sum(n - 1 for n in received.values()) <= duplicates


def test_a_killed_workers_journal_is_replayed_before_its_rows_are_sent_again(
    database_url: str, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    settings = settings_for(database_url, mail_url=smtp_sink.url, journal_dir=str(tmp_path))
    run_id = prepare_run(settings)
    smtp_sink.handler.delay = 0.004
    kill_mid_chunk(settings, smtp_sink, run_id, after=40)
    engine = make_engine(database_url)
    received = smtp_sink.handler.count()
    # What makes this test worth having: most of what the dead process sent is only
    # in its journal, not yet in the ledger.
    assert ledger(engine, run_id)[DeliveryStatus.sent] < received - 1
    assert any(p.stat().st_size for p in tmp_path.glob("*.journal"))

    smtp_sink.handler.delay = 0
    send_again(settings, run_id)

    assert_everyone_once_but(smtp_sink, duplicates=1)  # the message in flight, at most
    assert ledger(engine, run_id) == {DeliveryStatus.sent: READERS}
    assert list(tmp_path.glob("*.journal")) == []
    engine.dispose()


def test_a_worker_that_cannot_see_the_journal_waits_for_the_claim_to_expire(
    pg_url: str, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    here = settings_for(
        pg_url, mail_url=smtp_sink.url, journal_dir=str(tmp_path / "a"), lease_seconds=600
    )
    elsewhere = here.model_copy(update={"journal_dir": str(tmp_path / "b")})
    run_id = prepare_run(here)
    smtp_sink.handler.delay = 0.004
    kill_mid_chunk(here, smtp_sink, run_id, after=30)
    received = smtp_sink.handler.count()

    # Another machine (another journal) gets the redelivered task: the rows still
    # belong to the dead claim, whose journal only the first machine can replay.
    send_again(elsewhere, run_id)
    assert smtp_sink.handler.count() == received

    # A worker of the first machine replays the journal and finishes the chunk.
    smtp_sink.handler.delay = 0
    send_again(here, run_id)
    assert_everyone_once_but(smtp_sink, duplicates=1)


def result(delivery_id: int, claim: str) -> bytes:
    now = time.time()
    return result_line(delivery_id, claim, "sent", f"<m{delivery_id}@x>", now, None, now, "250 ok")


def claimed_rows(settings: Settings, claim: str) -> list[int]:
    """Claim every row of a fresh run for `claim`; returns the delivery ids."""
    run_id = prepare_run(settings, readers=5)
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        claim_chunk(session, Chunk(run_id, 0, 10**9), claim, utcnow(), timedelta(minutes=2))
        session.commit()
        ids = list(session.scalars(select(Delivery.id).order_by(Delivery.id)))
    engine.dispose()
    return ids


def statuses(database_url: str) -> list[DeliveryStatus]:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        found = list(connection.scalars(select(Delivery.status).order_by(Delivery.id)))
    engine.dispose()
    return found


def test_results_the_database_refused_are_handed_over_and_replayed(
    database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url)
    journal = Journal(tmp_path, settings.database_url)
    claim = claimed_by(TASK, journal.tag)
    ids = claimed_rows(settings, claim)
    for delivery_id in ids[:3]:
        journal.write(make_engine(database_url), result(delivery_id, claim))

    # The database is unreachable (here: a file without our tables) at flush time.
    broken = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(Exception, match="deliveries"):
        journal.flush(broken)
    assert journal.pending == []  # handed over, not held by a live process

    engine = make_engine(database_url)
    assert Journal(tmp_path, settings.database_url).replay_orphans(engine) == 3
    assert statuses(database_url) == [DeliveryStatus.sent] * 3 + [DeliveryStatus.sending] * 2
    # Replaying the same results again changes nothing.
    journal.write(engine, result(ids[0], claim))
    journal.flush(engine)
    with engine.connect() as connection:
        attempts = list(connection.scalars(select(Delivery.attempts).order_by(Delivery.id)))
    assert attempts == [1, 1, 1, 0, 0]
    journal.close(engine)
    engine.dispose()


def test_only_dead_processes_journals_of_this_database_are_replayed(
    sqlite_url: str, tmp_path: Path
) -> None:
    settings = settings_for(sqlite_url)
    live = Journal(tmp_path, settings.database_url)
    claim = claimed_by(TASK, live.tag)
    ids = claimed_rows(settings, claim)
    engine = make_engine(sqlite_url)
    live.write(engine, result(ids[0], claim))  # a live process's result: not ours to apply
    other_db = tmp_path / "other-db.journal"
    other_db.write_bytes(result(ids[1], claim))  # another database's journal
    own = tmp_path / f"{live.prefix}-99999-dead.journal"
    # A dead process of ours, its last write cut short by a full disk.
    own.write_bytes(result(ids[2], claim) + result(ids[3], claim)[:20])
    empty = tmp_path / "ffffffffffff-99998-dead.journal"
    empty.write_bytes(b"")

    replayer = Journal(tmp_path, settings.database_url)
    assert replayer.replay_orphans(engine) == 1
    assert statuses(sqlite_url) == [
        DeliveryStatus.sending,
        DeliveryStatus.sending,
        DeliveryStatus.sent,
        DeliveryStatus.sending,
        DeliveryStatus.sending,
    ]
    assert live.path.exists() and other_db.exists()
    assert not own.exists() and not empty.exists()
    live.close(engine)
    replayer.close(engine)
    assert statuses(sqlite_url)[0] is DeliveryStatus.sent
    engine.dispose()


def test_a_reply_with_line_breaks_is_kept_on_one_line() -> None:
    line = result_line(7, "c@t", "failed", "<m@x>", None, 1.5, 1.0, "550 no\r\n550\tsuch\x00 user")
    assert line.count(b"\n") == 1 and line.endswith(b"\t550 no 550 such user\n")


def test_a_journal_directory_that_cannot_be_used_is_a_configuration_error(
    sqlite_url: str, tmp_path: Path
) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    settings = settings_for(sqlite_url, journal_dir=str(not_a_directory / "journal"))
    with pytest.raises(ConfigError, match="NEWSLETTER_JOURNAL_DIR: cannot keep a delivery journal"):
        ChunkSender(settings, make_mailer(settings.mail_target))
