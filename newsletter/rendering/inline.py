"""CSS inlining: the stylesheet's rules moved onto the elements, once per run.

Classic Outlook (the Word engine) sizes an image by its `width` attribute alone and
ignores `max-width`, so before inlining every image gets a pixel width no wider than
the column; premailer is told to leave width and height attributes as they are
(it would otherwise write a CSS `width:100%` back as `width="100%"`, which Outlook
reads as the image's natural size).
"""

from __future__ import annotations

import logging
import re

from premailer import Premailer

COLUMN_WIDTH = 536  # the container's 600 px less its 32 px padding on each side
_IMG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
_WIDTH = re.compile(r"""\swidth\s*=\s*["']?(\d+)(?:px)?["']?(?=[\s/>])""", re.IGNORECASE)
_HEIGHT = re.compile(r"""\sheight\s*=\s*["']?[^"'\s>]*["']?(?=[\s/>])""", re.IGNORECASE)


def _constrain(match: re.Match[str]) -> str:
    tag = match.group(0)
    width = _WIDTH.search(tag)
    if width is not None and int(width.group(1)) <= COLUMN_WIDTH:
        return tag
    # No pixel width, or one wider than the column: the column's width, and no fixed
    # height (the browser keeps the ratio; Outlook would stretch it).
    tag = _HEIGHT.sub("", _WIDTH.sub("", tag))
    end = len(tag) - (2 if tag.endswith("/>") else 1)
    return f'{tag[:end].rstrip()} width="{COLUMN_WIDTH}"{tag[end:]}'


def constrain_images(html: str) -> str:
    """Every <img> with a pixel `width` of at most the column's."""
    return _IMG.sub(_constrain, html)


def inline_css(html: str) -> str:
    """Move the <style> rules onto the elements; @media rules stay in a <style> block."""
    return str(
        Premailer(
            constrain_images(html),
            keep_style_tags=False,
            remove_classes=False,
            strip_important=False,
            disable_validation=True,
            disable_basic_attributes=["width", "height"],
            cssutils_logging_level=logging.CRITICAL,
            allow_network=False,
        ).transform(pretty_print=False)
    )
