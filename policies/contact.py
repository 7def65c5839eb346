"""Contact rules in the person's own time zone: quiet hours and per-day / per-week caps.

Everything is computed from UTC instants converted with zoneinfo, so DST changes move the local
wall clock correctly: a day with a DST change has 23 or 25 hours, and the caps follow the
person's calendar day and ISO week, not UTC's.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from policies.document import FrequencyCap, QuietHours


@lru_cache(maxsize=1024)
def zone_or_none(name: str) -> ZoneInfo | None:
    """The IANA zone, or None for an unknown or malformed name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def in_quiet_hours(local_time: time, quiet: QuietHours) -> bool:
    """Whether a local wall-clock time lies in [start, end), a window that may wrap midnight."""
    if quiet.start < quiet.end:
        return quiet.start <= local_time < quiet.end
    return local_time >= quiet.start or local_time < quiet.end


def next_allowed_instant(send_at: datetime, zone: ZoneInfo, quiet: QuietHours) -> datetime:
    """The first UTC instant at or after ``send_at`` outside quiet hours in ``zone``."""
    local = send_at.astimezone(zone)
    if not in_quiet_hours(local.time(), quiet):
        return send_at
    day = local.date() if local.time() < quiet.end else local.date() + timedelta(days=1)
    # An end time that falls into a DST gap does not exist on that day; the first minute after
    # it that does exist is where zoneinfo lands once we round-trip through UTC.
    candidate = datetime.combine(day, quiet.end, tzinfo=zone).astimezone(UTC)
    return max(candidate, send_at)


def count_in_window(
    prior: Iterable[datetime], zone: ZoneInfo, local_day: date
) -> tuple[int, int] | None:
    """How many earlier sends fall on the person's local calendar day and local ISO week
    (Monday to Sunday); None when an instant has no time zone and cannot be placed."""
    week_start = local_day - timedelta(days=local_day.weekday())
    week_end = week_start + timedelta(days=7)
    same_day = same_week = 0
    for instant in prior:
        if instant.tzinfo is None:
            return None
        other = instant.astimezone(zone).date()
        if week_start <= other < week_end:
            same_week += 1
            if other == local_day:
                same_day += 1
    return same_day, same_week


def cap_exceeded(cap: FrequencyCap, same_day: int, same_week: int) -> str | None:
    """Which cap one more send would break: ``"per_day"``, ``"per_week"`` or None."""
    if cap.per_day is not None and same_day + 1 > cap.per_day:
        return "per_day"
    if cap.per_week is not None and same_week + 1 > cap.per_week:
        return "per_week"
    return None
