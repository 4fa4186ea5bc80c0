"""An error says what is wrong in words every face can show; only the CLI adds the
`newsletter …` command that fixes it. An API client is never told to run one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.cli.hints import with_hint
from newsletter.cli.processes import build_app
from newsletter.errors import InvalidInputError, NotFoundError, Problem, Remedy
from tests.api_server import ServerThread, Staff
from tests.factories import SERIES, import_sample, make_list, series_digest, settings_for
from tests.test_cli import Cli, assert_clean_error


@pytest.fixture
def staff(pg_url: str) -> Iterator[Staff]:
    settings = settings_for(pg_url, postal_address="")
    with ServerThread(build_app(settings)) as server:
        yield Staff(server.url, settings)


def test_the_cli_adds_the_command_of_a_remedy_it_knows() -> None:
    missing = NotFoundError("no list 'weekly'", remedy=Remedy("create", "list", "weekly"))

    assert with_hint(missing) == (
        "no list 'weekly'; create it with `newsletter lists create weekly --name …`"
    )


def test_the_cli_prints_the_message_alone_without_a_remedy_it_knows() -> None:
    assert with_hint(NotFoundError("no campaign 9")) == "no campaign 9"
    unknown = InvalidInputError("no", remedy=Remedy("paint", "list", "weekly"))
    assert with_hint(unknown) == "no"


def test_the_cli_names_the_option_of_a_field_in_an_error_and_a_warning() -> None:
    bad_at = InvalidInputError(
        "at: 'soon' is not an ISO time like 2026-12-01T09:00",
        remedy=Remedy("give", "campaign schedule", field="at"),
    )
    relative = Problem(
        "post.md", "links point into the old site", Remedy("give", "article import", "", "site_url")
    )

    assert with_hint(bad_at).endswith("2026-12-01T09:00; `--at` takes the time, read in `--tz`")
    assert with_hint(relative) == (
        "post.md: links point into the old site; `--site-url` gives the old site's address"
    )


def test_an_api_client_is_told_what_is_missing_and_no_command(staff: Staff) -> None:
    with staff.client(staff.token("ann@clinic.example")) as http:
        no_list = http.get("/lists/weekly")
        no_template = http.get("/templates/weekly")

    assert (no_list.status_code, no_list.json()["detail"]) == (404, "no list 'weekly'")
    assert (no_template.status_code, no_template.json()["detail"]) == (
        404,
        "no template 'weekly'",
    )


def test_an_api_client_scheduling_without_a_postal_address_is_told_what_to_set(
    staff: Staff,
) -> None:
    with staff.session() as session:
        import_sample(session)
        make_list(session, postal_address="")
        campaign_id = series_digest(session, ["clinic-news"]).id
        session.commit()

    with staff.client(staff.token("ann@clinic.example")) as http:
        refused = http.post(f"/campaigns/{campaign_id}/schedule", json={"now": True})

    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert detail.startswith("NEWSLETTER_POSTAL_ADDRESS is not set")
    assert detail.endswith("Set it, or give list 'clinic-news' a postal address")
    assert "newsletter " not in detail and "--" not in detail


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        pytest.param(
            {"now": True, "cron": "0 9 * * 1"}, "cron and now do not go together", id="cron-now"
        ),
        pytest.param(
            {},
            "give exactly one of a time to send at, now, or a cron expression",
            id="no-time",
        ),
        pytest.param(
            {"at": "next tuesday"},
            "at: 'next tuesday' is not an ISO time like 2026-12-01T09:00",
            id="bad-at",
        ),
    ],
)
def test_an_api_client_scheduling_is_told_the_field_and_no_flag(
    staff: Staff, body: dict[str, object], detail: str
) -> None:
    with staff.session() as session:
        import_sample(session)
        make_list(session)
        campaign_id = series_digest(session, ["clinic-news"]).id
        session.commit()

    with staff.client(staff.token("ann@clinic.example")) as http:
        refused = http.post(f"/campaigns/{campaign_id}/schedule", json=body)

    assert (refused.status_code, refused.json()["detail"]) == (422, detail)


def test_api_clients_of_series_sequences_and_imports_are_told_no_flag(staff: Staff) -> None:
    with staff.session() as session:
        import_sample(session)
        make_list(session)
        session.commit()
    relative = "---\ntitle: Old\n---\nSee [the clinic](/about/).\n"

    with staff.client(staff.token("ann@clinic.example")) as http:
        article = http.get("/articles").json()["items"][0]["slug"]
        far = http.post(f"/series/{SERIES}/articles", json={"article": article, "at": 99})
        untimed = http.post("/sequences", json={"series": SERIES, "list": "clinic-news"})
        no_email = http.post(
            "/imports",
            data={"list": "clinic-news"},
            files={"file": ("crm.csv", b"mail,name\nann@example.org,Ann\n", "text/csv")},
        )
        imported = http.post(
            "/articles/markdown", json={"documents": [{"name": "old.md", "text": relative}]}
        )

    assert far.status_code == 422
    assert far.json()["detail"].startswith("at: must be between 1 and ")
    assert (untimed.status_code, untimed.json()["detail"]) == (
        422,
        "give exactly one of every (a period) or cron (an expression)",
    )
    assert (no_email.status_code, no_email.json()["detail"]) == (
        422,
        "crm.csv: no 'email' column in the header row (found: 'mail', 'name'); "
        "call the column of addresses 'email'",
    )
    [warning] = imported.json()["warnings"]
    assert warning["reason"].endswith("import with the old site's address to resolve them")
    for detail in (far.text, untimed.text, no_email.text, imported.text):
        assert "--" not in detail and "newsletter " not in detail


@pytest.mark.parametrize(
    ("args", "advice"),
    [
        pytest.param(
            ["lists", "update", "weekly", "--name", "Weekly"],
            "no list 'weekly'; create it with `newsletter lists create weekly --name …`",
            id="list",
        ),
        pytest.param(
            ["templates", "show", "weekly"],
            "no template 'weekly'; save one with `newsletter templates save weekly …`",
            id="template",
        ),
        pytest.param(
            ["tokens", "revoke", "nl_nothing"],
            "no single token 'nl_nothing'; give its id; `newsletter tokens list` shows the ids",
            id="token",
        ),
        pytest.param(
            ["sequences", "create", "--series", "s", "--list", "l"],
            "give exactly one of every (a period) or cron (an expression); "
            "give `--every PERIOD` or `--cron EXPR`",
            id="sequence-timing",
        ),
    ],
)
def test_the_cli_still_names_the_command_that_fixes_it(
    tmp_path: Path, args: list[str], advice: str
) -> None:
    cli = Cli(tmp_path)
    cli.ok("db", "upgrade")

    assert_clean_error(cli.run(*args), advice)
