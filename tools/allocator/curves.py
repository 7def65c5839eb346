"""Channel response curves: spend per period → expected response, and their concave PWL form."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tools.allocator.errors import AllocationInputError

FloatArray = NDArray[np.float64]


class ResponseCurve(BaseModel):
    """Expected response to spend x in one period.

    hill:     beta · x^shape / (x^shape + half_saturation^shape)
    logistic: beta · (1 − e^(−lam·x)) / (1 + e^(−lam·x))   (PyMC-Marketing's saturation)
    pwl:      linear interpolation through (xs, ys), flat after the last point
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["hill", "logistic", "pwl"]
    beta: float = Field(default=1.0, gt=0.0)
    half_saturation: float | None = Field(default=None, gt=0.0)
    shape: float | None = Field(default=None, gt=0.0)
    lam: float | None = Field(default=None, gt=0.0)
    xs: list[float] | None = None
    ys: list[float] | None = None

    @model_validator(mode="after")
    def _parameters(self) -> ResponseCurve:
        if self.kind == "hill" and (self.half_saturation is None or self.shape is None):
            raise AllocationInputError("curve", "hill needs half_saturation and shape")
        if self.kind == "logistic" and self.lam is None:
            raise AllocationInputError("curve", "logistic needs lam")
        if self.kind == "pwl":
            xs, ys = self.xs or [], self.ys or []
            if len(xs) < 2 or len(xs) != len(ys):
                raise AllocationInputError("curve", "pwl needs xs and ys of equal length ≥ 2")
            if xs[0] != 0.0 or np.any(np.diff(xs) <= 0):
                raise AllocationInputError("curve", "pwl xs must start at 0 and increase")
        return self

    def value(self, x: ArrayLike) -> FloatArray:
        s = np.maximum(np.asarray(x, dtype=float), 0.0)
        if self.kind == "hill":
            k, a = float(self.half_saturation or 1.0), float(self.shape or 1.0)
            r = (s / k) ** a
            return np.asarray(self.beta * r / (1.0 + r), dtype=float)
        if self.kind == "logistic":
            e = np.exp(-float(self.lam or 1.0) * s)
            return np.asarray(self.beta * (1.0 - e) / (1.0 + e), dtype=float)
        return np.asarray(np.interp(s, self.xs or [], self.ys or []), dtype=float)

    def derivative(self, x: ArrayLike) -> FloatArray:
        s = np.maximum(np.asarray(x, dtype=float), 0.0)
        if self.kind == "hill":
            k, a = float(self.half_saturation or 1.0), float(self.shape or 1.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                r = (s / k) ** a
                d = self.beta * a * r / (s * (1.0 + r) ** 2)
            at_zero = self.beta / k if a == 1.0 else (np.inf if a < 1.0 else 0.0)
            return np.asarray(np.where(s > 0, d, at_zero), dtype=float)
        if self.kind == "logistic":
            lam = float(self.lam or 1.0)
            e = np.exp(-lam * s)
            return np.asarray(self.beta * 2.0 * lam * e / (1.0 + e) ** 2, dtype=float)
        xs, ys = np.asarray(self.xs), np.asarray(self.ys)
        slopes = np.append(np.diff(ys) / np.diff(xs), 0.0)
        idx = np.clip(np.searchsorted(xs, s, side="right") - 1, 0, len(slopes) - 1)
        return np.asarray(slopes[idx], dtype=float)


def concave_envelope(xs: FloatArray, ys: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Upper concave hull of sampled points, so S-shaped curves still give an LP."""
    hull: list[int] = []
    for i in range(xs.size):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = (xs[b] - xs[a]) * (ys[i] - ys[a]) - (ys[b] - ys[a]) * (xs[i] - xs[a])
            if cross >= 0:
                hull.pop()
            else:
                break
        hull.append(i)
    return xs[hull], ys[hull]


class CurveBatch:
    """Many curves evaluated at once, one row of points per curve (the allocator's hot path)."""

    def __init__(self, curves: Sequence[ResponseCurve]) -> None:
        self._curves = list(curves)
        kinds = np.array([c.kind for c in curves])
        self._hill = np.flatnonzero(kinds == "hill")
        self._logistic = np.flatnonzero(kinds == "logistic")
        self._pwl = np.flatnonzero(kinds == "pwl")
        beta = np.array([c.beta for c in curves])
        self._hill_beta = beta[self._hill, None]
        self._hill_k = np.array([self._curves[int(i)].half_saturation or 1.0 for i in self._hill])[
            :, None
        ]
        self._hill_shape = np.array([self._curves[int(i)].shape or 1.0 for i in self._hill])[
            :, None
        ]
        self._log_beta = beta[self._logistic, None]
        self._log_lam = np.array([self._curves[int(i)].lam or 1.0 for i in self._logistic])[:, None]
        # Hill with shape > 1 is S-shaped; a pwl may bend either way. Logistic is concave.
        self.non_concave = [
            i
            for i, c in enumerate(curves)
            if (c.kind == "hill" and (c.shape or 1.0) > 1.0)
            or (c.kind == "pwl" and bool(np.any(np.diff(c.derivative(c.xs or [])) > 0)))
        ]

    def value(self, xs: FloatArray) -> FloatArray:
        s = np.maximum(xs, 0.0)
        out = np.empty_like(s)
        if self._hill.size:
            r = (s[self._hill] / self._hill_k) ** self._hill_shape
            out[self._hill] = self._hill_beta * r / (1.0 + r)
        if self._logistic.size:
            e = np.exp(-self._log_lam * s[self._logistic])
            out[self._logistic] = self._log_beta * (1.0 - e) / (1.0 + e)
        for i in self._pwl:
            out[i] = self._curves[i].value(s[i])
        return out
