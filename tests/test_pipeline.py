"""The tf.data pipeline over the cache, and prepare(): order, shuffling, shared memory, large caches, set-up while
decoding."""

import time

import numpy as np
import pytest

from benchmark.input.images import load_image
from tests.helpers import write_pngs


def test_pipeline_batches_order_and_shuffle(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from benchmark.input.pipeline import make_dataset, ten_crop

    images = np.arange(10, dtype=np.uint8)[:, None, None] * np.ones((10, 8, 8), np.uint8)
    rows = np.array([9, 3, 5, 1, 0, 2, 4, 6, 8, 7])
    targets = rows[:, None].astype(np.float32)
    ds = make_dataset(images, rows, targets, 4)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert x.dtype == np.uint8 and x.shape == (10, 8, 8, 1)
    assert x[:, 0, 0, 0].tolist() == rows.tolist() and y[:, 0].tolist() == rows.tolist()  # order kept
    shuffled = make_dataset(images, rows, targets, 4, shuffle=True, seed=1)
    epoch1 = np.concatenate([x.numpy()[:, 0, 0, 0] for x, _ in shuffled])
    epoch2 = np.concatenate([x.numpy()[:, 0, 0, 0] for x, _ in shuffled])
    pairs = np.concatenate([np.stack([x.numpy()[:, 0, 0, 0], y.numpy()[:, 0]], 1) for x, y in shuffled])
    assert sorted(epoch1.tolist()) == list(range(10)) and epoch1.tolist() != epoch2.tolist()
    assert (pairs[:, 0] == pairs[:, 1]).all()  # images stay with their labels
    assert ten_crop(tf.constant(images[:2, :, :, None]), mirror=True).shape == (10, 2, 8, 8, 1)


def test_pipeline_shares_a_memory_map_and_reads_large_caches_batchwise(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow")
    import benchmark.input.pipeline as pipeline

    path = tmp_path / "images.u8"
    (np.arange(12, dtype=np.uint8)[:, None, None] * 10 * np.ones((12, 8, 8), np.uint8)).tofile(path)
    writable = np.memmap(path, dtype=np.uint8, mode="r+", shape=(12, 8, 8))
    shared = pipeline._share(writable)
    writable[3] = 99  # a shared tensor sees the change: nothing was copied
    assert int(shared[3, 0, 0]) == 99
    images = np.memmap(path, dtype=np.uint8, mode="r", shape=(12, 8, 8))
    rows = np.array([11, 0, 5, 7, 2])
    targets = rows[:, None].astype(np.float32)

    def pairs(**kw):
        out = [(x.numpy()[:, 0, 0, 0], y.numpy()[:, 0]) for x, y in pipeline.make_dataset(images, rows, targets, 2, **kw)]
        return np.concatenate([x for x, _ in out]).tolist(), np.concatenate([y for _, y in out]).tolist()

    expected = ([110, 0, 50, 70, 20], [11, 0, 5, 7, 2])
    pipeline.release_tensors()
    assert pairs() == expected
    monkeypatch.setattr(pipeline, "IN_MEMORY_BYTES", 0)  # as for a cache too large to hold as one tensor
    assert pairs() == expected
    x, y = pairs(shuffle=True, seed=2)
    assert sorted(zip(y, x)) == sorted(zip(*expected[::-1]))
    options = pipeline.make_dataset(images, rows, targets, 2).options()
    assert options.autotune.enabled is False  # fixed parallelism and read-ahead: faster here than autotuned
    assert options.experimental_optimization.apply_default_optimizations is False


def test_pipeline_set_up_while_decoding_reads_the_decoded_images_and_cancel_cleans_up(tmp_path):
    pytest.importorskip("tensorflow")
    import benchmark.input.decoders as cache_module
    from benchmark.input.cache import begin_cache
    from benchmark.input.pipeline import make_dataset, release_tensors

    files = write_pngs(tmp_path, 24)
    expected = np.stack([load_image(f, 16) for f in files])
    cache_module.start_decoders(2)  # decoder processes where this machine has them
    with begin_cache(files, 16, cache_dir=tmp_path / "c", log=None, wait=False) as build:
        assert build.decoding
        ds = make_dataset(build.images, build.rows(files), np.arange(24, dtype=np.float32)[:, None], 5, shuffle=True)
        cache = build.result()
    seen = {int(y[0]): x[..., 0] for xb, yb in ds for x, y in zip(xb.numpy(), yb.numpy())}
    assert np.array_equal(np.stack([seen[i] for i in range(24)]), expected)
    cache.wait()
    release_tensors()
    assert (cache.path / "meta.json").is_file() and not build.decoding

    with begin_cache(files[:6], 16, cache_dir=tmp_path / "e", log=None) as later:
        time.sleep(1.5)  # the caller's own set-up, longer than decoding six small images (even on a busy machine)
        assert later.result().seconds < 1.0  # the decoding time, not the time until result()

    with pytest.raises(KeyError):  # the caller fails before it needs the images
        with begin_cache(files, 24, cache_dir=tmp_path / "d", log=None) as failed:
            raise KeyError("the model could not be built")
    assert not failed.decoding and not list((tmp_path / "d").glob("[!.]*"))  # stopped, nothing partial left
    with pytest.raises(RuntimeError, match="cancelled"):
        failed.result()


def test_prepare_returns_while_decoding_and_completes(phantom, tmp_path):
    from benchmark.input.prepare import prepare
    from tests.helpers import tiny_config

    cfg = tiny_config(phantom, cache_dir=str(tmp_path / "c"))
    data = prepare(cfg, log=None, decoded=False)
    assert data.cache is None and data.images.shape[1:] == (cfg.image_size, cfg.image_size)
    train_rows = data.splits["train"].rows
    assert data.complete() is data and data.cache is not None
    data.cache.wait()
    again = prepare(cfg, log=None, decoded=False)  # the cache exists: nothing left to wait for
    assert again.cache is not None and again.cache.seconds == 0.0
    assert np.array_equal(np.asarray(again.images)[train_rows], np.asarray(data.images)[train_rows])
    assert np.asarray(data.images)[train_rows].std() > 10  # real radiographs, not the reserved file's zeros
    skipping = prepare(cfg.replace(cache_dir=str(tmp_path / "d"), skip_bad_images=True), log=None, decoded=False)
    assert skipping.cache is not None  # bad images change the splits: it waits for them


def test_ten_crop_mirrors_only_when_training_mirrored_and_rounds_its_centre():
    pytest.importorskip("tensorflow")
    from benchmark.input.pipeline import ten_crop

    batch = np.arange(32 * 32, dtype=np.uint8).reshape(1, 32, 32, 1) % 251
    plain = np.asarray(ten_crop(batch))
    assert plain.shape == (5, 1, 32, 32, 1)  # no mirror images: training did not flip (the heart's side)
    mirrored = np.asarray(ten_crop(batch, mirror=True))
    assert mirrored.shape == (10, 1, 32, 32, 1)
    np.testing.assert_array_equal(mirrored[5:], plain[:, :, :, ::-1])
    # enlarged to round(32 * 8 / 7) = 37 px: the centre crop starts at round(5 / 2) = 3, not 2
    import tensorflow as tf

    up = np.asarray(tf.round(tf.image.resize(tf.cast(batch, tf.float32), (37, 37), method="bilinear")))
    np.testing.assert_array_equal(plain[4, 0], up[0, 3:35, 3:35].astype(np.uint8))
