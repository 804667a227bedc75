"""Reference outputs: each backbone's probabilities on a few fixed images for a fixed checkpoint, so that a user can
check that their install, engine and hardware compute what ours did (`python -m benchmark doctor --check-outputs`).

The checkpoint is defined, not downloaded: every weight is drawn from NumPy's generator with a fixed seed (normal,
scaled by the fan-in as He's initialisation; BatchNorm's scale 1, shift 0, mean 0, variance 1), so that it is the
same numbers on every engine and machine (Keras's own initialisers draw differently on each backend). The images are
four phantom radiographs at 32 px, stored in the reference file itself. Expected probabilities were computed with
TensorFlow on a CPU; each engine has its stated tolerance (the largest absolute difference allowed).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from benchmark.errors import UserError

REFERENCE = Path(__file__).parent / "resources" / "reference_outputs.json"
SEED = 20261206
IMAGE_SIZE = 32
LABELS = 5
TOLERANCE = {"tensorflow": 1e-5, "jax": 1e-4, "torch": 1e-4}  # float32; the GPU's kernels sum in other orders
GPU_TOLERANCE = 1e-3


def fixed_model(backbone: str, head_scale: float = 1.0):
    """The backbone's classifier at 32 px with the fixed checkpoint's weights; the head's kernel is multiplied by
    `head_scale` (stored with the reference) so that the probabilities are spread, not saturated at 0 or 1, where
    a difference in the computation would not show."""
    from models.classifier import build_classifier

    model = build_classifier(backbone, IMAGE_SIZE, LABELS, weights=None, dropout=0.0)
    import keras

    depthwise = {v.path for layer in model.get_layer("backbone").layers
                 if isinstance(layer, keras.layers.DepthwiseConv2D) for v in layer.weights}
    rng = np.random.default_rng(SEED)
    values = []
    for var in model.weights:
        shape, name = tuple(var.shape), var.path
        if name.endswith(("gamma", "moving_variance")):
            values.append(np.ones(shape, np.float32))
        elif name.endswith(("beta", "moving_mean", "bias")):
            values.append(np.zeros(shape, np.float32))
        else:  # a depthwise kernel (kh, kw, channels, 1) sees kh * kw inputs, not kh * kw * channels
            fan_in = int(np.prod(shape[:2] if name in depthwise else shape[:-1])) if len(shape) > 1 else 1
            scale = head_scale if name.startswith("head/") or "probabilities" in name else 1.0
            values.append((scale * rng.normal(0.0, np.sqrt(2.0 / max(1, fan_in)), shape)).astype(np.float32))
    model.set_weights(values)
    return model


def head_scale(backbone: str, images: np.ndarray) -> float:
    """The factor that gives the fixed checkpoint's logits on `images` a standard deviation of 1 (computed once,
    when the reference is written, and stored with it)."""
    model = fixed_model(backbone)
    h = images
    for name in ("to_float", "preprocess", "backbone"):
        h = model.get_layer(name)(h, training=False)
    pooled = np.asarray(h, np.float64).mean(axis=(1, 2))
    kernel = next(np.asarray(w, np.float64) for w in model.get_layer("head").weights if w.path.endswith("kernel"))
    return float(f"{1.0 / (pooled @ kernel).std():.6g}")


def reference_images(reference: dict) -> np.ndarray:
    raw = base64.b64decode(reference["images"]["uint8_base64"])
    return np.frombuffer(raw, np.uint8).reshape(reference["images"]["shape"])


def load_reference() -> dict:
    if not REFERENCE.is_file():
        raise UserError(f"{REFERENCE} is missing; reinstall cxr-bench")
    return json.loads(REFERENCE.read_text())


def _on_gpu(engine: str) -> bool:
    if engine == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if engine == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    import torch

    return torch.cuda.is_available()


def check_outputs(backbones=None) -> list[dict]:
    """Per backbone: the largest absolute difference from the reference probabilities and whether it is within this
    engine's tolerance (a GPU's where one computes)."""
    import keras

    reference = load_reference()
    images = reference_images(reference)
    engine = keras.backend.backend()
    tolerance = GPU_TOLERANCE if _on_gpu(engine) else TOLERANCE.get(engine, 1e-4)
    rows = []
    for backbone in backbones or list(reference["expected"]):
        if backbone not in reference["expected"]:
            raise UserError(f"no reference outputs for {backbone!r}; there are: {', '.join(reference['expected'])}")
        expected = np.asarray(reference["expected"][backbone], np.float64)
        got = np.asarray(fixed_model(backbone, reference["head_scale"][backbone]).predict(images, verbose=0),
                         np.float64)
        diff = float(np.abs(got - expected).max())
        rows.append({"backbone": backbone, "engine": engine, "max_abs_diff": diff, "tolerance": tolerance,
                     "ok": diff <= tolerance})
    return rows


def format_check(rows: list[dict]) -> str:
    lines = ["reference outputs (fixed checkpoint, 4 phantom images at 32 px):"]
    for r in rows:
        lines.append(f"  {r['backbone']:14s} {r['engine']:10s} largest difference {r['max_abs_diff']:.2g} "
                     f"(tolerance {r['tolerance']:g}): {'ok' if r['ok'] else 'DIFFERENT'}")
    return "\n".join(lines)


def write_reference(images: np.ndarray, backbones) -> dict:
    """Compute the expected probabilities here (maintainers, with TensorFlow on a CPU) and write the file."""
    import keras
    import tensorflow as tf

    images = np.asarray(images, np.uint8)
    reference = {"about": "benchmark/perf/reference_outputs.py", "seed": SEED, "image_size": IMAGE_SIZE, "labels": LABELS,
                 "computed_with": {"engine": keras.backend.backend(), "tensorflow": tf.__version__,
                                   "keras": keras.__version__, "device": "CPU"},
                 "tolerance": TOLERANCE, "gpu_tolerance": GPU_TOLERANCE,
                 "images": {"shape": list(images.shape),
                            "uint8_base64": base64.b64encode(images.tobytes()).decode()},
                 "head_scale": {b: head_scale(b, images) for b in backbones}}
    reference["expected"] = {b: fixed_model(b, reference["head_scale"][b]).predict(images, verbose=0)
                             .astype(float).tolist() for b in backbones}
    REFERENCE.write_text(json.dumps(reference, indent=1) + "\n")
    return reference
