"""What several commands share: the data set choices, the configuration and launcher options, and loading the
configuration they name. Light imports only: every command, `--help` included, imports this module."""

from __future__ import annotations

import argparse

from benchmark.data.formats import names as dataset_names

DATASET_CHOICES = dataset_names()


def config_args(p: argparse.ArgumentParser, dataset_required: bool = False) -> None:
    p.add_argument("--config", help="a YAML profile from configs/ (default: the built-in defaults)")
    p.add_argument("--dataset", choices=DATASET_CHOICES, required=dataset_required)
    p.add_argument("--data-root", help="the folder of the download (or of the phantom)")
    p.add_argument("--csv", help="the label file (default: the data set's own file under --data-root)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip (and count) missing or corrupt images instead of stopping")
    p.add_argument("--deterministic", action="store_true", help="TensorFlow's op determinism (slower)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key with a YAML value, e.g. --set epochs=2 --set weights=null")


def launcher_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--launcher", "--backend", dest="launcher", choices=("local", "ray"),
                   help="where the runs execute: local processes (default) or a Ray cluster (pip install -e .[ray]); "
                        "--backend is its earlier name")
    p.add_argument("--ray-address", help="with --launcher ray: auto (this machine's cluster), HOST:6379, "
                                         "ray://HOST:10001, or local (a private cluster here; the default without "
                                         "$RAY_ADDRESS)")


def load_cfg(args, **extra):
    from benchmark.config import load_config, parse_set

    flags = {"skip_bad_images": True if args.skip_bad_images else None,
             "deterministic": True if args.deterministic else None}
    return load_config(args.config, parse_set(args.set), dataset=args.dataset, data_root=args.data_root,
                       train_csv=args.csv, **flags, **extra)
