"""`config-keys`: every configuration key with its default, as the markdown table of configs/README.md."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("config-keys", help="every configuration key with its default and what it is (markdown table)")
    p.set_defaults(func=cmd_config_keys)


def cmd_config_keys(args) -> int:
    from benchmark.config import key_table

    print(key_table(), end="")
    return 0
