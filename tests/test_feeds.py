"""RSS and Atom feeds: parsing real documents, importing by entry id, polling over HTTP.

The documents in tests/data/feeds/ are real feeds and labelled malformed ones (see the
README there). HTTP tests talk to a real server on 127.0.0.1, never to mocks; since
feeds are fetched only from public addresses, they allow that one address (LOOPBACK),
as an operator would with NEWSLETTER_FEEDS_ALLOWED_NETWORKS.
"""

from __future__ import annotations

import codecs
import csv
import shutil
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.config import parse_networks
from newsletter.content.feeds import (
    FeedEntry,
    FeedError,
    add_feed,
    feed_fetcher,
    fetch_feed,
    import_feed,
    import_feed_entries,
    is_feed_source,
    list_feeds,
    parse_every,
    parse_feed,
    poll_due_feeds,
)
from newsletter.content.models import Article, Feed
from newsletter.content.series import get_article, get_series
from newsletter.errors import InvalidInputError
from tests.feed_server import FeedServer, Route

FEEDS = Path(__file__).resolve().parent / "data" / "feeds"
with (FEEDS / "labels.csv").open(encoding="utf-8", newline="") as _labels:
    LABELS = list(csv.DictReader(_labels))
WELL_FORMED = [row for row in LABELS if row["well_formed"] == "yes"]
MALFORMED = [row for row in LABELS if row["well_formed"] == "no"]
NOW = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
LOOPBACK = parse_networks("127.0.0.1/32")  # where tests/feed_server.py listens
LOCAL = feed_fetcher(LOOPBACK)


def article_count(session: Session) -> int:
    return session.scalar(select(func.count(Article.id))) or 0


def feed_file(name: str) -> str:
    return str(FEEDS / name)


def rss(items: str, channel_link: str = "https://blog.example.org/") -> bytes:
    """A small RSS 2.0 document around the given <item> elements."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">\n'
        f"<channel><title>Test</title><link>{channel_link}</link>\n{items}\n</channel></rss>\n"
    ).encode()


def entry(guid: str, title: str, published: datetime = NOW) -> FeedEntry:
    return FeedEntry(
        guid=guid,
        title=title,
        link=f"https://blog.example.org/{guid}",
        summary="",
        body_html="<p>Body.</p>",
        author="",
        published=published,
        dated=True,
        image="",
        tags=(),
    )


# --- the labelled corpus -------------------------------------------------------------


def test_copied_corpus_covers_rss2_atom_rss1_and_every_malformed_file() -> None:
    formats = Counter(row["format"] for row in WELL_FORMED)

    assert formats["RSS 2.0"] >= 3 and formats["Atom 1.0"] >= 3 and formats["RSS 1.0"] >= 1
    assert len(MALFORMED) == 5
    assert {row["file"] for row in LABELS} == {path.name for path in FEEDS.glob("*.xml")}


@pytest.mark.parametrize(
    ("name", "entries"),
    [pytest.param(row["file"], int(row["entries"]), id=row["file"]) for row in WELL_FORMED],
)
def test_well_formed_feed_imports_its_labelled_number_of_entries(
    session: Session, name: str, entries: int
) -> None:
    # Our rules skip only entries with neither title nor link; no labelled feed has one.
    report = import_feed(session, feed_file(name))

    assert (report.created, report.updated, report.unchanged) == (entries, 0, 0)
    assert report.problems == []
    articles = session.scalars(select(Article)).all()
    assert len(articles) == entries
    assert all(a.guid and a.title and a.published_at is not None for a in articles)
    assert all(a.published_at.tzinfo is not None for a in articles if a.published_at)


@pytest.mark.parametrize("name", [pytest.param(row["file"], id=row["file"]) for row in MALFORMED])
def test_malformed_feed_raises_naming_the_file_and_imports_nothing(
    session: Session, name: str
) -> None:
    import_feed(session, feed_file("05-rss2-kernel-org-releases.xml"))
    before = article_count(session)

    with pytest.raises(FeedError, match="not well-formed XML") as raised:
        import_feed(session, feed_file(name))

    assert name in str(raised.value)
    assert article_count(session) == before == 1


def test_malformed_feed_error_gives_the_line_in_the_file() -> None:
    data = (FEEDS / "18-bad-rss2-undefined-html-entity-nbsp.xml").read_bytes()

    with pytest.raises(FeedError, match=r"line 8, column 104: undefined entity"):
        parse_feed(data, "18.xml")


def test_encoding_errors_say_what_the_bytes_are_not() -> None:
    shift_jis = (FEEDS / "20-bad-atom-shift-jis-no-encoding-decl.xml").read_bytes()
    bogus = (FEEDS / "21-bad-rss-bogus-encoding-decl.xml").read_bytes()

    with pytest.raises(FeedError, match="no encoding is declared, so it must be UTF-8"):
        parse_feed(shift_jis, "20.xml")
    with pytest.raises(FeedError, match="unknown encoding 'bogus'"):
        parse_feed(bogus, "21.xml")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"  \n", "is empty"),
        (b"<?xml version='1.0'?><note><to>Tove</to></note>", "not an RSS or Atom feed"),
        (b"<!-- hi -->\n<html><body>Blog</body></html>", "is an HTML page"),
    ],
)
def test_a_document_that_is_not_a_feed_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(FeedError, match=f"^doc.xml: {message}"):
        parse_feed(data, "doc.xml")


def test_utf16_with_byte_order_mark_needs_no_declaration() -> None:
    doc = rss("<item><title>Grüße</title><link>https://e.org/a</link></item>").decode()
    body = doc.split("?>", 1)[1]

    entries = parse_feed(codecs.BOM_UTF16_LE + body.encode("utf-16-le"), "utf16.xml")

    assert [e.title for e in entries] == ["Grüße"]


# --- what an entry becomes -----------------------------------------------------------


def test_rss_entry_fields_become_article_fields(session: Session) -> None:
    import_feed(session, feed_file("03-rss2-cloudflare-blog.xml"))

    article = get_article(session, "privacy-preserving-compromised-credential-checking")
    assert article.guid == "6166e7e065133e02a961145d"
    assert article.url == (
        "https://blog.cloudflare.com/privacy-preserving-compromised-credential-checking/"
    )
    assert article.author == "Luke Valenta"
    assert article.published_at == datetime(2021, 10, 14, 12, 59, 53, tzinfo=UTC)
    assert article.tags == ["Research", "Security", "Product News"]
    assert article.image == "https://blog.cloudflare.com/content/images/2021/10/image6-15.png"
    assert article.summary.startswith("Announcing a public demo")
    assert len(article.summary) <= 301
    assert "<figure>" in article.body_html


def test_iso_8859_1_feed_is_decoded(session: Session) -> None:
    import_feed(session, feed_file("16-rss1-golem-iso-8859-1.xml"))

    article = session.scalars(select(Article)).one()
    assert article.title == "Digitalministerium: Neue Glasfaserförderung mit Schnellkasse"


def test_relative_enclosure_image_resolves_against_the_channel_link() -> None:
    data = (FEEDS / "22-tricky-rss2-relative-enclosure-image.xml").read_bytes()

    [item] = parse_feed(data, "22.xml")

    assert item.image == "https://kryogenix.org/images/me/hackergotchi-simpler.png"


def test_relative_links_resolve_against_the_self_link_or_the_fetched_url() -> None:
    data = (FEEDS / "23-tricky-atom-relative-links.xml").read_bytes()

    [from_file] = parse_feed(data, "23.xml")
    [fetched] = parse_feed(data, "23.xml", base_url="https://mirror.example.net/feeds/a.xml")

    assert from_file.link == "https://example.com/blog/2003/12/13/atom03"
    assert fetched.link == "https://mirror.example.net/blog/2003/12/13/atom03"
    assert from_file.guid == fetched.guid == "urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a"


def test_item_without_guid_is_identified_by_its_link() -> None:
    data = (FEEDS / "24-tricky-rss2-items-without-guid.xml").read_bytes()

    [item] = parse_feed(data, "24.xml")

    assert item.guid == "https://trailers.apple.com/trailers/independent/vitalina-varela"


def test_entry_without_id_or_link_is_identified_by_a_hash_and_stays_one_article(
    session: Session,
) -> None:
    source = feed_file("25-tricky-atom03-html-script-in-title.xml")
    import_feed(session, source)

    report = import_feed(session, source)

    article = session.scalars(select(Article)).one()
    assert article.guid is not None and article.guid.startswith("sha256:")
    assert (report.created, report.updated, report.unchanged) == (0, 0, 1)


def test_script_in_an_escaped_html_title_is_removed(session: Session) -> None:
    import_feed(session, feed_file("25-tricky-atom03-html-script-in-title.xml"))

    title = session.scalars(select(Article.title)).one()
    assert title.startswith("Crazy HTML -- Can Your Regex Parse This?")
    for unsafe in ("<", "alert", "onload", "onmouseover", "notRealAttribute"):
        assert unsafe not in title


def test_entry_html_is_sanitised_like_markdown(session: Session, tmp_path: Path) -> None:
    body = (
        '<p onclick="steal()">Hello <a href="javascript:steal()">bad</a> '
        '<a href="https://ok.example.org/">good</a></p><script>alert(1)</script>'
        '<iframe src="https://evil.example"></iframe><img src="/pic.png" onerror="steal()">'
    )
    path = tmp_path / "feed.xml"
    path.write_bytes(
        rss(
            "<item><title>Unsafe</title><link>https://blog.example.org/unsafe</link>"
            f"<content:encoded><![CDATA[{body}]]></content:encoded></item>"
        )
    )

    import_feed(session, str(path))

    html = get_article(session, "unsafe").body_html
    assert "Hello" in html and 'href="https://ok.example.org/"' in html
    assert 'rel="noopener noreferrer"' in html
    assert 'src="https://blog.example.org/pic.png"' in html
    for unsafe in ("script", "alert", "onclick", "onerror", "javascript:", "iframe", "steal"):
        assert unsafe not in html


def test_entry_without_title_and_link_is_skipped_with_a_problem(
    session: Session, tmp_path: Path
) -> None:
    path = tmp_path / "feed.rss"
    path.write_bytes(
        rss(
            "<item><title>Kept</title><link>https://blog.example.org/kept</link></item>"
            "<item><description>Neither title nor link.</description></item>"
            "<item><link>https://blog.example.org/untitled</link>"
            "<description>A note without a title.</description></item>"
        )
    )

    report = import_feed(session, str(path))

    assert report.created == 2
    assert len(report.problems) == 1
    assert report.problems[0].where == f"{path}: entry 2"
    assert "neither a title nor a link" in report.problems[0].reason
    titles = set(session.scalars(select(Article.title)))
    assert titles == {"Kept", "A note without a title."}


def test_repeated_entry_id_in_one_feed_is_imported_once(session: Session) -> None:
    report = import_feed_entries(
        session, [entry("a", "First"), entry("a", "Again")], series_slug=None, source="feed"
    )

    assert report.created == 1
    assert "appears twice" in report.problems[0].reason
    assert article_count(session) == 1


# --- importing again -----------------------------------------------------------------


def test_reimport_is_idempotent(session: Session) -> None:
    source = feed_file("08-atom-reddit-media-25-entries.xml")
    import_feed(session, source)
    session.commit()
    before = {a.guid: (a.slug, a.updated_at) for a in session.scalars(select(Article))}

    report = import_feed(session, source)

    assert (report.created, report.updated, report.unchanged) == (0, 0, 25)
    session.expire_all()
    assert {a.guid: (a.slug, a.updated_at) for a in session.scalars(select(Article))} == before


def test_changed_entry_updates_its_article_and_keeps_its_slug(
    session: Session, tmp_path: Path
) -> None:
    path = tmp_path / "releases.atom"
    shutil.copy(FEEDS / "12-atom-github-releases.xml", path)
    import_feed(session, str(path))
    original = path.read_text(encoding="utf-8")
    path.write_text(original.replace("<title>0.2.0</title>", "<title>Version 0.2</title>"))

    report = import_feed(session, str(path))

    assert (report.created, report.updated, report.unchanged) == (0, 1, 3)
    article = get_article(session, "0-2-0")
    assert article.title == "Version 0.2"
    assert article.guid == "tag:github.com,2008:Repository/90976281/v0.2.0"
    assert article_count(session) == 4


def test_slug_from_title_is_made_unique(session: Session) -> None:
    session.add(Article(slug="weekly-notes", title="Written by hand"))
    session.flush()

    import_feed_entries(
        session,
        [entry("two", "Weekly notes"), entry("one", "Weekly notes", NOW - timedelta(days=7))],
        series_slug=None,
        source="feed",
    )

    slugs = dict(session.execute(select(Article.guid, Article.slug)).all())
    assert slugs == {None: "weekly-notes", "one": "weekly-notes-2", "two": "weekly-notes-3"}


def test_undated_entry_keeps_the_date_of_its_first_import(session: Session) -> None:
    undated = replace(entry("u", "Undated"), dated=False)
    import_feed_entries(session, [undated], series_slug=None, source="feed")

    later = replace(undated, published=NOW + timedelta(days=3))
    report = import_feed_entries(session, [later], series_slug=None, source="feed")

    assert report.unchanged == 1
    assert session.scalars(select(Article.published_at)).one() == NOW


# --- series ----------------------------------------------------------------------------


def test_new_entries_are_appended_to_the_series_oldest_first(session: Session) -> None:
    import_feed(session, feed_file("10-atom-the-register-science.xml"), series_slug="news")
    import_feed(session, feed_file("12-atom-github-releases.xml"), series_slug="news")

    series = get_series(session, "news")
    in_order = session.scalars(
        select(Article).where(Article.series_id == series.id).order_by(Article.position)
    ).all()
    assert [a.position for a in in_order] == [1, 2, 3, 4, 5, 6]
    register, releases = in_order[:2], in_order[2:]
    assert [a.title for a in releases] == ["0.1.0", "0.1.1", "0.1.3", "0.2.0"]
    for part in (register, releases):
        dates = [a.published_at for a in part]
        assert dates == sorted(dates)  # type: ignore[type-var]


def test_reimport_keeps_series_positions(session: Session) -> None:
    source = feed_file("12-atom-github-releases.xml")
    import_feed(session, source, series_slug="releases")
    before = dict(session.execute(select(Article.guid, Article.position)).all())

    report = import_feed(session, source, series_slug="releases")

    assert report.unchanged == 4
    assert dict(session.execute(select(Article.guid, Article.position)).all()) == before


# --- telling feeds from Markdown -----------------------------------------------------


def test_urls_and_feed_file_names_are_feed_sources(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("  \n<?xml version='1.0'?><rss/>")
    (tmp_path / "plain.txt").write_text("just text")
    (tmp_path / "post.md").write_text("---\ntitle: A\n---\n<p>html first</p>")
    (tmp_path / "folder.xml").mkdir()

    assert is_feed_source("https://blog.example.org/feed")
    assert is_feed_source("http://127.0.0.1:8000/rss")
    assert is_feed_source(str(tmp_path / "missing.atom"))
    assert is_feed_source(str(tmp_path / "notes.txt"))
    assert not is_feed_source(str(tmp_path / "plain.txt"))
    assert not is_feed_source(str(tmp_path / "post.md"))
    assert not is_feed_source(str(tmp_path / "folder.xml"))
    assert not is_feed_source(str(tmp_path))
    assert not is_feed_source("ftp://example.org/feed")


def test_missing_feed_file_is_a_clear_error(session: Session, tmp_path: Path) -> None:
    with pytest.raises(FeedError, match=r"missing\.xml: cannot read the file"):
        import_feed(session, str(tmp_path / "missing.xml"))


# --- polled feeds: registering -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("1h", 3600), ("7d", 604800), (" 2H ", 7200)]
)
def test_parse_every_reads_one_number_and_unit(text: str, seconds: int) -> None:
    assert parse_every(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "h", "1w", "0m", "1.5h", "-1h", "1h30m"])
def test_parse_every_names_a_bad_value(text: str) -> None:
    with pytest.raises(InvalidInputError, match=f"every {text!r} is not an interval"):
        parse_every(text)


def test_add_feed_registers_a_due_feed_in_a_new_series(session: Session) -> None:
    feed = add_feed(
        session, "https://blog.example.org/feed.xml", series_slug="blog", every_seconds=3600
    )

    assert feed.next_poll_at is None
    assert feed.series is not None and feed.series.slug == "blog"
    assert [f.url for f in list_feeds(session)] == ["https://blog.example.org/feed.xml"]


@pytest.mark.parametrize(
    ("url", "every", "message"),
    [
        ("ftp://blog.example.org/feed.xml", 3600, "must start with http"),
        ("blog.example.org/feed.xml", 3600, "must start with http"),
        ("https://blog.example.org/feed.xml", 59, "60 seconds or more"),
    ],
)
def test_add_feed_rejects_bad_input(session: Session, url: str, every: int, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        add_feed(session, url, series_slug=None, every_seconds=every)


def test_adding_the_same_url_twice_is_refused(session: Session) -> None:
    add_feed(session, "https://blog.example.org/feed.xml", series_slug=None, every_seconds=60)

    with pytest.raises(InvalidInputError, match="already added"):
        add_feed(session, "https://blog.example.org/feed.xml", series_slug=None, every_seconds=60)


# --- over real HTTP (tests/feed_server.py) ----------------------------------------


def test_import_feed_fetches_a_url(session: Session, feed_server: FeedServer) -> None:
    url = feed_server.serve_file("/r/homelab.atom", "08-atom-reddit-media-25-entries.xml")

    report = import_feed(session, url, fetch=LOCAL)

    assert report.created == 25
    assert set(session.scalars(select(Article.source))) == {url}


def test_fetch_follows_redirects_and_reports_the_final_url(feed_server: FeedServer) -> None:
    final = feed_server.serve_file("/new.xml", "05-rss2-kernel-org-releases.xml")
    feed_server.routes["/old.xml"] = Route(b"", location=final)

    result = fetch_feed(feed_server.url("/old.xml"), allowed_networks=LOOPBACK)

    assert result.url == final
    assert result.content == (FEEDS / "05-rss2-kernel-org-releases.xml").read_bytes()
    assert result.etag.startswith('"')


def test_fetch_with_the_etag_gets_not_modified(feed_server: FeedServer) -> None:
    url = feed_server.serve_file("/feed.xml", "05-rss2-kernel-org-releases.xml")
    first = fetch_feed(url, allowed_networks=LOOPBACK)

    second = fetch_feed(
        url,
        etag=first.etag,
        modified="Wed, 01 Jan 2025 00:00:00 GMT",
        allowed_networks=LOOPBACK,
    )

    assert second.not_modified and second.content == b"" and second.etag == first.etag
    headers = feed_server.requested("/feed.xml")[1]
    assert headers["if-none-match"] == first.etag
    assert headers["if-modified-since"] == "Wed, 01 Jan 2025 00:00:00 GMT"


def test_http_404_names_the_url_and_status(feed_server: FeedServer) -> None:
    url = feed_server.url("/gone.xml")

    with pytest.raises(FeedError, match=r"HTTP 404 Not Found") as raised:
        fetch_feed(url, allowed_networks=LOOPBACK)

    assert url in str(raised.value)


def test_an_html_page_is_not_a_feed(session: Session, feed_server: FeedServer) -> None:
    page = b"<!DOCTYPE html>\n<html><head><title>Blog</title></head><body><p>Hi<br></body></html>"
    feed_server.routes["/blog/"] = Route(page, content_type="text/html; charset=utf-8")

    with pytest.raises(FeedError, match="is an HTML page, not an RSS or Atom feed"):
        import_feed(session, feed_server.url("/blog/"), fetch=LOCAL)

    assert article_count(session) == 0


def test_a_slow_server_times_out(feed_server: FeedServer) -> None:
    url = feed_server.serve_file("/slow.xml", "05-rss2-kernel-org-releases.xml")
    feed_server.routes["/slow.xml"].delay = 0.5

    with pytest.raises(FeedError, match=r"no answer within 0\.1 seconds"):
        fetch_feed(url, timeout=0.1, allowed_networks=LOOPBACK)


@pytest.mark.parametrize("send_length", [True, False], ids=["content-length", "streamed"])
def test_a_body_over_max_bytes_is_refused(feed_server: FeedServer, send_length: bool) -> None:
    url = feed_server.serve_file("/big.xml", "08-atom-reddit-media-25-entries.xml")
    feed_server.routes["/big.xml"].send_length = send_length

    with pytest.raises(FeedError, match="larger than 10,000 bytes"):
        fetch_feed(url, max_bytes=10_000, allowed_networks=LOOPBACK)


# --- L11: only public addresses, at every hop --------------------------------------------


def test_L11_a_feed_on_loopback_is_refused_unless_its_network_is_allowed(
    session: Session, feed_server: FeedServer
) -> None:
    url = feed_server.serve_file("/feed.xml", "05-rss2-kernel-org-releases.xml")

    with pytest.raises(FeedError, match=r"127\.0\.0\.1, a loopback address"):
        fetch_feed(url)
    with pytest.raises(FeedError, match="loopback"):
        import_feed(session, url)

    assert feed_server.requested("/feed.xml") == []
    assert fetch_feed(url, allowed_networks=LOOPBACK).content


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("localhost", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata services
        ("[::1]", "loopback"),
        ("[fe80::1]", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "non-public"),  # carrier-grade NAT
    ],
)
def test_L11_no_non_public_address_is_connected_to(host: str, kind: str) -> None:
    with pytest.raises(FeedError, match=f"a {kind} address"):
        fetch_feed(f"http://{host}:9/feed.xml", timeout=2)


def test_L11_a_redirect_to_a_non_public_address_is_refused_at_that_hop(
    session: Session, feed_server: FeedServer
) -> None:
    inside = f"http://127.0.0.2:{feed_server.server_port}/admin/feed.xml"
    feed_server.routes["/feed.xml"] = Route(b"", location=inside)
    feed = add_feed(session, feed_server.url("/feed.xml"), series_slug=None, every_seconds=60)
    session.commit()

    [(_feed, outcome)] = poll_due_feeds(session, NOW, LOCAL)

    assert isinstance(outcome, str) and "127.0.0.2, a loopback address" in outcome
    assert len(feed_server.requested("/feed.xml")) == 1  # the first hop was allowed
    assert article_count(session) == 0 and feed.last_error == outcome


def test_L11_a_feed_file_is_capped_in_size(session: Session, tmp_path: Path) -> None:
    big = tmp_path / "big.xml"
    big.write_bytes(b"<rss>" + b" " * 5_000_000 + b"</rss>")

    with pytest.raises(FeedError, match="larger than 5,000,000 bytes"):
        import_feed(session, str(big))
    with pytest.raises(FeedError, match="larger than"):
        import_feed(session, "/dev/zero")

    assert article_count(session) == 0


def test_only_http_urls_are_fetched() -> None:
    with pytest.raises(FeedError, match="must start with http"):
        fetch_feed("file:///etc/passwd")


# --- polling ---------------------------------------------------------------------------


def test_poll_imports_due_feeds_skips_others_and_survives_broken_ones(
    session: Session, feed_server: FeedServer
) -> None:
    gone = add_feed(session, feed_server.url("/gone.xml"), series_slug=None, every_seconds=600)
    truncated = add_feed(
        session,
        feed_server.serve_file("/truncated.xml", "17-bad-rss2-truncated-unclosed.xml"),
        series_slug=None,
        every_seconds=600,
    )
    due = add_feed(
        session,
        feed_server.serve_file("/releases.atom", "12-atom-github-releases.xml"),
        series_slug="releases",
        every_seconds=3600,
    )
    later = add_feed(
        session,
        feed_server.serve_file("/later.xml", "05-rss2-kernel-org-releases.xml"),
        series_slug=None,
        every_seconds=3600,
    )
    later.next_poll_at = NOW + timedelta(minutes=5)
    session.commit()

    results = dict(poll_due_feeds(session, NOW, LOCAL))

    assert set(results) == {gone, truncated, due}
    assert isinstance(results[gone], str) and "HTTP 404" in results[gone]
    assert isinstance(results[truncated], str) and "not well-formed" in results[truncated]
    report = results[due]
    assert not isinstance(report, str) and report.created == 4
    assert feed_server.requested("/later.xml") == []
    session.expire_all()
    assert article_count(session) == 4
    assert gone.last_error == results[gone] and due.last_error == ""
    for feed in (gone, truncated, due):
        assert feed.last_polled_at == NOW
        assert feed.next_poll_at == NOW + timedelta(seconds=feed.every_seconds)
    assert later.next_poll_at == NOW + timedelta(minutes=5)
    assert due.etag and not gone.etag


def test_poll_sends_the_stored_etag_and_a_304_imports_nothing(
    session: Session, feed_server: FeedServer
) -> None:
    url = feed_server.serve_file("/feed.xml", "10-atom-the-register-science.xml")
    feed = add_feed(session, url, series_slug=None, every_seconds=60)
    session.commit()
    [(_feed, first)] = poll_due_feeds(session, NOW, LOCAL)

    [(_feed, second)] = poll_due_feeds(session, NOW + timedelta(seconds=60), LOCAL)

    assert not isinstance(first, str) and first.created == 2
    assert not isinstance(second, str)
    assert (second.created, second.updated, second.unchanged) == (0, 0, 0)
    assert feed_server.requested("/feed.xml")[1]["if-none-match"] == feed.etag
    assert article_count(session) == 2
    assert session.get_one(Feed, feed.id).last_polled_at == NOW + timedelta(seconds=60)


def test_a_feed_is_not_polled_again_before_its_interval(
    session: Session, feed_server: FeedServer
) -> None:
    url = feed_server.serve_file("/feed.xml", "05-rss2-kernel-org-releases.xml")
    add_feed(session, url, series_slug=None, every_seconds=3600)
    session.commit()
    poll_due_feeds(session, NOW, LOCAL)

    assert poll_due_feeds(session, NOW + timedelta(minutes=59), LOCAL) == []
    assert len(feed_server.requested("/feed.xml")) == 1


def test_a_repaired_feed_clears_its_error(session: Session, feed_server: FeedServer) -> None:
    feed = add_feed(session, feed_server.url("/feed.xml"), series_slug=None, every_seconds=60)
    session.commit()
    poll_due_feeds(session, NOW, LOCAL)
    assert "HTTP 404" in feed.last_error

    feed_server.serve_file("/feed.xml", "05-rss2-kernel-org-releases.xml")
    poll_due_feeds(session, NOW + timedelta(minutes=1), LOCAL)

    assert feed.last_error == ""
    assert article_count(session) == 1
