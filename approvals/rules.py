"""The rules of a decision, the same on every path (API, web, Slack, CLI): only an approver
decides; never on a campaign they started (four-eyes); only for the request's group, or the
escalation group once the request is escalated; a rejection says why; not after the deadline.
A refusal names the rule, so the caller can show it (HTTP 403)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from liftloop.accounts.users import UserView

Path = str  # "api", "web", "slack", "cli"


@dataclass(frozen=True)
class Decider:
    """Who decides, and through which path (recorded with the decision)."""

    user: UserView
    path: Path

    @property
    def label(self) -> str:
        return f"{self.user.name} ({self.path})"


@dataclass(frozen=True)
class RequestFacts:
    """What the rules need to know of a request."""

    started_by: str | None
    group: str | None
    escalation_group: str | None
    escalated: bool
    deadline_at: datetime | None


class DecisionRefused(PermissionError):
    """A decision the rules refuse: `rule` names which, `reason` says why."""

    field = "approver"

    def __init__(self, rule: str, reason: str) -> None:
        self.rule, self.reason = rule, reason
        super().__init__(f"{rule}: {reason}")


def check_decision(
    decider: Decider, facts: RequestFacts, approved: bool, note: str, now: datetime | None = None
) -> None:
    """DecisionRefused unless `decider` may give this decision on the request."""
    user = decider.user
    if user.disabled:
        raise DecisionRefused("approver.disabled", f"{user.name} is disabled")
    if user.role != "approver":
        raise DecisionRefused(
            "approver.role", f"{user.name} is a {user.role}; only approvers decide"
        )
    if facts.started_by is not None and facts.started_by == user.name:
        raise DecisionRefused(
            "approver.four_eyes", f"{user.name} started this campaign; another approver decides"
        )
    groups = set(user.groups)
    allowed = {facts.group} if facts.group else set(groups)
    if facts.escalated and facts.escalation_group:
        allowed.add(facts.escalation_group)
    if not groups & allowed:
        reason = f"the request is for group {facts.group}"
        if facts.escalation_group:
            reason += (
                f" (and {facts.escalation_group} once escalated)"
                if not facts.escalated
                else f" or {facts.escalation_group}"
            )
        raise DecisionRefused("approver.group", f"{reason}; {user.name} is in {sorted(groups)}")
    if not approved and not note.strip():
        raise DecisionRefused("rejection.reason", "a rejection needs a note saying why")
    moment = now or datetime.now(UTC)
    deadline = facts.deadline_at
    if deadline is not None:
        deadline = deadline if deadline.tzinfo else deadline.replace(tzinfo=UTC)
        if deadline < moment:
            raise DecisionRefused(
                "request.deadline", f"the deadline passed at {deadline.isoformat()}"
            )
