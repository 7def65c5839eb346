"""Who calls the API: a person by their personal token (`llt_…`, `liftloop users token`), or a
machine by a service key (`LIFTLOOP_API_KEYS`). Both travel the same ways (`api_input`); what
each may do is decided per route by role. Service keys act for no person, so they never decide
an approval."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine

from approvals.rules import Decider, DecisionRefused
from liftloop.accounts.tokens import is_personal_token, user_for_token
from liftloop.accounts.users import UserView
from liftloop.api_errors import ApiError
from liftloop.api_input import KEY_FIELD, key_matches, presented_key, refuse

SERVICE = "service"


@dataclass(frozen=True)
class Principal:
    user: UserView | None

    @property
    def name(self) -> str:
        """Who the audit log names: the user, or `service` for a machine's key."""
        return self.user.name if self.user is not None else SERVICE

    @property
    def role(self) -> str:
        return self.user.role if self.user is not None else SERVICE

    def require(self, action: str, *roles: str) -> None:
        """ApiError 403 unless the caller holds one of `roles` (`service` for machine keys)."""
        if self.role not in roles:
            allowed = ", ".join(r for r in roles)
            raise ApiError(
                403, KEY_FIELD, f"{action} needs the role {allowed}; {self.name} is a {self.role}"
            )

    def decider(self, path: str) -> Decider:
        """The caller as an approver; a machine's key is refused (a decision needs a person)."""
        if self.user is None:
            raise ApiError(
                403,
                "approver",
                "a decision needs a person: call with an approver's personal token",
            )
        return Decider(self.user, path)


def principal_for(
    headers: Mapping[str, str], service_keys: Sequence[bytes], engine: Engine
) -> Principal:
    """The caller, or ApiError 401 (no key, an unknown key, a revoked token, a disabled user)."""
    key = presented_key(headers)
    if is_personal_token(key):
        user = user_for_token(engine, key)
        if user is None:
            raise refuse("unknown, revoked or disabled personal token")
        return Principal(user)
    if not key_matches(key, service_keys):
        raise refuse("unknown key")
    return Principal(None)


def current_principal(request: Request) -> Principal:
    """Overridden by `create_app` with `principal_for` over its keys; alone, refuses all."""
    raise refuse("unknown key")


Caller = Annotated[Principal, Depends(current_principal)]


def refused_decision(exc: DecisionRefused) -> ApiError:
    return ApiError(403, exc.field, f"{exc.rule}: {exc.reason}")
