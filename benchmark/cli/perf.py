"""`perf pipeline|train|export|report|tables`: throughput and cost measurements (the figures of BENCHMARKS.md)."""

from __future__ import annotations

import json

from benchmark.cli.common import DATASET_CHOICES


def add_parser(sub) -> None:
    perf = sub.add_parser("perf", help="throughput benchmarks")
    psub = perf.add_subparsers(dest="perf_command", metavar="WHAT")
    psub.required = True
    _pipeline_parser(psub)
    _train_parser(psub)
    _export_parser(psub)
    _report_parser(psub)
    _tables_parser(psub)


def _pipeline_parser(psub) -> None:
    pp = psub.add_parser("pipeline", help="images/s of the input pipeline against ImageDataGenerator and decoding")
    pp.add_argument("--dataset", choices=DATASET_CHOICES, required=True)
    pp.add_argument("--data-root", required=True)
    pp.add_argument("--csv")
    pp.add_argument("--image-size", type=int, default=224)
    pp.add_argument("--batch-size", type=int, default=32)
    pp.add_argument("--max-images", type=int, help="use at most this many images")
    pp.add_argument("--repeats", type=int, default=3, help="first passes to time (the median is reported)")
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=cmd_pipeline)


def _train_parser(psub) -> None:
    pt = psub.add_parser("train", help="training images/s fed by the real pipeline and by in-memory tensors, on "
                                       "a Keras backend, optionally beside a plain PyTorch network")
    pt.add_argument("--backbone", required=True)
    pt.add_argument("--engine", "--backend", dest="engine", choices=("tensorflow", "jax", "torch"),
                    help="Keras's engine (default: $KERAS_BACKEND, else tensorflow)")
    pt.add_argument("--precision", choices=("float32", "mixed_bfloat16", "mixed_float16"), default="float32")
    pt.add_argument("--reference", choices=("torch",), help="also time torchvision's (or timm's) network of the "
                                                            "same architecture, same batch, precision, channels-last")
    pt.add_argument("--image-size", type=int, default=224)
    pt.add_argument("--batch-size", type=int, default=32)
    pt.add_argument("--steps", type=int, default=20)
    pt.add_argument("--data-root", help="a phantom or CheXpert-layout folder (default: a temporary phantom)")
    pt.add_argument("--json", action="store_true")
    pt.set_defaults(func=cmd_train)


def _export_parser(psub) -> None:
    pe = psub.add_parser("export", help="latency and size of a run's exports beside the Keras model's")
    pe.add_argument("--run", required=True, help="a run with exports (python -m benchmark export)")
    pe.add_argument("--repeats", type=int, default=20, help="timed calls per engine (the median is reported)")
    pe.add_argument("--json", action="store_true")
    pe.set_defaults(func=cmd_export)


def _tables_parser(psub) -> None:
    from benchmark.perf.tables import add_arguments

    pt = psub.add_parser("tables", help="render BENCHMARKS.md's marked tables from docs/measurements/ (--check: compare)")
    add_arguments(pt)
    pt.set_defaults(func=cmd_tables)


def cmd_tables(args) -> int:
    from benchmark.perf.tables import run

    return run(args)


def _report_parser(psub) -> None:
    pr = psub.add_parser("report", help="time and peak memory of `report` on a fabricated NIH-like sweep")
    pr.add_argument("--runs", type=int, default=5)
    pr.add_argument("--images", type=int, default=25596, help="test images (NIH's official test list: 25,596)")
    pr.add_argument("--labels", type=int, default=14)
    pr.add_argument("--bootstrap", type=int, default=1000, help="resamples")
    pr.add_argument("--keep", metavar="DIR", help="fabricate the sweep into DIR (a missing or empty folder) and keep it")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_report)


def _print(result: dict, as_json: bool) -> int:
    from benchmark.perf import format_result

    print(json.dumps(result) if as_json else format_result(result))
    return 0


def cmd_pipeline(args) -> int:
    from benchmark.perf.pipeline import perf_pipeline

    result = perf_pipeline(args.dataset, args.data_root, args.csv, args.image_size, args.batch_size,
                           args.max_images, args.repeats)
    return _print(result, args.json)


def cmd_train(args) -> int:
    from benchmark.engines import activate

    activate(args.engine)  # before Keras is imported
    if args.reference == "torch":
        from benchmark.perf.reference import check_available

        check_available()  # before minutes of measuring
    from benchmark.perf.train import perf_train

    result = perf_train(args.backbone, args.image_size, args.batch_size, args.steps, args.data_root,
                        args.precision, args.reference)
    return _print(result, args.json)


def cmd_export(args) -> int:
    from benchmark.engines import activate_for_run
    from benchmark.perf.export import format_perf, perf_export

    activate_for_run(args.run)
    result = perf_export(args.run, args.repeats)
    print(json.dumps(result) if args.json else format_perf(result))
    return 0


def cmd_report(args) -> int:
    from benchmark.perf.report import perf_report

    result = perf_report(args.runs, args.images, args.labels, args.bootstrap, args.keep)
    return _print(result, args.json)
