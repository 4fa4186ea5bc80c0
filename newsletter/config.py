"""Settings, read once at an entry point and passed down as a frozen object."""

from __future__ import annotations

import ipaddress
import math
import os
import tempfile
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from newsletter.errors import ConfigError

ENV_PREFIX = "NEWSLETTER_"
EMBEDDED_BROKER = "memory://localhost/"
INSECURE_DEV_KEY = "insecure-development-key-set-NEWSLETTER_SECRET_KEY"


@dataclass(frozen=True)
class OutboxTarget:
    """Write one .eml file per message into a folder."""

    path: Path


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    ssl: bool = False
    timeout: float = 30.0
    # In a relay pool (several URLs, comma-separated): this relay's share of the
    # messages, its own connection cap per worker process (0: NEWSLETTER_SMTP_CONNECTIONS)
    # and rate limit in messages per second for all workers (0: none).
    weight: float = 1.0
    connections: int = 0
    rate: float = 0.0

    @property
    def name(self) -> str:
        """How status and metrics name the relay: host:port."""
        return f"{self.host}:{self.port}"


MailTarget = OutboxTarget | SmtpTarget


def _number(query: dict[str, str], key: str, default: str, integer: bool = False) -> float:
    text = query.get(key, default)
    try:
        value = int(text) if integer else float(text)
    except ValueError as exc:
        kind = "a whole number" if integer else "a number"
        raise ValueError(f"the smtp URL's {key} must be {kind}, not {text!r}") from exc
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"the smtp URL's {key} must be 0 or more, not {text}")
    return value


def parse_mail_url(url: str) -> MailTarget:
    """`outbox:PATH`, `smtp://user:pass@host:port?starttls=true` or `smtps://…`."""
    if url.startswith("outbox:"):
        path = url.removeprefix("outbox:").removeprefix("//")
        if not path:
            raise ValueError("outbox: needs a folder, e.g. outbox:./outbox")
        return OutboxTarget(Path(path))
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("must start with outbox: or smtp:// or smtps://")
    if not parts.hostname:
        raise ValueError("smtp URL has no host")
    query = {k: v[-1].lower() for k, v in parse_qs(parts.query).items()}
    ssl = parts.scheme == "smtps"
    bad_port = "smtp URL port must be a number from 1 to 65535"
    try:
        port = parts.port  # raises for a non-number or one over 65535
    except ValueError as exc:
        raise ValueError(bad_port) from exc
    if port is None:
        port = 465 if ssl else 25
    elif port == 0:  # urlsplit accepts it; it is no port to connect to
        raise ValueError(bad_port)
    try:
        timeout = float(query.get("timeout", "30"))
    except ValueError as exc:
        raise ValueError(f"bad timeout in smtp URL: {exc}") from exc
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(
            f"the smtp URL's timeout must be a number of seconds above 0, not {timeout}"
        )
    return SmtpTarget(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        starttls=query.get("starttls", "false") in ("1", "true", "yes"),
        ssl=ssl,
        timeout=timeout,
        weight=_number(query, "weight", "1"),
        connections=int(_number(query, "connections", "0", integer=True)),
        rate=_number(query, "rate", "0"),
    )


def parse_mail_urls(value: str) -> list[MailTarget]:
    """`NEWSLETTER_MAIL_URL`: one target, or a pool of smtp relays separated by commas
    (`smtp://a:587?weight=3&connections=20&rate=100, smtp://b:587`)."""
    urls = [part.strip() for part in value.split(",")]
    if len(urls) == 1:
        return [parse_mail_url(urls[0])]
    targets: list[MailTarget] = []
    for number, url in enumerate(urls, start=1):
        if not url:
            raise ValueError(f"relay {number} of the list is empty (a stray comma?)")
        try:
            target = parse_mail_url(url)
        except ValueError as exc:
            raise ValueError(f"relay {number}: {exc}") from exc
        if not isinstance(target, SmtpTarget):
            raise ValueError(f"relay {number}: a pool lists smtp:// or smtps:// relays only")
        if target.weight <= 0:
            raise ValueError(f"relay {number}: weight must be above 0")
        targets.append(target)
    names = [t.name for t in targets if isinstance(t, SmtpTarget)]
    if len(set(names)) != len(names):
        raise ValueError("a relay is listed twice")
    return targets


def parse_domain_limits(value: str) -> dict[str, float]:
    """`"gmail.com=50, yahoo.com=20"` → {"gmail.com": 50.0, "yahoo.com": 20.0}."""
    limits: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        domain, sep, rate = item.partition("=")
        try:
            limits[domain.strip().lower()] = float(rate)
        except ValueError:
            sep = ""
        if not sep or not domain.strip() or limits.get(domain.strip().lower(), 0) <= 0:
            raise ValueError(f"{item!r} is not DOMAIN=MESSAGES_PER_SECOND")
    return limits


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: str) -> tuple[IpNetwork, ...]:
    """`"10.0.0.0/8, 2001:db8::/32, 192.0.2.7"` → networks (a bare address is one host)."""
    networks = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an IP address or a CIDR such as 10.0.0.0/8") from exc
    return tuple(networks)


def parse_origins(value: str) -> frozenset[str]:
    """`"https://clinic.example, https://www.clinic.example"` → origins, as browsers send
    them in the Origin header (scheme://host[:port], lower case, no path)."""
    origins = set()
    for item in filter(None, (part.strip() for part in value.split(","))):
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"{item!r} is not an origin such as https://www.clinic.example")
        origins.add(f"{parts.scheme}://{parts.netloc}".lower())
    return frozenset(origins)


# Settings that must be a finite number above zero, or at least zero: "nan", "inf",
# a negative lease or a zero window would each break something far from the setting.
_POSITIVE = (
    "scheduler_interval",
    "lease_seconds",
    "stall_seconds",
    "retry_base_seconds",
    "retry_max_seconds",
    "retry_lifetime_hours",
    "confirm_ttl_seconds",
    "signup_limit_per_ip",
    "signup_limit_per_ip_seconds",
    "signup_limit_per_address",
    "signup_limit_per_address_seconds",
    "max_body_bytes",
    "login_limit_per_account",
    "login_limit_per_ip",
    "api_rate_limit",
    "session_hours",
    "webhook_max_body_bytes",
    "smtp_rest_seconds",
)
_NOT_NEGATIVE = (
    "rate_limit",
    "domain_backoff_seconds",
    "catch_up_hours",
    "tracking_machine_seconds",
    "tracking_burst_seconds",
)


class Settings(BaseSettings):
    """Everything configurable, from `NEWSLETTER_*` variables (or an optional env file)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    database_url: str = "sqlite:///newsletter.db"
    broker_url: str = EMBEDDED_BROKER
    mail_url: str = "outbox:outbox"
    base_url: str = "http://localhost:8000"
    # "production" (the default) refuses to start serve, worker and scheduler with the
    # development key or a short one; "development" allows it, for trials on one machine.
    env: str = "production"
    secret_key: str = INSECURE_DEV_KEY
    # Earlier keys, comma-separated: links signed with them still work until removed.
    secret_keys_old: str = ""
    from_address: str = "Riverside Clinic <newsletter@clinic.example>"
    list_domain: str = ""
    # Who sends, as every campaign email's footer says it (a list may override each):
    # the organisation (default: the From name), its postal address (US CAN-SPAM
    # requires one; nothing is scheduled without it) and an optional note.
    organization: str = ""
    postal_address: str = ""
    footer_note: str = ""
    # Allow an http:// base URL for a public host (testing only): List-Unsubscribe
    # one-click needs https (RFC 8058), so servers refuse to start without it.
    allow_http: bool = False
    # A folder of the publisher's own template files, each replacing the built-in file
    # of the same relative name (e.g. email/digest.html, email/style.css, web/base.html).
    templates_dir: str = ""
    # Recipients per send task (and per ledger page at fan-out): big enough that the
    # per-task costs vanish, small enough that every worker gets work.
    chunk_size: int = 2000
    scheduler_interval: float = 5.0
    # Delivery engine (see delivery/sending.py and delivery/throttle.py).
    lease_seconds: float = 120.0  # a chunk task's claim on its rows, renewed while it works
    stall_seconds: float = 60.0  # a run without progress this long is re-enqueued
    # Where each worker process journals delivery results before they reach the
    # ledger (see delivery/journal.py); keep it on a disk that outlives the worker.
    journal_dir: str = ""  # default: <temp dir>/newsletter-journal-<uid>
    retry_base_seconds: float = 60.0  # first retry delay after a 4xx; doubles each time
    retry_max_seconds: float = 7200.0
    retry_lifetime_hours: float = 72.0  # then a deferred delivery is marked failed
    rate_limit: float = 0.0  # messages per second for all workers together; 0 = no limit
    domain_rate_limits: str = ""  # e.g. "gmail.com=50,yahoo.com=20" (messages per second)
    domain_backoff_seconds: float = 60.0  # pause for a domain after a 421 / throttling reply
    # SMTP connections each worker process keeps open to a relay, sending a chunk's
    # messages concurrently (delivery/relays.py); a relay's `connections=` caps it.
    smtp_connections: int = 10
    smtp_messages_per_connection: int = 1000  # then the connection is reopened
    # A relay that is down (refused connects, TLS errors) or in a 421 storm rests this
    # long before it is tried again; its share goes to the other relays meanwhile.
    smtp_rest_seconds: float = 30.0
    redis_url: str = ""  # shared rate limits; defaults to the broker when that is Redis
    # A recurring occurrence missed (scheduler down) is sent late once, unless older.
    catch_up_hours: float = 6.0
    # Deliverability (see delivery/dkim.py and bounces/).
    dkim_selector: str = ""
    dkim_domain: str = ""  # defaults to the From address's domain
    dkim_private_key_path: str = ""
    list_unsubscribe_mailto: str = ""  # e.g. unsubscribe@clinic.example
    soft_bounce_limit: int = 3
    webhook_mailgun_key: str = ""
    webhook_sendgrid_public_key: str = ""  # PEM or base64 DER of SendGrid's ECDSA key
    webhook_postmark_user: str = ""
    webhook_postmark_password: str = ""
    webhook_sns_topic_arns: str = ""  # comma-separated SNS topics we accept
    # Public sign-up (see web/app.py and ratelimit.py).
    confirm_ttl_seconds: int = 3 * 86400
    signup_limit_per_ip: int = 5
    signup_limit_per_ip_seconds: float = 600.0
    signup_limit_per_address: int = 3
    signup_limit_per_address_seconds: float = 86400.0
    # Staff sessions, logins and the API (see accounts/ and api/).
    session_hours: float = 12.0
    login_limit_per_account: int = 5
    login_limit_per_account_seconds: float = 900.0
    login_limit_per_ip: int = 20
    login_limit_per_ip_seconds: float = 900.0
    api_rate_limit: int = 600  # requests per minute per token (or session)
    # Let staff requests make the server fetch URLs on private or loopback addresses.
    allow_private_urls: bool = False
    # Outgoing webhooks (services/webhooks.py): endpoints must be https:// on public
    # addresses (checked again at each send, against DNS rebinding) unless allowed here;
    # an extra CA bundle to trust (an internal CA); a POST's timeout; retries with
    # exponential backoff from the base delay, at most max_attempts per event; an
    # endpoint is disabled after disable_after failures in a row spanning at least
    # disable_min_hours (so a short outage never disables it).
    webhooks_allow_private: bool = False
    webhooks_ca_file: str = ""
    webhooks_timeout: float = 10.0
    webhooks_retry_base_seconds: float = 30.0
    webhooks_max_attempts: int = 8
    webhooks_disable_after: int = 10
    webhooks_disable_min_hours: float = 1.0
    # Sign-up forms posted by browsers must come from these origins (besides the base
    # URL's own); JSON and clients that send no Origin are not concerned.
    signup_allowed_origins: str = ""
    # Proxies (CIDRs) whose X-Forwarded-For is believed; nobody's by default.
    trusted_proxies: str = ""
    # Request bodies: pages and forms, and provider webhooks (batches of events).
    max_body_bytes: int = 65_536
    webhook_max_body_bytes: int = 5_000_000
    # Non-public networks (CIDRs) feeds may still be fetched from, e.g. an intranet
    # blog's; none by default, so a feed URL (or its redirect) cannot reach inside.
    feeds_allowed_networks: str = ""
    # Opens and clicks (see tracking/): raw events are deleted after this many days
    # (the counts stay); a hit this soon after the message was handed over is a
    # machine's; three links of one message (or all, when fewer) within this many
    # seconds are a scanner's.
    tracking_retention_days: int = 180
    tracking_machine_seconds: float = 10.0
    tracking_burst_seconds: float = 2.0
    # Operations (see metrics.py, logs.py and tasks/monitoring.py).
    # Each process counts in a memory-mapped file in this folder; processes sharing it
    # are added up when Prometheus scrapes. Default: <temp dir>/newsletter-metrics-<uid>.
    metrics_dir: str = ""
    # A port of its own serving /metrics (no login: for a private network); 0 = none.
    metrics_port: int = 0
    # "text" (one line per record) or "json" (one object per line, with run, campaign,
    # task and chunk where known).
    log_format: str = "text"

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError("must be a URL such as sqlite:///newsletter.db or postgresql://…")
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            # psycopg 3 is the driver we ship.
            value = "postgresql+psycopg://" + value.split("://", 1)[1]
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError(
                "must be memory:// (embedded) or a broker URL such as redis://host:6379/0"
            )
        return value

    @field_validator("mail_url")
    @classmethod
    def _mail_url(cls, value: str) -> str:
        parse_mail_urls(value)
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL such as https://news.example.org")
        return value.rstrip("/")

    @field_validator("organization", "postal_address", "footer_note")
    @classmethod
    def _one_line(cls, value: str) -> str:
        # A postal address is often written on several lines; emails show it on one.
        lines = [" ".join(line.split()) for line in value.replace("\r", "\n").split("\n")]
        text = ", ".join(line for line in lines if line)
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise ValueError("must be plain text without control characters")
        if len(text) > 500:
            raise ValueError("must be at most 500 characters")
        return text

    @field_validator("from_address")
    @classmethod
    def _from_address(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "@" not in address or "\n" in value or "\r" in value:
            raise ValueError("must be an address such as 'Clinic News <news@clinic.example>'")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: str) -> str:
        if value not in ("production", "development"):
            raise ValueError("must be production or development")
        return value

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value not in ("text", "json"):
            raise ValueError("must be text or json")
        return value

    @field_validator("metrics_port")
    @classmethod
    def _metrics_port(cls, value: int) -> int:
        if not 0 <= value <= 65535:
            raise ValueError("must be a port from 1 to 65535, or 0 for none")
        return value

    @field_validator("soft_bounce_limit")
    @classmethod
    def _soft_bounce_limit(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be a whole number of at least 1")
        return value

    @field_validator(*_POSITIVE)
    @classmethod
    def _positive(cls, value: float) -> float:
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"must be a number above 0, not {value}")
        return value

    @field_validator(*_NOT_NEGATIVE)
    @classmethod
    def _not_negative(cls, value: float) -> float:
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"must be a number of at least 0, not {value}")
        return value

    @field_validator("trusted_proxies", "feeds_allowed_networks")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        parse_networks(value)
        return value

    @field_validator("signup_allowed_origins")
    @classmethod
    def _signup_allowed_origins(cls, value: str) -> str:
        parse_origins(value)
        return value

    @property
    def trusted_proxy_networks(self) -> tuple[IpNetwork, ...]:
        return parse_networks(self.trusted_proxies)

    @property
    def feeds_allowed(self) -> tuple[IpNetwork, ...]:
        return parse_networks(self.feeds_allowed_networks)

    @property
    def signup_origins(self) -> frozenset[str]:
        """Where browsers may post the sign-up form from: the base URL's origin and
        NEWSLETTER_SIGNUP_ALLOWED_ORIGINS."""
        base = urlsplit(self.base_url)
        own = f"{base.scheme}://{base.netloc}".lower()
        return frozenset({own}) | parse_origins(self.signup_allowed_origins)

    @field_validator("tracking_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be a whole number of days, at least 1")
        return value

    @field_validator("templates_dir")
    @classmethod
    def _templates_dir(cls, value: str) -> str:
        if value and not Path(value).is_dir():
            raise ValueError(f"{value} is not a folder")
        return value

    @field_validator("chunk_size")
    @classmethod
    def _chunk_size(cls, value: int) -> int:
        if not 1 <= value <= 10_000:
            raise ValueError("must be between 1 and 10000")
        return value

    @field_validator("smtp_connections", "smtp_messages_per_connection")
    @classmethod
    def _smtp_connections(cls, value: int) -> int:
        if not 1 <= value <= 10_000:
            raise ValueError("must be a whole number between 1 and 10000")
        return value

    @field_validator("domain_rate_limits")
    @classmethod
    def _domain_rate_limits(cls, value: str) -> str:
        parse_domain_limits(value)
        return value

    @property
    def domain_limits(self) -> dict[str, float]:
        return parse_domain_limits(self.domain_rate_limits)

    @property
    def shared_redis_url(self) -> str:
        """Redis for state shared by all workers (rate limits), if any."""
        if self.redis_url:
            return self.redis_url
        if self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return ""

    @property
    def old_secret_keys(self) -> tuple[str, ...]:
        """Keys that signed links in the past and still verify (key rotation)."""
        return tuple(k.strip() for k in self.secret_keys_old.split(",") if k.strip())

    @property
    def journal_directory(self) -> Path:
        """Where delivery results are journalled (NEWSLETTER_JOURNAL_DIR, else a folder
        of this user's in the temporary directory)."""
        if self.journal_dir:
            return Path(self.journal_dir)
        return Path(tempfile.gettempdir()) / f"newsletter-journal-{os.getuid()}"

    @property
    def metrics_directory(self) -> Path:
        """Where processes keep their metrics files (NEWSLETTER_METRICS_DIR, else a
        folder of this user's in the temporary directory)."""
        if self.metrics_dir:
            return Path(self.metrics_dir)
        return Path(tempfile.gettempdir()) / f"newsletter-metrics-{os.getuid()}"

    @property
    def mail_target(self) -> MailTarget:
        """The first relay (or outbox) of NEWSLETTER_MAIL_URL; single messages use them
        all (delivery/relays.single_mailer)."""
        return parse_mail_urls(self.mail_url)[0]

    @property
    def mail_targets(self) -> list[MailTarget]:
        """Every relay campaign mail may go through (one, or a pool)."""
        return parse_mail_urls(self.mail_url)

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("memory://")

    @property
    def sender_domain(self) -> str:
        return parseaddr(self.from_address)[1].rsplit("@", 1)[1].lower()

    @property
    def sender_name(self) -> str:
        """The From display name (else the sender's domain), as emails show it."""
        return parseaddr(self.from_address)[0] or self.sender_domain

    @property
    def organization_name(self) -> str:
        """Who sends, as footers name it: NEWSLETTER_ORGANIZATION, else the From name."""
        return self.organization or self.sender_name

    @property
    def list_id_domain(self) -> str:
        """The right-hand side of List-Id headers (RFC 2919)."""
        return self.list_domain or self.sender_domain


MIN_SECRET_BYTES = 32


SECRET_SETTINGS = frozenset(
    {
        "secret_key",
        "secret_keys_old",
        "webhook_mailgun_key",
        "webhook_postmark_password",
    }
)
URL_SETTINGS = frozenset({"database_url", "broker_url", "mail_url", "redis_url"})


def _mask_url(value: str) -> str:
    """A URL with its password replaced by ••••."""
    parts = urlsplit(value)
    if parts.password is None:
        return value
    netloc = parts.netloc.replace(f":{parts.password}@", ":••••@", 1)
    return parts._replace(netloc=netloc).geturl()


def effective_settings(settings: Settings) -> list[tuple[str, str]]:
    """Every setting as (NEWSLETTER_NAME, value) for people to read: secrets shown only
    as set or not, passwords in URLs masked."""
    shown = []
    for name, value in settings.model_dump().items():
        text = _as_written(value)
        if name in SECRET_SETTINGS:
            text = "•••• (set)" if value else "(not set)"
        elif name in URL_SETTINGS:
            text = _mask_url(text)
        shown.append((f"{ENV_PREFIX}{name.upper()}", text))
    return shown


def _as_written(value: object) -> str:
    """A setting's value as one would write it in the environment: `true`/`false`, not
    Python's `True`; `60`, not `60.0`; `(not set)` rather than a blank."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value)
    return text if text else "(not set)"


def check_secret_key(settings: Settings) -> None:
    """ConfigError unless the secret key is fit to sign subscribers' links in production:
    not empty, not the public development key, at least 32 bytes. A process started
    with NEWSLETTER_ENV=development may use the development key (trials, the demo)."""
    if settings.env == "development":
        return
    generate = "e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    key = settings.secret_key
    if not key or key == INSECURE_DEV_KEY:
        raise ConfigError(
            f"{ENV_PREFIX}SECRET_KEY: set a random key of at least {MIN_SECRET_BYTES} bytes "
            f"({generate}); or NEWSLETTER_ENV=development to try the service out"
        )
    if len(key.encode("utf-8")) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{ENV_PREFIX}SECRET_KEY: {len(key.encode('utf-8'))} bytes is too short; use at "
            f"least {MIN_SECRET_BYTES} random bytes ({generate})"
        )
    for old in settings.old_secret_keys:
        if len(old.encode("utf-8")) < MIN_SECRET_BYTES or old == INSECURE_DEV_KEY:
            raise ConfigError(
                f"{ENV_PREFIX}SECRET_KEYS_OLD: every old key must be one that was valid "
                f"(at least {MIN_SECRET_BYTES} bytes, not the development key)"
            )


LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def check_public_url(settings: Settings) -> None:
    """ConfigError unless the base URL is https, or names this machine, or http is
    allowed explicitly: one-click unsubscribe (RFC 8058) needs an https URI, and
    Gmail and Yahoo ignore it otherwise. Servers and workers check it at start."""
    parts = urlsplit(settings.base_url)
    if parts.scheme == "https" or settings.allow_http or parts.hostname in LOCAL_HOSTS:
        return
    raise ConfigError(
        f"{ENV_PREFIX}BASE_URL: {settings.base_url} is not https; unsubscribe links must be "
        f"https (RFC 8058). Use https://{parts.netloc}, or set {ENV_PREFIX}ALLOW_HTTP=1 "
        "for testing"
    )


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; a bad value is one line naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{ENV_PREFIX}{field.upper()}: {message}") from exc
