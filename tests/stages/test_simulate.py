"""SimulateStage.simulate alone: the simulated orders written into the CDP's events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlmodel import col

from liftloop.loop.payloads import CycleRef
from liftloop.loop.simulate import SimulateStage
from liftloop.loop.spec import Simulation
from tests.stages.helpers import (
    CycleRefBuilder,
    RecordingSender,
    all_rows,
    decisions,
    outbox,
    run_decide,
    run_generate,
    run_segment,
    run_send,
    send_stage,
)
from tools.cdp.tables import Event

WINDOW_START = datetime(2030, 1, 6, 9, 0, tzinfo=UTC)


def _sent_cycle(env, engine, ref: CycleRef) -> CycleRef:  # type: ignore[no-untyped-def]
    run_segment(env, engine, ref)
    run_decide(env, engine, ref)
    approved = [v for v in run_generate(env, engine, ref).variant_ids if "twenty_off" not in v]
    senders = {"email": RecordingSender(), "push": RecordingSender()}
    run_send(env, send_stage(engine, senders), ref, approved)
    return ref.model_copy(update={"window_start": WINDOW_START})


def _events(engine, ref: CycleRef) -> list[tuple[object, ...]]:  # type: ignore[no-untyped-def]
    prefix = f"sim:{ref.campaign_id}:{ref.cycle}:"
    return sorted(
        (e.message_id, e.profile_id, e.name, e.occurred_at, tuple(sorted(e.properties.items())))
        for e in all_rows(engine, Event, col(Event.message_id).startswith(prefix))
    )


def test_simulated_orders_are_events_with_sim_message_ids(
    env, engine, cycle_ref: CycleRefBuilder
) -> None:
    ref = _sent_cycle(env, engine, cycle_ref(cycle=2, simulation={"enabled": True, "seed": 3}))
    result = env.run(SimulateStage(engine).simulate, ref)
    events = all_rows(engine, Event)
    assert result.events == len(events) > 0
    decided = {d.profile_id: d for d in decisions(engine, ref)}
    status = {r.profile_id: r.status for r in outbox(engine, ref)}
    offers = {o.id: o for o in ref.spec.offers}
    end = WINDOW_START + timedelta(seconds=0.9 * ref.attribution_window_s)
    for e in events:
        assert e.message_id == f"sim:{ref.campaign_id}:2:{e.profile_id}"
        assert e.profile_id in decided and e.name == "order_completed"
        at = e.occurred_at if e.occurred_at.tzinfo else e.occurred_at.replace(tzinfo=UTC)
        assert WINDOW_START <= at <= end
        assert e.properties["simulated"] is True and e.properties["revenue"] > 0
        d = decided[e.profile_id]
        # Only a message actually sent carries its offer's discount.
        sent = status.get(e.profile_id) == "sent"
        assert e.properties["discount_pct"] == (offers[d.offer_id].discount_pct if sent else 0.0)
    assert set(result.true_lift) == {"conversion", "contribution_margin"}
    assert all(isinstance(v, float) for v in result.true_lift.values())


def test_the_same_seed_gives_the_same_events(env, engine, cycle_ref: CycleRefBuilder) -> None:
    ref = _sent_cycle(env, engine, cycle_ref(simulation={"enabled": True, "seed": 3}))
    stage = SimulateStage(engine)
    first = env.run(stage.simulate, ref)
    events = _events(engine, ref)

    # A retry writes nothing twice.
    assert env.run(stage.simulate, ref) == first
    assert _events(engine, ref) == events

    with engine.begin() as conn:
        conn.execute(delete(Event))
    assert env.run(stage.simulate, ref) == first
    assert _events(engine, ref) == events

    with engine.begin() as conn:
        conn.execute(delete(Event))
    other = ref.model_copy(
        update={
            "spec": ref.spec.model_copy(update={"simulation": Simulation(enabled=True, seed=4)})
        }
    )
    env.run(stage.simulate, other)
    assert _events(engine, other) != events
