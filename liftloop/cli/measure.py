"""Measurement and budgets: `experiment analyze|power|mde`, `mmm fit`, `allocate`, `attribution`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer

from liftloop.cli import output
from liftloop.cli.output import JsonOption
from tools.allocator.solver import (
    AllocationRequest,
    ChannelSpec,
    GroupConstraint,
    allocate,
)
from tools.measure.analysis import analyze_arms, read_arm_groups
from tools.measure.attribution import AttributionModel, attribute, read_journeys
from tools.measure.design import (
    MeanPowerResult,
    PowerResult,
    plan_mde,
    plan_mean_test,
    plan_proportion_test,
)
from tools.measure.mmm import MMMConfig, fit_mmm, read_mmm_csv

Correction = Literal["holm", "bonferroni", "none"]


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


experiment_app = typer.Typer(
    name="experiment", help="Design and analyse experiments.", no_args_is_help=True
)
mmm_app = typer.Typer(name="mmm", help="Media-mix modelling.", no_args_is_help=True)
app = typer.Typer()
app.add_typer(experiment_app)
app.add_typer(mmm_app)


def register(root: typer.Typer) -> None:
    """Add `experiment`, `mmm`, `allocate` and `attribution` to `root`."""
    root.add_typer(app)


@experiment_app.command("analyze")
def experiment_analyze(
    csv_file: Annotated[Path, typer.Option("--csv", help="One row per randomised unit.")],
    arm_column: Annotated[str, typer.Option("--arm-column")],
    control: Annotated[str, typer.Option("--control", help="Name of the control arm.")],
    metric: Annotated[str, typer.Option("--metric", help="Outcome column.")],
    covariate: Annotated[
        str | None, typer.Option("--covariate", help="Pre-period column for CUPED.")
    ] = None,
    sequential: Annotated[
        bool, typer.Option("--sequential", help="Always-valid intervals (mixture SPRT).")
    ] = False,
    alpha: Annotated[float, typer.Option("--alpha")] = 0.05,
    correction: Annotated[
        str, typer.Option("--correction", help="holm, bonferroni or none")
    ] = "holm",
    as_json: JsonOption = False,
) -> None:
    """Every arm against the control: diff, interval, relative lift and p-value."""
    try:
        if correction not in ("holm", "bonferroni", "none"):
            raise ValueError(f"correction: unknown method {correction!r}")
        groups = read_arm_groups(csv_file, arm_column, metric, covariate)
        result = analyze_arms(
            groups,
            control,
            alpha,
            cuped=covariate is not None,
            sequential=sequential,
            correction=cast(Correction, correction),
        )
    except ValueError as exc:
        output.fail_on(exc, as_json=as_json)
    arms = {
        a.arm: a.model_dump(exclude={"arm", "is_control"}, exclude_none=a.is_control)
        for a in result.arms
    }
    output.emit(
        {
            "metric": metric,
            "control": control,
            "alpha": alpha,
            "sequential": sequential,
            "cuped": result.cuped,
            "correction": correction,
            "arms": arms,
            "srm": result.srm.model_dump() if result.srm else None,
        },
        as_json=as_json,
    )


BaselineOption = Annotated[
    float | None, typer.Option("--baseline", help="Control conversion rate (a proportion metric).")
]
SdOption = Annotated[
    float | None, typer.Option("--sd", help="Standard deviation per unit (a mean metric).")
]


def _metric(baseline: float | None, sd: float | None, as_json: bool) -> None:
    """Exactly one of --baseline (conversion rate) and --sd (mean metric)."""
    if (baseline is None) == (sd is None):
        output.fail(
            "baseline",
            "give --baseline (a conversion rate) or --sd (a mean metric), not both or neither",
            as_json=as_json,
        )


@experiment_app.command("power")
def experiment_power(
    mde: Annotated[float, typer.Option("--mde", help="Smallest change worth detecting.")],
    baseline: BaselineOption = None,
    sd: SdOption = None,
    alpha: Annotated[float, typer.Option("--alpha")] = 0.05,
    power: Annotated[float, typer.Option("--power")] = 0.8,
    relative: Annotated[
        bool, typer.Option("--relative", help="Read --mde as relative to the baseline.")
    ] = False,
    arms: Annotated[int, typer.Option("--arms", help="Number of arms incl. control.")] = 2,
    as_json: JsonOption = False,
) -> None:
    """Sample size per arm for a two-sided test: two proportions (--baseline) or two means
    (--sd)."""
    _metric(baseline, sd, as_json)
    try:
        if sd is not None:
            if relative:
                raise ValueError("relative: needs --baseline")
            result: PowerResult | MeanPowerResult = plan_mean_test(sd, mde, alpha, power, arms)
        else:
            base = float(baseline or 0.0)
            result = plan_proportion_test(base, mde * base if relative else mde, alpha, power, arms)
    except ValueError as exc:
        output.fail_on(exc, as_json=as_json)
    output.emit(result.model_dump(), as_json=as_json)


@experiment_app.command("mde")
def experiment_mde(
    n_per_arm: Annotated[int, typer.Option("--n-per-arm", help="Units per arm.")],
    baseline: BaselineOption = None,
    sd: SdOption = None,
    alpha: Annotated[float, typer.Option("--alpha")] = 0.05,
    power: Annotated[float, typer.Option("--power")] = 0.8,
    as_json: JsonOption = False,
) -> None:
    """Smallest effect a sample detects: a rise in conversion rate (--baseline) or a change
    of a mean (--sd)."""
    _metric(baseline, sd, as_json)
    try:
        result = plan_mde(n_per_arm, baseline=baseline, sd=sd, alpha=alpha, power=power)
    except ValueError as exc:
        output.fail_on(exc, as_json=as_json)
    payload = result.model_dump()
    for key in ("baseline", "sd", "relative_mde"):
        if payload[key] is None:
            del payload[key]
    output.emit(payload, as_json=as_json)


@mmm_app.command("fit")
def mmm_fit(
    csv_file: Annotated[Path, typer.Option("--csv", help="One row per week.")],
    date_column: Annotated[str, typer.Option("--date-column")],
    target: Annotated[str, typer.Option("--target")],
    channels: Annotated[str, typer.Option("--channels", help="Spend columns, comma separated.")],
    controls: Annotated[
        str | None, typer.Option("--controls", help="Control columns, comma separated.")
    ] = None,
    saturation: Annotated[str, typer.Option("--saturation", help="logistic or hill")] = "logistic",
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap refits.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Fit the weekly MMM: ROAS, marginal ROAS and contribution per channel."""
    try:
        names = _split(channels)
        if not names:
            raise ValueError("channels: give at least one spend column")
        data = read_mmm_csv(csv_file, date_column, target, names, _split(controls))
        config = MMMConfig.model_validate({"saturation": saturation, "n_bootstrap": bootstrap})
        result = fit_mmm(data, config)
    except ValueError as exc:
        output.fail_on(exc, as_json=as_json)
    output.emit(
        {
            "channels": {
                c.channel: {
                    "roas": c.roas,
                    "mroas": c.mroas,
                    "contribution": c.contribution,
                    "spend": c.spend,
                    "roas_interval": c.roas_interval.model_dump() if c.roas_interval else None,
                    "mroas_interval": c.mroas_interval.model_dump() if c.mroas_interval else None,
                    "decay": c.decay,
                    "saturation_param": c.saturation_param,
                    "response_curve": c.response_curve.model_dump(exclude_none=True),
                }
                for c in result.channels
            },
            "baseline_contribution": result.baseline_contribution,
            "diagnostics": result.diagnostics.model_dump(),
        },
        as_json=as_json,
    )


def _load_json(path: Path, option: str) -> Any:
    if not path.is_file():
        raise ValueError(f"{option}: file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{option}: not valid JSON: {exc}") from None


def _channel_specs(curves: Any, bounds: Any) -> tuple[list[ChannelSpec], list[GroupConstraint]]:
    """Curves: a list of {name, curve, current_spend?} or the output of `mmm fit --json`."""
    if isinstance(curves, dict) and isinstance(curves.get("channels"), dict):
        entries = [
            {"name": name, "curve": body["response_curve"]}
            for name, body in curves["channels"].items()
        ]
    elif isinstance(curves, list):
        entries = curves
    else:
        raise ValueError("curves: expected a list of channels or `mmm fit --json` output")
    per_channel = (bounds or {}).get("channels", {})
    unknown = sorted(set(per_channel) - {e.get("name") for e in entries})
    if unknown:
        raise ValueError(f"bounds: unknown channels {unknown}")
    specs = [
        ChannelSpec.model_validate({**e, **per_channel.get(e.get("name"), {})}) for e in entries
    ]
    groups = [GroupConstraint.model_validate(g) for g in (bounds or {}).get("groups", [])]
    return specs, groups


@app.command("allocate")
def allocate_command(
    curves_file: Annotated[Path, typer.Option("--curves", help="JSON response curves.")],
    budget: Annotated[float, typer.Option("--budget", help="Total budget per period.")],
    bounds_file: Annotated[
        Path | None, typer.Option("--bounds", help="JSON per-channel limits and groups.")
    ] = None,
    objective: Annotated[str, typer.Option("--objective", help="response or margin")] = "response",
    as_json: JsonOption = False,
) -> None:
    """Split a budget over channels (OR-Tools) by their response curves."""
    try:
        curves = _load_json(curves_file, "curves")
        bounds = _load_json(bounds_file, "bounds") if bounds_file else None
        specs, groups = _channel_specs(curves, bounds)
        request = AllocationRequest.model_validate(
            {"channels": specs, "groups": groups, "budget": budget, "objective": objective}
        )
        result = allocate(request)
    except ValueError as exc:
        output.fail_on(exc, as_json=as_json)
    output.emit(
        {
            "allocations": {a.name: a.model_dump(exclude={"name"}) for a in result.allocations},
            "total_spend": result.total_spend,
            "expected_value": result.expected_value,
            "objective": result.objective,
            "objective_value": result.objective_value,
            "budget_shadow_price": result.budget_shadow_price,
            "solver": result.solver,
            "solve_seconds": result.solve_seconds,
        },
        as_json=as_json,
    )


@app.command("attribution")
def attribution_command(
    paths_file: Annotated[Path, typer.Option("--paths", help="Aggregated journeys file.")],
    model: Annotated[
        str, typer.Option("--model", help="markov, shapley, first, last, linear or time_decay")
    ] = "markov",
    delimiter: Annotated[str, typer.Option("--delimiter")] = ";",
    as_json: JsonOption = False,
) -> None:
    """Credit conversions and value to channels."""
    models: tuple[AttributionModel, ...] = (
        "markov",
        "shapley",
        "first",
        "last",
        "linear",
        "time_decay",
    )
    try:
        if model not in models:
            raise ValueError(f"model: unknown model {model!r}; choose from {list(models)}")
        journeys = read_journeys(paths_file, delimiter=delimiter)
        result = attribute(journeys, model)
    except ValueError as exc:
        output.fail_on(exc, as_json=as_json)
    output.emit(
        {
            "model": result.model,
            "total_conversions": result.total_conversions,
            "total_value": result.total_value,
            "channels": {
                c.channel: {"conversions": c.conversions, "value": c.value} for c in result.channels
            },
            "removal_effects": result.removal_effects,
            "conversion_probability": result.conversion_probability,
        },
        as_json=as_json,
    )
