"""Webhook endpoints through the API (a real uvicorn server on PostgreSQL) and the CLI:
create, test, delivery log, disable, delete; audited; bad URLs refused clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.accounts.models import AuditEntry
from newsletter.cli.processes import build_app
from newsletter.config import Settings
from newsletter.db import make_engine, make_sessionmaker, utcnow
from newsletter.services import webhooks
from tests.api_server import ServerThread, Staff
from tests.factories import settings_for
from tests.processes import settings_env
from tests.webhook_receiver import Receiver

NEWSLETTER = Path(sys.executable).parent / "newsletter"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(tmp_path) as receiver:
        yield receiver


@pytest.fixture
def staff(pg_url: str, receiver: Receiver) -> Iterator[Staff]:
    settings = settings_for(
        pg_url,
        api_rate_limit=10**6,
        webhooks_allow_private=True,
        webhooks_ca_file=str(receiver.cert),
    )
    with ServerThread(build_app(settings)) as server:
        yield Staff(server.url, settings)


def cli(settings: Settings, *args: str) -> str:
    result = subprocess.run(
        [str(NEWSLETTER), *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def run_worker_once(settings: Settings) -> list[str]:
    """What the scheduler's sweep and a worker do: claim due events, post each."""
    sessions = make_sessionmaker(make_engine(settings.database_url))
    with sessions() as session:
        ids = webhooks.claim_due(session, utcnow())
        session.commit()
    post = webhooks.http_poster(settings)
    return [webhooks.deliver(sessions, i, settings, post) for i in ids]


def test_an_endpoint_is_created_tested_logged_and_disabled_over_the_api(
    staff: Staff, receiver: Receiver
) -> None:
    token = staff.token("admin@clinic.example")
    with staff.client(token) as http:
        made = http.post("/webhooks", json={"url": receiver.url, "events": ["subscriber.created"]})
        assert made.status_code == 201, made.text
        hook = made.json()
        assert hook["secret"].startswith("whsec_")
        assert "secret" not in http.get(f"/webhooks/{hook['id']}").json()
        assert http.post(f"/webhooks/{hook['id']}/test").status_code == 202
        assert run_worker_once(staff.settings) == ["delivered"]
        log = http.get(f"/webhooks/{hook['id']}/deliveries").json()["items"]
        assert [(a["event"], a["ok"], a["status_code"]) for a in log] == [
            ("webhook.test", True, 200)
        ]
        assert log[0]["response_excerpt"] == '{"ok": true}'
        request = receiver.received[0]
        assert webhooks.verify(
            hook["secret"], request.headers["newsletter-signature"], request.body
        )
        off = http.patch(f"/webhooks/{hook['id']}", json={"enabled": False})
        assert off.json()["enabled"] is False
        moved = http.patch(f"/webhooks/{hook['id']}", json={"events": ["campaign.finished"]})
        assert moved.json()["events"] == ["campaign.finished"]
        refused = http.patch(f"/webhooks/{hook['id']}", json={"url": "http://x.example/"})
        assert refused.status_code == 422
        assert refused.json()["detail"].startswith("url: must be https://")
        bad = http.post("/webhooks", json={"url": "https://x/", "events": ["campaign.sent"]})
        assert bad.status_code == 422
        assert bad.json()["detail"].startswith("events: unknown event 'campaign.sent'")
    editor = staff.token("editor@clinic.example", role="editor")
    with staff.client(editor) as http:
        assert http.get("/webhooks").status_code == 200
        body = {"url": receiver.url, "events": ["*"]}
        assert http.post("/webhooks", json=body).status_code == 403
    with staff.session() as session:
        actions = session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert actions == ["webhook.create", "webhook.test", "webhook.disable", "webhook.update"]


def test_the_cli_manages_endpoints_and_shows_the_log(staff: Staff, receiver: Receiver) -> None:
    made = json.loads(
        cli(staff.settings, "webhooks", "create", receiver.url, "--event", "*", "--json")
    )
    assert made["secret"].startswith("whsec_")
    assert "queued" in cli(staff.settings, "webhooks", "test", str(made["id"]))
    assert run_worker_once(staff.settings) == ["delivered"]
    log = json.loads(cli(staff.settings, "webhooks", "deliveries", str(made["id"]), "--json"))
    assert [(a["event"], a["status_code"]) for a in log] == [("webhook.test", 200)]
    cli(staff.settings, "webhooks", "disable", str(made["id"]))
    listed = json.loads(cli(staff.settings, "webhooks", "list", "--json"))
    assert listed[0]["enabled"] is False
    assert listed[0]["disabled_reason"] == "disabled by staff"
    cli(staff.settings, "webhooks", "enable", str(made["id"]))
    cli(staff.settings, "webhooks", "delete", str(made["id"]))
    assert json.loads(cli(staff.settings, "webhooks", "list", "--json")) == []
