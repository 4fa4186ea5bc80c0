"""The console over real HTTP (uvicorn), without a browser: its headers, CSRF tokens,
role checks, logins and the audit trail of every write. The browser tests
(test_console_browser.py) show the same pages to Chromium."""

from __future__ import annotations

import gettext
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pyotp
import pytest
from lxml import html as lxml_html
from sqlalchemy import select

from newsletter.accounts.models import AuditEntry, User
from newsletter.accounts.passwords import verify_password
from newsletter.accounts.totp import current_code
from newsletter.accounts.users import confirm_totp, create_user, get_user, start_totp
from newsletter.audience.models import MailingList
from newsletter.campaigns.models import Campaign, CampaignStatus
from newsletter.cli.processes import build_app
from newsletter.config import Settings
from newsletter.db import make_engine, make_sessionmaker, utcnow
from tests.api_server import PASSWORD, ServerThread
from tests.factories import (
    add_member,
    import_sample,
    make_list,
    series_digest,
    settings_for,
    wrong_totp_code,
)
from tests.smtp_sink import SmtpSink

CSV = "email,name\nann@example.org,Ann\nbob@example.org,Bob\nnot-an-address,Broken\n"


class Browser:
    """An HTTP client that keeps cookies as a browser does on a secure origin (the
    console's cookies are Secure; the test server speaks plain HTTP on 127.0.0.1)."""

    def __init__(self, url: str) -> None:
        self.jar: dict[str, str] = {}
        self.http = httpx.Client(
            base_url=url,
            timeout=60,
            event_hooks={"request": [self._send], "response": [self._keep]},
        )
        self.page = ""

    def _send(self, request: httpx.Request) -> None:
        if self.jar:
            request.headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())

    def _keep(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if "max-age=0" in header.lower() or value in ('""', ""):
                self.jar.pop(name, None)
            else:
                self.jar[name] = value

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        response = self.http.get(path, **kwargs)
        self.page = response.text
        return response

    @property
    def csrf(self) -> str:
        found = re.search(r'name="csrf" value="([^"]*)"', self.page)
        assert found, "no CSRF field on the last page"
        return found.group(1)

    def post(self, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        """A form post with the CSRF token of the last page read."""
        return self.http.post(path, data={"csrf": self.csrf, **(data or {})}, **kwargs)

    def log_in(self, email: str, code: str = "") -> httpx.Response:
        self.get("/admin/login")
        data = {"email": email, "password": PASSWORD, "code": code}
        response = self.post("/admin/login", data)
        self.get("/admin/account")
        return response


@pytest.fixture
def stack(sqlite_url: str, smtp_sink: SmtpSink) -> Iterator[tuple[str, Settings]]:
    settings = settings_for(
        sqlite_url, mail_url=smtp_sink.url, login_limit_per_account=30, allow_private_urls=True
    )
    engine = make_engine(sqlite_url)
    with make_sessionmaker(engine)() as session:
        for email, role in (
            ("ann@clinic.example", "admin"),
            ("alex@clinic.example", "analyst"),
            ("sam@clinic.example", "sender"),
        ):
            create_user(session, email, role, password=PASSWORD)
        import_sample(session)
        news = make_list(session)
        for i in range(3):
            add_member(session, news, f"reader{i}@example.org", f"Reader {i}")
        series_digest(session, ["clinic-news"], subject="Hello {{ slot('name') }}")
        session.commit()
    engine.dispose()
    with ServerThread(build_app(settings)) as server:
        yield server.url, settings


@pytest.fixture
def admin(stack: tuple[str, Settings]) -> Browser:
    browser = Browser(stack[0])
    assert browser.log_in("ann@clinic.example").status_code == 303
    return browser


def _db(settings: Settings) -> Any:
    return make_sessionmaker(make_engine(settings.database_url))()


# --- headers --------------------------------------------------------------------------------

PAGES = (
    "/admin/",
    "/admin/calendar",
    "/admin/campaigns",
    "/admin/campaigns/1",
    "/admin/campaigns/1/edit",
    "/admin/campaigns/1/preview",
    "/admin/subscribers",
    "/admin/lists",
    "/admin/articles",
    "/admin/series/understanding-treatment",
    "/admin/templates",
    "/admin/users",
    "/admin/audit",
    "/admin/settings",
    "/admin/no-such-page",
    "/admin/campaigns/999",
)


def _script_directive(csp: str) -> str:
    for directive in csp.split(";"):
        name, _, value = directive.strip().partition(" ")
        if name == "script-src":
            return value
    return ""


def test_every_console_page_has_a_strict_csp_and_no_inline_script(admin: Browser) -> None:
    for path in PAGES:
        response = admin.get(path)
        csp = response.headers["content-security-policy"]

        assert _script_directive(csp) == "'self'", path
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, path
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        tree = lxml_html.document_fromstring(response.text)
        assert all(script.get("src") for script in tree.iter("script")), path
        handlers = [
            (el.tag, name) for el in tree.iter() for name in el.attrib if name.startswith("on")
        ]
        assert handlers == [], path
        assert not [el for el in tree.iter() if el.get("style")], f"{path}: style attribute"


def test_error_pages_login_page_and_static_files_carry_the_csp_too(
    stack: tuple[str, Settings],
) -> None:
    browser = Browser(stack[0])
    login = browser.get("/admin/login")
    asset = re.search(r'href="(/admin/static/console\.[0-9a-f]{10}\.css)"', login.text)
    assert asset is not None

    for response in (login, browser.get(asset.group(1)), browser.get("/admin/static/nope.js")):
        assert _script_directive(response.headers["content-security-policy"]) == "'self'"
    static = browser.get(asset.group(1))
    assert static.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert static.headers["content-type"].startswith("text/css")
    assert browser.get("/admin/static/console.css").status_code == 404  # only versioned names


def test_the_email_preview_is_a_sandboxed_document_without_script(admin: Browser) -> None:
    response = admin.get("/admin/campaigns/1/preview.html")

    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "sandbox" in csp and "script-src" not in csp and "default-src 'none'" in csp
    assert "frame-ancestors 'self'" in csp
    assert "Understanding treatment options" in response.text


# --- CSRF -----------------------------------------------------------------------------------


def test_a_form_posted_without_its_csrf_token_gets_403_and_changes_nothing(
    admin: Browser, stack: tuple[str, Settings]
) -> None:
    admin.get("/admin/lists")
    form = {"slug": "new-list", "name": "New list"}

    without = admin.http.post("/admin/lists", data=form)
    forged = admin.http.post("/admin/lists", data={**form, "csrf": "0" * 64})
    other = Browser(stack[0])
    other.log_in("sam@clinic.example")
    someone_elses = admin.http.post("/admin/lists", data={**form, "csrf": other.csrf})

    for refused in (without, forged, someone_elses):
        assert refused.status_code == 403
        assert "security token" in refused.text
    with _db(stack[1]) as session:
        assert session.scalar(select(MailingList).where(MailingList.slug == "new-list")) is None
    assert admin.post("/admin/lists", form).status_code == 303
    with _db(stack[1]) as session:
        assert session.scalar(select(MailingList).where(MailingList.slug == "new-list"))


def test_the_login_form_needs_its_own_token(stack: tuple[str, Settings]) -> None:
    browser = Browser(stack[0])
    browser.get("/admin/login")
    data = {"email": "ann@clinic.example", "password": PASSWORD}

    assert browser.http.post("/admin/login", data=data).status_code == 403
    assert browser.post("/admin/login", data).status_code == 303


# --- roles ----------------------------------------------------------------------------------


def test_each_role_meets_403_where_its_scopes_end(stack: tuple[str, Settings]) -> None:
    analyst = Browser(stack[0])
    analyst.log_in("alex@clinic.example")
    sender = Browser(stack[0])
    sender.log_in("sam@clinic.example")

    assert analyst.get("/admin/campaigns/1").status_code == 200
    assert "schedule-button" not in analyst.page
    analyst.get("/admin/campaigns/1")
    for path, data in (
        ("/admin/campaigns/1/schedule", {"mode": "now"}),
        ("/admin/campaigns/1/test", {"to": "me@example.org"}),
        ("/admin/campaigns/1/cancel", {}),
        ("/admin/lists", {"slug": "x", "name": "X"}),
    ):
        refused = analyst.post(path, data)
        assert refused.status_code == 403, path
        assert "Not allowed" in refused.text and "Traceback" not in refused.text
    assert analyst.get("/admin/users").status_code == 403
    assert sender.get("/admin/users").status_code == 403
    assert sender.get("/admin/audit").status_code == 403
    assert "schedule-button" in sender.get("/admin/campaigns/1").text
    with _db(stack[1]) as session:
        assert session.get_one(Campaign, 1).status is CampaignStatus.draft


def test_a_page_without_a_session_sends_to_login_and_back(stack: tuple[str, Settings]) -> None:
    browser = Browser(stack[0])

    page = browser.get("/admin/campaigns/1")
    fragment = browser.get("/admin/campaigns/1?part=progress", headers={"HX-Request": "true"})

    assert page.status_code == 303
    assert page.headers["location"] == "/admin/login?next=/admin/campaigns/1"
    assert fragment.headers["hx-redirect"].startswith("/admin/login")
    browser.get("/admin/login?next=/admin/campaigns/1")
    done = browser.post(
        "/admin/login",
        {"email": "ann@clinic.example", "password": PASSWORD, "next": "/admin/campaigns/1"},
    )
    assert done.headers["location"] == "/admin/campaigns/1"


def test_login_never_sends_anyone_to_another_site(stack: tuple[str, Settings]) -> None:
    for target in ("https://evil.example/", "//evil.example/admin/", "/admin/\\evil", "/elsewhere"):
        browser = Browser(stack[0])
        browser.get("/admin/login")
        done = browser.post(
            "/admin/login",
            {"email": "ann@clinic.example", "password": PASSWORD, "next": target},
        )
        assert done.headers["location"] == "/admin/", target


def test_a_second_factor_is_set_up_with_a_qr_code_and_on_only_after_its_first_code(
    admin: Browser, stack: tuple[str, Settings]
) -> None:
    admin.get("/admin/account")
    started = admin.post("/admin/account/totp")
    assert started.status_code == 303 and started.headers["location"] == "/admin/account/totp"
    shown = admin.get("/admin/account/totp")

    assert shown.status_code == 200
    qr = re.search(r'<img src="(data:image/svg\+xml[^"]+)"', shown.text)
    assert qr is not None
    assert "img-src 'self' data:" in shown.headers["content-security-policy"]
    secret = re.search(r'class="secret">([A-Z2-7]+)<', shown.text)
    assert secret is not None
    code = pyotp.TOTP(secret.group(1))

    wrong = admin.post("/admin/account/totp/confirm", {"code": wrong_totp_code(secret.group(1))})
    assert wrong.status_code == 422 and "still off" in wrong.text
    assert f'class="secret">{secret.group(1)}<' in wrong.text  # the same one, to try again
    assert Browser(stack[0]).log_in("ann@clinic.example").status_code == 303  # password only
    assert "waits for its first code" in admin.get("/admin/account").text

    right = admin.post("/admin/account/totp/confirm", {"code": code.now()})
    assert right.status_code == 303 and right.headers["location"].startswith("/admin/login")
    assert admin.get("/admin/").status_code == 303  # every session ended
    browser = Browser(stack[0])
    refused = browser.log_in("ann@clinic.example")
    assert refused.status_code == 401 and "one-time code" in refused.text
    accepted = browser.log_in("ann@clinic.example", code.now())
    assert accepted.status_code == 303
    assert "An authenticator is on" in browser.page
    assert {"user.totp.setup", "user.totp.on"} <= _actions(stack[1])


def _switch_on_totp(settings: Settings, email: str) -> str:
    """A second factor on for `email` (as if set up and confirmed); its secret."""
    with _db(settings) as session:
        user = get_user(session, email)
        secret = start_totp(session, user).secret
        confirm_totp(session, user, current_code(secret))
        session.commit()
    return secret


def test_switching_ones_own_second_factor_off_needs_the_password_or_a_code(
    stack: tuple[str, Settings],
) -> None:
    secret = _switch_on_totp(stack[1], "ann@clinic.example")
    ann = Browser(stack[0])
    assert ann.log_in("ann@clinic.example", current_code(secret)).status_code == 303
    assert 'action="/admin/account/totp/off"' in ann.page

    refused = ann.post("/admin/account/totp/off", {"proof": "not my password at all"})
    assert refused.status_code == 422 and "nothing changed" in refused.text
    off = ann.post("/admin/account/totp/off", {"proof": PASSWORD})

    assert off.status_code == 303 and off.headers["location"].startswith("/admin/account")
    assert Browser(stack[0]).log_in("ann@clinic.example").status_code == 303  # password only
    with _db(stack[1]) as session:
        entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "user.totp.off"))
    assert entry is not None and entry.actor == "ann@clinic.example (console)"


def test_an_admin_removes_a_colleagues_second_factor_from_the_users_page(
    admin: Browser, stack: tuple[str, Settings]
) -> None:
    _switch_on_totp(stack[1], "sam@clinic.example")
    with _db(stack[1]) as session:
        sam_id = get_user(session, "sam@clinic.example").id
    sam = Browser(stack[0])
    assert sam.log_in("sam@clinic.example").status_code == 401
    page = admin.get("/admin/users").text
    assert f'action="/admin/users/{sam_id}/totp/off"' in page

    removed = admin.post(f"/admin/users/{sam_id}/totp/off")
    own = admin.post("/admin/users/1/totp/off")

    assert removed.status_code == 303 and "sam%40clinic.example" in removed.headers["location"]
    assert own.status_code == 422  # one's own: under the account, with a password
    assert sam.log_in("sam@clinic.example").status_code == 303
    sam.get("/admin/account")
    assert sam.post(f"/admin/users/{sam_id}/totp/off").status_code == 403  # a sender
    with _db(stack[1]) as session:
        entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "user.totp.off"))
    assert entry is not None and entry.target == f"user:{sam_id}"
    assert entry.actor == "ann@clinic.example (console)"


def test_changing_ones_password_ends_the_session(
    admin: Browser, stack: tuple[str, Settings]
) -> None:
    admin.get("/admin/account")
    new = "a brand new passphrase"

    wrong = admin.post("/admin/account/password", {"current": "nope", "new": new, "repeat": new})
    changed = admin.post(
        "/admin/account/password", {"current": PASSWORD, "new": new, "repeat": new}
    )

    assert wrong.status_code == 422 and "current password" in wrong.text
    assert changed.status_code == 303 and admin.get("/admin/").status_code == 303
    with _db(stack[1]) as session:
        user = session.scalar(select(User).where(User.email == "ann@clinic.example"))
        assert user is not None and user.password_hash


# --- the audit trail ------------------------------------------------------------------------


def _actions(settings: Settings) -> set[str]:
    with _db(settings) as session:
        return set(session.scalars(select(AuditEntry.action)))


def test_every_console_write_lands_in_the_audit_log(
    admin: Browser, stack: tuple[str, Settings], smtp_sink: SmtpSink
) -> None:
    settings = stack[1]
    admin.get("/admin/lists")
    admin.post("/admin/lists", {"slug": "more-news", "name": "More news"})
    admin.get("/admin/imports/new")
    dry = admin.post(
        "/admin/imports/dry-run",
        {"list": "more-news"},
        files={"file": ("people.csv", CSV.encode(), "text/csv")},
    )
    job = dry.headers["location"].rsplit("/", 1)[1]
    admin.get(f"/admin/imports/{job}")
    admin.post(f"/admin/imports/{job}/run")
    admin.get("/admin/campaigns/new")
    made = admin.post(
        "/admin/campaigns/new",
        {"name": "Two", "lists": "clinic-news", "subject": "Hi", "kind": "latest", "latest": "2"},
    )
    two = made.headers["location"].split("/")[3]
    admin.get(f"/admin/campaigns/{two}/edit")
    admin.post(
        f"/admin/campaigns/{two}/edit",
        {
            "name": "Two",
            "lists": "clinic-news",
            "subject": "Hi again",
            "kind": "latest",
            "latest": "3",
        },
    )
    admin.get(f"/admin/campaigns/{two}")
    admin.post(f"/admin/campaigns/{two}/test", {"to": "me@example.org"})
    at = (utcnow() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    admin.post(f"/admin/campaigns/{two}/schedule", {"mode": "at", "at": at, "timezone": "UTC"})
    for change in ("pause", "resume", "cancel"):
        admin.get(f"/admin/campaigns/{two}")
        assert admin.post(f"/admin/campaigns/{two}/{change}").status_code == 303
    admin.get("/admin/series/understanding-treatment")
    admin.post(
        "/admin/series/understanding-treatment/move",
        {"article": "infusion-appointment", "offset": "-1"},
    )
    admin.get("/admin/articles/tms")
    admin.post(
        "/admin/articles/tms/edit",
        {"title": "TMS, plainly", "published": "2026-09-28T09:00", "tags": "tms, basics"},
    )
    admin.get("/admin/articles")
    admin.post("/admin/feeds", {"url": "https://blog.example.org/feed.xml", "every": "2h"})
    admin.post("/admin/feeds/1/poll")
    admin.get("/admin/sequences")
    admin.post(
        "/admin/sequences",
        {"series": "understanding-treatment", "list": "clinic-news", "every": "7d"},
    )
    admin.post("/admin/sequences/1/pause", {"paused": "yes"})
    admin.get("/admin/templates/new")
    template = open_template()
    admin.post("/admin/templates/save", {"name": "plain", **template})
    admin.post("/admin/templates/save", {"name": "plain", **template, "subject": "Changed"})
    admin.post("/admin/templates/plain/restore", {"version": "1"})
    admin.get("/admin/users")
    admin.post("/admin/users", {"email": "new@clinic.example", "role": "editor"})
    with _db(settings) as session:
        new_id = session.scalar(select(User.id).where(User.email == "new@clinic.example"))
    admin.post(f"/admin/users/{new_id}", {"role": "sender"})
    admin.post(f"/admin/users/{new_id}", {"disabled": "yes"})
    admin.get("/admin/tokens")
    created = admin.post("/admin/tokens", {"name": "ci", "scopes": "lists:read", "expires": "1d"})
    assert "shown only once" in created.text
    token_id = re.search(r"/admin/tokens/(\d+)/revoke", created.text)
    assert token_id is not None
    admin.post(f"/admin/tokens/{token_id.group(1)}/revoke")
    admin.get("/admin/subscribers/1")
    admin.post("/admin/subscribers/1/edit", {"name": "Reader Zero", "timezone": "Europe/Berlin"})
    admin.post("/admin/subscribers/1/unsubscribe", {"list": "clinic-news"})
    exported = admin.post("/admin/subscribers/1/export")
    assert exported.json()["email"] == "reader0@example.org"
    admin.post("/admin/subscribers/2/forget", {"confirm": "reader1@example.org"})
    admin.post("/admin/logout")

    found = _actions(settings)
    expected = {
        "session.login", "list.create", "subscribers.import_dry_run", "subscribers.import",
        "campaign.create", "campaign.update", "campaign.test_send", "campaign.schedule",
        "campaign.pause", "campaign.resume", "campaign.cancel", "series.reorder",
        "article.update", "feed.add", "feed.poll_now", "sequence.create", "sequence.pause",
        "template.save", "user.create", "user.role", "user.disable", "token.create", "token.revoke",
        "subscriber.update", "subscriber.unsubscribe",
        "subscriber.export_data", "subscriber.forget", "session.logout",
    }  # fmt: skip
    assert expected - found == set()
    with _db(settings) as session:
        entries = list(session.scalars(select(AuditEntry).where(AuditEntry.via == "session")))
    assert {e.actor for e in entries if e.action != "session.login"} == {
        "ann@clinic.example (console)"
    }
    assert all(e.ip == "127.0.0.1" for e in entries)
    assert not any("reader1@example.org" in str(e.detail) for e in entries)  # forgotten


def open_template() -> dict[str, str]:
    return {
        "subject": "",
        "html": "<p>Hello {{ slot('name', 'there') }},</p>{% for a in articles %}"
        '<p><a href="{{ a.url }}">{{ a.title }}</a></p>{% endfor %}<div>{{ footer }}</div>',
        "text": "{% for a in articles %}* {{ a.title }}\n{% endfor %}{{ footer }}",
    }


def test_form_errors_name_the_field_not_a_command_line_option(admin: Browser) -> None:
    admin.get("/admin/campaigns/new")
    draft = {"name": " ", "lists": "clinic-news", "subject": "Hello", "kind": "latest"}
    no_name = admin.post("/admin/campaigns/new", {**draft, "latest": "3"})
    no_list = admin.post("/admin/campaigns/new", {**draft, "name": "Weekly", "lists": []})
    admin.get("/admin/tokens")
    no_scope = admin.post("/admin/tokens", {"name": "script", "expires": "90d"})

    def error(response: httpx.Response) -> str:
        tree = lxml_html.document_fromstring(response.text)
        return " ".join(tree.xpath("//*[contains(@class, 'error')]//text()")).strip()

    no_series = admin.post("/admin/campaigns/new", {**draft, "name": "S", "kind": "series"})
    no_tag = admin.post("/admin/campaigns/new", {**draft, "name": "T", "kind": "tag", "tag": " "})
    bad_date = admin.post("/admin/campaigns/new", {**draft, "name": "P", "planned": "soon"})
    admin.get("/admin/campaigns/1")
    bad_test = admin.post("/admin/campaigns/1/test", {"to": "ann@example.org, bob(at)example.org"})

    assert (no_name.status_code, error(no_name)) == (422, "name: must not be empty")
    assert [error(r) for r in (no_series, no_tag, bad_date)] == [
        "Series: choose the series to send.",
        "Tag: give the tag of the articles to send.",
        "Planned for: give a date and time such as 2026-12-07T09:00.",
    ]
    assert bad_test.status_code == 422
    assert error(bad_test) == "To: “bob(at)example.org”: not an email address."
    assert (no_list.status_code, error(no_list)) == (422, "lists: choose at least one list")
    assert no_scope.status_code == 422
    assert error(no_scope) == "scopes: a token needs at least one, e.g. campaigns:read"


def test_scheduling_at_a_time_gone_by_warns_that_it_goes_at_once(admin: Browser) -> None:
    admin.get("/admin/campaigns/1/schedule")
    when = {"mode": "at", "timezone": "Europe/Berlin", "cron": ""}
    past = admin.post("/admin/campaigns/1/schedule/confirm", {**when, "at": "2020-01-06T09:00"})
    future = admin.post("/admin/campaigns/1/schedule/confirm", {**when, "at": "2099-01-06T09:00"})

    assert past.status_code == future.status_code == 200
    assert 'id="schedule-past"' in past.text and "sent at once" in past.text
    assert 'id="schedule-past"' not in future.text


def test_the_schedule_confirmation_says_when_it_would_go_not_that_it_is_scheduled(
    admin: Browser, stack: tuple[str, Settings]
) -> None:
    admin.get("/admin/campaigns/1/schedule")
    berlin = {"timezone": "Europe/Berlin", "cron": "", "at": "2099-01-06T09:00"}
    asked = {
        "at": {**berlin, "mode": "at"},
        "local": {**berlin, "mode": "local"},
        "cron": {**berlin, "mode": "cron", "at": "", "cron": "0 9 * * MON"},
        "now": {"mode": "now"},
    }

    said = {}
    for mode, form in asked.items():
        page = admin.post("/admin/campaigns/1/schedule/confirm", form)
        tree = lxml_html.document_fromstring(page.text)
        said[mode] = tree.xpath("string(//*[@id='schedule-when'])")

    assert said["at"] == "It will be sent at 2099-01-06 08:00 UTC (09:00 in Europe/Berlin)."
    assert said["local"] == "It will be sent at 09:00 on 2099-01-06 in each reader's own time zone."
    assert said["cron"].startswith("It will be sent every time “0 9 * * MON” falls due in ")
    assert said["now"] == "It will be sent at once, when you confirm."
    assert not any("scheduled" in sentence for sentence in said.values())
    with _db(stack[1]) as session:
        assert session.get_one(Campaign, 1).status is CampaignStatus.draft


def _error_and_link(response: httpx.Response) -> tuple[str, list[str]]:
    tree = lxml_html.document_fromstring(response.text)
    return tree.xpath("string(//p[@class='error'])"), tree.xpath("//main//a/@href")


def test_a_missing_list_or_template_leads_to_its_console_page_not_a_command(
    admin: Browser,
) -> None:
    pages = {
        "/admin/templates/weekly": "/admin/templates",
        "/admin/templates/weekly/diff/2": "/admin/templates",
        "/admin/subscribers?list=weekly": "/admin/lists",
    }
    for path, leads_to in pages.items():
        response = admin.get(path)
        message, links = _error_and_link(response)

        assert response.status_code == 404, path
        assert "“weekly”" in message and "newsletter " not in message and "`" not in message
        assert leads_to in links, path


def test_scheduling_without_a_postal_address_says_who_sets_it_not_a_command(
    sqlite_url: str,
) -> None:
    from newsletter.audience.lists import create_list

    settings = settings_for(sqlite_url, postal_address="")
    with make_sessionmaker(make_engine(sqlite_url))() as session:
        create_user(session, "sam@clinic.example", "sender", password=PASSWORD)
        import_sample(session)
        create_list(session, "walk-in", "Walk-in clinic")  # no postal address of its own
        series_digest(session, ["walk-in"])
        session.commit()
    with ServerThread(build_app(settings)) as server:
        sender = Browser(server.url)
        sender.log_in("sam@clinic.example")
        sender.get("/admin/campaigns/1/schedule")
        review = sender.post("/admin/campaigns/1/schedule/confirm", {"mode": "now"})
        scheduled = sender.post("/admin/campaigns/1/schedule", {"mode": "now"})

    for response in (review, scheduled):
        message, _links = _error_and_link(response)
        assert response.status_code == 422
        assert "“Walk-in clinic”" in message and "NEWSLETTER_POSTAL_ADDRESS" in message
        assert "newsletter " not in message and "`" not in message


def test_every_role_finds_its_api_tokens_in_the_navigation(stack: tuple[str, Settings]) -> None:
    for email in ("ann@clinic.example", "alex@clinic.example", "sam@clinic.example"):
        browser = Browser(stack[0])
        browser.log_in(email)
        home = lxml_html.document_fromstring(browser.get("/admin/").text)
        tokens = lxml_html.document_fromstring(browser.get("/admin/tokens").text)

        assert home.xpath("//nav//a[@href='/admin/tokens']/text()") == ["API tokens"], email
        assert tokens.xpath("//nav//a[@aria-current='page']/@href") == ["/admin/tokens"], email


def test_an_unsafe_template_is_refused_with_its_line_shown(admin: Browser) -> None:
    admin.get("/admin/templates/new")
    html = "<html><body>\n<p>ok</p>\n{{ a.__class__ }}\n{{ footer }}</body></html>"

    refused = admin.post("/admin/templates/save", {"name": "bad", "subject": "x", "html": html})

    assert refused.status_code == 422
    assert "line 3" in refused.text
    assert "<mark>   3 │ {{ a.__class__ }}</mark>" in refused.text.replace("&#39;", "'")


def test_the_console_is_on_the_staff_side_only(sqlite_url: str) -> None:
    from newsletter.cli.processes import Only

    settings = settings_for(sqlite_url)
    with ServerThread(build_app(settings, Only.public)) as public:
        assert httpx.get(public.url + "/admin/login").status_code == 404
    with ServerThread(build_app(settings, Only.staff)) as staff:
        assert httpx.get(staff.url + "/admin/login").status_code == 200
        assert httpx.get(staff.url + "/api/v1/lists").status_code == 401
        assert httpx.get(staff.url + "/healthz").status_code == 404


def test_logins_are_limited_per_account_with_a_clear_page(sqlite_url: str) -> None:
    settings = settings_for(sqlite_url, login_limit_per_account=2)
    with make_sessionmaker(make_engine(sqlite_url))() as session:
        create_user(session, "ann@clinic.example", "admin", password=PASSWORD)
        session.commit()
    with ServerThread(build_app(settings)) as server:
        browser = Browser(server.url)
        browser.get("/admin/login")
        wrong = {"email": "ann@clinic.example", "password": "not the password at all"}
        answers = [browser.post("/admin/login", wrong).status_code for _ in range(2)]
        limited = browser.post("/admin/login", {**wrong, "password": PASSWORD})

    assert answers == [401, 401]
    assert limited.status_code == 429 and "Too many attempts" in limited.text
    assert "nl_session" not in browser.jar


def test_changing_ones_password_counts_against_the_login_limits(sqlite_url: str) -> None:
    # A stolen session must not guess the password it would need to take the account.
    settings = settings_for(sqlite_url, login_limit_per_account=2)
    with make_sessionmaker(make_engine(sqlite_url))() as session:
        create_user(session, "ann@clinic.example", "admin", password=PASSWORD)
        session.commit()
    new = "a brand new passphrase"
    with ServerThread(build_app(settings)) as server:
        browser = Browser(server.url)
        assert browser.log_in("ann@clinic.example").status_code == 303  # (one attempt)
        browser.get("/admin/account")
        wrong = {"current": "a guess", "new": new, "repeat": new}
        first = browser.post("/admin/account/password", wrong)
        limited = browser.post("/admin/account/password", {**wrong, "current": PASSWORD})

    assert first.status_code == 422
    assert limited.status_code == 429 and "Too many attempts" in limited.text
    with make_sessionmaker(make_engine(sqlite_url))() as session:
        assert verify_password(get_user(session, "ann@clinic.example").password_hash, PASSWORD)


class Pseudo(gettext.NullTranslations):
    """A catalogue that marks every string it translates."""

    def gettext(self, message: str) -> str:
        return f"⟦{message}⟧"

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return f"⟦{singular if n == 1 else plural}⟧"


def test_every_word_of_a_page_goes_through_the_one_translation_function(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from newsletter.admin import i18n

    monkeypatch.setattr(i18n, "_translations", Pseudo())
    with ServerThread(build_app(settings_for(sqlite_url))) as server:
        page = httpx.get(server.url + "/admin/login")
        missing = httpx.get(server.url + "/admin/static/nope.css")

    tree = lxml_html.document_fromstring(page.text)
    texts = [t.strip() for t in tree.xpath("//body//text()") if t.strip()]
    untranslated = [t for t in texts if "⟦" not in t]
    assert texts and untranslated == []
    assert tree.findtext(".//title") == "⟦Log in⟧ · ⟦Newsletter console⟧"
    assert missing.text == "⟦No such file.⟧"


def test_statuses_and_roles_are_shown_through_the_translation_function(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from newsletter.admin import i18n

    monkeypatch.setattr(i18n, "_translations", Pseudo())
    engine = make_engine(sqlite_url)
    with make_sessionmaker(engine)() as session:
        create_user(session, "ann@clinic.example", "admin", password=PASSWORD)
        import_sample(session)
        make_list(session)
        series_digest(session, ["clinic-news"])
        session.commit()
    engine.dispose()
    shown: dict[str, list[str]] = {}
    with ServerThread(build_app(settings_for(sqlite_url))) as server:
        admin = Browser(server.url)
        admin.log_in("ann@clinic.example")
        for path in ("/admin/campaigns", "/admin/campaigns/1", "/admin/users"):
            tree = lxml_html.document_fromstring(admin.get(path).text)
            words = tree.cssselect(".status, .role, td, .filters a, option")
            shown[path] = [e.text_content() for e in words]

    assert "⟦draft⟧" in shown["/admin/campaigns/1"] and "⟦admin⟧" in shown["/admin/users"]
    assert "⟦scheduled⟧" in " ".join(shown["/admin/campaigns"])
    badges = [text for texts in shown.values() for text in texts if text in i18n.WORDS]
    assert badges == []
