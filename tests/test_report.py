"""``brcd report``: tables from hand-made metrics files, bold best, missing and stale inputs, figures."""
from __future__ import annotations

import json
import math
import re

import pytest
import yaml

from brcd import workflow
from brcd.cli import main
from brcd.config import load_config
from brcd.errors import DataError, MetadataMismatchError
from brcd.report import Summary, best_indices, load_results, write_report

TOPK = 10
BITS = (16, 32)
CONFIG = {
    "name": "tiny",
    "seeds": [0, 1],
    "mode": "bank",
    "views": 4,
    "datasets": {"synthetic": {"train_per_class": 10, "query": 20, "val": 20, "database": 100, "topk": TOPK}},
    "backbones": {"tt": {"model": "timm:test_efficientnet", "input_size": 32},
                  "ss": {"model": "timm:test_resnet", "input_size": 24}},
    "teachers": ["tt"],
    "students": ["ss"],
    "hash": ["cibhash"],
    "bits": list(BITS),
    "kd": ["none", "kd", "brcd", "brcd_nomask"],
    "paradigms": ["sym", "asym"],
}
#: mAP@K of seed 0; seed 1 adds SPREAD (so mean = base + spread / 2, std = spread / sqrt 2)
BASE = {"teacher": 0.70, "none": 0.40, "kd": 0.50, "brcd": 0.60, "brcd_nomask": 0.55}
SPREAD = {"brcd": 0.04}


def map_value(kd: str, bits: int, paradigm: str, seed: int) -> float:
    if (kd, bits, paradigm) == ("kd", 32, "asym"):  # kd wins this one column
        return 0.90 + 0.02 * seed
    value = BASE[kd] + (0.05 if bits == 32 else 0.0) + (0.01 if paradigm == "asym" else 0.0)
    return value + SPREAD.get(kd, 0.02) * seed


def metrics_record(cell, paradigm: str) -> dict:
    kd = cell.kd or "teacher"
    value = map_value(kd, cell.bits, paradigm, cell.seed)
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
    return {**cell.parameters(), "student": cell.student, "kd": cell.kd, "paradigm": paradigm, "topk": TOPK,
            "tie_policy": "hamming distance ascending, ties by database order",
            "config_hash": f"h{cell.bits}{cell.seed}{cell.kd or 't'}", "metrics": metrics,
            "counts": {"queries": 20, "database": 100}}


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
        write(root / workflow.metrics_path(cell, "teacher"), metrics_record(cell, "teacher"))
    for cell in workflow.student_cells(CONFIG):
        for paradigm in CONFIG["paradigms"]:
            write(root / workflow.metrics_path(cell, paradigm), metrics_record(cell, paradigm))
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


def test_main_table_mean_std_and_bold_best_student(report):
    header, rows = table_after(report[3], "### Main results: mAP@10")
    assert header == ["method", "16 bits sym", "16 bits asym", "32 bits sym", "32 bits asym"]
    assert list(rows) == ["teacher (`tt`)", "student, no KD (`ss`)", "`kd`", "`brcd`"]  # ablation not here
    # teacher: its own paradigm, repeated under sym and asym, never bold
    assert rows["teacher (`tt`)"] == ["0.710 ± 0.014", "0.710 ± 0.014", "0.760 ± 0.014", "0.760 ± 0.014"]
    assert rows["student, no KD (`ss`)"] == ["0.410 ± 0.014", "0.420 ± 0.014", "0.460 ± 0.014", "0.470 ± 0.014"]
    assert rows["`brcd`"] == ["**0.620 ± 0.028**", "**0.630 ± 0.028**", "**0.670 ± 0.028**", "0.680 ± 0.028"]
    assert rows["`kd`"] == ["0.510 ± 0.014", "0.520 ± 0.014", "0.560 ± 0.014", "**0.910 ± 0.014**"]


def test_ablation_alignment_and_secondary_tables(report):
    text = report[3]
    _, ablation = table_after(text, "### Ablation: mAP@10")
    assert list(ablation) == ["`brcd`", "`brcd_nomask`"]
    assert ablation["`brcd_nomask`"][0] == "0.560 ± 0.014"
    assert ablation["`brcd`"][0] == "**0.620 ± 0.028**"

    _, isd = table_after(text, "ISD (")
    assert list(isd) == ["student, no KD (`ss`)", "`kd`", "`brcd`", "`brcd_nomask`"]
    assert isd["`brcd`"][0] == "**0.190 ± 0.014**"  # lower ISD is better: 0.5 - mAP / 2
    assert isd["`kd`"][3] == "**0.045 ± 0.007**"
    _, nra = table_after(text, "NRA@10 (")
    assert nra["`brcd`"][0] == "**0.310 ± 0.014**"

    header, sym = table_after(text, "**sym**")
    assert header == ["method", "bits", "mAP@10", "mAP@10 tie-aware", "mAP@all", "mAP@all tie-aware", "P@1", "P@10"]
    assert sym["`brcd`"] == ["16", "0.620", "0.610", "0.520", "0.510", "0.720", "0.670"]  # first row: 16 bits


def test_header_timing_and_hashes(report):
    text = report[3]
    assert "do not edit" in text and "`tiny`" in text
    assert "**seeds**: 2 (0, 1)" in text
    assert "K = 10" in text and "hamming distance ascending, ties by database order" in text
    _, encoder = table_after(text, "### Encoder timing")
    assert encoder["`ss`"][-1] == "4.00× / 5.00×"
    assert encoder["`ss`"][-3:-1] == ["10.00", "500 (batch 64)"]
    header, search = table_after(text, "## Search latency")
    assert "Method: exact Hamming top-K: test engine." in text
    assert header[2:] == ["16 bits: single query (ms)", "16 bits: batched (ms/query)",
                          "32 bits: single query (ms)", "32 bits: batched (ms/query)"]
    assert search["1,000"] == ["10", "0.250", "0.0125", "0.500", "0.0125"]
    assert "`student/cibhash/tt/ss/brcd`" in text and "`h161brcd`" in text
    assert "<details>" in text


def test_figures_are_linked_pngs(report):
    root, _, out, text = report
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == ["tiny/latency_vs_map_synthetic.png", "tiny/map_vs_bits_synthetic.png",
                             "tiny/pr_synthetic_16.png", "tiny/pr_synthetic_32.png"]
    for link in links:
        data = (out.parent / link).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


def test_same_inputs_give_the_same_report(report, tmp_path):
    root, config_path, out, text = report
    again = write_report(load_config(config_path, check_registries=False), tmp_path / "tiny.md", root)
    assert again.read_text() == text
    for figure in sorted((out.parent / "tiny").glob("*.png")):  # figures too, byte for byte
        assert (tmp_path / "tiny" / figure.name).read_bytes() == figure.read_bytes()


def test_missing_metrics_file_names_file_and_rule(tmp_path, capsys):
    make_results(tmp_path)
    cell = workflow.student_cells(CONFIG)[1]
    missing = workflow.metrics_path(cell, "asym")
    (tmp_path / missing).unlink()
    config = load_config(tmp_path / "tiny.yaml", check_registries=False)
    with pytest.raises(DataError, match=re.escape(missing)) as error:
        load_results(config, tmp_path)
    assert "rule `evaluate`" in str(error.value) and "snakemake" in str(error.value)
    code = main(["report", "--config", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "r.md"),
                 "--results-dir", str(tmp_path)])
    assert code == 2 and missing in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()


def test_missing_timing_file_names_its_rule(tmp_path):
    make_results(tmp_path)
    (tmp_path / "results/timing/search/32.json").unlink()
    with pytest.raises(DataError, match=r"results/timing/search/32.json  \(rule `time_search`\)"):
        load_results(load_config(tmp_path / "tiny.yaml", check_registries=False), tmp_path)


def test_misplaced_metrics_or_timing_file_is_rejected(tmp_path):
    make_results(tmp_path)
    teacher = workflow.teacher_cells(CONFIG)[0]
    path = tmp_path / workflow.metrics_path(teacher, "teacher")
    record = json.loads(path.read_text())
    record["seed"] = 7
    path.write_text(json.dumps(record))
    with pytest.raises(MetadataMismatchError, match="seed"):
        load_results(load_config(tmp_path / "tiny.yaml", check_registries=False), tmp_path)
    path.write_text(json.dumps({**record, "seed": 0}))
    write(tmp_path / "results/timing/encoder/synthetic/ss.json", encoder_record("tt", 40.0, 100.0))  # a copy
    with pytest.raises(MetadataMismatchError, match=r"backbone = 'tt'.*time_encoder"):
        load_results(load_config(tmp_path / "tiny.yaml", check_registries=False), tmp_path)


def test_summary_and_best():
    assert Summary.of([0.5]).text() == "0.500"
    assert Summary.of([0.1, 0.3]).std == pytest.approx(math.sqrt(0.02))
    assert Summary.of([None]) is None
    # equal displayed means are all best; lower-is-better picks the minimum
    assert best_indices([Summary.of([0.5001]), Summary.of([0.4999]), None]) == {0, 1}
    assert best_indices([Summary.of([0.2]), Summary.of([0.1])], higher_is_better=False) == {1}
