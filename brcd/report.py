"""``brcd report``: the Markdown report of one grid (SPEC §7).

Reads the metrics file of every cell of the config's grid
(:func:`brcd.workflow.metrics_targets`) and the timing files
(:func:`brcd.workflow.timing_targets`), and writes ``reports/{name}.md`` with
its figures as PNG files in ``reports/{name}/`` (linked by relative paths).

Per dataset and (hash, teacher, student) pairing:

- main table, laid out like the paper: rows teacher, student without KD, each
  KD method of the config (ablations excluded); columns bits x paradigm;
  cells mAP@K as mean ± sample standard deviation over seeds; best student
  per column in bold;
- ablation table: ``brcd`` and its ``brcd_*`` variants, same layout;
- alignment with the teacher: ISD (lower = closer) and NRA@K (higher = closer);
- tie-aware mAP and precision@k (means over seeds), one table per paradigm;
- encoder timing: batch-1 latency, throughput, speed-up of the student;
- figures: precision-recall over Hamming radius, mAP vs bits, encoder
  latency vs mAP.

Then the search latency per bits and, collapsed, every cell's config hash.

The output is a function of the input files only (no dates, sorted keys), so
the same results give the same bytes. Files are written atomically.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from brcd.cells import TIMING_ENCODER, TIMING_SEARCH, Cell
from brcd.errors import DataError, MetadataMismatchError

log = logging.getLogger(__name__)

#: kd methods whose names start with this are BRCD ablations (own table)
ABLATION_PREFIX = "brcd_"
#: the kd value of the student trained without distillation
NO_KD = "none"
#: the paradigm of the teacher's own metrics file
TEACHER_PARADIGM = "teacher"
#: decimals of mAP, precision, ISD and NRA in the tables
DIGITS = 3
#: at most this many missing files are listed in the error message
MISSING_LISTED = 10
MISSING = "—"

#: what each BRCD ablation leaves out (SPEC §4), for the note under the ablation table
ABLATION_NOTES = {
    "brcd_nocluster": "no cluster terms (α_k = α always, no false-negative removal)",
    "brcd_nomask": "no bit mask (m = 1)",
    "brcd_plain": "neither clusters nor bit mask",
}

PARADIGM_LEGEND = {
    "sym": "student codes for queries and database",
    "asym": "student query codes against the teacher's database codes",
}


# --------------------------------------------------------------------------- the grid's results


@dataclass(frozen=True)
class Pairing:
    """One teacher -> student pairing under one hashing objective: a set of tables."""

    hash: str
    teacher: str
    student: str

    @property
    def label(self) -> str:
        return f"`{self.teacher}` → `{self.student}` ({self.hash})"

    @property
    def slug(self) -> str:
        return f"{self.hash}_{self.teacher}_{self.student}"


@dataclass(frozen=True)
class Method:
    """A table row: the teacher (``kd is None``) or a student trained with ``kd``."""

    label: str
    kd: str | None

    @property
    def is_teacher(self) -> bool:
        return self.kd is None


@dataclass
class GridResults:
    """Every input file of the report, loaded and checked against the grid."""

    config: Mapping
    metrics: dict[tuple[Cell, str], dict]  # (cell, paradigm) -> metrics JSON (+ "_source")
    encoder: dict[tuple[str, str], dict]  # (dataset, backbone) -> encoder timing JSON
    search: dict[int, dict]  # bits -> search timing JSON

    # ---- grid axes

    def pairings(self) -> list[Pairing]:
        c = self.config
        return [Pairing(h, t, s) for h in c["hash"] for t in c["teachers"] for s in c["students"]]

    def topk(self, dataset: str) -> int:
        return int(self.config["datasets"][dataset]["topk"])

    def kd_methods(self) -> list[str]:
        """KD methods of the main table: config order, without the baseline and the ablations."""
        return [kd for kd in self.config["kd"] if kd != NO_KD and not kd.startswith(ABLATION_PREFIX)]

    def ablations(self) -> list[str]:
        """``brcd`` (when in the grid) and its ``brcd_*`` variants; empty without variants."""
        variants = [kd for kd in self.config["kd"] if kd.startswith(ABLATION_PREFIX)]
        if not variants:
            return []
        return (["brcd"] if "brcd" in self.config["kd"] else []) + variants

    # ---- values

    def runs(self, dataset: str, pairing: Pairing, method: Method, bits: int, paradigm: str) -> list[dict]:
        """The metrics files of one table cell, one per seed."""
        out = []
        for seed in self.config["seeds"]:
            if method.is_teacher:
                out.append(self.metrics[(Cell(dataset, bits, pairing.hash, pairing.teacher, seed), TEACHER_PARADIGM)])
            else:
                cell = Cell(dataset, bits, pairing.hash, pairing.teacher, seed, pairing.student, method.kd)
                out.append(self.metrics[(cell, paradigm)])
        return out

    def values(self, dataset: str, pairing: Pairing, method: Method, bits: int, paradigm: str,
               key: str) -> list[float | None]:
        return [metric_value(run, key) for run in self.runs(dataset, pairing, method, bits, paradigm)]


def metric_value(record: Mapping, key: str) -> float | None:
    """``key`` of a metrics file's ``metrics``: ``@K`` stands for its topk, ``/`` reaches into a nested entry.

    E.g. ``map@K``, ``map@K_tie_aware``, ``nra@K``, ``isd``, ``precision@k/10``.
    """
    name = key.replace("@K", f"@{record['topk']}")
    value = record["metrics"]
    for part in name.split("/"):
        if not isinstance(value, Mapping) or part not in value:
            raise DataError(
                f"metrics file {record['_source']} has no metric {name!r}; it was written by another version of "
                "`brcd evaluate`: delete it and rebuild it with snakemake (rule `evaluate`)"
            )
        value = value[part]
    return None if value is None else float(value)


def _read_json(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); delete it and rebuild it with snakemake") from None


def _missing_error(missing: list[tuple[str, str]], root: Path, config_path: str | None) -> DataError:
    """Name the missing files and how to build them (rule and the snakemake call)."""
    config_arg = f"--configfile {config_path}" if config_path else "--configfile CONFIG"
    listed = "\n".join(f"  {path}  (rule `{rule}`)" for path, rule in missing[:MISSING_LISTED])
    more = f"\n  ... and {len(missing) - MISSING_LISTED} more" if len(missing) > MISSING_LISTED else ""
    return DataError(
        f"{len(missing)} input file(s) of the report are missing in {root.resolve()}:\n{listed}{more}\n"
        f"Build them with `snakemake --cores N {config_arg} {missing[0][0]}` (one file) or "
        f"`snakemake --cores N {config_arg}` (the whole grid, report included), or pass --results-dir "
        "pointing at the folder that holds results/."
    )


def _read_checked(root: Path, path: str, expected: Mapping, rule: str) -> dict:
    """Read a JSON input; it must hold what its place in the layout says (a renamed or stale file would
    corrupt a table). ``_source`` records the path for later messages."""
    record = _read_json(root / path)
    for key, value in expected.items():
        if record.get(key) != value:
            raise MetadataMismatchError(
                f"{root / path} says {key} = {record.get(key)!r} but its place in the grid says {value!r}; "
                f"delete it and rebuild it with snakemake (rule `{rule}`)"
            )
    record["_source"] = path
    return record


def load_results(config: Mapping, results_dir: str | os.PathLike = ".", config_path: str | None = None) -> GridResults:
    """Read every input file of the grid; all missing files are reported at once, before any work."""
    from brcd import workflow

    root = Path(results_dir)
    cells = [(cell, TEACHER_PARADIGM) for cell in workflow.teacher_cells(config)]
    cells += [(cell, p) for cell in workflow.student_cells(config) for p in config["paradigms"]]
    metric_paths = {key: workflow.metrics_path(*key) for key in cells}
    # timing files by what their place in the layout says they hold (as workflow.timing_targets lists them)
    encoder_paths = {(dataset, backbone): TIMING_ENCODER.format(dataset=dataset, backbone=backbone)
                     for dataset in config["datasets"] for backbone in _backbones(config)}
    search_paths = {int(bits): TIMING_SEARCH.format(bits=bits) for bits in config["bits"]}

    missing = [(path, "evaluate") for path in metric_paths.values()]
    missing += [(path, "time_encoder") for path in encoder_paths.values()]
    missing += [(path, "time_search") for path in search_paths.values()]
    missing = [(path, rule) for path, rule in missing if not (root / path).is_file()]
    if missing:
        raise _missing_error(missing, root, config_path)

    metrics = {}
    for (cell, paradigm), path in metric_paths.items():
        expected = {"student": None, "kd": None, **cell.parameters(), "paradigm": paradigm,
                    "topk": int(config["datasets"][cell.dataset]["topk"])}
        metrics[(cell, paradigm)] = _read_checked(root, path, expected, "evaluate")
        if "metrics" not in metrics[(cell, paradigm)]:
            raise DataError(f"metrics file {root / path} has no `metrics` entry; "
                            "delete it and rebuild it with snakemake (rule `evaluate`)")
    encoder = {key: _read_checked(root, path, {"dataset": key[0], "backbone": key[1]}, "time_encoder")
               for key, path in encoder_paths.items()}
    search = {bits: _read_checked(root, path, {"bits": bits}, "time_search") for bits, path in search_paths.items()}
    return GridResults(config, metrics, encoder, search)


# --------------------------------------------------------------------------- numbers and cells


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (n - 1) over seeds; std is None for one seed."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> "Summary | None":
        present = [v for v in values if v is not None and not math.isnan(v)]
        if not present:
            return None
        mean = sum(present) / len(present)
        if len(present) == 1:
            return cls(mean, None, 1)
        variance = sum((v - mean) ** 2 for v in present) / (len(present) - 1)
        return cls(mean, math.sqrt(variance), len(present))

    def text(self, digits: int = DIGITS, with_std: bool = True) -> str:
        if self.std is None or not with_std:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def best_indices(summaries: Sequence[Summary | None], higher_is_better: bool = True,
                 digits: int = DIGITS) -> set[int]:
    """Rows holding the best mean as displayed (equal displayed means are all best)."""
    shown = {i: round(s.mean, digits) for i, s in enumerate(summaries) if s is not None}
    if not shown:
        return set()
    best = max(shown.values()) if higher_is_better else min(shown.values())
    return {i for i, v in shown.items() if v == best}


def format_number(value: float | None) -> str:
    """Latencies and rates: three significant digits without exponents."""
    if value is None:
        return MISSING
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:#.3g}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    """GitHub pipe table; columns from ``numeric_from`` on are right-aligned."""
    from tabulate import tabulate

    align = ["left"] * numeric_from + ["right"] * (len(headers) - numeric_from)
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=align)


# --------------------------------------------------------------------------- tables


def teacher_row(pairing: Pairing) -> Method:
    return Method(f"teacher (`{pairing.teacher}`)", None)


def student_row(pairing: Pairing, kd: str) -> Method:
    if kd == NO_KD:
        return Method(f"student, no KD (`{pairing.student}`)", kd)
    return Method(f"`{kd}`", kd)


def columns(results: GridResults) -> list[tuple[int, str]]:
    return [(bits, paradigm) for bits in results.config["bits"] for paradigm in results.config["paradigms"]]


def column_header(bits: int, paradigm: str) -> str:
    return f"{bits} bits {paradigm}"


def metric_table(results: GridResults, dataset: str, pairing: Pairing, methods: Sequence[Method], key: str,
                 higher_is_better: bool = True) -> str:
    """Rows methods, columns bits x paradigm, cells mean ± std; the best student per column in bold."""
    cols = columns(results)
    grid = [[Summary.of(results.values(dataset, pairing, m, b, p, key)) for b, p in cols] for m in methods]
    bold = [set() for _ in methods]
    student_rows = [i for i, m in enumerate(methods) if not m.is_teacher]
    for j in range(len(cols)):
        for i in best_indices([grid[i][j] for i in student_rows], higher_is_better):
            bold[student_rows[i]].add(j)
    rows = []
    for i, method in enumerate(methods):
        cells = []
        for j, summary in enumerate(grid[i]):
            text = MISSING if summary is None else summary.text()
            cells.append(f"**{text}**" if j in bold[i] else text)
        rows.append([method.label, *cells])
    return markdown_table(["method", *(column_header(b, p) for b, p in cols)], rows)


def main_methods(results: GridResults, pairing: Pairing) -> list[Method]:
    baseline = [student_row(pairing, NO_KD)] if NO_KD in results.config["kd"] else []
    return [teacher_row(pairing), *baseline, *(student_row(pairing, kd) for kd in results.kd_methods())]


def student_methods(results: GridResults, pairing: Pairing) -> list[Method]:
    return [student_row(pairing, kd) for kd in results.config["kd"]]


def precision_cutoffs(results: GridResults, dataset: str) -> list[str]:
    found = {k for (cell, _), record in results.metrics.items() if cell.dataset == dataset
             for k in record["metrics"].get("precision@k", {})}
    return sorted(found, key=int)


def secondary_table(results: GridResults, dataset: str, pairing: Pairing, paradigm: str) -> str:
    """Tie-aware mAP beside the conventional value, and precision@k (means over seeds)."""
    cutoffs = precision_cutoffs(results, dataset)
    keys = ["map@K", "map@K_tie_aware", "map_all", "map_all_tie_aware", *(f"precision@k/{k}" for k in cutoffs)]
    k = results.topk(dataset)
    headers = ["method", "bits", f"mAP@{k}", f"mAP@{k} tie-aware", "mAP@all", "mAP@all tie-aware",
               *(f"P@{c}" for c in cutoffs)]
    rows = []
    for bits in results.config["bits"]:
        for method in [teacher_row(pairing), *student_methods(results, pairing)]:
            row = [method.label, str(bits)]
            for key in keys:
                values = [_optional_metric(run, key)
                          for run in results.runs(dataset, pairing, method, bits, paradigm)]
                summary = Summary.of(values)
                row.append(MISSING if summary is None else summary.text(with_std=False))
            rows.append(row)
    return markdown_table(headers, rows)


def _optional_metric(record: Mapping, key: str) -> float | None:
    """Precision cut-offs larger than a database are absent by design: show a dash."""
    if key.startswith("precision@k/") and key.split("/")[1] not in record["metrics"].get("precision@k", {}):
        return None
    return metric_value(record, key)


def _backbones(config: Mapping) -> list[str]:
    return list(dict.fromkeys([*config["teachers"], *config["students"]]))


def _role(config: Mapping, alias: str) -> str:
    return ", ".join(role for role, key in (("teacher", "teachers"), ("student", "students")) if alias in config[key])


def encoder_table(results: GridResults, dataset: str) -> str:
    config = results.config
    teachers = config["teachers"]
    headers = ["backbone", "role", "model", "device", "input", "threads", "latency, batch 1 (ms/image)",
               "throughput (images/s)", *(f"speed-up vs `{t}` (latency / throughput)" for t in teachers)]
    rows = []
    for alias in _backbones(config):
        timing = results.encoder[(dataset, alias)]
        speedups = [_speedup(results.encoder[(dataset, t)], timing) for t in teachers]
        rows.append([f"`{alias}`", _role(config, alias), f"`{timing.get('model', MISSING)}`", _device(timing),
                     f"{timing.get('input_size', MISSING)} px", str(timing.get("threads", MISSING)),
                     format_number(timing.get("latency_ms")), _throughput(timing), *speedups])
    return markdown_table(headers, rows, numeric_from=4)


def _device(timing: Mapping) -> str:
    device, name = str(timing.get("device", MISSING)), timing.get("device_name")
    return f"{device} ({name})" if name and name != device else device


def _throughput(timing: Mapping) -> str:
    rate = timing.get("throughput_images_per_second")
    batches = [b for b in timing.get("batches", []) if b.get("images_per_second") == rate]
    at = f" (batch {batches[0]['batch_size']})" if batches else ""
    return format_number(rate) + at


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if not numerator or not denominator:
        return MISSING
    return f"{numerator / denominator:.2f}×"


def _speedup(teacher: Mapping, other: Mapping) -> str:
    latency = _ratio(teacher.get("latency_ms"), other.get("latency_ms"))
    throughput = _ratio(other.get("throughput_images_per_second"), teacher.get("throughput_images_per_second"))
    return f"{latency} / {throughput}"


def search_method(results: GridResults) -> str:
    """The search method the timing files record (one per bit length; normally all the same)."""
    methods = sorted({str(results.search[bits].get("method", MISSING)) for bits in results.config["bits"]})
    return "; ".join(methods)


def search_table(results: GridResults) -> str:
    bits_list = results.config["bits"]
    entries = {(bits, e["database_size"], e["topk"]): e for bits in bits_list for e in results.search[bits]["results"]}
    sizes_and_k = sorted({(size, k) for _, size, k in entries})
    headers = ["database size", "K"]
    for bits in bits_list:
        headers += [f"{bits} bits: single query (ms)", f"{bits} bits: batched (ms/query)"]
    rows = []
    for size, k in sizes_and_k:
        row = [f"{size:,}", str(k)]
        for bits in bits_list:
            entry = entries.get((bits, size, k))
            row += [format_number(entry["single"]["per_query_ms_median"]) if entry else MISSING,
                    format_number(entry["batch"]["per_query_ms_median"]) if entry else MISSING]
        rows.append(row)
    return markdown_table(headers, rows, numeric_from=0)


def config_hash_table(results: GridResults) -> str:
    """cell -> config hash; a student's paradigm files share their model's hash."""
    hashes: dict[Cell, list[str]] = {}
    for (cell, paradigm), record in results.metrics.items():
        value = str(record.get("config_hash"))
        hashes.setdefault(cell, [])
        if value not in hashes[cell]:
            hashes[cell].append(value)
    rows = [[c.dataset, str(c.bits), f"`{c.model}`", str(c.seed), ", ".join(f"`{h}`" for h in hashes[c])]
            for c in hashes]
    return markdown_table(["dataset", "bits", "model", "seed", "config hash"], rows, numeric_from=5)


# --------------------------------------------------------------------------- figures


def _figure(ncols: int, width: float = 5.0, height: float = 4.0):
    """A matplotlib figure on the Agg canvas; no pyplot, so no global state or display backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    return figure, list(axes)


def save_figure(figure, path: Path) -> None:
    """Atomic: a temporary file beside ``path`` renamed onto it."""
    from brcd.io import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=100, metadata={"Software": None})


@dataclass(frozen=True)
class Style:
    color: str
    linestyle: str = "-"
    marker: str = "o"


def method_styles(results: GridResults) -> dict[str | None, Style]:
    """One colour per kd method, the same in every figure."""
    from matplotlib import colormaps

    palette = colormaps["tab20"].colors
    styles: dict[str | None, Style] = {None: Style("black", "--", "*"), NO_KD: Style("0.5", ":", "x")}
    others = [kd for kd in results.config["kd"] if kd != NO_KD]
    for i, kd in enumerate(others):
        styles[kd] = Style(_hex(palette[(2 * i) % 20 + (i // 10) % 2]))
    return styles


def _hex(rgb) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb[:3])


def _mean_curve(runs: Sequence[Mapping], key: str) -> list[float]:
    """Point-wise mean over seeds of one pr_curve list; radii with no defined value give NaN."""
    columns_ = list(zip(*(run["metrics"]["pr_curve"][key] for run in runs)))
    out = []
    for values in columns_:
        present = [v for v in values if v is not None]
        out.append(sum(present) / len(present) if present else math.nan)
    return out


def pr_figure(results: GridResults, dataset: str, pairing: Pairing, bits: int, path: Path) -> None:
    styles = method_styles(results)
    paradigms = results.config["paradigms"]
    figure, axes = _figure(len(paradigms))
    for ax, paradigm in zip(axes, paradigms):
        for method in [teacher_row(pairing), *student_methods(results, pairing)]:
            runs = results.runs(dataset, pairing, method, bits, paradigm)
            recall, precision = _mean_curve(runs, "recall"), _mean_curve(runs, "precision")
            points = [(r, p) for r, p in zip(recall, precision) if not (math.isnan(r) or math.isnan(p))]
            if not points:
                continue
            style = styles[method.kd]
            # a marker per radius: a collapsed model (one code for everything) is a single point
            ax.plot(*zip(*points), color=style.color, linestyle=style.linestyle, marker=style.marker, markersize=4,
                    linewidth=1.2, label="teacher" if method.is_teacher else method.kd)
        ax.set_title(f"{dataset}, {bits} bits, {paradigm}")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize="small", loc="best")
    figure.suptitle(f"Precision–recall over Hamming radius ({pairing.teacher} → {pairing.student})")
    save_figure(figure, path)


def map_bits_figure(results: GridResults, dataset: str, pairing: Pairing, path: Path) -> None:
    styles = method_styles(results)
    paradigms = results.config["paradigms"]
    bits_list = sorted(results.config["bits"])
    k = results.topk(dataset)
    figure, axes = _figure(len(paradigms))
    for ax, paradigm in zip(axes, paradigms):
        for method in [teacher_row(pairing), *student_methods(results, pairing)]:
            summaries = [Summary.of(results.values(dataset, pairing, method, b, paradigm, "map@K")) for b in bits_list]
            points = [(b, s.mean, s.std or 0.0) for b, s in zip(bits_list, summaries) if s is not None]
            if not points:
                continue
            x, y, err = zip(*points)
            style = styles[method.kd]
            ax.errorbar(x, y, yerr=err, color=style.color, linestyle=style.linestyle, marker=style.marker,
                        markersize=5, capsize=3, linewidth=1.2, label="teacher" if method.is_teacher else method.kd)
        ax.set_xscale("log", base=2)
        ax.set_xticks(bits_list, [str(b) for b in bits_list])
        ax.set_title(f"{dataset}, {paradigm}")
        ax.set_xlabel("bits")
        ax.set_ylabel(f"mAP@{k}")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize="small", loc="best")
    figure.suptitle(f"mAP@{k} vs code length ({pairing.teacher} → {pairing.student}; bars: std over seeds)")
    save_figure(figure, path)


def latency_figure(results: GridResults, dataset: str, pairing: Pairing, path: Path) -> bool:
    """Encoder latency (batch 1) against mAP: teacher, student without KD, best KD student per bits.

    Returns False (and writes nothing) when a batch-1 latency was not measured.
    """
    from matplotlib import colormaps
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    latency = {role: results.encoder[(dataset, alias)].get("latency_ms")
               for role, alias in (("teacher", pairing.teacher), ("student", pairing.student))}
    if None in latency.values():
        return False
    paradigms = results.config["paradigms"]
    k = results.topk(dataset)
    bits_colors = colormaps["viridis"]
    bits_list = results.config["bits"]
    figure, axes = _figure(len(paradigms))
    for ax, paradigm in zip(axes, paradigms):
        for i, bits in enumerate(bits_list):
            color = bits_colors(i / max(1, len(bits_list) - 1) * 0.85)

            def mean(method: Method) -> float | None:
                summary = Summary.of(results.values(dataset, pairing, method, bits, paradigm, "map@K"))
                return None if summary is None else summary.mean

            teacher = mean(teacher_row(pairing))
            if teacher is not None:
                ax.plot([latency["teacher"]], [teacher], marker="*", markersize=12, color=color, linestyle="none")
            if NO_KD in results.config["kd"] and (baseline := mean(student_row(pairing, NO_KD))) is not None:
                ax.plot([latency["student"]], [baseline], marker="x", markersize=8, color=color, linestyle="none")
            kd_means = [(m, kd) for kd in results.config["kd"] if kd != NO_KD
                        if (m := mean(student_row(pairing, kd))) is not None]
            if kd_means:
                best, name = max(kd_means)
                ax.plot([latency["student"]], [best], marker="o", markersize=7, color=color, linestyle="none")
                ax.annotate(name, (latency["student"], best), textcoords="offset points", xytext=(6, 4),
                            fontsize="small", color=color)
        ax.set_xscale("log")
        ax.margins(x=0.2, y=0.1)
        plain = FuncFormatter(lambda x, _: f"{x:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.set_title(f"{dataset}, {paradigm}")
        ax.set_xlabel("encoder latency, batch 1 (ms/image, log scale)")
        ax.set_ylabel(f"mAP@{k}")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], marker="*", color="black", linestyle="none", markersize=10, label="teacher"),
               Line2D([], [], marker="x", color="black", linestyle="none", label="student, no KD"),
               Line2D([], [], marker="o", color="black", linestyle="none", label="student, best KD")]
    handles += [Line2D([], [], marker="s", linestyle="none",
                       color=bits_colors(i / max(1, len(bits_list) - 1) * 0.85), label=f"{b} bits")
                for i, b in enumerate(bits_list)]
    axes[-1].legend(handles=handles, fontsize="small", loc="best")
    figure.suptitle(f"Encoder latency vs mAP@{k} ({pairing.teacher} → {pairing.student})")
    save_figure(figure, path)
    return True


# --------------------------------------------------------------------------- the document


def header(results: GridResults) -> list[str]:
    config = results.config
    policies = sorted({str(r.get("tie_policy")) for r in results.metrics.values()})
    seeds = config["seeds"]
    mode = config["mode"]
    if mode == "bank":
        mode += f" (feature banks, {config['views']} augmented views per training image)"
    first = {}
    for (cell, _), record in sorted(results.metrics.items(), key=lambda item: item[1]["_source"]):
        first.setdefault(cell.dataset, record.get("counts", {}))
    datasets = [f"{d} (K = {results.topk(d)}; {first[d].get('queries', '?')} queries, "
                f"{first[d].get('database', '?')} database images)" for d in config["datasets"]]
    paradigms = "; ".join(f"`{p}`: {PARADIGM_LEGEND.get(p, p)}" for p in config["paradigms"])
    return [
        f"# BRCD benchmark report: `{config['name']}`",
        "",
        f"> Generated by `brcd report` from the metrics and timing files under `results/` for the grid "
        f"config `{config['name']}`; do not edit: rerun `snakemake` (rule `report`) to refresh it.",
        "",
        f"- **mode**: {mode}",
        f"- **seeds**: {len(seeds)} ({', '.join(map(str, seeds))}); tables show mean ± sample standard deviation "
        "(n − 1) over seeds, a plain mean when there is one seed",
        f"- **tie policy**: {'; '.join(policies)} (tie-aware mAP: expectation over orderings of tied items)",
        f"- **datasets**: {'; '.join(datasets)}",
        f"- **hashing**: {', '.join(config['hash'])}; **teachers**: {', '.join(config['teachers'])}; "
        f"**students**: {', '.join(config['students'])}; **bits**: {', '.join(map(str, config['bits']))}",
        f"- **paradigms**: {paradigms}; the teacher row is the teacher searching its own codes",
        "",
    ]


def dataset_section(results: GridResults, dataset: str, figures_dir: Path, figures_link: str) -> list[str]:
    k = results.topk(dataset)
    pairings = results.pairings()
    lines = [f"## {dataset}", ""]
    for pairing in pairings:
        many = len(pairings) > 1
        suffix = f", {pairing.label}" if many else ""
        slug = f"_{pairing.slug}" if many else ""
        if not many:
            lines += [f"Teacher → student: {pairing.label}.", ""]
        lines += [f"### Main results: mAP@{k}{suffix}", "",
                  metric_table(results, dataset, pairing, main_methods(results, pairing), "map@K"), "",
                  "Bold: best student per column. The teacher row (paradigm `teacher`) is repeated under sym "
                  "and asym of each code length and is never bolded.", ""]
        ablations = results.ablations()
        if ablations:
            methods = [student_row(pairing, kd) for kd in ablations]
            lines += [f"### Ablation: mAP@{k}{suffix}", "",
                      metric_table(results, dataset, pairing, methods, "map@K"), "",
                      ablation_note(ablations), ""]
        methods = student_methods(results, pairing)
        lines += [f"### Alignment with the teacher{suffix}", "",
                  "ISD (mean normalised Hamming distance between teacher and student codes of the same query "
                  "image; lower = closer):", "",
                  metric_table(results, dataset, pairing, methods, "isd", higher_is_better=False), "",
                  f"NRA@{k} (overlap of the teacher's and the student's top-{k} database neighbours; "
                  "higher = closer):", "",
                  metric_table(results, dataset, pairing, methods, "nra@K"), "",
                  "Bold: best per column.", ""]
        lines += [f"### Tie-aware mAP and precision@k{suffix}", "",
                  "Means over seeds. Tie-aware values average over all orderings of items at equal Hamming "
                  "distance; the conventional ones break ties by database order.", ""]
        for paradigm in results.config["paradigms"]:
            lines += [f"**{paradigm}**", "", secondary_table(results, dataset, pairing, paradigm), ""]
        lines += write_figures(results, dataset, pairing, figures_dir, figures_link, slug, suffix)
    lines += [f"### Encoder timing ({dataset} images)", "",
              encoder_table(results, dataset), "",
              "Decoded image to packed code (preprocessing, frozen backbone, hash head, sign, bit packing), "
              "median after warm-up. Speed-up: the teacher's batch-1 latency over this backbone's, and this "
              "backbone's throughput over the teacher's.", ""]
    return lines


def ablation_note(ablations: Sequence[str]) -> str:
    notes = [f"`{kd}`: {ABLATION_NOTES[kd]}" for kd in ablations if kd in ABLATION_NOTES]
    return "; ".join(notes) + ("." if notes else "") + " Bold: best per column."


def write_figures(results: GridResults, dataset: str, pairing: Pairing, figures_dir: Path, link: str,
                  slug: str, suffix: str) -> list[str]:
    lines = [f"### Figures{suffix}", ""]
    for bits in results.config["bits"]:
        name = f"pr_{dataset}_{bits}{slug}.png"
        pr_figure(results, dataset, pairing, bits, figures_dir / name)
        lines += [f"![Precision–recall, {dataset}, {bits} bits]({link}/{name})", ""]
    name = f"map_vs_bits_{dataset}{slug}.png"
    map_bits_figure(results, dataset, pairing, figures_dir / name)
    lines += [f"![mAP vs bits, {dataset}]({link}/{name})", ""]
    name = f"latency_vs_map_{dataset}{slug}.png"
    if latency_figure(results, dataset, pairing, figures_dir / name):
        lines += [f"![Encoder latency vs mAP, {dataset}]({link}/{name})", ""]
    else:
        lines += ["(No latency-vs-mAP figure: batch-1 latency was not measured; add 1 to `timing.batch_sizes`.)", ""]
    return lines


def figures_dir_for(out: str | os.PathLike) -> Path:
    """``reports/{name}.md`` -> ``reports/{name}/``."""
    return Path(out).with_suffix("")


def build_report(results: GridResults, out: str | os.PathLike) -> str:
    """Write the figures beside ``out`` and return the Markdown text."""
    figures_dir = figures_dir_for(out)
    figures_dir.mkdir(parents=True, exist_ok=True)
    link = figures_dir.name  # relative to the Markdown file
    lines = header(results)
    for dataset in results.config["datasets"]:
        lines += dataset_section(results, dataset, figures_dir, link)
    lines += ["## Search latency", "",
              "Exact Hamming top-K search on packed random codes: one query per call (median), and all queries "
              f"in one call (median time per query). Method: {search_method(results)}.", "",
              search_table(results), "",
              "## Config hashes", "",
              "<details><summary>Config hash of every cell (the hash of every config value the cell's result "
              "depends on)</summary>", "",
              config_hash_table(results), "", "</details>", ""]
    return "\n".join(lines)


def write_report(config: Mapping, out: str | os.PathLike, results_dir: str | os.PathLike = ".",
                 config_path: str | None = None) -> Path:
    from brcd.io import atomic_path

    results = load_results(config, results_dir, config_path)
    text = build_report(results, out)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    return Path(out)


# --------------------------------------------------------------------------- CLI


def configure_parser(parser) -> None:
    parser.add_argument("--config", required=True, help="grid config YAML (e.g. results/.config/{name}.yaml)")
    parser.add_argument("--out", required=True, help="reports/{name}.md; figures go to reports/{name}/")
    parser.add_argument("--results-dir", default=".", help="folder holding results/ (default: current folder)")


def run(args) -> None:
    from brcd.config import load_config

    config = load_config(args.config, check_registries=False)
    path = write_report(config, args.out, args.results_dir, config_path=args.config)
    log.info("-> %s (figures in %s)", path, figures_dir_for(path))
