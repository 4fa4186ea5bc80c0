"""Templates and subjects that read the reader: one render per variant, not per reader."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.campaigns.service import ContentSpec, create_campaign
from newsletter.campaigns.templates import save_template
from newsletter.delivery.content import run_email
from newsletter.delivery.mailers import MemoryMailer
from newsletter.delivery.sending import ChunkSender
from newsletter.rendering.readers import ALL_ATTRIBUTES, reader_fields
from newsletter.runs.models import Delivery, DeliveryStatus, Run
from tests.factories import (
    SERIES,
    add_member,
    import_sample,
    make_list,
    settings_for,
    start_run,
)

HTML = """<html><body>
<p>Hello {{ slot('name', 'there') }}</p>
{% if subscriber.attributes.plan == "member" %}<p>Members' corner: the clinic's evening
talks are open to you.</p>{% endif %}
{% for a in articles %}<h2>{{ a.title }}</h2>{% endfor %}
<a href="{{ slot('unsubscribe_url') }}">Unsubscribe</a>
{{ footer }}
</body></html>"""
SUBJECT = (
    '{% if subscriber.attributes.get("lang") == "de" %}Neu{% else %}New{% endif %}: '
    "{{ article.title }}"
)


@pytest.mark.parametrize(
    ("source", "fields"),
    [
        ("{{ slot('name') }} and nothing about the reader", ()),
        ("{% if subscriber.attributes.plan == 'a' %}x{% endif %}", ("attr.plan",)),
        ('{{ subscriber.attributes["city"] }}{{ subscriber.name }}', ("attr.city", "name")),
        ("{{ subscriber.attributes.get('lang', 'en') }}", ("attr.lang",)),
        ("{{ subscriber.attributes.get(key) }}", (ALL_ATTRIBUTES,)),
        ("{% for k, v in subscriber.attributes.items() %}{{ k }}{% endfor %}", (ALL_ATTRIBUTES,)),
        ("{{ subscriber }}", (ALL_ATTRIBUTES, "email", "name")),
    ],
)
def test_what_a_template_reads_about_the_reader(source: str, fields: tuple[str, ...]) -> None:
    assert reader_fields([source]) == fields


def send(
    session: Session, database_url: str, template: str, subject: str
) -> tuple[list[EmailMessage], int]:
    """A campaign to six readers (plans and languages mixed), sent by a ChunkSender;
    the messages, and how many variants were rendered."""
    settings = settings_for(database_url)
    import_sample(session)
    news = make_list(session)
    readers = [("ann", "member", "de"), ("bo", "", "de"), ("cy", "member", "en")]
    readers += [("di", "", "en"), ("ed", "member", "de"), ("fay", "", "")]
    for name, plan, lang in readers:
        attributes = {k: v for k, v in (("plan", plan), ("lang", lang)) if v}
        add_member(session, news, f"{name}@example.org", name.title(), **attributes)
    campaign = create_campaign(
        session,
        name="Personal",
        list_slugs=["clinic-news"],
        subject=subject,
        content=ContentSpec(series=SERIES),
        template=template,
    )
    run_id, chunks = start_run(session, campaign)
    snapshot = run_email(session, session.get_one(Run, run_id), settings)
    session.commit()
    # The frozen run (what the archive shows) knows nothing about any reader.
    assert "Members' corner" not in snapshot.html and snapshot.subject.startswith("New: ")
    mailer = MemoryMailer()
    sender = ChunkSender(settings, mailer)
    counts = sender.send_chunk(session, chunks[0], "task")
    assert counts["sent"] == 6
    [compiled] = sender.compiled.values()
    variants = compiled.variants
    assert variants is not None
    messages = []
    for sent in mailer.messages:
        parsed = message_from_bytes(sent.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        messages.append(parsed)
    return messages, variants.renders


def html_of(message: EmailMessage) -> str:
    body = message.get_body(("html",))
    assert body is not None
    return str(body.get_content())


def test_a_stored_template_branches_on_an_attribute_per_reader(
    session: Session, database_url: str
) -> None:
    save_template(session, "members", "", HTML, "")
    sent, renders = send(session, database_url, "members", SUBJECT)
    # Rendered once per combination of the values read (plan, lang), not per reader.
    assert renders == 5
    messages = {m["To"].addresses[0].username: m for m in sent}

    for who in ("ann", "cy", "ed"):
        assert "Members' corner" in html_of(messages[who])
    for who in ("bo", "di", "fay"):
        assert "Members' corner" not in html_of(messages[who])
    assert {who for who, m in messages.items() if m["Subject"].startswith("Neu: ")} == {
        "ann",
        "bo",
        "ed",
    }
    # Slots still fill per reader inside every variant.
    assert "Hello Ann" in html_of(messages["ann"]) and "Hello Ed" in html_of(messages["ed"])
    assert "Hello Bo" in html_of(messages["bo"])


def test_a_built_in_template_with_a_subject_that_reads_the_reader(
    session: Session, database_url: str
) -> None:
    messages, renders = send(session, database_url, "digest", SUBJECT)
    assert renders == 3  # only the subject reads the reader: "de", "en" and nothing
    german = sorted(
        m["To"].addresses[0].username for m in messages if m["Subject"].startswith("Neu: ")
    )
    assert german == ["ann", "bo", "ed"]


def test_a_template_that_reads_nothing_about_the_reader_is_rendered_once(
    session: Session, database_url: str
) -> None:
    settings = settings_for(database_url)
    import_sample(session)
    make_list(session)
    campaign = create_campaign(
        session,
        name="Plain",
        list_slugs=["clinic-news"],
        subject="News: {{ article.title }}",
        content=ContentSpec(series=SERIES),
    )
    run_id, _ = start_run(session, campaign)
    assert run_email(session, session.get_one(Run, run_id), settings).personal is None


def test_a_reader_whose_values_break_the_template_fails_alone(
    session: Session, database_url: str
) -> None:
    settings = settings_for(database_url)
    html = (
        "<p>{% if subscriber.attributes.visits %}One in "
        "{{ 100 // (subscriber.attributes.visits | int) }}{% endif %}</p>"
        "<a href=\"{{ slot('unsubscribe_url') }}\">Unsubscribe</a>{{ footer }}"
    )
    save_template(session, "visits", "", html, "")
    import_sample(session)
    news = make_list(session)
    add_member(session, news, "zero@example.org", visits="0")
    add_member(session, news, "four@example.org", visits="4")
    add_member(session, news, "none@example.org")
    campaign = create_campaign(
        session,
        name="Visits",
        list_slugs=["clinic-news"],
        subject="News",
        content=ContentSpec(series=SERIES),
        template="visits",
    )
    _, chunks = start_run(session, campaign)
    mailer = MemoryMailer()
    counts = ChunkSender(settings, mailer).send_chunk(session, chunks[0], "task")

    assert counts == {"sent": 2, "deferred": 0, "failed": 1, "suppressed": 0}
    assert sorted(m.recipient for m in mailer.messages) == ["four@example.org", "none@example.org"]
    failed = session.scalar(
        select(Delivery.smtp_reply).where(Delivery.status == DeliveryStatus.failed)
    )
    assert failed is not None and "ZeroDivisionError" in failed
