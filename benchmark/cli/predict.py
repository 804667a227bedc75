"""`predict`: per-label probabilities and findings of a trained run for image files."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    pr = sub.add_parser("predict", help="per-label probabilities and findings for image files")
    pr.add_argument("--run", required=True, help="a run directory")
    pr.add_argument("images", nargs="+", help="PNG or JPEG files")
    pr.add_argument("--gradcam", metavar="OUT_DIR", help="write Grad-CAM overlays for the positive findings here")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from benchmark.engines import activate_for_run
    from benchmark.evaluation.evaluate import predict_images

    activate_for_run(args.run)
    results = predict_images(args.run, args.images, gradcam_dir=args.gradcam)
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    for r in results:
        found = ", ".join(r["findings"]) or "none above threshold"
        print(f"{r['image']}: {found}")
        for label, p in r["probabilities"].items():
            print(f"    {label:28s} {p:.3f}  (threshold {r['thresholds'][label]:.3f})")
    return 0
