"""Data contracts: a versioned schema per event name, loaded from YAML.

A contract lists the event's properties with a type and optional constraints; the highest
version of each event wins, so a fixed contract is shipped as a new version and the quarantine
is replayed against it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tools.cdp.errors import ContractError

SHIPPED_DIR = Path(__file__).resolve().parent / "contracts"
PropertyType = Literal["string", "number", "integer", "boolean", "array", "object", "datetime"]


class PropertyRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: PropertyType
    required: bool = False
    enum: list[str | int | float | bool] | None = None
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None
    max_length: int | None = Field(default=None, ge=1)
    # Personal data: dropped from events when the person is erased.
    pii: bool = False


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    version: int = Field(ge=1)
    description: str = ""
    # The channel an engagement event belongs to, for engagement features.
    channel: Literal["email", "sms", "push", "ads", "web"] | None = None
    engagement: bool = False
    additional_properties: bool = True
    properties: dict[str, PropertyRule] = Field(default_factory=dict)

    @cached_property
    def pii_fields(self) -> frozenset[str]:
        return frozenset(k for k, rule in self.properties.items() if rule.pii)


class Violation(BaseModel):
    model_config = ConfigDict(frozen=True)

    field: str
    reason: str
    version: int | None


def _is_datetime_text(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": _is_integer,
    "number": _is_number,
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "datetime": _is_datetime_text,
}


def _rule_check(rule: PropertyRule) -> Callable[[Any], str | None]:
    """The check of one rule as a function of the value, built once per contract: what a rule
    does not constrain costs nothing per event. The first failing check names the reason."""
    type_ok, kind = _TYPE_CHECKS[rule.type], rule.type
    enum, low, high, longest = rule.enum, rule.minimum, rule.maximum, rule.max_length
    match = None if rule.pattern is None else re.compile(rule.pattern).fullmatch
    plain = enum is None and low is None and high is None and longest is None and match is None

    def check(value: Any) -> str | None:
        if not type_ok(value):
            return f"must be {kind}, got {type(value).__name__}"
        if plain:
            return None
        if enum is not None and value not in enum:
            return f"must be one of {enum}"
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if low is not None and numeric and value < low:
            return f"must be at least {low}"
        if high is not None and numeric and value > high:
            return f"must be at most {high}"
        if longest is not None and isinstance(value, str | list) and len(value) > longest:
            return f"must be at most {longest} long"
        if match is not None and isinstance(value, str) and not match(value):
            return f"must match {rule.pattern}"
        return None

    return check


Check = Callable[[Mapping[str, Any]], Violation | None]


def _compile(contract: Contract) -> Check:
    """The contract as one function of an event's properties (see ContractRegistry.check)."""
    version = contract.version
    rules = [(name, rule.required, _rule_check(rule)) for name, rule in contract.properties.items()]
    closed = None if contract.additional_properties else frozenset(contract.properties)

    def check(properties: Mapping[str, Any]) -> Violation | None:
        for name, required, rule_check in rules:
            if name not in properties:
                if required:
                    return Violation(
                        field=f"properties.{name}", reason="is required", version=version
                    )
                continue
            problem = rule_check(properties[name])
            if problem:
                return Violation(field=f"properties.{name}", reason=problem, version=version)
        if closed is not None:
            for name in properties:
                if name not in closed:
                    return Violation(
                        field=f"properties.{name}",
                        reason="is not in the contract",
                        version=version,
                    )
        return None

    return check


class ContractRegistry:
    """The contracts in force: the highest version of each event name."""

    def __init__(self, contracts: Iterable[Contract]) -> None:
        self._by_event: dict[str, Contract] = {}
        for c in contracts:
            current = self._by_event.get(c.event)
            if current is None or c.version > current.version:
                self._by_event[c.event] = c
        # Compiled once: ingestion checks every event against its contract.
        self._checks = {event: _compile(c) for event, c in self._by_event.items()}

    @classmethod
    def load(cls, *extra_dirs: Path) -> ContractRegistry:
        """The shipped contracts plus any in `extra_dirs` (a higher version replaces)."""
        contracts: list[Contract] = []
        for directory in (SHIPPED_DIR, *extra_dirs):
            if not directory.is_dir():
                raise ContractError(str(directory), "is not a directory of contract files")
            for path in sorted(directory.glob("*.y*ml")):
                contracts.append(load_contract(path))
        return cls(contracts)

    @property
    def contracts(self) -> Mapping[str, Contract]:
        return self._by_event

    def get(self, event: str) -> Contract | None:
        return self._by_event.get(event)

    def check(self, event: str, properties: Mapping[str, Any]) -> Violation | None:
        """The first violation of the event's contract, or None when it conforms."""
        check = self._checks.get(event)
        if check is None:
            return Violation(field="event", reason=f"no contract for event '{event}'", version=None)
        return check(properties)


def load_contract(path: Path) -> Contract:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        contract = Contract.model_validate(data)
    except yaml.YAMLError as exc:
        raise ContractError(path.name, f"is not valid YAML ({exc})") from None
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"]) or "contract"
        raise ContractError(f"{path.name}:{field}", err["msg"]) from None
    for name, rule in contract.properties.items():
        if rule.pattern is not None:
            try:
                re.compile(rule.pattern)
            except re.error as exc:
                raise ContractError(f"{path.name}:properties.{name}.pattern", str(exc)) from None
    return contract
