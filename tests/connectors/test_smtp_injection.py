"""Header injection replayed against the real SMTP sender and the local SMTP server: a CR/LF in a
recipient or a subject adds nothing, the Message-ID stays a header, the bad message is failed
with its reason and the rest of the batch goes out. Once at the connector, once through the
send stage with the outbox (the connector trusts no upstream check)."""

from __future__ import annotations

import base64
import re
import sqlite3
from collections.abc import Iterator
from email import message_from_bytes
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col

from connectors.ports import OutboundMessage
from connectors.smtp import SmtpSender, message_id_header
from liftloop.loop.stage_kit import variant_id
from liftloop.loop.tables import Variant
from liftloop.smtp_sink import start_smtp_sink
from tests.loop.conftest import free_port
from tests.stages.helpers import (
    CycleRefBuilder,
    decisions,
    outbox,
    run_decide,
    run_generate,
    run_segment,
    run_send,
    send_stage,
)
from tools.cdp.tables import Profile

EVIL = "evil@x.example"
ATTACKS = {
    "bcc": {"recipient": f"a@x.example\r\nBcc: {EVIL}"},
    "lf_bcc": {"recipient": f"a@x.example\nBcc: {EVIL}"},
    "body": {"subject": "Sale\r\n\r\nnew body"},
    "subject_bcc": {"subject": f"Sale\r\nBcc: {EVIL}"},
    "list": {"recipient": f"a@x.example, {EVIL}"},
    "display": {"recipient": f'"a@x.example" <{EVIL}>'},
    "nul": {"recipient": "a@x.example\x00"},
}


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port, mailbox = free_port(), tmp_path / "mailbox.sqlite"
    controller = start_smtp_sink("127.0.0.1", port, mailbox)
    yield port, mailbox
    controller.stop()


def _received(mailbox: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(mailbox) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM messages ORDER BY message_id")]


def _assert_clean(row: dict[str, Any], message_id: str) -> None:
    """One recipient, no Bcc, the Message-ID a header, the body one base64 part."""
    raw: bytes = row["raw"]
    assert row["message_id"] == message_id_header(message_id)
    assert "," not in row["rcpt_to"] and EVIL not in row["rcpt_to"]
    _, body = raw.split(b"\r\n\r\n", 1)
    parsed = message_from_bytes(raw, policy=SMTP)
    assert parsed["Message-ID"] == message_id_header(message_id)
    assert len(parsed.get_all("Message-ID") or []) == 1
    assert parsed.get_all("Bcc") is None and parsed.get_all("Cc") is None
    assert len(parsed["To"].addresses) == 1
    assert b"new body" not in raw
    base64.b64decode(body, validate=False)


def _message(i: int, **overrides: str) -> OutboundMessage:
    data = {
        "id": f"00000000-0000-0000-0000-{i:012d}",
        "campaign_id": "c-inject",
        "channel": "email",
        "recipient": f"p{i}@customers.example",
        "subject": f"Hello {i}",
        "body": f"Hi,\nmessage {i}\n",
    }
    data.update(overrides)
    return OutboundMessage.model_validate(data)


def test_injected_headers_never_reach_the_smtp_server(sink: tuple[int, Path]) -> None:
    port, mailbox = sink
    sender = SmtpSender("127.0.0.1", port, "liftloop <campaigns@liftloop.example>")
    good = [_message(0), _message(1)]
    bad = {name: _message(10 + n, **attack) for n, (name, attack) in enumerate(ATTACKS.items())}
    batch = [good[0], *bad.values(), good[1]]
    outcomes = {o.message_id: o for o in sender.send(batch)}

    assert [outcomes[m.id].status for m in good] == ["sent", "sent"]
    for name, m in bad.items():
        o = outcomes[m.id]
        assert o.status == "failed", name
        assert o.error and o.error.startswith("header "), (name, o.error)
        assert EVIL not in o.error and "a@x.example" not in o.error  # no personal data
    assert "control character U+000D" in (outcomes[bad["bcc"].id].error or "")
    assert "Subject: control character U+000D" in (outcomes[bad["body"].id].error or "")
    assert "not a list" in (outcomes[bad["list"].id].error or "")
    assert "display name" in (outcomes[bad["display"].id].error or "")

    received = _received(mailbox)
    assert [r["message_id"] for r in received] == [message_id_header(m.id) for m in good]
    for row, m in zip(received, good, strict=True):
        _assert_clean(row, m.id)
        assert row["rcpt_to"] == m.recipient
    assert all(EVIL.encode() not in r["raw"] for r in received)

    # Sent again, the good ones are duplicates at the server and the bad ones fail again.
    again = {o.message_id: o.status for o in sender.send(batch)}
    assert [again[m.id] for m in good] == ["duplicate", "duplicate"]
    assert {again[m.id] for m in bad.values()} == {"failed"}
    assert len(_received(mailbox)) == 2


def test_a_bad_configured_sender_fails_at_start_up() -> None:
    with pytest.raises(ValueError, match="header From"):
        SmtpSender("127.0.0.1", 25, f"x <a@x.example>\r\nBcc: {EVIL}")


def test_an_injected_subject_fails_its_messages_in_the_outbox_and_the_rest_goes_out(
    env,  # type: ignore[no-untyped-def]
    engine,
    cycle_ref: CycleRefBuilder,
    sink: tuple[int, Path],
) -> None:
    """The send stage with the real SMTP sender. One approved variant's subject ends the header
    block (as a copywriter's output might, had the guard let it through): each of its messages
    is failed with the reason, every other message is sent. Two people's first names (a slot of
    every subject) hold injections too: whoever stops them, nothing of theirs is sent."""
    port, mailbox = sink
    ref = cycle_ref(shards=1, channels=["email"])
    run_segment(env, engine, ref)
    run_decide(env, engine, ref)
    approved = [v for v in run_generate(env, engine, ref).variant_ids if "twenty_off" not in v]
    pending = [d for d in decisions(engine, ref) if not d.holdout and d.offer_id != "twenty_off"]
    poisoned = variant_id(ref, pending[0].arm)
    named = sorted(d.profile_id for d in pending if variant_id(ref, d.arm) != poisoned)[:2]
    with engine.begin() as conn:
        conn.execute(
            update(Variant)
            .where(col(Variant.id) == poisoned)
            .values(subject=f"{{first_name}}, sale\r\n\r\nnew body\r\nBcc: {EVIL}")
        )
        for pid, name in zip(named, (f"Ann\r\nBcc: {EVIL}", "Ann\r\n\r\nnew body"), strict=True):
            conn.execute(update(Profile).where(col(Profile.id) == pid).values(first_name=name))

    smtp = SmtpSender("127.0.0.1", port, "liftloop <campaigns@liftloop.example>")
    (result,) = run_send(env, send_stage(engine, {"email": smtp}), ref, approved)

    rows = outbox(engine, ref)
    bad = [r for r in rows if r.variant_id == poisoned and r.profile_id not in named]
    assert bad
    for r in bad:
        assert r.status == "failed"
        assert re.fullmatch(r"header Subject: control character U\+000D at .*", r.error or "")
        assert r.sent_at is None
    assert result.failed == sum(r.status == "failed" for r in rows) >= len(bad)
    assert {r.status for r in rows if r.profile_id in named} <= {"failed", "suppressed"}
    sent = {r.id for r in rows if r.status == "sent"}
    assert result.sent == len(sent) > 0
    assert all(r.variant_id != poisoned for r in rows if r.id in sent)

    received = _received(mailbox)
    assert {r["message_id"] for r in received} == {message_id_header(i) for i in sent}
    by_mid = {r["message_id"]: r for r in received}
    for mid in sent:
        _assert_clean(by_mid[message_id_header(mid)], mid)
    assert all(EVIL.encode() not in r["raw"] for r in received)
