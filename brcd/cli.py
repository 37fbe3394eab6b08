"""``brcd``: the command line every Snakemake rule calls.

Subcommands are listed here with their one-line help; a subcommand's module is
imported only when that subcommand runs, so ``brcd --help`` stays instant.
Each stage module provides ``configure_parser(parser)`` and ``run(args)``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from brcd import __version__
from brcd.errors import BrcdError

#: subcommand -> (module implementing it, one-line help), in workflow order.
COMMANDS: dict[str, tuple[str, str]] = {
    "check-config": ("brcd.config_cli", "validate a grid config (schema + registries) and print it with defaults"),
    "split": ("brcd.data.split_cli", "draw the seeded splits of one dataset -> results/{dataset}/split.parquet"),
    "cluster": ("brcd.cluster", "k-means on the teacher's training codes + bit mask -> clusters.parquet (BRCD)"),
    "features": ("brcd.features", "build the feature bank of one (dataset, backbone) for bank mode"),
    "train-teacher": ("brcd.train", "train a teacher hashing head -> model.pt"),
    "train-student": ("brcd.distill.train_student", "distil a trained teacher into a student hashing head -> model.pt"),
    "select": ("brcd.tuning", "choose each method's λ on validation from the tuning seed's candidates -> selection.json"),
    "encode": ("brcd.encode", "encode train/val/query/database images with a trained model -> codes.parquet"),
    "evaluate": ("brcd.evaluate", "retrieval metrics of one or more runs of a model (its λ candidates, its seeds) in one or more paradigms (sym/asym/teacher) -> metrics/{paradigm}.json each"),
    "time-search": ("brcd.timing", "per-query latency of the exact Hamming search -> results/timing/search/{bits}.json"),
    "time-encoder": ("brcd.timing", "encoder latency and throughput, image to packed code -> results/timing/encoder/{dataset}/{backbone}.json"),
    "report": ("brcd.report.document", "Markdown report (tables + figures) of a grid's metrics and timing files -> reports/{name}.md"),
    "compare-conclusions": ("brcd.report.conclusions", "whether two runs of one grid (two machines, two library versions) reach the same conclusions, from their reports' findings tables"),
}

log = logging.getLogger("brcd")

#: the options through which every stage names what it writes: each is checked writable before the
#: stage starts (brcd.io.check_writable), so that a read-only folder stops a job before its work, not
#: after hours of training
OUTPUT_OPTIONS = ("out", "out_asym", "out_logits", "out_queries", "log", "codes", "codes_asym", "timings")


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brcd",
        description="BRCD benchmark: distil unsupervised image-hashing models and evaluate them. "
        "Normally driven by Snakemake (see README); every stage is also a subcommand here.",
    )
    parser.add_argument("--version", action="version", version=f"brcd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            importlib.import_module(module).configure_parser(sub)
    return parser


def _selected_command(argv: list[str]) -> str | None:
    return next((arg for arg in argv if arg in COMMANDS), None)


def output_paths(args: argparse.Namespace) -> list[str]:
    """Every path the parsed command will write (:data:`OUTPUT_OPTIONS`)."""
    paths = []
    for option in OUTPUT_OPTIONS:
        value = getattr(args, option, None)
        paths += [value] if isinstance(value, str) else list(value or [])
    return paths


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = _selected_command(argv)
    args = build_parser(selected).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        from brcd.io import check_writable  # here, not at the top: `brcd --help` imports no pyarrow

        check_writable(output_paths(args))
        importlib.import_module(COMMANDS[args.command][0]).run(args)
    except BrcdError as exc:
        print(f"brcd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0
