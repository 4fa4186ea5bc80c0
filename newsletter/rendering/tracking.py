"""Tracked links and the open pixel, written into a run's inlined HTML once per run.

Every `href` of an `<a>`, `<area>` or Outlook `<v:roundrect>` (buttons) that is an
absolute http(s) URL becomes `<base>/t/c/<link part>.` followed by the `track` slot:
per recipient the only work is filling that slot (one value, however many links).
Links that carry a slot (unsubscribe, preferences, "next one now", a reader's
attribute) are personal: they are never rewritten, so RFC 8058 one-click unsubscribe
and the preferences page work as they always did; nor is "View in your browser" (the
email's own web copy, a service link like those). The text part is left alone.

Pure: plain strings in, strings out. Which link gets which id is the caller's
(tracking/links.py keeps destinations in the database, never in the email).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from newsletter.rendering.slots import TRACK_KEY, sentinel

_HREF = re.compile(
    r"""(<(?:a|area|v:roundrect)\b[^>]*?\shref\s*=\s*)(?:"([^"]*)"|'([^']*)')""",
    re.IGNORECASE | re.DOTALL,
)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_TRACKABLE = re.compile(r"https?://[^\s]+", re.IGNORECASE)


def _trackable(url: str) -> bool:
    # A personal link carries a slot of some render ("__slot_"): never rewritten.
    return _TRACKABLE.fullmatch(url) is not None and "__slot_" not in url


def trackable_links(page: str, untracked_prefix: str = "") -> list[str]:
    """The distinct URLs a tracked copy of `page` rewrites, in order of appearance;
    those starting with `untracked_prefix` (the email's own web copy) are left out."""
    found: dict[str, None] = {}
    for match in _HREF.finditer(page):
        url = html.unescape(match.group(2) if match.group(2) is not None else match.group(3))
        if untracked_prefix and url.startswith(untracked_prefix):
            continue
        if _trackable(url):
            found.setdefault(url, None)
    return list(found)


@dataclass(frozen=True)
class Pixel:
    """The open pixel's URL around the `track` slot: prefix + value + suffix."""

    prefix: str
    suffix: str = ".gif"


def track_links(
    page: str, marker: str, tracked: Mapping[str, str], pixel: Pixel | None = None
) -> str:
    """`page` with each link in `tracked` pointing to `tracked[url]` + the track slot of
    the render with `marker`, and the pixel (if any) as the last thing in <body>."""
    slot = sentinel(TRACK_KEY, marker)

    def rewrite(match: re.Match[str]) -> str:
        raw = match.group(2) if match.group(2) is not None else match.group(3)
        prefix = tracked.get(html.unescape(raw))
        if prefix is None or not _trackable(html.unescape(raw)):
            return match.group(0)
        return f'{match.group(1)}"{html.escape(prefix)}{slot}"'

    out = _HREF.sub(rewrite, page)
    if pixel is not None:
        image = (
            f'<img src="{html.escape(pixel.prefix)}{slot}{html.escape(pixel.suffix)}" '
            'width="1" height="1" alt="" border="0" '
            'style="display:block;width:1px;height:1px;border:0;">'
        )
        ends = list(_BODY_END.finditer(out))
        if ends:
            at = ends[-1].start()
            out = out[:at] + image + out[at:]
        else:
            out += image
    return out


def annotate_links(page: str, label: Callable[[str], str | None]) -> str:
    """The link map: `page` with a small badge after every link whose URL `label`
    names (e.g. "12 clicks · 3 machine"), for a staff preview of a sent email."""
    pieces: list[str] = []
    last = 0
    for match in re.finditer(
        r"<a\b[^>]*?\shref\s*=\s*(?:\"([^\"]*)\"|'([^']*)')[^>]*>.*?</a>",
        page,
        re.IGNORECASE | re.DOTALL,
    ):
        raw = match.group(1) if match.group(1) is not None else match.group(2)
        text = label(html.unescape(raw))
        pieces.append(page[last : match.end()])
        if text:
            pieces.append(
                '<span class="link-map" style="display:inline-block;margin-left:4px;'
                "padding:0 6px;border-radius:8px;background:#1d3557;color:#ffffff;"
                f'font:bold 12px/18px Arial,sans-serif;">{html.escape(text)}</span>'
            )
        last = match.end()
    pieces.append(page[last:])
    return "".join(pieces)
