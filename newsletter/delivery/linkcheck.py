"""Checks of an email before it goes: every link answers, the unsubscribe link is
there, and the HTML is small enough that Gmail shows it whole (it clips messages
over 102 KB, hiding the footer and its unsubscribe link).

Links are fetched by the server (HEAD, then GET when a server refuses HEAD), at most
`MAX_LINKS` of them, each with a short timeout; links to private or loopback
addresses are refused unless NEWSLETTER_ALLOW_PRIVATE_URLS (staff must not make the
server reach its own network).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from lxml import html as lxml_html

from newsletter.content.feeds import check_public_host
from newsletter.errors import InvalidInputError

GMAIL_CLIP_BYTES = 102 * 1024
MAX_LINKS = 40
TIMEOUT = 5.0
# What previews put where each reader's own link goes (rendering/preview.py).
UNSUBSCRIBE_PLACEHOLDER = "#unsubscribe"


@dataclass(frozen=True)
class LinkResult:
    url: str
    ok: bool
    answer: str  # "200", "404", "timed out", "refused: private address"…


@dataclass
class EmailCheck:
    size_bytes: int
    clipped: bool  # Gmail would clip it
    has_unsubscribe: bool
    links: list[LinkResult] = field(default_factory=list)
    unchecked: int = 0  # links beyond MAX_LINKS

    @property
    def broken(self) -> list[LinkResult]:
        return [link for link in self.links if not link.ok]


Fetch = Callable[[str], str]  # url -> status code as text; raises httpx errors


def _links(html: str) -> tuple[list[str], bool]:
    tree = lxml_html.document_fromstring(html)
    found: dict[str, None] = {}
    unsubscribe = False
    for anchor in tree.iter("a"):
        href = (anchor.get("href") or "").strip()
        if href == UNSUBSCRIBE_PLACEHOLDER:
            unsubscribe = True
        if urlsplit(href).scheme in ("http", "https"):
            found[href] = None
    return list(found), unsubscribe


def http_fetch(url: str) -> str:
    with httpx.Client(timeout=TIMEOUT, follow_redirects=True) as client:
        response = client.head(url)
        if response.status_code in (405, 501, 403):
            response = client.get(url)
    return str(response.status_code)


def check_email(
    html: str, *, fetch: Fetch = http_fetch, allow_private: bool = False, follow: bool = True
) -> EmailCheck:
    """Size, the unsubscribe link, and (with `follow`) the answer of every link."""
    size = len(html.encode("utf-8"))
    links, unsubscribe = _links(html)
    check = EmailCheck(size, size > GMAIL_CLIP_BYTES, unsubscribe)
    if not follow:
        return check
    check.unchecked = max(0, len(links) - MAX_LINKS)
    for url in links[:MAX_LINKS]:
        check.links.append(_check_one(url, fetch, allow_private))
    return check


def _check_one(url: str, fetch: Fetch, allow_private: bool) -> LinkResult:
    if not allow_private:
        try:
            check_public_host(url)
        except InvalidInputError as exc:
            return LinkResult(url, False, f"not checked: {exc}")
    try:
        status = fetch(url)
    except httpx.TimeoutException:
        return LinkResult(url, False, "timed out")
    except httpx.HTTPError as exc:
        return LinkResult(url, False, f"no answer ({type(exc).__name__})")
    return LinkResult(url, status.startswith(("2", "3")), status)
