from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.models.bandits import ThompsonBandit
from tools.models.clv import BgNbdParams, GammaGammaParams
from tools.models.errors import ModelInputError
from tools.models.registry import ClvArtifact, ModelRefused, ModelRegistry


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
    import hashlib

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
