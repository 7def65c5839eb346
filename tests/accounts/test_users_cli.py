"""`liftloop users …` as an administrator runs it, and the CLI's decisions as the user of
LIFTLOOP_TOKEN: no token, an unknown one, or a user who is not an approver is refused before
anything reaches a campaign."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from liftloop.accounts.users import check_password
from liftloop.cli import app
from liftloop.db import engine_for
from liftloop.loop.tables import ApprovalRequest
from liftloop.settings import get_settings

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LIFTLOOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("LIFTLOOP_TOKEN", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env, prog_name="liftloop")
    return result.exit_code, result.stdout, result.stderr


def test_add_token_list_disable(data_dir: Path) -> None:
    secret = data_dir / "pw"
    secret.write_text("a long enough passphrase\n")
    code, out, err = _run(
        "users",
        "add",
        "lead",
        "--role",
        "approver",
        "--slack-id",
        "U024BE7LH",
        "--password-file",
        str(secret),
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["groups"] == ["approvers"] and "passphrase" not in out
    engine = engine_for(get_settings().cdp_url)
    assert check_password(engine, "lead", "a long enough passphrase") is not None

    code, _, err = _run("users", "add", "lead", "--role", "manager")
    assert code == 2 and "name: a user lead exists already" in err
    code, _, err = _run("users", "add", "x", "--role", "root")
    assert code == 2 and "role:" in err

    code, token, err = _run("users", "token", "lead")
    assert code == 0 and token.strip().startswith("llt_"), err
    code, out, _ = _run("users", "list", "--json")
    assert [(u["name"], u["role"], u["has_password"]) for u in json.loads(out)["users"]] == [
        ("lead", "approver", True)
    ]
    code, out, _ = _run("users", "disable", "lead")
    assert code == 0 and "1 token(s) revoked" in out
    code, _, err = _run("approvals", "approve", "apr-x", env={"LIFTLOOP_TOKEN": token.strip()})
    assert code != 0 and "LIFTLOOP_TOKEN" in err


def test_a_cli_decision_needs_an_approvers_token(data_dir: Path) -> None:
    code, _, err = _run("approvals", "approve", "apr-x")
    assert code == 2 and "LIFTLOOP_TOKEN" in err
    code, _, err = _run("approvals", "approve", "apr-x", env={"LIFTLOOP_TOKEN": "llt_no_such"})
    assert code == 2 and "unknown" in err
    with engine_for(get_settings().cdp_url).begin() as conn:
        conn.execute(
            insert(ApprovalRequest).values(
                id="apr-waiting",
                campaign_id="c",
                workflow_id="campaign-c",
                cycle=1,
                variant_id="v",
                reasons=[],
                status="pending",
                created_at=datetime.now(UTC),
            )
        )
    _run("users", "add", "maya", "--role", "manager")
    _, token, _ = _run("users", "token", "maya")
    code, _, err = _run(
        "approvals", "approve", "apr-waiting", env={"LIFTLOOP_TOKEN": token.strip()}
    )
    assert code == 2 and "approver.role" in err, err
