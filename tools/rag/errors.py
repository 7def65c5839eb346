from __future__ import annotations


class KnowledgeError(ValueError):
    """Bad input to the knowledge base; the message starts with the offending field or path."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
