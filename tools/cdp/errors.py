"""Errors of the CDP: every one names the field or input and the reason."""

from __future__ import annotations


class CdpError(ValueError):
    """Bad input to a CDP tool, as `"<field>: <reason>"`."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class MessageError(CdpError):
    """A message whose envelope cannot be read (not a contract violation)."""


class ContractError(CdpError):
    """A contract file that cannot be loaded."""


class UnknownIdentityError(CdpError):
    """An id that no profile or identity knows."""
