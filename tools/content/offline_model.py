"""The offline, deterministic copywriter model.

It is a pydantic-ai `FunctionModel`, so the agent, output validation, usage accounting and the
revision loop run exactly as with a hosted model. It reads the parameters and knowledge JSON
that the prompt carries and composes copy only from approved brand blocks, catalogue facts and
approved claims, citing each document it used. On a revision request it rotates to other blocks
and drops optional paragraphs, the way a writer shortens copy after review.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

OFFLINE_MODEL_NAME = "offline-composer"
PARAMETERS_MARK = "### PARAMETERS JSON"
KNOWLEDGE_MARK = "### KNOWLEDGE JSON"
REVISION_MARK = "REVISION REQUEST"
_FILL = re.compile(r"(?<!\{)\{(discount_pct|offer_end|product)\}(?!\})")


def _user_prompts(messages: list[ModelMessage]) -> list[str]:
    return [
        part.content
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, UserPromptPart) and isinstance(part.content, str)
    ]


def _json_after(text: str, mark: str) -> Any:
    start = text.find(mark)
    if start < 0:
        return None
    decoder = json.JSONDecoder()
    body = text[start + len(mark) :].lstrip()
    value, _ = decoder.raw_decode(body)
    return value


@dataclass
class _Composer:
    params: dict[str, Any]
    items: list[dict[str, Any]]
    attempt: int
    shorten: bool
    used_docs: list[str] = field(default_factory=list)
    used_claims: list[str] = field(default_factory=list)

    def _salt(self) -> int:
        key = f"{self.params.get('campaign_id')}|{self.params.get('arm')}"
        return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) + self.attempt

    def _cite(self, item: dict[str, Any]) -> None:
        if item["doc_id"] not in self.used_docs:
            self.used_docs.append(item["doc_id"])

    def _usable(self, kind: str) -> list[dict[str, Any]]:
        language = self.params.get("language")
        return [
            i
            for i in self.items
            if i["kind"] == kind
            and not i.get("injection_suspected")
            and i.get("fields", {}).get("language", language) == language
        ]

    def product(self) -> dict[str, Any] | None:
        products = self._usable("catalogue")
        return products[0] if products else None

    def block(self, role: str, *, prefer: str = "", avoid: str = "", shortest: bool = False) -> str:
        blocks = [b for b in self._usable("blocks") if b["fields"].get("role") == role]
        preferred = [b for b in blocks if prefer and prefer in b["text"]]
        if not preferred and avoid:
            preferred = [b for b in blocks if avoid not in b["text"]]
        pool = preferred or blocks
        if not pool:
            return ""
        if shortest:
            chosen = min(pool, key=lambda b: len(self._fill(b["text"], cite=False)))
        else:
            chosen = pool[self._salt() % len(pool)]
        self._cite(chosen)
        return self._fill(chosen["text"])

    def _fill(self, text: str, *, cite: bool = True) -> str:
        product = self.product()
        discount = float(self.params.get("discount_pct") or 0)
        values = {
            "discount_pct": f"{discount:g}",
            "offer_end": str(self.params.get("offer_end") or ""),
            "product": product["fields"].get("name", "") if product else "",
        }
        if "{product}" in text and product and cite:
            self._cite(product)
        return _FILL.sub(lambda m: values[m.group(1)], text)

    def product_paragraph(self) -> str:
        product = self.product()
        if product is None:
            return ""
        self._cite(product)
        fields = product["fields"]
        return f"{fields.get('name', '')}: {fields.get('feature', '')}."

    def claim_paragraph(self) -> str:
        product = self.product()
        if product is None:
            return ""
        wanted = {c.strip() for c in product["fields"].get("claim_ids", "").split(",") if c.strip()}
        for claim in self._usable("claims"):
            fields = claim["fields"]
            if fields.get("status") == "approved" and fields.get("claim_id") in wanted:
                self._cite(claim)
                self.used_claims.append(fields["claim_id"])
                return str(claim["text"])
        return ""

    def compose(self) -> dict[str, Any]:
        channel = self.params.get("channel", "email")
        task = self.params.get("task", "long_copy")
        has_discount = float(self.params.get("discount_pct") or 0) > 0
        prefer, avoid = ("{discount_pct}", "") if has_discount else ("", "{discount_pct}")
        if channel == "sms":
            # No subject or button: message, link slot, opt-out; shortened on a length revision.
            message = self.block("sms", prefer=prefer, avoid=avoid, shortest=self.shorten)
            body = " ".join(t for t in (message, "{{cta_url}}", self.block("sms_optout")) if t)
            return self._draft("", "", [("paragraph", body)], "")
        subject = self.block("subject", prefer=prefer, avoid=avoid)
        if task == "subject_line":
            return self._draft(subject, self.block("preheader"), [], "")
        if channel == "push":
            body = self.block("push") if has_discount else self.product_paragraph()
            return self._draft(subject, "", [("paragraph", body)], self.block("cta"))
        blocks: list[tuple[str, str]] = [
            ("greeting", self.block("greeting")),
            ("paragraph", self.block("opener")),
        ]
        if has_discount:
            blocks.append(("offer", self.block("offer")))
        blocks.append(("product", self.product_paragraph()))
        if not self.shorten:
            blocks.append(("claim", self.claim_paragraph()))
            blocks.append(("paragraph", self.block("value")))
        closing = " ".join(t for t in (self.block("closing"), self.block("signoff")) if t)
        blocks.append(("closing", closing))
        blocks.append(("footer", self.block("footer")))
        return self._draft(subject, self.block("preheader"), blocks, self.block("cta"))

    def _draft(
        self, subject: str, preheader: str, blocks: list[tuple[str, str]], cta: str
    ) -> dict[str, Any]:
        return {
            "subject": subject,
            "preheader": preheader,
            "body_blocks": [{"kind": k, "text": t} for k, t in blocks if t],
            "call_to_action": cta,
            "claims_used": self.used_claims,
            "citations": self.used_docs,
        }


def compose_copy(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    prompts = _user_prompts(messages)
    first = next((p for p in prompts if PARAMETERS_MARK in p), None)
    if first is None or not info.output_tools:
        return ModelResponse(parts=[TextPart("I need the parameters and knowledge JSON to write.")])
    revisions = [p for p in prompts if p.startswith(REVISION_MARK)]
    composer = _Composer(
        params=_json_after(first, PARAMETERS_MARK) or {},
        items=_json_after(first, KNOWLEDGE_MARK) or [],
        attempt=len(revisions),
        shorten=any("length." in r for r in revisions),
    )
    return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, composer.compose())])


def offline_model() -> FunctionModel:
    return FunctionModel(compose_copy, model_name=OFFLINE_MODEL_NAME)
