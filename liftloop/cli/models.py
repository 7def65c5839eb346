"""The decisioning models: `clv fit|predict`, `ope`, `models list|train|drift|promote|rollback`."""

from __future__ import annotations

import csv
import json
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from liftloop.cli import output
from liftloop.cli.output import JsonOption
from tools.models.clv import (
    BgNbdParams,
    GammaGammaParams,
    customer_lifetime_value,
    expected_purchases,
    fit_summary,
    probability_alive,
)
from tools.models.drift import drift_report
from tools.models.errors import ModelInputError
from tools.models.ope import (
    BanditLog,
    action_frequencies,
    evaluate_policy,
    read_decision_log,
    read_obd_log,
    reward_table,
)
from tools.models.registry import ClvArtifact, ModelRegistry
from tools.models.transactions import (
    DEFAULT_CALIBRATION_END,
    DEFAULT_CALIBRATION_START,
    RfmSummary,
    TransactionFormat,
    Transactions,
    read_transactions,
    summarise,
)

clv_app = typer.Typer(name="clv", help="Customer lifetime value (BG/NBD + Gamma-Gamma).")
models_app = typer.Typer(name="models", help="The model registry: list, train, promote, roll back.")
app = typer.Typer()
app.add_typer(clv_app)
app.add_typer(models_app)


def register(root: typer.Typer) -> None:
    """Add `clv`, `models` and `ope` to `root`."""
    root.add_typer(app)


RegistryOption = Annotated[
    Path | None, typer.Option("--registry", help="Registry folder (default: data dir/models).")
]


def _registry(path: Path | None) -> ModelRegistry:
    if path is not None:
        return ModelRegistry(path)
    from liftloop.settings import get_settings

    return ModelRegistry(get_settings().data_dir / "models")


def _format(fmt: str) -> TransactionFormat:
    if fmt == "cdnow":
        return "cdnow"
    if fmt == "csv":
        return "csv"
    raise ModelInputError("format", "must be cdnow or csv")


def _calibration(
    transactions: Path, fmt: TransactionFormat, calibration_end: str | None, drop: bool
) -> tuple[Transactions, RfmSummary, date | None, date]:
    """The transactions and their calibration summary (CDNOW files start on 1997-01-01)."""
    tx = read_transactions(transactions, fmt, drop_duplicates=drop)
    try:
        end = date.fromisoformat(calibration_end) if calibration_end else DEFAULT_CALIBRATION_END
    except ValueError as exc:
        raise ModelInputError("calibration_end", "must be a date YYYY-MM-DD") from exc
    start = DEFAULT_CALIBRATION_START if fmt == "cdnow" else None
    return tx, summarise(tx, end, calibration_start=start), start, end


def _fit_clv(
    transactions: Path, fmt: TransactionFormat, calibration_end: str | None, drop: bool
) -> tuple[dict[str, Any], ClvArtifact, str, str]:
    tx, summary, start, end = _calibration(transactions, fmt, calibration_end, drop)
    bg, gg = fit_summary(summary)
    payload: dict[str, Any] = {
        "model": "bgnbd",
        "params": bg.params.model_dump(),
        "log_likelihood": bg.log_likelihood,
        "customers": bg.customers,
        "gamma_gamma": gg.params.model_dump(),
        "warnings": tx.warnings(),
    }
    first = (
        start.isoformat()
        if start
        else date.fromordinal(int(tx.day.min()) + date(1970, 1, 1).toordinal()).isoformat()
    )
    return payload, ClvArtifact(bgnbd=bg.params, gamma_gamma=gg.params), first, end.isoformat()


def _target_policy(policy: str, log: BanditLog) -> tuple[np.ndarray[Any, Any], float | None]:
    """`uniform`, an OBD CSV / JSONL log whose action frequencies define the policy, or a JSON
    file {"probabilities": [[...], ...]} (contexts × actions)."""
    shape = (log.n_contexts, log.n_actions)
    if policy == "uniform":
        return np.full(shape, 1.0 / log.n_actions), None
    path = Path(policy)
    if path.suffix == ".json":
        if not path.is_file():
            raise ModelInputError("policy", f"file not found: {path.name}")
        try:
            table = np.asarray(json.loads(path.read_text())["probabilities"], dtype=np.float64)
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelInputError("policy", "JSON must hold a 'probabilities' table") from exc
        return table, None
    other = _read_log(path, log.n_actions)
    if other.n_contexts != log.n_contexts or other.n_actions != log.n_actions:
        raise ModelInputError("policy", "the policy's log has other contexts or actions")
    return action_frequencies(other), float(other.rewards.mean())


def _read_log(path: Path, n_actions: int | None = None) -> BanditLog:
    if path.suffix == ".csv":
        return read_obd_log(path, n_actions)
    return read_decision_log(path)


@clv_app.command("fit")
def clv_fit(
    transactions: Annotated[Path, typer.Option(help="Transaction file.")],
    fmt: Annotated[
        str,
        typer.Option("--format", help="cdnow (CDNOW text) or csv (customer_id,date,amount)."),
    ] = "cdnow",
    calibration_end: Annotated[
        str | None, typer.Option(help="Last day of the calibration period (YYYY-MM-DD).")
    ] = None,
    drop_duplicates: Annotated[bool, typer.Option(help="Drop identical rows.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Fit BG/NBD and Gamma-Gamma to a transaction log."""
    try:
        payload = _fit_clv(transactions, _format(fmt), calibration_end, drop_duplicates)[0]
    except ModelInputError as exc:
        output.fail_on(exc, as_json=as_json)
    output.emit(payload, as_json=as_json)


def _serving_clv(
    registry: Path | None, name: str, option: str
) -> tuple[str, ClvArtifact, str | None]:
    """(name:version, artifact, training end) of the serving version of a CLV model; errors
    name the `option` that gave the name."""
    try:
        meta, artifact = _registry(registry).serving(name)
    except ModelInputError as exc:
        raise ModelInputError(option, exc.reason) from None
    if not isinstance(artifact, ClvArtifact):
        raise ModelInputError(option, f"{name} is a {meta.kind} model, not a CLV model")
    return f"{meta.name}:{meta.version}", artifact, meta.training_end


PREDICTION_COLUMNS = (
    "customer_id",
    "x",
    "t_x",
    "T",
    "mean_value",
    "probability_alive",
    "expected_purchases",
    "clv",
)


def _write_predictions(path: Path, summary: RfmSummary, *columns: np.ndarray[Any, Any]) -> None:
    try:
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(PREDICTION_COLUMNS)
            values = (summary.x, summary.t_x, summary.T, summary.mean_value, *columns)
            for i, customer in enumerate(summary.customer_ids):
                writer.writerow([customer, *(repr(float(v[i])) for v in values)])
    except OSError as exc:
        raise ModelInputError("out", f"{path}: cannot be written ({exc.strerror})") from None


@clv_app.command("predict")
def clv_predict(
    transactions: Annotated[Path, typer.Option(help="Transaction file.")],
    out_file: Annotated[
        Path,
        typer.Option("--out", help="CSV file to write, one row per customer.", dir_okay=False),
    ],
    fmt: Annotated[str, typer.Option("--format", help="cdnow or csv.")] = "cdnow",
    calibration_end: Annotated[
        str | None, typer.Option(help="Last day of the calibration period (YYYY-MM-DD).")
    ] = None,
    drop_duplicates: Annotated[bool, typer.Option(help="Drop identical rows.")] = False,
    model: Annotated[
        str | None,
        typer.Option(help="Registry name of a CLV model to use (default: fit on the file)."),
    ] = None,
    periods: Annotated[int, typer.Option(help="Future periods the CLV sums.")] = 12,
    period_weeks: Annotated[float, typer.Option(help="Weeks per period.")] = 52.0 / 12.0,
    discount_rate: Annotated[float, typer.Option(help="Discount rate per period.")] = 0.01,
    margin: Annotated[float, typer.Option(help="Share of spend that is margin.")] = 1.0,
    horizon_weeks: Annotated[
        float | None,
        typer.Option(help="Weeks of the expected purchases (default: the CLV's periods)."),
    ] = None,
    registry: RegistryOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per customer: P(alive), expected purchases and CLV, written as CSV."""
    try:
        _, summary, _, end = _calibration(
            transactions, _format(fmt), calibration_end, drop_duplicates
        )
        bg: BgNbdParams
        gg: GammaGammaParams
        if model is None:
            bg_fit, gg_fit = fit_summary(summary)
            bg, gg, source = bg_fit.params, gg_fit.params, f"fitted on {transactions.name}"
        else:
            source, artifact, _ = _serving_clv(registry, model, "model")
            bg, gg = artifact.bgnbd, artifact.gamma_gamma
        horizon = periods * period_weeks if horizon_weeks is None else horizon_weeks
        alive = probability_alive(bg, summary.x, summary.t_x, summary.T)
        purchases = expected_purchases(bg, horizon, summary.x, summary.t_x, summary.T)
        value = customer_lifetime_value(
            bg,
            gg,
            summary,
            periods=periods,
            period_weeks=period_weeks,
            discount_rate=discount_rate,
            margin=margin,
        )
        _write_predictions(out_file, summary, alive, purchases, value)
    except ModelInputError as exc:
        output.fail_on(exc, as_json=as_json)
    output.emit(
        {
            "customers": len(summary.customer_ids),
            "model": source,
            "params": bg.model_dump(),
            "gamma_gamma": gg.model_dump(),
            "calibration_end": end.isoformat(),
            "horizon_weeks": horizon,
            "periods": periods,
            "period_weeks": period_weeks,
            "discount_rate": discount_rate,
            "margin": margin,
            "probability_alive_mean": float(alive.mean()),
            "expected_purchases": float(purchases.sum()),
            "clv": float(value.sum()),
            "file": str(out_file),
        },
        as_json=as_json,
    )


@app.command("ope")
def ope(
    logs: Annotated[Path, typer.Option(help="Logged feedback: OBD CSV or JSON Lines.")],
    policy: Annotated[
        str, typer.Option(help="uniform, a log file of the target policy, or a JSON table.")
    ],
    as_json: JsonOption = False,
) -> None:
    """Off-policy estimates (IPW, SNIPW, DM, DR) of a target policy's value."""
    try:
        log = _read_log(logs)
        target, on_policy = _target_policy(policy, log)
        estimates = evaluate_policy(log, target, reward_table(log))
    except ModelInputError as exc:
        output.fail_on(exc, as_json=as_json)
    payload: dict[str, Any] = {
        "rounds": int(log.rewards.size),
        "logged_policy_value": float(log.rewards.mean()),
        "estimates": {k: v.model_dump(exclude={"estimator"}) for k, v in estimates.items()},
    }
    if on_policy is not None:
        payload["on_policy_value"] = on_policy
        payload["relative_error"] = {
            k: abs(v.value - on_policy) / on_policy if on_policy else None
            for k, v in estimates.items()
        }
    output.emit(payload, as_json=as_json)


@models_app.command("list")
def models_list(registry: RegistryOption = None, as_json: JsonOption = False) -> None:
    """Every registered version, with its metadata and whether it serves."""
    reg = _registry(registry)
    rows = [
        {
            **e.metadata.model_dump(mode="json"),
            "serving": e.serving,
            "valid": e.valid,
            "problem": e.problem,
        }
        for name in reg.names()
        for e in reg.entries(name)
    ]
    lines = [
        f"{'*' if r['serving'] else (' ' if r['valid'] else '!')} "
        f"{r['name']} {r['version']} {r['kind']} {r['training_end']}"
        for r in rows
    ]
    output.emit({"models": rows}, as_json=as_json, human="\n".join(lines))


@models_app.command("train")
def models_train(
    transactions: Annotated[Path, typer.Option(help="Transaction file for the CLV model.")],
    name: Annotated[str, typer.Option(help="Registry name.")] = "clv",
    fmt: Annotated[str, typer.Option("--format", help="cdnow or csv.")] = "cdnow",
    calibration_end: Annotated[str | None, typer.Option(help="YYYY-MM-DD.")] = None,
    promote: Annotated[bool, typer.Option(help="Serve the new version at once.")] = False,
    registry: RegistryOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fit the CLV models and register them as a new version."""
    reg = _registry(registry)
    try:
        payload, artifact, start, end = _fit_clv(transactions, _format(fmt), calibration_end, False)
        meta = reg.register(
            name,
            "clv",
            artifact,
            training_start=start,
            training_end=end,
            metrics={
                "log_likelihood": payload["log_likelihood"],
                "customers": float(payload["customers"]),
            },
            features=["x", "t_x", "T", "mean_value"],
        )
        if promote:
            reg.promote(name, meta.version)
            _log_serving("model.promote", name, meta.version)
    except ModelInputError as exc:
        output.fail_on(exc, as_json=as_json)
    output.emit(
        {
            "name": name,
            "version": meta.version,
            "promoted": promote,
            "sha256": meta.sha256,
            "params": payload["params"],
        },
        as_json=as_json,
    )


@models_app.command("drift")
def models_drift(
    transactions: Annotated[Path, typer.Option(help="Transaction file of the current window.")],
    name: Annotated[str, typer.Option(help="Registry name of the CLV model.")] = "clv",
    fmt: Annotated[str, typer.Option("--format", help="cdnow or csv.")] = "cdnow",
    calibration_end: Annotated[
        str | None, typer.Option(help="Last day of the current window (YYYY-MM-DD).")
    ] = None,
    registry: RegistryOption = None,
    as_json: JsonOption = False,
) -> None:
    """PSI of the purchase rate and repeat value: the serving model's training window against
    the current one (what the retraining workflow checks)."""
    from liftloop.retraining import drift_features

    try:
        serving, _, training_end = _serving_clv(registry, name, "name")
        if training_end is None:
            raise ModelInputError("name", f"{serving} records no training end")
        tx, current, start, end = _calibration(transactions, _format(fmt), calibration_end, False)
        try:
            reference_end = date.fromisoformat(training_end)
        except ValueError:
            raise ModelInputError("name", f"{serving}: training end {training_end!r}") from None
        reference = summarise(tx, reference_end, calibration_start=start)
        report = drift_report(drift_features(reference), drift_features(current))
    except ModelInputError as exc:
        output.fail_on(exc, as_json=as_json)
    features = {f.name: {"psi": f.psi, "status": f.status} for f in report.features}
    lines = [f"{serving}: {training_end} -> {end.isoformat()}"] + [
        f"  {n}: psi {f['psi']:.4f} {f['status']}" for n, f in features.items()
    ]
    output.emit(
        {
            "model": serving,
            "reference_end": training_end,
            "current_end": end.isoformat(),
            "features": features,
            "drifted": report.drifted,
        },
        as_json=as_json,
        human="\n".join(lines),
    )


def _log_serving(kind: str, name: str, version: str) -> None:
    from liftloop.audit import audit_log
    from liftloop.cli import client
    from liftloop.settings import get_settings
    from tools.audit import AuditEvent

    audit_log(get_settings()).append(
        AuditEvent(kind=kind, actor=client.actor(), subject=f"{name}:{version}")
    )


@models_app.command("promote")
def models_promote(
    name: str, version: str, registry: RegistryOption = None, as_json: JsonOption = False
) -> None:
    """Serve a version (refused if its artifact fails checksum or schema)."""
    try:
        meta = _registry(registry).promote(name, version)
    except ModelInputError as exc:
        output.fail_on(exc, as_json=as_json)
    _log_serving("model.promote", name, meta.version)
    output.emit({"name": name, "serving": meta.version}, as_json=as_json)


@models_app.command("rollback")
def models_rollback(
    name: str, registry: RegistryOption = None, as_json: JsonOption = False
) -> None:
    """Serve the previous promoted version again."""
    try:
        meta = _registry(registry).rollback(name)
    except ModelInputError as exc:
        output.fail_on(exc, as_json=as_json)
    _log_serving("model.rollback", name, meta.version)
    output.emit({"name": name, "serving": meta.version}, as_json=as_json)
