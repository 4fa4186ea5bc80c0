"""`newsletter bench`: a digest to N subscribers through the configured database,
broker and workers into an SMTP sink, timed end to end and stage by stage."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import redis
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
from newsletter.delivery.mailers import SmtpMailer
from newsletter.delivery.outgoing import Outgoing
from newsletter.delivery.relays import RelaySummary, read_relay_summaries
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
        ("relay round trip added (delay proxy)", f"{r.latency_ms:g} ms" if r.latency_ms else "-"),
        ("SMTP connections per worker process (setting)", str(r.smtp_connections)),
        ("connections used (at most, all workers)", _or_dash(r.connections_used)),
        ("messages/s per connection", _or_dash(r.per_connection_rate)),
        ("421s and refused connects seen", _or_dash(r.refusals_seen)),
        (
            f"smtp-source -d -s {r.smtp_source_sessions}, same sink and size",
            f"{r.smtp_source_rate:,.0f} msg/s" if r.smtp_source_rate else "-",
        ),
        ("bench / smtp-source", f"{r.ratio_to_smtp_source:.2f}" if r.ratio_to_smtp_source else "-"),
        ("messages/s first to last hand-over", _or_dash(r.handover_rate)),
        ("that / smtp-source", f"{r.handover_ratio:.2f}" if r.handover_ratio else "-"),
    ]


def _or_dash(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}".removesuffix(".0")


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
    latency_ms: float = 0.0
    smtp_connections: int = 1
    connections_used: int | None = None
    per_connection_rate: float | None = None
    refusals_seen: int | None = None
    message_bytes: int = 0
    smtp_source_sessions: int = 0
    smtp_source_rate: float | None = None
    ratio_to_smtp_source: float | None = None
    # From the first message handed over to the last (the ledger's sent times): the
    # sending itself, without the run's start (content frozen, first page of the ledger).
    handover_rate: float | None = None
    handover_ratio: float | None = None


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


@contextmanager
def delay_proxy(url: str, latency_ms: float) -> Iterator[tuple[str, dict[str, int]]]:
    """A user-space proxy in front of the sink at `url` adding `latency_ms` of round
    trip (newsletter/bench/delay.py); yields its URL and, once closed, its counts."""
    port = _free_port()
    target = urlsplit(url).port
    command = [sys.executable, "-m", "newsletter.bench.delay", str(port), str(target)]
    process = subprocess.Popen(
        [*command, str(latency_ms)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    counts: dict[str, int] = {}
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise NewsletterError("the delay proxy did not start")
        yield f"smtp://127.0.0.1:{port}", counts
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=10)
        with suppress(ValueError):
            counts.update(json.loads(out.strip().splitlines()[-1]))


def smtp_source_rate(url: str, sessions: int, messages: int, size: int) -> float | None:
    """Messages/s of Postfix's smtp-source (connections kept, `sessions` at once) into
    `url`; None when it is not installed."""
    binary = shutil.which("smtp-source") or (
        "/usr/sbin/smtp-source" if os.path.exists("/usr/sbin/smtp-source") else None
    )
    if binary is None:
        return None
    parts = urlsplit(url)
    command = [binary, "-d", "-s", str(sessions), "-m", str(messages), "-l", str(size)]
    started = time.monotonic()
    done = subprocess.run(
        [*command, f"{parts.hostname}:{parts.port}"], capture_output=True, timeout=600
    )
    if done.returncode != 0:
        return None
    return messages / (time.monotonic() - started)


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
    settings: Settings, campaign_id: int, tracking: TrackingMode, opens: bool
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
    mailer = SmtpMailer(settings.mail_target)  # type: ignore[arg-type]
    message = Outgoing("bench@bench.example", mailer).prepare(template, recipient)
    data = message.data
    mailer.send(message)
    smtp_us = _time_per_call(lambda: mailer.send(message), seconds=1.0)
    smtp_cpu_us = _time_per_call(lambda: mailer.send(message), seconds=1.0, clock=time.process_time)
    mailer.close()
    return {
        "message_bytes": float(len(data)),
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
    smtp_connections: int | None = None,
    latency_ms: float = 0.0,
    smtp_source_sessions: int | None = None,
) -> BenchResult:
    """Send the sample digest to `subscribers` readers and time it; the bench list
    tracks as `tracking` says (and with the pixel if `track_opens`). `latency_ms` puts
    a delay proxy in front of the sink; `smtp_source_sessions` (default 20, or 50 with
    a delay) is what Postfix's smtp-source gets for the comparison."""
    list_slug = _prepare_audience(settings, subscribers, tracking, track_opens)
    update: dict[str, object] = {}
    if smtp_connections is not None:
        update["smtp_connections"] = smtp_connections
    with local_sink() if smtp_url is None else _given(smtp_url) as (sink_url, sink_name):
        far = delay_proxy(sink_url, latency_ms) if latency_ms > 0 else nullcontext(None)
        with far as proxied:
            url = sink_url if proxied is None else proxied[0]
            bench = settings.model_copy(update={**update, "mail_url": url})
            configure(bench)
            campaign_id = _start_campaign(bench, list_slug)
            with _workers(bench, concurrency) as worker_pids:
                _wait_until_idle(worker_pids)  # start-up is not a cost per recipient
                _forget_relay_reports(bench)
                started, started_at = time.monotonic(), time.time()
                cpu_before = _tree_cpu(worker_pids)
                peak = _drive(campaign_id, subscribers, worker_pids, progress)
                wall = time.monotonic() - started  # (up to a poll late; see below)
                worker_cpu = _tree_cpu(worker_pids) - cpu_before
                time.sleep(1.5)  # the workers' last relay reports
                relays = _relay_reports(bench)
            # The CPU of a hand-over is measured next to the sink, without the delay.
            direct = bench.model_copy(update={"mail_url": sink_url})
            costs = _stage_costs(direct, campaign_id, tracking, track_opens)
        sessions = smtp_source_sessions or (50 if latency_ms else 20)
        compare = None
        if smtp_url is None:  # through a delay proxy of its own, as far away
            sample = min(subscribers, 5_000 if latency_ms else 50_000)
            size = int(costs["message_bytes"])
            with delay_proxy(sink_url, latency_ms) if latency_ms else nullcontext(None) as other:
                target = sink_url if other is None else other[0]
                compare = smtp_source_rate(target, sessions, sample, size)
    with runtime().sessions() as session:
        found = session.execute(
            select(Run.id, Run.finished_at).where(Run.campaign_id == campaign_id)
        ).first()
        run_id, finished = found if found is not None else (None, None)
        if finished is not None:  # the end as the run recorded it, not as a poll saw it
            wall = finished.timestamp() - started_at
        counts = delivery_counts(session, run_id) if run_id is not None else {}
        first, last = session.execute(
            select(func.min(Delivery.sent_at), func.max(Delivery.sent_at)).where(
                Delivery.run_id == run_id, Delivery.status == DeliveryStatus.sent
            )
        ).one()
    runtime().close()
    sent = counts.get(DeliveryStatus.sent, 0)
    worker_cpu_us = worker_cpu / sent * 1e6 if sent else 0.0
    rate = round(sent / wall, 1) if wall else 0.0
    span = (last - first).total_seconds() if first is not None and last is not None else 0.0
    handover_rate = round((sent - 1) / span, 1) if span > 0 else None
    used = sum(r.most_open for r in relays) if relays else None
    if used is None and proxied is not None:
        used = proxied[1].get("most")
    return BenchResult(
        recipients=subscribers,
        sent=sent,
        failed=counts.get(DeliveryStatus.failed, 0),
        wall_seconds=round(wall, 2),
        messages_per_second=rate,
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
        latency_ms=latency_ms,
        smtp_connections=bench.smtp_connections,
        connections_used=used,
        per_connection_rate=round(rate / used, 1) if used else None,
        refusals_seen=sum(r.busy + r.down for r in relays) if relays else None,
        message_bytes=int(costs["message_bytes"]),
        smtp_source_sessions=sessions if compare else 0,
        smtp_source_rate=round(compare, 1) if compare else None,
        ratio_to_smtp_source=round(rate / compare, 2) if compare else None,
        handover_rate=handover_rate,
        handover_ratio=round(handover_rate / compare, 2) if compare and handover_rate else None,
    )


def _relay_client(settings: Settings) -> redis.Redis | None:
    url = settings.shared_redis_url
    return redis.Redis.from_url(url, socket_timeout=5) if url else None


def _forget_relay_reports(settings: Settings) -> None:
    client = _relay_client(settings)
    if client is not None:
        for key in client.scan_iter(match="newsletter:relays:*"):
            client.delete(key)


def _relay_reports(settings: Settings) -> list[RelaySummary]:
    client = _relay_client(settings)
    return [] if client is None else read_relay_summaries(client)


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
    """Tick until the campaign is finished; returns the peak worker RSS in MB.

    Progress is counted in the ledger only every few seconds (at 1,000,000 rows one
    count takes PostgreSQL half a second, which the bench would measure as its own)."""
    rt = runtime()
    peak = 0.0
    count_every = max(1.0, total / 20_000)
    counted_at = float("-inf")
    while True:
        tick(rt)
        with rt.sessions() as session:
            status = session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
            if time.monotonic() - counted_at >= count_every:
                counted_at = time.monotonic()
                done = (
                    session.scalar(
                        select(func.count())
                        .select_from(Delivery)
                        .join(Run, Run.id == Delivery.run_id)
                        .where(
                            Run.campaign_id == campaign_id,
                            Delivery.status.not_in(
                                (DeliveryStatus.pending, DeliveryStatus.sending)
                            ),
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
