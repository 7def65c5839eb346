"""A declarative audience filter compiled to SQLAlchemy Core, the same on SQLite and PostgreSQL.

    {"all": [{"trait": "country", "in": ["DE", "AT"]},
             {"event": "order_completed", "within": "365d", "count_gte": 1},
             {"event": "order_completed", "within": "90d", "count_eq": 0},
             {"consent": {"purpose": "marketing", "channel": "email"}},
             {"not": {"segment": "vip"}}]}

Conditions on the profile's columns use them directly; any other trait is read from the JSON
traits. Event conditions count a person's events of a name in a window before `as_of`
(optionally only those whose properties equal `where`). A segment reference is compiled inline
when its definition is given, else read from the segment's latest snapshot. `all`, `any` and
`not` nest, at most `MAX_DEPTH` levels (an inlined segment reference counts as one).

A trait or property name becomes a JSON path in SQL, so it must be an identifier (`NAME`:
a letter or `_`, then letters, digits or `_`, at most 64): `a.b` or `$[0]` would read another
value, a quote would break the statement. A name outside it, like every other fault of a spec,
raises `SegmentError` with the path of the condition, before any SQL runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict
from sqlalchemy import and_, exists, func, insert, literal, not_, or_, select, true, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from tools.cdp.consent import CHANNELS, PURPOSES, has_consent
from tools.cdp.errors import CdpError
from tools.cdp.sql import as_utc, cols, table_of, utcnow
from tools.cdp.tables import Event, Profile, SegmentChange, SegmentMember, SegmentSnapshot
from tools.durations import parse_duration

tracer = trace.get_tracer("liftloop.cdp")
_EV = cols(Event)
_PR = cols(Profile)
_SC = cols(SegmentChange)
_SM = cols(SegmentMember)
_SS = cols(SegmentSnapshot)
_COLUMNS = {"id", "email", "phone", "country", "timezone", "language", "segment", "source_batch"}
_OPS = {"eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte"}
_COUNT_OPS = {"count_eq", "count_gt", "count_gte", "count_lt", "count_lte"}
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# Levels of all / any / not (and inlined segment references) in one spec.
MAX_DEPTH = 32
_NAME_RULE = "letters, digits and '_', not starting with a digit, at most 64"


class SegmentError(CdpError):
    """A segment spec that cannot compile: `"<path>: <reason>"`, or the path and the reason
    apart (for a reason or path that may itself hold ": ")."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        if reason is None:
            message, _, reason = message.partition(": ")
        super().__init__(message, reason)


def _checked_name(name: Any, path: str, what: str) -> str:
    """`name` when it is an identifier (`NAME`); SegmentError at `path` otherwise."""
    if not isinstance(name, str) or not name:
        raise SegmentError(path, f"must be a non-empty {what} name")
    if not NAME.fullmatch(name):
        raise SegmentError(path, f"{name[:80]!r} is not a valid {what} name ({_NAME_RULE})")
    return name


class SnapshotResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    snapshot_id: int
    segment: str
    size: int
    entered: int
    exited: int
    as_of: datetime


class _Context:
    def __init__(self, as_of: datetime, segments: Mapping[str, Any], now: datetime) -> None:
        self.as_of = as_utc(as_of)
        # Consent is the one in force at `now`, whatever `as_of` says.
        self.now = as_utc(now)
        self.segments = segments
        self.stack: list[str] = []


def _column(trait: str, sample: Any) -> Any:
    if trait in _COLUMNS:
        return getattr(Profile, trait)
    # JSON traits are typed by the value they are compared with.
    col = _PR.traits[trait]
    if isinstance(sample, bool):
        return col.as_boolean()
    if isinstance(sample, int):
        return col.as_integer()
    if isinstance(sample, float):
        return col.as_float()
    return col.as_string()


def _trait(cond: dict[str, Any], path: str) -> ColumnElement[bool]:
    trait = _checked_name(cond["trait"], f"{path}.trait", "trait")
    ops = [k for k in cond if k != "trait"]
    if len(ops) != 1 or ops[0] not in _OPS:
        raise SegmentError(f"{path}: exactly one operator of {sorted(_OPS)} is required")
    op, value = ops[0], cond[ops[0]]
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise SegmentError(f"{path}.{op}: must be a non-empty list")
        col = _column(trait, value[0])
        member: ColumnElement[bool] = col.in_(value) if op == "in" else col.not_in(value)
        return member
    if not isinstance(value, str | int | float | bool):
        raise SegmentError(f"{path}.{op}: must be a string, number or boolean")
    col = _column(trait, value)
    expr: ColumnElement[bool] = {
        "eq": col == value,
        "ne": col != value,
        "gt": col > value,
        "gte": col >= value,
        "lt": col < value,
        "lte": col <= value,
    }[op]
    return expr


def _event(cond: dict[str, Any], path: str, ctx: _Context) -> ColumnElement[bool]:
    name = cond["event"]
    if not isinstance(name, str) or not name:
        raise SegmentError(f"{path}.event: must be a non-empty event name")
    unknown = set(cond) - {"event", "within", "where"} - _COUNT_OPS
    if unknown:
        raise SegmentError(f"{path}: unknown keys {sorted(unknown)}")
    ops = [k for k in cond if k in _COUNT_OPS]
    if len(ops) != 1:
        raise SegmentError(f"{path}: exactly one of {sorted(_COUNT_OPS)} is required")
    op, n = ops[0], cond[ops[0]]
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise SegmentError(f"{path}.{op}: must be a whole number ≥ 0")
    filters = [_EV.profile_id == _PR.id, _EV.name == name, _EV.occurred_at <= ctx.as_of]
    if "within" in cond:
        try:
            seconds = parse_duration(cond["within"])
        except (ValueError, TypeError) as exc:
            raise SegmentError(f"{path}.within: {exc}") from None
        filters.append(_EV.occurred_at >= ctx.as_of - timedelta(seconds=seconds))
    where = cond.get("where", {})
    if not isinstance(where, dict):
        raise SegmentError(f"{path}.where: must be a mapping of property to value")
    props = _EV.properties
    for key, value in where.items():
        _checked_name(key, f"{path}.where", "property")
        if not isinstance(value, str | int | float | bool):
            raise SegmentError(f"{path}.where.{key}: must be a string, number or boolean")
        col = props[key]
        typed = (
            col.as_boolean()
            if isinstance(value, bool)
            else col.as_integer()
            if isinstance(value, int)
            else col.as_float()
            if isinstance(value, float)
            else col.as_string()
        )
        filters.append(typed == value)
    # EXISTS where the count test allows it: the planner stops at the first matching row.
    any_event = exists().where(*filters)
    if (op, n) in (("count_gte", 1), ("count_gt", 0)):
        return any_event
    if (op, n) in (("count_eq", 0), ("count_lt", 1), ("count_lte", 0)):
        return not_(any_event)
    count = select(func.count()).where(*filters).scalar_subquery()
    return {
        "count_eq": count == n,
        "count_gt": count > n,
        "count_gte": count >= n,
        "count_lt": count < n,
        "count_lte": count <= n,
    }[op]


def _consent(cond: dict[str, Any], path: str, ctx: _Context) -> ColumnElement[bool]:
    spec = cond["consent"]
    if not isinstance(spec, dict):
        raise SegmentError(f"{path}.consent: must be a mapping with purpose and channel")
    purpose, channel = spec.get("purpose", "marketing"), spec.get("channel")
    if purpose not in PURPOSES:
        raise SegmentError(f"{path}.consent.purpose: must be one of {list(PURPOSES)}")
    if channel not in CHANNELS:
        raise SegmentError(f"{path}.consent.channel: must be one of {list(CHANNELS)}")
    return has_consent(purpose, channel, now=ctx.now)


def _reference(cond: dict[str, Any], path: str, ctx: _Context, depth: int) -> ColumnElement[bool]:
    name = cond["segment"]
    if not isinstance(name, str) or not name:
        raise SegmentError(f"{path}.segment: must be a segment name")
    if name in ctx.stack:
        raise SegmentError(f"{path}.segment: '{name}' refers to itself through {ctx.stack}")
    if name in ctx.segments:
        ctx.stack.append(name)
        try:
            return _compile(ctx.segments[name], f"{path}.segment[{name}]", ctx, depth + 1)
        finally:
            ctx.stack.pop()
    member = select(_SM.profile_id).where(_SM.segment == name)
    return _PR.id.in_(member)


def _compile(spec: Any, path: str, ctx: _Context, depth: int = 0) -> ColumnElement[bool]:
    if spec is None or spec == {}:
        return true()
    if not isinstance(spec, dict):
        raise SegmentError(f"{path}: must be a mapping")
    if depth > MAX_DEPTH:
        # Checked before going deeper: a spec nested hundreds of levels would otherwise exhaust
        # the stack here or in the SQL compiler.
        raise SegmentError(path, f"nests more than {MAX_DEPTH} levels of all, any and not")
    for key in ("all", "any"):
        if key in spec:
            parts = spec[key]
            if not isinstance(parts, list):
                raise SegmentError(f"{path}.{key}: must be a list of conditions")
            compiled = [
                _compile(c, f"{path}.{key}.{i}", ctx, depth + 1) for i, c in enumerate(parts)
            ]
            return and_(true(), *compiled) if key == "all" else or_(literal(False), *compiled)
    if "not" in spec:
        return not_(_compile(spec["not"], f"{path}.not", ctx, depth + 1))
    if "trait" in spec:
        return _trait(spec, path)
    if "event" in spec:
        return _event(spec, path, ctx)
    if "consent" in spec:
        return _consent(spec, path, ctx)
    if "segment" in spec:
        return _reference(spec, path, ctx, depth)
    raise SegmentError(
        f"{path}: a condition needs one of all, any, not, trait, event, consent or segment"
    )


def compile_segment(
    spec: dict[str, Any] | None,
    path: str = "segment",
    *,
    as_of: datetime | None = None,
    segments: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> ColumnElement[bool]:
    """The segment as a WHERE condition over `profiles` (event windows end at `as_of`;
    consent conditions read the statements made by `now`, the current time by default).

    SegmentError, with the path of the condition, for any fault of the spec."""
    now = utcnow() if now is None else now
    return _compile(spec, path, _Context(as_of or now, segments or {}, now))


def count_segment(
    engine: Engine,
    spec: dict[str, Any] | None,
    *,
    as_of: datetime | None = None,
    segments: Mapping[str, Any] | None = None,
) -> int:
    with tracer.start_as_current_span("cdp.count_segment") as span:
        cond = compile_segment(spec, as_of=as_of, segments=segments)
        with engine.connect() as conn:
            n = int(
                conn.execute(select(func.count()).select_from(Profile).where(cond)).scalar_one()
            )
        span.set_attribute("cdp.segment_size", n)
        return n


def snapshot_segment(
    engine: Engine,
    name: str,
    spec: dict[str, Any] | None,
    *,
    as_of: datetime | None = None,
    segments: Mapping[str, Any] | None = None,
) -> SnapshotResult:
    """Evaluate the segment and record who entered and exited since its last snapshot.

    Runs as set operations in the database, so the audience never passes through Python."""
    if not name or len(name) > 200:
        raise SegmentError("name: must be 1 to 200 characters")
    as_of = utcnow() if as_of is None else as_utc(as_of)
    with tracer.start_as_current_span("cdp.snapshot_segment") as span:
        cond = compile_segment(spec, as_of=as_of, segments=segments)
        m = _SM
        ch = _SC
        with engine.begin() as conn:
            sid = conn.execute(
                insert(SegmentSnapshot)
                .values(
                    segment=name,
                    spec=spec or {},
                    size=0,
                    entered=0,
                    exited=0,
                    as_of=as_of,
                    taken_at=utcnow(),
                )
                .returning(_SS.id)
            ).scalar_one()
            was_member = exists().where(m.segment == name, m.profile_id == _PR.id)
            entered = select(literal(sid), literal(name), _PR.id, literal("entered")).where(
                cond, not_(was_member)
            )
            conn.execute(
                insert(SegmentChange).from_select(
                    ["snapshot_id", "segment", "profile_id", "change"], entered
                )
            )
            still = select(_PR.id).where(_PR.id == m.profile_id, cond)
            exited = select(literal(sid), literal(name), m.profile_id, literal("exited")).where(
                m.segment == name, not_(still.exists())
            )
            conn.execute(
                insert(SegmentChange).from_select(
                    ["snapshot_id", "segment", "profile_id", "change"], exited
                )
            )
            gone = select(ch.profile_id).where(ch.snapshot_id == sid, ch.change == "exited")
            conn.execute(sql_delete(SegmentMember).where(m.segment == name, m.profile_id.in_(gone)))
            conn.execute(
                insert(SegmentMember).from_select(
                    ["segment", "profile_id", "since_snapshot"],
                    select(ch.segment, ch.profile_id, ch.snapshot_id).where(
                        ch.snapshot_id == sid, ch.change == "entered"
                    ),
                )
            )
            counts: dict[str, int] = dict(
                conn.execute(
                    select(ch.change, func.count()).where(ch.snapshot_id == sid).group_by(ch.change)
                ).all()
            )
            size = conn.execute(
                select(func.count()).select_from(SegmentMember).where(m.segment == name)
            ).scalar_one()
            result = SnapshotResult(
                snapshot_id=sid,
                segment=name,
                size=size,
                entered=counts.get("entered", 0),
                exited=counts.get("exited", 0),
                as_of=as_of,
            )
            conn.execute(
                update(table_of(SegmentSnapshot))
                .where(_SS.id == sid)
                .values(size=result.size, entered=result.entered, exited=result.exited)
            )
        for key in ("snapshot_id", "size", "entered", "exited"):
            span.set_attribute(f"cdp.{key}", getattr(result, key))
        return result


def segment_changes(engine: Engine, snapshot_id: int) -> list[tuple[str, str]]:
    """(profile_id, "entered" | "exited") of one snapshot, to trigger journeys."""
    ch = _SC
    with engine.connect() as conn:
        return [
            (r[0], r[1])
            for r in conn.execute(
                select(ch.profile_id, ch.change)
                .where(ch.snapshot_id == snapshot_id)
                .order_by(ch.profile_id)
            )
        ]


def load_segment_file(path: Path) -> tuple[str, dict[str, Any]]:
    """A YAML or JSON file: either `{name, segment}` or the bare spec (named by the file)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SegmentError(path.name, f"cannot be read ({exc})") from None
    except RecursionError:
        raise SegmentError(path.name, f"nests too deeply (at most {MAX_DEPTH} levels)") from None
    if not isinstance(data, dict):
        raise SegmentError(f"{path.name}: must hold a mapping")
    if "segment" in data and "name" in data:
        return str(data["name"]), data["segment"] or {}
    return path.stem, data
