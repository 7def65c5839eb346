"""CDP benchmark: ingestion throughput (direct and through the batch API) and segment counts
over large synthetic data on SQLite and PostgreSQL.

    .venv/bin/python bench/cdp.py [--quick] [--profiles N] [--events N] [--ingest N]
                                  [--rounds N] [--sustained N] [--pg-url URL | --no-pg]

Without --pg-url a throwaway PostgreSQL server is started from the local binaries (as the
`postgres` user when run as root). The reference for ingestion is a raw sqlite3 executemany of
the same rows with no validation, identity resolution or features: the floor of what SQLite
can take.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import resource
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy.engine import Engine

from liftloop.cli.cdp import FILE_BATCH, ingest_file
from liftloop.db import make_engine
from tools.cdp.contracts import ContractRegistry
from tools.cdp.ingest import ingest
from tools.cdp.segments import count_segment
from tools.cdp.tables import ensure_cdp_tables

AS_OF = datetime(2026, 6, 1, tzinfo=UTC)
WINBACK = {
    "all": [
        {"trait": "country", "eq": "DE"},
        {"event": "order_completed", "within": "365d", "count_gte": 1},
        {"event": "order_completed", "within": "90d", "count_eq": 0},
    ]
}
WINBACK_CONSENTED = {"all": [WINBACK, {"consent": {"purpose": "marketing", "channel": "email"}}]}
COUNTRIES = ["DE", "US", "FR", "GB", "AT", "NL"]
EVENTS = [("order_completed", 0.2), ("email_opened", 0.5), ("product_viewed", 0.3)]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def messages(n: int, people: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        name = rng.choices([e for e, _ in EVENTS], [w for _, w in EVENTS])[0]
        props: dict[str, Any] = {}
        if name == "order_completed":
            props = {"order_id": f"o{i}", "revenue": round(rng.uniform(5, 300), 2)}
        elif name == "product_viewed":
            props = {"product_id": f"p{rng.randrange(5000)}"}
        ts = AS_OF - timedelta(seconds=rng.randrange(730 * 86400))
        out.append(
            {
                "type": "track",
                "messageId": f"{seed}-{i}",
                "userId": f"u{rng.randrange(people)}",
                "event": name,
                "properties": props,
                "timestamp": ts.isoformat(),
            }
        )
    return out


def bench_direct(engine: Engine, msgs: list[dict[str, Any]], registry: ContractRegistry) -> float:
    start = time.perf_counter()
    for i in range(0, len(msgs), 1000):
        ingest(engine, msgs[i : i + 1000], source="bench", registry=registry)
    return len(msgs) / (time.perf_counter() - start)


def bench_file(engine: Engine, path: Path, n: int, registry: ContractRegistry) -> float:
    """`liftloop events ingest FILE.jsonl`: reading, JSON and transactions of FILE_BATCH."""
    start = time.perf_counter()
    result = ingest_file(engine, path, source="bench", registry=registry)
    assert result.accepted == n, result
    return n / (time.perf_counter() - start)


def bench_sustained(work: Path, total: int, registry: ContractRegistry) -> None:
    """Ingest `total` messages over 10,000 people into one database, in transactions of 1,000
    and of FILE_BATCH, and print the rate of every 100,000: how ingestion holds up as the
    per-profile indexes outgrow what one transaction touches."""
    chunk = 100_000
    for size in (1000, FILE_BATCH):
        engine = make_engine(f"sqlite:///{work / f'sustained-{size}.sqlite'}")
        ensure_cdp_tables(engine)
        figures = []
        for n in range(0, total, chunk):
            msgs = messages(min(chunk, total - n), 10_000, seed=100 + n)
            start = time.perf_counter()
            for i in range(0, len(msgs), size):
                ingest(engine, msgs[i : i + size], source="bench", registry=registry)
            figures.append(f"{len(msgs) / (time.perf_counter() - start):,.0f}")
        engine.dispose()
        rates = " ".join(figures)
        print(f"sustained sqlite, transactions of {size:>6,}: {rates} events/s per 100k")


def bench_api(engine: Engine, msgs: list[dict[str, Any]]) -> float:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from liftloop.api_cdp import get_cdp_engine, router
    from tools.cdp.sources import create_source

    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[get_cdp_engine] = lambda: engine
    key = create_source(engine, f"bench-{uuid.uuid4().hex[:8]}")
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    bodies = [json.dumps({"batch": msgs[i : i + 1000]}).encode() for i in range(0, len(msgs), 1000)]
    with TestClient(app) as client:
        start = time.perf_counter()
        for body in bodies:
            r = client.post("/v1/batch", content=body, headers=headers)
            assert r.status_code == 200, r.text
        return len(msgs) / (time.perf_counter() - start)


def bench_raw_sqlite(path: Path, msgs: list[dict[str, Any]]) -> float:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE ev (id INTEGER PRIMARY KEY, message_id TEXT UNIQUE, profile_id TEXT,"
        " name TEXT, occurred_at TEXT, properties TEXT)"
    )
    conn.execute("CREATE INDEX ix_ev ON ev (profile_id, name, occurred_at)")
    start = time.perf_counter()
    for i in range(0, len(msgs), 1000):
        rows = [
            (m["messageId"], m["userId"], m["event"], m["timestamp"], json.dumps(m["properties"]))
            for m in msgs[i : i + 1000]
        ]
        with conn:
            conn.executemany(
                "INSERT INTO ev (message_id, profile_id, name, occurred_at, properties)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )
    rate = len(msgs) / (time.perf_counter() - start)
    conn.close()
    return rate


# --- large synthetic data for segment counts -------------------------------------------------


def synthetic_rows(profiles: int, events: int, seed: int) -> tuple[Iterator[tuple[Any, ...]], ...]:
    created = "2024-01-01 00:00:00.000000"

    def profile_rows() -> Iterator[tuple[Any, ...]]:
        rng = random.Random(seed)
        for i in range(profiles):
            yield (f"p{i:08d}", rng.choice(COUNTRIES), created)

    def consent_rows() -> Iterator[tuple[Any, ...]]:
        rng = random.Random(seed + 1)
        for i in range(profiles):
            if rng.random() < 0.8:
                yield (f"p{i:08d}", "email", "marketing", rng.random() < 0.85, created)

    def event_rows() -> Iterator[tuple[Any, ...]]:
        # Generated with numpy in chunks: Python-level random calls would dominate the load.
        rng = np.random.default_rng(seed + 2)
        names = np.array([e for e, _ in EVENTS])
        weights = np.array([w for _, w in EVENTS])
        span = 730 * 86400
        base = np.datetime64(AS_OF.replace(tzinfo=None), "s") - np.timedelta64(span, "s")
        for start in range(0, events, 1_000_000):
            n = min(1_000_000, events - start)
            kinds = rng.choice(len(names), size=n, p=weights)
            owners = rng.integers(0, profiles, size=n)
            stamps = base + rng.integers(0, span, size=n).astype("timedelta64[s]")
            texts = np.char.replace(
                np.datetime_as_string(stamps.astype("datetime64[us]")), "T", " "
            )
            for i in range(n):
                name = names[kinds[i]]
                yield (
                    f"e{start + i:09d}",
                    f"p{owners[i]:08d}",
                    str(name),
                    str(texts[i]),
                    '{"revenue": 42.0}' if name == "order_completed" else "{}",
                )

    return profile_rows(), consent_rows(), event_rows()


def _indexes(conn: Any, table: str) -> list[tuple[str, str]]:
    """(name, CREATE statement) of the secondary indexes of a SQLite table."""
    return [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT name, sql FROM sqlite_master"
            " WHERE type='index' AND tbl_name=? AND sql IS NOT NULL",
            (table,),
        )
    ]


def load_sqlite(engine: Engine, profiles: int, events: int) -> float:
    start = time.perf_counter()
    raw = engine.raw_connection()
    conn = raw.driver_connection
    assert conn is not None
    conn.execute("PRAGMA synchronous=OFF")
    p_rows, c_rows, e_rows = synthetic_rows(profiles, events, 7)
    # Loading without secondary indexes and building them afterwards is several times faster.
    saved = _indexes(conn, "events") + _indexes(conn, "profiles") + _indexes(conn, "consents")
    for name, _ in saved:
        conn.execute(f"DROP INDEX {name}")
    conn.executemany(
        "INSERT INTO profiles (id, country, created_at, timezone, language, segment,"
        " source_batch, traits) VALUES (?, ?, ?, 'UTC', 'en', 'womens', '', '{}')",
        p_rows,
    )
    conn.executemany(
        "INSERT INTO consents (profile_id, channel, purpose, granted, recorded_at,"
        " source, lawful_basis) VALUES (?, ?, ?, ?, ?, 'bench', 'consent')",
        c_rows,
    )
    conn.executemany(
        "INSERT INTO events (message_id, profile_id, name, occurred_at, properties)"
        " VALUES (?, ?, ?, ?, ?)",
        e_rows,
    )
    for _, sql in saved:
        conn.execute(sql)
    conn.execute("ANALYZE")
    conn.commit()
    raw.close()
    return time.perf_counter() - start


def load_postgres(engine: Engine, profiles: int, events: int) -> float:
    start = time.perf_counter()
    raw = engine.raw_connection()
    conn: Any = raw.driver_connection
    p_rows, c_rows, e_rows = synthetic_rows(profiles, events, 7)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN "
            "('events', 'profiles', 'consents') AND indexname NOT LIKE '%pkey'"
        )
        saved = cur.fetchall()
        for name, _ in saved:
            cur.execute(f'ALTER TABLE IF EXISTS events DROP CONSTRAINT IF EXISTS "{name}"')
            cur.execute(f'DROP INDEX IF EXISTS "{name}"')
        copies = [
            (
                "COPY profiles (id, country, created_at, timezone, language, segment, source_batch,"
                " traits) FROM STDIN",
                ((p, c, f"{t}+00", "UTC", "en", "womens", "", "{}") for p, c, t in p_rows),
            ),
            (
                "COPY consents (profile_id, channel, purpose, granted, recorded_at, source,"
                " lawful_basis) FROM STDIN",
                ((*r[:4], f"{r[4]}+00", "bench", "consent") for r in c_rows),
            ),
            (
                "COPY events (message_id, profile_id, name, occurred_at, properties) FROM STDIN",
                ((m, p, n, f"{t}+00", j) for m, p, n, t, j in e_rows),
            ),
        ]
        for statement, rows in copies:
            with cur.copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)
        for name, definition in saved:
            if name == "events_message_id_key":
                cur.execute(
                    "ALTER TABLE events ADD CONSTRAINT events_message_id_key UNIQUE (message_id)"
                )
            else:
                cur.execute(definition)
    conn.commit()
    # VACUUM sets the visibility map, so event-window conditions run as index-only scans.
    conn.autocommit = True
    conn.execute("VACUUM ANALYZE")
    raw.close()
    return time.perf_counter() - start


def time_counts(engine: Engine, repeats: int) -> dict[str, tuple[int, float]]:
    out = {}
    for label, spec in (("winback", WINBACK), ("winback+consent", WINBACK_CONSENTED)):
        count_segment(engine, spec, as_of=AS_OF)  # warm the cache
        times, n = [], 0
        for _ in range(repeats):
            start = time.perf_counter()
            n = count_segment(engine, spec, as_of=AS_OF)
            times.append(time.perf_counter() - start)
        out[label] = (n, statistics.median(times))
    return out


# --- a throwaway PostgreSQL server -------------------------------------------------------------


@contextmanager
def postgres_server() -> Iterator[str | None]:
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    if shutil.which("pg_config"):
        bins.insert(
            0,
            subprocess.run(
                ["pg_config", "--bindir"], capture_output=True, text=True
            ).stdout.strip(),
        )
    bindir = next((Path(b) for b in bins if b and (Path(b) / "initdb").is_file()), None)
    if bindir is None:
        yield None
        return
    root = tempfile.mkdtemp(prefix="liftloop-bench-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, user="postgres", group="postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = os.path.join(root, "data")
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
        "-c synchronous_commit=off -c full_page_writes=off -c shared_buffers=1GB "
        "-c work_mem=64MB -c maintenance_work_mem=512MB -c max_wal_size=4GB"
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
            os.path.join(root, "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", data, "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def fresh_pg(server: str) -> str:
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.rsplit("/", 1)[0] + f"/{name}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100k profiles, 1M events, 20k ingested")
    ap.add_argument("--profiles", type=int, default=None)
    ap.add_argument("--events", type=int, default=None)
    ap.add_argument("--ingest", type=int, default=None, help="messages for the ingest figures")
    ap.add_argument("--pg-url", default=None, help="use this PostgreSQL server instead")
    ap.add_argument("--no-pg", action="store_true", help="SQLite only")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each segment count")
    ap.add_argument("--rounds", type=int, default=3, help="ingest runs, each on fresh files")
    ap.add_argument(
        "--sustained", type=int, default=0, help="also ingest this many into one growing database"
    )
    args = ap.parse_args()
    profiles = args.profiles or (100_000 if args.quick else 1_000_000)
    events = args.events or (1_000_000 if args.quick else 10_000_000)
    n_ingest = args.ingest or (20_000 if args.quick else 100_000)
    registry = ContractRegistry.load()
    work = Path(tempfile.mkdtemp(prefix="liftloop-bench-cdp-"))
    print(
        f"cdp bench: ingest {n_ingest:,} messages; segments over {profiles:,} profiles and "
        f"{events:,} events; {os.cpu_count()} cores"
    )
    try:
        msgs = messages(n_ingest, max(n_ingest // 10, 1), seed=1)
        jsonl = work / "events.jsonl"
        jsonl.write_text("".join(json.dumps(m) + "\n" for m in msgs))
        # liftloop's default (a thread checkpoints after every commit), then SQLite's own: the
        # writer checkpoints inside its commit every 1,000 pages. Every figure starts from an
        # empty database with the same messages; modes alternate within each round so that a
        # slow spell of the machine does not favour one of them.
        modes = {"background checkpoint": True, "writer checkpoints": False}
        rates: dict[str, list[float]] = {}

        def fresh(name: str, background: bool) -> Engine:
            engine = make_engine(
                f"sqlite:///{work / f'{name}.sqlite'}",
                background_checkpoint=background,
                wal_autocheckpoint=None if background else 1000,
            )
            ensure_cdp_tables(engine)
            return engine

        runs: dict[str, Callable[[Engine], float]] = {
            "direct": lambda e: bench_direct(e, msgs, registry),
            "api": lambda e: bench_api(e, msgs),
            "file": lambda e: bench_file(e, jsonl, len(msgs), registry),
        }
        for n in range(args.rounds):
            rates.setdefault("raw", []).append(bench_raw_sqlite(work / f"raw-{n}.sqlite", msgs))
            for label, background in modes.items():
                for kind, run in runs.items():
                    engine = fresh(f"{kind}-{n}-{background}", background)
                    rates.setdefault(f"{kind} {label}", []).append(run(engine))
                    engine.dispose()
        med = {key: statistics.median(values) for key, values in rates.items()}
        spread = {key: f"{min(v):,.0f}–{max(v):,.0f}" for key, v in rates.items()}
        print(f"ingest: median of {args.rounds} rounds (range in brackets)")
        for label in modes:
            for kind, what in (
                ("direct", "ingest() in transactions of 1,000"),
                ("api", "POST /v1/batch of 1,000, FastAPI TestClient in process"),
                ("file", f"liftloop events ingest FILE.jsonl, transactions of {FILE_BATCH:,}"),
            ):
                key = f"{kind} {label}"
                print(
                    f"ingest sqlite {kind:7s}{med[key]:10,.0f} events/s  [{spread[key]}]  "
                    f"({what}; {label})"
                )
        print(
            f"raw sqlite3 reference  {med['raw']:10,.0f} events/s  [{spread['raw']}] "
            "(executemany, no validation)"
        )

        if args.sustained:
            bench_sustained(work, args.sustained, registry)

        engine = make_engine(f"sqlite:///{work / 'segments.sqlite'}")
        ensure_cdp_tables(engine)
        load = load_sqlite(engine, profiles, events)
        print(f"load sqlite            {load:10.1f} s  (executemany, indexes built after)")
        for label, (n, secs) in time_counts(engine, args.repeats).items():
            print(f"count sqlite {label:16s} {secs:8.3f} s  ({n:,} profiles)")
        engine.dispose()

        if not args.no_pg:
            with postgres_server() if args.pg_url is None else _given(args.pg_url) as server:
                if server is None:
                    print("postgresql: no server binaries found; skipped")
                else:
                    pg = make_engine(fresh_pg(server))
                    ensure_cdp_tables(pg)
                    print(
                        f"ingest postgresql direct{bench_direct(pg, msgs, registry):9,.0f} events/s"
                    )
                    pg.dispose()
                    pg = make_engine(fresh_pg(server))
                    ensure_cdp_tables(pg)
                    load = load_postgres(pg, profiles, events)
                    print(f"load postgresql        {load:10.1f} s  (COPY, indexes built after)")
                    for label, (n, secs) in time_counts(pg, args.repeats).items():
                        print(f"count postgresql {label:16s} {secs:8.3f} s  ({n:,} profiles)")
                    pg.dispose()
        print(f"peak RSS               {peak_rss_mb():10.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    main()
