"""``brcd split``: draw and save one dataset's splits (rule ``split``).

For a dataset whose sizes are known only once its files are read (the
list-file datasets), this first job of the grid also checks what depends on
the training split's size (BRCD's number of clusters), so that a config that
cannot work stops before any feature bank or teacher is built.
"""
from __future__ import annotations

import logging

from brcd.config import dataset_options, load_config
from brcd.data import create_dataset
from brcd.data.splits import write_splits
from brcd.distill.brcd import check_cluster_count

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
    check_cluster_count(config, args.dataset, len(splits["train"]), args.config)
    counts = ", ".join(f"{name} {len(idx)}" for name, idx in splits.items())
    log.info("%s: %d images, %d classes -> %s (%s)", args.dataset, len(dataset), dataset.num_classes, args.out, counts)
