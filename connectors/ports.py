"""The port every message connector implements. The message id is the idempotency key: a
provider that sees the same id twice must accept it once and report the second as a duplicate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict


class OutboundMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    campaign_id: str
    channel: str
    recipient: str
    subject: str
    body: str
    # Where the message's provenance is served (template, model, policy, approval, decision);
    # mail carries it as X-Liftloop-Provenance.
    provenance_url: str | None = None


class SendOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    message_id: str
    status: Literal["sent", "duplicate", "failed"]
    provider_id: str | None = None
    error: str | None = None


class TransientSendError(RuntimeError):
    """The provider could not be reached; the caller may retry the same ids later."""


class MessageSender(Protocol):
    name: str

    def send(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        """Deliver messages in order; a permanent refusal is an outcome, an outage raises."""
        ...
