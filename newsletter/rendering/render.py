"""Render once per run: Jinja2 templates → inlined HTML + text, with per-recipient slots.

Pure: takes plain data (no ORM objects, no settings) and returns strings. The only
file access is reading the package's own templates.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from premailer import Premailer

from newsletter.errors import InvalidInputError
from newsletter.rendering.slots import sentinel
from newsletter.rendering.text import html_to_text

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
EMAIL_TEMPLATES = ("digest", "article")


@dataclass(frozen=True)
class Link:
    title: str
    url: str


@dataclass(frozen=True)
class ArticleView:
    """What an email template may know about an article."""

    title: str
    url: str
    summary: str = ""
    body_html: str = ""
    author: str = ""
    image: str = ""
    published: str = ""  # human date, e.g. "7 September 2026"
    tags: tuple[str, ...] = ()
    series_title: str = ""
    part: int = 0  # 1-based position among published articles of its series
    parts: int = 0
    previous: Link | None = None
    next: Link | None = None


@dataclass(frozen=True)
class EmailContent:
    """Everything a campaign's email shows, the same for every recipient."""

    subject: str
    preheader: str
    articles: tuple[ArticleView, ...]
    list_name: str
    sender_name: str
    web_url: str  # the web-archive copy of this run ("view in browser")
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """A run's rendered email, with slot sentinels left for each recipient."""

    subject: str
    html: str
    text: str
    fallbacks: dict[str, str]
    # When the templates read the reader (personal.py): how to render each variant.
    personal: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        return cls(
            subject=data["subject"],
            html=data["html"],
            text=data["text"],
            fallbacks=dict(data.get("fallbacks", {})),
            personal=data.get("personal"),
        )


def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["html_to_text"] = html_to_text
    return env


_HTML_ENV = _environment(autoescape=True)
_TEXT_ENV = _environment(autoescape=False)


def render_package_template(name: str, context: dict[str, Any]) -> str:
    """One of our own (trusted) templates, e.g. "email/confirm.html"; HTML-escaped
    when the name ends in .html."""
    env = _HTML_ENV if name.endswith(".html") else _TEXT_ENV
    return env.get_template(name).render(context)


class _SlotRecorder:
    """The `slot()` function templates call; remembers each slot's fallback."""

    def __init__(self) -> None:
        self.fallbacks: dict[str, str] = {}

    def __call__(self, key: str, fallback: str = "") -> Markup:
        # One value per key and recipient, so one fallback per key; a call without a
        # fallback shares the one given elsewhere.
        previous = self.fallbacks.get(key, "")
        if fallback and previous and previous != fallback:
            raise InvalidInputError(f"slot {key!r} has two fallbacks: {previous!r}, {fallback!r}")
        self.fallbacks[key] = fallback or previous
        return Markup(sentinel(key))


def inline_css(html: str) -> str:
    """Move the <style> rules onto the elements; @media rules stay in a <style> block."""
    return str(
        Premailer(
            html,
            keep_style_tags=False,
            remove_classes=False,
            strip_important=False,
            disable_validation=True,
            cssutils_logging_level=logging.CRITICAL,
            allow_network=False,
        ).transform(pretty_print=False)
    )


def _render_subject(source: str, context: dict[str, Any]) -> str:
    # Staff write subjects: they render in the sandbox, never in our trusted
    # environment (a subject could otherwise reach Python internals).
    from newsletter.rendering.sandbox import render_subject

    return render_subject(source, context)


def render_email(
    template: str, content: EmailContent, reader: dict[str, Any] | None = None
) -> Snapshot:
    """Render subject, inlined HTML and text once, leaving slots for the recipient.

    Our templates do not read the reader, but a campaign's subject may: `reader` is
    the `subscriber` it sees (by default one about whom nothing is known; see
    personal.py)."""
    from newsletter.rendering.personal import PersonalSpec, reader_context, reader_fields

    if template not in EMAIL_TEMPLATES:
        raise InvalidInputError(
            f"unknown email template {template!r}: use one of {EMAIL_TEMPLATES}"
        )
    # Which reader values the subject reads: needed for the run's own render only.
    fields = reader_fields((content.subject,)) if reader is None else ()
    slot = _SlotRecorder()
    context: dict[str, Any] = {
        "subscriber": reader if reader is not None else reader_context(fields),
        "slot": slot,
        "articles": content.articles,
        "article": content.articles[0] if content.articles else None,
        "list_name": content.list_name,
        "sender_name": content.sender_name,
        "web_url": content.web_url,
        "preheader": content.preheader,
        **content.extra,
    }
    subject = _render_subject(content.subject, context)
    context["subject"] = subject
    try:
        html = _HTML_ENV.get_template(f"email/{template}.html").render(context)
        text = _TEXT_ENV.get_template(f"email/{template}.txt").render(context)
    except jinja2.TemplateError as exc:
        raise InvalidInputError(f"email template {template!r}: {exc}") from exc
    personal = None
    if fields:
        personal = PersonalSpec(fields, content, template, {}).to_json()
    return Snapshot(
        subject=subject,
        html=inline_css(html),
        text=text,
        fallbacks=slot.fallbacks,
        personal=personal,
    )


def check_templates(template: str, subject: str, preheader: str = "") -> None:
    """Render once with placeholder content so a broken subject or slot use is refused
    when a campaign is created, not when its run starts."""
    sample = ArticleView(title="Sample", url="https://example.org/sample")
    render_email(
        template,
        EmailContent(
            subject=subject,
            preheader=preheader,
            articles=(sample,),
            list_name="List",
            sender_name="Sender",
            web_url="https://example.org/archive",
        ),
    )
