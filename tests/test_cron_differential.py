"""Our cron against an independent implementation (cronsim) across daylight saving.

cronsim iterated over naive datetimes gives every wall-clock time an expression names
(its field matching is written apart from croniter's, and follows Debian cron's day
rule). Iterated in a zone it follows Debian cron's DST rules:

- an expression whose minute and hour fields do not start with `*` ("fixed-time")
  is iterated in wall-clock time; a match in the spring gap runs at the gap's end,
  the first minute that exists (several matches in one gap run once, together);
  a match in the autumn overlap runs once, the first time (fold=0);
- any other ("wildcard") expression is iterated in real time: matches in the gap
  are skipped, matches in the overlap run twice.

Our rule (newsletter/recurrence.py) sends every wall-clock time exactly once: in
the gap, in the minute after the gap's end (so never merged with another), in the
overlap the first time. So the test proves, per expression, zone and window:

1. the wall-clock times we send are exactly cronsim's, each once (none missed,
   none sent twice);
2. no two of them share an instant (none merged), and they come in order;
3. each send agrees with cronsim in a zone wherever cronsim's rule and ours agree,
   and each disagreement is one of those documented above.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import takewhile
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from newsletter.recurrence import Occurrence, local_occurrences

EXPRESSIONS = [
    # times of day, some landing in a gap or an overlap somewhere
    "0 9 * * *",
    "30 2 * * *",
    "30 2,3 * * *",
    "0 2,3 * * *",
    "0,30 2 * * *",
    "15,45 1,2,3 * * *",
    "0 0 * * *",
    "30 0 * * *",
    "0 1 * * *",
    "45 1 * * *",
    "59 1,2 * * *",
    "0 3 * * *",
    "30 3 * * *",
    "0 23 * * *",
    "0 12 * * *",
    "0 0,12 * * *",
    "5 4 * * *",
    "0 2 * * SUN",
    "30 1-3 * * 0",
    "0 */2 * * *",
    "30 */3 * * *",
    # wildcard minute or hour fields
    "* 2 * * *",
    "*/15 * * * *",
    "*/10 1-3 * * *",
    "*/20 0-4 * * *",
    "0 * * * *",
    "30 * * * *",
    "45 * * * *",
    "*/30 * * * *",
    "15 * * * *",
    # day-of-month and day-of-week (classic cron: AND when a field starts with *)
    "0 9 */2 * MON",
    "0 9 1 * MON",
    "0 9 1-7 * SUN",
    "30 2 */2 * *",
    "0 2 * * 0,6",
    "0 9 15 * *",
    "0 9 L * *",
    "0 8 * * MON#1",
    "0 9 1,15 * FRI",
    "30 2 1-10 * SUN",
    "0 10 * 3,4,9,10,11 SUN",
    "0 2 */3 * SAT,SUN",
]

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "America/Santiago",  # changes at midnight: the gap swallows 00:00–01:00
    "America/St_Johns",  # UTC-3:30 / -2:30
    "Australia/Adelaide",  # UTC+9:30 / +10:30, southern summer
    "Australia/Lord_Howe",  # UTC+10:30 / +11: a 30-minute change
    "Asia/Kolkata",  # UTC+5:30, no daylight saving
    "Asia/Kathmandu",  # UTC+5:45, no daylight saving
    "Pacific/Chatham",  # UTC+12:45 / +13:45
]

WINDOW = timedelta(days=2)  # either side of a change
HOUR = timedelta(hours=1)


def changes(tz: ZoneInfo, year: int) -> list[datetime]:
    """The instants (UTC, to the minute) when the zone's offset changes in `year`."""
    found = []
    step = timedelta(hours=1)
    moment = datetime(year, 1, 1, tzinfo=UTC)
    while moment.year == year:
        if moment.astimezone(tz).utcoffset() != (moment + step).astimezone(tz).utcoffset():
            low, high = moment, moment + step
            while high - low > timedelta(minutes=1):
                middle = low + (high - low) / 2
                if middle.astimezone(tz).utcoffset() == low.astimezone(tz).utcoffset():
                    low = middle
                else:
                    high = middle
            found.append(high)
        moment += step
    return found


def windows(name: str) -> list[tuple[datetime, datetime]]:
    tz = ZoneInfo(name)
    centres = changes(tz, 2026) + changes(tz, 2027)
    if not centres:  # no daylight saving: still the :30 and :45 offsets, on two dates
        centres = [datetime(2027, 3, 28, tzinfo=UTC), datetime(2027, 10, 31, tzinfo=UTC)]
    return [(centre - WINDOW, centre + WINDOW) for centre in centres]


def exists(wall: datetime, tz: ZoneInfo) -> bool:
    aware = wall.replace(tzinfo=tz)
    return aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall


def ambiguous(wall: datetime, tz: ZoneInfo) -> bool:
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    return exists(wall, tz) and first != second


def gap_end(wall: datetime, tz: ZoneInfo) -> datetime:
    """The first instant after the gap `wall` lies in: its first existing minute."""
    minute = wall.replace(second=0, microsecond=0)
    while not exists(minute, tz):
        minute += timedelta(minutes=1)
    return minute.replace(tzinfo=tz).astimezone(UTC)


def fixed_time(expression: str) -> bool:
    minute, hour = expression.split()[:2]
    return not minute.startswith("*") and not hour.startswith("*")


def cronsim_half_hour_skip(case: Case, wall: datetime, tz: ZoneInfo) -> bool:
    """cronsim 2.8 in real-time (wildcard) mode skips some minutes that exist in the
    hour after a 30-minute change (Lord Howe: 02:30 on the spring day for `30 * * * *`,
    02:00-02:29 on the autumn day for `* 2 * * *`). Step 1 still proves we send them."""
    if fixed_time(case.expression):
        return False
    instant = wall.replace(tzinfo=tz).astimezone(UTC)
    before, after = ((instant + h).astimezone(tz).utcoffset() for h in (-HOUR, HOUR))
    return before is not None and after is not None and abs(after - before) == HOUR / 2


def cronsim_walls(expression: str, start: datetime, end: datetime) -> list[datetime]:
    """Every naive wall-clock time in (start, end) that the expression names."""
    return list(takewhile(lambda t: t < end, CronSim(expression, start)))


def cronsim_zoned(expression: str, tz: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """cronsim's runs in the zone, as UTC instants in (start, end)."""
    runs = (t.astimezone(UTC) for t in CronSim(expression, start.astimezone(tz)))
    return list(takewhile(lambda t: t < end, runs))


def ours(expression: str, tz: ZoneInfo, start: datetime, end: datetime) -> list[Occurrence]:
    sends = local_occurrences(expression, tz.key, start)
    return list(takewhile(lambda o: o.at < end, sends))


@dataclass
class Case:
    expression: str
    zone: str
    start: datetime
    end: datetime

    def __str__(self) -> str:
        return f"{self.expression!r} in {self.zone} {self.start:%Y-%m-%d}..{self.end:%Y-%m-%d}"


def disagreements(case: Case) -> Iterator[str]:
    tz = ZoneInfo(case.zone)
    sends = ours(case.expression, tz, case.start, case.end)
    # The window's edges lie two days from any change, so wall-clock times map plainly.
    walls = cronsim_walls(
        case.expression,
        case.start.astimezone(tz).replace(tzinfo=None),
        case.end.astimezone(tz).replace(tzinfo=None),
    )

    # 1. exactly cronsim's wall-clock times, each once
    sent_walls = sorted(o.wall for o in sends)
    if sent_walls != walls:
        missed = sorted(set(walls) - set(sent_walls))
        extra = sorted(set(sent_walls) - set(walls))
        twice = len(sent_walls) - len(set(sent_walls))
        yield f"{case}: missed {missed[:3]}, extra {extra[:3]}, sent twice {twice}"

    # 2. distinct instants, in order
    instants = [o.at for o in sends]
    if instants != sorted(set(instants)):
        yield f"{case}: merged or out-of-order sends"

    # 3. against cronsim in the zone
    theirs = set(cronsim_zoned(case.expression, tz, case.start, case.end))
    accounted: set[datetime] = set()
    for send in sends:
        if not exists(send.wall, tz):
            end = gap_end(send.wall, tz)
            if not (end < send.at < end + timedelta(minutes=1)) or not send.moved:
                yield f"{case}: {send.wall} (in a gap) sent at {send.at}, gap ends {end}"
            if fixed_time(case.expression):
                # cronsim runs gap matches once, at the gap's end
                if end not in theirs:
                    yield f"{case}: cronsim has no run at the gap's end {end}"
                accounted.add(end)
            continue
        first = send.wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if send.at != first or send.moved:
            yield f"{case}: {send.wall} sent at {send.at}, not at {first}"
        if first not in theirs and not cronsim_half_hour_skip(case, send.wall, tz):
            yield f"{case}: {send.wall} ({first}) is not among cronsim's runs"
        accounted.add(first)
        if ambiguous(send.wall, tz) and not fixed_time(case.expression):
            # cronsim runs wildcard matches in the overlap a second time; we do not
            accounted.add(send.wall.replace(tzinfo=tz, fold=1).astimezone(UTC))
    for run in sorted(theirs - accounted):
        yield f"{case}: cronsim runs at {run}, which no send of ours accounts for"


def cases(zone: str) -> list[Case]:
    return [
        Case(expression, zone, start, end)
        for expression in EXPRESSIONS
        for start, end in windows(zone)
    ]


def test_enough_expressions_and_zones_with_dst_windows() -> None:
    assert len(EXPRESSIONS) >= 40
    with_dst = [z for z in ZONES if changes(ZoneInfo(z), 2027)]
    assert len(with_dst) >= 6
    # Lord Howe's change is 30 minutes, Chatham's zone is on :45.
    change = changes(ZoneInfo("Australia/Lord_Howe"), 2027)[0]
    tz = ZoneInfo("Australia/Lord_Howe")
    offsets = {(change + d).astimezone(tz).utcoffset() for d in (-timedelta(hours=1), WINDOW)}
    assert {o.total_seconds() / 3600 for o in offsets if o} == {10.5, 11.0}


@pytest.mark.parametrize("zone", ZONES)
def test_every_local_occurrence_is_sent_once_and_none_merged(zone: str) -> None:
    problems = [p for case in cases(zone) for p in disagreements(case)]

    assert problems == []


def test_the_differential_sees_gaps_overlaps_and_moved_sends() -> None:
    """The windows do reach the cases that matter (a check on the test itself)."""
    moved = doubled = 0
    for zone in ("Europe/Berlin", "Australia/Lord_Howe", "Pacific/Chatham"):
        tz = ZoneInfo(zone)
        for start, end in windows(zone):
            for expression in ("*/15 * * * *", "30 2,3 * * *"):
                for send in ours(expression, tz, start, end):
                    moved += send.moved
                    doubled += ambiguous(send.wall, tz)
    assert moved > 10
    assert doubled > 10
