from __future__ import annotations

import numpy as np
import pytest

from tools.models.errors import ModelInputError
from tools.models.send_time import hour_response, send_times

SEGMENT_PEAK = (9, 20)


def _history(seed: int = 0) -> tuple[np.ndarray, ...]:
    """Two segments of 200 people whose engagement peaks at 9h and 20h; 40 % of people peak
    at another hour of their own. The first 50 of each segment have a long history."""
    rng = np.random.default_rng(seed)
    segment = np.repeat([0, 1], 200)
    own = rng.random(400) < 0.4
    peaks = np.where(own, rng.integers(0, 24, 400), np.take(SEGMENT_PEAK, segment))
    long_history = np.tile(np.arange(200) < 50, 2)
    person, hour, engaged = [], [], []
    for p in range(400):
        sends = 400 if long_history[p] else 4
        hours = rng.integers(0, 24, sends)
        person.append(np.full(sends, p))
        hour.append(hours)
        engaged.append(rng.random(sends) < np.where(hours == peaks[p], 0.6, 0.05))
    return (
        np.concatenate(person),
        np.concatenate(hour),
        np.concatenate(engaged),
        segment,
        peaks,
        long_history,
    )


def test_best_hour_shrinks_sparse_histories_to_the_segment() -> None:
    person, hour, engaged, segment, peaks, long_history = _history()
    times = send_times(person, hour, engaged, segment)
    best = times.best_hour
    # Long histories carry enough evidence to leave the segment's hour ...
    assert (best[long_history] == peaks[long_history]).mean() > 0.9
    # ... short ones fall back on it.
    short = ~long_history
    assert (best[short] == np.take(SEGMENT_PEAK, segment[short])).mean() > 0.8
    assert (times.prior_strength > 1).all() and (times.prior_strength < 1000).all()


def test_allowed_hours_and_hour_response() -> None:
    person, hour, engaged, segment, _, long_history = _history(1)
    times = send_times(person, hour, engaged, segment, allowed_hours=[8, 12, 18])
    assert set(np.unique(times.best_hour)) <= {8, 12, 18}
    response = hour_response(times, [9, 20])
    np.testing.assert_allclose(response.mean(axis=1), 1.0)
    short_in_first = ~long_history[:200]
    assert (response[:200][short_in_first, 0] > 1).mean() > 0.8


def test_bad_input_names_the_field() -> None:
    with pytest.raises(ModelInputError, match=r"^hour: must be in 0..23"):
        send_times([0], [24], [1], [0])
    with pytest.raises(ModelInputError, match=r"^person: must index"):
        send_times([3], [1], [1], [0])
    with pytest.raises(ModelInputError, match=r"^allowed_hours:"):
        send_times([0], [1], [1], [0], allowed_hours=[])
