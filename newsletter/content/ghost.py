"""Ghost exports (Settings → Advanced → Export content) read as articles.

An export is JSON: `{"db": [{"meta": …, "data": {"posts": […], "users": […], "tags":
[…], "posts_tags": […], "posts_authors": […]}}]}`, or, from Ghost before 1.0, the
`{"meta", "data"}` object alone. A post's body is its `html` when the export has it;
else it is rebuilt from the editor's document (`lexical` from Ghost 5, `mobiledoc`
before), or from `markdown` (Ghost 0.x). Pages are not articles.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from newsletter.content.posts import SITE_URL, ParsedArticle, parse_moment, relative_links_warning
from newsletter.content.text import (
    absolute_links,
    markdown_to_safe_html,
    plain_text,
    sanitize_html,
    slugify,
)
from newsletter.content.wordpress import ExportReading
from newsletter.errors import Problem

PUBLISHED_STATUSES = frozenset({"published", "scheduled", "sent"})
# Ghost 4 and later write the site's own address as this placeholder in exports.
GHOST_URL = "__GHOST_URL__"


def is_ghost_export(data: Any) -> bool:
    """Whether parsed JSON has the shape of a Ghost export."""
    return _export_data(data) is not None


def read_ghost_export(path: Path, site_url: str = "") -> ExportReading:
    """The posts of a Ghost export as articles; a file that is not one is one error.

    `site_url` replaces Ghost's `__GHOST_URL__` placeholder and resolves other relative
    links and images."""
    reading = ExportReading()
    try:
        document = json.loads(path.read_bytes())
    except OSError as exc:
        reading.errors.append(Problem(str(path), f"cannot read the file: {exc.strerror or exc}"))
        return reading
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        line = exc.lineno if isinstance(exc, json.JSONDecodeError) else None
        where = f"{path}:{line}" if line else str(path)
        reading.errors.append(Problem(where, f"not JSON: {exc}"))
        return reading
    data = _export_data(document)
    if data is None:
        reading.errors.append(Problem(str(path), "not a Ghost export: no db[0].data.posts"))
        return reading
    _Export(path, data, reading, site_url).read()
    return reading


def _export_data(document: Any) -> Mapping[str, Any] | None:
    if isinstance(document, Mapping) and isinstance(document.get("db"), list) and document["db"]:
        document = document["db"][0]
    if not isinstance(document, Mapping):
        return None
    data = document.get("data")
    if isinstance(data, Mapping) and isinstance(data.get("posts"), list):
        return data
    return None


def _rows(data: Mapping[str, Any], table: str) -> list[Mapping[str, Any]]:
    rows = data.get(table)
    return [row for row in rows if isinstance(row, Mapping)] if isinstance(rows, list) else []


class _Export:
    def __init__(
        self, path: Path, data: Mapping[str, Any], reading: ExportReading, site_url: str
    ) -> None:
        self.path = path
        self.data = data
        self.reading = reading
        self.site_url = site_url
        self.relative_links = 0
        self.users = {row.get("id"): str(row.get("name") or "") for row in _rows(data, "users")}
        tags = {row.get("id"): str(row.get("name") or "") for row in _rows(data, "tags")}
        self.post_tags: dict[Any, list[str]] = {}
        for link in sorted(_rows(data, "posts_tags"), key=lambda row: row.get("sort_order") or 0):
            name = tags.get(link.get("tag_id"), "")
            if name and not name.startswith("#"):  # "#internal" tags are Ghost's own
                self.post_tags.setdefault(link.get("post_id"), []).append(name)
        self.post_authors: dict[Any, list[str]] = {}
        for link in sorted(
            _rows(data, "posts_authors"), key=lambda row: row.get("sort_order") or 0
        ):
            name = self.users.get(link.get("author_id"), "")
            if name:
                self.post_authors.setdefault(link.get("post_id"), []).append(name)

    def read(self) -> None:
        pages = 0
        for post in _rows(self.data, "posts"):
            if post.get("type") == "page" or post.get("page") in (1, True):
                pages += 1
                continue
            article = self._article(post)
            if article is not None:
                self.reading.articles.append(article)
        if self.relative_links:
            warning = relative_links_warning(self.relative_links)
            self.reading.warnings.append(Problem(str(self.path), warning, SITE_URL))
        if pages:
            noun = "page" if pages == 1 else "pages"
            reason = f"only posts are articles; not imported: {pages} {noun}"
            self.reading.warnings.append(Problem(str(self.path), reason))

    def _article(self, post: Mapping[str, Any]) -> ParsedArticle | None:
        post_id = post.get("id")
        where = f"{self.path}: post {post.get('slug') or post_id}"
        title = plain_text(str(post.get("title") or ""))[:500]
        if not title:
            self.reading.errors.append(Problem(where, "has no title; not imported"))
            return None
        status = str(post.get("status") or "draft")
        published_at = None
        if status in PUBLISHED_STATUSES:
            published_at = _moment(post.get("published_at"))
            if published_at is None:
                reason = "published without a date; imported as a draft"
                self.reading.warnings.append(Problem(where, reason))
        authors = self.post_authors.get(post_id) or [self.users.get(post.get("author_id"), "")]
        image = self._address(post.get("feature_image"))
        url = self._address(post.get("canonical_url"))
        summary = post.get("custom_excerpt") or post.get("meta_description") or ""
        return ParsedArticle(
            where=where,
            source=f"{self.path.resolve()}#{post_id}"[:2000],
            slug=(slugify(str(post.get("slug") or "")) or slugify(title) or f"post-{post_id}")[
                :200
            ],
            title=title,
            summary=plain_text(str(summary)),
            author=", ".join(name for name in authors if name)[:300],
            url=url if url.startswith(("http://", "https://")) else "",
            image=image if image.startswith(("http://", "https://")) else "",
            image_alt=plain_text(str(post.get("feature_image_alt") or ""))[:1000],
            published_at=published_at,
            series_slug=None,
            series_title=None,
            position=None,
            tags=tuple(dict.fromkeys(self.post_tags.get(post_id, []))),
            body_html=self._body(post),
        )

    def _address(self, value: Any) -> str:
        text = str(value or "")
        if self.site_url:
            text = text.replace(GHOST_URL, self.site_url.rstrip("/"))
        return text

    def _body(self, post: Mapping[str, Any]) -> str:
        body, relative = absolute_links(self._document(post), self.site_url)
        self.relative_links += relative
        return body

    def _document(self, post: Mapping[str, Any]) -> str:
        if post.get("html"):
            return sanitize_html(self._address(post["html"]))
        for key, render in (("lexical", lexical_to_html), ("mobiledoc", mobiledoc_to_html)):
            if post.get(key):
                try:
                    return sanitize_html(self._address(render(json.loads(str(post[key])))))
                except (json.JSONDecodeError, TypeError, KeyError, IndexError, AttributeError):
                    continue
        return markdown_to_safe_html(str(post.get("markdown") or ""))


def _moment(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, UTC)  # Ghost 0.x: milliseconds
    return parse_moment(value)


# --- editor documents --------------------------------------------------------------------

_LEXICAL_FORMATS = ((1, "strong"), (2, "em"), (4, "s"), (8, "u"), (16, "code"))


def lexical_to_html(document: Mapping[str, Any]) -> str:
    """HTML for a Ghost 5 Lexical document (the nodes its editor writes for text)."""
    return "".join(_lexical(node) for node in document["root"]["children"])


def _lexical(node: Mapping[str, Any]) -> str:
    kind = node.get("type")
    inner = "".join(_lexical(child) for child in node.get("children", []))
    if kind in ("text", "extended-text"):
        text = html.escape(str(node.get("text", "")))
        for bit, tag in _LEXICAL_FORMATS:
            if int(node.get("format") or 0) & bit:
                text = f"<{tag}>{text}</{tag}>"
        return text
    if kind in ("paragraph", "extended-paragraph"):
        return f"<p>{inner}</p>"
    if kind in ("heading", "extended-heading"):
        tag = str(node.get("tag", "h2"))
        tag = tag if tag in {f"h{level}" for level in range(1, 7)} else "h2"
        return f"<{tag}>{inner}</{tag}>"
    if kind in ("quote", "aside"):
        return f"<blockquote>{inner}</blockquote>"
    if kind == "list":
        tag = "ol" if node.get("listType") == "number" else "ul"
        return f"<{tag}>{inner}</{tag}>"
    if kind == "listitem":
        return f"<li>{inner}</li>"
    if kind == "link":
        return f'<a href="{html.escape(str(node.get("url", "")))}">{inner}</a>'
    if kind == "linebreak":
        return "<br>"
    if kind == "horizontalrule":
        return "<hr>"
    if kind == "image":
        return _figure(node.get("src"), node.get("alt"), node.get("caption"))
    if kind in ("codeblock", "code"):
        return f"<pre><code>{html.escape(str(node.get('code', '')))}{inner}</code></pre>"
    if kind == "markdown":
        return markdown_to_safe_html(str(node.get("markdown", "")))
    if kind == "html":
        return str(node.get("html", ""))
    return inner  # cards an email cannot show (video, bookmark…) leave their text, if any


def mobiledoc_to_html(document: Mapping[str, Any]) -> str:
    """HTML for a Ghost 1–4 Mobiledoc document: markup sections and the common cards."""
    markups = document.get("markups", [])
    cards = document.get("cards", [])
    out = []
    for section in document.get("sections", []):
        kind = section[0]
        if kind == 1:  # markup section: [1, tag, markers]
            out.append(_markup_section(str(section[1]), section[2], markups))
        elif kind == 3:  # list section: [3, tag, items]
            items = "".join(f"<li>{_markers(item, markups)}</li>" for item in section[2])
            tag = "ol" if section[1] == "ol" else "ul"
            out.append(f"<{tag}>{items}</{tag}>")
        elif kind == 10:  # card section: [10, card index]
            name, payload = cards[section[1]]
            out.append(_card(str(name), payload))
    return "".join(out)


def _markup_section(tag: str, markers: list[Any], markups: list[Any]) -> str:
    tag = (
        tag.lower()
        if tag.lower() in {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"}
        else "p"
    )
    return f"<{tag}>{_markers(markers, markups)}</{tag}>"


def _markers(markers: list[Any], markups: list[Any]) -> str:
    """Text markers: [0, opened markup indexes, how many close after, text]."""
    out, open_tags = [], []
    for marker in markers:
        _kind, opened, closes, text = marker
        for index in opened:
            tag, *attributes = markups[index]
            tag = str(tag).lower()
            attrs = attributes[0] if attributes else []
            href = attrs[attrs.index("href") + 1] if "href" in attrs else ""
            out.append(f'<a href="{html.escape(str(href))}">' if tag == "a" else f"<{tag}>")
            open_tags.append(tag)
        out.append(html.escape(str(text)))
        for _ in range(int(closes)):
            out.append(f"</{open_tags.pop()}>")
    out.extend(f"</{tag}>" for tag in reversed(open_tags))
    return "".join(out)


def _card(name: str, payload: Mapping[str, Any]) -> str:
    if name in ("markdown", "card-markdown"):
        return markdown_to_safe_html(str(payload.get("markdown", "")))
    if name == "html":
        return str(payload.get("html", ""))
    if name == "image":
        return _figure(payload.get("src"), payload.get("alt"), payload.get("caption"))
    if name == "code":
        return f"<pre><code>{html.escape(str(payload.get('code', '')))}</code></pre>"
    if name == "hr":
        return "<hr>"
    return ""


def _figure(src: Any, alt: Any, caption: Any) -> str:
    if not src:
        return ""
    image = f'<img src="{html.escape(str(src))}" alt="{html.escape(str(alt or ""))}">'
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>" if caption else image
