"""Referential integrity of the CDP tables across identity merges, on both databases.

SQLite runs with foreign keys off in production; here they are switched on, so a row that
names a missing profile fails on SQLite as it does on PostgreSQL (`consents_profile_id_fkey`).

User ids and anonymous ids are separate kinds that may hold the same text, so a profile id
merged away in a batch can be the canonical id of another person in the same batch: the
anonymous visitor "shared" becomes customer "cust-1" while customer "shared" (a user id) shows
up for the first time.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from liftloop.db import make_engine
from tests.audit_support import audit_for
from tools.cdp.contracts import ContractRegistry
from tools.cdp.ingest import identifiers, ingest
from tools.cdp.messages import parse_message
from tools.cdp.people import resolve_profile
from tools.cdp.privacy import erase_person
from tools.cdp.sql import cols, table_of
from tools.cdp.tables import (
    Consent,
    EngagementCount,
    Event,
    Identity,
    MergeRecord,
    Profile,
    ProfileFeatures,
    SegmentMember,
    TraitHistory,
    TraitState,
    ensure_cdp_tables,
)

ERASED = "erased-"
# Every table whose rows belong to a profile.
REFERENCING = (
    Event,
    Consent,
    Identity,
    TraitState,
    TraitHistory,
    ProfileFeatures,
    EngagementCount,
    SegmentMember,
)


def _foreign_keys_on(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.execute("PRAGMA foreign_keys=ON")


@pytest.fixture
def strict(db_url: str) -> Iterator[Engine]:
    """An engine on which a row naming a missing profile fails, on SQLite as on PostgreSQL."""
    eng = make_engine(db_url)
    if eng.dialect.name == "sqlite":
        eng.dispose()  # the pooled connection predates the listener
        event.listen(eng, "connect", _foreign_keys_on)  # runs after make_engine's pragmas
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    ensure_cdp_tables(eng)
    try:
        yield eng
    finally:
        eng.dispose()


def dangling(engine: Engine) -> dict[str, set[str]]:
    """Per table, the profile ids its rows name that have no profile row (erasure leaves its
    pseudonym on events on purpose)."""
    out: dict[str, set[str]] = {}
    with engine.connect() as conn:
        profiles = set(conn.execute(select(cols(Profile).id)).scalars())
        for model in REFERENCING:
            named = set(conn.execute(select(table_of(model).c.profile_id).distinct()).scalars())
            missing = {pid for pid in named - profiles if not pid.startswith(ERASED)}
            if missing:
                out[table_of(model).name] = missing
    return out


@pytest.mark.parametrize("withdraw", [False, True], ids=["opened", "unsubscribed"])
def test_a_merged_away_id_taken_by_a_new_person_in_the_same_batch(
    strict: Engine, registry: ContractRegistry, m: Any, withdraw: bool
) -> None:
    """The path that left consents naming a deleted profile on PostgreSQL.

    Profile "shared" (the anonymous visitor) is merged into "cust-1" by this batch, and user
    "shared", new in this batch, gets "shared" as canonical id. The merge used to delete the
    profile row after the new person's identities pointed at it, and the new person's events,
    traits and consent withdrawal were then written for a profile that no longer existed (a
    withdrawal re-created it blank, which hid the symptom but lost the person's traits)."""
    ingest(
        strict,
        [m.msg("track", "v1", aid="shared", event="email_opened", properties={})],
        source="web",
        registry=registry,
    )
    batch = [
        m.msg("identify", "v2", uid="cust-1", aid="shared", traits={"country": "DE"}),
        m.msg("identify", "v3", uid="shared", traits={"country": "FR"}),
        m.msg(
            "track",
            "v4",
            uid="shared",
            event="unsubscribed" if withdraw else "email_opened",
            properties={},
        ),
    ]
    assert ingest(strict, batch, source="web", registry=registry).merges == 1
    assert dangling(strict) == {}
    ev, pr = cols(Event), cols(Profile)
    with strict.connect() as conn:
        assert resolve_profile(conn, "cust-1") == "cust-1"
        owners = dict(conn.execute(select(ev.message_id, ev.profile_id)).all())
        countries = dict(conn.execute(select(pr.id, pr.country)).all())
        merges = conn.execute(select(cols(MergeRecord).winner, cols(MergeRecord).loser)).all()
    # The visitor's history went with the visitor; the new customer kept only their own.
    assert owners == {"v1": "cust-1", "v2": "cust-1", "v3": "shared", "v4": "shared"}
    assert countries == {"cust-1": "DE", "shared": "FR"}
    assert merges == [("cust-1", "shared")]
    with strict.connect() as conn:
        withdrawn = conn.execute(select(cols(Consent).profile_id)).scalars().all()
    # A withdrawal is the new customer's, not the visitor's.
    assert withdrawn == (["shared"] if withdraw else [])


def owners_follow_identities(engine: Engine, raws: list[dict[str, Any]]) -> None:
    """Every stored event belongs to the person its message's primary identifier resolves to
    now: no event kept a profile id that a merge replaced."""
    ev, idt = cols(Event), cols(Identity)
    with engine.connect() as conn:
        stored = dict(conn.execute(select(ev.message_id, ev.profile_id)).all())
        owner = {
            (r[0], r[1]): r[2] for r in conn.execute(select(idt.kind, idt.value, idt.profile_id))
        }
    for raw in raws:
        if raw["messageId"] in stored and not stored[raw["messageId"]].startswith(ERASED):
            primary = identifiers(parse_message(raw))[0]
            assert stored[raw["messageId"]] == owner[primary], (raw, owner[primary])


def _orders(engine: Engine) -> dict[str, int]:
    f = cols(ProfileFeatures)
    with engine.connect() as conn:
        return {r[0]: r[1] for r in conn.execute(select(f.profile_id, f.orders)) if r[1]}


def _order(mid: str, aid: str) -> dict[str, Any]:
    props = {"order_id": f"o-{mid}", "revenue": 5.0}
    return {
        "type": "track",
        "messageId": mid,
        "anonymousId": aid,
        "event": "order_completed",
        "properties": props,
        "timestamp": "2026-01-01T00:00:00Z",
    }


@pytest.mark.parametrize(
    ("ids", "owners", "orders"),
    [
        # Each profile id is merged away by one person and taken by the other, so no order of
        # merging in place is right: neither may end up with the other's rows.
        (("x", "y", "y", "x", "x", "y"), {"m1": "y", "m3": "y", "m2": "x", "m4": "x"}, {"x": 1}),
        # Visitor "p" merges into "q" while user "p" absorbs visitor "w": the rows of "w" end
        # up on the new "p", never on "q".
        (("p", "w", "q", "p", "p", "w"), {"m1": "q", "m3": "q", "m2": "p", "m4": "p"}, {"p": 1}),
    ],
    ids=["two people swap ids", "a chain of merges through a reused id"],
)
def test_merges_that_reuse_a_merged_away_id_in_one_batch(
    strict: Engine,
    registry: ContractRegistry,
    m: Any,
    ids: tuple[str, ...],
    owners: dict[str, str],
    orders: dict[str, int],
) -> None:
    anon1, anon2, user3, anon3, user4, anon4 = ids
    first = [
        m.msg("track", "m1", aid=anon1, event="email_opened", properties={}),
        _order("m2", anon2),
    ]
    second = [
        m.msg("identify", "m3", uid=user3, aid=anon3, traits={}),
        m.msg("identify", "m4", uid=user4, aid=anon4, traits={}),
    ]
    ingest(strict, first, source="web", registry=registry)
    assert ingest(strict, second, source="web", registry=registry).merges == 2
    assert dangling(strict) == {}
    owners_follow_identities(strict, first + second)
    ev = cols(Event)
    with strict.connect() as conn:
        assert dict(conn.execute(select(ev.message_id, ev.profile_id)).all()) == owners
    assert _orders(strict) == orders


def _random_message(rng: random.Random, n: int, prefix: str) -> dict[str, Any]:
    """A message over a few ids whose user-id and anonymous-id texts overlap, so batches keep
    merging people, aliasing them and reusing merged-away ids."""
    users = anons = [f"{prefix}{x}" for x in ("p", "q", "r", "s", "t")]
    out: dict[str, Any] = {"messageId": f"{prefix}m{n}"}
    if rng.random() < 0.6:
        out["userId"] = rng.choice(users)
    if "userId" not in out or rng.random() < 0.5:
        out["anonymousId"] = rng.choice(anons)
    if rng.random() < 0.2:
        out["context"] = {"device": {"id": f"{prefix}{rng.choice(['d1', 'd2'])}"}}
    hour = rng.randrange(24)
    out["timestamp"] = f"2026-0{rng.randrange(1, 4)}-1{rng.randrange(10)}T{hour:02d}:00:00Z"
    kind = rng.choice(["track", "track", "identify", "alias", "consent"])
    if kind == "alias" and "userId" not in out:
        kind = "identify"
    out["type"] = kind
    if kind == "track":
        out["event"], out["properties"] = rng.choice(
            [
                ("email_opened", {}),
                ("order_completed", {"order_id": f"o{n}", "revenue": 10.0}),
                ("unsubscribed", {"channel": "email"}),
                ("message_bounced", {"channel": "sms", "bounce_type": "hard"}),
            ]
        )
    elif kind == "identify":
        traits: dict[str, Any] = {"country": rng.choice(["DE", "FR"])}
        if rng.random() < 0.5:
            traits["email"] = f"{prefix}{rng.choice(['e1', 'e2'])}@example.com"
        out["traits"] = traits
    elif kind == "alias":
        out["previousId"] = rng.choice(users + anons)
    else:
        out["consent"] = [{"purpose": "marketing", "channel": "email", "granted": True}]
    return out


def _derived_match_events(engine: Engine, registry: ContractRegistry) -> None:
    """The running totals of every profile equal what its events add up to."""
    ev, f, e = cols(Event), cols(ProfileFeatures), cols(EngagementCount)
    with engine.connect() as conn:
        events = conn.execute(select(ev.profile_id, ev.name)).all()
        orders = {r[0]: r[1] for r in conn.execute(select(f.profile_id, f.orders))}
        engaged: dict[str, int] = {}
        for pid, count in conn.execute(select(e.profile_id, e.count)):
            engaged[pid] = engaged.get(pid, 0) + count
    want_orders: dict[str, int] = {}
    want_engaged: dict[str, int] = {}
    for pid, name in events:
        if pid.startswith(ERASED):
            continue
        contract = registry.get(name)
        if name == "order_completed":
            want_orders[pid] = want_orders.get(pid, 0) + 1
        elif contract is not None and contract.engagement:
            want_engaged[pid] = want_engaged.get(pid, 0) + 1
    assert {p: n for p, n in orders.items() if n} == want_orders
    assert engaged == want_engaged


def test_merge_heavy_random_batches_keep_every_reference(
    strict: Engine, registry: ContractRegistry
) -> None:
    """Seeded random batches of merges, aliases, identifies, withdrawals, consents and now and
    then an erasure. After every batch: no row names a missing profile, every profile is some
    identity's owner, events follow their identifiers, and features add up to the events."""
    merges = erasures = 0
    for seed in range(16):
        rng, prefix, sent = random.Random(seed), f"s{seed}-", []
        erase_rng = random.Random(-seed)  # apart, so erasures leave the messages as they are
        for n in range(0, 80, 8):
            batch = [_random_message(rng, n + i, prefix) for i in range(rng.randrange(1, 8))]
            sent += batch
            merges += ingest(strict, batch, source="fuzz", registry=registry).merges
            assert dangling(strict) == {}, (seed, batch)
            owners_follow_identities(strict, sent)
            if erase_rng.random() < 0.1:
                someone = erase_rng.choice(batch)
                erase_person(
                    strict,
                    someone.get("userId") or someone["anonymousId"],
                    registry,
                    actor="t",
                    audit=audit_for(strict),
                )
                erasures += 1
                assert dangling(strict) == {}, (seed, "erasure")
        with strict.connect() as conn:
            profiles = set(conn.execute(select(cols(Profile).id)).scalars())
            owners = set(conn.execute(select(cols(Identity).profile_id)).scalars())
        assert profiles == owners
    _derived_match_events(strict, registry)
    assert merges > 20 and erasures > 5  # the workload does what it is for
