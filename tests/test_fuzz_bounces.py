"""Issue 16, Must-show 2: what providers and mailboxes send us cannot crash the reader.

Hypothesis writes webhook bodies for every provider — raw bytes, any JSON, and JSON
shaped like each provider's events, with the provider's real signature or credentials
so the parsing behind the check is reached — and email messages for the DSN/ARF
classifier (mutated real bounces from the corpora, and made-up MIME). Whatever comes
in, the answer is a report or one of the project's own errors (NewsletterError),
never another exception: over HTTP that is the difference between a 4xx naming the
problem and a 500 with a traceback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.bounces.dsn import BounceReport, classify
from newsletter.bounces.webhooks import (
    mailgun_reports,
    postmark_reports,
    read_sns_message,
    sendgrid_reports,
    ses_reports,
    sns_string_to_sign,
)
from newsletter.errors import NewsletterError
from tests.test_bounce_webhooks import TOPIC, certificate, payload

EXAMPLES = 200
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAILGUN_KEY = "key-fuzz"
POSTMARK = ("hook", "pass")
CORPORA = Path(__file__).parent / "data" / "bounce-corpora"

# Field names the parsers look for, so generated objects often take their paths.
FIELDS = [
    "event",
    "event-data",
    "signature",
    "timestamp",
    "token",
    "recipient",
    "severity",
    "reason",
    "delivery-status",
    "code",
    "message",
    "description",
    "enhanced-code",
    "id",
    "sg_event_id",
    "email",
    "status",
    "type",
    "response",
    "RecordType",
    "Type",
    "Email",
    "Details",
    "Description",
    "ID",
    "notificationType",
    "eventType",
    "bounce",
    "complaint",
    "bounceType",
    "bounceSubType",
    "bouncedRecipients",
    "complainedRecipients",
    "emailAddress",
    "diagnosticCode",
    "action",
    "mail",
    "messageId",
    "complaintFeedbackType",
    "Type",
    "TopicArn",
    "Signature",
    "SignatureVersion",
    "SigningCertURL",
    "Message",
    "MessageId",
    "Token",
    "SubscribeURL",
]
WORDS = [
    "failed",
    "complained",
    "bounce",
    "deferred",
    "spamreport",
    "dropped",
    "blocked",
    "HardBounce",
    "SoftBounce",
    "SpamComplaint",
    "Bounce",
    "Complaint",
    "Permanent",
    "Transient",
    "temporary",
    "permanent",
    "old",
    "suppress-complaint",
    "5.1.1",
    "4.2.2",
    "550 5.1.1 no such user",
    "452 mailbox full",
    "alice@example.org",
    "Alice@Example.ORG",
    "a\x00b@example.org",
    "@",
    "",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(WORDS)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), children, max_size=6)
    ),
    max_leaves=30,
)
json_objects = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8)
# JSON nested deeper than Python's parser goes: a list or an object per level.
deep_json = st.integers(min_value=900, max_value=100_000).flatmap(
    lambda depth: st.sampled_from(["[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth])
)
raw_bodies = st.binary(max_size=300) | deep_json.map(str.encode)


def survives(call: Any) -> list[BounceReport]:
    """Run `call`; a NewsletterError is a fine answer, anything else fails the test."""
    try:
        result = call()
    except NewsletterError:
        return []
    reports = result.reports if hasattr(result, "reports") else result
    assert all(isinstance(report, BounceReport) for report in reports)
    return list(reports)


def dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


# --- Mailgun -------------------------------------------------------------------------------


def mailgun_body(event: Any) -> bytes:
    stamp, token = str(int(time.time())), "t" * 50
    digest = hmac.new(MAILGUN_KEY.encode(), (stamp + token).encode(), hashlib.sha256)
    signature = {"timestamp": stamp, "token": token, "signature": digest.hexdigest()}
    return dumps({"signature": signature, "event-data": event})


@FUZZ
@given(body=raw_bodies | json_values.map(dumps))
def test_mailgun_any_body(body: bytes) -> None:
    survives(lambda: mailgun_reports(body, MAILGUN_KEY, time.time()))


@FUZZ
@given(event=json_objects | json_values)
def test_mailgun_any_signed_event(event: Any) -> None:
    survives(lambda: mailgun_reports(mailgun_body(event), MAILGUN_KEY, time.time()))


# --- SendGrid ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sendgrid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def sendgrid_public(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@FUZZ
@given(body=raw_bodies | st.lists(json_objects | json_values).map(dumps))
def test_sendgrid_any_signed_batch(sendgrid_key: ec.EllipticCurvePrivateKey, body: bytes) -> None:
    stamp = str(int(time.time()))
    signature = sendgrid_key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    encoded = base64.b64encode(signature).decode()
    public = sendgrid_public(sendgrid_key)
    survives(lambda: sendgrid_reports(body, encoded, stamp, public))


# --- Postmark ------------------------------------------------------------------------------


@FUZZ
@given(body=raw_bodies | (json_objects | json_values).map(dumps))
def test_postmark_any_body_with_the_credentials(body: bytes) -> None:
    authorization = "Basic " + base64.b64encode(":".join(POSTMARK).encode()).decode()
    survives(lambda: postmark_reports(body, authorization, *POSTMARK))


# --- Amazon SES via SNS ----------------------------------------------------------------


@pytest.fixture(scope="module")
def sns_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@FUZZ
@given(
    notification=json_objects | json_values,
    extra=st.dictionaries(st.sampled_from(["Subject", "MessageId", "Timestamp"]), scalars),
    deep=st.none() | deep_json,
)
def test_ses_any_notification_signed_by_sns(
    sns_key: rsa.RSAPrivateKey, notification: Any, extra: dict[str, Any], deep: str | None
) -> None:
    now = datetime.now(UTC)
    pem = certificate(sns_key, now - timedelta(days=1), now + timedelta(days=1))
    message = dict(payload("sns-ses-bounce.json"), **extra, Message=json.dumps(notification))
    if deep is not None:
        message["Message"] = deep
    message["SignatureVersion"] = "2"
    try:
        to_sign = sns_string_to_sign(message)
    except NewsletterError:
        return
    message["Signature"] = base64.b64encode(
        sns_key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
    ).decode()
    body = dumps(message)

    def read() -> list[BounceReport]:
        verified = read_sns_message(body, frozenset({TOPIC}), lambda url: pem, now)
        return ses_reports(verified)

    survives(read)


@FUZZ
@given(body=raw_bodies | (json_objects | json_values).map(dumps))
def test_ses_any_body(body: bytes) -> None:
    def fetch(url: str) -> bytes:
        raise AssertionError(f"fetched {url} for an unsigned body")

    survives(lambda: read_sns_message(body, frozenset({TOPIC}), fetch, datetime.now(UTC)))


# --- the DSN/ARF classifier ------------------------------------------------------------


def corpus() -> list[bytes]:
    """A few real bounces of each kind, as seeds for mutation."""
    files = sorted(p for p in CORPORA.rglob("*") if p.suffix in (".eml", ".txt"))
    return [p.read_bytes()[:20_000] for p in files[:: max(1, len(files) // 40)]][:40]


SEEDS = corpus()
HEADERS = [
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n",
    b"Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n",
    b"Content-Type: message/delivery-status\r\n",
    b"Content-Type: text/plain; charset=x-unknown\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Subject: =?utf-8?b?////?=\r\n",
    b"From: MAILER-DAEMON@example.org\r\n",
    b"Auto-Submitted: auto-replied\r\n",
]
PARTS = [
    b"--b\r\nContent-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; a@b\r\n"
    b"Action: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n",
    b"--b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n\r\n--b--\r\n",
    b"--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: x\r\n\r\nbody\r\n--b--\r\n",
    b"Status: 9.9.9\r\nFinal-Recipient: \x00\r\n",
    b"\x00\xff\xfe" * 10,
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    seed = draw(st.sampled_from(SEEDS)) if SEEDS else b""
    start = draw(st.integers(0, len(seed)))
    end = draw(st.integers(start, min(len(seed), start + 500)))
    insert = draw(st.binary(max_size=100) | st.sampled_from(PARTS) | st.sampled_from(HEADERS))
    return seed[:start] + insert + seed[end:]


made_up = st.builds(
    lambda headers, body: b"".join(headers) + b"\r\n" + b"".join(body),
    st.lists(st.sampled_from(HEADERS) | st.binary(max_size=60), max_size=6),
    st.lists(st.sampled_from(PARTS) | st.binary(max_size=200), max_size=5),
)


@FUZZ
@given(raw=mutated() | made_up | st.binary(max_size=2000))
def test_dsn_classify_any_message(raw: bytes) -> None:
    survives(lambda: [classify(raw)])
