from __future__ import annotations

import json

import httpx
import pytest
from pydantic import SecretStr

from connectors.ads.google_ads import GoogleAdsBudgetAdapter
from connectors.ads.port import BudgetChange, TransientAdError

CUSTOMER = "1234567890"
FAILURE_TYPE = "type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure"


def adapter(handler: httpx.MockTransport, **kwargs: object) -> GoogleAdsBudgetAdapter:
    return GoogleAdsBudgetAdapter(
        httpx.Client(transport=handler),
        customer_id="123-456-7890",
        developer_token=SecretStr("dev-token"),
        access_token=SecretStr("oauth-token"),
        login_customer_id="999-000-1111",
        **kwargs,  # type: ignore[arg-type]
    )


CHANGES = [
    BudgetChange(channel="search", budget_ref="111", daily_amount=12.5),
    BudgetChange(channel="youtube", budget_ref="222", daily_amount=40.0),
]


def test_request_has_the_documented_shape_and_results_map_back() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        return httpx.Response(
            200,
            json={
                "results": [
                    {"resourceName": op["update"]["resourceName"]} for op in body["operations"]
                ]
            },
        )

    outcomes = adapter(httpx.MockTransport(handle)).set_daily_budgets(CHANGES)
    request = seen[0]
    assert request.method == "POST"
    assert str(request.url) == (
        f"https://googleads.googleapis.com/v26/customers/{CUSTOMER}/campaignBudgets:mutate"
    )
    assert request.headers["authorization"] == "Bearer oauth-token"
    assert request.headers["developer-token"] == "dev-token"
    assert request.headers["login-customer-id"] == "9990001111"
    body = json.loads(request.content)
    assert body["partialFailure"] is True and body["validateOnly"] is False
    assert body["operations"][0] == {
        "updateMask": "amountMicros",
        "update": {
            "resourceName": f"customers/{CUSTOMER}/campaignBudgets/111",
            "amountMicros": "12500000",
        },
    }
    assert [o.status for o in outcomes] == ["applied", "applied"]
    assert outcomes[1].provider_ref == f"customers/{CUSTOMER}/campaignBudgets/222"


def test_partial_failure_marks_only_the_refused_operation() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "results": [{}, {"resourceName": f"customers/{CUSTOMER}/campaignBudgets/222"}],
                "partialFailureError": {
                    "code": 3,
                    "message": "Budget amount is too small.",
                    "details": [
                        {
                            "@type": FAILURE_TYPE,
                            "errors": [
                                {
                                    "errorCode": {"campaignBudgetError": "MONEY_AMOUNT_TOO_SMALL"},
                                    "message": "Budget amount is too small.",
                                    "location": {
                                        "fieldPathElements": [
                                            {"fieldName": "operations", "index": 0},
                                            {"fieldName": "update"},
                                            {"fieldName": "amount_micros"},
                                        ]
                                    },
                                }
                            ],
                        }
                    ],
                },
            },
        )

    outcomes = adapter(httpx.MockTransport(handle)).set_daily_budgets(CHANGES)
    assert outcomes[0].status == "failed"
    assert outcomes[0].error == "Budget amount is too small."
    assert outcomes[1].status == "applied"


def test_request_error_fails_every_change_and_outages_raise() -> None:
    def bad_request(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400, json={"error": {"code": 400, "message": "Request contains an invalid argument.",
                                 "status": "INVALID_ARGUMENT"}}
        )  # fmt: skip

    outcomes = adapter(httpx.MockTransport(bad_request)).set_daily_budgets(CHANGES)
    assert {o.status for o in outcomes} == {"failed"}
    assert outcomes[0].error == "Request contains an invalid argument."

    def unavailable(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": {"code": 503, "status": "UNAVAILABLE"}})

    with pytest.raises(TransientAdError):
        adapter(httpx.MockTransport(unavailable)).set_daily_budgets(CHANGES)


def test_validate_only_reports_validated() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["validateOnly"] is True
        return httpx.Response(200, json={})

    outcomes = adapter(httpx.MockTransport(handle), validate_only=True).set_daily_budgets(CHANGES)
    assert [o.status for o in outcomes] == ["validated", "validated"]


def test_customer_id_is_checked() -> None:
    with pytest.raises(ValueError, match=r"^customer_id:"):
        GoogleAdsBudgetAdapter(
            httpx.Client(),
            customer_id="abc",
            developer_token=SecretStr("x"),
            access_token=SecretStr("y"),
        )
