"""`perf pipeline`: the input pipeline's first pass (decode once + one epoch), the cache build, cached epochs,
Keras's ImageDataGenerator and the decode limit, on the same files."""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchmark.errors import UserError


def _decode_chunk(args) -> int:
    import cv2

    from benchmark.input.images import load_image

    cv2.setNumThreads(1)
    files, size = args
    for f in files:
        load_image(f, size)
    return len(files)


def decode_limit(files, size: int, workers: int | None = None) -> float:
    """Images/s of the same decode and resize in plain OpenCV, one process per core."""
    from benchmark.cores import usable_cores

    workers = workers or usable_cores()
    chunks = [files[i::workers * 4] for i in range(workers * 4)]
    # not fork: a child forked from this process (TensorFlow loaded) runs slower, on copy-on-write faults
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        list(pool.map(_decode_chunk, [(c[:2], size) for c in chunks]))  # start the workers before timing
        t0 = time.perf_counter()
        n = sum(pool.map(_decode_chunk, [(c, size) for c in chunks]))
    return n / (time.perf_counter() - t0)


def _iterate(ds) -> int:
    n = 0
    for x, _ in ds:
        n += int(x.shape[0])
    return n


def image_data_generator_rate(frame, labels, size: int, batch_size: int) -> float:
    """Images/s of Keras's legacy ImageDataGenerator.flow_from_dataframe over the same files (one epoch)."""
    import tensorflow as tf

    gen = tf.keras.preprocessing.image.ImageDataGenerator(rescale=1.0 / 255)
    df = frame.assign(**{lab: frame[lab].fillna(0).astype("float32") for lab in labels})
    with contextlib.redirect_stdout(sys.stderr):  # it prints "Found N ... filenames" on stdout, under --json too
        flow = gen.flow_from_dataframe(df, x_col="file", y_col=list(labels), class_mode="raw",
                                       target_size=(size, size), color_mode="rgb", batch_size=batch_size,
                                       shuffle=False, validate_filenames=False)
    t0 = time.perf_counter()
    n = 0
    for i in range(len(flow)):
        x, _ = flow[i]
        n += len(x)
    return n / (time.perf_counter() - t0)


def perf_pipeline(dataset: str, data_root: str, csv: str | None, image_size: int, batch_size: int,
                  max_images: int | None, repeats: int = 3) -> dict:
    """First pass (decode into a new cache + one shuffled epoch), the cache build alone, cached epochs,
    ImageDataGenerator and the decode limit, on the same files. The files are read once before timing so every
    method sees a warm page cache; first pass and decode limit are measured `repeats` times, alternately, and
    their medians reported (a shared machine's speed drifts). Both start timing with their worker processes
    running: the limit's pool is warmed up, and the pipeline's decoders are started as `train` starts them, in
    the background before it reads the data set; the pass sets up its tf.data pipeline while they decode, as
    `train` does. Each pass's cache is deleted just before the next pass, which writes into the memory it frees
    (see the note in the loop)."""
    from benchmark.data.formats import default_csv
    from benchmark.data.load import load_table
    from benchmark.input.cache import begin_cache
    from benchmark.input.decoders import decoders_ready, start_decoders
    from benchmark.input.pipeline import make_dataset, release_tensors

    root = Path(data_root)
    if not root.is_dir():
        raise UserError(f"data root {root} does not exist")
    if repeats < 1:
        raise UserError(f"--repeats must be at least 1, not {repeats}")
    ds = load_table(dataset, csv or default_csv(dataset, root), root)
    frame = ds.frame.iloc[:max_images] if max_images else ds.frame
    files = frame["file"].tolist()
    missing = [f for f in files[:50] if not os.path.isfile(f)]
    if missing:
        raise UserError(f"image {missing[0]} does not exist; perf pipeline needs the images under --data-root")
    labels = [lab for lab in ds.labels if lab in frame.columns]
    targets = frame[labels].fillna(0).to_numpy(np.float32)
    for f in files:  # warm the page cache
        with open(f, "rb") as fh:
            fh.read()
    # TensorFlow's runtime starts once per process, not once per pass: start it before timing
    _iterate(make_dataset(np.zeros((2, 8, 8), np.uint8), np.arange(2), np.zeros((2, 1), np.float32), 2, shuffle=True))
    tmp = Path(tempfile.mkdtemp(prefix="cxr-perf-"))
    runs = {"first_pass": [], "cache_build": [], "decode_limit": []}
    previous = None
    try:
        for r in range(repeats):
            runs["decode_limit"].append(decode_limit(files, image_size))
            start_decoders()  # as `train` does, while it reads the CSV
            decoders_ready()
            if previous:
                # The previous pass's cache goes just before this pass, which reuses its memory. Memory that has
                # lain free for 2 s is handed back to the host by a virtual machine with free page reporting (this
                # one), and writing there runs at 0.3-0.5 GB/s against 5-6 GB/s: the pass would time the host's
                # memory allocation, which bare metal and the decode limit, which stores nothing, never pay.
                shutil.rmtree(previous)
            t0 = time.perf_counter()
            with begin_cache(files, image_size, cache_dir=tmp / str(r), log=None, wait=False) as build:
                # as `train` does: the input pipeline is set up while the decoders run
                ds = make_dataset(build.images, build.rows(files), targets, batch_size, shuffle=True)
                cache = build.result()
            n = _iterate(ds)
            t2 = time.perf_counter()
            cache.wait()  # its files are made durable in the background, as in training
            runs["cache_build"].append(len(files) / cache.seconds)
            runs["first_pass"].append(n / (t2 - t0))
            if r < repeats - 1:  # the last one serves the cached epochs
                del ds, cache, build  # build holds the cache (its memory map) too
                release_tensors()
                gc.collect()  # TensorFlow's reference cycles hold the map: unmapped, deleting the folder frees it
                previous = tmp / str(r)
        epochs = 5
        t0 = time.perf_counter()
        n = sum(_iterate(ds) for _ in range(epochs))  # one dataset, reshuffled each epoch, as in training
        cached = n / (time.perf_counter() - t0)
        del ds
        release_tensors()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    idg = image_data_generator_rate(frame, labels, image_size, batch_size)
    first, limit = (float(np.median(runs[k])) for k in ("first_pass", "decode_limit"))
    ratio = float(np.median(np.divide(runs["first_pass"], runs["decode_limit"])))  # each pass against its neighbour
    return {"benchmark": "pipeline", "dataset": dataset, "images": len(files), "image_size": image_size,
            "batch_size": batch_size, "cpu_count": os.cpu_count(), "repeats": repeats, "first_pass": first,
            "cache_build": float(np.median(runs["cache_build"])), "cached": cached, "image_data_generator": idg,
            "decode_limit": limit, "first_pass_vs_decode_limit": ratio, "first_pass_vs_image_data_generator": first / idg,
            "cached_vs_first_pass": cached / first, "runs": runs}
