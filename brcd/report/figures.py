"""The report's figures, as PNG files beside it: precision-recall over Hamming radius, mAP vs
bits, λ sensitivity, encoder latency vs mAP and the critical-difference diagram of the average ranks.

Drawn on matplotlib's Agg canvas without pyplot (no global state, no display), one colour
per kd method in every figure, saved atomically without a timestamp: the same results
give the same bytes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from brcd.cells import Cell
from brcd.report.grid import GridResults, Method, Pairing, metric_value, student_methods, student_row, teacher_row
from brcd.report.significance import summarize
from brcd.lambdas import NO_KD, format_lambda, grid_centre


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
            summaries = [summarize(results.values(dataset, pairing, method, b, paradigm, "map@K")) for b in bits_list]
            points = [(b, s.mean, s.half_width or 0.0) for b, s in zip(bits_list, summaries) if s is not None]
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
    figure.suptitle(f"mAP@{k} vs code length ({pairing.teacher} → {pairing.student}; bars: 95% CI over seeds)")
    save_figure(figure, path)


def sensitivity_figure(results: GridResults, dataset: str, pairing: Pairing, bits: int, path: Path) -> None:
    """Test (solid) and validation (dashed) mAP against λ for each method, tuning seed; the student
    without KD as a grey line; a ring marks the λ selected on validation. Each method has its own grid
    on its own scale, so the x axis is λ as a multiple of the centre of the method's grid (the legend
    gives each centre)."""
    styles = method_styles(results)
    paradigms = results.config["paradigms"]
    k = results.topk(dataset)
    figure, axes = _figure(len(paradigms), width=6.0, height=4.5)
    for ax, paradigm in zip(axes, paradigms):
        if NO_KD in results.config["kd"]:
            (_, baseline), = results.candidates(dataset, pairing, NO_KD, bits, paradigm)
            ax.axhline(metric_value(baseline, "map@K"), color=styles[NO_KD].color, linestyle=":", label="no KD")
        multiples = set()
        for kd in [kd for kd in results.config["kd"] if kd != NO_KD]:
            runs = results.candidates(dataset, pairing, kd, bits, paradigm)
            centre = grid_centre([lam for lam, _ in runs]) or 1.0
            lams = [lam / centre for lam, _ in runs]
            multiples.update(lams)
            color = styles[kd].color
            ax.plot(lams, [metric_value(run, "map@K") for _, run in runs], color=color, marker="o", markersize=4,
                    linewidth=1.2, label=f"{kd} (×{format_lambda(centre)})")
            val = [(run.get("training") or {}).get("val_map") for _, run in runs]
            if None not in val:
                ax.plot(lams, val, color=color, linestyle="--", linewidth=0.8, alpha=0.7)
            chosen = results.selected_lambda(Cell(dataset, bits, pairing.hash, pairing.teacher, 0, pairing.student,
                                                  kd), paradigm)
            test = {lam: metric_value(run, "map@K") for lam, run in runs}
            ax.plot([chosen / centre], [test[chosen]], marker="o", markersize=9, markerfacecolor="none", color=color)
        grid = sorted(multiples)
        if grid and grid[0] > 0:
            ax.set_xscale("log")
        ax.set_xticks(grid, [format_lambda(m) for m in grid])
        ax.minorticks_off()
        ax.set_title(f"{dataset}, {bits} bits, {paradigm}")
        ax.set_xlabel("λ / centre of the method's grid (legend: centre)")
        ax.set_ylabel(f"mAP@{k}")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize="x-small", loc="best", ncol=2)
    figure.suptitle(f"λ sensitivity ({pairing.teacher} → {pairing.student}): test solid, validation dashed, "
                    "ring = selected on validation")
    save_figure(figure, path)


def latency_figure(results: GridResults, dataset: str, pairing: Pairing, path: Path) -> bool:
    """Encoder latency (batch 1) against mAP: teacher, student without KD, and the KD student with the
    best *test* mean per bits (a pick made on test data, to show the reachable point; the tables, not
    this figure, compare methods).

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
                summary = summarize(results.values(dataset, pairing, method, bits, paradigm, "map@K"))
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
               Line2D([], [], marker="o", color="black", linestyle="none", label="student, best KD (on test)")]
    handles += [Line2D([], [], marker="s", linestyle="none",
                       color=bits_colors(i / max(1, len(bits_list) - 1) * 0.85), label=f"{b} bits")
                for i, b in enumerate(bits_list)]
    axes[-1].legend(handles=handles, fontsize="small", loc="best")
    figure.suptitle(f"Encoder latency vs mAP@{k} ({pairing.teacher} → {pairing.student})")
    save_figure(figure, path)
    return True


def cd_figure(results: GridResults, methods: Sequence[str], ranks: Sequence[float], cd: float,
              groups: Sequence[tuple[int, int]], n_columns: int, path: Path) -> None:
    """Critical-difference diagram (Demšar 2006): ``methods`` sorted by average rank on a rank axis
    (1 = best, on the left), the better half labelled on the left and the rest on the right, the CD
    as a bar above the axis, and a thick line under each of ``groups`` (positions into ``methods``:
    runs the Nemenyi test cannot separate, :func:`brcd.stats.nemenyi_groups`)."""
    styles = method_styles(results)
    k = len(methods)
    left = (k + 1) // 2
    step, lowest = 0.45, -0.45 * (max(left, k - left) + 1 + len(groups) * 0.35)
    figure, (ax,) = _figure(1, width=8.0, height=1.4 + 0.32 * (max(left, k - left) + len(groups)))
    ax.plot([1, k], [0, 0], color="black", linewidth=1)
    for tick in range(1, k + 1):
        ax.plot([tick, tick], [0, 0.08], color="black", linewidth=1)
        ax.text(tick, 0.14, str(tick), ha="center", va="bottom", fontsize="small")
    ax.plot([1, 1 + cd], [0.55, 0.55], color="black", linewidth=1.5)
    ax.text(1 + cd / 2, 0.62, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize="small")
    for i, (kd, rank) in enumerate(zip(methods, ranks)):
        on_left = i < left
        y = -step * (1 + len(groups) * 0.35 + (i if on_left else k - 1 - i))
        end = 0.4 if on_left else k + 0.6
        color = styles[kd].color
        ax.plot([rank, rank, end], [0, y, y], color=color, linewidth=1)
        ax.text(end + (-0.05 if on_left else 0.05), y, f"{kd} ({rank:.2f})", ha="right" if on_left else "left",
                va="center", fontsize="small", color=color)
    for j, (first, last) in enumerate(groups):
        y = -step * 0.35 * (j + 1)
        ax.plot([ranks[first] - 0.04, ranks[last] + 0.04], [y, y], color="black", linewidth=3.5, solid_capstyle="round")
    ax.set_xlim(-1.8, k + 2.8)
    ax.set_ylim(lowest - 0.2, 0.95)
    ax.set_axis_off()
    figure.suptitle(f"Average rank over {n_columns} columns: critical-difference diagram (Nemenyi, α = 0.05)")
    save_figure(figure, path)
