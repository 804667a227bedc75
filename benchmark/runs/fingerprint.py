"""A run's fingerprint: what decides its results, so that a finished run is skipped, and an interrupted one
resumed, only when nothing that decides them has changed; and a sweep re-run with a changed profile is refused
instead of mixed with the old runs.

It has two parts: `config`, the resolved configuration without the keys that do not change results (`name`,
`cache_dir`, timeouts, what is logged), and `data`, the SHA-256 of every label file read, the image cache's key
(every image's path, size and modification time, the image size and preprocessing) and a hash of the images in
each split.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from benchmark.config import KEYS, NON_RESULT_KEYS, SWEEP_KEYS, Config, _plain  # declared once, with each key


def config_part(cfg: Config, sweep: bool = False) -> dict:
    """The configuration's keys that decide results (a sweep keeps its axes; a run's are empty)."""
    values = cfg.to_dict()
    if values.get("keras_backend") in (None, "tensorflow"):  # the default engine: as runs made before the key
        values.pop("keras_backend", None)
    if not values.get("keras_backends"):
        values.pop("keras_backends", None)
    for name, spec in KEYS.items():  # keys added later, at their defaults: as runs made before them
        if spec.since > 1 and name in values and values[name] == _plain(spec.default):
            values.pop(name)
    return {k: v for k, v in values.items() if k not in NON_RESULT_KEYS and (sweep or k not in SWEEP_KEYS)}


def file_hash(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_hash(frame) -> str:
    """A hash of which image is in which split."""
    digest = hashlib.sha256()
    for split, file in zip(frame["split"].astype(str), frame["file"].astype(str)):
        digest.update(f"{split}|{file}\n".encode())
    return digest.hexdigest()[:20]


def data_part(label_files, images: dict, splits: str) -> dict:
    """`images` maps an image size to its cache key."""
    return {"label_files": {str(Path(f)): file_hash(f) for f in label_files},
            "images": {str(k): v for k, v in images.items()}, "splits": splits}


def differences(old: dict, new: dict) -> list[str]:
    """What differs between two fingerprints, one phrase each: "epochs 3 -> 5", "the label file X changed"."""
    out = []
    old_cfg, new_cfg = old.get("config", {}), new.get("config", {})
    for key in sorted(set(old_cfg) | set(new_cfg)):
        if old_cfg.get(key) != new_cfg.get(key):
            out.append(f"{key} {_short(old_cfg.get(key))} -> {_short(new_cfg.get(key))}")
    old_data, new_data = old.get("data"), new.get("data")
    if old_data and new_data:
        old_files, new_files = old_data.get("label_files", {}), new_data.get("label_files", {})
        for f in sorted(set(old_files) | set(new_files)):
            if f not in new_files:
                out.append(f"the label file {f} is no longer read")
            elif f not in old_files:
                out.append(f"the label file {f} is read now")
            elif old_files[f] != new_files[f]:
                out.append(f"the label file {f} changed")
        shared = set(old_data.get("images", {})) & set(new_data.get("images", {}))
        if any(old_data["images"][k] != new_data["images"][k] for k in shared):
            out.append("the images changed (a file's size or modification time, or the preprocessing)")
        elif old_data.get("splits") != new_data.get("splits") and not any("label file" in d for d in out):
            out.append("the images in the splits changed")
    return out


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
