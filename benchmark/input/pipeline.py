"""The tf.data input pipeline over the decode-once image cache.

Batches leave the pipeline as uint8 grayscale (B, S, S, 1) with float32 targets (NaN = ignored): one byte per
pixel crosses to the accelerator, where the model casts, augments, makes three channels and applies the backbone's
own preprocessing (see models/layers.py). Reads are batched gathers: from one tensor over the cache's memory map
(shared, not copied) for caches up to IN_MEMORY_BYTES, else from the memory map in sorted order.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from benchmark.cores import usable_cores
from benchmark.input.cache import IN_MEMORY_BYTES

PARALLEL = usable_cores()  # batches gathered at once
PREFETCH = 4  # batches read ahead
_TENSORS: dict = {}


def _as_tensor(images: np.ndarray):
    key = (getattr(images, "filename", None) or id(images), images.shape)
    if key not in _TENSORS:
        _TENSORS.clear()  # one cache at a time
        _TENSORS[key] = _share(images)
    return _TENSORS[key]


def release_tensors() -> None:
    """Drop the tensor held over the last cache (it keeps the cache's memory map open)."""
    _TENSORS.clear()


def _share(images: np.ndarray) -> tf.Tensor:
    """A tensor over the array's own memory where possible (a memory map is shared, not copied: tf.constant
    copies at about 0.5 GB/s, a second per 20,000 images at 224 px)."""
    filename = getattr(images, "filename", None)
    if filename and not images.flags.writeable:  # DLPack cannot export read-only arrays; a private map can be
        images = np.memmap(filename, dtype=images.dtype, mode="c", shape=images.shape, offset=images.offset)
    arr = np.asarray(images)
    if arr.flags.c_contiguous and arr.flags.writeable and arr.ctypes.data % 64 == 0:  # TensorFlow needs alignment
        return tf.experimental.dlpack.from_dlpack(arr.__dlpack__())
    return tf.constant(arr)


def make_dataset(images: np.ndarray, rows: np.ndarray, targets: np.ndarray, batch_size: int, shuffle: bool = False,
                 seed: int = 0, deterministic: bool = False, drop_remainder: bool = False) -> tf.data.Dataset:
    """Batches of (uint8 images [B, S, S, 1], float32 targets [B, L]) for the cache rows given.

    With `shuffle`, the order changes every epoch from a seeded generator; otherwise it is the order of `rows`.
    """
    n = len(rows)
    size = images.shape[1]
    n_labels = targets.shape[1]
    rows = np.asarray(rows, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.float32)

    def gather(batch):
        r = rows[batch]
        if shuffle:  # sorted reads are sequential on disk; the order inside a shuffled batch does not matter
            order = np.argsort(r, kind="stable")
            r, batch = r[order], batch[order]
        return images[r][..., None], targets[batch]

    idx = tf.data.Dataset.range(n)
    if shuffle:
        idx = idx.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    idx = idx.batch(batch_size, drop_remainder=drop_remainder)
    order = bool(deterministic or not shuffle)  # set per map: the global option is a slow graph rewrite
    if images.nbytes <= IN_MEMORY_BYTES:
        all_images = tf.reshape(_as_tensor(images), [-1, size, size, 1])  # the same memory, seen as (N, S, S, 1)
        all_rows, all_targets = tf.constant(rows), tf.constant(targets)

        def read(b):  # the fewest ops: tracing costs about 1 ms each, at every start of a pipeline
            return tf.gather(all_images, tf.gather(all_rows, b)), tf.gather(all_targets, b)
    else:
        shapes = ([None, size, size, 1], [None, n_labels])

        def read(b):
            x, y = tf.numpy_function(gather, [b], (tf.uint8, tf.float32), stateful=False)
            return tf.ensure_shape(x, shapes[0]), tf.ensure_shape(y, shapes[1])
    # plain TensorFlow ops: no AutoGraph conversion needed (saves its tracing time at every start)
    ds = idx.map(tf.autograph.experimental.do_not_convert(read), num_parallel_calls=PARALLEL, deterministic=order)
    options = tf.data.Options()
    # tf.data's graph rewrites serialise the whole captured image tensor (0.25 s per 400 MB at the first
    # iterator) and gain nothing on this already-batched, already-parallel pipeline
    options.experimental_optimization.apply_default_optimizations = False
    # nor does autotuning: these fixed settings read cached epochs 1.3-1.5x faster here
    options.autotune.enabled = False
    return ds.with_options(options).prefetch(PREFETCH)


def ten_crop(batch: tf.Tensor, mirror: bool = False) -> tf.Tensor:
    """TenCrop test-time augmentation: the image enlarged by 8/7, its four corner crops and centre crop at the
    original size (the centre rounded, not truncated), and with `mirror` (only for a model trained with
    horizontal flips: the heart's side is anatomy) their mirror images. (B, S, S, C) -> (5 or 10, B, S, S, C)."""
    size = batch.shape[1]
    big = int(round(size * 8 / 7))
    up = tf.cast(tf.round(tf.image.resize(tf.cast(batch, tf.float32), (big, big), method="bilinear")), batch.dtype)
    off = big - size
    centre = int(off / 2 + 0.5)
    starts = [(0, 0), (0, off), (off, 0), (off, off), (centre, centre)]
    crops = [up[:, y:y + size, x:x + size, :] for y, x in starts]
    if mirror:
        crops += [tf.image.flip_left_right(c) for c in crops]
    return tf.stack(crops)
