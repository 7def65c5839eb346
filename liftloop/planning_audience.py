"""The planner's audience tools over the CDP: how many people a segment matches and can be
reached, and what its buyers are worth (CLV) and how likely they are gone (churn).

Counts follow the loop's segment stage (`liftloop/loop/segment.py`): the segment compiled to SQL
at this moment, then the latest consent for the purpose per channel. Scores come from the CLV
model (BG/NBD + Gamma-Gamma, `tools/models/clv.py`): the registry's serving `clv` model when one
is promoted, otherwise one fitted on the CDP's own order history (`order_completed` events and
their `revenue`), which is the data such a model is trained on. Churn is the BG/NBD probability
that a buyer is no longer active. Every answer is an aggregate; no profile leaves this module.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import and_, distinct, func, select
from sqlalchemy.engine import Engine

from agents.planner_tools import ScoreArgs, SegmentArgs
from tools.cdp.consent import latest_consent
from tools.cdp.features import ORDER_EVENT
from tools.cdp.segments import compile_segment
from tools.cdp.sql import as_utc, cols
from tools.cdp.tables import Event, Profile
from tools.models.clv import (
    BgNbdParams,
    GammaGammaParams,
    customer_lifetime_value,
    fit_summary,
    probability_alive,
)
from tools.models.errors import ModelInputError
from tools.models.registry import ClvArtifact, ModelRegistry
from tools.models.transactions import RfmSummary, Transactions, summarise

_EV = cols(Event)
_PR = cols(Profile)
CLV_MODEL = "clv"
# Fewer buyers than this give a fit whose parameters mean little: the tool says so instead.
MIN_FIT_CUSTOMERS = 30
MIN_REPEAT_BUYERS = 10
# The CLV's horizon: twelve monthly periods, discounted at 1 % a month.
_PERIODS, _PERIOD_WEEKS, _DISCOUNT = 12, 52.0 / 12.0, 0.01
_EPOCH = date(1970, 1, 1).toordinal()


def _quantiles(values: npt.NDArray[np.float64], digits: int) -> dict[str, float]:
    p10, p50, p90 = np.quantile(values, [0.1, 0.5, 0.9])
    return {
        "mean": round(float(values.mean()), digits),
        "p10": round(float(p10), digits),
        "p50": round(float(p50), digits),
        "p90": round(float(p90), digits),
    }


class Audience:
    """The audience tools of one planner, over one CDP database."""

    def __init__(
        self, engine: Engine, registry: ModelRegistry | None = None, now: datetime | None = None
    ) -> None:
        self.engine = engine
        self.registry = registry
        self._now = now
        self._lock = threading.Lock()
        # The model scored with, and the day it was chosen: churn and CLV ask in turn, and one
        # fit serves both (and every plan of that day).
        self._model: tuple[date, tuple[str, BgNbdParams, GammaGammaParams] | str] | None = None

    def now(self) -> datetime:
        return as_utc(self._now) if self._now else datetime.now(UTC)

    def count(self, args: SegmentArgs) -> dict[str, Any]:
        """Matched, and reachable (consent for the purpose) in all and per channel."""
        now = self.now()
        matched = select(_PR.id).where(compile_segment(args.segment, "segment", as_of=now))
        matched_q = matched.subquery()
        consent = latest_consent(args.purpose, args.channels, now=now).subquery()
        joined = matched_q.join(
            consent, and_(consent.c.profile_id == matched_q.c.id, consent.c.granted)
        )
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(matched_q)).scalar_one()
            reachable = conn.execute(
                select(func.count(distinct(matched_q.c.id))).select_from(joined)
            ).scalar_one()
            per_channel: dict[str, int] = dict(
                conn.execute(
                    select(consent.c.channel, func.count(distinct(matched_q.c.id)))
                    .select_from(joined)
                    .group_by(consent.c.channel)
                ).all()
            )
        return {
            "matched": int(total),
            "reachable": int(reachable),
            "reachable_by_channel": {c: int(per_channel.get(c, 0)) for c in args.channels},
            "purpose": args.purpose,
            "as_of": now.isoformat(timespec="seconds"),
        }

    def _transactions(self, segment: dict[str, Any] | None) -> Transactions | None:
        """The orders up to now, of the segment's members (of everyone with None)."""
        now = self.now()
        query = select(_EV.profile_id, _EV.occurred_at, _EV.properties["revenue"].as_float()).where(
            _EV.name == ORDER_EVENT, _EV.occurred_at <= now
        )
        if segment is not None:
            members = select(_PR.id).where(compile_segment(segment, "segment", as_of=now))
            query = query.where(_EV.profile_id.in_(members))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        if not rows:
            return None
        ids: dict[str, int] = {}
        index = [ids.setdefault(pid, len(ids)) for pid, _, _ in rows]
        days = [as_utc(at).date().toordinal() - _EPOCH for _, at, _ in rows]
        amounts = [max(float(v), 0.0) if v is not None else 0.0 for _, _, v in rows]
        return Transactions(
            customer_ids=list(ids),
            customer_index=np.asarray(index, dtype=np.int64),
            day=np.asarray(days, dtype=np.int64),
            amount=np.asarray(amounts, dtype=np.float64),
            rows_read=len(rows),
            bad_rows=[],
            duplicate_rows=[],
            duplicates_dropped=False,
        )

    def _summary(self, segment: dict[str, Any] | None) -> RfmSummary | None:
        tx = self._transactions(segment)
        if tx is None:
            return None
        try:
            return summarise(tx, self.now().date())
        except ModelInputError:
            return None

    def _fitted(self) -> tuple[str, BgNbdParams, GammaGammaParams] | str:
        """(source, params) of the CLV model to score with, or why there is none."""
        if self.registry is not None:
            try:
                meta, artifact = self.registry.serving(CLV_MODEL)
            except ModelInputError:
                pass  # nothing promoted: fit on the CDP's history below
            else:
                if isinstance(artifact, ClvArtifact):
                    source = f"registry {meta.name}:{meta.version}"
                    return source, artifact.bgnbd, artifact.gamma_gamma
        summary = self._summary(None)
        if summary is None:
            return "no model in the registry and no order history in the CDP to fit one on"
        buyers, repeat = len(summary.customer_ids), int((summary.x > 0).sum())
        if buyers < MIN_FIT_CUSTOMERS or repeat < MIN_REPEAT_BUYERS:
            return (
                f"no model in the registry, and the CDP's order history is too small to fit one "
                f"({buyers} buyers, {repeat} repeat buyers; at least {MIN_FIT_CUSTOMERS} and "
                f"{MIN_REPEAT_BUYERS} needed)"
            )
        try:
            bg, gg = fit_summary(summary)
        except ModelInputError as exc:
            return f"the CLV model could not be fitted on the CDP's order history ({exc})"
        if not (bg.converged and gg.converged) or gg.params.q <= 1.0:
            return "the CLV model fitted on the CDP's order history did not converge"
        return f"fitted on the CDP's order history ({buyers} buyers)", bg.params, gg.params

    def _scoring(
        self, segment: dict[str, Any]
    ) -> tuple[str, BgNbdParams, GammaGammaParams, RfmSummary] | dict[str, Any]:
        # The segment first: nothing to score needs no model (and no fit of one).
        summary = self._summary(segment)
        if summary is None:
            return {"unavailable": "nobody in the segment has an order to score"}
        today = self.now().date()
        with self._lock:
            if self._model is None or self._model[0] != today:
                self._model = (today, self._fitted())
            model = self._model[1]
        if isinstance(model, str):
            return {"unavailable": model}
        return (*model, summary)

    def churn(self, args: ScoreArgs) -> dict[str, Any]:
        scoring = self._scoring(args.segment)
        if isinstance(scoring, dict):
            return scoring
        source, bg, _, summary = scoring
        churn = 1.0 - probability_alive(bg, summary.x, summary.t_x, summary.T)
        return {
            "model": source,
            "scored_buyers": len(summary.customer_ids),
            "churn_probability": _quantiles(churn, 4),
            "share_likely_gone": round(float((churn > 0.5).mean()), 4),
        }

    def clv(self, args: ScoreArgs) -> dict[str, Any]:
        scoring = self._scoring(args.segment)
        if isinstance(scoring, dict):
            return scoring
        source, bg, gg, summary = scoring
        value = customer_lifetime_value(
            bg, gg, summary, periods=_PERIODS, period_weeks=_PERIOD_WEEKS, discount_rate=_DISCOUNT
        )
        return {
            "model": source,
            "scored_buyers": len(summary.customer_ids),
            "horizon_months": _PERIODS,
            "clv_eur": _quantiles(value, 2),
            "total_clv_eur": round(float(value.sum()), 2),
        }
