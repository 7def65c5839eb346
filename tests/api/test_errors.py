"""The API's hardening without Temporal: each reproduced attack replayed against the ASGI app
(or a real server where the connection matters), answered 4xx in the one error shape, never 5xx.

Temporal is unreachable here on purpose: whatever must be refused is refused before it."""

from __future__ import annotations

import base64
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.contrib.pydantic import pydantic_data_converter

from liftloop.api import create_app
from liftloop.api_errors import ApiError
from liftloop.api_input import _deeper_by_text, _deeper_by_walk, parse_json
from liftloop.campaigns import check_encodable, loop_input
from liftloop.db import engine_for
from liftloop.loop.spec import SpecError, load_spec, parse_spec
from liftloop.settings import Settings
from tests.accounts_support import bearer, user_token
from tests.api.conftest import free_port
from tests.api.helpers import API_KEY, KEY, assert_error_shape, campaign_spec
from tools.cdp.sources import create_source
from tools.durations import MAX_DURATION_S, parse_duration

JSON = {"content-type": "application/json"}


@pytest.fixture
def app_settings(tmp_path: Path) -> Settings:
    # Nothing listens on port 1: a request that reaches Temporal answers 503.
    return Settings(data_dir=tmp_path / "data", temporal_address="127.0.0.1:1", api_keys=[API_KEY])


@pytest.fixture
def app(app_settings: Settings) -> FastAPI:
    return create_app(app_settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def _nested_segment(levels: int) -> dict[str, Any]:
    seg: dict[str, Any] = {"trait": "country", "eq": "DE"}
    for _ in range(levels):
        seg = {"not": seg}
    return seg


def _spec_text(**overrides: Any) -> bytes:
    return json.dumps(campaign_spec("atk", **overrides)).encode()


SPEC_ATTACKS = [
    # (name, body, status, field, words in the reason)
    ("nan", _spec_text().replace(b'"0s"', b"NaN"), 400, "body", "NaN"),
    ("infinity", _spec_text().replace(b'"0s"', b"Infinity"), 400, "body", "Infinity"),
    ("minus-infinity", _spec_text().replace(b'"0s"', b"-Infinity"), 400, "body", "Infinity"),
    ("1e400", _spec_text().replace(b'"0s"', b"1e400"), 400, "body", "out of range"),
    ("duration-1e300", _spec_text().replace(b'"0s"', b"1e300"), 422, "cadence.every", "five"),
    ("duration-9e9d", _spec_text(goal={"attribution_window": "9999999d"}), 422, "goal.", "five"),
    ("duration-negative", _spec_text().replace(b'"0s"', b"-5"), 422, "cadence.every", "negative"),
    ("duration-list", _spec_text().replace(b'"0s"', b"[1]"), 422, "cadence.every", "duration"),
    ("surrogate-name", _spec_text(name="\ud800"), 422, "name", "invalid unicode"),
    ("surrogate-id", _spec_text(id="\udfff"), 422, "id", ""),
    ("nul-brand", _spec_text(content={"brand": "a\x00b"}), 422, "content.brand", "NUL"),
    (
        "surrogate-segment-key",
        _spec_text(audience={"segment": {"\ud83d": 1}}),
        422,
        "audience.segment",
        "invalid unicode",
    ),
    ("invalid-utf8", b'{"id": "\xff\xfe"}', 400, "body", "UTF-8"),
    ("encoded-surrogate", b'{"id": "\xed\xa0\x80"}', 400, "body", "UTF-8"),
    ("deep-10000", b"[" * 10_000 + b"]" * 10_000, 400, "body", "deeper"),
    ("segment-300", _spec_text(audience={"segment": _nested_segment(300)}), 400, "body", "deeper"),
    (
        "segment-40",
        _spec_text(audience={"segment": _nested_segment(40)}),
        422,
        "audience.segment",
        "deeper than 32",
    ),
    ("digits-5000", b'{"id": ' + b"9" * 5000 + b"}", 400, "body", "characters"),
    ("big-int-segment", _spec_text(audience={"segment": {"eq": 10**30}}), 422, "audience", "64"),
    ("cost-huge", _spec_text(channel_cost={"email": 1e200}), 422, "channel_cost.email", ""),
    ("seed-negative", _spec_text(simulation={"seed": -1}), 422, "simulation.seed", ""),
    ("cap-huge", _spec_text(limits={"frequency_cap": {"per_day": 10**9}}), 422, "limits", ""),
    ("not-an-object", b"[1, 2]", 422, "spec", "dictionary"),
    ("empty", b"", 400, "body", "empty"),
    ("garbage", b"{not json", 400, "body", "not valid JSON"),
]


@pytest.mark.parametrize(
    ("body", "status", "field", "words"),
    [pytest.param(b, s, f, w, id=n) for n, b, s, f, w in SPEC_ATTACKS],
)
def test_spec_attacks_are_refused_with_the_field_and_reason(
    client: TestClient, body: bytes, status: int, field: str, words: str
) -> None:
    r = client.post("/v1/campaigns", content=body, headers={**KEY, **JSON})
    assert r.status_code == status, r.text
    assert_error_shape(r)
    first = r.json()["errors"][0]
    assert first["field"].startswith(field) and words in first["reason"], first
    # The connection stays usable and the API keeps answering.
    assert client.get("/healthz").status_code == 200


def test_a_valid_spec_gets_past_validation(client: TestClient) -> None:
    """The same spec without the attack reaches Temporal (unreachable here: 503, the shape)."""
    r = client.post("/v1/campaigns", json=campaign_spec("atk"), headers=KEY)
    assert r.status_code == 503 and r.json()["errors"][0]["field"] == "temporal", r.text


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        pytest.param(b'{"approved": NaN}', 400, "body", id="nan"),
        pytest.param(b'{"approved": true, "note": "\\ud800"}', 422, "note", id="surrogate"),
        pytest.param(b'{"approved": true, "note": "a\\u0000"}', 422, "note", id="nul"),
        pytest.param(b'{"approved": "yes"}', 422, "approved", id="wrong-type"),
        pytest.param(b'{"note": "why"}', 422, "approved", id="missing"),
        pytest.param(b'{"approved": true, "x": 1}', 422, "x", id="extra"),
        # The approver is the token's user: a body cannot name another.
        pytest.param(b'{"approved": true, "approver": "ceo"}', 422, "approver", id="approver"),
        pytest.param(b"[" * 5000 + b"]" * 5000, 400, "body", id="deep"),
        pytest.param(b'{"approved": \xff}', 400, "body", id="invalid-utf8"),
        pytest.param(b'{"approved": 1' + b"0" * 200 + b"}", 400, "body", id="digits"),
        pytest.param(b'{"approved": true}', 503, "temporal", id="valid"),
    ],
)
def test_approval_attacks_are_refused(
    client: TestClient, app_settings: Settings, body: bytes, status: int, field: str
) -> None:
    token = user_token(engine_for(app_settings.cdp_url), "lead", "approver")
    r = client.post("/v1/approvals/apr-x", content=body, headers={**bearer(token), **JSON})
    if status == 503:
        # A valid decision for an unknown request: 404 before Temporal is asked.
        assert r.status_code == 404 and r.json()["errors"][0]["field"] == "request_id", r.text
        return
    assert r.status_code == status, r.text
    assert_error_shape(r)
    assert r.json()["errors"][0]["field"] == field, r.text


def test_a_decision_needs_a_person_not_a_service_key(client: TestClient) -> None:
    r = client.post("/v1/approvals/apr-x", json={"approved": True}, headers=KEY)
    assert r.status_code == 403, r.text
    assert_error_shape(r)
    assert "personal token" in r.json()["errors"][0]["reason"]


def test_one_error_shape_for_every_kind_of_refusal(client: TestClient) -> None:
    checks = [
        (client.get("/v1/approvals"), 401, "authorization"),
        (client.get("/v1/approvals", headers={"X-API-Key": "wrong"}), 401, "authorization"),
        (client.post("/v1/track", content=b"{}", headers=JSON), 401, "authorization"),
        (client.get("/v1/nope", headers=KEY), 404, "path"),
        (client.delete("/v1/approvals", headers=KEY), 405, "method"),
        (client.get("/v1/approvals?status=bogus", headers=KEY), 422, "status"),
        (client.get("/v1/approvals?campaign_id=a%00b", headers=KEY), 422, "campaign_id"),
        (client.get("/v1/campaigns?limit=0", headers=KEY), 422, "limit"),
        (client.post("/v1/campaigns/abc/explode", headers=KEY), 422, "action"),
        (client.get("/v1/campaigns/NOT%20AN%20ID", headers=KEY), 404, "campaign_id"),
        (client.get("/v1/campaigns/abc", headers=KEY), 503, "temporal"),
        (client.post("/v1/batch", content=b"{", headers={**KEY, **JSON}), 400, "body"),
    ]
    for response, status, field in checks:
        assert response.status_code == status, (response.request.url, response.text)
        assert_error_shape(response)
        assert response.json()["errors"][0]["field"] == field, response.text
    assert "WWW-Authenticate" in checks[0][0].headers


def test_one_key_parser_for_every_route(client: TestClient, app_settings: Settings) -> None:
    from liftloop.db import engine_for

    write_key = create_source(engine_for(app_settings.cdp_url), "web")
    track = json.dumps({"messageId": "k1", "userId": "u1", "event": "email_opened"})
    for key, ok_for_campaigns in ((API_KEY, True), (write_key, False)):
        basic = base64.b64encode(f"{key}:".encode()).decode()
        for headers in (
            {"X-API-Key": key},
            {"Authorization": f"Bearer {key}"},
            {"Authorization": f"Basic {basic}"},
        ):
            r = client.post("/v1/track", content=track, headers={**headers, **JSON})
            assert r.status_code == 200, (headers, r.text)
            r = client.get("/v1/approvals", headers=headers)
            assert r.status_code == (200 if ok_for_campaigns else 401), (headers, r.text)
    for headers in (
        {"X-API-Key": API_KEY, "Authorization": "Bearer other"},  # two different keys
        {"Authorization": "Bearer"},
        {"Authorization": "Basic !!!"},
        {"Authorization": f"Token {API_KEY}"},
        {"X-API-Key": f"{API_KEY}\u00e9".encode("latin-1")},
    ):
        for r in (
            client.get("/v1/approvals", headers=headers),
            client.post("/v1/track", content=track, headers={**headers, **JSON}),
        ):
            assert r.status_code == 401, (headers, r.text)
            assert_error_shape(r)
    # Another scheme beside a good X-API-Key (a proxy's) does not get in the way.
    r = client.get("/v1/approvals", headers={"X-API-Key": API_KEY, "Authorization": "Negotiate x"})
    assert r.status_code == 200


def test_body_limits_answer_413_before_the_body_is_read(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        temporal_address="127.0.0.1:1",
        api_max_body_bytes=2048,
        cdp_max_message_bytes=1024,
        cdp_max_batch_bytes=4096,
        api_keys=[API_KEY],
    )
    app = create_app(settings)
    with TestClient(app) as c:
        for path, size in (
            ("/v1/campaigns", 2049),
            ("/v1/approvals/x", 2049),
            ("/v1/track", 1025),
            ("/v1/batch", 4097),
        ):
            body = b" " * size
            declared = c.post(path, content=body, headers={**KEY, **JSON})
            streamed = c.post(path, content=iter([body[:1000], body[1000:]]), headers=KEY)
            for r in (declared, streamed):
                assert r.status_code == 413, (path, r.text)
                assert_error_shape(r)
                assert r.json()["errors"][0]["field"] == "body"
            assert c.post(path, content=b" " * (size - 1), headers=KEY).status_code != 413
        big = c.post("/v1/healthz", content=b" " * 10_000, headers=KEY)
        assert big.status_code == 413  # the global cap holds for any path

    # At the ASGI level: a declared 1 GB body is refused without one byte being received.
    import asyncio

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body must not be read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": "/v1/campaigns",
        "raw_path": b"/v1/campaigns",
        "query_string": b"",
        "headers": [(b"content-length", b"1000000000"), (b"x-api-key", API_KEY.encode())],
        "client": ("127.0.0.1", 1),
        "server": ("api", 80),
        "scheme": "http",
        "root_path": "",
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["errors"][0]["field"] == "body"


def _raw_requests(port: int, *requests: bytes) -> list[bytes]:
    """Send requests one after the other on one keep-alive connection; the responses."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for request in requests:
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(rest) < length:
                rest += sock.recv(65536)
            answers.append(head + b"\r\n\r\n" + rest)
    return answers


def test_an_unexpected_exception_answers_the_shape_logs_no_data_and_keeps_the_connection(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(request: Request) -> None:
        person = (await request.json())["email"]
        raise RuntimeError(f"customer {person} broke it")

    async def raw_boom(scope: Any, receive: Any, send: Any) -> None:
        raise KeyError(scope["query_string"].decode())

    app.add_api_route("/v1/boom", boom, methods=["POST"])
    app.mount("/raw", raw_boom)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        caplog.set_level(logging.ERROR, logger="liftloop.api")
        req = (
            b"POST /v1/boom HTTP/1.1\r\nHost: x\r\nContent-Length: 29\r\n\r\n"
            b'{"email": "jane@example.com"}',
            b"GET /raw/x?jane@example.com HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        first, second, third = _raw_requests(port, *req)
    finally:
        server.should_exit = True
        thread.join(10)
    for answer in (first, second):
        assert answer.startswith(b"HTTP/1.1 500"), answer
        body = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert body["errors"][0]["field"] == "server"
        assert "reference" in body["errors"][0]["reason"]
        assert b"jane" not in answer
    assert third.startswith(b"HTTP/1.1 200")  # same connection, still open
    assert "RuntimeError" in caplog.text and "KeyError" in caplog.text
    assert "jane@example.com" not in caplog.text


def test_parse_duration_refuses_what_no_timer_holds() -> None:
    assert parse_duration("7d") == 7 * 86400 and parse_duration(0) == 0.0
    assert parse_duration("1825d") == MAX_DURATION_S
    for bad in (
        math.nan,
        math.inf,
        -math.inf,
        -1,
        1e300,
        10**400,
        "1826d",
        "9" * 400 + "s",
        "7 days",
        "٣d",
        True,
        None,
        [1],
    ):
        with pytest.raises(ValueError):
            parse_duration(bad)  # type: ignore[arg-type]


def test_yaml_specs_are_held_to_the_same_rules(tmp_path: Path) -> None:
    base = "id: y1\nchannels: [email]\noffers: [{id: x}]\n"
    cases = {
        "nan": base + "cadence: {every: .nan}\n",
        "inf": base + "channel_cost: {email: .inf}\n",
        "date": base + "audience: {segment: {trait: since, eq: 2026-01-01}}\n",
        "int-key": base + "audience: {segment: {1: x}}\n",
        "deep": base + "audience: {segment: " + "[" * 5000 + "]" * 5000 + "}\n",
    }
    for name, text in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        with pytest.raises(SpecError):
            load_spec(path)
    path = tmp_path / "bytes.yaml"
    path.write_bytes(base.encode() + b"name: \xff\n")
    with pytest.raises(SpecError):
        load_spec(path)


def test_parse_json_is_strict() -> None:
    assert parse_json(b'{"a": [1, 2.5, "\\u00e9", null, true]}') == {"a": [1, 2.5, "é", None, True]}
    assert parse_json(b"[" * 64 + b"]" * 64, max_depth=64) == parse_json(b"[" * 64 + b"]" * 64)
    assert parse_json(b'"\\ud800"') == "\ud800"  # kept for the model to name the field
    # Numbers of up to 100 characters pass, longer ones do not; digits in strings are text.
    assert parse_json(b"[" + b"7" * 100 + b"]") == [int("7" * 100)]
    assert parse_json(b'["' + b"7" * 300 + b'", 1]') == ["7" * 300, 1]
    assert parse_json(b"[1.5e" + b"0" * 95 + b"1]") == [15.0]
    for bad in (
        b"NaN",
        b"[-Infinity]",
        b"[1e999]",
        b"1" * 101,
        b'["' + b"7" * 300 + b'", ' + b"7" * 101 + b"]",
        b"[1.5e" + b"0" * 97 + b"1]",
        b"\xc3\x28",
        b"[" * 65 + b"]" * 65,
        b"[" * 100_000,
        b"",
        b"\xef\xbb\xbf{}",
        b'{"a": 1,}',
        b"[\x00]",
    ):
        with pytest.raises(ApiError) as info:
            parse_json(bad)
        assert info.value.status == 400 and info.value.problems[0][0] == "body"


def test_an_input_the_worker_could_not_read_back_never_starts(tmp_path: Path) -> None:
    client: Any = SimpleNamespace(data_converter=pydantic_data_converter)
    settings = Settings(data_dir=tmp_path)
    good = loop_input(parse_spec(campaign_spec("enc")), settings)
    check_encodable(client, good, settings.spec_max_bytes)
    # A value JSON cannot carry, smuggled past validation: the round trip catches it.
    spec = parse_spec(campaign_spec("enc"))
    broken = good.model_copy(
        update={
            "spec": spec.model_copy(
                update={"cadence": spec.cadence.model_copy(update={"every": math.inf})}
            )
        }
    )
    with pytest.raises(SpecError) as info:
        check_encodable(client, broken, settings.spec_max_bytes)
    assert info.value.problems[0][0] == "spec"
    # Too large for Temporal's payloads once every activity carries it.
    huge = parse_spec(
        campaign_spec("enc", audience={"segment": {"trait": "id", "in": ["x" * 100] * 3000}})
    )
    with pytest.raises(SpecError) as info:
        check_encodable(client, loop_input(huge, settings), settings.spec_max_bytes)
    assert "bytes" in info.value.problems[0][1]
    with pytest.raises(ValueError, match="LIFTLOOP_APPROVAL_TIMEOUT_S"):
        loop_input(spec, settings.model_copy(update={"approval_timeout_s": math.inf}))


tricky_text = st.text(alphabet='[]{}"\\\\ax\u00e9\n', max_size=6)
nested_json = st.recursive(
    st.one_of(st.none(), st.integers(), tricky_text),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(tricky_text, c, max_size=3),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, database=None)
@given(value=nested_json, wrap=st.integers(0, 12), ascii_only=st.booleans())
def test_the_depth_read_off_the_text_agrees_with_the_walk(
    value: Any, wrap: int, ascii_only: bool
) -> None:
    """The fast depth check (C-speed passes over the text) against the plain walk of the value,
    strings full of brackets, quotes and backslashes included."""
    for _ in range(wrap):
        value = [value]
    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    for limit in (1, 2, 3, 5, 8, 13):
        by_text = _deeper_by_text(body, limit)
        if by_text is not None:
            assert by_text == _deeper_by_walk(value, limit), (body, limit)
        with_brackets = any(ch in s for s in _strings(value) for ch in "[]{}")
        assert (by_text is None) == with_brackets, body


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
