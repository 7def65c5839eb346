from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from tools.models.errors import ModelInputError
from tools.models.transactions import Transactions, read_transactions, summarise


def test_sample_summary_matches_the_published_calibration_summary(
    cdnow_summary, data_file: Callable[[str], Path]
) -> None:
    # lifetimes ships the 39-week calibration summary of the same 2,357 customers (x, t_x, T,
    # zbar rounded to 2 decimals); ours must agree to that rounding.
    ref = np.genfromtxt(
        data_file("lifetimes_cdnow_customers_summary_with_transactions.csv"),
        delimiter=",",
        names=True,
    )
    # The reference numbers customers 1..2357 in the order they first appear in the file.
    order = np.arange(2357)
    assert len(cdnow_summary.customer_ids) == 2357
    np.testing.assert_allclose(cdnow_summary.x[order], ref["x"])
    np.testing.assert_allclose(cdnow_summary.t_x[order], ref["t_x"], atol=0.006)
    np.testing.assert_allclose(cdnow_summary.T[order], ref["T"], atol=0.006)
    np.testing.assert_allclose(cdnow_summary.mean_value[order], ref["zbar"], atol=0.006)


def test_identical_rows_are_reported_and_kept(cdnow_sample: Transactions) -> None:
    assert cdnow_sample.rows_read == 6919
    assert cdnow_sample.customer_index.size == 6919
    assert len(cdnow_sample.duplicate_rows) == 21
    assert cdnow_sample.duplicate_rows[0].line == 403
    assert "21 identical rows kept" in cdnow_sample.warnings()[0]


def test_drop_duplicates_drops_them(data_file: Callable[[str], Path]) -> None:
    tx = read_transactions(data_file("lifetimes_CDNOW_sample.txt"), drop_duplicates=True)
    assert tx.customer_index.size == 6919 - 21
    assert "dropped" in tx.warnings()[0]


def test_master_file_with_header_and_no_sample_index(data_file: Callable[[str], Path]) -> None:
    tx = read_transactions(data_file("lifetimes_CDNOW_master.txt"))
    assert tx.rows_read == 69659
    assert len(tx.customer_ids) == 23570
    assert not tx.bad_rows
    assert tx.amount[:2].tolist() == [11.77, 12.0]


def test_bad_rows_are_reported_with_line_numbers_and_excluded(tmp_path: Path) -> None:
    path = tmp_path / "tx.txt"
    path.write_text(
        " 00001 0001 19970101  1   10.00\n"
        " 00001 0001 19970231  1   10.00\n"
        " 00001 0001 19970301  1   -5.00\n"
        " 00001 0001 19970401  1   abc\n"
        " 00001 0001 19970501  1   12.00\n"
    )
    tx = read_transactions(path)
    assert [i.line for i in tx.bad_rows] == [2, 3, 4]
    assert "unparsable date" in tx.bad_rows[0].reason
    assert "negative" in tx.bad_rows[1].reason
    assert tx.amount.tolist() == [10.0, 12.0]
    assert tx.warnings()[0].startswith("3 rows excluded: line 2")


def test_csv_format_same_day_purchases_count_once(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    path.write_text(
        "customer_id,date,amount\n"
        "a,2024-01-01,10\n"
        "a,2024-01-08,5\n"
        "a,2024-01-08,7\n"
        "a,2024-01-15,3\n"
        "b,2024-01-08,4\n"
        "a,2024-03-01,9\n"
    )
    s = summarise(read_transactions(path, "csv"), date(2024, 1, 29))
    assert s.customer_ids == ["a", "b"]
    assert s.x.tolist() == [2.0, 0.0]
    assert s.t_x.tolist() == [2.0, 0.0]
    assert s.T.tolist() == [4.0, 3.0]
    assert s.mean_value.tolist() == [7.5, 0.0]


def test_csv_without_required_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    path.write_text("customer,date,amount\na,2024-01-01,1\n")
    with pytest.raises(ModelInputError, match=r"^transactions: CSV header lacks customer_id"):
        read_transactions(path, "csv")


def test_missing_file_and_empty_period(tmp_path: Path, cdnow_sample: Transactions) -> None:
    with pytest.raises(ModelInputError, match=r"^transactions: file not found"):
        read_transactions(tmp_path / "nope.txt")
    with pytest.raises(ModelInputError, match=r"^calibration_end:"):
        summarise(cdnow_sample, date(1990, 1, 1))
