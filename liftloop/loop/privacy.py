"""The loop's part of a person's erasure and export: decisions, audience snapshots and the outbox
keep feeding measured lift under the erasure's pseudonym; the recipient address goes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Connection

from liftloop.loop.tables import AudienceMember, DecisionRecord, OutboxMessage
from tools.cdp.privacy import json_rows
from tools.cdp.sql import cols, table_of


class LoopRecords:
    """The campaign loop's rows about a person, as a `tools.cdp.privacy.PersonStore`."""

    def erase(self, conn: Connection, profile_id: str, pseudonym: str) -> Mapping[str, int]:
        rows: dict[str, int] = {}
        for model, label in ((DecisionRecord, "decisions"), (AudienceMember, "audience_members")):
            t = table_of(model)
            rows[label] = conn.execute(
                update(t).where(t.c.profile_id == profile_id).values(profile_id=pseudonym)
            ).rowcount
        ob = table_of(OutboxMessage)
        rows["outbox"] = conn.execute(
            update(ob)
            .where(ob.c.profile_id == profile_id)
            .values(profile_id=pseudonym, recipient=None)
        ).rowcount
        return rows

    def export(self, conn: Connection, profile_id: str) -> Mapping[str, list[dict[str, Any]]]:
        return {
            "decisions": json_rows(
                conn, DecisionRecord, cols(DecisionRecord).profile_id == profile_id
            ),
            "outbox": json_rows(conn, OutboxMessage, cols(OutboxMessage).profile_id == profile_id),
        }
