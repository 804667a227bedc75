"""Configuration: YAML profiles in configs/ merged into one frozen dataclass, with `--set key=value` overrides.

Keys are flat and unique (``epochs``, ``policy``, ``backbone`` ...), so the same name works in a YAML file and on
the command line. Unknown keys and badly typed values are a UserError naming the key and where it came from.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import yaml

from benchmark.data.policies import POLICIES
from benchmark.errors import UserError

FINETUNES = ("full", "linear", "gradual", "baseline")
LOSSES = ("bce", "masked_bce", "weighted_bce", "focal")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("plateau", "cosine", "constant")



KERAS_BACKENDS = ("tensorflow", "jax", "torch")
LAUNCHERS = ("local", "ray")


@dataclass(frozen=True)
class KeySpec:
    """One configuration key, declared once: everything that lists keys (the checks, the fingerprint, the keys that
    make a configuration, the public report's redaction, configs/README.md's table) is derived from these."""

    name: str
    default: Any
    doc: str
    check: Callable[[Any], str | None] | None = None  # returns what was expected, or None when the value is fine
    result: bool = True  # changes a run's results: part of its fingerprint and of its configuration
    path: bool = False  # a file or folder: made absolute when loaded, redacted in public reports
    path_fields: tuple = ()  # for a list of mappings (external): the entries that are paths
    secret: bool = False  # may hold credentials: redacted in public reports
    axis_of: str | None = None  # a sweep axis: the plural key whose values the single key takes in turn
    aliases: tuple = ()  # earlier names, still accepted in profiles, --set and old run folders
    since: int = 1  # the layout version that added it; a later key at its default is left out of fingerprints, so
    #                 that runs made before it still match (see fingerprint.config_part)


def key(default, doc: str, **spec):
    """A `Config` field declared with its doc, check and kind (see `KeySpec`). A result-changing key added to an
    existing layout declares `since=2` (or later), so that folders made before it keep their fingerprints."""
    return field(default=default, metadata={"key": spec, "doc": doc})


TUNE_KEYS = ("tune_trials", "tune_budget_hours", "tune_space", "tune_sampler", "tune_pruner", "tune_seeds")
KINDS = ("log_uniform", "uniform", "int", "choice")
# Keys that name a configuration (what is compared) or need their own image cache: never tuned.
NOT_TUNABLE = {"backbone": "it is what the configurations compare", "image_size": "each size needs its own cache; "
               "use the image_sizes axis", "seed": "use tune_seeds", "keras_backend": "it is what is compared"}


def _tune_space(v):
    return space_problem(v)


def _int(lo=None, hi=None):
    def check(v):
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            return f"an integer {_range(lo, hi)}"
    return check


def _num(lo=None, hi=None, lo_open=False, hi_open=False):
    def check(v):
        if v != v or v in (float("inf"), float("-inf")):  # NaN compares false with everything
            return f"a number {_range(lo, hi, lo_open, hi_open)}" if (lo, hi) != (None, None) else "a finite number"
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



@dataclass(frozen=True)
class Config:
    """Everything one training run (or a sweep of them) needs. Field names are the YAML / --set keys."""

    # --- data ---
    dataset: str = key("phantom", "the data set's format: phantom, chexpert, nih or csv", check=_dataset)
    data_root: str | None = key(None, "the folder holding the data set (the phantom is made here if missing)",
                                path=True)
    train_csv: str | None = key(None, "the label file; default: the data set's own file under data_root", path=True)
    valid_csv: str | None = key(None, "the official validation labels (CheXpert's valid.csv); default: found beside "
                                "train.csv", path=True)
    test_csv: str | None = key(None, "official test labels (CheXpert's released test set); default: found beside "
                               "train.csv", path=True)
    protocol: str = key("auto", "which images are test and validation: auto, valid_as_test, official_test or "
                        "carved_test (benchmark/data/protocols.py)",
                        check=_choice(("auto", "valid_as_test", "official_test", "carved_test")))
    score_by: str = key("auto", "the scoring unit: image, or study (views reduced by study_reduce); auto: the "
                        "format's", check=_choice(("auto", "image", "study")))
    study_reduce: str = key("max", "max or mean over a study's views", check=_choice(("max", "mean")))
    external: tuple = key((), "external test sets scored at the end of each run: [{dataset: nih, data_root: DIR}, "
                          "...] (optional: csv, split: all|test, name)", check=_external, result=False,
                          path_fields=("data_root", "csv"))
    labels: Any = key("competition5", "a label set (competition5, chexpert14, nih14, ...), all, or a list of labels",
                      check=_labels)
    policy: Any = key("mixed", "uncertain labels: ignore, zeros, ones, mixed, smooth_ones, smooth_zeros, or "
                      "{label: policy}", check=_policy)
    blank: str = key("negative", "a blank label: negative (the CheXpert paper's convention) or ignore",
                     check=_choice(("negative", "ignore")))
    views: str = key("frontal", "frontal, or all (laterals too)", check=_choice(("frontal", "all")))
    projections: Any = key(None, "e.g. [AP, PA]; null keeps every projection", check=_projections)
    val_fraction: float = key(0.1, "validation carved by patient when the data set has no official validation set",
                              check=_num(0, 1, hi_open=True))
    test_fraction: float = key(0.1, "test carved from train by patient when there is no official test set",
                               check=_num(0, 1, hi_open=True))
    split_seed: int = key(0, "the seed of the patient splits we carve", check=_int(0))
    max_train_images: int | None = key(None, "subsample the training split by patient (quick experiments)",
                                       check=_int(1))
    path_column: str = key("Path", "csv data sets: the column of image paths")
    patient_column: str | None = key(None, "csv data sets: the patient column; default: each image is its own "
                                     "patient")
    split_column: str | None = key(None, "csv data sets: a column holding train / val / test")
    image_size: int = key(224, "the side of the square input in pixels", check=_int(16, 4096))
    resize: str = key("crop", "aspect-preserving resize, then crop (centre) or pad", check=_choice(("crop", "pad")))
    equalize: str = key("none", "none, hist or clahe", check=_choice(("none", "hist", "clahe")))
    cache_dir: str | None = key(None, "the decoded-image cache; default: $CXR_BENCH_CACHE or ~/.cache/cxr-bench",
                                result=False, path=True)
    skip_bad_images: bool = key(False, "leave out unreadable images (listed) instead of stopping", result=False)
    max_image_pixels: int = key(100_000_000, "an image whose header announces more pixels is a bad image "
                                "(decompression bombs)", check=_int(1), result=False)
    phantom_images: int = key(2000, "images of the phantom made when dataset=phantom and data_root does not exist",
                              check=_int(20), result=False)
    phantom_size: int = key(128, "the side of the phantom's images in pixels", check=_int(32, 2048), result=False)

    # --- model ---
    backbone: str = key("densenet121", "a registered backbone (python -m benchmark models)", check=_backbone)
    weights: Any = key("imagenet", "imagenet, null, a weights file or timm folder, or {default: ..., resnet34: ...}",
                       check=_weights)
    weights_dir: str | None = key(None, "pretrained weight files looked for here before any download "
                                  "($CXR_BENCH_WEIGHTS)", result=False, path=True)
    finetune: str = key("full", "full, linear (frozen backbone), gradual (frozen, then all) or baseline",
                        check=_choice(FINETUNES))
    gradual_epochs: int = key(1, "finetune=gradual: epochs with a frozen backbone", check=_int(0))
    gradual_lr_factor: float = key(0.1, "finetune=gradual: learning rate factor once everything trains",
                                   check=_num(0, lo_open=True))
    dropout: float = key(0.2, "dropout before the head", check=_num(0, 1, hi_open=True))
    head_hidden: int = key(0, "units of an optional hidden layer in the head", check=_int(0))
    per_label_heads: bool = key(False, "one small head per label instead of one dense layer")
    bn_momentum: float | None = key(None, "BatchNorm momentum; null: 0.9 when training from scratch (weights=null), "
                                    "else the backbone's", check=_num(0, 1, hi_open=True))
    bn_reestimate: Any = key("auto", "re-estimate BatchNorm statistics before each validation: auto (from scratch "
                             "only), true or false",
                             check=lambda v: None if v in ("auto", True, False) else "auto, true or false")
    bn_reestimate_batches: int = key(10, "training batches used to re-estimate BatchNorm statistics", check=_int(0))

    # --- training ---
    epochs: int = key(10, "the most epochs a run trains", check=_int(1))
    batch_size: int = key(32, "images per step", check=_int(1))
    learning_rate: float = key(1e-3, "the initial learning rate", check=_num(0, lo_open=True))
    optimizer: str = key("adam", "adam, adamw or sgd", check=_choice(OPTIMIZERS))
    weight_decay: float = key(1e-4, "adamw only", check=_num(0))
    momentum: float = key(0.9, "sgd only", check=_num(0, 1, hi_open=True))
    schedule: str = key("plateau", "plateau (ReduceLROnPlateau on validation AUROC), cosine or constant",
                        check=_choice(SCHEDULES))
    warmup_epochs: int = key(0, "cosine only: linear warm-up epochs", check=_int(0))
    plateau_factor: float = key(0.1, "plateau: the factor the learning rate is multiplied by",
                                check=_num(0, 1, True, True))
    plateau_patience: int = key(1, "plateau: epochs without improvement before lowering", check=_int(0))
    early_stopping_patience: int = key(3, "epochs without validation improvement before stopping", check=_int(1))
    loss: str = key("bce", "bce, masked_bce, weighted_bce or focal", check=_choice(LOSSES))
    focal_gamma: float = key(2.0, "focal loss only: its gamma", check=_num(0))
    augment: bool = key(True, "random rotation, shift, zoom, brightness and contrast while training")
    rotation: float = key(5.0, "augmentation: the largest rotation in degrees", check=_num(0, 180))
    shift: float = key(0.05, "augmentation: the largest shift, a fraction of the image", check=_num(0, 1, hi_open=True))
    zoom: float = key(0.1, "augmentation: the largest zoom", check=_num(0, 1, hi_open=True))
    brightness: float = key(0.1, "augmentation: the largest brightness change", check=_num(0, 1))
    contrast: float = key(0.1, "augmentation: the largest contrast change", check=_num(0, 1))
    hflip: bool = key(False, "horizontal flips; off: the heart is on the left, and flips would teach the network "
                      "dextrocardia is normal")
    seed: int = key(0, "the training seed (initialisation, order, augmentation)", check=_int(0))
    deterministic: bool = key(False, "deterministic kernels (slower; bit-identical reruns)")
    precision: str = key("auto", "auto (mixed_float16 on a GPU, float32 otherwise), float32, mixed_float16 or "
                         "mixed_bfloat16", check=_choice(("auto", "float32", "mixed_float16", "mixed_bfloat16")))
    xla: bool = key(False, "compile the training step with XLA")
    tensorboard: bool = key(False, "write TensorBoard logs to RUN/tensorboard/ (TensorFlow only)", result=False)
    steps_per_epoch: int | None = key(None, "cap the steps per epoch (smoke tests)", check=_int(1))
    logical_cpus: int = key(0, ">1 splits the CPU into that many devices for MirroredStrategy (tests the multi-GPU "
                            "path)", check=_int(0, 64))
    gradcam_images: int = key(6, "Grad-CAM overlays drawn per run", check=_int(0, 100), result=False)
    bootstrap: int = key(1000, "patient bootstrap resamples behind every CI and test (0: none)",
                         check=lambda v: None if v == 0 or 50 <= v <= 100_000
                         else "0 (no confidence intervals) or 50 to 100000")
    min_positives: int = key(10, "a label enters a macro average, its CI and any test only with at least this many "
                             "positive and as many negative patients in that set", check=_int(1), result=False)
    run_timeout: float | None = key(None, "seconds; a sweep stops a run that takes longer and records it as failed",
                                    check=_num(0, lo_open=True), result=False)
    mlflow: Any = key(False, "log each finished run to MLflow: true (a SQLite store in the sweep folder) or a "
                      "tracking URI", result=False, secret=True,
                      check=lambda v: None if v in (True, False) or isinstance(v, str) and v
                      else "true, false or a tracking URI")
    keep_checkpoint: bool = key(False, "keep checkpoint/ (the resume state, with the optimiser) after a run finishes",
                                result=False)
    keras_backend: str | None = key(None, "the engine: tensorflow, jax or torch (null: $KERAS_BACKEND, else "
                                    "tensorflow)", check=_choice(KERAS_BACKENDS))
    launcher: str = key("local", "where a sweep's runs execute: local (processes here) or ray (tasks on a Ray "
                        "cluster)", check=_choice(LAUNCHERS), result=False, aliases=("backend",))
    ray_address: str | None = key(None, "Ray: auto (this machine's cluster), HOST:6379, ray://HOST:10001, or local "
                                  "(a private loopback cluster); null: $RAY_ADDRESS, else local", result=False,
                                  secret=True)
    ray_cpus_per_run: float = key(1.0, "Ray: CPUs each run asks for", check=_num(0), result=False)
    ray_gpus_per_run: float | None = key(None, "Ray: GPUs each run asks for (null: 1 on a cluster with GPUs, else 0)",
                                         check=_num(0), result=False)

    # --- tuning: an equal budget per configuration (benchmark/sweep/tune.py, docs/tuning.md) ---
    tune_trials: int | None = key(None, "tuning: trials per configuration (a sweep point without the tuned keys)",
                                  check=_int(1), since=2)
    tune_budget_hours: float | None = key(None, "tuning: training hours per configuration; no trial starts once "
                                          "they are spent", check=_num(0, lo_open=True), since=2)
    tune_space: Any = key(None, "tuning: {key: {log_uniform: [lo, hi]} | {uniform: [lo, hi]} | {int: [lo, hi]} | "
                          "{choice: [...]}} over result-changing keys", check=_tune_space, since=2)
    tune_sampler: str = key("tpe", "tuning: Optuna's sampler, tpe or random (seeded by seed)",
                            check=_choice(("tpe", "random")), since=2)
    tune_pruner: str = key("none", "tuning: stop poor trials on their validation AUROC per epoch: none, median or "
                           "hyperband", check=_choice(("none", "median", "hyperband")), since=2)
    tune_seeds: int = key(1, "tuning: seeds the chosen setting of each configuration is trained with for the "
                          "comparison", check=_int(1, 100), since=2)

    # --- sweep grid (empty: the single value above) ---
    backbones: tuple = key((), "sweep axis: backbones to train", axis_of="backbone")
    policies: tuple = key((), "sweep axis: uncertainty policies", axis_of="policy")
    finetunes: tuple = key((), "sweep axis: fine-tuning modes", axis_of="finetune")
    image_sizes: tuple = key((), "sweep axis: image sizes", axis_of="image_size")
    seeds: tuple = key((), "sweep axis: training seeds (runs that differ only in seed form one configuration)",
                       axis_of="seed")
    keras_backends: tuple = key((), "sweep axis: engines", axis_of="keras_backend")
    name: str = key("run", "a label for the run or sweep (not part of its results)", result=False)

    def replace(self, **changes) -> "Config":
        """A copy with some keys changed (validated)."""
        return validate(dataclasses.replace(self, **changes))

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @property
    def backend(self) -> str:
        """The launcher's earlier name."""
        return self.launcher


KEYS: dict[str, KeySpec] = {f.name: KeySpec(f.name, f.default, f.metadata["doc"],
                                            **f.metadata["key"])
                            for f in fields(Config)}
CHECKS = {name: spec.check for name, spec in KEYS.items() if spec.check}
PATH_KEYS = tuple(name for name, spec in KEYS.items() if spec.path or spec.path_fields)
SECRET_KEYS = frozenset(name for name, spec in KEYS.items() if spec.secret)
NON_RESULT_KEYS = frozenset(name for name, spec in KEYS.items() if not spec.result)
SWEEP_KEYS = {name: spec.axis_of for name, spec in KEYS.items() if spec.axis_of}  # plural -> single
SEED_KEYS = frozenset({"seed", "seeds"})  # runs that differ only in these are one configuration
ALIASES = {alias: name for name, spec in KEYS.items() for alias in spec.aliases}


def key_table() -> str:
    """configs/README.md's table of every key, from the declaration (`python -m benchmark config-keys`)."""
    rows = ["| key | default | changes results | notes | what it is |", "| --- | --- | --- | --- | --- |"]
    for name, spec in KEYS.items():
        notes = [*(["path"] if spec.path or spec.path_fields else []), *(["secret"] if spec.secret else []),
                 *([f"sweep axis of `{spec.axis_of}`"] if spec.axis_of else []),
                 *([f"earlier name `{a}`" for a in spec.aliases])]
        default = yaml.safe_dump(_plain(spec.default), default_flow_style=True).strip().removesuffix("...").strip()
        rows.append(f"| `{name}` | `{default}` | {'yes' if spec.result else 'no'} | {', '.join(notes)} | "
                    f"{spec.doc.replace('|', '&#124;')} |")
    return "\n".join(rows) + "\n"


def configuration_of(values: dict) -> dict:
    """The result-changing keys of a run's config.yaml without its seed: runs with equal configurations differ only
    in seed (and are pooled when compared). Keys unknown here (from other versions) are left out."""
    values = {ALIASES.get(k, k): v for k, v in values.items()}
    out = {k: _plain(v) for k, v in values.items()
           if k in KEYS and KEYS[k].result and k not in SEED_KEYS and k not in SWEEP_KEYS}
    if out.get("keras_backend") in (None, "tensorflow"):  # the default engine, as in runs made before the key
        out.pop("keras_backend", None)
    return out




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
        if key in ALIASES:  # an earlier name (backend -> launcher)
            if ALIASES[key] in values:
                raise UserError(f"{origin}: {key} is the earlier name of {ALIASES[key]}; give only {ALIASES[key]}")
            key = ALIASES[key]
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
    paths = {k: absolute_paths(k, getattr(cfg, k)) for k in PATH_KEYS if getattr(cfg, k)}
    if cfg.keras_backend is None:  # resolved once, so that a sweep's runs record the engine they ran on
        paths["keras_backend"] = merge(cfg, {"keras_backend": os.environ.get("KERAS_BACKEND") or "tensorflow"},
                                       "$KERAS_BACKEND").keras_backend
    return dataclasses.replace(cfg, **paths)


def absolute_paths(name: str, value):
    """A path key's value with its paths made absolute (a list of mappings: their declared path fields)."""
    spec = KEYS[name]
    if spec.path_fields:
        return tuple({**item, **{k: os.path.abspath(item[k]) for k in spec.path_fields if item.get(k)}}
                     for item in value)
    return os.path.abspath(value)


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


def space_problem(space) -> str | None:
    """What is wrong with a `tune_space` value (the config check's answer), or None."""
    shape = ("a mapping of result-changing keys to {log_uniform: [lo, hi]}, {uniform: [lo, hi]}, {int: [lo, hi]} "
             "or {choice: [...]}")
    if not isinstance(space, dict) or not space:
        return shape
    for name, spec in space.items():
        if name not in KEYS:
            return f"{shape} (unknown key {name!r})"
        if name in NON_RESULT_KEYS or name in SWEEP_KEYS or name in TUNE_KEYS:
            return f"{shape} ({name} does not change a run's results, or is a sweep axis or tuning key)"
        if name in NOT_TUNABLE:
            return f"{shape} ({name} is not tuned: {NOT_TUNABLE[name]})"
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
            return f"{shape} ({name}: one of {', '.join(KINDS)})"
        kind, values = next(iter(spec.items()))
        problem = _range_problem(name, kind, values)
        if problem:
            return f"{shape} ({name}: {problem})"
    return None


def _range_problem(name: str, kind: str, values) -> str | None:
    if not isinstance(values, (list, tuple)) or not values:
        return f"{kind} takes a list"
    if kind == "choice":
        if not all(v is None or isinstance(v, (bool, int, float, str)) for v in values):
            return "choices must be plain values (numbers, strings, true/false, null)"
        ends = list(values)
    else:
        if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return f"{kind} takes [lo, hi], two numbers"
        lo, hi = values
        if not lo < hi or (kind == "log_uniform" and lo <= 0):
            return f"{kind} needs lo < hi" + (" and lo > 0" if kind == "log_uniform" else "")
        if kind == "int" and not all(isinstance(v, int) for v in values):
            return "int takes two integers"
        hint = str(_field_types()[name])
        if kind != "int" and "float" not in hint and "Any" not in hint:
            return f"{name} is not a number: use int or choice"
        ends = [lo, hi]
    check = CHECKS.get(name)
    for v in ends:
        expected = check(v) if check and v is not None else None
        if expected:
            return f"{v!r} is out of range ({name} must be {expected})"
    return None


def plan_grid(cfg: Config) -> list[tuple[str, Config]]:
    """(run name, config) for every point of the grid; names use only the keys that vary."""
    runs = grid(cfg)
    varying = {single for multi, single in SWEEP_KEYS.items()
               if len({repr(getattr(r, single)) for r in runs}) > 1}
    named = [(run_name(r, varying), r) for r in runs]
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        named = [(f"{n}-{i}", r) for i, (n, r) in enumerate(named)]
    return named
