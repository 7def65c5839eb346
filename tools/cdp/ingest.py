"""Ingestion: messages → checks → identity resolution → events, traits, consent, features.

One function serves the API, the CLI and the benchmark. A batch is written in one transaction
with bulk statements; it is idempotent on `messageId` (a message already stored or quarantined
counts as a duplicate and changes nothing).

Every message is checked before anything of it is stored, and one that fails a check goes to
the quarantine whole, with the field and the reason, while the rest of its batch goes on:

- its `timestamp` must lie between `earliest` (1990-01-01) and `max_future_skew` (5 minutes)
  after the batch's arrival: a statement stamped in the future would win every later one;
- a `track` event must match its data contract;
- an `identify`'s `traits.email` and `traits.phone` must each be one address
  (tools/cdp/addresses.py); they are stored normalised.

Consent and traits go by the time of each statement, but never by a time later than its
arrival, so a clock a few minutes ahead cannot outrank what is said after it.
"""

from __future__ import annotations

import gc
import hashlib
import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict
from sqlalchemy import bindparam, delete, func, literal, select, update
from sqlalchemy.engine import Connection, Engine

from tools.cdp.addresses import (
    AddressError,
    email_address,
    is_email_address,
    is_phone_number,
    phone_number,
    region_of,
)
from tools.cdp.consent import WITHDRAWING_EVENTS, withdrawals
from tools.cdp.contracts import ContractRegistry, Violation
from tools.cdp.errors import CdpError, MessageError
from tools.cdp.features import apply_events, events_of
from tools.cdp.identity import Ident, UnionFind, canonical_id
from tools.cdp.messages import (
    Alias,
    AnyMessage,
    ConsentMessage,
    Identify,
    Track,
    _clean_strings,
    parse_many,
)
from tools.cdp.sql import (
    as_utc,
    bulk_write,
    bulk_write_columns,
    chunks,
    cols,
    driver_time,
    fetch_in,
    insert,
    one_writer_at_a_time,
    table_of,
    upsert,
    utcnow,
)
from tools.cdp.tables import (
    Consent,
    EngagementCount,
    Event,
    Identity,
    MergeRecord,
    Profile,
    ProfileFeatures,
    QuarantinedMessage,
    SegmentMember,
    TraitHistory,
    TraitState,
)

tracer = trace.get_tracer("liftloop.cdp")
# The lock taken by work that reads people's rows and then writes from what it read: ingestion
# and erasure (see `one_writer_at_a_time`).
PEOPLE_WRITER = "liftloop.cdp.people"
_PR = cols(Profile)
_SM = cols(SegmentMember)
_TS = cols(TraitState)
# Traits that also live in a column of `profiles`, so the loop can read them without JSON.
PROFILE_COLUMNS = ("email", "phone", "first_name", "country", "timezone", "language")
# How far ahead of its arrival a statement may be stamped (clients' clocks drift); later ones
# are quarantined. The earliest time accepted: before it, a stamp is a broken clock (the Unix
# epoch 1970-01-01, Excel's 1900, 0001-01-01) or a forgery. 1990 and not later, so that
# historical orders (the CDNOW sample of 1997, tests/cdp/test_cdnow.py) still import.
MAX_FUTURE_SKEW = timedelta(minutes=5)
EARLIEST_TIMESTAMP = datetime(1990, 1, 1, tzinfo=UTC)
# Ranks a stored statement from the future (written before these checks existed) below any
# other: it has not been made yet.
_NOT_YET = datetime.min.replace(tzinfo=UTC)


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
    # Statements stamped outside [earliest, latest] are quarantined.
    earliest: datetime
    latest: datetime
    accepted: list[AnyMessage] = field(default_factory=list)
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
    max_future_skew: timedelta = MAX_FUTURE_SKEW,
    earliest: datetime = EARLIEST_TIMESTAMP,
) -> IngestResult:
    """Ingest raw JSON messages; unreadable ones are quarantined with the field and reason.

    `now` is the batch's time of arrival; a message stamped more than `max_future_skew` after
    it or before `earliest` is quarantined (see the module's docstring)."""
    with collector_paused():
        parsed, unreadable = parse_many(raws)
        return ingest_parsed(
            engine,
            parsed,
            source=source,
            registry=registry,
            now=now,
            unreadable=unreadable,
            max_future_skew=max_future_skew,
            earliest=earliest,
        )


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector held off while one batch is parsed and written.

    Everything a batch allocates lives until it is written, so a collection in between frees
    nothing, yet every few batches one walks the whole heap: a fifth of the ingest time in
    bench/cdp.py. Objects of a batch die by reference counting; collections resume as soon as
    the batch is done (a collector that was already off stays off)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def ingest_parsed(
    engine: Engine,
    messages: Sequence[tuple[dict[str, Any], AnyMessage]],
    *,
    source: str,
    registry: ContractRegistry,
    now: datetime | None = None,
    unreadable: Sequence[tuple[Any, MessageError]] = (),
    max_future_skew: timedelta = MAX_FUTURE_SKEW,
    earliest: datetime = EARLIEST_TIMESTAMP,
) -> IngestResult:
    """Ingest (raw, parsed) messages in one transaction (the time limits as in `ingest`)."""
    with collector_paused(), tracer.start_as_current_span("cdp.ingest") as span:
        span.set_attribute("cdp.source", source)
        span.set_attribute("cdp.messages", len(messages) + len(unreadable))
        with engine.begin() as conn:
            result = ingest_on(
                conn,
                messages,
                source=source,
                registry=registry,
                now=now,
                unreadable=unreadable,
                max_future_skew=max_future_skew,
                earliest=earliest,
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
    max_future_skew: timedelta = MAX_FUTURE_SKEW,
    earliest: datetime = EARLIEST_TIMESTAMP,
) -> IngestResult:
    """The ingestion itself, inside the caller's transaction (the time limits as in `ingest`)."""
    if max_future_skew < timedelta(0):
        raise CdpError("max_future_skew", "must not be negative")
    arrival = utcnow() if now is None else as_utc(now)
    # Concurrent batches (API workers, parallel senders) may carry the same messageId: without
    # this, each would find it new and add it to the features (tests/cdp/test_concurrent_ingest).
    one_writer_at_a_time(conn, PEOPLE_WRITER)
    batch = _Batch(
        source=source,
        now=arrival,
        earliest=as_utc(earliest),
        latest=arrival + max_future_skew,
    )
    _triage(conn, batch, messages, unreadable, registry)
    merges = _write(conn, batch, registry)
    return IngestResult(
        accepted=len(batch.accepted),
        duplicates=batch.duplicates,
        quarantined=len(batch.quarantine),
        merges=merges,
    )


_SQL_STORED = f"SELECT message_id FROM {table_of(Event).name} WHERE message_id {{in}}"
_SQL_HELD = (
    f"SELECT message_id FROM {table_of(QuarantinedMessage).name}"
    " WHERE status = {p} AND message_id {in}"
)
_SQL_OWNERS = (
    f"SELECT value, profile_id FROM {table_of(Identity).name} WHERE kind = {{p}} AND value {{in}}"
)
_SQL_PEOPLE = (
    f"SELECT kind, value, profile_id, first_seen FROM {table_of(Identity).name}"
    " WHERE profile_id {in}"
)


def _known_ids(conn: Connection, ids: list[str]) -> set[str]:
    """The ids among `ids` already stored as events or held open in the quarantine."""
    known = {r[0] for r in fetch_in(conn, _SQL_STORED, ids)}
    known.update(r[0] for r in fetch_in(conn, _SQL_HELD, ids, "open"))
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
    countries = _stored_countries(
        conn, [m for _, m in messages if type(m) is Identify and _national_phone(m)]
    )
    earliest, latest = batch.earliest, batch.latest
    for raw, msg in messages:
        if not fresh(msg.message_id):
            continue
        at = msg.timestamp  # checked inline: this loop runs for every message
        violation = None if at is None or earliest <= at <= latest else _time_violation(msg, batch)
        if violation is None:
            if isinstance(msg, Track):
                violation = registry.check(msg.event, msg.properties)
            elif isinstance(msg, Identify):
                msg, violation = _with_addresses(msg, countries)
        if violation is None:
            batch.accepted.append(msg)
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


def _time_violation(msg: AnyMessage, batch: _Batch) -> Violation | None:
    at = msg.timestamp
    if at is None or batch.earliest <= at <= batch.latest:
        return None
    if at > batch.latest:
        reason = (
            f"{at.isoformat()} lies in the future: more than {batch.latest - batch.now} after"
            f" the message arrived ({batch.now.isoformat()})"
        )
    else:
        reason = f"{at.isoformat()} is before {batch.earliest.isoformat()}, the earliest accepted"
    return Violation(field="timestamp", reason=reason, version=None)


def _national_phone(msg: Identify) -> bool:
    """True when the message's phone has no country prefix and its own traits name no country."""
    phone = msg.traits.get("phone")
    return (
        isinstance(phone, str)
        and not phone.strip().startswith("+")
        and region_of(msg.traits.get("country")) is None
    )


def _own_ids(msg: AnyMessage) -> list[Ident]:
    out: list[Ident] = []
    if msg.user_id is not None:
        out.append(("user_id", msg.user_id))
    if msg.anonymous_id is not None:
        out.append(("anonymous_id", msg.anonymous_id))
    return out


def _stored_countries(conn: Connection, msgs: list[Identify]) -> dict[Ident, str]:
    """The stated country of the known people these messages name, by their ids: a phone
    number without its country prefix is read in it."""
    if not msgs:
        return {}
    by_kind: dict[str, set[str]] = {}
    for msg in msgs:
        for kind, value in _own_ids(msg):
            by_kind.setdefault(kind, set()).add(value)
    owner: dict[Ident, str] = {}
    for kind, values in by_kind.items():
        owner.update(
            ((kind, r[0]), r[1]) for r in fetch_in(conn, _SQL_OWNERS, sorted(values), kind)
        )
    stated: dict[str, str] = {}
    ts = _TS
    for part in chunks(sorted(set(owner.values()))):
        for pid, country in conn.execute(
            select(ts.profile_id, ts.value).where(ts.trait == "country", ts.profile_id.in_(part))
        ):
            if region_of(country) is not None:
                stated[pid] = country
    return {ident: stated[pid] for ident, pid in owner.items() if pid in stated}


def _with_addresses(
    msg: Identify, countries: dict[Ident, str]
) -> tuple[Identify, Violation | None]:
    """The message with its email and phone traits normalised, or the first one refused.

    A phone without its country prefix is read in the country the message states, else in the
    one an earlier message of the batch stated for the same id, else in the stored one."""
    traits = msg.traits
    email, phone = traits.get("email"), traits.get("phone")
    if email is None and phone is None:
        _note_country(msg, countries)
        return msg, None
    fixed = dict(traits)
    try:
        if email is not None:
            fixed["email"] = email_address(email, "traits.email")
        if phone is not None:
            country = traits.get("country")
            if region_of(country) is None:
                country = next((countries[i] for i in _own_ids(msg) if i in countries), None)
            fixed["phone"] = phone_number(phone, country, "traits.phone")
    except AddressError as exc:
        return msg, Violation(field=exc.field, reason=exc.reason, version=None)
    _note_country(msg, countries)
    if fixed == traits:
        return msg, None
    return msg.model_copy(update={"traits": fixed}), None


def _note_country(msg: Identify, countries: dict[Ident, str]) -> None:
    """An accepted message's country, for later messages of the batch about the same ids."""
    country = msg.traits.get("country")
    if isinstance(country, str) and region_of(country) is not None:
        for ident in _own_ids(msg):
            countries[ident] = country


def identifiers(msg: AnyMessage) -> list[Ident]:
    """Everything the message says about who it is; the first is its primary identifier."""
    out: list[Ident] = []
    if msg.user_id is not None:
        out.append(("user_id", msg.user_id))
    if msg.anonymous_id is not None:
        out.append(("anonymous_id", msg.anonymous_id))
    if msg.context:
        device = msg.device_id()
        if device:
            out.append(("device_id", device))
    if isinstance(msg, Identify):
        # Ingestion normalised both (`_with_addresses`); only a valid address is an identity.
        email, phone = msg.traits.get("email"), msg.traits.get("phone")
        if is_email_address(email):
            out.append(("email", email.lower()))
        if is_phone_number(phone):
            out.append(("phone", phone))
    return out


# A message quarantined again after a replay handed it back (its row says "replayed") opens
# again with its new field and reason; its payload and arrival stay as they were.
_REOPEN = {
    c: f"{table_of(QuarantinedMessage).name}.{c}"
    for c in ("event", "user_id", "anonymous_id", "source", "payload", "received_at")
}


def _write(conn: Connection, batch: _Batch, registry: ContractRegistry) -> int:
    if batch.quarantine:
        bulk_write(
            conn,
            QuarantinedMessage,
            batch.quarantine,
            keys=["message_id"],
            on_conflict="update",
            set_sql=_REOPEN,
        )
    msgs = batch.accepted
    if not msgs:
        return 0
    pids, merges = resolve(conn, msgs, batch.now, registry)
    now = batch.now
    # One pass over the batch builds the event rows as columns (as the driver takes them) and
    # sorts the messages out for traits, consent and features.
    names: list[str] = []
    times: list[datetime] = []
    props: list[dict[str, Any]] = []
    tracked: list[tuple[str, str, Any, datetime]] = []
    identified: list[tuple[Identify, str]] = []
    for msg, pid in zip(msgs, pids, strict=True):
        at = msg.timestamp or now
        times.append(at)
        if isinstance(msg, Track):
            names.append(msg.event)
            props.append(msg.properties)
            tracked.append((pid, msg.event, msg.properties, at))
            continue
        names.append(event_name(msg))
        if isinstance(msg, Identify):
            props.append(msg.traits)
            identified.append((msg, pid))
        elif isinstance(msg, Alias):
            props.append({"previousId": msg.previous_id})
        else:
            props.append({"consent": [s.model_dump(by_alias=True) for s in msg.consent]})
    events: dict[str, list[Any]] = {
        "message_id": [m.message_id for m in msgs],
        "profile_id": pids,
        "name": names,
        "occurred_at": times,
        "properties": props,
    }
    bulk_write_columns(conn, Event, events, keys=["message_id"], on_conflict="ignore")
    _apply_traits(conn, identified, batch)
    _apply_consent(conn, msgs, pids, times, batch)
    apply_events(conn, tracked, registry)
    return merges


def _owners(
    conn: Connection, ids_of: list[list[Ident]], msgs: Sequence[AnyMessage]
) -> dict[Ident, str]:
    """The profile that owns each identifier the messages name, where one does already."""
    by_kind: dict[str, set[str]] = {}
    for ids in ids_of:
        for kind, value in ids:
            by_kind.setdefault(kind, set()).add(value)
    for msg in msgs:
        # An alias's previous id may be a user id or an anonymous id: look up both.
        if isinstance(msg, Alias):
            for kind in ("user_id", "anonymous_id"):
                by_kind.setdefault(kind, set()).add(msg.previous_id)
    owner: dict[Ident, str] = {}
    for kind, values in by_kind.items():
        owner.update(
            ((kind, r[0]), r[1]) for r in fetch_in(conn, _SQL_OWNERS, sorted(values), kind)
        )
    return owner


def resolve(
    conn: Connection, msgs: Sequence[AnyMessage], now: datetime, registry: ContractRegistry
) -> tuple[list[str], int]:
    """Resolve every message to its person's canonical id, merging people the batch links.

    Returns the profile id of each message, in order, and the number of merges."""
    ids_of = [identifiers(m) for m in msgs]
    owner = _owners(conn, ids_of, msgs)
    # Messages whose ids all belong to one known person settle at once; only the rest (new
    # ids, links, aliases) go through the union-find.
    out: list[str] = []
    pending: list[int] = []
    for n, (msg, ids) in enumerate(zip(msgs, ids_of, strict=True)):
        pid = owner.get(ids[0])
        if (
            pid is None
            or isinstance(msg, Alias)
            or (len(ids) > 1 and any(owner.get(i) != pid for i in ids[1:]))
        ):
            pending.append(n)
            pid = ""
        out.append(pid)
    if not pending:
        return out, 0
    people = _link(conn, [msgs[n] for n in pending], [ids_of[n] for n in pending], owner, now)
    renamed = {loser: winner for winner, loser, _ in people.merges}
    out = [renamed.get(pid, pid) for pid in out]
    for n, pid in zip(pending, people.profile_ids, strict=True):
        out[n] = pid
    if people.merges:
        winners = sorted({w for w, _, _ in people.merges})
        apply_events(conn, events_of(conn, winners), registry, rebuild=winners)
    return out, len(people.merges)


@dataclass
class _People:
    profile_ids: list[str]  # of each pending message, in order
    merges: list[tuple[str, str, str]]  # winner, loser, via


def _link(
    conn: Connection,
    pending: list[AnyMessage],
    ids_of: list[list[Ident]],
    owner: dict[Ident, str],
    now: datetime,
) -> _People:
    """Union-find over the pending messages and everything known about the people they name;
    writes the identities and new profiles and performs the merges."""
    named = {i for ids in ids_of for i in ids}
    named |= {
        (k, m.previous_id)
        for m in pending
        if isinstance(m, Alias)
        for k in ("user_id", "anonymous_id")
    }
    # Everything known about the people the pending messages touch, to merge them correctly.
    known: dict[Ident, tuple[str, datetime]] = {
        (r[0], r[1]): (r[2], driver_time(r[3]))
        for r in fetch_in(conn, _SQL_PEOPLE, sorted({owner[i] for i in named if i in owner}))
    }

    uf = UnionFind()
    # Ids already known first, so the batch cannot split a person the database joined.
    by_profile: dict[str, list[Ident]] = {}
    for ident, (pid, _) in known.items():
        by_profile.setdefault(pid, []).append(ident)
    for members in by_profile.values():
        for other in members[1:]:
            uf.union(members[0], other, force=True)
    for msg, ids in zip(pending, ids_of, strict=True):
        if isinstance(msg, Alias):
            # The previous id is a user id when one is known by then: stored, or named by an
            # earlier message of this batch (as it would be had that come in its own batch).
            prev: Ident = ("user_id", msg.previous_id)
            if prev not in known and prev not in uf.parent:
                prev = ("anonymous_id", msg.previous_id)
            uf.union(ids[0], prev, force=True)
        for other in ids[1:]:
            uf.union(ids[0], other)
        uf.find(ids[0])

    # A new identifier was first seen at the earliest message naming it.
    first_seen = {i: v[1] for i, v in known.items()}
    for msg, ids in zip(pending, ids_of, strict=True):
        at = msg.timestamp or now
        for ident in ids:
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
    # User ids and anonymous ids are different kinds that may hold the same text, so a profile
    # id this batch merges away can be the canonical id of another person in it (visitor "a"
    # becomes customer "c" while customer "a" shows up). Such a loser's rows are moved aside
    # first, and its id is then free for the new person; merging in place would hand one
    # person's rows to the other or leave rows naming the deleted profile.
    taken = set(canonical.values())
    aside = {loser: _move_aside(conn, loser) for _, loser, _ in merges if loser in taken}
    existing = {pid for pid, _ in known.values()} - set(aside)
    _ensure_profiles(conn, sorted(taken - existing), now)
    bulk_write(conn, Identity, identity_rows, keys=["kind", "value"], on_conflict="update")
    for winner, loser, via in merges:
        _merge(conn, winner, loser, via, now, held_as=aside.get(loser, loser))
    return _People([canonical[uf.find(ids[0])] for ids in ids_of], merges)


def _ensure_profiles(conn: Connection, pids: list[str], now: datetime) -> None:
    if pids:
        # The profile columns' defaults live in the model, not the table: take them from it.
        blank = Profile(id="", created_at=now).model_dump()
        rows = [{**blank, "id": p} for p in pids]
        bulk_write(conn, Profile, rows, keys=["id"], on_conflict="ignore")


def _move_aside(conn: Connection, pid: str) -> str:
    """Move a profile and its rows to a fresh id that only this transaction knows; the id
    names nobody afterwards. Returns the new id."""
    temp = f"merging-{uuid.uuid4().hex}"
    p = table_of(Profile)
    rest = [c for c in p.c if c.name != "id"]
    # Copied, moved, then deleted: consents keep a profile to point to at every statement.
    conn.execute(
        p.insert().from_select(
            ["id", *(c.name for c in rest)],
            select(literal(temp, type_=p.c.id.type), *rest).where(p.c.id == pid),
        )
    )
    for model in (Event, Consent, TraitHistory, TraitState):
        table = table_of(model)
        conn.execute(update(table).where(table.c.profile_id == pid).values(profile_id=temp))
    # Derived rows: the merge drops the loser's and rebuilds the winner's.
    for derived in (table_of(ProfileFeatures), table_of(EngagementCount), table_of(SegmentMember)):
        conn.execute(delete(derived).where(derived.c.profile_id == pid))
    conn.execute(delete(p).where(p.c.id == pid))
    return temp


def _merge(
    conn: Connection, winner: str, loser: str, via: str, now: datetime, *, held_as: str
) -> None:
    """Move everything of `loser`, whose rows are held under `held_as` (its own id unless it
    was moved aside), onto `winner` and drop the loser's profile."""
    p = _PR
    rows = {
        r["id"]: dict(r)
        for r in conn.execute(
            select(table_of(Profile)).where(p.id.in_([winner, held_as]))
        ).mappings()
    }
    old, new = rows.get(held_as), rows.get(winner)
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
        conn.execute(update(table).where(table.c.profile_id == held_as).values(profile_id=winner))
    ts = _TS
    states = (
        conn.execute(select(table_of(TraitState)).where(ts.profile_id.in_([winner, held_as])))
        .mappings()
        .all()
    )
    latest: dict[str, dict[str, Any]] = {}

    def rank(state: Any) -> tuple[datetime, bool]:
        at = state["recorded_at"]
        return (at if at <= now else _NOT_YET, state["profile_id"] == winner)

    for s in states:
        cur = latest.get(s["trait"])
        if cur is None or rank(s) > rank(cur):
            latest[s["trait"]] = dict(s)
    conn.execute(delete(table_of(TraitState)).where(ts.profile_id.in_([winner, held_as])))
    if latest:
        conn.execute(
            insert(conn, TraitState), [{**s, "profile_id": winner} for s in latest.values()]
        )
    _refresh_profiles(conn, [winner])
    for derived in (table_of(ProfileFeatures), table_of(EngagementCount)):
        conn.execute(delete(derived).where(derived.c.profile_id == held_as))
    # The next snapshot re-admits the merged person under the winner's id.
    conn.execute(delete(SegmentMember).where(_SM.profile_id == held_as))
    conn.execute(delete(Profile).where(_PR.id == held_as))
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
    now = batch.now
    for msg, pid in items:
        # Never later than its arrival: a clock ahead must not outrank what is said after it.
        at = min(msg.timestamp or now, now)
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
            # A stored time from the future (before these checks) has not come yet: it yields.
            if prior is None or prior > now or at >= prior:
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
    params = []
    # Addresses stated before ingestion checked them and that are not one valid address: the
    # column is cleared rather than given to a sender.
    invalid: dict[str, list[str]] = {"email": [], "phone": []}
    for pid, values in traits.items():
        row = {
            "b_id": pid,
            "b_traits": values,
            **{
                f"b_{c}": values[c] if isinstance(values.get(c), str) else None
                for c in PROFILE_COLUMNS
            },
        }
        for c in ("email", "phone"):
            stated = row[f"b_{c}"]
            if isinstance(stated, str):
                row[f"b_{c}"] = _address_or_none(c, stated, values.get("country"))
                if row[f"b_{c}"] is None:
                    invalid[c].append(pid)
        params.append(row)
    if params:
        conn.execute(stmt, params)
    for c, bad in invalid.items():
        if bad:
            conn.execute(update(table_of(Profile)).where(p.id.in_(bad)).values({c: None}))


def _address_or_none(kind: str, value: str, country: Any) -> str | None:
    try:
        return email_address(value) if kind == "email" else phone_number(value, country)
    except AddressError:
        return None


def _apply_consent(
    conn: Connection,
    msgs: Sequence[AnyMessage],
    pids: Sequence[str],
    times: Sequence[datetime],
    batch: _Batch,
) -> None:
    rows: list[dict[str, Any]] = []
    now = batch.now
    for msg, pid, stated in zip(msgs, pids, times, strict=True):
        # Never later than its arrival: a clock ahead must not outrank a later withdrawal.
        at = min(stated, now)
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
        elif isinstance(msg, Track) and msg.event in WITHDRAWING_EVENTS:
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
        # Every profile id here has its profile row: resolve creates it before anything names
        # it (tests/cdp/test_integrity.py checks this with foreign keys on).
        conn.execute(insert(conn, Consent), rows)
