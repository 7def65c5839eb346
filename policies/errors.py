"""Errors raised by the policies package; all are ValueErrors naming the input and the reason."""

from __future__ import annotations


class PolicyError(ValueError):
    """Base class: the message reads ``"<field>: <reason>"``."""


class PolicyLoadError(PolicyError):
    """A policy file was refused at load; the message names the file, the key and the reason."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        super().__init__(f"{source}: {key}: {reason}")


class PolicyNotFoundError(PolicyError):
    """No policy is loaded for the requested brand and market."""
