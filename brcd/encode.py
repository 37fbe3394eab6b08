"""``brcd encode``: any trained model -> code files (SPEC §7).

Encodes the clean view of every train, val, query and database image with
the heads of a trained model on its backbone's features. A teacher has one
head (selection ``teacher`` -> ``codes.parquet``); a student checkpoint holds
two, selected on validation mAP for the symmetric (``sym`` ->
``codes.parquet``) and for the asymmetric paradigm (``asym`` ->
``codes_asym.parquet``). The backbone features are loaded once for both.
The student trainer writes its code files itself (:func:`write_code_files`,
rule ``train_student``), from the features it already holds.

In bank mode a teacher's encode job also writes its head's logits of every
stored training view and rotation (:func:`write_teacher_logits`,
``teacher_logits.npz``): the same for every student of that teacher, so they
are computed once per teacher instead of once per student job, and a student
job never loads the teacher's feature bank.
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
                 bank: str | None = None, device="cpu", logits_path: str | None = None) -> None:
    """Write one code file per ``outputs`` entry (selected head -> path); with ``logits_path`` (a
    teacher in bank mode) also its :func:`write_teacher_logits` file."""
    from brcd.errors import ConfigError

    from brcd.checkpoint import load_checkpoint
    from brcd.features import create_source

    check_selections(cell, outputs)
    if logits_path is not None and (cell.role != "teacher" or config["mode"] != "bank"):
        raise ConfigError("--out-logits writes a teacher's logits of the stored views of a feature bank: "
                          f"only for a teacher in mode `bank` (this is a {cell.role} in mode `{config['mode']}`)")
    splits = Splits(split_path)
    metadata = {**cell.metadata(config), "split": splits.fingerprint}
    bundle = load_checkpoint(checkpoint, expected={k: metadata[k] for k in ("model", "dataset", "bits", "seed", "split")})
    source = create_source(config, cell.dataset, cell.backbone, splits, device, bank)
    write_code_files(bundle, source, splits, metadata, outputs, device)
    if logits_path is not None:
        write_teacher_logits(logits_path, bundle, source, splits, metadata, device)


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
    encoded: list[tuple[Mapping, np.ndarray]] = []  # (head state, its codes): a student's two heads are often one
    for selection, path in outputs.items():
        state = bundle["heads"][selection]
        codes = next((packed for seen, packed in encoded if same_state(seen, state)), None)
        if codes is None:
            codes = encode_features(load_head(bundle, selection).to(device), features)
            encoded.append((state, codes))
        best = bundle["best"][selection]
        write_codes(path, index, split, codes[rows],
                    {**metadata, "selection": selection, "best_epoch": best["epoch"], "val_map": best["map"],
                     "lambda": bundle["metadata"].get("lambda", {}).get(selection),
                     "training": training_summary(bundle["metadata"].get("runs", {}).get(selection), best)})
        log.info("%s (%s head, val mAP %.4f): %d codes -> %s", metadata["model"], selection, best["map"],
                 len(index), path)


#: rows (image x view pairs) per forward pass of the teacher's logits: the student trainer used this
#: chunking before the logits were stored, and the same chunks give the same floats
LOGIT_CHUNK = 4096
#: the arrays of a teacher-logits file; ``meta`` is its metadata as UTF-8 JSON bytes (no pickle)
LOGIT_ARRAYS = ("views", "rotations", "meta")


def view_logits(head, source, num_train: int, chunk: int = LOGIT_CHUNK):
    """The head's logits of every stored view of every training image: (num_train, views, L)."""
    import torch

    views = source.num_views
    positions = np.repeat(np.arange(num_train), views)
    view_ids = np.tile(np.arange(views), num_train)
    with torch.no_grad():
        head.eval()
        return torch.cat([head(source.views(positions[s:s + chunk], view_ids[s:s + chunk]))
                          for s in range(0, len(positions), chunk)]).view(num_train, views, -1)


def rotation_logits(head, source, positions, chunk: int = LOGIT_CHUNK):
    """The head's logits of the four rotations of the training images at ``positions``: (n, 4, L)."""
    import torch

    from brcd.features import NUM_ROTATIONS

    positions = np.asarray(positions)
    step = max(1, chunk // NUM_ROTATIONS)
    with torch.no_grad():
        head.eval()
        return torch.cat([head(source.rotations(positions[s:s + step]).flatten(0, 1)).view(
            len(positions[s:s + step]), NUM_ROTATIONS, -1) for s in range(0, len(positions), step)])


def teacher_logits_metadata(cell_metadata: Mapping, bank_meta: Mapping) -> dict:
    """What a teacher-logits file must match: the teacher cell and split, and the stored views it
    encodes (a student reads them as the views of its own bank: same ``aug_seed`` and ``views``)."""
    keys = ("model", "dataset", "bits", "seed", "split", "config_hash")
    return {**{key: cell_metadata[key] for key in keys}, "aug_seed": bank_meta["aug_seed"],
            "views": bank_meta["views"]}


def write_teacher_logits(path, bundle: Mapping, source, splits: Splits, metadata: Mapping, device="cpu") -> None:
    """``teacher_logits.npz``: the teacher head's logits of every stored view and rotation of the
    training images (float32), read by every student job of this teacher (bank mode only)."""
    import json

    from brcd.checkpoint import load_head
    from brcd.io import atomic_path

    head = load_head(bundle, SELECTIONS["teacher"][0]).to(device)
    num_train = len(splits.indices["train"])
    views = view_logits(head, source, num_train).cpu().numpy()
    rotations = rotation_logits(head, source, np.arange(num_train)).cpu().numpy()
    meta = np.frombuffer(json.dumps(teacher_logits_metadata(metadata, source.meta), sort_keys=True).encode(),
                         dtype=np.uint8)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as handle:  # a handle: np.savez would append .npz to a name
            np.savez(handle, views=views, rotations=rotations, meta=meta)
    log.info("%s: logits of %d x %d stored views and %d x 4 rotations -> %s", metadata["model"], num_train,
             views.shape[1], num_train, path)


def read_teacher_logits(path, expected: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """(views, rotations) of a teacher-logits file whose metadata matches ``expected``."""
    import json

    from brcd.io import check_metadata, read_checked, rebuild_hint

    def load(p):
        with np.load(p, allow_pickle=False) as arrays:  # never pickles
            missing = [name for name in LOGIT_ARRAYS if name not in arrays.files]
            if missing:
                raise ValueError(f"it lacks the array(s) {', '.join(missing)}")
            return {name: arrays[name] for name in LOGIT_ARRAYS}

    fix = rebuild_hint(path)
    arrays = read_checked(path, load, "teacher-logits file", fix)
    meta = read_checked(path, lambda p: json.loads(arrays["meta"].tobytes().decode()), "teacher-logits file", fix)
    check_metadata(meta, expected, f"teacher-logits file {path}", fix)
    return arrays["views"], arrays["rotations"]


def same_state(a: Mapping, b: Mapping) -> bool:
    """Whether two heads' state dicts are equal (then their codes are too: encoded once)."""
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


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
    parser.add_argument("--out-logits", help="teachers in bank mode: teacher_logits.npz, the head's logits of "
                        "every stored training view and rotation, read by every student of this teacher")
    add_runtime_arguments(parser)


def run(args) -> None:
    from brcd.cells import cell_from_model
    from brcd.runtime import load_stage

    config, device = load_stage(args)
    cell = cell_from_model(args.dataset, args.bits, args.model, args.seed)
    outputs = {SELECTIONS[cell.role][0]: args.out}
    if args.out_asym:
        outputs["asym"] = args.out_asym
    encode_model(config, cell, args.split, args.checkpoint, outputs, args.bank, device, args.out_logits)
