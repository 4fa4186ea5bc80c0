"""Charts as server-side SVG: no script, readable without colour (every bar carries its
number as text and a <title>), drawn from plain numbers. Pure.

    stacked_bars("Clicks per link", [("Link 1", (("human", 12), ("machine", 3)))])
"""

from __future__ import annotations

import html
from collections.abc import Sequence

# Colours that keep their contrast on white and for the common colour blindnesses.
COLOURS = {"human": "#1d6a5e", "machine": "#b8860b"}
_FALLBACK = ("#1d3557", "#6d597a", "#e07a5f")

Row = tuple[str, Sequence[tuple[str, int]]]  # a label and its (series, value) pairs


def _colour(name: str, index: int) -> str:
    return COLOURS.get(name, _FALLBACK[index % len(_FALLBACK)])


def _legend(names: Sequence[str], y: int) -> str:
    parts = []
    for i, name in enumerate(names):
        x = 10 + i * 110
        parts.append(
            f'<rect x="{x}" y="{y}" width="12" height="12" fill="{_colour(name, i)}"/>'
            f'<text x="{x + 16}" y="{y + 11}">{html.escape(name)}</text>'
        )
    return "".join(parts)


def _svg(title: str, width: int, height: int, body: str) -> str:
    t = html.escape(title)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{t}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'font-family="Arial, sans-serif" font-size="12">'
        f'<title>{t}</title><text x="10" y="18" font-size="14" font-weight="bold">{t}</text>'
        f"{body}</svg>"
    )


def stacked_bars(title: str, rows: Sequence[Row], width: int = 640) -> str:
    """One horizontal bar per row, its series stacked, each with its number."""
    names = list(dict.fromkeys(name for _, pairs in rows for name, _ in pairs))
    top = max((sum(v for _, v in pairs) for _, pairs in rows), default=0) or 1
    label_width, bar_space = 200, width - 200 - 60
    parts = [_legend(names, 28)]
    y = 52
    for label, pairs in rows:
        short = label if len(label) <= 32 else label[:31] + "…"
        parts.append(
            f'<text x="10" y="{y + 13}"><title>{html.escape(label)}</title>'
            f"{html.escape(short)}</text>"
        )
        x = label_width
        for i, (name, value) in enumerate(pairs):
            w = round(bar_space * value / top)
            if w:
                parts.append(
                    f'<rect x="{x}" y="{y}" width="{w}" height="18" '
                    f'fill="{_colour(name, names.index(name) if name in names else i)}">'
                    f"<title>{html.escape(label)}: {value} {html.escape(name)}</title></rect>"
                )
            x += w
        total = " + ".join(str(v) for _, v in pairs)
        parts.append(f'<text x="{x + 6}" y="{y + 13}">{html.escape(total)}</text>')
        y += 26
    return _svg(title, width, y + 10, "".join(parts))


def columns(title: str, rows: Sequence[Row], width: int = 640, height: int = 240) -> str:
    """One vertical stacked column per row (e.g. per hour), labelled under the axis."""
    names = list(dict.fromkeys(name for _, pairs in rows for name, _ in pairs))
    top = max((sum(v for _, v in pairs) for _, pairs in rows), default=0) or 1
    plot_top, plot_bottom = 50, height - 40
    span = plot_bottom - plot_top
    step = max(4, (width - 60) // max(1, len(rows)))
    parts = [
        _legend(names, 26),
        f'<line x1="40" y1="{plot_bottom}" x2="{width - 10}" y2="{plot_bottom}" stroke="#555"/>',
        f'<text x="4" y="{plot_top + 4}">{top}</text>',
    ]
    for index, (label, pairs) in enumerate(rows):
        x = 44 + index * step
        y = plot_bottom
        for name, value in pairs:
            h = round(span * value / top)
            if h:
                y -= h
                parts.append(
                    f'<rect x="{x}" y="{y}" width="{max(2, step - 2)}" height="{h}" '
                    f'fill="{_colour(name, names.index(name))}">'
                    f"<title>{html.escape(label)}: {value} {html.escape(name)}</title></rect>"
                )
        if index % max(1, len(rows) // 8) == 0:
            parts.append(
                f'<text x="{x}" y="{plot_bottom + 14}" font-size="10">{html.escape(label)}</text>'
            )
    return _svg(title, width, height, "".join(parts))
