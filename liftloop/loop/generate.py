"""Generate: one content variant per arm (offer × channel) — never per person — from the
built-in templates or the copywriter over the knowledge base; personal data stays in slots that
the send stage fills."""

from __future__ import annotations

from sqlalchemy import delete, insert
from sqlalchemy.engine import Engine
from sqlmodel import col
from temporalio import activity

from liftloop.loop.copy_sources import CopySource, builtin_copy
from liftloop.loop.payloads import CycleRef, GenerateResult
from liftloop.loop.stage_kit import stage_span, variant_id
from liftloop.loop.tables import Variant
from tools.audit import AuditEvent, AuditLog


class GenerateStage:
    def __init__(self, engine: Engine, copywriter: CopySource, audit: AuditLog) -> None:
        self.engine = engine
        self.copywriter = copywriter
        self.audit = audit

    @activity.defn(name="campaign.generate")
    def generate(self, ref: CycleRef) -> GenerateResult:
        spec = ref.spec
        source = self.copywriter if spec.content.generator == "copywriter" else builtin_copy
        with (
            stage_span("generate", ref, **{"liftloop.generator": spec.content.generator}) as span,
            self.engine.begin() as conn,
        ):
            ids = []
            events: list[AuditEvent] = []
            for arm, offer, channel in spec.arms:
                copy = source(spec, offer, channel, arm)
                vid = variant_id(ref, arm)
                conn.execute(delete(Variant).where(col(Variant.id) == vid))
                conn.execute(
                    insert(Variant).values(
                        id=vid,
                        campaign_id=ref.campaign_id,
                        cycle=ref.cycle,
                        arm=arm,
                        channel=channel,
                        template_id=copy.template_id,
                        template_version=copy.template_version,
                        subject=copy.subject,
                        body=copy.body,
                        model=copy.model,
                        snapshot_id=copy.snapshot_id,
                        snapshot_signature=copy.snapshot_signature,
                        citations=list(copy.citations),
                    )
                )
                # Logged the first time a template version writes copy: the log's releases.
                events.append(
                    AuditEvent(
                        kind="prompt.in_use",
                        actor="worker",
                        campaign_id=ref.campaign_id,
                        subject=copy.template_id,
                        details={"version": copy.template_version, "model": copy.model},
                        key=f"prompt.in_use:{copy.template_id}:{copy.template_version}",
                    )
                )
                ids.append(vid)
            # After the copy is written: the log's lock is held until commit, not while a
            # model writes the next variant.
            for event in events:
                self.audit.append(event, conn)
            span.set_attribute("liftloop.variants", len(ids))
            return GenerateResult(variant_ids=ids)
