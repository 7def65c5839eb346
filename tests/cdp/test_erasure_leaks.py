"""After an erasure the person's e-mail and phone are nowhere: not in any column of any table of
the database (read generically, so a new table is covered without touching this test), not
in the file outboxes, not URL-encoded inside an event property no contract marks personal.
The delivery audit still finds every message id in the files."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
from sqlalchemy import MetaData, select
from sqlalchemy.engine import Engine

from connectors.jsonl_file import JsonlFileSender, rewrite_records
from connectors.ports import OutboundMessage
from liftloop.erasure import erase_person, export_person
from liftloop.loop.tables import DecisionRecord, OutboxMessage
from liftloop.settings import Settings
from tools.cdp.contracts import ContractRegistry
from tools.cdp.ingest import ingest
from tools.cdp.privacy import Identifiers
from tools.cdp.sql import cols, insert
from tools.cdp.tables import Event

NOW = datetime(2026, 3, 1, tzinfo=UTC)
EMAIL = "Alice.Smith@example.com"
PHONE = "+14155550100"
ANON = "anon-7f3a9c2e41"
# What must not survive, in any case and any URL-encoding.
NEEDLES = ("alice.smith@example.com", "4155550100", ANON)


def _leaks(text: str) -> list[str]:
    forms = {text, unquote_plus(text), unquote_plus(unquote_plus(text))}
    return [n for n in NEEDLES for f in forms if n.lower() in f.lower()]


def _database_leaks(engine: Engine) -> list[str]:
    """Every column of every row of every table, as text."""
    meta = MetaData()
    meta.reflect(engine)
    found = []
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)).mappings():
                for column, value in row.items():
                    if value is None:
                        continue
                    shown = value if isinstance(value, str) else json.dumps(value, default=str)
                    found += [f"{table.name}.{column}: {n}" for n in _leaks(shown)]
    return found


def _file_leaks(root: Path) -> list[str]:
    return [
        f"{path.relative_to(root)}: {n}"
        for path in sorted(root.rglob("*"))
        if path.is_file()
        for n in _leaks(path.read_text(encoding="utf-8", errors="replace"))
    ]


def _outbound(mid: str, channel: str, recipient: str, body: str = "Hi") -> OutboundMessage:
    return OutboundMessage(
        id=mid, campaign_id="c1", channel=channel, recipient=recipient, subject="", body=body
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def alice(
    engine: Engine, registry: ContractRegistry, m: Any, settings: Settings
) -> dict[str, JsonlFileSender]:
    msgs = [
        m.msg(
            "identify",
            "a1",
            uid="alice",
            aid=ANON,
            traits={"email": EMAIL, "phone": "+1 (415) 555-0100", "first_name": "Alice"},
        ),
        # The attack: a URL property, which no contract marks personal, carries the address.
        m.msg(
            "track",
            "a2",
            uid="alice",
            event="product_viewed",
            properties={
                "product_id": "p1",
                "url": "https://x.example/?e=alice.smith%40example.com&ref=mail",
                "category": f"tel:{PHONE}",
            },
        ),
        m.msg(
            "track",
            "a3",
            uid="alice",
            event="email_clicked",
            properties={
                "campaign_id": "c1",
                "url": "https://x.example/r?to=ALICE.SMITH%2540EXAMPLE.COM",
                "tracking": {"links": [f"mailto:{EMAIL.upper()}", "https://x.example/ok"]},
            },
        ),
        m.order("a4", "alice", 42.0, "2026-02-01T10:00:00Z"),
        m.msg("track", "a5", aid=ANON, event="mystery", properties={"email": EMAIL}),
        # Someone else's rows that name her.
        m.msg(
            "track",
            "b1",
            uid="bob",
            event="product_viewed",
            properties={"product_id": "p2", "url": f"https://x.example/share?from={EMAIL}"},
        ),
        m.order("b2", "bob", 10.0, "2026-02-01T10:00:00Z"),
        m.msg("identify", "b3", uid="bob", traits={"email": "bob@example.com", "note": EMAIL}),
        # A quarantined message under another id that names her.
        m.msg("identify", "q1", aid="someone-else", traits={"email": f"{EMAIL}, x@example.com"}),
    ]
    result = ingest(engine, msgs, source="web", registry=registry)
    assert (result.accepted, result.quarantined) == (7, 2)
    with engine.begin() as conn:
        for pid, cycle, channel, mid in (
            ("alice", 1, "push", "m-alice-push"),
            ("alice", 2, "sms", "m-alice-sms"),
            ("bob", 1, "push", "m-bob-push"),
        ):
            conn.execute(
                insert(conn, DecisionRecord),
                [
                    {
                        "campaign_id": "c1",
                        "cycle": cycle,
                        "profile_id": pid,
                        "shard": 0,
                        "segment": "womens",
                        "holdout": False,
                        "arm": "ten_off",
                        "offer_id": "ten_off",
                        "channel": channel,
                        "propensity": 0.5,
                        "policy": "thompson",
                        "decided_at": NOW,
                    }
                ],
            )
            conn.execute(
                insert(conn, OutboxMessage),
                [
                    {
                        "id": mid,
                        "campaign_id": "c1",
                        "cycle": cycle,
                        "profile_id": pid,
                        "channel": channel,
                        "shard": 0,
                        "variant_id": "v1",
                        "recipient": PHONE if channel == "sms" else f"device:{pid}",
                        "status": "sent",
                        "created_at": NOW,
                    }
                ],
            )
    outbox = settings.outbox_dir
    senders = {ch: JsonlFileSender(outbox / f"{ch}.jsonl") for ch in ("push", "sms")}
    senders["push"].send(
        [
            _outbound("m-alice-push", "push", "device:alice", "Alice, 10% off"),
            _outbound("m-bob-push", "push", "device:bob", "Bob, 10% off"),
        ]
    )
    senders["sms"].send([_outbound("m-alice-sms", "sms", PHONE, "Alice: 10% off")])
    # A line for her that the outbox table no longer knows: found by her number.
    senders["sms"].send([_outbound("m-orphan", "sms", "+1 415 555 0100", "reply STOP")])
    return senders


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_erasure_leaves_no_trace_in_any_table_or_outbox_file(
    engine: Engine,
    registry: ContractRegistry,
    settings: Settings,
    alice: dict[str, JsonlFileSender],
):
    assert _database_leaks(engine) and _file_leaks(settings.data_dir)  # the attack is staged
    push, sms = settings.outbox_dir / "push.jsonl", settings.outbox_dir / "sms.jsonl"
    bob_line = push.read_text().splitlines()[1]
    ids_before = {p.name: _ids(p) for p in (push, sms)}

    report = erase_person(engine, EMAIL.upper(), registry, actor="dpo", settings=settings)

    assert _database_leaks(engine) == []
    assert _file_leaks(settings.data_dir) == []
    assert report.rows["outbox_file_lines"] == 3
    # The delivery audit reads the files by id: every id is still there, once.
    assert {p.name: _ids(p) for p in (push, sms)} == ids_before
    assert push.read_text().splitlines()[1] == bob_line  # others' lines byte for byte
    erased = json.loads(push.read_text().splitlines()[0])
    assert erased == {
        "id": "m-alice-push",
        "campaign_id": "c1",
        "channel": "push",
        "recipient": None,
        "subject": "",
        "body": "",
        "erased": True,
    }
    # Measurement keeps what is not about her.
    with engine.connect() as conn:
        props = dict(
            conn.execute(
                select(cols(Event).message_id, cols(Event).properties).where(
                    cols(Event).profile_id == report.pseudonym
                )
            ).all()
        )
    assert props["a4"]["revenue"] == 42.0
    assert props["a2"] == {"product_id": "p1"}
    assert props["a3"] == {"campaign_id": "c1", "tracking": {"links": ["https://x.example/ok"]}}


def test_senders_keep_working_across_the_rewrite(
    engine: Engine,
    registry: ContractRegistry,
    settings: Settings,
    alice: dict[str, JsonlFileSender],
):
    erase_person(engine, "alice", registry, actor="dpo", settings=settings)
    push = alice["push"]  # a sender that read the file before it was rewritten
    outcomes = push.send(
        [
            _outbound("m-alice-push", "push", "device:x"),
            _outbound("m-new", "push", "device:carol"),
        ]
    )
    assert [o.status for o in outcomes] == ["duplicate", "sent"]
    assert _ids(settings.outbox_dir / "push.jsonl") == ["m-alice-push", "m-bob-push", "m-new"]


def test_export_lists_the_outbox_lines(
    engine: Engine, settings: Settings, alice: dict[str, JsonlFileSender]
):
    data = export_person(engine, "alice", actor="dpo", settings=settings)
    assert sorted(r["id"] for r in data["outbox_files"]) == [
        "m-alice-push",
        "m-alice-sms",
        "m-orphan",
    ]


def test_a_rewrite_loses_no_line_a_concurrent_sender_appends(tmp_path: Path):
    path = tmp_path / "outbox" / "push.jsonl"
    first, second = JsonlFileSender(path), JsonlFileSender(path)
    first.send([_outbound("seed", "push", "device:erase-me")])
    sent: list[str] = []

    def keep_sending() -> None:
        for n in range(150):
            mid = f"m{n}"
            (first if n % 2 else second).send([_outbound(mid, "push", f"device:{mid}")])
            sent.append(mid)

    worker = threading.Thread(target=keep_sending)
    worker.start()
    rewrites = 0
    while worker.is_alive():
        rewrites += rewrite_records(
            path,
            lambda r: {**r, "recipient": None} if r.get("recipient") is not None else None,
        )
    worker.join()
    ids = _ids(path)
    assert sorted(ids) == sorted(["seed", *sent]) and len(ids) == len(set(ids))
    assert rewrites > 0


def test_identifiers_match_whole_ids_and_any_encoding_of_an_address():
    who = Identifiers(["Alice@Example.com"], ["+14155550100"], ["u1", ANON])
    assert who.found_in("https://x.example/?e=alice%40example.com")
    assert who.found_in("https://x.example/?e=ALICE%2540EXAMPLE.COM")
    assert who.found_in("call (415) 555-0100")
    assert who.found_in("user=u1&x=2") and who.found_in(f"ref:{ANON}")
    assert not who.found_in("menu1") and not who.found_in("u12")
    assert who.redact({"a": ["u1", "ok"], "b": {"u1": 1}, "c": 4155550100, "d": 3}) == {
        "a": ["ok"],
        "b": {},
        "d": 3,
    }
