"""A file-based model registry: versioned artifacts with metadata (training window, metrics,
features, sha256), promotion and rollback.

Layout under the root: `<name>/<version>/artifact.json` (kinds "clv" and "bandit") or
`<name>/<version>/artifact.joblib` (kind "uplift": a pickled `UpliftModel`),
`<name>/<version>/metadata.json` and `<name>/promotions.json` (the promotion history; its last
entry is serving). A version whose artifact fails its checksum or its kind's checks is refused:
it cannot be promoted, and if the serving one goes bad the latest earlier good promotion keeps
serving. Pickled bytes are unpickled only after their checksum matched.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tools.models.bandits import BanditState
from tools.models.clv import BgNbdParams, GammaGammaParams
from tools.models.errors import ModelInputError

if TYPE_CHECKING:
    from tools.models.uplift import UpliftModel

tracer = trace.get_tracer("liftloop.models")

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
SCHEMA_VERSION = 1


class ClvArtifact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    bgnbd: BgNbdParams
    gamma_gamma: GammaGammaParams


ARTIFACT_SCHEMAS: dict[str, type[BaseModel]] = {"clv": ClvArtifact, "bandit": BanditState}
# Kinds stored with joblib rather than as JSON. Their modules (scikit-learn, joblib) load only
# when such a version is registered or read: importing scikit-learn takes seconds.
PICKLED_KINDS = frozenset({"uplift"})
KINDS = frozenset(ARTIFACT_SCHEMAS) | PICKLED_KINDS


def _artifact_file(kind: str) -> str:
    return "artifact.joblib" if kind in PICKLED_KINDS else "artifact.json"


class ModelMetadata(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    name: str
    version: str
    kind: str
    created_at: datetime
    training_start: str | None = None
    training_end: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    features: list[str] = Field(default_factory=list)
    sha256: str


class RegistryEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    metadata: ModelMetadata
    serving: bool
    valid: bool
    problem: str | None = None


class ModelRefused(ModelInputError):
    """An artifact failed its checksum or schema."""


def _write_atomic(path: Path, text: str) -> None:
    _write_bytes_atomic(path, text.encode("utf-8"))


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _uplift_type() -> type[UpliftModel]:
    from tools.models.uplift import UpliftModel

    return UpliftModel


def _serialise(kind: str, artifact: BaseModel) -> bytes:
    """The artifact's bytes as stored; refuses an artifact of the wrong type for its kind."""
    if kind not in KINDS:
        raise ModelInputError("kind", f"unknown artifact kind {kind!r}")
    if kind == "uplift":
        uplift_model = _uplift_type()
        if not isinstance(artifact, uplift_model):
            raise ModelInputError("artifact", "an uplift artifact must be an UpliftModel")
        problem = artifact.problem()
        if problem is not None:
            raise ModelInputError("artifact", problem)
        import joblib

        buffer = io.BytesIO()
        joblib.dump(artifact, buffer)
        return buffer.getvalue()
    schema = ARTIFACT_SCHEMAS[kind]
    if not isinstance(artifact, schema):
        raise ModelInputError("artifact", f"a {kind} artifact must be a {schema.__name__}")
    return artifact.model_dump_json().encode("utf-8")


def _deserialise(kind: str, raw: bytes, where: str) -> BaseModel:
    """The artifact from bytes whose checksum has already been verified."""
    if kind == "uplift":
        import joblib

        try:
            loaded = joblib.load(io.BytesIO(raw))
        except Exception as exc:  # an unpickling failure can raise almost anything
            raise ModelRefused("artifact", f"{where}: cannot be unpickled") from exc
        uplift_model = _uplift_type()
        if not isinstance(loaded, uplift_model):
            raise ModelRefused(
                "artifact", f"{where}: is a {type(loaded).__name__}, not an UpliftModel"
            )
        problem = loaded.problem()
        if problem is not None:
            raise ModelRefused("artifact", f"{where}: {problem}")
        return loaded
    try:
        return ARTIFACT_SCHEMAS[kind].model_validate_json(raw)
    except ValidationError as exc:
        raise ModelRefused("artifact", f"{where}: schema check failed") from exc


class ModelRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, name: str) -> Path:
        if not NAME_PATTERN.match(name):
            raise ModelInputError("name", "use lower-case letters, digits, '_', '.', '-'")
        return self.root / name

    def versions(self, name: str) -> list[str]:
        base = self._dir(name)
        if not base.is_dir():
            return []
        found = [p.name for p in base.iterdir() if p.is_dir() and re.fullmatch(r"v\d+", p.name)]
        return sorted(found, key=lambda v: int(v[1:]))

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def register(
        self,
        name: str,
        kind: str,
        artifact: BaseModel,
        *,
        training_start: str | None = None,
        training_end: str | None = None,
        metrics: dict[str, float] | None = None,
        features: list[str] | None = None,
    ) -> ModelMetadata:
        """Store a new version (not yet serving). An "uplift" artifact is an UpliftModel; its
        metadata features default to the model's and must equal them if given."""
        payload = _serialise(kind, artifact)
        if kind == "uplift":
            model_features = list(getattr(artifact, "features", []))
            if features is not None and list(features) != model_features:
                raise ModelInputError("features", "must equal the uplift model's features")
            features = model_features
        with tracer.start_as_current_span("models.registry.register") as span:
            base = self._dir(name)
            existing = self.versions(name)
            version = f"v{int(existing[-1][1:]) + 1 if existing else 1}"
            folder = base / version
            folder.mkdir(parents=True, exist_ok=False)
            _write_bytes_atomic(folder / _artifact_file(kind), payload)
            meta = ModelMetadata(
                name=name,
                version=version,
                kind=kind,
                created_at=datetime.now(UTC),
                training_start=training_start,
                training_end=training_end,
                metrics=metrics or {},
                features=features or [],
                sha256=hashlib.sha256(payload).hexdigest(),
            )
            _write_atomic(folder / "metadata.json", meta.model_dump_json(indent=2))
            span.set_attribute("models.name", name)
            span.set_attribute("models.version", version)
            span.set_attribute("models.kind", kind)
            return meta

    def metadata(self, name: str, version: str) -> ModelMetadata:
        path = self._dir(name) / version / "metadata.json"
        if not path.is_file():
            raise ModelInputError("version", f"{name} has no version {version}")
        try:
            return ModelMetadata.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as exc:
            raise ModelRefused("metadata", f"{name} {version}: schema check failed") from exc

    def load(self, name: str, version: str) -> BaseModel:
        """The artifact of one version, verified against its checksum, then its kind's schema
        (JSON) or type and arm count (uplift). Pickled bytes are unpickled only once verified."""
        meta = self.metadata(name, version)
        where = f"{name} {version}"
        if meta.schema_version != SCHEMA_VERSION:
            raise ModelRefused("metadata", f"{where}: unsupported schema version")
        if meta.kind not in KINDS:
            raise ModelRefused("artifact", f"{where}: unknown kind {meta.kind!r}")
        path = self._dir(name) / version / _artifact_file(meta.kind)
        try:
            raw = path.read_bytes()
        except FileNotFoundError as exc:
            raise ModelRefused("artifact", f"{where}: {path.name} is missing") from exc
        if hashlib.sha256(raw).hexdigest() != meta.sha256:
            raise ModelRefused("artifact", f"{where}: checksum mismatch")
        # Deserialise the bytes that were hashed, not a second read of the file.
        return _deserialise(meta.kind, raw, where)

    def _history(self, name: str) -> list[str]:
        path = self._dir(name) / "promotions.json"
        if not path.is_file():
            return []
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        return [str(v) for v in data]

    def _set_history(self, name: str, history: list[str]) -> None:
        _write_atomic(self._dir(name) / "promotions.json", json.dumps(history))

    def promote(self, name: str, version: str) -> ModelMetadata:
        """Make a verified version the serving one; a bad artifact is refused."""
        with tracer.start_as_current_span("models.registry.promote") as span:
            span.set_attribute("models.name", name)
            span.set_attribute("models.version", version)
            self.load(name, version)
            history = self._history(name)
            if not history or history[-1] != version:
                self._set_history(name, [*history, version])
            return self.metadata(name, version)

    def rollback(self, name: str) -> ModelMetadata:
        """Stop serving the current version and serve the previous good promotion again."""
        with tracer.start_as_current_span("models.registry.rollback") as span:
            history = self._history(name)
            if len(history) < 2:
                raise ModelInputError("name", f"{name} has no earlier promoted version")
            rest = history[:-1]
            while rest:
                try:
                    self.load(name, rest[-1])
                    break
                except ModelRefused:
                    rest.pop()
            if not rest:
                raise ModelRefused("name", f"{name}: no earlier promotion passes its checks")
            self._set_history(name, rest)
            span.set_attribute("models.name", name)
            span.set_attribute("models.version", rest[-1])
            return self.metadata(name, rest[-1])

    def serving(self, name: str) -> tuple[ModelMetadata, BaseModel]:
        """The newest promoted version that passes its checks; a corrupt one is skipped."""
        with tracer.start_as_current_span("models.registry.serving") as span:
            span.set_attribute("models.name", name)
            refused = 0
            for version in reversed(self._history(name)):
                try:
                    artifact = self.load(name, version)
                except ModelRefused:
                    refused += 1
                    continue
                span.set_attribute("models.version", version)
                span.set_attribute("models.refused", refused)
                return self.metadata(name, version), artifact
            raise ModelInputError("name", f"{name} has no promoted version that passes its checks")

    def entries(self, name: str) -> list[RegistryEntry]:
        try:
            serving = self.serving(name)[0].version
        except ModelInputError:
            serving = None
        out = []
        for version in self.versions(name):
            try:
                meta = self.metadata(name, version)
                self.load(name, version)
                out.append(RegistryEntry(metadata=meta, serving=version == serving, valid=True))
            except ModelRefused as exc:
                try:
                    meta = self.metadata(name, version)
                except ModelRefused:
                    continue
                out.append(
                    RegistryEntry(metadata=meta, serving=False, valid=False, problem=str(exc))
                )
        return out
