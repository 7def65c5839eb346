from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tools.measure.attribution import Journey, attribute, read_journeys
from tools.measure.errors import MeasureInputError

MODELS = ["markov", "shapley", "first", "last", "linear", "time_decay"]


@pytest.fixture(scope="module")
def path_data(data_file: Callable[[str], Path]) -> list[Journey]:
    return read_journeys(data_file("channelattribution_PathData.csv"))


@pytest.mark.parametrize("model", MODELS)
def test_totals_are_conserved_on_the_path_data(path_data: list[Journey], model: str) -> None:
    result = attribute(path_data, model)  # type: ignore[arg-type]
    assert sum(c.conversions for c in result.channels) == pytest.approx(result.total_conversions)
    assert sum(c.value for c in result.channels) == pytest.approx(result.total_value)
    assert all(c.conversions >= -1e-9 for c in result.channels)
    assert result.total_conversions == pytest.approx(sum(j.conversions for j in path_data))


def test_first_and_last_touch_match_an_independent_count(
    data_file: Callable[[str], Path],
) -> None:
    first, last = Counter[str](), Counter[str]()
    with data_file("channelattribution_PathData.csv").open() as fh:
        for row in csv.DictReader(fh, delimiter=";"):
            touches = row["path"].split(" > ")
            first[touches[0]] += float(row["total_conversions"])
            last[touches[-1]] += float(row["total_conversions"])
    journeys = read_journeys(data_file("channelattribution_PathData.csv"))
    for model, expected in (("first", first), ("last", last)):
        got = {c.channel: c.conversions for c in attribute(journeys, model).channels}  # type: ignore[arg-type]
        assert got == pytest.approx(dict(expected))


def test_markov_removal_effects_by_hand() -> None:
    journeys = [
        Journey(touches=["a", "b"], conversions=3, nulls=1),
        Journey(touches=["b"], conversions=1, nulls=3),
        Journey(touches=["a"], conversions=0, nulls=2),
    ]
    # start→a 0.6, start→b 0.4, a→b 2/3, b→conversion 0.5: P(conv) = 0.4.
    # Without a: 0.2 (effect 0.5); without b: 0 (effect 1) → shares 1/3, 2/3 of 4 conversions.
    result = attribute(journeys, "markov")
    assert result.conversion_probability == pytest.approx(0.4)
    assert result.removal_effects == pytest.approx({"a": 0.5, "b": 1.0})
    got = {c.channel: c.conversions for c in result.channels}
    assert got == pytest.approx({"a": 4 / 3, "b": 8 / 3})


def test_shapley_equals_harsanyi_split(path_data: list[Journey]) -> None:
    # For v(S) = conversions of journeys within S, each journey's conversions are shared
    # equally by its distinct channels.
    expected: Counter[str] = Counter()
    for j in path_data:
        distinct = set(j.touches)
        for c in distinct:
            expected[c] += j.conversions / len(distinct)
    got = {c.channel: c.conversions for c in attribute(path_data, "shapley").channels}
    assert got == pytest.approx(dict(expected))


@pytest.mark.parametrize("model", MODELS)
def test_symmetric_channels_get_equal_credit(model: str) -> None:
    journeys = [
        Journey(touches=["a", "b"], conversions=2, value=20, nulls=2),
        Journey(touches=["b", "a"], conversions=2, value=20, nulls=2),
        Journey(touches=["a"], conversions=1, value=5, nulls=4),
        Journey(touches=["b"], conversions=1, value=5, nulls=4),
    ]
    credit = {c.channel: c.conversions for c in attribute(journeys, model).channels}  # type: ignore[arg-type]
    assert credit["a"] == pytest.approx(credit["b"])


def test_time_decay_favours_late_touches() -> None:
    journeys = [Journey(touches=["a", "b", "c"], conversions=1)]
    credit = {c.channel: c.conversions for c in attribute(journeys, "time_decay").channels}
    assert credit["a"] < credit["b"] < credit["c"]


def test_bad_path_files(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_text("route;total_conversions\na > b;1\n")
    with pytest.raises(MeasureInputError, match=r"^paths: unknown column 'path'"):
        read_journeys(f)
    f.write_text("path;total_conversions;total_conversion_value;total_null\na;x;1;1\n")
    with pytest.raises(MeasureInputError, match=r"^paths: line 2"):
        read_journeys(f)
