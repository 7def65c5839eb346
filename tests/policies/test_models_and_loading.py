from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from policies import (
    Decision,
    PolicyLoadError,
    PolicyStore,
    Reason,
    Severity,
    Verdict,
    combine,
    load_policy,
    parse_policy,
)


def _reason(severity: Severity) -> Reason:
    return Reason(rule_id="r", policy_version="v", field="body", severity=severity, explanation="x")


@given(st.lists(st.sampled_from(list(Severity)), max_size=8))
def test_combining_rule(severities: list[Severity]) -> None:
    decision = combine(_reason(s) for s in severities)
    if Severity.BLOCK in severities:
        assert decision is Decision.BLOCK
    elif Severity.ESCALATE in severities:
        assert decision is Decision.ESCALATE
    else:
        assert decision is Decision.ALLOW


def test_verdict_is_frozen() -> None:
    verdict = Verdict.from_reasons([_reason(Severity.ESCALATE)], "v")
    with pytest.raises(ValidationError):
        verdict.decision = Decision.ALLOW  # type: ignore[misc]


def test_bundled_policies_cover_de_and_us(store: PolicyStore) -> None:
    versions = store.versions()
    assert set(versions) == {"default/DE", "default/US", "demo/US"}
    assert versions["default/DE"].startswith("default-de@2026.11.1+")


def test_version_changes_with_content(policy_text: str) -> None:
    first = parse_policy(policy_text, "a.yaml")
    second = parse_policy(policy_text + "\n# a comment changes the hash\n", "a.yaml")
    assert first.version != second.version
    assert first.document.version == second.document.version


@pytest.mark.parametrize(
    ("old", "new", "key", "reason"),
    [
        (
            "  hard_ceiling_pct: 50",
            "  hard_ceiling_pct: 500",
            "offers.hard_ceiling_pct",
            "less than",
        ),
        (
            '      - "heil(?:t|en|ung|wirkung|kraft)"',
            '      - "heil(?:t"',
            "claims[0].patterns",
            "not a valid regex",
        ),
        (
            "  min_margin_pct: 10",
            "  min_margin_pct: 10\n  max_margin: 3",
            "offers.max_margin",
            "Extra inputs",
        ),
        (
            "    default: {default: 15, clearance: 40}",
            "    default: {default: 75, clearance: 40}",
            "offers",
            "hard_ceiling_pct",
        ),
        (
            '  quiet_hours: {start: "21:00", end: "08:00", channels: [email, sms, push]}',
            '  quiet_hours: {start: "25:00", end: "08:00", channels: [email, sms, push]}',
            "contact.quiet_hours.start",
            "time",
        ),
        ('version: "2026.11.1"\n', "", "version", "Field required"),
    ],
)
def test_malformed_policy_names_file_key_and_reason(
    policy_text: str, old: str, new: str, key: str, reason: str
) -> None:
    assert old in policy_text
    with pytest.raises(PolicyLoadError) as info:
        parse_policy(policy_text.replace(old, new, 1), "broken.yaml")
    assert info.value.source == "broken.yaml"
    assert info.value.key == key
    assert reason.lower() in info.value.reason.lower()
    assert str(info.value).startswith(f"broken.yaml: {key}: ")


def test_not_yaml_and_not_a_mapping() -> None:
    with pytest.raises(PolicyLoadError, match=r"x.yaml: <yaml>: not valid YAML"):
        parse_policy("id: [unclosed", "x.yaml")
    with pytest.raises(PolicyLoadError, match=r"x.yaml: <root>: a policy file must be a mapping"):
        parse_policy("- a\n- b\n", "x.yaml")


def test_store_keeps_previous_version_when_reload_is_refused(
    tmp_path: Path, policy_text: str
) -> None:
    store = PolicyStore()
    good = tmp_path / "de.yaml"
    good.write_text(policy_text, encoding="utf-8")
    in_force = store.load(good)
    good.write_text(policy_text.replace("hard_ceiling_pct: 50", "hard_ceiling_pct: -1"), "utf-8")
    with pytest.raises(PolicyLoadError, match=r"de\.yaml: offers\.hard_ceiling_pct"):
        store.load(good)
    assert store.get("DE") is in_force
    with pytest.raises(PolicyLoadError, match=r"missing\.yaml: <file>: cannot be read"):
        load_policy(tmp_path / "missing.yaml")


def test_discount_limit_falls_back_to_defaults(store: PolicyStore) -> None:
    policy = store.get("de")
    assert policy.discount_limit("vip", "clearance") == 45
    assert policy.discount_limit("vip", "shoes") == 20
    assert policy.discount_limit("unknown", "clearance") == 40
    assert policy.discount_limit("winback", "clearance") == 15
