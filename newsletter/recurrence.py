"""Cron maths in a time zone, correct across daylight-saving changes.

Cron expressions are read in local wall-clock time: we iterate naive local times and
only then attach the zone. A time that does not exist (the spring gap) maps to the
instant just after the gap; a time that exists twice (the autumn overlap) is taken
once, the first time. So every local occurrence is sent exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from newsletter.errors import InvalidInputError


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInputError(f"unknown time zone {name!r} (use e.g. Europe/Berlin)") from exc


def check_cron(expression: str) -> str:
    """The expression if croniter accepts it (5 fields), else InvalidInputError."""
    if len(expression.split()) != 5:
        raise InvalidInputError(
            f"cron {expression!r}: needs 5 fields (minute hour day month weekday), "
            'e.g. "0 9 * * MON"'
        )
    try:
        croniter(expression)
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise InvalidInputError(f"cron {expression!r}: {exc}") from exc
    return expression


def occurrences(expression: str, tz: str, after: datetime) -> Iterator[datetime]:
    """UTC instants of the cron's local occurrences strictly after `after`, in order."""
    local_zone = zone(tz)
    start = after.astimezone(local_zone).replace(tzinfo=None)
    iterator = croniter(expression, start - timedelta(hours=3))
    previous = after
    while True:
        try:
            naive = iterator.get_next(datetime)
        except CroniterBadDateError:
            return
        instant = naive.replace(tzinfo=local_zone).astimezone(UTC)
        if instant > previous:
            previous = instant
            yield instant


def next_occurrence(expression: str, tz: str, after: datetime) -> datetime:
    return next(occurrences(expression, tz, after))


def latest_due(expression: str, tz: str, after: datetime, now: datetime) -> datetime | None:
    """The last occurrence in (after, now], or None; older missed ones are folded into it."""
    latest = None
    for instant in occurrences(expression, tz, after):
        if instant > now:
            break
        latest = instant
    return latest


def previous_occurrence(expression: str, tz: str, before: datetime) -> datetime | None:
    """The last local occurrence strictly before `before`, as UTC."""
    local_zone = zone(tz)
    iterator = croniter(expression, before.astimezone(local_zone).replace(tzinfo=None))
    for _ in range(3):  # at most a DST-doubled instant or two to step over
        try:
            naive = iterator.get_prev(datetime)
        except CroniterBadDateError:
            return None
        instant = naive.replace(tzinfo=local_zone).astimezone(UTC)
        if instant < before:
            return instant
    return None


# The first zone to reach a wall-clock time is UTC+14 (Kiritimati), the last UTC-12.
EARLIEST_ZONE = ZoneInfo("Etc/GMT-14")
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
