"""A file-based model registry: versioned JSON artifacts with metadata (training window,
metrics, features, sha256), promotion and rollback.

Layout under the root: `<name>/<version>/artifact.json`, `<name>/<version>/metadata.json` and
`<name>/promotions.json` (the promotion history; its last entry is serving). A version whose
artifact fails its checksum or its kind's schema is refused: it cannot be promoted, and if the
serving one goes bad the latest earlier good promotion keeps serving.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tools.models.bandits import BanditState
from tools.models.clv import BgNbdParams, GammaGammaParams
from tools.models.errors import ModelInputError

tracer = trace.get_tracer("liftloop.models")

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
SCHEMA_VERSION = 1


class ClvArtifact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    bgnbd: BgNbdParams
    gamma_gamma: GammaGammaParams


ARTIFACT_SCHEMAS: dict[str, type[BaseModel]] = {"clv": ClvArtifact, "bandit": BanditState}


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
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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
        """Store a new version (not yet serving)."""
        schema = ARTIFACT_SCHEMAS.get(kind)
        if schema is None:
            raise ModelInputError("kind", f"unknown artifact kind {kind!r}")
        if not isinstance(artifact, schema):
            raise ModelInputError("artifact", f"a {kind} artifact must be a {schema.__name__}")
        with tracer.start_as_current_span("models.registry.register") as span:
            base = self._dir(name)
            existing = self.versions(name)
            version = f"v{int(existing[-1][1:]) + 1 if existing else 1}"
            folder = base / version
            folder.mkdir(parents=True, exist_ok=False)
            payload = artifact.model_dump_json()
            _write_atomic(folder / "artifact.json", payload)
            meta = ModelMetadata(
                name=name,
                version=version,
                kind=kind,
                created_at=datetime.now(UTC),
                training_start=training_start,
                training_end=training_end,
                metrics=metrics or {},
                features=features or [],
                sha256=hashlib.sha256(payload.encode("utf-8")).hexdigest(),
            )
            _write_atomic(folder / "metadata.json", meta.model_dump_json(indent=2))
            span.set_attribute("models.name", name)
            span.set_attribute("models.version", version)
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
        """The artifact of one version, verified against its checksum and schema."""
        meta = self.metadata(name, version)
        if meta.schema_version != SCHEMA_VERSION:
            raise ModelRefused("metadata", f"{name} {version}: unsupported schema version")
        raw = (self._dir(name) / version / "artifact.json").read_bytes()
        if hashlib.sha256(raw).hexdigest() != meta.sha256:
            raise ModelRefused("artifact", f"{name} {version}: checksum mismatch")
        schema = ARTIFACT_SCHEMAS.get(meta.kind)
        if schema is None:
            raise ModelRefused("artifact", f"{name} {version}: unknown kind {meta.kind!r}")
        try:
            return schema.model_validate_json(raw)
        except ValidationError as exc:
            raise ModelRefused("artifact", f"{name} {version}: schema check failed") from exc

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
