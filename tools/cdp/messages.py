"""Incoming messages in the shapes of the Segment spec (track, identify, alias) plus consent.

Unknown top-level fields (sentAt, integrations, ...) are ignored as Segment does; `messageId` is
required because ingestion is idempotent on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticSerializationError, to_json

from tools.cdp.errors import MessageError

MAX_BATCH = 1000
ConsentChannel = Literal["email", "sms", "push", "ads"]
Purpose = Literal["marketing", "personalisation", "analytics", "ads"]
LawfulBasis = Literal[
    "consent",
    "contract",
    "legal_obligation",
    "vital_interests",
    "public_task",
    "legitimate_interests",
]
_Id = Annotated[str, Field(min_length=1, max_length=200)]


def _utc(value: datetime) -> datetime:
    offset = value.utcoffset()
    if offset is None:
        return value.replace(tzinfo=UTC)  # without an offset it is read as UTC, as Segment does
    if not offset:
        # Already UTC, under pydantic's own tzinfo object: equal in every comparison, hour and
        # stored text; replacing it would cost about 2 µs a message.
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of the range of UTC datetimes") from None


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    message_id: _Id = Field(alias="messageId")
    user_id: _Id | None = Field(default=None, alias="userId")
    anonymous_id: _Id | None = Field(default=None, alias="anonymousId")
    timestamp: datetime | None = None
    context: dict[str, Any] = Field(default_factory=dict)

    @field_validator("timestamp")
    @classmethod
    def _as_utc(cls, v: datetime | None) -> datetime | None:
        return None if v is None else _utc(v)

    @model_validator(mode="after")
    def _someone(self) -> _Message:
        if self.user_id is None and self.anonymous_id is None:
            raise ValueError("userId or anonymousId is required")
        return self

    def device_id(self) -> str | None:
        device = self.context.get("device") if self.context else None
        if isinstance(device, dict) and isinstance(device.get("id"), str) and device["id"]:
            return str(device["id"])[:200]
        return None


class Track(_Message):
    type: Literal["track"] = "track"
    event: Annotated[str, Field(min_length=1, max_length=200)]
    properties: dict[str, Any] = Field(default_factory=dict)


class Identify(_Message):
    type: Literal["identify"] = "identify"
    traits: dict[str, Any] = Field(default_factory=dict)


class Alias(_Message):
    type: Literal["alias"] = "alias"
    previous_id: _Id = Field(alias="previousId")

    @model_validator(mode="after")
    def _known(self) -> Alias:
        if self.user_id is None:
            raise ValueError("userId is required for alias")
        return self


class ConsentStatement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    purpose: Purpose
    channel: ConsentChannel
    granted: bool
    lawful_basis: LawfulBasis = Field(default="consent", alias="lawfulBasis")


class ConsentMessage(_Message):
    type: Literal["consent"] = "consent"
    consent: Annotated[list[ConsentStatement], Field(min_length=1, max_length=50)]


AnyMessage = Track | Identify | Alias | ConsentMessage
Message = Annotated[AnyMessage, Field(discriminator="type")]
_ONE: TypeAdapter[AnyMessage] = TypeAdapter(Message)


_MANY: TypeAdapter[list[AnyMessage]] = TypeAdapter(list[Message])


def _validate_all(raws: list[Any], strings_checked: bool) -> list[AnyMessage] | None:
    """All messages at once when every one is valid (one call into pydantic instead of one per
    message), else None: the caller then parses one by one for each message's own error."""
    try:
        for raw in raws:
            _precheck(raw, "", strings_checked)
        return _MANY.validate_python(raws)
    except (MessageError, ValidationError):
        return None


def parse_many(
    raws: Sequence[Any],
) -> tuple[list[tuple[Any, AnyMessage]], list[tuple[Any, MessageError]]]:
    """Parse messages independently: (raw, message) pairs and (raw, error) pairs."""
    items = list(raws)
    checked = _clean_strings(items, "") is None
    valid = _validate_all(items, checked)
    if valid is not None:
        return list(zip(items, valid, strict=True)), []
    parsed: list[tuple[Any, AnyMessage]] = []
    unreadable: list[tuple[Any, MessageError]] = []
    for raw in items:
        try:
            parsed.append((raw, parse_message(raw, strings_checked=checked)))
        except MessageError as exc:
            unreadable.append((raw, exc))
    return parsed, unreadable


def _clean_strings(value: Any, path: str) -> str | None:
    """The path of the first string no database can store (NUL or a lone surrogate)."""
    try:
        # One pass in Rust clears nearly every batch: it fails on a lone surrogate and writes
        # NUL as an escape. Only suspects (and anything it cannot encode) are walked.
        if b"\\u0000" not in to_json(value):
            return None
    except PydanticSerializationError:
        pass
    return _walk_strings(value, path)


def _walk_strings(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        if "\x00" in value:
            return path
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            bad = _walk_strings(k, path) or _walk_strings(v, f"{path}.{k}")
            if bad:
                return bad
    elif isinstance(value, list):
        for i, v in enumerate(value):
            bad = _walk_strings(v, f"{path}.{i}")
            if bad:
                return bad
    return None


def _loc(loc: tuple[int | str, ...], prefix: str) -> str:
    # Drop the discriminator tag pydantic puts first ("track", ...) so the path is the JSON path.
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("track", "identify", "alias", "consent"):
        parts = parts[1:]
    return ".".join([prefix, *parts]) if prefix else ".".join(parts) or "message"


def _precheck(raw: Any, path: str, strings_checked: bool) -> None:
    """What pydantic would report less clearly, or not at all (unstorable text)."""
    if not isinstance(raw, dict):
        raise MessageError(path or "message", "must be a JSON object")
    if "type" not in raw:
        raise MessageError(_loc(("type",), path), "is required (track, identify, alias, consent)")
    if not raw.get("userId") and not raw.get("anonymousId"):
        raise MessageError(_loc(("userId",), path), "userId or anonymousId is required")
    bad = None if strings_checked else _clean_strings(raw, path or "message")
    if bad:
        raise MessageError(bad, "contains a NUL character or invalid unicode")


def parse_message(
    raw: Any, path: str = "", *, strings_checked: bool = False
) -> Track | Identify | Alias | ConsentMessage:
    """One raw JSON object → a typed message, or MessageError naming the field and the reason.

    `strings_checked` skips the storable-text check when the caller knows every string is
    storable (it ran the check on a whole batch, or the JSON text had no escape to hide one)."""
    _precheck(raw, path, strings_checked)
    try:
        return _ONE.validate_python(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ("type",) if err["type"] == "union_tag_invalid" else err["loc"]
        raise MessageError(_loc(loc, path), err["msg"]) from None


def parse_batch(
    raw: Any, *, strings_checked: bool = False
) -> list[Track | Identify | Alias | ConsentMessage]:
    """A `/v1/batch` body: `{"batch": [...]}` with 1 to 1,000 messages. `strings_checked` as in
    `parse_message`."""
    if not isinstance(raw, dict):
        raise MessageError("body", "must be a JSON object with a 'batch' list")
    items = raw.get("batch")
    if not isinstance(items, list):
        raise MessageError("batch", "must be a list of messages")
    if not items:
        raise MessageError("batch", "must hold at least one message")
    if len(items) > MAX_BATCH:
        raise MessageError("batch", f"holds {len(items)} messages; at most {MAX_BATCH} are allowed")
    checked = strings_checked or _clean_strings(items, "") is None
    valid = _validate_all(items, checked)
    if valid is not None:
        return valid
    return [
        parse_message(item, f"batch.{i}", strings_checked=checked) for i, item in enumerate(items)
    ]
