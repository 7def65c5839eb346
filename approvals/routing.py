"""Which approver group answers a request, and where Slack shows it: the first route whose
market and rule match wins; after the escalation time a second group may decide too."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

GROUP = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# A Slack channel id (C…, G…) or name (#name).
CHANNEL = r"^(#[a-z0-9][a-z0-9._-]{0,79}|[CG][A-Z0-9]{2,20})$"


class ApprovalRoute(BaseModel):
    """`market` (e.g. "DE") and `rule` (a rule id or glob, e.g. "discount.*") narrow the route;
    left out they match everything."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    market: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    rule: str | None = Field(default=None, min_length=1, max_length=200)
    group: str = Field(default="approvers", pattern=GROUP)
    slack_channel: str | None = Field(default=None, pattern=CHANNEL)


class Route(BaseModel):
    group: str
    slack_channel: str | None


def route_for(
    routes: Sequence[ApprovalRoute],
    market: str,
    rule_ids: Sequence[str],
    *,
    default_channel: str | None,
) -> Route:
    for route in routes:
        if route.market is not None and route.market != market:
            continue
        if route.rule is not None and not any(
            fnmatch.fnmatchcase(rule, route.rule) for rule in rule_ids
        ):
            continue
        return Route(group=route.group, slack_channel=route.slack_channel or default_channel)
    return Route(group="approvers", slack_channel=default_channel)
