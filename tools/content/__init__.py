"""Generation: prompt library, the guarded copywriter, evaluation."""

from __future__ import annotations

from tools.content.errors import ContentError
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
    "GeneratedVariant",
    "GuardContext",
    "GuardReason",
    "GuardResult",
    "SlotSpec",
    "TokenUsage",
    "VariantRequest",
    "builtin_guard",
]
