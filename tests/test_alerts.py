"""The shipped alert rules (deploy/prometheus/alerts.yml), checked and unit-tested by
Prometheus' own promtool (Debian package `prometheus`; scripts/ensure-promtool): each
alert fires at its stated threshold and not before."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.processes import ROOT

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.yml"))
RUNBOOK = ROOT / "docs" / "operations.md"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: scripts/ensure-promtool installs it (make test runs it)")
    return subprocess.run(
        [binary, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_alert_rules_are_valid() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


def test_every_alert_fires_at_its_threshold_and_not_before() -> None:
    assert TESTS
    done = promtool("test", "rules", *map(str, TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", "".join(t.read_text() for t in TESTS)))
    shipped = set(re.findall(r"- alert: (\w+)", RULES.read_text()))
    assert tested == shipped and len(shipped) == 8


def test_a_changed_threshold_fails_the_alert_tests(tmp_path: object) -> None:
    """The tests can fail: the heartbeat alert at 3 minutes instead of 2 is caught."""
    from pathlib import Path

    folder = Path(str(tmp_path))
    (folder / "tests").mkdir()
    (folder / "alerts.yml").write_text(RULES.read_text().replace("> 120", "> 180"))
    for test in TESTS:
        shutil.copy(test, folder / "tests" / test.name)
    done = promtool("test", "rules", *(str(folder / "tests" / t.name) for t in TESTS))
    assert done.returncode != 0
    assert "NewsletterSchedulerHeartbeatStale" in done.stdout + done.stderr


def test_every_alert_has_a_runbook_entry() -> None:
    runbook = RUNBOOK.read_text()
    for alert in re.findall(r"- alert: (\w+)", RULES.read_text()):
        assert f"### {alert}" in runbook, alert
        assert f"docs/operations.md#{alert.lower()}" in RULES.read_text()
