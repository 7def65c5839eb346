from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from tools.cdp.contracts import ContractRegistry
from tools.cdp.ingest import ingest
from tools.cdp.segments import (
    SegmentError,
    compile_segment,
    count_segment,
    segment_changes,
    snapshot_segment,
)
from tools.cdp.sql import cols
from tools.cdp.tables import Profile

AS_OF = datetime(2026, 6, 1, tzinfo=UTC)
WINBACK = {
    "all": [
        {"trait": "country", "eq": "DE"},
        {"event": "order_completed", "within": "365d", "count_gte": 1},
        {"event": "order_completed", "within": "90d", "count_eq": 0},
    ]
}


@pytest.fixture
def shop(engine: Engine, registry: ContractRegistry, m: Any) -> Engine:
    people = {
        "lapsed": ("DE", ["2025-10-01T10:00:00Z"]),
        "active": ("DE", ["2025-10-01T10:00:00Z", "2026-05-20T10:00:00Z"]),
        "ancient": ("DE", ["2024-01-01T10:00:00Z"]),
        "french": ("FR", ["2025-10-01T10:00:00Z"]),
        "loyal": ("DE", ["2025-09-01T10:00:00Z", "2025-11-01T10:00:00Z", "2025-12-01T10:00:00Z"]),
    }
    msgs: list[dict[str, Any]] = []
    for pid, (country, orders) in people.items():
        msgs.append(
            m.msg(
                "identify",
                f"id-{pid}",
                uid=pid,
                traits={"country": country, "vip_score": len(orders)},
            )
        )
        msgs += [m.order(f"{pid}-{i}", pid, 25.0, ts) for i, ts in enumerate(orders)]
        msgs.append(
            m.msg(
                "consent",
                f"c-{pid}",
                uid=pid,
                ts="2026-01-01T00:00:00Z",
                consent=[{"purpose": "marketing", "channel": "email", "granted": pid != "loyal"}],
            )
        )
    ingest(engine, msgs, source="shop", registry=registry)
    return engine


def _members(engine: Engine, spec: dict[str, Any], **kw: Any) -> set[str]:
    """The segment's profiles, selected by its compiled condition as the segment stage does."""
    where = compile_segment(spec, as_of=AS_OF, **kw)
    with engine.connect() as conn:
        return set(conn.execute(select(cols(Profile).id).where(where)).scalars())


def test_winback_segment(shop: Engine):
    assert _members(shop, WINBACK) == {"lapsed", "loyal"}
    assert count_segment(shop, WINBACK, as_of=AS_OF) == 2


def test_counts_traits_consent_and_references(shop: Engine):
    assert _members(shop, {"event": "order_completed", "within": "365d", "count_gte": 3}) == {
        "loyal"
    }
    assert _members(shop, {"trait": "vip_score", "gte": 2}) == {"active", "loyal"}
    consent = {"consent": {"purpose": "marketing", "channel": "email"}}
    assert _members(shop, {"all": [consent, WINBACK]}) == {"lapsed"}
    refs = {"winback": WINBACK}
    assert _members(shop, {"all": [{"segment": "winback"}, {"not": consent}]}, segments=refs) == {
        "loyal"
    }
    assert _members(
        shop,
        {
            "any": [
                {"trait": "country", "eq": "FR"},
                {"event": "order_completed", "where": {"order_id": "o-ancient-0"}, "count_gte": 1},
            ]
        },
    ) == {"french", "ancient"}


def test_snapshots_record_entered_and_exited(shop: Engine, registry: ContractRegistry, m: Any):
    first = snapshot_segment(shop, "winback", WINBACK, as_of=AS_OF)
    assert (first.size, first.entered, first.exited) == (2, 2, 0)
    # A reference without a definition reads the stored membership.
    assert count_segment(shop, {"segment": "winback"}, as_of=AS_OF) == 2
    same = snapshot_segment(shop, "winback", WINBACK, as_of=AS_OF)
    assert (same.size, same.entered, same.exited) == (2, 0, 0)
    ingest(
        shop,
        [
            m.order("back", "lapsed", 9.0, "2026-05-30T10:00:00Z"),
            m.msg("identify", "move", uid="ancient", traits={"country": "DE"}),
        ],
        source="shop",
        registry=registry,
    )
    later = snapshot_segment(shop, "winback", WINBACK, as_of=datetime(2027, 1, 1, tzinfo=UTC))
    # In 2027 "active" has not bought for over 90 days and "loyal"'s last order left the year;
    # "lapsed" bought again in May 2026, so it is still lapsed and stays without a change.
    assert set(segment_changes(shop, later.snapshot_id)) == {
        ("active", "entered"),
        ("loyal", "exited"),
    }
    assert later.size == 2 + later.entered - later.exited


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"all": [{"trait": "country"}]}, "segment.all.0: exactly one operator"),
        ({"event": "order_completed", "within": "soon", "count_gte": 1}, "segment.within:"),
        ({"event": "order_completed", "count_gte": -1}, "segment.count_gte: must be a whole"),
        ({"consent": {"purpose": "spam", "channel": "email"}}, "segment.consent.purpose:"),
        ({"any": [{"segment": "a"}]}, "segment.any.0.segment[a].segment: 'a' refers to itself"),
        ({"colour": "red"}, "segment: a condition needs one of"),
    ],
)
def test_bad_specs_name_the_path(spec: dict[str, Any], message: str):
    with pytest.raises(SegmentError, match=message.replace("[", r"\[").replace("]", r"\]")):
        compile_segment(spec, segments={"a": {"segment": "a"}})
