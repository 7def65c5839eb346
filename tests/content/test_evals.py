from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agents.copywriter import Copywriter
from tools.content import ContentError
from tools.content.evals import (
    CHECKS,
    CaseResult,
    EvalChecks,
    EvalReport,
    ToneRules,
    check_variant,
    load_eval_set,
    load_eval_sets,
    run_eval_set,
    tone_failures,
)
from tools.content.prompts import default_library
from tools.rag.knowledge_base import KnowledgeBase

EVAL_SETS = load_eval_sets()


def test_every_template_has_an_eval_set() -> None:
    assert sorted(EVAL_SETS) == default_library().ids()


@pytest.mark.parametrize("template_id", sorted(EVAL_SETS))
def test_eval_set_passes(content_kb: KnowledgeBase, template_id: str) -> None:
    report = asyncio.run(run_eval_set(Copywriter(content_kb), EVAL_SETS[template_id]))
    failures = {c.case_id: c.failures for c in report.cases if not c.passed}
    assert failures == {}
    assert report.passed == len(EVAL_SETS[template_id].cases)
    assert report.ok and report.pass_rate == 1.0
    assert report.rates == dict.fromkeys(CHECKS, 1.0)
    assert all(c.checks == dict.fromkeys(CHECKS, True) for c in report.cases)


def test_checks_catch_regressions(content_kb: KnowledgeBase) -> None:
    case = EVAL_SETS["winback_email"].cases[0]
    variant = asyncio.run(Copywriter(content_kb).generate(case.request))
    strict = EvalChecks(
        max_subject_chars=5, required=("Gutschein",), banned=("Hallo",), must_cite=("faq-de",)
    )
    failures = check_variant(variant, strict, {"brand-blocks"})
    kinds = {f.split(":")[0] for f in failures}
    assert kinds >= {"length", "required", "cite", "citations"}
    assert any(f.startswith("banned") for f in failures) or "Hallo" not in variant.body
    loud = variant.model_copy(
        update={"subject": "LETZTE CHANCE: 10 % für dich!!", "body": variant.body + "\nNur heute."}
    )
    tone = [f for f in check_variant(loud, EvalChecks(), {"brand-blocks"}) if f.startswith("tone")]
    assert tone == [
        "tone: shouting ['CHANCE', 'LETZTE']",
        "tone: 2 exclamation marks > 1",
        "tone: pressure phrase 'letzte chance'",
        "tone: pressure phrase 'nur heute'",
    ]
    assert not any(f.startswith("tone") for f in check_variant(loud, EvalChecks(tone=None), set()))


def test_tone_rules() -> None:
    calm = "Fjellwind: 10 % off until Sunday. {{cta_url}} Reply STOP to opt out. NEU, EUR, 3L."
    assert tone_failures(calm, ToneRules(allowed_caps=("STOP",))) == []
    assert tone_failures(calm, ToneRules()) == ["tone: shouting ['STOP']"]
    # Three-letter capitals pass as acronyms; a typographic apostrophe still matches.
    assert tone_failures("Don’t miss out – ACT NOW!", ToneRules()) == [
        "tone: pressure phrase 'act now'",
        'tone: pressure phrase "don\'t miss out"',
    ]
    # Whole words only: "hurry" is pressure, "Murray" is a name.
    assert tone_failures("Murray Trail, no hurry.", ToneRules()) == [
        "tone: pressure phrase 'hurry'"
    ]
    assert tone_failures("Warm! Dry!", ToneRules(max_exclamations=2)) == []
    assert tone_failures("Warm!", ToneRules(max_exclamations=0)) == [
        "tone: 1 exclamation marks > 0"
    ]


def test_the_sets_tone_rules_apply_unless_a_case_names_its_own() -> None:
    sms = EVAL_SETS["promo_sms"]
    assert sms.tone.allowed_caps == ("STOP",)
    assert all(sms.checks_for(c).tone == sms.tone for c in sms.cases)
    case = sms.cases[0].model_copy(update={"checks": EvalChecks(tone=None)})
    assert sms.checks_for(case).tone is None


def _case(case_id: str, failed: tuple[str, ...] = ()) -> CaseResult:
    return CaseResult(
        case_id=case_id,
        passed=not failed,
        checks={k: k not in failed for k in CHECKS},
        failures=tuple(f"{k}: broken" for k in failed),
        subject="",
        attempts=1,
        citations=(),
        template_version="1.0.0",
        model="offline-composer",
    )


def test_the_report_scores_each_check_and_applies_the_minimum_pass_rate() -> None:
    cases = (_case("a"), _case("b", ("tone",)), _case("c", ("tone", "length")), _case("d"))
    report = EvalReport(template="promo_push", cases=cases)
    assert (report.passed, report.failed, report.pass_rate, report.ok) == (2, 2, 0.5, False)
    assert report.rates == {
        "policy": 1.0,
        "required": 1.0,
        "citations": 1.0,
        "length": 0.75,
        "tone": 0.5,
    }
    assert EvalReport(template="promo_push", min_pass_rate=0.5, cases=cases).ok
    dumped = report.model_dump(mode="json")
    assert dumped["rates"]["tone"] == 0.5 and dumped["ok"] is False and dumped["passed"] == 2


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("template: promo_push\ncases: [\n", "broken.yaml: invalid YAML"),
        ("", "broken.yaml: Input should be"),
        ("template: promo_push\ncases: []\n", "broken.yaml:cases: Tuple should have"),
        ("template: promo_push\nmin_pass_rate: 2\ncases: []\n", "broken.yaml:min_pass_rate:"),
        (
            "template: promo_push\ntone: {max_exclamations: -1}\ncases: []\n",
            "broken.yaml:tone.max_exclamations:",
        ),
        (
            "template: promo_push\ncases:\n  - id: a\n    request: {campaign_id: c, arm: a,"
            " channel: push, template_id: promo_push}\n    checks: {tone: {loud: 1}}\n",
            "broken.yaml:cases.0.checks.tone.loud:",
        ),
        (
            "template: promo_push\ncases:\n  - id: a\n    request: {campaign_id: c, arm: a,"
            " channel: push}\n",
            "broken.yaml:cases.0.request.template_id: is 'winback_email', expected 'promo_push'",
        ),
    ],
)
def test_a_broken_eval_set_names_its_file_and_field(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ContentError) as caught:
        load_eval_set(path)
    assert str(caught.value).startswith(where), str(caught.value)
    with pytest.raises(ContentError):
        load_eval_sets(tmp_path)
