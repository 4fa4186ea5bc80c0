"""The `newsletter` command, run as a user runs it: the console script in a subprocess.

Every test talks to the installed entry point with a clean environment (no NEWSLETTER_*
variables but the ones set here), a SQLite file and an outbox folder of its own, and
checks what a user sees: exit codes, the lines on stdout and stderr, the files written,
and the database through later commands with --json.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from newsletter.db import make_engine
from tests.factories import SAMPLE_ARTICLES, SERIES
from tests.smtp_sink import SmtpSink, free_port

DATA = Path(__file__).resolve().parent / "data"
BLOGS = DATA / "blogs"
AUDIENCE = DATA / "audience"

NEWSLETTER = Path(sys.executable).parent / "newsletter"
REDIS_BROKER = os.environ.get("NEWSLETTER_TEST_REDIS_URL", "redis://127.0.0.1:6379") + "/12"
# Rich sizes its output from these; without them, as under cron, systemd or `docker logs`,
# it assumes 80 columns, which keeps what the tests see the same on every machine.
TERMINAL_VARIABLES = frozenset({"COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE"})

# Line 1 is the header; line 3 has a bad address and line 5 a missing column.
READERS_CSV = """\
email,name,city
ann@example.org,Ann,Berlin
not-an-address,Bob,Paris
cat@example.org,Cat,Oslo
dan@example.org,Dan
eve@example.org,Eve,Rome
"""
CONFIRMED = 3
SAMPLE_SLUGS = [
    "ketamine-infusions",
    "infusion-appointment",
    "continuing-care",
    "tms",
    "after-treatment",
]

pytestmark = pytest.mark.slow


def cli_env(folder: Path) -> dict[str, str]:
    """The caller's environment without NEWSLETTER_* settings, pointed into `folder`."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("NEWSLETTER_") and name not in TERMINAL_VARIABLES
    }
    env.update(
        NEWSLETTER_DATABASE_URL=f"sqlite:///{folder / 'nl.db'}",
        NEWSLETTER_MAIL_URL=f"outbox:{folder / 'outbox'}",
        NEWSLETTER_BASE_URL="https://news.example.org",
        NEWSLETTER_SECRET_KEY="a-test-secret-key-of-32-bytes-or-more",
        NEWSLETTER_POSTAL_ADDRESS="12 River Road, Springfield, IL 62701, USA",
    )
    return env


class Cli:
    """The `newsletter` console script, run in `folder` with its database and outbox."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.env = cli_env(folder)

    @property
    def outbox(self) -> Path:
        return self.folder / "outbox"

    def eml_files(self) -> list[Path]:
        return sorted(self.outbox.glob("*.eml")) if self.outbox.exists() else []

    def run(self, *args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(NEWSLETTER), *map(str, args)],
            cwd=self.folder,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def ok(self, *args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, **env)
        assert result.returncode == 0, f"{args}: {result.stderr}"
        assert "Traceback" not in result.stderr
        return result

    def json(self, *args: str | Path, **env: str) -> Any:
        return json.loads(self.ok(*args, "--json", **env).stdout)

    def start(self, *args: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
        """Start a long-running command with stdout and stderr going to `log`."""
        with log.open("wb") as out:
            return subprocess.Popen(
                [str(NEWSLETTER), *args],
                cwd=self.folder,
                env={**self.env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )


def one_line(text: str) -> str:
    """The text with its whitespace (and Rich's line wrapping) collapsed."""
    return " ".join(text.split())


def assert_clean_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit code 1, one `error:` message containing every fragment, and no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    message = one_line(result.stderr)
    assert message.startswith("error: ")
    assert message.count("error:") == 1
    for fragment in fragments:
        assert fragment in message


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def copy_database(source: Path, target: Path) -> None:
    for file in source.glob("nl.db*"):
        shutil.copy(file, target / file.name)


def parse_eml(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


@dataclass
class Stopped:
    """How a long-running command ended after SIGTERM."""

    returncode: int | None
    seconds_to_stop: float
    log: str


def stop_with_sigterm(process: subprocess.Popen[bytes], log: Path, timeout: float) -> Stopped:
    process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    try:
        returncode: int | None = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        returncode = None
    stopped = Stopped(returncode, time.monotonic() - sent, log.read_text(errors="replace"))
    if returncode is None:
        process.kill()
        process.wait()
    return stopped


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """A folder with no database yet."""
    return Cli(tmp_path)


# --- newsletter demo ------------------------------------------------------------------


@dataclass
class Demo:
    result: subprocess.CompletedProcess[str]
    folder: Path

    def messages(self) -> list[EmailMessage]:
        return [parse_eml(path) for path in sorted((self.folder / "outbox").glob("*.eml"))]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """`newsletter demo --subscribers 40`, run once for the tests that read its output."""
    home = tmp_path_factory.mktemp("demo")
    result = Cli(home).run("demo", "--subscribers", "40", "--dir", home / "d")
    return Demo(result, home / "d")


def test_demo_sends_to_every_generated_subscriber(demo: Demo) -> None:
    assert demo.result.returncode == 0, demo.result.stderr
    assert "Traceback" not in demo.result.stderr
    assert len(list((demo.folder / "outbox").glob("*.eml"))) == 40
    assert (demo.folder / "preview.html").is_file()
    last_line = demo.result.stdout.strip().splitlines()[-1]
    assert "sent 40" in last_line
    assert "failed 0" in last_line


def test_demo_prints_staff_commands_that_run_as_printed(demo: Demo) -> None:
    """The closing lines name the admin and serve commands; `make demo` installs into
    .venv without putting it on the PATH, so they must say how to reach the tool."""
    lines = [line.split("#")[0].split() for line in demo.result.stdout.splitlines()]
    commands = [words for words in lines if "users" in words or words[-1:] == ["serve"]]
    programs = {next(w for w in words if "=" not in w) for words in commands}
    assert len(commands) == 2 and len(programs) == 1, demo.result.stdout
    [program] = programs
    home = demo.folder.parent
    env = cli_env(home)
    assert "/" in program or shutil.which(program, path=env.get("PATH")), program

    started = subprocess.run(
        [program, "users", "--help"],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert started.returncode == 0, started.stderr


def test_demo_messages_have_a_text_part_and_an_inlined_html_part(demo: Demo) -> None:
    messages = demo.messages()
    assert len(messages) == 40
    for message in messages:
        assert message.get_content_type() == "multipart/alternative"
        assert [part.get_content_type() for part in message.iter_parts()] == [
            "text/plain",
            "text/html",
        ]
        html_part = message.get_body(("html",))
        assert html_part is not None
        html = html_part.get_content()
        assert 'style="' in html
        assert "Next:" in html


def test_demo_messages_carry_list_headers_and_unique_ids(demo: Demo) -> None:
    messages = demo.messages()
    required = [
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "List-Id",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    ]
    for message in messages:
        missing = [name for name in required if not message[name]]
        assert not missing, f"{message['To']} lacks {missing}"
    assert len({message["Message-ID"] for message in messages}) == 40
    assert len({message["To"].addresses[0].addr_spec for message in messages}) == 40


# --- the staff workflow on SQLite -----------------------------------------------------


@dataclass
class ClinicSetup:
    """A database after the staff's first steps, and what each step printed."""

    folder: Path
    upgrade: subprocess.CompletedProcess[str]
    articles_import: subprocess.CompletedProcess[str]
    lists_create: subprocess.CompletedProcess[str]
    subscribers_import: subprocess.CompletedProcess[str]
    campaign_id: int


@pytest.fixture(scope="module")
def clinic_setup(tmp_path_factory: pytest.TempPathFactory) -> ClinicSetup:
    """db upgrade, the sample articles, a list of readers and a draft series campaign."""
    folder = tmp_path_factory.mktemp("clinic")
    (folder / "readers.csv").write_text(READERS_CSV, encoding="utf-8")
    staff = Cli(folder)
    upgrade = staff.run("db", "upgrade")
    articles_import = staff.run("articles", "import", SAMPLE_ARTICLES)
    lists_create = staff.run("lists", "create", "clinic-news", "--name", "Clinic news")
    subscribers_import = staff.run("subscribers", "import", "readers.csv", "--list", "clinic-news")
    created = staff.json(
        "campaigns",
        "create",
        "--name",
        "Understanding treatment",
        "--list",
        "clinic-news",
        "--subject",
        "{{ slot('name') }}, new articles",
        "--series",
        SERIES,
    )
    return ClinicSetup(
        folder, upgrade, articles_import, lists_create, subscribers_import, int(created["id"])
    )


@pytest.fixture
def clinic(clinic_setup: ClinicSetup, tmp_path: Path) -> Cli:
    """A copy of the set-up clinic database (and its readers.csv) for this test alone."""
    copy_database(clinic_setup.folder, tmp_path)
    shutil.copy(clinic_setup.folder / "readers.csv", tmp_path / "readers.csv")
    return Cli(tmp_path)


def test_db_upgrade_and_articles_import_report_what_they_did(clinic_setup: ClinicSetup) -> None:
    for step in (clinic_setup.upgrade, clinic_setup.articles_import, clinic_setup.lists_create):
        assert step.returncode == 0, step.stderr
        assert "Traceback" not in step.stderr
    assert "database is up to date" in clinic_setup.upgrade.stdout
    assert (
        "articles: 5 created, 0 updated, 0 unchanged, 0 drafts, 0 skipped, 0 warnings"
        in clinic_setup.articles_import.stdout
    )
    assert "clinic-news created" in clinic_setup.lists_create.stdout


def test_articles_list_json_shows_the_series_in_order(clinic: Cli) -> None:
    articles = clinic.json("articles", "list")
    by_position = sorted(articles, key=lambda article: article["position"])
    assert [article["slug"] for article in by_position] == SAMPLE_SLUGS
    assert {article["series"] for article in articles} == {SERIES}
    assert all(article["published_at"] for article in articles)


def test_articles_reimport_updates_nothing(clinic: Cli) -> None:
    result = clinic.ok("articles", "import", SAMPLE_ARTICLES)
    assert "0 created, 0 updated, 5 unchanged" in result.stdout
    assert len(clinic.json("articles", "list")) == 5


def test_subscribers_import_skips_bad_rows_and_names_them(
    clinic_setup: ClinicSetup, clinic: Cli
) -> None:
    result = clinic_setup.subscribers_import
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert (
        "subscribers (CSV): 3 created, 0 updated, 0 unchanged, 0 pending, 0 unsubscribed, "
        "0 suppressed, 2 skipped" in result.stdout
    )
    skipped = one_line(result.stderr)
    assert "row 3: email 'not-an-address': not an email address" in skipped
    assert "row 5: expected 3 columns, found 2" in skipped
    assert "row 2" not in skipped
    assert clinic.json("lists", "list") == [
        {
            "slug": "clinic-news",
            "name": "Clinic news",
            "opt_in": "double",
            "public": False,
            "archive": "private",
            "organization": "",
            "postal_address": "",
            "confirmed": CONFIRMED,
        }
    ]


def test_subscribers_reimport_creates_nobody(clinic: Cli) -> None:
    report = clinic.json("subscribers", "import", "readers.csv", "--list", "clinic-news")
    assert (report["created"], report["updated"], report["unchanged"]) == (0, 0, CONFIRMED)
    assert [problem["where"] for problem in report["problems"]] == ["row 3", "row 5"]
    assert clinic.json("lists", "list")[0]["confirmed"] == CONFIRMED


def test_campaigns_show_json_describes_the_draft(clinic_setup: ClinicSetup, clinic: Cli) -> None:
    shown = clinic.json("campaigns", "show", str(clinic_setup.campaign_id))
    assert shown["id"] == clinic_setup.campaign_id
    assert shown["status"] == "draft"
    assert shown["lists"] == ["clinic-news"]
    assert shown["content"] == {"kind": "series", "series": SERIES}
    assert shown["articles"] == SAMPLE_SLUGS
    assert shown["runs"] == []


def test_campaigns_preview_writes_inlined_html(clinic_setup: ClinicSetup, clinic: Cli) -> None:
    result = clinic.ok("campaigns", "preview", str(clinic_setup.campaign_id), "--out", "p.html")
    assert "p.html" in result.stdout
    html = (clinic.folder / "p.html").read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith(("<!doctype html", "<html"))
    assert 'style="' in html
    assert "Ketamine infusions" in html
    assert not clinic.eml_files(), "a preview must not send anything"


def test_campaigns_test_sends_one_copy_marked_test(
    clinic_setup: ClinicSetup, clinic: Cli, smtp_sink: SmtpSink
) -> None:
    result = clinic.ok(
        "campaigns",
        "test",
        str(clinic_setup.campaign_id),
        "--to",
        "me@example.org",
        NEWSLETTER_MAIL_URL=smtp_sink.url,
    )
    assert "test sent to me@example.org" in result.stdout
    assert [received.recipient for received in smtp_sink.handler.received] == ["me@example.org"]
    message = smtp_sink.handler.received[0].message
    assert message["Subject"].startswith("[Test]")
    assert message.get_body(("html",)) is not None
    assert clinic.json("campaigns", "show", str(clinic_setup.campaign_id))["runs"] == []


def test_scheduled_campaign_is_sent_once_to_every_confirmed_subscriber(
    clinic_setup: ClinicSetup, clinic: Cli
) -> None:
    campaign = str(clinic_setup.campaign_id)
    scheduled = clinic.ok("campaigns", "schedule", campaign, "--now")
    assert f"campaign {campaign} scheduled for" in scheduled.stdout

    first = clinic.json("scheduler", "tick")

    assert len(first["started_runs"]) == 1
    recipients = sorted(parse_eml(path)["To"].addresses[0].addr_spec for path in clinic.eml_files())
    assert recipients == ["ann@example.org", "cat@example.org", "eve@example.org"]
    shown = clinic.json("campaigns", "show", campaign)
    assert shown["status"] == "finished"
    [run] = shown["runs"]
    assert run["status"] == "finished"
    assert (run["recipients"], run["sent"], run["pending"], run["failed"]) == (
        CONFIRMED,
        CONFIRMED,
        0,
        0,
    )

    second = clinic.json("scheduler", "tick")

    assert second == {
        "started_runs": [],
        "sequence_steps": 0,
        "retried_chunks": 0,
        "finished_runs": [],
    }
    assert len(clinic.eml_files()) == CONFIRMED
    assert clinic.json("campaigns", "show", campaign)["runs"][0]["sent"] == CONFIRMED


# --- errors: one line, exit code 1, never a traceback ---------------------------------


def test_command_before_db_upgrade_asks_for_it(cli: Cli) -> None:
    assert_clean_error(cli.run("lists", "list"), "no schema", "newsletter db upgrade")


def test_malformed_mail_url_is_named(cli: Cli) -> None:
    result = cli.run("lists", "list", NEWSLETTER_MAIL_URL="ftp://x")
    assert_clean_error(result, "NEWSLETTER_MAIL_URL")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        pytest.param(
            ["subscribers", "import", "readers.csv", "--list", "no-such-list"],
            ["no list 'no-such-list'"],
            id="unknown-list",
        ),
        pytest.param(["campaigns", "show", "999"], ["no campaign 999"], id="unknown-campaign"),
        pytest.param(
            [
                "campaigns",
                "create",
                "--name",
                "Both",
                "--list",
                "clinic-news",
                "--subject",
                "Hi",
                "--latest",
                "2",
                "--series",
                SERIES,
            ],
            [
                "exactly one of articles, latest, series, since_last, tag",
                "the options are --articles, --latest, --series, --since-last, --tag",
            ],
            id="latest-and-series",
        ),
        pytest.param(
            ["campaigns", "schedule", "1", "--at", "2026-12-07T09:00", "--tz", "Mars/Olympus"],
            ["time zone", "'Mars/Olympus' is unknown"],
            id="bad-tz",
        ),
        pytest.param(
            ["campaigns", "schedule", "1", "--at", "next tuesday"],
            ["at: 'next tuesday' is not an ISO time", "`--at` takes the time"],
            id="bad-at",
        ),
    ],
)
def test_bad_input_is_one_error_line(clinic: Cli, args: list[str], fragments: list[str]) -> None:
    assert_clean_error(clinic.run(*args), *fragments)


def test_campaigns_show_prints_the_status(clinic_setup: ClinicSetup, clinic: Cli) -> None:
    result = clinic.ok("campaigns", "show", str(clinic_setup.campaign_id))
    assert "draft" in result.stdout


def test_campaign_that_cannot_render_is_refused_when_created(clinic: Cli) -> None:
    result = clinic.run(
        "campaigns",
        "create",
        "--name",
        "Fallbacks",
        "--list",
        "clinic-news",
        "--subject",
        "{{ slot('name', 'Hello') }} and {{ slot('name', 'Hi') }}, new articles",
        "--series",
        SERIES,
    )
    assert_clean_error(result, "two fallbacks")


def test_rejected_schedule_leaves_the_campaign_a_draft(
    clinic_setup: ClinicSetup, clinic: Cli
) -> None:
    clinic.run("campaigns", "schedule", str(clinic_setup.campaign_id), "--at", "next tuesday")
    campaigns = clinic.json("campaigns", "list")
    assert [(c["id"], c["status"]) for c in campaigns] == [(clinic_setup.campaign_id, "draft")]


def test_csv_without_email_column_is_rejected_whole(clinic: Cli) -> None:
    (clinic.folder / "no-email.csv").write_text("name,mail\nAnn,ann@example.org\n")
    result = clinic.run("subscribers", "import", "no-email.csv", "--list", "clinic-news")
    assert_clean_error(result, "no-email.csv", "no 'email' column")
    assert clinic.json("lists", "list")[0]["confirmed"] == CONFIRMED


def test_articles_import_skips_a_file_with_broken_front_matter(cli: Cli) -> None:
    content = cli.folder / "content"
    content.mkdir()
    for path in sorted(SAMPLE_ARTICLES.glob("*.md"))[:2]:
        shutil.copy(path, content / path.name)
    (content / "broken.md").write_text('---\ntitle: "Unclosed\nslug: [oops\n---\nBody.\n')
    cli.ok("db", "upgrade")

    result = cli.run("articles", "import", "content")

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "2 created, 0 updated, 0 unchanged, 0 drafts, 1 skipped, 0 warnings" in result.stdout
    assert "content/broken.md" in result.stderr
    assert "YAML error" in result.stderr
    slugs = {article["slug"] for article in cli.json("articles", "list")}
    assert slugs == {"ketamine-infusions", "infusion-appointment"}


def test_articles_import_of_a_jekyll_blog_tells_drafts_warnings_and_dry_run_apart(
    cli: Cli,
) -> None:
    blog = cli.folder / "blog" / "_posts"
    shutil.copytree(BLOGS / "jekyll-docs", blog)
    shutil.copytree(BLOGS / "ghost-migrate-jekyll", blog, dirs_exist_ok=True)
    cli.ok("db", "upgrade")

    dry = cli.ok("articles", "import", "blog", "--dry-run")

    assert (
        "articles: dry run, nothing written: 15 created, 0 updated, 0 unchanged, 1 draft, "
        "0 skipped, 7 warnings" in dry.stdout
    )
    warnings = dry.stderr.splitlines()
    assert all(line.startswith("warning blog/_posts/") for line in warnings), warnings
    assert "2014-03-27-jekyll-1-5-1-released.markdown:5: unknown field 'version' ignored" in (
        dry.stderr
    )
    assert (
        "import with the old site's address to resolve them; `--site-url` gives the old "
        "site's address" in one_line(dry.stderr)
    )
    assert cli.json("articles", "list") == []

    done = cli.ok("articles", "import", "blog", "--site-url", "https://jekyllrb.com/")
    assert "15 created, 0 updated, 0 unchanged, 1 draft, 0 skipped, 5 warnings" in done.stdout
    assert "--site-url" not in done.stderr
    articles = {article["slug"]: article for article in cli.json("articles", "list")}
    assert articles["published-false"]["published_at"] is None
    assert articles["jekyll-1-5-1-released"]["published_at"].startswith("2014-03-28T02:43:48")


def test_subscribers_import_of_a_mailchimp_export(clinic: Cli) -> None:
    shutil.copy(AUDIENCE / "mailchimp" / "cleaned.csv", clinic.folder / "cleaned.csv")

    dry = clinic.ok("subscribers", "import", "cleaned.csv", "--list", "clinic-news", "--dry-run")
    done = clinic.ok("subscribers", "import", "cleaned.csv", "--list", "clinic-news")

    assert (
        "subscribers (Mailchimp): dry run, nothing written: 0 created, 0 updated, 0 unchanged, "
        "0 pending, 0 unsubscribed, 5 suppressed, 0 skipped" in dry.stdout
    )
    assert "subscribers (Mailchimp): 0 created" in done.stdout
    assert "5 suppressed" in done.stdout
    assert clinic.json("lists", "list")[0]["confirmed"] == CONFIRMED


def test_subscribers_import_maps_columns(clinic: Cli) -> None:
    (clinic.folder / "crm.csv").write_text("Mail,Who\nzed@example.org,Zed\nbad,Bad\n")

    result = clinic.run(
        "subscribers", "import", "crm.csv", "--list", "clinic-news", "--map", "Mail=email,Who=name"
    )

    assert result.returncode == 0, result.stderr
    assert "1 created" in result.stdout
    assert "skipped row 3: Mail 'bad': not an email address" in one_line(result.stderr)
    bad_map = clinic.run("subscribers", "import", "crm.csv", "--list", "clinic-news", "--map", "x")
    assert_clean_error(
        bad_map, "column mapping: 'x' must be 'Column=field'; `--map` takes the mapping"
    )


def test_articles_import_of_only_broken_files_fails(cli: Cli) -> None:
    content = cli.folder / "content"
    content.mkdir()
    (content / "broken.md").write_text('---\ntitle: "Unclosed\n---\nBody.\n')
    cli.ok("db", "upgrade")

    result = cli.run("articles", "import", "content")

    assert "0 created" in result.stdout
    assert result.returncode == 1


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["campaigns", "show", "not-a-number"], id="bad-integer"),
        pytest.param(["campaigns", "show"], id="missing-argument"),
        pytest.param(["lists", "list", "--bogus"], id="unknown-option"),
        pytest.param(["bogus"], id="unknown-command"),
    ],
)
def test_usage_error_is_a_message_not_a_traceback(clinic: Cli, args: list[str]) -> None:
    result = clinic.run(*args)
    assert "Traceback" not in result.stderr
    assert result.returncode == 2


def test_csv_cell_that_looks_like_markup_is_reported_verbatim(clinic: Cli) -> None:
    (clinic.folder / "markup.csv").write_text("email,name\n[/],Bracket\nzoe@example.org,Zoe\n")

    result = clinic.run("subscribers", "import", "markup.csv", "--list", "clinic-news")

    assert "Traceback" not in result.stderr
    assert result.returncode == 0
    assert "row 2: email '[/]': not an email address" in one_line(result.stderr)


def test_long_error_message_stays_on_one_line(cli: Cli) -> None:
    result = cli.run("worker")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1


# --- processes --------------------------------------------------------------------------


def test_worker_refuses_the_in_memory_broker(cli: Cli) -> None:
    assert_clean_error(
        cli.run("worker"),
        "NEWSLETTER_BROKER_URL",
        "in-memory broker",
        "redis://",
        "`newsletter scheduler run`",
    )


@pytest.fixture(scope="module")
def embedded_scheduler(
    clinic_setup: ClinicSetup, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cli, Stopped]]:
    """`scheduler run` on the embedded default with a campaign due: started, then SIGTERM."""
    staff = Cli(tmp_path_factory.mktemp("scheduler"))
    copy_database(clinic_setup.folder, staff.folder)
    staff.ok("campaigns", "schedule", str(clinic_setup.campaign_id), "--now")
    log = staff.folder / "scheduler.log"
    process = staff.start("scheduler", "run", log=log)
    try:
        # Sent mail is the proof that the scheduler ticked and its worker is running.
        wait_for(lambda: len(staff.eml_files()) >= CONFIRMED, 30, "the due campaign")
    finally:
        stopped = stop_with_sigterm(process, log, timeout=15)
    yield staff, stopped


def test_scheduler_run_sends_due_campaigns_and_stops_on_sigterm(
    embedded_scheduler: tuple[Cli, Stopped],
) -> None:
    staff, stopped = embedded_scheduler
    assert stopped.returncode == 0, stopped.log
    assert stopped.seconds_to_stop < 15
    assert "Traceback" not in stopped.log
    assert len(staff.eml_files()) == CONFIRMED


def test_scheduler_run_logs_start_and_stop(embedded_scheduler: tuple[Cli, Stopped]) -> None:
    _staff, stopped = embedded_scheduler
    assert "scheduler started" in stopped.log
    assert "scheduler stopped" in stopped.log


def test_worker_on_redis_stops_cleanly_on_sigterm(cli: Cli) -> None:
    cli.ok("db", "upgrade")
    log = cli.folder / "worker.log"
    process = cli.start("worker", "--concurrency", "1", log=log, NEWSLETTER_BROKER_URL=REDIS_BROKER)
    try:
        wait_for(lambda: " ready." in log.read_text(errors="replace"), 30, "the worker")
    finally:
        stopped = stop_with_sigterm(process, log, timeout=30)

    assert stopped.returncode == 0, stopped.log
    assert stopped.seconds_to_stop < 30
    assert "Traceback" not in stopped.log
    assert "Warm shutdown" in stopped.log


def test_bench_sends_every_message_and_reports_its_figures(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    figures = cli.json("bench", "--subscribers", "300")
    assert (figures["recipients"], figures["sent"], figures["failed"]) == (300, 300, 0)
    for measured in ("messages_per_second", "mime_us", "smtp_us", "worker_cpu_us"):
        assert figures[measured] > 0, measured
    # The sending itself (first to last hand-over) is at least as fast as the whole run.
    assert figures["handover_rate"] >= figures["messages_per_second"]
    # Links are tracked as lists track them by default (anonymously), at a measured cost.
    assert figures["tracking"] == "anonymous" and figures["track_token_us"] > 0
    # Again, as a table: the generated audience is reused, and a new campaign is sent.
    table = one_line(cli.ok("bench", "--subscribers", "300", "--tracking", "off").stdout)
    assert "messages/s end to end" in table and "300 / 0" in table
    assert re.search(r"tracking \(mode, pixel\) *│ *off", table)


def test_bench_through_a_delay_reports_connections_and_the_caveat(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    figures = cli.json(
        "bench", "--subscribers", "200", "--latency-ms", "20", "--smtp-connections", "3"
    )
    assert (figures["sent"], figures["latency_ms"], figures["smtp_connections"]) == (200, 20, 3)
    # The embedded broker runs one worker: its three connections, none refused.
    assert figures["connections_used"] == 3 and figures["refusals_seen"] in (0, None)
    assert figures["per_connection_rate"] > 0
    table = one_line(cli.ok("bench", "--subscribers", "200", "--latency-ms", "20").stdout)
    assert "Caveat: The delay comes from a user-space proxy" in table


# --- processes check what sending needs before they start ------------------------------


def test_worker_with_an_unreadable_dkim_key_stops_at_once_naming_the_variable(
    cli: Cli, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-key.pem"
    started = time.monotonic()
    result = cli.run(
        "worker",
        NEWSLETTER_BROKER_URL=REDIS_BROKER,
        NEWSLETTER_DKIM_SELECTOR="news",
        NEWSLETTER_DKIM_PRIVATE_KEY_PATH=str(missing),
    )
    assert time.monotonic() - started < 30
    assert_clean_error(result, "NEWSLETTER_DKIM_PRIVATE_KEY_PATH", str(missing))
    assert len(result.stderr.strip().splitlines()) == 1


def test_worker_with_a_key_that_is_not_a_key_names_the_variable(cli: Cli, tmp_path: Path) -> None:
    garbage = tmp_path / "key.pem"
    garbage.write_text("not a key\n")
    result = cli.run(
        "worker",
        NEWSLETTER_BROKER_URL=REDIS_BROKER,
        NEWSLETTER_DKIM_SELECTOR="news",
        NEWSLETTER_DKIM_PRIVATE_KEY_PATH=str(garbage),
    )
    assert_clean_error(result, "NEWSLETTER_DKIM_PRIVATE_KEY_PATH", "not an unencrypted PEM")


def test_celery_entry_point_checks_the_same_settings(cli: Cli, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "newsletter.tasks.entry", "worker"],
        cwd=cli.folder,
        env={
            **cli.env,
            "NEWSLETTER_BROKER_URL": REDIS_BROKER,
            "NEWSLETTER_DKIM_SELECTOR": "news",
            "NEWSLETTER_DKIM_PRIVATE_KEY_PATH": str(tmp_path / "missing.pem"),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "NEWSLETTER_DKIM_PRIVATE_KEY_PATH" in result.stderr
    assert "Traceback" not in result.stderr


def test_scheduler_with_an_unusable_journal_folder_stops_naming_the_variable(
    cli: Cli, tmp_path: Path
) -> None:
    cli.ok("db", "upgrade")
    a_file = tmp_path / "file"
    a_file.write_text("")
    result = cli.run("scheduler", "tick", NEWSLETTER_JOURNAL_DIR=str(a_file / "journal"))
    assert_clean_error(result, "NEWSLETTER_JOURNAL_DIR", "cannot keep a delivery journal")


def test_serve_with_a_malformed_unsubscribe_address_stops_naming_the_variable(cli: Cli) -> None:
    cli.ok("db", "upgrade")
    result = cli.run("serve", "--port", "0", NEWSLETTER_LIST_UNSUBSCRIBE_MAILTO="leave?now")
    assert_clean_error(result, "NEWSLETTER_LIST_UNSUBSCRIBE_MAILTO")


@pytest.mark.parametrize(
    "command",
    [["status"], ["worker"], ["scheduler", "run"]],
    ids=["status", "worker", "scheduler run"],
)
def test_L10_an_unreachable_broker_is_one_line(cli: Cli, command: list[str]) -> None:
    cli.ok("db", "upgrade")
    dead = f"redis://:hunter2@127.0.0.1:{free_port()}/0"

    result = cli.run(*command, NEWSLETTER_BROKER_URL=dead)

    assert_clean_error(result, "NEWSLETTER_BROKER_URL", "cannot reach the broker", "refused")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [["serve", "--port", "0"], ["worker"], ["scheduler", "run"], ["scheduler", "tick"]],
    ids=["serve", "worker", "scheduler run", "scheduler tick"],
)
def test_L10_processes_refuse_a_schema_that_is_not_at_the_head(
    cli: Cli, command: list[str]
) -> None:
    cli.ok("db", "upgrade")
    engine = make_engine(cli.env["NEWSLETTER_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0003'"))
    engine.dispose()

    result = cli.run(*command, NEWSLETTER_BROKER_URL=REDIS_BROKER)

    assert_clean_error(result, "schema is at revision 0003", "newsletter db upgrade")


def test_L10_the_celery_entry_point_refuses_an_old_schema(cli: Cli) -> None:
    cli.ok("db", "upgrade")
    engine = make_engine(cli.env["NEWSLETTER_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0003'"))
    engine.dispose()

    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "newsletter.tasks.entry", "worker"],
        cwd=cli.folder,
        env={**cli.env, "NEWSLETTER_BROKER_URL": REDIS_BROKER},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert "error: the database schema is at revision 0003" in result.stderr
    assert "Traceback" not in result.stderr


def test_L10_nonsense_settings_stop_a_command_naming_the_variable(cli: Cli) -> None:
    cli.ok("db", "upgrade")
    for name, value in [
        ("LEASE_SECONDS", "0"),
        ("SIGNUP_LIMIT_PER_IP", "-5"),
        ("CONFIRM_TTL_SECONDS", "-60"),
        ("MAIL_URL", "smtp://relay.example.org?timeout=nan"),
    ]:
        result = cli.run("status", **{f"NEWSLETTER_{name}": value})
        assert_clean_error(result, f"NEWSLETTER_{name}")


def test_the_wheel_installed_into_a_fresh_venv_runs_the_demo(tmp_path: Path) -> None:
    """A non-editable install carries everything the demo needs (templates, sample
    articles, migrations): built as a wheel, installed into a new venv, run elsewhere."""
    import sysconfig

    repo = Path(__file__).resolve().parent.parent
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(repo), "-w"]
    subprocess.run([*build, str(wheels)], check=True, capture_output=True, timeout=300)
    [wheel] = wheels.glob("newsletter-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The project's dependencies come from the test environment (no network needed);
    # the project itself only from the wheel.
    (Path(purelib) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    subprocess.run([*install, "--no-deps", str(wheel)], check=True, capture_output=True)
    where = tmp_path / "elsewhere"
    where.mkdir()
    env = {**cli_env(where), "PYTHONPATH": ""}
    located = subprocess.run(
        [str(python), "-c", "import newsletter; print(newsletter.__file__)"],
        cwd=where,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert located.stdout.startswith(str(venv))

    demo = subprocess.run(
        [str(venv / "bin" / "newsletter"), "demo", "--subscribers", "20"],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert demo.returncode == 0, demo.stderr
    assert "sent 20, failed 0" in demo.stdout
    assert len(list((where / "newsletter-demo" / "outbox").glob("*.eml"))) == 20
