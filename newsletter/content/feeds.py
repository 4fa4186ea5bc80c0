"""RSS and Atom feeds: import their entries as articles, and poll feeds for new ones.

Four short steps, each usable alone::

    fetch_feed(url)            HTTP GET with conditional headers   -> FetchResult
    parse_feed(bytes, source)  well-formed check, then entries     -> list[FeedEntry]
    import_feed_entries(...)   upsert articles by entry id (guid)  -> ImportReport
    poll_due_feeds(...)        the three above for every due Feed

A feed is all-or-nothing: a document that is not well-formed XML, or that cannot be
fetched, raises FeedError and imports nothing, never the entries a lenient parser
could salvage. Inside a well-formed feed, an entry with neither a title nor a link is
skipped and reported, like a bad file in the Markdown import.

Entries are matched by their id (RSS <guid>, Atom <id>; else the link; else a hash of
title and date), stored in `Article.guid`: importing a feed again updates changed
entries and never duplicates. Bodies pass the same sanitiser as Markdown articles.

A feed URL is whatever staff typed (or a feed's redirect says), so fetching never
connects to an address that is not public — loopback, private, link-local, shared or
reserved — unless it is in a network NEWSLETTER_FEEDS_ALLOWED_NETWORKS names: the
check runs on the addresses DNS gives, at connect time, for every redirect hop, and
the connection goes to the address that was checked (a second DNS answer cannot swap
it). A feed read
from a file is capped at the same size as one fetched.
"""

from __future__ import annotations

import calendar
import codecs
import hashlib
import html
import io
import ipaddress
import logging
import re
import socket
import time
import xml.sax
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import feedparser
import feedparser.urls
import httpcore
import httpx
from feedparser.exceptions import (
    CharacterEncodingOverride,
    CharacterEncodingUnknown,
    NonXMLContentType,
)
from sqlalchemy import or_, select, update
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from newsletter.accounts import audit
from newsletter.config import IpNetwork
from newsletter.content.importer import (
    MARKDOWN_SUFFIXES,
    Outcome,
    count_outcome,
    ensure_series,
    next_position,
    upsert_article,
)
from newsletter.content.models import Article, Feed, Series
from newsletter.content.text import SLUG_RE, plain_text, sanitize_html, slugify
from newsletter.db import utcnow
from newsletter.errors import InvalidInputError, NewsletterError, NotFoundError, Problem
from newsletter.importing import ImportReport

log = logging.getLogger(__name__)

FEED_SUFFIXES = frozenset({".xml", ".rss", ".atom", ".feed"})
MIN_POLL_SECONDS = 60
SUMMARY_LENGTH = 300
USER_AGENT = "newsletter-feeds/0.1"
ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)
# Column sizes of Article and Feed: longer values are cut or dropped, never refused.
MAX_TITLE, MAX_AUTHOR, MAX_URL, MAX_GUID, MAX_SLUG = 500, 300, 2000, 2000, 200
MAX_ETAG, MAX_MODIFIED = 500, 200
MAX_FEED_BYTES = 5_000_000  # a fetched feed's body, or a feed file

_EVERY_RE = re.compile(r"^\s*(\d+)\s*([smhd])\s*$", re.IGNORECASE)
_EVERY_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# UTF-32 first: its little-endian mark starts with UTF-16's.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (codecs.BOM_UTF8, "utf-8"),
)
_HTML_PAGE_RE = re.compile(
    r"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html[\s>])",
    re.IGNORECASE | re.DOTALL,
)
# No SVG: few mail clients show it, and it can carry scripts.
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".avif"}


class FeedError(InvalidInputError):
    """A feed could not be fetched or read; nothing from it was imported.

    The message starts with the source (URL or file) and says what was wrong.
    """

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass(frozen=True)
class FetchResult:
    """What a GET of a feed URL returned.

    `url` is the address after redirects (the base for relative links); `etag` and
    `modified` are the validators to send next time. When `not_modified` is true the
    server answered 304 and `content` is empty.
    """

    url: str
    content: bytes
    etag: str = ""
    modified: str = ""
    not_modified: bool = False


class FeedFetcher(Protocol):
    """How `poll_due_feeds` gets a feed's bytes; `fetch_feed` is the real one."""

    def __call__(self, url: str, *, etag: str = "", modified: str = "") -> FetchResult: ...


@dataclass(frozen=True)
class FeedEntry:
    """One entry of a well-formed feed, ready to be saved; every field is clean.

    `published` is always an aware UTC datetime. `dated` says whether it is the
    entry's own date (published, else updated); when it is not, `published` is the
    feed's updated time, else the time of parsing, and an article that already exists
    keeps the date it was given when first imported.
    """

    guid: str
    title: str
    link: str
    summary: str
    body_html: str
    author: str
    published: datetime
    dated: bool
    image: str
    tags: tuple[str, ...]


# --- telling feeds from Markdown ---------------------------------------------------------


def is_feed_source(arg: str) -> bool:
    """True when `articles import ARG` should read ARG as a feed, not as Markdown.

    An http(s) URL is a feed; so is a path ending in .xml, .rss, .atom or .feed (even
    one that does not exist, so reading it reports the missing file), and any other
    existing file whose first non-blank character is '<'. Folders and Markdown files
    (.md, .markdown) are not feeds.
    """
    if _is_http_url(arg):
        return True
    path = Path(arg)
    if path.is_dir():
        return False
    suffix = path.suffix.lower()
    if suffix in FEED_SUFFIXES:
        return True
    if suffix in MARKDOWN_SUFFIXES or not path.is_file():
        return False
    try:
        with path.open("rb") as file:
            start = file.read(1024)
    except OSError:
        return False
    return _text_start(start).lstrip().startswith("<")


# --- fetching ----------------------------------------------------------------------------

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedAddressError(httpcore.ConnectError):
    """A feed's host resolves to an address that is not public (raised at connect)."""


def address_kind(address: IpAddress) -> str | None:
    """What kind of non-public address this is ("loopback", "private"…), or None
    when it is a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_global and not address.is_multicast:
        return None
    for kind, flag in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("unspecified", address.is_unspecified),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
    ):
        if flag:
            return kind
    return "non-public"


class PublicOnlyBackend(httpcore.SyncBackend):
    """Connects only to public addresses (and those in `allowed`): resolves the host
    itself, refuses it when any of its addresses is neither, and connects to the
    address it checked."""

    def __init__(self, allowed: Sequence[IpNetwork] = ()) -> None:
        self.allowed = tuple(allowed)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror or exc}") from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        for address in addresses:
            kind = address_kind(address)
            if kind is not None and not any(address in net for net in self.allowed):
                raise BlockedAddressError(
                    f"{host} is at {address}, a {kind} address: feeds are fetched only "
                    "from public addresses (and NEWSLETTER_FEEDS_ALLOWED_NETWORKS)"
                )
        return super().connect_tcp(str(addresses[0]), port, timeout, local_address, socket_options)


class _PublicOnlyTransport(httpx.HTTPTransport):
    """httpx's transport over `PublicOnlyBackend` (httpx takes no backend itself, so
    its connection pool is replaced by an equal one that has it)."""

    def __init__(self, allowed: Sequence[IpNetwork]) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=PublicOnlyBackend(allowed),
        )


def feed_fetcher(allowed_networks: Sequence[IpNetwork]) -> FeedFetcher:
    """The fetcher the settings call for (NEWSLETTER_FEEDS_ALLOWED_NETWORKS)."""

    def fetch(url: str, *, etag: str = "", modified: str = "") -> FetchResult:
        return fetch_feed(url, etag=etag, modified=modified, allowed_networks=allowed_networks)

    return fetch


def fetch_feed(
    url: str,
    *,
    etag: str = "",
    modified: str = "",
    timeout: float = 15.0,
    max_bytes: int = MAX_FEED_BYTES,
    allowed_networks: Sequence[IpNetwork] = (),
) -> FetchResult:
    """GET an http(s) feed URL, following redirects, sending If-None-Match and
    If-Modified-Since when `etag` / `modified` are given.

    Returns the body of a 2xx answer, or `not_modified` for 304. Raises FeedError
    naming the URL for anything else: another status, a timeout, a connection
    failure, too many redirects, a body (after decompression) over `max_bytes`, or a
    host (of the URL or of any redirect) at an address that is not public, unless it
    is in `allowed_networks`. `timeout` bounds connecting and each read; the whole download
    may take at most four times as long, so a server that trickles bytes cannot hold
    a poll for ever.
    """
    _check_feed_url(url)
    deadline = time.monotonic() + 4 * timeout
    headers = {"User-Agent": USER_AGENT, "Accept": ACCEPT}
    if etag:
        headers["If-None-Match"] = etag
    if modified:
        headers["If-Modified-Since"] = modified
    transport = _PublicOnlyTransport(allowed_networks)
    try:
        with (
            httpx.Client(
                follow_redirects=True, timeout=timeout, headers=headers, transport=transport
            ) as client,
            client.stream("GET", url) as response,
        ):
            final_url = str(response.url)
            if response.status_code == httpx.codes.NOT_MODIFIED:
                return FetchResult(
                    url=final_url,
                    content=b"",
                    etag=response.headers.get("etag", etag),
                    modified=response.headers.get("last-modified", modified),
                    not_modified=True,
                )
            if not response.is_success:
                reason = f" {response.reason_phrase}" if response.reason_phrase else ""
                raise FeedError(url, f"HTTP {response.status_code}{reason}")
            content = _read_at_most(response, max_bytes, url, deadline)
            return FetchResult(
                url=final_url,
                content=content,
                etag=response.headers.get("etag", ""),
                modified=response.headers.get("last-modified", ""),
            )
    except httpx.TimeoutException as exc:
        raise FeedError(url, f"no answer within {timeout:g} seconds") from exc
    except httpx.TooManyRedirects as exc:
        raise FeedError(url, "too many redirects") from exc
    except httpx.UnsupportedProtocol as exc:
        raise FeedError(url, f"redirected to an address that is not http(s): {exc}") from exc
    except httpx.ConnectError as exc:
        if isinstance(exc.__cause__, BlockedAddressError):
            raise FeedError(url, str(exc.__cause__)) from exc
        raise FeedError(url, f"could not be fetched: {exc}") from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise FeedError(url, f"could not be fetched: {exc}") from exc


def _read_at_most(response: httpx.Response, max_bytes: int, url: str, deadline: float) -> bytes:
    too_large = f"the feed is larger than {max_bytes:,} bytes"
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FeedError(url, too_large)
    body = bytearray()
    for chunk in response.iter_bytes():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise FeedError(url, too_large)
        if time.monotonic() > deadline:
            raise FeedError(url, "the download took too long")
    return bytes(body)


def check_public_host(url: str) -> None:
    """FeedError unless every address the URL's host resolves to is a public one: a
    feed fetched on a staff member's request must not reach the server's own network
    (loopback, private, link-local, cloud metadata addresses)."""
    import ipaddress
    import socket

    _check_feed_url(url)
    host = urlsplit(url.strip()).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise FeedError(url, f"the host {host!r} cannot be resolved") from exc
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not address.is_global:
            raise FeedError(url, f"the host {host!r} is not a public address ({address})")


def _check_feed_url(url: str) -> None:
    if len(url) > MAX_URL:
        raise FeedError(url[:80] + "…", f"a feed URL is at most {MAX_URL} characters")
    if not _is_http_url(url):
        raise FeedError(url, "a feed URL must start with http:// or https:// and name a host")


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


# --- parsing -----------------------------------------------------------------------------


def parse_feed(
    data: bytes,
    source: str,
    *,
    base_url: str = "",
    problems: list[Problem] | None = None,
) -> list[FeedEntry]:
    """The entries of an RSS (0.9x, 1.0, 2.0) or Atom (0.3, 1.0) document.

    Raises FeedError naming `source` when the document is empty, an HTML page, not
    well-formed XML, or not a feed; it never returns the part of a broken document
    a lenient parser could recover. Well-formedness is judged on the bytes alone
    (BOM, XML declaration, else UTF-8; HTTP headers are not consulted), so a file
    and the same bytes fetched over HTTP get the same answer.

    Relative links and images are resolved against `base_url`, else `source` when it
    is a URL, else the feed's own absolute self or home link. Entries with neither a
    title nor a link are skipped and added to `problems` (when given).
    """
    data = _utf8_when_bom_without_declaration(data)
    if not data.strip():
        raise FeedError(source, "is empty, not an RSS or Atom feed")
    if _HTML_PAGE_RE.match(_text_start(data[:4096])):
        raise FeedError(source, "is an HTML page, not an RSS or Atom feed")
    try:
        parsed = feedparser.parse(io.BytesIO(data), sanitize_html=True, resolve_relative_uris=True)
    except Exception as exc:  # feedparser is lenient by design; a crash means unreadable
        raise FeedError(source, f"could not be read as a feed: {exc!r}") from exc
    error = _well_formedness_error(parsed, data)
    if error is not None:
        raise FeedError(source, f"not well-formed XML ({error}); nothing imported")
    if not parsed.get("version"):
        raise FeedError(source, "not an RSS or Atom feed (no <rss>, <feed> or RDF channel)")
    feed = parsed.get("feed", {})
    base = _base_url(base_url or source, feed)
    fallback_date = _first_date(feed, "updated_parsed", "published_parsed") or utcnow()
    entries = []
    for index, raw in enumerate(parsed.get("entries", []), start=1):
        entry = _entry(raw, feed, base, fallback_date)
        if entry is None:
            if problems is not None:
                reason = "entry has neither a title nor a link; skipped"
                problems.append(Problem(f"{source}: entry {index}", reason))
            continue
        entries.append(entry)
    return entries


def _well_formedness_error(parsed: Mapping[str, Any], data: bytes) -> str | None:
    """Why the document is not well-formed XML, or None when it is.

    feedparser sets `bozo` when its strict (expat) parse fails, and also for encoding
    trouble. Because we never give it HTTP headers, its header-only complaints
    (NonXMLContentType, an HTTP charset contradicting the declaration) cannot arise;
    what remains is an encoding override, meaning the bytes are not valid in their
    declared (or XML's default UTF-8) encoding, or the declared encoding does not
    exist. XML 1.0 (section 4.3.3) makes that a fatal error, and so does our corpus
    (a Shift_JIS file without declaration, encoding="bogus").
    """
    if not parsed.get("bozo"):
        return None
    exc = parsed.get("bozo_exception")
    if isinstance(exc, NonXMLContentType):
        return None
    if isinstance(exc, CharacterEncodingOverride | CharacterEncodingUnknown):
        return _encoding_problem(data)
    if isinstance(exc, xml.sax.SAXParseException):
        # feedparser puts its own declaration on a line of its own when there is none.
        shift = 0 if _text_start(data).lstrip().startswith("<?xml") else 1
        line, column = exc.getLineNumber(), exc.getColumnNumber()
        if line is None or column is None:
            return exc.getMessage()
        return f"line {line - shift}, column {column + 1}: {exc.getMessage()}"
    return str(exc) or type(exc).__name__


def _encoding_problem(data: bytes) -> str:
    declaration = re.compile(rb"\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._:-]+)[\"']")
    match = declaration.match(data.removeprefix(codecs.BOM_UTF8))
    if match is None:
        return "no encoding is declared, so it must be UTF-8, and it is not"
    declared = match.group(1).decode("ascii")
    try:
        codecs.lookup(declared)
    except LookupError:
        return f"it declares the unknown encoding {declared!r}"
    return f"its bytes are not valid {declared}, the encoding it declares"


def _utf8_when_bom_without_declaration(data: bytes) -> bytes:
    """XML with a UTF-16/32 byte-order mark needs no declaration, but feedparser then
    assumes UTF-8; hand it the same text in UTF-8 instead."""
    for bom, codec in _BYTE_ORDER_MARKS[:4]:
        if data.startswith(bom):
            try:
                text = data[len(bom) :].decode(codec)
            except UnicodeDecodeError:
                return data  # feedparser reports the bad bytes
            return data if text.lstrip().startswith("<?xml") else text.encode("utf-8")
    return data


def _text_start(data: bytes) -> str:
    """The start of a document as text, decoded by its byte-order mark (else UTF-8)."""
    for bom, codec in _BYTE_ORDER_MARKS:
        if data.startswith(bom):
            return data[len(bom) :].decode(codec, errors="ignore")
    return data.decode("utf-8", errors="replace")


def _base_url(given: str, feed: Mapping[str, Any]) -> str:
    candidates = [given]
    candidates += [
        link.get("href", "") for link in feed.get("links", []) if link.get("rel") == "self"
    ]
    candidates.append(feed.get("link", ""))
    return next((url for url in candidates if url and _is_http_url(url)), "")


def _entry(
    raw: Mapping[str, Any], feed: Mapping[str, Any], base: str, fallback_date: datetime
) -> FeedEntry | None:
    title = _text(raw.get("title_detail"), raw.get("title", ""))
    raw_link = str(raw.get("link") or "").strip()
    if not title and not raw_link:
        return None
    body_html = _body_html(raw, base)
    summary_text = _text(raw.get("summary_detail"), raw.get("summary", "")) or plain_text(body_html)
    own_date = _first_date(raw, "published_parsed", "updated_parsed")
    if not title:
        title = _shorten(summary_text, 80) or raw_link
    return FeedEntry(
        guid=_guid(raw, raw_link, title),
        title=_shorten(title, MAX_TITLE - 1),
        link=_absolute_http(raw_link, base),
        summary=_shorten(summary_text, SUMMARY_LENGTH),
        body_html=body_html,
        author=_shorten(_author(raw) or _author(feed), MAX_AUTHOR - 1),
        published=own_date or fallback_date,
        dated=own_date is not None,
        image=_image(raw, base),
        tags=_tags(raw),
    )


def _guid(raw: Mapping[str, Any], link: str, title: str) -> str:
    """The entry's id, else its link, else a hash of its title and date."""
    guid = str(raw.get("id") or "").strip() or link
    if not guid:
        date = str(raw.get("published") or raw.get("updated") or "")
        guid = "sha256:" + hashlib.sha256(f"{title}\n{date}".encode()).hexdigest()
    if len(guid) > MAX_GUID:
        guid = "sha256:" + hashlib.sha256(guid.encode()).hexdigest()
    return guid


def _text(detail: Mapping[str, Any] | None, value: str) -> str:
    """A title or summary as one line of plain text, whatever its declared type."""
    if detail is not None and detail.get("type") == "text/plain":
        return " ".join(str(value).split())
    return plain_text(str(value))


def _body_html(raw: Mapping[str, Any], base: str) -> str:
    """The entry's content (an HTML one first), else its summary; sanitised."""
    contents = list(raw.get("content") or [])
    chosen = next((c for c in contents if _is_html(c.get("type", ""))), None)
    chosen = chosen or (contents[0] if contents else raw.get("summary_detail"))
    if not chosen or not str(chosen.get("value", "")).strip():
        return ""
    value = str(chosen["value"])
    if not _is_html(chosen.get("type", "")):
        paragraphs = re.split(r"\n\s*\n", value.strip())
        value = "".join(f"<p>{html.escape(p.strip())}</p>" for p in paragraphs if p.strip())
    elif base:
        # feedparser resolves against xml:base only; emails need absolute addresses.
        value = feedparser.urls.resolve_relative_uris(value, base, "utf-8", "text/html")
    return sanitize_html(value)


def _is_html(content_type: str) -> bool:
    return content_type in ("text/html", "application/xhtml+xml")


def _author(item: Mapping[str, Any]) -> str:
    detail = item.get("author_detail") or {}
    return plain_text(str(detail.get("name") or item.get("author") or ""))


def _image(raw: Mapping[str, Any], base: str) -> str:
    """The first http(s) image among media:thumbnail, media:content and enclosures."""
    candidates = [thumb.get("url", "") for thumb in raw.get("media_thumbnail") or []]
    candidates += [
        media.get("url", "")
        for media in raw.get("media_content") or []
        if media.get("medium") == "image" or _is_image(media.get("type", ""), media.get("url", ""))
    ]
    candidates += [
        enclosure.get("href", "")
        for enclosure in raw.get("enclosures") or []
        if _is_image(enclosure.get("type", ""), enclosure.get("href", ""))
    ]
    absolute = (_absolute_http(str(url).strip(), base) for url in candidates if url)
    return next((url for url in absolute if url), "")


def _is_image(content_type: str, url: str) -> bool:
    """An image type, or no type and a file name that says image."""
    if content_type:
        return content_type.lower().startswith("image/") and "svg" not in content_type.lower()
    return Path(urlsplit(url).path).suffix.lower() in _IMAGE_SUFFIXES


def _absolute_http(url: str, base: str) -> str:
    """`url` resolved against `base`, when that gives an http(s) address that fits."""
    if not url:
        return ""
    absolute = urljoin(base, url) if base else url
    return absolute if _is_http_url(absolute) and len(absolute) <= MAX_URL else ""


def _tags(raw: Mapping[str, Any]) -> tuple[str, ...]:
    tags: dict[str, None] = {}  # ordered, without repeats
    for tag in raw.get("tags") or []:
        # The term is the category itself; some feeds (USGS) put a heading in label.
        text = plain_text(str(tag.get("term") or tag.get("label") or ""))
        if text:
            tags[text] = None
    return tuple(tags)


def _first_date(item: Mapping[str, Any], *keys: str) -> datetime | None:
    """The first of these feedparser dates (UTC struct_time) that is a real date."""
    for key in keys:
        # `in` first: feedparser's get("updated_parsed") falls back to published, warning.
        if key not in item:
            continue
        try:
            return datetime.fromtimestamp(calendar.timegm(item[key]), UTC)
        except (TypeError, ValueError, OverflowError):
            continue
    return None


def _shorten(text: str, limit: int) -> str:
    """`text` cut at a word boundary to at most `limit` characters plus '…'."""
    if len(text) <= limit:
        return text
    cut = text[: limit + 1]
    cut = cut.rsplit(" ", 1)[0] if " " in cut else text[:limit]
    return cut.rstrip(" ,;:.-–—") + "…"


# --- saving ------------------------------------------------------------------------------


def import_feed_entries(
    session: Session,
    entries: Sequence[FeedEntry],
    *,
    series_slug: str | None,
    source: str,
) -> ImportReport:
    """Create or update one article per entry, matched by guid; flush, do not commit.

    An entry whose guid is known updates its article (counted as updated, or
    unchanged when nothing differs) and keeps the article's slug; a new entry gets a
    slug from its title, made unique with -2, -3… With `series_slug` (created when
    missing) new articles are appended to that series oldest first, and so are known
    articles that are in no series yet; an article already in another series stays
    there. A repeated guid within `entries` is skipped and reported.

    All or nothing: the entries are saved in one savepoint, and a database refusal
    rolls all of them back and raises FeedError naming `source`.
    """
    if series_slug is not None and (not SLUG_RE.match(series_slug) or len(series_slug) > 200):
        raise InvalidInputError(f"series {series_slug!r} must be a slug: a-z, 0-9 and -")
    report = ImportReport()
    try:
        with session.begin_nested():
            series = ensure_series(session, series_slug) if series_slug is not None else None
            seen: set[str] = set()
            for entry in _oldest_first(entries):
                if entry.guid in seen:
                    reason = f"entry id {entry.guid!r} appears twice in the feed; skipped"
                    report.problems.append(Problem(source, reason))
                    continue
                seen.add(entry.guid)
                count_outcome(report, _save_entry(session, entry, series, source))
    except (IntegrityError, DataError) as exc:
        # Another import saving the same entry at the same moment, or a value the
        # database refuses: the savepoint is gone, so nothing of this feed remains.
        raise FeedError(source, f"could not be saved, nothing imported: {exc.orig}") from exc
    return report


def _oldest_first(entries: Sequence[FeedEntry]) -> list[FeedEntry]:
    # Feeds list the newest entry first, so among equal dates a later entry is older.
    numbered = sorted(enumerate(entries), key=lambda pair: (pair[1].published, -pair[0]))
    return [entry for _index, entry in numbered]


def _save_entry(session: Session, entry: FeedEntry, series: Series | None, source: str) -> Outcome:
    article = session.scalar(select(Article).where(Article.guid == entry.guid))
    values: dict[str, Any] = {
        "title": entry.title,
        "summary": entry.summary,
        "body_html": entry.body_html,
        "author": entry.author,
        "url": entry.link,
        "image": entry.image,
        "tags": list(entry.tags),
        "source": source,
    }
    if article is None:
        values["guid"] = entry.guid
        values["slug"] = _unique_slug(session, entry)
        values["published_at"] = entry.published
    elif entry.dated:
        # An undated entry keeps its first date; the fallback moves with every poll.
        values["published_at"] = entry.published
    if series is not None and (article is None or article.series_id is None):
        values["series_id"] = series.id
        values["position"] = next_position(session, series)
    return upsert_article(session, article, values)


def _unique_slug(session: Session, entry: FeedEntry) -> str:
    """A slug from the title that no article has yet: base, base-2, base-3…"""
    base = slugify(entry.title)[: MAX_SLUG - 10].strip("-")
    if not base:  # a title without Latin letters or digits
        base = "entry-" + hashlib.sha256(entry.guid.encode()).hexdigest()[:10]
    # Slugs hold only a-z, 0-9 and '-', so LIKE has no wildcard to escape.
    taken = set(
        session.scalars(
            select(Article.slug).where(or_(Article.slug == base, Article.slug.like(f"{base}-%")))
        )
    )
    slug, number = base, 1
    while slug in taken:
        number += 1
        slug = f"{base}-{number}"
    return slug


def import_feed(
    session: Session,
    source: str,
    *,
    series_slug: str | None = None,
    fetch: FeedFetcher = fetch_feed,
) -> ImportReport:
    """Import a feed from an http(s) URL (fetched with `fetch`) or a file path (read,
    at most MAX_FEED_BYTES); no commit.

    Raises FeedError when the feed cannot be fetched, read or parsed, and then
    nothing is imported. Skipped entries are listed in the report's problems.
    """
    if _is_http_url(source):
        fetched = fetch(source)
        data, base, saved_as = fetched.content, fetched.url, source
    else:
        path = Path(source)
        data = read_feed_file(path, source)
        base, saved_as = "", str(path.resolve())
    problems: list[Problem] = []
    entries = parse_feed(data, source, base_url=base, problems=problems)
    report = import_feed_entries(session, entries, series_slug=series_slug, source=saved_as)
    report.problems[:0] = problems
    audit.record(
        session,
        "articles.import_feed",
        f"feed:{saved_as}"[:400],
        detail={
            "created": report.created,
            "updated": report.updated,
            "unchanged": report.unchanged,
            "problems": len(report.problems),
        },
    )
    return report


def read_feed_file(path: Path, source: str, max_bytes: int = MAX_FEED_BYTES) -> bytes:
    """The bytes of a feed file; FeedError when it cannot be read or is larger than
    `max_bytes` (read at most one byte past it: /dev/zero ends too)."""
    try:
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise FeedError(source, f"cannot read the file: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise FeedError(source, f"the feed is larger than {max_bytes:,} bytes")
    return data


# --- polled feeds ------------------------------------------------------------------------


def parse_every(value: str) -> int:
    """Seconds in a polling interval written as 90s, 30m, 1h or 7d.

    Raises InvalidInputError naming the value when it is not one number and one unit,
    or is zero.
    """
    match = _EVERY_RE.match(value)
    if match is None or int(match.group(1)) == 0:
        raise InvalidInputError(
            f"every {value!r} is not an interval like 90s, 30m, 1h or 7d "
            "(a whole number above 0 and one of s, m, h, d)"
        )
    return int(match.group(1)) * _EVERY_UNITS[match.group(2).lower()]


def add_feed(session: Session, url: str, *, series_slug: str | None, every_seconds: int) -> Feed:
    """Register a feed to poll every `every_seconds` (at least 60); flush, no commit.

    The feed is due at once (next_poll_at is None). The series is created when
    missing. Raises InvalidInputError for a URL that is not http(s), an interval
    under a minute, a bad series slug, or a URL that is already registered.
    """
    url = url.strip()
    _check_feed_url(url)
    if every_seconds < MIN_POLL_SECONDS:
        raise InvalidInputError(
            f"a feed is polled at most once a minute: every must be 60 seconds or more, "
            f"not {every_seconds}"
        )
    if series_slug is not None and (not SLUG_RE.match(series_slug) or len(series_slug) > 200):
        raise InvalidInputError(f"series {series_slug!r} must be a slug: a-z, 0-9 and -")
    if session.scalar(select(Feed.id).where(Feed.url == url)) is not None:
        raise InvalidInputError(f"feed {url} is already added")
    try:
        with session.begin_nested():
            series = ensure_series(session, series_slug) if series_slug is not None else None
            feed = Feed(url=url, series=series, every_seconds=every_seconds, next_poll_at=None)
            session.add(feed)
            session.flush()
    except IntegrityError as exc:  # added by someone else a moment ago
        raise InvalidInputError(f"feed {url} is already added") from exc
    audit.record(
        session,
        "feed.add",
        f"feed:{feed.id}",
        after={"url": url, "series": series_slug, "every_seconds": every_seconds},
    )
    return feed


def list_feeds(session: Session) -> list[Feed]:
    """Every registered feed, in the order they were added."""
    return list(session.scalars(select(Feed).order_by(Feed.id)))


def poll_due_feeds(
    session: Session, now: datetime, fetch: FeedFetcher = fetch_feed
) -> list[tuple[Feed, ImportReport | str]]:
    """Fetch and import every feed whose next_poll_at is due (or unset); commits.

    Each due feed is first claimed by a conditional update that moves its
    next_poll_at to now + every, committed before any network I/O, so two schedulers
    never poll one feed twice and no transaction stays open during a fetch. Then the
    feed is fetched with its stored ETag/Last-Modified, imported, and its validators,
    last_polled_at, last_error and next_poll_at are saved in one commit with the
    articles. A feed that fails (HTTP error, timeout, malformed document) imports
    nothing, keeps its old validators, records last_error and is polled again after
    its interval; the other feeds go on.

    Returns each polled feed with its ImportReport, or the error text when it failed.
    A process killed mid-poll leaves that feed claimed: it is polled again one
    interval later, and entries are matched by guid, so nothing is lost or doubled.
    """
    due = session.scalars(
        select(Feed)
        .where(or_(Feed.next_poll_at.is_(None), Feed.next_poll_at <= now))
        .order_by(Feed.next_poll_at.asc().nulls_first(), Feed.id)
    ).all()
    results: list[tuple[Feed, ImportReport | str]] = []
    for feed in due:
        if not _claim_feed(session, feed, now):
            continue
        results.append((feed, _poll_feed(session, feed, now, fetch)))
    return results


def _claim_feed(session: Session, feed: Feed, now: datetime) -> bool:
    claimed = session.execute(
        update(Feed)
        .where(Feed.id == feed.id, or_(Feed.next_poll_at.is_(None), Feed.next_poll_at <= now))
        .values(next_poll_at=now + timedelta(seconds=feed.every_seconds))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]


def _poll_feed(
    session: Session, feed: Feed, now: datetime, fetch: FeedFetcher
) -> ImportReport | str:
    outcome: ImportReport | str
    try:
        fetched = fetch(feed.url, etag=feed.etag, modified=feed.modified)
        outcome = (
            ImportReport() if fetched.not_modified else _import_fetched(session, feed, fetched)
        )
    except NewsletterError as exc:
        log.warning("feed %s: %s", feed.url, exc)
        feed.last_error = outcome = str(exc)
    else:
        log.info("feed %s: %s", feed.url, outcome.summary())
        feed.etag = fetched.etag if len(fetched.etag) <= MAX_ETAG else ""
        feed.modified = fetched.modified if len(fetched.modified) <= MAX_MODIFIED else ""
        feed.last_error = ""
    feed.last_polled_at = now
    feed.next_poll_at = now + timedelta(seconds=feed.every_seconds)
    session.commit()
    return outcome


def _import_fetched(session: Session, feed: Feed, fetched: FetchResult) -> ImportReport:
    problems: list[Problem] = []
    entries = parse_feed(fetched.content, feed.url, base_url=fetched.url, problems=problems)
    series_slug = feed.series.slug if feed.series is not None else None
    report = import_feed_entries(session, entries, series_slug=series_slug, source=feed.url)
    report.problems[:0] = problems
    return report


def poll_soon(session: Session, feed_id: int) -> Feed:
    """Make the feed due now: the scheduler's next tick polls it (and claims it, so
    asking twice polls it once)."""
    feed = session.get(Feed, feed_id)
    if feed is None:
        raise NotFoundError(f"no feed {feed_id}")
    feed.next_poll_at = None
    session.flush()
    audit.record(session, "feed.poll_now", f"feed:{feed.id}")
    return feed
