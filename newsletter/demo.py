"""`newsletter demo`: the whole path on the embedded default, in a folder of its own."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import func, select

from newsletter.audience.generate import generate_subscribers
from newsletter.audience.lists import create_list, get_list
from newsletter.audience.models import ArchiveVisibility, OptIn
from newsletter.campaigns.service import ContentSpec, create_campaign, schedule_campaign
from newsletter.config import EMBEDDED_BROKER, Settings, load_settings
from newsletter.content.importer import import_articles
from newsletter.db import make_engine, make_sessionmaker, session_scope, upgrade, utcnow
from newsletter.delivery.previews import preview_html
from newsletter.errors import NotFoundError
from newsletter.runs.ledger import delivery_counts
from newsletter.runs.models import Delivery, DeliveryStatus, Run, RunStatus
from newsletter.tasks.app import configure, embedded_worker, runtime
from newsletter.tasks.scheduler import tick

SAMPLE_ARTICLES = Path(__file__).parent / "sample" / "articles"
SERIES = "understanding-treatment"
LIST_SLUG = "clinic-news"


# The clinic the demo plays: a postal address (every campaign email shows one) and
# the clinic's own note, which only this publisher's emails carry.
DEMO_POSTAL_ADDRESS = "Riverside Clinic, 200 River Road, Springfield, IL 62701, USA"
DEMO_FOOTER_NOTE = (
    "This newsletter shares general health information. It is not medical advice; "
    "please talk to your own clinician about your care."
)


def demo_settings(folder: Path) -> Settings:
    """Embedded default inside `folder`: SQLite file, in-memory broker, outbox folder,
    and the demo clinic's address and note unless NEWSLETTER_* variables give others."""
    folder = folder.resolve()
    values: dict[str, object] = {
        "database_url": f"sqlite:///{folder / 'newsletter.db'}",
        "broker_url": EMBEDDED_BROKER,
        "mail_url": f"outbox:{folder / 'outbox'}",
    }
    configured = load_settings(**values)
    if not configured.postal_address:
        values["postal_address"] = DEMO_POSTAL_ADDRESS
    if not configured.footer_note:
        values["footer_note"] = DEMO_FOOTER_NOTE
    return load_settings(**values)


def _prepare(settings: Settings, subscribers: int) -> int:
    """Migrate, import the sample series, fill the list, schedule a digest; returns its id."""
    engine = make_engine(settings.database_url)
    upgrade(engine)
    with session_scope(make_sessionmaker(engine)) as session:
        import_articles(session, [SAMPLE_ARTICLES])
        try:
            mailing_list = get_list(session, LIST_SLUG)
        except NotFoundError:
            mailing_list = create_list(
                session,
                LIST_SLUG,
                "Riverside Clinic news",
                opt_in=OptIn.double,
                archive=ArchiveVisibility.public,
                public=True,
            )
        session.flush()
        generate_subscribers(session, mailing_list, subscribers)
        campaign = create_campaign(
            session,
            name="Demo digest: Understanding treatment options",
            list_slugs=[LIST_SLUG],
            subject="Understanding treatment options: a short series",
            preheader="Five short articles on ketamine infusions, TMS and continuing care.",
            content=ContentSpec(series=SERIES),
        )
        schedule_campaign(
            session,
            campaign.id,
            utcnow() + timedelta(seconds=3),
            postal_address=settings.postal_address,
        )
        campaign_id = campaign.id
    engine.dispose()
    return campaign_id


def run_demo(folder: Path, subscribers: int, console: Console, program: str = "newsletter") -> None:
    """Send the sample series to generated readers; `program` is how the commands it
    prints at the end run this tool (`.venv/bin/newsletter` after `make demo`)."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = demo_settings(folder)
    console.print(f"demo folder: {folder.resolve()}")
    campaign_id = _prepare(settings, subscribers)
    console.print(
        f"campaign {campaign_id} scheduled a few seconds ahead; starting scheduler and worker"
    )
    configure(settings)
    rt = runtime()
    started = time.monotonic()
    run_id: int | None = None
    with (
        embedded_worker(),
        Progress(
            TextColumn("sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
    ):
        bar = progress.add_task("sending", total=None)
        while True:
            report = tick(rt)
            if run_id is None and report.started_runs:
                run_id = report.started_runs[0]
                started = time.monotonic()  # measure the send, not the scheduled delay
            if run_id is not None:
                with rt.sessions() as session:
                    run = session.get_one(Run, run_id)
                    done = session.scalar(
                        select(func.count())
                        .select_from(Delivery)
                        .where(Delivery.run_id == run_id, Delivery.status != DeliveryStatus.pending)
                    )
                    progress.update(bar, total=run.recipients or None, completed=done or 0)
                    if run.status is RunStatus.finished:
                        break
            time.sleep(0.2)
        elapsed = time.monotonic() - started
    rt.close()
    _summarise(settings, folder, campaign_id, run_id, elapsed, console, program)


def _summarise(
    settings: Settings,
    folder: Path,
    campaign_id: int,
    run_id: int | None,
    elapsed: float,
    console: Console,
    program: str,
) -> None:
    engine = make_engine(settings.database_url)
    with session_scope(make_sessionmaker(engine)) as session:
        counts = delivery_counts(session, run_id) if run_id is not None else {}
        preview = folder.resolve() / "preview.html"
        preview.write_text(preview_html(session, campaign_id, settings), encoding="utf-8")
    engine.dispose()
    sent = counts.get(DeliveryStatus.sent, 0)
    failed = counts.get(DeliveryStatus.failed, 0)
    database = f"NEWSLETTER_DATABASE_URL=sqlite:///{folder.resolve() / 'newsletter.db'}"
    console.print(
        "staff console and API: no user yet; create the first admin, then serve:\n"
        f"  {database} {program} users create you@example.org --role admin\n"
        f"  NEWSLETTER_ENV=development {database} {program} serve"
        "   # http://localhost:8000/admin/, /api/v1\n"
        "  (development: the demo's signing key is public; production needs "
        "NEWSLETTER_SECRET_KEY)"
    )
    console.print(f"outbox:  {folder.resolve() / 'outbox'}  (one .eml per message)")
    console.print(f"preview: {preview}")
    console.print(
        f"sent {sent}, failed {failed}, elapsed {elapsed:.1f}s, "
        f"{sent / elapsed if elapsed else 0:.0f} messages/s"
    )
