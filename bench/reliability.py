"""Reliability of the embedded default under faults, in three parts; it prints figures and judges
nothing (docs/benchmarks.md has a full run's).

chaos   The demo's campaign (`liftloop.demo`: its spec, its simulated customers, every escalation
        approved) on the embedded runtime, while the worker is SIGKILLed in the middle of send
        stages (and started again, cold) and Temporal's dev server is restarted: messages at the
        SMTP sink, duplicates, missing, outbox states (`audit_deliveries`), how long each kill
        stalled the send, wall time.
load    Senders posting event batches to the CDP's `POST /v1/batch` (a source's write key as
        `Authorization: Bearer`) at once for a while, every tenth batch posted twice as a
        client retry would: throughput, latency, errors, then the events counted in the CDP
        (lost: accepted but not stored; doubled: stored more than once).
fuzz    The project's hypothesis fuzz tests of the API (tests/api/test_fuzz.py, else
        tests/cdp/test_fuzz.py) through pytest: examples run, failures.

    python bench/reliability.py            # 10,000 profiles, 20 kills, 3 restarts, 60 s of load
    python bench/reliability.py --quick    # 2,000 profiles, 3 kills, 1 restart, 10 s (~2 min)

`--heartbeats 10000,100000` adds, per size, how often the send activity heartbeats (run
in-process through Temporal's ActivityEnvironment against the same SMTP sink, 4 shards at
once as the worker runs them): its heartbeat timeout must outlast the longest gap.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import func  # noqa: E402
from sqlmodel import col, select  # noqa: E402

from liftloop import runtime  # noqa: E402
from liftloop.audit import audit_log  # noqa: E402
from liftloop.db import engine_for  # noqa: E402
from liftloop.demo import run_demo  # noqa: E402
from liftloop.loop.delivery_audit import audit_deliveries  # noqa: E402
from liftloop.loop.tables import OutboxMessage  # noqa: E402
from liftloop.settings import Settings  # noqa: E402
from liftloop.temporal import connect, forward_temporal_logs  # noqa: E402
from tools.cdp.sources import create_source  # noqa: E402
from tools.cdp.tables import Event  # noqa: E402
from tools.content.ledger import SqlCostLedger  # noqa: E402

SIZES = {
    "full": {"profiles": 10_000, "cycles": 6, "kills": 20, "restarts": 3, "load_s": 60.0},
    "quick": {"profiles": 2_000, "cycles": 3, "kills": 3, "restarts": 1, "load_s": 10.0},
}
# Each restart leaves the dev server down this long: past the Temporal client's own retries
# (about 10 s), so the workers' and the demo's reconnects are what carry the campaign.
OUTAGE_S = {"full": 15.0, "quick": 12.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(work: Path, shards: int) -> Settings:
    return Settings(
        data_dir=work / "data",
        shards=shards,
        temporal_port=_free_port(),
        temporal_http_port=_free_port(),
        temporal_metrics_port=_free_port(),
        temporal_ui_port=_free_port(),
        api_port=_free_port(),
        smtp_port=_free_port(),
        task_queue="reliability",
    )


def _export(settings: Settings) -> None:
    """The runtime's processes (and `get_settings()` here) read the same settings."""
    os.environ.update(
        {
            "LIFTLOOP_DATA_DIR": str(settings.data_dir),
            "LIFTLOOP_SHARDS": str(settings.shards),
            "LIFTLOOP_TASK_QUEUE": settings.task_queue,
            **{
                f"LIFTLOOP_{name.upper()}": str(getattr(settings, name))
                for name in (
                    "temporal_port",
                    "temporal_http_port",
                    "temporal_metrics_port",
                    "temporal_ui_port",
                    "api_port",
                    "smtp_port",
                )
            },
        }
    )


def _median_max(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"median {statistics.median(values):.1f} s, max {max(values):.1f} s (n={len(values)})"


# -- chaos ---------------------------------------------------------------------------------


def _outbox(engine: Any) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(
            conn.execute(
                select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
            ).all()
        )


async def _until(check: Callable[[], bool], timeout: float, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(every)
    return False


def _schedule(kills: int, restarts: int) -> list[str]:
    """Kills with the restarts spread evenly between them."""
    events = ["kill"] * kills
    for j in range(restarts):
        events.insert(round((j + 1) * (kills + j) / (restarts + 1)), "restart")
    return events


async def chaos(settings: Settings, size: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    engine = engine_for(settings.cdp_url)
    client = await connect(settings)
    stages: list[str] = ["starting"]
    started = time.monotonic()
    demo = asyncio.ensure_future(
        run_demo(
            client,
            settings,
            profiles=size["profiles"],
            cycles=size["cycles"],
            approve_all=True,
            ui_url=lambda wid: runtime.ui_url(settings, wid),
            on_status=lambda st: stages.append(f"cycle {st.cycle} {st.stage}"),
        )
    )
    back: list[float] = []  # kill → the new worker polls (a cold start)
    resumed: list[float] = []  # kill → the next message marked sent
    away: list[float] = []  # dev server stopped → ready again
    kills = restarts = 0
    for event in _schedule(size["kills"], size["restarts"]):
        await asyncio.sleep(rng.uniform(0.5, 2.5))
        if demo.done():
            break
        if event == "restart":
            away.append(
                await asyncio.to_thread(
                    runtime.restart_service, settings, "temporal", down_s=size["outage_s"]
                )
            )
            restarts += 1
            print(f"  restart {restarts}: dev server away {away[-1]:.1f} s ({stages[-1]})")
            continue
        # A kill in the middle of a send stage: rows pending, some of the campaign sent.
        if not await _until(lambda: _outbox(engine).get("pending", 0) > 0 or demo.done(), 900):
            break
        if demo.done():
            break
        before = _outbox(engine).get("sent", 0)
        killed = time.monotonic()
        await asyncio.to_thread(runtime.kill_service, settings, "worker")
        kills += 1
        await asyncio.to_thread(runtime.start_service, settings, "worker")
        await asyncio.to_thread(runtime.wait_ready, settings, "worker", 300)
        back.append(time.monotonic() - killed)

        def progressed(before: int = before) -> bool:
            o = _outbox(engine)
            return o.get("sent", 0) > before or not o.get("pending")

        await _until(progressed, 900)
        resumed.append(time.monotonic() - killed)
        print(
            f"  kill {kills}: worker back {back[-1]:.1f} s, send resumed {resumed[-1]:.1f} s"
            f" ({stages[-1]})"
        )
    report = await asyncio.wait_for(demo, timeout=3600)
    wall = time.monotonic() - started
    audit = audit_deliveries(engine, settings, report.campaign_id)
    with sqlite3.connect(settings.mailbox_path) as conn:
        mails, deliveries = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(deliveries), 0) FROM messages WHERE campaign_id = ?",
            (report.campaign_id,),
        ).fetchone()
    states = _outbox(engine)
    return {
        "profiles": size["profiles"],
        "cycles": report.cycles,
        "outcome": report.outcome,
        "kills": kills,
        "kills_planned": size["kills"],
        "restarts": restarts,
        "restarts_planned": size["restarts"],
        "outage_s": size["outage_s"],
        "worker_back": back,
        "resumed": resumed,
        "away": away,
        "mails": mails,
        "redeliveries_refused": deliveries - mails,
        "file_outbox": audit.delivered - mails,
        "duplicates": audit.duplicates,
        "missing": audit.missing,
        "outbox": states,
        "wall_s": wall,
    }


def print_chaos(r: dict[str, Any], shards: int) -> None:
    o = r["outbox"]
    print(f"chaos: profiles {r['profiles']:,}, cycles {r['cycles']}, shards {shards}")
    print(
        f"chaos: kills {r['kills']} of {r['kills_planned']} (worker SIGKILL mid-send, restarted"
        f" cold), dev-server restarts {r['restarts']} of {r['restarts_planned']}"
        f" (each down {r['outage_s']:.0f} s)"
    )
    print(f"chaos: worker back after a kill {_median_max(r['worker_back'])}")
    print(f"chaos: send resumed after a kill {_median_max(r['resumed'])}")
    print(f"chaos: dev server away per restart (stop, down, start, ready) {_median_max(r['away'])}")
    print(
        f"chaos: at the sink {r['mails']:,} e-mails ({r['redeliveries_refused']:,} redeliveries"
        f" refused by Message-ID), {r['file_outbox']:,} push messages in the file outbox"
    )
    print(f"chaos: duplicates {r['duplicates']}")
    print(f"chaos: missing {r['missing']}")
    print(
        f"chaos: outbox sent {o.get('sent', 0):,}, failed {o.get('failed', 0):,}, suppressed"
        f" {o.get('suppressed', 0):,}, pending {o.get('pending', 0):,}"
    )
    print(f"chaos: wall time {r['wall_s']:.1f} s (outcome {r['outcome']})")


# -- load ----------------------------------------------------------------------------------


def _batch(prefix: str, n: int, rng: random.Random) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "type": "track",
            "messageId": f"{prefix}-{j}",
            "userId": f"load-u{rng.randrange(2000)}",
            "event": "product_viewed",
            "properties": {"product_id": f"p{rng.randrange(5000)}"},
            "timestamp": now,
        }
        for j in range(n)
    ]


async def load(
    settings: Settings, seconds: float, senders: int, batch_size: int, rng: random.Random
) -> dict[str, Any]:
    engine = engine_for(settings.cdp_url)
    stamp = uuid.uuid4().hex[:8]
    key = create_source(engine, f"load-{stamp}")
    url = f"http://{settings.api_host}:{settings.api_port}/v1/batch"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counts = {"requests": 0, "reposts": 0, "events_posted": 0, "accepted": 0, "duplicates": 0}
    counts.update({"quarantined": 0, "repost_accepted": 0, "repost_duplicates": 0})
    end = time.monotonic() + seconds

    async def post(http: httpx.AsyncClient, body: bytes) -> dict[str, int] | None:
        t = time.perf_counter()
        try:
            r = await http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            return None
        finally:
            latencies.append(time.perf_counter() - t)
            counts["requests"] += 1
        if r.status_code != 200:
            errors[f"HTTP {r.status_code}"] = errors.get(f"HTTP {r.status_code}", 0) + 1
            return None
        result: dict[str, int] = r.json()
        return result

    async def sender(k: int, http: httpx.AsyncClient) -> None:
        i = 0
        while time.monotonic() < end:
            msgs = _batch(f"load-{stamp}-{k}-{i}", batch_size, rng)
            body = json.dumps({"batch": msgs}).encode()
            result = await post(http, body)
            counts["events_posted"] += len(msgs)
            if result:
                for field in ("accepted", "duplicates", "quarantined"):
                    counts[field] += result.get(field, 0)
            if i % 10 == 9:  # a client retrying a batch it did not hear back about
                again = await post(http, body)
                counts["reposts"] += 1
                if again:
                    counts["repost_accepted"] += again.get("accepted", 0)
                    counts["repost_duplicates"] += again.get("duplicates", 0)
            i += 1

    started = time.perf_counter()
    limits = httpx.Limits(max_connections=senders)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        await asyncio.gather(*[sender(k, http) for k in range(senders)])
    wall = time.perf_counter() - started
    with engine.connect() as conn:
        stored, distinct = conn.execute(
            select(func.count(), func.count(func.distinct(col(Event.message_id)))).where(
                col(Event.message_id).like(f"load-{stamp}-%")
            )
        ).one()
    return {
        **counts,
        "senders": senders,
        "batch": batch_size,
        "seconds": wall,
        "latencies": latencies,
        "errors": errors,
        "stored": stored,
        "distinct": distinct,
    }


def print_load(r: dict[str, Any]) -> None:
    lat = sorted(r["latencies"]) or [float("nan")]
    p50 = lat[len(lat) // 2] * 1000
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    # Lost: accepted on first post but not stored; doubled: accepted again on a repost, or
    # stored more than once.
    lost = r["accepted"] - r["stored"]
    doubled = r["repost_accepted"] + (r["stored"] - r["distinct"])
    errors = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items())) or "none"
    print(
        f"load: requests {r['requests']:,} in {r['seconds']:.1f} s from {r['senders']} senders,"
        f" batches of {r['batch']} (every tenth posted twice: {r['reposts']:,} reposts)"
    )
    print(
        f"load: throughput {r['requests'] / r['seconds']:,.1f} requests/s,"
        f" {r['events_posted'] / r['seconds']:,.0f} events/s posted"
    )
    print(f"load: latency p50 {p50:,.0f} ms, p99 {p99:,.0f} ms per request")
    print(f"load: errors {sum(r['errors'].values())} ({errors})")
    print(
        f"load: events posted {r['events_posted']:,} (and {r['reposts'] * r['batch']:,} again:"
        f" {r['repost_duplicates']:,} answered as duplicates), accepted {r['accepted']:,},"
        f" quarantined {r['quarantined']:,}, stored in the CDP {r['stored']:,}, lost {lost},"
        f" doubled {doubled}"
    )


# -- fuzz ----------------------------------------------------------------------------------


def fuzz(quick: bool) -> dict[str, Any]:
    target = (
        "tests/api/test_fuzz.py" if (ROOT / "tests" / "api").is_dir() else "tests/cdp/test_fuzz.py"
    )
    args = [sys.executable, "-m", "pytest", target, "-q", "--hypothesis-show-statistics"]
    if quick and target.startswith("tests/api"):
        args += ["-k", "ingestion"]  # the ingestion API only, which the load part drives
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFTLOOP_")}
    started = time.perf_counter()
    run = subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    out = run.stdout + run.stderr
    cases = re.findall(r"(\d+) passing, (\d+) failing, and (\d+) invalid", out)
    passed = re.search(r"(\d+) passed", out)
    failed = re.search(r"(\d+) failed", out)
    return {
        "target": " ".join(args[3:4] + args[6:]),
        "tests_passed": int(passed.group(1)) if passed else 0,
        "tests_failed": int(failed.group(1)) if failed else 0,
        "passing": sum(int(p) for p, _, _ in cases),
        "failing": sum(int(f) for _, f, _ in cases),
        "invalid": sum(int(i) for _, _, i in cases),
        "returncode": run.returncode,
        "seconds": time.perf_counter() - started,
    }


def print_fuzz(r: dict[str, Any]) -> None:
    print(
        f"fuzz: examples {r['passing'] + r['failing']:,} ({r['passing']:,} passing,"
        f" {r['invalid']:,} invalid discarded) in {r['tests_passed'] + r['tests_failed']} tests,"
        f" {r['target']}, {r['seconds']:.0f} s"
    )
    print(
        f"fuzz: failures {r['failing']} failing examples, {r['tests_failed']} failed tests"
        f" (pytest exit {r['returncode']})"
    )


# -- heartbeats ----------------------------------------------------------------------------


def heartbeats(settings: Settings, n: int) -> dict[str, Any]:
    """The send stage of one demo-campaign cycle of n profiles, run as the worker runs it (one
    thread per shard) with the worker's senders: when each shard heartbeats."""
    from temporalio.testing import ActivityEnvironment

    from liftloop.demo import demo_spec
    from liftloop.loop.copy_sources import builtin_copy
    from liftloop.loop.decide import DecideStage
    from liftloop.loop.generate import GenerateStage
    from liftloop.loop.payloads import CycleRef, SendInput, ShardInput
    from liftloop.loop.segment import SegmentStage
    from liftloop.loop.send import MessageLinks, SendStage
    from liftloop.temporal import default_senders
    from policies import PolicyStore
    from tools.models.registry import ModelRegistry
    from tools.simulation.customers import generate_customers

    engine = engine_for(settings.cdp_url)
    batch = f"hb{n}x{uuid.uuid4().hex[:6]}"
    generate_customers(engine, n, batch=batch, seed=n)
    spec = demo_spec(f"heartbeat-{batch}", batch, 1)
    ref = CycleRef(
        campaign_id=spec.id,
        workflow_id=f"campaign-{spec.id}",
        cycle=1,
        spec=spec,
        started_at=datetime.now(UTC),
        attribution_window_s=5.0,
        shards=settings.shards,
    )
    env = ActivityEnvironment()
    env.run(SegmentStage(engine).segment, ref)
    decide = DecideStage(engine, ModelRegistry(settings.data_dir / "models"))
    shards = range(settings.shards)

    def each_shard(work: Callable[[int], object]) -> None:
        threads = [threading.Thread(target=work, args=(s,)) for s in shards]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    each_shard(lambda s: ActivityEnvironment().run(decide.decide, ShardInput(ref=ref, shard=s)))
    audit = audit_log(settings)
    variants = env.run(
        GenerateStage(engine, builtin_copy, audit, SqlCostLedger(engine)).generate, ref
    ).variant_ids
    stage = SendStage(
        engine,
        default_senders(settings),
        PolicyStore.bundled(),
        {"sender_address": settings.sender_address, "imprint": settings.imprint},
        MessageLinks(unsubscribe_url=settings.unsubscribe_url, landing_url=settings.landing_url),
        audit,
    )
    beats: dict[int, list[float]] = {}

    def send(s: int) -> None:
        shard_env = ActivityEnvironment()
        beats[s] = [time.perf_counter()]
        shard_env.on_heartbeat = lambda *_: beats[s].append(time.perf_counter())
        shard_env.run(stage.send, SendInput(ref=ref, shard=s, variant_ids=variants))
        beats[s].append(time.perf_counter())

    started = time.perf_counter()
    each_shard(send)
    wall = time.perf_counter() - started
    first = [b[1] - b[0] for b in beats.values()]
    # Between heartbeats after the first; the last entry is the end of the activity.
    gaps = [y - x for b in beats.values() for x, y in itertools.pairwise(b[1:-1])]
    return {"profiles": n, "first": first, "gaps": gaps, "wall_s": wall}


def print_heartbeats(r: dict[str, Any], shards: int) -> None:
    gaps = sorted(r["gaps"]) or [float("nan")]
    print(
        f"heartbeats: {r['profiles']:,} profiles, {shards} shards at once: first heartbeat after"
        f" {min(r['first']):.1f}-{max(r['first']):.1f} s (outbox written, guards checked, first"
        f" batch sent), then one per batch of 250: median {statistics.median(gaps):.2f} s, max"
        f" {max(gaps):.2f} s; send stage {r['wall_s']:.1f} s"
    )


# -- main ----------------------------------------------------------------------------------


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 profiles, 3 kills, 10 s")
    parser.add_argument("--work", type=Path, help="working directory (default: a temporary one)")
    parser.add_argument("--profiles", type=int)
    parser.add_argument("--cycles", type=int)
    parser.add_argument("--kills", type=int)
    parser.add_argument("--restarts", type=int)
    parser.add_argument("--load-seconds", type=float)
    parser.add_argument("--outage", type=float, help="seconds the dev server stays down")
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100, help="events per /v1/batch request")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--heartbeats", default="", help="sizes, e.g. 10000,100000")
    parser.add_argument("--skip", default="", help="parts to leave out: chaos,load,fuzz")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    size: dict[str, Any] = dict(SIZES[mode])
    size["outage_s"] = OUTAGE_S[mode] if args.outage is None else args.outage
    for name in ("profiles", "cycles", "kills", "restarts"):
        if getattr(args, name) is not None:
            size[name] = getattr(args, name)
    if args.load_seconds is not None:
        size["load_s"] = args.load_seconds
    skip = set(filter(None, args.skip.split(",")))
    work = args.work or Path(tempfile.mkdtemp(prefix="liftloop-reliability-"))
    work.mkdir(parents=True, exist_ok=True)
    settings = _settings(work, args.shards)
    _export(settings)
    forward_temporal_logs()
    rng = random.Random(args.seed)
    print(
        f"reliability ({'quick' if args.quick else 'full'}): embedded runtime (dev server on"
        f" SQLite, CDP on SQLite, SMTP sink, one worker, API), {os.cpu_count()} cores, {work}"
    )
    t0 = time.monotonic()
    try:
        await asyncio.to_thread(runtime.up, settings)
        print(f"  runtime up in {time.monotonic() - t0:.1f} s")
        if "chaos" not in skip:
            print_chaos(await chaos(settings, size, rng), settings.shards)
        if "load" not in skip:
            print_load(await load(settings, size["load_s"], args.senders, args.batch, rng))
        for n in (int(s) for s in args.heartbeats.split(",") if s):
            print_heartbeats(await asyncio.to_thread(heartbeats, settings, n), settings.shards)
    finally:
        await asyncio.to_thread(runtime.down, settings)
    if "fuzz" not in skip:
        print_fuzz(await asyncio.to_thread(fuzz, args.quick))
    print(f"total {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    asyncio.run(main())
