from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from liftloop.cli.policies import register

FILES = Path(__file__).parents[2] / "policies" / "files"


def app() -> typer.Typer:
    root = typer.Typer()
    register(root)
    return root


def test_guard_check_json_lines(tmp_path: Path) -> None:
    messages = [
        {
            "id": "ok",
            "channel": "email",
            "subject": "Neue Herbstfarben",
            "body": "Entdecke die Kollektion. {unsubscribe_url} {imprint}",
            "offer": {"discount_pct": 10, "price": 45, "min_price": 30},
            "market": "DE",
            "language": "de",
        },
        {
            "id": "over",
            "channel": "email",
            "subject": "Herbst",
            "body": "{unsubscribe_url} {imprint}",
            "offer": {"discount_pct": 30, "price": 45, "min_price": 30},
            "market": "DE",
            "language": "de",
        },
        {
            "id": "us",
            "channel": "email",
            "subject": "Fall is here",
            "body": "Cures colds.",
            "market": "US",
            "language": "en",
        },
    ]
    file = tmp_path / "messages.jsonl"
    file.write_text("\n".join(json.dumps(m) for m in messages) + "\nnot json\n", encoding="utf-8")
    result = CliRunner().invoke(app(), ["guard", "check", str(file), "--json"])
    assert result.exit_code == 0, result.output
    verdicts = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(v["id"], v["decision"]) for v in verdicts] == [
        ("ok", "allow"),
        ("over", "escalate"),
        ("us", "block"),
        (None, "block"),
    ]
    assert verdicts[1]["reasons"][0]["rule_id"] == "offer.discount_limit"
    assert {"claim.health_promise", "required.unsubscribe"} <= {
        r["rule_id"] for r in verdicts[2]["reasons"]
    }
    assert verdicts[3]["reasons"][0]["rule_id"] == "input.unparseable"


def test_guard_check_single_message_with_policy_file(tmp_path: Path) -> None:
    file = tmp_path / "one.json"
    file.write_text(
        json.dumps(
            {
                "id": 7,
                "channel": "push",
                "subject": "Hi",
                "body": "Neu da",
                "market": "DE",
                "language": "de",
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        app(), ["guard", "check", str(file), "--policy", str(FILES / "default_de.yaml"), "--json"]
    )
    assert result.exit_code == 0
    (line,) = result.stdout.splitlines()
    assert json.loads(line)["decision"] == "allow"
    wrong_market = CliRunner().invoke(
        app(), ["guard", "check", str(file), "--policy", str(FILES / "default_us.yaml"), "--json"]
    )
    assert json.loads(wrong_market.stdout)["reasons"][0]["rule_id"] == "policy.market_mismatch"


def test_policy_lint(tmp_path: Path) -> None:
    ok = CliRunner().invoke(app(), ["policy", "lint", str(FILES), "--json"])
    assert ok.exit_code == 0
    report = json.loads(ok.stdout)
    assert report["ok"] is True and len(report["files"]) == 3
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        (FILES / "default_de.yaml")
        .read_text("utf-8")
        .replace("min_margin_pct: 10", "min_margin_pct: lots"),
        encoding="utf-8",
    )
    bad = CliRunner().invoke(app(), ["policy", "lint", str(broken), "--json"])
    assert bad.exit_code == 1
    (entry,) = json.loads(bad.stdout)["files"]
    assert entry["error"].startswith("broken.yaml: offers.min_margin_pct: ")


def test_policy_diff(tmp_path: Path) -> None:
    new = tmp_path / "new.yaml"
    new.write_text(
        (FILES / "default_de.yaml")
        .read_text("utf-8")
        .replace("vip: {default: 20, clearance: 45}", "vip: {default: 25, clearance: 45}"),
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        app(), ["policy", "diff", str(FILES / "default_de.yaml"), str(new), "--json"]
    )
    assert result.exit_code == 0
    diff = json.loads(result.stdout)
    assert diff["changed"] == {"offers.max_discount_pct.vip.default": {"old": 20.0, "new": 25.0}}
    assert diff["added"] == {} and diff["removed"] == {}
    assert diff["old_version"] != diff["new_version"]
