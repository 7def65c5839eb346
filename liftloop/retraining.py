"""Activities of the model retraining workflow; the worker constructs the class with its
registry and data folder and registers its methods."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
from temporalio import activity

from tools.audit import AuditEvent, AuditLog
from tools.models.clv import fit_summary
from tools.models.drift import psi
from tools.models.errors import ModelInputError
from tools.models.registry import ClvArtifact, ModelRegistry
from tools.models.retraining import Candidate, DriftCheck, PromoteInput, RetrainInput
from tools.models.transactions import (
    DEFAULT_CALIBRATION_END,
    DEFAULT_CALIBRATION_START,
    RfmSummary,
    Transactions,
    read_transactions,
    summarise,
)

FEATURES = ["x", "t_x", "T", "mean_value"]


def drift_features(s: RfmSummary) -> dict[str, np.ndarray]:
    """What drift is judged on, per customer of a calibration summary: the purchase rate and
    the repeat buyers' mean value. Rates and values, not ages: ages shift with every new
    window even when nothing changed."""
    repeat = s.x > 0
    return {"purchase_rate": s.x / np.maximum(s.T, 1.0), "repeat_value": s.mean_value[repeat]}


class RetrainingActivities:
    def __init__(self, registry: ModelRegistry, data_root: Path, audit: AuditLog) -> None:
        self.registry = registry
        self.audit = audit
        self.data_root = data_root

    def _load(self, inp: RetrainInput) -> Transactions:
        path = (self.data_root / inp.transactions).resolve()
        if self.data_root.resolve() not in path.parents:
            raise ModelInputError("transactions", "must name a file inside the data folder")
        return read_transactions(path, inp.format)

    def _window(self, inp: RetrainInput) -> tuple[date | None, date]:
        end = (
            date.fromisoformat(inp.calibration_end)
            if inp.calibration_end
            else (DEFAULT_CALIBRATION_END)
        )
        return (DEFAULT_CALIBRATION_START if inp.format == "cdnow" else None), end

    @activity.defn(name="models.check_drift")
    def check_drift(self, inp: RetrainInput) -> DriftCheck:
        """PSI of the current window's features against the serving model's training window."""
        try:
            meta, _ = self.registry.serving(inp.name)
        except ModelInputError:
            return DriftCheck(serving_version=None, drifted=True)
        tx = self._load(inp)
        start, end = self._window(inp)
        if meta.training_end is None:
            return DriftCheck(serving_version=meta.version, drifted=True)
        before = drift_features(
            summarise(tx, date.fromisoformat(meta.training_end), calibration_start=start)
        )
        now = drift_features(summarise(tx, end, calibration_start=start))
        values = {k: psi(before[k], now[k]) for k in before}
        return DriftCheck(
            serving_version=meta.version,
            psi=values,
            drifted=any(v >= inp.psi_threshold for v in values.values()),
        )

    @activity.defn(name="models.train_candidate")
    def train_candidate(self, inp: RetrainInput) -> Candidate:
        """Fit BG/NBD + Gamma-Gamma on the current window and register (not promote) them."""
        tx = self._load(inp)
        start, end = self._window(inp)
        bg, gg = fit_summary(summarise(tx, end, calibration_start=start))
        first = start.isoformat() if start else None
        meta = self.registry.register(
            inp.name,
            "clv",
            ClvArtifact(bgnbd=bg.params, gamma_gamma=gg.params),
            training_start=first,
            training_end=end.isoformat(),
            metrics={
                "log_likelihood": bg.log_likelihood,
                "customers": float(bg.customers),
                "gamma_gamma_log_likelihood": gg.log_likelihood,
            },
            features=FEATURES,
        )
        return Candidate(
            version=meta.version,
            converged=bg.converged and gg.converged,
            log_likelihood=bg.log_likelihood,
            customers=bg.customers,
        )

    @activity.defn(name="models.promote")
    def promote(self, inp: PromoteInput) -> str:
        version = self.registry.promote(inp.name, inp.version).version
        workflow_id = activity.info().workflow_id
        self.audit.append(
            AuditEvent(
                kind="model.promote",
                actor="worker",
                subject=f"{inp.name}:{version}",
                details={"workflow_id": workflow_id},
                key=f"model.promote:{workflow_id}:{inp.name}:{version}",
            )
        )
        return version
