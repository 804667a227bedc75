"""`perf train`: training images/s of one backbone on this process's Keras backend (TensorFlow, JAX or PyTorch),
fed by the real input path and by one in-memory batch repeated, and with `--reference torch` beside a plain
PyTorch network of the same architecture (benchmark/perf/reference.py). Without augmentation, as the reference
has none (and JAX compiles it slowly on a CPU)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def perf_train(backbone: str, image_size: int, batch_size: int, steps: int, data_root: str | None,
               precision: str = "float32", reference: str | None = None) -> dict:
    """Training images/s of one backbone fed by the real input path and by one in-memory batch repeated; with
    `reference="torch"`, the PyTorch reference's images/s on the same batch, measured in this process."""
    import keras

    from benchmark.config import Config
    from benchmark.engines import current
    from benchmark.input.batches import CacheBatches
    from benchmark.input.cache import build_cache
    from benchmark.phantom import FOLDER, make_phantom
    from benchmark.train.network import classifier_for
    from models.losses import make_loss

    engine = keras.backend.backend()
    keras.mixed_precision.set_global_policy(precision)
    tmp = Path(tempfile.mkdtemp(prefix="cxr-perf-"))
    try:
        if data_root is None:
            make_phantom(tmp, n=max(64, steps * batch_size), size=max(image_size, 64), seed=0)
            data_root = str(tmp / FOLDER)
        from benchmark.data.formats import default_csv
        from benchmark.data.load import load_table

        ds = load_table("phantom", default_csv("phantom", Path(data_root)), data_root, views="all")
        files = ds.frame["file"].tolist()
        cache = build_cache(files, image_size, cache_dir=tmp / "cache", log=None)
        labels = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
        targets = ds.frame[labels].fillna(0).clip(0, 1).to_numpy(np.float32)
        cfg = Config(backbone=backbone, weights=None, image_size=image_size, augment=False, precision=precision)
        model = classifier_for(cfg, len(labels))
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=make_loss("bce"),
                      jit_compile=True if engine == "jax" else "auto")
        rows = cache.rows(files)
        x = np.asarray(cache.images[:batch_size])[..., None]
        warm = max(2, steps // 4)
        if engine == "tensorflow":
            import tensorflow as tf

            real = current().batches(cache.images, rows, targets, batch_size, shuffle=True, drop_remainder=True, steps=steps)
            # the same dynamic batch dimension as the pipeline's: oneDNN picks other kernels for a static one,
            # which changes the network's speed (either way, by network), not the feeding
            memory = tf.data.Dataset.from_tensor_slices((x, targets[:batch_size])).cache().repeat().batch(batch_size)
            feeds = {"in_memory": (memory, memory), "pipeline": (real, real)}
        else:  # PyDatasets sized to the steps: the cache's rows (repeated where fewer), and one batch's rows over
            # and over (its pages stay in memory; the gather is the PyDataset's own cost)
            def pipeline(n):
                reps = -(-n * batch_size // len(rows))
                return current().batches(cache.images, np.tile(rows, reps), np.tile(targets, (reps, 1)), batch_size,
                                         shuffle=True, drop_remainder=True, steps=n)

            def memory(n):
                return CacheBatches(cache.images, np.tile(rows[:batch_size], n), np.tile(targets[:batch_size], (n, 1)),
                                    batch_size)

            feeds = {"in_memory": (memory(warm), memory(steps)), "pipeline": (pipeline(warm), pipeline(steps))}
        rates = {}
        for name in ("in_memory", "pipeline", "in_memory_again"):
            warm_feed, feed = feeds[name.replace("_again", "")]
            model.fit(warm_feed, steps_per_epoch=warm, epochs=1, verbose=0)  # warm-up and tracing
            t0 = time.perf_counter()
            model.fit(feed, steps_per_epoch=steps, epochs=1, verbose=0)
            rates[name] = steps * batch_size / (time.perf_counter() - t0)
        ref = None
        if reference == "torch":
            from benchmark.perf.reference import reference_rate

            ref = reference_rate(backbone, x, targets[:batch_size], precision, steps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    in_memory = max(rates["in_memory"], rates["in_memory_again"])
    result = {"benchmark": "train", "backbone": backbone, "engine": engine, "precision": precision,
              "image_size": image_size, "batch_size": batch_size, "steps": steps, "devices": _devices(engine),
              "pipeline": rates["pipeline"], "in_memory": in_memory,
              "pipeline_vs_in_memory": rates["pipeline"] / in_memory}
    if ref is not None:
        result["reference"] = ref
        result["in_memory_vs_reference"] = in_memory / ref["images_per_s"] if ref["images_per_s"] else None
    return result


def _devices(engine: str) -> list[str]:
    if engine == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices()]
    if engine == "jax":
        import jax

        return [f"{d.platform}:{d.id}" for d in jax.devices()]
    import torch

    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
