"""Errors of the budget allocator."""

from __future__ import annotations


class AllocationInputError(ValueError):
    """Bad input to the allocator; the message starts with the offending input."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class InfeasibleAllocationError(AllocationInputError):
    """No allocation satisfies every constraint; `conflicting` names the constraints at fault."""

    def __init__(self, conflicting: list[str], reason: str) -> None:
        super().__init__("constraints", f"{reason}: {', '.join(conflicting)}")
        self.conflicting = conflicting
