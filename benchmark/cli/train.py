"""`train`: one backbone into a run directory (a sweep starts each of its runs as this command)."""

from __future__ import annotations

import json

from benchmark.cli.common import config_args, load_cfg


def add_parser(sub) -> None:
    tr = sub.add_parser("train", help="train one backbone and write a run directory")
    config_args(tr)
    tr.add_argument("--backbone", help="a name from `python -m benchmark models`")
    tr.add_argument("--out", required=True, help="the run directory (re-running resumes it)")
    tr.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from benchmark.engines import activate
    from benchmark.runs.processes import watch_parent
    from benchmark.train.training import train_run

    watch_parent()  # a sweep's run ends with the sweep, also where prctl is not available
    cfg = load_cfg(args, backbone=args.backbone)
    activate(cfg.keras_backend)  # before Keras is imported
    result = train_run(cfg, args.out)
    print(json.dumps(result))
    return 0
