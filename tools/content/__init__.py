"""Generation: prompt library, the guarded copywriter, evaluation."""

from __future__ import annotations

from tools.content.errors import ContentError
from tools.content.generate import Copywriter, agenerate_variant, generate_variant
from tools.content.guard import CopyGuard, GuardContext, builtin_guard
from tools.content.models import (
    BodyBlock,
    CopyDraft,
    GeneratedVariant,
    GuardReason,
    GuardResult,
    SlotSpec,
    TokenUsage,
    VariantRequest,
)

__all__ = [
    "BodyBlock",
    "ContentError",
    "CopyDraft",
    "CopyGuard",
    "Copywriter",
    "GeneratedVariant",
    "GuardContext",
    "GuardReason",
    "GuardResult",
    "SlotSpec",
    "TokenUsage",
    "VariantRequest",
    "agenerate_variant",
    "builtin_guard",
    "generate_variant",
]
