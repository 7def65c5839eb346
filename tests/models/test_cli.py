from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from liftloop.cli.models import register
from liftloop.db import make_engine
from tests.audit_support import audit_for
from tools.models.registry import ModelRegistry
from tools.models.uplift import TLearner, UpliftModel


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_clv_fit_json_has_exactly_the_documented_shape(data_file: Callable[[str], Path]) -> None:
    result = CliRunner().invoke(
        _app(),
        ["clv", "fit", "--transactions", str(data_file("lifetimes_CDNOW_sample.txt")), "--json"],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == {
        "model",
        "params",
        "log_likelihood",
        "customers",
        "gamma_gamma",
        "warnings",
    }
    assert payload["model"] == "bgnbd"
    assert set(payload["params"]) == {"r", "alpha", "a", "b"}
    assert set(payload["gamma_gamma"]) == {"p", "q", "v"}
    assert round(payload["params"]["r"], 3) == 0.243
    assert payload["customers"] == 2357
    assert payload["warnings"][0].startswith("21 identical rows kept: line 403")


def test_clv_fit_csv_with_calibration_end_and_bad_rows(tmp_path: Path) -> None:
    rows = ["customer_id,date,amount"]
    for c in range(30):
        for k in range(c % 4 + 1):
            rows.append(f"c{c},2024-0{k + 1}-1{c % 9},{10 + c + k}")
    rows += ["c1,2024-13-01,5", "c2,2024-01-02,-3"]
    path = tmp_path / "tx.csv"
    path.write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(
        _app(),
        [
            "clv",
            "fit",
            "--transactions",
            str(path),
            "--format",
            "csv",
            "--calibration-end",
            "2024-06-30",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["customers"] == 30
    assert payload["warnings"][0].startswith("2 rows excluded: line 75")


def test_clv_fit_bad_input_is_one_json_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        _app(), ["clv", "fit", "--transactions", str(tmp_path / "missing.txt"), "--json"]
    )
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"error": "transactions: file not found: missing.txt"}


def test_ope_on_open_bandit_logs(data_file: Callable[[str], Path]) -> None:
    result = CliRunner().invoke(
        _app(),
        [
            "ope",
            "--logs",
            str(data_file("obd_random_all.csv")),
            "--policy",
            str(data_file("obd_bts_all.csv")),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["rounds"] == 10000
    assert set(payload["estimates"]) == {"ipw", "snipw", "dm", "dr"}
    assert payload["on_policy_value"] == 0.0042
    assert payload["relative_error"]["dr"] < 0.5


def test_ope_on_a_decision_log_with_a_uniform_policy(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    lines = [
        json.dumps({"context": 0, "action": i % 2, "reward": float(i % 2), "propensity": 0.5})
        for i in range(100)
    ]
    path.write_text("\n".join(lines))
    result = CliRunner().invoke(
        _app(), ["ope", "--logs", str(path), "--policy", "uniform", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["estimates"]["ipw"]["value"] == 0.5


def test_models_train_list_promote_rollback(
    data_file: Callable[[str], Path], tmp_path: Path
) -> None:
    app = _app()
    runner = CliRunner()
    tx = str(data_file("lifetimes_CDNOW_sample.txt"))
    reg = ["--registry", str(tmp_path)]
    for _ in range(2):
        res = runner.invoke(
            app, ["models", "train", "--transactions", tx, "--promote", *reg, "--json"]
        )
        assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["version"] == "v2"
    res = runner.invoke(app, ["models", "rollback", "clv", *reg, "--json"])
    assert json.loads(res.stdout) == {"name": "clv", "serving": "v1"}
    res = runner.invoke(app, ["models", "promote", "clv", "v2", *reg, "--json"])
    assert json.loads(res.stdout) == {"name": "clv", "serving": "v2"}
    res = runner.invoke(app, ["models", "list", *reg, "--json"])
    models = json.loads(res.stdout)["models"]
    assert [(m["version"], m["serving"]) for m in models] == [("v1", False), ("v2", True)]
    assert models[0]["training_start"] == "1997-01-01"
    res = runner.invoke(app, ["models", "promote", "clv", "v9", *reg, "--json"])
    assert res.exit_code == 2
    assert json.loads(res.stdout)["error"].startswith("version: clv has no version v9")


def test_models_list_shows_uplift_versions(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    arm = np.arange(400) % 2
    learner = TLearner(2, max_iter=5).fit(x, arm, (rng.random(400) < 0.2).astype(float))
    model = UpliftModel(arms=["holdout", "ten_off@email"], features=["a", "b"], learner=learner)
    registry = ModelRegistry(tmp_path)
    registry.promote("uplift.winback", registry.register("uplift.winback", "uplift", model).version)
    registry.register("uplift.winback", "uplift", model)
    (tmp_path / "uplift.winback" / "v2" / "artifact.joblib").write_bytes(b"not a pickle")
    runner, app = CliRunner(), _app()
    res = runner.invoke(app, ["models", "list", "--registry", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    rows = [
        (m["name"], m["version"], m["kind"], m["serving"], m["valid"], m["features"])
        for m in json.loads(res.stdout)["models"]
    ]
    assert rows == [
        ("uplift.winback", "v1", "uplift", True, True, ["a", "b"]),
        ("uplift.winback", "v2", "uplift", False, False, ["a", "b"]),
    ]
    res = runner.invoke(app, ["models", "list", "--registry", str(tmp_path)])
    assert res.stdout.splitlines() == [
        "* uplift.winback v1 uplift None",
        "! uplift.winback v2 uplift None",
    ]


def _predictions(path: Path) -> dict[str, dict[str, float]]:
    with path.open(newline="") as handle:
        return {
            r.pop("customer_id"): {k: float(v) for k, v in r.items()}
            for r in csv.DictReader(handle)
        }


def test_clv_predict_writes_the_reference_figures_per_customer(
    data_file: Callable[[str], Path], tmp_path: Path
) -> None:
    tx = str(data_file("lifetimes_CDNOW_sample.txt"))
    out = tmp_path / "predictions.csv"
    # lifetimes values a "W" month at 4.345 weeks; with the same period the CLVs must agree.
    args = ["--period-weeks", "4.345", "--horizon-weeks", "39", "--json"]
    res = CliRunner().invoke(
        _app(), ["clv", "predict", "--transactions", tx, "--out", str(out), *args]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["customers"] == 2357 and summary["file"] == str(out)
    assert round(summary["params"]["r"], 3) == 0.243
    rows = _predictions(out)
    assert len(rows) == 2357
    # Customer 1 of the sample (x=2, t_x=30.43, T=38.86): P(alive) and the purchases expected in
    # 39 weeks as lifetimes 0.11.3 gives them at the fitted parameters (tests/models/test_clv.py).
    first = rows["00004"]
    assert (first["x"], round(first["t_x"], 2), round(first["T"], 2)) == (2.0, 30.43, 38.86)
    assert first["probability_alive"] == pytest.approx(0.72662, abs=1e-4)
    assert first["expected_purchases"] == pytest.approx(1.22599, abs=1e-4)
    assert summary["clv"] == pytest.approx(sum(r["clv"] for r in rows.values()))

    # Every customer against the reference implementation itself.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lifetimes = pytest.importorskip("lifetimes")
        import pandas as pd

        frame = pd.DataFrame.from_dict(rows, orient="index")
        bgf = lifetimes.BetaGeoFitter()
        bgf.params_ = pd.Series(summary["params"])
        bgf.predict = bgf.conditional_expected_number_of_purchases_up_to_time
        ggf = lifetimes.GammaGammaFitter()
        ggf.params_ = pd.Series(summary["gamma_gamma"])
        x, t_x, T = frame["x"], frame["t_x"], frame["T"]
        alive = bgf.conditional_probability_alive(x, t_x, T)
        expected = bgf.conditional_expected_number_of_purchases_up_to_time(39, x, t_x, T)
        clv = ggf.customer_lifetime_value(
            bgf, x, t_x, T, frame["mean_value"], time=12, discount_rate=0.01, freq="W"
        )
    np.testing.assert_allclose(frame["probability_alive"], alive, rtol=1e-9)
    np.testing.assert_allclose(frame["expected_purchases"], expected, rtol=1e-9)
    np.testing.assert_allclose(frame["clv"], clv, rtol=1e-9)


def test_clv_predict_with_the_serving_model_and_bad_input(
    data_file: Callable[[str], Path], tmp_path: Path
) -> None:
    app, runner = _app(), CliRunner()
    tx = str(data_file("lifetimes_CDNOW_sample.txt"))
    reg = ["--registry", str(tmp_path / "models")]
    fitted, served = tmp_path / "fitted.csv", tmp_path / "served.csv"
    res = runner.invoke(app, ["models", "train", "--transactions", tx, "--promote", *reg])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["clv", "predict", "--transactions", tx, "--out", str(fitted)])
    assert res.exit_code == 0, res.output
    use_clv = ["--model", "clv", *reg, "--json"]
    res = runner.invoke(
        app, ["clv", "predict", "--transactions", tx, "--out", str(served), *use_clv]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["model"] == "clv:v1"
    # The registered model is the one `models train` fitted on the same calibration period.
    assert served.read_text() == fitted.read_text()

    def error(*args: str) -> dict[str, str]:
        res = runner.invoke(app, ["clv", "predict", "--transactions", tx, *args, "--json"])
        assert res.exit_code == 2, res.output
        return dict(json.loads(res.stdout))

    out = ["--out", str(tmp_path / "p.csv")]
    assert error(*out, "--margin", "0") == {"error": "margin: must be positive"}
    assert error(*out, "--model", "nope", *reg)["error"].startswith("model: nope has no promoted")
    assert error("--out", str(tmp_path / "no" / "p.csv"))["error"].startswith("out: ")


def _psi(reference: list[float], current: list[float]) -> float:
    """PSI written out: decile bins of the reference, shares floored at 1e-4."""
    ref, cur = np.sort(reference), np.asarray(current)
    edges = np.unique(np.quantile(ref, [i / 10 for i in range(1, 10)]))
    total = 0.0
    for k in range(edges.size + 1):
        low = -np.inf if k == 0 else edges[k - 1]
        high = np.inf if k == edges.size else edges[k]
        p = max(float(((ref >= low) & (ref < high)).mean()), 1e-4)
        q = max(float(((cur >= low) & (cur < high)).mean()), 1e-4)
        total += (q - p) * np.log(q / p)
    return total


def test_models_drift_against_the_serving_models_training_window(tmp_path: Path) -> None:
    from datetime import date, timedelta

    from liftloop.retraining import RetrainingActivities
    from tools.models.retraining import RetrainInput

    # 300 customers buy every 7 to 13 days from January to March 2024 and then stop: by the end
    # of June their purchase rate has halved, what they spend per order has not changed.
    rows = ["customer_id,date,amount"]
    rate: dict[str, list[float]] = {}
    ends = {"reference": date(2024, 3, 31), "current": date(2024, 6, 30)}
    for c in range(300):
        first, gap = date(2024, 1, 1) + timedelta(days=c % 10), 7 + c % 7
        days = [first + timedelta(days=gap * k) for k in range(99)]
        days = [d for d in days if d <= ends["reference"]]
        rows += [f"c{c},{d.isoformat()},{10 + c % 50}" for d in days]
        for window, end in ends.items():
            rate.setdefault(window, []).append((len(days) - 1) / ((end - first).days / 7))
    path = tmp_path / "tx.csv"
    path.write_text("\n".join(rows) + "\n")
    app, runner = _app(), CliRunner()
    reg = ["--registry", str(tmp_path / "models")]
    csv_file = ["--transactions", str(path), "--format", "csv"]
    res = runner.invoke(
        app, ["models", "train", *csv_file, "--calibration-end", "2024-03-31", "--promote", *reg]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app, ["models", "drift", *csv_file, "--calibration-end", "2024-06-30", *reg, "--json"]
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["model"] == "clv:v1" and report["drifted"] is True
    assert (report["reference_end"], report["current_end"]) == ("2024-03-31", "2024-06-30")
    features = report["features"]
    assert features["purchase_rate"]["psi"] == pytest.approx(
        _psi(rate["reference"], rate["current"]), rel=1e-9
    )
    assert features["purchase_rate"]["status"] == "drifted"
    assert features["repeat_value"] == {"psi": pytest.approx(0.0, abs=1e-12), "status": "stable"}
    # The figures the retraining workflow decides on.
    check = RetrainingActivities(
        ModelRegistry(tmp_path / "models"), tmp_path, audit_for(make_engine("sqlite://"))
    ).check_drift(RetrainInput(transactions="tx.csv", format="csv", calibration_end="2024-06-30"))
    assert check.drifted and check.psi == {k: v["psi"] for k, v in features.items()}

    res = runner.invoke(app, ["models", "drift", *csv_file, "--name", "other", *reg, "--json"])
    assert res.exit_code == 2
    assert json.loads(res.stdout)["error"].startswith("name: other has no promoted version")
