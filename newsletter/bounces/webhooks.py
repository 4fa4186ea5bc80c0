"""Provider webhooks: check who sent them, then read their events as bounce reports.

    NewsletterError
    └── WebhookError               carries the HTTP status the endpoint answers
        ├── WebhookDisabled        404: no secret configured for this provider
        ├── MalformedWebhook       400: not the provider's payload shape
        ├── UnauthenticatedWebhook 401: no signature or credentials at all
        ├── ForgedWebhook          403: wrong signature or credentials, stale
        │                               timestamp, foreign topic or certificate URL
        └── CertificateUnavailable 503: the SNS signing certificate could not be had

How each provider proves itself:

- Mailgun: HMAC-SHA256 of `timestamp + token` with the webhook signing key, in the
  body; timestamps more than five minutes away from now are refused, as Mailgun
  recommends. The signature does not cover the event data, so the caller remembers
  each token with a digest of its data (`SignedToken`, bounces/replay.py) and
  refuses the token with any other data.
- SendGrid (signed Event Webhook): ECDSA P-256 / SHA-256 over `timestamp + body`,
  base64 DER signature in `X-Twilio-Email-Event-Webhook-Signature`; the public key
  is the one SendGrid shows (base64 DER) or PEM. SendGrid documents no freshness
  window and its own verifier has none; a replayed batch is harmless anyway, since
  every event carries an `sg_event_id`.
- Postmark has no signature: its webhook URL carries HTTP basic credentials
  (`https://user:password@host/webhooks/postmark`), compared in constant time.
- Amazon SES via SNS: the SNS message signature (SignatureVersion 1 = SHA1,
  2 = SHA256, RSA PKCS#1 v1.5) over the canonical string, checked with the signing
  certificate, which must come over HTTPS from `sns.<region>.amazonaws.com` (the
  region of the topic) and be within its validity dates; the TopicArn must be one
  we configured. TLS to an AWS host vouches for the certificate. The fetch is a
  callable, so tests use a local key pair and never touch the network. SNS redelivers
  the same signed message on retries, so there is no freshness window either; the
  MessageId makes a replay harmless.

A SubscriptionConfirmation for a configured topic is confirmed by
`confirm_sns_subscription`, which GETs the ConfirmSubscription URL it builds itself
from the message's region, TopicArn and Token (never a URL the message names).

Bodies are JSON: one that is not, that nests deeper than the parser goes, or that
holds a NUL character (no database column takes one) is a MalformedWebhook.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from newsletter.bounces.dsn import (
    BounceReport,
    Kind,
    RecipientResult,
    failure_code,
    is_mailbox_full,
    make_report,
    ses_notification_report,
)
from newsletter.config import Settings
from newsletter.errors import NewsletterError

MAILGUN_TOLERANCE_SECONDS = 300
SENDGRID_SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
# AWS regions (us-east-1, us-gov-west-1, cn-north-1, ap-southeast-4…) and SNS's hosts.
AWS_REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}$")
SNS_HOST = re.compile(r"^sns\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")
SNS_CERTIFICATE_PATH = re.compile(r"^/SimpleNotificationService-[0-9a-f]{16,64}\.pem$")
SNS_TOKEN = re.compile(r"^[0-9A-Za-z]{1,2048}$")
MAX_CERTIFICATES = 32  # signing certificates kept in memory by the default fetcher


class WebhookError(NewsletterError):
    """A webhook request we refuse; `status_code` is the HTTP answer."""

    status_code = 400


class WebhookDisabled(WebhookError):
    status_code = 404


class MalformedWebhook(WebhookError):
    status_code = 400


class UnauthenticatedWebhook(WebhookError):
    status_code = 401


class ForgedWebhook(WebhookError):
    status_code = 403


class CertificateUnavailable(WebhookError):
    status_code = 503


@dataclass(frozen=True)
class WebhookSecrets:
    """What each provider's requests are checked against; empty disables it."""

    mailgun_key: str = ""
    sendgrid_public_key_pem: str = ""  # PEM, or the base64 DER key SendGrid shows
    postmark_user: str = ""
    postmark_password: str = ""
    sns_topic_arns: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookSecrets:
        """From the `webhook_*` settings (NEWSLETTER_WEBHOOK_*)."""
        arns = settings.webhook_sns_topic_arns.split(",")
        return cls(
            mailgun_key=settings.webhook_mailgun_key.strip(),
            sendgrid_public_key_pem=settings.webhook_sendgrid_public_key.strip(),
            postmark_user=settings.webhook_postmark_user.strip(),
            postmark_password=settings.webhook_postmark_password.strip(),
            sns_topic_arns=frozenset(a.strip() for a in arns if a.strip()),
        )


def parse_json(body: bytes | str, what: str = "the body") -> Any:
    """The JSON document; MalformedWebhook when it is not JSON, nests too deeply for
    the parser, or holds a NUL character anywhere."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedWebhook(f"{what} is not JSON") from exc
    except RecursionError as exc:
        raise MalformedWebhook(f"{what} is JSON nested too deeply") from exc
    if _holds_nul(document):
        raise MalformedWebhook(f"{what} holds a NUL character")
    return document


def _holds_nul(document: Any) -> bool:
    """Whether any string or key in the document holds U+0000 (walked without
    recursion, however deep the document)."""
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


@dataclass(frozen=True)
class SignedToken:
    """A signature's one-time token and a digest of the data it arrived with."""

    provider: str
    token: str
    digest: str
    fresh_seconds: int  # how long the provider's timestamps are accepted


def _digest(data: object) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _event_id(value: object, event: object) -> str:
    """The provider's id for the event, else a hash of the event itself."""
    if isinstance(value, str | int) and str(value):
        return str(value)
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _one_recipient(
    kind: Kind, event_id: str, address: object, status: str = "", diagnostic: str = ""
) -> BounceReport:
    if kind in (Kind.not_bounce, Kind.autoreply) or not isinstance(address, str) or not address:
        return make_report(kind, event_id)
    return make_report(kind, event_id, [RecipientResult(address, kind, status, diagnostic)])


def _permanent_failure_kind(status: str, reply: object, text: str) -> Kind:
    """Hard, or soft for a full mailbox or a 4xx reply: the rule `dsn` applies to mail."""
    if is_mailbox_full([status], text) or status.startswith("4") or str(reply).startswith("4"):
        return Kind.soft
    return Kind.hard


# --- Mailgun ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MailgunWebhook:
    """A verified Mailgun webhook: its reports, and the token the caller must
    remember (with `replay.remember_signature`) before acting on them."""

    reports: list[BounceReport]
    signed: SignedToken


def mailgun_reports(body: bytes, signing_key: str, now: float) -> MailgunWebhook:
    """The event of a signed Mailgun webhook (`{"signature": …, "event-data": …}`)."""
    if not signing_key:
        raise WebhookDisabled("the Mailgun webhook is not configured")
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise MalformedWebhook("a Mailgun webhook body is a JSON object")
    signature = payload.get("signature")
    if not isinstance(signature, dict):
        raise UnauthenticatedWebhook("the Mailgun webhook is not signed")
    verify_mailgun(signature, signing_key, now)
    event = payload.get("event-data")
    if not isinstance(event, dict):
        raise MalformedWebhook("the Mailgun webhook has no event-data")
    token = str(signature.get("token", ""))
    signed = SignedToken("mailgun", token, _digest(event), MAILGUN_TOLERANCE_SECONDS)
    return MailgunWebhook([mailgun_report(event, token)], signed)


def verify_mailgun(signature: Mapping[str, Any], signing_key: str, now: float) -> None:
    """Raise unless `signature` is Mailgun's HMAC of timestamp+token and fresh."""
    timestamp, token = str(signature.get("timestamp", "")), str(signature.get("token", ""))
    given = str(signature.get("signature", ""))
    if not (timestamp and token and given):
        raise UnauthenticatedWebhook("the Mailgun signature is incomplete")
    expected = hmac.new(
        signing_key.encode("utf-8"), (timestamp + token).encode("utf-8"), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, given.lower()):
        raise ForgedWebhook("the Mailgun signature does not match")
    try:
        age = abs(now - float(timestamp))
    except ValueError as exc:
        raise ForgedWebhook("the Mailgun timestamp is not a number") from exc
    if age > MAILGUN_TOLERANCE_SECONDS:
        raise ForgedWebhook("the Mailgun timestamp is too old (or too far ahead)")


def mailgun_report(event: Mapping[str, Any], token: str = "") -> BounceReport:
    """`failed` (permanent: hard, or soft when the mailbox is full; temporary:
    delayed, or soft when Mailgun gave up with reason `old`), `complained`:
    complaint; other events are not bounces."""
    # event-data.id is stable across Mailgun's retries of one event.
    event_id = _event_id(event.get("id") or token, event)
    name, reason = event.get("event"), event.get("reason")
    delivery = event.get("delivery-status")
    delivery = delivery if isinstance(delivery, Mapping) else {}
    message = " ".join(
        str(delivery.get(k) or "") for k in ("message", "description") if delivery.get(k)
    )
    status = failure_code(str(delivery.get("enhanced-code") or "")) or failure_code(message)
    recipient = event.get("recipient")
    if name == "complained" or (name == "failed" and reason == "suppress-complaint"):
        return _one_recipient(Kind.complaint, event_id, recipient)
    if name != "failed" or reason == "suppress-unsubscribe":
        return make_report(Kind.not_bounce, event_id)
    if event.get("severity") == "temporary":
        kind = Kind.soft if reason == "old" else Kind.delayed
    else:
        kind = _permanent_failure_kind(status, delivery.get("code"), message)
    return _one_recipient(kind, event_id, recipient, status, message)


# --- SendGrid --------------------------------------------------------------------------


def sendgrid_reports(
    body: bytes, signature: str | None, timestamp: str | None, public_key: str
) -> list[BounceReport]:
    """The events of a signed SendGrid Event Webhook batch (a JSON array)."""
    if not public_key:
        raise WebhookDisabled("the SendGrid webhook is not configured")
    if not signature or not timestamp:
        raise UnauthenticatedWebhook("the SendGrid webhook is not signed")
    verify_sendgrid(body, signature, timestamp, public_key)
    events = parse_json(body)
    if not isinstance(events, list):
        raise MalformedWebhook("a SendGrid webhook body is a JSON array")
    return [sendgrid_report(e) for e in events if isinstance(e, dict)]


def verify_sendgrid(body: bytes, signature: str, timestamp: str, public_key: str) -> None:
    """Raise unless `signature` is SendGrid's ECDSA signature of timestamp+body."""
    key = _sendgrid_public_key(public_key)
    try:
        der = base64.b64decode(signature, validate=True)
        key.verify(der, timestamp.encode("utf-8") + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature) as exc:
        raise ForgedWebhook("the SendGrid signature does not match") from exc


def _sendgrid_public_key(configured: str) -> ec.EllipticCurvePublicKey:
    try:
        if "BEGIN PUBLIC KEY" in configured:
            key = serialization.load_pem_public_key(configured.encode("ascii"))
        else:
            key = serialization.load_der_public_key(base64.b64decode("".join(configured.split())))
    except (ValueError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise WebhookDisabled("the configured SendGrid public key cannot be read") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise WebhookDisabled("the configured SendGrid public key is not an EC key")
    return key


def sendgrid_report(event: Mapping[str, Any]) -> BounceReport:
    """`bounce` (hard; soft when `type` is `blocked`, the mailbox is full or the
    status is 4.x.x), `deferred`: delayed, `spamreport`: complaint, `dropped` for a
    known-bad or complaining address; other events are not bounces."""
    event_id = _event_id(event.get("sg_event_id"), event)
    name, address = event.get("event"), event.get("email")
    reason = str(event.get("reason") or event.get("response") or "")
    status = failure_code(str(event.get("status") or "")) or failure_code(reason)
    if name == "bounce":
        blocked = event.get("type") == "blocked"
        kind = Kind.soft if blocked else _permanent_failure_kind(status, reason, reason)
        return _one_recipient(kind, event_id, address, status, reason)
    if name == "deferred":
        return _one_recipient(Kind.delayed, event_id, address, status, reason)
    if name == "spamreport":
        return _one_recipient(Kind.complaint, event_id, address)
    if name == "dropped" and reason in ("Bounced Address", "Invalid"):
        return _one_recipient(Kind.hard, event_id, address, status, reason)
    if name == "dropped" and reason == "Spam Reporting Address":
        return _one_recipient(Kind.complaint, event_id, address)
    return make_report(Kind.not_bounce, event_id)


# --- Postmark --------------------------------------------------------------------------

POSTMARK_KINDS = {
    "HardBounce": Kind.hard,
    "BadEmailAddress": Kind.hard,
    "SoftBounce": Kind.soft,
    "DnsError": Kind.soft,
    "Blocked": Kind.soft,
    "Transient": Kind.delayed,  # "message delayed": Postmark keeps trying
    "SpamComplaint": Kind.complaint,
    "AutoResponder": Kind.autoreply,
}


def postmark_reports(
    body: bytes, authorization: str | None, user: str, password: str
) -> list[BounceReport]:
    """The event of a Postmark webhook that carried the configured basic credentials."""
    if not (user and password):
        raise WebhookDisabled("the Postmark webhook is not configured")
    verify_basic_auth(authorization, user, password)
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise MalformedWebhook("a Postmark webhook body is a JSON object")
    return [postmark_report(payload)]


def verify_basic_auth(authorization: str | None, user: str, password: str) -> None:
    """Raise unless the Authorization header carries exactly these credentials."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise UnauthenticatedWebhook("the Postmark webhook sent no credentials")
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ForgedWebhook("the Postmark credentials are malformed") from exc
    expected = f"{user}:{password}".encode()
    if not hmac.compare_digest(given, expected):
        raise ForgedWebhook("the Postmark credentials are wrong")


def postmark_report(payload: Mapping[str, Any]) -> BounceReport:
    """A Bounce or SpamComplaint record (by `Type`); other records are not bounces."""
    record = str(payload.get("RecordType") or "")
    event_id = f"{record}:{_event_id(payload.get('ID'), payload)}"
    if record not in ("Bounce", "SpamComplaint"):
        return make_report(Kind.not_bounce, event_id)
    kind = POSTMARK_KINDS.get(str(payload.get("Type") or ""), Kind.not_bounce)
    details = str(payload.get("Details") or payload.get("Description") or "")
    return _one_recipient(kind, event_id, payload.get("Email"), failure_code(details), details)


# --- Amazon SES via SNS ----------------------------------------------------------------

CertificateFetcher = Callable[[str], bytes]

_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_FIELDS["UnsubscribeConfirmation"] = _SIGNED_FIELDS["SubscriptionConfirmation"]


def read_sns_message(
    body: bytes,
    topic_arns: frozenset[str],
    fetch_certificate: CertificateFetcher,
    now: datetime,
) -> dict[str, Any]:
    """The SNS message in the body, once its topic and signature are checked."""
    if not topic_arns:
        raise WebhookDisabled("the SES (SNS) webhook is not configured")
    message = parse_json(body)
    if not isinstance(message, dict) or not isinstance(message.get("Type"), str):
        raise MalformedWebhook("not an SNS message")
    if not message.get("Signature") or not message.get("SigningCertURL"):
        raise UnauthenticatedWebhook("the SNS message is not signed")
    topic = message.get("TopicArn")
    if not isinstance(topic, str) or topic not in topic_arns:
        raise ForgedWebhook("the SNS message comes from a topic we did not configure")
    verify_sns(message, fetch_certificate, now)
    return message


def verify_sns(
    message: Mapping[str, Any], fetch_certificate: CertificateFetcher, now: datetime
) -> None:
    """Raise unless the message is signed by the SNS certificate it names."""
    fields = _SIGNED_FIELDS.get(str(message.get("Type")))
    if fields is None:
        raise MalformedWebhook(f"unknown SNS message type {message.get('Type')!r}")
    algorithm: hashes.HashAlgorithm
    version = str(message.get("SignatureVersion", "1"))
    if version == "1":
        algorithm = hashes.SHA1()  # what SNS SignatureVersion 1 is defined to use
    elif version == "2":
        algorithm = hashes.SHA256()
    else:
        raise ForgedWebhook(f"unknown SNS SignatureVersion {version!r}")
    url = str(message.get("SigningCertURL"))
    check_sns_certificate_url(url, str(message.get("TopicArn", "")))
    certificate = _load_certificate(fetch_certificate, url)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise ForgedWebhook("the SNS signing certificate is not valid now")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ForgedWebhook("the SNS signing certificate has no RSA key")
    try:
        signature = base64.b64decode(str(message.get("Signature")), validate=True)
        key.verify(signature, sns_string_to_sign(message), padding.PKCS1v15(), algorithm)
    except (binascii.Error, ValueError, InvalidSignature) as exc:
        raise ForgedWebhook("the SNS signature does not match") from exc


def sns_string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The canonical "Name\\nvalue\\n" string SNS signs (Subject only when present)."""
    fields = _SIGNED_FIELDS.get(str(message.get("Type")), ())
    lines = []
    for name in fields:
        if name in message and message[name] is not None:
            lines.append(f"{name}\n{message[name]}\n")
        elif name != "Subject":
            raise MalformedWebhook(f"the SNS message has no {name}")
    return "".join(lines).encode("utf-8")


def sns_region(topic_arn: str) -> str:
    """The region of an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME); ForgedWebhook
    when the ARN names none that AWS has."""
    parts = topic_arn.split(":")
    if len(parts) != 6 or parts[2] != "sns" or not AWS_REGION.match(parts[3]):
        raise ForgedWebhook("the SNS TopicArn is not an SNS topic of an AWS region")
    return parts[3]


def _sns_host(region: str) -> str:
    suffix = ".cn" if region.startswith("cn-") else ""
    return f"sns.{region}.amazonaws.com{suffix}"


def check_sns_certificate_url(url: str, topic_arn: str) -> None:
    """Raise unless `url` is exactly the shape of an SNS signing certificate's URL,
    https://sns.<the topic's region>.amazonaws.com/SimpleNotificationService-<hex>.pem:
    no other host, port, credentials, path, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    match = SNS_HOST.match(host)
    if (
        parts.scheme != "https"
        or match is None
        or parts.netloc != host
        or not SNS_CERTIFICATE_PATH.match(parts.path)
        or parts.query
        or parts.fragment
    ):
        raise ForgedWebhook(f"{url[:200]!r} is not an Amazon SNS signing certificate URL")
    if host != _sns_host(sns_region(topic_arn)):
        raise ForgedWebhook("the SNS certificate URL is not in the topic's region")


def sns_subscribe_url(message: Mapping[str, Any]) -> str:
    """The ConfirmSubscription URL for a SubscriptionConfirmation, built from its
    TopicArn (region) and Token, whatever URL the message itself names."""
    topic_arn = str(message.get("TopicArn", ""))
    token = str(message.get("Token", ""))
    if not SNS_TOKEN.match(token):
        raise MalformedWebhook("the SNS subscription token is not what SNS sends")
    query = urlencode(
        {"Action": "ConfirmSubscription", "TopicArn": topic_arn, "Token": token}, safe=":"
    )
    return f"https://{_sns_host(sns_region(topic_arn))}/?{query}"


def _load_certificate(fetch_certificate: CertificateFetcher, url: str) -> x509.Certificate:
    try:
        pem = fetch_certificate(url)
    except Exception as exc:  # any transport failure: SNS will retry
        raise CertificateUnavailable(f"cannot fetch the SNS signing certificate: {exc}") from exc
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise ForgedWebhook("the SNS signing certificate cannot be read") from exc


def ses_reports(message: Mapping[str, Any]) -> list[BounceReport]:
    """The SES notification inside a verified SNS Notification, keyed by MessageId."""
    notification = parse_json(str(message.get("Message", "")), "the SNS Message")
    if not isinstance(notification, dict):
        raise MalformedWebhook("the SNS Message is not an SES notification")
    return [ses_notification_report(notification, str(message["MessageId"]))]


def confirm_sns_subscription(message: Mapping[str, Any], get: Callable[[str], object]) -> str:
    """Confirm a verified SubscriptionConfirmation by GETting SNS's ConfirmSubscription
    for its topic and token (`sns_subscribe_url`).

    Call it only with a message that `read_sns_message` accepted (signed, and for a
    topic we configured). Returns the URL. `get` is the HTTP GET to use (injected in
    tests).
    """
    url = sns_subscribe_url(message)
    get(url)
    return url


class HttpsGetter:
    """GETs Amazon SNS URLs over HTTPS; signing certificates are cached by URL."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._certificates: dict[str, bytes] = {}

    def __call__(self, url: str) -> bytes:
        import httpx

        cached = self._certificates.get(url)
        if cached is not None:
            return cached
        response = httpx.get(url, timeout=self.timeout, follow_redirects=False)
        response.raise_for_status()
        if url.endswith(".pem"):
            if len(self._certificates) >= MAX_CERTIFICATES:
                self._certificates.clear()
            self._certificates[url] = response.content
        return response.content
