"""Shared pieces of the API tests."""

from __future__ import annotations

import secrets
from typing import Any

# The API key of these tests, set explicitly (LIFTLOOP_API_KEYS): there is no default key.
API_KEY = f"test-{secrets.token_urlsafe(16)}"
KEY = {"X-API-Key": API_KEY}


def campaign_spec(campaign_id: str, batch: str = "none", **overrides: Any) -> dict[str, Any]:
    """A valid spec as JSON data: one offer above the discount limit, so it asks for approval."""
    data: dict[str, Any] = {
        "id": campaign_id,
        "channels": ["email"],
        "audience": {"segment": {"all": [{"trait": "source_batch", "eq": batch}]}},
        "offers": [{"id": "twenty_off", "discount_pct": 20}],
        "limits": {"max_discount_pct": 15},
        "content": {"market": "US", "brand": "demo"},
        "cadence": {"every": "0s", "max_cycles": 1},
        "stop": {"ship_when": "never", "min_cycles": 1},
    }
    data.update(overrides)
    return data


def assert_error_shape(response: Any) -> None:
    """A refusal in the API's one error shape: a non-empty list of named fields and reasons."""
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"errors"}, body
    errors = body["errors"]
    assert isinstance(errors, list) and errors, body
    for e in errors:
        assert isinstance(e, dict) and set(e) == {"field", "reason"}, e
        assert isinstance(e["field"], str) and e["field"], e
        assert isinstance(e["reason"], str) and e["reason"], e
