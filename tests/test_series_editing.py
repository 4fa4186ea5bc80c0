"""Editing a series: order, insert, move out; previous/next follow at once."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from newsletter.content.editing import create_series, in_order, insert, move_out, reorder
from newsletter.content.series import get_article, get_series, series_place
from newsletter.errors import InvalidInputError
from tests.factories import SERIES, import_sample

ORDER = ["ketamine-infusions", "infusion-appointment", "continuing-care", "tms", "after-treatment"]


def slugs(session: Session) -> list[str]:
    return [a.slug for a in in_order(session, get_series(session, SERIES))]


def neighbours(session: Session, slug: str) -> tuple[str | None, str | None, int, int]:
    place = series_place(session, get_article(session, slug))
    assert place is not None
    previous = place.previous.slug if place.previous else None
    following = place.next.slug if place.next else None
    return previous, following, place.index, place.total


def test_reorder_changes_previous_next_and_part_numbers(session: Session) -> None:
    import_sample(session)
    new_order = ["tms", *ORDER[:3], "after-treatment"]
    reorder(session, SERIES, new_order)
    assert slugs(session) == new_order
    assert neighbours(session, "tms") == (None, "ketamine-infusions", 1, 5)
    assert neighbours(session, "continuing-care") == (
        "infusion-appointment",
        "after-treatment",
        4,
        5,
    )


def test_reorder_must_name_every_article_once(session: Session) -> None:
    import_sample(session)
    with pytest.raises(InvalidInputError, match="missing: tms"):
        reorder(session, SERIES, [s for s in ORDER if s != "tms"])
    with pytest.raises(InvalidInputError, match="not in the series: nope"):
        reorder(session, SERIES, [*ORDER, "nope"])
    assert slugs(session) == ORDER


def test_insert_at_a_position_shifts_the_rest(session: Session) -> None:
    import_sample(session)
    create_series(session, "other", "Other")
    move_out(session, SERIES, "tms")
    insert(session, "other", "tms", at=1)
    insert(session, SERIES, "tms", at=2)  # back, now second
    assert slugs(session) == ["ketamine-infusions", "tms", *ORDER[1:3], "after-treatment"]
    assert [a.position for a in in_order(session, get_series(session, SERIES))] == [1, 2, 3, 4, 5]
    assert in_order(session, get_series(session, "other")) == []
    assert neighbours(session, "tms") == ("ketamine-infusions", "infusion-appointment", 2, 5)


def test_moving_an_article_out_closes_the_gap(session: Session) -> None:
    import_sample(session)
    move_out(session, SERIES, "continuing-care")
    assert slugs(session) == [
        "ketamine-infusions",
        "infusion-appointment",
        "tms",
        "after-treatment",
    ]
    assert neighbours(session, "tms") == ("infusion-appointment", "after-treatment", 3, 4)
    assert series_place(session, get_article(session, "continuing-care")) is None
    with pytest.raises(InvalidInputError, match="not in series"):
        move_out(session, SERIES, "continuing-care")


def test_insert_position_out_of_range_is_refused(session: Session) -> None:
    import_sample(session)
    create_series(session, "other", "Other")
    with pytest.raises(InvalidInputError, match="between 1 and 1"):
        insert(session, "other", "tms", at=3)
