"""``brcd train-student``: distil a frozen teacher into a student head (SPEC §4).

L_student = L_hash(student views) + λ · L_kd. For every step both views of a
training image are the *same augmented pixels* for teacher and student (same
(aug_seed, image, view) in the feature bank or online); the teacher's codes of
a view come from the teacher's trained head on the teacher backbone's features
of that view. The student's own objective is the cell's hashing objective.
λ comes from the cell's variant: ``lambda{λ}`` trains that candidate, and
``selected`` the λ chosen on validation per paradigm (:mod:`brcd.tuning`,
``selection.json``).

Model selection runs on the validation split only and is tracked separately
for the two paradigms (two best heads in ``model.pt``, like the reference
code): ``sym`` — student validation codes against student database codes;
``asym`` — student validation codes against the teacher's database codes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

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
from brcd.train import encode_features, fit, sample_view_pairs, split_validator, two_views, write_history
from brcd.config import TrainSettings

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


def student_lambdas(config: Mapping, cell: Cell, selection_path: str | None) -> dict[str, float]:
    """Head (paradigm) -> the λ it is trained with: a candidate cell's own λ for both heads, or the
    λ selected per paradigm (``selection.json`` of rule ``select_lambda``) for a ``selected`` cell."""
    from brcd.lambdas import candidate_lambda
    from brcd.tuning import METHOD_KEYS, PARADIGM_HEADS, check_selection, read_selection, selected_lambdas

    lam = candidate_lambda(cell.variant)
    if lam is not None:
        return {head: lam for head in PARADIGM_HEADS}
    if selection_path is None:
        raise ConfigError(f"{cell.model}: a `selected` run trains the λ chosen on validation; pass its "
                          f"{cell.selection_path()} with --selection (rule `select_lambda` builds it)")
    record = read_selection(selection_path, {key: getattr(cell, key) for key in METHOD_KEYS})
    check_selection(record, config, cell.kd, selection_path)
    return selected_lambdas(record)


def kd_settings(config: Mapping) -> dict:
    """What :func:`brcd.distill.create_distill_loss` reads: the `brcd` section (alpha, tau of the BRCD
    variants) and the per-method `kd_settings`."""
    return {**config.get("brcd", {}), **config.get("kd_settings", {})}


def student_step(head, objective, kd_loss, s_source, teacher: "TeacherLogits", lam: float):
    """The training step of a student: L_hash + λ·L_kd on the batch at ``pos`` (views ``v1``, ``v2``);
    returns the weighted loss and every term (``hash_loss`` and ``kd_loss`` with their graphs)."""

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

    return step


#: the fixed batch of :func:`gradient_norms` comes from ``default_rng([seed, PROBE_STREAM])``
PROBE_STREAM = 27


def gradient_norms(head: torch.nn.Module, step, num_train: int, num_views: int | None, batch_size: int,
                   seed: int, lam: float) -> dict[str, float]:
    """‖∇L_hash‖ and ‖∇L_kd‖ (unweighted) with respect to the head's parameters on one fixed batch,
    and ``kd_grad_ratio`` = λ·‖∇L_kd‖ / ‖∇L_hash‖: how strongly the KD term pulls the head.

    The batch (positions and view pairs) is a function of ``seed`` only, drawn from its own random
    stream, so measuring changes no training draw; it costs one forward and two backward passes.
    At initialisation (``benchmarks/kd_scale.py``) the inverse of the ratio at λ = 1 is the λ that
    gives both terms the same pull; at the end of training it says whether the KD term acted.
    """
    rng = np.random.default_rng([int(seed), PROBE_STREAM])
    pos = np.sort(rng.permutation(num_train)[:min(int(batch_size), num_train)])
    v1, v2 = sample_view_pairs(rng, len(pos), num_views)
    terms = step(pos, v1, v2)
    params = [p for p in head.parameters() if p.requires_grad]

    def norm(loss: torch.Tensor) -> float:
        if not loss.requires_grad:
            return 0.0
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))

    hash_norm, kd_norm = norm(terms["hash_loss"]), norm(terms["kd_loss"])
    ratio = float(lam) * kd_norm / hash_norm if hash_norm > 0 else float("nan")
    return {"grad_norm_hash": hash_norm, "grad_norm_kd": kd_norm, "kd_grad_ratio": ratio}


@dataclass
class StudentInputs:
    """What every λ run of one method and seed reads: loaded once, shared by the runs of a
    ``train-student`` call (the λ candidates of one method share a process, issue: demo budget)."""

    splits: Splits
    teacher_head: torch.nn.Module
    clusters: object
    student_source: object
    validator: object
    teacher: TeacherLogits
    spec: dict

    @property
    def num_train(self) -> int:
        return len(self.splits.indices["train"])


def check_student_settings(config: Mapping, cell: Cell, selection_path: str | None,
                           clusters_path: str | None) -> dict[str, float]:
    """Settings errors of one run, raised before any file or backbone is loaded; its λ per head."""
    kd_class = KD_LOSSES.get(cell.kd)
    kd_class.resolve_options(cell.kd, kd_settings(config))
    lambdas = student_lambdas(config, cell, selection_path)
    if kd_class.needs_clusters and clusters_path is None:
        raise ConfigError(f"{cell.kd!r} needs the teacher's clusters: run the `cluster` rule "
                          "(`brcd cluster`) and pass its clusters.parquet with --clusters")
    return lambdas


def load_student_inputs(config: Mapping, cell: Cell, split_path: str, teacher_checkpoint: str,
                        student_bank: str | None, teacher_bank: str | None, clusters_path: str | None,
                        device) -> StudentInputs:
    kd_class = KD_LOSSES.get(cell.kd)
    splits = Splits(split_path)
    num_train = len(splits.indices["train"])
    teacher_head = load_teacher(config, cell, teacher_checkpoint, splits, device)
    clusters = load_cell_clusters(clusters_path, config, cell, splits) if kd_class.needs_clusters else None
    s_source = create_source(config, cell.dataset, cell.student, splits, device, student_bank)
    t_source = create_source(config, cell.dataset, cell.teacher, splits, device, teacher_bank)
    topk = dataset_options(config, cell.dataset)["topk"]
    teacher_database = encode_features(teacher_head, t_source.clean(splits.indices["database"]))
    validator = split_validator(s_source, splits, topk, {"sym": None, "asym": teacher_database})
    teacher = TeacherLogits(teacher_head, t_source, num_train, rotations=kd_class.needs_rotations)
    spec = head_spec(backbone_options(config, cell.student), cell.bits, s_source.feature_dim)
    return StudentInputs(splits, teacher_head, clusters, s_source, validator, teacher, spec)


def train_student(config: Mapping, cell: Cell, split_path: str, teacher_checkpoint: str, out: str,
                  log_path: str | None = None, student_bank: str | None = None, teacher_bank: str | None = None,
                  clusters_path: str | None = None, device="cpu", codes: Mapping[str, str] | None = None,
                  selection_path: str | None = None, inputs: StudentInputs | None = None) -> dict:
    """Train, save ``model.pt``, and with ``codes`` (selected head -> path, e.g. ``{"sym": ...,
    "asym": ...}``) also write the code files from the features already loaded: the same
    files ``brcd encode`` writes, without a second process loading the bank again.

    Each distinct λ of :func:`student_lambdas` is one training from the same seed (one when both
    paradigms chose the same λ); the sym head comes from the sym λ's run, the asym head from the
    asym λ's. ``inputs`` (:func:`load_student_inputs`) lets several runs of one method and seed
    share one loading. Returns ``{"best", "history", "runs": {λ: fit result}}``.
    """
    from brcd.encode import check_selections, write_code_files
    from brcd.runtime import seed_everything

    if codes:
        check_selections(cell, codes)
    settings = TrainSettings.from_config(config, "student")
    loss_settings = kd_settings(config)
    lambdas = check_student_settings(config, cell, selection_path, clusters_path)
    if inputs is None:
        inputs = load_student_inputs(config, cell, split_path, teacher_checkpoint, student_bank, teacher_bank,
                                     clusters_path, device)
    splits, s_source, teacher, num_train = inputs.splits, inputs.student_source, inputs.teacher, inputs.num_train

    def train_one(lam: float) -> dict:
        seed_everything(cell.seed)  # every λ starts from the same initialisation and draws
        head = build_head(inputs.spec).to(device)
        objective = create_objective(cell.hash, cell.bits).to(device)
        kd_loss = create_distill_loss(cell.kd, cell.bits, num_train, loss_settings, inputs.clusters).to(device)
        step = student_step(head, objective, kd_loss, s_source, teacher, lam)
        result = fit({"head": head, "objective": objective, "kd": kd_loss}, step, num_train, s_source.num_views,
                     settings, cell.seed, inputs.validator, head, None, desc=f"{cell.model} λ={lam:g}")
        if lam > 0:  # how strongly the KD term pulled at the end of training (the report's λ table)
            probe = gradient_norms(head, step, num_train, s_source.num_views, settings.batch_size, cell.seed, lam)
            result["run"].update(probe)
            result["history"][-1].update(probe)
        return result

    runs = {lam: train_one(lam) for lam in dict.fromkeys(lambdas.values())}
    best = {name: runs[lam]["best"][name] for name, lam in lambdas.items()}
    history = [{"lambda": lam, **row} for lam, result in runs.items() for row in result["history"]]
    if log_path is not None:
        write_history(log_path, history)
    metadata = {**cell.metadata(config), "split": splits.fingerprint, "lambda": dict(lambdas),
                "runs": {name: runs[lam]["run"] for name, lam in lambdas.items()}}
    save_checkpoint(out, inputs.spec, {name: b["state"] for name, b in best.items()}, best, metadata)
    log.info("%s: best val mAP@K sym %.4f (λ %g, epoch %d), asym %.4f (λ %g, epoch %d) -> %s", cell.model,
             best["sym"]["map"], lambdas["sym"], best["sym"]["epoch"], best["asym"]["map"], lambdas["asym"],
             best["asym"]["epoch"], out)
    if codes:  # encode what was saved, exactly as `brcd encode` would read it back
        write_code_files(load_checkpoint(out), s_source, splits, {**cell.metadata(config), "split": splits.fingerprint},
                         codes, device)
    return {"best": best, "history": history, "runs": runs}


@dataclass(frozen=True)
class StudentOutputs:
    """The files of one run: model.pt, and optionally its history and code files."""

    model: str
    history: str | None = None
    codes: Mapping[str, str] | None = None


def train_students(config: Mapping, runs: Sequence[tuple[Cell, StudentOutputs]], split_path: str,
                   teacher_checkpoint: str, student_bank: str | None = None, teacher_bank: str | None = None,
                   clusters_path: str | None = None, device="cpu", selection_path: str | None = None) -> list[dict]:
    """Several runs of one method and seed (e.g. its λ candidates) in one process: banks, teacher,
    clusters and validation data are loaded once. Each run's files are exactly those of
    :func:`train_student` alone (same seed, same draws). All settings are checked first."""
    cells = [cell for cell, _ in runs]
    shared = {replace(cell, variant=None) for cell in cells}
    if len(shared) != 1:
        raise ConfigError("one train-student call trains runs of one method and seed (they differ only in "
                          f"--variant); got {', '.join(sorted({c.model + f' seed {c.seed}' for c in cells}))}")
    for cell, _ in runs:
        check_student_settings(config, cell, selection_path, clusters_path)
    inputs = load_student_inputs(config, cells[0], split_path, teacher_checkpoint, student_bank, teacher_bank,
                                 clusters_path, device)
    return [train_student(config, cell, split_path, teacher_checkpoint, outputs.model, outputs.history,
                          clusters_path=clusters_path, device=device, codes=outputs.codes,
                          selection_path=selection_path, inputs=inputs)
            for cell, outputs in runs]


def configure_parser(parser) -> None:
    from brcd.cells import add_cell_arguments
    from brcd.runtime import add_runtime_arguments

    parser.add_argument("--config", required=True, help="grid config YAML")
    add_cell_arguments(parser, student=True, several_variants=True)
    parser.add_argument("--split", required=True)
    parser.add_argument("--teacher-checkpoint", required=True, help="the trained teacher's model.pt")
    parser.add_argument("--student-bank", help="feature bank of the student backbone (mode: bank)")
    parser.add_argument("--teacher-bank", help="feature bank of the teacher backbone (mode: bank)")
    parser.add_argument("--clusters", help="clusters.parquet of the teacher (BRCD variants)")
    parser.add_argument("--selection", help="selection.json of rule select_lambda (cells with --variant selected)")
    # one file per --variant, in the same order: the λ candidates of a method share one process
    parser.add_argument("--out", required=True, nargs="+", help="model.pt to write")
    parser.add_argument("--log", nargs="+", help="per-epoch log (TSV)")
    parser.add_argument("--codes", nargs="+",
                        help="also write codes.parquet (head selected for sym), as `brcd encode` does")
    parser.add_argument("--codes-asym", nargs="+", help="also write codes_asym.parquet (head selected for asym)")
    add_runtime_arguments(parser)


def outputs_per_variant(args) -> list[StudentOutputs]:
    """--out, --log, --codes and --codes-asym, one entry per --variant (in its order)."""
    variants = len(args.variant)
    for flag in ("out", "log", "codes", "codes_asym"):
        paths = getattr(args, flag)
        if paths is not None and len(paths) != variants:
            raise ConfigError(f"--{flag.replace('_', '-')} gives {len(paths)} path(s) for {variants} --variant "
                              "value(s); give one per variant, in the same order")
    column = lambda flag: getattr(args, flag) or [None] * variants  # noqa: E731
    return [StudentOutputs(out, history, {name: path for name, path in (("sym", sym), ("asym", asym)) if path})
            for out, history, sym, asym in zip(args.out, column("log"), column("codes"), column("codes_asym"))]


def run(args) -> None:
    from argparse import Namespace

    from brcd.cells import cell_from_args
    from brcd.runtime import load_stage

    outputs = outputs_per_variant(args)
    config, device = load_stage(args)
    cells = [cell_from_args(Namespace(**{**vars(args), "variant": variant})) for variant in args.variant]
    train_students(config, list(zip(cells, outputs)), args.split, args.teacher_checkpoint, args.student_bank,
                   args.teacher_bank, args.clusters, device, args.selection)
