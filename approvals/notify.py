"""Who hears of approval requests besides the inbox: a notifier (Slack, when configured) is told
when requests open, escalate and are decided. It must not fail the loop: a notifier's trouble
is its own to log and retry."""

from __future__ import annotations

from typing import Protocol


class ApprovalNotifier(Protocol):
    def opened(self, request_ids: list[str]) -> None: ...

    def escalated(self, request_ids: list[str]) -> None: ...

    def decided(self, request_id: str) -> None: ...


class NoNotifier:
    """Nothing configured: the web inbox, the API and the CLI show the requests."""

    def opened(self, request_ids: list[str]) -> None:
        return None

    def escalated(self, request_ids: list[str]) -> None:
        return None

    def decided(self, request_id: str) -> None:
        return None
