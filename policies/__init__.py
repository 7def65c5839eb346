"""Guardrails and limits as pure functions from a frozen proposal and a policy to a Verdict."""

from __future__ import annotations

from policies.engine import (
    check_model_input,
    check_model_output,
    check_send,
    check_sends,
    check_variant,
)
from policies.errors import PolicyError, PolicyLoadError, PolicyNotFoundError
from policies.guarded import GuardedResult, ModelRequest, guarded_call
from policies.injection import InjectionScore, score_injection
from policies.models import (
    Decision,
    ModelInput,
    Offer,
    Reason,
    RetrievedDocument,
    SendProposal,
    Severity,
    VariantCopy,
    VariantProposal,
    Verdict,
    combine,
)
from policies.pii import PiiRestoreError, PiiVault, find_pii, get_analyzer, redact, to_typed_slots
from policies.policy import Policy, bundled_policies, load_policy, parse_policy
from policies.store import PolicyStore

__all__ = [
    "Decision",
    "GuardedResult",
    "InjectionScore",
    "ModelInput",
    "ModelRequest",
    "Offer",
    "PiiRestoreError",
    "PiiVault",
    "Policy",
    "PolicyError",
    "PolicyLoadError",
    "PolicyNotFoundError",
    "PolicyStore",
    "Reason",
    "RetrievedDocument",
    "SendProposal",
    "Severity",
    "VariantCopy",
    "VariantProposal",
    "Verdict",
    "bundled_policies",
    "check_model_input",
    "check_model_output",
    "check_send",
    "check_sends",
    "check_variant",
    "combine",
    "find_pii",
    "get_analyzer",
    "guarded_call",
    "load_policy",
    "parse_policy",
    "redact",
    "score_injection",
    "to_typed_slots",
]
