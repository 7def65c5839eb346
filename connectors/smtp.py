"""Email over SMTP. The outbox id travels as Message-ID, which the receiving side uses to
accept each message once."""

from __future__ import annotations

import base64
import smtplib
import socket
from collections.abc import Sequence
from email.header import Header

from connectors.ports import OutboundMessage, SendOutcome, TransientSendError


def message_id_header(message_id: str) -> str:
    return f"<{message_id}@liftloop>"


class SmtpSender:
    name = "smtp"

    def __init__(self, host: str, port: int, sender: str, timeout: float = 30.0):
        self.host, self.port, self.sender, self.timeout = host, port, sender, timeout

    def _build(self, msg: OutboundMessage) -> bytes:
        # Built by hand: the email package's header registry costs milliseconds per message.
        body = base64.encodebytes(msg.body.encode("utf-8")).decode("ascii")
        headers = (
            f"From: {self.sender}\r\n"
            f"To: {msg.recipient}\r\n"
            f"Subject: {Header(msg.subject, 'utf-8').encode()}\r\n"
            f"Message-ID: {message_id_header(msg.id)}\r\n"
            f"X-Campaign-Id: {msg.campaign_id}\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n"
        )
        return (headers + body).encode("ascii")

    def send(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        outcomes: list[SendOutcome] = []
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                # Without TCP_NODELAY each command waits for the peer's delayed ACK (~40 ms).
                if smtp.sock is not None:
                    smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                smtp.ehlo_or_helo_if_needed()
                for msg in messages:
                    outcomes.append(self._send_one(smtp, msg))
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            raise TransientSendError(f"smtp {self.host}:{self.port}: {exc}") from exc
        return outcomes

    def _send_one(self, smtp: smtplib.SMTP, msg: OutboundMessage) -> SendOutcome:
        code, resp = smtp.mail(self.sender)
        if code >= 400:
            smtp.rset()
            return self._refused(msg, code, resp)
        code, resp = smtp.rcpt(msg.recipient)
        if code >= 400:
            smtp.rset()
            return self._refused(msg, code, resp)
        code, resp = smtp.data(self._build(msg))
        if code >= 400:
            return self._refused(msg, code, resp)
        text = resp.decode(errors="replace")
        status = "duplicate" if "duplicate" in text.lower() else "sent"
        return SendOutcome(message_id=msg.id, status=status, provider_id=message_id_header(msg.id))

    @staticmethod
    def _refused(msg: OutboundMessage, code: int, resp: bytes) -> SendOutcome:
        if code < 500:  # 4xx: try again later, as SMTP intends
            raise TransientSendError(f"smtp {code}: {resp.decode(errors='replace')}")
        return SendOutcome(
            message_id=msg.id,
            status="failed",
            error=f"smtp {code}: {resp.decode(errors='replace')}",
        )
