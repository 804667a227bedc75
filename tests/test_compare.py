"""Comparisons a reviewer accepts: per-label tests clustered by patient, rare labels kept out, no p of 0, seeds
pooled into configurations. Fabricated test sets (no training), checked against independent computations."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from benchmark.evaluation.compare import compare
from benchmark.evaluation.metrics import compute_metrics
from benchmark.evaluation.stats import bh, bootstrap_p, holm, normal_p


def _clustered(patients=300, per_patient=8, labels=2, seed=0):
    """Patients with several images each, and a patient effect shared by a patient's images (in truth and in
    every model's score), as on NIH's follow-up images."""
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(patients), per_patient)
    effect = rng.normal(0, 1, (patients, labels))[patient]
    truth = (effect + rng.normal(0, 0.5, effect.shape) > 1.0).astype(float)
    frame = pd.DataFrame({"path": [f"img{i:06d}.png" for i in range(len(patient))],
                          "patient": [f"p{p:04d}" for p in patient]})
    return frame, truth, effect, rng


def _run(name, frame, truth, probs, labels, val=0.8, **config):
    return {"name": name, "labels": labels, "test_frame": frame, "test_y": truth, "test_p": probs,
            "test_metrics": {"summary": {"unit": "image"}}, "val_metrics": {"summary": {"auroc_macro": val}},
            "config": {"dataset": "nih", "backbone": "densenet121", "seed": 0, **config}}


def _scores(rng, truth, effect, strength, per_patient=8):
    """A model's scores: its signal, the shared patient effect, and its own effect per patient (how it reads that
    patient's images), so that a patient's images move together in the difference between models too."""
    own = np.repeat(rng.normal(0, 1.0, (len(truth) // per_patient, truth.shape[1])), per_patient, axis=0)
    noise = 0.8 * effect + own + rng.normal(0, 0.5, truth.shape)
    return 1 / (1 + np.exp(-(strength * (2 * truth - 1) + noise)))


def test_per_label_tests_are_clustered_by_patient_and_match_an_independent_patient_bootstrap():
    frame, truth, effect, rng = _clustered()
    labels = ["A", "B"]
    pa, pb = _scores(rng, truth, effect, 1.0), _scores(rng, truth, effect, 0.9)
    result = compare([_run("a", frame, truth, pa, labels, val=0.9, backbone="resnet50"),
                      _run("b", frame, truth, pb, labels, val=0.8)], n_boot=400, min_positives=10)
    row = next(c for c in result.rows if c["label"] == "A")
    assert row["test"] == "patient bootstrap" and row["resamples"] == 400
    # independently: resample the 300 patients with another generator, sklearn with the patients' counts as weights
    patient = frame["patient"].str[1:].astype(int).to_numpy()
    other = np.random.default_rng(12345)
    diffs = []
    for _ in range(300):
        w = np.bincount(other.integers(0, 300, 300), minlength=300)[patient]
        diffs.append(skm.roc_auc_score(truth[:, 0], pa[:, 0], sample_weight=w)
                     - skm.roc_auc_score(truth[:, 0], pb[:, 0], sample_weight=w))
    independent = np.std(diffs, ddof=1)
    assert row["se"] == pytest.approx(independent, rel=0.25)
    assert row["a"] == "b" and row["b"] == "a"  # configuration minus the reference (a: best on validation)
    assert row["diff"] == pytest.approx(skm.roc_auc_score(truth[:, 0], pb[:, 0])
                                        - skm.roc_auc_score(truth[:, 0], pa[:, 0]))
    # DeLong, which takes the 2,400 images as independent, understates that error
    from benchmark.evaluation.stats import delong

    assert delong(truth[:, 0], pa[:, 0], pb[:, 0])["se"] < 0.8 * independent


def test_delong_only_where_every_patient_has_one_image():
    frame, truth, effect, rng = _clustered(patients=400, per_patient=1)
    pa, pb = _scores(rng, truth, effect, 1.0, 1), _scores(rng, truth, effect, 0.7, 1)
    result = compare([_run("a", frame, truth, pa, ["A", "B"], backbone="resnet50"),
                      _run("b", frame, truth, pb, ["A", "B"])], n_boot=200)
    tests = {c["label"]: c["test"] for c in result.rows}
    assert tests == {"macro": "patient bootstrap", "A": "delong", "B": "delong"}


def test_a_label_with_one_positive_patient_stays_out_of_the_macro_and_every_test():
    frame, truth, effect, rng = _clustered(patients=200, per_patient=4, labels=3)
    truth[:, 2] = 0
    truth[frame["patient"] == "p0007", 2] = 1  # one positive patient: four images
    labels = ["A", "B", "Rare"]
    pa, pb = _scores(rng, truth, effect, 1.0, 4), _scores(rng, truth, effect, 0.8, 4)
    pb[:, 2] = rng.random(len(pb))  # a random scorer on the rare label
    result = compare([_run("a", frame, truth, pa, labels, val=0.9, backbone="resnet50"),
                      _run("b", frame, truth, pb, labels)], n_boot=200, min_positives=10)
    support = result.support[0]["labels"]["Rare"]
    assert support == {"positive_patients": 1, "negative_patients": 199, "positives": 4, "units": 800, "kept": False}
    assert {c["label"] for c in result.rows} == {"macro", "A", "B"}
    macro = next(c for c in result.rows if c["label"] == "macro")
    expected = np.mean([skm.roc_auc_score(truth[:, j], pb[:, j]) - skm.roc_auc_score(truth[:, j], pa[:, j])
                        for j in (0, 1)])  # b minus the reference a
    assert macro["diff"] == pytest.approx(expected)
    # a run's own metrics: the rare label gets no number, with its counts, and stays out of the macro
    m = compute_metrics(truth, pb, labels, frame["patient"].to_numpy(), n_boot=100, curves=False, min_positives=10)
    rare = m["per_label"]["Rare"]
    assert rare["auroc"] is None and rare["too_few"] and rare["positive_patients"] == 1
    assert rare["prevalence"] == rare["auprc_baseline"] == pytest.approx(4 / 800)
    assert m["summary"]["auroc_macro"] == pytest.approx(np.mean([skm.roc_auc_score(truth[:, j], pb[:, j])
                                                                 for j in (0, 1)]))


def test_no_p_value_of_zero_and_a_ten_pair_family_can_reach_holm_below_0_01():
    assert bootstrap_p(np.full(1000, 0.05)) == pytest.approx(2 / 1001)  # every resample on one side: not 0
    assert bootstrap_p(np.array([-1.0, 1.0, 2.0, 3.0])) == pytest.approx(2 * 2 / 5)
    assert normal_p(0.3, 0.001, 1000) == pytest.approx(1 / 1001)  # floored at what B can show
    assert normal_p(0.02, 0.01) == pytest.approx(2 * (1 - 0.5 * (1 + math.erf(2 / math.sqrt(2)))))
    assert min(holm([normal_p(0.3, 0.001, 1000)] * 10)) < 0.01  # 10 / 1001
    frame, truth, effect, rng = _clustered(patients=150, per_patient=2)
    perfect = truth + 0.01 * rng.random(truth.shape)
    result = compare([_run("a", frame, truth, perfect, ["A", "B"], backbone="resnet50"),
                      _run("b", frame, truth, rng.random(truth.shape), ["A", "B"])], n_boot=200)
    assert all(c["p"] > 0 and c["p_holm"] > 0 for c in result.rows)
    assert min(c["p"] for c in result.rows) == pytest.approx(1 / 201)


def test_benjamini_hochberg_by_hand():
    # sorted 0.01, 0.02, 0.03, 0.5 -> 0.04, 0.04, 0.04, 0.5 (step-up: each the least of m p / rank above it)
    assert bh([0.03, 0.01, 0.5, 0.02, None]) == pytest.approx([0.04, 0.04, 0.5, 0.04, None])


def test_seeds_are_pooled_into_one_configuration_with_the_between_seed_variance():
    frame, truth, effect, rng = _clustered(patients=200, per_patient=3)
    labels = ["A", "B"]
    seeds = [_run(f"dense-seed{s}", frame, truth, _scores(rng, truth, effect, 1.0 + 0.2 * s, 3), labels,
                  val=0.7 + s / 100, seed=s) for s in range(3)]
    other = _run("resnet", frame, truth, _scores(rng, truth, effect, 0.8, 3), labels, val=0.9, backbone="resnet50")
    result = compare(seeds + [other], n_boot=300)
    # a pooled configuration is named by the key in which the configurations differ
    assert [(c.name, c.seeds) for c in result.configurations] == [("densenet121 (3 seeds)", 3), ("resnet", 1)]
    assert result.reference == "resnet"  # the best on validation
    rows = [c for c in result.rows if c["label"] == "macro"]
    assert len(rows) == 1 and rows[0]["a"] == "densenet121 (3 seeds)" and rows[0]["b"] == "resnet"
    assert rows[0]["family"] == "primary" and rows[0]["seeds"] == [3, 1]

    def macro(p):
        return np.mean([skm.roc_auc_score(truth[:, j], p[:, j]) for j in (0, 1)])

    per_seed = [macro(r["test_p"]) for r in seeds]
    assert rows[0]["diff"] == pytest.approx(np.mean(per_seed) - macro(other["test_p"]))
    assert rows[0]["seed_se"] == pytest.approx(math.sqrt(np.var(per_seed, ddof=1) / 3))
    assert rows[0]["se"] > rows[0]["seed_se"] > 0
    assert rows[0]["ci"][0] == pytest.approx(rows[0]["diff"] - 1.959964 * rows[0]["se"])
    assert all(r["configuration"] == "densenet121 (3 seeds)" for r in seeds)


def test_subgroups_are_averaged_over_the_labels_every_group_shares():
    """Identical performance for women and men on label A; label B's positives are all men. Averaged over
    whatever each group has, the AUROC gap was B's artefact; over the shared labels it is A's alone: 0."""
    from reports.build import subgroup_gaps

    rng = np.random.default_rng(4)
    n = 400
    sex = np.repeat(["F", "M"], n // 2)
    truth = np.zeros((n, 2))
    a = rng.random(n // 2) < 0.3
    truth[:, 0] = np.concatenate([a, a])  # the same cases in both groups
    truth[n // 2:, 1] = rng.random(n // 2) < 0.3  # B: positives among men only
    score_a = np.where(a, rng.normal(1, 1, n // 2), rng.normal(0, 1, n // 2))
    probs = np.column_stack([np.concatenate([score_a, score_a]), rng.random(n)])  # B: a poor scorer
    meta = pd.DataFrame({"sex": sex, "age": np.full(n, 50), "view": np.full(n, "PA")})
    m = compute_metrics(truth, 1 / (1 + np.exp(-probs)), ["A", "B"], np.arange(n).astype(str), n_boot=200,
                        curves=False, meta=meta)
    groups = m["subgroups"]["sex"]
    assert set(groups["F"]["auroc"]) == {"A"} and set(groups["M"]["auroc"]) == {"A", "B"}
    assert abs(groups["F"]["auroc_macro"] - groups["M"]["auroc_macro"]) > 0.05  # the old, unequal averages
    gaps = m["subgroup_gaps"]["sex"]
    assert gaps["auroc_labels"] == ["A"] and gaps["fnr_labels"] == ["A"]
    assert gaps["auroc_gap"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert gaps["fnr_gap"]["value"] == pytest.approx(0.0, abs=1e-12)
    for kind in ("auroc_gap", "fnr_gap"):  # equal performance: the patient-bootstrap interval covers 0
        low, high = gaps[kind]["ci"]
        assert low < 0 < high and high - low > 0.02
    women = sex == "F"
    assert gaps["groups"]["F"]["auroc"] == pytest.approx(skm.roc_auc_score(truth[women, 0], probs[women, 0]))
    row = next(g for g in subgroup_gaps([{"name": "r", "test_metrics": m}]) if g["attribute"] == "sex")
    assert row["auroc_gap"]["value"] == pytest.approx(0.0, abs=1e-12)
    old = dict(m)  # a metrics.json written before the intervals: the shared labels still, without a CI
    del old["subgroup_gaps"]
    row = next(g for g in subgroup_gaps([{"name": "r", "test_metrics": old}]) if g["attribute"] == "sex")
    assert row["auroc_gap"]["value"] == pytest.approx(0.0, abs=1e-12) and row["auroc_labels"] == ["A"]


def test_the_underdiagnosis_rate_where_the_labels_have_no_finding():
    """Seyyed-Kalantari et al.: of the units with a finding, the share called No Finding, per group."""
    from benchmark.evaluation.subgroups import attribute_gaps

    n = 120
    sex = np.repeat(["F", "M"], n // 2)
    no_finding = np.tile([0, 0, 0, 1], n // 4).astype(float)  # 45 units with a finding per group
    called = np.zeros(n, bool)
    called[np.flatnonzero((no_finding == 0) & (sex == "F"))[:9]] = True  # 9 of 45 women with a finding
    called[np.flatnonzero((no_finding == 0) & (sex == "M"))[:3]] = True  # 3 of 45 men
    p_nf = np.where(called | (no_finding == 1), 0.9, 0.1)
    truth = no_finding[:, None]
    meta = pd.DataFrame({"sex": sex, "age": np.full(n, 50), "view": np.full(n, "PA")})
    gaps = attribute_gaps(truth, p_nf[:, None], meta, ["No Finding"], {"No Finding": {"f1": 0.5}}, None)["sex"]
    assert gaps["underdiagnosis"] == pytest.approx({"F": 9 / 45, "M": 3 / 45})
    assert gaps["underdiagnosis_gap"]["value"] == pytest.approx(6 / 45) and gaps["underdiagnosis_gap"]["high"] == "F"


def test_external_validation_compares_means_over_the_same_labels():
    from reports.build import external_tables

    internal = {"summary": {"auroc_macro": (0.9 + 0.7 + 0.5) / 3},
                "per_label": {"A": {"auroc": 0.9}, "B": {"auroc": 0.7}, "C": {"auroc": 0.5}}}
    external = {"summary": {"auroc_macro": 0.75, "labels": ["A", "B"]},
                "per_label": {"A": {"auroc": 0.8}, "B": {"auroc": 0.7}}}
    run = {"name": "r", "test_metrics": internal, "external": {"nih": {"test": external, "source": {}}}}
    table = external_tables([run])[0]
    assert table["rows"][0]["macro"] == pytest.approx((0.8, 0.75))  # internal over A and B: (0.9 + 0.7) / 2


def test_a_reference_on_other_test_images_is_not_called_the_same_test_set():
    from reports.references import references_for

    shown, _ = references_for("nih", ("chexnet",), "carved_test", "image")
    assert shown and not shown[0].same_test_set and "test images differ" in shown[0].differs
    shown, _ = references_for("chexpert", ("chexpert",), "valid_as_test", "study")
    assert shown[0].same_test_set and "ensemble of 30" in shown[0].differs
