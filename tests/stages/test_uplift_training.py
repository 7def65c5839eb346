"""The measure stage's uplift training under `experiment.policy: nba` (`train_uplift`): the model
it serves, and the evaluation it registers with it, as `liftloop models list` shows it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from liftloop.cli import app
from liftloop.loop import next_best_action
from liftloop.loop.next_best_action import (
    FEATURES,
    PROFILE_SEGMENTS,
    History,
    residual_posterior,
    train_uplift,
)
from tests.stages.helpers import CycleRefBuilder
from tools.models.registry import ModelRegistry
from tools.models.uplift import TLearner

READY = ("content@email", "ten_off@email")  # enough people for an outcome model each
FEW = "ten_off@push"  # fewer than MIN_ARM_ROWS: left out of the model


def _history(n: int = 4000, seed: int = 11) -> tuple[History, np.ndarray]:
    """Measured decisions of two cycles: a 30 % holdout, two arms, a few of a third. The
    content e-mail works on recent buyers, the discount on everyone a little."""
    rng = np.random.default_rng(seed)
    segment = rng.integers(0, len(PROFILE_SEGMENTS), n)
    recency = rng.uniform(1, 12, n)
    history_usd = rng.gamma(2.0, 100.0, n)
    x = np.column_stack([segment == 0, segment == 1, segment == 2, recency, history_usd])
    arm = rng.choice(["holdout", *READY, FEW], n, p=[0.3, 0.33, 0.33, 0.04])
    rate = 0.02 + np.where(arm == READY[0], 0.12 * (recency < 4), 0.0)
    rate += np.where(arm == READY[1], 0.03, 0.0)
    orders = (rng.random(n) < rate).astype(int)
    rows = [
        (
            1 + i % 2,
            f"p{i}",
            PROFILE_SEGMENTS[segment[i]],
            arm[i],
            arm[i] == "holdout",
            "" if arm[i] == "holdout" else arm[i].split("@")[0],
            int(orders[i]),
            float(orders[i]) * 12.0,
        )
        for i in range(n)
    ]
    history = History(conn=None, rows=rows)  # type: ignore[arg-type]
    history.__dict__["x"] = x.astype(float)  # the cached features: no CDP needed
    return history, orders.astype(float)


def _qini(score: np.ndarray, treated: np.ndarray, y: np.ndarray) -> float:
    """The Qini coefficient written out: the area between the gain curve of targeting by score
    (treated outcome minus control outcome scaled to the treated count) and the line of
    random targeting, trapezoid by trapezoid, per person."""
    order = sorted(range(score.size), key=lambda i: -score[i])
    gains, n_t, n_c, y_t, y_c = [0.0], 0, 0, 0.0, 0.0
    for i in order:
        if treated[i]:
            n_t, y_t = n_t + 1, y_t + y[i]
        else:
            n_c, y_c = n_c + 1, y_c + y[i]
        gains.append(y_t - (y_c * n_t / n_c if n_c else 0.0))
    n = score.size
    diffs = [g - (k / n) * gains[-1] for k, g in enumerate(gains)]
    return sum((diffs[k] + diffs[k + 1]) / 2 / n for k in range(n)) / n


def test_train_uplift_registers_its_evaluation(cycle_ref: CycleRefBuilder, tmp_path: Path) -> None:
    ref = cycle_ref(cycle=2, experiment={"policy": "nba"})
    history, y = _history()
    registry = ModelRegistry(tmp_path / "models")
    version, model, metrics = train_uplift(history, ref, registry)
    assert version == f"uplift.{ref.campaign_id}:v1" and model is not None
    assert model.arms == ["holdout", *READY]

    # The served model is the T-learner the stage always fitted: same rows, seed and leaves.
    arms = np.array([r[3] for r in history.rows])
    keep = np.isin(arms, model.arms)
    column = np.array([model.arms.index(a) for a in arms[keep]])
    x = history.x[keep]
    alone = TLearner(3, seed=ref.cycle, min_events_per_leaf=20).fit(x, column, y[keep])
    assert np.array_equal(model.predict_outcomes(x), alone.predict_outcomes(x))

    res = CliRunner().invoke(
        app, ["models", "list", "--registry", str(tmp_path / "models"), "--json"]
    )
    assert res.exit_code == 0, res.output
    (entry,) = json.loads(res.stdout)["models"]
    assert (entry["name"], entry["version"], entry["serving"]) == (
        f"uplift.{ref.campaign_id}",
        "v1",
        True,
    )
    shown: dict[str, Any] = entry["metrics"]
    assert shown == pytest.approx(metrics)
    uplift = model.predict_uplift(x)
    for k, name in enumerate(READY, start=1):
        sel = (column == 0) | (column == k)
        treated, out = column[sel] == k, y[keep][sel]
        a, b = out[treated], out[~treated]
        diff = a.mean() - b.mean()
        half = 1.959963984540054 * math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
        assert shown[f"observed_uplift.{name}"] == pytest.approx(diff, rel=1e-12)
        assert shown[f"observed_uplift.{name}.ci_low"] == pytest.approx(diff - half, rel=1e-12)
        assert shown[f"observed_uplift.{name}.ci_high"] == pytest.approx(diff + half, rel=1e-12)
        assert shown[f"predicted_uplift.{name}"] == pytest.approx(uplift[sel, k - 1].mean())
        score = uplift[sel, k - 1]
        assert shown[f"qini_in_sample.{name}"] == pytest.approx(
            _qini(score, treated, out), rel=1e-9
        )
    # Both arms work; the content e-mail only on recent buyers, which the ranking finds.
    assert shown["observed_uplift.content@email.ci_low"] > 0
    assert shown["qini_in_sample.content@email"] > shown["qini_in_sample.ten_off@email"] > 0
    assert not any(FEW in key for key in shown)
    assert set(FEATURES) == set(entry["features"])


def test_residual_posterior_is_the_same_whatever_the_scoring_blocks(
    cycle_ref: CycleRefBuilder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = cycle_ref(cycle=2, experiment={"policy": "nba"})
    history, _ = _history()
    _, model, metrics = train_uplift(history, ref, ModelRegistry(tmp_path / "models"))
    one_block = residual_posterior(history, ref.spec, model, metrics["order_value"])
    monkeypatch.setattr(next_best_action, "SCORE_CHUNK", 7)
    blocks = residual_posterior(history, ref.spec, model, metrics["order_value"])
    assert blocks.state == one_block.state
    assert one_block.state.cycle == 1  # it learnt from the measured decisions
