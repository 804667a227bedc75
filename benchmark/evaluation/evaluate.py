"""Scoring trained models: `finish_run` (after training: predictions for val and test, thresholds chosen on val,
metrics, timing, Grad-CAM, then status done), `evaluate` (predict a split again, optionally with TenCrop) and
`predict` (probabilities, findings and Grad-CAM for image files). Nothing here trains."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from benchmark.errors import UserError
from benchmark.evaluation.inference import load_model, predict_probs, predictions_frame
from benchmark.runs.run import Run
from benchmark.runs.rundir import (
    CONFIG,
    EXTERNAL,
    EXTERNAL_PREDICTIONS,
    FINGERPRINT,
    GRADCAM,
    METRICS,
    MODEL,
    THRESHOLDS,
    TIMING,
    predictions_file,
    read_json,
    write_csv,
    write_json,
    write_status,
)


def scoring_unit(cfg) -> str:
    """"image" or "study": score_by, or (auto) studies where the data set has them (CheXpert), images elsewhere."""
    from benchmark.data.formats import get_format

    if cfg.score_by != "auto":
        return cfg.score_by
    return "study" if get_format(cfg.dataset).has_studies else "image"


def finish_run(cfg, run_dir: Path, model, data, state, flops: int, steps: int, log) -> dict:
    """Predictions for val and test, thresholds chosen on val, metrics (at the scoring unit, with subgroups),
    timing, Grad-CAM and the external test sets; then status done."""
    from benchmark.evaluation.metrics import choose_thresholds, score_split
    from benchmark.evaluation.scoring import score_units

    images = data.cache.images
    labels = list(data.labels)
    unit = scoring_unit(cfg)
    probs, frames = {}, {}
    for name in ("val", "test"):
        split = data.splits[name]
        probs[name] = predict_probs(model, images, split.rows, cfg.batch_size)
        if name == "test":
            t0 = time.perf_counter()  # second pass: without tracing
            predict_probs(model, images, split.rows, cfg.batch_size)
            infer_ms = 1000 * (time.perf_counter() - t0) / max(1, len(split.rows))
        frames[name] = predictions_frame(split, labels, probs[name])
        write_csv(run_dir / predictions_file(name), frames[name])
    test = data.splits["test"]
    val_scored = score_units(frames["val"], data.splits["val"].truth, probs["val"], unit, cfg.study_reduce)
    thresholds = choose_thresholds(val_scored.truth, val_scored.probs, labels)
    write_json(run_dir / THRESHOLDS, {"chosen_on": "val", "selected": "f1", "labels": labels, "unit": unit,
                                      "thresholds": thresholds})
    metrics = {name: score_split(frames[name], data.splits[name].truth, probs[name], labels, unit,
                                 cfg.study_reduce, thresholds, cfg.bootstrap, curves=(name == "test"),
                                 min_positives=cfg.min_positives)
               for name in ("val", "test")}
    metrics["synthetic"] = data.dataset.synthetic
    metrics["protocol"] = data.protocol
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
            from benchmark.evaluation.gradcam import gallery_for_run

            gallery_for_run(model, images, test, labels, probs["test"], thresholds, run_dir / GRADCAM,
                            cfg.gradcam_images)
        except Exception as exc:  # a picture must not fail a finished training run
            log(f"warning: Grad-CAM gallery not written: {type(exc).__name__}: {exc}")
    write_status(run_dir, "running", pid=os.getpid(), stage="external test sets")
    for spec in cfg.external:  # the data were checked when the run started
        evaluate_external(run_dir, spec["dataset"], spec["data_root"], spec.get("csv"), spec.get("split", "all"),
                          spec.get("name"), model=model, log=log)
    from benchmark.evaluation.model_card import write_model_card

    write_model_card(run_dir, finishing=True)  # before "done": a finished run always has its card
    summary = metrics["test"]["summary"]
    write_status(run_dir, "done", val_auroc=metrics["val"]["summary"]["auroc_macro"],
                 test_auroc=summary["auroc_macro"], synthetic=data.dataset.synthetic)
    log(f"{cfg.backbone}: test mean AUROC {summary['auroc_macro']}, val {metrics['val']['summary']['auroc_macro']}")
    return summary


def evaluate_external(run, dataset: str, data_root, csv=None, split: str = "all", name: str | None = None,
                      model=None, log=print) -> dict:
    """Score a trained run on another data set, on the labels both share (names mapped through
    benchmark.data.labels.CANONICAL), with the run's own thresholds and preprocessing; writes
    RUN/external/<name>/predictions.csv and metrics.json (the columns and keys of the run's own test files).
    `split`: every image of the data set ("all"), or its test set under its default protocol ("test")."""
    from types import SimpleNamespace

    from benchmark.data.formats import default_csv
    from benchmark.data.labels import shared_labels
    from benchmark.data.load import assign_splits, load_table
    from benchmark.data.policies import evaluation_targets
    from benchmark.evaluation.metrics import score_split
    from benchmark.input.cache import build_cache

    run, cfg, thresholds = _load_run(run)
    if not thresholds:
        raise UserError(f"{run} has no {THRESHOLDS}; it did not finish")
    name = name or dataset
    if not name.replace("-", "").replace("_", "").isalnum():
        raise UserError(f"external set name {name!r}: use letters, digits, - and _")
    root = Path(data_root)
    ext_csv = Path(csv) if csv else default_csv(dataset, root)
    ds = load_table(dataset, ext_csv, root, views=cfg.views)
    if split == "test":
        ds = assign_splits(ds, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
        frame = ds.frame[ds.frame["split"] == "test"].reset_index(drop=True)
    else:
        frame = ds.frame
    trained = list(thresholds["labels"])
    shared = shared_labels(trained, ds.labels)
    if not shared:
        raise UserError(f"{run} was trained on {', '.join(trained)}; {ext_csv} has none of them "
                        f"({', '.join(ds.labels)})")
    labels = list(shared)
    truth = evaluation_targets(frame[[shared[lab] for lab in labels]].to_numpy(np.float32), cfg.blank)
    cache = build_cache(frame["file"].tolist(), cfg.image_size, cfg.resize, cfg.equalize, cfg.cache_dir,
                        cfg.skip_bad_images, log=log, max_pixels=cfg.max_image_pixels)
    if cache.bad:
        keep = ~frame["file"].isin({cache.files[i] for i, _ in cache.bad}).to_numpy()
        frame, truth = frame[keep].reset_index(drop=True), truth[keep]
    if model is None:
        model = load_model(run, len(trained))
    probs_all = predict_probs(model, cache.images, cache.rows(frame["file"].tolist()), cfg.batch_size)
    probs = probs_all[:, [trained.index(lab) for lab in labels]]
    table = predictions_frame(SimpleNamespace(frame=frame, truth=truth), labels, probs)
    ext_cfg = cfg.replace(dataset=dataset, score_by="auto")
    chosen = {lab: thresholds["thresholds"][lab] for lab in labels}
    metrics = score_split(table, truth, probs, labels, scoring_unit(ext_cfg), cfg.study_reduce, chosen,
                          cfg.bootstrap, min_positives=cfg.min_positives)
    out = run / EXTERNAL / name
    write_csv(out / EXTERNAL_PREDICTIONS, table)
    record = {"test": metrics, "synthetic": ds.synthetic, "protocol": ds.protocol,
              "source": {"dataset": dataset, "label_file": Path(ext_csv).name, "split": split,
                         "images": int(len(frame)), "labels": {lab: shared[lab] for lab in labels}}}
    write_json(out / METRICS, record)
    log(f"{run.name} on {name}: mean AUROC {metrics['summary']['auroc_macro']} over {', '.join(labels)}")
    return record


def check_external(cfg) -> None:
    """Fail before training, not after it, when an external test set of the profile cannot be read."""
    from benchmark.data.formats import default_csv
    from benchmark.data.load import load_table

    for spec in cfg.external:
        root = Path(spec["data_root"])
        load_table(spec["dataset"], Path(spec["csv"]) if spec.get("csv") else default_csv(spec["dataset"], root),
                   root, need_files=False)


def open_trained(run: str | Path | Run) -> Run:
    """A trained run's folder (it holds model.keras and config.yaml) as a `Run`; anything else is one line."""
    run = run if isinstance(run, Run) else Run(Path(run))
    if not run.has_model or not run.file(CONFIG).is_file():
        raise UserError(f"{run.path} is not a trained run directory (no {MODEL} / {CONFIG}); train it first")
    return run


def _load_run(run: str | Path):
    """(folder, its Config, thresholds.json or None) of a trained run, through `open_trained` (evaluate, predict,
    export and `perf export` read a run this way)."""
    trained = open_trained(run)
    return trained.path, trained.config, trained.thresholds_file or None


def evaluate_run(run, split: str = "test", tta: bool = False, data_root: str | None = None) -> dict:
    """Predict a split again with the saved best model (TenCrop with `tta`) and rewrite its predictions and
    the split's entry of metrics.json."""
    from benchmark.evaluation.metrics import score_split
    from benchmark.input.prepare import prepare

    run, cfg, thresholds = _load_run(run)
    if data_root:
        cfg = cfg.replace(data_root=data_root)
    data = prepare(cfg)
    check_same_labels(run, data.fingerprint())
    labels = list(data.labels)
    if thresholds and thresholds.get("labels") and list(thresholds["labels"]) != labels:
        raise UserError(f"{run} was trained on labels {thresholds['labels']}, the data set now gives {labels}")
    model = load_model(run, len(labels))
    part = data.splits[split]
    probs = predict_probs(model, data.cache.images, part.rows, cfg.batch_size, tta=tta, mirror=cfg.hflip)
    name = f"{split}_tta" if tta else split
    frame = predictions_frame(part, labels, probs)
    write_csv(run / predictions_file(name), frame)
    metrics = score_split(frame, part.truth, probs, labels, scoring_unit(cfg), cfg.study_reduce,
                          (thresholds or {}).get("thresholds"), cfg.bootstrap, min_positives=cfg.min_positives)
    all_metrics = read_json(run / METRICS, {}) or {}
    all_metrics[name] = metrics
    write_json(run / METRICS, all_metrics)
    return metrics


def check_same_labels(run: Path, now: dict) -> None:
    """Refuse to rewrite a run's predictions and metrics from label files whose content differs from those it was
    trained on (its fingerprint.json): its metrics would mix two versions of the data. Moved images (--data-root)
    are fine: the files' contents are compared, not their paths."""
    saved = (Run(run).fingerprint or {}).get("data") or {}
    before = sorted(saved.get("label_files", {}).values())
    if before and before != sorted(now.get("label_files", {}).values()):
        raise UserError(f"{run} was trained on other label files than {', '.join(now.get('label_files', {}))} hold "
                        f"now (their contents differ from its {FINGERPRINT}); nothing was rewritten. Restore them, "
                        f"or train the run again")


def predict_images(run, images: list[str], gradcam_dir: str | None = None) -> list[dict]:
    """Per-label probabilities and the findings above the run's saved thresholds for each image file."""
    from benchmark.input.images import BadImage, load_image

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
                                              out_dir, overlay_stem(i, path))
        results.append(entry)
    return results


def _gradcam_files(model, batch, labels, chosen, out_dir: Path, stem: str) -> dict:
    import cv2

    from benchmark.evaluation.gradcam import gradcam, overlay

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for label in chosen:
        cam = gradcam(model, batch, labels.index(label))[0]
        safe = "".join(c if c.isalnum() else "_" for c in label)
        ok, png = cv2.imencode(".png", cv2.resize(overlay(batch[0], cam), (512, 512)))
        files[label] = str(write_new(out_dir, f"{stem}_{safe}", ".png", png.tobytes()))
    return files


def overlay_stem(index: int, path) -> str:
    """The overlays' name for the index-th input: its position first, so that two inputs of one file name (every
    CheXpert image is view1_frontal.jpg) never share a file."""
    return f"{index + 1:03d}_{Path(path).stem}"


def write_new(folder: Path, stem: str, suffix: str, data: bytes) -> Path:
    """Write `data` to a new file folder/stem+suffix, or stem-2+suffix, ... if that exists: an existing file (a
    user's, or an earlier predict's) is never replaced, and a link there is never followed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for n in range(1, 10_000):
        target = folder / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
        try:
            fd = os.open(target, flags, 0o666)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return target
    raise UserError(f"{folder} holds too many files named {stem}*{suffix}; choose another --gradcam folder")
