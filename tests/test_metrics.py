"""Agreement metrics: must match scipy.stats (ties included) and degrade gracefully."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from edgejudge.errors import InputError
from edgejudge.metrics import agreement_metrics

# Likert scores with many ties on both sides.
PRED = [1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 2, 3, 4, 1, 5]
GOLD = [1, 1, 2, 3, 4, 3, 4, 5, 5, 4, 2, 2, 4, 2, 5]


def test_matches_scipy_on_ties() -> None:
    m = agreement_metrics(PRED, GOLD, bootstrap=200, seed=1)
    assert m.n == 15
    assert m.pearson.value == pytest.approx(stats.pearsonr(PRED, GOLD).statistic, abs=1e-12)
    assert m.spearman.value == pytest.approx(stats.spearmanr(PRED, GOLD).statistic, abs=1e-12)
    tau = stats.kendalltau(PRED, GOLD, variant="b")
    assert m.kendall.value == pytest.approx(tau.statistic, abs=1e-12)
    assert m.kendall.p_value == pytest.approx(tau.pvalue, abs=1e-12)
    assert m.pearson.p_value == pytest.approx(stats.pearsonr(PRED, GOLD).pvalue, abs=1e-12)
    for corr in (m.pearson, m.spearman, m.kendall):
        assert -1 <= corr.ci_low <= corr.value <= corr.ci_high <= 1


def test_bootstrap_is_scipy_over_resamples() -> None:
    x, y = np.array(PRED, float), np.array(GOLD, float)
    m = agreement_metrics(PRED, GOLD, bootstrap=300, seed=7)
    idx = np.random.default_rng(7).integers(0, len(x), size=(300, len(x)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant resamples
        for name, fn in (
            ("pearson", lambda a, b: stats.pearsonr(a, b).statistic),
            ("spearman", lambda a, b: stats.spearmanr(a, b).statistic),
            ("kendall", lambda a, b: stats.kendalltau(a, b, variant="b").statistic),
        ):
            values = np.array([fn(x[i], y[i]) for i in idx], float)
            low, high = np.percentile(values[np.isfinite(values)], [2.5, 97.5])
            corr = getattr(m, name)
            assert (corr.ci_low, corr.ci_high) == pytest.approx((low, high), abs=1e-9)


def test_bootstrap_deterministic_by_seed() -> None:
    a = agreement_metrics(PRED, GOLD, bootstrap=100, seed=3)
    b = agreement_metrics(PRED, GOLD, bootstrap=100, seed=3)
    c = agreement_metrics(PRED, GOLD, bootstrap=100, seed=4)
    assert a == b
    assert (a.pearson.ci_low, a.pearson.ci_high) != (c.pearson.ci_low, c.pearson.ci_high)


def test_agreement_confusion_histograms() -> None:
    m = agreement_metrics([1, 2, 3, 5, 4], [1, 3, 3, 1, 5], bootstrap=0)
    assert m.exact_agreement == pytest.approx(2 / 5)
    assert m.within_one == pytest.approx(4 / 5)
    # rows = gold, columns = predicted
    assert m.confusion[0] == (1, 0, 0, 0, 1)  # gold 1: predicted 1 once, 5 once
    assert m.confusion[2] == (0, 1, 1, 0, 0)  # gold 3: predicted 2 and 3
    assert m.confusion[4] == (0, 0, 0, 1, 0)  # gold 5: predicted 4
    assert sum(map(sum, m.confusion)) == 5
    assert m.pred_histogram == (1, 1, 1, 1, 1)
    assert m.gold_histogram == (2, 0, 2, 0, 1)
    assert m.mean_abs_error == pytest.approx((0 + 1 + 0 + 4 + 1) / 5)
    assert math.isnan(m.pearson.ci_low)  # bootstrap=0: no intervals


def test_fractional_predictions_round_half_up() -> None:
    m = agreement_metrics([2.5, 3.49, 4.6], [3, 3, 5], bootstrap=0)
    assert m.exact_agreement == 1.0
    assert m.pearson.value == pytest.approx(stats.pearsonr([2.5, 3.49, 4.6], [3, 3, 5]).statistic)


def test_constant_input_gives_nan_with_note() -> None:
    m = agreement_metrics([3, 3, 3, 3], [1, 2, 4, 5], bootstrap=50)
    assert math.isnan(m.pearson.value) and math.isnan(m.spearman.value) and math.isnan(m.kendall.value)
    assert any("all predictions are the same" in note for note in m.notes)
    assert m.exact_agreement == 0.0 and m.n == 4 and m.bootstrap == 0


@pytest.mark.parametrize("n", [0, 1])
def test_too_few_pairs(n: int) -> None:
    m = agreement_metrics([4] * n, [5] * n)
    assert m.n == n
    assert math.isnan(m.pearson.value) and math.isnan(m.kendall.ci_high)
    assert any("at least 2 pairs" in note for note in m.notes)
    data = m.to_dict()
    json.dumps(data, allow_nan=False)
    assert data["pearson"] == {"value": None, "ci_low": None, "ci_high": None, "p_value": None}
    if n == 1:
        assert data["exact_agreement"] == 0.0 and data["within_one"] == 1.0
    else:
        assert data["exact_agreement"] is None


def test_missing_values_dropped_and_bad_input() -> None:
    m = agreement_metrics([1, None, 3, float("nan"), 5], [1, 2, 3, 4, None], bootstrap=0)
    assert m.n == 2 and m.dropped == 3
    assert any("dropped 3" in note for note in m.notes)
    with pytest.raises(InputError, match="2 predictions but 3 gold"):
        agreement_metrics([1, 2], [1, 2, 3])
    with pytest.raises(InputError, match="not a number"):
        agreement_metrics(["good", 2], [1, 2])


def test_out_of_range_left_out_of_confusion() -> None:
    m = agreement_metrics([1, 2, 8], [1, 2, 9], bootstrap=0)
    assert sum(map(sum, m.confusion)) == 2
    assert any("outside 1..5" in note for note in m.notes)


def test_to_dict_is_json_safe() -> None:
    data = agreement_metrics(PRED, GOLD, bootstrap=50).to_dict()
    text = json.dumps(data, allow_nan=False)
    back = json.loads(text)
    assert back["n"] == 15 and len(back["confusion"]) == 5 and all(len(row) == 5 for row in back["confusion"])
    assert set(back) >= {"n", "pearson", "spearman", "kendall", "exact_agreement", "within_one"}
