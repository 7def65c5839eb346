"""The Slack notifier: each approval request is posted once to its channel (the route's, else the
default), posted again to the escalation channel (or as a reply in its thread) when escalated,
and its messages are updated to the decided version when it is decided.

Once: a post is claimed in `slack_messages` (or `slack_escalations`) before it is made and
recorded with its channel id and ts after, so a retried activity, or two processes at once,
post nothing twice; a failed post releases its claim, so the next call may try again.

Slack's trouble is never the loop's: every failure is logged (the request id and Slack's error
code, nothing of the message) and swallowed. After an error that every later call would meet
too (Slack unreachable, rate limited beyond the short wait, a revoked token) the rest of the
batch is skipped, so an activity never waits on a Slack that is down once per request. Called
from an event loop (the API deciding a request), the work goes to a thread of its own, so the
loop never waits on Slack either."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from approvals.slack_blocks import (
    ApprovalCard,
    Reason,
    decided_blocks,
    fallback_text,
    request_blocks,
)
from approvals.slack_tables import SlackEscalation, SlackMessage
from liftloop.loop.tables import ApprovalRequest, Variant
from tools.cdp.sql import insert

log = logging.getLogger("liftloop.slack")

# A claim without a ts older than this was left by a call that died mid-post.
CLAIM_TTL = timedelta(minutes=2)
# How long an update waits for the decision it was told of to be committed.
DECIDED_WAIT_S = 15.0

PostTable = type[SlackMessage] | type[SlackEscalation]


class Posted(Protocol):
    @property
    def channel_id(self) -> str: ...

    @property
    def ts(self) -> str: ...


class SlackPoster(Protocol):
    """What the notifier needs of Slack (`connectors.slack.SlackWebApi` is one)."""

    def post_message(
        self,
        channel: str,
        text: str,
        blocks: Sequence[Mapping[str, Any]],
        *,
        thread_ts: str | None = None,
        reply_broadcast: bool = False,
    ) -> Posted: ...

    def update_message(
        self, channel_id: str, ts: str, text: str, blocks: Sequence[Mapping[str, Any]]
    ) -> None: ...


def error_code(exc: BaseException) -> str:
    """What a log may say of a failure: Slack's error code, else the exception's type."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else type(exc).__name__


def _hopeless(exc: BaseException) -> bool:
    """Whether the next call would fail the same way (so a batch stops trying)."""
    return bool(getattr(exc, "retryable", False) or getattr(exc, "token_problem", False))


def load_card(engine: Engine, request_id: str) -> ApprovalCard | None:
    """The request with its variant's content, or None if there is no such request."""
    with engine.connect() as conn:
        row = conn.execute(
            select(ApprovalRequest).where(col(ApprovalRequest.id) == request_id)
        ).first()
        if row is None:
            return None
        req = ApprovalRequest.model_validate(row._mapping)
        found = conn.execute(select(Variant).where(col(Variant.id) == req.variant_id)).first()
    variant = Variant.model_validate(found._mapping) if found is not None else None
    return ApprovalCard(
        request_id=req.id,
        campaign_id=req.campaign_id,
        cycle=req.cycle,
        variant_id=req.variant_id,
        status=req.status,
        channel=variant.channel if variant else "",
        arm=variant.arm if variant else "",
        subject=variant.subject if variant else "",
        body=variant.body if variant else "",
        reasons=tuple(
            Reason(str(r.get("rule_id", "")), str(r.get("explanation", ""))) for r in req.reasons
        ),
        deadline_at=req.deadline_at,
        approver_group=req.approver_group,
        escalation_group=req.escalation_group,
        escalated=req.escalated_at is not None,
        decided_by=req.decided_by,
        note=req.note,
    )


def _slack_channel(engine: Engine, request_id: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            select(ApprovalRequest.slack_channel).where(col(ApprovalRequest.id) == request_id)
        ).scalar_one_or_none()


def posted_message(engine: Engine, table: PostTable, request_id: str) -> tuple[str, str] | None:
    """(channel id, ts) of the request's post in `table`, if it was made."""
    with engine.connect() as conn:
        row = conn.execute(
            select(table.channel_id, table.ts).where(col(table.request_id) == request_id)
        ).first()
    if row is None or row[0] is None or row[1] is None:
        return None
    return str(row[0]), str(row[1])


def _claim(engine: Engine, table: PostTable, request_id: str) -> bool:
    """Whether this call may post: its claim is new, or taken over from a dead one."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        fresh = conn.execute(
            insert(conn, table)
            .on_conflict_do_nothing()
            .values(request_id=request_id, channel_id=None, ts=None, posted_at=now)
        ).rowcount
        if fresh == 1:
            return True
        taken = conn.execute(
            update(table)
            .where(col(table.request_id) == request_id)
            .where(col(table.ts).is_(None))
            .where(col(table.posted_at) < now - CLAIM_TTL)
            .values(posted_at=now)
        ).rowcount
    return bool(taken == 1)


def _record(engine: Engine, table: PostTable, request_id: str, posted: Posted) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(table)
            .where(col(table.request_id) == request_id)
            .values(channel_id=posted.channel_id, ts=posted.ts, posted_at=datetime.now(UTC))
        )


def _release(engine: Engine, table: PostTable, request_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            delete(table).where(col(table.request_id) == request_id).where(col(table.ts).is_(None))
        )


class SlackNotifier:
    """ApprovalNotifier over Slack. `escalation_channel` empty: an escalation is a reply in the
    thread of the request's message, broadcast to its channel."""

    def __init__(
        self,
        engine: Engine,
        slack: SlackPoster,
        default_channel: str,
        escalation_channel: str | None = None,
    ) -> None:
        self.engine, self.slack = engine, slack
        self.default_channel = default_channel
        self.escalation_channel = escalation_channel or None
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="slack-notify")
        self._lock = threading.Lock()
        self._running: set[Future[None]] = set()

    # -- ApprovalNotifier ---------------------------------------------------------------------

    def opened(self, request_ids: list[str]) -> None:
        self._run(self._batch, "post", self._post, list(request_ids))

    def escalated(self, request_ids: list[str]) -> None:
        self._run(self._batch, "escalation of", self._escalate, list(request_ids))

    def decided(self, request_id: str) -> None:
        # Always in a thread: the worker tells of a timeout before its transaction commits,
        # so the decided row may show only a moment later (`_update_decided` waits for it).
        self._run(self._batch, "update of", self._update_decided, [request_id], thread=True)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for the work handed to threads (tests and shutdown)."""
        with self._lock:
            running = list(self._running)
        wait(running, timeout=timeout_s)

    # -- the work -----------------------------------------------------------------------------

    def _run(
        self,
        fn: Callable[[str, Callable[[str], None], list[str]], None],
        what: str,
        each: Callable[[str], None],
        ids: list[str],
        *,
        thread: bool = False,
    ) -> None:
        if not thread:
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # a worker's activity thread, the CLI: do it here
                fn(what, each, ids)
                return
        future = self._pool.submit(fn, what, each, ids)
        with self._lock:
            self._running.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._running.discard(future)

    def _batch(self, what: str, each: Callable[[str], None], ids: list[str]) -> None:
        for n, request_id in enumerate(ids):
            try:
                each(request_id)
            except Exception as exc:  # Slack's trouble is logged, never the loop's
                log.warning(
                    "slack: %s approval request %s failed (%s)", what, request_id, error_code(exc)
                )
                if _hopeless(exc) and n + 1 < len(ids):
                    log.warning(
                        "slack: %d more requests not tried (%s)", len(ids) - n - 1, error_code(exc)
                    )
                    return

    def _post(self, request_id: str) -> None:
        card = load_card(self.engine, request_id)
        if card is None or card.status not in ("pending", "deciding"):
            return
        channel = _slack_channel(self.engine, request_id) or self.default_channel
        if not _claim(self.engine, SlackMessage, request_id):
            return
        try:
            posted = self.slack.post_message(channel, fallback_text(card), request_blocks(card))
        except BaseException:
            _release(self.engine, SlackMessage, request_id)
            raise
        _record(self.engine, SlackMessage, request_id, posted)

    def _escalate(self, request_id: str) -> None:
        card = load_card(self.engine, request_id)
        if card is None or card.status not in ("pending", "deciding"):
            return
        if not _claim(self.engine, SlackEscalation, request_id):
            return
        try:
            posted = self._post_escalation(card)
        except BaseException:
            _release(self.engine, SlackEscalation, request_id)
            raise
        _record(self.engine, SlackEscalation, request_id, posted)

    def _post_escalation(self, card: ApprovalCard) -> Posted:
        original = posted_message(self.engine, SlackMessage, card.request_id)
        if original is not None:
            # Its buttons stay; it now names the escalation group too. Best effort: the
            # escalation post below matters more.
            try:
                self.slack.update_message(
                    original[0], original[1], fallback_text(card), request_blocks(card)
                )
            except Exception as exc:
                log.warning(
                    "slack: marking approval request %s escalated failed (%s)",
                    card.request_id,
                    error_code(exc),
                )
        text = fallback_text(card)
        blocks = request_blocks(card, escalated_to=card.escalation_group or "leads")
        if self.escalation_channel is not None:
            return self.slack.post_message(self.escalation_channel, text, blocks)
        if original is not None:
            return self.slack.post_message(
                original[0], text, blocks, thread_ts=original[1], reply_broadcast=True
            )
        # Never posted (Slack was down then): post it now, where it belongs.
        channel = _slack_channel(self.engine, card.request_id) or self.default_channel
        return self.slack.post_message(channel, text, blocks)

    def _update_decided(self, request_id: str) -> None:
        card = load_card(self.engine, request_id)
        deadline = time.monotonic() + DECIDED_WAIT_S
        while card is not None and card.status in ("pending", "deciding"):
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)
            card = load_card(self.engine, request_id)
        if card is None:
            return
        problem: Exception | None = None
        for table in (SlackMessage, SlackEscalation):
            where = posted_message(self.engine, table, request_id)
            if where is None:
                continue
            try:
                self.slack.update_message(
                    where[0], where[1], fallback_text(card), decided_blocks(card)
                )
            except Exception as exc:  # the other message is still worth updating
                problem = exc
        if problem is not None:
            raise problem
