"""One service layer: the full staff scenario over HTTP and through the CLI leaves the
same database, down to the audit log's actions, on PostgreSQL with a real Celery
worker, Redis and an aiosmtpd sink."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import MetaData, select

from newsletter.cli.processes import build_app
from newsletter.config import Settings
from newsletter.db import make_engine
from newsletter.tasks.app import configure, runtime
from newsletter.tasks.scheduler import tick
from tests.api_server import PASSWORD, ServerThread
from tests.conftest import _truncate_all
from tests.factories import SAMPLE_ARTICLES, SERIES, settings_for
from tests.processes import WorkerProcess, settings_env
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.slow

NEWSLETTER = Path(sys.executable).parent / "newsletter"
ADMIN = "admin@clinic.example"
PEOPLE = [
    {"email": "ann@example.org", "name": "Ann", "attributes": {"city": "Berlin"}},
    {"email": "bob@example.org", "name": "Bob"},
    {"email": "not an address"},
]
READERS_CSV = "email,name,plan\ncat@example.org,Cat,member\nnope,Nope,x\nann@example.org,,member\n"
SUBJECT = "{{ slot('name', 'there') }}, news from the clinic"
# What differs between two runs by nature: times, secrets, ids of messages, who acted.
VOLATILE = {
    "created_at", "updated_at", "confirmed_at", "unsubscribed_at", "sent_at", "last_seen_at",
    "last_used_at", "expires_at", "finished_at", "started_at", "last_progress_at",
    "occurrence_at", "send_at", "at", "lease_until", "next_attempt_at", "received_at",
    "id_hash", "token_hash", "prefix", "password_hash", "message_id", "smtp_reply", "claim",
    "snapshot", "source", "actor", "via", "ip", "user_id", "before", "after", "archive_key",
    "ticked_at", "stalled_at",
}  # fmt: skip


@pytest.fixture
def worker(pg_url: str, smtp_sink: SmtpSink) -> Iterator[Settings]:
    url = os.environ.get("NEWSLETTER_TEST_REDIS_URL", "redis://127.0.0.1:6379") + "/13"
    redis.Redis.from_url(url).flushdb()
    settings = settings_for(pg_url, mail_url=smtp_sink.url, broker_url=url, api_rate_limit=10**6)
    process = WorkerProcess(settings).start()
    try:
        yield settings
    finally:
        process.stop()


def cli(settings: Settings, *args: str | Path, stdin: str = "") -> str:
    result = subprocess.run(
        [str(NEWSLETTER), *map(str, args)],
        env=settings_env(settings),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def make_admin_token(settings: Settings) -> str:
    """The README's first steps: the first admin, then a token (both via the CLI)."""
    cli(settings, "users", "create", ADMIN, "--role", "admin", "--password-stdin", stdin=PASSWORD)
    made = json.loads(
        cli(settings, "tokens", "create", "--user", ADMIN, "--scope", "lists:write",
            "--scope", "subscribers:write", "--scope", "subscribers:read",
            "--scope", "articles:write", "--scope", "campaigns:write", "--scope", "campaigns:read",
            "--scope", "campaigns:send", "--scope", "deliveries:read", "--json")
    )  # fmt: skip
    token: str = made["token"]
    return token


def wait_until(done: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.3)


def over_http(settings: Settings) -> dict[str, Any]:
    token = make_admin_token(settings)

    with (
        ServerThread(build_app(settings)) as server,
        httpx.Client(
            base_url=server.url + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        ) as http,
    ):

        def ok(response: httpx.Response) -> Any:
            assert response.status_code in (200, 201), response.text
            return response.json()

        ok(http.post("/lists", json={"slug": "clinic-news", "name": "Clinic news"}))
        ok(http.post("/subscribers", json={"list": "clinic-news", "subscribers": PEOPLE}))
        upload = {"file": ("readers.csv", READERS_CSV.encode())}
        dry = ok(http.post("/imports?dry_run=true", files=upload, data={"list": "clinic-news"}))
        assert (dry["dry_run"], dry["created"]) == (True, 1)
        ok(http.post("/imports", files=upload, data={"list": "clinic-news"}))
        documents = [
            {"name": p.name, "text": p.read_text()} for p in sorted(SAMPLE_ARTICLES.glob("*.md"))
        ]
        ok(http.post("/articles/markdown", json={"documents": documents}))
        campaign = ok(
            http.post(
                "/campaigns",
                json={"name": "Series digest", "lists": ["clinic-news"], "subject": SUBJECT,
                      "content": {"series": SERIES}},
            )
        )["id"]  # fmt: skip
        preview = ok(http.get(f"/campaigns/{campaign}/preview?subscriber=ann@example.org"))
        ok(http.post(f"/campaigns/{campaign}/test", json={"to": "staff@clinic.example"}))
        ok(http.post(f"/campaigns/{campaign}/schedule", json={"now": True}))
        configure(settings)

        def finished() -> bool:
            tick(runtime())
            return bool(ok(http.get(f"/campaigns/{campaign}"))["status"] == "finished")

        wait_until(finished, "the campaign to finish over HTTP")
        runtime().close()
        run = ok(http.get(f"/campaigns/{campaign}/runs"))["items"][0]
        assert (run["status"], run["sent"], run["left"]) == ("finished", 3, 0)
        [delivery] = ok(http.get(f"/deliveries?campaign={campaign}&email=ann@example.org"))["items"]
    return {"preview": preview["subject"] + preview["html"], "delivery": delivery["status"]}


def through_cli(settings: Settings, files: Path) -> dict[str, Any]:
    make_admin_token(settings)
    people, readers = files / "people.json", files / "readers.csv"
    people.write_text(json.dumps(PEOPLE))
    readers.write_text(READERS_CSV)
    cli(settings, "lists", "create", "clinic-news", "--name", "Clinic news")
    cli(settings, "subscribers", "upsert", people, "--list", "clinic-news")
    dry = json.loads(
        cli(settings, "subscribers", "import", readers, "--list", "clinic-news", "--dry-run",
            "--json")
    )  # fmt: skip
    assert (dry["dry_run"], dry["created"]) == (True, 1)
    cli(settings, "subscribers", "import", readers, "--list", "clinic-news")
    cli(settings, "articles", "import", SAMPLE_ARTICLES)
    campaign = json.loads(
        cli(settings, "campaigns", "create", "--name", "Series digest", "--list", "clinic-news",
            "--subject", SUBJECT, "--series", SERIES, "--json")
    )["id"]  # fmt: skip
    html = files / "preview.html"
    cli(settings, "campaigns", "preview", str(campaign), "--subscriber", "ann@example.org",
        "--out", html)  # fmt: skip
    cli(settings, "campaigns", "test", str(campaign), "--to", "staff@clinic.example")
    cli(settings, "campaigns", "schedule", str(campaign), "--now")

    def finished() -> bool:
        cli(settings, "scheduler", "tick")
        shown = json.loads(cli(settings, "campaigns", "show", str(campaign), "--json"))
        return bool(shown["status"] == "finished")

    wait_until(finished, "the campaign to finish through the CLI")
    [delivery] = json.loads(
        cli(settings, "deliveries", "--campaign", str(campaign), "--email", "ann@example.org",
            "--json")
    )  # fmt: skip
    shown = json.loads(cli(settings, "campaigns", "show", str(campaign), "--json"))
    assert shown["runs"][0]["sent"] == 3
    return {"preview_html": html.read_text(), "delivery": delivery["status"]}


def database_state(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows in id order, without the columns that differ by nature."""
    engine = make_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    state: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            if table.name in ("alembic_version", "idempotent_requests"):
                continue
            order = [c for c in table.primary_key.columns]
            rows = conn.execute(select(table).order_by(*order)).mappings()
            state[table.name] = [
                {k: v for k, v in row.items() if k not in VOLATILE} for row in rows
            ]
    engine.dispose()
    return state


def test_the_staff_scenario_over_http_and_through_the_cli_leaves_equal_databases(
    worker: Settings, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    http_said = over_http(worker)
    over_http_state = database_state(worker.database_url)
    http_mail = sorted(smtp_sink.handler.recipients())

    engine = make_engine(worker.database_url)
    _truncate_all(engine)
    engine.dispose()
    smtp_sink.handler.received.clear()

    cli_said = through_cli(worker, tmp_path)
    cli_state = database_state(worker.database_url)

    assert sorted(smtp_sink.handler.recipients()) == http_mail == [
        "ann@example.org", "bob@example.org", "cat@example.org", "staff@clinic.example",
    ]  # fmt: skip
    assert http_said["delivery"] == cli_said["delivery"] == "sent"
    assert http_said["preview"].endswith(cli_said["preview_html"])
    assert "Ann, news from the clinic" in http_said["preview"]
    for table in cli_state:
        assert cli_state[table] == over_http_state[table], table
    actions = [entry["action"] for entry in cli_state["audit_log"]]
    assert actions == [
        "user.create", "token.create", "list.create", "subscribers.upsert",
        "subscribers.import_dry_run", "subscribers.import", "articles.import",
        "campaign.create", "campaign.test_send", "campaign.schedule",
    ]  # fmt: skip
