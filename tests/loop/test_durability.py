"""SIGKILL the worker in the middle of a send stage and let a standby worker take over: the send
resumes within seconds (the send activity's heartbeat timeout, not its start-to-close timeout,
notices the dead worker), the cycle completes and every message is in the outbox and at the
SMTP server exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import func, select

from liftloop.loop.delivery_audit import audit_deliveries
from liftloop.loop.tables import OutboxMessage
from tests.loop.helpers import drive, spec, start
from tools.simulation.customers import generate_customers

# Kill to the first message the retried send delivers: the heartbeat timeout (10 s; the SDK
# sends heartbeats at most every 8 s), the first retry (1 s), the standby worker's connect and
# the retried attempt's reads; the bound is loose for a loaded CI machine.
RESUME_BOUND_S = 15.0
# `liftloop serve worker` with its imports done (several seconds on a loaded machine), waiting
# for a file before it connects: a warm standby, as another running worker would be.
_STANDBY = """
import pathlib, sys, time
import liftloop.services, liftloop.temporal
from liftloop.cli.system import serve
go = pathlib.Path(sys.argv[1])
while not go.exists():
    time.sleep(0.02)
serve("worker")
"""


def _start_worker(env_vars: dict[str, str], go: Path | None = None) -> subprocess.Popen[bytes]:
    command = ["-c", _STANDBY, str(go)] if go else ["-m", "liftloop.cli", "serve", "worker"]
    return subprocess.Popen(
        [sys.executable, *command],
        env={**os.environ, **env_vars},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=None,
    )


async def test_worker_killed_mid_send_delivers_exactly_once(
    dev_env,
    settings,
    engine,
    smtp,  # type: ignore[no-untyped-def]
    task_queue,
):
    batch = f"b{uuid.uuid4().hex[:8]}"
    generate_customers(engine, 6000, batch=batch)
    s = spec(f"c-{batch}", batch, offers=[{"id": "content"}], channels=["email"])
    env_vars = {
        "LIFTLOOP_DATA_DIR": str(settings.data_dir),
        "LIFTLOOP_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "LIFTLOOP_TASK_QUEUE": task_queue,
        "LIFTLOOP_SMTP_PORT": str(settings.smtp_port),
        "LIFTLOOP_SHARDS": str(settings.shards),
    }
    go = settings.data_dir / "standby-go"
    workers = [_start_worker(env_vars), _start_worker(env_vars, go)]
    try:
        handle = await start(dev_env.client, settings, s, task_queue)

        def sent() -> tuple[int, int]:
            with engine.connect() as conn:
                rows = dict(
                    conn.execute(
                        select(OutboxMessage.status, func.count())
                        .where(OutboxMessage.campaign_id == s.id)
                        .group_by(OutboxMessage.status)
                    ).all()
                )
            return rows.get("sent", 0), sum(rows.values())

        killed_at = None
        for _ in range(1200):
            done, total = sent()
            if 0 < done < total:
                os.killpg(workers[0].pid, signal.SIGKILL)
                workers[0].wait()
                # Counted again after the kill: a batch may have committed between the read
                # above and the signal.
                killed_at, kill_time = sent()[0], time.monotonic()
                break
            await asyncio.sleep(0.05)
        assert killed_at is not None, "the send stage was never caught in progress"
        await asyncio.sleep(1.0)
        assert sent()[0] == killed_at < sent()[1], "nothing may be sent while no worker runs"

        go.touch()  # the standby worker connects
        while sent()[0] == killed_at and time.monotonic() - kill_time < 120:
            await asyncio.sleep(0.1)
        resumed_after = time.monotonic() - kill_time
        print(f"send resumed {resumed_after:.1f} s after the SIGKILL")
        out = await asyncio.wait_for(drive(dev_env.client, handle, settings=settings), timeout=240)
    finally:
        for w in workers:
            if w.poll() is None:
                os.killpg(w.pid, signal.SIGTERM)
                w.wait(timeout=30)
    assert out.outcome == "completed"
    assert resumed_after < RESUME_BOUND_S, f"the send resumed only {resumed_after:.1f} s after"
    audit = audit_deliveries(engine, settings, s.id)
    assert audit.duplicates == 0, audit
    assert audit.missing == 0, audit
    assert audit.outbox_sent == audit.delivered, audit
    assert out.history[0].sent == audit.outbox_sent, (out.history[0], audit)
    assert audit.outbox_sent > killed_at
    assert sent()[0] == sent()[1]
