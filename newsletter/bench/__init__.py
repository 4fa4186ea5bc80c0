"""`newsletter bench`: a digest to N subscribers through the configured database,
broker and workers into an SMTP sink, timed end to end and stage by stage."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from sqlalchemy import func, select

from newsletter.audience.generate import generate_subscribers
from newsletter.audience.lists import create_list, get_list
from newsletter.audience.models import Subscription, SubscriptionStatus, TrackingMode
from newsletter.audience.tokens import TokenSigner
from newsletter.campaigns.content import email_content
from newsletter.campaigns.models import Campaign, CampaignStatus
from newsletter.campaigns.service import ContentSpec, create_campaign, schedule_campaign
from newsletter.config import Settings
from newsletter.content.importer import import_articles
from newsletter.db import make_engine, make_sessionmaker, session_scope, upgrade, utcnow
from newsletter.delivery.content import list_headers
from newsletter.delivery.mailers import OutgoingMessage, SmtpMailer
from newsletter.delivery.sending import subscriber_links
from newsletter.errors import NewsletterError, NotFoundError
from newsletter.rendering.mime import MessageTemplate, Recipient
from newsletter.rendering.model import Snapshot
from newsletter.rendering.render import render_email
from newsletter.rendering.slots import TRACK_KEY, SlotTemplate
from newsletter.rendering.tracking import Pixel, track_links, trackable_links
from newsletter.runs.ledger import delivery_counts
from newsletter.runs.models import Delivery, DeliveryStatus, Run
from newsletter.tasks.app import configure, embedded_worker, runtime
from newsletter.tasks.scheduler import tick
from newsletter.tracking.policy import Tracking, note
from newsletter.tracking.tokens import TrackingSigner, new_nonce

SAMPLE = Path(__file__).resolve().parent.parent / "sample" / "articles"
SERIES = "understanding-treatment"


def as_rows(result: BenchResult) -> list[tuple[str, str]]:
    """The figures as (label, value) rows for the table."""
    r = result
    return [
        ("database / broker", f"{r.database} / {r.broker}"),
        ("SMTP sink", r.sink),
        ("worker processes", str(r.worker_processes)),
        ("recipients", f"{r.recipients:,}"),
        ("sent / failed", f"{r.sent:,} / {r.failed:,}"),
        ("wall time", f"{r.wall_seconds:.1f} s"),
        ("messages/s end to end", f"{r.messages_per_second:,.0f}"),
        ("render once (per run)", f"{r.render_once_ms:.1f} ms"),
        ("tracking (mode, pixel)", r.tracking),
        ("sign tokens (per recipient)", f"{r.tokens_us:.1f} µs"),
        ("tracking token (per recipient)", f"{r.track_token_us:.1f} µs"),
        ("fill slots (per recipient)", f"{r.fill_slots_us:.1f} µs"),
        ("MIME build incl. slots (per recipient)", f"{r.mime_us:.1f} µs"),
        ("SMTP, one connection: wall / client CPU", f"{r.smtp_us:.0f} / {r.smtp_cpu_us:.0f} µs"),
        ("worker CPU, everything (per recipient)", f"{r.worker_cpu_us:.0f} µs"),
        ("worker CPU outside SMTP (per recipient)", f"{r.cpu_outside_smtp_us:.0f} µs"),
        ("peak worker RSS", f"{r.peak_worker_rss_mb:.0f} MB" if r.peak_worker_rss_mb else "-"),
    ]


def result_json(result: BenchResult) -> dict[str, object]:
    return asdict(result)


@dataclass
class BenchResult:
    recipients: int
    sent: int
    failed: int
    wall_seconds: float
    messages_per_second: float
    render_once_ms: float
    tokens_us: float
    fill_slots_us: float
    mime_us: float
    smtp_us: float
    smtp_cpu_us: float
    worker_cpu_us: float
    cpu_outside_smtp_us: float
    peak_worker_rss_mb: float | None
    database: str
    broker: str
    sink: str
    worker_processes: int
    tracking: str = "off"
    track_token_us: float = 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise NewsletterError(f"the local SMTP sink did not start on port {port}")


@contextmanager
def local_sink() -> Iterator[tuple[str, str]]:
    """Postfix's smtp-sink when installed (fastest), else our Python sink."""
    port = _free_port()
    binary = shutil.which("smtp-sink") or (
        "/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None
    )
    if binary:
        command = [binary, "-u", "nobody", f"127.0.0.1:{port}", "1000"]
        name = "postfix smtp-sink"
    else:
        command = [sys.executable, "-m", "newsletter.bench.sink", str(port)]
        name = "python sink (install postfix for smtp-sink)"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port)
        yield f"smtp://127.0.0.1:{port}", name
    finally:
        process.terminate()
        process.wait(timeout=10)


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, whichever of its threads started them."""
    pids = [pid]
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children.update(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    for child in sorted(children):
        pids.extend(_process_tree(child))
    return pids


def _tree_cpu(roots: list[int]) -> float:
    return sum(_cpu_seconds(p) for root in roots for p in _process_tree(root))


def _rss_mb(pid: int, field: str = "VmHWM") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _prepare_audience(
    settings: Settings, count: int, tracking: TrackingMode = TrackingMode.off, opens: bool = False
) -> str:
    engine = make_engine(settings.database_url)
    upgrade(engine)
    slug = f"bench-{count}"
    with session_scope(make_sessionmaker(engine)) as session:
        report = import_articles(session, [SAMPLE])
        if report.problems:
            raise NewsletterError(f"sample articles: {report.problems[0]}")
        try:
            mailing_list = get_list(session, slug)
        except NotFoundError:
            mailing_list = create_list(session, slug, f"Benchmark list of {count}")
            session.flush()
        # Its campaigns need a postal address whatever the settings say.
        mailing_list.postal_address = mailing_list.postal_address or BENCH_POSTAL_ADDRESS
        mailing_list.tracking, mailing_list.track_opens = tracking, opens
        have = (
            session.scalar(
                select(func.count())
                .select_from(Subscription)
                .where(
                    Subscription.list_id == mailing_list.id,
                    Subscription.status == SubscriptionStatus.confirmed,
                )
            )
            or 0
        )
        if have < count:
            generate_subscribers(session, mailing_list, count - have, domain="bench.example")
    engine.dispose()
    return slug


BENCH_POSTAL_ADDRESS = "1 Benchmark Way, Springfield"


def _start_campaign(settings: Settings, list_slug: str) -> int:
    engine = make_engine(settings.database_url)
    with session_scope(make_sessionmaker(engine)) as session:
        campaign = create_campaign(
            session,
            name=f"Benchmark {utcnow():%Y-%m-%d %H:%M:%S}",
            list_slugs=[list_slug],
            subject="{{ slot('name', 'Reader') }}, a series on treatment options",
            content=ContentSpec(series=SERIES),
        )
        schedule_campaign(session, campaign.id, utcnow())
        campaign_id = campaign.id
    engine.dispose()
    return campaign_id


def _time_per_call(
    fn: Callable[[], object], seconds: float = 0.5, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Microseconds per call (of `clock`: wall time, or CPU time), over about `seconds`."""
    calls, started, wall = 0, clock(), time.perf_counter()
    while time.perf_counter() - wall < seconds:
        for _ in range(100):
            fn()
        calls += 100
    return (clock() - started) / calls * 1e6


def _wait_until_idle(roots: list[int], timeout: float = 20.0) -> None:
    """Wait until the workers have started (their CPU time stops growing)."""
    deadline = time.monotonic() + timeout
    before, quiet = _tree_cpu(roots), 0
    while time.monotonic() < deadline and quiet < 2:
        time.sleep(0.3)
        now = _tree_cpu(roots)
        quiet = quiet + 1 if now > 0.2 and now - before < 0.02 else 0
        before = now


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far, with that of its children that
    ended (a pool process the worker replaced still counts)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _stage_costs(
    settings: Settings, campaign_id: int, smtp_url: str, tracking: TrackingMode, opens: bool
) -> dict[str, float]:
    """Each step of the send path on this run's real content, in this process (with
    the run's links tracked as its workers tracked them)."""
    rt = runtime()
    with rt.sessions() as session:
        campaign = session.get_one(Campaign, campaign_id)
        run = campaign.runs[-1]
        assert run.snapshot is not None
        snapshot = Snapshot.from_json(run.snapshot)
        started = time.perf_counter()
        render_email(campaign.template, email_content(session, campaign, settings, "https://x"))
        render_ms = (time.perf_counter() - started) * 1000
        if tracking is not TrackingMode.off:
            links = {
                url: f"{settings.base_url}/t/c/{'L' * 22}."
                for url in trackable_links(snapshot.html, f"{settings.base_url}/archive/emails/")
            }
            pixel = Pixel(f"{settings.base_url}/t/o/{'P' * 22}.") if opens else None
            html_tracked = track_links(snapshot.html, snapshot.marker, links, pixel)
            snapshot = replace(snapshot, html=html_tracked)
        template = MessageTemplate(
            snapshot, list_headers(settings, campaign.lists, f"c{campaign.id}", "bench")
        )
    signer = TokenSigner(settings.secret_key)
    tracker = TrackingSigner(settings.secret_key)
    values = {"name": "Alex Meyer", "email": "reader0000001@bench.example"}
    values.update(subscriber_links(settings, signer, 1, 1))
    values["tracking_note"] = note(Tracking(tracking, opens))

    def track_token() -> str:
        return tracker.recipient_part(1, False, new_nonce(), 1, int(time.time()))

    if tracking is not TrackingMode.off:
        values[TRACK_KEY] = track_token()
    html = SlotTemplate.compile(snapshot.html, snapshot.marker)
    text = SlotTemplate.compile(snapshot.text, snapshot.marker)
    recipient = Recipient("reader0000001@bench.example", "Alex Meyer", values, "<bench@x>")
    data = template.build(recipient)
    mailer = SmtpMailer(settings.mail_target)  # type: ignore[arg-type]
    message = OutgoingMessage("bench@bench.example", "reader@bench.example", data, "<b@x>")
    mailer.send(message)
    smtp_us = _time_per_call(lambda: mailer.send(message), seconds=1.0)
    smtp_cpu_us = _time_per_call(lambda: mailer.send(message), seconds=1.0, clock=time.process_time)
    mailer.close()
    return {
        "render_once_ms": render_ms,
        "tokens_us": _time_per_call(lambda: subscriber_links(settings, signer, 1, 1)),
        "track_token_us": _time_per_call(track_token) if tracking is not TrackingMode.off else 0.0,
        "fill_slots_us": _time_per_call(lambda: (html.fill(values), text.fill(values))),
        "mime_us": _time_per_call(lambda: template.build(recipient)),
        "smtp_us": smtp_us,
        "smtp_cpu_us": smtp_cpu_us,
    }


def run_bench(
    settings: Settings,
    subscribers: int,
    smtp_url: str | None,
    concurrency: int,
    progress: Callable[[int, int], None] = lambda done, total: None,
    tracking: TrackingMode = TrackingMode.off,
    track_opens: bool = False,
) -> BenchResult:
    """Send the sample digest to `subscribers` readers and time it; the bench list
    tracks as `tracking` says (and with the pixel if `track_opens`)."""
    list_slug = _prepare_audience(settings, subscribers, tracking, track_opens)
    with local_sink() if smtp_url is None else _given(smtp_url) as (url, sink_name):
        bench = settings.model_copy(update={"mail_url": url})
        configure(bench)
        campaign_id = _start_campaign(bench, list_slug)
        with _workers(bench, concurrency) as worker_pids:
            _wait_until_idle(worker_pids)  # start-up is not a cost per recipient
            started = time.monotonic()
            cpu_before = _tree_cpu(worker_pids)
            peak = _drive(campaign_id, subscribers, worker_pids, progress)
            wall = time.monotonic() - started
            worker_cpu = _tree_cpu(worker_pids) - cpu_before
        costs = _stage_costs(bench, campaign_id, url, tracking, track_opens)
    with runtime().sessions() as session:
        run_id = session.scalar(select(Run.id).where(Run.campaign_id == campaign_id))
        counts = delivery_counts(session, run_id) if run_id is not None else {}
    runtime().close()
    sent = counts.get(DeliveryStatus.sent, 0)
    worker_cpu_us = worker_cpu / sent * 1e6 if sent else 0.0
    return BenchResult(
        recipients=subscribers,
        sent=sent,
        failed=counts.get(DeliveryStatus.failed, 0),
        wall_seconds=round(wall, 2),
        messages_per_second=round(sent / wall, 1) if wall else 0.0,
        render_once_ms=round(costs["render_once_ms"], 1),
        tokens_us=round(costs["tokens_us"], 1),
        fill_slots_us=round(costs["fill_slots_us"], 1),
        mime_us=round(costs["mime_us"], 1),
        smtp_us=round(costs["smtp_us"], 1),
        smtp_cpu_us=round(costs["smtp_cpu_us"], 1),
        worker_cpu_us=round(worker_cpu_us, 1),
        cpu_outside_smtp_us=round(max(0.0, worker_cpu_us - costs["smtp_cpu_us"]), 1),
        peak_worker_rss_mb=round(peak, 1) if peak else None,
        database=make_engine(settings.database_url).dialect.name,
        broker="embedded (in-process)" if settings.embedded_broker else settings.broker_url,
        sink=sink_name,
        worker_processes=1 if settings.embedded_broker else concurrency,
        tracking=f"{tracking.value}{', pixel' if track_opens and tracking.value != 'off' else ''}",
        track_token_us=round(costs["track_token_us"], 1),
    )


@contextmanager
def _given(url: str) -> Iterator[tuple[str, str]]:
    yield url, url


@contextmanager
def _workers(settings: Settings, concurrency: int) -> Iterator[list[int]]:
    """Celery workers for the run: in-process with the embedded broker, else processes."""
    if settings.embedded_broker:
        with embedded_worker():
            yield [os.getpid()]
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update({f"NEWSLETTER_{k.upper()}": str(v) for k, v in settings.model_dump().items()})
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "newsletter.tasks.entry",
            "worker",
            f"--concurrency={concurrency}",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield [process.pid]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def _drive(
    campaign_id: int, total: int, worker_pids: list[int], progress: Callable[[int, int], None]
) -> float:
    """Tick until the campaign is finished; returns the peak worker RSS in MB."""
    rt = runtime()
    peak = 0.0
    while True:
        tick(rt)
        with rt.sessions() as session:
            status = session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
            done = (
                session.scalar(
                    select(func.count())
                    .select_from(Delivery)
                    .join(Run, Run.id == Delivery.run_id)
                    .where(
                        Run.campaign_id == campaign_id,
                        Delivery.status.not_in((DeliveryStatus.pending, DeliveryStatus.sending)),
                    )
                )
                or 0
            )
        progress(done, total)
        pids = [p for root in worker_pids for p in _process_tree(root)]
        peak = max([peak, *(_rss_mb(p) for p in pids)])
        if status is CampaignStatus.finished:
            return peak
        time.sleep(1.0)
