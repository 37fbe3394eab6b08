"""Helpers the Snakemake rules use (``workflow/rules/common.smk``).

Kept in the package so they are unit-testable and the ``.smk`` files stay
declarative: target lists over the grid, which inputs a cell needs, and the
config hash that makes Snakemake rerun exactly the cells whose settings changed.
"""
from __future__ import annotations

from itertools import product
from pathlib import Path
from typing import Mapping

import yaml

from brcd import cells
from brcd.io import atomic_path


def write_effective_config(config: Mapping, folder: str = "results/.config") -> str:
    """Write the validated config (defaults filled in) where the CLI can read it.

    The file is rewritten only when its content changes, so its timestamp does
    not make Snakemake rerun anything.
    """
    path = Path(folder) / f"{config['name']}.yaml"
    text = yaml.safe_dump(dict(config), sort_keys=True)
    if not path.exists() or path.read_text() != text:
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    return str(path)


def teacher_cells(config: Mapping) -> list[cells.Cell]:
    return [cells.Cell(d, b, h, t, s) for d, b, h, t, s in
            product(config["datasets"], config["bits"], config["hash"], config["teachers"], config["seeds"])]


def student_cells(config: Mapping) -> list[cells.Cell]:
    return [cells.Cell(d, b, h, t, s, st, kd) for d, b, h, t, s, st, kd in
            product(config["datasets"], config["bits"], config["hash"], config["teachers"], config["seeds"],
                    config["students"], config["kd"])]


def metrics_path(cell: cells.Cell, paradigm: str) -> str:
    return cells.METRICS.format(**cell.parameters(), model=cell.model, paradigm=paradigm)


def metrics_targets(config: Mapping) -> list[str]:
    """Every metrics file of the grid: teacher rows plus each student cell × paradigm."""
    teacher = [metrics_path(c, "teacher") for c in teacher_cells(config)]
    student = [metrics_path(c, p) for c in student_cells(config) for p in config["paradigms"]]
    return teacher + student


def timing_targets(config: Mapping) -> list[str]:
    backbones = list(dict.fromkeys([*config["teachers"], *config["students"]]))
    encoders = [cells.TIMING_ENCODER.format(dataset=d, backbone=b) for d in config["datasets"] for b in backbones]
    search = [cells.TIMING_SEARCH.format(bits=b) for b in config["bits"]]
    return encoders + search


def bank_path(config: Mapping, dataset: str, backbone: str) -> list[str]:
    """The feature bank a job needs: one folder in bank mode, nothing online."""
    if config["mode"] != "bank":
        return []
    return [cells.FEATURES.format(dataset=dataset, backbone=backbone)]


def needs_clusters(kd: str) -> bool:
    from brcd.distill import KD_LOSSES

    return KD_LOSSES.get(kd).needs_clusters


def model_cell(wildcards) -> cells.Cell:
    return cells.cell_from_model(wildcards.dataset, int(wildcards.bits), wildcards.model, int(wildcards.seed))


def option(flag: str, paths) -> str:
    """``--flag path`` when the (possibly empty) input is present, else nothing."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    return f"{flag} {paths[0]}" if paths else ""
