"""The simulator's constants must be what the Hillstrom e-mail experiment shows (Kevin
Hillstrom, MineThatData E-Mail Analytics and Data Mining Challenge, 2008): recomputed here from
the data set, per purchase-history segment."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from tools.simulation import truth


def _segment(row: dict[str, str]) -> str:
    if row["mens"] == "1" and row["womens"] == "1":
        return "both"
    return "mens" if row["mens"] == "1" else "womens"


@pytest.fixture(scope="module")
def rates(
    data_file: Callable[[str], Path],
) -> dict[tuple[str, str], tuple[float, float, float, int]]:
    acc: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])
    with data_file("hillstrom_minethatdata_2008.csv").open() as fh:
        for row in csv.DictReader(fh):
            for key in ((row["segment"], _segment(row)), (row["segment"], "all")):
                a = acc[key]
                a[0] += 1
                a[1] += int(row["visit"])
                a[2] += int(row["conversion"])
                a[3] += float(row["spend"])
    return {k: (a[1] / a[0], a[2] / a[0], a[3] / max(a[2], 1), int(a[0])) for k, a in acc.items()}


def test_control_rates_per_segment(rates) -> None:  # type: ignore[no-untyped-def]
    for seg, (visit, conv, spend) in truth.CONTROL.items():
        v, c, s, _ = rates[("No E-Mail", seg)]
        assert (visit, conv, spend) == pytest.approx((v, c, s), abs=6e-5, rel=1e-3)


def test_matched_email_rates_per_segment(rates) -> None:  # type: ignore[no-untyped-def]
    arm = {"mens": "Mens E-Mail", "womens": "Womens E-Mail"}
    for seg, (visit, conv, spend) in truth.EMAIL.items():
        if seg == "both":  # the mean of both e-mails for people who bought both
            both = [rates[(a, "both")] for a in arm.values()]
            expected = tuple(sum(x[i] for x in both) / 2 for i in range(3))
        else:
            expected = rates[(arm[seg], seg)][:3]
        assert (visit, conv, spend) == pytest.approx(expected, abs=6e-5, rel=1e-3)


def test_headline_rates_and_segment_shares(rates) -> None:  # type: ignore[no-untyped-def]
    headline = {
        "No E-Mail": truth.OVERALL_CONTROL_CONVERSION,
        "Mens E-Mail": truth.OVERALL_MENS_EMAIL_CONVERSION,
    }
    for arm, published in headline.items():
        assert abs(published - rates[(arm, "all")][1]) < 6e-6
    n = rates[("No E-Mail", "all")][3]
    for seg, share in truth.SEGMENT_SHARE.items():
        assert share == pytest.approx(rates[("No E-Mail", seg)][3] / n, abs=1e-4)
