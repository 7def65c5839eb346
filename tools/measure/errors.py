"""The one error type of the measurement package."""

from __future__ import annotations


class MeasureInputError(ValueError):
    """Bad input to a measurement function; the message starts with the offending input."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
