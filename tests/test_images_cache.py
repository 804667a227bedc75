import os
import time

import cv2
import numpy as np
import pytest

from benchmark.cache import build_cache
from benchmark.errors import UserError
from benchmark.images import BadImage, load_image, read_gray, resize_square
from tests.conftest import NIH_SAMPLE, TEST_DATA, needs_shared

NIH = TEST_DATA / "nih"


def test_real_nih_pngs_8bit_and_rgba_full_resolution():
    small = read_gray(str(NIH / "00000100_000.png"))
    assert small.shape == (256, 256) and small.dtype == np.uint8
    full = read_gray(str(NIH / "00000100_000_full_rgba.png"))  # an RGBA original from the NIH archive
    assert full.shape == (1024, 1024) and full.ndim == 2
    a = load_image(str(NIH / "00000100_000.png"), 64)
    b = load_image(str(NIH / "00000100_000_full_rgba.png"), 64)
    assert a.shape == b.shape == (64, 64)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95  # the same radiograph at two resolutions


def test_16bit_png_and_jpeg(tmp_path):
    ramp = (np.arange(100 * 80, dtype=np.uint32).reshape(100, 80) * 3).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "x16.png"), ramp)
    img16 = read_gray(str(tmp_path / "x16.png"))
    assert img16.dtype == np.uint16
    out = load_image(str(tmp_path / "x16.png"), 32)
    assert out.dtype == np.uint8 and out.max() >= 250 and out.min() < 40  # scaled by its maximum, centre-cropped
    rgb = np.dstack([np.full((50, 70), 200, np.uint8)] * 3)
    cv2.imwrite(str(tmp_path / "c.jpg"), rgb)
    assert abs(int(load_image(str(tmp_path / "c.jpg"), 32).mean()) - 200) <= 2


def test_aspect_preserving_crop_and_pad():
    img = np.zeros((100, 200), np.uint8)
    img[:, 50:150] = 255  # a centred square
    crop = resize_square(img, 50, "crop")
    assert crop.shape == (50, 50) and crop.mean() > 250  # the centre crop is the square
    pad = resize_square(img, 50, "pad")
    assert pad.shape == (50, 50)
    assert pad[:12].max() == 0 and pad[-12:].max() == 0  # black bars top and bottom
    assert pad[25, 25] == 255 and pad[25, 2] == 0


def test_resize_is_bilinear_for_small_shrinks_and_area_below():
    img = read_gray(str(NIH / "00000129_000.png"))  # a real 256 px radiograph
    assert np.array_equal(resize_square(img, 224), cv2.resize(img, (224, 224), interpolation=cv2.INTER_LINEAR))
    assert np.array_equal(resize_square(img, 100), cv2.resize(img, (100, 100), interpolation=cv2.INTER_AREA))
    # why: shrinking by less than 1/0.7, bilinear is at least as close as INTER_AREA to an antialiased Lanczos resize
    from PIL import Image

    ref = np.asarray(Image.fromarray(img).resize((224, 224), Image.LANCZOS)).astype(float)
    linear_err = np.abs(resize_square(img, 224).astype(float) - ref).mean()
    area_err = np.abs(cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA).astype(float) - ref).mean()
    assert linear_err <= area_err


def test_bad_images_name_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(BadImage, match="broken.png is not a readable"):
        read_gray(str(tmp_path / "broken.png"))
    with pytest.raises(BadImage, match="missing.png does not exist"):
        read_gray(str(tmp_path / "missing.png"))


def test_cache_decodes_once_reuses_and_invalidates(tmp_path):
    files = []
    for i in range(5):
        f = tmp_path / f"{i}.png"
        cv2.imwrite(str(f), np.full((40, 40), i * 40, np.uint8))
        files.append(str(f))
    cache = build_cache(files, 16, cache_dir=tmp_path / "c", log=None)
    images = cache.images
    assert images.shape == (5, 16, 16) and isinstance(images, np.memmap)
    assert [int(images[i].mean()) for i in range(5)] == [0, 40, 80, 120, 160]
    again = build_cache(files, 16, cache_dir=tmp_path / "c", log=None)
    assert again.path == cache.path and again.seconds == 0.0  # reused, nothing decoded
    assert build_cache(files, 24, cache_dir=tmp_path / "c", log=None).path != cache.path
    time.sleep(0.01)
    cv2.imwrite(files[2], np.full((40, 40), 250, np.uint8))
    os.utime(files[2], ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = build_cache(files, 16, cache_dir=tmp_path / "c", log=None)
    assert changed.path != cache.path and int(changed.images[2].mean()) == 250
    assert not list((tmp_path / "c").glob("*.partial*"))


def test_bad_image_stops_or_is_skipped(tmp_path):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.zeros((20, 20), np.uint8))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(UserError, match="bad.png is not a readable .* --skip-bad-images"):
        build_cache([str(good), str(bad)], 16, cache_dir=tmp_path / "c", log=None)
    assert not list((tmp_path / "c").glob("*"))  # nothing half-built left behind
    cache = build_cache([str(good), str(bad)], 16, cache_dir=tmp_path / "c", skip_bad=True, log=None)
    assert [i for i, _ in cache.bad] == [1]


@needs_shared
def test_cache_over_the_real_nih_sample(tmp_path):
    files = sorted(str(p) for p in (NIH_SAMPLE / "images").glob("*.png"))[:40]
    cache = build_cache(files, 64, cache_dir=tmp_path, log=None)
    assert cache.images.shape == (40, 64, 64) and cache.images[:].std() > 10


def test_pipeline_batches_order_and_shuffle(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from benchmark.pipeline import make_dataset, ten_crop

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
    crops = ten_crop(tf.constant(images[:2, :, :, None]))
    assert crops.shape == (10, 2, 8, 8, 1)


def _pngs(folder, n):
    """n small non-square PNGs, each with its own grey level and a bright band."""
    files = []
    for i in range(n):
        img = np.full((40, 30), (i * 37) % 200, np.uint8)
        img[:, :6] = 255
        path = folder / f"{i}.png"
        cv2.imwrite(str(path), img)
        files.append(str(path))
    return files


def test_process_decoding_matches_threads_and_names_bad_files(tmp_path, monkeypatch):
    import benchmark.cache as cache_module

    files = _pngs(tmp_path, 24)
    by_threads = build_cache(files, 16, cache_dir=tmp_path / "threads", log=None)
    monkeypatch.setattr(cache_module, "PROCESS_MIN_IMAGES", 1)  # the path large data sets take
    by_processes = build_cache(files, 16, cache_dir=tmp_path / "processes", log=None)
    on_disk = np.fromfile(by_processes.path / "images.u8", np.uint8).reshape(24, 16, 16)
    assert np.array_equal(np.asarray(by_threads.images), on_disk)
    assert [int(on_disk[i, 8, 12]) for i in range(3)] == [0, 37, 74]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(UserError, match="bad.png is not a readable"):
        build_cache(files + [str(bad)], 16, cache_dir=tmp_path / "bad", log=None)
    assert not list((tmp_path / "bad").glob("*"))


def test_started_decoders_are_used_by_the_next_build_then_stopped(tmp_path):
    import benchmark.cache as cache_module

    if not cache_module._processes_possible():
        pytest.skip("no fork server (or one core) here: builds use threads")
    files = _pngs(tmp_path, 24)
    by_threads = build_cache(files, 16, cache_dir=tmp_path / "threads", log=None)
    cache_module.start_decoders(2)
    pool = cache_module._STARTED["pool"]
    cache_module.decoders_ready()
    assert len(pool._processes) == 2  # running before any image is known
    started = build_cache(files, 16, cache_dir=tmp_path / "started", log=None)
    assert np.array_equal(np.asarray(started.images), np.asarray(by_threads.images))
    assert not cache_module._STARTED and not pool._processes  # used once, then stopped
    with pytest.raises(RuntimeError):
        pool.submit(abs, 1)
    cache_module.start_decoders(2)  # a cache that exists needs none: they are stopped at once
    pool = cache_module._STARTED["pool"]
    assert build_cache(files, 16, cache_dir=tmp_path / "started", log=None).seconds == 0.0
    assert not cache_module._STARTED
    with pytest.raises(RuntimeError):
        pool.submit(abs, 1)


def test_decoder_processes_exit_when_the_process_that_started_them_is_killed(tmp_path):
    import signal
    import subprocess
    import sys

    from benchmark.cache import _process_alive, _processes_possible

    if not _processes_possible():
        pytest.skip("decoder processes need a fork server and two cores")
    script = ("from benchmark.cache import start_decoders, decoders_ready, _STARTED\n"
              "import time\n"
              "if __name__ == '__main__':\n"
              "    start_decoders(2)\n"
              "    decoders_ready()\n"
              "    print(*_STARTED['pool']._processes, flush=True)\n"
              "    time.sleep(60)\n")
    (tmp_path / "owner.py").write_text(script)
    owner = subprocess.Popen([sys.executable, str(tmp_path / "owner.py")], stdout=subprocess.PIPE, text=True,
                             cwd=os.getcwd(), env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        decoders = [int(p) for p in owner.stdout.readline().split()]
        assert len(decoders) == 2 and all(_process_alive(p) for p in decoders)
        owner.send_signal(signal.SIGKILL)  # no clean-up code of its own runs
        owner.wait()
        deadline = time.monotonic() + 10
        while any(_process_alive(p) for p in decoders) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_process_alive(p) for p in decoders)
    finally:
        owner.kill()
        owner.wait()


def test_workers_follow_the_cores_this_process_may_use(monkeypatch):
    from benchmark import cache

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})  # a scheduler's share of a larger machine
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(cache, "_STARTED", {})  # no decoders started by an earlier test
    assert cache.usable_cores() == 3
    pool, workers = cache._decoder_pool(10, None)  # a small set: threads, two per usable core
    pool.shutdown()
    assert workers == 6


def test_work_spans_cover_every_image_once_largest_first():
    from benchmark.cache import SPAN_MAX, _spans

    spans = _spans(1000, 2)
    assert spans[0] == (0, 125)  # an eighth: a quarter of each worker's share
    assert [r for i, j in spans for r in range(i, j)] == list(range(1000))
    sizes = [j - i for i, j in spans]
    assert sizes == sorted(sizes, reverse=True) and sizes[-2] == 4
    assert _spans(3, 2) == [(0, 3)] and _spans(0, 2) == []
    big = _spans(200_000, 2)  # a cancelled build waits for at most one span per worker
    assert big[0] == (0, SPAN_MAX) and max(j - i for i, j in big) == SPAN_MAX and big[-1][1] == 200_000


def test_unreadable_image_and_cache_write_failure_are_clear_errors(tmp_path, monkeypatch):
    import errno

    import benchmark.cache as cache_module
    import benchmark.images as images_module
    from benchmark.images import BadImage, read_gray

    files = _pngs(tmp_path, 3)

    def denied(path, dtype):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    with monkeypatch.context() as m:
        m.setattr(images_module.np, "fromfile", denied)
        with pytest.raises(BadImage, match=r"0.png cannot be read \(Permission denied\)"):
            read_gray(files[0])

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module.os, "pwrite", full)
    with pytest.raises(UserError, match="cannot write the image cache in .*No space left on device.*CXR_BENCH_CACHE"):
        build_cache(files, 16, cache_dir=tmp_path / "c", log=None)
    assert not list((tmp_path / "c").glob("*"))


def test_cache_complete_when_the_file_system_takes_short_writes(tmp_path, monkeypatch):
    import benchmark.cache as cache_module

    files = _pngs(tmp_path, 5)
    expected = np.stack([load_image(f, 16) for f in files])
    pwrite, written = os.pwrite, []

    def short(fd, data, offset):  # as a file system may: fewer bytes than asked, the caller writes the rest
        written.append(pwrite(fd, bytes(data)[:100], offset))
        return written[-1]

    monkeypatch.setattr(cache_module.os, "pwrite", short)
    cache = build_cache(files, 16, cache_dir=tmp_path / "c", log=None, workers=1)
    assert sum(written) == 5 * 16 * 16 and max(written) == 100
    assert np.array_equal(np.asarray(cache.images), expected)


def test_cache_usable_before_its_files_are_finished_and_abandoned_builds_removed(tmp_path):
    import socket

    from benchmark.cache import cache_key

    files = _pngs(tmp_path, 6)
    host = socket.gethostname()

    def partial(size, host, pid):
        folder = tmp_path / "c" / f"{cache_key(files, size, 'crop', 'none')}.partial-{host}-{pid}"
        folder.mkdir(parents=True)
        return folder

    partial(16, host, 999999999)  # no such process
    partial(32, host, 999999999)  # another cache's
    (tmp_path / "c" / f"{cache_key(files, 24, 'crop', 'none')}.partial-999999999").mkdir()  # an earlier version's
    running = partial(64, host, os.getpid())  # still being built
    elsewhere = partial(48, "another-machine.example.org", 999999999)  # a shared folder: not ours to judge
    cache = build_cache(files, 16, cache_dir=tmp_path / "c", log=None, wait=False)
    decoded = np.array(cache.images)  # readable at once
    cache.wait()
    assert (cache.path / "meta.json").is_file()
    assert sorted((tmp_path / "c").glob("*.partial*")) == sorted([running, elsewhere])
    again = build_cache(files, 16, cache_dir=tmp_path / "c", log=None)
    assert again.seconds == 0.0 and np.array_equal(np.asarray(again.images), decoded)


def test_pipeline_shares_a_memory_map_and_reads_large_caches_batchwise(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow")
    import benchmark.pipeline as pipeline

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


def test_full_disk_is_an_error_and_no_fallocate_is_not(tmp_path, monkeypatch):
    import errno

    import benchmark.cache as cache_module

    files = _pngs(tmp_path, 3)

    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(cache_module.os, "posix_fallocate", unsupported)
    cache = build_cache(files, 16, cache_dir=tmp_path / "no-fallocate", log=None)
    assert int(np.asarray(cache.images)[1, 8, 12]) == 37

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module.os, "posix_fallocate", full)
    with pytest.raises(UserError, match=r"cannot make the image cache .*No space left.*CXR_BENCH_CACHE"):
        build_cache(files, 16, cache_dir=tmp_path / "full", log=None)
    assert not list((tmp_path / "full").glob("*"))


def test_pipeline_set_up_while_decoding_reads_the_decoded_images_and_cancel_cleans_up(tmp_path):
    pytest.importorskip("tensorflow")
    import benchmark.cache as cache_module
    from benchmark.cache import begin_cache
    from benchmark.pipeline import make_dataset, release_tensors

    files = _pngs(tmp_path, 24)
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
        time.sleep(0.6)  # the caller's own set-up, longer than decoding six small images
        assert later.result().seconds < 0.5  # the decoding time, not the time until result()

    with pytest.raises(KeyError):  # the caller fails before it needs the images
        with begin_cache(files, 24, cache_dir=tmp_path / "d", log=None) as failed:
            raise KeyError("the model could not be built")
    assert not failed.decoding and not list((tmp_path / "d").glob("*"))  # stopped, nothing partial left
    with pytest.raises(RuntimeError, match="cancelled"):
        failed.result()


def test_prepare_returns_while_decoding_and_completes(phantom, tmp_path):
    from benchmark.prepare import prepare
    from tests.conftest import tiny_config

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
