"""Ingestion: messages → contract check → identity resolution → events, traits, consent, features.

One function serves the API, the CLI and the benchmark. A batch is written in one transaction
with bulk statements; it is idempotent on `messageId` (a message already stored or quarantined
counts as a duplicate and changes nothing).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict
from sqlalchemy import bindparam, delete, func, select, union_all, update
from sqlalchemy.engine import Connection, Engine

from liftloop.tables import Consent, Event, Profile
from tools.cdp._sql import bulk_write, chunks, cols, insert, table_of, upsert, utcnow
from tools.cdp.consent import withdrawals
from tools.cdp.contracts import ContractRegistry, Violation
from tools.cdp.errors import MessageError
from tools.cdp.features import apply_events, events_of
from tools.cdp.identity import Ident, UnionFind, canonical_id, normalise
from tools.cdp.messages import (
    Alias,
    AnyMessage,
    ConsentMessage,
    Identify,
    Track,
    _clean_strings,
    parse_many,
)
from tools.cdp.tables import (
    EngagementCount,
    Identity,
    MergeRecord,
    ProfileFeatures,
    QuarantinedMessage,
    SegmentMember,
    TraitHistory,
    TraitState,
)

tracer = trace.get_tracer("liftloop.cdp")
_EV = cols(Event)
_ID = cols(Identity)
_PR = cols(Profile)
_QM = cols(QuarantinedMessage)
_SM = cols(SegmentMember)
_TH = cols(TraitHistory)
_TS = cols(TraitState)
# Traits that also live in a column of `profiles`, so the loop can read them without JSON.
PROFILE_COLUMNS = ("email", "phone", "first_name", "country", "timezone", "language")


class IngestResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    merges: int = 0


@dataclass
class _Batch:
    source: str
    now: datetime
    accepted: list[tuple[dict[str, Any], AnyMessage]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0


def event_name(msg: AnyMessage) -> str:
    """Non-track messages are logged as events named with a `$`, which no contract may use."""
    return msg.event if isinstance(msg, Track) else f"${msg.type}"


def _payload(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict) and _clean_strings(raw, "") is None:
        return raw
    # Unstorable text is kept escaped so the message is still not lost.
    return {"raw_json": json.dumps(raw, ensure_ascii=True, default=str)}


def _quarantine_row(
    raw: Any, field_path: str, reason: str, version: int | None, source: str, now: datetime
) -> dict[str, Any]:
    def text(key: str) -> str | None:
        value = raw.get(key) if isinstance(raw, dict) else None
        if isinstance(value, str) and 0 < len(value) <= 200 and _clean_strings(value, "") is None:
            return value
        return None

    # Without a readable messageId, a digest of the message keeps a resend from adding a row.
    message_id = (
        text("messageId")
        or "digest:"
        + hashlib.sha256(
            json.dumps(raw, sort_keys=True, ensure_ascii=True, default=str).encode()
        ).hexdigest()
    )
    return {
        "message_id": message_id,
        "event": text("event"),
        "user_id": text("userId"),
        "anonymous_id": text("anonymousId"),
        "field_path": field_path,
        "reason": reason,
        "contract_version": version,
        "source": source,
        "status": "open",
        "payload": _payload(raw),
        "received_at": now,
        "replayed_at": None,
    }


def ingest(
    engine: Engine,
    raws: Sequence[Any],
    *,
    source: str,
    registry: ContractRegistry,
    now: datetime | None = None,
) -> IngestResult:
    """Ingest raw JSON messages; unreadable ones are quarantined with the field and reason."""
    parsed, unreadable = parse_many(raws)
    return ingest_parsed(
        engine, parsed, source=source, registry=registry, now=now, unreadable=unreadable
    )


def ingest_parsed(
    engine: Engine,
    messages: Sequence[tuple[dict[str, Any], AnyMessage]],
    *,
    source: str,
    registry: ContractRegistry,
    now: datetime | None = None,
    unreadable: Sequence[tuple[Any, MessageError]] = (),
) -> IngestResult:
    """Ingest (raw, parsed) messages in one transaction."""
    with tracer.start_as_current_span("cdp.ingest") as span:
        span.set_attribute("cdp.source", source)
        span.set_attribute("cdp.messages", len(messages) + len(unreadable))
        with engine.begin() as conn:
            result = ingest_on(
                conn, messages, source=source, registry=registry, now=now, unreadable=unreadable
            )
        for key, value in result.model_dump().items():
            span.set_attribute(f"cdp.{key}", value)
        return result


def ingest_on(
    conn: Connection,
    messages: Sequence[tuple[dict[str, Any], AnyMessage]],
    *,
    source: str,
    registry: ContractRegistry,
    now: datetime | None = None,
    unreadable: Sequence[tuple[Any, MessageError]] = (),
) -> IngestResult:
    """The ingestion itself, inside the caller's transaction."""
    batch = _Batch(source=source, now=now or utcnow())
    _triage(conn, batch, messages, unreadable, registry)
    merges = _write(conn, batch, registry)
    return IngestResult(
        accepted=len(batch.accepted),
        duplicates=batch.duplicates,
        quarantined=len(batch.quarantine),
        merges=merges,
    )


def _known_ids(conn: Connection, ids: list[str]) -> set[str]:
    """The ids among `ids` already stored as events or held open in the quarantine."""
    known: set[str] = set()
    for part in chunks(ids):
        stored = select(_EV.message_id).where(_EV.message_id.in_(part))
        held = select(_QM.message_id).where(_QM.message_id.in_(part), _QM.status == "open")
        known.update(conn.execute(union_all(stored, held)).scalars())
    return known


def _triage(
    conn: Connection,
    batch: _Batch,
    messages: Sequence[tuple[dict[str, Any], AnyMessage]],
    unreadable: Sequence[tuple[Any, MessageError]],
    registry: ContractRegistry,
) -> None:
    bad_rows = [
        _quarantine_row(raw, exc.field, exc.reason, None, batch.source, batch.now)
        for raw, exc in unreadable
    ]
    known = _known_ids(
        conn, [m.message_id for _, m in messages] + [r["message_id"] for r in bad_rows]
    )
    seen: set[str] = set()

    def fresh(message_id: str) -> bool:
        if message_id in known or message_id in seen:
            batch.duplicates += 1
            return False
        seen.add(message_id)
        return True

    batch.quarantine.extend(r for r in bad_rows if fresh(r["message_id"]))
    for raw, msg in messages:
        if not fresh(msg.message_id):
            continue
        violation: Violation | None = None
        if isinstance(msg, Track):
            violation = registry.check(msg.event, msg.properties)
        if violation is None:
            batch.accepted.append((raw, msg))
        else:
            batch.quarantine.append(
                _quarantine_row(
                    raw,
                    violation.field,
                    violation.reason,
                    violation.version,
                    batch.source,
                    batch.now,
                )
            )


def identifiers(msg: AnyMessage) -> list[Ident]:
    """Everything the message says about who it is; the first is its primary identifier."""
    out: list[Ident] = []
    if msg.user_id is not None:
        out.append(("user_id", msg.user_id))
    if msg.anonymous_id is not None:
        out.append(("anonymous_id", msg.anonymous_id))
    device = msg.device_id()
    if device:
        out.append(("device_id", device))
    if isinstance(msg, Identify):
        for kind in ("email", "phone"):
            value = msg.traits.get(kind)
            if isinstance(value, str) and value.strip():
                out.append((kind, normalise(kind, value)[:200]))
    return out


def _write(conn: Connection, batch: _Batch, registry: ContractRegistry) -> int:
    if batch.quarantine:
        bulk_write(
            conn, QuarantinedMessage, batch.quarantine, keys=["message_id"], on_conflict="ignore"
        )
    if not batch.accepted:
        return 0
    msgs = [m for _, m in batch.accepted]
    profile_of, merges = resolve(conn, msgs, batch.now, registry)
    rows = []
    for msg in msgs:
        if isinstance(msg, Track):
            props: dict[str, Any] = msg.properties
        elif isinstance(msg, Identify):
            props = msg.traits
        elif isinstance(msg, Alias):
            props = {"previousId": msg.previous_id}
        else:
            props = {"consent": [s.model_dump(by_alias=True) for s in msg.consent]}
        rows.append(
            {
                "message_id": msg.message_id,
                "profile_id": profile_of[msg.message_id],
                "name": event_name(msg),
                "occurred_at": msg.timestamp or batch.now,
                "properties": props,
            }
        )
    bulk_write(conn, Event, rows, keys=["message_id"], on_conflict="ignore")
    _apply_traits(
        conn, [(m, profile_of[m.message_id]) for m in msgs if isinstance(m, Identify)], batch
    )
    _apply_consent(conn, msgs, profile_of, batch, registry)
    tracked = [(m, profile_of[m.message_id]) for m in msgs if isinstance(m, Track)]
    apply_events(
        conn,
        [(pid, m.event, m.properties, m.timestamp or batch.now) for m, pid in tracked],
        registry,
    )
    return merges


def resolve(
    conn: Connection, msgs: Sequence[AnyMessage], now: datetime, registry: ContractRegistry
) -> tuple[dict[str, str], int]:
    """Resolve every message to its person's canonical id, merging people the batch links.

    Returns messageId → profile id and the number of merges."""
    ids_of = {m.message_id: identifiers(m) for m in msgs}
    idents = list(dict.fromkeys(i for ids in ids_of.values() for i in ids))
    # An alias's previous id may be a user id or an anonymous id: look up both.
    idents += [
        (k, m.previous_id)
        for m in msgs
        if isinstance(m, Alias)
        for k in ("user_id", "anonymous_id")
    ]
    by_kind: dict[str, list[str]] = {}
    for kind, value in idents:
        by_kind.setdefault(kind, []).append(value)
    t = _ID
    owner: dict[Ident, str] = {}
    for kind, values in by_kind.items():
        for part in chunks(list(dict.fromkeys(values))):
            query = select(t.value, t.profile_id).where(t.kind == kind, t.value.in_(part))
            owner.update(((kind, r[0]), r[1]) for r in conn.execute(query))
    # Messages whose ids all belong to one known person settle at once; only the rest (new
    # ids, links, aliases) go through the union-find.
    settled: dict[str, str] = {}
    pending: list[AnyMessage] = []
    for msg in msgs:
        owners = {owner.get(i) for i in ids_of[msg.message_id]}
        if isinstance(msg, Alias) or len(owners) != 1 or None in owners:
            pending.append(msg)
        else:
            settled[msg.message_id] = owners.pop()  # type: ignore[assignment]
    if not pending:
        return settled, 0
    named = {i for m in pending for i in ids_of[m.message_id]}
    named |= {
        (k, m.previous_id)
        for m in pending
        if isinstance(m, Alias)
        for k in ("user_id", "anonymous_id")
    }
    # Everything known about the people the pending messages touch, to merge them correctly.
    known: dict[Ident, tuple[str, datetime]] = {}
    for part in chunks(sorted({owner[i] for i in named if i in owner})):
        for r in conn.execute(
            select(t.kind, t.value, t.profile_id, t.first_seen).where(t.profile_id.in_(part))
        ):
            known[(r[0], r[1])] = (r[2], r[3])

    uf = UnionFind()
    # Ids already known first, so the batch cannot split a person the database joined.
    by_profile: dict[str, list[Ident]] = {}
    for ident, (pid, _) in known.items():
        by_profile.setdefault(pid, []).append(ident)
    for members in by_profile.values():
        for other in members[1:]:
            uf.union(members[0], other, force=True)
    for msg in pending:
        ids = ids_of[msg.message_id]
        if isinstance(msg, Alias):
            prev: Ident = ("user_id", msg.previous_id)
            if prev not in known:
                prev = ("anonymous_id", msg.previous_id)
            uf.union(ids[0], prev, force=True)
        for other in ids[1:]:
            uf.union(ids[0], other)
        uf.find(ids[0])

    # A new identifier was first seen at the earliest message naming it.
    first_seen = {i: v[1] for i, v in known.items()}
    for msg in pending:
        at = msg.timestamp or now
        for ident in ids_of[msg.message_id]:
            if ident not in known and (ident not in first_seen or at < first_seen[ident]):
                first_seen[ident] = at
    for ident in uf.parent:
        first_seen.setdefault(ident, now)
    canonical: dict[Ident, str] = {}
    merges: list[tuple[str, str, str]] = []
    identity_rows: list[dict[str, Any]] = []
    for root, members in uf.components().items():
        cid = canonical_id(members, first_seen)
        if cid is None:  # only reachable through an alias of an unknown anonymous id
            cid = min(v for _, v in members)
        canonical[root] = cid
        old = sorted({known[i][0] for i in members if i in known} - {cid})
        via = "+".join(sorted({k for k, _ in members}))
        merges.extend((cid, loser, via) for loser in old)
        identity_rows.extend(
            {"kind": k, "value": v, "profile_id": cid, "first_seen": first_seen[(k, v)]}
            for k, v in members
            if (k, v) not in known or known[(k, v)][0] != cid
        )
    existing = {pid for pid, _ in known.values()}
    _ensure_profiles(conn, sorted(set(canonical.values()) - existing), now)
    bulk_write(conn, Identity, identity_rows, keys=["kind", "value"], on_conflict="update")
    for winner, loser, via in merges:
        _merge(conn, winner, loser, via, now)
    if merges:
        winners = sorted({w for w, _, _ in merges})
        apply_events(conn, events_of(conn, winners), registry, rebuild=winners)
    renamed = {loser: winner for winner, loser, _ in merges}
    out = {mid: renamed.get(pid, pid) for mid, pid in settled.items()}
    out.update((m.message_id, canonical[uf.find(ids_of[m.message_id][0])]) for m in pending)
    return out, len(merges)


def _ensure_profiles(conn: Connection, pids: list[str], now: datetime) -> None:
    if pids:
        # The profile columns' defaults live in the model, not the table: take them from it.
        blank = Profile(id="", created_at=now).model_dump()
        rows = [{**blank, "id": p} for p in pids]
        bulk_write(conn, Profile, rows, keys=["id"], on_conflict="ignore")


def _merge(conn: Connection, winner: str, loser: str, via: str, now: datetime) -> None:
    """Move everything of `loser` onto `winner` and drop the loser's profile."""
    p = _PR
    rows = {
        r["id"]: dict(r)
        for r in conn.execute(select(table_of(Profile)).where(p.id.in_([winner, loser]))).mappings()
    }
    old, new = rows.get(loser), rows.get(winner)
    if old is not None and new is not None:
        # A winner created by this batch takes the loser's columns; an older one keeps its own
        # and only fills gaps. Traits merge below by time.
        copy = (*PROFILE_COLUMNS, "segment", "source_batch") if new["created_at"] == now else ()
        fill = {
            c: old[c]
            for c in (*PROFILE_COLUMNS, "segment", "source_batch")
            if c in copy or (new[c] is None and old[c] is not None)
        }
        fill["created_at"] = min(old["created_at"], new["created_at"])
        conn.execute(update(table_of(Profile)).where(p.id == winner).values(**fill))
    for model in (Event, Consent, TraitHistory):
        table = table_of(model)
        conn.execute(update(table).where(table.c.profile_id == loser).values(profile_id=winner))
    ts = _TS
    states = (
        conn.execute(select(table_of(TraitState)).where(ts.profile_id.in_([winner, loser])))
        .mappings()
        .all()
    )
    latest: dict[str, dict[str, Any]] = {}
    for s in states:
        cur = latest.get(s["trait"])
        if cur is None or (s["recorded_at"], s["profile_id"] == winner) > (
            cur["recorded_at"],
            cur["profile_id"] == winner,
        ):
            latest[s["trait"]] = dict(s)
    conn.execute(delete(table_of(TraitState)).where(ts.profile_id.in_([winner, loser])))
    if latest:
        conn.execute(
            insert(conn, TraitState), [{**s, "profile_id": winner} for s in latest.values()]
        )
    _refresh_profiles(conn, [winner])
    for derived in (table_of(ProfileFeatures), table_of(EngagementCount)):
        conn.execute(delete(derived).where(derived.c.profile_id == loser))
    # The next snapshot re-admits the merged person under the winner's id.
    conn.execute(delete(SegmentMember).where(_SM.profile_id == loser))
    conn.execute(delete(Profile).where(_PR.id == loser))
    conn.execute(
        insert(conn, MergeRecord),
        [{"winner": winner, "loser": loser, "via": via, "message_id": None, "merged_at": now}],
    )


def _apply_traits(conn: Connection, items: list[tuple[Identify, str]], batch: _Batch) -> None:
    """Last write wins per trait, by the statement's time; every statement goes to history."""
    if not items:
        return
    pids = sorted({pid for _, pid in items})
    ts = _TS
    current: dict[tuple[str, str], datetime] = {}
    for part in chunks(pids):
        for r in conn.execute(
            select(ts.profile_id, ts.trait, ts.recorded_at).where(ts.profile_id.in_(part))
        ):
            current[(r[0], r[1])] = r[2]
    history: list[dict[str, Any]] = []
    winners: dict[tuple[str, str], dict[str, Any]] = {}
    for msg, pid in items:
        at = msg.timestamp or batch.now
        for trait, value in msg.traits.items():
            row = {
                "profile_id": pid,
                "trait": trait,
                "value": value,
                "source": batch.source,
                "recorded_at": at,
            }
            history.append({**row, "message_id": msg.message_id})
            prior = current.get((pid, trait))
            if prior is None or at >= prior:
                current[(pid, trait)] = at
                winners[(pid, trait)] = row
    if history:
        conn.execute(insert(conn, TraitHistory), history)
    upsert(conn, TraitState, list(winners.values()), ["profile_id", "trait"])
    _refresh_profiles(conn, pids)


def _refresh_profiles(conn: Connection, pids: list[str]) -> None:
    """Rewrite profiles.traits and the trait columns from the current trait states."""
    ts = _TS
    traits: dict[str, dict[str, Any]] = {p: {} for p in pids}
    for part in chunks(pids):
        for r in conn.execute(
            select(ts.profile_id, ts.trait, ts.value).where(ts.profile_id.in_(part))
        ):
            traits[r[0]][r[1]] = r[2]
    p = _PR
    # One executemany; a column keeps its value where the traits do not name it.
    stmt = (
        update(table_of(Profile))
        .where(p.id == bindparam("b_id"))
        .values(
            traits=bindparam("b_traits"),
            **{c: func.coalesce(bindparam(f"b_{c}"), p[c]) for c in PROFILE_COLUMNS},
        )
    )
    params = [
        {
            "b_id": pid,
            "b_traits": values,
            **{
                f"b_{c}": values[c] if isinstance(values.get(c), str) else None
                for c in PROFILE_COLUMNS
            },
        }
        for pid, values in traits.items()
    ]
    if params:
        conn.execute(stmt, params)


def _apply_consent(
    conn: Connection,
    msgs: Sequence[AnyMessage],
    profile_of: dict[str, str],
    batch: _Batch,
    registry: ContractRegistry,
) -> None:
    rows: list[dict[str, Any]] = []
    for msg in msgs:
        pid, at = profile_of[msg.message_id], msg.timestamp or batch.now
        if isinstance(msg, ConsentMessage):
            rows.extend(
                {
                    "profile_id": pid,
                    "channel": s.channel,
                    "purpose": s.purpose,
                    "granted": s.granted,
                    "source": batch.source,
                    "lawful_basis": s.lawful_basis,
                    "recorded_at": at,
                }
                for s in msg.consent
            )
        elif isinstance(msg, Track):
            rows.extend(
                {
                    "profile_id": pid,
                    "channel": channel,
                    "purpose": purpose,
                    "granted": False,
                    "source": f"{batch.source}:{msg.event}",
                    "lawful_basis": "consent",
                    "recorded_at": at,
                }
                for channel, purpose in withdrawals(msg.event, msg.properties)
            )
    if rows:
        # A withdrawal must never be lost, also for a person this batch only names in passing
        # (e.g. an unsubscribe for an id whose profile a merge has just replaced).
        _ensure_profiles(conn, sorted({r["profile_id"] for r in rows}), batch.now)
        conn.execute(insert(conn, Consent), rows)
