"""The example spec shipped in `examples/` parses, is the one docs/loop.md shows, and its
segment reaches people among the customers `liftloop demo` seeds (an example whose audience is
empty there would start a campaign that sends nothing)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import Engine
from temporalio.testing import ActivityEnvironment

from liftloop.loop.payloads import CycleRef
from liftloop.loop.segment import SegmentStage
from liftloop.loop.spec import load_spec
from tools.simulation.customers import generate_customers

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "winback-de.yaml"


def test_the_docs_show_the_example_file() -> None:
    assert EXAMPLE.read_text(encoding="utf-8") in (ROOT / "docs" / "loop.md").read_text(
        encoding="utf-8"
    )


def test_the_example_segment_reaches_the_demo_customers(engine: Engine) -> None:
    spec = load_spec(EXAMPLE)  # through parse_spec, as `liftloop campaign start` reads it
    # As the demo seeds them (its default seed); 1,000 of its 20,000 are enough.
    generate_customers(engine, 1000, batch="demo")
    ref = CycleRef(
        campaign_id=spec.id,
        workflow_id=f"campaign-{spec.id}",
        cycle=1,
        spec=spec,
        started_at=datetime.now(UTC),
        attribution_window_s=3600.0,
        shards=2,
    )
    # The loop's own segment stage: the segment compiled by the CDP, with consent on a channel.
    result = ActivityEnvironment().run(SegmentStage(engine).segment, ref)
    # About 30 % live in Germany and three quarters of them last bought 4 to 12 months ago.
    assert 150 < result.audience < 300, result
