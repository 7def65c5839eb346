from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine

from liftloop.api_cdp import get_cdp_engine, router
from tools.cdp.sources import create_source
from tools.cdp.sql import cols
from tools.cdp.tables import Event


@pytest.fixture
def client(engine: Engine) -> Iterator[tuple[TestClient, str]]:
    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[get_cdp_engine] = lambda: engine
    key = create_source(engine, "web")
    with TestClient(app) as c:
        yield c, key


def _post(c: TestClient, path: str, body: Any, key: str | None) -> Any:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return c.post(path, content=json.dumps(body).encode(), headers=headers)


def test_keys_per_source(client: tuple[TestClient, str], engine: Engine, m: Any):
    c, key = client
    body = m.order("k1", "u1", 5.0, "2026-01-01T00:00:00Z")
    r = _post(c, "/v1/track", body, None)
    assert r.status_code == 401
    assert r.json() == {
        "errors": [
            {
                "field": "authorization",
                "reason": "send 'Authorization: Bearer <key>', 'X-API-Key: <key>' or basic auth "
                "with the key as user",
            }
        ]
    }
    assert _post(c, "/v1/track", body, "wk_wrong").status_code == 401
    basic = base64.b64encode(f"{key}:".encode()).decode()
    r = c.post("/v1/track", content=json.dumps(body), headers={"authorization": f"Basic {basic}"})
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert _post(c, "/v1/track", body, key).json()["duplicates"] == 1
    # X-API-Key works here as on every route that takes a key (one parser for the whole API).
    other = m.order("k2", "u1", 5.0, "2026-01-01T00:00:00Z")
    r = c.post("/v1/track", content=json.dumps(other), headers={"x-api-key": key})
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    r = c.post("/v1/track", content=json.dumps(other), headers={"x-api-key": "wk_wrong"})
    assert r.status_code == 401 and r.json()["errors"][0]["reason"] == "unknown write key"


def test_endpoints_and_rejections(client: tuple[TestClient, str], m: Any):
    c, key = client
    ident = m.msg("identify", "i1", uid="u1", traits={"country": "DE"})
    del ident["type"]  # the endpoint implies it
    assert _post(c, "/v1/identify", ident, key).json()["accepted"] == 1
    assert (
        _post(c, "/v1/alias", {"messageId": "a1", "userId": "u1", "previousId": "x"}, key).json()[
            "accepted"
        ]
        == 1
    )
    consent = {
        "messageId": "c1",
        "userId": "u1",
        "consent": [{"purpose": "ads", "channel": "ads", "granted": False}],
    }
    assert _post(c, "/v1/consent", consent, key).json()["accepted"] == 1
    r = _post(c, "/v1/track", {**ident, "type": "identify"}, key)
    assert r.status_code == 400
    assert r.json()["errors"][0] == {"field": "type", "reason": "must be 'track' on /v1/track"}
    r = c.post("/v1/batch", content=b"{not json", headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "body"
    too_many = {"batch": [m.order(f"b{i}", "u1", 1.0, "2026-01-01T00:00:00Z") for i in range(1001)]}
    r = _post(c, "/v1/batch", too_many, key)
    assert r.status_code in (400, 413) and r.json()["errors"][0]["field"] in ("batch", "body")
    bad = {
        "batch": [
            m.order("g1", "u1", 1.0, "2026-01-01T00:00:00Z"),
            {"type": "track", "messageId": "g2", "userId": "u1"},
        ]
    }
    r = _post(c, "/v1/batch", bad, key)
    assert r.status_code == 400
    assert r.json()["errors"] == [{"field": "batch.1.event", "reason": "Field required"}]


def test_batch_of_thousand(client: tuple[TestClient, str], engine: Engine, m: Any):
    c, key = client
    batch = {
        "batch": [
            m.msg("track", f"t{i}", uid=f"u{i % 50}", event="email_opened", properties={})
            for i in range(1000)
        ]
    }
    r = _post(c, "/v1/batch", batch, key)
    assert r.json() == {"accepted": 1000, "duplicates": 0, "quarantined": 0, "merges": 0}
    with engine.connect() as conn:
        assert len(conn.execute(select(cols(Event).id)).all()) == 1000


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("nul\u0000here", "batch.1.properties.product_id"),
        ("\ud800", "batch.1.properties.product_id"),
        ("caf\u00e9", None),  # an escape that hides nothing: stored
    ],
)
def test_unstorable_text_in_a_batch_is_named(
    client: tuple[TestClient, str], engine: Engine, m: Any, text: str, path: str | None
):
    c, key = client
    ok = m.msg("track", "s0", uid="u1", event="product_viewed", properties={"product_id": "p1"})
    odd = m.msg("track", "s1", uid="u1", event="product_viewed", properties={"product_id": text})
    r = _post(c, "/v1/batch", {"batch": [ok, odd]}, key)  # json.dumps writes \u escapes
    if path is None:
        assert r.status_code == 200 and r.json()["accepted"] == 2
        with engine.connect() as conn:
            stored = conn.execute(
                select(cols(Event).properties).where(cols(Event).message_id == "s1")
            ).scalar_one()
        assert stored == {"product_id": text}
    else:
        assert r.status_code == 400
        assert r.json()["errors"] == [
            {"field": path, "reason": "contains a NUL character or invalid unicode"}
        ]
