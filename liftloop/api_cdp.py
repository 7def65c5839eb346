"""CDP ingestion API: Segment-style `/v1/track|identify|alias|consent|batch` with a key per source.

Authenticate with `Authorization: Bearer <write key>`, `X-API-Key: <write key>` or HTTP basic
with the write key as the user name (as Segment's libraries send it) — the one key parser of the
whole API (`liftloop.api_input`). A rejected request changes nothing and answers
`{"errors": [{"field", "reason"}]}`; an accepted one answers the ingest counts, with contract
violations counted as quarantined. Bodies are limited (`LIFTLOOP_CDP_MAX_MESSAGE_BYTES`,
`LIFTLOOP_CDP_MAX_BATCH_BYTES`, Segment's 32 KB and 500 KB by default) and parsed by the API's one
strict JSON parser.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine

from liftloop.api_errors import ERROR_RESPONSES, ApiError, ShapedRoute
from liftloop.api_input import KEY_FIELD, KEY_SCHEMES, parse_json, presented_key, read_body
from liftloop.credentials import api_keys
from liftloop.db import engine_for
from liftloop.settings import Settings, get_settings
from tools.cdp.contracts import ContractRegistry
from tools.cdp.errors import MessageError
from tools.cdp.ingest import collector_paused, ingest_parsed
from tools.cdp.messages import parse_batch, parse_message
from tools.cdp.sources import source_for_key
from tools.cdp.tables import ensure_cdp_tables

router = APIRouter(
    prefix="/v1",
    tags=["cdp"],
    route_class=ShapedRoute,
    dependencies=KEY_SCHEMES,
    responses=ERROR_RESPONSES,
)


@lru_cache(maxsize=4)
def _engine(url: str) -> Engine:
    engine = engine_for(url)
    ensure_cdp_tables(engine)
    return engine


def get_cdp_settings() -> Settings:
    """The settings of the routes (keys, limits); the app overrides it with its own."""
    return get_settings()


def get_cdp_api_keys() -> list[str]:
    """The API's keys, which also count as a write key (source `settings`); the app overrides
    it with the keys it resolved at start. Alone, the router makes no key: without
    `LIFTLOOP_API_KEYS` or a generated key file, only the sources' write keys count."""
    return api_keys(get_settings(), create=False)


def get_cdp_engine() -> Engine:
    return _engine(get_settings().cdp_url)


@lru_cache(maxsize=1)
def get_contracts() -> ContractRegistry:
    return ContractRegistry.load()


def _source(key: str, engine: Engine, keys: list[str]) -> str:
    """The source whose write key the request carries; 401 otherwise."""
    source = source_for_key(engine, key, [k for k in keys if k])
    if source is None:
        raise ApiError(401, KEY_FIELD, "unknown write key")
    return source


def _handle(
    source: str, body: bytes, kind: str | None, engine: Engine, settings: Settings
) -> JSONResponse:
    """The rest of a request in one worker thread: JSON, messages, ingest.

    Parsing happens here too rather than on the event loop, which stays free for other
    requests, and under the same paused cycle collector as the ingest (see
    `collector_paused`): the parsed batch lives until it is written. Errors raised here are
    answered in the error shape by the route."""
    with collector_paused():
        raw = parse_json(body, settings.api_max_json_depth)
        # JSON text can only carry a NUL or a lone surrogate as a \u escape (the parser refuses
        # raw control characters, and invalid UTF-8 never decodes): without one, every string
        # is storable and the check of each can be skipped.
        clean = b"\\u" not in body
        if kind is None:
            # First: it checks that there is a batch at all.
            parsed = parse_batch(raw, strings_checked=clean)
            messages = list(zip(raw["batch"], parsed, strict=True))
        else:
            if isinstance(raw, dict) and raw.setdefault("type", kind) != kind:
                raise MessageError("type", f"must be '{kind}' on /v1/{kind}")
            messages = [(raw, parse_message(raw, strings_checked=clean))]
        result = ingest_parsed(
            engine,
            messages,
            source=source,
            registry=get_contracts(),
            max_future_skew=get_settings().cdp_max_future_skew,
        )
    return JSONResponse(content=result.model_dump())


async def _respond(
    request: Request, kind: str | None, engine: Engine, settings: Settings, keys: list[str]
) -> JSONResponse:
    # The key first: without a known one, nothing of the body is read.
    key = presented_key(request.headers)
    source = await run_in_threadpool(_source, key, engine, keys)
    limit = settings.cdp_max_batch_bytes if kind is None else settings.cdp_max_message_bytes
    body = await read_body(request, limit)
    return await run_in_threadpool(_handle, source, body, kind, engine, settings)


def _single(kind: str) -> Any:
    async def endpoint(
        request: Request,
        engine: Annotated[Engine, Depends(get_cdp_engine)],
        settings: Annotated[Settings, Depends(get_cdp_settings)],
        keys: Annotated[list[str], Depends(get_cdp_api_keys)],
    ) -> JSONResponse:
        return await _respond(request, kind, engine, settings, keys)

    endpoint.__name__ = f"ingest_{kind}"
    endpoint.__doc__ = f"Ingest one {kind} message."
    return endpoint


for _kind in ("track", "identify", "alias", "consent"):
    router.add_api_route(f"/{_kind}", _single(_kind), methods=["POST"], name=f"cdp_{_kind}")


@router.post("/batch", name="cdp_batch")
async def ingest_batch(
    request: Request,
    engine: Annotated[Engine, Depends(get_cdp_engine)],
    settings: Annotated[Settings, Depends(get_cdp_settings)],
    keys: Annotated[list[str], Depends(get_cdp_api_keys)],
) -> JSONResponse:
    """Ingest up to 1,000 messages; one unreadable message rejects the whole batch."""
    return await _respond(request, None, engine, settings, keys)
