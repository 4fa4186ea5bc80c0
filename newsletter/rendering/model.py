"""What rendering takes and gives: plain data, no ORM objects, no settings.

`EmailContent` (with its `ArticleView`s) is what an email shows, the same for every
recipient; a `TemplateSource` is a staff-written template; a `Snapshot` is a run's
rendered email with slots left for each recipient, stored as JSON with the run;
`PersonalSpec` says how to render it again for a reader when its templates read the
reader (see personal.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


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
    image_alt: str = ""  # the image's text alternative (front matter), else the title
    published: str = ""  # human date, e.g. "7 September 2026"
    tags: tuple[str, ...] = ()
    series_title: str = ""
    part: int = 0  # 1-based position among published articles of its series
    parts: int = 0
    previous: Link | None = None
    next: Link | None = None


@dataclass(frozen=True)
class Sender:
    """Who sends, as the mandatory footer says it: the organisation, its postal address
    (required by US CAN-SPAM in every commercial email) and an optional note."""

    organization: str = ""
    postal_address: str = ""
    footer_note: str = ""


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
    sender: Sender = field(default_factory=Sender)


@dataclass(frozen=True)
class TemplateSource:
    """What a stored template is: a name and Jinja2 source for its three parts."""

    name: str
    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class Snapshot:
    """A run's rendered email, with slot sentinels left for each recipient."""

    subject: str
    html: str
    text: str
    fallbacks: dict[str, str]
    # When the templates read the reader (PersonalSpec as JSON): how to render each variant.
    personal: dict[str, Any] | None = None
    # The render's slot marker (rendering/slots.py); "" in snapshots frozen before it.
    marker: str = ""
    # The subject's own fallbacks (`slot('name', 'Reader')` there, 'there' in the body);
    # None in runs frozen before subjects had their own: then `fallbacks` serve both.
    subject_fallbacks: dict[str, str] | None = None

    @property
    def subject_slot_fallbacks(self) -> dict[str, str]:
        return self.fallbacks if self.subject_fallbacks is None else self.subject_fallbacks

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        return cls(
            subject=data["subject"],
            html=data["html"],
            text=data["text"],
            fallbacks=dict(data.get("fallbacks", {})),
            personal=data.get("personal"),
            marker=data.get("marker", ""),
            subject_fallbacks=(
                None if data.get("subject_fallbacks") is None else dict(data["subject_fallbacks"])
            ),
        )


@dataclass(frozen=True)
class PersonalSpec:
    """What re-rendering a run for a variant needs, frozen with the run."""

    fields: tuple[str, ...]  # what the templates read about the reader (readers.py)
    content: EmailContent
    builtin: str  # "digest" / "article", or "" for a stored template
    template: dict[str, str]  # a stored template's name, subject, html, text

    def to_json(self) -> dict[str, Any]:
        return {
            "fields": list(self.fields),
            "content": asdict(self.content),
            "builtin": self.builtin,
            "template": dict(self.template),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PersonalSpec:
        c = data["content"]
        articles = tuple(
            ArticleView(
                **{
                    **a,
                    "tags": tuple(a.get("tags", ())),
                    "previous": Link(**a["previous"]) if a.get("previous") else None,
                    "next": Link(**a["next"]) if a.get("next") else None,
                }
            )
            for a in c["articles"]
        )
        sender = Sender(**c.get("sender", {}))
        content = EmailContent(**{**c, "articles": articles, "sender": sender})
        return cls(tuple(data["fields"]), content, data["builtin"], dict(data["template"]))

    @property
    def source(self) -> str | TemplateSource:
        """The template to render: a built-in name or the stored template's sources."""
        return self.builtin or TemplateSource(**self.template)
