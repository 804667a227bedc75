"""`import-predictions`: another model's predictions on a sweep's test set, as a run reported beside the others."""

from __future__ import annotations


def add_parser(sub) -> None:
    im = sub.add_parser("import-predictions", help="another model's predictions on the sweep's test set, as a run "
                                                   "scored, compared and reported like the trained ones")
    im.add_argument("--sweep", required=True, help="the sweep folder")
    im.add_argument("--name", required=True, help="the run's name (SWEEP/runs/NAME)")
    im.add_argument("file", help="predictions on the test set: path and y_prob_<label> columns")
    im.add_argument("--val", help="its predictions on the validation set, for thresholds (else none are chosen)")
    im.set_defaults(func=cmd_import_predictions)


def cmd_import_predictions(args) -> int:
    from benchmark.sweep.imported import import_predictions

    summary = import_predictions(args.sweep, args.name, args.file, args.val)
    print(f"imported {args.name}: test mean AUROC {summary['auroc_macro']} over {summary['n_images']} "
          f"{summary['unit']}s; run `report --sweep {args.sweep}` to see it beside the trained runs")
    return 0
