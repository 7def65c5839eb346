"""The quarantine: messages that broke their contract, kept whole and replayable."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Engine

from tools.cdp.contracts import ContractRegistry
from tools.cdp.errors import MessageError
from tools.cdp.ingest import EARLIEST_TIMESTAMP, MAX_FUTURE_SKEW, ingest_on
from tools.cdp.messages import AnyMessage, parse_message
from tools.cdp.sql import chunks, cols, table_of, utcnow
from tools.cdp.tables import QuarantinedMessage

tracer = trace.get_tracer("liftloop.cdp")
_QM = cols(QuarantinedMessage)


class ReplayResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    examined: int
    replayed: int
    still_quarantined: int


def _raw(payload: dict[str, Any]) -> Any:
    return json.loads(payload["raw_json"]) if set(payload) == {"raw_json"} else payload


def replay_quarantine(
    engine: Engine,
    registry: ContractRegistry,
    *,
    event: str | None = None,
    batch_size: int = 500,
    max_future_skew: timedelta = MAX_FUTURE_SKEW,
    earliest: datetime = EARLIEST_TIMESTAMP,
) -> ReplayResult:
    """Re-check open quarantined messages against the contracts in force and ingest those that
    now pass; the rest stay open with their (possibly new) field and reason.

    Ingestion's other checks (time, addresses; the limits as in `ingest`) run again too: a
    message that fails one is opened again with that reason, and one stamped a little in the
    future passes once its time has come."""
    with tracer.start_as_current_span("cdp.replay_quarantine") as span:
        query = select(_QM.id, _QM.payload, _QM.source).where(_QM.status == "open")
        if event is not None:
            query = query.where(_QM.event == event)
        with engine.connect() as conn:
            rows = conn.execute(query.order_by(_QM.id)).all()
        replayed = 0
        for part in chunks(rows, batch_size):
            passing: dict[str, list[tuple[int, dict[str, Any], AnyMessage]]] = {}
            failing: list[dict[str, Any]] = []
            for qid, payload, source in part:
                raw = _raw(payload)
                try:
                    msg = parse_message(raw)
                except MessageError as exc:
                    failing.append(
                        {
                            "b_id": qid,
                            "b_field": exc.field,
                            "b_reason": exc.reason,
                            "b_version": None,
                        }
                    )
                    continue
                problem = registry.check(msg.event, msg.properties) if msg.type == "track" else None
                if problem is None:
                    passing.setdefault(source, []).append((qid, raw, msg))
                else:
                    failing.append(
                        {
                            "b_id": qid,
                            "b_field": problem.field,
                            "b_reason": problem.reason,
                            "b_version": problem.version,
                        }
                    )
            if failing:
                with engine.begin() as conn:
                    conn.execute(
                        update(table_of(QuarantinedMessage))
                        .where(_QM.id == bindparam("b_id"))
                        .values(
                            field_path=bindparam("b_field"),
                            reason=bindparam("b_reason"),
                            contract_version=bindparam("b_version"),
                        ),
                        failing,
                    )
            for source, items in passing.items():
                with engine.begin() as conn:
                    # Marked first, so the ingest does not take them for duplicates.
                    conn.execute(
                        update(table_of(QuarantinedMessage))
                        .where(_QM.id.in_([qid for qid, _, _ in items]))
                        .values(status="replayed", replayed_at=utcnow())
                    )
                    result = ingest_on(
                        conn,
                        [(raw, msg) for _, raw, msg in items],
                        source=source,
                        registry=registry,
                        max_future_skew=max_future_skew,
                        earliest=earliest,
                    )
                replayed += result.accepted
        span.set_attribute("cdp.examined", len(rows))
        span.set_attribute("cdp.replayed", replayed)
        with engine.connect() as conn:
            still = conn.execute(
                select(func.count())
                .select_from(table_of(QuarantinedMessage))
                .where(_QM.status == "open")
            ).scalar_one()
        return ReplayResult(examined=len(rows), replayed=replayed, still_quarantined=still)


def quarantined(engine: Engine, *, limit: int = 100) -> list[dict[str, Any]]:
    """The open quarantine, newest first: message id, event, field path, reason, version."""
    with engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(
                    _QM.message_id,
                    _QM.event,
                    _QM.field_path,
                    _QM.reason,
                    _QM.contract_version,
                    _QM.source,
                    _QM.received_at,
                )
                .where(_QM.status == "open")
                .order_by(_QM.id.desc())
                .limit(limit)
            ).mappings()
        ]
