"""Guardrails and limits as pure functions from a frozen proposal and a policy to a Verdict."""

from __future__ import annotations

from policies.campaign_limits import within_campaign_limits
from policies.engine import (
    check_model_input,
    check_model_output,
    check_send,
    check_sends,
    check_variant,
)
from policies.errors import PolicyError, PolicyLoadError, PolicyNotFoundError
from policies.figures import StatedFigure, StatedLink, host_allowed, stated_figures, stated_links
from policies.injection import InjectionScore, score_injection
from policies.models import (
    Decision,
    ModelInput,
    OfferTerms,
    Reason,
    RetrievedDocument,
    SendProposal,
    Severity,
    VariantCopy,
    VariantProposal,
    Verdict,
    combine,
)
from policies.pii import find_pii, get_analyzer
from policies.policy import Policy, bundled_policies, load_policy, parse_policy
from policies.store import PolicyStore

__all__ = [
    "Decision",
    "InjectionScore",
    "ModelInput",
    "OfferTerms",
    "Policy",
    "PolicyError",
    "PolicyLoadError",
    "PolicyNotFoundError",
    "PolicyStore",
    "Reason",
    "RetrievedDocument",
    "SendProposal",
    "Severity",
    "StatedFigure",
    "StatedLink",
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
    "host_allowed",
    "load_policy",
    "parse_policy",
    "score_injection",
    "stated_figures",
    "stated_links",
    "within_campaign_limits",
]
