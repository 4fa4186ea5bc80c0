"""Render once per run: a template → subject, inlined HTML and text, with slots.

The one entry point for every email template, built-in or stored: `render_email`
takes the template (a built-in name such as "digest", or a stored `TemplateSource`,
rendered in the sandbox), the content and optionally the reader, and returns a
`Snapshot`. Pure: plain data in, strings out; the only file access is reading the
template files of the `TemplateLibrary`.

    model ← slots, text ← library, inline, readers ← sandbox ← render ← personal, mime, preview
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import jinja2

from newsletter.errors import InvalidInputError
from newsletter.rendering.inline import inline_css
from newsletter.rendering.library import BUILTIN, EMAIL_TEMPLATES, TemplateLibrary
from newsletter.rendering.model import (
    ArticleView,
    EmailContent,
    PersonalSpec,
    Snapshot,
    TemplateSource,
)
from newsletter.rendering.readers import reader_context, reader_fields
from newsletter.rendering.sandbox import TemplateProblem, render_staff_parts, render_subject
from newsletter.rendering.slots import SlotRecorder, new_marker


def render_email(
    template: str | TemplateSource,
    content: EmailContent,
    reader: dict[str, Any] | None = None,
    library: TemplateLibrary = BUILTIN,
) -> Snapshot:
    """Render subject, inlined HTML and text once, leaving slots for the recipient.

    `template` is a built-in template's name (its files come from `library`) or a
    stored template's sources (rendered in the sandbox). Templates and subjects may
    read the reader: `reader` is the `subscriber` they see; by default one about whom
    nothing is known, and the snapshot then carries what re-rendering per reader
    needs (see personal.py). Raises InvalidInputError naming the problem.
    """
    stored = template if isinstance(template, TemplateSource) else None
    sources: tuple[str, ...] = (content.subject,)
    if stored is not None:
        sources = (content.subject, stored.subject, stored.html, stored.text)
    # Which reader values the sources read: needed for the run's own render only.
    fields = reader_fields(sources) if reader is None else ()
    seen = reader if reader is not None else reader_context(fields)
    slot = SlotRecorder(new_marker())
    if stored is not None:
        parts = render_staff_parts(stored, content, slot, seen)
        subject, text = parts.subject, parts.text
        try:
            html = inline_css(parts.html)
        except Exception as exc:  # premailer's errors are about the staff's CSS
            raise TemplateProblem("html", f"its CSS cannot be inlined: {exc}") from exc
    else:
        assert isinstance(template, str)
        subject, html, text = _render_builtin(template, content, slot, seen, library)
    personal = None
    if fields:
        builtin, stored_sources = ("", asdict(stored)) if stored else (str(template), {})
        personal = PersonalSpec(fields, content, builtin, stored_sources).to_json()
    return Snapshot(
        subject=subject,
        html=html,
        text=text,
        fallbacks=dict(slot.fallbacks),
        personal=personal,
        marker=slot.marker,
    )


def _render_builtin(
    name: str,
    content: EmailContent,
    slot: SlotRecorder,
    reader: dict[str, Any],
    library: TemplateLibrary,
) -> tuple[str, str, str]:
    if name not in EMAIL_TEMPLATES:
        raise InvalidInputError(f"unknown email template {name!r}: use one of {EMAIL_TEMPLATES}")
    context: dict[str, Any] = {
        "subscriber": reader,
        "slot": slot,
        "articles": content.articles,
        "article": content.articles[0] if content.articles else None,
        "list_name": content.list_name,
        "sender_name": content.sender_name,
        "web_url": content.web_url,
        "preheader": content.preheader,
        **content.extra,
    }
    # Staff write subjects: they render in the sandbox, never in our trusted
    # environment (a subject could otherwise reach Python internals).
    subject = render_subject(content.subject, context)
    context["subject"] = subject
    try:
        html = library.render(f"email/{name}.html", context)
        text = library.render(f"email/{name}.txt", context)
    except jinja2.TemplateError as exc:
        raise InvalidInputError(f"email template {name!r}: {exc}") from exc
    return subject, inline_css(html), text


def check_templates(
    template: str, subject: str, preheader: str = "", library: TemplateLibrary = BUILTIN
) -> None:
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
        library=library,
    )
