"""Durations as people write them in specs ('7d', '12h', '30m', '45s') or as seconds.

Every duration is finite and between 0 and `MAX_DURATION_S` (five years): a larger one would
overflow a `timedelta` or a Temporal timer wherever it is used, so `parse_duration` refuses it
for every caller (specs, segment windows) instead of each checking on its own."""

from __future__ import annotations

import math
import re

MAX_DURATION_DAYS = 5 * 365
MAX_DURATION_S = float(MAX_DURATION_DAYS * 86400)

_DURATION = re.compile(r"^\s*(\d{1,30}(?:\.\d{1,30})?)\s*([smhdw])\s*$", re.ASCII)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> float:
    """'7d', '12h', '30m', '45s' or a number of seconds → seconds, within 0 … five years.

    Anything else (another type, NaN, infinity, negative, longer than five years) is a
    ValueError naming the reason."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(
            f"must be a duration like 7d, 12h, 30m or 45s, or seconds, not {type(value).__name__}"
        )
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            shown = value if len(value) <= 40 else value[:40] + "…"
            raise ValueError(f"{shown!r} is not a duration like 7d, 12h, 30m or 45s")
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond the range of a float
            seconds = math.inf
    if math.isnan(seconds):
        raise ValueError("must be a number of seconds, not NaN")
    if seconds < 0:
        raise ValueError("must not be negative")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"must be at most {MAX_DURATION_DAYS}d (five years)")
    return seconds
