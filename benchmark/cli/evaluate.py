"""`evaluate`: recompute a run's predictions and metrics on its own split, or score it on another data set."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark.cli.common import DATASET_CHOICES
from benchmark.errors import UserError


def add_parser(sub) -> None:
    ev = sub.add_parser("evaluate", help="recompute a trained run's predictions and metrics, or score it on "
                                         "another data set (external validation)")
    ev.add_argument("--run", required=True, help="a run directory")
    ev.add_argument("--split", choices=("val", "test", "all"),
                    help="the run's own val or test split (default test); with --dataset: all its images "
                         "(default) or its test set")
    ev.add_argument("--tta", action="store_true", help="TenCrop test-time augmentation")
    ev.add_argument("--data-root", help="where the images are now (they moved), or with --dataset the other data "
                                        "set's folder")
    ev.add_argument("--dataset", choices=DATASET_CHOICES,
                    help="score the run on this other data set, on the labels both share; writes RUN/external/NAME/")
    ev.add_argument("--csv", help="with --dataset: its label file (default: the data set's own under --data-root)")
    ev.add_argument("--name", help="with --dataset: the name of RUN/external/NAME (default: the data set's name)")
    ev.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from benchmark.engines import activate_for_run
    from benchmark.runs.ownership import FolderLock, expect_kind

    # a run folder cxr-bench made, checked before anything (its lock file included) is written into it
    expect_kind(Path(args.run), ("run",), "a run directory", "pass a run folder that train or a sweep wrote")
    activate_for_run(args.run)
    with FolderLock(Path(args.run), "command (train, evaluate or a sweep)"):
        summary = _external(args) if args.dataset else _own_split(args)
    print(json.dumps(summary, indent=1))
    return 0


def _external(args) -> dict:
    """Score the run on another data set; the summary without the micro averages' per-label detail."""
    from benchmark.evaluation.evaluate import evaluate_external

    if not args.data_root:
        raise UserError("evaluate --dataset needs --data-root (the other data set's folder)")
    if args.split == "val" or args.tta:
        raise UserError("evaluate --dataset scores --split all or test, without --tta")
    record = evaluate_external(args.run, args.dataset, args.data_root, args.csv, args.split or "all", args.name)
    return {k: v for k, v in record["test"]["summary"].items() if not k.endswith("_micro") or not isinstance(v, dict)}


def _own_split(args) -> dict:
    """Recompute the run's own val or test split; the summary's numbers and its bootstrap."""
    from benchmark.evaluation.evaluate import evaluate_run

    if args.split == "all" or args.csv or args.name:
        raise UserError("--split all, --csv and --name go with --dataset (scoring on another data set)")
    metrics = evaluate_run(args.run, split=args.split or "test", tta=args.tta, data_root=args.data_root)
    return {k: v for k, v in metrics["summary"].items() if not isinstance(v, dict) or k == "bootstrap"}
