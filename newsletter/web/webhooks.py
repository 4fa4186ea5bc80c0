"""Webhook endpoints for bounce and complaint events: POST /webhooks/{provider}.

Include `router` in the web app. Each endpoint reads the app's settings from
`request.app.state.settings` (the `webhook_*` fields, see `WebhookSecrets`) and opens
sessions from `request.app.state.sessions`; bounces.actions decides what an event
does. A provider with no secret configured answers 404; an unsigned request 401; a
forged or stale one 403 and changes nothing; a valid one 200 with counts of what was
done. A replayed event answers 200 and changes nothing; a Mailgun signature sent
again with other event data is forged (bounces/replay.py).

Whatever can be checked without the body is checked before a byte of it is read: a
disabled provider, Postmark's credentials, SendGrid's signature headers. The body's
size is bounded while it streams (web/guards.py, NEWSLETTER_WEBHOOK_MAX_BODY_BYTES).

Amazon SNS signing certificates and subscription confirmations are fetched through
`request.app.state.sns_http_get` when the app sets it (a callable `url -> bytes`;
tests set one), else over HTTPS with `HttpsGetter`.
"""

from __future__ import annotations

import time
from collections import Counter

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from newsletter.bounces.actions import Action, apply_report
from newsletter.bounces.dsn import BounceReport
from newsletter.bounces.replay import remember_signature
from newsletter.bounces.webhooks import (
    SENDGRID_SIGNATURE_HEADER,
    SENDGRID_TIMESTAMP_HEADER,
    CertificateFetcher,
    HttpsGetter,
    SignedToken,
    UnauthenticatedWebhook,
    WebhookDisabled,
    WebhookError,
    WebhookSecrets,
    confirm_sns_subscription,
    mailgun_reports,
    postmark_reports,
    read_sns_message,
    sendgrid_reports,
    ses_reports,
    verify_basic_auth,
)
from newsletter.config import Settings
from newsletter.db import utcnow

router = APIRouter()
_default_getter = HttpsGetter()


@router.post("/webhooks/mailgun")
async def mailgun_webhook(request: Request) -> JSONResponse:
    secrets = _secrets(request)
    try:
        _enabled(secrets.mailgun_key, "Mailgun")
        body = await request.body()
        webhook = mailgun_reports(body, secrets.mailgun_key, now=time.time())
        return await _apply(request, webhook.reports, "mailgun", webhook.signed)
    except WebhookError as exc:
        return _refusal(exc)


@router.post("/webhooks/sendgrid")
async def sendgrid_webhook(request: Request) -> JSONResponse:
    secrets = _secrets(request)
    try:
        _enabled(secrets.sendgrid_public_key_pem, "SendGrid")
        signature = request.headers.get(SENDGRID_SIGNATURE_HEADER)
        if not signature or not request.headers.get(SENDGRID_TIMESTAMP_HEADER):
            raise UnauthenticatedWebhook("the SendGrid webhook is not signed")
        body = await request.body()
        reports = sendgrid_reports(
            body,
            request.headers.get(SENDGRID_SIGNATURE_HEADER),
            request.headers.get(SENDGRID_TIMESTAMP_HEADER),
            secrets.sendgrid_public_key_pem,
        )
    except WebhookError as exc:
        return _refusal(exc)
    return await _apply(request, reports, "sendgrid")


@router.post("/webhooks/postmark")
async def postmark_webhook(request: Request) -> JSONResponse:
    secrets = _secrets(request)
    try:
        _enabled(secrets.postmark_user and secrets.postmark_password, "Postmark")
        verify_basic_auth(
            request.headers.get("Authorization"), secrets.postmark_user, secrets.postmark_password
        )
        body = await request.body()
        reports = postmark_reports(
            body,
            request.headers.get("Authorization"),
            secrets.postmark_user,
            secrets.postmark_password,
        )
    except WebhookError as exc:
        return _refusal(exc)
    return await _apply(request, reports, "postmark")


@router.post("/webhooks/ses")
async def ses_webhook(request: Request) -> JSONResponse:
    secrets = _secrets(request)
    http_get: CertificateFetcher = getattr(request.app.state, "sns_http_get", _default_getter)
    try:
        _enabled(secrets.sns_topic_arns, "SES (SNS)")
        body = await request.body()
        # Fetching the certificate is blocking I/O: keep it off the event loop.
        message = await run_in_threadpool(
            read_sns_message, body, secrets.sns_topic_arns, http_get, utcnow()
        )
        if message["Type"] == "SubscriptionConfirmation":
            url = await run_in_threadpool(confirm_sns_subscription, message, http_get)
            return JSONResponse({"confirmed": url})
        if message["Type"] != "Notification":
            return JSONResponse({"events": 0})
        reports = ses_reports(message)
    except WebhookError as exc:
        return _refusal(exc)
    return await _apply(request, reports, "ses")


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _secrets(request: Request) -> WebhookSecrets:
    return WebhookSecrets.from_settings(_settings(request))


def _enabled(secret: object, provider: str) -> None:
    """WebhookDisabled (404) unless the provider has its secret: said before reading."""
    if not secret:
        raise WebhookDisabled(f"the {provider} webhook is not configured")


def _refusal(error: WebhookError) -> JSONResponse:
    headers = {}
    if isinstance(error, UnauthenticatedWebhook):
        headers["WWW-Authenticate"] = 'Basic realm="newsletter webhooks"'
    return JSONResponse({"error": str(error)}, status_code=error.status_code, headers=headers)


async def _apply(
    request: Request, reports: list[BounceReport], source: str, signed: SignedToken | None = None
) -> JSONResponse:
    limit = _settings(request).soft_bounce_limit
    counts = await run_in_threadpool(
        _apply_all, request.app.state.sessions, reports, source, limit, signed
    )
    return JSONResponse(counts)


def _apply_all(
    sessions: sessionmaker[Session],
    reports: list[BounceReport],
    source: str,
    limit: int,
    signed: SignedToken | None,
) -> dict[str, int]:
    """Act on every event of one request in one transaction: all of it, or none; a
    signature token is remembered in the same transaction (ForgedWebhook when it
    came with other data before)."""
    actions: Counter[str] = Counter()
    with sessions() as session:
        if signed is not None:
            remember_signature(session, signed, utcnow())
        for report in reports:
            for outcome in apply_report(session, report, source, limit):
                actions[outcome.action] += 1
        session.commit()
    return {"events": len(reports), **{str(a): actions[a] for a in Action}}
