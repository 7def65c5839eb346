"""Knowledge and generation: `kb ingest|search|snapshot|verify`, `generate`, `prompts list|eval`.
The planner's commands are in `liftloop/cli/plan.py`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
import yaml
from pydantic import ValidationError

from liftloop.cli import output
from liftloop.cli.output import JsonOption
from liftloop.settings import get_settings

kb = typer.Typer(name="kb", help="Knowledge base: ingest documents, search, signed snapshots.")
prompts = typer.Typer(name="prompts", help="Prompt templates and their eval sets.")
app = typer.Typer()
app.add_typer(kb)
app.add_typer(prompts)


def register(root: typer.Typer) -> None:
    """Add `kb`, `prompts` and `generate` to `root`."""
    root.add_typer(app)


def _split(values: str | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for v in values.split(",") if v.strip()]


@kb.command("ingest")
def kb_ingest(
    paths: Annotated[list[Path], typer.Argument(help="files or folders to ingest")],
    groups: Annotated[str | None, typer.Option(help="permission groups, comma separated")] = None,
    as_json: JsonOption = False,
) -> None:
    """Ingest Markdown, HTML, text, PDF, catalogue CSV/JSON, claims and FAQs."""
    from liftloop.knowledge import open_knowledge
    from tools.rag import KnowledgeError

    try:
        # No count to show: the knowledge base parses, embeds and indexes in one call (one
        # snapshot), so this says that it works and for how long.
        with output.progress() as bar:
            more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
            task = bar.add_task(f"ingesting {paths[0].name or paths[0]}{more}", total=None)
            report = open_knowledge(get_settings()).ingest(paths, groups=_split(groups))
            bar.update(
                task,
                total=1,
                completed=1,
                description=f"ingested {report.documents} documents, {report.chunks} chunks",
            )
    except KnowledgeError as exc:
        output.fail_on(exc, as_json=as_json)
    lines = [
        f"ingested {report.documents} documents, {report.chunks} chunks"
        f" ({report.injection_flagged} flagged), snapshot {report.snapshot_id}"
    ] + [
        f"failed: {f.path}: {f.reason}" + (f" [{f.error}]" if f.error else "")
        for f in report.failures
    ]
    output.emit(report.model_dump(mode="json"), as_json=as_json, human="\n".join(lines))
    if report.refused:
        # A refused file (a link, something outside the folder) is never ingested silently.
        raise typer.Exit(output.USAGE)


@kb.command("search")
def kb_search(
    query: str,
    as_group: Annotated[
        str, typer.Option("--as-group", help="groups the caller belongs to, comma separated")
    ] = "public",
    k: Annotated[int, typer.Option("--k", min=1, max=100)] = 5,
    market: Annotated[str | None, typer.Option()] = None,
    language: Annotated[str | None, typer.Option()] = None,
    mode: Annotated[str, typer.Option(help="hybrid, vector or bm25")] = "hybrid",
    as_json: JsonOption = False,
) -> None:
    """Hybrid search; permissions, market, language and freshness apply inside the query."""
    from liftloop.knowledge import open_knowledge
    from tools.rag import KnowledgeError, SearchFilter

    if mode not in ("hybrid", "vector", "bm25"):
        output.fail("mode", f"must be hybrid, vector or bm25, got {mode!r}", as_json=as_json)
    try:
        flt = SearchFilter(
            groups=tuple(_split(as_group) or ["public"]), market=market, language=language
        )
        hits = open_knowledge(get_settings()).search(query, flt, k=k, mode=mode)  # type: ignore[arg-type]
    except KnowledgeError as exc:
        output.fail_on(exc, as_json=as_json)
    rows = [
        {"doc_id": h.doc_id, "chunk_id": h.chunk_id, "score": h.score, "text": h.text} for h in hits
    ]
    human = "\n".join(f"{h.score:.4f}  {h.chunk_id}  {h.text[:90]}" for h in hits)
    output.emit({"query": query, "hits": rows}, as_json=as_json, human=human or "no hits")


@kb.command("snapshot")
def kb_snapshot(as_json: JsonOption = False) -> None:
    """Sign and store the manifest of every chunk hash in the knowledge base."""
    from liftloop.knowledge import open_knowledge

    snapshot = open_knowledge(get_settings()).snapshot()
    payload = {
        "snapshot_id": snapshot.snapshot_id,
        "created_at": snapshot.created_at,
        "chunks": len(snapshot.chunk_hashes),
        "signature": snapshot.signature,
    }
    output.emit(
        payload,
        as_json=as_json,
        human=f"{snapshot.snapshot_id}  {len(snapshot.chunk_hashes)} chunks",
    )


@kb.command("verify")
def kb_verify(snapshot_id: str, as_json: JsonOption = False) -> None:
    """Check a stored snapshot's signature with the installation's signing key (its setting,
    or the key generated in the data directory)."""
    from liftloop.knowledge import open_knowledge
    from tools.rag import KnowledgeError

    knowledge = open_knowledge(get_settings())
    try:
        valid = knowledge.verify(knowledge.load_snapshot(snapshot_id))
    except KnowledgeError as exc:
        output.fail_on(exc, as_json=as_json)
    output.emit(
        {"snapshot_id": snapshot_id, "valid": valid},
        as_json=as_json,
        human="valid" if valid else "INVALID",
    )
    if not valid:
        raise typer.Exit(output.FAILURE)


@app.command("generate")
def generate(
    template: Annotated[str, typer.Option(help="prompt template id")],
    vars_file: Annotated[
        Path, typer.Option("--vars", help="YAML/JSON with the variant request's fields")
    ],
    as_json: JsonOption = False,
) -> None:
    """Generate one guarded, cited content variant (no personal data involved)."""
    from pydantic_ai.exceptions import ModelAPIError

    from agents.copywriter import generate_variant
    from liftloop.knowledge import copywriter
    from tools.content import ContentError, VariantRequest
    from tools.content.llm import model_error_reason
    from tools.rag import KnowledgeError

    try:
        raw = yaml.safe_load(vars_file.read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise ContentError("vars", "file must hold a mapping of request fields")
        raw.setdefault("campaign_id", "adhoc")
        raw.setdefault("arm", "default")
        request = VariantRequest.model_validate({**raw, "template_id": template})
        variant = generate_variant(request, copywriter(get_settings()))
    except (OSError, yaml.YAMLError) as exc:
        output.fail("vars", f"cannot read {vars_file.name} ({exc})", as_json=as_json)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(["vars", *(str(p) for p in first["loc"])])
        output.fail(where, first["msg"], as_json=as_json)
    except (ContentError, KnowledgeError) as exc:
        output.fail_on(exc, as_json=as_json)
    except ModelAPIError as exc:
        output.fail("llm_model", model_error_reason(exc), as_json=as_json, code=output.FAILURE)
    human = (
        f"Subject: {variant.subject}\nPreheader: {variant.preheader}\n\n{variant.body}\n\n"
        f"[{variant.cta}]\n\ncitations: {', '.join(variant.citations)}"
        f"  snapshot: {variant.snapshot_id}  escalated: {variant.escalated}"
    )
    output.emit(variant.model_dump(mode="json"), as_json=as_json, human=human)


@prompts.command("list")
def prompts_list(as_json: JsonOption = False) -> None:
    """Templates with their versions, content digests and whether they are released for the
    model that runs them."""
    from liftloop.db import engine_for
    from liftloop.knowledge import model_router
    from tools.content.prompts import default_library
    from tools.content.releases import release_for

    settings = get_settings()
    engine, router = engine_for(settings.cdp_url), model_router(settings)
    library = default_library()
    rows = []
    for t in (library.get(i) for i in library.ids()):
        model = router.name_for(t.task)
        rows.append(
            {
                "id": t.id,
                "version": t.version,
                "channel": t.channel,
                "task": t.task,
                "digest": t.digest[:12],
                "model": model,
                "released": release_for(engine, t, model) is not None,
            }
        )
    human = "\n".join(
        f"{r['id']}  v{r['version']}  {r['channel']}  {r['task']}  {r['digest']}  {r['model']}"
        f"  {'released' if r['released'] else 'unreleased'}"
        for r in rows
    )
    output.emit({"templates": rows}, as_json=as_json, human=human)


@prompts.command("eval")
def prompts_eval(
    template: Annotated[str | None, typer.Argument(help="one template id; all by default")] = None,
    data_kb: Annotated[
        bool,
        typer.Option(
            "--data-kb", help="use the data directory's knowledge base, not the bundled sample"
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Score each template's eval set (policy, required elements, citations, length, tone) and
    record the result: a version passing its set is released for the model that ran it."""

    from pydantic_ai.exceptions import ModelAPIError

    from liftloop.db import engine_for
    from liftloop.knowledge import copywriter, open_knowledge, sample_knowledge
    from tools.content import ContentError
    from tools.content.evals import EvalReport, load_eval_sets, run_eval_set
    from tools.content.llm import model_error_reason
    from tools.content.releases import record_evaluation

    try:
        sets = load_eval_sets()
    except ContentError as exc:
        output.fail_on(exc, as_json=as_json)
    if template is not None and template not in sets:
        have = ", ".join(sorted(sets))
        output.fail("template", f"no eval set for {template!r}; have {have}", as_json=as_json)
    settings = get_settings()
    knowledge = open_knowledge(settings) if data_kb else sample_knowledge(settings)
    # The copywriter the loop uses: the same models, policies around each call and ledger.
    writer = copywriter(settings, knowledge)
    router = writer.router
    chosen = [sets[template]] if template else [sets[k] for k in sorted(sets)]

    async def run_all() -> list[EvalReport]:
        return [await run_eval_set(writer, s) for s in chosen]

    try:
        reports = asyncio.run(run_all())
    except ContentError as exc:
        output.fail_on(exc, as_json=as_json)
    except ModelAPIError as exc:
        output.fail("llm_model", model_error_reason(exc), as_json=as_json, code=output.FAILURE)
    engine = engine_for(settings.cdp_url)
    results, lines = [], []
    for report in reports:
        prompt = writer.library.get(report.template)
        row = record_evaluation(engine, prompt, router.name_for(prompt.task), report)
        results.append(
            {
                **report.model_dump(mode="json"),
                "version": row.version,
                "digest": row.template_digest[:12],
                "model": row.model,
                "evaluation_id": row.id,
            }
        )
        verdict = "released" if report.ok else "not released"
        rates = ", ".join(f"{check} {rate:.0%}" for check, rate in report.rates.items())
        lines.append(
            f"{report.template} v{row.version} with {row.model}: {report.passed} passed, "
            f"{report.failed} failed ({report.pass_rate:.0%}, {report.min_pass_rate:.0%} "
            f"needed) - {verdict}\n  {rates}"
        )
        lines += [
            f"  FAIL {c.case_id}: {'; '.join(c.failures)}" for c in report.cases if not c.passed
        ]
    output.emit(
        {
            "passed": sum(r.passed for r in reports),
            "failed": sum(r.failed for r in reports),
            "ok": all(r.ok for r in reports),
            "templates": results,
        },
        as_json=as_json,
        human="\n".join(lines),
    )
    if not all(r.ok for r in reports):
        raise typer.Exit(output.FAILURE)


@prompts.command("releases")
def prompts_releases(as_json: JsonOption = False) -> None:
    """Recorded evaluations: the latest per template version, digest and model, and whether it
    is the template as it is now."""
    from liftloop.db import engine_for
    from tools.content.prompts import default_library
    from tools.content.releases import latest_evaluations

    library = default_library()
    current = {i: library.get(i).digest for i in library.ids()}
    evaluations = latest_evaluations(engine_for(get_settings().cdp_url))
    rows = [
        {
            "template": e.template_id,
            "version": e.version,
            "digest": e.template_digest[:12],
            "model": e.model,
            "passed": e.passed,
            "current": current.get(e.template_id) == e.template_digest,
            "pass_rate": e.pass_rate,
            "rates": e.rates,
            "cases_passed": e.cases_passed,
            "cases_failed": e.cases_failed,
            "evaluated_at": e.evaluated_at_utc.isoformat(),
        }
        for e in evaluations
    ]
    human = "\n".join(
        f"{e.template_id}  v{e.version}  {e.template_digest[:12]}  {e.model}"
        f"  {'passed' if e.passed else 'failed'}"
        f"  {'current' if current.get(e.template_id) == e.template_digest else 'superseded'}"
        f"  {e.evaluated_at_utc:%Y-%m-%dT%H:%M:%SZ}"
        for e in evaluations
    )
    output.emit({"releases": rows}, as_json=as_json, human=human)
