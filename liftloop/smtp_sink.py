"""The embedded runtime's local SMTP server. It keeps every message it accepts in a SQLite
mailbox and, like an email provider's idempotency key, accepts a Message-ID only once."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    message_id TEXT PRIMARY KEY,
    mail_from TEXT NOT NULL,
    rcpt_to TEXT NOT NULL,
    campaign_id TEXT,
    subject TEXT,
    received_at TEXT NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 1,
    raw BLOB NOT NULL
)"""
_INDEX = "CREATE INDEX IF NOT EXISTS ix_messages_campaign ON messages (campaign_id)"


class Mailbox:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(path, check_same_thread=False, timeout=60)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(_SCHEMA)
        self._conn.execute(_INDEX)
        self._conn.commit()
        self._lock = threading.Lock()

    def store(
        self,
        message_id: str,
        mail_from: str,
        rcpt: str,
        subject: str,
        campaign_id: str | None,
        raw: bytes,
    ) -> bool:
        """True if stored, False if this Message-ID was delivered before."""
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO messages (message_id, mail_from, rcpt_to, subject, campaign_id,"
                " received_at, raw) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(message_id)"
                " DO UPDATE SET deliveries = deliveries + 1 RETURNING deliveries",
                (
                    message_id,
                    mail_from,
                    rcpt,
                    subject,
                    campaign_id,
                    datetime.now(UTC).isoformat(),
                    raw,
                ),
            )
            (deliveries,) = cur.fetchone()
            self._conn.commit()
            return bool(deliveries == 1)


_HEADERS = BytesHeaderParser()


class _Handler:
    def __init__(self, mailbox: Mailbox):
        self.mailbox = mailbox
        self._anon = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.original_content or envelope.content
        msg = _HEADERS.parsebytes(raw)
        message_id = str(msg.get("Message-ID") or "")
        if not message_id:
            self._anon += 1
            message_id = f"<anonymous-{datetime.now(UTC).timestamp()}-{self._anon}>"
        stored = self.mailbox.store(
            message_id,
            envelope.mail_from,
            ",".join(envelope.rcpt_tos),
            str(make_header(decode_header(msg.get("Subject") or ""))),
            msg.get("X-Campaign-Id"),
            raw,
        )
        return "250 OK" if stored else f"250 OK duplicate {message_id} not delivered again"


def start_smtp_sink(host: str, port: int, mailbox_path: Path) -> Controller:
    controller = Controller(_Handler(Mailbox(mailbox_path)), hostname=host, port=port)
    controller.start()
    return controller
