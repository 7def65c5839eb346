"""Campaign specs: what a campaign manager writes, validated before anything starts.

A spec that validates is one the worker can run: every number is finite and within bounds
(durations 0 … five years, money, percentages and counts bounded), every string is storable
text (no NUL, no lone surrogate), the free-form parts (the audience segment) are plain JSON
values, and the whole spec nests at most `MAX_SPEC_DEPTH` levels. The checks sit on the models
themselves, so a spec from the API, a YAML file or a decoded payload is held to the same rules.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tools.cdp.errors import CdpError
from tools.cdp.messages import Purpose
from tools.cdp.segments import compile_segment
from tools.durations import parse_duration

# Levels of mappings and lists in a whole spec; a segment condition costs one or two levels
# (`not` one, `all`/`any` two), so this leaves room for a dozen nested conditions.
MAX_SPEC_DEPTH = 32
# Integers anywhere in a spec fit a 64-bit column (SQLite and PostgreSQL both refuse larger).
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
UNSTORABLE_TEXT = "contains a NUL character or invalid unicode"
CAMPAIGN_ID_PATTERN = r"^[a-z0-9][a-z0-9_\-]{0,79}$"

Channel = Literal["email", "push", "sms"]
Metric = Literal["conversion", "contribution_margin"]


class SpecError(ValueError):
    """A campaign spec that cannot start, with the field and the reason."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{field}: {reason}" for field, reason in problems))


def text_problem(text: str) -> str | None:
    """Why no database (and no JSON encoder) can store `text`, or None: a NUL or a lone
    surrogate. The same rule and wording as the CDP's ingestion."""
    if "\x00" in text:
        return UNSTORABLE_TEXT
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return UNSTORABLE_TEXT
    return None


def input_problem(data: Any, max_depth: int = MAX_SPEC_DEPTH) -> tuple[str, str] | None:
    """The first (path, reason) that makes `data` unfit to be a spec's input, or None.

    Walks without recursion, so no nesting can exhaust the stack: mappings with string keys,
    lists, storable strings, finite floats, 64-bit integers, booleans and null; at most
    `max_depth` levels of mappings and lists."""
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, dict | list | tuple) and depth > max_depth:
            return path or "spec", f"nests deeper than {max_depth} levels"
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    return path or "spec", f"keys must be strings, not {type(key).__name__}"
                sub = f"{path}.{key}" if path else key
                bad = text_problem(key)
                if bad:
                    return sub, f"the key {bad}"
                stack.append((item, sub, depth + 1))
        elif isinstance(value, list | tuple):
            stack.extend(
                (item, f"{path}.{i}" if path else str(i), depth + 1) for i, item in enumerate(value)
            )
        elif isinstance(value, str):
            bad = text_problem(value)
            if bad:
                return path or "spec", bad
        elif value is None or isinstance(value, bool | BaseModel):
            continue  # a model instance was validated when it was made
        elif isinstance(value, int):
            if not _INT_MIN <= value <= _INT_MAX:
                return path or "spec", "is out of range (at most a 64-bit integer)"
        elif isinstance(value, float):
            if not math.isfinite(value):
                return path or "spec", "must be a finite number"
        else:
            return (
                path or "spec",
                f"must be a string, number, boolean, null, list or mapping, not "
                f"{type(value).__name__}",
            )
    return None


class _Model(BaseModel):
    # No NaN or infinity in any float field: JSON cannot carry them (they would reach the
    # worker as null), and no bound means anything for them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Goal(_Model):
    kpi: Metric = "contribution_margin"
    attribution_window: float = Field(
        default=7 * 86400.0, gt=0, description="seconds (or '7d'), at most five years"
    )

    @field_validator("attribution_window", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        return parse_duration(v)


class Audience(_Model):
    # A declarative filter over profile traits: {"all": [{"trait": "country", "eq": "DE"}, ...]}.
    segment: dict[str, Any] = Field(default_factory=dict)
    consent: dict[Literal["purpose"], Purpose] = Field(
        default_factory=lambda: {"purpose": "marketing"}  # type: ignore[arg-type]
    )

    @property
    def purpose(self) -> Purpose:
        return self.consent.get("purpose", "marketing")


class Offer(_Model):
    id: str = Field(pattern=r"^[a-z0-9_\-]{1,80}$")
    discount_pct: float = Field(default=0.0, ge=0, lt=100)
    margin_pct: float = Field(default=40.0, gt=0, le=100)


class FrequencyCap(_Model):
    per_day: int | None = Field(default=None, ge=0, le=1_000)
    per_week: int | None = Field(default=None, ge=0, le=7_000)


class QuietHours(_Model):
    from_: str = Field(alias="from", pattern=r"^[0-9]{2}:[0-9]{2}$")
    to: str = Field(pattern=r"^[0-9]{2}:[0-9]{2}$")
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )


class Limits(_Model):
    max_discount_pct: float = Field(default=15.0, ge=0, le=100)
    frequency_cap: FrequencyCap = FrequencyCap()
    quiet_hours: QuietHours | None = None


class Experiment(_Model):
    holdout_pct: float = Field(default=10.0, gt=0, lt=100)
    # uniform: every allowed arm alike; thompson: Beta-Bernoulli bandit on conversion per
    # segment; nba: next best action by expected incremental margin (uplift model trained on
    # this campaign's own randomised history) with Thompson exploration, doing nothing included.
    policy: Literal["uniform", "thompson", "nba"] = "uniform"
    min_arm_share: float = Field(default=0.01, ge=0, le=0.5)
    # nba: prior spread (currency per person) of the residual posterior that drives exploration
    # before the uplift model has data; wide enough to try every action in the first cycle.
    exploration_sd: float = Field(default=1.0, gt=0, le=1e6)
    primary_metric: Metric = "contribution_margin"
    # The salt keeps assignments stable across cycles and independent between campaigns.
    salt: str = Field(default="", max_length=200)


class Content(_Model):
    # "template": the versioned built-in templates; "copywriter": the copywriter agent writes
    # one variant per arm from retrieved brand knowledge, with citations.
    generator: Literal["template", "copywriter"] = "template"
    template: str = Field(default="offer_email", max_length=200)
    language: Literal["en", "de"] = "en"
    # The brand and market whose policy file guards the copy and the sends.
    market: str = Field(default="US", pattern=r"^[A-Z]{2}$")
    brand: str = Field(default="default", max_length=200)
    brief: str = Field(default="", max_length=20_000)
    # What the copywriter's model calls may cost this campaign in all (EUR, the ledger's
    # prices). Once spent, no new copy is generated: each arm keeps its last copy (the built-in
    # template where it has none) and the campaign goes on. None: no limit.
    model_budget_eur: float | None = Field(default=None, ge=0, le=1e9)


class Cadence(_Model):
    every: float = Field(
        default=86400.0, ge=0, description="seconds (or '1d') between cycles, at most five years"
    )
    max_cycles: int = Field(default=14, ge=1, le=10_000)

    @field_validator("every", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        return parse_duration(v)


class StopRule(_Model):
    ship_when: Literal["lift_ci_low_above_zero", "never"] = "lift_ci_low_above_zero"
    stop_when_harmful: bool = True
    min_cycles: int = Field(default=3, ge=1, le=10_000)


class Simulation(_Model):
    """Demo only: the response simulator plays the customers after each send."""

    enabled: bool = False
    seed: int = Field(default=7, ge=0, le=2**63 - 1)


# What one message may cost (currency): a bound far above any real price.
Cost = Annotated[float, Field(ge=0, le=1_000)]


def _default_channel_cost() -> dict[Channel, float]:
    return {"email": 0.002, "push": 0.001, "sms": 0.05}


class CampaignSpec(_Model):
    id: str = Field(pattern=CAMPAIGN_ID_PATTERN)
    name: str = Field(default="", max_length=200)
    goal: Goal = Goal()
    audience: Audience = Audience()
    channels: list[Channel] = Field(min_length=1)
    offers: list[Offer] = Field(min_length=1, max_length=100)
    limits: Limits = Limits()
    experiment: Experiment = Experiment()
    content: Content = Content()
    cadence: Cadence = Cadence()
    stop: StopRule = StopRule()
    simulation: Simulation = Simulation()
    # What one message costs to send, per channel (currency); contribution margin pays it.
    channel_cost: dict[Channel, Cost] = Field(default_factory=_default_channel_cost)

    @model_validator(mode="before")
    @classmethod
    def _plain_data(cls, data: Any) -> Any:
        problem = input_problem(data)
        if problem:
            raise ValueError(f"{problem[0]}: {problem[1]}")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> CampaignSpec:
        ids = [o.id for o in self.offers]
        if len(set(ids)) != len(ids):
            raise ValueError("offers: offer ids must be unique")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels: each channel may appear once")
        if self.stop.min_cycles > self.cadence.max_cycles:
            raise ValueError("stop.min_cycles: larger than cadence.max_cycles")
        return self

    def cost_of(self, channel: str) -> float:
        return float(self.channel_cost.get(channel, 0.0))  # type: ignore[call-overload]

    @property
    def arms(self) -> list[tuple[str, Offer, Channel]]:
        """Every (offer, channel) pair is an arm, named 'offer@channel'."""
        return [(f"{o.id}@{c}", o, c) for o in self.offers for c in self.channels]

    @property
    def salt(self) -> str:
        return self.experiment.salt or self.id


def _problem(err: Any) -> tuple[str, str]:
    field = ".".join(str(p) for p in err["loc"])
    reason = str(err["msg"]).removeprefix("Value error, ")
    if not field and ": " in reason:
        # A model validator names the field in its message: "offers: offer ids must be unique".
        field, _, reason = reason.partition(": ")
    return field or "spec", reason


def parse_spec(data: Any) -> CampaignSpec:
    """A spec from parsed JSON or YAML, or SpecError naming each bad field and why."""
    problem = input_problem(data)
    if problem:
        raise SpecError([problem])
    try:
        spec = CampaignSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError([_problem(err) for err in exc.errors(include_url=False)]) from None
    try:
        # Compiled once here so that a bad name or nesting is refused before anything starts.
        compile_segment(spec.audience.segment, "audience.segment")
    except CdpError as exc:
        raise SpecError([(exc.field, exc.reason)]) from None
    return spec


def load_spec(path: str | Path) -> CampaignSpec:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError([(str(p.name), "file not found")]) from None
    except yaml.YAMLError as exc:
        raise SpecError([(str(p.name), f"not valid YAML: {exc}")]) from None
    except UnicodeDecodeError as exc:
        raise SpecError([(str(p.name), f"not valid UTF-8 (at byte {exc.start})")]) from None
    except RecursionError:
        raise SpecError([(str(p.name), f"nests deeper than {MAX_SPEC_DEPTH} levels")]) from None
    if not isinstance(data, dict):
        raise SpecError([(str(p.name), "the spec must be a mapping")])
    return parse_spec(data)
