"""The audit chain: every change made straight in the database is found and located, on SQLite
and PostgreSQL; concurrent writers in several processes keep one chain; a writer killed in the
middle of appending leaves a chain that verifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.audit_support import TEST_AUDIT_KEY, audit_for
from tools.audit import AuditEvent, AuditLog, as_csv, timeline, verify_chain
from tools.audit.chain import CHECKPOINT_EVERY, entry_hash

ROOT = Path(__file__).resolve().parents[2]


def _fill(log: AuditLog, n: int, campaign: str = "c1") -> None:
    for i in range(n):
        log.append(
            AuditEvent(kind="send.batch", actor="worker", campaign_id=campaign, details={"i": i})
        )


def _verify(engine: Engine) -> tuple[int | None, str]:
    report = verify_chain(engine, TEST_AUDIT_KEY)
    return report.first_bad, (report.reason or "ok").split(":")[0]


def _sql(engine: Engine, sql: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql), params)


def _row(engine: Engine, seq: int) -> dict[str, object]:
    with engine.connect() as conn:
        found = conn.execute(text("SELECT * FROM audit_log WHERE seq = :s"), {"s": seq})
        return dict(found.mappings().one())


@pytest.fixture
def filled(engine: Engine) -> Engine:
    _fill(audit_for(engine), 12)
    return engine


def test_an_untouched_chain_verifies_and_reads_back(engine: Engine) -> None:
    log = audit_for(engine)
    _fill(log, CHECKPOINT_EVERY + 5)
    log.append(AuditEvent(kind="campaign.stop", actor="cli:ann", campaign_id="c2"))
    report = verify_chain(engine, TEST_AUDIT_KEY)
    assert report.ok and report.entries == CHECKPOINT_EVERY + 6
    assert report.checkpoints == 1  # the periodic one at entry 100
    assert [e.kind for e in timeline(engine, campaign_id="c2")] == ["campaign.stop"]
    newest = timeline(engine, limit=2)
    assert [e.seq for e in newest] == [CHECKPOINT_EVERY + 5, CHECKPOINT_EVERY + 6]
    assert log.checkpoint() == CHECKPOINT_EVERY + 6
    assert verify_chain(engine, TEST_AUDIT_KEY).checkpoints == 2


def test_a_keyed_fact_is_logged_once(engine: Engine) -> None:
    log = audit_for(engine)
    event = AuditEvent(kind="guard.verdict", actor="worker", subject="v1", key="guard:v1")
    assert log.append(event) == 1
    assert log.append(event) is None
    assert verify_chain(engine, TEST_AUDIT_KEY).entries == 1


def test_an_altered_entry_is_named(filled: Engine) -> None:
    _sql(
        filled,
        "UPDATE audit_log SET body = replace(body, :a, :b) WHERE seq = 5",
        a='"i":4',
        b='"i":40',
    )
    assert _verify(filled) == (5, "altered")


def test_an_altered_column_is_named(filled: Engine) -> None:
    _sql(filled, "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 7")
    assert _verify(filled) == (7, "altered")


def test_a_chain_rehashed_without_the_key_is_named(filled: Engine) -> None:
    """The attacker changes entry 6 and recomputes every hash after it: the links hold, the
    seals do not."""
    prev = str(_row(filled, 5)["hash"])
    for seq in range(6, 13):
        row = _row(filled, seq)
        body = (
            str(row["body"]).replace('"actor":"worker"', '"actor":"x"') if seq == 6 else row["body"]
        )
        digest = entry_hash(prev, str(body))
        actor = "x" if seq == 6 else row["actor"]
        _sql(
            filled,
            "UPDATE audit_log SET body = :b, actor = :a, prev_hash = :p, hash = :h WHERE seq = :s",
            b=body,
            a=actor,
            p=prev,
            h=digest,
            s=seq,
        )
        prev = digest
    assert _verify(filled) == (6, "rewritten")


def test_a_removed_entry_is_named(filled: Engine) -> None:
    _sql(filled, "DELETE FROM audit_log WHERE seq = 4")
    assert _verify(filled) == (4, "removed")


def test_a_removed_and_renumbered_entry_is_named(filled: Engine) -> None:
    _sql(filled, "DELETE FROM audit_log WHERE seq = 4")
    for seq in range(5, 13):
        _sql(filled, "UPDATE audit_log SET seq = :n WHERE seq = :s", n=seq - 1, s=seq)
    assert _verify(filled) == (4, "removed")


def test_an_inserted_entry_is_named(filled: Engine) -> None:
    """A forged entry slipped in at 6, linked and hashed correctly, the rest moved up."""
    for seq in range(12, 5, -1):
        _sql(filled, "UPDATE audit_log SET seq = :n WHERE seq = :s", n=seq + 1, s=seq)
    model = _row(filled, 5)
    body = str(model["body"]).replace('"i":4', '"i":99')
    prev = str(model["hash"])
    _sql(
        filled,
        "INSERT INTO audit_log (seq, key, at, kind, actor, campaign_id, body, prev_hash,"
        " hash, seal) VALUES (6, NULL, :at, :kind, :actor, :c, :b, :p, :h, :seal)",
        at=model["at"],
        kind=model["kind"],
        actor=model["actor"],
        c=model["campaign_id"],
        b=body,
        p=prev,
        h=entry_hash(prev, body),
        seal="0" * 64,
    )
    assert _verify(filled) == (6, "inserted")


def test_reordered_entries_are_named(filled: Engine) -> None:
    _sql(filled, "UPDATE audit_log SET seq = -1 WHERE seq = 8")
    _sql(filled, "UPDATE audit_log SET seq = 8 WHERE seq = 9")
    _sql(filled, "UPDATE audit_log SET seq = 9 WHERE seq = -1")
    assert _verify(filled) == (8, "reordered")


def test_removing_the_newest_entries_is_seen_up_to_the_last_checkpoint(filled: Engine) -> None:
    audit_for(filled).checkpoint()  # at entry 12
    _sql(filled, "DELETE FROM audit_log WHERE seq > 10")
    assert _verify(filled) == (11, "removed")


def test_forged_or_missing_checkpoints_are_named(engine: Engine) -> None:
    _fill(audit_for(engine), CHECKPOINT_EVERY + 1)
    _sql(engine, "UPDATE audit_checkpoints SET head_hash = :h", h="f" * 64)
    assert _verify(engine) == (CHECKPOINT_EVERY, "forged")
    _sql(engine, "DELETE FROM audit_checkpoints")
    assert _verify(engine) == (CHECKPOINT_EVERY, "removed")


def test_another_installations_key_verifies_nothing(filled: Engine) -> None:
    report = verify_chain(filled, b"another-installation-key")
    assert not report.ok and report.first_bad == 1 and report.reason.startswith("rewritten")


def test_csv_export_defuses_formulas(engine: Engine) -> None:
    audit_for(engine).append(AuditEvent(kind="campaign.start", actor="=HYPERLINK(1)"))
    lines = as_csv(timeline(engine)).splitlines()
    assert lines[0].startswith("seq,at,kind,actor")
    assert ",'=HYPERLINK(1)," in lines[1]


_WRITER = textwrap.dedent(
    """
    import sys
    from liftloop.db import make_engine
    from tests.audit_support import audit_for
    from tools.audit import AuditEvent
    url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    log = audit_for(make_engine(url, background_checkpoint=False))
    print("ready", flush=True)
    i = 0
    while count < 0 or i < count:
        log.append(AuditEvent(kind="send.batch", actor=name, details={"i": i}))
        i += 1
    """
)


def _writer(db_url: str, name: str, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, db_url, name, str(count)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )


def test_concurrent_writers_keep_one_chain(db_url: str, engine: Engine) -> None:
    writers = [_writer(db_url, f"w{n}", 60) for n in range(4)]
    for w in writers:
        assert w.wait(timeout=300) == 0
    report = verify_chain(engine, TEST_AUDIT_KEY)
    assert report.ok, report
    assert report.entries == 240 and report.checkpoints == 2
    assert {e.actor for e in timeline(engine)} == {"w0", "w1", "w2", "w3"}


def test_a_writer_killed_while_appending_leaves_a_chain_that_verifies(
    db_url: str, engine: Engine
) -> None:
    writer = _writer(db_url, "doomed", -1)
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 60
    while verify_chain(engine, TEST_AUDIT_KEY).entries < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    report = verify_chain(engine, TEST_AUDIT_KEY)
    assert report.ok and report.entries >= 30, report
    _fill(audit_for(engine), 3)
    after = verify_chain(engine, TEST_AUDIT_KEY)
    assert after.ok and after.entries == report.entries + 3
