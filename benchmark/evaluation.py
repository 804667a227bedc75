"""`evaluate` (recompute predictions and metrics of a trained run) and `predict` (probabilities, findings and
Grad-CAM for image files), both from a run directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.config import config_from_dict
from benchmark.errors import UserError
from benchmark.rundir import read_json, write_csv, write_json


def _load_run(run: str | Path):
    run = Path(run)
    if not (run / "model.keras").is_file() or not (run / "config.json").is_file():
        raise UserError(f"{run} is not a trained run directory (no model.keras / config.json); train it first")
    cfg = config_from_dict(read_json(run / "config.json"), str(run / "config.json"))
    thresholds = read_json(run / "thresholds.json")
    return run, cfg, thresholds


def _load_model(run: Path, n_labels: int):
    import keras

    import benchmark.losses  # noqa: F401  (registers the custom losses)
    import models.layers  # noqa: F401  (registers the preprocessing layer)

    model = keras.models.load_model(run / "model.keras", compile=False)
    if model.output_shape[-1] != n_labels:
        raise UserError(f"{run}/model.keras predicts {model.output_shape[-1]} labels but its thresholds.json names "
                        f"{n_labels}; the run directory is inconsistent, retrain it")
    return model


def evaluate_run(run, split: str = "test", tta: bool = False, data_root: str | None = None) -> dict:
    """Predict a split again with the saved best model (TenCrop with `tta`) and rewrite its predictions and
    the split's entry of metrics.json."""
    from benchmark.prepare import prepare
    from benchmark.training import predict_probs, predictions_frame
    from reports.metrics import compute_metrics

    run, cfg, thresholds = _load_run(run)
    if data_root:
        cfg = cfg.replace(data_root=data_root)
    data = prepare(cfg)
    labels = list(data.labels)
    if thresholds and thresholds.get("labels") and list(thresholds["labels"]) != labels:
        raise UserError(f"{run} was trained on labels {thresholds['labels']}, the data set now gives {labels}")
    model = _load_model(run, len(labels))
    part = data.splits[split]
    probs = predict_probs(model, data.cache.images, part.rows, cfg.batch_size, tta=tta)
    suffix = "_tta" if tta else ""
    write_csv(run / f"predictions_{split}{suffix}.csv", predictions_frame(part, labels, probs))
    metrics = compute_metrics(part.truth, probs, labels, part.frame["patient"], (thresholds or {}).get("thresholds"),
                              n_boot=cfg.bootstrap, seed=cfg.seed)
    all_metrics = read_json(run / "metrics.json", {}) or {}
    all_metrics[f"{split}{suffix}"] = metrics
    write_json(run / "metrics.json", all_metrics)
    return metrics


def predict_images(run, images: list[str], gradcam_dir: str | None = None) -> list[dict]:
    """Per-label probabilities and the findings above the run's saved thresholds for each image file."""
    from benchmark.images import BadImage, load_image

    run, cfg, thresholds = _load_run(run)
    if not thresholds:
        raise UserError(f"{run} has no thresholds.json; evaluate it first")
    labels = thresholds["labels"]
    kind = thresholds.get("selected", "f1")
    t = {lab: thresholds["thresholds"][lab][kind] for lab in labels}
    arrays = []
    for path in images:
        try:
            arrays.append(load_image(path, cfg.image_size, cfg.resize, cfg.equalize))
        except BadImage as exc:
            raise UserError(str(exc)) from None
    model = _load_model(run, len(labels))
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
