"""Sanitised article HTML → readable plain text for the text/plain alternative."""

from __future__ import annotations

import textwrap
from html.parser import HTMLParser

_BLOCKS = {"p", "div", "blockquote", "pre", "table", "tr", "ul", "ol", "h1", "h2", "h3", "h4"}
_HEADINGS = {"h1", "h2", "h3", "h4"}
WIDTH = 72


def _wrap(line: str, first_indent: str, indent: str) -> list[str]:
    # Never split a word: a link target or a hyphenated word cut across lines is
    # unusable, so an overlong one stands on a line of its own.
    return textwrap.wrap(
        line,
        width=WIDTH,
        initial_indent=first_indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


class _TextBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.lines: list[str] = []  # the block's lines ended by <br> so far
        self.current: list[str] = []
        self.href: str | None = None
        self.link_text: list[str] = []
        self.prefix = ""
        self.heading = False

    def _flush(self) -> None:
        # Whitespace in the source is one space; only <br> ends a line.
        lines = [" ".join(line.split()) for line in (*self.lines, "".join(self.current))]
        while lines and not lines[-1]:
            lines.pop()
        while lines and not lines[0]:
            lines.pop(0)
        if lines:
            if self.heading:
                title = " ".join(lines)
                text = f"{title}\n{'-' * min(len(title), WIDTH)}"
            else:
                indent = " " * len(self.prefix)
                wrapped: list[str] = []
                for line in lines:
                    first = indent if wrapped else self.prefix
                    wrapped.extend(_wrap(line, first, indent) if line else [""])
                text = "\n".join(wrapped)
            self.blocks.append(text)
        self.lines = []
        self.current = []
        self.prefix = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS or tag == "li":
            self._flush()
            self.heading = tag in _HEADINGS
            if tag == "li":
                self.prefix = "- "
        elif tag == "br":
            self.lines.append("".join(self.current))
            self.current = []
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
    """Paragraphs, headings, list items, line breaks and link targets, wrapped at 72 columns.

    Words (and so URLs) are never split; one longer than 72 columns gets a line of its own.
    """
    builder = _TextBuilder()
    builder.feed(html)
    builder.close()
    return builder.text()
