"""The prompt library's release gate in the loop: a campaign writes with a prompt version only
once that version (its exact content) has passed its evaluation set with the model it would
use. The first campaign to use an unreleased version runs the evaluation itself — with the
loop's models, policies and ledger, over the sample knowledge its evaluation set is written
for — and pays for it in the ledger as job `eval`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

if TYPE_CHECKING:  # the content stack loads only when a campaign asks for the copywriter
    from agents.copywriter import Copywriter
    from tools.content.evals import EvalSet

Refusal = tuple[tuple[str, str], ...]


class PromptReleases:
    def __init__(
        self,
        engine: Engine,
        evaluator: Callable[[], Copywriter],
        eval_sets: Mapping[str, EvalSet] | None = None,
    ) -> None:
        self.engine = engine
        self._build_evaluator = evaluator
        self._evaluator: Copywriter | None = None
        self._eval_sets = eval_sets
        # A version that failed stays refused in this process: the prompt library is loaded
        # once per worker, so only a restart (with an edited prompt) can change the answer.
        self._refused: dict[tuple[str, str, str, str], Refusal] = {}
        self._lock = threading.Lock()

    def refusal(self, copywriter: Copywriter, template_id: str, campaign_id: str) -> Refusal:
        """Why the campaign may not write with this template now; empty when it may."""
        from tools.content.evals import load_eval_sets, run_eval_set
        from tools.content.releases import ensure_released

        template = copywriter.library.get(template_id)
        model = copywriter.router.name_for(template.task)
        key = (template.id, template.version, template.digest, model)
        with self._lock:
            if key in self._refused:
                return self._refused[key]
            if self._eval_sets is None:
                self._eval_sets = load_eval_sets()
            eval_set = self._eval_sets.get(template.id)
            if eval_set is not None and self._evaluator is None:
                self._evaluator = self._build_evaluator()
            evaluator = self._evaluator
        if eval_set is None or evaluator is None:
            refused: Refusal = (
                ("prompt.no_eval_set", f"{template.id} has no evaluation set, so no release"),
            )
        else:
            check = ensure_released(
                self.engine,
                template,
                model,
                lambda: run_eval_set(evaluator, eval_set, booked_as=campaign_id),
            )
            if check.released:
                return ()
            refused = tuple((r.rule_id, r.message) for r in check.reasons)
        with self._lock:
            self._refused[key] = refused
        return refused
