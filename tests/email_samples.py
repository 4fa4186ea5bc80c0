"""Every built-in email, rendered from the sample articles as readers receive it.

The digest, a single article, a drip step and the double opt-in confirmation, each
filled with realistic recipient values (long signed URLs, a long address), with a
wide hero image and an article image without a width, as staff content brings them.
Used by the browser tests (tests/test_email_clients.py) and the Outlook assertions.
"""

from __future__ import annotations

import base64
import struct
import zlib
from dataclasses import replace
from pathlib import Path

from newsletter.content.importer import import_articles
from newsletter.content.models import Article
from newsletter.content.series import get_series, published_in_order
from newsletter.content.views import article_view
from newsletter.db import make_engine, make_sessionmaker, upgrade
from newsletter.rendering.model import ArticleView, EmailContent, Sender, Snapshot
from newsletter.rendering.preview import fill_html
from newsletter.rendering.render import render_email
from newsletter.services.confirmation import (
    ConfirmationLink,
    ConfirmationSender,
    confirmation_snapshot,
)
from tests.factories import BASE_URL, POSTAL_ADDRESS, SAMPLE_ARTICLES, SERIES, settings_for

SENDER = Sender(
    "Riverside Clinic",
    POSTAL_ADDRESS,
    "This newsletter shares general health information. It is not medical advice; "
    "please talk to your own clinician about your care.",
)
TOKEN = "dToxMjM0NTY6Nzg5OjA.r4bjdFzQo2EUu9E9sdL0cA"
VALUES = {
    "name": "Alexandra",
    "email": "alexandra.whitfield-longname@example.org",
    "unsubscribe_url": f"{BASE_URL}/unsubscribe/{TOKEN}",
    "preferences_url": f"{BASE_URL}/preferences/{TOKEN}",
    "next_url": f"{BASE_URL}/next/{TOKEN}",
}


def png(width: int, height: int, rgb: tuple[int, int, int] = (29, 106, 94)) -> str:
    """A solid PNG as a data: URI (no network, a real image of that size)."""
    row = b"\x00" + bytes(rgb) * width
    raw = zlib.compress(row * height)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


HERO = png(1200, 600)
BODY_IMAGE = f'<p><img src="{png(900, 300, (200, 170, 90))}" alt="A chart of visits"></p>'


def _series(tmp: Path) -> list[ArticleView]:
    settings = settings_for(f"sqlite:///{tmp / 'samples.db'}")
    engine = make_engine(settings.database_url)
    upgrade(engine)
    with make_sessionmaker(engine)() as session:
        import_articles(session, [SAMPLE_ARTICLES])
        session.flush()
        articles: list[Article] = published_in_order(session, get_series(session, SERIES).id)
        views = [article_view(session, a, BASE_URL) for a in articles]
    engine.dispose()
    return views


def _content(articles: tuple[ArticleView, ...], **extra: object) -> EmailContent:
    return EmailContent(
        subject="{{ slot('name', 'Reader') }}, understanding treatment options",
        preheader="Five short articles on ketamine infusions, TMS and continuing care.",
        articles=articles,
        list_name="Riverside Clinic news",
        sender_name="Riverside Clinic",
        web_url=f"{BASE_URL}/archive/emails/{TOKEN[:22]}",
        extra=dict(extra),
        sender=SENDER,
    )


def builtin_emails(tmp: Path) -> dict[str, Snapshot]:
    """digest, article, sequence step and confirmation, as rendered for sending."""
    views = _series(tmp)
    hero = replace(views[0], image=HERO, image_alt="")
    illustrated = replace(views[1], image=HERO, body_html=views[1].body_html + BODY_IMAGE)
    sender = replace(ConfirmationSender.from_settings(settings_for("sqlite://")), sender=SENDER)
    link = ConfirmationLink(
        ("Riverside Clinic news", "Events at the clinic"), f"{BASE_URL}/confirm/{TOKEN}"
    )
    return {
        "digest": render_email("digest", _content((hero, *views[1:]))),
        "article": render_email("article", _content((illustrated,))),
        "sequence-step": render_email("article", _content((views[2],), sequence=True)),
        "confirmation": confirmation_snapshot(sender, link),
    }


def filled(snapshot: Snapshot) -> str:
    """The HTML as a reader receives it."""
    return fill_html(snapshot, VALUES)
