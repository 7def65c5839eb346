"""Erasure and export of one person's data, with an audit log entry for each.

Erasure removes what identifies the person (profile, identities, traits, consents, quarantined
messages, bucket assignments, personal event properties) and replaces their id with a fresh
random pseudonym wherever rows feed aggregates (events), so revenue still adds up. Other stores
that hold the person's rows (the campaign loop's decisions and outbox) take part through
`PersonStore`s that the caller passes: they run in the same transaction under the same
pseudonym, so the CDP knows nothing of them.

A contract cannot name every place an identifier turns up (an e-mail in a URL's query string),
so every value left in the person's events is also searched for everything known to identify
them (`Identifiers`: each identity value and the profile's addresses; e-mails also URL-encoded
and in any case) and a value that holds one is removed. The CDP's other rows that mention the
person's e-mail, phone or a long id (another person's event, trait or profile, a quarantined
message, a segment's spec) are found in SQL and redacted the same way.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Protocol
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import phonenumbers
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict
from sqlalchemy import String, Text, bindparam, cast, delete, func, or_, select, type_coerce, update
from sqlalchemy.engine import Connection, Engine

from tools.audit import AuditEvent, AuditLog
from tools.cdp.contracts import ContractRegistry
from tools.cdp.ingest import PEOPLE_WRITER
from tools.cdp.people import resolve_profile
from tools.cdp.sql import chunks, cols, one_writer_at_a_time, table_of
from tools.cdp.tables import (
    BucketAssignment,
    Consent,
    EngagementCount,
    Event,
    Identity,
    MergeRecord,
    Profile,
    ProfileFeatures,
    QuarantinedMessage,
    SegmentChange,
    SegmentMember,
    SegmentSnapshot,
    TraitHistory,
    TraitState,
)

tracer = trace.get_tracer("liftloop.cdp")
# Property names treated as personal in every event, whatever its contract says.
PERSONAL_KEYS = frozenset(
    {"email", "phone", "name", "first_name", "last_name", "address", "ip", "user_agent"}
)


# Ids at least this long are searched for in other people's rows too; a shorter one ("u1")
# would match too much that is not about the person.
LONG_ID = 8
# The CDP's rows that may hold free text about someone, searched on every erasure.
_FREE_TEXT: tuple[tuple[Any, str], ...] = (
    (Event, "properties"),
    (Profile, "traits"),
    (TraitState, "value"),
    (TraitHistory, "value"),
    (SegmentSnapshot, "spec"),
)
_REMOVED = object()


def _variants(text: str) -> set[str]:
    """`text` and its URL-decoded forms (up to three levels of encoding)."""
    out = {text}
    frontier = {text}
    for _ in range(3):
        frontier = {
            d for t in frontier if "%" in t or "+" in t for d in (unquote(t), unquote_plus(t))
        } - out
        if not frontier:
            break
        out |= frontier
    return out


class Identifiers:
    """What identifies one person, to find it in free text: e-mail addresses in any case and
    URL-encoding, phone numbers with or without separators, and ids (user, anonymous, device,
    profile) as whole tokens, not inside a longer word."""

    def __init__(self, emails: Iterable[str], phones: Iterable[str], ids: Iterable[str]) -> None:
        self.emails = sorted({e.strip().lower() for e in emails if e and e.strip()})
        self.ids = sorted({i for i in ids if i})
        digits: set[str] = set()
        for phone in phones:
            plain = "".join(ch for ch in phone if ch.isdigit())
            if len(plain) >= 6:
                digits.add(plain)
            try:
                national = phonenumbers.national_significant_number(phonenumbers.parse(phone))
            except phonenumbers.NumberParseException:
                continue
            if len(national) >= 6:
                digits.add(national)  # written without its country prefix
        self.phone_digits = sorted(digits)
        self._ids = (
            re.compile(
                "(?<![A-Za-z0-9])(?:"
                + "|".join(re.escape(i) for i in sorted(self.ids, key=len, reverse=True))
                + ")(?![A-Za-z0-9])"
            )
            if self.ids
            else None
        )

    def __bool__(self) -> bool:
        return bool(self.emails or self.phone_digits or self.ids)

    def found_in(self, text: str) -> bool:
        """True when `text` holds one of the identifiers."""
        for variant in _variants(text):
            lower = variant.lower()
            if any(e in lower for e in self.emails):
                return True
            if self.phone_digits and any(ch.isdigit() for ch in variant):
                plain = "".join(ch for ch in variant if ch.isdigit())
                if any(d in plain for d in self.phone_digits):
                    return True
            if self._ids is not None and self._ids.search(variant):
                return True
        return False

    def _hit(self, value: Any) -> bool:
        if isinstance(value, str):
            return self.found_in(value)
        if isinstance(value, int) and not isinstance(value, bool):
            # A phone sent as a number. Not ids: a revenue of 80 is no user "80".
            digits = str(abs(value))
            return any(d in digits for d in self.phone_digits)
        return False

    def redact(self, value: Any) -> Any:
        """`value` without the strings (and dict entries, list items) that hold an identifier;
        a value that is itself one comes back as None."""
        out = self._redact(value)
        return None if out is _REMOVED else out

    def _redact(self, value: Any) -> Any:
        if isinstance(value, dict):
            kept = {}
            for k, v in value.items():
                if self._hit(k):
                    continue
                new = self._redact(v)
                if new is not _REMOVED:
                    kept[k] = new
            return kept
        if isinstance(value, list):
            return [new for new in (self._redact(v) for v in value) if new is not _REMOVED]
        return _REMOVED if self._hit(value) else value

    def search_terms(self) -> list[str]:
        """Lower-case substrings that a stored text mentioning the person contains, to find
        candidate rows in SQL (then checked with `found_in`): addresses as they are and
        URL-encoded, phone digits, and the long ids."""
        terms: set[str] = set()
        for e in self.emails:
            terms |= {e, quote(e, safe="").lower(), quote_plus(e).lower(), quote(e).lower()}
        terms |= set(self.phone_digits)
        terms |= {i.lower() for i in self.ids if len(i) >= LONG_ID}
        return sorted(terms)


def person_identifiers(conn: Connection, profile_id: str) -> Identifiers:
    """Everything known to identify the person: their identities, the addresses of their
    profile and every e-mail or phone their traits ever stated."""
    idt = cols(Identity)
    rows = conn.execute(select(idt.kind, idt.value).where(idt.profile_id == profile_id)).all()
    emails = [v for k, v in rows if k == "email"]
    phones = [v for k, v in rows if k == "phone"]
    ids = [profile_id, *(v for k, v in rows if k not in ("email", "phone"))]
    p = cols(Profile)
    for email, phone in conn.execute(select(p.email, p.phone).where(p.id == profile_id)):
        emails += [email] if email else []
        phones += [phone] if phone else []
    th = cols(TraitHistory)
    for trait, value in conn.execute(
        select(th.trait, th.value).where(
            th.profile_id == profile_id, th.trait.in_(["email", "phone"])
        )
    ):
        if isinstance(value, str):
            (emails if trait == "email" else phones).append(value)
    return Identifiers(emails, phones, ids)


class PersonStore(Protocol):
    """Another store's rows about a person, erased and exported with the CDP's.

    Stores run before the CDP deletes the person's own rows, so `person_identifiers` still
    finds everything that identifies them."""

    def erase(self, conn: Connection, profile_id: str, pseudonym: str) -> Mapping[str, int]:
        """Rows changed per table, once the person's id became `pseudonym` or was removed."""
        ...

    def export(self, conn: Connection, profile_id: str) -> Mapping[str, list[dict[str, Any]]]:
        """The person's rows per section, as JSON-ready data."""
        ...


class ErasureReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    pseudonym: str
    rows: dict[str, int]


def _person(conn: Connection, any_id: str) -> tuple[str, list[str]]:
    pid = resolve_profile(conn, any_id)
    idt = cols(Identity)
    values = conn.execute(select(idt.value).where(idt.profile_id == pid)).scalars().all()
    return pid, sorted({pid, *values})


def _scrub(name: str, props: Any, registry: ContractRegistry, who: Identifiers) -> dict[str, Any]:
    if name.startswith("$") or not isinstance(props, dict):
        return {}  # identify traits, aliases and consent statements are all personal
    contract = registry.get(name)
    personal = PERSONAL_KEYS | (contract.pii_fields if contract else frozenset())
    kept = {k: v for k, v in props.items() if k not in personal}
    # Whatever the contract says: no value that names the person stays.
    redacted: dict[str, Any] = who.redact(kept)
    return redacted


def _mentions(conn: Connection, table: Any, column: str, terms: Sequence[str]) -> list[Any]:
    """Rows of `table` whose `column`, as text, contains one of `terms` (lower-case)."""
    if not terms:
        return []
    text = func.lower(cast(table.c[column], Text))
    found: list[Any] = []
    for part in chunks(list(terms), 50):
        like = [text.like(f"%{_like_literal(t)}%", escape="\\") for t in part]
        found.extend(conn.execute(select(table).where(or_(*like))).mappings().all())
    return found


def _like_literal(term: str) -> str:
    """`term` for a LIKE pattern with `\\` as the escape: its % and _ are no wildcards."""
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _redact_mentions(conn: Connection, who: Identifiers) -> dict[str, int]:
    """Redact what the CDP's remaining rows say about the person: free-text JSON values that
    name them, address columns that hold their address, quarantined messages that name them
    (deleted: they would be replayed). Rows changed per table."""
    terms = who.search_terms()
    counts: dict[str, int] = {}
    for model, column in _FREE_TEXT:
        table = table_of(model)
        keys = [c.name for c in table.primary_key.columns]
        changes = []
        seen: set[tuple[Any, ...]] = set()
        for row in _mentions(conn, table, column, terms):
            key = tuple(row[k] for k in keys)
            if key in seen:
                continue
            seen.add(key)
            new = who.redact(row[column])
            if new != row[column]:
                changes.append({**{f"k_{k}": row[k] for k in keys}, "b_value": new})
        if changes:
            where = [table.c[k] == bindparam(f"k_{k}") for k in keys]
            value = bindparam("b_value", type_=table.c[column].type)
            conn.execute(update(table).where(*where).values({column: value}), changes)
        counts[f"mentions_{table.name}"] = len(changes)
    p = table_of(Profile)
    for column, values in (("email", who.emails), ("phone", who.phone_digits)):
        if values:
            # Compared as plain text: the column's type would refuse a needle that is not
            # a whole normalised address.
            raw = type_coerce(p.c[column], String)
            stored = func.lower(raw) if column == "email" else raw
            wanted = values if column == "email" else [f"+{d}" for d in values]
            counts[f"mentions_profiles_{column}"] = conn.execute(
                update(p).where(stored.in_(wanted)).values({column: None})
            ).rowcount
    q = table_of(QuarantinedMessage)
    ids = [r["id"] for r in _mentions(conn, q, "payload", terms) if who.found_in(str(r["payload"]))]
    counts["mentions_quarantine"] = (
        conn.execute(delete(q).where(q.c.id.in_(ids))).rowcount if ids else 0
    )
    return counts


def erase_person(
    engine: Engine,
    any_id: str,
    registry: ContractRegistry,
    *,
    actor: str,
    audit: AuditLog,
    stores: Sequence[PersonStore] = (),
) -> ErasureReport:
    """Erase the person behind `any_id` in one transaction and log it under a pseudonym."""
    with tracer.start_as_current_span("cdp.erase_person") as span:
        pseudonym = f"erased-{uuid.uuid4().hex}"
        rows: dict[str, int] = {}
        with engine.begin() as conn:
            # An ingest committing between the reads below and the writes would leave the
            # person's new events (and identities) behind: erasure runs alone with ingestion.
            one_writer_at_a_time(conn, PEOPLE_WRITER)
            pid, ids = _person(conn, any_id)
            who = person_identifiers(conn, pid)
            ev = cols(Event)
            events = conn.execute(
                select(ev.id, ev.name, ev.properties).where(ev.profile_id == pid)
            ).all()
            if events:
                conn.execute(
                    update(table_of(Event))
                    .where(ev.id == bindparam("b_id"))
                    .values(profile_id=pseudonym, properties=bindparam("b_props")),
                    [{"b_id": e[0], "b_props": _scrub(e[1], e[2], registry, who)} for e in events],
                )
            rows["events_pseudonymised"] = len(events)
            for store in stores:
                rows.update(store.erase(conn, pid, pseudonym))
            mg = table_of(MergeRecord)
            for column in ("winner", "loser"):
                conn.execute(update(mg).where(mg.c[column].in_(ids)).values({column: pseudonym}))
            deletions: list[tuple[str, Any, Any]] = [
                ("consents", Consent, cols(Consent).profile_id == pid),
                ("identities", Identity, cols(Identity).profile_id == pid),
                ("trait_state", TraitState, cols(TraitState).profile_id == pid),
                ("trait_history", TraitHistory, cols(TraitHistory).profile_id == pid),
                ("features", ProfileFeatures, cols(ProfileFeatures).profile_id == pid),
                ("engagement", EngagementCount, cols(EngagementCount).profile_id == pid),
                ("segment_members", SegmentMember, cols(SegmentMember).profile_id == pid),
                ("segment_changes", SegmentChange, cols(SegmentChange).profile_id == pid),
                ("buckets", BucketAssignment, cols(BucketAssignment).assigned_id.in_(ids)),
                (
                    "quarantine",
                    QuarantinedMessage,
                    or_(
                        cols(QuarantinedMessage).user_id.in_(ids),
                        cols(QuarantinedMessage).anonymous_id.in_(ids),
                    ),
                ),
                ("profiles", Profile, cols(Profile).id == pid),
            ]
            for label, model, where in deletions:
                rows[label] = conn.execute(delete(table_of(model)).where(where)).rowcount
            rows.update(_redact_mentions(conn, who))
            audit.append(
                AuditEvent(
                    kind="privacy.erase", actor=actor, subject=pseudonym, details={"rows": rows}
                ),
                conn,
            )
        span.set_attribute("cdp.events_pseudonymised", rows["events_pseudonymised"])
        return ErasureReport(pseudonym=pseudonym, rows=rows)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def json_rows(conn: Connection, model: Any, where: Any) -> list[dict[str, Any]]:
    """The rows of `model` that match `where`, as JSON-ready dicts (times in ISO 8601)."""
    t = table_of(model)
    return [_jsonable(dict(r)) for r in conn.execute(select(t).where(where)).mappings()]


def export_person(
    engine: Engine,
    any_id: str,
    *,
    actor: str,
    audit: AuditLog,
    stores: Sequence[PersonStore] = (),
) -> dict[str, Any]:
    """Everything the CDP holds about the person behind `any_id`, as JSON-ready data."""
    with tracer.start_as_current_span("cdp.export_person") as span:
        with engine.begin() as conn:
            pid, ids = _person(conn, any_id)

            def rows(model: Any, where: Any) -> list[dict[str, Any]]:
                return json_rows(conn, model, where)

            q = cols(QuarantinedMessage)
            data: dict[str, Any] = {
                "profile_id": pid,
                "profile": rows(Profile, cols(Profile).id == pid),
                "identities": rows(Identity, cols(Identity).profile_id == pid),
                "traits": rows(TraitState, cols(TraitState).profile_id == pid),
                "trait_history": rows(TraitHistory, cols(TraitHistory).profile_id == pid),
                "consents": rows(Consent, cols(Consent).profile_id == pid),
                "events": rows(Event, cols(Event).profile_id == pid),
                "features": rows(ProfileFeatures, cols(ProfileFeatures).profile_id == pid),
                "engagement": rows(EngagementCount, cols(EngagementCount).profile_id == pid),
                "segments": rows(SegmentMember, cols(SegmentMember).profile_id == pid),
                "buckets": rows(BucketAssignment, cols(BucketAssignment).assigned_id.in_(ids)),
                "quarantine": rows(
                    QuarantinedMessage, or_(q.user_id.in_(ids), q.anonymous_id.in_(ids))
                ),
            }
            for store in stores:
                data.update(store.export(conn, pid))
            audit.append(
                AuditEvent(
                    kind="privacy.export",
                    actor=actor,
                    subject=f"export-{uuid.uuid4().hex}",
                    details={
                        "sections": {k: len(v) for k, v in data.items() if isinstance(v, list)}
                    },
                ),
                conn,
            )
        span.set_attribute("cdp.events", len(data["events"]))
        return data
