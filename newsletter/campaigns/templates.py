"""Staff templates: stored Jinja2 sources for subject, HTML and text, checked when saved.

A template is saved only when every part compiles in the sandbox, shows the
mandatory footer (`{{ footer }}`: rendering/footer.py; it may be styled, not hidden)
and the whole renders with two sample emails: a full one (two articles in a series, every field
set) and a sparse one (one article with only a title and URL). So a template that
breaks on some article is refused now, by name, part and line, rather than failing a
run later. Rendering always goes through `rendering.sandbox`, at save and at send.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.accounts import audit
from newsletter.campaigns.models import Template, TemplateVersion
from newsletter.errors import InvalidInputError, NotFoundError, Remedy
from newsletter.rendering.footer import MissingFooterError
from newsletter.rendering.library import BUILTIN, EMAIL_TEMPLATES, TemplateLibrary
from newsletter.rendering.model import ArticleView, EmailContent, Link, Snapshot, TemplateSource
from newsletter.rendering.render import SAMPLE_SENDER, check_templates, render_email
from newsletter.rendering.sandbox import TemplateProblem, check_parts, check_reach

NAME_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
MAX_NAME = 200
MAX_SOURCE = 200_000  # characters per part


@dataclass(frozen=True)
class StaffTemplate(TemplateSource):
    """A stored template's sources as plain data (what the sandbox renders)."""

    @classmethod
    def of(cls, template: Template) -> StaffTemplate:
        return cls(template.name, template.subject, template.html, template.text)


_FIRST = ArticleView(
    title="Why treatment helps",
    url="https://example.org/articles/why",
    summary="The short answer, and the long one.",
    body_html="<p>Most people feel better within weeks.</p>",
    author="Dr. Lee",
    image="https://example.org/images/why.jpg",
    published="7 September 2026",
    tags=("treatment", "basics"),
    series_title="Treatment basics",
    part=2,
    parts=3,
    previous=Link("What to expect", "https://example.org/articles/expect"),
    next=Link("Choosing together", "https://example.org/articles/choosing"),
)
SAMPLE_CONTENTS = (
    EmailContent(
        subject="{{ slot('name', 'there') }}, news from the clinic",
        preheader="This month at the clinic",
        articles=(_FIRST, ArticleView(title="Flu season", url="https://example.org/flu")),
        list_name="Clinic news",
        sender_name="Riverside Clinic",
        web_url="https://example.org/archive/emails/sample",
        sender=SAMPLE_SENDER,
    ),
    EmailContent(
        subject="News",
        preheader="",
        articles=(ArticleView(title="Sample", url="https://example.org/sample"),),
        list_name="List",
        sender_name="Sender",
        web_url="https://example.org/archive",
        extra={"sequence": True},
        sender=SAMPLE_SENDER,
    ),
)


def check_template(template: StaffTemplate) -> None:
    """Refuse a template the sandbox cannot render for every sample email.

    Raises InvalidInputError naming the template, the part, the line when known and
    the problem (a syntax error, a private attribute, an unknown name, a call or size
    the sandbox refuses, a missing field).
    """
    name = template.name
    for part in ("subject", "html", "text"):
        if len(getattr(template, part)) > MAX_SOURCE:
            raise InvalidInputError(f"template {name!r}, {part}: longer than {MAX_SOURCE:,}")
    if not template.html.strip():
        raise InvalidInputError(f"template {name!r}: the HTML part is empty")
    try:
        check_parts(template)
        for number, content in enumerate(SAMPLE_CONTENTS, 1):
            try:
                render_email(template, content)
                check_reach(template, content)
            except TemplateProblem as exc:
                kind = "full" if number == 1 else "sparse (one article, title and URL only)"
                raise TemplateProblem(
                    exc.part, f"{exc.reason} (with the {kind} sample email)", exc.line
                ) from exc
    except TemplateProblem as exc:
        raise InvalidInputError(f"template {name!r}, {exc}") from exc
    except MissingFooterError as exc:
        raise InvalidInputError(f"template {name!r}: {exc}") from exc


def save_template(session: Session, name: str, subject: str, html: str, text: str) -> Template:
    """Create the template `name`, or replace its sources, once `check_template` passes;
    a refused template leaves the stored one as it was. Flushes; the caller commits.

    Names are lower-case words joined by hyphens; "digest" and "article" are the
    built-in templates and cannot be taken.
    """
    if not NAME_RE.fullmatch(name) or len(name) > MAX_NAME:
        raise InvalidInputError(
            f"template name {name!r} must be lower-case letters, digits and single hyphens"
        )
    if name in EMAIL_TEMPLATES:
        raise InvalidInputError(f"template name {name!r} is a built-in template")
    check_template(StaffTemplate(name, subject, html, text))
    template = session.scalar(select(Template).where(Template.name == name))
    before = None
    if template is None:
        template = Template(name=name)
    else:
        before = {"subject": template.subject, "html": template.html, "text": template.text}
    template.subject, template.html, template.text = subject, html, text
    try:
        # A savepoint, so losing a race with another writer of the same name leaves
        # the caller's transaction usable.
        with session.begin_nested():
            session.add(template)
    except IntegrityError as exc:
        raise InvalidInputError(f"template {name!r} was saved by someone else; retry") from exc
    after = {"subject": subject, "html": html, "text": text}
    if after != before:
        _keep_version(session, template)
        audit.record(session, "template.save", f"template:{name}", before=before, after=after)
    return template


def _keep_version(session: Session, template: Template) -> None:
    """Every save is kept: version 1, 2, … of the template, with who saved it."""
    last = session.scalar(
        select(func.max(TemplateVersion.version)).where(TemplateVersion.template_id == template.id)
    )
    actor = audit.current_actor(session)
    session.add(
        TemplateVersion(
            template_id=template.id,
            version=(last or 0) + 1,
            subject=template.subject,
            html=template.html,
            text=template.text,
            saved_by=actor.label if actor else "",
        )
    )
    session.flush()


def template_versions(session: Session, template: Template) -> list[TemplateVersion]:
    """Every saved version, newest first."""
    return list(
        session.scalars(
            select(TemplateVersion)
            .where(TemplateVersion.template_id == template.id)
            .order_by(TemplateVersion.version.desc())
        )
    )


def get_version(session: Session, template: Template, version: int) -> TemplateVersion:
    found = session.scalar(
        select(TemplateVersion).where(
            TemplateVersion.template_id == template.id, TemplateVersion.version == version
        )
    )
    if found is None:
        raise NotFoundError(f"template {template.name!r} has no version {version}")
    return found


def restore_version(session: Session, name: str, version: int) -> Template:
    """Save an earlier version again (as a new version: history is never rewritten)."""
    template = get_template(session, name)
    old = get_version(session, template, version)
    return save_template(session, name, old.subject, old.html, old.text)


_DIFF_OPS = {"  ": "=", "- ": "-", "+ ": "+"}


def diff_versions(older: TemplateVersion, newer: TemplateVersion) -> list[tuple[str, str]]:
    """Line by line, each part: ("=", line), ("-", line) or ("+", line), and
    ("@", part name) before each part that changed."""
    import difflib

    lines: list[tuple[str, str]] = []
    for part in ("subject", "html", "text"):
        a, b = getattr(older, part).splitlines(), getattr(newer, part).splitlines()
        if a == b:
            continue
        lines.append(("@", part))
        for op in difflib.ndiff(a, b):
            if op.startswith("? "):
                continue
            lines.append((_DIFF_OPS[op[:2]], op[2:]))
    return lines


def template_version(template: Template) -> str:
    """A strong validator of the template's sources (its ETag)."""
    digest = hashlib.sha256()
    for part in (template.name, template.subject, template.html, template.text):
        digest.update(len(part.encode()).to_bytes(8, "big") + part.encode())
    return digest.hexdigest()[:32]


def render_campaign_email(
    session: Session, template: str, content: EmailContent, library: TemplateLibrary = BUILTIN
) -> Snapshot:
    """The email of a campaign whose template is `template`: a built-in one ("digest",
    "article", its files from `library`), else the stored template of that name,
    rendered in the sandbox. NotFoundError when there is neither."""
    if template in EMAIL_TEMPLATES:
        return render_email(template, content, library=library)
    stored = StaffTemplate.of(get_template(session, template))
    try:
        return render_email(stored, content)
    except TemplateProblem as exc:
        raise InvalidInputError(f"template {template!r}, {exc}") from exc


def check_campaign_template(
    session: Session,
    template: str,
    subject: str,
    preheader: str = "",
    library: TemplateLibrary = BUILTIN,
) -> None:
    """Refuse, when a campaign is created, a template name that is neither built in nor
    stored, or a subject that does not render with it."""
    sample = replace(SAMPLE_CONTENTS[0], subject=subject, preheader=preheader)
    if template in EMAIL_TEMPLATES:
        check_templates(template, subject, preheader, library)
    else:
        render_campaign_email(session, template, sample, library)
    # Every branch of the subject too: a costly one may be taken for some reader.
    check_reach(TemplateSource("subject", "", "", ""), sample)


def get_template(session: Session, name: str) -> Template:
    template = session.scalar(select(Template).where(Template.name == name))
    if template is None:
        raise NotFoundError(f"no template {name!r}", remedy=Remedy("create", "template", name))
    return template


def list_templates(session: Session) -> list[Template]:
    """Every stored template, by name."""
    return list(session.scalars(select(Template).order_by(Template.name)))


def describe_template(template: Template, with_source: bool = False) -> dict[str, Any]:
    """A template as plain data (for `templates list/show` and --json)."""
    data: dict[str, Any] = {
        "name": template.name,
        "created_at": template.created_at.isoformat() if template.created_at else None,
        "updated_at": template.updated_at.isoformat() if template.updated_at else None,
        "sizes": {p: len(getattr(template, p) or "") for p in ("subject", "html", "text")},
    }
    if with_source:
        data.update(subject=template.subject, html=template.html, text=template.text)
    return data


def sample_preview(template: Template) -> Snapshot:
    """The stored template rendered with the full sample email (what the editor shows)."""
    return render_email(StaffTemplate.of(template), SAMPLE_CONTENTS[0])
