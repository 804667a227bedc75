"""`data inspect` (count a label file) and `data make-phantom` (write the synthetic data set)."""

from __future__ import annotations

import json

from benchmark.cli.common import DATASET_CHOICES


def add_parser(sub) -> None:
    data = sub.add_parser("data", help="inspect label files, make the synthetic phantom data set")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True
    ins = dsub.add_parser("inspect", help="count images, patients, views and label values of a label file")
    ins.add_argument("--dataset", choices=DATASET_CHOICES, required=True)
    ins.add_argument("--csv", required=True, help="train.csv, valid.csv, Data_Entry_2017*.csv or any CSV (.gz too)")
    ins.add_argument("--data-root", help="the folder image paths are relative to (default: the CSV's folder)")
    ins.add_argument("--policy", default="mixed", help="uncertainty policy for the after_policy counts")
    ins.add_argument("--blank", default="negative", choices=("negative", "ignore"))
    ins.add_argument("--all-views", action="store_true", help="count lateral views too (default: frontal only)")
    ins.add_argument("--path-column", default="Path", help="csv data sets: the image path column")
    ins.add_argument("--patient-column", help="csv data sets: the patient column")
    ins.add_argument("--json", action="store_true", help="print one JSON object")
    ins.set_defaults(func=cmd_inspect)
    ph = dsub.add_parser("make-phantom", help="write the synthetic phantom data set in the CheXpert layout")
    ph.add_argument("--out", required=True, help="folder to write (a CheXpert-v1.0-small-like tree)")
    ph.add_argument("--n", type=int, default=2000, help="number of images (frontal and lateral)")
    ph.add_argument("--size", type=int, default=128, help="image side in pixels")
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--workers", type=int, default=0, help="processes (default: every core)")
    ph.set_defaults(func=cmd_make_phantom)


def cmd_inspect(args) -> int:
    from benchmark.data.inspect import format_table, inspect_table

    summary = inspect_table(args.dataset, args.csv, args.data_root, args.policy, args.blank, args.all_views,
                            args.path_column, args.patient_column)
    print(json.dumps(summary) if args.json else format_table(summary))
    return 0


def cmd_make_phantom(args) -> int:
    from benchmark.phantom import make_phantom

    info = make_phantom(args.out, n=args.n, size=args.size, seed=args.seed, workers=args.workers or None)
    print(f"wrote {info['images']} synthetic images ({info['patients']} patients) to {info['root']} "
          f"in {info['seconds']:.1f} s ({info['images_per_s']:.0f} images/s)")
    return 0
