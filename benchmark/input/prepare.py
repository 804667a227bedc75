"""From a Config to arrays a trainer can use: the split data set, its targets, and the decode-once image cache.
No TensorFlow here, so a sweep can build the cache once before it starts its runs."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.load import load_dataset
from benchmark.data.policies import evaluation_targets, training_targets
from benchmark.data.table import Dataset
from benchmark.errors import UserError
from benchmark.input.cache import CACHE_BUILT, CacheBuild, ImageCache, begin_cache
from benchmark.input.decoders import start_decoders, stop_decoders
from benchmark.runs.fingerprint import data_part, split_hash


@dataclass
class Split:
    frame: pd.DataFrame  # rows of the data set in this split
    rows: np.ndarray  # indices into the image cache
    targets: np.ndarray  # training targets (policy applied), NaN = ignored
    truth: np.ndarray  # evaluation targets: 1 / 0 / NaN (uncertain or ignored)


@dataclass
class Prepared:
    """A split data set with its targets and its image cache. When `prepare(..., decoded=False)` returns while the
    images are still decoding, this is the decode-while-starting handshake in one object: use it as a context
    manager, set up what needs no pixels (a model, an input pipeline over `images`), call `complete()` before
    reading them; leaving the block before that stops the decoders and removes the partial cache.

        with prepare(cfg, decoded=False) as data:
            data.check()                      # a bad image already found: fail now
            pipeline = make_dataset(data.images, ...)
            data.complete()                   # wait for the decoders; raises on a bad image
    """

    dataset: Dataset
    labels: tuple
    cache: ImageCache | None  # None until complete() when prepare(..., decoded=False) is still decoding
    splits: dict
    build: CacheBuild | None = None
    key: str = ""  # the image cache's key
    image_size: int = 0

    @property
    def protocol(self) -> dict | None:
        return self.dataset.protocol

    def fingerprint(self) -> dict:
        """The data part of a run's fingerprint (see benchmark.runs.fingerprint)."""
        return data_part(self.dataset.sources, {self.image_size: self.key}, split_hash(self.dataset.frame))

    def __enter__(self) -> "Prepared":
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()

    @property
    def images(self) -> np.ndarray:
        """The cache's image map; while still decoding, for setting up a pipeline that reads after complete()."""
        return self.cache.images if self.cache is not None else self.build.images

    def complete(self) -> "Prepared":
        """Wait for the images still being decoded (prepare(..., decoded=False)); raises on a bad image."""
        if self.cache is None:
            self.cache = self.build.result()
            self.build = None
        return self

    def check(self) -> None:
        """Raise complete()'s error now, without waiting, if decoding has already failed."""
        if self.build is not None:
            self.build.check()

    def cancel(self) -> None:
        """Stop decoding and drop the partial cache (nothing to do once complete() has returned)."""
        if self.build is not None:
            self.build.cancel()


def ensure_phantom(cfg, log=print) -> None:
    """dataset=phantom with a data root that holds no phantom yet: make one there."""
    from benchmark.phantom import FOLDER, make_phantom, phantom_is_complete
    from benchmark.phantom.writer import check_target

    root = Path(cfg.data_root)
    if phantom_is_complete(root) or phantom_is_complete(root / FOLDER):
        return
    target = root.parent if root.name == FOLDER else root
    check_target(target)  # refused, with nothing touched, unless missing, empty or only a phantom of ours
    log(f"making the synthetic phantom data set ({cfg.phantom_images} images at {cfg.phantom_size} px) in {target}")
    make_phantom(target, n=cfg.phantom_images, size=cfg.phantom_size, seed=0)


def prepare(cfg, log=print, wait: bool = True, decoded: bool = True) -> Prepared:
    """Load and split the data set, apply the policy, and open (or build) the image cache.

    With `wait=False` a new cache's files are finished in the background (see build_cache). With
    `decoded=False` this returns while a new cache's images are still being decoded, so that the caller can set
    up its model and input pipeline meanwhile (see `Prepared` for the handshake); with skip_bad_images it waits
    anyway, as a bad image changes the splits. The decoder processes start while the data set is read, unless
    CXR_BENCH_CACHE_BUILT says a sweep has built the cache."""
    if not os.environ.get(CACHE_BUILT):
        start_decoders()
    try:
        return _prepare(cfg, log, wait, decoded or cfg.skip_bad_images)
    except BaseException:
        stop_decoders(wait=True)  # unused: the build failed before it began; the command ends here
        raise
    finally:
        stop_decoders()  # unused: the cache existed


def _prepare(cfg, log, wait: bool, decoded: bool) -> Prepared:
    if cfg.dataset == "phantom":
        if not cfg.data_root:
            raise UserError("dataset phantom needs data_root (where the phantom is, or is to be made)")
        ensure_phantom(cfg, log)
    ds, labels = load_dataset(cfg)
    frame = ds.frame
    build = begin_cache(frame["file"].tolist(), cfg.image_size, cfg.resize, cfg.equalize, cfg.cache_dir,
                        cfg.skip_bad_images, log=log, wait=wait, max_pixels=cfg.max_image_pixels)
    try:
        cache = build.result() if decoded or not build.decoding else None
        if cache is not None and cache.bad:
            bad_files = {cache.files[i] for i, _ in cache.bad}
            print(f"skipping {len(bad_files)} bad image(s) (--skip-bad-images)", file=sys.stderr)
            frame = frame[~frame["file"].isin(bad_files)]
        raw_all = frame[list(labels)].to_numpy(dtype=np.float32)
        targets_all = training_targets(raw_all, labels, cfg.policy, cfg.blank, cfg.seed)
        truth_all = evaluation_targets(raw_all, cfg.blank)
        splits = {}
        rows_all = build.rows(frame["file"].tolist())
        for name in ("train", "val", "test"):
            mask = (frame["split"] == name).to_numpy()
            if not mask.any():
                raise UserError(f"the {name} split is empty after skipping bad images")
            splits[name] = Split(frame[mask].reset_index(drop=True), rows_all[mask], targets_all[mask],
                                 truth_all[mask])
    except BaseException:
        build.cancel()
        raise
    return Prepared(ds, labels, cache, splits, None if cache is not None else build, build.key, cfg.image_size)


def data_fingerprint(cfg, sizes=None, log=print) -> dict:
    """The data part of the fingerprint of a Config's runs at each image size, without decoding anything: the
    label files' hashes, each size's cache key (one stat per image), the images in each split."""
    from benchmark.input.cache import cache_key

    if cfg.dataset == "phantom":
        if not cfg.data_root:
            raise UserError("dataset phantom needs data_root (where the phantom is, or is to be made)")
        ensure_phantom(cfg, log)
    ds, _ = load_dataset(cfg)
    files = ds.frame["file"].tolist()
    keys = {size: cache_key(files, size, cfg.resize, cfg.equalize, cfg.max_image_pixels)
            for size in (sizes or [cfg.image_size])}
    return data_part(ds.sources, keys, split_hash(ds.frame))
