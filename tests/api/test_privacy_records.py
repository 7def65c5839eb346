"""The records of processing follow the configuration: recipients outside this machine appear
as transfers, and no credential of a configured service is ever printed."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from liftloop.api import create_app
from liftloop.privacy_records import dpia_draft, records_of_processing
from liftloop.settings import Settings
from tests.api.helpers import API_KEY, KEY
from tools.cdp.contracts import ContractRegistry


def _settings(tmp_path, **changes) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(data_dir=tmp_path / "data", api_keys=[SecretStr(API_KEY)], **changes)


def test_the_embedded_default_transfers_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    records = records_of_processing(_settings(tmp_path), ContractRegistry.load())
    assert records.transfers == []
    events = next(c for c in records.categories if c.name == "behavioural events")
    assert "order_completed.shipping_address" in " ".join(events.fields)  # from the contracts
    assert events.retention.startswith("730 days")
    assert "No recipient outside this machine" in dpia_draft(records)


def test_configured_services_appear_without_their_secrets(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = _settings(
        tmp_path,
        smtp_host="smtp.relay.example",
        database_url="postgresql+psycopg://crm:hunter2@db.internal.example:5432/cdp",
        llm_model="openai:gpt-4o-mini",
        otlp_endpoint="https://otel.example:4318",
        retention_events_days=365,
    )
    records = records_of_processing(settings, ContractRegistry.load())
    text = records.model_dump_json() + dpia_draft(records)
    assert "hunter2" not in text and "crm:" not in text
    hosts = " ".join(records.transfers)
    for host in ("smtp.relay.example", "db.internal.example", "openai:gpt-4o-mini", "otel.example"):
        assert host in hosts
    events = next(c for c in records.categories if c.name == "behavioural events")
    assert events.retention.startswith("365 days")


@pytest.mark.asyncio
async def test_the_api_serves_the_records(tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = create_app(_settings(tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        found = await http.get("/v1/privacy/records", headers=KEY)
        assert found.status_code == 200
        assert {p["name"] for p in found.json()["purposes"]} >= {"marketing messages"}
        refused = await http.get("/v1/privacy/records")
        assert refused.status_code == 401
        unknown = await http.get("/v1/messages/nope/provenance", headers=KEY)
        assert unknown.status_code == 404 and unknown.json()["errors"][0]["field"] == "message_id"
