"""Data contracts: a versioned schema per event name, loaded from YAML.

A contract lists the event's properties with a type and optional constraints; the highest
version of each event wins, so a fixed contract is shipped as a new version and the quarantine
is replayed against it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
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


def _type_ok(kind: PropertyType, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    if isinstance(value, str):  # datetime
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return False
        return True
    return False


def _check_rule(rule: PropertyRule, value: Any) -> str | None:
    if not _type_ok(rule.type, value):
        return f"must be {rule.type}, got {type(value).__name__}"
    if rule.enum is not None and value not in rule.enum:
        return f"must be one of {rule.enum}"
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if rule.minimum is not None and numeric and value < rule.minimum:
        return f"must be at least {rule.minimum}"
    if rule.maximum is not None and numeric and value > rule.maximum:
        return f"must be at most {rule.maximum}"
    if (
        rule.max_length is not None
        and isinstance(value, str | list)
        and len(value) > rule.max_length
    ):
        return f"must be at most {rule.max_length} long"
    if (
        rule.pattern is not None
        and isinstance(value, str)
        and not re.fullmatch(rule.pattern, value)
    ):
        return f"must match {rule.pattern}"
    return None


class ContractRegistry:
    """The contracts in force: the highest version of each event name."""

    def __init__(self, contracts: Iterable[Contract]) -> None:
        self._by_event: dict[str, Contract] = {}
        for c in contracts:
            current = self._by_event.get(c.event)
            if current is None or c.version > current.version:
                self._by_event[c.event] = c

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
        contract = self._by_event.get(event)
        if contract is None:
            return Violation(field="event", reason=f"no contract for event '{event}'", version=None)
        rules = contract.properties
        for name, rule in rules.items():
            if name not in properties:
                if rule.required:
                    return Violation(
                        field=f"properties.{name}", reason="is required", version=contract.version
                    )
                continue
            problem = _check_rule(rule, properties[name])
            if problem:
                return Violation(
                    field=f"properties.{name}", reason=problem, version=contract.version
                )
        if not contract.additional_properties:
            for name in properties:
                if name not in rules:
                    return Violation(
                        field=f"properties.{name}",
                        reason="is not in the contract",
                        version=contract.version,
                    )
        return None


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
