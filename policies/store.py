"""Keeps the policy in force per brand and market; a refused reload leaves the previous one."""

from __future__ import annotations

import threading
from pathlib import Path

from policies.errors import PolicyNotFoundError
from policies.policy import Policy, bundled_policies, load_policy, parse_policy


class PolicyStore:
    def __init__(self, policies: list[Policy] | None = None) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[tuple[str, str], Policy] = {}
        for policy in policies or []:
            self._by_key[policy.key] = policy

    @classmethod
    def bundled(cls) -> PolicyStore:
        return cls(bundled_policies())

    def load(self, path: str | Path) -> Policy:
        """Load a file and put it in force; on PolicyLoadError the previous version stays."""
        return self._install(load_policy(path))

    def load_text(self, text: str, source: str) -> Policy:
        return self._install(parse_policy(text, source))

    def _install(self, policy: Policy) -> Policy:
        with self._lock:
            self._by_key[policy.key] = policy
        return policy

    def get(self, market: str, brand: str = "default") -> Policy:
        key = (brand.lower(), market.upper())
        with self._lock:
            policy = self._by_key.get(key)
        if policy is None:
            raise PolicyNotFoundError(
                f"market: no policy loaded for brand {brand!r}, market {market!r}"
            )
        return policy

    def versions(self) -> dict[str, str]:
        with self._lock:
            return {f"{b}/{m}": p.version for (b, m), p in sorted(self._by_key.items())}
