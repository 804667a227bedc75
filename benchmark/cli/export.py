"""`export`: a run's model as a SavedModel, ONNX or LiteRT file, checked against the Keras model."""

from __future__ import annotations


def add_parser(sub) -> None:
    ex = sub.add_parser("export", help="the run's model as a SavedModel, ONNX or LiteRT file, checked against Keras")
    ex.add_argument("--run", required=True, help="a trained run directory")
    ex.add_argument("--format", required=True, choices=("savedmodel", "onnx", "litert"))
    ex.add_argument("--out", help="where to write it (default: RUN/export/model.savedmodel, .onnx or .tflite)")
    ex.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from benchmark.evaluation.export import check_packages, export_run

    check_packages(args.format)  # before TensorFlow is loaded
    from benchmark.engines import activate_for_run

    activate_for_run(args.run)
    export_run(args.run, args.format, args.out)
    return 0
