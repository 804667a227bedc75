"""The command line: `python -m benchmark COMMAND ...`, one module per command.

Each command's module (`benchmark/cli/<command>.py`) has `add_parser(sub)`, which registers its subparser and sets
its handler (`func`), and the handler itself; what several commands share is in `common.py`. Commands that do not
train (`--help`, `data inspect`, `data make-phantom`, `report`, `sweep` itself) import no TensorFlow: the modules
import only light code at their top, and each handler imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from benchmark.cli import (
    config_keys,
    data,
    doctor,
    evaluate,
    export,
    import_predictions,
    model_card,
    models,
    perf,
    predict,
    report,
    retrain,
    sweep,
    train,
)
from benchmark.errors import UserError

# the order `--help` lists them in
COMMANDS = (data, models, config_keys, doctor, train, evaluate, predict, report, sweep, retrain, import_predictions,
            model_card, export, perf)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark",
        description="cxr-bench: train and compare chest-radiograph classifiers and write an HTML report.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _terminate(signum, frame):
    """SIGTERM (a scheduler ending the job) is handled like Ctrl-C: work stops cleanly and resumes later."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the system refused (a full disk, a permission, a file for a folder): one line
        if exc.errno is None:
            raise
        from benchmark.errors import os_error_line

        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
