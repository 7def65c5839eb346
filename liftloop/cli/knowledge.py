"""Knowledge and generation: `kb ingest|search|snapshot|verify`, `generate`, `prompts list|eval`,
`plan`, `plan-decide`."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from liftloop.cli import output
from liftloop.cli.output import JsonOption
from liftloop.settings import get_settings

if TYPE_CHECKING:
    from agents.checkpoint import SQLiteFileSaver


kb = typer.Typer(name="kb", help="Knowledge base: ingest documents, search, signed snapshots.")
prompts = typer.Typer(name="prompts", help="Prompt templates and their eval sets.")
app = typer.Typer()
app.add_typer(kb)
app.add_typer(prompts)


def register(root: typer.Typer) -> None:
    """Add `kb`, `prompts`, `generate`, `plan` and `plan-decide` to `root`."""
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
        report = open_knowledge(get_settings()).ingest(paths, groups=_split(groups))
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
    from agents.copywriter import generate_variant
    from liftloop.knowledge import copywriter
    from tools.content import ContentError, VariantRequest
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
    human = (
        f"Subject: {variant.subject}\nPreheader: {variant.preheader}\n\n{variant.body}\n\n"
        f"[{variant.cta}]\n\ncitations: {', '.join(variant.citations)}"
        f"  snapshot: {variant.snapshot_id}  escalated: {variant.escalated}"
    )
    output.emit(variant.model_dump(mode="json"), as_json=as_json, human=human)


@prompts.command("list")
def prompts_list(as_json: JsonOption = False) -> None:
    """Templates with their versions."""
    from tools.content.prompts import default_library

    library = default_library()
    rows = [
        {"id": t.id, "version": t.version, "channel": t.channel, "task": t.task}
        for t in (library.get(i) for i in library.ids())
    ]
    human = "\n".join(f"{r['id']}  v{r['version']}  {r['channel']}  {r['task']}" for r in rows)
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
    """Run each template's eval set (policy, citations, length, required, banned)."""
    import secrets

    from agents.copywriter import Copywriter
    from liftloop.knowledge import KNOWLEDGE_SEED, model_router, open_knowledge
    from liftloop.settings import get_settings
    from tools.content.evals import load_eval_sets, run_eval_set
    from tools.rag import KnowledgeBase
    from tools.rag.embeddings import embedder_from_name
    from tools.rag.index import EmbeddedIndex

    sets = load_eval_sets()
    if template is not None and template not in sets:
        have = ", ".join(sorted(sets))
        output.fail("template", f"no eval set for {template!r}; have {have}", as_json=as_json)
    settings = get_settings()
    if data_kb:
        knowledge = open_knowledge(get_settings())
    else:
        knowledge = KnowledgeBase(
            EmbeddedIndex(),
            embedder_from_name(settings.embedding_model),
            # An in-memory base for this run only: its snapshots need no lasting key.
            secrets.token_bytes(32),
        )
        knowledge.ingest([KNOWLEDGE_SEED])
    copywriter = Copywriter(knowledge, router=model_router(settings))
    chosen = [sets[template]] if template else [sets[k] for k in sorted(sets)]

    async def run_all() -> list[dict[str, Any]]:
        return [(await run_eval_set(copywriter, s)).model_dump(mode="json") for s in chosen]

    reports = asyncio.run(run_all())
    failed = sum(r["failed"] for r in reports)
    lines = []
    for report in reports:
        lines.append(f"{report['template']}: {report['passed']} passed, {report['failed']} failed")
        lines += [
            f"  FAIL {c['case_id']}: {'; '.join(c['failures'])}"
            for c in report["cases"]
            if not c["passed"]
        ]
    output.emit(
        {"passed": sum(r["passed"] for r in reports), "failed": failed, "templates": reports},
        as_json=as_json,
        human="\n".join(lines),
    )
    if failed:
        raise typer.Exit(output.FAILURE)


@app.command("plan")
def plan(
    brief: str,
    campaign_id: Annotated[str, typer.Option(help="id of the campaign to plan")] = "",
    as_json: JsonOption = False,
) -> None:
    """Turn a brief into a campaign spec; stops where a human approves before the start."""
    from agents.planner import PlannerTools, PlanningError, build_planner, start_plan
    from liftloop.knowledge import open_knowledge
    from tools.rag import SearchFilter

    knowledge = open_knowledge(get_settings())

    def search(query: str, market: str | None, language: str) -> list[dict[str, Any]]:
        if not knowledge.index.all_chunks():
            return []
        flt = SearchFilter(market=market, language=language)
        return [
            {"doc_id": h.doc_id, "chunk_id": h.chunk_id, "score": h.score}
            for h in knowledge.search(query, flt, k=3)
        ]

    words = re.findall(r"[a-z0-9]+", brief.lower())[:4]
    campaign = campaign_id or "plan-" + "-".join(words)
    saver = _planner_saver()
    try:
        graph = build_planner(PlannerTools(knowledge_search=search), saver)
        result = start_plan(graph, brief, campaign)
    except PlanningError as exc:
        output.fail_on(exc, as_json=as_json)
    finally:
        saver.close()
    human = yaml.safe_dump(result.spec, sort_keys=False, allow_unicode=True)
    output.emit(
        result.model_dump(mode="json"),
        as_json=as_json,
        human=f"{human}\nstatus: {result.status} (thread {result.thread_id})",
    )


@app.command("plan-decide")
def plan_decide(
    thread_id: str,
    approve: Annotated[bool, typer.Option("--approve/--reject")] = False,
    approver: Annotated[str, typer.Option("--by", help="who decides")] = "",
    comment: Annotated[str, typer.Option()] = "",
    spec_out: Annotated[
        Path | None,
        typer.Option(help="write the approved spec here, for `liftloop campaign start`"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Approve or reject a plan that waits at its approval step."""
    from agents.planner import (
        ApprovalDecision,
        PlannerTools,
        PlanningError,
        build_planner,
        resume_plan,
    )

    saver = _planner_saver()
    decision = ApprovalDecision(approved=approve, approver=approver, comment=comment)
    try:
        result = resume_plan(build_planner(PlannerTools(), saver), thread_id, decision)
    except PlanningError as exc:
        output.fail_on(exc, as_json=as_json)
    finally:
        saver.close()
    if spec_out is not None and result.status == "approved":
        spec_out.write_text(
            yaml.safe_dump(result.spec, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
    output.emit(
        result.model_dump(mode="json"), as_json=as_json, human=f"{thread_id}: {result.status}"
    )


def _planner_saver() -> SQLiteFileSaver:
    from agents.checkpoint import SQLiteFileSaver
    from liftloop.settings import get_settings

    return SQLiteFileSaver(Path(get_settings().data_dir) / "planner.sqlite")
