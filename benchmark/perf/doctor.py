"""`python -m benchmark doctor`: what this machine offers and how fast it trains each backbone in each setting, the
figures a user needs to choose `precision`, `xla` and `batch_size` before a long run.

It lists the devices, the CUDA and cuDNN versions TensorFlow was built with, and memory; then for each backbone,
training images/s on one in-memory batch repeated in float32, in mixed precision (float16 on a GPU, bfloat16 on a
CPU), and in mixed precision with XLA, and, with the float32 model, the real input pipeline over a decode-once cache
of a small phantom against the same in-memory batch. It keeps to a time budget (4 minutes by default): a setting
is started only when it should end within the budget, judged by the backbone's previous setting, and what does not
fit is marked skipped. Without a GPU, XLA (whose compilation alone takes minutes on a CPU, where it runs slower
anyway) is measured on the first backbone only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmark.errors import UserError

DEFAULT_BACKBONES = ("mobilenet", "resnet34", "resnet50", "densenet121", "resnet101")


def machine() -> dict:
    """Devices, the CUDA / cuDNN versions TensorFlow was built with, host memory, versions."""
    import keras
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    gpus = []
    for g in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(g)
        except (ValueError, RuntimeError):
            details = {}
        gpus.append({"name": details.get("device_name", g.name),
                     "compute_capability": ".".join(map(str, details.get("compute_capability", ()) or ()))})
    memory = None
    try:
        with open("/proc/meminfo") as fh:
            memory = int(fh.readline().split()[1]) // 1024  # MemTotal, kB -> MB
    except (OSError, ValueError, IndexError):
        pass
    from benchmark.cores import usable_cores

    return {"tensorflow": tf.__version__, "keras": keras.__version__, "cuda": build.get("cuda_version"),
            "cudnn": build.get("cudnn_version"), "gpus": gpus, "cores": usable_cores(), "memory_mb": memory}


def _rate(model, feed, steps: int, batch_size: int) -> float:
    model.fit(feed, steps_per_epoch=2, epochs=1, verbose=0)  # tracing, compilation, warm-up
    t0 = time.perf_counter()
    model.fit(feed, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch_size / (time.perf_counter() - t0)


def _model(backbone: str, size: int, labels: int, policy: str, xla: bool):
    import keras

    from benchmark.config import Config
    from benchmark.train.network import classifier_for
    from models.losses import make_loss

    keras.mixed_precision.set_global_policy(policy)
    keras.utils.clear_session()
    model = classifier_for(Config(backbone=backbone, weights=None, image_size=size, augment=False), labels)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=make_loss("bce"), jit_compile=xla)
    return model


def doctor(backbones=DEFAULT_BACKBONES, image_size: int = 64, batch_size: int = 16, steps: int = 5,
           pipeline: bool = True, log=print, budget: float = 240.0) -> dict:
    """The machine and the throughput table (images/s); see the module's docstring."""
    import keras
    import tensorflow as tf

    from benchmark.data.formats import default_csv
    from benchmark.data.load import load_table
    from benchmark.input.cache import build_cache
    from benchmark.input.pipeline import make_dataset
    from benchmark.phantom import FOLDER, make_phantom
    from models.registry import get_spec

    for name in backbones:
        get_spec(name)
    info = machine()
    mixed = "mixed_float16" if info["gpus"] else "mixed_bfloat16"
    variants = (("float32", "float32", False), ("mixed", mixed, False), ("mixed+xla", mixed, True))
    labels = 5
    tmp = Path(tempfile.mkdtemp(prefix="cxr-doctor-"))
    rows: list[dict] = []
    started = time.perf_counter()
    try:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 255, (batch_size, image_size, image_size, 1)).astype(np.uint8)
        y = (rng.random((batch_size, labels)) < 0.3).astype(np.float32)
        memory = tf.data.Dataset.from_tensor_slices((x, y)).cache().repeat().batch(batch_size)
        real = None
        if pipeline:
            make_phantom(tmp, n=max(64, 2 * batch_size * steps), size=max(image_size, 64), seed=0)
            ds = load_table("phantom", default_csv("phantom", tmp / FOLDER), tmp / FOLDER, views="all")
            files = ds.frame["file"].tolist()
            cache = build_cache(files, image_size, cache_dir=tmp / "cache", log=None)
            targets = ds.frame[["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]]
            targets = targets.fillna(0).clip(0, 1).to_numpy(np.float32)
            real = make_dataset(cache.images, cache.rows(files), targets, batch_size, shuffle=True,
                                drop_remainder=True).repeat()
        rows = [{"backbone": name} for name in backbones]
        # setting by setting, so that the float32 column (what a CPU trains in) is complete before the GPU settings
        for key, policy, xla in variants:
            for n, row in enumerate(rows):
                name = row["backbone"]
                if xla and not info["gpus"] and n > 0:
                    row[f"{key}_skipped"] = "no GPU: XLA measured on the first backbone only"
                    continue
                # what this setting should take: this backbone's float32 setting without its two extra feeds,
                # or for the first setting, the previous backbone's
                previous = row.get("float32_seconds") or (rows[n - 1].get("float32_seconds") if n else 0.0) or 0.0
                expected = previous / (1.3 if real is not None and "float32_seconds" in row else 1.0)
                if time.perf_counter() - started + expected > budget:
                    row[f"{key}_skipped"] = "time budget (--budget)"
                    continue
                t0 = time.perf_counter()
                try:
                    model = _model(name, image_size, labels, policy, xla)
                    row[key] = _rate(model, memory, steps, batch_size)
                    if key == "float32" and real is not None:  # the same traced model, fed by the real pipeline
                        row["pipeline"] = _rate(model, real, steps, batch_size)
                        # in memory again, and averaged with the first: a few steps on a shared CPU are noisy
                        row["in_memory"] = (row[key] + _rate(model, memory, steps, batch_size)) / 2
                except Exception as exc:  # a setting this machine cannot run is a finding, not a failure
                    row[key] = None
                    row[f"{key}_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
                row[f"{key}_seconds"] = time.perf_counter() - t0
                if log:
                    rate = f"{row[key]:.1f} images/s" if row[key] else "failed"
                    log(f"{name} {key}: {rate} ({row[f'{key}_seconds']:.0f} s)")
    finally:
        keras.mixed_precision.set_global_policy("float32")
        shutil.rmtree(tmp, ignore_errors=True)
    return {"benchmark": "doctor", "machine": info, "image_size": image_size, "batch_size": batch_size,
            "steps": steps, "mixed": mixed, "rows": rows, "seconds": time.perf_counter() - started}


def _num(r: dict, key: str) -> str:
    v = r.get(key)
    if isinstance(v, (int, float)):
        return f"{v:9.1f}"
    return f"{'skipped' if r.get(f'{key}_skipped') else 'failed':>9s}"


def format_row(r: dict) -> str:
    text = f"{r['backbone']:14s} {_num(r, 'float32')} {_num(r, 'mixed')} {_num(r, 'mixed+xla')}"
    if r.get("pipeline"):
        text += (f"   {r['pipeline']:9.1f} vs {r['in_memory']:9.1f} "
                 f"({100 * r['pipeline'] / r['in_memory']:.0f}%)")
    return text


def format_doctor(result: dict) -> str:
    m = result["machine"]
    gpus = ", ".join(f"{g['name']} (compute {g['compute_capability']})" for g in m["gpus"]) or "none"
    lines = [f"TensorFlow {m['tensorflow']}, Keras {m['keras']}; built with CUDA {m['cuda'] or '-'}, "
             f"cuDNN {m['cudnn'] or '-'}",
             f"GPUs: {gpus}; {m['cores']} usable CPU cores; {m['memory_mb'] or '?'} MB memory",
             "",
             f"training images/s at {result['image_size']} px, batch {result['batch_size']} "
             f"(mixed = {result['mixed']}):",
             f"{'backbone':14s} {'float32':>9s} {'mixed':>9s} {'mixed+xla':>9s}   float32 fed by the pipeline vs "
             f"in memory"]
    lines += [format_row(r) for r in result["rows"]]
    errors = [f"  {r['backbone']} {k[:-6]}: {v}" for r in result["rows"] for k, v in r.items() if k.endswith("_error")]
    if errors:
        lines += ["", "settings that failed:"] + errors
    skipped = sorted({v for r in result["rows"] for k, v in r.items() if k.endswith("_skipped")})
    if skipped:
        lines += ["", "skipped: " + "; ".join(skipped)]
    lines += ["", f"measured in {result['seconds']:.0f} s"]
    if not m["gpus"]:
        lines += ["", "no GPU: XLA and mixed precision are for GPUs (on a CPU they are usually slower)"]
    return "\n".join(lines)


def check_args(backbones, image_size: int, batch_size: int, steps: int) -> None:
    if image_size < 32 or batch_size < 1 or steps < 1:
        raise UserError("doctor: --image-size at least 32, --batch-size and --steps at least 1")
    if not backbones:
        raise UserError("doctor: name at least one backbone")
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        pass  # GPUs hidden on purpose: a CPU table
