"""Campaign results: one module for the CLI, the API and the console, so the numbers
agree everywhere (`newsletter campaigns report`, `GET /api/v1/campaigns/{id}/report`,
and the console's report page through `report_charts` and `link_map`).

What is counted, and over what:

- **From the ledger** (runs/): recipients (ledger rows), sent, deferred, failed,
  suppressed, pending, cancelled. **Bounced** (hard, soft) and **complaints** are
  reports received after sending (bounces/), and **unsubscribes** (one-click, page,
  mailto, other) are subscriptions ended after sending; each is attributed to the last
  message the reader was sent before it, when that message is this run's.
  **Delivered** = sent − bounced after sending.
- **Opens and clicks** (tracking/): *total* counts events, *unique* counts messages.
  Every event is human or machine (tracking/classify.py); a message is a *human*
  unique when at least one of its events was a person's, a *machine* unique when all
  of them were machines' (a later human event moves it). Rates are unique human
  messages over *delivered*; click-to-open is unique human clickers over unique human
  openers (none without the pixel).
- Per link (human, machine, total), per list, over time (hourly for the first two
  days, then daily), and the campaign's previous runs side by side.

Totals and uniques outlive raw events (they are rollups and per-message firsts), so a
report reads the same after events are pruned. Machine reasons are counted from raw
events, so they cover the last NEWSLETTER_TRACKING_RETENTION_DAYS only.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session, aliased

from newsletter.audience.models import BounceEvent, MailingList, Subscriber, Subscription
from newsletter.campaigns.content import get_campaign
from newsletter.content.models import Article
from newsletter.errors import NotFoundError
from newsletter.rendering.charts import columns, stacked_bars
from newsletter.rendering.model import Snapshot
from newsletter.rendering.preview import archive_html
from newsletter.rendering.tracking import annotate_links
from newsletter.runs.models import Delivery, DeliveryStatus, Run
from newsletter.sequences.models import Sequence
from newsletter.tracking.models import (
    NO_LINK,
    EventKind,
    TrackedLink,
    TrackedMessage,
    TrackedMessageLink,
    TrackingEvent,
    TrackingRollup,
)
from newsletter.tracking.policy import RunPolicy, describe

LIMITS = (
    "Opens are counted only where the reader's client loads images: many clients "
    "(and readers) turn them off, so real opens are higher than counted.",
    "Apple Mail Privacy Protection loads every image of every message when it arrives, "
    "read or not: those opens are labelled machine (user agent 'Mozilla/5.0').",
    "Gmail and Yahoo fetch images through their proxies when the reader opens the "
    "message, then cache them: a second open of the same message is not seen.",
    "Security scanners follow links and load images before the reader does: such events "
    "are labelled machine (HEAD requests, prefetches, known scanner and bot user agents, "
    "hits within seconds of sending, three or all links of a message clicked within "
    "seconds) and kept, never counted as a person's.",
    "In anonymous mode no event is tied to a person: unique counts are per message, and "
    "nobody can be listed as having clicked.",
)
UNSUBSCRIBE_SOURCES = {
    "one-click": "one_click",
    "unsubscribe page": "page",
    "unsubscribe link": "page",
    "preferences": "page",
    "mailto": "mailto",
}


def _split(human: int, machine: int) -> dict[str, int]:
    return {"human": human, "machine": machine, "total": human + machine}


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass(frozen=True)
class _Firsts:
    human: int
    machine_only: int


def _unique(session: Session, run_id: int, kind: EventKind) -> _Firsts:
    human_col = TrackedMessage.opened_at if kind is EventKind.open else TrackedMessage.clicked_at
    machine_col = (
        TrackedMessage.machine_opened_at
        if kind is EventKind.open
        else TrackedMessage.machine_clicked_at
    )
    human, machine = session.execute(
        select(
            func.count(human_col),
            func.count(machine_col).filter(human_col.is_(None)),
        ).where(TrackedMessage.run_id == run_id)
    ).one()
    return _Firsts(int(human), int(machine))


def _totals(session: Session, run_id: int, kind: EventKind) -> tuple[int, int]:
    human, machine = session.execute(
        select(
            func.coalesce(func.sum(TrackingRollup.human), 0),
            func.coalesce(func.sum(TrackingRollup.machine), 0),
        ).where(TrackingRollup.run_id == run_id, TrackingRollup.kind == kind)
    ).one()
    return int(human), int(machine)


def _after_last_message(session: Session, run_id: int, subscriber_id: Any, moment: Any) -> Any:
    """SQL: the reader was sent this run's message at or before `moment`, and no other
    message after it and before `moment` (so it is the one they reacted to)."""
    mine = aliased(Delivery)
    later = aliased(Delivery)
    return exists(
        select(mine.id).where(
            mine.run_id == run_id,
            mine.subscriber_id == subscriber_id,
            mine.sent_at.is_not(None),
            mine.sent_at <= moment,
            ~exists(
                select(later.id).where(
                    later.subscriber_id == subscriber_id,
                    later.run_id != run_id,
                    later.sent_at > mine.sent_at,
                    later.sent_at <= moment,
                )
            ),
        )
    )


def _bounces(session: Session, run: Run) -> dict[str, int]:
    if run.started_at is None:
        return {"hard": 0, "soft": 0, "complaint": 0}
    rows = session.execute(
        select(BounceEvent.kind, func.count())
        .join(Subscriber, Subscriber.email == BounceEvent.email)
        .where(
            BounceEvent.received_at >= run.started_at,
            BounceEvent.kind.in_(("hard", "soft", "complaint")),
            _after_last_message(session, run.id, Subscriber.id, BounceEvent.received_at),
        )
        .group_by(BounceEvent.kind)
    ).all()
    found = {kind: int(count) for kind, count in rows}
    return {k: found.get(k, 0) for k in ("hard", "soft", "complaint")}


def _unsubscribes(session: Session, run: Run) -> dict[str, int]:
    counts = {"one_click": 0, "page": 0, "mailto": 0, "other": 0}
    if run.started_at is not None:
        rows = session.execute(
            select(Subscription.source, func.count())
            .where(
                Subscription.unsubscribed_at.is_not(None),
                Subscription.unsubscribed_at >= run.started_at,
                Subscription.source != "complaint",  # counted as complaints
                _after_last_message(
                    session, run.id, Subscription.subscriber_id, Subscription.unsubscribed_at
                ),
            )
            .group_by(Subscription.source)
        ).all()
        for source, count in rows:
            counts[UNSUBSCRIBE_SOURCES.get(source, "other")] += int(count)
    return {**counts, "total": sum(counts.values())}


def _delivery(session: Session, run: Run) -> dict[str, Any]:
    by_status = dict(
        session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.run_id == run.id)
            .group_by(Delivery.status)
        ).all()
    )
    count = {s.value: int(by_status.get(s, 0)) for s in DeliveryStatus}
    bounces = _bounces(session, run)
    bounced = bounces["hard"] + bounces["soft"]
    # Readers forgotten since keep counting as sent (their ledger rows are gone).
    sent = count["sent"] + run.forgotten_sent
    return {
        "recipients": sum(count.values()) + run.forgotten_sent,
        "sent": sent,
        "delivered": max(0, sent - bounced),
        "deferred": count["deferred"],
        "failed": count["failed"],
        "suppressed": count["suppressed"],
        "pending": count["pending"] + count["sending"],
        "cancelled": count["cancelled"],
        "bounced": {"hard": bounces["hard"], "soft": bounces["soft"], "total": bounced},
        "complaints": bounces["complaint"],
        "unsubscribes": _unsubscribes(session, run),
    }


def _engagement(session: Session, run_id: int, delivered: int) -> dict[str, Any]:
    opens, clicks = (
        _unique(session, run_id, EventKind.open),
        _unique(session, run_id, EventKind.click),
    )
    open_totals = _totals(session, run_id, EventKind.open)
    click_totals = _totals(session, run_id, EventKind.click)
    return {
        "opens": {
            "unique": _split(opens.human, opens.machine_only),
            "total": _split(*open_totals),
            "rate": _rate(opens.human, delivered),
        },
        "clicks": {
            "unique": _split(clicks.human, clicks.machine_only),
            "total": _split(*click_totals),
            "rate": _rate(clicks.human, delivered),
            "click_to_open": _rate(clicks.human, opens.human),
        },
    }


def _links(session: Session, run_id: int) -> list[dict[str, Any]]:
    totals = {
        link_id: (int(h), int(m))
        for link_id, h, m in session.execute(
            select(
                TrackingRollup.link_id,
                func.sum(TrackingRollup.human),
                func.sum(TrackingRollup.machine),
            )
            .where(
                TrackingRollup.run_id == run_id,
                TrackingRollup.kind == EventKind.click,
                TrackingRollup.link_id != NO_LINK,
            )
            .group_by(TrackingRollup.link_id)
        ).all()
    }
    uniques = {
        link_id: (int(h), int(m))
        for link_id, h, m in session.execute(
            select(
                TrackedMessageLink.link_id,
                func.count(TrackedMessageLink.clicked_at),
                func.count(TrackedMessageLink.machine_clicked_at).filter(
                    TrackedMessageLink.clicked_at.is_(None)
                ),
            )
            .where(TrackedMessageLink.run_id == run_id)
            .group_by(TrackedMessageLink.link_id)
        ).all()
    }
    links = session.scalars(
        select(TrackedLink).where(TrackedLink.run_id == run_id).order_by(TrackedLink.position)
    )
    return [
        {
            "position": link.position,
            "url": link.url,
            "destination": link.destination,
            "unique": _split(*uniques.get(link.id, (0, 0))),
            "total": _split(*totals.get(link.id, (0, 0))),
        }
        for link in links
    ]


def _lists(session: Session, run_id: int) -> list[dict[str, Any]]:
    sent = dict(
        session.execute(
            select(Delivery.list_id, func.count())
            .where(Delivery.run_id == run_id, Delivery.status == DeliveryStatus.sent)
            .group_by(Delivery.list_id)
        ).all()
    )
    firsts = {
        list_id: (int(o), int(c))
        for list_id, o, c in session.execute(
            select(
                TrackedMessage.list_id,
                func.count(TrackedMessage.opened_at),
                func.count(TrackedMessage.clicked_at),
            )
            .where(TrackedMessage.run_id == run_id)
            .group_by(TrackedMessage.list_id)
        ).all()
    }
    names = {ml.id: ml for ml in session.scalars(select(MailingList))}
    out = []
    for list_id in sorted(set(sent) | set(firsts)):
        opened, clicked = firsts.get(list_id, (0, 0))
        delivered = int(sent.get(list_id, 0))
        ml = names.get(list_id)
        out.append(
            {
                "list": ml.slug if ml else None,
                "name": ml.name if ml else "(deleted list)",
                "sent": delivered,
                "opens_unique_human": opened,
                "clicks_unique_human": clicked,
                "open_rate": _rate(opened, delivered),
                "click_rate": _rate(clicked, delivered),
            }
        )
    return out


def _over_time(session: Session, run_id: int) -> list[dict[str, Any]]:
    rows = session.execute(
        select(
            TrackingRollup.bucket,
            TrackingRollup.kind,
            func.sum(TrackingRollup.human),
            func.sum(TrackingRollup.machine),
        )
        .where(TrackingRollup.run_id == run_id)
        .group_by(TrackingRollup.bucket, TrackingRollup.kind)
        .order_by(TrackingRollup.bucket)
    ).all()
    buckets: dict[datetime, dict[str, Any]] = {}
    for bucket, kind, human, machine in rows:
        entry = buckets.setdefault(
            bucket,
            {
                "bucket": bucket.isoformat(),
                "opens": _split(0, 0),
                "clicks": _split(0, 0),
            },
        )
        entry["opens" if kind == EventKind.open else "clicks"] = _split(int(human), int(machine))
    return list(buckets.values())


def _machine_reasons(session: Session, run_id: int) -> dict[str, int]:
    rows = session.execute(
        select(TrackingEvent.machine_reason, func.count())
        .where(TrackingEvent.run_id == run_id, TrackingEvent.machine.is_(True))
        .group_by(TrackingEvent.machine_reason)
    ).all()
    counted: Counter[str] = Counter()
    for reason, count in rows:
        # "3 s after…" and "4 links of one message…" vary in their number: group them.
        key = reason.split(" ", 1)[1] if reason[:1].isdigit() else reason
        counted[key] += int(count)
    return dict(sorted(counted.items()))


def _run_summary(session: Session, run: Run) -> dict[str, Any]:
    delivery = _delivery(session, run)
    engagement = _engagement(session, run.id, delivery["delivered"])
    return {
        "run": run.id,
        "occurrence_at": run.occurrence_at.isoformat(),
        "status": run.status.value,
        "sent": delivery["sent"],
        "delivered": delivery["delivered"],
        "opens_unique_human": engagement["opens"]["unique"]["human"],
        "clicks_unique_human": engagement["clicks"]["unique"]["human"],
        "open_rate": engagement["opens"]["rate"],
        "click_rate": engagement["clicks"]["rate"],
        "unsubscribes": delivery["unsubscribes"]["total"],
    }


def _tracking(session: Session, run: Run) -> dict[str, str]:
    if run.tracking is None:
        return {}
    policy = RunPolicy.from_json(run.tracking)
    names = {ml.id: ml.slug for ml in session.scalars(select(MailingList))}
    return {names.get(k, str(k)): describe(t) for k, t in sorted(policy.lists.items())}


def run_report(session: Session, run: Run) -> dict[str, Any]:
    """Everything known about one run (see the module docstring), JSON-ready."""
    delivery = _delivery(session, run)
    return {
        "run": {
            "id": run.id,
            "campaign": run.campaign_id,
            "sequence": run.sequence_id,
            "occurrence_at": run.occurrence_at.isoformat(),
            "status": run.status.value,
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "tracking": _tracking(session, run),
        },
        "delivery": delivery,
        **_engagement(session, run.id, delivery["delivered"]),
        "machine_reasons": _machine_reasons(session, run.id),
        "links": _links(session, run.id),
        "lists": _lists(session, run.id),
        "over_time": _over_time(session, run.id),
        "limits": list(LIMITS),
    }


def campaign_report(
    session: Session, campaign_id: int, run_id: int | None = None
) -> dict[str, Any]:
    """A campaign's report: its latest run (or `run_id`) in full, and every run's
    headline numbers for comparison. NotFoundError for an unknown campaign or run."""
    campaign = get_campaign(session, campaign_id)
    runs = list(session.scalars(select(Run).where(Run.campaign_id == campaign_id).order_by(Run.id)))
    if run_id is not None:
        chosen = next((r for r in runs if r.id == run_id), None)
        if chosen is None:
            raise NotFoundError(f"campaign {campaign_id} has no run {run_id}")
    else:
        started = [r for r in runs if r.started_at is not None] or runs
        chosen = started[-1] if started else None
    return {
        "campaign": {"id": campaign.id, "name": campaign.name, "status": campaign.status.value},
        **(run_report(session, chosen) if chosen is not None else {"run": None}),
        "runs": [_run_summary(session, r) for r in runs],
    }


# --- a drip sequence's funnel -----------------------------------------------------------


def sequence_funnel(session: Session, sequence_id: int) -> dict[str, Any]:
    """Step by step: how many were sent step k, opened it, clicked in it (people only),
    and were then sent step k+1. Steps follow the series order."""
    sequence = session.get(Sequence, sequence_id)
    if sequence is None:
        raise NotFoundError(f"no sequence {sequence_id}")
    runs = session.execute(
        select(Run, Article.slug, Article.title)
        .join(Article, Article.id == Run.article_id)
        .where(Run.sequence_id == sequence_id)
        .order_by(Article.position, Article.id)
    ).all()
    sent_to = [
        set(
            session.scalars(
                select(Delivery.subscriber_id).where(
                    Delivery.run_id == run.id, Delivery.status == DeliveryStatus.sent
                )
            )
        )
        for run, _, _ in runs
    ]
    steps = []
    for k, (run, slug, title) in enumerate(runs):
        opened = _unique(session, run.id, EventKind.open).human
        clicked = _unique(session, run.id, EventKind.click).human
        sent = len(sent_to[k]) + run.forgotten_sent
        following = len(sent_to[k] & sent_to[k + 1]) if k + 1 < len(runs) else None
        steps.append(
            {
                "step": k + 1,
                "run": run.id,
                "article": slug,
                "title": title,
                "sent": sent,
                "opened": opened,
                "clicked": clicked,
                "next_step": following,
                "open_rate": _rate(opened, sent),
                "click_rate": _rate(clicked, sent),
                "continued_rate": _rate(following, sent) if following is not None else None,
            }
        )
    return {"sequence": sequence_id, "steps": steps}


# --- who clicked (individual mode) ----------------------------------------------------


def tracks_individually(session: Session, run_id: int) -> bool:
    """Whether any list of the run counted its readers individually (so a who-clicked
    list can name anyone); False for anonymous, off, and runs not yet sent."""
    run = session.get(Run, run_id)
    if run is None or run.tracking is None:
        return False
    return any(t.individual for t in RunPolicy.from_json(run.tracking).lists.values())


def who_clicked(session: Session, run_id: int) -> list[dict[str, Any]]:
    """Readers of an individual-mode run who clicked (human clicks only), with when and
    which links; anonymous runs list nobody. Ordered by first click."""
    rows = session.execute(
        select(Delivery.id, Delivery.email, Delivery.first_click_at, Delivery.first_open_at)
        .where(
            Delivery.run_id == run_id,
            Delivery.first_click_at.is_not(None),
            Delivery.first_click_machine.is_(False),
        )
        .order_by(Delivery.first_click_at, Delivery.id)
    ).all()
    links: dict[int, list[int]] = {}
    for delivery_id, position in session.execute(
        select(TrackedMessage.delivery_id, TrackedLink.position)
        .join(TrackedMessageLink, TrackedMessageLink.message_id == TrackedMessage.id)
        .join(TrackedLink, TrackedLink.id == TrackedMessageLink.link_id)
        .where(
            TrackedMessage.run_id == run_id,
            TrackedMessage.delivery_id.is_not(None),
            TrackedMessageLink.clicked_at.is_not(None),
        )
        .order_by(TrackedLink.position)
    ).all():
        if delivery_id is not None:
            links.setdefault(int(delivery_id), []).append(int(position))
    return [
        {
            "email": email,
            "first_click_at": clicked.isoformat() if clicked else None,
            "first_open_at": opened.isoformat() if opened else None,
            "links": links.get(int(delivery_id), []),
        }
        for delivery_id, email, clicked, opened in rows
    ]


def who_clicked_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["email", "first_click_at", "first_open_at", "links"])
    for row in rows:
        links = " ".join(str(p) for p in row["links"])
        writer.writerow([row["email"], row["first_click_at"], row["first_open_at"] or "", links])
    return out.getvalue()


# --- flat CSV, charts and the link map (the console) ------------------------------------


def report_csv(report: dict[str, Any]) -> str:
    """The report as rows of section, item, measure, value (the JSON's numbers)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "item", "measure", "value"])

    def flat(section: str, item: str, data: Any, prefix: str = "") -> None:
        if isinstance(data, dict):
            for key, value in data.items():
                flat(section, item, value, f"{prefix}{key}.")
        elif not isinstance(data, list):
            writer.writerow([section, item, prefix.rstrip("."), "" if data is None else data])

    for section in ("delivery", "opens", "clicks", "machine_reasons"):
        flat(section, "", report.get(section, {}))
    for link in report.get("links", []):
        flat(
            "link", str(link["position"]), {k: link[k] for k in ("destination", "unique", "total")}
        )
    for row in report.get("lists", []):
        flat("list", row["list"] or "", {k: v for k, v in row.items() if k not in ("list", "name")})
    for row in report.get("over_time", []):
        flat("time", row["bucket"], {"opens": row["opens"], "clicks": row["clicks"]})
    for row in report.get("runs", []):
        flat("run", str(row["run"]), {k: v for k, v in row.items() if k != "run"})
    return out.getvalue()


def report_charts(report: dict[str, Any]) -> dict[str, str]:
    """The console's charts, as SVG documents drawn from the report's own numbers."""

    def pair(data: dict[str, int]) -> tuple[tuple[str, int], tuple[str, int]]:
        return (("human", data["human"]), ("machine", data["machine"]))

    charts: dict[str, str] = {}
    if report.get("run") is None:
        return charts
    charts["engagement"] = stacked_bars(
        "Unique messages",
        [
            ("Opened", pair(report["opens"]["unique"])),
            ("Clicked", pair(report["clicks"]["unique"])),
        ],
    )
    charts["links"] = stacked_bars(
        "Clicks per link",
        [
            (f"{link['position']}. {link['destination']}", pair(link["total"]))
            for link in report["links"]
        ],
    )
    charts["over_time"] = columns(
        "Opens and clicks over time",
        [
            (
                row["bucket"][5:16].replace("T", " "),
                (
                    ("human", row["opens"]["human"] + row["clicks"]["human"]),
                    ("machine", row["opens"]["machine"] + row["clicks"]["machine"]),
                ),
            )
            for row in report["over_time"]
        ],
    )
    return charts


def link_map(session: Session, run_id: int, report: dict[str, Any]) -> str:
    """The run's email as sent (the archive copy) with each link's clicks beside it."""
    run = session.get(Run, run_id)
    if run is None or run.snapshot is None:
        raise NotFoundError(f"no sent email for run {run_id}")
    by_url = {link["url"]: link for link in report["links"]}

    def label(url: str) -> str | None:
        link = by_url.get(url)
        if link is None:
            return None
        total = link["total"]
        return f"{total['human']} human · {total['machine']} machine clicks"

    return annotate_links(archive_html(Snapshot.from_json(run.snapshot)), label)
