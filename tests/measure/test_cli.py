from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from liftloop.cli.measure import register


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    root = typer.Typer()
    register(root)
    return root


def run(app: typer.Typer, *args: str) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, json.loads(result.stdout)


def test_experiment_analyze_on_hillstrom(
    app: typer.Typer, data_file: Callable[[str], Path]
) -> None:
    code, out = run(
        app,
        "experiment", "analyze",
        "--csv", str(data_file("hillstrom_minethatdata_2008.csv")),
        "--arm-column", "segment", "--control", "No E-Mail", "--metric", "visit",
        "--json",
    )  # fmt: skip
    assert code == 0
    arms = out["arms"]
    assert isinstance(arms, dict)
    mens = arms["Mens E-Mail"]
    assert set(mens) >= {"n", "mean", "diff", "ci_low", "ci_high", "rel_lift", "p_value"}
    assert mens["ci_low"] <= 0.1828 - 0.1062 <= mens["ci_high"]
    assert set(arms["No E-Mail"]) == {"n", "mean"}


def test_experiment_analyze_sequential_with_covariate(app: typer.Typer, tmp_path: Path) -> None:
    rows = ["arm,y,pre"] + [
        f"{'t' if i % 2 else 'c'},{(i % 7) + (1 if i % 2 else 0)},{i % 7}" for i in range(200)
    ]
    f = tmp_path / "e.csv"
    f.write_text("\n".join(rows))
    code, out = run(
        app, "experiment", "analyze", "--csv", str(f), "--arm-column", "arm", "--control", "c",
        "--metric", "y", "--covariate", "pre", "--sequential", "--alpha", "0.1", "--json",
    )  # fmt: skip
    assert code == 0
    assert out["cuped"] is True and out["sequential"] is True and out["alpha"] == 0.1


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--metric", "nope"], "metric: unknown column 'nope'"),
        (["--metric", "const"], "metric: column 'const' is constant"),
        (["--metric", "y", "--control", "zzz"], "control: 'zzz' is not an arm"),
    ],
)
def test_experiment_analyze_bad_input(
    app: typer.Typer, tmp_path: Path, args: list[str], field: str
) -> None:
    f = tmp_path / "e.csv"
    f.write_text("arm,y,const\n" + "".join(f"{'ab'[i % 2]},{i},1\n" for i in range(10)))
    base = ["experiment", "analyze", "--csv", str(f), "--arm-column", "arm", "--json"]
    if "--control" not in args:
        base += ["--control", "a"]
    code, out = run(app, *base, *args)
    assert code == 2
    assert str(out["error"]).startswith(field)


def test_experiment_power(app: typer.Typer) -> None:
    code, out = run(app, "experiment", "power", "--baseline", "0.1", "--mde", "0.02", "--json")
    assert code == 0
    assert 3800 <= int(out["n_per_arm"]) <= 3850  # type: ignore[call-overload]
    code, out = run(app, "experiment", "power", "--baseline", "1.5", "--mde", "0.02", "--json")
    assert code == 2 and str(out["error"]).startswith("baseline:")


def test_mmm_fit_then_allocate_from_its_curves(
    app: typer.Typer, data_file: Callable[[str], Path], tmp_path: Path
) -> None:
    code, out = run(
        app, "mmm", "fit", "--csv", str(data_file("pymc_marketing_mmm_roas_data.csv")),
        "--date-column", "date", "--target", "y", "--channels", "x1,x2", "--controls", "z",
        "--bootstrap", "0", "--json",
    )  # fmt: skip
    assert code == 0
    channels = out["channels"]
    assert isinstance(channels, dict)
    assert set(channels["x1"]) >= {"roas", "mroas", "contribution", "response_curve"}
    assert "r2" in out["diagnostics"]  # type: ignore[operator]
    curves = tmp_path / "curves.json"
    curves.write_text(json.dumps(out))
    bounds = tmp_path / "bounds.json"
    bounds.write_text(json.dumps({"channels": {"x1": {"min_spend": 0.2}}}))
    code, alloc = run(
        app, "allocate", "--curves", str(curves), "--budget", "1.2", "--bounds", str(bounds),
        "--json",
    )  # fmt: skip
    assert code == 0
    allocations = alloc["allocations"]
    assert isinstance(allocations, dict)
    assert allocations["x1"]["spend"] >= 0.2 - 1e-9
    assert alloc["total_spend"] == pytest.approx(1.2)


def test_mmm_fit_bad_input(app: typer.Typer, data_file: Callable[[str], Path]) -> None:
    code, out = run(
        app, "mmm", "fit", "--csv", str(data_file("pymc_marketing_mmm_roas_data.csv")),
        "--date-column", "date", "--target", "y", "--channels", "x1,nope", "--json",
    )  # fmt: skip
    assert code == 2 and str(out["error"]).startswith("channels: unknown column 'nope'")


def test_allocate_budget_below_minimums(app: typer.Typer, tmp_path: Path) -> None:
    curves = tmp_path / "c.json"
    curves.write_text(
        json.dumps(
            [
                {"name": "a", "curve": {"kind": "hill", "beta": 10, "half_saturation": 5,
                                        "shape": 1}, "min_spend": 8},
                {"name": "b", "curve": {"kind": "logistic", "beta": 10, "lam": 0.1},
                 "min_spend": 8},
            ]
        )
    )  # fmt: skip
    code, out = run(app, "allocate", "--curves", str(curves), "--budget", "10", "--json")
    assert code == 2 and str(out["error"]).startswith("budget: 10 is below the sum")


@pytest.mark.parametrize("model", ["markov", "shapley", "first", "last", "linear"])
def test_attribution(app: typer.Typer, data_file: Callable[[str], Path], model: str) -> None:
    code, out = run(
        app, "attribution", "--paths", str(data_file("channelattribution_PathData.csv")),
        "--model", model, "--json",
    )  # fmt: skip
    assert code == 0
    channels = out["channels"]
    assert isinstance(channels, dict)
    total = sum(c["conversions"] for c in channels.values())
    assert total == pytest.approx(out["total_conversions"])


def test_attribution_unknown_model(app: typer.Typer, data_file: Callable[[str], Path]) -> None:
    code, out = run(
        app, "attribution", "--paths", str(data_file("channelattribution_PathData.csv")),
        "--model", "magic", "--json",
    )  # fmt: skip
    assert code == 2 and str(out["error"]).startswith("model:")
