"""Cron maths in a time zone: every local occurrence sent once, across daylight saving.

A cron expression names wall-clock times in its zone (its *local occurrences*). We
iterate naive wall-clock times with croniter and only then give each one the instant
it is sent at, so the zone's changes never add, drop or merge an occurrence:

- A wall-clock time that exists once is sent at that instant.
- A wall-clock time the autumn overlap repeats is sent once, the first time (cron's
  "fixed-time" rule; classic cron would run a wildcard job twice, we never do).
- A wall-clock time the spring gap skips is sent *just after the gap*, in the
  minute that follows it: one second past the gap's end for a time at the start of
  the gap, spread in wall-clock order up to 59 seconds past it for the gap's last
  minute (for the usual one-hour gap, 02:30 goes at 03:00:30). Real occurrences
  fall on whole minutes, so a moved time never lands on one of them nor on another
  moved time: `30 2,3 * * *` on a spring Sunday sends twice (03:00:30 for 02:30,
  03:30), as cron runs it at 03:00 and 03:30. Classic cron runs a fixed-time job from
  the gap once at the gap's end (two such times, once in all) and skips wildcard
  jobs there; we send every one of them.

Sends in the minute after a gap can be seconds apart, so `latest_due` never folds
occurrences less than a minute apart (only a gap produces those): each is claimed
on its own.

Day fields follow classic (Vixie/Debian) cron: when the day-of-month or the
day-of-week field starts with `*` (`*`, `*/2`), a day must match both; when both
are restricted (`1,15` and `MON`), either may match. So `0 9 */2 * MON` is a Monday
with an odd date, and `0 9 1 * MON` is the 1st and every Monday.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from newsletter.errors import InvalidInputError

MINUTE = timedelta(minutes=1)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInputError(f"unknown time zone {name!r} (use e.g. Europe/Berlin)") from exc


def days_either(expression: str) -> bool:
    """Whether a day matching day-of-month *or* day-of-week is enough (classic cron:
    only when neither field starts with `*`)."""
    fields = expression.split()
    return not (fields[2].startswith("*") or fields[4].startswith("*"))


def _cron(expression: str, start: datetime) -> croniter:
    return croniter(expression, start, day_or=days_either(expression))


def check_cron(expression: str) -> str:
    """The expression if croniter accepts it (5 fields), else InvalidInputError."""
    if len(expression.split()) != 5:
        raise InvalidInputError(
            f"cron {expression!r}: needs 5 fields (minute hour day month weekday), "
            'e.g. "0 9 * * MON"'
        )
    try:
        _cron(expression, datetime(2000, 1, 1))
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise InvalidInputError(f"cron {expression!r}: {exc}") from exc
    return expression


@dataclass(frozen=True, order=True)
class Occurrence:
    """One local occurrence of a cron: when it is sent (UTC) and the wall-clock time
    it stands for (naive, in the cron's zone)."""

    at: datetime
    wall: datetime
    # Whether the wall-clock time fell in a spring gap (so `at` is just after the gap).
    moved: bool = field(default=False, compare=False)


def send_at(wall: datetime, local_zone: ZoneInfo) -> tuple[datetime, bool]:
    """When the naive wall-clock time `wall` in `local_zone` is sent, as UTC, and
    whether it was moved out of a spring gap (see the module docstring)."""
    instant = wall.replace(tzinfo=local_zone, fold=0).astimezone(UTC)
    if instant.astimezone(local_zone).replace(tzinfo=None) == wall:
        return instant, False
    return _after_gap(wall, local_zone), True


def _after_gap(wall: datetime, local_zone: ZoneInfo) -> datetime:
    # For a time in a gap, fold=0 reads it with the offset before the change and
    # fold=1 with the one after: the change lies between the two readings.
    late = wall.replace(tzinfo=local_zone, fold=0).astimezone(UTC)
    early = wall.replace(tzinfo=local_zone, fold=1).astimezone(UTC)
    before = _offset(early - timedelta(seconds=1), local_zone)
    after = _offset(late, local_zone)
    low, high = early, late  # the offset is `before` at low, `after` at high
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle -= timedelta(microseconds=middle.microsecond)
        if _offset(middle, local_zone) == after:
            high = middle
        else:
            low = middle
    change = high
    gap_start = (change + before).replace(tzinfo=None)
    gap = after - before
    share = (wall - gap_start) / gap if gap > timedelta(0) else 0.0
    return change + timedelta(seconds=1) + timedelta(seconds=58) * min(max(share, 0.0), 1.0)


def _offset(instant: datetime, local_zone: ZoneInfo) -> timedelta:
    offset = instant.astimezone(local_zone).utcoffset()
    assert offset is not None
    return offset


def _walls(expression: str, start: datetime) -> Iterator[datetime]:
    """Naive wall-clock times matching the cron, strictly after naive `start`."""
    iterator = _cron(expression, start)
    while True:
        try:
            yield iterator.get_next(datetime)
        except CroniterBadDateError:
            return


def local_occurrences(expression: str, tz: str, after: datetime) -> Iterator[Occurrence]:
    """Each local occurrence sent strictly after `after`, in the order they are sent."""
    local_zone = zone(tz)
    # A wall-clock time sent after `after` is at least the wall-clock time two minutes
    # before it: only the minute after a gap holds sends of earlier wall-clock times.
    start = wall_clock(after - 2 * MINUTE, tz)
    pending: list[Occurrence] = []
    for wall in _walls(expression, start):
        instant, moved = send_at(wall, local_zone)
        if instant > after:
            heapq.heappush(pending, Occurrence(instant, wall, moved))
        if not moved:
            # Later wall-clock times are sent later than this one: release what is due.
            while pending and pending[0].at <= instant:
                yield heapq.heappop(pending)
    while pending:
        yield heapq.heappop(pending)


def occurrences(expression: str, tz: str, after: datetime) -> Iterator[datetime]:
    """UTC instants of the cron's local occurrences strictly after `after`, in order."""
    for occurrence in local_occurrences(expression, tz, after):
        yield occurrence.at


def next_occurrence(expression: str, tz: str, after: datetime) -> datetime:
    return next(occurrences(expression, tz, after))


def latest_due(expression: str, tz: str, after: datetime, now: datetime) -> datetime | None:
    """The occurrence to send now, of those in (after, now], or None.

    Older missed occurrences are folded into the last one, except that occurrences
    less than a minute apart are never folded together (a spring gap puts its
    wall-clock times in the minute after it; each is a send of its own): of a run
    of such, the earliest is returned, and a call after it returns the next.
    """
    due: list[datetime] = []
    for instant in occurrences(expression, tz, after):
        if instant > now:
            break
        due.append(instant)
    return fold_missed(due)


def fold_missed(due: list[datetime]) -> datetime | None:
    """Of occurrences due now (in order), the one to send: the last, folding the older
    missed ones into it, but never folding occurrences less than a minute apart (the
    wall-clock times of a spring gap): of a run of such, the earliest."""
    if not due:
        return None
    last = len(due) - 1
    while last > 0 and due[last] - due[last - 1] < MINUTE:
        last -= 1
    return due[last]


def previous_occurrence(expression: str, tz: str, before: datetime) -> datetime | None:
    """The last local occurrence sent strictly before `before`, as UTC."""
    local_zone = zone(tz)
    local = before.astimezone(local_zone)
    start = local.replace(tzinfo=None)
    if local.fold:  # in the repeat of an overlap: all of its first pass was sent before
        first_pass, second_pass = local.replace(fold=0).utcoffset(), local.utcoffset()
        assert first_pass is not None and second_pass is not None
        start += first_pass - second_pass
    iterator = _cron(expression, start + MINUTE)
    best: datetime | None = None
    while True:
        try:
            wall = iterator.get_prev(datetime)
        except CroniterBadDateError:
            return best
        instant, moved = send_at(wall, local_zone)
        if instant < before and (best is None or instant > best):
            best = instant
        if not moved and instant < before - MINUTE:
            return best


# The first zone to reach a wall-clock time is UTC+14 (Kiritimati), the last UTC-12.
EARLIEST_ZONE = ZoneInfo("Etc/GMT-14")
LATEST_ZONE = ZoneInfo("Etc/GMT+12")
LOCAL_TIME_LEAD = timedelta(hours=26)


def wall_clock(instant: datetime, tz: str) -> datetime:
    """The naive local time of `instant` in `tz`."""
    return instant.astimezone(zone(tz)).replace(tzinfo=None)


def at_wall_clock(wall: datetime, tz: str | None, fallback: str) -> datetime:
    """That wall-clock time in `tz` (or `fallback` when tz is missing or unknown), as UTC."""
    try:
        local = zone(tz) if tz else zone(fallback)
    except InvalidInputError:
        local = zone(fallback)
    return wall.replace(tzinfo=local).astimezone(UTC)


def earliest_local(instant: datetime, tz: str) -> datetime:
    """When the first time zone on Earth reaches the wall-clock time of `instant` in `tz`."""
    return wall_clock(instant, tz).replace(tzinfo=EARLIEST_ZONE).astimezone(UTC)


def latest_local(instant: datetime, tz: str) -> datetime:
    """When the last time zone on Earth reaches the wall-clock time of `instant` in `tz`."""
    return wall_clock(instant, tz).replace(tzinfo=LATEST_ZONE).astimezone(UTC)
