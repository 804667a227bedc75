"""The input path of Keras's JAX and PyTorch engines: a `keras.utils.PyDataset` over the decode-once uint8 cache, so that
those paths never import TensorFlow (TensorFlow's is tf.data, `benchmark.input.pipeline`). Which one a run uses is
its engine's choice (`Engine.batches` in benchmark/engines/): nothing here asks which engine runs.

Both give batches of uint8 grayscale (B, S, S, 1) with float32 targets (NaN = ignored), read as sorted gathers
from the cache's memory map; the model casts, augments and normalises them on the accelerator (models/layers.py),
so augmentation is the same on every backend. Shuffling differs in one respect, to the PyDataset's advantage: its
order is a function of the seed and the epoch's count (Keras also counts one epoch end before each `fit`), so a run
resumed after an interruption within a fine-tuning phase sees the same batches as one that was not interrupted
(a run resumed across the phase boundary of `finetune: gradual` sees another, still seeded, order).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from benchmark.cores import usable_cores


def image_batches(data, limit: int | None = None):
    """The image part of the first `limit` batches of an engine's `batches(...)`, as NumPy arrays, on any backend."""
    if hasattr(data, "take"):  # tf.data
        data = data.take(limit) if limit else data
        for x, _ in data.as_numpy_iterator():
            yield x
        return
    for i in range(len(data) if limit is None else min(limit, len(data))):
        yield data[i][0]


class CacheBatches(keras.utils.PyDataset):
    """Batches of cache rows for Keras's JAX and PyTorch backends. Reads run in a small thread pool (NumPy's
    gathers release the GIL) and arrive in order."""

    def __init__(self, images, rows, targets, batch_size: int, shuffle: bool = False, seed: int = 0,
                 drop_remainder: bool = False, steps: int | None = None, first_epoch: int = 0):
        super().__init__(workers=max(1, min(4, usable_cores())), use_multiprocessing=False, max_queue_size=4)
        self.images = images
        self.rows = np.asarray(rows, dtype=np.int64)
        self.targets = np.asarray(targets, dtype=np.float32)
        self.batch_size = int(batch_size)
        self.shuffle, self.seed = shuffle, int(seed)
        n = len(self.rows)
        full = n // self.batch_size if drop_remainder else math.ceil(n / self.batch_size)
        self.steps = min(full, steps) if steps else full
        self.epoch = int(first_epoch)
        self._order = self._order_for(self.epoch)

    def _order_for(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.rows))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int):
        if not 0 <= index < self.steps:
            raise IndexError(index)
        batch = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        r = self.rows[batch]
        if self.shuffle:  # sorted reads are sequential on disk; the order inside a shuffled batch does not matter
            order = np.argsort(r, kind="stable")
            r, batch = r[order], batch[order]
        return np.ascontiguousarray(self.images[r])[..., None], self.targets[batch]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._order_for(self.epoch)


def ten_crop(batch: np.ndarray, mirror: bool = False) -> np.ndarray:
    """TenCrop test-time augmentation in NumPy, for any backend: the image enlarged by 8/7 (bilinear, as
    `benchmark.input.pipeline.ten_crop`), its four corner crops and its centre crop at the original size (the centre
    rounded, not truncated), and with `mirror` their mirror images. (B, S, S, C) -> (5 or 10, B, S, S, C)."""
    import cv2

    batch = np.asarray(batch)
    size = batch.shape[1]
    big = int(round(size * 8 / 7))
    up = np.stack([cv2.resize(img.astype(np.float32), (big, big), interpolation=cv2.INTER_LINEAR).reshape(
        big, big, -1) for img in batch])
    up = np.round(up).astype(batch.dtype)
    off = big - size
    centre = int(off / 2 + 0.5)
    starts = [(0, 0), (0, off), (off, 0), (off, off), (centre, centre)]
    crops = [up[:, y:y + size, x:x + size, :] for y, x in starts]
    if mirror:
        crops += [c[:, :, ::-1, :] for c in crops]
    return np.stack(crops)
