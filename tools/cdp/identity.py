"""Identity resolution: a union-find over identifiers with a deterministic canonical id.

Identifiers are (kind, value) pairs: user_id, anonymous_id, email, phone, device_id. Everything
one message names belongs to one person. Implicit links (a shared email, phone or device) never
join two different user ids — a family sharing an address stays two people; an explicit `alias`
call does. The canonical id of a person is their earliest known user id, else the smallest
anonymous id, so the same history always resolves to the same id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from tools.cdp.addresses import AddressError, email_address, phone_number

Ident = tuple[str, str]
KINDS = ("user_id", "anonymous_id", "email", "phone", "device_id")


def normalise(kind: str, value: str) -> str:
    """The stored form of an identifier, to look one up: an e-mail address as ingestion stores
    it (normalised, then lower-cased whole), a phone in E.164. Ingestion refuses addresses that
    do not normalise (tools/cdp/addresses.py); a lookup of such text falls back to the plain
    forms earlier versions stored (lower-cased; digits with the leading +)."""
    value = value.strip()
    if kind == "email":
        try:
            return email_address(value).lower()
        except AddressError:
            return value.lower()
    if kind == "phone":
        try:
            return phone_number(value)
        except AddressError:
            digits = "".join(ch for ch in value if ch.isdigit())
            return ("+" + digits) if value.startswith("+") else digits
    return value


@dataclass
class UnionFind:
    """Union-find with path halving; each root knows its component's user ids."""

    parent: dict[Ident, Ident] = field(default_factory=dict)
    user_ids: dict[Ident, set[str]] = field(default_factory=dict)

    def add(self, node: Ident) -> None:
        if node not in self.parent:
            self.parent[node] = node
            self.user_ids[node] = {node[1]} if node[0] == "user_id" else set()

    def find(self, node: Ident) -> Ident:
        self.add(node)
        while self.parent[node] != node:
            self.parent[node] = self.parent[self.parent[node]]
            node = self.parent[node]
        return node

    def union(self, a: Ident, b: Ident, *, force: bool = False) -> bool:
        """Join a and b; without force, refuse when both already hold different user ids."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        ua, ub = self.user_ids[ra], self.user_ids[rb]
        if not force and ua and ub and ua != ub:
            return False
        if rb < ra:  # deterministic root, independent of call order
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.user_ids[ra] = ua | ub
        return True

    def components(self) -> dict[Ident, list[Ident]]:
        groups: dict[Ident, list[Ident]] = {}
        for node in self.parent:
            groups.setdefault(self.find(node), []).append(node)
        return groups


def canonical_id(members: Iterable[Ident], first_seen: dict[Ident, datetime]) -> str | None:
    """Earliest user id (ties by value), else the smallest anonymous id, else None."""
    nodes = list(members)
    users = [n for n in nodes if n[0] == "user_id"]
    if users:
        return min(users, key=lambda n: (first_seen[n], n[1]))[1]
    anons = [n[1] for n in nodes if n[0] == "anonymous_id"]
    return min(anons) if anons else None
