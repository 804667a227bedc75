"""The interface every engine implements: what differs between TensorFlow, JAX and PyTorch, in one place each."""

from __future__ import annotations

import os
import platform
import sys


class Engine:
    """One Keras engine. Subclasses fill in what differs; adding or fixing an engine is one module."""

    name = ""

    def setup(self, cfg):
        """Seeds, determinism, precision and devices for a run; returns its distribution strategy (or None)."""
        import keras

        keras.utils.set_random_seed(cfg.seed)
        if cfg.deterministic:
            self.deterministic()
        precision = cfg.precision
        if precision == "auto":
            precision = "mixed_float16" if self.accelerator() else "float32"
        keras.mixed_precision.set_global_policy(precision)
        return None

    def accelerator(self) -> bool:
        """Whether the engine has a GPU."""
        return False

    def deterministic(self) -> None:
        """Deterministic kernels."""

    def jit(self, cfg) -> bool:
        """Whether the training step is compiled: `xla` asks for it (XLA on TensorFlow, torch.compile on PyTorch)."""
        return bool(cfg.xla)

    def batches(self, images, rows, targets, batch_size: int, shuffle: bool = False, seed: int = 0,
                deterministic: bool = False, drop_remainder: bool = False, steps: int | None = None,
                first_epoch: int = 0):
        """Batches of (uint8 images, float32 targets) of the cache rows given, for `fit` / `predict`. `steps` caps the
        batches per epoch; `first_epoch` is the epoch training starts at (a resumed run sees an uninterrupted run's
        order). Here: a PyDataset over the cache, which never imports TensorFlow."""
        from benchmark.input.batches import CacheBatches

        return CacheBatches(images, rows, targets, batch_size, shuffle=shuffle, seed=seed,
                            drop_remainder=drop_remainder, steps=steps, first_epoch=first_epoch)

    def ten_crop(self, batch, mirror: bool = False):
        """TenCrop test-time augmentation of one batch: (B, S, S, C) -> (5 or 10, B, S, S, C)."""
        from benchmark.input.batches import ten_crop

        return ten_crop(batch, mirror)

    def gradient(self, score, feats):
        """d score(feats) / d feats (Grad-CAM)."""
        raise NotImplementedError

    def versions(self) -> dict:
        """The engine's own versions and devices for environment.json."""
        return {}

    def environment(self) -> dict:
        """environment.json: Python, Keras and the engine's versions, devices, git commit (no host name)."""
        import keras
        import numpy as np

        from benchmark.runs.rundir import git_commit

        env = {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
               "processor_count": os.cpu_count(), "keras_backend": self.name, "keras": keras.__version__,
               "numpy": np.__version__}
        env.update(self.versions())
        env["git_commit"] = git_commit()
        return env
