"""Block Kit for approval requests: the message that asks (with Approve and Reject buttons), the
same message once decided (no buttons: the outcome, who, the note), and the modal that asks a
rejecting approver why.

What a message shows is the variant as the guard judged it: a template with its slots, never a
message rendered for a person, so no customer's data reaches Slack. The variant's subject and
body go in as plain text (Slack reads no markup and no mention in it, so a template cannot ping
a channel); the rest is mrkdwn with `&`, `<` and `>` escaped. Every text is cut to Slack's
limits (a section's text 3,000 characters, a header's 150, a field's 2,000)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Block = dict[str, Any]

APPROVE, REJECT = "approve", "reject"
ACTIONS_BLOCK = "approval"
REJECT_CALLBACK = "reject_reason"
REASON_BLOCK, REASON_INPUT = "reason", "note"
NOTE_MAX_CHARS = 2000

SECTION_MAX = 3000
HEADER_MAX = 150
FIELD_MAX = 2000
CONTEXT_MAX = 2000
FALLBACK_MAX = 300
METADATA_MAX = 3000


@dataclass(frozen=True)
class Reason:
    rule_id: str
    explanation: str


@dataclass(frozen=True)
class ApprovalCard:
    """What a message says of one request: the request row and its variant's content."""

    request_id: str
    campaign_id: str
    cycle: int
    variant_id: str
    status: str = "pending"
    channel: str = ""
    arm: str = ""
    subject: str = ""
    body: str = ""
    reasons: tuple[Reason, ...] = ()
    deadline_at: datetime | None = None
    approver_group: str | None = None
    escalation_group: str | None = None
    escalated: bool = False
    decided_by: str | None = None
    note: str | None = None


def escape(text: str) -> str:
    """Text for mrkdwn: Slack's three control characters escaped, so nothing becomes a link,
    a mention or a command."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fit(text: str, limit: int) -> str:
    """`text` within `limit` characters, cut with an ellipsis (never inside an escape)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def _plain(text: str, limit: int) -> Block:
    return {"type": "plain_text", "text": fit(text, limit) or " ", "emoji": False}


def _mrkdwn(text: str, limit: int = SECTION_MAX) -> Block:
    return {"type": "mrkdwn", "text": fit(text, limit) or " "}


def _labelled(label: str, content: str) -> Block:
    """A section with a bold label and plain text (the label counts against the limit)."""
    return {"type": "section", "text": _plain(f"{label}\n{content}", SECTION_MAX)}


def _when(moment: datetime) -> str:
    """A time each reader sees in their own zone (Slack's date token), UTC as the fallback."""
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    fallback = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def _code(text: str) -> str:
    return "`" + escape(text.replace("`", "'")) + "`"


def _facts(card: ApprovalCard) -> Block:
    fields = [
        _mrkdwn(f"*Campaign*\n{_code(card.campaign_id)}", FIELD_MAX),
        _mrkdwn(f"*Cycle*\n{card.cycle}", FIELD_MAX),
        _mrkdwn(f"*Channel*\n{escape(card.channel or '-')}", FIELD_MAX),
        _mrkdwn(f"*Arm*\n{_code(card.arm or '-')}", FIELD_MAX),
    ]
    if card.approver_group:
        group = card.approver_group
        if card.escalated and card.escalation_group:
            group += f" or {card.escalation_group}"
        fields.append(_mrkdwn(f"*Decided by group*\n{escape(group)}", FIELD_MAX))
    return {"type": "section", "fields": fields}


def _reasons(card: ApprovalCard) -> Block:
    lines = [f"• {_code(r.rule_id or 'rule')} {escape(r.explanation)}" for r in card.reasons]
    text = "*Why it needs a person*\n" + ("\n".join(lines) or "(no reason recorded)")
    return {"type": "section", "text": _mrkdwn(text)}


def _content(card: ApprovalCard) -> list[Block]:
    blocks = [_facts(card)]
    if card.subject:
        blocks.append(_labelled("Subject", card.subject))
    blocks.append(_labelled("Body", card.body or "(empty)"))
    blocks.append(_reasons(card))
    return blocks


def _request_context(card: ApprovalCard) -> Block:
    parts = [f"Request {_code(card.request_id)}"]
    if card.deadline_at is not None:
        parts.append(f"rejected by default if nobody decides by {_when(card.deadline_at)}")
    return {"type": "context", "elements": [_mrkdwn(" · ".join(parts), CONTEXT_MAX)]}


def fallback_text(card: ApprovalCard) -> str:
    """The notification's text (and what screen readers read)."""
    decided = card.status in ("approved", "rejected")
    what = _outcome_label(card) if decided else "Approval needed"
    return fit(f"{what}: campaign {card.campaign_id}, cycle {card.cycle}", FALLBACK_MAX)


def request_blocks(card: ApprovalCard, *, escalated_to: str | None = None) -> list[Block]:
    """The message that asks: header, campaign and cycle, the variant, the reasons with their
    rule ids, the deadline, and the Approve and Reject buttons (their value: the request id)."""
    title = "Approval needed"
    if escalated_to:
        title = f"Escalated to {escalated_to}: approval needed"
    blocks: list[Block] = [
        {"type": "header", "text": _plain(f"{title} · {card.campaign_id}", HEADER_MAX)},
        *_content(card),
        _request_context(card),
        {
            "type": "actions",
            "block_id": ACTIONS_BLOCK,
            "elements": [
                {
                    "type": "button",
                    "action_id": APPROVE,
                    "text": _plain("Approve", 75),
                    "style": "primary",
                    "value": card.request_id,
                },
                {
                    "type": "button",
                    "action_id": REJECT,
                    "text": _plain("Reject", 75),
                    "style": "danger",
                    "value": card.request_id,
                },
            ],
        },
    ]
    return blocks


def _outcome_label(card: ApprovalCard) -> str:
    who = card.decided_by or ""
    if card.status == "approved":
        return f"Approved by {who}"
    if who == "system:stopped":
        return "Closed (the campaign stopped), rejected by default"
    if who.startswith("system:"):
        return "Expired (nobody decided in time), rejected by default"
    return f"Rejected by {who}"


def decided_blocks(card: ApprovalCard) -> list[Block]:
    """The message once decided: the outcome, who decided and their note; no buttons."""
    mark = "✅" if card.status == "approved" else "⛔"
    outcome = f"{mark} *{escape(_outcome_label(card))}*"
    if card.note:
        outcome += "\n" + escape(card.note)
    title = f"{_outcome_label(card)} · {card.campaign_id}"
    return [
        {"type": "header", "text": _plain(title, HEADER_MAX)},
        {"type": "section", "text": _mrkdwn(outcome)},
        *_content(card),
        {
            "type": "context",
            "elements": [_mrkdwn(f"Request {_code(card.request_id)}", CONTEXT_MAX)],
        },
    ]


def reject_modal(request_id: str, response_url: str | None) -> Block:
    """The modal a Reject button opens: a rejection needs a reason (the rules refuse one
    without). What the submission needs back travels in `private_metadata`."""
    metadata = json.dumps({"request_id": request_id, "response_url": response_url or ""})
    if len(metadata) > METADATA_MAX:  # a response_url is short; without it the reply is skipped
        metadata = json.dumps({"request_id": request_id, "response_url": ""})
    return {
        "type": "modal",
        "callback_id": REJECT_CALLBACK,
        "private_metadata": metadata,
        "title": _plain("Reject variant", 24),
        "submit": _plain("Reject", 24),
        "close": _plain("Cancel", 24),
        "blocks": [
            {
                "type": "section",
                "text": _mrkdwn(f"Rejecting request {_code(request_id)}."),
            },
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": _plain("Why is it rejected?", 2000),
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": True,
                    "min_length": 1,
                    "max_length": NOTE_MAX_CHARS,
                },
            },
        ],
    }
