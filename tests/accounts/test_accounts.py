"""Accounts: users with one role, argon2 password hashes, personal tokens that stop working
when revoked or when their user is disabled, server-side sessions; and the decision rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from approvals.rules import Decider, DecisionRefused, RequestFacts, check_decision
from liftloop.accounts.sessions import close_session, open_session, session_for
from liftloop.accounts.tables import ApiToken, User
from liftloop.accounts.tokens import issue_token, revoke_tokens, user_for_token
from liftloop.accounts.users import (
    AccountError,
    UserView,
    add_user,
    check_password,
    disable_user,
    user_for_slack,
)

PASSWORD = "correct horse battery staple"


def test_a_password_is_stored_as_an_argon2_hash_and_checked(engine: Engine) -> None:
    add_user(engine, "maya", "manager", password=PASSWORD)
    with engine.connect() as conn:
        stored = conn.execute(select(User.password_hash).where(User.name == "maya")).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert check_password(engine, "maya", PASSWORD) is not None
    assert check_password(engine, "maya", PASSWORD + "!") is None
    assert check_password(engine, "nobody", PASSWORD) is None
    assert check_password(engine, "../etc", PASSWORD) is None


@pytest.mark.parametrize(
    ("name", "role", "extra", "field"),
    [
        ("Maya Smith", "manager", {}, "name"),
        ("maya", "owner", {}, "role"),
        ("maya", "manager", {"email": "not an address"}, "email"),
        ("maya", "approver", {"slack_id": "maya"}, "slack_id"),
        ("maya", "approver", {"groups": ["Bad Group"]}, "groups"),
        ("maya", "manager", {"password": "short"}, "password"),
    ],
)
def test_bad_account_values_are_refused_by_field(
    engine: Engine, name: str, role: str, extra: dict[str, object], field: str
) -> None:
    with pytest.raises(AccountError) as info:
        add_user(engine, name, role, **extra)  # type: ignore[arg-type]
    assert info.value.field == field


def test_names_and_slack_ids_are_unique(engine: Engine) -> None:
    add_user(engine, "lead", "approver", slack_id="U024BE7LH")
    with pytest.raises(AccountError, match="exists already"):
        add_user(engine, "lead", "auditor")
    with pytest.raises(AccountError) as info:
        add_user(engine, "other", "approver", slack_id="U024BE7LH")
    assert info.value.field == "slack_id"
    found = user_for_slack(engine, "U024BE7LH")
    assert found is not None and found.name == "lead" and found.groups == ["approvers"]


def test_tokens_are_stored_as_digests_and_stop_with_revocation_or_disabling(
    engine: Engine,
) -> None:
    add_user(engine, "lead", "approver")
    token = issue_token(engine, "lead")
    with engine.connect() as conn:
        digests = conn.execute(select(ApiToken.digest)).scalars().all()
    assert all(token not in d and token.split("_")[-1] not in d for d in digests)
    found = user_for_token(engine, token)
    assert found is not None and found.name == "lead"
    assert user_for_token(engine, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert user_for_token(engine, "llt_nothing") is None
    assert revoke_tokens(engine, "lead") == 1 and user_for_token(engine, token) is None
    second = issue_token(engine, "lead")
    disable_user(engine, "lead")
    assert user_for_token(engine, second) is None
    with pytest.raises(AccountError):
        issue_token(engine, "lead")


def test_sessions_end_at_logout_expiry_or_disabling(engine: Engine) -> None:
    add_user(engine, "ana", "auditor", password=PASSWORD)
    secret, csrf = open_session(engine, "ana", timedelta(hours=1))
    session = session_for(engine, secret)
    assert session is not None and session.user.name == "ana" and session.csrf_token == csrf
    close_session(engine, secret)
    assert session_for(engine, secret) is None
    expired, _ = open_session(engine, "ana", timedelta(seconds=-1))
    assert session_for(engine, expired) is None
    live, _ = open_session(engine, "ana", timedelta(hours=1))
    disable_user(engine, "ana")
    assert session_for(engine, live) is None


def _user(name: str, role: str = "approver", groups: list[str] | None = None) -> UserView:
    return UserView(name=name, role=role, groups=["approvers"] if groups is None else groups)  # type: ignore[arg-type]


FACTS = RequestFacts(
    started_by="maya",
    group="approvers",
    escalation_group="leads",
    escalated=False,
    deadline_at=datetime.now(UTC) + timedelta(hours=1),
)


@pytest.mark.parametrize(
    ("user", "facts", "approved", "note", "rule"),
    [
        (_user("maya", "manager", []), FACTS, True, "", "approver.role"),
        (_user("ana", "auditor", []), FACTS, True, "", "approver.role"),
        # A manager made approver later still may not decide on what they started.
        (_user("maya"), FACTS, True, "", "approver.four_eyes"),
        (_user("lena", groups=["leads"]), FACTS, True, "", "approver.group"),
        (_user("lead"), FACTS, False, "  ", "rejection.reason"),
        (
            _user("lead"),
            RequestFacts("maya", "approvers", None, False, datetime.now(UTC) - timedelta(1)),
            True,
            "",
            "request.deadline",
        ),
    ],
)
def test_the_rules_refuse_by_name(
    user: UserView, facts: RequestFacts, approved: bool, note: str, rule: str
) -> None:
    with pytest.raises(DecisionRefused) as info:
        check_decision(Decider(user, "api"), facts, approved, note)
    assert info.value.rule == rule


def test_the_rules_let_the_group_and_after_escalation_the_escalation_group_decide() -> None:
    check_decision(Decider(_user("lead"), "web"), FACTS, False, "too generous")
    escalated = RequestFacts("maya", "approvers", "leads", True, FACTS.deadline_at)
    check_decision(Decider(_user("lena", groups=["leads"]), "slack"), escalated, True, "")
