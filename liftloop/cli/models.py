"""The decisioning models: `clv fit`, `ope`, `models list|train|promote|rollback`."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from liftloop.cli import output
from liftloop.cli.output import JsonOption
from tools.models.clv import fit_summary
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
    TransactionFormat,
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


def _fit_clv(
    transactions: Path, fmt: TransactionFormat, calibration_end: str | None, drop: bool
) -> tuple[dict[str, Any], ClvArtifact, str, str]:
    tx = read_transactions(transactions, fmt, drop_duplicates=drop)
    try:
        end = date.fromisoformat(calibration_end) if calibration_end else DEFAULT_CALIBRATION_END
    except ValueError as exc:
        raise ModelInputError("calibration_end", "must be a date YYYY-MM-DD") from exc
    start = DEFAULT_CALIBRATION_START if fmt == "cdnow" else None
    summary = summarise(tx, end, calibration_start=start)
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


@models_app.command("promote")
def models_promote(
    name: str, version: str, registry: RegistryOption = None, as_json: JsonOption = False
) -> None:
    """Serve a version (refused if its artifact fails checksum or schema)."""
    try:
        meta = _registry(registry).promote(name, version)
    except ModelInputError as exc:
        output.fail_on(exc, as_json=as_json)
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
    output.emit({"name": name, "serving": meta.version}, as_json=as_json)
