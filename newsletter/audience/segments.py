"""Saved segments looked up by slug, for the campaigns and sequences that name one.

Their rules are parsed in `segment_rules`; compiling them (which needs engagement) and
the use cases are in `services/segments.py`.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.audience.models import Segment
from newsletter.errors import InvalidInputError


def segment_id_for(session: Session, slug: str | None) -> int | None:
    """The id of the segment `slug` ("" or None: no segment); InvalidInputError naming
    the field `segment` when there is none by that slug."""
    if not slug:
        return None
    segment_id = session.scalar(select(Segment.id).where(Segment.slug == slug))
    if segment_id is None:
        raise InvalidInputError(f"segment: no segment {slug!r}")
    return segment_id
