"""``brcd train-student``: distil a frozen teacher into a student head (SPEC §4).

L_student = L_hash(student views) + λ · L_kd. For every step both views of a
training image are the *same augmented pixels* for teacher and student (same
(aug_seed, image, view) in the feature bank or online); the teacher's codes of
a view come from the teacher's trained head on the teacher backbone's features
of that view. The student's own objective is the cell's hashing objective.

Model selection runs on the validation split only and is tracked separately
for the two paradigms (two best heads in ``model.pt``, like the reference
code): ``sym`` — student validation codes against student database codes;
``asym`` — student validation codes against the teacher's database codes.
"""
from __future__ import annotations

import logging
from typing import Mapping

import numpy as np
import torch

from brcd.cells import Cell
from brcd.checkpoint import build_head, head_spec, load_checkpoint, load_head, save_checkpoint
from brcd.config import backbone_options, dataset_options
from brcd.data.splits import Splits
from brcd.distill import KD_LOSSES, KDBatch, create_distill_loss
from brcd.features import NUM_ROTATIONS, create_source
from brcd.errors import ConfigError
from brcd.hashing import codes_from_logits, create_objective
from brcd.train import TrainSettings, encode_features, fit, split_validator, two_views

log = logging.getLogger(__name__)


def load_teacher(config: Mapping, cell: Cell, checkpoint: str, splits: Splits, device) -> torch.nn.Module:
    """The trained teacher head of this cell's teacher, frozen."""
    teacher = cell.teacher_cell()
    expected = {"model": teacher.model, "dataset": cell.dataset, "bits": cell.bits, "seed": cell.seed,
                "split": splits.fingerprint}
    head = load_head(load_checkpoint(checkpoint, expected), "teacher").to(device)
    for p in head.parameters():
        p.requires_grad_(False)
    return head


class TeacherLogits:
    """The frozen teacher head's logits of training views and rotations.

    In bank mode the views are a finite stored set and the teacher never
    changes, so all their logits are computed once up front and looked up per
    step; online they are computed from the fresh views at every step.
    """

    def __init__(self, head: torch.nn.Module, source, num_train: int, rotations: bool, chunk: int = 4096):
        self.head, self.source = head, source
        self._views = self._rotations = None
        if source.num_views is None:
            return
        views = source.num_views
        positions = np.repeat(np.arange(num_train), views)
        view_ids = np.tile(np.arange(views), num_train)
        self._views = torch.cat([
            self._logits(source.views(positions[s:s + chunk], view_ids[s:s + chunk]))
            for s in range(0, len(positions), chunk)
        ]).view(num_train, views, -1)
        if rotations:
            step = max(1, chunk // NUM_ROTATIONS)
            self._rotations = torch.cat([
                self._rotation_logits(np.arange(s, min(s + step, num_train))) for s in range(0, num_train, step)
            ])

    @torch.no_grad()
    def _logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def _rotation_logits(self, pos) -> torch.Tensor:
        return self._logits(self.source.rotations(pos).flatten(0, 1)).view(len(pos), NUM_ROTATIONS, -1)

    def views(self, pos, views) -> torch.Tensor:
        if self._views is not None:
            return self._views[torch.as_tensor(pos), torch.as_tensor(views)]
        return self._logits(self.source.views(pos, views))

    def rotations(self, pos) -> torch.Tensor:
        if self._rotations is not None:
            return self._rotations[torch.as_tensor(pos)]
        return self._rotation_logits(pos)


def load_cell_clusters(path: str, config: Mapping, cell: Cell, splits: Splits):
    """The clusters of exactly this cell's teacher (model, seed, config) and training split."""
    from brcd.cluster import expected_cell, load_clusters

    teacher = cell.teacher_cell()
    expected = expected_cell(cell.dataset, cell.bits, teacher=teacher.model, train_indices=splits.indices["train"],
                             teacher_seed=teacher.seed, teacher_config_hash=teacher.config_hash(config))
    return load_clusters(path, expected, train_indices=splits.indices["train"])


def train_student(config: Mapping, cell: Cell, split_path: str, teacher_checkpoint: str, out: str,
                  log_path: str | None = None, student_bank: str | None = None, teacher_bank: str | None = None,
                  clusters_path: str | None = None, device="cpu") -> dict:
    from brcd.runtime import seed_everything

    settings = TrainSettings.from_config(config, "student")
    brcd_settings = dict(config.get("brcd", {}))
    # Settings errors surface before any file or backbone is loaded.
    kd_class = KD_LOSSES.get(cell.kd)
    kd_class.resolve_options(cell.kd, brcd_settings)
    if kd_class.needs_clusters and clusters_path is None:
        raise ConfigError(f"{cell.kd!r} needs the teacher's clusters: run the `cluster` rule "
                          "(`brcd cluster`) and pass its clusters.parquet with --clusters")
    splits = Splits(split_path)
    num_train = len(splits.indices["train"])
    teacher_head = load_teacher(config, cell, teacher_checkpoint, splits, device)
    clusters = load_cell_clusters(clusters_path, config, cell, splits) if kd_class.needs_clusters else None
    s_source = create_source(config, cell.dataset, cell.student, splits, device, student_bank)
    t_source = create_source(config, cell.dataset, cell.teacher, splits, device, teacher_bank)

    seed_everything(cell.seed)
    spec = head_spec(backbone_options(config, cell.student), cell.bits, s_source.feature_dim)
    head = build_head(spec).to(device)
    objective = create_objective(cell.hash, cell.bits).to(device)
    kd_loss = create_distill_loss(cell.kd, cell.bits, num_train, brcd_settings, clusters).to(device)
    lam = float(brcd_settings.get("lambda", 1.0))

    topk = dataset_options(config, cell.dataset)["topk"]
    teacher_database = encode_features(teacher_head, t_source.clean(splits.indices["database"]))
    validator = split_validator(s_source, splits, topk, {"sym": None, "asym": teacher_database})
    teacher = TeacherLogits(teacher_head, t_source, num_train, rotations=kd_loss.needs_rotations)

    def step(pos, v1, v2):
        s1, s2 = two_views(head, s_source, pos, v1, v2)
        t1, t2 = teacher.views(pos, v1), teacher.views(pos, v2)
        batch = KDBatch(
            index=torch.as_tensor(pos, dtype=torch.long, device=s1.device),
            s_logits=(s1, s2), s_codes=(objective.codes(s1), objective.codes(s2)),
            t_logits=(t1, t2), t_codes=(codes_from_logits(t1).float(), codes_from_logits(t2).float()),
        )
        if kd_loss.needs_rotations:
            batch.s_rot_logits = head(s_source.rotations(pos).flatten(0, 1)).view(len(pos), NUM_ROTATIONS, -1)
            batch.t_rot_logits = teacher.rotations(pos)
        hash_terms, kd_terms = objective(s1, s2), kd_loss(batch)
        return {
            "loss": hash_terms["loss"] + lam * kd_terms["loss"],
            **{f"hash_{k}": v for k, v in hash_terms.items()},
            **{f"kd_{k}": v for k, v in kd_terms.items()},
        }

    result = fit({"head": head, "objective": objective, "kd": kd_loss}, step, num_train, s_source.num_views,
                 settings, cell.seed, validator, head, log_path, desc=cell.model)
    best = result["best"]
    metadata = {**cell.metadata(config), "split": splits.fingerprint, "lambda": lam}
    save_checkpoint(out, spec, {name: b["state"] for name, b in best.items()}, best, metadata)
    log.info("%s: best val mAP@K sym %.4f (epoch %d), asym %.4f (epoch %d) -> %s", cell.model,
             best["sym"]["map"], best["sym"]["epoch"], best["asym"]["map"], best["asym"]["epoch"], out)
    return result


def configure_parser(parser) -> None:
    from brcd.cells import add_cell_arguments
    from brcd.runtime import add_runtime_arguments

    parser.add_argument("--config", required=True, help="grid config YAML")
    add_cell_arguments(parser, student=True)
    parser.add_argument("--split", required=True)
    parser.add_argument("--teacher-checkpoint", required=True, help="the trained teacher's model.pt")
    parser.add_argument("--student-bank", help="feature bank of the student backbone (mode: bank)")
    parser.add_argument("--teacher-bank", help="feature bank of the teacher backbone (mode: bank)")
    parser.add_argument("--clusters", help="clusters.parquet of the teacher (BRCD variants)")
    parser.add_argument("--out", required=True, help="model.pt to write")
    parser.add_argument("--log", help="per-epoch log (TSV)")
    add_runtime_arguments(parser)


def run(args) -> None:
    from brcd.cells import cell_from_args
    from brcd.runtime import load_stage

    config, device = load_stage(args)
    train_student(config, cell_from_args(args), args.split, args.teacher_checkpoint, args.out, args.log,
                  args.student_bank, args.teacher_bank, args.clusters, device)
