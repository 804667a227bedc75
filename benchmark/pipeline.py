"""The tf.data input pipeline over the decode-once image cache.

Batches leave the pipeline as uint8 grayscale (B, S, S, 1) with float32 targets (NaN = ignored): one byte per
pixel crosses to the accelerator, where the model casts, augments, makes three channels and applies the backbone's
own preprocessing (see models/layers.py). Reads are batched gathers: from one in-memory tensor for caches up to
IN_MEMORY_BYTES, else from the memory map in sorted order.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
# Caches up to this size are held in memory as one tensor and gathered by TensorFlow (about twice as fast);
# larger ones (CheXpert at 320 px is ~20 GB) stay memory-mapped and are gathered batch by batch.
IN_MEMORY_BYTES = 2 << 30
_TENSORS: dict = {}


def _as_tensor(images: np.ndarray):
    key = (getattr(images, "filename", None) or id(images), images.shape)
    if key not in _TENSORS:
        _TENSORS.clear()  # one cache at a time
        _TENSORS[key] = tf.constant(np.asarray(images))
    return _TENSORS[key]


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
    order = True if deterministic or not shuffle else None
    if images.nbytes <= IN_MEMORY_BYTES:
        all_images, all_rows, all_targets = _as_tensor(images), tf.constant(rows), tf.constant(targets)
        ds = idx.map(lambda b: (tf.gather(all_images, tf.gather(all_rows, b))[..., None], tf.gather(all_targets, b)),
                     num_parallel_calls=AUTOTUNE, deterministic=order)
    else:
        ds = idx.map(lambda b: tf.numpy_function(gather, [b], (tf.uint8, tf.float32), stateful=False),
                     num_parallel_calls=AUTOTUNE, deterministic=order)
    ds = ds.map(lambda x, y: (tf.ensure_shape(x, [None, size, size, 1]), tf.ensure_shape(y, [None, n_labels])))
    options = tf.data.Options()
    options.deterministic = bool(deterministic or not shuffle)
    return ds.with_options(options).prefetch(AUTOTUNE)


def ten_crop(batch: tf.Tensor) -> tf.Tensor:
    """TenCrop test-time augmentation: the image enlarged by 8/7, its four corner crops and centre crop at the
    original size, and their mirror images. (B, S, S, C) -> (10, B, S, S, C)."""
    size = batch.shape[1]
    big = int(round(size * 8 / 7))
    up = tf.cast(tf.image.resize(tf.cast(batch, tf.float32), (big, big), method="bilinear"), batch.dtype)
    off = big - size
    starts = [(0, 0), (0, off), (off, 0), (off, off), (off // 2, off // 2)]
    crops = [up[:, y:y + size, x:x + size, :] for y, x in starts]
    crops += [tf.image.flip_left_right(c) for c in crops]
    return tf.stack(crops)
