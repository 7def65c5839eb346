"""Slack's interactivity requests: a click on Approve or Reject, and the reject modal's
submission, turned into a decision on the approval path every other path uses
(`approvals.requests.decide_approval`, with its rules and its signed proof).

A request counts only if Slack signed it: `X-Slack-Signature` is `v0=` + HMAC-SHA256 of
`v0:{timestamp}:{body}` under the app's signing secret, checked over the raw body before anything
in it is parsed; a timestamp older than five minutes, or more than a minute ahead, is refused;
and a signature is accepted once (the signatures seen within the window are kept in
`slack_seen_requests`, so a captured request replayed to another API process is refused too).

Slack wants an answer within three seconds, and a decision waits on Temporal: the route answers
at once and `act` runs after it (a background task). Its outcome goes back through the
interaction's `response_url`: the message replaced by its decided version, or a reply only the
person who clicked sees (not a liftloop user; a rule refused it, naming the rule).

A rejection needs a reason, so Reject opens a modal asking for one (`views.open` with the
click's trigger_id); its submission (`view_submission`, callback `reject_reason`) is checked by
the rules while Slack waits, so a refusal shows in the modal, and then decided like a click."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs

from slack_sdk.signature import Clock, SignatureVerifier
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import col

from approvals.requests import (
    ApprovalConflict,
    ApprovalNotFound,
    ApprovalProofRefused,
    ApprovalView,
    get_approval,
)
from approvals.rules import Decider, DecisionRefused, RequestFacts, check_decision
from approvals.slack_blocks import (
    APPROVE,
    NOTE_MAX_CHARS,
    REASON_BLOCK,
    REASON_INPUT,
    REJECT,
    REJECT_CALLBACK,
    decided_blocks,
    fallback_text,
    reject_modal,
)
from approvals.slack_notify import error_code, load_card
from approvals.slack_tables import SlackSeenRequest
from liftloop.accounts.users import UserView, user_for_slack
from liftloop.loop.payloads import ApprovalOutcome
from liftloop.loop.spec import text_problem
from tools.cdp.sql import insert

log = logging.getLogger("liftloop.slack")

MAX_BODY_BYTES = 64 * 1024
WINDOW_S = 300
FUTURE_SKEW_S = 60
# A signature is kept while its timestamp could still pass, and a little longer.
KEEP_S = WINDOW_S + FUTURE_SKEW_S + 60
PATH = "slack"
NOT_A_USER = (
    "You are not a liftloop user: ask an admin to add your Slack id "
    "(`liftloop users add … --slack-id`)."
)
_SIGNATURE = re.compile(r"^v0=[0-9a-f]{64}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,20}$")
_REQUEST_ID_MAX = 300

Kind = Literal["approve", "reject", "reject_reason"]
Decide = Callable[[str, bool, Decider, str], Awaitable[ApprovalOutcome]]


class SlackRequestRefused(PermissionError):
    """Not a request Slack signed for this app (HTTP 401): `reason` says what failed."""

    def __init__(self, field: str, reason: str) -> None:
        self.field, self.reason = field, reason
        super().__init__(f"{field}: {reason}")


class SlackPayloadError(ValueError):
    """A signed request whose payload is not what Slack documents (HTTP 400)."""

    def __init__(self, reason: str) -> None:
        self.field, self.reason = "payload", reason
        super().__init__(f"payload: {reason}")


class SlackResponder(Protocol):
    """What interactivity needs of Slack (`connectors.slack.SlackWebApi` is one)."""

    def respond(
        self,
        response_url: str,
        text: str,
        blocks: Sequence[Mapping[str, Any]] | None = None,
        *,
        replace_original: bool = False,
        ephemeral: bool = False,
    ) -> None: ...

    def open_view(self, trigger_id: str, view: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class Interaction:
    """One person's act in Slack: a click (approve, reject) or the reject modal's submission."""

    kind: Kind
    slack_user: str
    request_id: str
    response_url: str | None = None
    trigger_id: str | None = None
    note: str = ""


class _FixedClock(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def remember_signature(engine: Engine, signature: str, now: float) -> bool:
    """Whether the signature is new (and now kept); the expired ones are dropped on the way."""
    with engine.begin() as conn:
        conn.execute(delete(SlackSeenRequest).where(col(SlackSeenRequest.seen_at) < now - KEEP_S))
        fresh = conn.execute(
            insert(conn, SlackSeenRequest)
            .on_conflict_do_nothing()
            .values(signature=signature, seen_at=now)
        ).rowcount
    return bool(fresh == 1)


def _text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit or text_problem(value):
        raise SlackPayloadError(f"{what} is missing or not usable text")
    return value


def _optional_text(value: Any, limit: int = 2000) -> str | None:
    if isinstance(value, str) and value and len(value) <= limit and not text_problem(value):
        return value
    return None


def _slack_user(payload: Mapping[str, Any]) -> str:
    user = payload.get("user")
    user_id = user.get("id") if isinstance(user, Mapping) else None
    if not isinstance(user_id, str) or not _SLACK_USER.match(user_id):
        raise SlackPayloadError("user.id is not a Slack user id")
    return user_id


def refused_text(exc: DecisionRefused) -> str:
    return f"Refused by the rule {exc.rule}: {exc.reason}"


def _facts(found: ApprovalView) -> RequestFacts:
    return RequestFacts(
        started_by=found.started_by,
        group=found.approver_group,
        escalation_group=found.escalation_group,
        escalated=found.escalated,
        deadline_at=found.deadline_at,
    )


class SlackInteractivity:
    def __init__(
        self,
        engine: Engine,
        signing_secret: str,
        slack: SlackResponder,
        decide: Decide,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not signing_secret.strip():
            raise ValueError("slack_signing_secret: must not be empty")
        self.engine, self.slack, self.decide = engine, slack, decide
        self._secret, self._clock = signing_secret, clock

    # -- before anything is parsed ------------------------------------------------------------

    def authenticate(self, body: bytes, headers: Mapping[str, str]) -> None:
        """SlackRequestRefused unless Slack signed this body within the window, for the first
        time."""
        given = {k.lower(): v for k, v in headers.items()}
        timestamp = given.get("x-slack-request-timestamp", "").strip()
        signature = given.get("x-slack-signature", "").strip()
        if not timestamp or not signature:
            raise SlackRequestRefused(
                "x-slack-signature", "missing X-Slack-Signature or X-Slack-Request-Timestamp"
            )
        if not _TIMESTAMP.match(timestamp) or not _SIGNATURE.match(signature):
            raise SlackRequestRefused("x-slack-signature", "is not a Slack v0 signature")
        now = self._clock()
        if int(timestamp) < now - WINDOW_S:
            raise SlackRequestRefused(
                "x-slack-request-timestamp", f"is older than {WINDOW_S // 60} minutes"
            )
        if int(timestamp) > now + FUTURE_SKEW_S:
            raise SlackRequestRefused("x-slack-request-timestamp", "is in the future")
        verifier = SignatureVerifier(self._secret, clock=_FixedClock(now))
        if not verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
            raise SlackRequestRefused("x-slack-signature", "does not verify")
        if not remember_signature(self.engine, signature, now):
            raise SlackRequestRefused("x-slack-signature", "was seen before (a replay)")

    # -- what the person did ------------------------------------------------------------------

    def parse(self, body: bytes) -> Interaction | None:
        """The interaction, or None for one liftloop does not act on (another button)."""
        try:
            form = parse_qs(body.decode("utf-8"), strict_parsing=True, max_num_fields=8)
            [raw] = form.get("payload", [])
            payload = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise SlackPayloadError("is not a form with one JSON payload") from None
        if not isinstance(payload, dict):
            raise SlackPayloadError("is not a JSON object")
        kind = payload.get("type")
        if kind == "block_actions":
            return self._click(payload)
        if kind == "view_submission":
            return self._submission(payload)
        return None

    def _click(self, payload: Mapping[str, Any]) -> Interaction | None:
        actions = payload.get("actions")
        if not isinstance(actions, list):
            raise SlackPayloadError("actions is not a list")
        ours = [
            a for a in actions if isinstance(a, Mapping) and a.get("action_id") in (APPROVE, REJECT)
        ]
        if not ours:
            return None
        action = ours[0]
        return Interaction(
            kind="approve" if action["action_id"] == APPROVE else "reject",
            slack_user=_slack_user(payload),
            request_id=_text(action.get("value"), "actions.value", _REQUEST_ID_MAX),
            response_url=_optional_text(payload.get("response_url")),
            trigger_id=_optional_text(payload.get("trigger_id"), 300),
        )

    def _submission(self, payload: Mapping[str, Any]) -> Interaction | None:
        view = payload.get("view")
        if not isinstance(view, Mapping) or view.get("callback_id") != REJECT_CALLBACK:
            return None
        try:
            metadata = json.loads(str(view.get("private_metadata") or ""))
            typed = view["state"]["values"][REASON_BLOCK][REASON_INPUT].get("value")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise SlackPayloadError("the reject form's state is not as sent") from None
        if not isinstance(metadata, dict):
            raise SlackPayloadError("private_metadata is not a JSON object")
        return Interaction(
            kind="reject_reason",
            slack_user=_slack_user(payload),
            request_id=_text(metadata.get("request_id"), "request_id", _REQUEST_ID_MAX),
            response_url=_optional_text(metadata.get("response_url")),
            note=typed.strip() if isinstance(typed, str) else "",
        )

    # -- the rules, while Slack waits ---------------------------------------------------------

    def refusal(self, interaction: Interaction) -> str | None:
        """Why the rules refuse this interaction now (None: they do not). For the Reject click
        the reason is asked next, so only the rest of the rules are checked."""
        user = user_for_slack(self.engine, interaction.slack_user)
        if user is None:
            return NOT_A_USER
        return self._rule_refusal(user, interaction)

    def _rule_refusal(self, user: UserView, interaction: Interaction) -> str | None:
        try:
            found = get_approval(self.engine, interaction.request_id)
        except ApprovalNotFound as exc:
            return exc.reason
        if found.kind != "variant":
            return "objections are reviewed in liftloop's inbox, not in Slack"
        if found.status != "pending":
            return f"{found.request_id} is already {found.status}"
        approved = interaction.kind == "approve"
        asked = interaction.kind == "reject_reason"
        note = interaction.note if asked else "(asked next)"
        if asked and (len(note) > NOTE_MAX_CHARS or text_problem(note)):
            return f"the reason must be 1 to {NOTE_MAX_CHARS} characters of text"
        try:
            check_decision(Decider(user, PATH), _facts(found), approved, "" if approved else note)
        except DecisionRefused as exc:
            return refused_text(exc)
        return None

    # -- after Slack has its answer -----------------------------------------------------------

    async def act(self, interaction: Interaction) -> None:
        """Carry the interaction out (a background task: it never raises)."""
        try:
            if interaction.kind == "reject":
                await self._ask_reason(interaction)
            else:
                await self._decide(interaction)
        except Exception as exc:  # a background task's failure would only reach the log
            log.warning(
                "slack: %s on approval request %s failed (%s)",
                interaction.kind,
                interaction.request_id,
                error_code(exc),
            )

    async def _ask_reason(self, interaction: Interaction) -> None:
        problem = await asyncio.to_thread(self.refusal, interaction)
        if problem is not None:
            await self._tell(interaction, problem)
            return
        if interaction.trigger_id is None:
            await self._tell(interaction, "Slack sent no trigger to open the reject form")
            return
        view = reject_modal(interaction.request_id, interaction.response_url)
        try:
            await asyncio.to_thread(self.slack.open_view, interaction.trigger_id, view)
        except Exception as exc:
            log.warning(
                "slack: the reject form for %s did not open (%s)",
                interaction.request_id,
                error_code(exc),
            )
            await self._tell(
                interaction,
                "The reject form could not be opened; reject in liftloop's inbox, with a reason.",
            )

    async def _decide(self, interaction: Interaction) -> None:
        user = await asyncio.to_thread(user_for_slack, self.engine, interaction.slack_user)
        if user is None:
            await self._tell(interaction, NOT_A_USER)
            return
        # The rules first, from the database: a refused click costs no call to Temporal
        # (`decide_approval` checks them again, as on every path).
        problem = await asyncio.to_thread(self._rule_refusal, user, interaction)
        if problem is not None:
            await self._tell(interaction, problem)
            return
        approved = interaction.kind == "approve"
        note = "" if approved else interaction.note
        try:
            await self.decide(interaction.request_id, approved, Decider(user, PATH), note)
        except DecisionRefused as exc:
            await self._tell(interaction, refused_text(exc))
            return
        except (ApprovalConflict, ApprovalNotFound) as exc:
            await self._tell(interaction, f"Not decided: {exc.reason}")
            return
        except ApprovalProofRefused:
            await self._tell(
                interaction,
                "Not decided: the campaign's worker refused liftloop's proof (the API and the "
                "worker need the same approval signing key).",
            )
            return
        card = await asyncio.to_thread(load_card, self.engine, interaction.request_id)
        if card is not None and interaction.response_url is not None:
            await asyncio.to_thread(
                self.slack.respond,
                interaction.response_url,
                fallback_text(card),
                decided_blocks(card),
                replace_original=True,
            )

    async def _tell(self, interaction: Interaction, text: str) -> None:
        """A reply only the person who acted sees."""
        if interaction.response_url is None:
            return
        try:
            await asyncio.to_thread(
                self.slack.respond, interaction.response_url, text, ephemeral=True
            )
        except Exception as exc:
            log.warning(
                "slack: the reply on %s was not delivered (%s)",
                interaction.request_id,
                error_code(exc),
            )
