"""Fuzzing the ingestion API: no 5xx, every rejection names a field and a reason, nothing once
stored is lost, and a replayed batch adds nothing."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.engine import Engine

from liftloop.api_cdp import get_cdp_engine, router
from tools.cdp.sources import create_source
from tools.cdp.sql import cols
from tools.cdp.tables import Event, QuarantinedMessage

ids = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["u1", "u2", "a1", "m1", "m2", "\x00", "\ud800", "x" * 201]),
    st.integers(),
    st.none(),
)
leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=4),
    st.floats(allow_nan=False, allow_infinity=False),
)
json_values = st.recursive(
    leaf,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
    max_leaves=6,
)
order_props = st.fixed_dictionaries(
    {},
    optional={
        "order_id": st.one_of(st.text(max_size=3), st.integers()),
        "revenue": st.one_of(
            st.floats(allow_nan=False, allow_infinity=False), st.integers(), st.text(max_size=3)
        ),
    },
)
timestamps = st.one_of(
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.text(max_size=6),
    st.integers(),
)
message = st.fixed_dictionaries(
    {"type": st.sampled_from(["track", "identify", "alias", "consent", "page", 3])},
    optional={
        "messageId": ids,
        "userId": ids,
        "anonymousId": ids,
        "previousId": ids,
        "event": st.sampled_from(
            [
                "order_completed",
                "email_opened",
                "unsubscribed",
                "message_bounced",
                "mystery",
                "",
                "$identify",
            ]
        ),
        "properties": st.one_of(order_props, json_values),
        "traits": st.one_of(
            st.fixed_dictionaries({}, optional={"email": ids, "phone": ids}), json_values
        ),
        "timestamp": timestamps,
        "context": st.one_of(
            st.fixed_dictionaries({"device": st.fixed_dictionaries({"id": ids})}), json_values
        ),
        "consent": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "purpose": st.sampled_from(["marketing", "ads", "spam"]),
                        "channel": st.sampled_from(["email", "sms", "fax"]),
                        "granted": st.one_of(st.booleans(), st.text(max_size=2)),
                    }
                ),
                max_size=2,
            ),
            json_values,
        ),
    },
)
small_ids = st.sampled_from(["u1", "u2", "a1", "a2", "ü3"])
good_message = st.fixed_dictionaries(
    {
        "type": st.just("track"),
        "messageId": st.text("abcdef0123456789", min_size=4, max_size=8),
        "userId": small_ids,
        "event": st.sampled_from(["order_completed", "email_opened", "unsubscribed", "mystery"]),
        "properties": order_props,
    },
    optional={
        "anonymousId": small_ids,
        "timestamp": st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    },
) | st.fixed_dictionaries(
    {
        "type": st.just("identify"),
        "messageId": st.text("abcdef0123456789", min_size=4, max_size=8),
        "anonymousId": small_ids,
        "traits": st.fixed_dictionaries({}, optional={"email": small_ids, "country": leaf}),
    },
    optional={"userId": small_ids},
)
bodies = st.one_of(
    st.fixed_dictionaries({"batch": st.lists(good_message, min_size=1, max_size=8)}),
    st.fixed_dictionaries({"batch": st.lists(good_message | message, max_size=6)}),
    st.fixed_dictionaries({"batch": json_values}),
    json_values,
)


def _stored(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        events = conn.execute(select(cols(Event).message_id)).scalars().all()
        held = conn.execute(select(cols(QuarantinedMessage).message_id)).scalars().all()
    return {*events, *held}


def _check_rejection(response: Any) -> None:
    errors = response.json()["errors"]
    assert errors and all(e["field"] and e["reason"] for e in errors), errors


@settings(
    max_examples=60,
    deadline=None,
    database=None,  # no example database left in the checkout
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=bodies)
def test_fuzz_batch_api(engine: Engine, body: Any) -> None:
    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[get_cdp_engine] = lambda: engine
    key = getattr(engine, "_fuzz_key", None) or create_source(engine, "fuzz")
    engine._fuzz_key = key  # type: ignore[attr-defined]
    client = TestClient(app)
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    payload = json.dumps(body).encode()  # ASCII escapes, so lone surrogates reach the server

    before = _stored(engine)
    first = client.post("/v1/batch", content=payload, headers=headers)
    assert first.status_code < 500, first.text
    event(f"status {first.status_code}")
    after = _stored(engine)
    assert before <= after  # nothing already stored is lost
    if first.status_code != 200:
        _check_rejection(first)
        assert after == before  # a rejected batch changes nothing
        return
    counts = first.json()
    event("some accepted" if counts["accepted"] else "none accepted")
    assert counts["accepted"] + counts["duplicates"] + counts["quarantined"] == len(body["batch"])
    assert len(after) - len(before) == counts["accepted"] + counts["quarantined"]
    again = client.post("/v1/batch", content=payload, headers=headers)
    assert again.status_code == 200
    assert again.json()["duplicates"] == len(body["batch"])
    assert _stored(engine) == after
