"""Allocator (OR-Tools GLOP, piecewise-linear) beside scipy SLSQP on the same smooth Hill curves.

SLSQP on the smooth problem is how PyMC-Marketing's budget optimiser works. Both objectives are
evaluated on the smooth curves, so the comparison is on equal terms.

    .venv/bin/python bench/allocate.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np
from scipy import optimize

from tools.allocator.curves import ResponseCurve
from tools.allocator.solver import AllocationRequest, ChannelSpec, allocate


def problem(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(seed)
    beta = rng.uniform(50, 200, n)
    k = rng.uniform(10, 100, n)
    shape = rng.uniform(0.6, 1.0, n)
    return beta, k, shape, float(k.sum() * 1.5)


def smooth_value(x: np.ndarray, beta: np.ndarray, k: np.ndarray, shape: np.ndarray) -> float:
    r = (np.maximum(x, 0.0) / k) ** shape
    return float((beta * r / (1 + r)).sum())


def run_slsqp(beta: np.ndarray, k: np.ndarray, shape: np.ndarray, budget: float) -> np.ndarray:
    n = beta.size

    def neg(x: np.ndarray) -> float:
        return -smooth_value(x, beta, k, shape)

    def grad(x: np.ndarray) -> np.ndarray:
        xx = np.maximum(x, 1e-9)
        r = (xx / k) ** shape
        return -(beta * shape * r / (xx * (1 + r) ** 2))

    res = optimize.minimize(
        neg,
        np.full(n, budget / n),
        jac=grad,
        method="SLSQP",
        bounds=[(0.0, 5 * v) for v in k],
        constraints=[
            {"type": "eq", "fun": lambda x: x.sum() - budget, "jac": lambda x: np.ones(n)}
        ],
        options={"maxiter": 1000, "ftol": 1e-12},
    )
    return np.asarray(res.x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5 and 50 channels only")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sizes = [5, 50] if args.quick else [5, 50, 500]
    print(
        f"{'channels':>8} {'ortools ms':>11} {'slsqp ms':>10} {'speed-up':>9} "
        f"{'objective gap %':>16} {'peak MiB':>9}"
    )
    for n in sizes:
        beta, k, shape, budget = problem(n, seed=n)
        request = AllocationRequest(
            channels=[
                ChannelSpec(
                    name=f"c{i}",
                    curve=ResponseCurve(
                        kind="hill", beta=beta[i], half_saturation=k[i], shape=shape[i]
                    ),
                    max_spend=5 * k[i],
                )
                for i in range(n)
            ],
            budget=budget,
        )
        allocate(request)  # warm-up: imports and solver start-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            result = allocate(request)
            times.append(time.perf_counter() - t0)
        tracemalloc.start()
        allocate(request)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        x_ortools = np.array([a.spend for a in result.allocations])
        slsqp_repeats = 1 if n >= 500 else args.repeats
        slsqp_times = []
        for _ in range(slsqp_repeats):
            t0 = time.perf_counter()
            x_slsqp = run_slsqp(beta, k, shape, budget)
            slsqp_times.append(time.perf_counter() - t0)
        ours, theirs = statistics.median(times), statistics.median(slsqp_times)
        v_ours = smooth_value(x_ortools, beta, k, shape)
        v_theirs = smooth_value(x_slsqp, beta, k, shape)
        gap = 100 * (v_theirs - v_ours) / v_theirs
        print(
            f"{n:>8} {ours * 1e3:>11.2f} {theirs * 1e3:>10.2f} {theirs / ours:>8.1f}x "
            f"{gap:>+16.1e} {peak:>9.2f}"
        )
    print("objective gap % > 0 means SLSQP found more; < 0 means the allocator did.")


if __name__ == "__main__":
    main()
