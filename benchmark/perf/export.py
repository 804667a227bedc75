"""`perf export --run RUN`: latency and size of a run's exports (benchmark.evaluation.export) beside the Keras model's, on this
machine: milliseconds per image at batch 1 (the median of timed calls after warm-up) and at batch 32, and the
bytes on disk. The figures go to RUN/export/perf.json, which the run's model card and BENCHMARKS.md quote."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np

from benchmark.errors import UserError

PERF = "perf.json"


def _time(fn, x, repeats: int) -> float:
    """Median milliseconds per image of `fn(x)` over `repeats` calls, after two warm-up calls."""
    for _ in range(2):
        fn(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times) / len(x)


def perf_export(run, repeats: int = 20, batch: int = 32) -> dict:
    """Time the Keras model and every recorded export of RUN on its own test images."""
    from benchmark.evaluation.evaluate import _load_run
    from benchmark.evaluation.export import EXPORT, Runner, exports_of, size_bytes, test_images
    from benchmark.evaluation.inference import load_model
    from benchmark.evaluation.model_card import write_model_card
    from benchmark.runs.ownership import FolderLock
    from benchmark.runs.rundir import MODEL, write_json

    run, cfg, thresholds = _load_run(run)
    exports = {f: r for f, r in exports_of(run).items() if Path(r["file"]).exists()}
    if not exports:
        raise UserError(f"{run} has no exports; run `python -m benchmark export --run {run} --format savedmodel` "
                        f"first")
    images = test_images(run, cfg, limit=batch)
    if len(images) < batch:
        images = np.concatenate([images] * (batch // max(1, len(images)) + 1))[:batch]
    model = load_model(run, len(thresholds["labels"]))
    one = images[:1]
    rows = {"keras": {"file": MODEL, "bytes": size_bytes(run / MODEL),
                      "ms_batch1": _time(model.predict_on_batch, one, repeats),  # its compiled predict step
                      f"ms_batch{batch}": _time(model.predict_on_batch, images, max(3, repeats // 4))}}
    for fmt, record in exports.items():
        runner = Runner(fmt, Path(record["file"]))
        rows[fmt] = {"file": Path(record["file"]).name, "bytes": size_bytes(Path(record["file"])),
                     "ms_batch1": _time(runner, one, repeats),
                     f"ms_batch{batch}": _time(runner, images, max(3, repeats // 4)),
                     "max_abs_diff": record["max_abs_diff"]}
    result = {"benchmark": "export", "run": run.name, "backbone": cfg.backbone, "image_size": cfg.image_size,
              "batch": batch, "repeats": repeats, "cpu_count": os.cpu_count(), "engines": rows,
              "runtimes": {"keras": "Keras on TensorFlow (predict_on_batch)", "savedmodel": "tf.saved_model serve",
                           "onnx": "ONNX Runtime, CPU", "litert": "ai-edge-litert interpreter"}}
    with FolderLock(run, "command (train, evaluate, export or a sweep)"):
        write_json(run / EXPORT / PERF, result)
        write_model_card(run, finishing=True)  # its speed section quotes these figures
    return result


def format_perf(r: dict) -> str:
    batch = r["batch"]
    lines = [f"{r['run']} ({r['backbone']} at {r['image_size']} px) on {r['cpu_count']} CPU cores, ms per image "
             f"(median of {r['repeats']}):",
             f"  {'engine':11s} {'batch 1':>9s} {f'batch {batch}':>9s} {'MB':>8s}  largest difference from Keras"]
    for name, row in r["engines"].items():
        diff = f"{row['max_abs_diff']:.1g}" if "max_abs_diff" in row else "-"
        lines.append(f"  {name:11s} {row['ms_batch1']:9.2f} {row[f'ms_batch{batch}']:9.2f} "
                     f"{row['bytes'] / 1e6:8.1f}  {diff}")
    return "\n".join(lines)
