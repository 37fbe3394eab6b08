"""``brcd split``: draw and save one dataset's splits (rule ``split``)."""
from __future__ import annotations

import logging

from brcd.config import dataset_options, load_config
from brcd.data import create_dataset
from brcd.data.splits import write_splits

log = logging.getLogger(__name__)


def configure_parser(parser) -> None:
    parser.add_argument("--config", required=True, help="grid config YAML")
    parser.add_argument("--dataset", required=True, help="dataset name (a key of `datasets`)")
    parser.add_argument("--out", required=True, help="output split.parquet")


def run(args) -> None:
    config = load_config(args.config)
    options = dataset_options(config, args.dataset)
    dataset = create_dataset(args.dataset, options)
    splits = write_splits(args.out, dataset, options, seed=config["split_seed"])
    counts = ", ".join(f"{name} {len(idx)}" for name, idx in splits.items())
    log.info("%s: %d images, %d classes -> %s (%s)", args.dataset, len(dataset), dataset.num_classes, args.out, counts)
