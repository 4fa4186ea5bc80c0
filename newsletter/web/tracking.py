"""Tracked links and the open pixel: `/t/c/{token}` and `/t/o/{token}.gif`.

A genuine click answers 302 to the link's destination, kept in the database (so there
is no open redirect, and a corrected destination applies at once); a forged, altered
or unknown token answers 404 and counts nothing. Both GET and HEAD are answered and
recorded; HEAD, prefetches and scanners are labelled machine (tracking/classify.py).
Nothing of the request is kept but a class of its user agent and a day-salted hash
of its address; the redirect carries `Referrer-Policy: no-referrer`, so the
destination never sees the token.
"""

from __future__ import annotations

import base64

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from newsletter.tracking.events import HitRequest, TrackingConfig, record_hit
from newsletter.tracking.models import EventKind
from newsletter.tracking.tokens import InvalidTrackingToken, TrackingSigner
from newsletter.web.common import SessionDep, Web, client_ip

# A transparent 1×1 GIF.
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {
    "Cache-Control": "no-store, private",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
}


def _hit_request(request: Request) -> HitRequest:
    return HitRequest(
        method=request.method,
        user_agent=request.headers.get("user-agent", ""),
        headers={k.lower(): v for k, v in request.headers.items()},
        client_address=client_ip(request),
    )


def routes(web: Web) -> APIRouter:
    app = APIRouter()
    settings = web.settings
    signer = TrackingSigner(settings.secret_key, settings.old_secret_keys)
    config = TrackingConfig(
        secret_key=settings.secret_key,
        machine_seconds=settings.tracking_machine_seconds,
        burst_seconds=settings.tracking_burst_seconds,
    )

    def not_found(request: Request) -> Response:
        response = web.message(
            request, 404, "This link does not work", "It may be incomplete: copy it whole."
        )
        response.headers.update(NO_STORE)
        return response

    @app.api_route("/t/c/{token}", methods=["GET", "HEAD"], include_in_schema=False)
    def click(request: Request, token: str, session: SessionDep) -> Response:
        try:
            hit = signer.verify(token)
        except InvalidTrackingToken:
            return not_found(request)
        destination = record_hit(session, hit, EventKind.click, _hit_request(request), config)
        if not destination:
            return not_found(request)
        return RedirectResponse(destination, status_code=302, headers=NO_STORE)

    @app.api_route("/t/o/{token}.gif", methods=["GET", "HEAD"], include_in_schema=False)
    def pixel(request: Request, token: str, session: SessionDep) -> Response:
        try:
            hit = signer.verify(token)
        except InvalidTrackingToken:
            return Response(status_code=404, headers=NO_STORE)
        if record_hit(session, hit, EventKind.open, _hit_request(request), config) is None:
            return Response(status_code=404, headers=NO_STORE)
        return Response(PIXEL_GIF, media_type="image/gif", headers=NO_STORE)

    return app
