"""``brcd encode``: any trained model -> a code file (SPEC §7).

Encodes the clean view of every train, val, query and database image with one
head of a trained model on its backbone's features. A teacher has one head
(selection ``teacher``); a student checkpoint holds two, selected on
validation mAP for the symmetric (``sym`` -> ``codes.parquet``) and for the
asymmetric paradigm (``asym`` -> ``codes_asym.parquet``).
"""
from __future__ import annotations

import logging

import numpy as np

from brcd.codes import write_codes
from brcd.data.splits import SPLITS, Splits

log = logging.getLogger(__name__)

SELECTIONS = {"teacher": ("teacher",), "student": ("sym", "asym")}


def encode_model(config, cell, split_path: str, checkpoint: str, out: str, selection: str | None = None,
                 bank: str | None = None, device="cpu") -> None:
    from brcd.checkpoint import load_checkpoint, load_head
    from brcd.errors import ConfigError
    from brcd.features import create_source
    from brcd.train import encode_features

    selection = selection or SELECTIONS[cell.role][0]
    if selection not in SELECTIONS[cell.role]:
        raise ConfigError(f"a {cell.role} has heads {', '.join(SELECTIONS[cell.role])}; got --selection {selection}")
    splits = Splits(split_path)
    metadata = {**cell.metadata(config), "split": splits.fingerprint}
    bundle = load_checkpoint(checkpoint, expected={k: metadata[k] for k in ("model", "dataset", "bits", "seed", "split")})
    source = create_source(config, cell.dataset, cell.backbone, splits, device, bank)
    index = np.concatenate([splits.indices[name] for name in SPLITS])
    split = np.concatenate([[name] * len(splits.indices[name]) for name in SPLITS])
    head = load_head(bundle, selection).to(device)
    packed = encode_features(head, source.clean(index))
    best = bundle["best"][selection]
    write_codes(out, index, split, packed,
                {**metadata, "selection": selection, "best_epoch": best["epoch"], "val_map": best["map"]})
    log.info("%s (%s head, val mAP %.4f): %d codes -> %s", cell.model, selection, best["map"], len(index), out)


def configure_parser(parser) -> None:
    from brcd.runtime import add_runtime_arguments

    parser.add_argument("--config", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--bits", type=int, required=True)
    parser.add_argument("--model", required=True,
                        help="teacher/HASH/TEACHER or student/HASH/TEACHER/STUDENT/KD (its results path)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--selection", choices=["teacher", "sym", "asym"],
                        help="which head of the checkpoint (default: teacher, or sym for a student)")
    parser.add_argument("--split", required=True)
    parser.add_argument("--checkpoint", required=True, help="model.pt")
    parser.add_argument("--bank", help="feature bank of the model's backbone (mode: bank)")
    parser.add_argument("--out", required=True, help="codes.parquet")
    add_runtime_arguments(parser)


def run(args) -> None:
    from brcd.cells import cell_from_model
    from brcd.config import load_config
    from brcd.runtime import setup_runtime

    config = load_config(args.config, check_registries=False)
    device = setup_runtime(args, config)
    cell = cell_from_model(args.dataset, args.bits, args.model, args.seed)
    encode_model(config, cell, args.split, args.checkpoint, args.out, args.selection, args.bank, device)
