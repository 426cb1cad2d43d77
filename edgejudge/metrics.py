"""Agreement between judge scores and gold scores: correlations (scipy.stats), bootstrap CIs, agreement.

- Pearson r, Spearman ρ and Kendall τ-b come from ``scipy.stats`` (``pearsonr``, ``spearmanr``,
  ``kendalltau(variant="b")``) on the raw values (expected scores may be fractional).
- 95% confidence intervals: percentile bootstrap over pairs, ``bootstrap`` resamples drawn with
  ``numpy.random.default_rng(seed)`` (deterministic). Resamples where a correlation is undefined (constant
  values) are left out; if fewer than half remain, the interval is NaN.
- Exact and ±1 agreement, the confusion matrix and the histograms use values rounded to the nearest integer
  (halves up). ``confusion[g-1][p-1]`` counts pairs with gold ``g`` and prediction ``p`` (rows gold,
  columns predicted); pairs outside 1..5 after rounding are left out of the matrix and histograms.
- Pairs where either value is missing (None/NaN) are dropped, with a note. With fewer than 2 pairs or a
  constant side, correlations are NaN with a note instead of an error.

``Metrics.to_dict()`` is JSON-safe (NaN → None).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from .errors import InputError

__all__ = ["Correlation", "Metrics", "agreement_metrics"]

_NAN = float("nan")


@dataclass(frozen=True)
class Correlation:
    """A correlation coefficient, its bootstrap 95% interval and scipy's two-sided p-value (NaN if n/a)."""

    value: float
    ci_low: float
    ci_high: float
    p_value: float = _NAN

    def to_dict(self) -> dict[str, float | None]:
        return {k: _json_float(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Metrics:
    """Agreement of ``n`` (pred, gold) pairs; see the module docstring for definitions.

    ``dropped``: pairs left out for a missing value; ``bootstrap``: resamples behind the intervals (0 when
    none were computed); ``notes``: human-readable caveats (undefined correlations, dropped pairs...).
    """

    n: int
    pearson: Correlation
    spearman: Correlation
    kendall: Correlation
    exact_agreement: float
    within_one: float
    confusion: tuple[tuple[int, ...], ...]
    pred_histogram: tuple[int, ...]
    gold_histogram: tuple[int, ...]
    mean_pred: float = _NAN
    mean_gold: float = _NAN
    mean_abs_error: float = _NAN
    dropped: int = 0
    bootstrap: int = 0
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """JSON-safe dictionary (NaN → None; tuples → lists)."""
        return {
            "n": self.n,
            "pearson": self.pearson.to_dict(),
            "spearman": self.spearman.to_dict(),
            "kendall": self.kendall.to_dict(),
            "exact_agreement": _json_float(self.exact_agreement),
            "within_one": _json_float(self.within_one),
            "confusion": [list(row) for row in self.confusion],
            "pred_histogram": list(self.pred_histogram),
            "gold_histogram": list(self.gold_histogram),
            "mean_pred": _json_float(self.mean_pred),
            "mean_gold": _json_float(self.mean_gold),
            "mean_abs_error": _json_float(self.mean_abs_error),
            "dropped": self.dropped,
            "bootstrap": self.bootstrap,
            "notes": list(self.notes),
        }


def _json_float(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _to_float(value: object) -> float:
    if value is None:
        return _NAN
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond the float range
        raise InputError(
            f"score {value!r:.60} is not a number",
            hint="metrics need numeric scores (or null for missing ones)",
        ) from None


def _round_half_up(values: np.ndarray) -> np.ndarray:
    # clipped first: a cast of a huge float (1e300) to int64 is undefined; anything this far is out of 1..5
    return np.floor(np.clip(values, -1e9, 1e9) + 0.5).astype(np.int64)


def _kendall_b(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    res = stats.kendalltau(x, y, variant="b")
    return float(res.statistic), float(res.pvalue)


def _point(x: np.ndarray, y: np.ndarray) -> dict[str, tuple[float, float]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConstantInputWarning etc.: NaN results are reported via notes
        p = stats.pearsonr(x, y)
        s = stats.spearmanr(x, y)
        return {
            "pearson": (float(p.statistic), float(p.pvalue)),
            "spearman": (float(s.statistic), float(s.pvalue)),
            "kendall": _kendall_b(x, y),
        }


def _bootstrap(x: np.ndarray, y: np.ndarray, resamples: int, seed: int) -> dict[str, tuple[float, float]]:
    n = len(x)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    xb, yb = x[idx], y[idx]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Pearson over each row (scipy's axis support); Spearman = Pearson of ranks, as scipy defines it.
        pear = np.asarray(stats.pearsonr(xb, yb, axis=1).statistic, dtype=float)
        rx, ry = stats.rankdata(xb, axis=1), stats.rankdata(yb, axis=1)
        spear = np.asarray(stats.pearsonr(rx, ry, axis=1).statistic, dtype=float)
        kend = np.array(
            [stats.kendalltau(a, b, variant="b").statistic for a, b in zip(xb, yb, strict=True)], dtype=float
        )
    out = {}
    for name, values in (("pearson", pear), ("spearman", spear), ("kendall", kend)):
        finite = values[np.isfinite(values)]
        if resamples == 0 or len(finite) < resamples / 2:
            out[name] = (_NAN, _NAN)
        else:
            low, high = np.percentile(finite, [2.5, 97.5])
            out[name] = (float(low), float(high))
    return out


def agreement_metrics(
    pred: Sequence[float | None], gold: Sequence[float | None], *, bootstrap: int = 1000, seed: int = 0
) -> Metrics:
    """Agreement between predicted and gold scores (same order, same length).

    Any finite floats are accepted; sums that overflow (scores near 1e308) give undefined statistics
    (None in ``to_dict``), never a warning or an exception."""
    with np.errstate(all="ignore"):
        return _agreement_metrics(pred, gold, bootstrap=bootstrap, seed=seed)


def _agreement_metrics(
    pred: Sequence[float | None], gold: Sequence[float | None], *, bootstrap: int, seed: int
) -> Metrics:
    if len(pred) != len(gold):
        raise InputError(
            f"{len(pred)} predictions but {len(gold)} gold scores", hint="pass one gold score per prediction"
        )
    if bootstrap < 0:
        raise InputError(f"bootstrap must be >= 0, got {bootstrap}", hint="use 0 to skip the intervals")
    x_all = np.array([_to_float(v) for v in pred], dtype=float)
    y_all = np.array([_to_float(v) for v in gold], dtype=float)
    keep = np.isfinite(x_all) & np.isfinite(y_all)
    x, y = x_all[keep], y_all[keep]
    n, dropped = int(len(x)), int((~keep).sum())
    notes: list[str] = []
    if dropped:
        notes.append(f"dropped {dropped} pair(s) with a missing score")

    nan_pair = (_NAN, _NAN)
    points = {"pearson": nan_pair, "spearman": nan_pair, "kendall": nan_pair}
    cis = dict(points)
    resamples = 0
    if n < 2:
        notes.append(f"correlations need at least 2 pairs (got {n})")
    elif np.all(x == x[0]) or np.all(y == y[0]):
        side = "predictions" if np.all(x == x[0]) else "gold scores"
        notes.append(f"correlations are undefined: all {side} are the same value")
    else:
        points = _point(x, y)
        if bootstrap:
            cis, resamples = _bootstrap(x, y, bootstrap, seed), bootstrap
            if any(math.isnan(lo) for lo, _ in cis.values()):
                notes.append("some confidence intervals are undefined: too many constant resamples")

    xr, yr = _round_half_up(x), _round_half_up(y)
    confusion = np.zeros((5, 5), dtype=np.int64)
    in_range = (xr >= 1) & (xr <= 5) & (yr >= 1) & (yr <= 5)
    np.add.at(confusion, (yr[in_range] - 1, xr[in_range] - 1), 1)
    if n and not in_range.all():
        notes.append(f"{int((~in_range).sum())} pair(s) outside 1..5 left out of the confusion matrix")

    def hist(values: np.ndarray) -> tuple[int, ...]:
        return tuple(int((values == k).sum()) for k in range(1, 6))

    def corr(name: str) -> Correlation:
        return Correlation(points[name][0], cis[name][0], cis[name][1], points[name][1])

    return Metrics(
        n=n,
        pearson=corr("pearson"),
        spearman=corr("spearman"),
        kendall=corr("kendall"),
        exact_agreement=float(np.mean(xr == yr)) if n else _NAN,
        within_one=float(np.mean(np.abs(xr - yr) <= 1)) if n else _NAN,
        confusion=tuple(tuple(int(v) for v in row) for row in confusion),
        pred_histogram=hist(xr),
        gold_histogram=hist(yr),
        mean_pred=float(x.mean()) if n else _NAN,
        mean_gold=float(y.mean()) if n else _NAN,
        mean_abs_error=float(np.abs(x - y).mean()) if n else _NAN,
        dropped=dropped,
        bootstrap=resamples,
        notes=tuple(notes),
    )
