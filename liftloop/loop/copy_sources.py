"""Where a variant's copy comes from: the built-in templates or the copywriter agent over the
knowledge base. Either way one variant per arm, never per person, and no personal data."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict
from temporalio.exceptions import ApplicationError

from liftloop.loop.builtin_templates import render_variant
from liftloop.loop.prompt_releases import PromptReleases
from liftloop.loop.spec import CampaignSpec, Offer
from tools.content.errors import ContentError
from tools.rag.errors import KnowledgeError

if TYPE_CHECKING:  # the knowledge stack loads only when a campaign asks for the copywriter
    from pydantic_ai.exceptions import ModelHTTPError

    from agents.copywriter import Copywriter

# The copywriter's template per channel; the campaign's template wins for e-mail.
CHANNEL_TEMPLATES = {"email": "winback_email", "push": "promo_push", "sms": "promo_sms"}
# When the offer ends, in the campaign's language (the specs carry no end date yet).
_OFFER_END = {"en": "Sunday", "de": "Sonntag"}
_UNSUBSCRIBE = {"en": "Unsubscribe: {unsubscribe_url}", "de": "Abmelden: {unsubscribe_url}"}
_DOUBLE_BRACE = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")


class ArmCopy(BaseModel):
    model_config = ConfigDict(frozen=True)

    subject: str
    body: str
    template_id: str
    template_version: str
    model: str = "template"
    snapshot_id: str | None = None
    # The signed manifest's signature: an auditor checks the snapshot with `kb verify`.
    snapshot_signature: str | None = None
    citations: tuple[str, ...] = ()
    # Set when no acceptable copy could be written (the prompt refused, the drafts still blocked
    # after their revisions, the prompt version not released): the guard stage blocks it.
    blocked: tuple[tuple[str, str], ...] = ()


def builtin_copy(
    spec: CampaignSpec, offer: Offer, channel: str, arm: str, cycle: int = 0
) -> ArmCopy:
    template, subject, body = render_variant(
        spec.content.template, spec.content.language, offer.discount_pct
    )
    return ArmCopy(
        subject=subject, body=body, template_id=template.id, template_version=template.version
    )


class CopywriterSource:
    """Builds the copywriter once per worker, on the first campaign that asks for it.

    The copywriter checks the knowledge index for a newer published generation before every
    variant (one small file read), so a re-ingest reaches the next generate activity without a
    restart, and each variant records the snapshot id it was written from.
    """

    def __init__(self, build: Callable[[], Copywriter], releases: PromptReleases):
        self._build = build
        self._releases = releases
        self._lock = threading.Lock()
        self._copywriter: Copywriter | None = None

    def _get(self) -> Copywriter:
        with self._lock:
            if self._copywriter is None:
                self._copywriter = self._build()
            return self._copywriter

    def __call__(
        self, spec: CampaignSpec, offer: Offer, channel: str, arm: str, cycle: int = 0
    ) -> ArmCopy:
        from pydantic_ai.exceptions import ModelHTTPError

        from tools.content.models import VariantRequest

        copywriter = self._get()
        template_id = (
            spec.content.template
            if channel == "email" and spec.content.template.endswith("_email")
            else CHANNEL_TEMPLATES[channel]
        )
        request = VariantRequest(
            campaign_id=spec.id,
            arm=arm,
            channel=channel,
            language=spec.content.language,
            market=spec.content.market,
            template_id=template_id,
            brief=spec.content.brief,
            offer_description=(
                f"{offer.discount_pct:g} % off" if offer.discount_pct else "no discount"
            ),
            discount_pct=offer.discount_pct,
            offer_end=_OFFER_END.get(spec.content.language, _OFFER_END["en"]),
            cycle=cycle,
        )
        refused = self._releases.refusal(copywriter, template_id, spec.id)
        if refused:
            template = copywriter.library.get(template_id)
            return ArmCopy(
                subject="",
                body="",
                template_id=template.id,
                template_version=template.version,
                model=copywriter.router.name_for(template.task),
                blocked=refused,
            )
        # Activities run in worker threads, which have no event loop of their own.
        try:
            variant = asyncio.run(copywriter.generate(request))
        except ModelHTTPError as exc:
            raise _model_failure(exc) from exc
        body = finish_email_body(
            _DOUBLE_BRACE.sub(r"{\1}", variant.body),
            channel,
            spec.content.market,
            spec.content.language,
        )
        return ArmCopy(
            subject=_DOUBLE_BRACE.sub(r"{\1}", variant.subject),
            body=body,
            template_id=variant.template_id,
            template_version=variant.template_version,
            model=variant.model,
            snapshot_id=variant.snapshot_id,
            snapshot_signature=_signature(copywriter, variant.snapshot_id),
            citations=tuple(variant.citations),
            blocked=tuple((r.rule_id, r.message) for r in variant.guard.reasons)
            if variant.escalated
            else (),
        )


def _model_failure(exc: ModelHTTPError) -> Exception:
    """Busy or failing servers are retried by Temporal, no sooner than their Retry-After; a
    refusal (a wrong key, an unknown model) fails the campaign with the reason."""
    status = exc.status_code
    if status in (408, 409, 429) or status >= 500:
        delay = min(exc.retry_after, 600.0) if exc.retry_after else None
        return ApplicationError(
            f"llm_model: the model server answered {status}",
            type="ModelUnavailable",
            next_retry_delay=timedelta(seconds=delay) if delay else None,
        )
    code = f", {exc.provider_error_code}" if exc.provider_error_code else ""
    return ContentError("llm_model", f"the model server refused the request ({status}{code})")


def _signature(copywriter: Copywriter, snapshot_id: str | None) -> str | None:
    if snapshot_id is None:
        return None
    try:
        return copywriter.knowledge.load_snapshot(snapshot_id).signature
    except KnowledgeError:  # an index that keeps no snapshots (in memory)
        return None


CopySource = Callable[[CampaignSpec, Offer, str, str, int], ArmCopy]


def finish_email_body(body: str, channel: str, market: str, language: str) -> str:
    """The body as the send stage holds it: e-mail carries the compliance footer."""
    return with_compliance_footer(body, market, language) if channel == "email" else body


def with_compliance_footer(body: str, market: str, language: str) -> str:
    """Adds the sender identity the market's law asks for (an imprint in DE and AT, a postal
    address elsewhere) and the unsubscribe link, unless the copy has them already."""
    identity = "Impressum: {imprint}" if market in ("DE", "AT") else "{sender_address}"
    missing = []
    if "{imprint}" not in body and "{sender_address}" not in body:
        missing.append(identity)
    if "{unsubscribe_url}" not in body:
        missing.append(_UNSUBSCRIBE.get(language, _UNSUBSCRIBE["en"]))
    return body.rstrip() + "\n\n--\n" + "\n".join(missing) + "\n" if missing else body
