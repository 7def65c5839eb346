from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from tests.content.conftest import cli_json

SAMPLE_KNOWLEDGE = Path(__file__).resolve().parents[2] / "tools" / "content" / "knowledge"
runner = CliRunner()


def test_kb_ingest_search_and_snapshot(cli: typer.Typer, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{", "utf-8")
    code, report = cli_json(cli, "kb", "ingest", str(SAMPLE_KNOWLEDGE), str(broken), "--json")
    assert code == 0 and report["documents"] == 10
    assert [f["path"] for f in report["failures"]] == [str(broken)]  # type: ignore[index]
    code, found = cli_json(cli, "kb", "search", "margin on jackets", "--k", "3", "--json")
    hits = found["hits"]
    assert isinstance(hits, list) and len(hits) == 3
    assert set(hits[0]) == {"doc_id", "chunk_id", "score", "text"}
    assert all(h["doc_id"] != "trading-margins" for h in hits)
    _, as_trading = cli_json(
        cli, "kb", "search", "margin on jackets", "--as-group", "trading", "--json"
    )
    assert as_trading["hits"][0]["doc_id"] == "trading-margins"  # type: ignore[index]
    _, snap = cli_json(cli, "kb", "snapshot", "--json")
    assert snap["snapshot_id"] == report["snapshot_id"]
    code, verdict = cli_json(cli, "kb", "verify", str(snap["snapshot_id"]), "--json")
    assert code == 0 and verdict["valid"] is True
    code, missing = cli_json(cli, "kb", "verify", "kb-unknown", "--json")
    assert code == 2 and str(missing["error"]).startswith("snapshot_id:")


def test_generate_prints_one_variant(cli: typer.Typer, tmp_path: Path) -> None:
    cli_json(cli, "kb", "ingest", str(SAMPLE_KNOWLEDGE), "--json")
    variables = tmp_path / "vars.yaml"
    variables.write_text(
        "campaign_id: winback\narm: ten_off\nlanguage: en\ndiscount_pct: 10\n"
        "offer_end: Sunday\nproduct_focus: daypack\n",
        "utf-8",
    )
    code, variant = cli_json(
        cli, "generate", "--template", "promo_push", "--vars", str(variables), "--json"
    )
    assert code == 2 and "channel" in str(variant["error"])
    variables.write_text(variables.read_text("utf-8") + "channel: push\n", "utf-8")
    code, variant = cli_json(
        cli, "generate", "--template", "promo_push", "--vars", str(variables), "--json"
    )
    assert code == 0 and variant["template_id"] == "promo_push"
    assert "10 %" in str(variant["body"]) and variant["snapshot_id"]
    variables.write_text("discount_pct: 250\n", "utf-8")
    code, bad = cli_json(
        cli, "generate", "--template", "promo_push", "--vars", str(variables), "--json"
    )
    assert code == 2 and str(bad["error"]).startswith("vars.discount_pct:")


def test_prompts_list_and_eval(cli: typer.Typer) -> None:
    _, listed = cli_json(cli, "prompts", "list", "--json")
    assert [t["id"] for t in listed["templates"]] == [  # type: ignore[union-attr]
        "promo_push",
        "promo_sms",
        "subject_line",
        "winback_email",
    ]
    code, report = cli_json(cli, "prompts", "eval", "subject_line", "--json")
    assert [t["template"] for t in report["templates"]] == ["subject_line"]  # type: ignore[union-attr]
    assert code == (1 if report["failed"] else 0)
    assert report["passed"] + report["failed"] == 2  # type: ignore[operator]
    code, unknown = cli_json(cli, "prompts", "eval", "nope", "--json")
    assert code == 2 and str(unknown["error"]).startswith("template:")
