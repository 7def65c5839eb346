"""The long-running processes that `liftloop up` starts: worker, SMTP server, API."""

from __future__ import annotations

import asyncio
import signal
import threading

import uvicorn

from liftloop.retention import keep_retention_schedule
from liftloop.runtime import mark_ready
from liftloop.settings import Settings
from liftloop.smtp_sink import start_smtp_sink
from liftloop.telemetry import flush_tracing, setup_tracing
from liftloop.temporal import build_worker, connect


def serve_worker(settings: Settings) -> None:
    setup_tracing(settings, "worker")

    async def main() -> None:
        client = await connect(settings)
        worker = build_worker(client, settings)
        await keep_retention_schedule(client, settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with worker:
            mark_ready(settings, "worker")
            await stop.wait()
        flush_tracing()

    asyncio.run(main())


def serve_smtp(settings: Settings) -> None:
    controller = start_smtp_sink(settings.smtp_host, settings.smtp_port, settings.mailbox_path)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    controller.stop()


def serve_api(settings: Settings) -> None:
    from liftloop.api import create_app

    setup_tracing(settings, "api")
    uvicorn.run(
        create_app(settings), host=settings.api_host, port=settings.api_port, log_level="warning"
    )
