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
import time
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np
import torch

from brcd.cells import Cell
from brcd.checkpoint import build_head, head_spec, load_checkpoint, load_head, save_checkpoint
from brcd.config import backbone_options, dataset_options
from brcd.data.splits import Splits
from brcd.distill import KD_LOSSES, KDBatch, create_distill_loss
from brcd.encode import read_teacher_logits, rotation_logits, teacher_logits_metadata, view_logits
from brcd.features import NUM_ROTATIONS, create_source
from brcd.errors import ConfigError
from brcd.hashing import codes_from_logits, create_objective
from brcd.train import Validator, encode_features, fit, sample_view_pairs, two_views, validation_data, write_history
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
    changes: their logits are looked up per step, from the teacher's encode job
    (``teacher_logits.npz``, :meth:`stored`) or computed once up front
    (:meth:`computed`, for callers without that file). Online they are
    computed from the fresh views at every step.
    """

    def __init__(self, head: torch.nn.Module | None, source, views: torch.Tensor | None = None,
                 rotations: torch.Tensor | None = None):
        self.head, self.source = head, source
        self._views, self._rotations = views, rotations

    @classmethod
    def stored(cls, views: np.ndarray, rotations: np.ndarray, device="cpu") -> "TeacherLogits":
        return cls(None, None, torch.from_numpy(views).to(device), torch.from_numpy(rotations).to(device))

    @classmethod
    def computed(cls, head: torch.nn.Module, source, num_train: int, rotations: bool) -> "TeacherLogits":
        if source.num_views is None:  # online: fresh views every step
            return cls(head, source)
        return cls(head, source, view_logits(head, source, num_train),
                   rotation_logits(head, source, np.arange(num_train)) if rotations else None)

    @torch.no_grad()
    def _logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def views(self, pos, views) -> torch.Tensor:
        if self._views is not None:
            return self._views[torch.as_tensor(pos), torch.as_tensor(views)]
        return self._logits(self.source.views(pos, views))

    def rotations(self, pos) -> torch.Tensor:
        if self._rotations is not None:
            return self._rotations[torch.as_tensor(pos)]
        return rotation_logits(self.head, self.source, pos)


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
class StudentSide:
    """What every run of one method reads whatever its seed and λ: the split, the student's feature
    source and its validation data (clean val and database features and labels)."""

    splits: Splits
    source: object
    validation: tuple
    topk: int
    spec: dict
    seconds: float  # wall-clock seconds of loading it, for the log and benchmarks only


def load_student_side(config: Mapping, cell: Cell, split_path: str, student_bank: str | None,
                      device) -> StudentSide:
    started = time.perf_counter()
    splits = Splits(split_path)
    source = create_source(config, cell.dataset, cell.student, splits, device, student_bank)
    spec = head_spec(backbone_options(config, cell.student, cell.dataset), cell.bits, source.feature_dim,
                     TrainSettings.from_config(config, "student").matmul)
    return StudentSide(splits, source, validation_data(source, splits), dataset_options(config, cell.dataset)["topk"],
                       spec, time.perf_counter() - started)


@dataclass(frozen=True)
class TeacherFiles:
    """The files of one seed's teacher (and its clusters) that a student job reads. With ``codes`` and
    ``logits`` (the teacher's encode job writes both, once per teacher) its bank is not read at all."""

    checkpoint: str
    codes: str | None = None
    logits: str | None = None
    bank: str | None = None
    clusters: str | None = None


@dataclass
class StudentInputs:
    """What every λ run of one method and seed reads: loaded once, shared by the runs of a
    ``train-student`` call (its λ candidates, or its seeds, which share the :class:`StudentSide`)."""

    splits: Splits
    teacher_head: torch.nn.Module
    clusters: object
    student_source: object
    validator: object
    teacher: TeacherLogits
    spec: dict
    #: wall-clock seconds of the ``teacher``'s part of the loading (:func:`load_teacher_side`) -- for the
    #: log and benchmarks only
    seconds: dict = field(default_factory=dict)

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
                        device, teacher_codes: str | None = None, teacher_logits: str | None = None) -> StudentInputs:
    """What the runs of one method and seed read (:func:`load_teacher_side` on a fresh
    :func:`load_student_side`)."""
    side = load_student_side(config, cell, split_path, student_bank, device)
    files = TeacherFiles(teacher_checkpoint, teacher_codes, teacher_logits, teacher_bank, clusters_path)
    return load_teacher_side(config, cell, side, files, device)


def load_teacher_side(config: Mapping, cell: Cell, side: StudentSide, files: TeacherFiles,
                      device) -> StudentInputs:
    """``side`` completed with ``cell``'s teacher. The teacher's work is done once per teacher by its
    encode job when its files are given: ``files.codes`` (its codes.parquet: the database codes the
    asymmetric validation searches) and, in bank mode, ``files.logits`` (its logits of every stored
    view and rotation); then the teacher's feature bank is not read at all. Without them (benchmarks,
    tests) the same values are computed here from the teacher's head and bank."""
    started = time.perf_counter()
    kd_class = KD_LOSSES.get(cell.kd)
    splits = side.splits
    teacher_head = load_teacher(config, cell, files.checkpoint, splits, device)
    clusters = load_cell_clusters(files.clusters, config, cell, splits) if kd_class.needs_clusters else None
    t_source = None
    if files.logits is None or files.codes is None:
        t_source = create_source(config, cell.dataset, cell.teacher, splits, device, files.bank)
    teacher_database = (stored_teacher_database(config, cell, splits, files.codes) if files.codes
                        else encode_features(teacher_head, t_source.clean(splits.indices["database"])))
    if files.logits is not None:
        teacher = TeacherLogits.stored(*read_teacher_logits(files.logits, stored_logits_expected(
            config, cell, splits, side.source)), device=device)
    else:
        teacher = TeacherLogits.computed(teacher_head, t_source, len(splits.indices["train"]),
                                         rotations=kd_class.needs_rotations)
    validator = Validator(*side.validation, side.topk, {"sym": None, "asym": teacher_database})
    seconds = {"teacher": time.perf_counter() - started}
    return StudentInputs(splits, teacher_head, clusters, side.source, validator, teacher, side.spec, seconds)


def teacher_file_metadata(config: Mapping, cell: Cell, splits: Splits) -> dict:
    """The metadata the teacher's files (codes, logits) carry for this student's teacher and split."""
    return {**cell.teacher_cell().metadata(config), "split": splits.fingerprint}


def stored_teacher_database(config: Mapping, cell: Cell, splits: Splits, path: str) -> np.ndarray:
    """The teacher's packed database codes from its codes.parquet, in the split's database order."""
    from brcd.codes import read_codes
    from brcd.io import check_metadata, rebuild_hint

    codes = read_codes(path)
    expected = teacher_file_metadata(config, cell, splits)
    check_metadata(codes.metadata, {key: expected[key] for key in ("model", "dataset", "bits", "seed", "split",
                                                                   "config_hash")},
                   f"teacher code file {path}", rebuild_hint(path))
    database = codes.select("database")
    if not np.array_equal(database.index, splits.indices["database"]):
        raise ConfigError(f"teacher code file {path} does not hold the split's database images in order; "
                          f"{rebuild_hint(path)}")
    return database.packed


def stored_logits_expected(config: Mapping, cell: Cell, splits: Splits, student_source) -> dict:
    """A teacher-logits file must be of this student's teacher and split, and of the same stored views
    as the student's bank (``aug_seed``, ``views``): view v of image i is the same pixels for both."""
    if student_source.num_views is None:
        raise ConfigError("--teacher-logits holds the teacher's logits of a feature bank's stored views; "
                          "in mode `online` the views are fresh every step: leave it out")
    return teacher_logits_metadata(teacher_file_metadata(config, cell, splits), student_source.meta)


def train_student(config: Mapping, cell: Cell, split_path: str, teacher_checkpoint: str, out: str,
                  log_path: str | None = None, student_bank: str | None = None, teacher_bank: str | None = None,
                  clusters_path: str | None = None, device="cpu", codes: Mapping[str, str] | None = None,
                  selection_path: str | None = None, inputs: StudentInputs | None = None,
                  teacher_codes: str | None = None, teacher_logits: str | None = None) -> dict:
    """Train, save ``model.pt``, and with ``codes`` (selected head -> path, e.g. ``{"sym": ...,
    "asym": ...}``) also write the code files from the features already loaded: the same
    files ``brcd encode`` writes, without a second process loading the bank again.

    Each distinct λ of :func:`student_lambdas` is one training from the same seed (one when both
    paradigms chose the same λ); the sym head comes from the sym λ's run, the asym head from the
    asym λ's. ``inputs`` (:func:`load_student_inputs`) lets several runs of one method and seed
    share one loading. Returns ``{"best", "history", "runs": {λ: fit result}, "seconds"}`` (wall-clock
    seconds of the training steps, the validations and the writing, for the log and benchmarks).
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
                                     clusters_path, device, teacher_codes, teacher_logits)
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
    writing_started = time.perf_counter()
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
    seconds = {phase: sum(result["seconds"][phase] for result in runs.values()) for phase in ("steps", "validation")}
    seconds["writing"] = time.perf_counter() - writing_started
    return {"best": best, "history": history, "runs": runs, "seconds": seconds}


@dataclass(frozen=True)
class StudentOutputs:
    """The files of one run: model.pt, and optionally its history and code files."""

    model: str
    history: str | None = None
    codes: Mapping[str, str] | None = None


def train_students(config: Mapping, runs: Sequence[tuple[Cell, StudentOutputs]], split_path: str,
                   teachers: Mapping[int, TeacherFiles], student_bank: str | None = None, device="cpu",
                   selection_path: str | None = None) -> tuple[list[dict], dict[str, float]]:
    """Several runs of one method in one process: its λ candidates of one seed, or its seeds of the
    selected λ (``teachers``: seed -> that seed's :class:`TeacherFiles`). The split, the student's bank
    and the validation data are loaded once, each seed's teacher once. Each run's files are exactly
    those of :func:`train_student` alone (it starts from its own seed: same initialisation, same
    draws). All settings are checked before anything is loaded.
    Returns each run's result and the job's :func:`time_split`."""
    cells = [cell for cell, _ in runs]
    shared = {replace(cell, variant=None, seed=0) for cell in cells}
    if len(shared) != 1:
        raise ConfigError("one train-student call trains runs of one method (they differ only in --variant and "
                          f"--seed); got {', '.join(sorted({c.model for c in cells}))}")
    missing = sorted({cell.seed for cell in cells} - set(teachers))
    if missing:
        raise ConfigError(f"no teacher files for seed(s) {', '.join(map(str, missing))}: give --teacher-checkpoint "
                          "(and --teacher-codes, --teacher-logits, --clusters) once per --seed, in its order")
    for cell, _ in runs:
        check_student_settings(config, cell, selection_path, teachers[cell.seed].clusters)
    side = load_student_side(config, cells[0], split_path, student_bank, device)
    inputs = {seed: load_teacher_side(config, next(c for c in cells if c.seed == seed), side, teachers[seed], device)
              for seed in dict.fromkeys(cell.seed for cell in cells)}
    results = [train_student(config, cell, split_path, teachers[cell.seed].checkpoint, outputs.model,
                             outputs.history, clusters_path=teachers[cell.seed].clusters, device=device,
                             codes=outputs.codes, selection_path=selection_path, inputs=inputs[cell.seed])
               for cell, outputs in runs]
    seconds = time_split(side, list(inputs.values()), results)
    log.info("time split (s): %s", ", ".join(f"{phase} {value:.2f}" for phase, value in seconds.items()))
    return results, seconds


#: the phases of a student job's time (:func:`time_split`), in the order they happen
PHASES = ("loading", "teacher", "steps", "validation", "writing")


def time_split(side: StudentSide, inputs: Sequence[StudentInputs], results: Sequence[dict]) -> dict[str, float]:
    """Wall-clock seconds of a job's phases: ``loading`` (split, the student's bank, validation data),
    ``teacher`` (each seed's teacher: its checkpoint, clusters and stored files, or computing its
    logits and database codes), then the training ``steps``, the ``validation`` and the ``writing`` of
    every run. ``benchmarks/student_job.py`` adds the process's start-up."""
    seconds = {"loading": side.seconds, "teacher": sum(item.seconds["teacher"] for item in inputs)}
    for phase in ("steps", "validation", "writing"):
        seconds[phase] = sum(result["seconds"][phase] for result in results)
    return seconds


#: the train-student options given once per --seed (the files of that seed's teacher)
PER_SEED = ("teacher_checkpoint", "teacher_codes", "teacher_logits", "clusters")
#: the options naming a run's outputs, given once per run (seed-major: every --variant of the first
#: --seed, then of the next)
PER_RUN = ("out", "log", "codes", "codes_asym")


def configure_parser(parser) -> None:
    from brcd.cells import add_cell_arguments
    from brcd.runtime import add_runtime_arguments

    parser.add_argument("--config", required=True, help="grid config YAML")
    add_cell_arguments(parser, student=True, several_runs=True)
    parser.add_argument("--split", required=True)
    parser.add_argument("--teacher-checkpoint", required=True, nargs="+",
                        help="the trained teacher's model.pt (one per --seed)")
    parser.add_argument("--student-bank", help="feature bank of the student backbone (mode: bank)")
    parser.add_argument("--teacher-bank", help="feature bank of the teacher backbone (mode: bank; not read "
                        "when --teacher-codes and --teacher-logits are given)")
    parser.add_argument("--teacher-codes", nargs="+", help="the teacher's codes.parquet (one per --seed: its "
                        "database codes, for the asymmetric validation); without it they are encoded here")
    parser.add_argument("--teacher-logits", nargs="+", help="the teacher's teacher_logits.npz (mode: bank; one "
                        "per --seed: its logits of every stored view and rotation); without it they are computed here")
    parser.add_argument("--clusters", nargs="+", help="clusters.parquet of the teacher (BRCD variants; one per --seed)")
    parser.add_argument("--selection", help="selection.json of rule select_lambda (cells with --variant selected)")
    # one file per run, seed-major: the λ candidates of a method, or its seeds, share one process
    parser.add_argument("--out", required=True, nargs="+", help="model.pt to write (one per run)")
    parser.add_argument("--log", nargs="+", help="per-epoch log (TSV)")
    parser.add_argument("--codes", nargs="+",
                        help="also write codes.parquet (head selected for sym), as `brcd encode` does")
    parser.add_argument("--codes-asym", nargs="+", help="also write codes_asym.parquet (head selected for asym)")
    parser.add_argument("--timings", help="also write the job's time split (JSON, seconds per phase: loading, "
                        "teacher, steps, validation, writing); benchmarks/student_job.py reads it")
    add_runtime_arguments(parser)


def _per(args, flags: Sequence[str], count: int, unit: str) -> None:
    for flag in flags:
        paths = getattr(args, flag)
        if paths is not None and len(paths) != count:
            raise ConfigError(f"--{flag.replace('_', '-')} gives {len(paths)} path(s) for {count} {unit}; give "
                              f"one per {unit.rstrip('s')}, in the same order")


def teachers_per_seed(args) -> dict[int, TeacherFiles]:
    """--teacher-checkpoint, --teacher-codes, --teacher-logits and --clusters, one entry per --seed."""
    _per(args, PER_SEED, len(args.seed), "--seed values")
    column = lambda flag: getattr(args, flag) or [None] * len(args.seed)  # noqa: E731
    return {int(seed): TeacherFiles(checkpoint, codes, logits, args.teacher_bank, clusters)
            for seed, checkpoint, codes, logits, clusters in zip(args.seed, *(column(flag) for flag in PER_SEED))}


def outputs_per_run(args) -> list[StudentOutputs]:
    """--out, --log, --codes and --codes-asym, one entry per run (seed-major)."""
    runs = len(args.seed) * len(args.variant)
    _per(args, PER_RUN, runs, "runs (--seed x --variant, seed-major)")
    column = lambda flag: getattr(args, flag) or [None] * runs  # noqa: E731
    return [StudentOutputs(out, history, {name: path for name, path in (("sym", sym), ("asym", asym)) if path})
            for out, history, sym, asym in zip(args.out, column("log"), column("codes"), column("codes_asym"))]


def run(args) -> None:
    from argparse import Namespace

    from brcd.cells import cell_from_args
    from brcd.runtime import load_stage

    outputs, teachers = outputs_per_run(args), teachers_per_seed(args)
    config, device = load_stage(args)
    cells = [cell_from_args(Namespace(**{**vars(args), "seed": seed, "variant": variant}))
             for seed in args.seed for variant in args.variant]
    _, seconds = train_students(config, list(zip(cells, outputs)), args.split, teachers, args.student_bank, device,
                                args.selection)
    if args.timings:
        from brcd.io import write_json

        write_json(args.timings, seconds)
