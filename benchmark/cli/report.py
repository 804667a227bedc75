"""`report`: the HTML report of a sweep or of one run, rebuilt from its files (no TensorFlow)."""

from __future__ import annotations

import contextlib
from pathlib import Path


def add_parser(sub) -> None:
    rp = sub.add_parser("report", help="build the HTML report of a sweep (or of one run) from its files")
    rp.add_argument("--sweep", required=True, help="a sweep directory or a single run directory")
    rp.add_argument("--bootstrap", type=int, help="bootstrap resamples for confidence intervals (default 1000)")
    rp.add_argument("--mlflow", nargs="?", const=True, metavar="TRACKING_URI",
                    help="log the finished runs and the report to MLflow (default store: SWEEP/mlflow.db)")
    rp.add_argument("--public", action="store_true",
                    help="a report safe to publish (in report-public/): no paths, image names, patient ids or "
                         "radiographs")
    rp.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from benchmark.runs.ownership import FolderLock, kind_of
    from reports.build import build_report

    # one writer: not while a sweep, a retrain or a training works in the folder (nor another report). A folder
    # of runs that cxr-bench did not make gets no lock file; its report/ folder is claimed as any other.
    path = Path(args.sweep)
    ours = kind_of(path) in ("sweep", "run")
    with FolderLock(path, "command (a sweep, train, retrain or report)") if ours else contextlib.nullcontext():
        index = build_report(path, bootstrap=args.bootstrap, public=args.public, mlflow=args.mlflow)
    print(index)
    return 0
