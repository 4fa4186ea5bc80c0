"""Staff templates: refused at save time when unsafe or broken, rendered in a sandbox."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from newsletter.campaigns.models import Template
from newsletter.campaigns.templates import (
    StaffTemplate,
    check_campaign_template,
    check_template,
    get_template,
    list_templates,
    render_campaign_email,
    save_template,
)
from newsletter.cli.templates import app as templates_app
from newsletter.errors import InvalidInputError, NotFoundError
from newsletter.rendering import sandbox
from newsletter.rendering.mime import MessageTemplate, Recipient
from newsletter.rendering.model import ArticleView, EmailContent, Link, Sender
from newsletter.rendering.render import render_email
from newsletter.rendering.sandbox import TemplateProblem, plain_context, render_subject
from newsletter.rendering.slots import find_unfilled, sentinel
from tests.test_mime import HEADERS, decoded_bodies

HTML = """\
<style>.title { color: #c00; }</style>
<p>Hello {{ slot("name", "there") }},</p>
{% for a in articles %}
<h2 class="title"><a href="{{ a.url }}">{{ a.title }}</a></h2>
{% if a.series_title %}<p>{{ a.series_title }}, part {{ a.part }} of {{ a.parts }}</p>{% endif %}
<div>{{ a.body_html }}</div>
{% if a.next %}<p>Next: {{ a.next.title }}</p>{% endif %}
{% endfor %}
<p><a href="{{ slot('unsubscribe_url') }}">Unsubscribe</a> from {{ list_name }}</p>
<div class="fine-print">{{ footer }}</div>
"""
TEXT = """\
Hello {{ slot("name", "there") }},
{% for a in articles %}
* {{ a.title }}: {{ a.url }}
{% endfor %}
Unsubscribe: {{ slot("unsubscribe_url") }}
{{ footer }}
"""
CONTENT = EmailContent(
    subject="{{ slot('name', 'there') }}, news",
    preheader="This month",
    articles=(
        ArticleView(
            title="Tom & Jerry <live>",
            url="https://news.example.org/a/1",
            body_html="<p>Body <em>text</em></p>",
            series_title="Basics",
            part=1,
            parts=2,
            next=Link("Part two", "https://news.example.org/a/2"),
        ),
    ),
    list_name="Clinic news",
    sender_name="Riverside Clinic",
    web_url="https://news.example.org/archive/emails/abc",
    sender=Sender("Riverside Clinic", "12 River Road, Springfield, IL 62701, USA"),
)

# Server-side template injection payloads that must never be stored.
INJECTIONS = [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "'__subclasses__' is private"),
    ("{{ cycler.__init__.__globals__.os.popen('id').read() }}", "'__globals__' is private"),
    ("{{ self._TemplateReference__context }}", "'_TemplateReference__context' is private"),
    ("{{ config }}", "unknown name 'config'"),
    ("{{ config.items() }}", "unknown name 'config'"),
    (
        "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
        "'__subclasses__' is private",
    ),
    ("{{ lipsum.__globals__ }}", "'__globals__' is private"),
    ("{{ lipsum }}", "unknown name 'lipsum'"),
    ("{{ request.application.__globals__ }}", "'__globals__' is private"),
    ("{{ article._sa_instance_state }}", "'_sa_instance_state' is private"),
    ("{{ article['__class__'] }}", "'__class__' is private"),
    ("{{ article|attr('__class__') }}", "the attr filter is not available"),
    ("{{ ''|attr('upper') }}", "the attr filter is not available"),
    ("{{ namespace() }}", "unknown name 'namespace'"),
    ("{{ joiner() }}", "unknown name 'joiner'"),
    ("{% include 'email/base.html' %}", "{% include %} is not available"),
    ("{% extends 'email/base.html' %}", "{% extends %} is not available"),
    ("{% import 'email/base.html' as m %}", "{% import %} is not available"),
    ("{{ article.title.format(1) }}", "calling format() is not allowed"),
    ("{{ '{0.__class__}'.format(article) }}", "calling format() is not allowed"),
    ("{{ article.title.center(1000000000) }}", "calling center() is not allowed"),
    ("{{ article|pprint }}", "No filter named 'pprint'"),
]

# Templates that would take a worker's CPU or memory.
RUNAWAYS = [
    ("{% for i in range(100000) %}x{% endfor %}", "range() may hold at most 1,000 numbers"),
    (
        "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
        "loops or calls more than 100,000 times",
    ),
    (
        "{% for i in range(10) %}{% for c in 'x' * 100000 %}{% endfor %}{% endfor %}",
        "loops or calls more than 100,000 times",
    ),
    ("{{ 'x' * 1000000000 }}", "at most 100,000 characters"),
    ("{{ [0] * 1000000000 }}", "at most 1,000 items"),
    ("{{ 7 ** 100000 }}", "at most 4096 bits"),
    ("{{ '%999999999d' % 1 }}", "widths may be at most 1000"),
    ("{{ '%s'|format(1)|center(999999999) }}", "center width may be at most 1000"),
    ("{{ '%*d'|format(999999999, 1) }}", "widths may be at most 1000"),
    ("{{ ('a' * 100000)|replace('a', 'b' * 1000) }}", "replace would make more than"),
    ("{{ (['x' * 100000] * 1000)|join }}", "join filter would make a string of more than"),
    ("{{ ['a']|batch(1000000000, 'x')|list }}", "batch size may be at most 1000"),
    (
        "{% macro twice(s) %}{{ twice(s ~ s) }}{% endmacro %}{{ twice('x') }}",
        "'~' would make a string of more than 1,000,000 characters",
    ),
    ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "macros call themselves too deeply"),
]


def template(html: str = HTML, text: str = TEXT, subject: str = "") -> StaffTemplate:
    return StaffTemplate("monthly", subject, html, text)


def stored(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Template)) or 0


# --- saving ------------------------------------------------------------------------------


def test_a_good_template_is_saved_and_found_by_name(session: Session) -> None:
    save_template(session, "monthly", "", HTML, TEXT)
    session.commit()

    found = get_template(session, "monthly")
    assert (found.html, found.text, found.subject) == (HTML, TEXT, "")
    assert [t.name for t in list_templates(session)] == ["monthly"]


@pytest.mark.parametrize(("payload", "problem"), INJECTIONS)
def test_template_injection_is_refused_and_never_stored(
    session: Session, payload: str, problem: str
) -> None:
    with pytest.raises(InvalidInputError, match="template 'evil', html, line 2") as caught:
        save_template(session, "evil", "", f"<p>Hello</p>\n{payload}", "")

    assert problem in str(caught.value)
    assert stored(session) == 0


def test_a_payload_in_a_branch_the_sample_never_takes_is_refused(session: Session) -> None:
    html = "{% if articles|length > 99 %}{{ ''.__class__.__mro__ }}{% endif %}ok"

    with pytest.raises(InvalidInputError, match="'__mro__' is private"):
        save_template(session, "evil", "", html, "")
    assert stored(session) == 0


@pytest.mark.parametrize("part", ["subject", "text"])
def test_every_part_is_checked(session: Session, part: str) -> None:
    sources = {"subject": "", "html": HTML, "text": TEXT, part: "{{ cycler.__init__ }}"}

    with pytest.raises(InvalidInputError, match=f"template 'evil', {part}, line 1"):
        save_template(session, "evil", **sources)


@pytest.mark.parametrize(("source", "problem"), RUNAWAYS)
def test_runaway_templates_are_refused(source: str, problem: str) -> None:
    with pytest.raises(InvalidInputError, match="template 'monthly', html") as caught:
        check_template(template(html=source))

    assert problem in str(caught.value)


def test_rendering_is_bounded_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "RENDER_SECONDS", -1.0)

    with pytest.raises(TemplateProblem, match="took more than"):
        render_email(template(html="{% for a in articles %}{% endfor %}"), CONTENT)


def test_a_syntax_error_names_the_line(session: Session) -> None:
    with pytest.raises(InvalidInputError, match=r"html, line 3: .*'endfor'"):
        save_template(session, "broken", "", "<p>\n{% for a in articles %}\n{% endif %}", "")


def test_a_template_that_breaks_on_a_sparse_article_is_refused(session: Session) -> None:
    html = "<p>Filed under {{ article.tags[0] }}</p>{{ footer }}"

    with pytest.raises(InvalidInputError, match=r"line 1: .* \(with the sparse"):
        save_template(session, "fragile", "", html, "")


def test_an_unknown_slot_is_refused(session: Session) -> None:
    with pytest.raises(InvalidInputError, match="unknown slot 'phone'"):
        save_template(session, "slots", "", "{{ slot('phone') }}", "")


@pytest.mark.parametrize("name", ["digest", "article", "Monthly", "a b", "-x", ""])
def test_built_in_and_malformed_names_are_refused(session: Session, name: str) -> None:
    with pytest.raises(InvalidInputError, match="template name"):
        save_template(session, name, "", HTML, TEXT)


def test_a_refused_update_keeps_the_stored_template(session: Session) -> None:
    save_template(session, "monthly", "", HTML, TEXT)
    session.commit()

    with pytest.raises(InvalidInputError):
        save_template(session, "monthly", "", "{{ config }}", TEXT)
    session.rollback()

    assert get_template(session, "monthly").html == HTML
    assert stored(session) == 1


def test_saving_again_replaces_the_sources(session: Session) -> None:
    save_template(session, "monthly", "", HTML, TEXT)
    session.commit()

    save_template(session, "monthly", "{{ subject }} (monthly)", HTML, "")
    session.commit()

    found = get_template(session, "monthly")
    assert (found.subject, found.text) == ("{{ subject }} (monthly)", "")
    assert stored(session) == 1


def test_an_unknown_template_is_not_found(session: Session) -> None:
    with pytest.raises(NotFoundError, match="no template 'nope'"):
        get_template(session, "nope")


# --- rendering ---------------------------------------------------------------------------


def test_the_html_is_escaped_inlined_and_keeps_the_article_body() -> None:
    snapshot = render_email(template(), CONTENT)

    assert "Tom &amp; Jerry &lt;live&gt;" in snapshot.html
    assert "<p>Body <em>text</em></p>" in snapshot.html
    assert 'style="color:#c00"' in snapshot.html
    assert "<style>" not in snapshot.html
    assert "Next: Part two" in snapshot.html


def test_the_text_is_not_escaped() -> None:
    snapshot = render_email(template(), CONTENT)

    assert "* Tom & Jerry <live>: https://news.example.org/a/1" in snapshot.text


def test_slots_are_left_for_each_recipient_with_their_fallbacks() -> None:
    snapshot = render_email(template(), CONTENT)

    name = sentinel("name", snapshot.marker)
    assert snapshot.subject == f"{name}, news"
    assert f"Hello {name}," in snapshot.html and f"Hello {name}," in snapshot.text
    assert snapshot.fallbacks == {
        "name": "there",
        "unsubscribe_url": "",
        "email": "",
        "preferences_url": "",
    }


def test_two_fallbacks_for_one_slot_are_refused() -> None:
    html = "{{ slot('name', 'there') }} {{ slot('name', 'friend') }}"

    with pytest.raises(TemplateProblem, match="two fallbacks"):
        render_email(template(html=html), CONTENT)


def test_a_template_subject_wraps_the_campaigns() -> None:
    snapshot = render_email(template(subject="[{{ list_name }}] {{ subject }}"), CONTENT)

    assert snapshot.subject == f"[Clinic news] {sentinel('name', snapshot.marker)}, news"


def test_the_campaign_subject_is_rendered_in_the_sandbox_too() -> None:
    content = EmailContent(
        "{{ cycler.__init__.__globals__ }}", "", CONTENT.articles, "L", "S", "https://x.example"
    )

    with pytest.raises(TemplateProblem, match="campaign subject, line 1: '__globals__'"):
        render_email(template(), content)


def test_without_text_the_html_becomes_the_text() -> None:
    snapshot = render_email(template(text=""), CONTENT)

    assert f"Hello {sentinel('name', snapshot.marker)}," in snapshot.text
    assert f"Unsubscribe ({sentinel('unsubscribe_url', snapshot.marker)})" in snapshot.text


def test_a_stored_template_goes_through_the_same_mime_step() -> None:
    snapshot = render_email(template(), CONTENT)
    values = {"name": "Zoë", "email": "zoe@example.org", "unsubscribe_url": "https://u.example/x"}

    data = MessageTemplate(snapshot, HEADERS).build(
        Recipient("zoe@example.org", "Zoë", values, "<1@clinic.example>")
    )

    assert b"__slot_" not in data
    assert b"Subject: =?utf-8?b?" in data


def test_H1_a_sentinel_written_out_in_a_stored_template_is_text_not_a_slot() -> None:
    snapshot = render_email(template(html="<p>__slot_next_url__</p>{{ footer }}"), CONTENT)

    assert "next_url" not in snapshot.fallbacks
    assert "next_url" not in find_unfilled(snapshot.html, snapshot.marker)
    assert "<p>__slot_next_url__</p>" in snapshot.html


def test_templates_see_plain_data_only() -> None:
    context = plain_context(CONTENT, sandbox.SlotRecorder())

    def plain(value: object) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, tuple):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, str | int | float | bool)

    assert all(plain(v) for k, v in context.items() if k != "slot")


# --- the command -------------------------------------------------------------------------


def test_templates_cli_saves_lists_and_shows(database_url: str, tmp_path: Path) -> None:
    html = tmp_path / "monthly.html"
    html.write_text(HTML, encoding="utf-8")
    text = tmp_path / "monthly.txt"
    text.write_text(TEXT, encoding="utf-8")
    runner = CliRunner()
    env = {"NEWSLETTER_DATABASE_URL": database_url}

    saved = runner.invoke(
        templates_app,
        ["save", "monthly", "--subject", "{{ subject }}", "--html", str(html), "--text", str(text)],
        env=env,
    )
    listed = runner.invoke(templates_app, ["list", "--json"], env=env)
    shown = runner.invoke(templates_app, ["show", "monthly", "--json"], env=env)

    assert saved.exit_code == 0, saved.output
    assert "template monthly saved" in saved.output
    assert [row["name"] for row in json.loads(listed.output)] == ["monthly"]
    assert json.loads(shown.output)["html"] == HTML


def test_templates_cli_refuses_an_unsafe_template(database_url: str, tmp_path: Path) -> None:
    html = tmp_path / "evil.html"
    html.write_text("{{ lipsum.__globals__ }}", encoding="utf-8")
    env = {"NEWSLETTER_DATABASE_URL": database_url}

    result = CliRunner().invoke(templates_app, ["save", "evil", "--html", str(html)], env=env)
    listed = CliRunner().invoke(templates_app, ["list", "--json"], env=env)

    assert isinstance(result.exception, InvalidInputError)
    assert "'__globals__' is private" in str(result.exception)
    assert json.loads(listed.output) == []


def test_H1_a_sentinel_written_in_an_article_is_shown_as_written() -> None:
    article = ArticleView(title="About __slot_next_url__ tokens", url="https://x.example/a")
    snapshot = render_email("digest", replace(CONTENT, subject="News", articles=(article,)))
    values = {
        "email": "zoe@example.org",
        "unsubscribe_url": "https://u.example/x",
        "next_url": "https://u.example/next",
    }

    data = MessageTemplate(snapshot, HEADERS).build(
        Recipient("zoe@example.org", "", values, "<1@clinic.example>")
    )

    text, _ = decoded_bodies(data)
    assert b"About __slot_next_url__ tokens" in text
    assert b"https://u.example/next" not in data


# --- campaigns: built-in or stored templates ---------------------------------------------


def test_a_campaign_renders_a_built_in_or_a_stored_template(session: Session) -> None:
    save_template(session, "monthly", "", HTML, TEXT)

    built_in = render_campaign_email(session, "digest", CONTENT)
    stored_one = render_campaign_email(session, "monthly", CONTENT)

    assert "Read the article" in built_in.html
    assert "Tom &amp; Jerry &lt;live&gt;" in stored_one.html and "Read the article" not in (
        stored_one.html
    )


def test_a_campaign_with_an_unknown_template_is_refused(session: Session) -> None:
    with pytest.raises(NotFoundError, match="no template 'nope'"):
        check_campaign_template(session, "nope", "Hello")


def test_a_campaign_subject_is_checked_against_its_stored_template(session: Session) -> None:
    save_template(session, "monthly", "", HTML, TEXT)

    check_campaign_template(session, "monthly", "{{ slot('name', 'there') }}, hello")
    with pytest.raises(InvalidInputError, match="campaign subject, line 1: unknown name 'x'"):
        check_campaign_template(session, "monthly", "{{ x }}")


def test_render_subject_renders_a_campaign_subject_in_the_sandbox() -> None:
    slot = sandbox.SlotRecorder()
    context = {"slot": slot, "articles": CONTENT.articles, "list_name": "Clinic news"}

    subject = render_subject("{{ slot('name', 'there') }},  {{ articles|length }} new", context)

    assert subject == "__slot_name__, 1 new" and slot.fallbacks == {"name": "there"}
    with pytest.raises(TemplateProblem, match="'__globals__' is private"):
        render_subject("{{ cycler.__init__.__globals__.os.popen('id').read() }}", context)


# --- the mandatory footer ------------------------------------------------------------


def test_a_template_without_the_footer_is_refused_at_save(session: Session) -> None:
    html = HTML.replace("{{ footer }}", "")

    with pytest.raises(InvalidInputError, match=r"template 'bare': .*put \{\{ footer \}\}"):
        save_template(session, "bare", "", html, TEXT)
    assert stored(session) == 0


def test_a_text_part_without_the_footer_is_refused_at_save(session: Session) -> None:
    text = TEXT.replace("{{ footer }}", "")

    with pytest.raises(InvalidInputError, match="the text part has no preferences link"):
        save_template(session, "bare-text", "", HTML, text)
    assert stored(session) == 0


@pytest.mark.parametrize(
    ("html", "reason"),
    [
        ('<div style="display:none">{{ footer }}</div>', "display:none"),
        ("<style>.gone { visibility: hidden }</style><div class=gone>{{ footer }}</div>", "hidden"),
        (
            "<style>@media screen { .small { display: none !important } }</style>"
            "<table><tr><td class=small>{{ footer }}</td></tr></table>",
            "display:none",
        ),
        ('<div style="font-size:0">{{ footer }}</div>', "font-size"),
        (
            "<p>News</p><!--[if !mso]><!-->{{ footer }}<!--<![endif]-->",
            "only outside classic Outlook",
        ),
        ('<div style="max-height:0;overflow:hidden">{{ footer }}</div>', "max-height:0"),
        ("<div hidden>{{ footer }}</div>", "hidden attribute"),
    ],
    ids=["inline", "class", "media-query", "tiny-text", "not-outlook", "collapsed", "attribute"],
)
def test_a_template_that_hides_the_footer_is_refused_at_save(
    session: Session, html: str, reason: str
) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        save_template(session, "sneaky", "", html, TEXT)
    assert stored(session) == 0


def test_a_template_may_style_the_footer(session: Session) -> None:
    # (font-size:0 on a wrapper, set again inside, is the usual fix for inline gaps.)
    html = (
        "<style>.fine { font-size: 13px; color: #555; border-top: 1px solid #ccc }</style>"
        '<p>News</p><div style="font-size:0"><div class="fine">{{ footer }}</div></div>'
    )

    save_template(session, "styled", "", html, TEXT)

    snapshot = render_email(template(html=html), CONTENT)
    assert "12 River Road, Springfield" in snapshot.html
    assert 'class="fine" style="font-size:13px' in snapshot.html
