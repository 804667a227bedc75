"""The decode-once image cache and its decoder processes: reuse, invalidation, bad images, full disks, short
writes, abandoned builds, processes that outlive their owner."""

import os
import time

import cv2
import numpy as np
import pytest

from benchmark.errors import UserError
from benchmark.input.cache import build_cache
from benchmark.input.images import load_image
from tests.helpers import NIH_SAMPLE, needs_shared, write_pngs


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
    assert not list((tmp_path / "c").glob("[!.]*"))  # nothing half-built left behind (the marker aside)
    cache = build_cache([str(good), str(bad)], 16, cache_dir=tmp_path / "c", skip_bad=True, log=None)
    assert [i for i, _ in cache.bad] == [1]


@needs_shared
def test_cache_over_the_real_nih_sample(tmp_path):
    files = sorted(str(p) for p in (NIH_SAMPLE / "images").glob("*.png"))[:40]
    cache = build_cache(files, 64, cache_dir=tmp_path, log=None)
    assert cache.images.shape == (40, 64, 64) and cache.images[:].std() > 10


def test_process_decoding_matches_threads_and_names_bad_files(tmp_path, monkeypatch):
    import benchmark.input.decoders as decoders_module

    files = write_pngs(tmp_path, 24)
    by_threads = build_cache(files, 16, cache_dir=tmp_path / "threads", log=None)
    monkeypatch.setattr(decoders_module, "PROCESS_MIN_IMAGES", 1)  # the path large data sets take
    by_processes = build_cache(files, 16, cache_dir=tmp_path / "processes", log=None)
    on_disk = np.fromfile(by_processes.path / "images.u8", np.uint8).reshape(24, 16, 16)
    assert np.array_equal(np.asarray(by_threads.images), on_disk)
    assert [int(on_disk[i, 8, 12]) for i in range(3)] == [0, 37, 74]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(UserError, match="bad.png is not a readable"):
        build_cache(files + [str(bad)], 16, cache_dir=tmp_path / "bad", log=None)
    assert not list((tmp_path / "bad").glob("[!.]*"))


def test_started_decoders_are_used_by_the_next_build_then_stopped(tmp_path):
    import benchmark.input.decoders as cache_module

    if not cache_module._processes_possible():
        pytest.skip("no fork server (or one core) here: builds use threads")
    files = write_pngs(tmp_path, 24)
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

    from benchmark.input.decoders import _processes_possible
    from benchmark.runs.processes import process_alive

    if not _processes_possible():
        pytest.skip("decoder processes need a fork server and two cores")
    script = ("from benchmark.input.decoders import start_decoders, decoders_ready, _STARTED\n"
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
        assert len(decoders) == 2 and all(process_alive(p) for p in decoders)
        owner.send_signal(signal.SIGKILL)  # no clean-up code of its own runs
        owner.wait()
        deadline = time.monotonic() + 10
        while any(process_alive(p) for p in decoders) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(process_alive(p) for p in decoders)
    finally:
        owner.kill()
        owner.wait()


def test_workers_follow_the_cores_this_process_may_use(monkeypatch):
    from benchmark.input import decoders as cache

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})  # a scheduler's share of a larger machine
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(cache, "_STARTED", {})  # no decoders started by an earlier test
    assert cache.usable_cores() == 3
    pool, workers = cache.decoder_pool(10, None)  # a small set: threads, two per usable core
    pool.shutdown()
    assert workers == 6


def test_work_spans_cover_every_image_once_largest_first():
    from benchmark.input.decoders import SPAN_MAX
    from benchmark.input.decoders import spans as _spans

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

    import benchmark.input.decoders as decoders_module
    import benchmark.input.images as images_module
    from benchmark.input.images import BadImage, read_gray

    files = write_pngs(tmp_path, 3)

    def denied(path, dtype):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    with monkeypatch.context() as m:
        m.setattr(images_module.np, "fromfile", denied)
        with pytest.raises(BadImage, match=r"0.png cannot be read \(Permission denied\)"):
            read_gray(files[0])

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(decoders_module.os, "pwrite", full)
    with pytest.raises(UserError, match="cannot write the image cache in .*No space left on device.*CXR_BENCH_CACHE"):
        build_cache(files, 16, cache_dir=tmp_path / "c", log=None)
    assert not list((tmp_path / "c").glob("[!.]*"))


def test_cache_complete_when_the_file_system_takes_short_writes(tmp_path, monkeypatch):
    import benchmark.input.decoders as cache_module

    files = write_pngs(tmp_path, 5)
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

    from benchmark.input.cache import cache_key

    files = write_pngs(tmp_path, 6)
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


def test_full_disk_is_an_error_and_no_fallocate_is_not(tmp_path, monkeypatch):
    import errno

    import benchmark.input.cache as cache_module

    files = write_pngs(tmp_path, 3)

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
    assert not list((tmp_path / "full").glob("[!.]*"))


def test_a_damaged_cache_is_found_when_opened_and_rebuilt(tmp_path, capsys):
    files = write_pngs(tmp_path, 6)
    good = np.asarray(build_cache(files, 16, cache_dir=tmp_path / "c", log=None).images).copy()
    key_dir = next(p for p in (tmp_path / "c").iterdir() if p.is_dir())
    with open(key_dir / "images.u8", "r+b") as fh:  # truncated: a disk that filled, a copy cut short
        fh.truncate(3 * 16 * 16)
    again = build_cache(files, 16, cache_dir=tmp_path / "c", log=None)
    assert again.seconds > 0 and np.array_equal(np.asarray(again.images), good)
    assert "is damaged (images.u8 is truncated" in capsys.readouterr().err
    with open(key_dir / "images.u8", "r+b") as fh:  # bytes changed in place
        fh.seek(5 * 16 * 16 + 10)
        fh.write(b"\x01\x02\x03")
    again = build_cache(files, 16, cache_dir=tmp_path / "c", log=None)
    assert again.seconds > 0 and np.array_equal(np.asarray(again.images), good)
    assert "differ from what was decoded" in capsys.readouterr().err
    (key_dir / "meta.json").write_text("{not json")
    assert build_cache(files, 16, cache_dir=tmp_path / "c", log=None).seconds > 0
    assert build_cache(files, 16, cache_dir=tmp_path / "c", log=None).seconds == 0.0  # sound again: reused


def test_a_build_in_progress_is_never_removed_as_abandoned(tmp_path):
    import subprocess
    import sys

    from benchmark.input.cache import _remove_abandoned
    from tests.helpers import ROOT

    cache_dir = tmp_path / "c"
    running = cache_dir / ("a" * 20 + ".partial-samehost-1")  # a name another container could give it too
    builder = subprocess.Popen([sys.executable, "-c", (
        "import os, time, fcntl, pathlib\n"
        f"p = pathlib.Path({str(running)!r}); p.mkdir(parents=True)\n"
        "fd = os.open(p / '.building', os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('building', flush=True); time.sleep(60)")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert builder.stdout.readline().strip() == "building"
        not_ours = cache_dir / "notes.partial-x-1"  # not named as a build: never touched
        not_ours.mkdir()
        _remove_abandoned(cache_dir)
        assert running.is_dir() and not_ours.is_dir()
    finally:
        builder.kill()
        builder.wait()
    _remove_abandoned(cache_dir)  # its builder is gone: abandoned
    assert not running.exists() and not_ours.is_dir()


def test_the_cache_folder_is_ours_or_refused(tmp_path):
    """The image cache writes only into a folder it made (marked as a cache), an empty one, or an unmarked cache
    of an earlier version (nothing in it but cache entries); a user's folder is refused with one line and left
    exactly as it was."""
    from benchmark.runs.ownership import MARKER, kind_of

    files = []
    for i in range(3):
        f = tmp_path / f"{i}.png"
        cv2.imwrite(str(f), np.full((20, 20), i * 60, np.uint8))
        files.append(str(f))
    fresh = tmp_path / "fresh"
    build_cache(files, 8, cache_dir=fresh, log=None)
    assert kind_of(fresh) == "cache" and (fresh / MARKER).read_text().startswith("cache\n")

    old = tmp_path / "old"  # an earlier version's cache: entries only, no marker
    old.mkdir()
    (old / "0123456789abcdef0123").mkdir()
    build_cache(files, 8, cache_dir=old, log=None)
    assert kind_of(old) == "cache" and (old / "0123456789abcdef0123").is_dir()

    mine = tmp_path / "mine"  # a user's folder
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match=r"mine holds files that cxr-bench did not make \(notes.txt\)"):
        build_cache(files, 8, cache_dir=mine, log=None)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
