"""The demo's emails through SpamAssassin (Debian `spamassassin`), local rules only.

A local check: it runs where SpamAssassin is installed (`apt-get install spamassassin`,
or NEWSLETTER_INSTALL_SPAMASSASSIN=1 scripts/ensure-browser) and is skipped, saying
so, elsewhere. `-L` keeps it off the network (no DNS blocklists, no Razor/Pyzor), so
it judges what we control: headers, HTML, text, wording. It takes 2 to 3 seconds a
message. No rule with a positive score may fire; SpamAssassin prints scores to one
decimal, and rules it calls informational (HTML_MESSAGE: 0.001 for any HTML part)
print as 0.0.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from newsletter.delivery.mailers import MemoryMailer
from newsletter.delivery.outgoing import Outgoing
from newsletter.rendering.mime import Recipient, new_message_id
from newsletter.services.confirmation import (
    ConfirmationLink,
    ConfirmationSender,
    confirmation_template,
)
from tests.factories import BASE_URL, settings_for
from tests.test_cli import Cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("spamassassin") is None,
        reason="SpamAssassin is not installed (local tests only: apt-get install spamassassin)",
    ),
]
_RULE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s+(.*)$")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "spam"


def spam_rules(message: bytes, name: str) -> list[tuple[float, str, str]]:
    """The rules SpamAssassin fires on `message`: (points, rule, description)."""
    result = subprocess.run(
        ["spamassassin", "-L", "-t"], input=message, capture_output=True, timeout=120, check=True
    )
    report = result.stdout.decode("utf-8", "replace")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{name}.txt").write_text(report, encoding="utf-8")
    details = report.split("Content analysis details:", 1)[1]
    return [
        (float(m.group(1)), m.group(2), m.group(3).strip())
        for line in details.splitlines()
        if (m := _RULE.match(line))
    ]


@pytest.fixture(scope="module")
def demo_email(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("demo")
    cli = Cli(folder)
    cli.ok(
        "demo",
        "--subscribers",
        "2",
        "--dir",
        folder / "demo",
        NEWSLETTER_BASE_URL=BASE_URL,
        NEWSLETTER_POSTAL_ADDRESS="",  # the demo's own clinic address
        NEWSLETTER_LIST_UNSUBSCRIBE_MAILTO="unsubscribe@clinic.example",
    )
    return sorted((folder / "demo" / "outbox").glob("*.eml"))[0].read_bytes()


def test_the_demo_digest_fires_no_rule_with_a_positive_score(demo_email: bytes) -> None:
    rules = spam_rules(demo_email, "demo-digest")

    assert [r for r in rules if r[0] > 0] == []
    assert b"Riverside Clinic, 200 River Road" in demo_email  # the demo's address is in it


def test_the_confirmation_email_fires_no_rule_with_a_positive_score() -> None:
    settings = settings_for("sqlite://", base_url=BASE_URL)
    sender = ConfirmationSender.from_settings(settings)
    template = confirmation_template(
        sender, ConfirmationLink(("Riverside Clinic news",), f"{BASE_URL}/confirm/abc.def")
    )
    mailer = MemoryMailer()
    Outgoing("news@clinic.example", mailer).deliver(
        template,
        Recipient(
            "reader@example.org",
            "",
            {"email": "reader@example.org"},
            new_message_id(settings.sender_domain),
        ),
    )

    rules = spam_rules(mailer.messages[0].data, "confirmation")

    assert [r for r in rules if r[0] > 0] == []
