"""Guardrails: `liftloop guard check` and `liftloop policy lint|diff`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from liftloop.cli import output
from liftloop.cli.output import JsonOption
from policies import (
    Policy,
    PolicyError,
    PolicyLoadError,
    PolicyStore,
    Reason,
    Severity,
    Verdict,
    check_variant,
    load_policy,
)
from policies.engine import SLOT_REFERENCE

guard_app = typer.Typer(name="guard", help="Check messages against the brand and market policies.")
policy_app = typer.Typer(name="policy", help="Validate and compare policy files.")
app = typer.Typer()
app.add_typer(guard_app)
app.add_typer(policy_app)


def register(root: typer.Typer) -> None:
    """Add `guard` and `policy` to `root`."""
    root.add_typer(app)


def _messages(text: str) -> list[tuple[int, Any]]:
    """One JSON object, or JSON Lines; each item is (line number, parsed value or the error)."""
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict):
        return [(1, whole)]
    items: list[tuple[int, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            items.append((number, exc))
    return items


def _blocked(
    message_id: Any, field: str, explanation: str, version: str, rule_id: str = "input.unparseable"
) -> dict[str, Any]:
    reason = Reason(
        rule_id=rule_id,
        policy_version=version,
        field=field,
        severity=Severity.BLOCK,
        explanation=explanation,
    )
    return {
        "id": message_id,
        "decision": "block",
        "reasons": [reason.model_dump(mode="json")],
        "policy_version": version,
    }


def _judge(number: int, item: Any, fixed: Policy | None, store: PolicyStore) -> dict[str, Any]:
    version = fixed.version if fixed else "none"
    if isinstance(item, json.JSONDecodeError):
        return _blocked(None, f"line {number}", f"line {number}: not JSON ({item.msg})", version)
    if not isinstance(item, dict):
        return _blocked(None, f"line {number}", f"line {number}: not a JSON object", version)
    message_id = item.get("id")
    try:
        policy = fixed or store.get(str(item.get("market", "")))
    except PolicyError as exc:
        return _blocked(message_id, "market", str(exc), version, "policy.not_found")
    copy = " ".join(str(item.get(k, "")) for k in ("subject", "preheader", "body", "cta"))
    proposal = {
        "campaign_id": str(item.get("campaign_id", "adhoc")),
        "arm": str(item.get("arm", "adhoc")),
        # Slots referenced in the copy count as declared; untyped ones are still refused.
        "slot_names": list(dict.fromkeys(SLOT_REFERENCE.findall(copy))),
        **{k: v for k, v in item.items() if k not in {"id", "campaign_id", "arm"}},
    }
    verdict: Verdict = check_variant(proposal, policy)
    return {"id": message_id, **verdict.model_dump(mode="json")}


@guard_app.command("check")
def guard_check(
    file: Annotated[Path, typer.Argument(help="One JSON message, or JSON Lines of messages.")],
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Policy file; default: bundled by market.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Judge messages; every message gets a verdict, an unreadable one is blocked."""
    try:
        text = file.read_text(encoding="utf-8")
        fixed = load_policy(policy) if policy else None
    except OSError as exc:
        output.fail(str(file), f"cannot be read: {exc.strerror}", as_json=as_json)
    except PolicyLoadError as exc:
        output.fail_on(exc, as_json=as_json)
    store = PolicyStore.bundled()
    for number, item in _messages(text):
        result = _judge(number, item, fixed, store)
        rules = ", ".join(dict.fromkeys(r["rule_id"] for r in result["reasons"])) or "-"
        output.emit(
            result, as_json=as_json, human=f"{result['id']}: {result['decision']} ({rules})"
        )


def _policy_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"})
    return [path]


@policy_app.command("lint")
def policy_lint(
    path: Annotated[Path, typer.Argument(help="A policy file or a folder of them.")],
    as_json: JsonOption = False,
) -> None:
    """Validate policy files; exits 1 when any file is refused."""
    files: list[dict[str, str]] = []
    for file in _policy_files(path):
        try:
            files.append({"file": file.name, "version": load_policy(file).version})
        except PolicyLoadError as exc:
            files.append({"file": file.name, "error": str(exc)})
    ok = bool(files) and all("error" not in f for f in files)
    lines = [
        f"{f['file']}: " + (f"ok {f['version']}" if "version" in f else f["error"]) for f in files
    ]
    output.emit({"ok": ok, "files": files}, as_json=as_json, human="\n".join(lines))
    if not files and not as_json:
        output.echo(f"{path}: no policy files found", err=True)
    if not ok:
        raise typer.Exit(output.FAILURE)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    # Lists of rules are keyed by rule id so that reordering rules is not reported as a change.
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= _flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(value, list) and value and all(isinstance(i, dict) and "id" in i for i in value):
        return _flatten({str(i["id"]): i for i in value}, prefix)
    return {prefix: value}


def policy_difference(old: Policy, new: Policy) -> dict[str, Any]:
    before = _flatten(old.document.model_dump(mode="json"))
    after = _flatten(new.document.model_dump(mode="json"))
    return {
        "old_version": old.version,
        "new_version": new.version,
        "added": {k: after[k] for k in sorted(after.keys() - before.keys())},
        "removed": {k: before[k] for k in sorted(before.keys() - after.keys())},
        "changed": {
            k: {"old": before[k], "new": after[k]}
            for k in sorted(before.keys() & after.keys())
            if before[k] != after[k]
        },
    }


@policy_app.command("diff")
def policy_diff(
    old: Annotated[Path, typer.Argument(help="The policy file in force.")],
    new: Annotated[Path, typer.Argument(help="The proposed policy file.")],
    as_json: JsonOption = False,
) -> None:
    """Show which rules and limits a new policy version adds, removes or changes."""
    try:
        difference = policy_difference(load_policy(old), load_policy(new))
    except PolicyLoadError as exc:
        output.fail_on(exc, as_json=as_json)
    lines = [f"{difference['old_version']} -> {difference['new_version']}"]
    lines += [f"+ {key}: {value}" for key, value in difference["added"].items()]
    lines += [f"- {key}: {value}" for key, value in difference["removed"].items()]
    lines += [
        f"~ {key}: {change['old']} -> {change['new']}"
        for key, change in difference["changed"].items()
    ]
    output.emit(difference, as_json=as_json, human="\n".join(lines))
