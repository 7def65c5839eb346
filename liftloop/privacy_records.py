"""The records of processing (GDPR Art. 30) and a DPIA draft, generated from what this
installation is configured to do: its data categories (the CDP's tables and event contracts),
the purposes the loop serves, retention from the settings, and recipients from the configured
connectors and models. Nothing here is typed by hand per installation, so the record follows
the configuration; what only people can judge (legal bases, the risk assessment) is a draft
for the data protection officer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

from pydantic import BaseModel

from liftloop.settings import Settings
from tools.cdp.contracts import ContractRegistry

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}


class DataCategory(BaseModel):
    name: str
    fields: list[str]
    personal: bool
    retention: str


class Purpose(BaseModel):
    name: str
    legal_basis: str
    categories: list[str]
    description: str


class Recipient(BaseModel):
    name: str
    role: str
    endpoint: str
    location: str


class RecordsOfProcessing(BaseModel):
    controller: str
    generated_at: datetime
    purposes: list[Purpose]
    categories: list[DataCategory]
    recipients: list[Recipient]
    transfers: list[str]
    measures: list[str]


def _where(url_or_host: str) -> tuple[str, str]:
    host = urlsplit(url_or_host).hostname if "//" in url_or_host else url_or_host
    host = host or ""
    if host in _LOCAL_HOSTS:
        return host or "this machine", "this machine"
    return host, "outside this machine: check its location and the processing agreement"


def _categories(settings: Settings, registry: ContractRegistry) -> list[DataCategory]:
    kept = "kept while the person is a customer; removed by erasure"
    events = sorted(registry.contracts)
    pii = sorted(
        f"{name}.{field}" for name, c in registry.contracts.items() for field in c.pii_fields
    )
    return [
        DataCategory(
            name="contact data",
            fields=["profiles.email", "profiles.phone", "profiles.first_name", "identities"],
            personal=True,
            retention=kept,
        ),
        DataCategory(
            name="locale and segment",
            fields=["profiles.country", "profiles.timezone", "profiles.language", "segment"],
            personal=True,
            retention=kept,
        ),
        DataCategory(
            name="traits", fields=["trait_state", "trait_history"], personal=True, retention=kept
        ),
        DataCategory(name="consent statements", fields=["consents"], personal=True, retention=kept),
        DataCategory(
            name="behavioural events",
            fields=[f"events: {', '.join(events)} (and any other event a source sends)"]
            + ([f"personal properties: {', '.join(pii)}"] if pii else []),
            personal=True,
            retention=f"{settings.retention_events_days} days (LIFTLOOP_RETENTION_EVENTS_DAYS)",
        ),
        DataCategory(
            name="quarantined messages",
            fields=["cdp_quarantine (whole messages that broke their contract)"],
            personal=True,
            retention=f"{settings.retention_quarantine_days} days",
        ),
        DataCategory(
            name="decisions",
            fields=["decisions: arm, propensity, holdout, model versions, expected margin"],
            personal=True,
            retention=f"{settings.retention_decisions_days} days",
        ),
        DataCategory(
            name="sent messages",
            fields=["outbox: recipient address, status, provider id"],
            personal=True,
            retention=f"{settings.retention_outbox_days} days",
        ),
        DataCategory(
            name="traces",
            fields=["spans: pseudonymous ids and counts, no personal data"],
            personal=False,
            retention=f"{settings.retention_spans_days} days",
        ),
        DataCategory(
            name="audit log",
            fields=["audit_log: operators' login names, customers by pseudonymous id, counts"],
            personal=True,
            retention="kept (the record of processing itself)",
        ),
    ]


_PURPOSES = [
    Purpose(
        name="marketing messages",
        legal_basis="consent (GDPR Art. 6(1)(a); ePrivacy for e-mail and SMS)",
        categories=["contact data", "locale and segment", "consent statements", "sent messages"],
        description="e-mail, SMS and push to people whose latest consent for the channel is a "
        "grant, checked again for every message at send time",
    ),
    Purpose(
        name="measuring incrementality",
        legal_basis="legitimate interest (Art. 6(1)(f)): proving what a campaign changed",
        categories=["behavioural events", "decisions"],
        description="a random holdout per campaign is not contacted; conversions and margin "
        "are compared between the groups",
    ),
    Purpose(
        name="choosing offers and channels",
        legal_basis="legitimate interest (Art. 6(1)(f)); profiling without legal or similarly "
        "significant effect (Art. 22 to be confirmed by the DPO)",
        categories=["behavioural events", "traits", "locale and segment", "decisions"],
        description="uplift models and bandits pick an offer per person within policy limits; "
        "each decision is logged with its propensity",
    ),
    Purpose(
        name="data subject rights and accountability",
        legal_basis="legal obligation (Art. 6(1)(c))",
        categories=["audit log", "traces"],
        description="erasure and export on request; the audit log records who did what",
    ),
]

_MEASURES = [
    "consent, frequency caps and quiet hours checked per message at send time",
    "brand policies guard every variant; risky ones wait for a human approval",
    "personal data stays in slots filled at send time: never in a prompt, a span or a log",
    "a tamper-evident audit log (hash chain, sealed with a key outside the database)",
    "erasure and export across every store (CDP, decisions, outboxes), each an audit entry",
    "a scheduled retention job per data category",
    "generated keys in files of mode 0600; no usable default credential",
]


def _recipients(settings: Settings) -> list[Recipient]:
    smtp_host, smtp_where = _where(settings.smtp_host)
    temporal = settings.temporal_address or "the embedded dev server"
    db_host, db_where = (
        _where(settings.database_url)
        if settings.database_url
        else ("SQLite in the data directory", "this machine")
    )
    recipients = [
        Recipient(
            name="e-mail delivery",
            role="processor: receives recipient address, subject and body of each mail",
            endpoint=f"SMTP {smtp_host}:{settings.smtp_port}",
            location=smtp_where,
        ),
        Recipient(
            name="push and SMS outboxes",
            role="files handed to the delivery integration",
            endpoint="JSON Lines files in the data directory",
            location="this machine",
        ),
        Recipient(
            name="workflow engine (Temporal)",
            role="holds campaign specs and pseudonymous counts, no contact data",
            endpoint=temporal,
            location=_where(settings.temporal_address.split(":")[0])[1],
        ),
        Recipient(
            name="customer database",
            role="stores every category above",
            endpoint=db_host,
            location=db_where,
        ),
    ]
    if settings.llm_model != "offline":
        recipients.append(
            Recipient(
                name="language model",
                role="processor: receives prompts with no personal data (checked before each call)",
                endpoint=settings.llm_model,
                location="outside this machine unless the model is served locally",
            )
        )
    for name, role, url in (
        ("trace collector", "spans", settings.otlp_endpoint),
        ("vector index", "knowledge documents", settings.weaviate_url),
    ):
        if url:
            host, where = _where(url)
            recipients.append(Recipient(name=name, role=role, endpoint=host, location=where))
    return recipients


def records_of_processing(settings: Settings, registry: ContractRegistry) -> RecordsOfProcessing:
    recipients = _recipients(settings)
    return RecordsOfProcessing(
        controller=settings.imprint,
        generated_at=datetime.now(UTC),
        purposes=_PURPOSES,
        categories=_categories(settings, registry),
        recipients=recipients,
        transfers=[
            f"{r.name} ({r.endpoint}): {r.location}"
            for r in recipients
            if r.location != "this machine"
        ],
        measures=_MEASURES,
    )


def dpia_draft(records: RecordsOfProcessing) -> str:
    """A DPIA draft (GDPR Art. 35) in Markdown, filled from the records."""
    lines = [
        "# Data protection impact assessment (draft)",
        "",
        f"Controller: {records.controller}. Generated {records.generated_at:%Y-%m-%d %H:%M} UTC "
        "from this installation's configuration; to be reviewed and completed by the data "
        "protection officer.",
        "",
        "## 1. The processing",
        "",
    ]
    lines += [f"- **{p.name}**: {p.description}. Basis: {p.legal_basis}." for p in records.purposes]
    lines += ["", "## 2. Data and retention", ""]
    lines += [
        f"- {c.name}{'' if c.personal else ' (not personal)'}: {'; '.join(c.fields)}. "
        f"Retention: {c.retention}."
        for c in records.categories
    ]
    lines += ["", "## 3. Recipients and transfers", ""]
    lines += [f"- {r.name}: {r.role} ({r.endpoint}; {r.location})." for r in records.recipients]
    if not records.transfers:
        lines.append("- No recipient outside this machine is configured.")
    lines += [
        "",
        "## 4. Risks to assess",
        "",
        "- Profiling: offers and discounts differ between people by model; check the treatment "
        "and offer rates across segments and sensitive proxies (age band, country, language).",
        "- Over-contact and unwanted messages: caps, quiet hours and consent are enforced per "
        "message.",
        "- Misleading content: generated copy is checked against brand policies; risky claims "
        "and high discounts need a human approval.",
        "- Breach of the customer database or the outboxes: contact data is stored in clear in "
        "the database; protect the data directory and the database server.",
        "",
        "## 5. Measures in place",
        "",
    ]
    lines += [f"- {m}." for m in records.measures]
    lines += ["", "## 6. Conclusion", "", "_To be completed by the DPO._", ""]
    return "\n".join(lines)
