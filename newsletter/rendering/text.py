"""Sanitised article HTML → readable plain text for the text/plain alternative."""

from __future__ import annotations

import textwrap
from html.parser import HTMLParser

_BLOCKS = {"p", "div", "blockquote", "pre", "table", "tr", "ul", "ol", "h1", "h2", "h3", "h4"}
_HEADINGS = {"h1", "h2", "h3", "h4"}


class _TextBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.current: list[str] = []
        self.href: str | None = None
        self.link_text: list[str] = []
        self.prefix = ""
        self.heading = False

    def _flush(self) -> None:
        text = " ".join("".join(self.current).split())
        if text:
            if self.heading:
                text = f"{text}\n{'-' * min(len(text), 72)}"
            else:
                text = textwrap.fill(
                    text,
                    width=72,
                    initial_indent=self.prefix,
                    subsequent_indent=" " * len(self.prefix),
                )
            self.blocks.append(text)
        self.current = []
        self.prefix = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS or tag == "li":
            self._flush()
            self.heading = tag in _HEADINGS
            if tag == "li":
                self.prefix = "- "
        elif tag == "br":
            self.current.append("\n")
        elif tag == "a":
            self.href = dict(attrs).get("href")
            self.link_text = []

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCKS or tag == "li":
            self._flush()
            self.heading = False
        elif tag == "a" and self.href:
            label = " ".join("".join(self.link_text).split())
            if self.href not in (label, ""):
                self.current.append(f" ({self.href})")
            self.href = None

    def handle_data(self, data: str) -> None:
        self.current.append(data)
        if self.href is not None:
            self.link_text.append(data)

    def text(self) -> str:
        self._flush()
        return "\n\n".join(self.blocks)


def html_to_text(html: str) -> str:
    """Paragraphs, headings, list items and link targets, wrapped at 72 columns."""
    builder = _TextBuilder()
    builder.feed(html)
    builder.close()
    return builder.text()
