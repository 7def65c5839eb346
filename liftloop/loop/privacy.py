"""The loop's part of a person's erasure and export: decisions, audience snapshots and the outbox
keep feeding measured lift under the erasure's pseudonym; the recipient address goes, from the
outbox table and from the file outboxes (push and SMS JSON Lines) alike."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from connectors.jsonl_file import read_records, rewrite_records
from liftloop.loop.tables import AudienceMember, DecisionRecord, OutboxMessage
from tools.cdp.privacy import Identifiers, json_rows, person_identifiers
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


# What stays of an erased person's line: enough for the delivery audit (which counts the
# provider's ids per campaign) and for the sender's exactly-once check (the id).
_KEPT = ("id", "campaign_id", "channel")


class OutboxFiles:
    """The file outboxes (`*.jsonl` in `directory`, written by `connectors.jsonl_file`) as a
    `tools.cdp.privacy.PersonStore`: each line of a message to the person, known by its
    outbox id or by naming one of their identifiers, is rewritten to its id, campaign and
    channel. Files are replaced atomically under the senders' lock while the erasure's
    transaction is still open, so a failure rolls the database back and a retry finds the
    person again."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _files(self) -> list[Path]:
        return sorted(self.directory.glob("*.jsonl")) if self.directory.is_dir() else []

    def _message_ids(self, conn: Connection, *profile_ids: str) -> set[str]:
        ob = cols(OutboxMessage)
        return set(conn.execute(select(ob.id).where(ob.profile_id.in_(profile_ids))).scalars())

    @staticmethod
    def _about(record: dict[str, Any], ids: set[str], who: Identifiers) -> bool:
        if record.get("erased") is True:
            return False
        if record.get("id") in ids:
            return True
        return any(
            isinstance(v, str) and who.found_in(v)
            for k, v in record.items()
            if k not in ("id", "campaign_id", "channel")
        )

    def erase(self, conn: Connection, profile_id: str, pseudonym: str) -> Mapping[str, int]:
        # Either id: the loop's own rows may already carry the pseudonym.
        ids = self._message_ids(conn, profile_id, pseudonym)
        who = person_identifiers(conn, profile_id)

        def edit(record: dict[str, Any]) -> dict[str, Any] | None:
            if not self._about(record, ids, who):
                return None
            kept = {k: record[k] for k in _KEPT if k in record}
            return {**kept, "recipient": None, "subject": "", "body": "", "erased": True}

        return {"outbox_file_lines": sum(rewrite_records(path, edit) for path in self._files())}

    def export(self, conn: Connection, profile_id: str) -> Mapping[str, list[dict[str, Any]]]:
        ids = self._message_ids(conn, profile_id)
        who = person_identifiers(conn, profile_id)
        lines = [
            {"file": path.name, **record}
            for path in self._files()
            for record in read_records(path, lambda r: self._about(r, ids, who))
        ]
        return {"outbox_files": lines}
