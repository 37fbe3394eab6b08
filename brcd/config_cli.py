"""``brcd check-config``: validate a config and show it with defaults filled in."""
from __future__ import annotations

from brcd.checks import load_checked_config
from brcd.config import dump


def configure_parser(parser) -> None:
    parser.add_argument("config", help="grid config YAML, e.g. config/demo.yaml")


def run(args) -> None:
    config = load_checked_config(args.config)
    print(dump(config), end="")
