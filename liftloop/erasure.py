"""A person's erasure and export across every store that holds their rows: the CDP's own, and
the campaign loop's, composed here so that neither knows of the other."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine

from liftloop.loop.privacy import LoopRecords
from tools.cdp import privacy
from tools.cdp.contracts import ContractRegistry
from tools.cdp.privacy import ErasureReport

STORES = (LoopRecords(),)


def erase_person(
    engine: Engine, any_id: str, registry: ContractRegistry, *, actor: str
) -> ErasureReport:
    return privacy.erase_person(engine, any_id, registry, actor=actor, stores=STORES)


def export_person(engine: Engine, any_id: str, *, actor: str) -> dict[str, Any]:
    return privacy.export_person(engine, any_id, actor=actor, stores=STORES)
