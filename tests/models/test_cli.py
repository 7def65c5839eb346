from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import typer
from typer.testing import CliRunner

from liftloop.cli.models import register
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
