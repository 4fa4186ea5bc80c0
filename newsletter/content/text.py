"""Article text as we store it: sanitised HTML bodies, plain-text titles, slugs.

Every importer (Markdown, feeds, WordPress, Ghost) passes its bodies through
`sanitize_html`, so an article body holds the same small set of tags whatever its
origin.
"""

from __future__ import annotations

import html
import re
import unicodedata
from urllib.parse import urljoin, urlsplit

import markdown
import nh3

from newsletter.rendering.slots import SLOT_PATTERN

SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")

_ARTICLE_TAG_GROUPS = (
    "h1 h2 h3 h4 h5 h6 p br hr div span",
    "strong b em i u s del ins mark small sub sup abbr cite q blockquote code pre kbd",
    "ul ol li dl dt dd a img figure figcaption",
    "table caption thead tbody tfoot tr th td colgroup col",
)
_ARTICLE_HTML = nh3.Cleaner(
    tags={tag for group in _ARTICLE_TAG_GROUPS for tag in group.split()},
    clean_content_tags={"script", "style", "iframe", "object", "embed", "noscript"},
    attributes={
        "a": {"href", "title"},
        "img": {"src", "alt", "title", "width", "height"},
        "abbr": {"title"},
        "ol": {"start"},
        "code": {"class"},  # language-* from fenced code blocks
        "sup": {"id"},  # footnote references and the notes they jump to
        "li": {"id"},
        "div": {"class"},
        "th": {"style", "colspan", "rowspan"},
        "td": {"style", "colspan", "rowspan"},
    },
    # Markdown tables align columns with inline styles; nothing else may style.
    filter_style_properties={"text-align"},
    url_schemes={"http", "https", "mailto"},
    link_rel="noopener noreferrer",
)
_NO_HTML = nh3.Cleaner(tags=set(), clean_content_tags={"script", "style"})
# What is left of a heading or paragraph that only held a comment or a removed tag
# (Hugo's "## <!--more-->", an embed the sanitiser took out).
_EMPTY_BLOCK = re.compile(r"<(h[1-6]|p)>\s*</\1>\n?")
# Attributes as nh3 writes them (always double-quoted) on the two tags that point away.
_LINK_ATTRIBUTE = re.compile(r'(<(?:a|img)\b[^>]*?\s(?:href|src)=")([^"]*)(")')
_ABSOLUTE = ("http://", "https://", "mailto:", "#")
# A zero-width space between the two underscores: the text looks the same, but is no
# longer the marker a run fills with each reader's data (rendering/slots.py).
_INERT_SLOT = "_\u200b_slot_"


def markdown_to_safe_html(body: str) -> str:
    """Markdown (with the `extra` and `sane_lists` extensions) as sanitised HTML.

    Scripts, styles, iframes, event handlers and non-http(s)/mailto links are
    removed; every link gets rel="noopener noreferrer".
    """
    rendered = markdown.markdown(body, extensions=["extra", "sane_lists"], output_format="html")
    return sanitize_html(rendered)


def sanitize_html(value: str) -> str:
    """Article HTML reduced to what `markdown_to_safe_html` allows, whatever its origin.

    Used for HTML that arrives as HTML (feed entries, WordPress and Ghost exports), so
    every article body passes the same sanitiser.
    """
    return inert_slots(_EMPTY_BLOCK.sub("", str(_ARTICLE_HTML.clean(value))).strip())


def plain_text(value: str) -> str:
    """`value` without HTML tags or entities, with runs of whitespace made one space."""
    return inert_slots(" ".join(html.unescape(str(_NO_HTML.clean(value))).split()))


def inert_slots(text: str) -> str:
    """`text` with every per-recipient slot marker (`__slot_email__`) made plain text.

    An article is data to every template; a marker written in it must not be filled
    with the reader's address or unsubscribe link when a run is sent.
    """
    return SLOT_PATTERN.sub(lambda found: _INERT_SLOT + found.group(0)[len("__slot_") :], text)


def slugify(value: str) -> str:
    """Lower-case ASCII letters and digits joined by single hyphens ("" if none)."""
    ascii_text = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def absolute_links(value: str, site_url: str) -> tuple[str, int]:
    """Sanitised HTML with links and images relative to the old site made absolute
    against `site_url` (when given), and how many relative ones are left.

    An email has no site around it: `/assets/photo.jpg` points nowhere in an inbox.
    """
    left = 0

    def resolve(found: re.Match[str]) -> str:
        nonlocal left
        target = html.unescape(found.group(2))
        if not target or target.startswith(_ABSOLUTE):
            return found.group(0)
        if not site_url:
            left += 1
            return found.group(0)
        return found.group(1) + html.escape(urljoin(site_url, target)) + found.group(3)

    return _LINK_ATTRIBUTE.sub(resolve, value), left


def is_site_url(value: str) -> bool:
    """Whether `value` can be the address of the old site (http or https, with a host)."""
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)
