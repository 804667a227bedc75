"""Configuration: YAML profiles in configs/ merged into one frozen dataclass, with `--set key=value` overrides.

Keys are flat and unique (``epochs``, ``policy``, ``backbone`` ...), so the same name works in a YAML file and on
the command line. Unknown keys and badly typed values are a UserError naming the key and where it came from.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from benchmark.errors import UserError

POLICIES = ("ignore", "zeros", "ones", "mixed", "smooth_ones", "smooth_zeros")
FINETUNES = ("full", "linear", "gradual", "baseline")
LOSSES = ("bce", "masked_bce", "weighted_bce", "focal")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("plateau", "cosine", "constant")


@dataclass(frozen=True)
class Config:
    """Everything one training run (or a sweep of them) needs. Field names are the YAML / --set keys."""

    # --- data ---
    dataset: str = "phantom"
    data_root: str | None = None
    train_csv: str | None = None  # default: the data set's own file under data_root
    valid_csv: str | None = None
    test_csv: str | None = None  # official test labels (CheXpert's released test set); default: found beside train.csv
    protocol: str = "auto"  # which images are test and validation: see benchmark/data/protocols.py
    score_by: str = "auto"  # "image" or "study" (views of a study reduced by study_reduce); auto: the format's
    study_reduce: str = "max"  # "max" or "mean" over a study's views
    external: tuple = ()  # external test sets scored at the end of each run: [{dataset: nih, data_root: DIR}, ...]
    labels: Any = "competition5"  # a name from benchmark.data.labels.LABEL_SETS, "all", or a list
    policy: Any = "mixed"  # one of POLICIES, or {label: policy}
    blank: str = "negative"  # "negative" (the CheXpert paper's convention) or "ignore"
    views: str = "frontal"  # "frontal" or "all"
    projections: Any = None  # e.g. [AP, PA]; None keeps every projection
    val_fraction: float = 0.1  # used when the data set has no official validation set
    test_fraction: float = 0.1  # carved from train by patient when there is no official test set
    split_seed: int = 0
    max_train_images: int | None = None  # subsample the training split by patient (quick experiments)
    path_column: str = "Path"  # csv data sets
    patient_column: str | None = None  # csv data sets; default: each image is its own patient
    split_column: str | None = None  # csv data sets: a column holding train / val / test
    image_size: int = 224
    resize: str = "crop"  # aspect-preserving resize, then "crop" (centre) or "pad"
    equalize: str = "none"  # "none", "hist" or "clahe"
    cache_dir: str | None = None  # default: $CXR_BENCH_CACHE or ~/.cache/cxr-bench
    skip_bad_images: bool = False
    max_image_pixels: int = 100_000_000  # an image whose header announces more is a bad image (decompression bombs)
    phantom_images: int = 2000  # when dataset=phantom and the data root does not exist yet
    phantom_size: int = 128

    # --- model ---
    backbone: str = "densenet121"
    weights: Any = "imagenet"  # "imagenet", null, a weights file or timm folder, or {default: ..., resnet34: ...}
    weights_dir: str | None = None  # pretrained weight files looked for here before any download ($CXR_BENCH_WEIGHTS)
    finetune: str = "full"
    gradual_epochs: int = 1  # finetune=gradual: epochs with a frozen backbone
    gradual_lr_factor: float = 0.1  # finetune=gradual: learning rate factor once everything trains
    dropout: float = 0.2
    head_hidden: int = 0  # units of an optional hidden layer in the head
    per_label_heads: bool = False
    bn_momentum: float | None = None  # None: 0.9 when training from scratch (weights=null), else the backbone's
    bn_reestimate: Any = "auto"  # re-estimate BatchNorm statistics before each validation: auto (from scratch only)
    bn_reestimate_batches: int = 10  # ... from this many training batches

    # --- training ---
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 1e-4  # adamw only
    momentum: float = 0.9  # sgd only
    schedule: str = "plateau"
    warmup_epochs: int = 0  # cosine only
    plateau_factor: float = 0.1
    plateau_patience: int = 1
    early_stopping_patience: int = 3
    loss: str = "bce"
    focal_gamma: float = 2.0
    augment: bool = True
    rotation: float = 5.0  # degrees
    shift: float = 0.05  # fraction of the image
    zoom: float = 0.1
    brightness: float = 0.1
    contrast: float = 0.1
    hflip: bool = False  # off: the heart is on the left, and flips would teach the network dextrocardia is normal
    seed: int = 0
    deterministic: bool = False
    precision: str = "auto"  # "auto" (mixed_float16 on a GPU, float32 otherwise), "float32", "mixed_float16", "mixed_bfloat16"
    xla: bool = False
    tensorboard: bool = False
    steps_per_epoch: int | None = None  # cap the steps per epoch (smoke tests)
    logical_cpus: int = 0  # >1 splits the CPU into that many devices for MirroredStrategy (tests the multi-GPU path)
    gradcam_images: int = 6
    bootstrap: int = 1000
    run_timeout: float | None = None  # seconds; a sweep stops a run that takes longer and records it as failed
    mlflow: Any = False  # log each finished run to MLflow: true (a SQLite store in the sweep folder) or a tracking URI
    keep_checkpoint: bool = False  # keep checkpoint/ (the resume state, with the optimiser) after a run finishes
    keras_backend: str | None = None  # the engine: "tensorflow", "jax" or "torch" (None: $KERAS_BACKEND, else tensorflow)
    backend: str = "local"  # where a sweep's runs execute: "local" (processes here) or "ray" (tasks on a Ray cluster)
    ray_address: str | None = None  # Ray: "auto" (this machine's cluster), HOST:6379, ray://HOST:10001, or "local";
    #                                  None: $RAY_ADDRESS, else a private cluster here ("local")
    ray_cpus_per_run: float = 1.0  # Ray: CPUs each run asks for
    ray_gpus_per_run: float | None = None  # Ray: GPUs each run asks for (None: 1 on a cluster with GPUs, else 0)

    # --- sweep grid (empty: the single value above) ---
    backbones: tuple = ()
    policies: tuple = ()
    finetunes: tuple = ()
    image_sizes: tuple = ()
    seeds: tuple = ()
    keras_backends: tuple = ()
    name: str = "run"

    def replace(self, **changes) -> "Config":
        """A copy with some keys changed (validated)."""
        return validate(dataclasses.replace(self, **changes))

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


PATH_KEYS = ("data_root", "train_csv", "valid_csv", "test_csv", "cache_dir", "weights_dir")
SWEEP_KEYS = {"backbones": "backbone", "policies": "policy", "finetunes": "finetune", "image_sizes": "image_size",
              "seeds": "seed", "keras_backends": "keras_backend"}
KERAS_BACKENDS = ("tensorflow", "jax", "torch")


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in fields(Config)}


def _coerce(key: str, value: Any, hint: Any, origin: str) -> Any:
    """Check one value against its declared type; a UserError names the key and where the value came from."""
    def bad(expected: str):
        return UserError(f"{origin}: {key} must be {expected}, got {value!r}")

    args = typing.get_args(hint)
    optional = type(None) in args
    if value is None:
        if optional or hint is Any:
            return None
        raise bad("set (null is not allowed here)")
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if base is Any:
        if isinstance(value, list):
            return tuple(value)
        if isinstance(value, dict):
            return dict(value)
        return value
    if base is bool:
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if base is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
            try:
                return float(value)
            except ValueError:
                raise bad("a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if base is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise bad("a string")
        return str(value)
    if base is tuple:
        if isinstance(value, dict):
            raise bad("a list")
        if isinstance(value, (list, tuple)):
            return tuple(value)
        return (value,)
    return value


def _int(lo=None, hi=None):
    def check(v):
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            return f"an integer {_range(lo, hi)}"
    return check


def _num(lo=None, hi=None, lo_open=False, hi_open=False):
    def check(v):
        if lo is not None and (v < lo or (lo_open and v == lo)):
            return f"a number {_range(lo, hi, lo_open, hi_open)}"
        if hi is not None and (v > hi or (hi_open and v == hi)):
            return f"a number {_range(lo, hi, lo_open, hi_open)}"
    return check


def _range(lo, hi, lo_open=False, hi_open=False) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'above' if lo_open else 'at least'} {lo}"
    return f"{'below' if hi_open else 'at most'} {hi}"


def _choice(options):
    def check(v):
        if v not in options:
            return f"one of {', '.join(map(str, options))}"
    return check


def _policy(v):
    if isinstance(v, dict):
        for label, p in v.items():
            if not isinstance(label, str) or p not in POLICIES:
                return f"one of {', '.join(POLICIES)}, or a mapping of labels to them (e.g. {{Edema: ones}})"
    elif v not in POLICIES:
        return f"one of {', '.join(POLICIES)}, or a mapping of labels to them (e.g. {{Edema: ones}})"


def _labels(v):
    from benchmark.data.labels import LABEL_SETS

    names = ", ".join([*LABEL_SETS, "all"])
    if isinstance(v, str):
        if v not in (*LABEL_SETS, "all"):
            return f"a label set ({names}) or a list of label names"
    elif not isinstance(v, tuple) or not v or not all(isinstance(x, str) and x for x in v):
        return f"a label set ({names}) or a non-empty list of label names"


def _projections(v):
    if v is not None and (not isinstance(v, tuple) or not v or not all(isinstance(x, str) and x for x in v)):
        return "a list of projections such as [AP, PA], or null for all"


def _external(v):
    from benchmark.data.formats import names

    for spec in v:
        if not isinstance(spec, dict) or "dataset" not in spec or "data_root" not in spec:
            return "a list of {dataset: D, data_root: DIR} mappings (optional: csv, split: all|test, name)"
        unknown = set(spec) - {"dataset", "data_root", "csv", "split", "name"}
        if unknown or spec["dataset"] not in names() or spec.get("split", "all") not in ("all", "test"):
            return ("a list of {dataset: D, data_root: DIR} mappings with D one of " + ", ".join(names())
                    + " (optional: csv, split: all|test, name)")


def _weights_value(v) -> bool:
    return v is None or isinstance(v, str) and bool(v)


def _weights(v):
    from models.registry import REGISTRY

    expected = ("imagenet, null, a weights file or timm folder, or a mapping such as {default: imagenet, "
                "resnet34: /path/to/weights}")
    if isinstance(v, dict):
        unknown = [k for k in v if k != "default" and k not in REGISTRY]
        if unknown or not all(_weights_value(x) for x in v.values()):
            return expected + (f" (unknown backbone {unknown[0]!r})" if unknown else "")
    elif not _weights_value(v):
        return expected


def weights_for(cfg, backbone: str | None = None):
    """The weights one backbone starts from: `weights`, or its entry (or `default`) of a mapping; None = random."""
    value = cfg.weights
    if isinstance(value, dict):
        value = value.get(backbone or cfg.backbone, value.get("default", "imagenet"))
    return None if value in (None, "none", "null") else value


def _backbone(v):
    from models.registry import REGISTRY

    if v not in REGISTRY:
        return f"a registered backbone ({', '.join(sorted(REGISTRY))})"


def _dataset(v):
    from benchmark.data.formats import names

    if v not in names():
        return f"one of {', '.join(names())}"


# The range or choices of every key that has one (types come from the annotations of Config).
CHECKS = {
    "dataset": _dataset, "labels": _labels, "policy": _policy, "blank": _choice(("negative", "ignore")),
    "views": _choice(("frontal", "all")), "projections": _projections,
    "val_fraction": _num(0, 1, hi_open=True), "test_fraction": _num(0, 1, hi_open=True), "split_seed": _int(0),
    "max_train_images": _int(1), "image_size": _int(16, 4096), "resize": _choice(("crop", "pad")),
    "equalize": _choice(("none", "hist", "clahe")), "max_image_pixels": _int(1), "phantom_images": _int(20),
    "phantom_size": _int(32, 2048),
    "backbone": _backbone, "finetune": _choice(FINETUNES), "gradual_epochs": _int(0),
    "gradual_lr_factor": _num(0, lo_open=True), "dropout": _num(0, 1, hi_open=True), "head_hidden": _int(0),
    "bn_momentum": _num(0, 1, hi_open=True), "bn_reestimate_batches": _int(0),
    "epochs": _int(1), "batch_size": _int(1), "learning_rate": _num(0, lo_open=True),
    "optimizer": _choice(OPTIMIZERS), "weight_decay": _num(0), "momentum": _num(0, 1, hi_open=True),
    "schedule": _choice(SCHEDULES), "warmup_epochs": _int(0), "plateau_factor": _num(0, 1, True, True),
    "plateau_patience": _int(0), "early_stopping_patience": _int(1), "loss": _choice(LOSSES),
    "focal_gamma": _num(0), "rotation": _num(0, 180), "shift": _num(0, 1, hi_open=True),
    "zoom": _num(0, 1, hi_open=True), "brightness": _num(0, 1), "contrast": _num(0, 1), "seed": _int(0),
    "precision": _choice(("auto", "float32", "mixed_float16", "mixed_bfloat16")), "steps_per_epoch": _int(1),
    "logical_cpus": _int(0, 64), "gradcam_images": _int(0, 100),
    "bootstrap": lambda v: None if v == 0 or 50 <= v <= 100_000 else "0 (no confidence intervals) or 50 to 100000",
    "run_timeout": _num(0, lo_open=True), "external": _external, "weights": _weights,
    "bn_reestimate": lambda v: None if v in ("auto", True, False) else "auto, true or false",
    "mlflow": lambda v: None if v in (True, False) or isinstance(v, str) and v else "true, false or a tracking URI",
    "protocol": _choice(("auto", "valid_as_test", "official_test", "carved_test")),
    "backend": _choice(("local", "ray")), "keras_backend": _choice(KERAS_BACKENDS), "ray_cpus_per_run": _num(0), "ray_gpus_per_run": _num(0),
    "score_by": _choice(("auto", "image", "study")), "study_reduce": _choice(("max", "mean")),
}


def validate(cfg: Config, origin: str = "config") -> Config:
    """Check every value's range or choices, the sweep axes' elements included; a UserError names the key, the
    value and where it came from."""
    types_ = _field_types()
    for key, check in CHECKS.items():
        value = getattr(cfg, key)
        if value is None and key not in ("labels", "policy", "weights"):
            continue
        expected = check(value)
        if expected:
            raise UserError(f"{origin}: {key} must be {expected}, got {_shown(value)}")
    for multi, single in SWEEP_KEYS.items():
        for i, value in enumerate(getattr(cfg, multi)):
            element = _coerce(f"{multi}[{i}]", value, types_[single], origin)
            if single == "policy" and isinstance(element, dict):
                expected = _policy(element)
            else:
                expected = CHECKS[single](element) if single in CHECKS else None
            if expected:
                raise UserError(f"{origin}: {multi}[{i}] must be {expected}, got {_shown(value)}")
    from models.registry import has_imagenet

    for b in dict.fromkeys((cfg.backbone, *cfg.backbones)):
        if weights_for(cfg, b) == "imagenet" and not has_imagenet(b):
            raise UserError(f"{origin}: {b} has no ImageNet weights; train it from scratch with weights: "
                            f"{{default: imagenet, {b}: null}}, or give a file: {{{b}: /path/to/weights}}")
    engines = {cfg.keras_backend, *cfg.keras_backends} - {None, "tensorflow"}
    if engines and (cfg.tensorboard or cfg.logical_cpus > 1):
        key = "tensorboard: true" if cfg.tensorboard else "logical_cpus"
        raise UserError(f"{origin}: {key} needs TensorFlow, and keras_backend is {' / '.join(sorted(engines))}; "
                        f"use mlflow: true for training curves, or keras_backend: tensorflow")
    if cfg.val_fraction + cfg.test_fraction >= 1:
        raise UserError(f"{origin}: val_fraction + test_fraction must be below 1, got "
                        f"{cfg.val_fraction} + {cfg.test_fraction}")
    return cfg


def _shown(value) -> str:
    return repr(list(value) if isinstance(value, tuple) else value)


def merge(base: Config, values: dict, origin: str) -> Config:
    """Apply a dict of overrides to a Config, rejecting unknown keys with the list of valid ones."""
    if not isinstance(values, dict):
        raise UserError(f"{origin}: expected a mapping of keys to values, got {type(values).__name__}")
    types_ = _field_types()
    changes = {}
    for key, value in values.items():
        if key not in types_:
            close = [k for k in types_ if k.startswith(str(key)[:4])]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UserError(f"{origin}: unknown config key {key!r}{hint}; see configs/README.md for the valid keys")
        changes[key] = _coerce(key, value, types_[key], origin)
    return validate(dataclasses.replace(base, **changes), origin)


def parse_set(items: list[str] | None) -> dict:
    """Parse ``key=value`` strings; values are YAML (``epochs=2``, ``backbones=[mobilenet,resnet34]``, ``weights=null``)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected key=value, e.g. --set epochs=2")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise UserError(f"--set {item!r}: the value is not valid YAML ({exc.__class__.__name__})") from None
    return out


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; the profiles are in configs/")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of keys to values")
    return data


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None, **extra) -> Config:
    """Defaults, then the YAML file, then `extra` (command-line flags), then `--set` overrides."""
    cfg = Config()
    if path is not None:
        cfg = merge(cfg, load_yaml(path), str(path))
    extra = {k: v for k, v in extra.items() if v is not None}
    if extra:
        cfg = merge(cfg, extra, "command line")
    if overrides:
        cfg = merge(cfg, overrides, "--set")
    paths = {k: os.path.abspath(getattr(cfg, k)) for k in PATH_KEYS if getattr(cfg, k)}
    if cfg.external:
        paths["external"] = tuple({**spec, **{k: os.path.abspath(spec[k]) for k in ("data_root", "csv") if spec.get(k)}}
                                  for spec in cfg.external)
    if cfg.keras_backend is None:  # resolved once, so that a sweep's runs record the engine they ran on
        paths["keras_backend"] = merge(cfg, {"keras_backend": os.environ.get("KERAS_BACKEND") or "tensorflow"},
                                       "$KERAS_BACKEND").keras_backend
    return dataclasses.replace(cfg, **paths)


def config_from_dict(values: dict, origin: str) -> Config:
    """Rebuild a Config from a run directory's config.yaml."""
    return merge(Config(), values, origin)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def grid(cfg: Config) -> list[Config]:
    """Expand the sweep keys (backbones, policies, ...) into one Config per run."""
    axes = [(single, list(getattr(cfg, multi)) or [getattr(cfg, single)]) for multi, single in SWEEP_KEYS.items()]
    runs = [cfg]
    for single, values in axes:
        runs = [r.replace(**{single: v}) for r in runs for v in values]
    return [r.replace(**{m: () for m in SWEEP_KEYS}) for r in runs]


def run_name(cfg: Config, varying: set[str]) -> str:
    """A run directory name from the keys that vary across the sweep, e.g. ``resnet50-mixed-s0``."""
    parts = [cfg.backbone]
    if "policy" in varying:
        parts.append(cfg.policy if isinstance(cfg.policy, str) else "custom")
    if "finetune" in varying:
        parts.append(cfg.finetune)
    if "image_size" in varying:
        parts.append(f"{cfg.image_size}px")
    if "seed" in varying:
        parts.append(f"s{cfg.seed}")
    if "keras_backend" in varying:
        parts.append(cfg.keras_backend or "tensorflow")
    return "-".join(parts)

