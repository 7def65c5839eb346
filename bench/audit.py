"""Audit log benchmark: appends per second (one writer, and four processes at once on one
chain), the cost of the chain beside a plain insert of the same rows, and verification speed.

    .venv/bin/python bench/audit.py [--entries N] [--postgres URL]

The peer is the same row written by a plain INSERT, without the lock, the head read, the hash
and the seal: what a non-chained audit table costs on the same database in the same run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from liftloop.db import make_engine
from tools.audit import AuditEvent, AuditLog, verify_chain

KEY = b"benchmark-audit-key"


def _event(i: int, actor: str = "bench") -> AuditEvent:
    return AuditEvent(
        kind="send.batch",
        actor=actor,
        campaign_id="bench",
        subject=f"shard-{i % 4}",
        details={"sent": 250, "failed": 0, "suppressed": 3, "providers": {"email": "smtp"}},
    )


def _append(url: str, n: int, actor: str) -> None:
    log = AuditLog(make_engine(url, background_checkpoint=False), KEY)
    for i in range(n):
        log.append(_event(i, actor))


def _plain(url: str, n: int) -> float:
    engine = make_engine(url, background_checkpoint=False)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE plain_log (id INTEGER PRIMARY KEY, body TEXT)"))
    body = _event(0).model_dump_json()
    start = time.perf_counter()
    for i in range(n):
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO plain_log (id, body) VALUES (:i, :b)"), {"i": i, "b": body}
            )
    return n / (time.perf_counter() - start)


def run(url: str, entries: int) -> None:
    start = time.perf_counter()
    _append(url, entries, "one")
    one = entries / (time.perf_counter() - start)

    each = entries // 4
    start = time.perf_counter()
    workers = [multiprocessing.Process(target=_append, args=(url, each, f"w{n}")) for n in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    four = 4 * each / (time.perf_counter() - start)

    plain = _plain(url, entries)
    engine = make_engine(url, background_checkpoint=False)
    start = time.perf_counter()
    report = verify_chain(engine, KEY)
    verify_s = time.perf_counter() - start
    assert report.ok, report
    print(f"database: {engine.dialect.name}")
    print(f"append, one writer:        {one:8.0f} entries/s")
    print(f"append, 4 processes:       {four:8.0f} entries/s (one chain)")
    print(f"peer, plain INSERT:        {plain:8.0f} rows/s (no chain)")
    print(f"verify {report.entries} entries: {verify_s:6.2f} s ({report.entries / verify_s:.0f}/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=4000)
    parser.add_argument("--postgres", help="a PostgreSQL URL with an empty database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(f"sqlite:///{Path(tmp) / 'audit.sqlite'}", args.entries)
    if args.postgres:
        run(args.postgres, args.entries)


if __name__ == "__main__":
    main()
