"""`doctor`: what this machine offers and what each setting costs on it; `doctor --check-outputs`: this install
computes the reference outputs."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
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
    dr.set_defaults(func=cmd_doctor)


def cmd_doctor(args) -> int:
    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    if args.check_outputs:
        return _check_outputs(backbones, args.json)
    from benchmark.perf.doctor import check_args, doctor, format_doctor

    check_args(backbones, args.image_size, args.batch_size, args.steps)
    result = doctor(backbones, args.image_size, args.batch_size, args.steps, pipeline=not args.no_pipeline,
                    log=None if args.json else (lambda line: print(line, flush=True)), budget=args.budget)
    print(json.dumps(result) if args.json else "\n" + format_doctor(result))
    return 0


def _check_outputs(backbones: list[str], as_json: bool) -> int:
    from benchmark.engines import activate

    activate(None)  # $KERAS_BACKEND, else TensorFlow; before Keras is imported
    from benchmark.perf.reference_outputs import check_outputs, format_check

    rows = check_outputs(backbones)
    print(json.dumps(rows) if as_json else format_check(rows))
    return 0 if all(r["ok"] for r in rows) else 1
