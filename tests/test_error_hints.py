"""An error says what is wrong in words every face can show; only the CLI adds the
`newsletter …` command that fixes it. An API client is never told to run one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.cli.hints import with_hint
from newsletter.cli.processes import build_app
from newsletter.errors import InvalidInputError, NotFoundError, Remedy
from tests.api_server import ServerThread, Staff
from tests.factories import import_sample, make_list, series_digest, settings_for
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
    ],
)
def test_the_cli_still_names_the_command_that_fixes_it(
    tmp_path: Path, args: list[str], advice: str
) -> None:
    cli = Cli(tmp_path)
    cli.ok("db", "upgrade")

    assert_clean_error(cli.run(*args), advice)
