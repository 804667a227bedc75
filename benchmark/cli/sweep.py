"""`sweep`: every run of a profile's grid, each in its own process (or on a Ray cluster), then the report."""

from __future__ import annotations

from benchmark.cli.common import config_args, launcher_args, load_cfg


def add_parser(sub) -> None:
    sw = sub.add_parser("sweep", help="train every run of a profile's grid, each in its own process, then report")
    config_args(sw)
    sw.add_argument("--out", required=True, help="the sweep directory (re-running resumes it)")
    sw.add_argument("--gpus", help="comma-separated GPU ids to run in parallel, one run per GPU")
    launcher_args(sw)
    sw.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    from benchmark.sweep.run import run_sweep

    cfg = load_cfg(args, launcher=args.launcher, ray_address=args.ray_address)
    return run_sweep(cfg, args.out, gpus=args.gpus)
