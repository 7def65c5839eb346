"""The schema of a policy file.

Unknown keys are refused so that a typo never silently disables a rule.
"""

from __future__ import annotations

import re
from datetime import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policies.models import Severity

_FIELDS = ("subject", "preheader", "body", "cta")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _compiles(patterns: list[str]) -> list[str]:
    for index, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"pattern {index} ({pattern!r}) is not a valid regex: {exc}") from exc
    return patterns


class OfferRules(_Strict):
    # segment -> product class -> max discount; the key "default" is the fallback at both levels.
    max_discount_pct: dict[str, dict[str, float]]
    hard_ceiling_pct: float = Field(ge=0, le=100)
    min_margin_pct: float | None = Field(default=None, ge=0, le=100)

    @model_validator(mode="after")
    def _limits_are_consistent(self) -> OfferRules:
        if "default" not in self.max_discount_pct or (
            "default" not in self.max_discount_pct["default"]
        ):
            raise ValueError("max_discount_pct needs a default.default limit")
        for segment, by_class in self.max_discount_pct.items():
            for product_class, limit in by_class.items():
                if not 0 <= limit <= self.hard_ceiling_pct:
                    raise ValueError(
                        f"max_discount_pct.{segment}.{product_class}={limit} must lie in "
                        f"[0, hard_ceiling_pct={self.hard_ceiling_pct}]"
                    )
        return self


class PhraseRule(_Strict):
    """A claim rule: phrases (regex fragments) matched on word boundaries, case-insensitively."""

    id: str
    severity: Severity
    explanation: str
    patterns: list[str] = Field(min_length=1)
    # The rule does not fire when any of these occurs anywhere in the copy (e.g. a cited source).
    unless: list[str] = Field(default_factory=list)
    fields: list[str] = Field(default_factory=lambda: list(_FIELDS))

    _patterns_compile = field_validator("patterns", "unless")(_compiles)

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(_FIELDS))
        if unknown:
            raise ValueError(f"unknown copy fields {unknown}; use {list(_FIELDS)}")
        return value


class RequiredElement(_Strict):
    """Something the copy of a channel must contain, e.g. an unsubscribe link or an imprint."""

    id: str
    channels: list[str] = Field(min_length=1)
    explanation: str
    patterns: list[str] = Field(min_length=1)
    severity: Severity = Severity.BLOCK

    _patterns_compile = field_validator("patterns")(_compiles)


class BannedWords(_Strict):
    severity: Severity = Severity.BLOCK
    words: list[str] = Field(default_factory=list)


class ToneRules(_Strict):
    all_caps_subject: Severity | None = Severity.ESCALATE
    # A subject counts as all caps from this many letters on (short acronyms like "NEU" pass).
    all_caps_min_letters: int = Field(default=6, ge=1)
    max_exclamations: dict[str, int] = Field(default_factory=dict)
    exclamation_severity: Severity = Severity.ESCALATE
    banned_words: BannedWords = Field(default_factory=BannedWords)

    @field_validator("max_exclamations")
    @classmethod
    def _known_fields(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - set(_FIELDS))
        if unknown:
            raise ValueError(f"unknown copy fields {unknown}; use {list(_FIELDS)}")
        return value


class PiiRules(_Strict):
    block: list[str] = Field(default_factory=list)
    escalate: list[str] = Field(default_factory=list)
    min_score: float = Field(default=0.5, ge=0, le=1)


class InjectionRules(_Strict):
    threshold: float = Field(default=0.5, gt=0)


class QuietHours(_Strict):
    start: time
    end: time
    channels: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _non_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end are equal; remove quiet_hours to disable them")
        return self


class FrequencyCap(_Strict):
    per_day: int | None = Field(default=None, ge=0)
    per_week: int | None = Field(default=None, ge=0)


class ContactRules(_Strict):
    quiet_hours: QuietHours | None = None
    frequency_caps: dict[str, FrequencyCap] = Field(default_factory=dict)


class SlotRule(_Strict):
    kind: Literal["text", "url"] = "text"
    max_length: int = Field(ge=1)
    # Characters beyond letters, marks, digits and spaces that a value may contain.
    allowed_punctuation: str = "-'."


_DOMAIN = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{1,62}$")


class LinkRules(_Strict):
    """Where links written out in the copy may point: these domains and their subdomains.

    Slot placeholders such as `{cta_url}` are not links in the copy (the send stage fills them
    from its settings); any other link to a host outside the list blocks the variant, and so
    does a link with a scheme other than http(s). Empty: no written-out links at all.
    """

    allowed_domains: list[str] = Field(default_factory=list)

    @field_validator("allowed_domains")
    @classmethod
    def _plain_domains(cls, value: list[str]) -> list[str]:
        for index, domain in enumerate(value):
            if not _DOMAIN.match(domain):
                raise ValueError(
                    f"domain {index} ({domain!r}) must be a lower-case host name such as"
                    " shop.example, without scheme, path or wildcard (subdomains are included)"
                )
        return value


class PolicyDocument(_Strict):
    id: str
    version: str = Field(min_length=1)
    brand: str
    market: str
    languages: list[str] = Field(min_length=1)
    offers: OfferRules
    claims: list[PhraseRule] = Field(default_factory=list)
    required: list[RequiredElement] = Field(default_factory=list)
    tone: ToneRules = Field(default_factory=ToneRules)
    pii: PiiRules = Field(default_factory=PiiRules)
    injection: InjectionRules = Field(default_factory=InjectionRules)
    contact: ContactRules = Field(default_factory=ContactRules)
    slots: dict[str, SlotRule] = Field(default_factory=dict)
    links: LinkRules = Field(default_factory=LinkRules)

    @model_validator(mode="after")
    def _unique_rule_ids(self) -> PolicyDocument:
        ids = [rule.id for rule in self.claims] + [rule.id for rule in self.required]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate rule ids {duplicates}")
        return self
