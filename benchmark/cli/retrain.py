"""`retrain`: some runs of a sweep again, with the sweep's configuration plus `--set`, then the report."""

from __future__ import annotations

from benchmark.cli.common import launcher_args


def add_parser(sub) -> None:
    rt = sub.add_parser("retrain", help="train some runs of a sweep again (its configuration plus --set), then report")
    rt.add_argument("--sweep", required=True, help="the sweep folder")
    rt.add_argument("runs", nargs="+", metavar="RUN", help="run names (folders under SWEEP/runs)")
    rt.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an override for these runs, recorded in each (e.g. --set epochs=20)")
    rt.add_argument("--discard", action="store_true",
                    help="delete the previous run folders instead of keeping them under a dated name")
    rt.add_argument("--gpus", help="comma-separated GPU ids to run in parallel, one run per GPU")
    launcher_args(rt)
    rt.set_defaults(func=cmd_retrain)


def cmd_retrain(args) -> int:
    from benchmark.sweep.retrain import retrain

    return retrain(args.sweep, args.runs, args.set, discard=args.discard, gpus=args.gpus,
                   where={"launcher": args.launcher, "ray_address": args.ray_address})
