from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from statistics import NormalDist

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


def test_experiment_power_of_a_mean_metric(app: typer.Typer) -> None:
    code, out = run(app, "experiment", "power", "--sd", "10", "--mde", "1", "--arms", "3", "--json")
    assert code == 0
    # 2·(z₀.₉₇₅ + z₀.₈)²·σ²/δ² = 2·(1.95996 + 0.84162)²·100 = 1569.8 per arm.
    z = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.8)
    assert out == {
        "sd": 10.0,
        "mde": 1.0,
        "alpha": 0.05,
        "power": 0.8,
        "n_per_arm": math.ceil(2 * (z * 10 / 1) ** 2),
        "n_total": 3 * 1570,
    }
    code, out = run(app, "experiment", "power", "--sd", "10", "--mde", "1", "--relative", "--json")
    assert code == 2 and out == {"error": "relative: needs --baseline"}
    code, out = run(app, "experiment", "power", "--mde", "1", "--json")
    assert code == 2 and str(out["error"]).startswith("baseline: give --baseline")


def test_experiment_mde_inverts_the_sample_size(app: typer.Typer) -> None:
    # The textbook 3,841 per arm for 10 % → 12 % (Fleiss, α = 0.05 two-sided, 80 % power).
    code, out = run(app, "experiment", "mde", "--n-per-arm", "3841", "--baseline", "0.1", "--json")
    assert code == 0
    assert set(out) == {"baseline", "n_per_arm", "alpha", "power", "mde", "relative_mde"}
    mde = float(out["mde"])  # type: ignore[arg-type]
    assert mde == pytest.approx(0.02, rel=1e-3)
    assert out["relative_mde"] == pytest.approx(mde / 0.1)
    # At that rise the normal-approximation power is exactly the 80 % asked for.
    p1, p2, norm = 0.1, 0.1 + mde, NormalDist()
    p_bar = (p1 + p2) / 2
    z = (mde * math.sqrt(3841) - norm.inv_cdf(0.975) * math.sqrt(2 * p_bar * (1 - p_bar))) / (
        math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    )
    assert norm.cdf(z) == pytest.approx(0.8, abs=1e-9)

    code, out = run(app, "experiment", "mde", "--n-per-arm", "1570", "--sd", "10", "--json")
    assert code == 0
    z_sum = norm.inv_cdf(0.975) + norm.inv_cdf(0.8)
    assert out == {
        "sd": 10.0,
        "n_per_arm": 1570,
        "alpha": 0.05,
        "power": 0.8,
        "mde": pytest.approx(z_sum * 10 * math.sqrt(2 / 1570), rel=1e-12),
    }
    assert float(out["mde"]) <= 1.0  # type: ignore[arg-type]  # 1,570 detect the planned 1.0
    code, out = run(app, "experiment", "mde", "--n-per-arm", "1", "--sd", "3", "--json")
    assert code == 2 and out == {"error": "n_per_arm: must be at least 2"}


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
