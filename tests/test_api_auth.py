"""Who may do what on the staff API: tokens, scopes, sessions, TOTP, rate limits; on a
real uvicorn server and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pyotp
import pytest
from sqlalchemy import update

from newsletter.accounts.models import ApiToken
from newsletter.accounts.roles import Role, check_scopes
from newsletter.accounts.users import get_user, update_user
from newsletter.audience.lists import get_list
from newsletter.cli.processes import build_app
from newsletter.db import utcnow
from newsletter.errors import InvalidInputError
from tests.api_server import PASSWORD, ServerThread, Staff
from tests.factories import import_sample, make_list, settings_for, wrong_totp_code
from tests.processes import ROOT

NEW_LIST = {"slug": "news", "name": "News"}


@pytest.fixture
def staff(pg_url: str) -> Iterator[Staff]:
    settings = settings_for(pg_url, api_rate_limit=40, login_limit_per_account=3)
    with ServerThread(build_app(settings)) as server:
        yield Staff(server.url, settings)


def login(staff: Staff, email: str, password: str = PASSWORD, code: str | None = None) -> dict:
    with staff.client() as http:
        body = {"email": email, "password": password}
        if code is not None:
            body["totp_code"] = code
        response = http.post("/auth/login", json=body)
    return {"status": response.status_code, "body": response.json(), "cookie": response.cookies}


def test_no_token_is_401_with_a_problem_document(staff: Staff) -> None:
    with staff.client() as http:
        response = http.get("/lists")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 401
    assert "Bearer" in response.headers["www-authenticate"]


def test_a_body_that_is_not_json_is_named_as_such(staff: Staff) -> None:
    token = staff.token("ann@clinic.example")
    with staff.client(token) as http:
        response = http.post(
            "/lists", content=b'{"slug": "news",,}', headers={"Content-Type": "application/json"}
        )

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "field": "body",
            "message": "not valid JSON at character 16: "
            "Expecting property name enclosed in double quotes",
        }
    ]


def test_read_scope_gets_403_on_a_write_and_200_on_a_read(staff: Staff) -> None:
    token = staff.token("reader@clinic.example", "campaigns:read", "lists:read")
    with staff.client(token) as http:
        assert http.get("/campaigns").status_code == 200
        refused = http.post(
            "/campaigns",
            json={"name": "x", "lists": ["news"], "subject": "x", "content": {"latest": 1}},
        )
    assert refused.status_code == 403
    assert "campaigns:write" in refused.json()["detail"]


def test_revoked_token_is_401_at_once(staff: Staff) -> None:
    token = staff.token("ann@clinic.example")
    with staff.client(token) as http:
        assert http.get("/lists").status_code == 200
        [mine] = http.get("/tokens").json()["items"]
        assert http.delete(f"/tokens/{mine['id']}").status_code == 200
        assert http.get("/lists").status_code == 401


def test_expired_token_is_401(staff: Staff) -> None:
    token = staff.token("ann@clinic.example")
    with staff.session() as session:
        session.execute(update(ApiToken).values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    with staff.client(token) as http:
        assert http.get("/lists").status_code == 401


def test_unknown_token_is_401(staff: Staff) -> None:
    with staff.client("nl_" + "x" * 43) as http:
        assert http.get("/lists").status_code == 401


def test_disabled_users_session_and_tokens_stop_at_once(staff: Staff) -> None:
    staff.user("bob@clinic.example", "editor")
    token = staff.token("bob@clinic.example")
    logged = login(staff, "bob@clinic.example")
    assert logged["status"] == 200
    cookie = {"Cookie": f"nl_session={logged['cookie']['nl_session']}"}
    with staff.client() as http:
        assert http.get("/lists", headers=cookie).status_code == 200
    with staff.session() as session:
        update_user(session, get_user(session, "bob@clinic.example"), disabled=True)
        session.commit()
    with staff.client() as http:
        assert http.get("/lists", headers=cookie).status_code == 401
    with staff.client(token) as http:
        assert http.get("/lists").status_code == 401
    assert login(staff, "bob@clinic.example")["status"] == 401


def test_logout_ends_the_session(staff: Staff) -> None:
    staff.user("ann@clinic.example")
    logged = login(staff, "ann@clinic.example")
    cookie = {"Cookie": f"nl_session={logged['cookie']['nl_session']}"}
    csrf = {"X-CSRF-Token": logged["body"]["csrf_token"]}
    with staff.client() as http:
        assert http.post("/auth/logout", headers=cookie | csrf).status_code == 204
        assert http.get("/lists", headers=cookie).status_code == 401


def test_login_cookie_is_secure_httponly_lax(staff: Staff) -> None:
    staff.user("ann@clinic.example")
    with staff.client() as http:
        response = http.post(
            "/auth/login", json={"email": "ann@clinic.example", "password": PASSWORD}
        )
    header = response.headers["set-cookie"].lower()
    assert "secure" in header and "httponly" in header and "samesite=lax" in header


def test_session_write_needs_its_csrf_token(staff: Staff) -> None:
    staff.user("ann@clinic.example")
    logged = login(staff, "ann@clinic.example")
    cookie = {"Cookie": f"nl_session={logged['cookie']['nl_session']}"}
    with staff.client() as http:
        forged = http.post("/lists", json=NEW_LIST, headers=cookie)
        assert forged.status_code == 403
        done = http.post(
            "/lists",
            json=NEW_LIST,
            headers=cookie | {"X-CSRF-Token": logged["body"]["csrf_token"]},
        )
        assert done.status_code == 201


def test_unknown_user_and_wrong_password_get_the_same_answer(staff: Staff) -> None:
    staff.user("ann@clinic.example")
    unknown = login(staff, "nobody@clinic.example")
    wrong = login(staff, "ann@clinic.example", "not the password at all")
    assert unknown["status"] == wrong["status"] == 401
    assert unknown["body"]["detail"] == wrong["body"]["detail"]


def test_totp_is_set_up_then_on_only_once_a_first_code_confirms_it(staff: Staff) -> None:
    admin = staff.token("root@clinic.example", "users:write", "users:read")
    ann = staff.user("ann@clinic.example")
    with staff.client(admin) as http:
        setup = http.post(f"/users/{ann.id}/totp").json()
        secret = pyotp.parse_uri(setup["provisioning_uri"]).secret
        assert setup["secret"] == secret
        assert (setup["user"]["totp"], setup["user"]["totp_pending"]) == (False, True)

        wrong = http.post(f"/users/{ann.id}/totp/confirm", json={"code": wrong_totp_code(secret)})
        assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "code"
        assert login(staff, "ann@clinic.example")["status"] == 200  # pending: password only

        right = http.post(f"/users/{ann.id}/totp/confirm", json={"code": pyotp.TOTP(secret).now()})
        assert right.status_code == 200
        assert (right.json()["totp"], right.json()["totp_pending"]) == (True, False)
    without = login(staff, "ann@clinic.example")
    assert without["status"] == 401
    assert without["body"]["errors"][0]["field"] == "totp_code"
    assert login(staff, "ann@clinic.example", code=pyotp.TOTP(secret).now())["status"] == 200


def test_an_admin_removes_a_second_factor_and_the_audit_log_says_who(staff: Staff) -> None:
    admin = staff.token("root@clinic.example", "users:write", "users:read")
    ann = staff.user("ann@clinic.example")
    with staff.client(admin) as http:
        secret = http.post(f"/users/{ann.id}/totp").json()["secret"]
        http.post(f"/users/{ann.id}/totp/confirm", json={"code": pyotp.TOTP(secret).now()})
        assert login(staff, "ann@clinic.example")["status"] == 401

        removed = http.delete(f"/users/{ann.id}/totp")
        entries = http.get("/audit").json()["items"]

    assert removed.status_code == 200 and removed.json()["totp"] is False
    assert login(staff, "ann@clinic.example")["status"] == 200
    totp_entries = [e for e in entries if e["action"].startswith("user.totp")]
    assert [e["action"] for e in totp_entries] == [
        "user.totp.setup",
        "user.totp.on",
        "user.totp.off",
    ]
    assert {e["target"] for e in totp_entries} == {f"user:{ann.id}"}
    assert all(e["actor"].startswith("root@clinic.example (token") for e in totp_entries)


def test_setting_up_a_second_factor_needs_the_users_write_scope(staff: Staff) -> None:
    ann = staff.user("ann@clinic.example", role="editor")
    reader = staff.token("root@clinic.example", "users:read")
    with staff.client(reader) as http:
        answers = [
            http.post(f"/users/{ann.id}/totp").status_code,
            http.post(f"/users/{ann.id}/totp/confirm", json={"code": "123456"}).status_code,
            http.delete(f"/users/{ann.id}/totp").status_code,
        ]
    assert answers == [403, 403, 403]


def test_logins_are_limited_per_account(staff: Staff) -> None:
    staff.user("ann@clinic.example")
    answers = [login(staff, "ann@clinic.example", "wrong password!")["status"] for _ in range(4)]
    assert answers == [401, 401, 401, 429]
    assert login(staff, "ann@clinic.example")["status"] == 429


def test_requests_are_limited_per_token_with_ratelimit_headers(staff: Staff) -> None:
    token = staff.token("ann@clinic.example")
    with staff.client(token) as http:
        first = http.get("/lists")
        assert first.headers["ratelimit-limit"] == "40"
        assert int(first.headers["ratelimit-remaining"]) == 39
        answers = [http.get("/lists").status_code for _ in range(40)]
    assert answers[:39] == [200] * 39
    assert answers[39] == 429
    # another token of the same user has its own budget
    with staff.client(staff.token("ann@clinic.example")) as http:
        assert http.get("/lists").status_code == 200


def test_retry_after_comes_with_429(staff: Staff) -> None:
    token = staff.token("ann@clinic.example")
    with staff.client(token) as http:
        statuses = [http.get("/lists") for _ in range(41)]
    assert statuses[-1].status_code == 429
    assert int(statuses[-1].headers["retry-after"]) >= 1


def test_openapi_and_docs_need_authentication(staff: Staff) -> None:
    with staff.client() as http:
        assert http.get("/openapi.json").status_code == 401
        assert http.get("/docs").status_code == 401
    with staff.client(staff.token("ann@clinic.example", "lists:read")) as http:
        assert http.get("/openapi.json").json()["info"]["title"] == "newsletter staff API"
        docs = http.get("/docs")
    assert docs.status_code == 200
    assert "POST /api/v1/campaigns" in docs.text
    assert "<script" not in docs.text


def test_public_app_serves_no_openapi_document(staff: Staff) -> None:
    assert httpx.get(staff.url + "/openapi.json").status_code == 404
    assert httpx.get(staff.url + "/docs").status_code == 404
    assert httpx.get(staff.url + "/healthz").status_code in (200, 503)


def test_a_demoted_users_token_loses_what_the_new_role_does_not_allow(staff: Staff) -> None:
    staff.user("ann@clinic.example", "admin")
    token = staff.token("ann@clinic.example", "lists:write", "lists:read")
    with staff.session() as session:
        update_user(session, get_user(session, "ann@clinic.example"), role="analyst")
        session.commit()
    with staff.client(token) as http:
        assert http.get("/lists").status_code == 200
        assert http.post("/lists", json=NEW_LIST).status_code == 403


def test_a_token_cannot_have_more_than_its_owners_role() -> None:
    with pytest.raises(InvalidInputError, match="more than the analyst role allows"):
        check_scopes(["campaigns:send"], Role.analyst)
    with pytest.raises(InvalidInputError, match="is not <area>"):
        check_scopes(["everything:write"], Role.admin)


def test_an_editor_cannot_schedule_and_a_sender_cannot_edit(staff: Staff) -> None:
    editor = staff.token("ed@clinic.example", role="editor")
    sender = staff.token("sam@clinic.example", role="sender")
    with staff.client(editor) as http:
        assert http.post("/campaigns/1/schedule", json={"now": True}).status_code == 403
    with staff.client(sender) as http:
        assert http.patch("/campaigns/1", json={"name": "x"}).status_code == 403


def test_a_list_scoped_editor_cannot_use_other_lists(staff: Staff) -> None:
    admin = staff.token("ann@clinic.example")
    with staff.client(admin) as http:
        assert http.post("/lists", json=NEW_LIST).status_code == 201
        assert http.post("/lists", json={"slug": "other", "name": "Other"}).status_code == 201
    with staff.session() as session:
        news_id = get_list(session, "news").id
    staff.user("ed@clinic.example", "editor", list_ids=[news_id])
    with staff.client(staff.token("ed@clinic.example")) as http:
        slugs = [item["slug"] for item in http.get("/lists").json()["items"]]
        assert slugs == ["news"]
        body = {"name": "x", "lists": ["other"], "subject": "x", "content": {"latest": 1}}
        assert http.post("/campaigns", json=body).status_code == 403


def test_the_readmes_token_may_make_the_readmes_three_calls(staff: Staff) -> None:
    """The README's "Staff accounts and the API": the token its first steps create
    (the same scopes) makes each of the curl calls shown below it, as written."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Staff accounts and the API", 1)[1].split("**Roles**", 1)[0]
    scopes = re.findall(r"--scope (\S+)", section)
    with staff.session() as session:
        import_sample(session)
        make_list(session)
        session.commit()
    token = staff.token("admin@clinic.example", *scopes)
    lines = section.replace("\\\n", " ").splitlines()
    calls = [" ".join(line.split()) for line in lines if line.strip().startswith("curl ")]

    answers = []
    with httpx.Client(timeout=60) as http:
        for call in calls:
            found = re.search(r"(http://localhost:8000/api/v1/[^'\s]+)", call)
            assert found, call
            url = found.group(1).replace("http://localhost:8000", staff.url)
            headers = dict(h.split(": ", 1) for h in re.findall(r"-H '([^']+)'", call))
            body = re.search(r"-d '([^']+)'", call)
            response = http.request(
                "POST" if "-X POST" in call else "GET",
                url,
                headers={**headers, "Authorization": f"Bearer {token}"},
                content=body.group(1) if body else None,
            )
            answers.append((url.removeprefix(staff.url), response.status_code, response.text))

    assert len(calls) == 3
    assert [status for _url, status, _text in answers] == [201, 200, 200], answers
