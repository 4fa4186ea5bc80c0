"""Render once per run: a template → subject, inlined HTML and text, with slots.

The one entry point for every email template, built-in or stored: `render_email`
takes the template (a built-in name such as "digest", or a stored `TemplateSource`,
rendered in the sandbox), the content and optionally the reader, and returns a
`Snapshot`. Pure: plain data in, strings out; the only file access is reading the
template files of the `TemplateLibrary`. Every email it renders carries the mandatory
footer (footer.py), checked in the inlined HTML and in the text before it is returned.

    model ← slots, text ← library, inline, readers ← sandbox ← render ← personal, mime, preview
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import jinja2

from newsletter.errors import InvalidInputError
from newsletter.rendering.footer import as_footer, check_opt_out
from newsletter.rendering.inline import inline_css
from newsletter.rendering.library import BUILTIN, EMAIL_TEMPLATES, TemplateLibrary
from newsletter.rendering.model import (
    ArticleView,
    EmailContent,
    PersonalSpec,
    Sender,
    Snapshot,
    TemplateSource,
)
from newsletter.rendering.readers import reader_context, reader_fields
from newsletter.rendering.sandbox import TemplateProblem, render_staff_parts, render_subject
from newsletter.rendering.slots import SlotRecorder, new_marker, slot_pattern


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
    needs (see personal.py). Raises InvalidInputError naming the problem, and
    MissingFooterError when the footer is missing or hidden.
    """
    stored = template if isinstance(template, TemplateSource) else None
    sources: tuple[str, ...] = (content.subject,)
    if stored is not None:
        sources = (content.subject, stored.subject, stored.html, stored.text)
    # Which reader values the sources read: needed for the run's own render only.
    fields = reader_fields(sources) if reader is None else ()
    seen = reader if reader is not None else reader_context(fields)
    # One random marker for every slot of this render: content cannot forge a slot.
    marker = new_marker()
    slot, subject_slot = SlotRecorder(marker), SlotRecorder(marker)
    footer = _footer(content, slot, library)
    if stored is not None:
        parts = render_staff_parts(stored, content, slot, seen, subject_slot, footer)
        subject, text = parts.subject, parts.text
        try:
            html = inline_css(parts.html)
        except Exception as exc:  # premailer's errors are about the staff's CSS
            raise TemplateProblem("html", f"its CSS cannot be inlined: {exc}") from exc
    else:
        assert isinstance(template, str)
        subject, html, text = _render_builtin(
            template, content, slot, subject_slot, seen, library, footer
        )
    check_opt_out(html, text, content.sender, marker)
    fallbacks = dict(slot.fallbacks)
    subject_fallbacks = dict(subject_slot.fallbacks)
    # A slot of the subject that the body shows too (its <title>) keeps the subject's
    # fallback there.
    for key in slot_pattern(marker).findall(html + text):
        fallbacks.setdefault(key, subject_fallbacks.get(key, ""))
    personal = None
    if fields:
        builtin, stored_sources = ("", asdict(stored)) if stored else (str(template), {})
        personal = PersonalSpec(fields, content, builtin, stored_sources).to_json()
    return Snapshot(
        subject=subject,
        html=html,
        text=text,
        fallbacks=fallbacks,
        personal=personal,
        marker=marker,
        subject_fallbacks=subject_fallbacks,
    )


def _footer(content: EmailContent, slot: SlotRecorder, library: TemplateLibrary) -> tuple[str, str]:
    """The mandatory footer's HTML and text (footer.py), from the template files."""
    context = {
        "slot": slot,
        "list_name": content.list_name,
        "web_url": content.web_url,
        "sender": content.sender,
    }
    try:
        html = library.render("email/_footer.html", context)
        text = library.render("email/_footer.txt", context)
    except jinja2.TemplateError as exc:
        raise InvalidInputError(f"email footer template: {exc}") from exc
    return html, text


def _render_builtin(
    name: str,
    content: EmailContent,
    slot: SlotRecorder,
    subject_slot: SlotRecorder,
    reader: dict[str, Any],
    library: TemplateLibrary,
    footer: tuple[str, str],
) -> tuple[str, str, str]:
    if name not in EMAIL_TEMPLATES:
        raise InvalidInputError(f"unknown email template {name!r}: use one of {EMAIL_TEMPLATES}")
    context: dict[str, Any] = {
        "subscriber": reader,
        "slot": subject_slot,
        "articles": content.articles,
        "article": content.articles[0] if content.articles else None,
        "list_name": content.list_name,
        "sender_name": content.sender_name,
        "sender": content.sender,
        "web_url": content.web_url,
        "preheader": content.preheader,
        **content.extra,
    }
    # Staff write subjects: they render in the sandbox, never in our trusted
    # environment (a subject could otherwise reach Python internals). The subject's
    # slots keep fallbacks of their own ('Reader' there, 'there' in the greeting).
    subject = render_subject(content.subject, context)
    context.update(subject=subject, slot=slot)
    try:
        html = library.render(f"email/{name}.html", {**context, "footer": as_footer(footer[0])})
        text = library.render(f"email/{name}.txt", {**context, "footer": footer[1]})
    except jinja2.TemplateError as exc:
        raise InvalidInputError(f"email template {name!r}: {exc}") from exc
    return subject, inline_css(html), text


# What the samples that check templates (when a campaign is created, a template saved)
# show as the sender: any address will do, the check is that it is shown.
SAMPLE_SENDER = Sender("Sample Organisation", "1 Sample Street, Springfield", "A sample note.")


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
            sender=SAMPLE_SENDER,
        ),
        library=library,
    )
