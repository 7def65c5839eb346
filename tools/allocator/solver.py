"""Budget allocation over channels with OR-Tools: GLOP for the LP, SCIP when on/off choices exist.

Each response curve becomes a concave piecewise-linear function (segment variables with
decreasing slopes need no ordering constraints in a maximisation). Two more passes refine the
breakpoints around the previous optimum, which makes the PWL error negligible at small size.
S-shaped curves are replaced by their concave envelope, so for them the LP is a relaxation.
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
from opentelemetry import trace
from ortools.linear_solver.python import model_builder_helper as mbh
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import sparse

from tools.allocator.curves import CurveBatch, FloatArray, ResponseCurve, concave_envelope
from tools.allocator.errors import AllocationInputError, InfeasibleAllocationError

tracer = trace.get_tracer("liftloop.allocator")

_TOL = 1e-7
# Each pass narrows the breakpoints around the previous optimum by about segments / 3.
_REFINEMENTS = 2


class ChannelSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1)
    curve: ResponseCurve
    current_spend: float = Field(default=0.0, ge=0.0)
    min_spend: float = Field(default=0.0, ge=0.0)
    max_spend: float | None = Field(default=None, ge=0.0)
    # Largest absolute move away from current_spend in one allocation.
    max_change: float | None = Field(default=None, ge=0.0)
    # Contribution margin per unit of response; ROAS figures are in these units.
    value_per_response: float = Field(default=1.0, gt=0.0)
    # The channel may be switched off (spend 0); when on, min_spend applies.
    on_off: bool = False


class GroupConstraint(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1)
    channels: list[str] = Field(min_length=1)
    min_spend: float = Field(default=0.0, ge=0.0)
    max_spend: float | None = Field(default=None, ge=0.0)


class AllocationRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    channels: list[ChannelSpec] = Field(min_length=1)
    budget: float = Field(gt=0.0)
    groups: list[GroupConstraint] = Field(default_factory=list)
    # response: maximise Σ value·response and spend the whole budget;
    # margin: maximise Σ value·response − spend, spending at most the budget.
    objective: Literal["response", "margin"] = "response"
    segments: int = Field(default=40, ge=4, le=2000)

    @model_validator(mode="after")
    def _names(self) -> AllocationRequest:
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise AllocationInputError("channels", "channel names must be distinct")
        for g in self.groups:
            unknown = sorted(set(g.channels) - set(names))
            if unknown:
                raise AllocationInputError(f"groups.{g.name}", f"unknown channels {unknown}")
        return self


class ChannelAllocation(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    spend: float
    previous_spend: float
    change: float
    expected_response: float
    expected_value: float
    marginal_roas: float
    active: bool


class AllocationResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    allocations: list[ChannelAllocation]
    total_spend: float
    expected_value: float
    objective: Literal["response", "margin"]
    objective_value: float
    # Extra objective per extra unit of budget at the optimum (LP dual of the budget row).
    budget_shadow_price: float
    solver: Literal["glop", "scip"]
    solve_seconds: float

    def spend_of(self, name: str) -> float:
        return next(a.spend for a in self.allocations if a.name == name)


class _Bounds(BaseModel):
    lo: list[float]
    hi: list[float]
    # On/off channels that may really go to zero (max_change can forbid switching off).
    switchable: list[bool]


def _channel_bounds(req: AllocationRequest) -> _Bounds:
    lo, hi, switchable = [], [], []
    for c in req.channels:
        upper = [("budget", req.budget)]
        lower = []
        if c.max_spend is not None:
            upper.append(("max_spend", c.max_spend))
        if c.max_change is not None:
            upper.append(("max_change", c.current_spend + c.max_change))
            lower.append(("max_change", max(c.current_spend - c.max_change, 0.0)))
        can_switch_off = c.on_off and all(v == 0.0 for _, v in lower)
        if not can_switch_off:
            lower.append(("min_spend", c.min_spend))
        low_name, low = max(lower, key=lambda t: t[1], default=("min_spend", 0.0))
        high_name, high = min(upper, key=lambda t: t[1])
        if c.on_off and c.max_spend is not None and c.min_spend > c.max_spend:
            raise InfeasibleAllocationError(
                [f"{c.name}.min_spend", f"{c.name}.max_spend"], "min above max"
            )
        if low > high + _TOL:
            raise InfeasibleAllocationError(
                [f"{c.name}.{low_name}", f"{c.name}.{high_name}"],
                f"channel {c.name!r} needs at least {low:g} but may spend at most {high:g}",
            )
        lo.append(low)
        hi.append(max(high, low))
        switchable.append(can_switch_off)
    return _Bounds(lo=lo, hi=hi, switchable=switchable)


def _check_totals(req: AllocationRequest, b: _Bounds) -> None:
    names = [c.name for c in req.channels]
    if sum(b.lo) > req.budget + _TOL:
        parts = ", ".join(f"{n}: {v:g}" for n, v in zip(names, b.lo, strict=True) if v > 0)
        raise AllocationInputError(
            "budget",
            f"{req.budget:g} is below the sum of channel minimums {sum(b.lo):g} ({parts})",
        )
    if req.objective == "response" and sum(b.hi) < req.budget - _TOL:
        raise InfeasibleAllocationError(
            ["budget", *(f"{n}.max" for n in names)],
            f"budget {req.budget:g} exceeds what the channels may spend ({sum(b.hi):g})",
        )


def _breakpoints(
    req: AllocationRequest,
    curves: CurveBatch,
    start: FloatArray,
    stop: FloatArray,
    focus: _Focus | None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Breakpoints (channels × points), curve values there and the finest step per channel.

    A fixed number of points per channel keeps it vectorised.
    """
    n = req.segments
    t = np.linspace(0.0, 1.0, n + 1)
    xs = start[:, None] + (stop - start)[:, None] * t[None, :]
    step = (stop - start) / n
    if focus is not None:
        # The smooth optimum lies within a segment or so of the PWL one, given the dual.
        # Zero-width segments from clipping are harmless: their upper bound is 0.
        half = 1.5 * np.asarray(focus.step)
        a = np.clip(np.asarray(focus.x) - half, start, stop)
        b = np.clip(np.asarray(focus.x) + half, start, stop)
        fine = a[:, None] + (b - a)[:, None] * t[None, :]
        step = (b - a) / n
        xs = np.sort(np.concatenate([xs[:, :: max(n // 8, 1)], fine, stop[:, None]], axis=1))
    ys = curves.value(xs)
    for i in curves.non_concave:
        hx, hy = concave_envelope(xs[i], ys[i])
        ys[i] = np.interp(xs[i], hx, hy)
    return xs, ys, step


class _Focus(BaseModel):
    x: list[float]
    step: list[float]


class _Solution(BaseModel):
    step: list[float]
    x: list[float]
    on: list[bool]
    budget_dual: float
    solver: Literal["glop", "scip"]


def _model(
    var_lb: FloatArray,
    var_ub: FloatArray,
    objective: FloatArray,
    row_lb: FloatArray,
    row_ub: FloatArray,
    matrix: sparse.csr_matrix,
) -> mbh.ModelBuilderHelper:
    """Load a whole LP from arrays in one call (building it variable by variable is slow)."""
    model = mbh.ModelBuilderHelper()
    # The bundled stubs spell the array type wrongly (ndarray[float64, ...]).
    model.fill_model_from_sparse_data(
        var_lb,  # type: ignore[arg-type]
        var_ub,  # type: ignore[arg-type]
        objective,  # type: ignore[arg-type]
        row_lb,  # type: ignore[arg-type]
        row_ub,  # type: ignore[arg-type]
        matrix,
    )
    return model


def _solve(
    req: AllocationRequest,
    b: _Bounds,
    curves: CurveBatch,
    focus: _Focus | None,
    fixed_on: list[bool] | None,
) -> _Solution | None:
    on_off = np.array(b.switchable, dtype=bool)
    mip = fixed_on is None and bool(on_off.any())
    lo, hi = np.asarray(b.lo), np.asarray(b.hi)
    start = np.where(on_off, 0.0, lo)
    stop = hi.copy()
    if fixed_on is not None:
        stop[on_off & ~np.asarray(fixed_on)] = 0.0
    xs, ys, step = _breakpoints(req, curves, start, stop, focus)
    n_ch, n_seg = xs.shape[0], xs.shape[1] - 1
    widths = np.diff(xs, axis=1)
    slopes = np.where(widths > 0, np.diff(ys, axis=1) / np.where(widths > 0, widths, 1.0), 0.0)
    value = np.array([c.value_per_response for c in req.channels])
    unit_cost = 1.0 if req.objective == "margin" else 0.0
    n_seg_vars = n_ch * n_seg
    binary_of = np.cumsum(on_off) - 1 + n_seg_vars if mip else np.full(n_ch, -1)
    n_vars = n_seg_vars + (int(on_off.sum()) if mip else 0)

    var_lb = np.zeros(n_vars)
    var_ub = np.ones(n_vars)
    var_ub[:n_seg_vars] = widths.ravel()
    objective = np.zeros(n_vars)
    objective[:n_seg_vars] = (value[:, None] * slopes - unit_cost).ravel()
    seg_index = np.arange(n_seg_vars).reshape(n_ch, n_seg)

    rows: list[int] = []
    cols: list[FloatArray] = []
    coefs: list[FloatArray] = []
    row_lb: list[float] = []
    row_ub: list[float] = []

    def add_row(
        channels: FloatArray, lb: float, ub: float, extra: tuple[int, float] | None
    ) -> None:
        idx = seg_index[channels.astype(bool)].ravel().astype(float)
        c = np.ones(idx.size)
        if extra is not None:
            idx = np.append(idx, float(extra[0]))
            c = np.append(c, extra[1])
        rows.append(idx.size)
        cols.append(idx)
        coefs.append(c)
        row_lb.append(lb)
        row_ub.append(ub)

    all_channels = np.ones(n_ch)
    budget_rest = req.budget - float(start.sum())
    add_row(
        all_channels, budget_rest if req.objective == "response" else -np.inf, budget_rest, None
    )
    names = [c.name for c in req.channels]
    for g in req.groups:
        members = np.array([n in g.channels for n in names], dtype=float)
        base = float(start[members.astype(bool)].sum())
        upper = np.inf if g.max_spend is None else g.max_spend - base
        add_row(members, g.min_spend - base, upper, None)
    for i, c in enumerate(req.channels):
        if not on_off[i]:
            continue
        one = np.zeros(n_ch)
        one[i] = 1.0
        floor = max(c.min_spend, lo[i])
        if mip:
            add_row(one, -np.inf, 0.0, (int(binary_of[i]), -float(stop[i])))
            add_row(one, 0.0, np.inf, (int(binary_of[i]), -floor))
        elif fixed_on is not None and fixed_on[i]:
            add_row(one, floor, np.inf, None)

    indptr = np.concatenate([[0], np.cumsum(rows)])
    matrix = sparse.csr_matrix(
        (np.concatenate(coefs), np.concatenate(cols).astype(np.int64), indptr),
        shape=(len(rows), n_vars),
    )
    model = _model(var_lb, var_ub, objective, np.array(row_lb), np.array(row_ub), matrix)
    if mip:
        for j in range(n_seg_vars, n_vars):
            model.set_var_integrality(j, True)
    model.set_objective_offset(float((value * ys[:, 0]).sum() - unit_cost * float(start.sum())))
    model.set_maximize(True)
    solver = mbh.ModelSolverHelper("scip" if mip else "glop")
    solver.solve(model)
    if solver.status() != mbh.SolveStatus.OPTIMAL:
        return None
    values = np.asarray(solver.variable_values())
    x = start + values[:n_seg_vars].reshape(n_ch, n_seg).sum(axis=1)
    if mip:
        on = [bool(values[binary_of[i]] > 0.5) if on_off[i] else True for i in range(n_ch)]
    else:
        on = [not on_off[i] or x[i] > _TOL for i in range(n_ch)]
    return _Solution(
        step=[float(v) for v in step],
        x=[float(v) for v in x],
        on=on,
        budget_dual=0.0 if mip else float(np.asarray(solver.dual_values())[0]),
        solver="scip" if mip else "glop",
    )


def _diagnose(req: AllocationRequest, b: _Bounds) -> list[str]:
    """Elastic LP: relax every system constraint with slacks; those that must give conflict."""
    names = [c.name for c in req.channels]
    n_ch = len(names)
    row_names = ["budget"]
    members = [np.ones(n_ch)]
    row_lb = [req.budget if req.objective == "response" else 0.0]
    row_ub = [req.budget]
    for g in req.groups:
        in_group = np.array([n in g.channels for n in names], dtype=float)
        row_names += [f"group {g.name}.min_spend", f"group {g.name}.max_spend"]
        members += [in_group, in_group]
        row_lb += [g.min_spend, -np.inf]
        row_ub += [np.inf, np.inf if g.max_spend is None else g.max_spend]
    n_rows = len(row_names)
    # Columns: spends, then an (under, over) slack pair per row.
    slack = np.zeros((n_rows, 2 * n_rows))
    slack[np.arange(n_rows), 2 * np.arange(n_rows)] = 1.0
    slack[np.arange(n_rows), 2 * np.arange(n_rows) + 1] = -1.0
    matrix = sparse.csr_matrix(np.hstack([np.vstack(members), slack]))
    lo = np.where(b.switchable, 0.0, b.lo)
    var_lb = np.concatenate([lo, np.zeros(2 * n_rows)])
    var_ub = np.concatenate([np.asarray(b.hi), np.full(2 * n_rows, np.inf)])
    objective = np.concatenate([np.zeros(n_ch), np.ones(2 * n_rows)])
    model = _model(var_lb, var_ub, objective, np.array(row_lb), np.array(row_ub), matrix)
    solver = mbh.ModelSolverHelper("glop")
    solver.solve(model)
    values = np.asarray(solver.variable_values())[n_ch:].reshape(n_rows, 2).sum(axis=1)
    relaxed = [row_names[i] for i in np.flatnonzero(values > 1e-6)]
    return [*relaxed, "channel bounds (min_spend/max_spend/max_change)"]


def allocate(req: AllocationRequest) -> AllocationResult:
    """Best spend per channel under the budget and constraints, with marginal ROAS and dual."""
    with tracer.start_as_current_span("allocator.allocate") as span:
        started = time.perf_counter()
        b = _channel_bounds(req)
        _check_totals(req, b)
        curves = CurveBatch([c.curve for c in req.channels])
        first = _solve(req, b, curves, None, None)
        if first is None:
            raise InfeasibleAllocationError(_diagnose(req, b), "no allocation satisfies")
        # The on/off choice is settled by the MIP; refinement and the dual come from LPs.
        fixed = first.on if first.solver == "scip" else None
        best = first
        for _ in range(_REFINEMENTS):
            refined = _solve(req, b, curves, _Focus(x=best.x, step=best.step), fixed)
            if refined is None:
                break
            best = refined
        elapsed = time.perf_counter() - started
        result = _result(req, best, first.solver, elapsed)
        span.set_attributes(
            {
                "allocator.channels": len(req.channels),
                "allocator.groups": len(req.groups),
                "allocator.solver": result.solver,
                "allocator.objective": req.objective,
                "allocator.shadow_price": result.budget_shadow_price,
            }
        )
        return result


def _result(
    req: AllocationRequest, sol: _Solution, solver: Literal["glop", "scip"], elapsed: float
) -> AllocationResult:
    allocations = []
    total_value = 0.0
    for c, x, on in zip(req.channels, sol.x, sol.on, strict=True):
        response = float(c.curve.value(x))
        total_value += c.value_per_response * response
        allocations.append(
            ChannelAllocation(
                name=c.name,
                spend=x,
                previous_spend=c.current_spend,
                change=x - c.current_spend,
                expected_response=response,
                expected_value=c.value_per_response * response,
                marginal_roas=float(c.value_per_response * c.curve.derivative(max(x, 1e-12))),
                active=on and x > _TOL,
            )
        )
    total_spend = sum(a.spend for a in allocations)
    objective_value = total_value - (total_spend if req.objective == "margin" else 0.0)
    return AllocationResult(
        allocations=allocations,
        total_spend=total_spend,
        expected_value=total_value,
        objective=req.objective,
        objective_value=objective_value,
        budget_shadow_price=sol.budget_dual,
        solver=solver,
        solve_seconds=elapsed,
    )
