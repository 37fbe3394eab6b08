"""``brcd report``: tables from hand-made metrics files, bold best, missing and stale inputs, figures."""
from __future__ import annotations

import json
import re
import zlib

import numpy as np
import pytest
import yaml

from brcd import workflow
from brcd.cli import main
from brcd.config import REPO_ROOT, load_config
from brcd.errors import DataError, MetadataMismatchError
from brcd.report.document import write_report
from brcd.report.results import load_results
from tests.conftest import REFERENCE

TOPK = 10
BITS = (16, 32)
QUERIES = 20
CONFIG = {
    "name": "tiny",
    "seeds": [0, 1, 2],
    "mode": "bank",
    "views": 4,
    "datasets": {"synthetic": {"train_per_class": 10, "query": QUERIES, "val": 20, "database": 100, "topk": TOPK}},
    "backbones": {"tt": {"model": "timm:test_efficientnet", "input_size": 32},
                  "ss": {"model": "timm:test_resnet", "input_size": 24}},
    "teachers": ["tt"],
    "students": ["ss"],
    "hash": ["cibhash"],
    "bits": list(BITS),
    "kd": ["none", "kd", "brcd", "brcd_nomask"],
    "paradigms": ["sym", "asym"],
    "lambda": {"default": [0.5, 2]},
}
#: λ = 2 is selected everywhere; the other candidate (λ = 0.5) is worse by this much
WORSE_LAMBDA = 0.05
#: mAP@K = BASE + SPREAD * STEPS[seed]: 3 seeds give mean BASE + SPREAD, std SPREAD and a 95% t half-width
#: of t(0.975, 2) * SPREAD / sqrt(3) = 2.484 * SPREAD
BASE = {"teacher": 0.70, "none": 0.40, "kd": 0.50, "brcd": 0.60, "brcd_nomask": 0.60}
SPREAD = {"brcd": 0.04, "brcd_nomask": 0.04}
#: brcd_nomask has brcd's values in another seed order: paired differences -0.04, +0.04, 0 (tied with brcd)
STEPS = {"brcd_nomask": (1, 0, 2)}
#: the one run that hit its epoch cap while still improving
UNCONVERGED_RUN = ("kd", 16, "sym", 1)


def map_value(kd: str, bits: int, paradigm: str, seed: int) -> float:
    if (kd, bits, paradigm) == ("kd", 32, "asym"):  # kd wins this one column
        return 0.90 + 0.02 * seed
    value = BASE[kd] + (0.05 if bits == 32 else 0.0) + (0.01 if paradigm == "asym" else 0.0)
    return value + SPREAD.get(kd, 0.02) * STEPS.get(kd, (0, 1, 2))[seed]


def per_query_ap(value: float, cell, paradigm: str) -> np.ndarray:
    """AP@K per query whose mean is exactly ``value``: each method finds some queries easier than
    others (a query effect shared by its seeds), so paired differences carry query-sampling noise."""
    key = zlib.crc32(f"{cell.kd}/{cell.bits}/{paradigm}".encode())
    noise = np.random.default_rng(key).normal(0.0, 0.02, QUERIES)
    return value + noise - noise.mean()


def metrics_record(cell, paradigm: str) -> dict:
    kd = cell.kd or "teacher"
    value = map_value(kd, cell.bits, paradigm, cell.seed)
    if cell.variant == "lambda0.5":
        value -= WORSE_LAMBDA
    metrics = {
        f"map@{TOPK}": value,
        f"map@{TOPK}_tie_aware": value - 0.01,
        "map_all": value - 0.1,
        "map_all_tie_aware": value - 0.11,
        "precision@k": {"1": value + 0.1, "10": value + 0.05},
        "pr_curve": {"radius": list(range(cell.bits + 1)),
                     "precision": [None] + [value * (1 - r / (2 * cell.bits)) for r in range(1, cell.bits + 1)],
                     "recall": [0.0] + [r / cell.bits for r in range(1, cell.bits + 1)],
                     "retrieved_share": [r / cell.bits for r in range(cell.bits + 1)]},
    }
    if cell.student is not None:
        metrics["isd"] = 0.5 - value / 2
        metrics[f"nra@{TOPK}"] = value / 2
    ran = 12 if cell.student is None else 12 - 2 * cell.seed  # students: 12, 10, 8 epochs by seed
    training = {"epochs_run": ran, "epoch_cap": 12, "last_validation": ran, "best_epoch": 8, "val_map": value,
                "stopped_early": False, "converged": (kd, cell.bits, paradigm, cell.seed) != UNCONVERGED_RUN}
    if cell.student is not None and cell.kd != "none":  # λ·‖∇L_kd‖/‖∇L_hash‖: 0.1, 0.2, 0.4 by seed
        training.update(grad_norm_hash=1.0, grad_norm_kd=0.05 * 2 ** cell.seed, kd_grad_ratio=0.1 * 2 ** cell.seed)
    lam = selection = None
    if cell.student is not None:  # what `brcd evaluate --selection` records
        lam = {"lambda0.5": 0.5, "lambda0": 0.0}.get(cell.variant, 2.0)
        chosen = 0.0 if cell.kd == "none" else 2.0
        selection = {"selected": chosen, "is_selected": lam == chosen}
    return {**cell.parameters(), "student": cell.student, "kd": cell.kd, "variant": cell.variant,
            "paradigm": paradigm, "topk": TOPK, "lambda": lam, "selection": selection,
            "tie_policy": "hamming distance ascending, ties by database order",
            "config_hash": f"h{cell.bits}{cell.seed}{cell.kd or 't'}", "metrics": metrics,
            "counts": {"queries": QUERIES, "database": 100}, "training": training}


def write_selection(root, method) -> None:
    """λ = 2 chosen for every method and paradigm, as `brcd select` writes it."""
    from brcd.tuning import select_lambda, write_selection as write
    from brcd.lambdas import lambda_grid

    grid = lambda_grid(CONFIG, method.kd)
    scores = {lam: {p: 0.5 + 0.1 * lam for p in ("sym", "asym")} for lam in grid}
    keys = {key: getattr(method, key) for key in ("dataset", "bits", "hash", "teacher", "student", "kd")}
    path = root / method.selection_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, keys, grid, 0, select_lambda(scores))


def write_metrics(root, cell, paradigm: str, record: dict | None = None) -> None:
    """A metrics file and its per-query file, as `brcd evaluate` writes them."""
    from brcd.evaluate import write_per_query
    from brcd.layout import per_query_path

    record = record or metrics_record(cell, paradigm)
    path = root / workflow.metrics_path(cell, paradigm)
    write(path, record)
    ap = per_query_ap(record["metrics"][f"map@{TOPK}"], cell, paradigm)
    write_per_query(per_query_path(path), {"index": np.arange(QUERIES), f"ap@{TOPK}": ap,
                                           f"ap@{TOPK}_tie_aware": ap, f"relevant@{TOPK}": np.ones(QUERIES)}, record)


def encoder_record(backbone: str, latency: float, throughput: float) -> dict:
    options = CONFIG["backbones"][backbone]
    return {"kind": "encoder", "dataset": "synthetic", "backbone": backbone, "model": options["model"],
            "input_size": options["input_size"], "device": "cpu", "device_name": "x86_64",
            "threads": 2, "latency_ms": latency, "throughput_images_per_second": throughput,
            "batches": [{"batch_size": 1, "per_image_ms": latency, "images_per_second": 1000 / latency},
                        {"batch_size": 64, "per_image_ms": 1000 / throughput, "images_per_second": throughput}]}


def search_record(bits: int) -> dict:
    return {"kind": "search", "bits": bits, "method": "exact Hamming top-K: test engine", "results": [
        {"database_size": 1000, "topk": 10, "queries": 5, "single": {"per_query_ms_median": 0.25 * bits / 16},
         "batch": {"per_query_ms_median": 0.0125}}]}


def write(path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def make_results(root) -> str:
    """A config file and every input file of its grid under ``root``; returns the config path."""
    config_path = root / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    for cell in workflow.teacher_cells(CONFIG):
        write_metrics(root, cell, "teacher")
    for cell in workflow.student_cells(CONFIG):
        for paradigm in CONFIG["paradigms"]:
            write_metrics(root, cell, paradigm)
    for method in workflow.student_methods(CONFIG):
        write_selection(root, method)
    write(root / "results/timing/encoder/synthetic/tt.json", encoder_record("tt", 40.0, 100.0))
    write(root / "results/timing/encoder/synthetic/ss.json", encoder_record("ss", 10.0, 500.0))
    for bits in BITS:
        write(root / f"results/timing/search/{bits}.json", search_record(bits))
    return str(config_path)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    config_path = make_results(root)
    out = root / "reports" / "tiny.md"
    assert main(["report", "--config", config_path, "--out", str(out), "--results-dir", str(root)]) == 0
    return root, config_path, out, out.read_text()


def table_after(text: str, heading: str) -> tuple[list[str], dict[str, list[str]]]:
    """The first pipe table after ``heading``: (header cells, {row label: cells of its first row})."""
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split("|")])
    rows: dict[str, list[str]] = {}
    for row in table[2:]:
        rows.setdefault(row[0], row[1:])  # the first row of a label (e.g. the smallest bits)
    return table[0], rows


def test_main_table_mean_ci_and_tied_with_best(report):
    header, rows = table_after(report[3], "### Main results: mAP@10")
    assert header == ["method", "16 bits sym", "16 bits asym", "32 bits sym", "32 bits asym"]
    assert list(rows) == ["teacher (`tt`)", "student, no KD (`ss`)", "`kd`", "`brcd`"]  # ablation not here
    # mean ± 95% t half-width over 3 seeds; the teacher: its own paradigm, repeated, never bold
    assert rows["teacher (`tt`)"] == ["0.720 ± 0.050", "0.720 ± 0.050", "0.770 ± 0.050", "0.770 ± 0.050"]
    assert rows["student, no KD (`ss`)"] == ["0.420 ± 0.050", "0.430 ± 0.050", "0.470 ± 0.050", "0.480 ± 0.050"]
    assert rows["`brcd`"] == ["**0.640 ± 0.099**", "**0.650 ± 0.099**", "**0.690 ± 0.099**", "0.700 ± 0.099"]
    # kd's seed 1 at 16 bits sym hit its epoch cap while improving: marked. At 32 bits sym kd is 0.12 below
    # the best (brcd_nomask) with paired differences -0.14, -0.08, -0.14: raw p 0.027 (t, 2 df), but Holm's
    # correction over the column's 3 comparisons with the best doubles it, so kd is tied with the best there
    assert rows["`kd`"] == ["0.520 ± 0.050†", "0.530 ± 0.050", "**0.570 ± 0.050**", "**0.920 ± 0.050**"]


def test_delta_vs_no_kd_and_ablation_delta(report):
    text = report[3]
    _, delta = table_after(text, "### Δ mAP@10 vs the student without KD")
    assert list(delta) == ["`kd`", "`brcd`"]
    kd = delta["`kd`"][0]  # kd - none = 0.10 in every seed, plus query noise
    assert kd.startswith("**+0.100** [+0.0") and kd.endswith("P=1.00, adj. p < 0.001")
    _, ablation_delta = table_after(text, "Δ mAP@10 of each ablation vs full `brcd`")
    nomask = ablation_delta["`brcd_nomask`"][0]  # paired differences -0.04, +0.04, 0: not significant
    assert nomask.startswith("0.000 [-0.") and "**" not in nomask
    assert 0.3 < float(nomask.split("P=")[1].split(",")[0]) < 0.7 and nomask.endswith("adj. p 1.00")
    assert "Holm-adjusted within the column's family A (each method vs the student without KD, 3 tests)" in text
    assert "family B (each ablation vs full `brcd`, 1 test)" in text


def test_ablation_alignment_and_secondary_tables(report):
    text = report[3]
    _, ablation = table_after(text, "### Ablation: mAP@10")
    assert list(ablation) == ["`brcd`", "`brcd_nomask`"]
    # same mean, paired differences -0.04, +0.04, 0: both in the tied-with-best group
    assert ablation["`brcd_nomask`"][0] == "**0.640 ± 0.099**"
    assert ablation["`brcd`"][0] == "**0.640 ± 0.099**"

    _, isd = table_after(text, "ISD (")
    assert list(isd) == ["student, no KD (`ss`)", "`kd`", "`brcd`", "`brcd_nomask`"]
    assert isd["`brcd`"][0] == "**0.180 ± 0.050**"  # lower ISD is better: 0.5 - mAP / 2
    assert isd["`kd`"][0] == "0.240 ± 0.025†" and isd["`kd`"][3] == "**0.040 ± 0.025**"
    _, nra = table_after(text, "NRA@10 (")
    assert nra["`brcd`"][0] == "**0.320 ± 0.050**"

    header, sym = table_after(text, "**sym**")
    assert header == ["method", "bits", "mAP@10", "mAP@10 tie-aware", "mAP@all", "mAP@all tie-aware", "P@1", "P@10"]
    assert sym["`brcd`"] == ["16", "0.640", "0.630", "0.540", "0.530", "0.740", "0.690"]  # first row: 16 bits


def test_lambda_section(report):
    text = report[3]
    assert "Every distilled method tried each λ of its own grid" in text
    header, chosen = table_after(text, "### λ chosen on validation")
    assert header[:3] == ["method", "λ grid", "16 bits sym"]
    assert list(chosen) == ["`kd`", "`brcd`", "`brcd_nomask`"] and chosen["`kd`"][0] == "0.5, 2"
    # λ = 2 is the grid's largest value: flagged; in parentheses the KD term's gradient ratio, geometric
    # mean over the seeds' 0.1, 0.2, 0.4
    assert set(chosen["`kd`"][1:]) == {"2‡ (0.2)"}
    assert ("**12 of the 12 λ choices (method × column) are at an edge of their method's grid** (the best λ "
            "may lie beyond it; marked ‡") in text
    _, spread = table_after(text, "Spread of test mAP@10")
    assert spread["`brcd`"][0] == "0.050 (0.050)"  # the λ = 0.5 candidate is 0.05 worse, on test and validation


def test_rank_section(report):
    text = report[3]
    _, ranks = table_after(text, "## Ranking across all columns")
    # 16/32 bits sym and 16 bits asym: brcd and brcd_nomask tie for first; 32 asym: kd first
    assert ranks["`none`"] == ["4.00"] and ranks["`brcd`"] == ranks["`brcd_nomask`"]
    assert "critical difference CD = " in text


def test_header_timing_and_hashes(report):
    text = report[3]
    assert "do not edit" in text and "`tiny`" in text
    assert "**seeds**: 3 (0, 1, 2); seeds vary head initialisation" in text
    assert "fixed across seeds: the data split (`split_seed`), the stored augmented views" in text
    assert "mean ± half-width of the 95% Student-t interval over seeds" in text
    assert "**1 of the 54 runs in the tables hit their epoch cap while their best validation was the last one**" in text
    assert ("(still improving; cells marked †); student runs trained 8–12 epochs (median 10) of a 12-epoch "
            "cap, teacher runs trained 12 epochs of a 12-epoch cap") in text
    assert "K = 10" in text and "hamming distance ascending, ties by database order" in text
    _, encoder = table_after(text, "### Encoder timing")
    assert encoder["`ss`"][-1] == "4.00× / 5.00×"
    assert encoder["`ss`"][-3:-1] == ["10.00", "500 (batch 64)"]
    header, search = table_after(text, "## Search latency")
    assert "Method: exact Hamming top-K: test engine." in text
    assert header[2:] == ["16 bits: single query (ms)", "16 bits: batched (ms/query)",
                          "32 bits: single query (ms)", "32 bits: batched (ms/query)"]
    assert search["1,000"] == ["10", "0.250", "0.0125", "0.500", "0.0125"]
    assert "`student/cibhash/tt/ss/brcd/selected`" in text and "`student/cibhash/tt/ss/brcd/lambda0.5`" in text and "`h161brcd`" in text
    assert "<details>" in text


def test_figures_are_linked_pngs(report):
    root, _, out, text = report
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == ["tiny/lambda_synthetic_16.png", "tiny/lambda_synthetic_32.png",
                             "tiny/latency_vs_map_synthetic.png", "tiny/map_vs_bits_synthetic.png",
                             "tiny/pr_synthetic_16.png", "tiny/pr_synthetic_32.png", "tiny/ranks.png"]
    for link in links:
        data = (out.parent / link).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


def test_same_inputs_give_the_same_report(report, tmp_path):
    root, config_path, out, text = report
    again = write_report(load_config(config_path), tmp_path / "tiny.md", root)
    assert again.read_text() == text
    for figure in sorted((out.parent / "tiny").glob("*.png")):  # figures too, byte for byte
        assert (tmp_path / "tiny" / figure.name).read_bytes() == figure.read_bytes()


def test_tidy_table_has_one_row_per_run(report):
    import pandas as pd

    root, _, out, _ = report
    table = pd.read_parquet(out.with_suffix(".parquet"))
    # teacher runs + student runs x paradigms: seed 0 tries both λ (none: only 0), seeds 1 and 2 the selected one
    assert len(table) == 3 * 2 + (1 + 3 * 2 + 2 * 4) * 2 * 2
    shown = table[table.in_tables]
    assert len(shown) == 3 * 2 + 3 * 4 * 2 * 2
    candidates = table[(table.kd == "kd") & (table.seed == 0) & (table.bits == 16) & (table.paradigm == "sym")]
    assert sorted(candidates.variant) == ["lambda0.5", "lambda2"]
    assert candidates.set_index("variant").is_selected.to_dict() == {"lambda0.5": False, "lambda2": True}
    brcd = shown[(shown.kd == "brcd") & (shown.bits == 16) & (shown.paradigm == "sym")].sort_values("seed")
    assert list(brcd.seed) == [0, 1, 2]
    np.testing.assert_allclose(brcd.map_at_k, [0.60, 0.64, 0.68])
    assert {"map_at_k_tie_aware", "map_all", "precision_at_1", "isd", "nra_at_k", "train_converged",
            "train_best_epoch", "config_hash", "teacher", "student", "hash", "topk"} <= set(table.columns)
    assert table.train_converged.sum() == len(table) - 1
    assert table[table.paradigm == "teacher"].kd.isna().all()


def test_one_seed_says_what_the_intervals_cover(tmp_path):
    root = tmp_path
    config = {**CONFIG, "seeds": [0]}
    (root / "one.yaml").write_text(yaml.safe_dump(config))
    make_results(root)
    write_report(load_config(root / "one.yaml"), root / "one.md", root)
    text = (root / "one.md").read_text()
    assert "one seed: intervals and significance cover query sampling only" in text
    _, rows = table_after(text, "### Main results: mAP@10")
    _, ablation = table_after(text, "### Ablation: mAP@10")
    # one run: no interval over seeds; brcd_nomask's seed 0 is 0.04 above brcd's, beyond the query noise,
    # so brcd is not tied with the column's best (an ablation variant: bold in the ablation table only)
    assert rows["`brcd`"][0] == "0.600" and ablation["`brcd_nomask`"][0] == "**0.640**"
    assert bold_groups(text) == findings_groups(text)


def _keyed_by_pairing(text: str) -> bool:
    """Whether a report's columns need their dataset and pairing to be told apart (more than one main table)."""
    import re

    return len(re.findall(r"^### Main results: mAP@", text, re.M)) > 1


def bold_groups(text: str) -> dict[str, set[str]]:
    """Column -> the students bold in the main or the ablation mAP table. A column is its header
    (``16 bits sym``), prefixed by ``dataset, pairing, `` when the report has several datasets or
    pairings (each dataset's ``## `` section holds one main and one ablation table per pairing)."""
    import re

    several = _keyed_by_pairing(text)
    lines = text.splitlines()
    groups: dict[str, set[str]] = {}
    dataset = None
    for line_no, line in enumerate(lines):
        if line.startswith("## "):
            dataset = line[3:].strip()
        match = re.match(r"### (?:Main results|Ablation): mAP@\d+(?:, (`.+` → `.+` \(\w+\)))?$", line)
        if not match:
            continue
        header, rows = table_after("\n".join(lines[line_no:]), line)
        prefix = f"{dataset}, {match.group(1)}, " if several else ""
        for label, cells in rows.items():
            if label.startswith("teacher"):
                continue
            for column, cell in zip(header[1:], cells):
                group = groups.setdefault(prefix + column, set())
                if cell.startswith("**"):
                    group.add(label.strip("`") if label.startswith("`") else "none")
    return groups


def findings_groups(text: str) -> dict[str, set[str]]:
    """Column -> the findings' "tied with the best" group, keyed like :func:`bold_groups`."""
    import re

    several = _keyed_by_pairing(text)
    groups = {}
    for label, column, tied in re.findall(r"- \*\*(.+?), (\d+ bits \w+)\*\* \(mAP@\d+\)\n(?:  - .*\n)*?  - tied with "
                                          r"the best \(`[^`]+`, mAP [0-9.]+\)(?:, family C)?: (.*)\n", text):
        groups[f"{label}, {column}" if several else column] = set(re.findall(r"`([^`]+)`", tied))
    return groups


def test_bold_of_the_tables_is_the_findings_tied_group(report):
    text = report[3]
    groups = findings_groups(text)
    assert len(groups) == 4 and bold_groups(text) == groups


def test_missing_per_query_file_is_named(tmp_path):
    from brcd.layout import per_query_path

    make_results(tmp_path)
    missing = per_query_path(workflow.metrics_path(workflow.student_cells(CONFIG)[0], "sym"))
    (tmp_path / missing).unlink()
    with pytest.raises(DataError, match=re.escape(str(missing)) + r"  \(rule `evaluate_candidates`\)"):
        load_results(load_config(tmp_path / "tiny.yaml"), tmp_path)


def test_missing_metrics_file_names_file_and_rule(tmp_path, capsys):
    make_results(tmp_path)
    cell = next(cell for cell in workflow.student_cells(CONFIG) if cell.variant == "selected")
    missing = workflow.metrics_path(cell, "asym")
    (tmp_path / missing).unlink()
    config = load_config(tmp_path / "tiny.yaml")
    with pytest.raises(DataError, match=re.escape(missing)) as error:
        load_results(config, tmp_path)
    assert "rule `evaluate_selected`" in str(error.value) and "snakemake" in str(error.value)
    code = main(["report", "--config", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "r.md"),
                 "--results-dir", str(tmp_path)])
    assert code == 2 and missing in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()


def test_missing_timing_file_names_its_rule(tmp_path):
    make_results(tmp_path)
    (tmp_path / "results/timing/search/32.json").unlink()
    with pytest.raises(DataError, match=r"results/timing/search/32.json  \(rule `time_search`\)"):
        load_results(load_config(tmp_path / "tiny.yaml"), tmp_path)


def test_misplaced_metrics_or_timing_file_is_rejected(tmp_path):
    make_results(tmp_path)
    teacher = workflow.teacher_cells(CONFIG)[0]
    path = tmp_path / workflow.metrics_path(teacher, "teacher")
    record = json.loads(path.read_text())
    record["seed"] = 7
    path.write_text(json.dumps(record))
    with pytest.raises(MetadataMismatchError, match="seed"):
        load_results(load_config(tmp_path / "tiny.yaml"), tmp_path)
    path.write_text(json.dumps({**record, "seed": 0}))
    write(tmp_path / "results/timing/encoder/synthetic/ss.json", encoder_record("tt", 40.0, 100.0))  # a copy
    with pytest.raises(MetadataMismatchError, match=r"backbone = 'tt'.*time_encoder"):
        load_results(load_config(tmp_path / "tiny.yaml"), tmp_path)


def test_findings_are_generated_from_the_intervals(report):
    """The findings section states, per column, what the paired intervals support (known truth
    of the fixture: kd and brcd beat no KD by 0.10 and 0.22 on average; brcd_nomask is brcd's
    values in another seed order, so removing the mask changes nothing significantly)."""
    text = report[3]
    findings = text[text.index("## Findings"):text.index("## synthetic")]
    column = findings[findings.index("16 bits sym"):findings.index("16 bits asym")]
    better = next(line for line in column.splitlines() if "better than the student without KD" in line)
    assert "`kd` (+0.100 [" in better and "`brcd` (+0.220 [" in better and "`brcd_nomask`" in better
    assert "worse than it (family A): none" in column and "not distinguishable from it (family A): none" in column
    assert "tied with the best (`brcd`" in column and "`brcd_nomask`" in column.split("tied with the best")[1]
    assert "without the bit mask (`brcd_nomask`): " in column and "no significant change" in column
    kd_wins = findings[findings.index("32 bits asym"):]
    assert "tied with the best (`kd`, mAP 0.920), family C: `kd`" in kd_wins
    overall = findings[findings.index("Over all 4 columns"):findings.index("synthetic, `tt`")]
    # tied at 32 bits sym after Holm's correction (test_main_table_mean_ci_and_tied_with_best)
    assert "`kd`: better than no KD in 4 of 4 columns, worse in 0; tied with the best in 2 of 4" in overall
    assert "`brcd`: better than no KD in 4 of 4 columns, worse in 0; tied with the best in 3 of 4" in overall


def test_claims_the_grid_cannot_test_are_named(report):
    """This grid has no `brcd_nocluster`: claim (c) says so and leaves the tables (tests/test_claims.py has
    the rest of the claims section)."""
    text = report[3]
    assert "- **(c) the cluster terms help**: not testable in this grid (it needs `brcd_nocluster`)" in text
    header, _ = table_after(text, "Verdict per column")
    assert header == ["column", "(a) `kd`", "(b) mask", "(d) asym"]


#: the first line of a Snakemake benchmark file
BENCHMARK_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def write_benchmarks(root, jobs) -> None:
    """Benchmark files of the grid's jobs: (rule, index of the job, wall seconds, when it ended)."""
    import os

    files = workflow.benchmark_files(CONFIG)
    for rule, i, seconds, ended in jobs:
        path = root / files[rule][i]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(BENCHMARK_HEADER + f"{seconds}\t0:00:{int(seconds) % 60:02d}\t512.5\t1\t1\t1\t0\t0\t90\t"
                                           f"{seconds / 2}\n")
        os.utime(path, (ended, ended))


def test_time_per_stage_from_benchmark_files(tmp_path):
    """The time table sums Snakemake's benchmark files of the grid's jobs per rule and the span
    runs from the first job's start (end − seconds) to the last job's end."""
    from brcd.report.costs import stage_time_section

    config_path = make_results(tmp_path)
    files = workflow.benchmark_files(CONFIG)
    # bits x methods: one job per method trains its candidates, one its other seeds; one evaluates each
    for rule in ("train_candidates", "train_student", "evaluate_candidates", "evaluate_selected"):
        assert len(files[rule]) == 2 * 4, rule
    assert "features" in files and "evaluate" not in files
    # the runs each job handles: every λ candidate of seed 0 (none: λ = 0 only), the selected λ of seeds 1 and 2
    runs = workflow.benchmark_jobs(CONFIG)
    assert sum(runs["evaluate_candidates"].values()) + sum(runs["evaluate_selected"].values()) == \
        len(workflow.student_cells(CONFIG))
    assert {path.split("/")[-2]: count for path, count in runs["evaluate_candidates"].items()} == \
        {"none": 1, "kd": 2, "brcd": 2, "brcd_nomask": 2}
    assert set(runs["evaluate_selected"].values()) == {2} and set(runs["evaluate_teacher"].values()) == {1}
    write_benchmarks(tmp_path, [("split", 0, 2.0, 1000.0), ("train_candidates", 0, 30.0, 1100.0),
                                ("train_candidates", 1, 50.0, 1300.0), ("evaluate_candidates", 0, 3.0, 1290.0),
                                ("evaluate_selected", 0, 4.0, 1299.0)])
    (tmp_path / files["train_student"][0]).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / files["train_student"][0]).write_text(BENCHMARK_HEADER)  # a job killed before its record: ignored
    text = "\n".join(stage_time_section(load_results(load_config(config_path), tmp_path)))
    assert "**5 min 02 s** from the first job's start" in text  # first start 998 s, last end 1300 s
    # idle between 1000 s and 1070 s and between 1100 s and 1250 s: a grid built in separate runs
    assert "jobs were running during **1 min 22 s** of it" in text
    _, rows = table_after(text, "## Time per stage")
    assert rows["`train_candidates`"] == ["2 of 8", "80.00", "40.00", "50.00", "40.00", "512"]
    assert rows["`split`"][0] == "1" and rows["`train_student`"][0] == "0 of 8"
    assert rows["`evaluate_candidates`"][:2] == ["1 of 8", "3.00"] and rows["`evaluate_selected`"][:2] == ["1 of 8", "4.00"]
    assert rows["all"][:2] == ["5", "89.00"]
    # the two train_candidates jobs, by the method they trained
    owners = {path: kd for kd, paths in workflow.student_training_files(CONFIG).items() for path in paths}
    first, second = (owners[files["train_candidates"][i]] for i in (0, 1))
    assert first != second  # the grid's first two candidate jobs belong to two methods
    header, per_method = table_after(text, "Student training per distillation method")
    assert header == ["method", "λ candidates", "jobs", "total (s)", "mean (s)", "share"]
    assert per_method.pop(f"`{first}`")[1:] == ["1 of 4", "30.00", "30.00", "37.5%"]  # 2 bits x (candidates, other seeds)
    assert per_method.pop(f"`{second}`")[1:] == ["1 of 4", "50.00", "50.00", "62.5%"]
    assert per_method.pop("all") == ["", "2 of 16", "80.00", "", "100%"]
    assert all(cells[1:] == ["0 of 4", "—", "—", "—"] for cells in per_method.values()) and len(per_method) == 2
    assert per_method["`brcd`"][0] == "2"  # the λ grid of config/test.yaml's methods; `none` has one


def test_busy_time_is_the_union_of_the_jobs_intervals():
    from brcd.report.costs import busy_time, run_span, span_text
    from brcd.report.grid import BenchmarkRow

    class Results:  # what the three functions read of GridResults
        def __init__(self, *jobs):
            self.benchmarks = {"rule": ([], [BenchmarkRow(end - start, None, None, end) for start, end in jobs])}

    side_by_side = Results((0, 100), (10, 50), (90, 200), (200, 260))
    assert run_span(side_by_side) == busy_time(side_by_side) == 260
    assert "running during" not in span_text(side_by_side)
    resumed = Results((0, 3000), (2900, 3600), (9000, 9600))  # stopped at 3600 s, resumed at 9000 s
    assert (run_span(resumed), busy_time(resumed)) == (9600, 4200)
    text = span_text(resumed)
    assert text.startswith("**2 h 40 min** from") and "running during **1 h 10 min**" in text
    assert span_text(Results()) is None and busy_time(Results()) is None


def test_header_gives_the_span_of_each_run(tmp_path, monkeypatch):
    """The header's run time: the jobs' wall times (benchmark files) and each Snakemake run recorded in
    results/.runs.jsonl, with their wall time in all. The first run was killed: it recorded no end, so its
    end is the last file its jobs wrote before the next run began."""
    import os

    from brcd.report.header import header
    from brcd.runs import RUN_ENV, end_run, start_run

    monkeypatch.delenv(RUN_ENV, raising=False)
    config_path = make_results(tmp_path)
    start = 1_700_000_000  # 2023-11-14 22:13:20 UTC
    runs_file = tmp_path / "results/.runs.jsonl"
    start_run(2, None, start, runs_file, {})  # killed at start + 1200 s, in a job that wrote its log then
    second = start_run(2, None, start + 3600, runs_file, {})
    end_run(second, True, None, runs_file, now=start + 5400)
    write_benchmarks(tmp_path, [("split", 0, 20.0, start + 100), ("train_candidates", 0, 600.0, start + 1000),
                                ("train_candidates", 1, 900.0, start + 5300)])
    for name, written in (("killed.log", start + 1200), ("resumed.log", start + 4000)):
        path = tmp_path / "logs/train_candidates" / name
        path.write_text("epoch ...\n")
        os.utime(path, (written, written))
    text = "\n".join(header(load_results(load_config(config_path), tmp_path)))
    assert "the jobs' wall times, summed, come to **25 min 20 s** (Snakemake's benchmark files" in text
    assert ". **2 Snakemake runs** (`results/.runs.jsonl`): **50 min 00 s** of wall time in all, each from " in text
    lines = [line for line in text.splitlines() if line.startswith("  - run ")]
    cpu = f"{load_results(load_config(config_path), tmp_path).snakemake_runs[0].cpu_model}, {os.cpu_count()} CPUs"
    assert lines == [
        "  - run 1: 2023-11-14 22:13:20–22:33:20 UTC (**20 min 00 s**), **no end recorded** (killed, or its machine "
        "stopped; end inferred: the last log or benchmark file its jobs wrote); 2 jobs finished (10 min 20 s of job "
        f"time); {cpu}, `--cores 2`",
        "  - run 2: 2023-11-14 23:13:20–23:43:20 UTC (**30 min 00 s**), completed; 1 job finished (15 min 00 s of job "
        f"time); {cpu}, `--cores 2`"]
    # without a record of the runs (grids built before it existed), the jobs' time alone
    runs_file.unlink()
    text = "\n".join(header(load_results(load_config(config_path), tmp_path)))
    assert "Snakemake run" not in text and "come to **25 min 20 s**" in text


def test_a_significant_interval_never_prints_a_zero_bound():
    from brcd.report.format import interval_text
    from brcd.stats import Comparison

    close = Comparison(delta=0.0021, low=0.00004, high=0.0041, p_improvement=0.99, n_seeds=3, n_queries=10)
    assert interval_text(close) == "+0.00210 [+0.00004, +0.00410]"
    level = Comparison(delta=0.0021, low=-0.0004, high=0.0041, p_improvement=0.8, n_seeds=3, n_queries=10)
    assert interval_text(level) == "+0.002 [0.000, +0.004]"  # not significant: 3 decimals, 0 is in it


def test_schedule_note_states_each_roles_stopping_rule():
    from brcd.report.header import schedule_note

    config = load_config("config/study.yaml")
    study = schedule_note(config)
    assert (f"students: Adam lr {config['train']['student']['lr']:g}, batch 64, validation every 4 epochs, stop "
            "after 2 validations without an improvement of more than 0.001 mAP (not before epoch 8), cap 160 epochs"
            ) in study
    assert "teachers: Adam lr 0.0005" in study and "teachers: Adam lr 0.0005, batch 64, validation every 5 epochs, " \
        "stop after 2 validations without an improvement (not" in study
    assert "products" not in study  # the default kernel goes unsaid, so earlier reports read the same
    config["train"]["student"]["matmul"] = "onednn"
    assert schedule_note(config).endswith("cap 160 epochs, the head's products on onednn")


def test_findings_table_holds_the_findings_statements(report, tmp_path, capsys):
    """reports/{name}.findings.parquet has one row per statement of the findings section, and a
    run compared with itself reaches the same conclusions in every column."""
    from brcd.report.statements import VS_BEST, VS_BRCD, VS_NO_KD, read_statements

    root, _, out, text = report
    path = out.with_suffix(".findings.parquet")
    name, statements = read_statements(path)
    assert name == "tiny"
    column = [s for s in statements if s.bits == 16 and s.paradigm == "sym"]
    better = {s.method for s in column if s.kind == VS_NO_KD and s.verdict == "better"}
    assert {"kd", "brcd", "brcd_nomask"} <= better
    kd = next(s for s in column if s.kind == VS_NO_KD and s.method == "kd")
    assert f"`kd` ({kd.delta:+.3f} [{kd.low:+.3f}, {kd.high:+.3f}], adj. p < 0.001)" in text  # rendered from the rows
    assert (kd.family, kd.family_size, kd.p_adjusted) == ("A", 3, pytest.approx(3 * kd.p_value))  # the smallest of 3
    nomask = next(s for s in column if s.kind == VS_BRCD)
    assert (nomask.family, nomask.family_size, nomask.p_value) == ("B", 1, nomask.p_adjusted)  # a family of one
    tied = {s.method for s in column if s.kind == VS_BEST and s.verdict in ("best", "tied")}
    assert "brcd" in tied and "brcd_nomask" in tied
    assert {s.verdict for s in column if s.kind == VS_BRCD and s.method == "brcd_nomask"} == {"level"}
    assert main(["compare-conclusions", str(path), str(path), "--check"]) == 0
    assert "**Yes: 4 of 4 columns agree**" in capsys.readouterr().out


@pytest.mark.parametrize("name, columns", [("demo", 4), ("study", 16), ("study-first/study", 4),
                                                 ("study-first/today/study", 4), ("study-onednn/study", 16)])
def test_committed_report_bolds_the_findings_groups(name, columns):
    """The committed reports, as `make demo` and the studies wrote them: bold and findings agree
    (the cross-dataset study: 2 datasets x 2 students x 2 bit lengths x 2 paradigms)."""
    text = (REFERENCE / f"{name}.md").read_text()
    groups = findings_groups(text)
    assert len(groups) == columns and bold_groups(text) == groups


@pytest.mark.parametrize("config_path, table_name", [
    ("config/demo.yaml", "demo"),
    ("config/study.yaml", "study"),
    # the first study predates issue 27's per-method λ grids and issue 29's axes: it ran the config kept beside it
    ("reference/study-first/study.config.yaml", "study-first/study"),
    # the same grid rerun on today's code (issue 29: which differences the code made)
    ("reference/study-first/study.config.yaml", "study-first/today/study"),
    # the study with its students' products on oneDNN (issue 25), with the config it ran
    ("reference/study-onednn/study.config.yaml", "study-onednn/study"),
    # the two floating-point paths of reference/demo-machines.md, with the demo config they ran
    ("reference/demo-two-paths/demo.yaml", "demo-two-paths/avx2"),
    ("reference/demo-two-paths/demo.yaml", "demo-two-paths/aten-default")])
def test_committed_report_comes_from_the_committed_config(config_path, table_name):
    """Every row of the committed table carries the config hash its cell has under its config as
    committed: a report left over from an earlier version of the config (another lr, cap, head) fails."""
    import pandas as pd

    from brcd.cells import Cell
    from brcd.config import load_config

    config = load_config(REPO_ROOT / config_path)
    table = pd.read_parquet(REFERENCE / f"{table_name}.parquet")
    stale = []
    for row in table.itertuples():
        student = row.student if isinstance(row.student, str) else None
        cell = Cell(row.dataset, int(row.bits), row.hash, row.teacher, int(row.seed), student,
                    row.kd if student else None, row.variant if student else None)
        if cell.config_hash(config) != row.config_hash:
            stale.append(f"{cell.model} seed {cell.seed}")
    assert not stale, f"reference/{table_name}.parquet is not from {config_path} as committed: {stale[:5]}"


def test_the_first_studys_grid_on_todays_code_shares_the_studys_runs():
    """reference/study-first/today/ is the first study's config rerun on today's code, reusing the
    cross-dataset study's files wherever a cell's config hash is the same under both configs
    (docs/runs/study.md): those rows must carry the study's very numbers -- the teachers, `none`, `rkd`
    and BRCD's variants of seeds 0-2 -- and no baseline with another λ grid may share a hash. The first
    study's own table, from older code, fails this: all 118 of its shared rows differ."""
    import pandas as pd

    from brcd.report.statements import COLUMN_KEYS

    key = [*COLUMN_KEYS, "kd", "variant", "seed", "config_hash"]
    today = pd.read_parquet(REFERENCE / "study-first/today/study.parquet")
    study = pd.read_parquet(REFERENCE / "study.parquet")
    shared = today.merge(study, on=key, suffixes=("_today", "_study"))
    methods = {"teacher", "none", "rkd", "brcd", "brcd_nocluster", "brcd_nomask", "brcd_plain"}
    assert set(shared.kd.fillna("teacher")) == methods
    assert len(shared) == today.kd.fillna("teacher").isin(methods).sum()  # each of their rows has its twin
    for metric in ("map_at_k", "map_all", "precision_at_100", "train_val_map", "train_epochs_run"):
        pd.testing.assert_series_equal(shared[f"{metric}_today"], shared[f"{metric}_study"], check_names=False)


def test_the_study_on_onednn_differs_from_the_study_in_its_students_only():
    """reference/study-onednn/ is config/study.yaml with `train.student.matmul: onednn`, rerun on the
    cross-dataset study's banks and teachers (docs/runs/students-issue25.md): the teachers' rows are the
    study's, every student's cell has another config hash (the kernel is in it), and the config differs
    from the study's in that one key."""
    import pandas as pd

    from brcd.config import load_config
    from brcd.report.statements import COLUMN_KEYS

    study, onednn = load_config(REPO_ROOT / "config/study.yaml"), load_config(
        REFERENCE / "study-onednn/study.config.yaml")
    assert onednn["train"]["student"].pop("matmul") == "onednn" and onednn == study
    key = [*COLUMN_KEYS, "kd", "variant", "seed"]
    tables = [pd.read_parquet(REFERENCE / name) for name in ("study.parquet", "study-onednn/study.parquet")]
    shared = tables[0].merge(tables[1], on=key, suffixes=("_blas", "_onednn"))
    assert len(shared) == len(tables[0]) == len(tables[1])
    teachers = shared.kd.isna()
    assert (shared.config_hash_blas == shared.config_hash_onednn).eq(teachers).all()
    for metric in ("map_at_k", "map_all", "precision_at_100", "train_val_map"):
        pd.testing.assert_series_equal(shared.loc[teachers, f"{metric}_blas"], shared.loc[teachers, f"{metric}_onednn"],
                                       check_names=False)


def test_lambda_grid_centre_and_edge():
    from brcd.lambdas import at_grid_edge, grid_centre

    assert grid_centre([300, 3000, 30000]) == 3000 and grid_centre([0.5, 2]) == 2.0
    assert grid_centre([30, 300, 3000, 30000]) == 3000  # sp: widened below its published β = 3,000
    assert at_grid_edge([0.1, 1, 10], 10) and at_grid_edge([0.1, 1, 10], 0.1) and not at_grid_edge([0.1, 1, 10], 1)
    assert not at_grid_edge([1.0], 1.0)  # a single λ is no choice


def test_a_users_runs_cannot_change_the_reference_reports():
    """Issue 28: `make demo` then `make test` failed on another machine, and left the committed reports
    modified: the demo rewrote reports/demo.* with that machine's numbers, and a test rebuilt the committed
    comparison from them. The reports the tests check now live in reference/, which no output template of
    the workflow names, and the runs' own reports/ is ignored by git like results/."""
    from brcd.layout import WRITTEN_BY

    assert not [template for template in WRITTEN_BY if template.startswith(f"{REFERENCE.name}/")]
    for name in ("demo.md", "demo.parquet", "demo.findings.parquet", "demo-machines.md", "study.md", "study.parquet",
                 "study.findings.parquet", "study-vs-first.md", "study-first/study.findings.parquet",
                 "study-first/today/study.md", "study-first/today/study.parquet",
                 "study-first/today/study.findings.parquet", "study-first/first-vs-today.md", "study-vs-first-today.md",
                 "study-onednn/study.md", "study-onednn/study.parquet", "study-onednn/study.findings.parquet",
                 "study-onednn/blas-vs-onednn.md",
                 "demo-two-paths/aten-default.parquet",
                 "demo-two-paths/aten-default.findings.parquet"):
        assert (REFERENCE / name).is_file(), name
    ignored = (REPO_ROOT / ".gitignore").read_text().split()
    assert {"/results/", "/reports/*"} <= set(ignored)  # all of reports/ but its README
