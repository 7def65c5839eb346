"""Securing Temporal's port: liftloop's Temporal client takes a client certificate, key and CA
(mutual TLS), and docker-compose carries the TLS settings of the server and of the client,
publishes Temporal on loopback only, and has no key default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.service import TLSConfig

from liftloop import temporal
from liftloop.settings import Settings
from liftloop.temporal import TemporalTlsError, tls_config

ROOT = Path(__file__).resolve().parents[2]


def _pems(tmp_path: Path) -> dict[str, str]:
    files = {}
    for name in ("cert", "key", "ca"):
        path = tmp_path / f"{name}.pem"
        path.write_bytes(f"-----BEGIN {name.upper()}-----\n".encode())
        files[f"temporal_tls_{name}"] = str(path)
    return files


def test_no_tls_settings_no_tls() -> None:
    assert tls_config(Settings(api_keys=[SecretStr("k" * 20)])) is False


def test_client_certificate_key_and_ca_reach_the_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        temporal_address="temporal:7233", temporal_tls_server_name="temporal", **_pems(tmp_path)
    )
    seen: dict[str, Any] = {}

    async def connect(target: str, **kwargs: Any) -> Any:
        seen.update(kwargs, target=target)
        return None

    monkeypatch.setattr(Client, "connect", connect)
    import asyncio

    asyncio.run(temporal.connect(settings))
    tls = seen["tls"]
    assert isinstance(tls, TLSConfig) and seen["target"] == "temporal:7233"
    assert tls.client_cert == b"-----BEGIN CERT-----\n"
    assert tls.client_private_key == b"-----BEGIN KEY-----\n"
    assert tls.server_root_ca_cert == b"-----BEGIN CA-----\n"
    assert tls.domain == "temporal"


def test_a_certificate_without_its_key_or_an_unreadable_file_names_the_setting(
    tmp_path: Path,
) -> None:
    pems = _pems(tmp_path)
    with pytest.raises(TemporalTlsError) as info:
        tls_config(Settings(temporal_tls_cert=pems["temporal_tls_cert"]))
    assert info.value.field == "LIFTLOOP_TEMPORAL_TLS_KEY"
    with pytest.raises(TemporalTlsError) as info:
        tls_config(Settings(temporal_tls_ca=str(tmp_path / "missing.pem")))
    assert info.value.field == "LIFTLOOP_TEMPORAL_TLS_CA"
    # A CA alone: TLS with the server checked against it (no client certificate).
    only_ca = tls_config(Settings(temporal_tls_ca=pems["temporal_tls_ca"]))
    assert isinstance(only_ca, TLSConfig) and only_ca.client_cert is None


def test_compose_secures_temporal_and_has_no_key_default() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    services = compose["services"]
    assert services["temporal"]["ports"] == ["127.0.0.1:7233:7233"]
    for name in ("temporal-ui", "weaviate", "jaeger", "mailpit"):
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"]), name
    for name in ("worker", "api"):
        env = services[name]["environment"]
        assert env["LIFTLOOP_API_KEYS"] == "${LIFTLOOP_API_KEYS:-[]}"
        assert env["LIFTLOOP_KNOWLEDGE_SIGNING_KEY"] == "${LIFTLOOP_KNOWLEDGE_SIGNING_KEY:-}"
        assert env["LIFTLOOP_APPROVAL_SIGNING_KEY"] == "${LIFTLOOP_APPROVAL_SIGNING_KEY:-}"
    live = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "change-me" not in live and "dev-key" not in live
    # The mTLS settings, to turn on: the server's, and liftloop's client (worker and API).
    for setting in (
        "TEMPORAL_TLS_REQUIRE_CLIENT_AUTH",
        "TEMPORAL_TLS_CLIENT1_CA_CERT",
        "LIFTLOOP_TEMPORAL_TLS_CERT",
        "LIFTLOOP_TEMPORAL_TLS_KEY",
        "LIFTLOOP_TEMPORAL_TLS_CA",
    ):
        assert f"# {setting}:" in text, setting
