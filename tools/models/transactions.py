"""Transaction logs for CLV: parsing (CDNOW text files, CSV) and the per-customer RFM summary.

Bad rows (unparsable dates, negative or unparsable amounts) are reported with their line
numbers and excluded. Identical rows are reported but kept, because in CDNOW they are genuine
repeat purchases on the same day, unless the caller asks to drop them.
"""

from __future__ import annotations

import csv
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from tools.models.errors import ModelInputError

TransactionFormat = Literal["cdnow", "csv"]
DEFAULT_CALIBRATION_START = date(1997, 1, 1)
DEFAULT_CALIBRATION_END = date(1997, 9, 30)
MAX_REPORTED_LINES = 20


class ParseIssue(BaseModel):
    model_config = ConfigDict(frozen=True)

    line: int
    reason: str


class Transactions(BaseModel):
    """Parsed transactions as parallel columns; day numbers count from 1970-01-01."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    customer_ids: list[str]
    customer_index: npt.NDArray[np.int64]
    day: npt.NDArray[np.int64]
    amount: npt.NDArray[np.float64]
    rows_read: int
    bad_rows: list[ParseIssue]
    duplicate_rows: list[ParseIssue]
    duplicates_dropped: bool

    def warnings(self) -> list[str]:
        """Human-readable summary of the rows that were excluded or flagged."""
        out: list[str] = []
        for issues, what in ((self.bad_rows, "excluded"), (self.duplicate_rows, "duplicate")):
            if not issues:
                continue
            shown = ", ".join(f"line {i.line} ({i.reason})" for i in issues[:MAX_REPORTED_LINES])
            more = len(issues) - MAX_REPORTED_LINES
            suffix = f" and {more} more" if more > 0 else ""
            verb = "dropped" if what == "duplicate" and self.duplicates_dropped else "kept"
            label = (
                f"{len(issues)} rows excluded"
                if what == "excluded"
                else (f"{len(issues)} identical rows {verb}")
            )
            out.append(f"{label}: {shown}{suffix}")
        return out


class RfmSummary(BaseModel):
    """Per-customer calibration summary in weeks: x repeat purchase days, recency t_x, age T,
    and the mean value of the repeat purchases (0 where x is 0)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    customer_ids: list[str]
    x: npt.NDArray[np.float64]
    t_x: npt.NDArray[np.float64]
    T: npt.NDArray[np.float64]
    mean_value: npt.NDArray[np.float64]


def _parse_day(text: str, fmt: str) -> int:
    parsed = datetime.strptime(text, fmt).date()
    return parsed.toordinal() - date(1970, 1, 1).toordinal()


def _day_number(d: date) -> int:
    return d.toordinal() - date(1970, 1, 1).toordinal()


def _rows(path: Path, fmt: TransactionFormat) -> list[tuple[int, str, str, str]]:
    """(line number, customer id, date text, amount text) for each data line."""
    rows: list[tuple[int, str, str, str]] = []
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = [h.strip().lower() for h in next(reader, [])]
            needed = ("customer_id", "date", "amount")
            missing = [h for h in needed if h not in header]
            if missing:
                raise ModelInputError("transactions", f"CSV header lacks {', '.join(missing)}")
            cols = [header.index(h) for h in needed]
            for number, record in enumerate(reader, start=2):
                if not record:
                    continue
                padded = [*record, "", "", ""]
                rows.append((number, *(padded[c].strip() for c in cols)))  # type: ignore[arg-type]
        return rows
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if number == 1 and not parts[0].isdigit():
                continue  # the master file's header line
            # The 1/10 sample carries a sample index between id and date; the master file not.
            if len(parts) == 5:
                rows.append((number, parts[0], parts[2], parts[4]))
            elif len(parts) == 4:
                rows.append((number, parts[0], parts[1], parts[3]))
            else:
                rows.append((number, parts[0], "", ""))
    return rows


def read_transactions(
    path: Path, fmt: TransactionFormat = "cdnow", *, drop_duplicates: bool = False
) -> Transactions:
    """Read a transaction file; raise ModelInputError if it is missing or has no usable row."""
    if not path.is_file():
        raise ModelInputError("transactions", f"file not found: {path.name}")
    date_format = "%Y%m%d" if fmt == "cdnow" else "%Y-%m-%d"
    raw = _rows(path, fmt)
    bad: list[ParseIssue] = []
    dupes: list[ParseIssue] = []
    seen: Counter[tuple[str, str, str]] = Counter()
    ids: dict[str, int] = {}
    cust: list[int] = []
    days: list[int] = []
    amounts: list[float] = []
    for number, customer, day_text, amount_text in raw:
        if not customer:
            bad.append(ParseIssue(line=number, reason="missing customer id"))
            continue
        try:
            day = _parse_day(day_text, date_format)
        except ValueError:
            bad.append(ParseIssue(line=number, reason=f"unparsable date {day_text!r}"))
            continue
        try:
            amount = float(amount_text)
        except ValueError:
            bad.append(ParseIssue(line=number, reason=f"unparsable amount {amount_text!r}"))
            continue
        if not np.isfinite(amount) or amount < 0:
            bad.append(ParseIssue(line=number, reason=f"negative or non-finite amount {amount}"))
            continue
        key = (customer, day_text, amount_text)
        seen[key] += 1
        if seen[key] > 1:
            dupes.append(ParseIssue(line=number, reason="identical to an earlier row"))
            if drop_duplicates:
                continue
        cust.append(ids.setdefault(customer, len(ids)))
        days.append(day)
        amounts.append(amount)
    if not cust:
        raise ModelInputError("transactions", "no usable rows")
    return Transactions(
        customer_ids=list(ids),
        customer_index=np.asarray(cust, dtype=np.int64),
        day=np.asarray(days, dtype=np.int64),
        amount=np.asarray(amounts, dtype=np.float64),
        rows_read=len(raw),
        bad_rows=bad,
        duplicate_rows=dupes,
        duplicates_dropped=drop_duplicates,
    )


def summarise(
    tx: Transactions,
    calibration_end: date = DEFAULT_CALIBRATION_END,
    *,
    calibration_start: date | None = None,
) -> RfmSummary:
    """Calibration-period RFM summary: purchases on the same day count as one (their amounts
    add up), customers whose first purchase falls outside the period are left out."""
    start = _day_number(calibration_start) if calibration_start else None
    end = _day_number(calibration_end)
    keep = tx.day <= end
    if start is not None:
        keep &= tx.day >= start
    cust, day, amount = tx.customer_index[keep], tx.day[keep], tx.amount[keep]
    if cust.size == 0:
        raise ModelInputError("calibration_end", "no transactions inside the calibration period")
    order = np.lexsort((day, cust))
    cust, day, amount = cust[order], day[order], amount[order]
    new_day = np.ones(cust.size, dtype=bool)
    new_day[1:] = (cust[1:] != cust[:-1]) | (day[1:] != day[:-1])
    day_starts = np.flatnonzero(new_day)
    d_cust, d_day = cust[day_starts], day[day_starts]
    d_amount = np.add.reduceat(amount, day_starts)
    first_of_customer = np.ones(d_cust.size, dtype=bool)
    first_of_customer[1:] = d_cust[1:] != d_cust[:-1]
    c_starts = np.flatnonzero(first_of_customer)
    n_days = np.diff(np.append(c_starts, d_cust.size))
    first_day = d_day[c_starts]
    last_day = d_day[np.append(c_starts[1:], d_cust.size) - 1]
    x = (n_days - 1).astype(np.float64)
    repeat_value = np.add.reduceat(np.where(first_of_customer, 0.0, d_amount), c_starts)
    mean_value = np.divide(repeat_value, x, out=np.zeros_like(repeat_value), where=x > 0)
    ids = [tx.customer_ids[i] for i in d_cust[c_starts]]
    return RfmSummary(
        customer_ids=ids,
        x=x,
        t_x=(last_day - first_day) / 7.0,
        T=(end - first_day) / 7.0,
        mean_value=mean_value,
    )
