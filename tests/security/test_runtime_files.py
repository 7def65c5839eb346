"""Findings: every data file was world-readable, and the embedded runtime accepted `dev-key`
out of the box. Replayed here with the real command line: `liftloop demo` (which runs `up`,
then a campaign whose escalations it approves through liftloop's approval path), then the
modes of everything in the data directory, the API with `dev-key` and with the generated key,
and where the dev server listens."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx

from liftloop import runtime
from liftloop.settings import Settings
from tests.loop.conftest import free_port

LIFTLOOP = [sys.executable, "-m", "liftloop.cli"]
PORTS = (
    "TEMPORAL_PORT",
    "TEMPORAL_HTTP_PORT",
    "TEMPORAL_METRICS_PORT",
    "TEMPORAL_UI_PORT",
    "API_PORT",
    "SMTP_PORT",
)


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFTLOOP_")}
    env.update({f"LIFTLOOP_{name}": str(free_port()) for name in PORTS})
    env.update({"LIFTLOOP_DATA_DIR": str(data_dir), "LIFTLOOP_ATTRIBUTION_WINDOW_OVERRIDE_S": "1"})
    env.update({f"LIFTLOOP_{k}": v for k, v in extra.items()})
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LIFTLOOP, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def _listeners(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp has them) listening on `port` (IPv4)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(address)
    return found


def test_up_makes_private_keys_and_files_and_refuses_dev_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = _env(data)
    try:
        demo = _run(
            ["demo", "--profiles", "300", "--cycles", "1", "--approve-all", "--json"], env, tmp_path
        )
        assert demo.returncode == 0, demo.stderr[-3000:]
        report = json.loads(demo.stdout)
        # The demo's approvals went through liftloop's path, signed with the generated key.
        assert report["approvals"]["requested"] > 0
        assert report["approvals"]["approved"] == report["approvals"]["requested"]

        snapshot = _run(["kb", "snapshot"], env, tmp_path)  # the knowledge base's files too
        assert snapshot.returncode == 0, snapshot.stderr
        up = _run(["up"], env, tmp_path)  # already running: reuses processes and keys
        assert up.returncode == 0, up.stderr
        lines = [line for line in up.stdout.splitlines() if line.startswith("keys:")]
        assert lines == [
            f"keys: api-key, approval-signing-key, audit-signing-key, knowledge-signing-key in "
            f"{data / 'secrets'}"
            " (mode 0600)"
        ], up.stdout

        # Every file and directory the runtime wrote is its user's alone.
        written = [data, *data.rglob("*")]
        names = {p.name for p in written}
        assert {"cdp.sqlite", "temporal.sqlite", "api-key", "worker.log"} <= names, names
        for part in ("outbox", "smtp", "knowledge", "logs", "run", "secrets"):
            assert (data / part).is_dir(), part
        opened = [
            f"{p.relative_to(tmp_path)} {stat.filemode(p.lstat().st_mode)}"
            for p in written
            if not p.is_symlink() and p.lstat().st_mode & 0o077
        ]
        assert opened == []
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for key_file in (data / "secrets").iterdir():
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

        api = f"http://127.0.0.1:{env['LIFTLOOP_API_PORT']}"
        generated = (data / "secrets" / "api-key").read_text().strip()
        track = {"messageId": "m-1", "userId": "u-1", "event": "email_opened"}
        with httpx.Client(base_url=api, timeout=10) as http:
            assert http.get("/v1/approvals", headers={"X-API-Key": "dev-key"}).status_code == 401
            assert (
                http.post("/v1/track", json=track, headers={"X-API-Key": "dev-key"}).status_code
                == 401
            )
            assert http.get("/v1/approvals", headers={"X-API-Key": generated}).status_code == 200
            assert (
                http.post("/v1/track", json=track, headers={"X-API-Key": generated}).status_code
                == 200
            )

        # The dev server, its UI and the API listen on loopback only.
        if Path("/proc/net/tcp").exists():
            loopback = "0100007F"
            for name in ("TEMPORAL_PORT", "TEMPORAL_UI_PORT", "API_PORT", "SMTP_PORT"):
                assert _listeners(int(env[f"LIFTLOOP_{name}"])) == {loopback}, name
    finally:
        down = _run(["down"], env, tmp_path)
    assert down.returncode == 0, down.stderr


def test_up_with_dev_key_fails_naming_the_setting_and_starts_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for setting, value in (
        ("API_KEYS", '["dev-key"]'),
        ("KNOWLEDGE_SIGNING_KEY", "liftloop-dev-signing-key"),
    ):
        result = _run(["up"], _env(data, **{setting: value}), tmp_path)
        assert result.returncode == 1, result.stdout
        assert f"LIFTLOOP_{setting}" in result.stderr and "LIFTLOOP_DEV_MODE" in result.stderr
        assert "Traceback" not in result.stderr
        assert not (data / "run").exists()
    # The API and the worker on their own refuse it as well, before they listen or poll.
    for service in ("api", "worker"):
        result = _run(["serve", service], _env(data, API_KEYS='["dev-key"]'), tmp_path)
        assert result.returncode != 0
        assert "InsecureSettingError: LIFTLOOP_API_KEYS" in result.stderr


def test_the_dev_server_binds_to_loopback() -> None:
    command = runtime._command(Settings(), "temporal")
    assert command[command.index("--ip") + 1] == "127.0.0.1"
    assert command[command.index("--ui-ip") + 1] == "127.0.0.1"
