from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from tools.cdp.contracts import ContractRegistry
from tools.cdp.identity import UnionFind, canonical_id
from tools.cdp.ingest import ingest
from tools.cdp.people import _hash_bucket, profile_buckets, profile_of, resolve_profile
from tools.cdp.sql import cols
from tools.cdp.tables import Event, MergeRecord, Profile


def _resolve(engine: Engine, any_id: str) -> str:
    with engine.connect() as conn:
        return resolve_profile(conn, any_id)


def _bucket(engine: Engine, salt: str, any_id: str) -> int:
    """The stored bucket of the person behind any of their ids, as the decide stage reads it
    for the person's profile (an unknown id is bucketed as itself)."""
    with engine.begin() as conn:
        pid = profile_of(conn, any_id) or any_id
        return profile_buckets(conn, salt, [pid])[pid]


def _owners(engine: Engine) -> dict[str, str]:
    ev = cols(Event)
    with engine.connect() as conn:
        return dict(conn.execute(select(ev.message_id, ev.profile_id)).all())


def test_anonymous_to_known_merges_history(engine: Engine, registry: ContractRegistry, m: Any):
    before = [
        m.msg(
            "track",
            "v1",
            aid="anon-1",
            event="product_viewed",
            properties={"product_id": "p1"},
            ts="2026-01-01T09:00:00Z",
        ),
        m.msg("identify", "v2", aid="anon-1", traits={"email": "Ann@Example.com "}),
    ]
    ingest(engine, before, source="web", registry=registry)
    assert _resolve(engine, "anon-1") == "anon-1"
    login = m.msg("identify", "v3", uid="cust-7", aid="anon-1", traits={"first_name": "Ann"})
    assert ingest(engine, [login], source="web", registry=registry).merges == 1
    assert set(_owners(engine).values()) == {"cust-7"}
    assert _resolve(engine, "ann@example.com") == "cust-7"
    mg = cols(MergeRecord)
    with engine.connect() as conn:
        merges = conn.execute(select(mg.winner, mg.loser)).all()
        ids = conn.execute(select(cols(Profile).id)).scalars().all()
    assert merges == [("cust-7", "anon-1")]
    assert ids == ["cust-7"]


def test_canonical_id_is_order_independent(db_url: str, registry: ContractRegistry, m: Any) -> None:
    from liftloop.db import make_engine
    from tools.cdp.tables import ensure_cdp_tables

    msgs = [
        m.msg("identify", "i1", aid="b-anon", traits={"phone": "+49 170 1234567"}),
        m.msg("identify", "i2", aid="a-anon", traits={"phone": "+491701234567"}),
        m.msg(
            "track",
            "i3",
            aid="c-anon",
            event="push_opened",
            properties={},
            context={"device": {"id": "dev-1"}},
        ),
        m.msg(
            "track",
            "i4",
            aid="b-anon",
            event="push_opened",
            properties={},
            context={"device": {"id": "dev-1"}},
        ),
    ]
    seen = set()
    for n, order in enumerate(list(itertools.permutations(msgs))[:3]):
        url = db_url if n == 0 else None
        if url is None:
            if db_url.startswith("sqlite"):
                url = db_url.replace("cdp.sqlite", f"cdp{n}.sqlite")
            else:
                break
        engine = make_engine(url)
        ensure_cdp_tables(engine)
        for one in order:  # one message per batch: the order of arrival varies
            ingest(engine, [one], source="app", registry=registry)
        seen.add(frozenset(_owners(engine).values()))
        engine.dispose()
    assert seen == {frozenset({"a-anon"})}


def test_shared_email_never_joins_two_customers(engine: Engine, registry: ContractRegistry, m: Any):
    family = [
        m.msg(
            "identify",
            "f2",
            uid="child",
            traits={"email": "home@example.com"},
            ts="2026-03-01T00:00:00Z",
        ),
        m.msg(
            "identify",
            "f1",
            uid="parent",
            traits={"email": "home@example.com"},
            ts="2025-03-01T00:00:00Z",
        ),
    ]
    ingest(engine, family, source="crm", registry=registry)
    assert _resolve(engine, "child") == "child"
    assert _resolve(engine, "parent") == "parent"
    # An explicit alias does join them; the earliest user id stays canonical.
    alias = m.msg("alias", "f3", uid="child", previousId="parent")
    assert ingest(engine, [alias], source="crm", registry=registry).merges == 1
    assert _resolve(engine, "child") == "parent"


def test_bucket_survives_a_merge(engine: Engine, registry: ContractRegistry, m: Any):
    salt = "winback-2026w48"
    # Pick a user id whose own hash lands elsewhere, so keeping the bucket is not luck.
    anon = "anon-42"
    user = next(
        f"user-{i}"
        for i in range(100)
        if _hash_bucket(salt, f"user-{i}") != _hash_bucket(salt, anon)
    )
    ingest(
        engine,
        [m.msg("track", "b1", aid=anon, event="product_viewed", properties={"product_id": "p"})],
        source="web",
        registry=registry,
    )
    first = _bucket(engine, salt, anon)
    assert first == _hash_bucket(salt, anon)
    ingest(
        engine,
        [m.msg("identify", "b2", uid=user, aid=anon, traits={})],
        source="web",
        registry=registry,
    )
    assert _bucket(engine, salt, user) == first
    assert _bucket(engine, salt, anon) == first
    assert _bucket(engine, salt, "never-seen") == _hash_bucket(salt, "never-seen")


def test_union_find_refuses_joining_user_ids_unless_forced():
    uf = UnionFind()
    assert uf.union(("user_id", "u1"), ("email", "e"))
    assert not uf.union(("user_id", "u2"), ("email", "e"))
    assert uf.find(("user_id", "u2")) != uf.find(("email", "e"))
    assert uf.union(("user_id", "u2"), ("email", "e"), force=True)
    from datetime import UTC, datetime

    t0, t1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    members = next(iter(uf.components().values()))
    assert (
        canonical_id(members, {("user_id", "u1"): t1, ("user_id", "u2"): t0, ("email", "e"): t0})
        == "u2"
    )


def test_known_message_follows_a_merge_in_the_same_batch(
    engine: Engine, registry: ContractRegistry, m: Any
):
    ingest(
        engine, [m.msg("identify", "s1", aid="anon-9", traits={})], source="web", registry=registry
    )
    batch = [
        m.msg("track", "s2", aid="anon-9", event="email_opened", properties={}),  # known person
        m.msg("identify", "s3", uid="cust-9", aid="anon-9", traits={}),  # logs in: a merge
        m.msg("track", "s4", aid="anon-9", event="email_clicked", properties={}),
    ]
    assert ingest(engine, batch, source="web", registry=registry).merges == 1
    assert set(_owners(engine).values()) == {"cust-9"}


def test_alias_of_a_user_id_named_earlier_in_the_same_batch(
    engine: Engine, registry: ContractRegistry, m: Any
):
    """An alias's previous id is the user id an earlier message of the batch created, as it is
    when that message came in its own batch, not a new anonymous id of that text."""
    batch = [
        m.msg("identify", "al1", uid="old-login", ts="2026-01-01T00:00:00Z", traits={}),
        m.msg("alias", "al2", uid="new-login", ts="2026-02-01T00:00:00Z", previousId="old-login"),
    ]
    ingest(engine, batch, source="app", registry=registry)
    assert _resolve(engine, "new-login") == _resolve(engine, "old-login")
    assert set(_owners(engine).values()) == {"old-login"}
