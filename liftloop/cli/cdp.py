"""The CDP: `events ingest`, `segment count|snapshot`, `privacy erase|export`,
`contracts list|replay`, `sources add`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.engine import Engine

from liftloop.cli import output
from liftloop.cli.output import JsonOption
from liftloop.erasure import erase_person, export_person
from liftloop.settings import get_settings
from tools.cdp.contracts import ContractRegistry
from tools.cdp.errors import CdpError, MessageError
from tools.cdp.ingest import MAX_FUTURE_SKEW, IngestResult, ingest_parsed
from tools.cdp.messages import parse_many
from tools.cdp.quarantine import replay_quarantine
from tools.cdp.segments import count_segment, load_segment_file, snapshot_segment
from tools.cdp.sources import create_source

events_app = typer.Typer(name="events", help="Event ingestion from files.")
segment_app = typer.Typer(name="segment", help="Audience segments: count and snapshot.")
privacy_app = typer.Typer(name="privacy", help="Erasure and export of a person's data.")
contracts_app = typer.Typer(name="contracts", help="Event data contracts and the quarantine.")
sources_app = typer.Typer(name="sources", help="Event sources and their write keys.")
app = typer.Typer()
for _group in (events_app, segment_app, privacy_app, contracts_app, sources_app):
    app.add_typer(_group)


def register(root: typer.Typer) -> None:
    """Add the CDP's groups to `root`."""
    root.add_typer(app)


ContractsOption = Annotated[
    list[Path] | None,
    typer.Option("--contracts", help="Folder of extra contract files (higher versions win)."),
]
AsOfOption = Annotated[
    datetime | None, typer.Option("--as-of", help="Evaluate event windows as of this UTC time.")
]


def _engine() -> Engine:
    from liftloop.db import engine_for
    from tools.cdp.tables import ensure_cdp_tables

    engine = engine_for(get_settings().cdp_url)
    ensure_cdp_tables(engine)
    return engine


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line


# Messages per transaction of a file import. Each event rewrites about one page of the
# per-profile event index and one of the engagement counts, wherever its person's rows are; in a
# larger transaction people recur, so a page is written once for several events
# (`bench/cdp.py --sustained`: about 24,000 against 13,000–16,000 events/s once 500,000 are
# stored).
FILE_BATCH = 10_000


def ingest_file(
    engine: Engine,
    path: Path,
    *,
    source: str,
    registry: ContractRegistry,
    batch_size: int = FILE_BATCH,
    max_future_skew: timedelta = MAX_FUTURE_SKEW,
    on_batch: Callable[[int, IngestResult], None] | None = None,
) -> IngestResult:
    """Ingest a JSON Lines file in batches; a line that is not JSON is quarantined too.
    `on_batch(bytes read, totals so far)` follows each batch (the command's progress)."""
    total = IngestResult()
    read = 0
    batch: list[Any] = []
    unreadable: list[tuple[Any, MessageError]] = []

    def flush() -> None:
        nonlocal total
        parsed, bad = parse_many(batch)
        bad += unreadable
        step = ingest_parsed(
            engine,
            parsed,
            source=source,
            registry=registry,
            unreadable=bad,
            max_future_skew=max_future_skew,
        )
        total = IngestResult(
            **{k: getattr(total, k) + getattr(step, k) for k in IngestResult.model_fields}
        )
        batch.clear()
        unreadable.clear()
        if on_batch is not None:
            on_batch(read, total)

    for number, line in _lines(path):
        read += len(line.encode("utf-8", "surrogateescape"))
        try:
            batch.append(json.loads(line))
        except ValueError as exc:
            unreadable.append(
                (
                    {"line": number, "text": line[:2000]},
                    MessageError(f"line {number}", f"is not valid JSON ({exc})"),
                )
            )
        if len(batch) + len(unreadable) >= batch_size:
            flush()
    if batch or unreadable:
        flush()
    return total


@events_app.command("ingest")
def events_ingest(
    file: Annotated[Path, typer.Argument(help="JSON Lines file of Segment-style messages.")],
    source: Annotated[str, typer.Option(help="Source name recorded with each message.")] = ("file"),
    contracts: ContractsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ingest a JSONL file: prints accepted, duplicates and quarantined."""
    try:
        if not file.is_file():
            raise CdpError("FILE", f"{file} is not a file")
        registry = ContractRegistry.load(*(contracts or []))
        with output.progress() as bar:
            task = bar.add_task(f"ingesting {file.name}", total=file.stat().st_size)

            def on_batch(read: int, so_far: IngestResult) -> None:
                bar.update(
                    task,
                    completed=read,
                    description=f"ingesting {file.name}: {so_far.accepted} accepted,"
                    f" {so_far.duplicates} duplicates, {so_far.quarantined} quarantined",
                )

            result = ingest_file(
                _engine(),
                file,
                source=source,
                registry=registry,
                max_future_skew=get_settings().cdp_max_future_skew,
                on_batch=on_batch,
            )
            # Blank lines and newline conventions are not counted: the end is the whole file.
            bar.update(task, completed=file.stat().st_size)
    except CdpError as exc:
        output.fail_on(exc, as_json=as_json, split=True)
    output.emit(
        result.model_dump(include={"accepted", "duplicates", "quarantined"}), as_json=as_json
    )


@segment_app.command("count")
def segment_count(
    file: Annotated[Path, typer.Argument(help="YAML or JSON segment spec.")],
    as_of: AsOfOption = None,
    as_json: JsonOption = False,
) -> None:
    """Count the profiles in a segment."""
    try:
        name, spec = load_segment_file(file)
        count = count_segment(_engine(), spec, as_of=as_of)
    except CdpError as exc:
        output.fail_on(exc, as_json=as_json, split=True)
    output.emit({"segment": name, "count": count}, as_json=as_json)


@segment_app.command("snapshot")
def segment_snapshot(
    file: Annotated[Path, typer.Argument(help="YAML or JSON segment spec.")],
    as_of: AsOfOption = None,
    as_json: JsonOption = False,
) -> None:
    """Snapshot a segment and report who entered and exited since the last snapshot."""
    try:
        name, spec = load_segment_file(file)
        result = snapshot_segment(_engine(), name, spec, as_of=as_of)
    except CdpError as exc:
        output.fail_on(exc, as_json=as_json, split=True)
    output.emit(result.model_dump(mode="json"), as_json=as_json)


@privacy_app.command("erase")
def privacy_erase(
    person: Annotated[str, typer.Argument(metavar="ID", help="Any id, email or phone.")],
    actor: Annotated[str, typer.Option(help="Who asked, for the audit log.")] = "cli",
    as_json: JsonOption = False,
) -> None:
    """Erase a person: remove personal data, pseudonymise what aggregates need."""
    try:
        report = erase_person(_engine(), person, ContractRegistry.load(), actor=actor)
    except CdpError as exc:
        output.fail_on(exc, as_json=as_json, split=True)
    output.emit(report.model_dump(), as_json=as_json)


@privacy_app.command("export")
def privacy_export(
    person: Annotated[str, typer.Argument(metavar="ID", help="Any id, email or phone.")],
    actor: Annotated[str, typer.Option(help="Who asked, for the audit log.")] = "cli",
) -> None:
    """Print everything held about a person as one JSON object."""
    try:
        data = export_person(_engine(), person, actor=actor)
    except CdpError as exc:
        output.fail_on(exc, as_json=True, split=True)
    output.emit(data, as_json=True)


@contracts_app.command("list")
def contracts_list(contracts: ContractsOption = None, as_json: JsonOption = False) -> None:
    """The contracts in force: event name → version."""
    try:
        registry = ContractRegistry.load(*(contracts or []))
    except CdpError as exc:
        output.fail_on(exc, as_json=as_json, split=True)
    output.emit(
        {name: c.version for name, c in sorted(registry.contracts.items())}, as_json=as_json
    )


@contracts_app.command("replay")
def contracts_replay(
    contracts: ContractsOption = None,
    event: Annotated[str | None, typer.Option(help="Only this event name.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Re-check the quarantine against the contracts in force and ingest what now passes."""
    try:
        registry = ContractRegistry.load(*(contracts or []))
        result = replay_quarantine(
            _engine(), registry, event=event, max_future_skew=get_settings().cdp_max_future_skew
        )
    except CdpError as exc:
        output.fail_on(exc, as_json=as_json, split=True)
    output.emit(result.model_dump(), as_json=as_json)


@sources_app.command("add")
def sources_add(
    name: Annotated[str, typer.Argument(help="Source name, e.g. web or shop.")],
    as_json: JsonOption = False,
) -> None:
    """Register a source and print its write key once."""
    try:
        key = create_source(_engine(), name)
    except CdpError as exc:
        output.fail_on(exc, as_json=as_json, split=True)
    output.emit({"source": name, "write_key": key}, as_json=as_json)
