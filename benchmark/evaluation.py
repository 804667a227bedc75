"""Scoring trained models: `finish_run` (after training: predictions for val and test, thresholds chosen on val,
metrics, timing, Grad-CAM, then status done), `evaluate` (predict a split again, optionally with TenCrop) and
`predict` (probabilities, findings and Grad-CAM for image files). Nothing here trains."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmark.errors import UserError
from benchmark.inference import load_model, predict_probs, predictions_frame
from benchmark.rundir import (CONFIG, GRADCAM, METRICS, MODEL, THRESHOLDS, TIMING, predictions_file, read_config,
                              read_json, write_csv, write_json, write_status)


def finish_run(cfg, run_dir: Path, model, data, state, flops: int, steps: int, log) -> dict:
    """Predictions for val and test, thresholds from val, metrics, timing and Grad-CAM; then status done."""
    from reports.metrics import choose_thresholds, compute_metrics

    images = data.cache.images
    labels = list(data.labels)
    probs = {}
    for name in ("val", "test"):
        split = data.splits[name]
        probs[name] = predict_probs(model, images, split.rows, cfg.batch_size)
        if name == "test":
            t0 = time.perf_counter()  # second pass: without tracing
            predict_probs(model, images, split.rows, cfg.batch_size)
            infer_ms = 1000 * (time.perf_counter() - t0) / max(1, len(split.rows))
        write_csv(run_dir / predictions_file(name), predictions_frame(split, labels, probs[name]))
    test = data.splits["test"]
    thresholds = choose_thresholds(data.splits["val"].truth, probs["val"], labels)
    write_json(run_dir / THRESHOLDS, {"chosen_on": "val", "selected": "f1", "labels": labels,
                                      "thresholds": thresholds})
    metrics = {name: compute_metrics(data.splits[name].truth, probs[name], labels, data.splits[name].frame["patient"],
                                     thresholds, n_boot=cfg.bootstrap, seed=cfg.seed, curves=(name == "test"))
               for name in ("val", "test")}
    metrics["synthetic"] = data.dataset.synthetic
    write_json(run_dir / METRICS, metrics)
    epoch_seconds = state.epoch_seconds
    timed = epoch_seconds[1:] if len(epoch_seconds) > 1 else epoch_seconds
    images_per_epoch = min(len(data.splits["train"].rows), steps * cfg.batch_size)
    write_json(run_dir / TIMING, {
        "params": int(model.count_params()),
        "flops": int(flops),
        "train_seconds": float(state.train_seconds),
        "epochs": int(state.epochs_done),
        "best_epoch": state.best_epoch,
        "train_images_per_s": float(images_per_epoch * len(timed) / sum(timed)) if timed and sum(timed) else None,
        "inference_ms_per_image": float(infer_ms),
        "inference_batch_size": int(cfg.batch_size),
        "image_size": int(cfg.image_size),
    })
    if cfg.gradcam_images:
        try:
            from reports.gradcam import gallery_for_run

            gallery_for_run(model, images, test, labels, probs["test"], thresholds, run_dir / GRADCAM,
                            cfg.gradcam_images)
        except Exception as exc:  # a picture must not fail a finished training run
            log(f"warning: Grad-CAM gallery not written: {type(exc).__name__}: {exc}")
    summary = metrics["test"]["summary"]
    write_status(run_dir, "done", val_auroc=metrics["val"]["summary"]["auroc_macro"],
                 test_auroc=summary["auroc_macro"], synthetic=data.dataset.synthetic)
    log(f"{cfg.backbone}: test mean AUROC {summary['auroc_macro']}, val {metrics['val']['summary']['auroc_macro']}")
    return summary


def _load_run(run: str | Path):
    run = Path(run)
    if not (run / MODEL).is_file() or not (run / CONFIG).is_file():
        raise UserError(f"{run} is not a trained run directory (no {MODEL} / {CONFIG}); train it first")
    return run, read_config(run), read_json(run / THRESHOLDS)


def evaluate_run(run, split: str = "test", tta: bool = False, data_root: str | None = None) -> dict:
    """Predict a split again with the saved best model (TenCrop with `tta`) and rewrite its predictions and
    the split's entry of metrics.json."""
    from benchmark.prepare import prepare
    from reports.metrics import compute_metrics

    run, cfg, thresholds = _load_run(run)
    if data_root:
        cfg = cfg.replace(data_root=data_root)
    data = prepare(cfg)
    labels = list(data.labels)
    if thresholds and thresholds.get("labels") and list(thresholds["labels"]) != labels:
        raise UserError(f"{run} was trained on labels {thresholds['labels']}, the data set now gives {labels}")
    model = load_model(run, len(labels))
    part = data.splits[split]
    probs = predict_probs(model, data.cache.images, part.rows, cfg.batch_size, tta=tta)
    name = f"{split}_tta" if tta else split
    write_csv(run / predictions_file(name), predictions_frame(part, labels, probs))
    metrics = compute_metrics(part.truth, probs, labels, part.frame["patient"], (thresholds or {}).get("thresholds"),
                              n_boot=cfg.bootstrap, seed=cfg.seed)
    all_metrics = read_json(run / METRICS, {}) or {}
    all_metrics[name] = metrics
    write_json(run / METRICS, all_metrics)
    return metrics


def predict_images(run, images: list[str], gradcam_dir: str | None = None) -> list[dict]:
    """Per-label probabilities and the findings above the run's saved thresholds for each image file."""
    from benchmark.images import BadImage, load_image

    run, cfg, thresholds = _load_run(run)
    if not thresholds:
        raise UserError(f"{run} has no {THRESHOLDS}; evaluate it first")
    labels = thresholds["labels"]
    kind = thresholds.get("selected", "f1")
    t = {lab: thresholds["thresholds"][lab][kind] for lab in labels}
    arrays = []
    for path in images:
        try:
            arrays.append(load_image(path, cfg.image_size, cfg.resize, cfg.equalize))
        except BadImage as exc:
            raise UserError(str(exc)) from None
    model = load_model(run, len(labels))
    batch = np.stack(arrays)[..., None]
    probs = model.predict(batch, verbose=0)
    results = []
    out_dir = Path(gradcam_dir) if gradcam_dir else None
    for i, path in enumerate(images):
        p = {lab: float(probs[i, j]) for j, lab in enumerate(labels)}
        findings = [lab for lab in labels if p[lab] >= t[lab]]
        entry = {"image": path, "probabilities": p, "thresholds": t, "threshold_kind": kind, "findings": findings}
        if out_dir is not None:
            entry["gradcam"] = _gradcam_files(model, batch[i:i + 1], labels, findings or [max(p, key=p.get)],
                                              out_dir, Path(path).stem)
        results.append(entry)
    return results


def _gradcam_files(model, batch, labels, chosen, out_dir: Path, stem: str) -> dict:
    import cv2

    from reports.gradcam import gradcam, overlay

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for label in chosen:
        cam = gradcam(model, batch, labels.index(label))[0]
        safe = "".join(c if c.isalnum() else "_" for c in label)
        target = out_dir / f"{stem}_{safe}.png"
        cv2.imwrite(str(target), cv2.resize(overlay(batch[0], cam), (512, 512)))
        files[label] = str(target)
    return files
