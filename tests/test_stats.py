"""The statistics behind the report, checked against scikit-learn, hand computations and a second, independent
computation of DeLong's test."""

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from benchmark.evaluation.stats import (
    PatientBootstrap,
    delong,
    holm,
    percentile_ci,
    resample_seed,
    resampled_auc,
    resampled_aurocs,
    t_interval,
)


def test_resampled_auc_equals_sklearn_with_patient_weights_ties_included():
    rng = np.random.default_rng(0)
    n, patients = 400, 90
    y = rng.integers(0, 2, n)
    p = np.round(rng.random(n), 2)  # many ties
    patient = rng.integers(0, patients, n)
    counts = rng.multinomial(patients, np.full(patients, 1 / patients), size=7).astype(np.float32)
    ours = resampled_auc(y, p, patient, counts)
    for b in range(7):
        assert ours[b] == pytest.approx(skm.roc_auc_score(y, p, sample_weight=counts[b][patient]), abs=1e-12)


def test_resamples_are_shared_by_runs_on_one_test_set_and_keep_both_classes():
    rng = np.random.default_rng(1)
    patients = np.repeat([f"p{i}" for i in range(60)], 2)
    truth = np.zeros((120, 2))
    truth[:, 0] = rng.integers(0, 2, 120)
    truth[[3, 40, 77], 1] = 1  # a rare label: three positive images of three patients
    a = PatientBootstrap(patients, truth, 300)
    b = PatientBootstrap(patients[::-1], truth[::-1], 300)  # the same set, listed in another order
    assert a.seed == b.seed == resample_seed(list(reversed(patients)))
    assert a.n == 300 and a.drawn > 300  # some resamples lacked a positive of the rare label: drawn again
    pos = np.zeros((60, 2))
    np.add.at(pos, a.inverse, truth)
    assert ((a.counts @ pos) > 0).all()  # every kept resample has both classes of both labels
    assert a.record()["resamples"] == 300


def test_the_macro_ci_uses_only_resamples_where_every_label_has_both_classes():
    """The bias this fixes: a resample without the rare label's positives averaged the other label alone."""
    rng = np.random.default_rng(2)
    n = 200
    patients = np.array([f"p{i}" for i in range(n)])
    truth = np.zeros((n, 2))
    truth[:, 0] = rng.integers(0, 2, n)
    truth[[5, 60, 150], 1] = 1
    probs = np.column_stack([np.clip(truth[:, 0] * 0.9 + rng.normal(0, 0.3, n), 0, 1),  # a good label
                             rng.random(n)])  # a rare label the model does not see
    boot = PatientBootstrap(patients, truth, 400)
    aurocs = resampled_aurocs(truth, probs, boot)
    assert not np.isnan(aurocs).any()
    macro = aurocs.mean(axis=1)
    expected = []
    for b in range(boot.n):  # independently: sklearn on each kept resample, both labels averaged
        w = boot.counts[b][boot.inverse]
        expected.append(np.mean([skm.roc_auc_score(truth[:, j], probs[:, j], sample_weight=w) for j in (0, 1)]))
    assert np.allclose(macro, expected)
    from benchmark.evaluation.metrics import compute_metrics

    m = compute_metrics(truth, probs, ["good", "rare"], patients, n_boot=400)
    assert m["summary"]["auroc_macro_ci"] == pytest.approx(percentile_ci(expected))
    assert m["summary"]["bootstrap"]["resamples"] == 400


def _delong_by_definition(y, p_a, p_b):
    """DeLong, DeLong and Clarke-Pearson (1988) from the definition: the kernel over every positive-negative
    pair (O(m n)), not the midranks."""
    y = np.asarray(y).astype(bool)

    def components(p):
        x, z = p[y][:, None], p[~y][None, :]
        psi = (x > z) + 0.5 * (x == z)
        return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)

    (ta, v10a, v01a), (tb, v10b, v01b) = components(p_a), components(p_b)
    m, n = len(v10a), len(v01a)
    s10 = np.cov(v10a, v10b)
    s01 = np.cov(v01a, v01b)
    s = s10 / m + s01 / n
    z = (ta - tb) / math.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    return ta - tb, 2 * (1 - 0.5 * (1 + math.erf(abs(z) / math.sqrt(2))))


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_delong_matches_a_computation_from_its_definition(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 150)
    p_a = np.round(np.clip(y * 0.4 + rng.random(150), 0, 1.4), 2)
    p_b = np.round(np.clip(y * 0.2 + rng.random(150), 0, 1.4), 2)
    ours = delong(y, p_a, p_b)
    diff, p = _delong_by_definition(y, p_a, p_b)
    assert ours["diff"] == pytest.approx(diff) == pytest.approx(skm.roc_auc_score(y, p_a) - skm.roc_auc_score(y, p_b))
    assert ours["p"] == pytest.approx(p, rel=1e-9)
    assert ours["ci"][0] < ours["diff"] < ours["ci"][1]


def test_holm_and_the_t_interval_by_hand():
    # sorted: 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04, but never below the step before: 0.06
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    values = [0.80, 0.84, 0.82]  # mean 0.82, sd 0.02, t(0.975, 2) = 4.302653
    low, high = t_interval(values)
    half = 4.302653 * 0.02 / math.sqrt(3)
    assert low == pytest.approx(0.82 - half, abs=1e-6) and high == pytest.approx(0.82 + half, abs=1e-6)
    assert t_interval([0.8]) is None
