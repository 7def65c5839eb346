"""Google Ads adapter: campaign budget amounts through the REST `campaignBudgets:mutate` call.

One request carries every change as an update operation with `updateMask: amountMicros`, and
`partialFailure: true` so one refused budget does not block the others. Failed operations
come back as empty results plus a `partialFailure` status whose error locations name the
operation index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
from opentelemetry import trace
from pydantic import SecretStr

from connectors.ads.port import BudgetChange, BudgetChangeOutcome, TransientAdError
from connectors.headers import HeaderBuilder

tracer = trace.get_tracer("liftloop.connectors.ads")

GOOGLE_ADS_BASE_URL = "https://googleads.googleapis.com"
DEFAULT_API_VERSION = "v26"
_MICROS = 1_000_000


class GoogleAdsBudgetAdapter:
    name = "google_ads"

    def __init__(
        self,
        client: httpx.Client,
        *,
        customer_id: str,
        developer_token: SecretStr,
        access_token: SecretStr,
        login_customer_id: str | None = None,
        api_version: str = DEFAULT_API_VERSION,
        validate_only: bool = False,
    ) -> None:
        digits = customer_id.replace("-", "")
        if not digits.isdigit():
            raise ValueError(f"customer_id: expected digits (dashes allowed), got {customer_id!r}")
        self._client = client
        self._customer_id = digits
        self._developer_token = developer_token
        self._access_token = access_token
        self._login_customer_id = login_customer_id.replace("-", "") if login_customer_id else None
        self._url = f"{GOOGLE_ADS_BASE_URL}/{api_version}/customers/{digits}/campaignBudgets:mutate"
        self._validate_only = validate_only

    def _headers(self) -> dict[str, str]:
        headers = (
            HeaderBuilder.for_http()
            .text("Authorization", f"Bearer {self._access_token.get_secret_value()}")
            .text("developer-token", self._developer_token.get_secret_value())
            .text("Content-Type", "application/json")
        )
        if self._login_customer_id:
            headers.text("login-customer-id", self._login_customer_id)
        return headers.build().http()

    def _resource(self, budget_ref: str) -> str:
        return f"customers/{self._customer_id}/campaignBudgets/{budget_ref}"

    def set_daily_budgets(self, changes: Sequence[BudgetChange]) -> list[BudgetChangeOutcome]:
        if not changes:
            return []
        with tracer.start_as_current_span("ads.google.set_daily_budgets") as span:
            body = {
                "operations": [
                    {
                        "updateMask": "amountMicros",
                        "update": {
                            "resourceName": self._resource(c.budget_ref),
                            # int64 fields are JSON strings in the REST mapping.
                            "amountMicros": str(round(c.daily_amount * _MICROS)),
                        },
                    }
                    for c in changes
                ],
                "partialFailure": True,
                "validateOnly": self._validate_only,
            }
            try:
                response = self._client.post(self._url, json=body, headers=self._headers())
            except httpx.TransportError as exc:
                raise TransientAdError(f"google_ads: {type(exc).__name__}") from exc
            span.set_attributes(
                {"ads.operations": len(changes), "ads.http_status": response.status_code}
            )
            if response.status_code == 429 or response.status_code >= 500:
                raise TransientAdError(f"google_ads: HTTP {response.status_code}")
            payload: dict[str, Any] = response.json() if response.content else {}
            if response.status_code >= 400:
                message = payload.get("error", {}).get("message", f"HTTP {response.status_code}")
                return [self._failed(c, message) for c in changes]
            outcomes = self._outcomes(changes, payload)
            span.set_attribute("ads.failed", sum(o.status == "failed" for o in outcomes))
            return outcomes

    def _failed(self, change: BudgetChange, message: str) -> BudgetChangeOutcome:
        return BudgetChangeOutcome(
            channel=change.channel, budget_ref=change.budget_ref, status="failed", error=message
        )

    def _outcomes(
        self, changes: Sequence[BudgetChange], payload: dict[str, Any]
    ) -> list[BudgetChangeOutcome]:
        errors = _partial_failure_errors(payload.get("partialFailureError"))
        results: list[dict[str, Any]] = payload.get("results", [])
        outcomes = []
        for i, change in enumerate(changes):
            result = results[i] if i < len(results) else {}
            if i in errors or (not self._validate_only and not result.get("resourceName")):
                outcomes.append(self._failed(change, errors.get(i, "no result for operation")))
                continue
            outcomes.append(
                BudgetChangeOutcome(
                    channel=change.channel,
                    budget_ref=change.budget_ref,
                    status="validated" if self._validate_only else "applied",
                    provider_ref=result.get("resourceName"),
                )
            )
        return outcomes


def _partial_failure_errors(status: dict[str, Any] | None) -> dict[int, str]:
    """Operation index → message, from the GoogleAdsFailure details of a partial failure."""
    if not status:
        return {}
    found: dict[int, str] = {}
    for detail in status.get("details", []):
        for error in detail.get("errors", []):
            elements = error.get("location", {}).get("fieldPathElements", [])
            for element in elements:
                if element.get("fieldName") == "operations" and "index" in element:
                    found.setdefault(int(element["index"]), error.get("message", "refused"))
                    break
    return found
