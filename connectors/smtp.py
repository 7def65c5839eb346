"""Email over SMTP. The outbox id travels as Message-ID, which the receiving side uses to
accept each message once.

Every header is built by `connectors.headers`; a message it refuses (a recipient that is not
exactly one address, a control character in a subject) is failed with the reason before any
SMTP command, and the rest of the batch goes out. The envelope recipient is the one checked
address, given to RCPT TO apart from the headers, so no header can add a recipient."""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Sequence

from connectors.headers import (
    HeaderBuilder,
    MessageRefused,
    email_message,
    message_id_value,
    parse_mailbox,
    single_address,
)
from connectors.ports import OutboundMessage, SendOutcome, TransientSendError

MESSAGE_ID_DOMAIN = "liftloop"


def message_id_header(message_id: str) -> str:
    return message_id_value(message_id, MESSAGE_ID_DOMAIN)


class SmtpSender:
    name = "smtp"

    def __init__(self, host: str, port: int, sender: str, timeout: float = 30.0):
        self.host, self.port, self.sender, self.timeout = host, port, sender, timeout
        # A bad configured sender fails here, at start-up, not on every message.
        self._from_name, self._from_addr = parse_mailbox(sender)

    def _build(self, msg: OutboundMessage) -> tuple[str, bytes]:
        """The envelope recipient and the message; MessageRefused when a header is refused."""
        recipient = single_address(msg.recipient)
        headers = (
            HeaderBuilder.for_mail()
            .address("From", self._from_addr, self._from_name)
            .address("To", recipient)
            .text("Subject", msg.subject)
            .message_id(msg.id, MESSAGE_ID_DOMAIN)
            .text("X-Campaign-Id", msg.campaign_id)
        )
        if msg.provenance_url is not None:
            headers = headers.text("X-Liftloop-Provenance", msg.provenance_url)
        return recipient, email_message(headers.build(), msg.body)

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
        try:
            recipient, data = self._build(msg)
        except MessageRefused as exc:
            return SendOutcome(message_id=msg.id, status="failed", error=str(exc))
        code, resp = smtp.mail(self._from_addr)
        if code >= 400:
            smtp.rset()
            return self._refused(msg, code, resp)
        code, resp = smtp.rcpt(recipient)
        if code >= 400:
            smtp.rset()
            return self._refused(msg, code, resp)
        code, resp = smtp.data(data)
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
