"""Grad-CAM (Selvaraju et al. 2017) on the backbone's last feature map, and overlays for people to look at."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def gradcam(model, batch: np.ndarray, label_index: int) -> np.ndarray:
    """Class-activation maps (B, S, S) in [0, 1] for one label, for uint8 images (B, S, S, 1), on any Keras
    backend (the gradient is taken with TensorFlow's tape, jax.grad or torch.autograd)."""
    import keras

    x = model.get_layer("to_float")(keras.ops.convert_to_tensor(np.asarray(batch)))
    x = model.get_layer("preprocess")(x)
    backbone, head = model.get_layer("backbone"), model.get_layer("head")
    feats = backbone(x, training=False)
    grads = _gradient(lambda f: keras.ops.sum(head(f, training=False)[:, label_index]), feats)
    feats = keras.ops.convert_to_numpy(feats).astype(np.float32)
    weights = np.mean(keras.ops.convert_to_numpy(grads).astype(np.float32), axis=(1, 2), keepdims=True)
    cam = np.maximum(np.sum(weights * feats, axis=-1), 0)
    size = batch.shape[1]
    out = np.zeros((len(cam), size, size), np.float32)
    for i, c in enumerate(cam):
        c = cv2.resize(c, (size, size), interpolation=cv2.INTER_CUBIC)
        top = c.max()
        out[i] = np.clip(c / top, 0, 1) if top > 0 else 0
    return out


def _gradient(score, feats):
    """d score(feats) / d feats on this process's Keras engine."""
    from benchmark.engines import current

    return current().gradient(score, feats)


def overlay(gray: np.ndarray, cam: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The radiograph with the heat map over it (BGR uint8)."""
    heat = cv2.applyColorMap((cam * 255).astype(np.uint8), cv2.COLORMAP_JET)
    base = cv2.cvtColor(gray.squeeze().astype(np.uint8), cv2.COLOR_GRAY2BGR)
    return cv2.addWeighted(base, 1 - alpha, heat, alpha, 0)


def gallery_images(frame, truth: np.ndarray, k: int) -> list[int]:
    """The same test images for every architecture of a sweep: the first k (by path) with a positive label."""
    order = np.argsort(frame["path"].to_numpy().astype(str), kind="stable")
    positive = np.nan_to_num(truth).max(axis=1) > 0 if truth.size else np.zeros(len(frame), bool)
    chosen = [int(i) for i in order if positive[i]][:k]
    return chosen + [int(i) for i in order if i not in chosen][: k - len(chosen)]


def gallery_for_run(model, images, split, labels, probs, thresholds, out_dir, k: int = 6) -> list[dict]:
    """For k test images, Grad-CAM of the label the model finds most likely (relative to its threshold)."""
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for n, i in enumerate(gallery_images(split.frame, split.truth, k)):
        t = np.array([thresholds[lab]["f1"] for lab in labels])
        j = int(np.argmax(probs[i] - t))
        img = np.asarray(images[split.rows[i]])[None, ..., None]
        cam = gradcam(model, img, j)[0]
        name = f"{n:02d}.png"
        big = cv2.resize(overlay(img[0], cam), (256, 256), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(out_dir / name), big)
        true = [labels[m] for m in range(len(labels)) if split.truth[i, m] == 1]
        entries.append({"file": name, "image": str(split.frame["path"].iloc[i]), "label": labels[j],
                        "probability": float(probs[i, j]), "true_labels": true})
    (out_dir / "gallery.json").write_text(json.dumps(entries, indent=1))
    return entries
