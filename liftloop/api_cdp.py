"""CDP ingestion API: Segment-style `/v1/track|identify|alias|consent|batch` with a key per source.

Authenticate with `Authorization: Bearer <write key>` or HTTP basic with the write key as the
user name (as Segment's libraries send it). A rejected request changes nothing and answers
`{"errors": [{"field", "reason"}]}`; an accepted one answers the ingest counts, with contract
violations counted as quarantined.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine

from liftloop.db import engine_for
from liftloop.settings import get_settings
from tools.cdp.contracts import ContractRegistry
from tools.cdp.errors import CdpError, MessageError
from tools.cdp.ingest import collector_paused, ingest_parsed
from tools.cdp.messages import parse_batch, parse_message
from tools.cdp.sources import source_for_key
from tools.cdp.tables import ensure_cdp_tables

# Segment's limits: 32 KB per message, 500 KB per batch.
MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024

router = APIRouter(prefix="/v1", tags=["cdp"])


class RequestRejected(Exception):
    def __init__(self, status: int, field: str, reason: str) -> None:
        self.status, self.field, self.reason = status, field, reason
        super().__init__(f"{field}: {reason}")


@lru_cache(maxsize=4)
def _engine(url: str) -> Engine:
    engine = engine_for(url)
    ensure_cdp_tables(engine)
    return engine


def get_cdp_engine() -> Engine:
    return _engine(get_settings().cdp_url)


@lru_cache(maxsize=1)
def get_contracts() -> ContractRegistry:
    return ContractRegistry.load()


def _write_key(authorization: str) -> str:
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise RequestRejected(
                401, "authorization", "basic credentials are not base64"
            ) from None
        return decoded.partition(":")[0]
    raise RequestRejected(401, "authorization", "send 'Bearer <write key>' or basic auth")


def _source(authorization: str, engine: Engine) -> str:
    """The source whose write key the request carries; 401 otherwise."""
    keys = [k.get_secret_value() for k in get_settings().api_keys]
    source = source_for_key(engine, _write_key(authorization), keys)
    if source is None:
        raise RequestRejected(401, "authorization", "unknown write key")
    return source


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _json_body(body: bytes, limit: int) -> Any:
    if len(body) > limit:
        raise RequestRejected(413, "body", f"is {len(body)} bytes; at most {limit} are allowed")
    try:
        return json.loads(body, parse_constant=_reject_constant, parse_float=_finite)
    except (ValueError, RecursionError) as exc:
        raise RequestRejected(400, "body", f"is not valid JSON ({exc})") from None


def _rejection(exc: RequestRejected | CdpError, status: int = 400) -> JSONResponse:
    code = exc.status if isinstance(exc, RequestRejected) else status
    return JSONResponse(
        status_code=code, content={"errors": [{"field": exc.field, "reason": exc.reason}]}
    )


def _handle(authorization: str, body: bytes, kind: str | None, engine: Engine) -> JSONResponse:
    """A whole request in one worker thread: key, JSON, messages, ingest.

    Parsing happens here too rather than on the event loop, which stays free for other
    requests, and under the same paused cycle collector as the ingest (see
    `collector_paused`): the parsed batch lives until it is written."""
    with collector_paused():
        try:
            source = _source(authorization, engine)
            # JSON text can only carry a NUL or a lone surrogate as a \u escape (json.loads
            # refuses raw control characters, and invalid UTF-8 never decodes): without one,
            # every string is storable and the check of each can be skipped.
            clean = b"\\u" not in body
            if kind is None:
                raw = _json_body(body, MAX_BATCH_BYTES)
                # First: it checks that there is a batch at all.
                parsed = parse_batch(raw, strings_checked=clean)
                messages = list(zip(raw["batch"], parsed, strict=True))
            else:
                raw = _json_body(body, MAX_MESSAGE_BYTES)
                if isinstance(raw, dict) and raw.setdefault("type", kind) != kind:
                    raise MessageError("type", f"must be '{kind}' on /v1/{kind}")
                messages = [(raw, parse_message(raw, strings_checked=clean))]
        except (RequestRejected, MessageError) as exc:
            return _rejection(exc)
        result = ingest_parsed(engine, messages, source=source, registry=get_contracts())
    return JSONResponse(content=result.model_dump())


async def _respond(request: Request, kind: str | None, engine: Engine) -> JSONResponse:
    body = await request.body()
    authorization = request.headers.get("authorization", "")
    return await run_in_threadpool(_handle, authorization, body, kind, engine)


def _single(kind: str) -> Any:
    async def endpoint(
        request: Request, engine: Annotated[Engine, Depends(get_cdp_engine)]
    ) -> JSONResponse:
        return await _respond(request, kind, engine)

    endpoint.__name__ = f"ingest_{kind}"
    endpoint.__doc__ = f"Ingest one {kind} message."
    return endpoint


for _kind in ("track", "identify", "alias", "consent"):
    router.add_api_route(f"/{_kind}", _single(_kind), methods=["POST"], name=f"cdp_{_kind}")


@router.post("/batch", name="cdp_batch")
async def ingest_batch(
    request: Request, engine: Annotated[Engine, Depends(get_cdp_engine)]
) -> JSONResponse:
    """Ingest up to 1,000 messages; one unreadable message rejects the whole batch."""
    return await _respond(request, None, engine)
