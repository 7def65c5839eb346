from __future__ import annotations

import asyncio

import pytest

from agents.copywriter import Copywriter
from tools.content.evals import EvalChecks, check_variant, load_eval_sets, run_eval_set
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
