"""Segments through the CLI and the API (a real uvicorn server on PostgreSQL): the same
service functions, the same answers, clear errors, scopes and audit entries."""

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
from tests.api_server import ServerThread, Staff
from tests.factories import add_member, import_sample, make_list, settings_for
from tests.processes import settings_env

NEWSLETTER = Path(sys.executable).parent / "newsletter"


@pytest.fixture
def staff(pg_url: str) -> Iterator[Staff]:
    settings = settings_for(pg_url, api_rate_limit=10**6)
    staff = Staff("", settings)
    with staff.session() as session:
        import_sample(session)
        news = make_list(session)
        for name, city in [("ann", "Oslo"), ("ben", "Bergen"), ("cai", "Trondheim")]:
            add_member(session, news, f"{name}@example.org", city=city)
        session.commit()
    with ServerThread(build_app(settings)) as server:
        yield Staff(server.url, settings)


def cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    result = subprocess.run(
        [str(NEWSLETTER), *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in result.stderr
    return result.returncode, result.stdout, result.stderr


def test_the_cli_and_the_api_create_count_and_show_the_same_segment(staff: Staff) -> None:
    code, out, err = cli(
        staff.settings,
        "segments", "create", "north", "attr.city in (Oslo, Trondheim)", "--name", "North",
    )  # fmt: skip
    assert code == 0, err
    assert "2 match now" in out
    token = staff.token("editor@clinic.example", role="editor")
    with staff.client(token) as http:
        made = http.post(
            "/segments",
            json={
                "slug": "west",
                "name": "West",
                "rules": {"match": "any", "rules": [{"field": "attr.city", "value": "Bergen"}]},
            },
        )
        assert made.status_code == 201, made.text
        assert made.json()["line"] == "attr.city=Bergen"
        listed = http.get("/segments").json()["items"]
        assert [s["slug"] for s in listed] == ["north", "west"]
        assert http.get("/segments/north/count").json() == {
            "count": 2,
            "line": "attr.city in (Oslo, Trondheim)",
        }
        live = http.post(
            "/segments/count", json={"rules": "attr.city=Oslo", "lists": ["clinic-news"]}
        )
        assert live.json()["count"] == 1
        campaign = http.post(
            "/campaigns",
            json={
                "name": "West digest",
                "lists": ["clinic-news"],
                "subject": "News",
                "content": {"latest": 1},
                "segment": "west",
            },
        )
        assert campaign.status_code == 201, campaign.text
        assert campaign.json()["segment"] == "west"
        refused = http.delete("/segments/west")
        assert refused.status_code == 422
        assert "used by campaign" in refused.json()["detail"]
    code, out, _ = cli(staff.settings, "segments", "show", "west", "--json")
    assert json.loads(out)["count"] == 1
    code, out, _ = cli(staff.settings, "segments", "count", "attr.city present")
    assert out.strip() == "3"
    with staff.session() as session:
        actions = session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert actions == ["segment.create", "segment.create", "campaign.create"]


def test_bad_rules_get_a_clear_error_naming_the_rule(staff: Staff) -> None:
    token = staff.token("admin@clinic.example")
    rules = {
        "match": "all",
        "rules": [
            {"field": "status", "value": "confirmed"},
            {"field": "attr.age", "op": "gt_", "value": 3},
        ],
    }
    with staff.client(token) as http:
        response = http.post("/segments", json={"slug": "bad", "name": "Bad", "rules": rules})
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"] == "rules[1].op: unknown operator 'gt_'"
        assert http.post("/segments/count", json={"rules": "city=Oslo"}).json()["detail"] == (
            "field: unknown field 'city'"
        )
    code, _, err = cli(staff.settings, "segments", "create", "bad", "attr.age >> 3")
    assert code != 0
    assert "unknown operator" in err or "expected a value" in err


def test_reading_segments_needs_a_scope_and_writing_another(staff: Staff) -> None:
    analyst = staff.token("analyst@clinic.example", role="analyst")
    nobody = staff.token("ops@clinic.example", role="ops")
    with staff.client(analyst) as http:
        assert http.get("/segments").status_code == 200
        body = {"slug": "x", "name": "X", "rules": "attr.city=Oslo"}
        assert http.post("/segments", json=body).status_code == 403
    with staff.client(nobody) as http:
        assert http.get("/segments").status_code == 403
