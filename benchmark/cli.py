"""The command line: `python -m benchmark COMMAND ...`.

Commands that do not train (`--help`, `data inspect`, `data make-phantom`, `report`, `sweep` itself) import no
TensorFlow; each subcommand imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from benchmark.data.formats import names as dataset_names
from benchmark.errors import UserError

DATASET_CHOICES = dataset_names()


def _config_args(p: argparse.ArgumentParser, dataset_required: bool = False) -> None:
    p.add_argument("--config", help="a YAML profile from configs/ (default: the built-in defaults)")
    p.add_argument("--dataset", choices=DATASET_CHOICES, required=dataset_required)
    p.add_argument("--data-root", help="the folder of the download (or of the phantom)")
    p.add_argument("--csv", help="the label file (default: the data set's own file under --data-root)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip (and count) missing or corrupt images instead of stopping")
    p.add_argument("--deterministic", action="store_true", help="TensorFlow's op determinism (slower)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key with a YAML value, e.g. --set epochs=2 --set weights=null")


def _launcher_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--launcher", "--backend", dest="launcher", choices=("local", "ray"),
                   help="where the runs execute: local processes (default) or a Ray cluster (pip install -e .[ray]); "
                        "--backend is its earlier name")
    p.add_argument("--ray-address", help="with --launcher ray: auto (this machine's cluster), HOST:6379, "
                                         "ray://HOST:10001, or local (a private cluster here; the default without "
                                         "$RAY_ADDRESS)")


def _load_cfg(args, **extra):
    from benchmark.config import load_config, parse_set

    flags = {"skip_bad_images": True if args.skip_bad_images else None,
             "deterministic": True if args.deterministic else None}
    return load_config(args.config, parse_set(args.set), dataset=args.dataset, data_root=args.data_root,
                       train_csv=args.csv, **flags, **extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark",
        description="cxr-bench: train and compare chest-radiograph classifiers and write an HTML report.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

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
    ph = dsub.add_parser("make-phantom", help="write the synthetic phantom data set in the CheXpert layout")
    ph.add_argument("--out", required=True, help="folder to write (a CheXpert-v1.0-small-like tree)")
    ph.add_argument("--n", type=int, default=2000, help="number of images (frontal and lateral)")
    ph.add_argument("--size", type=int, default=128, help="image side in pixels")
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--workers", type=int, default=0, help="processes (default: every core)")

    sub.add_parser("models", help="list the registered backbones with parameter counts")
    sub.add_parser("config-keys", help="every configuration key with its default and what it is (markdown table)")

    dr = sub.add_parser("doctor", help="what this machine offers, and training images/s per backbone in float32, "
                                       "mixed precision and with XLA")
    dr.add_argument("--backbones", default="mobilenet,resnet34,resnet50,densenet121,resnet101",
                    help="comma-separated backbones (default: the five of the comparison)")
    dr.add_argument("--image-size", type=int, default=64)
    dr.add_argument("--batch-size", type=int, default=16)
    dr.add_argument("--steps", type=int, default=5, help="timed steps per setting")
    dr.add_argument("--no-pipeline", action="store_true", help="skip the real-pipeline column")
    dr.add_argument("--budget", type=float, default=240.0, help="seconds; what does not fit is skipped")
    dr.add_argument("--json", action="store_true")
    dr.add_argument("--check-outputs", action="store_true",
                    help="only check that this install computes the reference outputs (a fixed checkpoint of each "
                         "backbone on four fixed images) within the engine's tolerance")

    tr = sub.add_parser("train", help="train one backbone and write a run directory")
    _config_args(tr)
    tr.add_argument("--backbone", help="a name from `python -m benchmark models`")
    tr.add_argument("--out", required=True, help="the run directory (re-running resumes it)")

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

    pr = sub.add_parser("predict", help="per-label probabilities and findings for image files")
    pr.add_argument("--run", required=True, help="a run directory")
    pr.add_argument("images", nargs="+", help="PNG or JPEG files")
    pr.add_argument("--gradcam", metavar="OUT_DIR", help="write Grad-CAM overlays for the positive findings here")
    pr.add_argument("--json", action="store_true")

    rp = sub.add_parser("report", help="build the HTML report of a sweep (or of one run) from its files")
    rp.add_argument("--sweep", required=True, help="a sweep directory or a single run directory")
    rp.add_argument("--bootstrap", type=int, help="bootstrap resamples for confidence intervals (default 1000)")
    rp.add_argument("--mlflow", nargs="?", const=True, metavar="TRACKING_URI",
                    help="log the finished runs and the report to MLflow (default store: SWEEP/mlflow.db)")
    rp.add_argument("--public", action="store_true",
                    help="a report safe to publish (in report-public/): no paths, image names, patient ids or "
                         "radiographs")

    sw = sub.add_parser("sweep", help="train every run of a profile's grid, each in its own process, then report")
    _config_args(sw)
    sw.add_argument("--out", required=True, help="the sweep directory (re-running resumes it)")
    sw.add_argument("--gpus", help="comma-separated GPU ids to run in parallel, one run per GPU")
    _launcher_args(sw)

    rt = sub.add_parser("retrain", help="train some runs of a sweep again (its configuration plus --set), then report")
    rt.add_argument("--sweep", required=True, help="the sweep folder")
    rt.add_argument("runs", nargs="+", metavar="RUN", help="run names (folders under SWEEP/runs)")
    rt.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an override for these runs, recorded in each (e.g. --set epochs=20)")
    rt.add_argument("--discard", action="store_true",
                    help="delete the previous run folders instead of keeping them under a dated name")
    rt.add_argument("--gpus", help="comma-separated GPU ids to run in parallel, one run per GPU")
    _launcher_args(rt)

    im = sub.add_parser("import-predictions", help="another model's predictions on the sweep's test set, as a run "
                                                   "scored, compared and reported like the trained ones")
    im.add_argument("--sweep", required=True, help="the sweep folder")
    im.add_argument("--name", required=True, help="the run's name (SWEEP/runs/NAME)")
    im.add_argument("file", help="predictions on the test set: path and y_prob_<label> columns")
    im.add_argument("--val", help="its predictions on the validation set, for thresholds (else none are chosen)")

    mc = sub.add_parser("model-card", help="write RUN/model_card.json (finished runs get one; this writes it again)")
    mc.add_argument("--run", required=True, help="a finished run directory")
    mc.add_argument("--public", action="store_true", help="print its public form (no paths) instead of writing")

    ex = sub.add_parser("export", help="the run's model as a SavedModel, ONNX or LiteRT file, checked against Keras")
    ex.add_argument("--run", required=True, help="a trained run directory")
    ex.add_argument("--format", required=True, choices=("savedmodel", "onnx", "litert"))
    ex.add_argument("--out", help="where to write it (default: RUN/export/model.savedmodel, .onnx or .tflite)")

    perf = sub.add_parser("perf", help="throughput benchmarks")
    psub = perf.add_subparsers(dest="perf_command", metavar="WHAT")
    psub.required = True
    pp = psub.add_parser("pipeline", help="images/s of the input pipeline against ImageDataGenerator and decoding")
    pp.add_argument("--dataset", choices=DATASET_CHOICES, required=True)
    pp.add_argument("--data-root", required=True)
    pp.add_argument("--csv")
    pp.add_argument("--image-size", type=int, default=224)
    pp.add_argument("--batch-size", type=int, default=32)
    pp.add_argument("--max-images", type=int, help="use at most this many images")
    pp.add_argument("--repeats", type=int, default=3, help="first passes to time (the median is reported)")
    pp.add_argument("--json", action="store_true")
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
    pe = psub.add_parser("export", help="latency and size of a run's exports beside the Keras model's")
    pe.add_argument("--run", required=True, help="a run with exports (python -m benchmark export)")
    pe.add_argument("--repeats", type=int, default=20, help="timed calls per engine (the median is reported)")
    pe.add_argument("--json", action="store_true")
    pr = psub.add_parser("report", help="time and peak memory of `report` on a fabricated NIH-like sweep")
    pr.add_argument("--runs", type=int, default=5)
    pr.add_argument("--images", type=int, default=25596, help="test images (NIH's official test list: 25,596)")
    pr.add_argument("--labels", type=int, default=14)
    pr.add_argument("--bootstrap", type=int, default=1000, help="resamples")
    pr.add_argument("--keep", metavar="DIR", help="fabricate the sweep into DIR (a missing or empty folder) and keep it")
    pr.add_argument("--json", action="store_true")
    return parser


def cmd_data(args) -> int:
    if args.data_command == "inspect":
        from benchmark.data.inspect import format_table, inspect_table

        summary = inspect_table(args.dataset, args.csv, args.data_root, args.policy, args.blank, args.all_views,
                                args.path_column, args.patient_column)
        print(json.dumps(summary) if args.json else format_table(summary))
        return 0
    from benchmark.phantom import make_phantom

    info = make_phantom(args.out, n=args.n, size=args.size, seed=args.seed, workers=args.workers or None)
    print(f"wrote {info['images']} synthetic images ({info['patients']} patients) to {info['root']} "
          f"in {info['seconds']:.1f} s ({info['images_per_s']:.0f} images/s)")
    return 0


def cmd_doctor(args) -> int:
    if args.check_outputs:
        from benchmark.engines import activate

        activate(None)  # $KERAS_BACKEND, else TensorFlow; before Keras is imported
        from benchmark.perf.reference_outputs import check_outputs, format_check

        rows = check_outputs([b.strip() for b in args.backbones.split(",") if b.strip()])
        print(json.dumps(rows) if args.json else format_check(rows))
        return 0 if all(r["ok"] for r in rows) else 1
    from benchmark.perf.doctor import check_args, doctor, format_doctor

    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    check_args(backbones, args.image_size, args.batch_size, args.steps)
    result = doctor(backbones, args.image_size, args.batch_size, args.steps, pipeline=not args.no_pipeline,
                    log=None if args.json else (lambda line: print(line, flush=True)), budget=args.budget)
    print(json.dumps(result) if args.json else "\n" + format_doctor(result))
    return 0


def cmd_config_keys(args) -> int:
    from benchmark.config import key_table

    print(key_table(), end="")
    return 0


def cmd_models(args) -> int:
    from models.registry import describe_all

    for row in describe_all():
        print(f"{row['name']:16s} {row['params']:>12,d} params  default {row['default_size']} px  "
              f"preprocessing {row['preprocess']:6s} ImageNet weights: {row['imagenet'] or 'none':5s}  {row['notes']}")
    return 0


def cmd_train(args) -> int:
    from benchmark.engines import activate
    from benchmark.runs.processes import watch_parent
    from benchmark.train.training import train_run

    watch_parent()  # a sweep's run ends with the sweep, also where prctl is not available
    cfg = _load_cfg(args, backbone=args.backbone)
    activate(cfg.keras_backend)  # before Keras is imported
    result = train_run(cfg, args.out)
    print(json.dumps(result))
    return 0


def cmd_evaluate(args) -> int:
    from pathlib import Path

    from benchmark.engines import activate_for_run
    from benchmark.runs.ownership import FolderLock, expect_kind

    # a run folder cxr-bench made, checked before anything (its lock file included) is written into it
    expect_kind(Path(args.run), ("run",), "a run directory", "pass a run folder that train or a sweep wrote")
    activate_for_run(args.run)
    with FolderLock(Path(args.run), "command (train, evaluate or a sweep)"):
        if args.dataset:
            from benchmark.evaluation.evaluate import evaluate_external

            if not args.data_root:
                raise UserError("evaluate --dataset needs --data-root (the other data set's folder)")
            if args.split == "val" or args.tta:
                raise UserError("evaluate --dataset scores --split all or test, without --tta")
            record = evaluate_external(args.run, args.dataset, args.data_root, args.csv, args.split or "all",
                                       args.name)
            print(json.dumps({k: v for k, v in record["test"]["summary"].items()
                              if not k.endswith("_micro") or not isinstance(v, dict)}, indent=1))
            return 0
        from benchmark.evaluation.evaluate import evaluate_run

        if args.split == "all" or args.csv or args.name:
            raise UserError("--split all, --csv and --name go with --dataset (scoring on another data set)")
        metrics = evaluate_run(args.run, split=args.split or "test", tta=args.tta, data_root=args.data_root)
    print(json.dumps({k: v for k, v in metrics["summary"].items() if not isinstance(v, dict) or k == "bootstrap"},
                     indent=1))
    return 0


def cmd_predict(args) -> int:
    from benchmark.engines import activate_for_run
    from benchmark.evaluation.evaluate import predict_images

    activate_for_run(args.run)
    results = predict_images(args.run, args.images, gradcam_dir=args.gradcam)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for r in results:
            found = ", ".join(r["findings"]) or "none above threshold"
            print(f"{r['image']}: {found}")
            for label, p in r["probabilities"].items():
                print(f"    {label:28s} {p:.3f}  (threshold {r['thresholds'][label]:.3f})")
    return 0


def cmd_report(args) -> int:
    import contextlib
    from pathlib import Path

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


def cmd_sweep(args) -> int:
    from benchmark.sweep.run import run_sweep

    cfg = _load_cfg(args, launcher=args.launcher, ray_address=args.ray_address)
    return run_sweep(cfg, args.out, gpus=args.gpus)


def cmd_retrain(args) -> int:
    from benchmark.sweep.retrain import retrain

    return retrain(args.sweep, args.runs, args.set, discard=args.discard, gpus=args.gpus,
                   where={"launcher": args.launcher, "ray_address": args.ray_address})


def cmd_import_predictions(args) -> int:
    from benchmark.sweep.imported import import_predictions

    summary = import_predictions(args.sweep, args.name, args.file, args.val)
    print(f"imported {args.name}: test mean AUROC {summary['auroc_macro']} over {summary['n_images']} "
          f"{summary['unit']}s; run `report --sweep {args.sweep}` to see it beside the trained runs")
    return 0


def cmd_model_card(args) -> int:
    from benchmark.evaluation.model_card import model_card, public_card, write_model_card

    if args.public:
        print(json.dumps(public_card(model_card(args.run)), indent=1))
    else:
        print(write_model_card(args.run))
    return 0


def cmd_export(args) -> int:
    from benchmark.evaluation.export import check_packages, export_run

    check_packages(args.format)  # before TensorFlow is loaded
    from benchmark.engines import activate_for_run

    activate_for_run(args.run)
    export_run(args.run, args.format, args.out)
    return 0


def cmd_perf(args) -> int:
    from benchmark import perf

    if args.perf_command == "export":
        from benchmark.engines import activate_for_run
        from benchmark.perf.export import format_perf, perf_export

        activate_for_run(args.run)
        result = perf_export(args.run, args.repeats)
        print(json.dumps(result) if args.json else format_perf(result))
        return 0
    if args.perf_command == "pipeline":
        from benchmark.perf.pipeline import perf_pipeline

        result = perf_pipeline(args.dataset, args.data_root, args.csv, args.image_size, args.batch_size,
                               args.max_images, args.repeats)
    elif args.perf_command == "report":
        from benchmark.perf.report import perf_report

        result = perf_report(args.runs, args.images, args.labels, args.bootstrap, args.keep)
    else:
        from benchmark.engines import activate

        activate(args.engine)  # before Keras is imported
        if args.reference == "torch":
            from benchmark.perf.reference import check_available

            check_available()  # before minutes of measuring
        from benchmark.perf.train import perf_train

        result = perf_train(args.backbone, args.image_size, args.batch_size, args.steps, args.data_root,
                            args.precision, args.reference)
    print(json.dumps(result) if args.json else perf.format_result(result))
    return 0


COMMANDS = {"data": cmd_data, "models": cmd_models, "config-keys": cmd_config_keys, "doctor": cmd_doctor,
            "train": cmd_train, "evaluate": cmd_evaluate,
            "predict": cmd_predict, "report": cmd_report, "sweep": cmd_sweep, "retrain": cmd_retrain,
            "perf": cmd_perf, "import-predictions": cmd_import_predictions,
            "model-card": cmd_model_card, "export": cmd_export}


def _terminate(signum, frame):
    """SIGTERM (a scheduler ending the job) is handled like Ctrl-C: work stops cleanly and resumes later."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return COMMANDS[args.command](args)
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
