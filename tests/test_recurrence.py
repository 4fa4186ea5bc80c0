"""Cron maths in a zone (newsletter/recurrence.py): DST gaps and overlaps, 30- and
45-minute zones, classic cron's day-of-month/day-of-week rule, folding missed sends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice, takewhile
from zoneinfo import ZoneInfo

import pytest

from newsletter.errors import InvalidInputError
from newsletter.recurrence import (
    check_cron,
    latest_due,
    local_occurrences,
    next_occurrence,
    occurrences,
    previous_occurrence,
)

BERLIN = ZoneInfo("Europe/Berlin")


def local(instants: list[datetime], tz: ZoneInfo) -> list[str]:
    return [t.astimezone(tz).strftime("%d %H:%M:%S%z") for t in instants]


def sends_on(expression: str, tz: str, day: datetime) -> list[datetime]:
    """The instants sent for the wall-clock times of one local day."""
    zone = ZoneInfo(tz)
    start = day.replace(tzinfo=zone).astimezone(UTC) - timedelta(hours=6)
    found = takewhile(
        lambda o: o.wall.date() <= day.date(), local_occurrences(expression, tz, start)
    )
    return [o.at for o in found if o.wall.date() == day.date()]


# --- spring gap ------------------------------------------------------------------------


def test_a_time_in_the_spring_gap_and_a_real_time_after_it_are_two_sends() -> None:
    # The bug of issue 17: 02:30 moved onto 03:30 and the two were sent once.
    sends = sends_on("30 2,3 * * *", "Europe/Berlin", datetime(2027, 3, 28))

    assert local(sends, BERLIN) == ["28 03:00:30+0200", "28 03:30:00+0200"]


def test_a_time_in_the_gap_goes_just_after_the_gap_not_an_hour_later() -> None:
    (send,) = sends_on("30 2 * * *", "Europe/Berlin", datetime(2027, 3, 28))

    assert datetime(2027, 3, 28, 1, 0, tzinfo=UTC) < send < datetime(2027, 3, 28, 1, 1, tzinfo=UTC)


def test_every_time_in_the_gap_is_sent_once_in_wall_clock_order() -> None:
    sends = list(islice(local_occurrences("*/15 2,3 * * *", "Europe/Berlin", _utc(2027, 3, 28)), 8))
    gap = [o for o in sends if o.moved]

    assert [o.wall.strftime("%H:%M") for o in gap] == ["02:00", "02:15", "02:30", "02:45"]
    assert [o.at for o in gap] == sorted({o.at for o in gap})
    assert all(_utc(2027, 3, 28, 1) < o.at < _utc(2027, 3, 28, 1, 1) for o in gap)
    # 03:00 itself is sent on the minute, before the moved ones.
    assert sends[0].wall.strftime("%H:%M") == "03:00" and not sends[0].moved


def test_a_gap_in_new_york_moves_to_3am_local() -> None:
    (send,) = sends_on("30 2 * * *", "America/New_York", datetime(2027, 3, 14))

    assert send.astimezone(ZoneInfo("America/New_York")).strftime("%H:%M") == "03:00"


def test_a_gap_at_midnight_keeps_the_send_on_its_day() -> None:
    # Santiago changes at 24:00: 00:00-01:00 does not exist on the first summer day.
    (send,) = sends_on("0 0 * * *", "America/Santiago", datetime(2027, 9, 5))

    assert local([send], ZoneInfo("America/Santiago")) == ["05 01:00:01-0300"]


def test_a_skipped_day_is_still_sent_once() -> None:
    # Samoa moved across the date line: 30 December 2011 never happened in Apia.
    apia = ZoneInfo("Pacific/Apia")
    sends = list(islice(occurrences("0 9 * * *", "Pacific/Apia", _utc(2011, 12, 28)), 4))
    walls = [
        o.wall.date().isoformat()
        for o in islice(local_occurrences("0 9 * * *", "Pacific/Apia", _utc(2011, 12, 28)), 4)
    ]

    assert walls == ["2011-12-28", "2011-12-29", "2011-12-30", "2011-12-31"]
    assert len(set(sends)) == 4
    assert sends[2].astimezone(apia).date().isoformat() == "2011-12-31"
    assert sends[2] < sends[3]


# --- autumn overlap --------------------------------------------------------------------


def test_a_time_in_the_autumn_overlap_is_sent_once_the_first_time() -> None:
    (send,) = sends_on("30 2 * * *", "Europe/Berlin", datetime(2027, 10, 31))

    assert local([send], BERLIN) == ["31 02:30:00+0200"]


def test_a_wildcard_cron_in_the_overlap_sends_each_wall_clock_time_once() -> None:
    sends = sends_on("*/30 * * * *", "Europe/Berlin", datetime(2027, 10, 31))

    assert len(sends) == 48
    assert local(sends[4:8], BERLIN) == [
        "31 02:00:00+0200",
        "31 02:30:00+0200",
        "31 03:00:00+0100",
        "31 03:30:00+0100",
    ]


def test_previous_occurrence_from_the_repeat_of_the_overlap_is_its_first_pass() -> None:
    second_pass = datetime(2027, 10, 31, 2, 10, tzinfo=BERLIN).replace(fold=1)

    previous = previous_occurrence("45 2 * * *", "Europe/Berlin", second_pass.astimezone(UTC))

    assert previous is not None
    assert local([previous], BERLIN) == ["31 02:45:00+0200"]


def test_previous_occurrence_sees_a_send_moved_out_of_the_gap() -> None:
    previous = previous_occurrence("*/15 2,3 * * *", "Europe/Berlin", _utc(2027, 3, 28, 1, 0, 40))

    assert previous is not None
    assert local([previous], BERLIN) == ["28 03:00:30+0200"]


# --- 30- and 45-minute zones -----------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "expected"),
    [
        ("Asia/Kolkata", "03:30"),  # UTC+5:30
        ("Asia/Kathmandu", "03:15"),  # UTC+5:45
        ("Australia/Adelaide", "23:30"),  # UTC+9:30 in winter
        ("Pacific/Chatham", "20:15"),  # UTC+12:45 in winter
    ],
)
def test_9am_in_a_half_or_quarter_hour_zone(tz: str, expected: str) -> None:
    send = next_occurrence("0 9 * * *", tz, _utc(2027, 7, 1))

    assert send.strftime("%H:%M") == expected


def test_lord_howe_half_hour_gap_moves_to_just_after_it() -> None:
    # Lord Howe goes from UTC+10:30 to +11 at 02:00: 02:00-02:29 do not exist.
    lord_howe = ZoneInfo("Australia/Lord_Howe")
    sends = sends_on("15,45 2 * * *", "Australia/Lord_Howe", datetime(2027, 10, 3))

    assert local(sends, lord_howe) == ["03 02:30:30+1100", "03 02:45:00+1100"]


def test_lord_howe_half_hour_overlap_sends_once() -> None:
    lord_howe = ZoneInfo("Australia/Lord_Howe")
    sends = sends_on("*/15 1 * * *", "Australia/Lord_Howe", datetime(2027, 4, 4))

    assert local(sends, lord_howe) == [
        "04 01:00:00+1100",
        "04 01:15:00+1100",
        "04 01:30:00+1100",
        "04 01:45:00+1100",
    ]


def test_chatham_spring_gap_at_245() -> None:
    # Chatham goes from UTC+12:45 to +13:45 at 02:45 local; 03:00 is a quarter into the gap.
    chatham = ZoneInfo("Pacific/Chatham")
    sends = sends_on("0 3 * * *", "Pacific/Chatham", datetime(2027, 9, 26))

    assert local(sends, chatham) == ["26 03:45:15+1345"]


# --- day-of-month and day-of-week ------------------------------------------------------


def dates(expression: str, count: int) -> list[str]:
    return [
        t.date().isoformat()
        for t in islice(occurrences(expression, "UTC", _utc(2027, 3, 1)), count)
    ]


def test_a_starred_day_of_month_step_and_a_weekday_must_both_match() -> None:
    # Classic cron: */2 starts with * so the two day fields AND: odd dates that are Mondays.
    assert dates("0 9 */2 * MON", 4) == ["2027-03-01", "2027-03-15", "2027-03-29", "2027-04-05"]


def test_two_restricted_day_fields_match_either() -> None:
    assert dates("0 9 1 * MON", 4) == ["2027-03-01", "2027-03-08", "2027-03-15", "2027-03-22"]


def test_a_star_day_of_month_leaves_the_weekday_alone() -> None:
    assert dates("0 9 * * SUN", 2) == ["2027-03-07", "2027-03-14"]


def test_a_starred_weekday_step_and_a_day_of_month_must_both_match() -> None:
    # */2 in day-of-week is Sun, Tue, Thu, Sat; only those that are also the 1st-7th.
    assert dates("0 9 1-7 * */2", 4) == ["2027-03-02", "2027-03-04", "2027-03-06", "2027-03-07"]


def test_bad_expressions_are_refused() -> None:
    for expression in ("0 9 * *", "61 9 * * *", "0 9 * * FUNDAY"):
        with pytest.raises(InvalidInputError):
            check_cron(expression)


# --- what the scheduler claims ---------------------------------------------------------


def test_a_scheduler_ticking_every_5s_claims_every_send_moved_out_of_the_gap() -> None:
    after, now = _utc(2027, 3, 28, 0, 50), _utc(2027, 3, 28, 0, 50)
    claimed = []
    while now < _utc(2027, 3, 28, 2):
        due = latest_due("*/15 2,3 * * *", "Europe/Berlin", after, now)
        if due is not None:
            claimed.append(due)
            after = due
        now += timedelta(seconds=5)

    assert len(claimed) == 8  # 02:00-02:45 moved, 03:00-03:45
    assert claimed == sorted(set(claimed))


def test_missed_occurrences_a_minute_or_more_apart_fold_into_the_latest() -> None:
    due = latest_due("*/5 * * * *", "UTC", _utc(2027, 1, 1), _utc(2027, 1, 1, 1, 2))

    assert due == _utc(2027, 1, 1, 1, 0)


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[arg-type, misc]
