"""Provider webhooks over HTTP: signed events act once; forged ones change nothing.

A tiny app includes only the bounces router, with settings and sessions on its state
as the real app has them. Keys, certificates and signatures are made here, so no
test touches the network: SNS certificate fetches go to a fake `sns_http_get`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.orm import Session, sessionmaker

from newsletter.audience.models import (
    BounceEvent,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
)
from newsletter.bounces.models import WebhookSignature
from newsletter.bounces.replay import remember_signature
from newsletter.bounces.webhooks import SignedToken, sns_string_to_sign
from newsletter.config import Settings, load_settings
from newsletter.db import downgrade, make_engine, make_sessionmaker, upgrade
from newsletter.web.webhooks import router
from tests.factories import add_member, make_list

PAYLOADS = Path(__file__).parent / "data" / "bounces" / "webhooks"
MAILGUN_KEY = "key-test-0123456789abcdef"
POSTMARK = ("postmark-hook", "s3cret-pass")
TOPIC = "arn:aws:sns:us-west-2:123456789012:ses-bounces"


def payload(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text(encoding="utf-8"))


# --- keys and signatures ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sendgrid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def sns_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate(key: rsa.RSAPrivateKey, valid_from: datetime, valid_to: datetime) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def sendgrid_public_key_base64(key: ec.EllipticCurvePrivateKey) -> str:
    """The key as SendGrid's settings page shows it: base64 DER, no PEM armour."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def mailgun_signed(body: dict[str, Any], timestamp: float | None = None) -> bytes:
    stamp = str(int(time.time() if timestamp is None else timestamp))
    token = secrets.token_hex(25)
    digest = hmac.new(MAILGUN_KEY.encode(), (stamp + token).encode(), hashlib.sha256)
    signed = dict(body, signature={"timestamp": stamp, "token": token, "signature": ""})
    signed["signature"]["signature"] = digest.hexdigest()
    return json.dumps(signed).encode()


def sendgrid_headers(key: ec.EllipticCurvePrivateKey, body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        "Content-Type": "application/json",
    }


def sns_signed(key: rsa.RSAPrivateKey, message: dict[str, Any], version: str = "1") -> bytes:
    message = dict(message, SignatureVersion=version)
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(sns_string_to_sign(message), padding.PKCS1v15(), algorithm)
    message["Signature"] = base64.b64encode(signature).decode()
    return json.dumps(message).encode()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# --- the app ---------------------------------------------------------------------------


class FakeSns:
    """Answers GETs for the signing certificate and records every URL asked for."""

    def __init__(self, certificate: bytes) -> None:
        self.certificate = certificate
        self.asked: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.asked.append(url)
        return self.certificate if url.endswith(".pem") else b"<ConfirmSubscriptionResponse/>"


@pytest.fixture
def sns(sns_key: rsa.RSAPrivateKey) -> FakeSns:
    now = datetime.now(UTC)
    return FakeSns(certificate(sns_key, now - timedelta(days=1), now + timedelta(days=30)))


def webhook_settings(sendgrid_key: ec.EllipticCurvePrivateKey) -> Settings:
    return load_settings(
        webhook_mailgun_key=MAILGUN_KEY,
        webhook_sendgrid_public_key=sendgrid_public_key_base64(sendgrid_key),
        webhook_postmark_user=POSTMARK[0],
        webhook_postmark_password=POSTMARK[1],
        webhook_sns_topic_arns=f"arn:aws:sns:eu-west-1:123456789012:other, {TOPIC}",
    )


@dataclass
class Hooks:
    """A tiny app with only the bounces router: its client, sessions and state."""

    client: TestClient
    sessions: sessionmaker[Session]
    app: FastAPI

    @property
    def settings(self) -> Settings:
        settings: Settings = self.app.state.settings
        return settings

    def configure(self, **changes: object) -> None:
        """The app's settings with some values changed (settings are frozen)."""
        self.app.state.settings = self.settings.model_copy(update=changes)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.client.post(path, **kwargs)

    def database(self) -> dict[str, Any]:
        return database(self.sessions)


def make_hooks(url: str, settings: Settings, sns: FakeSns) -> Iterator[Hooks]:
    engine = make_engine(url)
    app = FastAPI()
    app.include_router(router)
    app.state.settings = settings
    app.state.sessions = make_sessionmaker(engine)
    app.state.sns_http_get = sns
    with TestClient(app) as client:
        yield Hooks(client, app.state.sessions, app)
    engine.dispose()


@pytest.fixture
def hooks(
    database_url: str, sendgrid_key: ec.EllipticCurvePrivateKey, sns: FakeSns
) -> Iterator[Hooks]:
    """The webhook app on SQLite and PostgreSQL: for tests of what events do."""
    yield from make_hooks(database_url, webhook_settings(sendgrid_key), sns)


@pytest.fixture
def refusing(
    sqlite_url: str, sendgrid_key: ec.EllipticCurvePrivateKey, sns: FakeSns
) -> Iterator[Hooks]:
    """The webhook app on SQLite only: for refusals, which never reach the database."""
    yield from make_hooks(sqlite_url, webhook_settings(sendgrid_key), sns)


@pytest.fixture
def readers(hooks: Hooks) -> None:
    with hooks.sessions() as session:
        news, offers = make_list(session), make_list(session, "offers", "Offers")
        for address in ("alice@example.org", "carol@example.org", "dave@example.org"):
            add_member(session, news, address)
        for address in ("erin@example.org", "frank@example.org", "mia@example.org"):
            add_member(session, news, address)
            add_member(session, offers, address)
        add_member(session, news, "judy@example.org")
        session.commit()


def database(sessions: sessionmaker[Session]) -> dict[str, Any]:
    """What the webhooks may have changed: suppressions, events, soft bounce counts,
    unsubscribed addresses."""
    with sessions() as session:
        unsubscribed = session.scalars(
            select(Subscriber.email)
            .join(Subscription, Subscription.subscriber_id == Subscriber.id)
            .where(Subscription.status == SubscriptionStatus.unsubscribed)
            .distinct()
        )
        return {
            "suppressed": {s.email: s.reason for s in session.scalars(select(Suppression))},
            "events": session.scalar(select(func.count()).select_from(BounceEvent)),
            "soft": {
                s.email: s.soft_bounces
                for s in session.scalars(select(Subscriber).where(Subscriber.soft_bounces > 0))
            },
            "unsubscribed": set(unsubscribed),
        }


NOTHING = {"suppressed": {}, "events": 0, "soft": {}, "unsubscribed": set()}


# --- Mailgun ---------------------------------------------------------------------------

# --- Mailgun ---------------------------------------------------------------------------


@pytest.mark.usefixtures("readers")
def test_mailgun_permanent_failure_suppresses_and_replay_changes_nothing(hooks: Hooks) -> None:
    body = mailgun_signed(payload("mailgun-failed-permanent.json"))

    first = hooks.post("/webhooks/mailgun", content=body)
    replay = hooks.post("/webhooks/mailgun", content=body)

    assert first.status_code == 200
    assert first.json()["suppressed"] == 1
    assert replay.status_code == 200
    assert replay.json()["replayed"] == 1
    # The payload says alice@Example.ORG: the domain matched whatever its case.
    assert hooks.database()["suppressed"] == {"alice@example.org": "hard-bounce"}
    assert hooks.database()["events"] == 1


@pytest.mark.usefixtures("readers")
def test_mailgun_complaint_unsubscribes_and_temporary_failure_is_only_recorded(
    hooks: Hooks,
) -> None:
    complained = mailgun_signed(payload("mailgun-complained.json"))
    temporary = mailgun_signed(payload("mailgun-failed-temporary.json"))

    assert hooks.post("/webhooks/mailgun", content=complained).json()["unsubscribed"] == 1
    assert hooks.post("/webhooks/mailgun", content=temporary).json()["recorded"] == 1
    state = hooks.database()
    assert state["suppressed"] == {"carol@example.org": "complaint"}
    assert state["unsubscribed"] == {"carol@example.org"}


def test_mailgun_forged_signature_is_refused(refusing: Hooks) -> None:
    body = json.loads(mailgun_signed(payload("mailgun-failed-permanent.json")))
    body["signature"]["signature"] = "0" * 64

    response = refusing.post("/webhooks/mailgun", json=body)

    assert response.status_code == 403
    assert refusing.database() == NOTHING


def test_mailgun_stale_timestamp_is_refused(refusing: Hooks) -> None:
    body = mailgun_signed(payload("mailgun-failed-permanent.json"), time.time() - 600)

    response = refusing.post("/webhooks/mailgun", content=body)

    assert response.status_code == 403
    assert "too old" in response.json()["error"]
    assert refusing.database() == NOTHING


@pytest.mark.usefixtures("readers")
def test_L1_a_mailgun_signature_cannot_carry_other_event_data(hooks: Hooks) -> None:
    genuine = json.loads(mailgun_signed(payload("mailgun-failed-permanent.json")))
    assert hooks.post("/webhooks/mailgun", json=genuine).status_code == 200
    other = json.loads(json.dumps(genuine))
    other["event-data"]["recipient"] = "dave@example.org"
    other["event-data"]["id"] = "another-event-id"

    forged = hooks.post("/webhooks/mailgun", json=other)
    retried = hooks.post("/webhooks/mailgun", json=genuine)  # Mailgun retrying: harmless

    assert forged.status_code == 403 and "already used" in forged.json()["error"]
    assert retried.status_code == 200 and retried.json()["replayed"] == 1
    assert hooks.database()["suppressed"] == {"alice@example.org": "hard-bounce"}


def test_L1_remembered_signatures_are_pruned_after_twice_the_freshness_window(
    hooks: Hooks,
) -> None:
    start = datetime.now(UTC)
    with hooks.sessions() as session:
        remember_signature(session, SignedToken("mailgun", "old", "a" * 64, 300), start)
        remember_signature(
            session, SignedToken("mailgun", "new", "b" * 64, 300), start + timedelta(minutes=11)
        )
        session.commit()
        tokens = set(session.scalars(select(WebhookSignature.token)))

    assert tokens == {"new"}


def test_mailgun_unsigned_webhook_is_refused(refusing: Hooks) -> None:
    body = payload("mailgun-failed-permanent.json")
    del body["signature"]

    response = refusing.post("/webhooks/mailgun", json=body)

    assert response.status_code == 401
    assert refusing.database() == NOTHING


# --- SendGrid --------------------------------------------------------------------------


def sendgrid_post(hooks: Hooks, key: ec.EllipticCurvePrivateKey, events: list[Any]) -> Any:
    body = json.dumps(events).encode()
    return hooks.post("/webhooks/sendgrid", content=body, headers=sendgrid_headers(key, body))


@pytest.mark.usefixtures("readers")
def test_sendgrid_batch_acts_on_each_event_and_replay_changes_nothing(
    hooks: Hooks, sendgrid_key: ec.EllipticCurvePrivateKey
) -> None:
    events = payload("sendgrid-events.json")

    first = sendgrid_post(hooks, sendgrid_key, events)
    replay = sendgrid_post(hooks, sendgrid_key, events)

    assert first.status_code == 200
    assert first.json() == {
        "events": 6,
        "suppressed": 1,  # the hard bounce
        "unsubscribed": 1,  # the spam report
        "counted": 1,  # the "blocked" bounce: soft
        "recorded": 1,  # the deferral
        "replayed": 0,
        "ignored": 2,  # delivered, open
    }
    assert replay.json()["replayed"] == 4
    state = hooks.database()
    assert state["suppressed"] == {
        "dave@example.org": "hard-bounce",
        "frank@example.org": "complaint",
    }
    assert state["soft"] == {"erin@example.org": 1}
    assert state["unsubscribed"] == {"frank@example.org"}
    assert state["events"] == 4


@pytest.mark.usefixtures("readers")
def test_sendgrid_public_key_may_be_configured_as_pem(
    hooks: Hooks, sendgrid_key: ec.EllipticCurvePrivateKey
) -> None:
    hooks.configure(
        webhook_sendgrid_public_key=sendgrid_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )

    response = sendgrid_post(hooks, sendgrid_key, payload("sendgrid-events.json")[:1])

    assert response.json()["suppressed"] == 1


def test_sendgrid_body_changed_after_signing_is_refused(
    refusing: Hooks, sendgrid_key: ec.EllipticCurvePrivateKey
) -> None:
    body = json.dumps(payload("sendgrid-events.json")).encode()
    headers = sendgrid_headers(sendgrid_key, body)
    forged = body.replace(b"dave@example.org", b"someone@example.org")

    response = refusing.post("/webhooks/sendgrid", content=forged, headers=headers)

    assert response.status_code == 403
    assert refusing.database() == NOTHING


def test_sendgrid_signature_from_another_key_is_refused(refusing: Hooks) -> None:
    other_key = ec.generate_private_key(ec.SECP256R1())

    response = sendgrid_post(refusing, other_key, payload("sendgrid-events.json"))

    assert response.status_code == 403
    assert refusing.database() == NOTHING


def test_sendgrid_unsigned_batch_is_refused(refusing: Hooks) -> None:
    response = refusing.post("/webhooks/sendgrid", json=payload("sendgrid-events.json"))

    assert response.status_code == 401
    assert refusing.database() == NOTHING


# --- Postmark --------------------------------------------------------------------------


@pytest.mark.usefixtures("readers")
def test_postmark_bounce_and_complaint_with_the_right_credentials(hooks: Hooks) -> None:
    bounce = dict(payload("postmark-bounce.json"), Email="dave@example.org")
    complaint = payload("postmark-spam-complaint.json")

    hard = hooks.post("/webhooks/postmark", json=bounce, headers=basic(*POSTMARK))
    spam = hooks.post("/webhooks/postmark", json=complaint, headers=basic(*POSTMARK))
    replay = hooks.post("/webhooks/postmark", json=bounce, headers=basic(*POSTMARK))

    assert (hard.status_code, spam.status_code, replay.status_code) == (200, 200, 200)
    assert replay.json()["replayed"] == 1
    assert hooks.database()["suppressed"] == {
        "dave@example.org": "hard-bounce",
        "judy@example.org": "complaint",
    }


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), (basic(POSTMARK[0], "wrong"), 403), (basic("someone", POSTMARK[1]), 403)],
    ids=["no credentials", "wrong password", "wrong user"],
)
def test_postmark_without_the_right_credentials_is_refused(
    refusing: Hooks, headers: dict[str, str], status: int
) -> None:
    bounce = payload("postmark-bounce.json")

    response = refusing.post("/webhooks/postmark", json=bounce, headers=headers)

    assert response.status_code == status
    assert refusing.database() == NOTHING


def test_postmark_asks_for_basic_credentials(refusing: Hooks) -> None:
    response = refusing.post("/webhooks/postmark", json=payload("postmark-bounce.json"))

    assert response.headers["WWW-Authenticate"].startswith("Basic")


# --- Amazon SES via SNS ----------------------------------------------------------------


@pytest.mark.usefixtures("readers")
@pytest.mark.parametrize("version", ["1", "2"])
def test_ses_bounce_signed_by_sns_suppresses_each_recipient(
    hooks: Hooks, sns_key: rsa.RSAPrivateKey, sns: FakeSns, version: str
) -> None:
    body = sns_signed(sns_key, payload("sns-ses-bounce.json"), version)

    first = hooks.post("/webhooks/ses", content=body)
    replay = hooks.post("/webhooks/ses", content=body)

    assert first.status_code == 200
    assert first.json()["suppressed"] == 2
    assert replay.json()["replayed"] == 2
    assert hooks.database()["suppressed"] == {
        "kim@example.org": "hard-bounce",
        "leo@example.org": "hard-bounce",
    }
    assert sns.asked == [payload("sns-ses-bounce.json")["SigningCertURL"]] * 2


@pytest.mark.usefixtures("readers")
def test_ses_complaint_unsubscribes_from_every_list(
    hooks: Hooks, sns_key: rsa.RSAPrivateKey
) -> None:
    body = sns_signed(sns_key, payload("sns-ses-complaint.json"))

    response = hooks.post("/webhooks/ses", content=body)

    assert response.json()["unsubscribed"] == 1
    assert hooks.database()["unsubscribed"] == {"mia@example.org"}


def test_ses_message_changed_after_signing_is_refused(
    refusing: Hooks, sns_key: rsa.RSAPrivateKey
) -> None:
    message = json.loads(sns_signed(sns_key, payload("sns-ses-bounce.json")))
    message["Message"] = message["Message"].replace("kim@example.org", "someone@example.org")

    response = refusing.post("/webhooks/ses", json=message)

    assert response.status_code == 403
    assert refusing.database() == NOTHING


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.us-west-2.amazonaws.com.evil.example/cert.pem",
        "http://sns.us-west-2.amazonaws.com/cert.pem",
        "https://evil.example/sns.us-west-2.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com/cert.pem",  # not the topic's region
    ],
)
def test_ses_certificate_from_anywhere_but_sns_is_never_fetched(
    refusing: Hooks, sns_key: rsa.RSAPrivateKey, sns: FakeSns, url: str
) -> None:
    message = dict(payload("sns-ses-bounce.json"), SigningCertURL=url)

    response = refusing.post("/webhooks/ses", content=sns_signed(sns_key, message))

    assert response.status_code == 403
    assert sns.asked == []
    assert refusing.database() == NOTHING


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.us-west-2.amazonaws.com/internal/status?x=.pem",
        "https://sns.us-west-2.amazonaws.com/?Action=ListTopics&x=SimpleNotificationService-1.pem",
        "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5ca.pem?a=b",
        "https://sns.us-west-2.amazonaws.com/x/../SimpleNotificationService-9c6465fa7f48f5ca.pem",
        "https://sns.us-west-2.amazonaws.com:8443/SimpleNotificationService-9c6465fa7f48f5ca.pem",
        "https://u@sns.us-west-2.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5ca.pem",
    ],
)
def test_L16_no_path_on_the_sns_host_but_a_signing_certificate_is_fetched(
    refusing: Hooks, sns_key: rsa.RSAPrivateKey, sns: FakeSns, url: str
) -> None:
    message = dict(payload("sns-ses-bounce.json"), SigningCertURL=url)

    response = refusing.post("/webhooks/ses", content=sns_signed(sns_key, message))

    assert response.status_code == 403
    assert sns.asked == []


def test_L16_a_subscription_is_confirmed_at_snss_own_url_whatever_the_message_names(
    refusing: Hooks, sns_key: rsa.RSAPrivateKey, sns: FakeSns
) -> None:
    chosen = "https://sns.us-west-2.amazonaws.com/chosen/path?Action=Publish&Message=hi"
    confirmation = dict(payload("sns-subscription-confirmation.json"), SubscribeURL=chosen)

    response = refusing.post("/webhooks/ses", content=sns_signed(sns_key, confirmation))

    assert response.status_code == 200
    [asked] = [url for url in sns.asked if not url.endswith(".pem")]
    assert asked == (
        "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription"
        f"&TopicArn={TOPIC}&Token={confirmation['Token']}"
    )


def test_ses_message_for_a_topic_we_did_not_configure_is_refused(
    refusing: Hooks, sns_key: rsa.RSAPrivateKey, sns: FakeSns
) -> None:
    message = dict(payload("sns-ses-bounce.json"), TopicArn="arn:aws:sns:us-west-2:999:theirs")

    response = refusing.post("/webhooks/ses", content=sns_signed(sns_key, message))

    assert response.status_code == 403
    assert sns.asked == []
    assert refusing.database() == NOTHING


def test_ses_message_signed_under_an_expired_certificate_is_refused(
    refusing: Hooks, sns_key: rsa.RSAPrivateKey, sns: FakeSns
) -> None:
    now = datetime.now(UTC)
    sns.certificate = certificate(sns_key, now - timedelta(days=60), now - timedelta(days=1))

    response = refusing.post(
        "/webhooks/ses", content=sns_signed(sns_key, payload("sns-ses-bounce.json"))
    )

    assert response.status_code == 403
    assert refusing.database() == NOTHING


def test_ses_unsigned_message_is_refused(refusing: Hooks) -> None:
    message = payload("sns-ses-bounce.json")
    del message["Signature"]

    response = refusing.post("/webhooks/ses", json=message)

    assert response.status_code == 401
    assert refusing.database() == NOTHING


def test_ses_subscription_is_confirmed_only_when_its_signature_holds(
    refusing: Hooks, sns_key: rsa.RSAPrivateKey, sns: FakeSns
) -> None:
    confirmation = payload("sns-subscription-confirmation.json")
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    forged = refusing.post("/webhooks/ses", content=sns_signed(stranger, confirmation))
    confirmed = refusing.post("/webhooks/ses", content=sns_signed(sns_key, confirmation))

    assert forged.status_code == 403
    assert confirmed.status_code == 200
    assert [url for url in sns.asked if not url.endswith(".pem")] == [confirmation["SubscribeURL"]]


# --- every provider --------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["mailgun", "sendgrid", "postmark", "ses"])
def test_provider_without_a_secret_is_disabled(refusing: Hooks, provider: str) -> None:
    refusing.app.state.settings = load_settings()

    response = refusing.post(f"/webhooks/{provider}", json={})

    assert response.status_code == 404
    assert refusing.database() == NOTHING


def test_the_webhook_signatures_migration_goes_down_and_up(engine: Engine) -> None:
    downgrade(engine, "0007")
    assert "webhook_signatures" not in inspect(engine).get_table_names()

    upgrade(engine)

    assert "webhook_signatures" in inspect(engine).get_table_names()
