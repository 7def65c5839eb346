"""The one error type of the models package."""

from __future__ import annotations


class ModelInputError(ValueError):
    """Bad input to a model function; the message starts with the offending input."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
