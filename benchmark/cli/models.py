"""`models`: the registered backbones with their parameter counts, listed without building any."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the registered backbones with parameter counts")
    p.set_defaults(func=cmd_models)


def cmd_models(args) -> int:
    from models.registry import describe_all

    for row in describe_all():
        print(f"{row['name']:16s} {row['params']:>12,d} params  default {row['default_size']} px  "
              f"preprocessing {row['preprocess']:6s} ImageNet weights: {row['imagenet'] or 'none':5s}  {row['notes']}")
    return 0
