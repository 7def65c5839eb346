"""A campaign's model costs through the API and the CLI, read from the ledger."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from liftloop.api import create_app
from liftloop.cli import app as cli_app
from liftloop.db import make_engine
from liftloop.settings import Settings, get_settings
from tests.api.helpers import API_KEY, KEY, assert_error_shape
from tools.content.ledger import SqlCostLedger, UsageEntry


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("LIFTLOOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("LIFTLOOP_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield Settings(data_dir=tmp_path / "data", api_keys=[SecretStr(API_KEY)])
    get_settings.cache_clear()


def _book(settings: Settings) -> None:
    ledger = SqlCostLedger(make_engine(settings.cdp_url))
    for cycle, cached in ((1, False), (1, False), (2, True)):
        ledger.record(
            UsageEntry(
                campaign_id="spring",
                cycle=cycle,
                channel="email",
                template_id="winback_email",
                model="gpt-4o",
                input_tokens=0 if cached else 1000,
                output_tokens=0 if cached else 200,
                requests=0 if cached else 1,
                cost_eur=0.0 if cached else 0.00414,
                cached=cached,
            )
        )
    ledger.record(UsageEntry(campaign_id="spring", job="plan", model="gpt-4o", requests=3))


async def test_costs_per_cycle_job_and_model(settings: Settings) -> None:
    _book(settings)
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        found = await http.get("/v1/campaigns/spring/costs", headers=KEY)
        missing = await http.get("/v1/campaigns/autumn/costs", headers=KEY)
        bad = await http.get("/v1/campaigns/%00x/costs", headers=KEY)
        anonymous = await http.get("/v1/campaigns/spring/costs")
    assert found.status_code == 200
    body = found.json()
    assert body["requests"] == 5 and body["input_tokens"] == 2000
    assert body["cost_eur"] == pytest.approx(0.00828)
    lines = {(line["cycle"], line["job"]): line for line in body["lines"]}
    assert (
        lines[(1, "generate")]["requests"] == 2 and lines[(1, "generate")]["cached_responses"] == 0
    )
    assert (
        lines[(2, "generate")]["cached_responses"] == 1 and lines[(2, "generate")]["requests"] == 0
    )
    assert lines[(None, "plan")]["requests"] == 3
    assert missing.status_code == 404 and bad.status_code == 404 and anonymous.status_code == 401
    assert_error_shape(missing)


def test_the_cli_shows_the_costs(settings: Settings) -> None:
    _book(settings)
    runner = CliRunner()
    result = runner.invoke(cli_app, ["campaign", "costs", "spring", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["requests"] == 5
    table = runner.invoke(cli_app, ["campaign", "costs", "spring"])
    assert "generate" in table.output and "plan" in table.output and "0.0083" in table.output
    none = runner.invoke(cli_app, ["campaign", "costs", "autumn"])
    assert none.exit_code != 0 and "no model usage recorded" in none.output
