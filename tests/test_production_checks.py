"""What production refuses: an http base URL for a public host, a campaign without the
sender's postal address. Each refusal is one line naming the setting, from the real
console script."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session

from newsletter.campaigns.content import freeze_campaign_run
from newsletter.campaigns.models import CampaignStatus
from newsletter.campaigns.runs import claim_due_campaigns, prepare_campaign_run
from newsletter.campaigns.service import schedule_campaign, schedule_recurring
from newsletter.config import ConfigError, check_public_url, load_settings
from newsletter.db import make_sessionmaker, utcnow
from newsletter.errors import InvalidInputError
from newsletter.runs.models import Run, RunStatus
from tests.factories import import_sample, make_list, series_digest, settings_for
from tests.smtp_sink import free_port
from tests.test_cli import Cli

NO_ADDRESS = "NEWSLETTER_POSTAL_ADDRESS is not set"


# --- https ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["https://news.example.org", "http://localhost:8000", "http://127.0.0.1:9000", "http://[::1]"],
)
def test_https_or_this_machine_is_accepted(url: str) -> None:
    check_public_url(load_settings(base_url=url))


def test_an_http_base_url_for_a_public_host_is_refused_unless_allowed() -> None:
    with pytest.raises(ConfigError, match=r"^NEWSLETTER_BASE_URL: http://news.example.org is not"):
        check_public_url(load_settings(base_url="http://news.example.org"))

    check_public_url(load_settings(base_url="http://news.example.org", allow_http=True))


@pytest.mark.slow
def test_serve_with_an_http_base_url_refuses_to_start(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli.ok("db", "upgrade")
    port = free_port()

    refused = cli.run("serve", "--port", str(port), NEWSLETTER_BASE_URL="http://news.example.org")

    assert refused.returncode == 1
    assert refused.stderr.startswith("error: NEWSLETTER_BASE_URL: http://news.example.org is not")
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    # The only thing in the way: allowed explicitly, the same server starts.
    server = cli.start(
        "serve",
        "--port",
        str(port),
        log=tmp_path / "serve.log",
        NEWSLETTER_BASE_URL="http://news.example.org",
        NEWSLETTER_ALLOW_HTTP="1",
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.mark.parametrize(
    "command",
    [("scheduler", "tick"), ("worker",)],
    ids=["scheduler", "worker"],
)
def test_worker_and_scheduler_refuse_an_http_base_url(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    cli = Cli(tmp_path)
    cli.ok("db", "upgrade")

    refused = cli.run(
        *command,
        NEWSLETTER_BASE_URL="http://news.example.org",
        NEWSLETTER_BROKER_URL="redis://127.0.0.1:1/0",  # never reached
    )

    assert refused.returncode == 1
    assert refused.stderr.startswith("error: NEWSLETTER_BASE_URL: http://news.example.org is not")


# --- the postal address ----------------------------------------------------------------


def test_a_campaign_without_a_postal_address_is_refused_at_schedule(session: Session) -> None:
    import_sample(session)
    make_list(session, postal_address="")
    campaign = series_digest(session, ["clinic-news"])

    with pytest.raises(InvalidInputError, match=NO_ADDRESS):
        schedule_campaign(session, campaign.id, utcnow())
    with pytest.raises(InvalidInputError, match=NO_ADDRESS):
        schedule_recurring(session, campaign.id, "0 9 * * MON", "UTC")
    assert campaign.status is CampaignStatus.draft

    schedule_campaign(session, campaign.id, utcnow(), postal_address="1 Main Street, Springfield")
    assert campaign.status is CampaignStatus.scheduled


def test_a_list_of_its_own_brand_brings_its_own_address_and_name(session: Session) -> None:
    import_sample(session)
    make_list(session, postal_address="9 Harbour Lane, Portsmouth")
    campaign = series_digest(session, ["clinic-news"])
    campaign.lists[0].organization = "Harbour Health"
    schedule_campaign(session, campaign.id, utcnow())
    [run_id] = claim_due_campaigns(session, utcnow())

    snapshot = freeze_campaign_run(
        session, session.get_one(Run, run_id), settings_for("sqlite://", postal_address="")
    )

    assert "Harbour Health · 9 Harbour Lane, Portsmouth" in snapshot.html
    assert "Harbour Health, 9 Harbour Lane, Portsmouth" in snapshot.text


def test_a_run_is_not_sent_when_the_postal_address_is_gone(session: Session) -> None:
    import_sample(session)
    make_list(session, postal_address="")
    campaign = series_digest(session, ["clinic-news"])
    schedule_campaign(session, campaign.id, utcnow(), postal_address="1 Main Street")
    [run_id] = claim_due_campaigns(session, utcnow())

    # The setting was removed between scheduling and sending.
    with pytest.raises(InvalidInputError, match=NO_ADDRESS):
        freeze_campaign_run(
            session, session.get_one(Run, run_id), settings_for("sqlite://", postal_address="")
        )


@pytest.mark.slow
def test_campaigns_schedule_without_a_postal_address_is_one_line_naming_the_setting(
    tmp_path: Path,
) -> None:
    cli = Cli(tmp_path)
    cli.ok("db", "upgrade")
    cli.ok("articles", "import", str(Path(__file__).parent.parent / "newsletter/sample/articles"))
    cli.ok("lists", "create", "clinic-news", "--name", "Clinic news")
    cli.ok(
        "campaigns",
        "create",
        "--name",
        "N",
        "--list",
        "clinic-news",
        "--subject",
        "News",
        "--latest",
        "1",
    )

    refused = cli.run("campaigns", "schedule", "1", "--now", NEWSLETTER_POSTAL_ADDRESS="")

    assert refused.returncode == 1
    assert refused.stderr.startswith(f"error: {NO_ADDRESS}")
    assert "`newsletter lists update clinic-news --postal-address '…'`" in refused.stderr
    assert refused.stderr.count("\n") == 1
    cli.ok("lists", "update", "clinic-news", "--postal-address", "1 Main Street\nSpringfield")
    cli.ok("campaigns", "schedule", "1", "--now", NEWSLETTER_POSTAL_ADDRESS="")
    assert "1 Main Street, Springfield" in cli.ok("lists", "list", "--json").stdout


# --- the send path checks what it renders ----------------------------------------------


def test_a_run_whose_footer_template_lost_its_links_fails_and_sends_nothing(
    session: Session, tmp_path: Path
) -> None:
    # A publisher's override of the footer file that drops the opt-out.
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "_footer.html").write_text("<p>{{ sender.organization }}</p>")
    settings = settings_for(
        str(session.get_bind().url.render_as_string(hide_password=False)),
        templates_dir=str(tmp_path),
    )
    import_sample(session)
    make_list(session)
    campaign = series_digest(session, ["clinic-news"])
    schedule_campaign(session, campaign.id, utcnow())
    [run_id] = claim_due_campaigns(session, utcnow())
    session.commit()
    enqueued: list[object] = []

    with pytest.raises(InvalidInputError, match="the HTML has no unsubscribe link"):
        prepare_campaign_run(
            make_sessionmaker(session.get_bind()),  # type: ignore[arg-type]
            run_id,
            settings,
            enqueued.append,
        )

    session.expire_all()
    run = session.get_one(Run, run_id)
    assert run.status is RunStatus.failed and "unsubscribe link" in run.error
    assert enqueued == [] and run.recipients == 0
