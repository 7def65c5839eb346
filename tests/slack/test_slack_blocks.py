"""Block Kit of an approval request: what it shows, Slack's limits, the buttons, the decided
version, the reject form; nothing in the variant's text becomes markup or a mention."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from approvals.slack_blocks import (
    HEADER_MAX,
    SECTION_MAX,
    ApprovalCard,
    Reason,
    decided_blocks,
    escape,
    fallback_text,
    fit,
    reject_modal,
    request_blocks,
)


def _card(**overrides: Any) -> ApprovalCard:
    values: dict[str, Any] = {
        "request_id": "apr-spring-0-a1",
        "campaign_id": "spring",
        "cycle": 0,
        "variant_id": "spring:0:a1",
        "channel": "email",
        "arm": "a1",
        "subject": "Hello {first_name}, 20 % off",
        "body": "Dear {first_name},\n<!channel> & friends: 20 % off until Sunday.",
        "reasons": (Reason("campaign.max_discount", "20 % is above the limit of 15 %"),),
        "deadline_at": datetime(2026, 12, 1, 12, 0, tzinfo=UTC),
        "approver_group": "approvers",
        "escalation_group": "leads",
    }
    values.update(overrides)
    return ApprovalCard(**values)


def _texts(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every text object in the blocks."""
    found = []
    for block in blocks:
        for key in ("text", "label"):
            if isinstance(block.get(key), dict):
                found.append(block[key])
        found.extend(block.get("fields", []))
        found.extend(e for e in block.get("elements", []) if "type" in e and "text" in e)
    return found


def test_the_request_message_shows_what_is_asked_with_two_buttons() -> None:
    blocks = request_blocks(_card())
    kinds = [b["type"] for b in blocks]
    assert kinds[0] == "header" and kinds[-1] == "actions"
    text = json.dumps(blocks)
    for part in ("spring", "Hello {first_name}", "campaign.max_discount", "above the limit"):
        assert part in text
    assert "<!date^1796126400^" in text  # the deadline in each reader's own time zone
    approve, reject = blocks[-1]["elements"]
    assert (approve["action_id"], approve["style"], approve["value"]) == (
        "approve",
        "primary",
        "apr-spring-0-a1",
    )
    assert (reject["action_id"], reject["style"], reject["value"]) == (
        "reject",
        "danger",
        "apr-spring-0-a1",
    )


def test_the_variant_is_plain_text_so_it_pings_nobody() -> None:
    blocks = request_blocks(_card())
    body = next(b for b in blocks if b.get("text", {}).get("text", "").startswith("Body"))
    assert body["text"]["type"] == "plain_text" and "<!channel>" in body["text"]["text"]
    for text in _texts(blocks):
        if text["type"] == "mrkdwn":
            assert "<!channel>" not in text["text"]
    reasons = _card(reasons=(Reason("x.y", "<@U123> & <https://evil|click>"),))
    mrkdwn = [t["text"] for t in _texts(request_blocks(reasons)) if t["type"] == "mrkdwn"]
    assert any("&lt;@U123&gt; &amp; &lt;https://evil|click&gt;" in t for t in mrkdwn)


def test_every_text_fits_slacks_limits() -> None:
    huge = _card(
        campaign_id="c" * 200,
        subject="s" * 5000,
        body="b&" * 5000,
        reasons=tuple(Reason(f"rule.{i}", "<&>" * 400) for i in range(20)),
        note="n" * 5000,
        status="rejected",
        decided_by="lead",
    )
    for blocks in (request_blocks(huge), decided_blocks(huge)):
        assert len(blocks) <= 50
        for block in blocks:
            limit = HEADER_MAX if block["type"] == "header" else SECTION_MAX
            if "text" in block:
                assert len(block["text"]["text"]) <= limit
            for field in block.get("fields", []):
                assert len(field["text"]) <= 2000
    assert len(fallback_text(huge)) <= 300


def test_fit_never_cuts_an_escape() -> None:
    text = escape("a" * 8 + "&")  # "aaaaaaaa&amp;"
    assert fit(text, 11) == "aaaaaaaa…" and fit(text, 13) == text


def test_the_decided_message_has_the_outcome_and_no_buttons() -> None:
    approved = decided_blocks(_card(status="approved", decided_by="lead", note="fine"))
    assert all(b["type"] != "actions" for b in approved)
    text = json.dumps(approved)
    assert "Approved by lead" in text and "fine" in text and "Hello {first_name}" in text
    rejected = json.dumps(decided_blocks(_card(status="rejected", decided_by="lead", note="no")))
    assert "Rejected by lead" in rejected
    expired = _card(status="rejected", decided_by="system:timeout", note="no decision")
    assert "Expired" in json.dumps(decided_blocks(expired))
    assert fallback_text(expired).startswith("Expired")


def test_the_reject_form_asks_for_a_reason() -> None:
    view = reject_modal("apr-1", "https://hooks.slack.com/actions/T/1/x")
    assert view["type"] == "modal" and view["callback_id"] == "reject_reason"
    assert json.loads(view["private_metadata"])["request_id"] == "apr-1"
    [field] = [b for b in view["blocks"] if b["type"] == "input"]
    assert field["element"]["type"] == "plain_text_input" and field["element"]["min_length"] == 1
    assert len(view["title"]["text"]) <= 24
