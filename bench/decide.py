"""Decide-stage benchmark: next-best-action scoring and decisions at 1M people × 20 actions,
and CLV fit time beside the `lifetimes` package on the same CDNOW data in the same run.

    .venv/bin/python bench/decide.py [--quick] [--data DIR]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.datasets import DATA_DIR, data_file
from tools.models.clv import fit_bgnbd, fit_gamma_gamma
from tools.models.nba import (
    ActionSpace,
    ChannelOption,
    NbaInputs,
    OfferOption,
    decide,
    exploration_bandit,
    score_chunks,
)
from tools.models.transactions import read_transactions, summarise

# 4 offers × 1 channel × 5 hours = 20 send actions, plus doing nothing.
SPACE = ActionSpace(
    offers=[OfferOption(id=f"o{i}", discount_pct=5.0 * i, margin_pct=42.0) for i in range(4)],
    channels=[ChannelOption(id="email", cost=0.01)],
    hours=[8, 11, 14, 17, 20],
)
CHUNK = 65_536


def _inputs(n: int, seed: int = 0) -> NbaInputs:
    rng = np.random.default_rng(seed)
    return NbaInputs(
        base_conversion=rng.uniform(0.0, 0.05, n),
        uplift=rng.uniform(0.0, 0.04, (n, 4)),
        order_value=rng.gamma(2.0, 30.0, n),
        consent=rng.random((n, 1)) < 0.9,
        capped=rng.random(n) < 0.05,
        in_stock=np.ones(4, dtype=bool),
        hour_response=rng.uniform(0.5, 1.5, (n, 5)),
        max_discount_pct=15.0,
    )


def _score_all(inputs: NbaInputs) -> float:
    best_total = 0.0
    for _, scores, eligible in score_chunks(SPACE, inputs, CHUNK):
        best_total += float(np.where(eligible, scores, -np.inf).max(axis=1).sum())
    return best_total


def _measure(fn: Callable[[], object]) -> tuple[float, float]:
    """Seconds of one run, then the traced peak (MiB) of a second run."""
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


def bench_nba(n: int) -> None:
    inputs = _inputs(n)
    pairs = n * SPACE.n_actions
    segments = np.random.default_rng(1).integers(0, 8, n)
    bandit = exploration_bandit(SPACE, segments=8, prior_sd=0.05)
    print(
        f"next best action: {n:,} people × {SPACE.n_actions} actions "
        f"(20 sends + do nothing) = {pairs:,} pairs"
    )
    secs, peak = _measure(lambda: _score_all(inputs))
    print(
        f"  score + eligibility      {pairs / secs / 1e6:7.2f} M pairs/s  "
        f"{secs:6.2f} s  peak {peak:7.1f} MiB (traced, beyond the inputs)"
    )
    secs, peak = _measure(lambda: decide(SPACE, inputs, segments, bandit, seed=7))
    print(
        f"  decide (Thompson, 64 MC draws, propensities) "
        f"{pairs / secs / 1e6:7.2f} M pairs/s  {secs:6.2f} s  peak {peak:7.1f} MiB"
    )


def _paired_times(
    ours: Callable[[], object], theirs: Callable[[], object], repeats: int
) -> tuple[float, float, object, object]:
    """Median seconds of each, run alternately so both see the same machine load."""
    times: tuple[list[float], list[float]] = ([], [])
    results: list[object] = [None, None]
    for _ in range(repeats):
        for i, fn in enumerate((ours, theirs)):
            start = time.perf_counter()
            results[i] = fn()
            times[i].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1]), results[0], results[1]


def bench_clv(path: Path, repeats: int) -> None:
    tx = read_transactions(path)
    s = summarise(tx)
    repeat = (s.x > 0) & (s.mean_value > 0)  # the Gamma-Gamma needs positive values
    print(
        f"CLV fit on {path.name}: {len(s.customer_ids):,} customers, "
        f"{int(repeat.sum()):,} repeat buyers (median of {repeats} runs)"
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from lifetimes import BetaGeoFitter, GammaGammaFitter
    except ImportError:
        print("  lifetimes not installed (dev dependency); peer comparison skipped")
        return
    fit_bgnbd(s.x, s.t_x, s.T)  # warm-up: scipy's first call loads lazily
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours_bg, lt_bg, fit, bgf = _paired_times(
            lambda: fit_bgnbd(s.x, s.t_x, s.T),
            lambda: BetaGeoFitter().fit(s.x, s.t_x, s.T),
            repeats,
        )
        ours_gg, lt_gg, gg, ggf = _paired_times(
            lambda: fit_gamma_gamma(s.x, s.mean_value),
            lambda: GammaGammaFitter().fit(s.x[repeat], s.mean_value[repeat]),
            repeats,
        )
    ours = [fit.params.r, fit.params.alpha, fit.params.a, fit.params.b]  # type: ignore[attr-defined]
    theirs = list(bgf.params_.values)  # type: ignore[attr-defined]
    ours_g = [gg.params.p, gg.params.q, gg.params.v]  # type: ignore[attr-defined]
    theirs_g = list(ggf.params_.values)  # type: ignore[attr-defined]
    same = np.array_equal(np.round(ours, 3), np.round(theirs, 3))
    same_g = np.array_equal(np.round(ours_g, 3), np.round(theirs_g, 3))
    print(
        f"  BG/NBD       liftloop {ours_bg * 1e3:8.1f} ms  lifetimes {lt_bg * 1e3:8.1f} ms  "
        f"{lt_bg / ours_bg:5.1f}x  same params to 3 decimals: {same}"
    )
    print(f"    liftloop  r={ours[0]:.4f} alpha={ours[1]:.4f} a={ours[2]:.4f} b={ours[3]:.4f}")
    print(
        f"    lifetimes r={theirs[0]:.4f} alpha={theirs[1]:.4f} a={theirs[2]:.4f} b={theirs[3]:.4f}"
    )
    print(
        f"  Gamma-Gamma  liftloop {ours_gg * 1e3:8.1f} ms  lifetimes {lt_gg * 1e3:8.1f} ms  "
        f"{lt_gg / ours_gg:5.1f}x  same params to 3 decimals: {same_g}"
    )
    print(
        f"    liftloop  p={ours_g[0]:.4f} q={ours_g[1]:.4f} v={ours_g[2]:.4f}   "
        f"lifetimes p={theirs_g[0]:.4f} q={theirs_g[1]:.4f} v={theirs_g[2]:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100k people, CDNOW sample only")
    parser.add_argument(
        "--data", type=Path, default=DATA_DIR, help="folder of the data sets (tests/data/)"
    )
    args = parser.parse_args()
    # One OpenMP/BLAS thread: numpy here is single-threaded anyway and shared machines punish
    # oversubscription.
    with threadpool_limits(limits=1):
        bench_nba(100_000 if args.quick else 1_000_000)
        bench_clv(data_file("lifetimes_CDNOW_sample.txt", args.data), 3 if args.quick else 7)
        if not args.quick:
            bench_clv(data_file("lifetimes_CDNOW_master.txt", args.data), 3)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
