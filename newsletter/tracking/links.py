"""A run's tracked links: registered when a worker first compiles the run's email (or
one of its variants), looked up on every click, corrected by staff after sending."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from urllib.parse import urlsplit

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from newsletter.accounts import audit
from newsletter.db import utcnow
from newsletter.errors import InvalidInputError, NotFoundError
from newsletter.tracking.models import TrackedLink

MAX_URL = 4000


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def register_links(connection: Connection, run_id: int, urls: Sequence[str]) -> dict[str, int]:
    """Each URL's link id for the run, adding those not seen yet (in order, after the
    run's others). Safe when two workers do it at once: the (run, URL) key is unique,
    and the positions of a race's losers are simply not used."""
    if not urls:
        return {}
    hashes = {url_hash(url): url for url in urls}
    known = _known(connection, run_id, list(hashes))
    missing = [h for h in hashes if h not in known]
    if missing:
        start = connection.scalar(
            select(func.coalesce(func.max(TrackedLink.position), 0)).where(
                TrackedLink.run_id == run_id
            )
        )
        now = utcnow()
        rows = [
            {
                "run_id": run_id,
                "url_hash": digest,
                "url": hashes[digest],
                "destination": hashes[digest],
                "position": int(start or 0) + offset,
                "created_at": now,
                "updated_at": now,
            }
            for offset, digest in enumerate(missing, start=1)
        ]
        dialect = connection.dialect.name
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(TrackedLink)
        connection.execute(insert.on_conflict_do_nothing(), rows)
        known = _known(connection, run_id, list(hashes))
    return {hashes[h]: link_id for h, link_id in known.items()}


def _known(connection: Connection, run_id: int, hashes: list[str]) -> dict[str, int]:
    rows = connection.execute(
        select(TrackedLink.url_hash, TrackedLink.id).where(
            TrackedLink.run_id == run_id, TrackedLink.url_hash.in_(hashes)
        )
    ).all()
    return {digest: link_id for digest, link_id in rows}


def run_links(session: Session, run_id: int) -> list[TrackedLink]:
    """The run's links in the order of its email."""
    return list(
        session.scalars(
            select(TrackedLink).where(TrackedLink.run_id == run_id).order_by(TrackedLink.position)
        )
    )


def check_destination(url: str) -> str:
    """An absolute http(s) URL of at most MAX_URL characters, else InvalidInputError."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or len(url) > MAX_URL:
        raise InvalidInputError(
            f"destination {url[:100]!r} is not an absolute http(s) URL of at most {MAX_URL} "
            "characters"
        )
    if any(c.isspace() for c in url):
        raise InvalidInputError("destination must not contain spaces")
    return url


def correct_link(session: Session, run_id: int, position: int, destination: str) -> TrackedLink:
    """Send every later click on the run's link at `position` to `destination` (a
    broken link fixed after sending); audited. Flushes; the caller commits."""
    destination = check_destination(destination)
    link = session.scalar(
        select(TrackedLink).where(TrackedLink.run_id == run_id, TrackedLink.position == position)
    )
    if link is None:
        raise NotFoundError(f"run {run_id} has no tracked link {position}")
    before = link.destination
    link.destination = destination
    link.updated_at = utcnow()
    audit.record(
        session,
        "run.link_corrected",
        f"run:{run_id}",
        detail={"position": position, "before": before, "after": destination},
    )
    session.flush()
    return link
