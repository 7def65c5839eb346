"""How values read on a page: times in UTC, deadlines as time left, signed lifts, and copy with
its personal-data slots marked (they are filled per person at send time, so a reviewer sees the
placeholder, not a value)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from markupsafe import Markup, escape

# `{first_name}` as the templates store a slot, `{{first_name}}` as the copywriter writes one.
_SLOT = re.compile(r"\{\{?\s*[a-z_][a-z0-9_]*\s*\}?\}")


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def when(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return _utc(moment).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def until(moment: datetime | None, now: datetime | None = None) -> str:
    """'in 3 h 59 min', or 'passed 2 min ago'."""
    if moment is None:
        return "no deadline"
    left = (_utc(moment) - (now or datetime.now(UTC))).total_seconds()
    minutes = int(abs(left) // 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{days} d"] if days else []
    if hours:
        parts.append(f"{hours} h")
    if not days:
        parts.append(f"{minutes} min")
    text = " ".join(parts)
    return f"in {text}" if left >= 0 else f"passed {text} ago"


def with_slots(text: str) -> Markup:
    """The text escaped, each slot wrapped in a visible marker."""
    out, last = [], 0
    for match in _SLOT.finditer(text):
        out.append(escape(text[last : match.start()]))
        out.append(Markup('<span class="slot" title="filled per person at send time">'))
        out.append(escape(match.group(0)))
        out.append(Markup("</span>"))
        last = match.end()
    out.append(escape(text[last:]))
    return Markup("").join(out)


def signed(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:+.{digits}f}"


def pct(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:g} %"
