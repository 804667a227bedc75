"""`model-card`: write a finished run's model_card.json again, or print its public form."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    mc = sub.add_parser("model-card", help="write RUN/model_card.json (finished runs get one; this writes it again)")
    mc.add_argument("--run", required=True, help="a finished run directory")
    mc.add_argument("--public", action="store_true", help="print its public form (no paths) instead of writing")
    mc.set_defaults(func=cmd_model_card)


def cmd_model_card(args) -> int:
    from benchmark.evaluation.model_card import model_card, public_card, write_model_card

    if args.public:
        print(json.dumps(public_card(model_card(args.run)), indent=1))
    else:
        print(write_model_card(args.run))
    return 0
