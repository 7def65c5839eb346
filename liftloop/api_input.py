"""What every route of the API reads from a request, read one way: the key, the body within
its limit, and the body as strict JSON.

Keys: `Authorization: Bearer KEY`, `X-API-Key: KEY`, or HTTP basic with the key as the user
name (as Segment's libraries send it), on every route that takes a key; compared in constant
time. Bodies: refused with 413 from Content-Length before anything is read, and while streaming
once the limit is passed. JSON: UTF-8 only, no NaN/Infinity, numbers of at most
`MAX_NUMBER_CHARS` characters and finite, at most `max_depth` levels of nesting. Strings may
still hold a NUL or a lone surrogate (as `\\u` escapes): the models that read them name the
field (spec and approvals) or the message path (CDP) where one is.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer

from liftloop.api_errors import ApiError, BodyTooLarge

MAX_NUMBER_CHARS = 100
KEY_FIELD = "authorization"
_HOW = "send 'Authorization: Bearer <key>', 'X-API-Key: <key>' or basic auth with the key as user"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="liftloop"'}

# Documented in OpenAPI only (auto_error=False: they never refuse); `presented_key` decides.
KEY_SCHEMES = [
    Security(APIKeyHeader(name="X-API-Key", auto_error=False)),
    Security(HTTPBearer(auto_error=False)),
]


def refuse(reason: str) -> ApiError:
    return ApiError(401, KEY_FIELD, reason, headers=_CHALLENGE)


def _from_authorization(value: str) -> str:
    scheme, _, credentials = value.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return credentials
    if scheme.lower() == "basic" and credentials:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise refuse("basic credentials are not base64") from None
        if decoded.partition(":")[0]:
            return decoded.partition(":")[0]
    raise refuse(_HOW)


def presented_key(headers: Mapping[str, str]) -> str:
    """The key a request carries, or ApiError 401. With both headers they must agree."""
    x_key = (headers.get("x-api-key") or "").strip()
    authorization = headers.get("authorization")
    if not x_key:
        if authorization is None:
            raise refuse(_HOW)
        return _from_authorization(authorization)
    if authorization is not None:
        try:
            other = _from_authorization(authorization)
        except ApiError:
            other = None  # another scheme (a proxy's): X-API-Key decides
        if other is not None and not hmac.compare_digest(_bytes(other), _bytes(x_key)):
            raise refuse("X-API-Key and Authorization carry different keys")
    return x_key


def _bytes(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")


def api_key_bytes(keys: Sequence[str]) -> list[bytes]:
    """Keys as `key_matches` compares them; an empty key is never one (it would match no
    request anyway: `presented_key` refuses an empty one)."""
    return [_bytes(k) for k in keys if k]


def key_matches(key: str, known: Sequence[bytes]) -> bool:
    """Whether `key` is one of `known`, in time that does not depend on where they differ (each
    is compared, none skipped)."""
    given = _bytes(key)
    found = False
    for candidate in known:
        found |= hmac.compare_digest(given, candidate)
    return found


async def read_body(request: Request, limit: int) -> bytes:
    """The body, at most `limit` bytes: 413 from Content-Length before reading, or as soon as
    the stream passes the limit."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.strip().isdigit()):
            raise ApiError(400, "content-length", "is not a number of bytes")
        if int(declared) > limit:
            raise BodyTooLarge(limit, int(declared))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


# Every byte that can be part of a JSON number becomes "0", every other one a space: a number
# token is a whole run of such bytes (what may stand beside one, `,:[]{}` and space, is not).
_NUMBER_CHARS = bytes(ord("0") if chr(c) in "0123456789.eE+-" else ord(" ") for c in range(256))
_LONG_NUMBER = b"0" * (MAX_NUMBER_CHARS + 1)


class _Refused(ValueError):
    pass


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number of {len(text)} characters; at most {MAX_NUMBER_CHARS} allowed")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number of {len(text)} characters; at most {MAX_NUMBER_CHARS} allowed")
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text} is out of range")
    return value


_TO_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{}"')


def _deeper_by_text(body: bytes, max_depth: int) -> bool | None:
    """`_deeper_than` read off the text of a body that parsed, or None when its strings hold
    brackets. Escaped backslashes and quotes go first (left to right, as JSON reads them), so
    every remaining quote delimits a string; a string without brackets is then an empty pair of
    quotes and goes too, and a quote left over means some string holds a bracket. What remains
    is the brackets' structure (well formed: the body parsed); each pass drops the innermost
    pairs, one level."""
    text = body.replace(b"\\\\", b"").replace(b'\\"', b"") if b"\\" in body else body
    text = text.translate(_TO_SQUARE, _NOT_STRUCTURE)
    text = text.replace(b'""', b"")
    if b'"' in text:
        return None
    for _ in range(max_depth):
        if not text:
            return False
        text = text.replace(b"[]", b"")
    return bool(text)


def _deeper_than(body: bytes, value: Any, max_depth: int) -> bool:
    """Whether `value` nests more than `max_depth` objects and arrays, without recursion.
    The text settles most bodies in C speed (counting brackets, or `_deeper_by_text`); the
    value is walked only when a string holds brackets."""
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    by_text = _deeper_by_text(body, max_depth)
    return _deeper_by_walk(value, max_depth) if by_text is None else by_text


def _deeper_by_walk(value: Any, max_depth: int) -> bool:
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            return True
        nxt: list[Any] = []
        for container in level:
            items = container.values() if isinstance(container, dict) else container
            nxt.extend([c for c in items if isinstance(c, dict | list)])
        level = nxt
    return False


def parse_json(body: bytes, max_depth: int = 64) -> Any:
    """`body` as strict JSON, or ApiError 400 naming the reason (field `body`)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "body", f"is not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise ApiError(400, "body", "is empty; a JSON value is required")
    # Integers are checked one by one only when the text has a run of number characters long
    # enough to hold a too long one (a call per integer costs more than the rest of parsing).
    parse_int = _int if _LONG_NUMBER in body.translate(_NUMBER_CHARS) else int
    try:
        value = json.loads(text, parse_constant=_constant, parse_int=parse_int, parse_float=_float)
    except _Refused as exc:
        raise ApiError(400, "body", f"is not accepted JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise ApiError(400, "body", f"is not valid JSON: {exc.msg} ({where})") from None
    except RecursionError:
        raise ApiError(400, "body", f"nests deeper than {max_depth} levels") from None
    if _deeper_than(body, value, max_depth):
        raise ApiError(400, "body", f"nests deeper than {max_depth} levels")
    return value


async def read_json(request: Request, limit: int, max_depth: int = 64) -> Any:
    """`read_body` then `parse_json`."""
    return parse_json(await read_body(request, limit), max_depth)
