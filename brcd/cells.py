"""Cells of the grid: their parameters, their config hashes and their metadata.

A *cell* is one point of the grid: (dataset, bits, hash objective, teacher,
seed) for a teacher, plus (student, kd, variant) for a student. The variant
says where the student's λ (the weight of L_kd) comes from: ``lambda{λ}``, a
candidate of the grid (the tuning seed tries them all), or ``selected``, the
λ chosen on validation by rule ``select_lambda`` (:mod:`brcd.tuning`). A cell's paths
come from the result layout (:mod:`brcd.layout`), filled in with :meth:`Cell.parameters`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

from brcd import layout
from brcd.config import TrainSettings, backbone_options
from brcd.errors import ConfigError
from brcd.io import stable_hash
from brcd.lambdas import DEFAULT_VARIANT, SELECTED, candidate_lambda, lambda_grid, tuning_seed


@dataclass(frozen=True)
class Cell:
    dataset: str
    bits: int
    hash: str
    teacher: str
    seed: int
    student: str | None = None
    kd: str | None = None
    variant: str | None = None  # students: lambda{λ} or selected (default: λ = 1)

    def __post_init__(self):
        if self.student is not None and self.variant is None:
            object.__setattr__(self, "variant", DEFAULT_VARIANT)

    @property
    def role(self) -> str:
        return "teacher" if self.student is None else "student"

    @property
    def backbone(self) -> str:
        """Alias of the backbone whose head this cell trains."""
        return self.teacher if self.student is None else self.student

    @property
    def model(self) -> str:
        """The model's name in metadata: its results path without dataset, bits and seed."""
        if self.student is None:
            return f"teacher/{self.hash}/{self.teacher}"
        return f"student/{self.hash}/{self.teacher}/{self.student}/{self.kd}/{self.variant}"

    def selection_path(self) -> str:
        return layout.SELECTION.format(**self.parameters())

    def teacher_cell(self) -> "Cell":
        return Cell(self.dataset, self.bits, self.hash, self.teacher, self.seed)

    def parameters(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def config_subset(self, config: Mapping) -> dict:
        """Every config value this cell's result depends on."""
        subset = {
            "dataset": config["datasets"][self.dataset],
            "split_seed": config.get("split_seed", 0),
            "mode": config.get("mode", "bank"),
            "views": config.get("views") if config.get("mode", "bank") == "bank" else None,
            "aug_seed": config.get("aug_seed", 0),
            "teacher_backbone": backbone_options(config, self.teacher, self.dataset),
            "teacher_train": TrainSettings.from_config(config, "teacher").hashed_fields(),
            **self.parameters(),
        }
        if self.student is not None:
            subset["student_backbone"] = backbone_options(config, self.student, self.dataset)
            subset["student_train"] = TrainSettings.from_config(config, "student").hashed_fields()
            subset["kd_settings"] = dict(config.get("kd_settings", {}).get(self.kd, {}))
            if self.kd.startswith("brcd"):  # BRCD variants read the whole `brcd` section
                subset["brcd"] = dict(config.get("brcd", {}))
            if self.variant == SELECTED:  # λ comes from the tuning seed's candidates
                subset["lambda_grid"] = lambda_grid(config, self.kd)
                subset["tuning_seed"] = tuning_seed(config)
            else:
                subset["kd_lambda"] = candidate_lambda(self.variant)
        return subset

    def config_hash(self, config: Mapping) -> str:
        return stable_hash(self.config_subset(config))

    def metadata(self, config: Mapping) -> dict:
        """Metadata every file of this cell carries (SPEC §7)."""
        return {
            **self.parameters(),
            "model": self.model,
            "backbone": self.backbone,
            "config_hash": self.config_hash(config),
        }


def cell_from_model(dataset: str, bits: int, model: str, seed: int) -> Cell:
    """Inverse of :attr:`Cell.model`: ``teacher/{hash}/{teacher}`` or
    ``student/{hash}/{teacher}/{student}/{kd}/{variant}``."""
    parts = model.split("/")
    if parts[0] == "teacher" and len(parts) == 3:
        return Cell(dataset, int(bits), parts[1], parts[2], int(seed))
    if parts[0] == "student" and len(parts) == 6:
        return Cell(dataset, int(bits), parts[1], parts[2], int(seed), parts[3], parts[4], parts[5])
    raise ConfigError(f"model {model!r} is neither teacher/HASH/TEACHER nor student/HASH/TEACHER/STUDENT/KD/VARIANT "
                      "(VARIANT: lambda<λ> or selected)")


def cell_from_args(args) -> Cell:
    return Cell(args.dataset, int(args.bits), args.hash, args.teacher, int(args.seed),
                getattr(args, "student", None), getattr(args, "kd", None), getattr(args, "variant", None))


def add_cell_arguments(parser, student: bool = False, several_runs: bool = False) -> None:
    """The options naming a cell; with ``several_runs`` --seed and --variant take several values (one
    run per seed and variant)."""
    several = {"nargs": "+"} if several_runs else {}
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--bits", type=int, required=True)
    parser.add_argument("--hash", default="cibhash", help="hashing objective (config `hash`)")
    parser.add_argument("--teacher", required=True, help="teacher backbone alias")
    parser.add_argument("--seed", type=int, default=[0] if several_runs else 0, **several,
                        help="default 0" + ("; several: one run each" if several_runs else ""))
    if student:
        parser.add_argument("--student", required=True, help="student backbone alias")
        parser.add_argument("--kd", required=True, help="distillation method (config `kd`)")
        parser.add_argument("--variant", default=[DEFAULT_VARIANT] if several_runs else DEFAULT_VARIANT, **several,
                            help="lambda<λ> (train with that λ) or selected (the λ of --selection); "
                                 f"default {DEFAULT_VARIANT}" + ("; several: one run each" if several_runs else ""))
