"""Synthetic customers for the CDP: realistic segment mix, markets, time zones and consents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from tools.cdp.tables import Consent, Profile
from tools.simulation.truth import SEGMENT_SHARE, SEGMENTS

_MARKETS = (  # country, time zone, language, share
    ("US", "America/New_York", "en", 0.35),
    ("US", "America/Los_Angeles", "en", 0.15),
    ("GB", "Europe/London", "en", 0.15),
    ("DE", "Europe/Berlin", "de", 0.30),
    ("AT", "Europe/Vienna", "de", 0.05),
)
_FIRST_NAMES = (
    "Alex",
    "Sam",
    "Jamie",
    "Robin",
    "Kim",
    "Lena",
    "Jonas",
    "Mia",
    "Noah",
    "Emma",
    "Paul",
    "Lea",
    "Ben",
    "Hannah",
    "Finn",
    "Olivia",
    "Liam",
    "Sofia",
    "Max",
    "Clara",
)
# Share of people who granted marketing consent per channel (the rest declined or never answered).
CONSENT_RATE = {"email": 0.9, "push": 0.6, "sms": 0.3}


def generate_customers(
    engine: Engine,
    n: int,
    *,
    batch: str,
    seed: int = 1,
    now: datetime | None = None,
    chunk: int = 20_000,
) -> int:
    """Insert n profiles with marketing consents; ids are '<batch>-<i>' so batches never collide."""
    rng = np.random.default_rng(seed)
    now = now or datetime.now(UTC)
    seg_idx = rng.choice(len(SEGMENTS), size=n, p=[SEGMENT_SHARE[s] for s in SEGMENTS])
    shares = np.array([m[3] for m in _MARKETS])
    market_idx = rng.choice(len(_MARKETS), size=n, p=shares / shares.sum())
    names = rng.integers(0, len(_FIRST_NAMES), size=n)
    recency = rng.integers(1, 13, size=n)
    history = np.round(rng.gamma(1.3, 180.0, size=n), 2)
    granted = {ch: rng.random(n) < rate for ch, rate in CONSENT_RATE.items()}
    created = now - timedelta(days=400)

    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        profiles, consents = [], []
        for i in range(start, stop):
            pid = f"{batch}-{i}"
            country, tz, lang, _ = _MARKETS[market_idx[i]]
            profiles.append(
                {
                    "id": pid,
                    "email": f"{pid}@customers.example",
                    "phone": None,
                    "first_name": _FIRST_NAMES[names[i]],
                    "country": country,
                    "timezone": tz,
                    "language": lang,
                    "segment": SEGMENTS[seg_idx[i]],
                    "source_batch": batch,
                    "traits": {"recency_months": int(recency[i]), "history_usd": float(history[i])},
                    "created_at": created,
                }
            )
            for ch, ok in granted.items():
                consents.append(
                    {
                        "profile_id": pid,
                        "channel": ch,
                        "purpose": "marketing",
                        "granted": bool(ok[i]),
                        "source": "synthetic",
                        "lawful_basis": "consent",
                        "recorded_at": created,
                    }
                )
        with engine.begin() as conn:
            conn.execute(insert(Profile), profiles)
            conn.execute(insert(Consent), consents)
    return n
