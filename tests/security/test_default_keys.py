"""Finding: the API accepted `dev-key` out of the box, and the knowledge signing key had a
public default, so a forged snapshot verified. Now there is no usable default: keys are
generated per installation, and the public values are refused unless dev mode is set."""

from __future__ import annotations

import logging
import os
import stat
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from liftloop import credentials
from liftloop.api import create_app
from liftloop.credentials import InsecureSettingError, ensure_credentials
from liftloop.knowledge import open_knowledge
from liftloop.settings import Settings
from tools.rag.snapshot import sign_snapshot

OLD_PUBLIC_SIGNING_KEY = b"liftloop-dev-signing-key"
TRACK = b'{"messageId": "m1", "userId": "u1", "event": "email_opened"}'


def _settings(tmp_path: Path, **values: object) -> Settings:
    # Unreachable Temporal: these tests never need it.
    return Settings(data_dir=tmp_path / "data", temporal_address="127.0.0.1:1", **values)  # type: ignore[arg-type]


def test_settings_have_no_usable_default_key(clean_env: Path) -> None:
    s = Settings()
    assert s.api_keys == []
    assert s.knowledge_signing_key.get_secret_value() == ""
    assert s.approval_signing_key.get_secret_value() == ""
    assert s.dev_mode is False


def test_the_api_answers_401_to_dev_key_and_200_to_the_generated_key(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with TestClient(create_app(settings)) as client:
        for headers in (
            {"X-API-Key": "dev-key"},
            {"Authorization": "Bearer dev-key"},
            {"X-API-Key": "change-me"},
        ):
            assert client.get("/v1/approvals", headers=headers).status_code == 401
            r = client.post("/v1/track", content=TRACK, headers=headers)
            assert r.status_code == 401, r.text
        generated = (settings.secrets_dir / "api-key").read_text().strip()
        assert len(generated) >= 40 and generated not in credentials.PUBLIC_VALUES
        assert client.get("/v1/approvals", headers={"X-API-Key": generated}).status_code == 200
    # Reused afterwards: a second start accepts the same key, and only it.
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/approvals", headers={"X-API-Key": generated}).status_code == 200


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        ({"api_keys": [SecretStr("dev-key")]}, "LIFTLOOP_API_KEYS"),
        ({"api_keys": [SecretStr("mine-and-long"), SecretStr("change-me")]}, "LIFTLOOP_API_KEYS"),
        (
            {"knowledge_signing_key": SecretStr("liftloop-dev-signing-key")},
            "LIFTLOOP_KNOWLEDGE_SIGNING_KEY",
        ),
        ({"knowledge_signing_key": SecretStr("change-me")}, "LIFTLOOP_KNOWLEDGE_SIGNING_KEY"),
        ({"approval_signing_key": SecretStr("dev-key")}, "LIFTLOOP_APPROVAL_SIGNING_KEY"),
    ],
)
def test_a_public_value_is_a_startup_error_naming_its_setting(
    tmp_path: Path, values: dict[str, object], setting: str
) -> None:
    settings = _settings(tmp_path, **values)
    with pytest.raises(InsecureSettingError) as info:
        create_app(settings)
    assert info.value.field == setting
    assert "LIFTLOOP_DEV_MODE" in info.value.reason
    from liftloop.temporal import build_worker

    with pytest.raises(InsecureSettingError):
        build_worker(None, settings)  # type: ignore[arg-type]  # refused before the client is used


def test_dev_mode_accepts_dev_key_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path, api_keys=[SecretStr("dev-key")], dev_mode=True)
    with caplog.at_level(logging.WARNING, logger="liftloop.credentials"):
        app = create_app(settings)
    assert "LIFTLOOP_API_KEYS holds a public development value" in caplog.text
    with TestClient(app) as client:
        assert client.get("/v1/approvals", headers={"X-API-Key": "dev-key"}).status_code == 200


def test_explicit_keys_win_over_the_files(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    generated = ensure_credentials(settings)
    explicit = settings.model_copy(
        update={
            "api_keys": [SecretStr("prod-key-0123456789")],
            "knowledge_signing_key": SecretStr("prod-signing-0123456789"),
        }
    )
    resolved = ensure_credentials(explicit)
    assert resolved.api_keys == ("prod-key-0123456789",)
    assert resolved.knowledge_signing_key == b"prod-signing-0123456789"
    assert resolved.approval_signing_key == generated.approval_signing_key  # still the file's
    assert resolved.sources["api-key"] == "LIFTLOOP_API_KEYS"
    with TestClient(create_app(explicit)) as client:
        old = generated.api_keys[0]
        assert client.get("/v1/approvals", headers={"X-API-Key": old}).status_code == 401
        ok = client.get("/v1/approvals", headers={"X-API-Key": "prod-key-0123456789"})
        assert ok.status_code == 200


def test_a_snapshot_signed_with_the_old_public_key_does_not_verify(tmp_path: Path) -> None:
    """The attack: forge a snapshot (a manifest claiming chunks that were never ingested)
    with the key everyone knew, and plant it where `kb verify` reads snapshots."""
    settings = _settings(tmp_path)
    genuine = open_knowledge(settings).snapshot()  # signed with the generated key
    forged = sign_snapshot({"chunk-never-ingested": "0" * 64}, OLD_PUBLIC_SIGNING_KEY)
    planted = settings.data_dir / "knowledge" / "snapshots" / f"{forged.snapshot_id}.json"
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_text(forged.model_dump_json())

    reopened = open_knowledge(settings)  # as `liftloop kb verify` opens it
    assert reopened.verify(genuine)
    assert not reopened.verify(reopened.load_snapshot(forged.snapshot_id))
    assert not reopened.verify(sign_snapshot(genuine.chunk_hashes, OLD_PUBLIC_SIGNING_KEY))
    # Different installations have different keys: a snapshot of one proves nothing to another.
    other = _settings(tmp_path / "other")
    assert credentials.knowledge_signing_key(other) != credentials.knowledge_signing_key(settings)


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    keys: list[bytes] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        keys.append(credentials.approval_signing_key(settings))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1
    assert [p.name for p in settings.secrets_dir.iterdir()] == ["approval-signing-key"]


def test_key_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)  # the worst case: nothing masked
    try:
        settings = _settings(tmp_path)
        ensure_credentials(settings)
    finally:
        os.umask(old)
    assert stat.S_IMODE(settings.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(settings.secrets_dir.stat().st_mode) == 0o700
    names = sorted(p.name for p in settings.secrets_dir.iterdir())
    assert names == [
        "api-key",
        "approval-signing-key",
        "audit-signing-key",
        "knowledge-signing-key",
    ]
    for path in settings.secrets_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_data_dir_left_open_by_an_older_version_is_closed(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    settings.secrets_dir.mkdir(parents=True)
    os.chmod(settings.data_dir, 0o755)
    os.chmod(settings.secrets_dir, 0o755)
    key_file = settings.secrets_dir / "api-key"
    key_file.write_text("an-old-key-0123456789\n")
    os.chmod(key_file, 0o644)
    assert ensure_credentials(settings).api_keys == ("an-old-key-0123456789",)
    assert stat.S_IMODE(settings.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(settings.secrets_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_key_file_that_is_a_link_or_empty_is_refused(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    settings.secrets_dir.mkdir(parents=True)
    (tmp_path / "elsewhere").write_text("attacker-chosen-key\n")
    (settings.secrets_dir / "api-key").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InsecureSettingError, match="symbolic link"):
        credentials.api_keys(settings)
    (settings.secrets_dir / "knowledge-signing-key").write_text("")
    with pytest.raises(InsecureSettingError, match="empty"):
        credentials.knowledge_signing_key(settings)
