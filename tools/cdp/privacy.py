"""Erasure and export of one person's data, with an audit log entry for each.

Erasure removes what identifies the person (profile, identities, traits, consents, quarantined
messages, bucket assignments, personal event properties) and replaces their id with a fresh
random pseudonym wherever rows feed aggregates (events), so revenue still adds up. Other stores
that hold the person's rows (the campaign loop's decisions and outbox) take part through
`PersonStore`s that the caller passes: they run in the same transaction under the same
pseudonym, so the CDP knows nothing of them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, Protocol

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict
from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.engine import Connection, Engine

from tools.cdp.contracts import ContractRegistry
from tools.cdp.errors import UnknownIdentityError
from tools.cdp.ingest import PEOPLE_WRITER
from tools.cdp.people import profile_of
from tools.cdp.sql import cols, insert, one_writer_at_a_time, table_of, utcnow
from tools.cdp.tables import (
    AuditEntry,
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
    TraitHistory,
    TraitState,
)

tracer = trace.get_tracer("liftloop.cdp")
# Property names treated as personal in every event, whatever its contract says.
PERSONAL_KEYS = frozenset(
    {"email", "phone", "name", "first_name", "last_name", "address", "ip", "user_agent"}
)


class PersonStore(Protocol):
    """Another store's rows about a person, erased and exported with the CDP's."""

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
    pid = profile_of(conn, any_id)
    if pid is None:
        raise UnknownIdentityError("id", "no profile or identity has this id")
    idt = cols(Identity)
    values = conn.execute(select(idt.value).where(idt.profile_id == pid)).scalars().all()
    return pid, sorted({pid, *values})


def _scrub(name: str, props: Any, registry: ContractRegistry) -> dict[str, Any]:
    if name.startswith("$") or not isinstance(props, dict):
        return {}  # identify traits, aliases and consent statements are all personal
    contract = registry.get(name)
    personal = PERSONAL_KEYS | (contract.pii_fields if contract else frozenset())
    return {k: v for k, v in props.items() if k not in personal}


def erase_person(
    engine: Engine,
    any_id: str,
    registry: ContractRegistry,
    *,
    actor: str,
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
            ev = cols(Event)
            events = conn.execute(
                select(ev.id, ev.name, ev.properties).where(ev.profile_id == pid)
            ).all()
            if events:
                conn.execute(
                    update(table_of(Event))
                    .where(ev.id == bindparam("b_id"))
                    .values(profile_id=pseudonym, properties=bindparam("b_props")),
                    [{"b_id": e[0], "b_props": _scrub(e[1], e[2], registry)} for e in events],
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
            _audit(conn, "erase", pseudonym, actor, {"rows": rows})
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
    engine: Engine, any_id: str, *, actor: str, stores: Sequence[PersonStore] = ()
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
            _audit(
                conn,
                "export",
                f"export-{uuid.uuid4().hex}",
                actor,
                {"sections": {k: len(v) for k, v in data.items() if isinstance(v, list)}},
            )
        span.set_attribute("cdp.events", len(data["events"]))
        return data


def _audit(
    conn: Connection, action: str, subject: str, actor: str, details: dict[str, Any]
) -> None:
    conn.execute(
        insert(conn, AuditEntry),
        [
            {
                "action": action,
                "subject": subject,
                "actor": actor,
                "details": details,
                "at": utcnow(),
            }
        ],
    )
