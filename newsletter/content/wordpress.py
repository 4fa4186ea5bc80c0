"""WordPress exports (WXR: Tools → Export in WordPress) read as articles.

A WXR file is RSS 2.0 with WordPress's own elements: every post, page, attachment and
menu of a site, with its status, dates (local and GMT), author login, categories and
tags. Only posts are articles here; a post's featured image is found through its
`_thumbnail_id` and the attachment it names. The XML is parsed with defusedxml, so a
file cannot make us read other files or expand entities without end.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeXml
from defusedxml import DefusedXmlException

from newsletter.content.posts import SITE_URL, ParsedArticle, parse_moment, relative_links_warning
from newsletter.content.shortcodes import render_wordpress_shortcodes
from newsletter.content.text import absolute_links, plain_text, sanitize_html, slugify
from newsletter.errors import Problem

WXR_NAMESPACE_PREFIX = "http://wordpress.org/export/"
_NS = {
    "content": "http://purl.org/rss/1.0/modules/content/",
    "excerpt": "http://wordpress.org/export/{version}/excerpt/",
    "dc": "http://purl.org/dc/elements/1.1/",
    "wp": "http://wordpress.org/export/{version}/",
}
PUBLISHED_STATUSES = frozenset({"publish", "future"})
DRAFT_STATUSES = frozenset({"draft", "pending", "private", "auto-draft"})
NO_DATE = "0000-00-00 00:00:00"
UNCATEGORIZED = "uncategorized"
_BLOCK_START = re.compile(
    r"^\s*<(?:p|div|h[1-6]|ul|ol|li|blockquote|pre|table|figure|hr|!--)[\s>/]", re.IGNORECASE
)
_WXR_VERSION = re.compile(r"http://wordpress\.org/export/([\d.]+)/")


@dataclass
class ExportReading:
    """What reading an export gave: its valid articles, the posts skipped with the
    reason, and warnings about posts that are imported."""

    articles: list[ParsedArticle] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def is_wordpress_export(start: str) -> bool:
    """Whether the first kilobytes of a file are those of a WXR export."""
    return "<rss" in start and WXR_NAMESPACE_PREFIX in start


def read_wordpress_export(path: Path, site_url: str = "") -> ExportReading:
    """The posts of a WXR file as articles; a file that is not a well-formed export is
    one error naming the file and line, and gives no article. Relative links resolve
    against `site_url`, else the blog address the export names."""
    reading = ExportReading()
    try:
        data = path.read_bytes()
    except OSError as exc:
        reading.errors.append(Problem(str(path), f"cannot read the file: {exc.strerror or exc}"))
        return reading
    try:
        root = SafeXml.fromstring(data, forbid_dtd=True)
    except ParseError as exc:
        line = exc.position[0]
        reading.errors.append(Problem(f"{path}:{line}", f"not well-formed XML: {exc.msg}"))
        return reading
    except DefusedXmlException as exc:
        reading.errors.append(Problem(str(path), f"refused: the file declares {exc}"))
        return reading
    version = _WXR_VERSION.search(data[:4096].decode("utf-8", "replace"))
    namespaces = {
        prefix: uri.format(version=version.group(1) if version else "1.2")
        for prefix, uri in _NS.items()
    }
    channel = root.find("channel")
    if root.tag != "rss" or channel is None:
        reading.errors.append(Problem(str(path), "not a WordPress export: no <rss><channel>"))
        return reading
    _Export(path, channel, namespaces, reading, site_url).read()
    return reading


class _Export:
    def __init__(
        self,
        path: Path,
        channel: Element,
        namespaces: dict[str, str],
        reading: ExportReading,
        site_url: str,
    ) -> None:
        self.path = path
        self.channel = channel
        self.ns = namespaces
        self.reading = reading
        self.relative_links = 0
        blog = self.text(channel, "wp:base_blog_url") or self.text(channel, "link")
        self.site_url = site_url or (blog + "/" if blog.startswith(("http://", "https://")) else "")
        self.authors = self._authors()
        self.attachments = self._attachments()

    def text(self, element: Element, name: str) -> str:
        found = element.find(name, self.ns)
        return (found.text or "").strip() if found is not None else ""

    def _authors(self) -> dict[str, str]:
        """Display names by login."""
        authors: dict[str, str] = {}
        for author in self.channel.findall("wp:author", self.ns):
            login = self.text(author, "wp:author_login")
            name = self.text(author, "wp:author_display_name")
            if not name:
                first = self.text(author, "wp:author_first_name")
                name = f"{first} {self.text(author, 'wp:author_last_name')}".strip()
            authors[login] = name or login
        return authors

    def _attachments(self) -> dict[str, str]:
        """Attachment addresses by post id (for featured images)."""
        return {
            self.text(item, "wp:post_id"): self.text(item, "wp:attachment_url")
            for item in self._items()
            if self.text(item, "wp:post_type") == "attachment"
        }

    def _items(self) -> Iterator[Element]:
        return iter(self.channel.findall("item"))

    def read(self) -> None:
        others: dict[str, int] = {}
        for item in self._items():
            kind = self.text(item, "wp:post_type") or "post"
            if kind != "post":
                others[kind] = others.get(kind, 0) + 1
                continue
            article = self._article(item)
            if article is not None:
                self.reading.articles.append(article)
        if self.relative_links:
            warning = relative_links_warning(self.relative_links)
            self.reading.warnings.append(Problem(str(self.path), warning, SITE_URL))
        if others:
            listed = ", ".join(f"{count} {kind}" for kind, count in sorted(others.items()))
            self.reading.warnings.append(
                Problem(str(self.path), f"only posts are articles; not imported: {listed}")
            )

    def _article(self, item: Element) -> ParsedArticle | None:
        post_id = self.text(item, "wp:post_id")
        where = f"{self.path}: post {post_id or '?'}"
        title = plain_text(self.text(item, "title"))[:500]
        status = self.text(item, "wp:status") or "publish"
        if status == "trash":
            self.reading.errors.append(Problem(where, "in the WordPress trash; not imported"))
            return None
        if not title:
            self.reading.errors.append(Problem(where, "has no title; not imported"))
            return None
        slug = self._slug(item, title, post_id)
        published_at = self._published_at(item, where) if status in PUBLISHED_STATUSES else None
        if status not in PUBLISHED_STATUSES | DRAFT_STATUSES:
            reason = f"status {status!r} is not one WordPress publishes; imported as a draft"
            self.reading.warnings.append(Problem(where, reason))
        link = self.text(item, "link")
        login = self.text(item, "dc:creator")
        return ParsedArticle(
            where=where,
            source=f"{self.path.resolve()}#post-{post_id}"[:2000],
            slug=slug,
            title=title,
            summary=plain_text(self.text(item, "excerpt:encoded")),
            author=self.authors.get(login, login)[:300],
            url=link if link.startswith(("http://", "https://")) else "",
            image=self._featured_image(item),
            published_at=published_at,
            series_slug=None,
            series_title=None,
            position=None,
            tags=self._terms(item),
            body_html=self._body(item),
        )

    def _body(self, item: Element) -> str:
        body = sanitize_html(paragraphs(render_wordpress_shortcodes(self._content(item))))
        body, relative = absolute_links(body, self.site_url)
        self.relative_links += relative
        return body

    def _content(self, item: Element) -> str:
        found = item.find("content:encoded", self.ns)
        return found.text or "" if found is not None else ""

    def _slug(self, item: Element, title: str, post_id: str) -> str:
        name = self.text(item, "wp:post_name")
        name = re.sub(r"\.html?$", "", name, flags=re.IGNORECASE)  # exports of old sites
        slug = slugify(name) or slugify(title) or f"post-{slugify(post_id) or 'untitled'}"
        return slug[:200].strip("-")

    def _published_at(self, item: Element, where: str) -> datetime | None:
        for name in ("wp:post_date_gmt", "pubDate", "wp:post_date"):
            value = self.text(item, name)
            if not value or value == NO_DATE:
                continue
            moment = _rfc822(value) if name == "pubDate" else parse_moment(value)
            if moment is not None:
                return moment
        self.reading.warnings.append(
            Problem(where, "published without a date; imported as a draft")
        )
        return None

    def _featured_image(self, item: Element) -> str:
        for meta in item.findall("wp:postmeta", self.ns):
            if self.text(meta, "wp:meta_key") == "_thumbnail_id":
                url = self.attachments.get(self.text(meta, "wp:meta_value"), "")
                return url if url.startswith(("http://", "https://")) else ""
        return ""

    def _terms(self, item: Element) -> tuple[str, ...]:
        terms: dict[str, None] = {}
        for category in item.findall("category"):
            if category.get("domain") not in ("category", "post_tag"):
                continue
            name = plain_text(category.text or "")
            if name and category.get("nicename") != UNCATEGORIZED:
                terms[name] = None
        return tuple(terms)


def _rfc822(value: str) -> datetime | None:
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parse_moment(moment)


def paragraphs(content: str) -> str:
    """Classic-editor content as HTML paragraphs, the way WordPress shows it.

    WordPress stores text typed in its classic editor without <p> tags and adds them
    when it shows a post (`wpautop`): a blank line separates paragraphs, a single
    newline is a line break. Blocks that already start with a block-level tag (block
    editor content, lists, tables) are left as they are.
    """
    blocks = re.split(r"\n\s*\n", content.replace("\r\n", "\n").strip())
    out = []
    for block in blocks:
        if not block.strip():
            continue
        if _BLOCK_START.match(block):
            out.append(block)
        else:
            out.append("<p>" + block.strip().replace("\n", "<br>\n") + "</p>")
    return "\n".join(out)
