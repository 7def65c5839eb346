"""One campaign cycle on the embedded default (dev server on SQLite, SMTP server, worker, CDP on
SQLite) at several audience sizes, beside one workflow per profile on the same dev server — the
design Dittofeed uses — measured on a capped sample and extrapolated.

    python bench/loop.py [--sizes 10000,100000] [--per-profile-sample 300]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from connectors.ports import OutboundMessage
from connectors.smtp import SmtpSender
from liftloop import runtime
from liftloop.campaigns import loop_input
from liftloop.db import engine_for
from liftloop.loop.spec import parse_spec
from liftloop.settings import Settings
from liftloop.temporal import connect
from tools.simulation.customers import generate_customers
from workflows.campaign_loop import CampaignLoopWorkflow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _spec(campaign_id: str, batch: str) -> object:
    return parse_spec(
        {
            "id": campaign_id,
            "audience": {"segment": {"all": [{"trait": "source_batch", "eq": batch}]}},
            "channels": ["email", "push"],
            "offers": [{"id": "content"}, {"id": "ten_off", "discount_pct": 10}],
            "content": {"market": "US", "brand": "demo"},
            "cadence": {"every": "0s", "max_cycles": 1},
            "stop": {"ship_when": "never", "min_cycles": 1},
            "simulation": {"enabled": True},
        }
    )


async def one_cycle(settings: Settings, client: Client, n: int) -> dict[str, float]:
    engine = engine_for(settings.cdp_url)
    batch = f"bench{n}"
    generate_customers(engine, n, batch=batch, seed=n)
    spec = _spec(f"bench-{n}", batch)
    start = time.perf_counter()
    handle = await client.start_workflow(
        CampaignLoopWorkflow.run,
        loop_input(spec, settings),
        id=f"campaign-bench-{n}",
        task_queue=settings.task_queue,
    )
    out = await handle.result()
    wall = time.perf_counter() - start
    history = await handle.fetch_history()
    return {
        "profiles": n,
        "wall_s": wall,
        "profiles_per_s": n / wall,
        "sent": out.history[0].sent,
        "history_events": len(history.events),
    }


@activity.defn(name="bench.send_one")
def send_one(args: list[str]) -> str:
    host, port, pid = args[0], int(args[1]), args[2]
    SmtpSender(host, port, "bench@liftloop.example").send(
        [
            OutboundMessage(
                id=f"pp-{pid}",
                campaign_id="per-profile",
                channel="email",
                recipient=f"{pid}@customers.example",
                subject="hello",
                body="hello",
            )
        ]
    )
    return pid


@workflow.defn(name="PerProfileWorkflow")
class PerProfileWorkflow:
    @workflow.run
    async def run(self, args: list[str]) -> str:
        return str(
            await workflow.execute_activity(
                "bench.send_one", args, start_to_close_timeout=timedelta(seconds=60)
            )
        )


async def per_profile(settings: Settings, client: Client, sample: int) -> dict[str, float]:
    from concurrent.futures import ThreadPoolExecutor

    queue = "per-profile"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[PerProfileWorkflow],
        activities=[send_one],
        activity_executor=ThreadPoolExecutor(8),
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        sem = asyncio.Semaphore(30)  # more client concurrency made the dev server slower

        async def run(i: int) -> None:
            async with sem:
                await client.execute_workflow(
                    PerProfileWorkflow.run,
                    [settings.smtp_host, str(settings.smtp_port), f"p{i}"],
                    id=f"per-profile-{i}",
                    task_queue=queue,
                )

        start = time.perf_counter()
        await asyncio.gather(*(run(i) for i in range(sample)))
        wall = time.perf_counter() - start
    return {
        "sample": sample,
        "wall_s": wall,
        "profiles_per_s": sample / wall,
        "extrapolated_100k_s": 100_000 / (sample / wall),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--per-profile-sample", type=int, default=300)
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="liftloop-bench-"))
    settings = Settings(
        data_dir=data,
        shards=args.shards,
        attribution_window_override_s=0.5,
        temporal_port=_free_port(),
        temporal_http_port=_free_port(),
        temporal_metrics_port=_free_port(),
        temporal_ui_port=_free_port(),
        api_port=_free_port(),
        smtp_port=_free_port(),
        task_queue="bench",
    )
    env = {
        "LIFTLOOP_" + k.upper(): str(v)
        for k, v in settings.model_dump().items()
        if isinstance(v, int | str | float | Path) and not isinstance(v, bool)
    }
    import os

    os.environ.update(env)
    try:
        runtime.up(settings)
        client = await connect(settings)
        print(
            "embedded default: temporal dev server on SQLite (WAL), CDP on SQLite, "
            f"local SMTP server, {args.shards} shards"
        )
        for n in (int(s) for s in args.sizes.split(",")):
            r = await one_cycle(settings, client, n)
            worker_pid = next(s.pid for s in runtime.status(settings) if s.name == "worker")
            print(
                f"cycle  {r['profiles']:>7,} profiles: {r['wall_s']:6.1f} s wall, "
                f"{r['profiles_per_s']:8,.0f} profiles/s, sent {r['sent']:,}, "
                f"history events {r['history_events']}, "
                f"worker peak RSS {_peak_rss_mib(worker_pid or 0):,.0f} MiB"
            )
        p = await per_profile(settings, client, args.per_profile_sample)
        print(
            f"one workflow per profile (sample {p['sample']}, extrapolated): "
            f"{p['profiles_per_s']:,.1f} profiles/s, 100,000 profiles ≈ "
            f"{p['extrapolated_100k_s']:,.0f} s"
        )
    finally:
        runtime.down(settings)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
