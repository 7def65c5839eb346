from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import joblib
import numpy as np
import pytest
from pydantic import ValidationError

from tools.models.bandits import ThompsonBandit
from tools.models.clv import BgNbdParams, GammaGammaParams
from tools.models.errors import ModelInputError
from tools.models.registry import ClvArtifact, ModelRefused, ModelRegistry
from tools.models.uplift import TLearner, UpliftModel


def _clv(r: float) -> ClvArtifact:
    return ClvArtifact(
        bgnbd=BgNbdParams(r=r, alpha=4.4, a=0.79, b=2.4),
        gamma_gamma=GammaGammaParams(p=6.25, q=3.74, v=15.44),
    )


def _two_promoted(tmp_path: Path) -> ModelRegistry:
    reg = ModelRegistry(tmp_path)
    for r in (0.1, 0.2):
        meta = reg.register(
            "clv",
            "clv",
            _clv(r),
            training_end="1997-09-30",
            metrics={"log_likelihood": -9582.4},
            features=["x", "t_x", "T"],
        )
        reg.promote("clv", meta.version)
    return reg


def test_register_promote_rollback(tmp_path: Path) -> None:
    reg = _two_promoted(tmp_path)
    meta, artifact = reg.serving("clv")
    assert meta.version == "v2" and isinstance(artifact, ClvArtifact)
    assert artifact.bgnbd.r == 0.2
    assert meta.metrics == {"log_likelihood": -9582.4} and meta.training_end == "1997-09-30"
    assert len(meta.sha256) == 64
    assert reg.rollback("clv").version == "v1"
    assert reg.serving("clv")[0].version == "v1"
    assert [e.serving for e in reg.entries("clv")] == [True, False]


def test_tampered_artifact_is_refused_and_the_previous_version_keeps_serving(
    tmp_path: Path,
) -> None:
    reg = _two_promoted(tmp_path)
    path = tmp_path / "clv" / "v2" / "artifact.json"
    path.write_text(path.read_text().replace("0.2", "9.9"))
    with pytest.raises(ModelRefused, match=r"^artifact: clv v2: checksum mismatch"):
        reg.load("clv", "v2")
    meta, artifact = reg.serving("clv")
    assert meta.version == "v1" and isinstance(artifact, ClvArtifact)
    bad = [e for e in reg.entries("clv") if not e.valid]
    assert [e.metadata.version for e in bad] == ["v2"]


def test_artifact_failing_its_schema_cannot_be_promoted(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    meta = reg.register("clv", "clv", _clv(0.3))
    folder = tmp_path / "clv" / meta.version
    # A consistent checksum over a payload of the wrong shape: only the schema check catches it.
    text = json.dumps({"bgnbd": {"r": 1.0}})
    (folder / "artifact.json").write_text(text)
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["sha256"] = hashlib.sha256(text.encode()).hexdigest()
    (folder / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ModelRefused, match=r"schema check failed"):
        reg.promote("clv", meta.version)
    with pytest.raises(ModelInputError, match=r"^name: clv has no promoted version"):
        reg.serving("clv")


def test_bandit_state_is_a_registrable_artifact(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    bandit = ThompsonBandit.create(["a", "b"], segments=2)
    meta = reg.register("offer-bandit", "bandit", bandit.state)
    reg.promote("offer-bandit", meta.version)
    restored = reg.serving("offer-bandit")[1]
    assert restored == bandit.state


def test_bad_input_names_the_field(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    with pytest.raises(ModelInputError, match=r"^name: use lower-case"):
        reg.register("Bad Name", "clv", _clv(0.1))
    with pytest.raises(ModelInputError, match=r"^kind: unknown artifact kind"):
        reg.register("clv", "pickle", _clv(0.1))
    with pytest.raises(ModelInputError, match=r"^name: clv has no earlier promoted version"):
        reg.rollback("clv")


def _uplift(
    seed: int, arms: tuple[str, ...] = ("holdout", "ten_off@email", "ten_off@push")
) -> UpliftModel:
    rng = np.random.default_rng(seed)
    n = 200 * len(arms)
    x = rng.normal(size=(n, 2))
    arm = np.arange(n) % len(arms)
    y = (rng.random(n) < 0.1 + 0.05 * arm * (x[:, 0] > 0)).astype(float)
    learner = TLearner(len(arms), seed=seed, max_iter=5).fit(x, arm, y)
    return UpliftModel(arms=list(arms), features=["recency", "history"], learner=learner)


def _forge(folder: Path, payload: object) -> None:
    """Replace a version's artifact.joblib with `payload`, checksum updated to match: only the
    type checks after unpickling can refuse it."""
    buffer = io.BytesIO()
    joblib.dump(payload, buffer)
    (folder / "artifact.joblib").write_bytes(buffer.getvalue())
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    (folder / "metadata.json").write_text(json.dumps(metadata))


def test_uplift_model_round_trip(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    model = _uplift(1)
    meta = reg.register("uplift.winback", "uplift", model, metrics={"rows": 600.0})
    assert meta.kind == "uplift" and meta.features == ["recency", "history"]
    raw = (tmp_path / "uplift.winback" / "v1" / "artifact.joblib").read_bytes()
    assert meta.sha256 == hashlib.sha256(raw).hexdigest()
    assert not (tmp_path / "uplift.winback" / "v1" / "artifact.json").exists()
    reg.promote("uplift.winback", "v1")
    served_meta, served = reg.serving("uplift.winback")
    assert served_meta.version == "v1" and isinstance(served, UpliftModel)
    assert served.arms == model.arms and served.features == model.features
    x = np.random.default_rng(2).normal(size=(50, 2))
    expected = model.predict_outcomes(x)
    assert expected.shape == (50, 3) and np.ptp(expected) > 0
    np.testing.assert_array_equal(served.predict_outcomes(x), expected)
    np.testing.assert_array_equal(served.predict_uplift(x), expected[:, 1:] - expected[:, :1])
    with pytest.raises(ModelInputError, match=r"^X: expected \(n, 2\) feature rows"):
        served.predict_outcomes(np.zeros((3, 4)))
    assert [(e.metadata.kind, e.valid, e.serving) for e in reg.entries("uplift.winback")] == [
        ("uplift", True, True)
    ]


def test_tampered_uplift_artifact_is_refused_unread_and_the_previous_version_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = ModelRegistry(tmp_path)
    for seed in (1, 2):
        reg.promote(
            "uplift.winback", reg.register("uplift.winback", "uplift", _uplift(seed)).version
        )
    path = tmp_path / "uplift.winback" / "v2" / "artifact.joblib"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    unpickled: list[object] = []
    real_load = joblib.load
    monkeypatch.setattr(joblib, "load", lambda f, *a, **k: unpickled.append(f) or real_load(f))
    with pytest.raises(ModelRefused, match=r"^artifact: uplift.winback v2: checksum mismatch"):
        reg.load("uplift.winback", "v2")
    assert unpickled == []  # the tampered bytes never reached the unpickler
    meta, artifact = reg.serving("uplift.winback")
    assert meta.version == "v1" and isinstance(artifact, UpliftModel)
    assert len(unpickled) == 1
    bad = [e.metadata.version for e in reg.entries("uplift.winback") if not e.valid]
    assert bad == ["v2"]
    with pytest.raises(ModelRefused, match=r"checksum mismatch"):
        reg.promote("uplift.winback", "v2")
    assert reg.rollback("uplift.winback").version == "v1"


def test_uplift_artifact_of_the_wrong_type_or_arm_count_is_refused(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    good = _uplift(1)
    reg.promote("uplift.winback", reg.register("uplift.winback", "uplift", good).version)
    wrong_type = reg.register("uplift.winback", "uplift", _uplift(2))
    _forge(tmp_path / "uplift.winback" / wrong_type.version, good.learner)  # a bare TLearner
    with pytest.raises(ModelRefused, match=r"^artifact: uplift.winback v2: is a TLearner, not an"):
        reg.promote("uplift.winback", wrong_type.version)
    # Unpickling skips pydantic's validators, so the arm count is checked again after loading.
    two_arms = _uplift(3, arms=("holdout", "ten_off@email"))
    mislabelled = UpliftModel.model_construct(
        arms=["holdout", "ten_off@email", "ten_off@push"],
        features=two_arms.features,
        learner=two_arms.learner,
    )
    wrong_arms = reg.register("uplift.winback", "uplift", _uplift(4))
    _forge(tmp_path / "uplift.winback" / wrong_arms.version, mislabelled)
    with pytest.raises(ModelRefused, match=r"v3: learner has 2 arms but 3 arm names"):
        reg.load("uplift.winback", wrong_arms.version)
    assert reg.serving("uplift.winback")[0].version == "v1"
    assert [e.valid for e in reg.entries("uplift.winback")] == [True, False, False]
    with pytest.raises(ModelInputError, match=r"^artifact: learner has 2 arms but 3 arm names"):
        reg.register("uplift.winback", "uplift", mislabelled)
    with pytest.raises(ModelInputError, match=r"^artifact: an uplift artifact must be an Uplift"):
        reg.register("uplift.winback", "uplift", _clv(0.1))
    with pytest.raises(ModelInputError, match=r"^artifact: a clv artifact must be a ClvArtifact"):
        reg.register("clv", "clv", good)
    with pytest.raises(ModelInputError, match=r"^features: must equal the uplift model's"):
        reg.register("uplift.winback", "uplift", good, features=["recency"])
    with pytest.raises(ValidationError, match=r"learner: has 2 arms but 3 arm names"):
        UpliftModel(arms=["a", "b", "c"], features=["x", "y"], learner=two_arms.learner)
    assert reg.versions("uplift.winback") == ["v1", "v2", "v3"]  # refusals stored nothing
