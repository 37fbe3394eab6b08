"""``brcd encode``: any trained model -> code files (SPEC §7).

Encodes the clean view of every train, val, query and database image with
the heads of a trained model on its backbone's features. A teacher has one
head (selection ``teacher`` -> ``codes.parquet``); a student checkpoint holds
two, selected on validation mAP for the symmetric (``sym`` ->
``codes.parquet``) and for the asymmetric paradigm (``asym`` ->
``codes_asym.parquet``). The backbone features are loaded once for both.
The student trainer writes its code files itself (:func:`write_code_files`,
rule ``train_student``), from the features it already holds.
"""
from __future__ import annotations

import logging
from typing import Mapping

import numpy as np

from brcd.codes import write_codes
from brcd.data.splits import SPLITS, Splits

log = logging.getLogger(__name__)

#: the heads a checkpoint of each role holds, the first being the default
SELECTIONS = {"teacher": ("teacher",), "student": ("sym", "asym")}


def training_summary(run: Mapping | None, best: Mapping) -> dict | None:
    """How the selected head was trained (carried into code files and metrics files)."""
    from brcd.train import converged

    if run is None:  # a checkpoint written before runs were recorded
        return None
    return {**run, "best_epoch": int(best["epoch"]), "val_map": float(best["map"]),
            "converged": converged(run, int(best["epoch"]))}


def encode_model(config, cell, split_path: str, checkpoint: str, outputs: Mapping[str, str],
                 bank: str | None = None, device="cpu") -> None:
    """Write one code file per ``outputs`` entry (selected head -> path)."""
    from brcd.checkpoint import load_checkpoint
    from brcd.features import create_source

    check_selections(cell, outputs)
    splits = Splits(split_path)
    metadata = {**cell.metadata(config), "split": splits.fingerprint}
    bundle = load_checkpoint(checkpoint, expected={k: metadata[k] for k in ("model", "dataset", "bits", "seed", "split")})
    source = create_source(config, cell.dataset, cell.backbone, splits, device, bank)
    write_code_files(bundle, source, splits, metadata, outputs, device)


def check_selections(cell, outputs: Mapping[str, str]) -> None:
    from brcd.errors import ConfigError

    unknown = sorted(set(outputs) - set(SELECTIONS[cell.role]))
    if unknown:
        raise ConfigError(f"a {cell.role} checkpoint has heads {', '.join(SELECTIONS[cell.role])}, not {', '.join(unknown)}")


def write_code_files(bundle: Mapping, source, splits: Splits, metadata: Mapping, outputs: Mapping[str, str],
                     device="cpu") -> None:
    """Encode every image of the splits with the checkpoint's selected heads (one file per head).

    ``source`` gives the clean features of the model's backbone; the student
    trainer passes the source it trained on, so encoding costs no reload.
    """
    from brcd.checkpoint import load_head
    from brcd.train import encode_features

    index = np.concatenate([splits.indices[name] for name in SPLITS])
    split = np.concatenate([[name] * len(splits.indices[name]) for name in SPLITS])
    # train is a subset of database: encode each image once, then expand to rows
    unique, rows = np.unique(index, return_inverse=True)
    features = source.clean(unique)
    for selection, path in outputs.items():
        head = load_head(bundle, selection).to(device)
        best = bundle["best"][selection]
        write_codes(path, index, split, encode_features(head, features)[rows],
                    {**metadata, "selection": selection, "best_epoch": best["epoch"], "val_map": best["map"],
                     "lambda": bundle["metadata"].get("lambda", {}).get(selection),
                     "training": training_summary(bundle["metadata"].get("runs", {}).get(selection), best)})
        log.info("%s (%s head, val mAP %.4f): %d codes -> %s", metadata["model"], selection, best["map"],
                 len(index), path)


def configure_parser(parser) -> None:
    from brcd.runtime import add_runtime_arguments

    parser.add_argument("--config", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--bits", type=int, required=True)
    parser.add_argument("--model", required=True,
                        help="teacher/HASH/TEACHER or student/HASH/TEACHER/STUDENT/KD (its results path)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", required=True)
    parser.add_argument("--checkpoint", required=True, help="model.pt")
    parser.add_argument("--bank", help="feature bank of the model's backbone (mode: bank)")
    parser.add_argument("--out", required=True, help="codes.parquet: the teacher's head, or the student's sym head")
    parser.add_argument("--out-asym", help="students: codes_asym.parquet from the head selected for asym")
    add_runtime_arguments(parser)


def run(args) -> None:
    from brcd.cells import cell_from_model
    from brcd.runtime import load_stage

    config, device = load_stage(args)
    cell = cell_from_model(args.dataset, args.bits, args.model, args.seed)
    outputs = {SELECTIONS[cell.role][0]: args.out}
    if args.out_asym:
        outputs["asym"] = args.out_asym
    encode_model(config, cell, args.split, args.checkpoint, outputs, args.bank, device)
