from __future__ import annotations


class ContentError(ValueError):
    """Bad input to prompt templates or generation; the message starts with the offending field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
