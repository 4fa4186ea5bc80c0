"""Tracking switches, machine labels, firsts, forgetting and pruning, on both databases.

Messages are sent by the real chunk sender into a MemoryMailer; hits are recorded by
the same function the web routes call (`record_hit`, with a token read from the email).
"""

from __future__ import annotations

from datetime import timedelta
from email.message import EmailMessage

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.audience.models import (
    BounceEvent,
    MailingList,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    TrackingMode,
)
from newsletter.campaigns.service import set_campaign_tracking
from newsletter.config import Settings
from newsletter.db import utcnow
from newsletter.delivery.mailers import MemoryMailer
from newsletter.delivery.sending import ChunkSender
from newsletter.rendering.model import Snapshot
from newsletter.rendering.slots import sentinel
from newsletter.rendering.tracking import Pixel, track_links, trackable_links
from newsletter.runs.models import Delivery, Run
from newsletter.services import reports
from newsletter.services.data_rights import forget
from newsletter.services.preferences import set_tracking
from newsletter.tracking.classify import classify
from newsletter.tracking.engagement import engaged_subscribers
from newsletter.tracking.links import correct_link
from newsletter.tracking.models import EventKind, TrackedMessage, TrackingEvent
from newsletter.tracking.policy import effective
from newsletter.tracking.retention import prune_events
from newsletter.tracking.tokens import TrackingSigner
from tests.factories import (
    BROWSER,
    PIXEL,
    TRACKED,
    add_member,
    drip_with_events,
    hit,
    html_of,
    import_sample,
    make_list,
    send_into_memory,
    series_digest,
    settings_for,
    start_run,
    tracked_readers,
)


def _send(
    session: Session,
    settings: Settings,
    mode: TrackingMode,
    opens: bool,
    readers: int = 3,
    campaign_mode: str | None = None,
) -> tuple[int, dict[str, EmailMessage]]:
    tracked_readers(session, mode, opens, readers)
    campaign = series_digest(session, ["clinic-news"])
    if campaign_mode is not None:
        set_campaign_tracking(session, campaign.id, campaign_mode, None)
    session.commit()
    return send_into_memory(session, settings, campaign)


def _text(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def test_a_reader_who_chose_dont_track_me_gets_plain_links_and_no_pixel(
    database_url: str, session: Session
) -> None:
    settings = settings_for(database_url)
    # reader1 asks not to be tracked before the run.
    _prepare_reader_without_tracking(session)
    run_id, mail = _send(session, settings, TrackingMode.individual, opens=True)
    snapshot = Snapshot.from_json(session.get_one(Run, run_id).snapshot or {})
    originals = trackable_links(snapshot.html, f"{settings.base_url}/archive/emails/")
    tracked, untracked = mail["reader0@example.org"], mail["reader1@example.org"]
    assert TRACKED.findall(html_of(tracked)) and PIXEL.findall(html_of(tracked))
    # "View in your browser" is a service link, like unsubscribe: never counted.
    assert f'href="{settings.base_url}/archive/emails/' in html_of(tracked)
    assert not TRACKED.findall(html_of(untracked)) and not PIXEL.findall(html_of(untracked))
    assert "/t/" not in html_of(untracked) and "/t/" not in _text(untracked)
    for url in originals:
        assert f'href="{url}"' in html_of(untracked).replace("&amp;", "&")
    # The footer says which applies.
    assert "recorded for you" in _text(tracked)
    assert "You asked us not to track you" in _text(untracked)


def _prepare_reader_without_tracking(session: Session) -> None:
    subscriber = Subscriber(email="reader1@example.org", name="Reader 1", no_tracking=True)
    session.add(subscriber)
    session.commit()


def test_an_off_list_sends_plain_links_and_no_pixel(database_url: str, session: Session) -> None:
    settings = settings_for(database_url)
    _, mail = _send(session, settings, TrackingMode.off, opens=True, readers=2)
    for message in mail.values():
        assert "/t/c/" not in html_of(message) and "/t/o/" not in html_of(message)
        assert "counts no opens and no clicks" in _text(message)


def test_a_campaign_may_be_more_private_than_its_list_never_less(
    database_url: str, session: Session
) -> None:
    settings = settings_for(database_url)
    # An anonymous list; the campaign asks for individual: it stays anonymous.
    run_id, mail = _send(
        session, settings, TrackingMode.anonymous, opens=False, campaign_mode="individual"
    )
    signer = TrackingSigner(settings.secret_key)
    hits = [signer.verify(TRACKED.findall(html_of(m))[0]) for m in mail.values()]
    assert not any(hit.individual for hit in hits)
    assert len({hit.ident for hit in hits}) == len(hits)  # random, one per message
    assert not any(PIXEL.findall(html_of(m)) for m in mail.values())
    assert session.get_one(Run, run_id).tracking == {
        "lists": {
            str(session.scalars(select(MailingList.id)).one()): {
                "mode": "anonymous",
                "opens": False,
            }
        }
    }


def test_forgetting_a_reader_erases_their_events_and_the_counts_stay(
    database_url: str, session: Session
) -> None:
    settings = settings_for(database_url)
    run_id, mail = _send(session, settings, TrackingMode.individual, opens=True)
    for address in ("reader0@example.org", "reader1@example.org"):
        html = html_of(mail[address])
        assert hit(session, settings, PIXEL.findall(html)[0], EventKind.open) == ""
        assert hit(session, settings, TRACKED.findall(html)[0])
    campaign_id = session.get_one(Run, run_id).campaign_id
    assert campaign_id is not None
    before = reports.campaign_report(session, campaign_id)
    assert [r["email"] for r in reports.who_clicked(session, run_id)] == [
        "reader0@example.org",
        "reader1@example.org",
    ]

    report = forget(session, "reader0@example.org")
    session.commit()

    assert report.tracking_events == 2
    kept = session.scalars(select(Delivery).filter_by(email="reader1@example.org")).one()
    assert session.scalars(select(Delivery).filter_by(email="reader0@example.org")).first() is None
    assert {e.delivery_id for e in session.scalars(select(TrackingEvent))} == {kept.id}
    messages = session.scalars(select(TrackedMessage)).all()
    assert sorted(m.message_key[0] for m in messages) == ["d", "f"]  # "f": tied to nobody
    assert [m.delivery_id for m in messages if m.message_key[0] == "f"] == [None]
    after = reports.campaign_report(session, campaign_id)
    for section in ("opens", "clicks", "links", "over_time"):
        assert after[section] == before[section], section
    assert [r["email"] for r in reports.who_clicked(session, run_id)] == ["reader1@example.org"]


def test_a_hit_seconds_after_sending_is_a_machine_and_a_later_human_one_upgrades(
    database_url: str, session: Session
) -> None:
    settings = settings_for(database_url)
    run_id, mail = _send(session, settings, TrackingMode.individual, opens=True, readers=1)
    html = html_of(mail["reader0@example.org"])
    pixel = PIXEL.findall(html)[0]
    # Within 10 s of sending: a scanner at the receiving server.
    hit(session, settings, pixel, EventKind.open, machine_seconds=10)
    delivery = session.scalars(select(Delivery)).one()
    session.refresh(delivery)
    assert delivery.first_open_at is not None and delivery.first_open_machine
    [event] = session.scalars(select(TrackingEvent)).all()
    assert event.machine and "after the message was sent" in event.machine_reason
    # The reader opens it later: the ledger row now says a person opened it.
    hit(session, settings, pixel, EventKind.open)
    session.refresh(delivery)
    assert not delivery.first_open_machine
    campaign_id = session.get_one(Run, run_id).campaign_id
    assert campaign_id is not None
    opens = reports.campaign_report(session, campaign_id)["opens"]
    assert opens["unique"] == {"human": 1, "machine": 0, "total": 1}
    assert opens["total"] == {"human": 1, "machine": 1, "total": 2}
    # Only the human event makes the reader engaged.
    engaged = set(session.scalars(engaged_subscribers(utcnow() - timedelta(days=1), "open")))
    assert engaged == {delivery.subscriber_id}
    assert not set(session.scalars(engaged_subscribers(utcnow() - timedelta(days=1), "click")))


def test_machine_clicks_never_make_a_reader_engaged(database_url: str, session: Session) -> None:
    settings = settings_for(database_url)
    _, mail = _send(session, settings, TrackingMode.individual, opens=False, readers=1)
    link = TRACKED.findall(html_of(mail["reader0@example.org"]))[0]
    hit(session, settings, link, agent="Barracuda Sentinel (EE)")
    hit(session, settings, link, agent="python-requests/2.32")
    assert not set(session.scalars(engaged_subscribers(utcnow() - timedelta(days=1))))


def test_a_corrected_link_sends_later_clicks_to_its_new_destination(
    database_url: str, session: Session
) -> None:
    settings = settings_for(database_url)
    run_id, mail = _send(session, settings, TrackingMode.anonymous, opens=False, readers=1)
    link = TRACKED.findall(html_of(mail["reader0@example.org"]))[0]
    correct_link(session, run_id, 1, "https://clinic.example/fixed")
    session.commit()
    assert hit(session, settings, link) == "https://clinic.example/fixed"


def test_pruning_events_keeps_every_count(database_url: str, session: Session) -> None:
    settings = settings_for(database_url)
    run_id, mail = _send(session, settings, TrackingMode.anonymous, opens=True, readers=2)
    for message in mail.values():
        hit(session, settings, PIXEL.findall(html_of(message))[0], EventKind.open)
        hit(session, settings, TRACKED.findall(html_of(message))[1])
    campaign_id = session.get_one(Run, run_id).campaign_id
    assert campaign_id is not None
    before = reports.campaign_report(session, campaign_id)
    assert before["clicks"]["unique"]["human"] == 2
    assert prune_events(session, 180, now=utcnow() + timedelta(days=181)) == 4
    after = reports.campaign_report(session, campaign_id)
    assert session.scalars(select(TrackingEvent)).first() is None
    for section in ("opens", "clicks", "links", "lists", "over_time"):
        assert after[section] == before[section], section
    # The console's link map shows each link's clicks beside it, in the email as sent.
    mapped = reports.link_map(session, run_id, after)
    assert mapped.count('class="link-map"') >= 1 and "2 human · 0 machine clicks" in mapped
    assert "/t/c/" not in mapped  # the web copy, without anyone's token
    charts = reports.report_charts(after)
    assert all(svg.startswith("<svg") and "<script" not in svg for svg in charts.values())


def test_dont_track_me_through_the_service_the_api_calls(
    database_url: str, session: Session
) -> None:
    news = make_list(session)
    add_member(session, news, "Ann@Example.org")
    assert set_tracking(session, "ann@example.org", track=False) == "ann@example.org"
    assert session.scalars(select(Subscriber)).one().no_tracking


def test_machine_labels() -> None:
    def reason(method: str, agent: str, headers: dict[str, str] | None = None) -> str:
        return classify(method, agent, headers or {}, 3600, 10).machine_reason

    assert reason("HEAD", BROWSER) == "HEAD request"
    assert reason("GET", BROWSER, {"sec-purpose": "prefetch"}).startswith("prefetch")
    assert reason("GET", "") == "no user agent"
    assert reason("GET", "Mozilla/5.0") == "Apple Mail Privacy Protection proxy"
    assert reason("GET", "Mozilla/5.0 (compatible; BingPreview/1.0b)").startswith("known")
    assert reason("GET", "python-requests/2.32").startswith("known bot")
    assert reason("GET", BROWSER) == ""
    gmail = (
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
    )
    assert classify("GET", gmail, {}, 3600, 10).user_agent_class == "gmail-proxy"
    assert reason("GET", gmail) == ""
    assert classify("GET", BROWSER, {}, 2.5, 10).machine_reason == "2 s after the message was sent"


def test_rewriting_leaves_personal_links_alone_and_covers_outlook_buttons() -> None:
    marker = "0123456789AB"
    unsubscribe = sentinel("unsubscribe_url", marker)
    preferences = sentinel("preferences_url", marker)
    page = (
        "<html><body>"
        '<a href="https://clinic.example/a?x=1&amp;y=2">A</a>'
        '<!--[if mso]><v:roundrect href="https://clinic.example/a?x=1&amp;y=2"></v:roundrect>'
        "<![endif]-->"
        f'<a href="{unsubscribe}">Unsubscribe</a><a href="{preferences}">Preferences</a>'
        '<a href="mailto:desk@clinic.example">Mail</a>'
        f'<a href="https://clinic.example/p?id={sentinel("attr.id", marker)}">Mine</a>'
        "</body></html>"
    )
    assert trackable_links(page) == ["https://clinic.example/a?x=1&y=2"]
    out = track_links(
        page,
        marker,
        {"https://clinic.example/a?x=1&y=2": "https://n.example/t/c/L."},
        Pixel("https://n.example/t/o/P."),
    )
    track = sentinel("track", marker)
    assert out.count(f'href="https://n.example/t/c/L.{track}"') == 2
    assert f'href="{unsubscribe}"' in out and f'href="{preferences}"' in out
    assert 'href="mailto:desk@clinic.example"' in out
    assert f'src="https://n.example/t/o/P.{track}.gif"' in out
    assert out.index("/t/o/") < out.index("</body>")


def test_a_drip_sequence_funnel_counts_each_step_sent_opened_clicked_and_continued(
    database_url: str, session: Session
) -> None:
    settings = settings_for(database_url)
    sequence_id, articles = drip_with_events(session, settings)

    funnel = reports.sequence_funnel(session, sequence_id)

    first, second = funnel["steps"]
    assert (first["sent"], first["opened"], first["clicked"], first["next_step"]) == (3, 2, 1, 2)
    assert (second["sent"], second["opened"], second["clicked"], second["next_step"]) == (
        2,
        0,
        0,
        None,
    )
    assert first["article"] == articles[0].slug and first["continued_rate"] == round(2 / 3, 4)


def test_bounces_complaints_and_unsubscribes_count_for_the_last_message_before_them(
    database_url: str, session: Session
) -> None:
    settings = settings_for(database_url)
    import_sample(session)
    news = make_list(session)
    for i in range(3):
        add_member(session, news, f"reader{i}@example.org")
    sender = ChunkSender(settings, MemoryMailer())
    campaigns = []
    for name in ("First", "Second"):
        campaign = series_digest(session, ["clinic-news"], subject=name)
        session.commit()
        _, chunks = start_run(session, campaign)
        for chunk in chunks:
            sender.send_chunk(session, chunk, "task")
        campaigns.append(campaign.id)
    # After both were sent: a hard bounce, a complaint and an unsubscribe by mail.
    later = utcnow() + timedelta(minutes=5)
    session.add_all(
        [
            BounceEvent(source="dsn", event_id="1", email="reader0@example.org", kind="hard",
                        received_at=later),
            BounceEvent(source="arf", event_id="2", email="reader1@example.org",
                        kind="complaint", received_at=later),
        ]
    )  # fmt: skip
    subscription = session.scalars(
        select(Subscription).join(Subscriber).where(Subscriber.email == "reader2@example.org")
    ).one()
    subscription.status = SubscriptionStatus.unsubscribed
    subscription.unsubscribed_at, subscription.source = later, "mailto"
    session.commit()

    first, second = (reports.campaign_report(session, c)["delivery"] for c in campaigns)

    assert (second["sent"], second["delivered"], second["bounced"]["hard"]) == (3, 2, 1)
    assert second["complaints"] == 1 and second["unsubscribes"]["mailto"] == 1
    assert (first["sent"], first["delivered"], first["complaints"]) == (3, 3, 0)
    assert first["unsubscribes"]["total"] == 0 and first["bounced"]["total"] == 0


def test_a_campaign_mode_only_makes_a_list_more_private() -> None:
    off, anonymous, individual = TrackingMode.off, TrackingMode.anonymous, TrackingMode.individual
    assert effective(anonymous, True, off).on is False  # an off campaign counts nothing
    assert effective(individual, False, anonymous).mode is anonymous
    assert effective(anonymous, False, individual).mode is anonymous  # never less private
    assert effective(off, True, individual).on is False
    assert effective(anonymous, False, None, True).opens  # the pixel switch is the campaign's
