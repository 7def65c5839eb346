"""MMM fit time and ROAS recovery against the ground truth of PyMC-Marketing's simulated data.

The file carries counterfactual outcomes (y01, y02: y without channel x1 / x2), so the true
ROAS is Σ(y − y0c) / Σ spend_c. In that simulation z drives both x1 and y (an unobserved
confounder in PyMC-Marketing's notebook): without z the x1 estimate is biased, which is what
lift-test calibration is for.

    .venv/bin/python bench/mmm.py [--quick] [--data DIR]
"""

from __future__ import annotations

import argparse
import csv
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.datasets import DATA_DIR, data_file
from tools.measure.mmm import LiftTest, MMMConfig, fit_mmm, read_mmm_csv

FILE = "pymc_marketing_mmm_roas_data.csv"


def true_roas(path: Path) -> dict[str, float]:
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    return {
        ch: sum(float(r["y"]) - float(r[cf]) for r in rows) / sum(float(r[ch]) for r in rows)
        for ch, cf in (("x1", "y01"), ("x2", "y02"))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="no bootstrap")
    parser.add_argument(
        "--data", type=Path, default=DATA_DIR, help="folder of the data sets (tests/data/)"
    )
    args = parser.parse_args()
    path = data_file(FILE, args.data)
    truth = true_roas(path)
    n_boot = 0 if args.quick else 20
    print(f"true ROAS: x1 {truth['x1']:.2f}, x2 {truth['x2']:.2f}  (bootstrap refits: {n_boot})")
    print(
        f"{'setting':<34} {'fit s':>6} {'peak RSS MiB':>13} {'x1 ROAS':>16} {'x2 ROAS':>16}"
        f" {'x1 err %':>9} {'x2 err %':>9} {'R²':>6}"
    )
    as_simulated = 4  # the file's x_adstock columns: normalised geometric over 4 weeks
    lift = [LiftTest(channel="x1", roas=truth["x1"], roas_se=5)]
    settings = [
        ("controls: z, adstock 4 weeks", ["z"], [], as_simulated),
        ("controls: z, default 8 weeks", ["z"], [], 8),
        ("no controls, adstock 4 weeks", [], [], as_simulated),
        ("no controls + x1 lift test (±5)", [], lift, as_simulated),
    ]
    for label, controls, tests, lag in settings:
        data = read_mmm_csv(path, "date", "y", ["x1", "x2"], controls)
        config = MMMConfig(n_bootstrap=n_boot, adstock_max_lag=lag)
        t0 = time.perf_counter()
        result = fit_mmm(data, config, tests)
        elapsed = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        cells, errors = [], []
        for ch in result.channels:
            ci = ch.roas_interval
            cells.append(f"{ch.roas:.1f}" + (f" [{ci.low:.0f},{ci.high:.0f}]" if ci else ""))
            errors.append(100 * (ch.roas - truth[ch.channel]) / truth[ch.channel])
        print(
            f"{label:<34} {elapsed:>6.2f} {peak:>13.0f} {cells[0]:>16} {cells[1]:>16}"
            f" {errors[0]:>9.1f} {errors[1]:>9.1f} {result.diagnostics.r2:>6.3f}"
        )
    print("peer: PyMC-Marketing (MCMC) is not installed here, so no peer figure is measured.")


if __name__ == "__main__":
    main()
