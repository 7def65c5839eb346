"""Loading, validating and compiling a policy file into the form the engine uses."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from opentelemetry import trace
from pydantic import ValidationError

from policies.document import PhraseRule, PolicyDocument, RequiredElement, SlotRule
from policies.errors import PolicyLoadError

_URL_SLOT = re.compile(r"https://[A-Za-z0-9.-]+(?::\d+)?(?:[/?#][^\s<>\"'{}]*)?")


def _slot_pattern(rule: SlotRule) -> re.Pattern[str]:
    if rule.kind == "url":
        return _URL_SLOT
    return re.compile(f"[\\w {re.escape(rule.allowed_punctuation)}]*")


tracer = trace.get_tracer("liftloop.policies")


def _word_regex(patterns: list[str]) -> re.Pattern[str]:
    # Lookarounds instead of \b so that phrases that start or end with punctuation ("#1") work.
    joined = "|".join(f"(?:{p})" for p in patterns)
    return re.compile(f"(?<![\\w]){'(?:' + joined + ')'}(?![\\w])", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class CompiledPhraseRule:
    rule: PhraseRule
    regex: re.Pattern[str]
    unless: re.Pattern[str] | None


@dataclass(frozen=True, slots=True)
class CompiledRequirement:
    rule: RequiredElement
    regex: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class Policy:
    """A validated policy with compiled regexes; ``version`` = declared version + content hash."""

    document: PolicyDocument
    version: str
    source: str
    claims: tuple[CompiledPhraseRule, ...]
    required: tuple[CompiledRequirement, ...]
    banned_words: re.Pattern[str] | None
    # Per typed slot: (max length, full-match pattern of a value, whether to scan for injections).
    # URL slots are not scanned: their pattern already excludes spaces, so they hold no sentences.
    slot_patterns: dict[str, tuple[int, re.Pattern[str], bool]]

    @property
    def key(self) -> tuple[str, str]:
        return (self.document.brand.lower(), self.document.market.upper())

    def discount_limit(self, segment: str, product_class: str) -> float:
        limits = self.document.offers.max_discount_pct
        by_class = limits.get(segment, limits["default"])
        if product_class in by_class:
            return by_class[product_class]
        if "default" in by_class:
            return by_class["default"]
        return limits["default"].get(product_class, limits["default"]["default"])


def _key_of(loc: tuple[int | str, ...]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key or "<root>"


def parse_policy(text: str, source: str) -> Policy:
    """Validate YAML text; a bad file raises PolicyLoadError naming the source, the key and why."""
    with tracer.start_as_current_span("policies.load") as span:
        span.set_attribute("policy.source", source)
        try:
            policy = _parse_policy(text, source)
        except PolicyLoadError as exc:
            span.set_attribute("policy.refused_key", exc.key)
            raise
        span.set_attribute("policy.version", policy.version)
        return policy


def _parse_policy(text: str, source: str) -> Policy:
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyLoadError(source, "<yaml>", f"not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise PolicyLoadError(source, "<root>", "a policy file must be a mapping")
    try:
        document = PolicyDocument.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise PolicyLoadError(source, _key_of(tuple(first["loc"])), first["msg"]) from exc
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return Policy(
        document=document,
        version=f"{document.id}@{document.version}+{digest}",
        source=source,
        claims=tuple(
            CompiledPhraseRule(
                rule=rule,
                regex=_word_regex(rule.patterns),
                unless=_word_regex(rule.unless) if rule.unless else None,
            )
            for rule in document.claims
        ),
        required=tuple(
            CompiledRequirement(rule=rule, regex=_word_regex(rule.patterns))
            for rule in document.required
        ),
        banned_words=(
            _word_regex([re.escape(w) for w in document.tone.banned_words.words])
            if document.tone.banned_words.words
            else None
        ),
        slot_patterns={
            name: (rule.max_length, _slot_pattern(rule), rule.kind == "text")
            for name, rule in document.slots.items()
        },
    )


def load_policy(path: str | Path) -> Policy:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyLoadError(file.name, "<file>", f"cannot be read: {exc.strerror}") from exc
    return parse_policy(text, file.name)


def bundled_policies() -> list[Policy]:
    """The policy files shipped with the package (``policies/files/*.yaml``)."""
    folder = resources.files("policies") / "files"
    return [
        parse_policy(entry.read_text(encoding="utf-8"), entry.name)
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith((".yaml", ".yml"))
    ]
