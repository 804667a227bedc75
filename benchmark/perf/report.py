"""`perf report`: the time and peak memory of `report` on a fabricated sweep of many runs, so that its cost can be
checked to grow with the runs, not with their square.

The sweep is NIH-like: a test set of `images` images of patients with several images each (about 9 on average, a
few with many, as in NIH's official test list), the 14 labels at the prevalences of that test list, and each run's
predictions differing from the others (each run and label its own signal strength). Each run's files are written
as training writes them (metrics.json by the same function, with its bootstrap and subgroups), outside the timed
part; then `report` is timed in a fresh process, which also gives its peak memory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import UserError

# NIH ChestX-ray14's official test list (25,596 images): the share of images with each label, in NIH_14's order
NIH_TEST_PREVALENCE = (0.126, 0.041, 0.181, 0.236, 0.067, 0.063, 0.022, 0.104, 0.072, 0.036, 0.041, 0.017, 0.045,
                       0.004)
BACKBONES = ("densenet121", "resnet34", "resnet50", "resnet101", "mobilenet")


def _patients(rng, n: int, per_patient: float = 9.0) -> np.ndarray:
    """Patient ids for n images: about n / per_patient patients, their image counts skewed (a few have many)."""
    count = max(2, int(round(n / per_patient)))
    weights = rng.lognormal(0.0, 1.0, count)
    return rng.choice(count, size=n, p=weights / weights.sum())


def fabricate(out: Path, runs: int, images: int, labels: int = 14, n_boot: int = 1000, seed: int = 0) -> dict:
    """Write `runs` finished run folders under out/runs/ with NIH-like test and validation predictions."""
    from benchmark.data.labels import NIH_14
    from benchmark.evaluation.metrics import choose_thresholds, score_split
    from benchmark.runs.ownership import claim
    from benchmark.runs.rundir import write_csv, write_json, write_status

    if not 1 <= labels <= 14:
        raise UserError(f"--labels must be 1 to 14, not {labels}")
    if runs < 2 or images < 50:
        raise UserError("perf report needs at least 2 runs and 50 images")
    rng = np.random.default_rng(seed)
    names = list(NIH_14[:labels])
    prevalence = np.array(NIH_TEST_PREVALENCE[:labels])
    parts = {"test": images, "val": max(50, images // 8)}
    data = {}
    for part, n in parts.items():
        patient = _patients(rng, n)
        truth = (rng.random((n, labels)) < prevalence).astype(float)
        frame = pd.DataFrame({"path": [f"{part}/{i:08d}_000.png" for i in range(n)],
                              "patient": [f"{part}{p:05d}" for p in patient]})
        frame["study"] = frame["path"]
        per_patient = rng.random(patient.max() + 1)
        frame["sex"] = np.where(per_patient[patient] < 0.45, "F", "M")
        frame["age"] = np.clip(rng.normal(50, 17, patient.max() + 1), 1, 95).astype(int)[patient]
        frame["view"] = np.where(rng.random(n) < 0.4, "AP", "PA")
        data[part] = (frame, truth)
    strengths = rng.uniform(0.6, 1.6, (runs, labels))  # each run and label its own signal
    started = time.perf_counter()
    for r in range(runs):
        name = f"run{r:02d}-{BACKBONES[r % len(BACKBONES)]}"
        run_dir = claim(out / "runs" / name, "run", "a run directory", "")
        probs = {}
        for part, (frame, truth) in data.items():
            logits = strengths[r] * (2 * truth - 1) + rng.normal(0, 1.2, truth.shape)
            probs[part] = 1 / (1 + np.exp(-logits))
            table = frame.copy()
            for j, lab in enumerate(names):
                table[f"y_true_{lab}"] = truth[:, j].astype(int)
            for j, lab in enumerate(names):
                table[f"y_prob_{lab}"] = probs[part][:, j]
            write_csv(run_dir / f"predictions_{part}.csv", table)
        thresholds = choose_thresholds(data["val"][1], probs["val"], names)
        metrics = {part: score_split(frame, truth, probs[part], names, "image", "max", thresholds, n_boot,
                                     curves=(part == "test"), min_positives=10)
                   for part, (frame, truth) in data.items()}
        metrics.update(synthetic=True, protocol={"name": "official_test", "test": "fabricated (perf report)",
                                                 "val": "fabricated (perf report)", "sizes": {}})
        write_json(run_dir / "metrics.json", metrics)
        write_json(run_dir / "thresholds.json", {"chosen_on": "val", "selected": "f1", "labels": names,
                                                 "unit": "image", "thresholds": thresholds})
        write_json(run_dir / "timing.json", {"params": int(1e6 * (r + 3)), "flops": int(1e9 * (r + 1)),
                                             "train_seconds": 60.0 * (r + 1), "epochs": 3, "best_epoch": 2,
                                             "train_images_per_s": 100.0, "inference_ms_per_image": 1.0 + r})
        (run_dir / "config.yaml").write_text(
            f"dataset: nih\nlabels: nih14\nbackbone: {BACKBONES[r % len(BACKBONES)]}\nseed: {r}\nimage_size: 224\n"
            f"policy: zeros\nfinetune: full\nbootstrap: {n_boot}\n")
        pd.DataFrame({"epoch": [0, 1, 2], "loss": [0.5, 0.4, 0.35], "val_auroc": [0.7, 0.75, 0.76],
                      "learning_rate": [1e-3, 1e-3, 1e-4]}).to_csv(run_dir / "history.csv", index=False)
        write_status(run_dir, "done", synthetic=True, test_auroc=metrics["test"]["summary"]["auroc_macro"])
    patients = int(data["test"][0]["patient"].nunique())
    return {"patients": patients, "fabricate_seconds": time.perf_counter() - started}


REPORT_CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from reports.build import build_report
build_report(sys.argv[1], bootstrap=int(sys.argv[2]))
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak}))
"""


def perf_report(runs: int, images: int, labels: int = 14, n_boot: int = 1000, keep: str | None = None) -> dict:
    """Fabricate the sweep, then time `report` on it in a fresh process (with its peak resident memory)."""
    if keep:  # a fabricated sweep goes only into a missing or empty folder: never beside anyone's files or runs
        from benchmark.errors import UserError
        from benchmark.runs.ownership import claim, describe

        if Path(keep).is_dir() and any(Path(keep).iterdir()):
            raise UserError(f"--keep {keep} is not empty ({describe(Path(keep))}); give a missing or empty folder")
        claim(Path(keep), "sweep", "a sweep folder", "give --keep a missing or empty folder")
    tmp = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="cxr-perf-report-"))
    try:
        info = fabricate(tmp, runs, images, labels, n_boot)
        root = Path(__file__).resolve().parents[2]
        env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        result = subprocess.run([sys.executable, "-c", REPORT_CHILD, str(tmp), str(n_boot)], capture_output=True,
                                text=True, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"report failed on the fabricated sweep: {result.stderr[-2000:]}")
        timed = json.loads(result.stdout.strip().splitlines()[-1])
        summary = json.loads((tmp / "report" / "summary.json").read_text())
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    # runs that differ only in seed are one configuration (the backbones repeat every five runs): pairs of those
    configurations = len(summary.get("configurations") or {}) or runs
    pairs = configurations * (configurations - 1) // 2
    return {"benchmark": "report", "runs": runs, "images": images, "labels": labels, "patients": info["patients"],
            "resamples": n_boot, "configurations": configurations, "pairs": pairs,
            "comparisons": len(summary["comparisons"]), "seconds": timed["seconds"], "peak_mb": timed["peak_mb"],
            "cpu_count": os.cpu_count(), "fabricate_seconds": info["fabricate_seconds"]}
