"""The release gate: a prompt version is used in campaigns only once its eval set passed with
the model that runs it. The bundled templates' evaluation with the offline model is CI's."""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path

import pytest
import typer
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from agents.copywriter import Copywriter
from liftloop.db import make_engine
from tests.content.conftest import cli_json
from tools.content import ContentError
from tools.content.evals import EvalReport, EvalSet, load_eval_set, load_eval_sets, run_eval_set
from tools.content.prompts import (
    TEMPLATES_DIR,
    PromptTemplate,
    default_library,
    load_template_file,
)
from tools.content.releases import (
    Evaluate,
    PromptEvaluation,
    ensure_released,
    latest_evaluations,
    record_evaluation,
    release_for,
)
from tools.rag.knowledge_base import KnowledgeBase

EVAL_SETS = load_eval_sets()
OFFLINE = "offline-composer"
# Passes its policy, citation and length checks, but asks for what the offline model never
# writes and counts its signature as pressure: required and tone fail in one case of two.
FAILING_SET = """\
template: winback_email
cases:
  - id: wants-a-voucher
    request: {campaign_id: eval-fail, arm: none, channel: email, language: en,
              product_focus: down jacket}
    checks:
      required: [Gutschein]
      tone: {pressure_phrases: [fjellwind team]}
  - id: plain
    request: {campaign_id: eval-fail, arm: none, channel: email, language: en,
              product_focus: down jacket}
"""


@pytest.fixture()
def engine(tmp_path: Path) -> Engine:
    return make_engine(f"sqlite:///{tmp_path / 'cdp.sqlite'}", background_checkpoint=False)


@pytest.fixture(scope="module")
def copywriter(content_kb: KnowledgeBase) -> Copywriter:
    return Copywriter(content_kb)


def _evaluator(copywriter: Copywriter, eval_set: EvalSet, calls: list[str]) -> Evaluate:
    async def evaluate() -> EvalReport:
        calls.append(eval_set.template)
        return await run_eval_set(copywriter, eval_set)

    return evaluate


def _never() -> EvalReport:
    raise AssertionError("a recorded release must not be evaluated again")


def _edited(template: PromptTemplate) -> PromptTemplate:
    return template.model_copy(update={"instructions": template.instructions + " Be brief."})


@pytest.mark.parametrize("template_id", sorted(EVAL_SETS))
def test_every_bundled_template_is_released_with_the_offline_model(
    engine: Engine, copywriter: Copywriter, template_id: str
) -> None:
    template = default_library().get(template_id)
    model = copywriter.router.name_for(template.task)
    assert model == OFFLINE
    calls: list[str] = []
    first = ensure_released(
        engine, template, model, _evaluator(copywriter, EVAL_SETS[template_id], calls)
    )
    assert (first.released, first.evaluated, first.reasons) == (True, True, ())
    assert (first.template_id, first.version, first.digest) == (
        template.id,
        template.version,
        template.digest,
    )
    assert calls == [template_id]
    # The recorded pass is reused: one SELECT, no second evaluation.
    again = ensure_released(engine, template, model, _never)
    assert (again.released, again.evaluated, again.evaluation_id) == (
        True,
        False,
        first.evaluation_id,
    )
    row = release_for(engine, template, model)
    assert row is not None and row.passed and row.cases_failed == 0
    assert row.rates == {
        "policy": 1.0,
        "required": 1.0,
        "citations": 1.0,
        "length": 1.0,
        "tone": 1.0,
    }
    # Another model has not been evaluated.
    assert release_for(engine, template, "gpt-4o-mini") is None


def test_a_failing_eval_set_is_not_released_and_says_why(
    engine: Engine, copywriter: Copywriter, tmp_path: Path
) -> None:
    path = tmp_path / "winback_email.yaml"
    path.write_text(FAILING_SET, encoding="utf-8")
    failing = load_eval_set(path)
    template = default_library().get("winback_email")
    calls: list[str] = []
    check = ensure_released(engine, template, OFFLINE, _evaluator(copywriter, failing, calls))
    assert (check.released, check.evaluated) == (False, True)
    rules = [r.rule_id for r in check.reasons]
    assert rules == ["prompt.unreleased", "prompt.eval.required", "prompt.eval.tone"]
    unreleased = check.reasons[0].message
    assert "winback_email 1.2.0" in unreleased and "1 of 2 cases passed, 100% needed" in unreleased
    assert "required: missing 'Gutschein'" in unreleased and "liftloop prompts eval" in unreleased
    assert check.reasons[2].message == "tone passed in 50% of cases; failed: wants-a-voucher"
    assert release_for(engine, template, OFFLINE) is None
    (row,) = latest_evaluations(engine)
    assert not row.passed and (row.cases_passed, row.cases_failed) == (1, 1)
    assert row.required_rate == 0.5 and row.policy_rate == 1.0
    assert set(row.failures) == {"wants-a-voucher"}
    # Without a pass on record the next check evaluates again (a fix may have landed).
    ensure_released(engine, template, OFFLINE, _evaluator(copywriter, failing, calls))
    assert calls == ["winback_email", "winback_email"]


def test_an_edited_template_needs_its_own_evaluation(
    engine: Engine, copywriter: Copywriter
) -> None:
    template = default_library().get("subject_line")
    report = asyncio.run(run_eval_set(copywriter, EVAL_SETS["subject_line"]))
    record_evaluation(engine, template, OFFLINE, report)
    assert release_for(engine, template, OFFLINE) is not None
    edited = _edited(template)
    assert edited.version == template.version and edited.digest != template.digest
    assert release_for(engine, edited, OFFLINE) is None
    calls: list[str] = []

    def evaluate() -> EvalReport:
        calls.append("edited")
        return report

    check = ensure_released(engine, edited, OFFLINE, evaluate)
    assert calls == ["edited"] and check.evaluated and check.digest == edited.digest


def test_the_digest_follows_content_not_layout(tmp_path: Path) -> None:
    text = (TEMPLATES_DIR / "subject_line.yaml").read_text(encoding="utf-8")
    original = load_template_file(TEMPLATES_DIR / "subject_line.yaml")
    commented = tmp_path / "commented.yaml"
    commented.write_text("# reviewed by legal\n" + text + "\n\n", encoding="utf-8")
    assert load_template_file(commented).digest == original.digest
    edited = tmp_path / "edited.yaml"
    edited.write_text(
        text.replace("instructions: |\n", "instructions: |\n  Be brief.\n", 1), "utf-8"
    )
    assert load_template_file(edited).version == original.version
    assert load_template_file(edited).digest != original.digest


def test_a_report_of_another_version_or_model_is_refused(
    engine: Engine, copywriter: Copywriter
) -> None:
    template = default_library().get("subject_line")
    report = asyncio.run(run_eval_set(copywriter, EVAL_SETS["subject_line"]))
    bumped = template.model_copy(update={"version": "9.0.0"})
    with pytest.raises(ContentError, match=re.escape("template_version: is '1.0.0', not '9.0.0'")):
        record_evaluation(engine, bumped, OFFLINE, report)
    with pytest.raises(ContentError, match=re.escape("model: is 'offline-composer', not 'gpt-4o'")):
        ensure_released(engine, template, "gpt-4o", lambda: report)
    with pytest.raises(ContentError, match=re.escape("report.template: is 'subject_line'")):
        record_evaluation(engine, default_library().get("promo_push"), OFFLINE, report)
    assert latest_evaluations(engine) == []


def test_an_evaluation_that_raises_records_nothing(engine: Engine) -> None:
    def outage() -> EvalReport:
        raise ConnectionError("model endpoint down")

    with pytest.raises(ConnectionError):
        ensure_released(engine, default_library().get("promo_push"), OFFLINE, outage)
    assert latest_evaluations(engine) == []


async def test_an_async_evaluation_from_inside_an_event_loop(
    engine: Engine, copywriter: Copywriter
) -> None:
    report = await run_eval_set(copywriter, EVAL_SETS["subject_line"])

    async def evaluate() -> EvalReport:
        await asyncio.sleep(0)
        return report

    check = ensure_released(engine, default_library().get("subject_line"), OFFLINE, evaluate)
    assert check.released and check.evaluated


def test_racing_first_uses_both_evaluate_and_both_record(
    engine: Engine, copywriter: Copywriter
) -> None:
    template = default_library().get("subject_line")
    report = asyncio.run(run_eval_set(copywriter, EVAL_SETS["subject_line"]))
    both_looked = threading.Barrier(2)

    def evaluate() -> EvalReport:
        both_looked.wait(timeout=30)  # neither saw the other's record
        return report

    results = []
    workers = [
        threading.Thread(
            target=lambda: results.append(ensure_released(engine, template, OFFLINE, evaluate))
        )
        for _ in range(2)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert [r.released for r in results] == [True, True]
    assert len({r.evaluation_id for r in results}) == 2
    found = release_for(engine, template, OFFLINE)
    assert isinstance(found, PromptEvaluation) and found.id in {r.evaluation_id for r in results}


runner = CliRunner()


def test_the_cli_records_and_lists_releases(cli: typer.Typer) -> None:
    _, before = cli_json(cli, "prompts", "releases", "--json")
    assert before == {"releases": []}
    code, evaluated = cli_json(cli, "prompts", "eval", "subject_line", "--json")
    (report,) = evaluated["templates"]
    assert code == (0 if report["ok"] else 1) and evaluated["ok"] is report["ok"]
    assert set(report["rates"]) == {"policy", "required", "citations", "length", "tone"}
    assert (report["version"], report["model"]) == ("1.0.0", OFFLINE)
    digest = default_library().get("subject_line").digest[:12]
    _, listed = cli_json(cli, "prompts", "releases", "--json")
    (release,) = listed["releases"]
    assert release["template"] == "subject_line" and release["digest"] == digest
    assert release["passed"] is report["ok"] and release["current"] is True
    assert release["evaluated_at"].endswith("+00:00")
    _, templates = cli_json(cli, "prompts", "list", "--json")
    rows = {t["id"]: t for t in templates["templates"]}
    assert rows["subject_line"]["released"] is report["ok"]
    assert rows["winback_email"]["released"] is False
    human = runner.invoke(cli, ["prompts", "releases"], env={"COLUMNS": "200"})
    assert human.exit_code == 0 and "subject_line" in human.stdout and digest in human.stdout
