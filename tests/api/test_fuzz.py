"""Fuzzing every JSON endpoint of the API — CDP ingestion, campaign specs, approval decisions —
with arbitrary JSON, hostile strings (lone surrogates, NUL, CR/LF), huge numbers, NaN and
infinities, deep nesting, wrong types and raw bytes: never a 5xx, and every 4xx in the one error
shape.

Valid specs reach Temporal's real dev server and start (on a task queue no worker polls, so
nothing runs); the app runs in the TestClient's own event loop and connects to the dev server
itself, as it does in production."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from temporalio.testing import WorkflowEnvironment

from liftloop.api import create_app
from liftloop.db import engine_for
from liftloop.settings import Settings
from tests.api.helpers import API_KEY, assert_error_shape, campaign_spec
from tools.cdp.sources import create_source

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,  # no example database left in the checkout
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

hostile_text = st.one_of(
    st.sampled_from(
        [
            "\ud800",
            "\udfff",
            "a\ud83d",
            "\x00",
            "nul\x00inside",
            "\r\n",
            "line\r\nX-Injected: yes",
            "\u2028\u2029",
            "\ufeff",
            "\x7f\x1b[31m",
            "",
            " ",
            "é😀",
            "x" * 300,
            "../../etc/passwd",
            "'; DROP TABLE profiles; --",
        ]
    ),
    st.text(max_size=8),
    st.text(st.characters(codec="utf-8"), max_size=8),
)
huge_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
    st.integers(min_value=10**30, max_value=10**120),
    st.integers(max_value=-(10**30), min_value=-(10**120)),
    st.floats(),  # NaN and infinities included: json.dumps writes them as NaN / Infinity
    st.sampled_from([1e308, -1e308, 5e-324, 0.0, -0.0, 1e300]),
)
leaf = st.one_of(st.none(), st.booleans(), huge_numbers, hostile_text)
json_values = st.recursive(
    leaf,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(hostile_text, c, max_size=4),
    max_leaves=12,
)


# Odd but storable: what an accepted message may carry (CR/LF, unicode, 64-bit edges, 1e308).
clean_text = st.one_of(
    st.sampled_from(["\r\n", "line\r\nX-Injected: yes", "\u2028", "é😀", "", "x" * 300]),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8),
)
clean_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        clean_text,
    ),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(clean_text, c, max_size=3),
    max_leaves=8,
)


def _nested(depth: int, kind: str) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


deep_values = st.builds(_nested, st.integers(1, 400), st.sampled_from(["list", "dict"]))
values = st.one_of(json_values, deep_values, leaf)


class Body(bytes):
    """A request body with a short repr (hypothesis warns, and so fails, on huge ones)."""

    def __repr__(self) -> str:
        head = bytes(self[:80])
        return f"Body({head!r}{'…' if len(self) > 80 else ''}, {len(self)} bytes)"


@st.composite
def encoded(draw: st.DrawFn, value_strategy: st.SearchStrategy[Any]) -> bytes:
    """A value as a request body: ASCII escapes (surrogates as \\ud800), or raw UTF-8 with
    surrogates passed through (invalid UTF-8), or the text mangled."""
    value = draw(value_strategy)
    how = draw(st.sampled_from(["ascii", "raw", "mangled"]))
    if how == "ascii":
        return Body(json.dumps(value).encode())
    text = json.dumps(value, ensure_ascii=False)
    if how == "raw":
        return Body(text.encode("utf-8", "surrogatepass"))
    data = bytearray(text.encode("utf-8", "surrogatepass"))
    if data:
        at = draw(st.integers(0, len(data) - 1))
        data[at : at + 1] = draw(st.binary(min_size=0, max_size=3))
    return Body(data)


raw_bodies = st.one_of(
    st.binary(max_size=64),
    st.integers(1, 20_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 6000).map(lambda n: b'{"a": ' + b"9" * n + b"}"),
    st.sampled_from([b"", b"NaN", b"[Infinity]", b"-Infinity", b"\xef\xbb\xbf{}", b"{" * 3]),
).map(Body)

# -- specs -----------------------------------------------------------------------------------
SPEC_PATHS = [
    ("id",),
    ("name",),
    ("channels",),
    ("offers",),
    ("offers", 0, "id"),
    ("offers", 0, "discount_pct"),
    ("offers", 0, "margin_pct"),
    ("goal", "attribution_window"),
    ("goal", "kpi"),
    ("audience", "segment"),
    ("audience", "segment", "all", 0, "eq"),
    ("audience", "segment", "all", 0, "trait"),
    ("audience", "consent"),
    ("limits", "max_discount_pct"),
    ("limits", "frequency_cap", "per_day"),
    ("limits", "quiet_hours"),
    ("experiment", "holdout_pct"),
    ("experiment", "policy"),
    ("experiment", "exploration_sd"),
    ("experiment", "salt"),
    ("content", "template"),
    ("content", "market"),
    ("content", "brand"),
    ("content", "brief"),
    ("cadence", "every"),
    ("cadence", "max_cycles"),
    ("stop", "min_cycles"),
    ("simulation", "seed"),
    ("channel_cost", "email"),
    ("unknown_field",),
]
durations = st.one_of(
    st.sampled_from(["0s", "7d", "1825d", "1826d", "12h", "-1s", "1e3s", "٣d", "7 d", "w"]),
    huge_numbers,
)


def _set(data: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    node: Any = data
    for key in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(key, {})  # type: ignore[call-overload]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return
    last = path[-1]
    fits = isinstance(node, list) and isinstance(last, int) and last < len(node)
    if isinstance(node, dict) or fits:
        node[last] = value


@st.composite
def specs(draw: st.DrawFn) -> Any:
    """A valid spec with a few fields replaced by hostile values, or whole arbitrary JSON."""
    if draw(st.integers(0, 9)) == 0:
        return draw(values)
    data = campaign_spec(f"fz-{uuid.uuid4().hex[:12]}")
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(SPEC_PATHS))
        durable = path[-1] in ("every", "attribution_window")
        _set(data, path, draw(durations if durable and draw(st.booleans()) else values))
    return data


@pytest.fixture
def api(dev_env: WorkflowEnvironment, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    target = dev_env.client.service_client.config.target_host
    app_settings = Settings(
        data_dir=tmp_path / "data",
        temporal_address=target,
        task_queue=f"fuzz-{uuid.uuid4().hex[:8]}",  # no worker: a started campaign only waits
        api_keys=[API_KEY],
    )
    write_key = create_source(engine_for(app_settings.cdp_url), "fuzz")
    with TestClient(create_app(app_settings)) as client:
        yield client, write_key


def _check(response: Any) -> None:
    assert response.status_code < 500, response.text
    event(
        f"{response.request.method} {response.request.url.path.split('/')[2]} "
        f"{response.status_code}"
    )
    if response.status_code >= 400:
        assert_error_shape(response)


@FUZZ
@given(body=st.one_of(encoded(specs()), raw_bodies))
def test_fuzz_campaign_specs(api: tuple[TestClient, str], body: bytes) -> None:
    client, _ = api
    r = client.post(
        "/v1/campaigns",
        content=body,
        headers={"X-API-Key": API_KEY, "content-type": "application/json"},
    )
    _check(r)
    if r.status_code == 201:
        # It was valid: the campaign exists and can be stopped (nothing runs it here).
        cid = r.json()["campaign_id"]
        status = client.get(f"/v1/campaigns/{cid}", headers={"X-API-Key": API_KEY})
        assert status.status_code == 200, status.text


decisions = st.one_of(
    st.fixed_dictionaries(
        {"approved": st.one_of(st.booleans(), values), "approver": st.one_of(hostile_text, values)},
        optional={"note": st.one_of(hostile_text, values), "extra": values},
    ),
    values,
)


@FUZZ
@given(
    body=st.one_of(encoded(decisions), raw_bodies),
    request_id=st.one_of(st.just("apr-none"), st.text(max_size=20)),
)
def test_fuzz_approval_decisions(api: tuple[TestClient, str], body: bytes, request_id: str) -> None:
    client, _ = api
    from urllib.parse import quote

    path = "/v1/approvals/" + (quote(request_id, safe="") or "x")
    r = client.post(
        path, content=body, headers={"X-API-Key": API_KEY, "content-type": "application/json"}
    )
    _check(r)
    assert r.status_code in (400, 404, 405, 413, 422), r.text  # nothing is pending here


def _message(draw: st.DrawFn) -> Any:
    return draw(
        st.fixed_dictionaries(
            {},
            optional={
                "type": st.sampled_from(["track", "identify", "alias", "consent", "page", 3]),
                "messageId": st.one_of(hostile_text, values),
                "userId": st.one_of(st.sampled_from(["u1", "u2"]), hostile_text, values),
                "anonymousId": st.one_of(hostile_text, values),
                "previousId": st.one_of(hostile_text, values),
                "event": st.one_of(st.sampled_from(["order_completed", "email_opened"]), values),
                "properties": values,
                "traits": values,
                "context": values,
                "timestamp": st.one_of(hostile_text, huge_numbers),
                "consent": values,
            },
        )
    )


def _good_message(draw: st.DrawFn) -> Any:
    """A readable track message whose free-form parts carry hostile (but storable) values."""
    return {
        "type": "track",
        "messageId": uuid.uuid4().hex,
        "userId": draw(st.sampled_from(["u1", "u2", "ü3"])),
        "event": draw(st.sampled_from(["order_completed", "email_opened", "mystery"])),
        "properties": draw(st.dictionaries(clean_text, clean_values, max_size=4)),
        "context": draw(st.dictionaries(clean_text, clean_values, max_size=3)),
    }


@st.composite
def cdp_bodies(draw: st.DrawFn) -> Any:
    pick = draw(st.sampled_from([_good_message, _message]))
    if draw(st.booleans()):
        return {"batch": [pick(draw) for _ in range(draw(st.integers(0, 4)))]}
    return pick(draw) if draw(st.integers(0, 4)) else draw(values)


@FUZZ
@given(
    body=st.one_of(encoded(cdp_bodies()), raw_bodies),
    path=st.sampled_from(["/v1/batch", "/v1/track", "/v1/identify", "/v1/alias", "/v1/consent"]),
    auth=st.sampled_from(["bearer", "x-api-key", "basic", "settings", "none", "wrong"]),
)
def test_fuzz_ingestion(api: tuple[TestClient, str], body: bytes, path: str, auth: str) -> None:
    client, write_key = api
    headers = {"content-type": "application/json"}
    if auth == "bearer":
        headers["authorization"] = f"Bearer {write_key}"
    elif auth == "x-api-key":
        headers["x-api-key"] = write_key
    elif auth == "basic":
        headers["authorization"] = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
    elif auth == "settings":
        headers["x-api-key"] = API_KEY
    elif auth == "wrong":
        headers["authorization"] = "Bearer wk_wrong"
    r = client.post(path, content=body, headers=headers)
    _check(r)
    if auth in ("none", "wrong"):
        assert r.status_code == 401


@FUZZ
@given(
    campaign_id=st.text(max_size=20),
    action=st.one_of(st.sampled_from(["pause", "resume", "stop"]), st.text(max_size=8)),
    status=st.one_of(st.sampled_from(["pending", "all", "approved"]), st.text(max_size=8)),
    other=st.text(max_size=12),
)
def test_fuzz_paths_and_queries(
    api: tuple[TestClient, str], campaign_id: str, action: str, status: str, other: str
) -> None:
    from urllib.parse import quote

    client, _ = api
    key = {"X-API-Key": API_KEY}
    cid, act = quote(campaign_id, safe="") or "x", quote(action, safe="") or "x"
    for r in (
        client.get(f"/v1/campaigns/{cid}", headers=key),
        client.post(f"/v1/campaigns/{cid}/{act}", headers=key),
        client.get("/v1/approvals", params={"status": status, "campaign_id": other}, headers=key),
        client.get("/v1/campaigns", params={"limit": other}, headers=key),
    ):
        _check(r)
