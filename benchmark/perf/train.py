"""`perf train`: training images/s of one backbone fed by the real pipeline and by in-memory tensors."""

from __future__ import annotations

import shutil
import time
import tempfile
from pathlib import Path

import numpy as np


def perf_train(backbone: str, image_size: int, batch_size: int, steps: int, data_root: str | None) -> dict:
    """Training images/s of one backbone fed by the real pipeline and by one in-memory batch repeated."""
    import keras
    import tensorflow as tf

    from benchmark.cache import build_cache
    from benchmark.config import Config
    from benchmark.losses import make_loss
    from benchmark.data.phantom import FOLDER, make_phantom
    from benchmark.pipeline import make_dataset
    from models.classifier import build_classifier

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
        cfg = Config(backbone=backbone, weights=None, image_size=image_size)
        model = build_classifier(cfg, len(labels))
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=make_loss("bce"))
        real = make_dataset(cache.images, cache.rows(files), targets, batch_size, shuffle=True, drop_remainder=True).repeat()
        x = np.asarray(cache.images[:batch_size])[..., None]
        # the same dynamic batch dimension as the pipeline's: oneDNN picks other kernels for a static one,
        # which changes the network's speed (either way, by network), not the feeding
        memory = tf.data.Dataset.from_tensor_slices((x, targets[:batch_size])).cache().repeat().batch(batch_size)
        rates = {}
        for name, feed in (("in_memory", memory), ("pipeline", real), ("in_memory_again", memory)):
            model.fit(feed, steps_per_epoch=max(2, steps // 4), epochs=1, verbose=0)  # warm-up and tracing
            t0 = time.perf_counter()
            model.fit(feed, steps_per_epoch=steps, epochs=1, verbose=0)
            rates[name] = steps * batch_size / (time.perf_counter() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    in_memory = max(rates["in_memory"], rates["in_memory_again"])
    return {"benchmark": "train", "backbone": backbone, "image_size": image_size, "batch_size": batch_size,
            "steps": steps, "devices": [d.name for d in tf.config.list_logical_devices()],
            "pipeline": rates["pipeline"], "in_memory": in_memory, "pipeline_vs_in_memory": rates["pipeline"] / in_memory}
