"""Fixtures of the models tests: the real public data sets, loaded once."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from tools.models.transactions import RfmSummary, Transactions, read_transactions, summarise


@pytest.fixture(scope="session", autouse=True)
def _one_openmp_thread() -> Iterator[None]:
    # scikit-learn's gradient boosting spins OpenMP threads; on a shared, busy machine that
    # oversubscription made fits about 20 times slower than one thread.
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture(scope="session")
def cdnow_sample(data_file: Callable[[str], Path]) -> Transactions:
    return read_transactions(data_file("lifetimes_CDNOW_sample.txt"))


@pytest.fixture(scope="session")
def cdnow_summary(cdnow_sample: Transactions) -> RfmSummary:
    return summarise(cdnow_sample)


class Hillstrom:
    def __init__(self, path: Path) -> None:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        self.X = np.array(
            [
                [
                    float(r["recency"]),
                    float(r["history"]),
                    float(r["mens"]),
                    float(r["womens"]),
                    float(r["newbie"]),
                    r["zip_code"] == "Urban",
                    r["zip_code"] == "Surburban",
                    r["channel"] == "Web",
                    r["channel"] == "Phone",
                ]
                for r in rows
            ],
            dtype=float,
        )
        arms = {"No E-Mail": 0, "Mens E-Mail": 1, "Womens E-Mail": 2}
        self.arm = np.array([arms[r["segment"]] for r in rows])
        self.outcomes = {
            k: np.array([float(r[k]) for r in rows]) for k in ("visit", "conversion", "spend")
        }


@pytest.fixture(scope="session")
def hillstrom(data_file: Callable[[str], Path]) -> Hillstrom:
    return Hillstrom(data_file("hillstrom_minethatdata_2008.csv"))
