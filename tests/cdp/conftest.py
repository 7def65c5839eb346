"""Fixtures of the CDP tests: a real PostgreSQL server started by the tests, and a `db_url`
parametrised over SQLite and PostgreSQL so every database test runs on both.

The server fixture is self-contained so it can move to the shared conftest unchanged.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from liftloop.db import make_engine
from tools.cdp.contracts import ContractRegistry
from tools.cdp.tables import ensure_cdp_tables


def _postgres_bindir() -> Path | None:
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for path in candidates:
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[str]:
    """A throwaway PostgreSQL server on loopback; yields its admin URL (database `postgres`).

    initdb and pg_ctl refuse to run as root, so as root they run as the `postgres` user on a
    directory that user owns."""
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
    as_user: list[str] = []
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root and runuser is missing to drop to the postgres user")
    root = tempfile.mkdtemp(prefix="liftloop-pg-")
    if os.geteuid() == 0:
        try:
            shutil.chown(root, user="postgres", group="postgres")
        except (LookupError, PermissionError) as exc:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip(f"running as root and no usable postgres user ({exc})")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = os.path.join(root, "data"), _free_port()
    subprocess.run(
        [
            *as_user,
            str(bindir / "initdb"),
            "-D",
            data,
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    subprocess.run(
        [
            *as_user,
            str(bindir / "pg_ctl"),
            "-D",
            data,
            "-o",
            options,
            "-l",
            os.path.join(root, "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def _admin(server_url: str, sql: str) -> None:
    import psycopg

    dsn = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL on each engine."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cdp.sqlite'}"
        return
    server = request.getfixturevalue("postgresql_server")
    name = f"t_{uuid.uuid4().hex[:16]}"
    _admin(server, f"CREATE DATABASE {name}")
    try:
        yield server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        _admin(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    ensure_cdp_tables(eng)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture(scope="session")
def registry() -> ContractRegistry:
    return ContractRegistry.load()


def msg(
    kind: str,
    mid: str,
    *,
    uid: str | None = None,
    aid: str | None = None,
    ts: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, "messageId": mid, **fields}
    if uid is not None:
        out["userId"] = uid
    if aid is not None:
        out["anonymousId"] = aid
    if ts is not None:
        out["timestamp"] = ts
    return out


def order(mid: str, uid: str, revenue: float, ts: str, **kw: Any) -> dict[str, Any]:
    props = {"order_id": f"o-{mid}", "revenue": revenue}
    return msg("track", mid, uid=uid, ts=ts, event="order_completed", properties=props, **kw)


@pytest.fixture(scope="session")
def m() -> SimpleNamespace:
    """Message builders: `m.msg(kind, messageId, uid=, aid=, ts=, **fields)` and `m.order`."""
    return SimpleNamespace(msg=msg, order=order)
