"""Settings from NEWSLETTER_* variables: defaults, rewriting, and one-line errors."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from newsletter.config import (
    EMBEDDED_BROKER,
    INSECURE_DEV_KEY,
    OutboxTarget,
    SmtpTarget,
    load_settings,
    parse_mail_url,
    parse_mail_urls,
)
from newsletter.errors import ConfigError, NewsletterError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No NEWSLETTER_* variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.upper().startswith("NEWSLETTER_"):
            monkeypatch.delenv(name)


def test_defaults_run_locally_without_any_variable() -> None:
    settings = load_settings()

    assert settings.database_url == "sqlite:///newsletter.db"
    assert settings.broker_url == EMBEDDED_BROKER
    assert settings.embedded_broker
    assert settings.mail_target == OutboxTarget(Path("outbox"))
    assert settings.base_url == "http://localhost:8000"
    assert settings.secret_key == INSECURE_DEV_KEY
    assert settings.from_address == "Riverside Clinic <newsletter@clinic.example>"
    assert settings.sender_domain == "clinic.example"
    assert settings.list_id_domain == "clinic.example"
    assert settings.chunk_size == 2000


def test_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", "sqlite:////var/lib/newsletter.db")
    monkeypatch.setenv("NEWSLETTER_BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("NEWSLETTER_MAIL_URL", "smtp://mail.example.org:2525")
    monkeypatch.setenv("NEWSLETTER_BASE_URL", "https://news.example.org/")
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "s3cret")
    monkeypatch.setenv("NEWSLETTER_FROM_ADDRESS", "Clinic News <News@Clinic.Example>")
    monkeypatch.setenv("NEWSLETTER_LIST_DOMAIN", "lists.clinic.example")
    monkeypatch.setenv("NEWSLETTER_CHUNK_SIZE", "250")

    settings = load_settings()

    assert settings.database_url == "sqlite:////var/lib/newsletter.db"
    assert settings.broker_url == "redis://redis:6379/0"
    assert not settings.embedded_broker
    assert settings.mail_target == SmtpTarget(host="mail.example.org", port=2525)
    assert settings.base_url == "https://news.example.org"  # trailing slash dropped
    assert settings.secret_key == "s3cret"
    assert settings.sender_domain == "clinic.example"
    assert settings.list_id_domain == "lists.clinic.example"
    assert settings.chunk_size == 250


def test_keyword_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_CHUNK_SIZE", "250")

    assert load_settings(chunk_size=7).chunk_size == 7


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://news:pw@db:5432/news", "postgresql+psycopg://news:pw@db:5432/news"),
        ("postgres://news@db/news", "postgresql+psycopg://news@db/news"),
        ("postgresql+psycopg://news@db/news", "postgresql+psycopg://news@db/news"),
        ("sqlite:///newsletter.db", "sqlite:///newsletter.db"),
    ],
)
def test_postgresql_urls_use_the_psycopg_driver(
    monkeypatch: pytest.MonkeyPatch, given: str, expected: str
) -> None:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", given)

    assert load_settings().database_url == expected


BAD_VALUES = [
    ("DATABASE_URL", "newsletter.db"),
    ("DATABASE_URL", ""),
    ("BROKER_URL", "redis"),
    ("BROKER_URL", "localhost:6379"),
    ("MAIL_URL", "mail.example.org"),
    ("MAIL_URL", "http://mail.example.org"),
    ("MAIL_URL", "smtp://"),
    ("MAIL_URL", "smtp:/mail.example.org"),
    ("MAIL_URL", "outbox:"),
    ("MAIL_URL", "smtp://mail.example.org:99999"),
    ("MAIL_URL", "smtp://mail.example.org:65536"),
    ("MAIL_URL", "smtp://mail.example.org:0"),
    ("MAIL_URL", "smtps://mail.example.org:0"),
    ("MAIL_URL", "smtp://mail.example.org:-25"),
    ("MAIL_URL", "smtp://mail.example.org:abc"),
    ("MAIL_URL", "smtp://mail.example.org?timeout=soon"),
    ("MAIL_URL", "smtp://[::1"),
    ("BASE_URL", "news.example.org"),
    ("BASE_URL", "ftp://news.example.org"),
    ("BASE_URL", "https://"),
    ("BASE_URL", "http://[::1"),
    ("FROM_ADDRESS", "nobody"),
    ("FROM_ADDRESS", ""),
    ("FROM_ADDRESS", "Clinic <news@clinic.example>\nBcc: all@example.org"),
    ("FROM_ADDRESS", "Clinic <news@clinic.example>\rBcc: all@example.org"),
    ("CHUNK_SIZE", "0"),
    ("CHUNK_SIZE", "-1"),
    ("CHUNK_SIZE", "10001"),
    ("CHUNK_SIZE", "abc"),
    ("CHUNK_SIZE", "1.5"),
    ("CHUNK_SIZE", ""),
]


@pytest.mark.parametrize(("variable", "value"), BAD_VALUES)
def test_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(f"NEWSLETTER_{variable}", value)

    with pytest.raises(ConfigError) as caught:
        load_settings()

    message = str(caught.value)
    assert message.splitlines() == [message]
    assert message.startswith(f"NEWSLETTER_{variable}: ")
    assert message.removeprefix(f"NEWSLETTER_{variable}: ").strip()


def test_bad_keyword_override_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^NEWSLETTER_CHUNK_SIZE: must be between"):
        load_settings(chunk_size=0)


def test_config_error_is_a_newsletter_error() -> None:
    # The CLI prints any NewsletterError as one line; anything else is a traceback.
    assert issubclass(ConfigError, NewsletterError)


def test_plain_smtp_url_uses_port_25_without_tls() -> None:
    assert parse_mail_url("smtp://mail.example.org") == SmtpTarget(
        host="mail.example.org",
        port=25,
        username=None,
        password=None,
        starttls=False,
        ssl=False,
        timeout=30.0,
    )


def test_smtp_url_with_user_percent_escaped_password_port_and_starttls() -> None:
    target = parse_mail_url(
        "smtp://news%40clinic.example:p%40ss%3Aw%2Fd%25@mail.example.org:587?starttls=true"
    )

    assert target == SmtpTarget(
        host="mail.example.org",
        port=587,
        username="news@clinic.example",
        password="p@ss:w/d%",
        starttls=True,
        ssl=False,
    )


def test_plus_in_smtp_password_is_kept_not_read_as_space() -> None:
    target = parse_mail_url("smtp://user:a+b@mail.example.org")

    assert isinstance(target, SmtpTarget)
    assert target.password == "a+b"


@pytest.mark.parametrize(
    ("query", "starttls"),
    [
        ("starttls=true", True),
        ("starttls=TRUE", True),
        ("starttls=1", True),
        ("starttls=yes", True),
        ("starttls=false", False),
        ("starttls=0", False),
        ("", False),
    ],
)
def test_starttls_is_read_from_the_query(query: str, starttls: bool) -> None:
    target = parse_mail_url(f"smtp://mail.example.org?{query}")

    assert isinstance(target, SmtpTarget)
    assert target.starttls is starttls


def test_smtps_defaults_to_port_465_with_tls() -> None:
    target = parse_mail_url("smtps://user:pw@mail.example.org")

    assert isinstance(target, SmtpTarget)
    assert (target.port, target.ssl, target.starttls) == (465, True, False)
    assert (target.username, target.password) == ("user", "pw")


def test_smtps_keeps_an_explicit_port() -> None:
    target = parse_mail_url("smtps://mail.example.org:2465")

    assert isinstance(target, SmtpTarget)
    assert (target.port, target.ssl) == (2465, True)


def test_smtp_timeout_is_read_from_the_query() -> None:
    target = parse_mail_url("smtp://mail.example.org?timeout=5.5")

    assert isinstance(target, SmtpTarget)
    assert target.timeout == 5.5


@pytest.mark.parametrize(
    ("url", "path"),
    [("outbox:./outbox", "./outbox"), ("outbox://outbox", "outbox"), ("outbox:/tmp/o", "/tmp/o")],
)
def test_outbox_url_names_a_folder(url: str, path: str) -> None:
    assert parse_mail_url(url) == OutboxTarget(Path(path))


@pytest.mark.parametrize("url", ["outbox:", "ftp://mail.example.org", "smtp://", ""])
def test_bad_mail_url_raises_value_error(url: str) -> None:
    with pytest.raises(ValueError):
        parse_mail_url(url)


@pytest.mark.parametrize("port", ["0", "00", "65536", "99999", "-1", "abc"])
def test_smtp_port_outside_1_to_65535_is_refused(port: str) -> None:
    with pytest.raises(ValueError, match="port must be a number from 1 to 65535"):
        parse_mail_url(f"smtp://mail.example.org:{port}")


def test_smtp_port_zero_is_a_config_error_not_port_25(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_MAIL_URL", "smtp://mail.example.org:0")

    with pytest.raises(ConfigError, match=r"^NEWSLETTER_MAIL_URL: smtp URL port must be"):
        load_settings()


@pytest.mark.parametrize("port", [1, 25, 65535])
def test_smtp_port_limits_are_accepted(port: int) -> None:
    target = parse_mail_url(f"smtp://mail.example.org:{port}")

    assert isinstance(target, SmtpTarget)
    assert target.port == port


def test_a_postal_address_on_several_lines_is_shown_on_one() -> None:
    settings = load_settings(postal_address="Riverside Clinic\n200 River Road\r\n\nSpringfield")

    assert settings.postal_address == "Riverside Clinic, 200 River Road, Springfield"


def test_the_organisation_defaults_to_the_from_name() -> None:
    assert load_settings(
        from_address="Harbour Health <news@harbour.example>"
    ).organization_name == ("Harbour Health")
    assert load_settings(organization="Harbour Health Trust").organization_name == (
        "Harbour Health Trust"
    )


def test_a_footer_note_with_control_characters_is_one_line_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^NEWSLETTER_FOOTER_NOTE: must be plain text"):
        load_settings(footer_note="note\x07")


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("LEASE_SECONDS", "0", "above 0"),
        ("STALL_SECONDS", "-1", "above 0"),
        ("RETRY_BASE_SECONDS", "nan", "above 0"),
        ("RETRY_LIFETIME_HOURS", "inf", "above 0"),
        ("SCHEDULER_INTERVAL", "0", "above 0"),
        ("CONFIRM_TTL_SECONDS", "-60", "above 0"),
        ("SIGNUP_LIMIT_PER_IP", "-5", "above 0"),
        ("SIGNUP_LIMIT_PER_ADDRESS", "0", "above 0"),
        ("SIGNUP_LIMIT_PER_IP_SECONDS", "-600", "above 0"),
        ("RATE_LIMIT", "-1", "at least 0"),
        ("CATCH_UP_HOURS", "nan", "at least 0"),
        ("DOMAIN_BACKOFF_SECONDS", "-5", "at least 0"),
        ("MAX_BODY_BYTES", "0", "above 0"),
        ("MAIL_URL", "smtp://relay.example.org?timeout=nan", "timeout"),
        ("MAIL_URL", "smtp://relay.example.org?timeout=-1", "timeout"),
        ("TRUSTED_PROXIES", "10.0.0.0/33", "CIDR"),
        ("SIGNUP_ALLOWED_ORIGINS", "www.clinic.example", "origin"),
    ],
)
def test_L10_nonsense_settings_are_refused_in_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, words: str
) -> None:
    monkeypatch.setenv(f"NEWSLETTER_{variable}", value)

    with pytest.raises(ConfigError) as raised:
        load_settings()

    message = str(raised.value)
    assert message.startswith(f"NEWSLETTER_{variable}: ") and words in message
    assert "\n" not in message


def test_trusted_proxies_and_signup_origins_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_TRUSTED_PROXIES", "10.0.0.0/8, 2001:db8::/32, 192.0.2.7")
    monkeypatch.setenv("NEWSLETTER_SIGNUP_ALLOWED_ORIGINS", "https://WWW.Clinic.example/")
    monkeypatch.setenv("NEWSLETTER_BASE_URL", "https://news.clinic.example/letters")

    settings = load_settings()

    assert [str(n) for n in settings.trusted_proxy_networks] == [
        "10.0.0.0/8",
        "2001:db8::/32",
        "192.0.2.7/32",
    ]
    assert settings.signup_origins == {
        "https://news.clinic.example",
        "https://www.clinic.example",
    }


def test_a_relay_pool_lists_relays_with_weight_connection_cap_and_rate() -> None:
    a, b = parse_mail_urls(
        "smtp://a.example:587?starttls=true&weight=3&connections=20&rate=100, smtp://b.example"
    )

    assert a == SmtpTarget(
        host="a.example", port=587, starttls=True, weight=3, connections=20, rate=100
    )
    assert b == SmtpTarget(host="b.example", port=25)
    assert (a.name, b.name) == ("a.example:587", "b.example:25")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("smtp://a.example?weight=0, smtp://b.example", "relay 1: weight must be above 0"),
        ("smtp://a.example, outbox:./x", "relay 2: a pool lists smtp"),
        ("smtp://a.example,, smtp://b.example", "relay 2 of the list is empty"),
        ("smtp://a.example, smtp://a.example", "a relay is listed twice"),
        ("smtp://a.example?connections=many", "connections must be a whole number"),
        ("smtp://a.example?rate=-1", "rate must be 0 or more"),
    ],
)
def test_a_bad_relay_pool_names_the_relay_and_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=rf"^NEWSLETTER_MAIL_URL: .*{re.escape(problem)}"):
        load_settings(mail_url=url)


def test_smtp_connections_must_be_at_least_one() -> None:
    with pytest.raises(ConfigError, match=r"^NEWSLETTER_SMTP_CONNECTIONS: must be a whole"):
        load_settings(smtp_connections=0)
