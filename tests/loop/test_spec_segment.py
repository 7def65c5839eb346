"""A campaign spec's segment is compiled when the spec is read: a name that would be syntax in a
JSON path or in SQL is refused with its path before anything starts."""

from __future__ import annotations

import pytest

from liftloop.loop.spec import SpecError, parse_spec

BASE = {"id": "names", "channels": ["email"], "offers": [{"id": "a"}]}


@pytest.mark.parametrize("name", ["a.b", "$[0]", "x'; DROP TABLE profiles; --", '"quoted"'])
def test_a_trait_name_that_is_syntax_is_refused_with_its_path(name: str) -> None:
    segment = {"all": [{"trait": "country", "eq": "DE"}, {"trait": name, "eq": 1}]}
    with pytest.raises(SpecError) as refused:
        parse_spec({**BASE, "audience": {"segment": segment}})
    ((field, reason),) = refused.value.problems
    assert field == "audience.segment.all.1.trait"
    assert "not a valid trait name" in reason


def test_a_plain_trait_name_is_accepted() -> None:
    spec = parse_spec({**BASE, "audience": {"segment": {"trait": "loyalty_tier", "eq": "gold"}}})
    assert spec.audience.segment == {"trait": "loyalty_tier", "eq": "gold"}
