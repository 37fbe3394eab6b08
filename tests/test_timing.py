"""``brcd time-search`` and ``brcd time-encoder`` produce sane timing JSON."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from brcd.cli import main
from brcd.retrieval import TIE_POLICY
from brcd.timing import cpu_name

TINY_CONFIG = {
    "name": "timing-test",
    "datasets": {"synthetic": {"num_classes": 3, "train_size": 30, "test_size": 12, "image_size": 16,
                               "train_per_class": 2, "query": 4, "val": 4, "database": 30, "topk": 5}},
    "backbones": {"tt": {"model": "timm:test_efficientnet", "input_size": 32, "weights": "none", "head": "mlp",
                         "hidden": 64}},
    "teachers": ["tt"],
    "students": ["tt"],
    "bits": [16],
    "threads": 1,
    "device": "cpu",
    "timing": {"batch_sizes": [1, 3], "repeats": 2, "warmup": 1, "database_sizes": [40], "queries": 3, "topk": [2]},
}


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "timing.yaml"
    path.write_text(yaml.safe_dump(TINY_CONFIG))
    return path


def test_time_search_json(tmp_path):
    out = tmp_path / "search" / "64.json"
    argv = ["time-search", "--bits", "64", "--database-sizes", "50", "300", "--topk", "5", "100", "--queries", "4",
            "--repeats", "2", "--warmup", "1", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["bits"] == 64 and result["tie_policy"] == TIE_POLICY and result["threads"] >= 1
    assert result["engine"] == "counting" and "counting" in result["method"]
    # K = 100 does not fit a database of 50 and is skipped
    assert [(r["database_size"], r["topk"]) for r in result["results"]] == [(50, 5), (300, 5), (300, 100)]
    for row in result["results"]:
        assert row["queries"] == 4 and row["batch"]["repeats"] == 2 and row["single"]["calls"] == 4
        assert 0 < row["batch"]["per_query_ms_min"] <= row["batch"]["per_query_ms_median"] < 1e4
        assert 0 < row["single"]["per_query_ms_median"] <= row["single"]["per_query_ms_p90"] < 1e4


def test_time_search_times_the_faiss_engine_too(tmp_path):
    out = tmp_path / "64.json"
    argv = ["time-search", "--bits", "64", "--database-sizes", "200", "--topk", "10", "--queries", "3",
            "--repeats", "1", "--warmup", "0", "--engine", "faiss", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["engine"] == "faiss" and "hammings_knn_mc" in result["method"]
    assert result["results"][0]["batch"]["per_query_ms_median"] > 0


def test_time_search_reads_config_timing_section(tmp_path, config_path):
    out = tmp_path / "16.json"
    assert main(["time-search", "--bits", "16", "--config", str(config_path), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(r["database_size"], r["topk"], r["queries"]) for r in result["results"]] == [(40, 2, 3)]
    assert result["repeats"] == 2 and result["warmup"] == 1


def test_time_search_rejects_bad_bits(tmp_path, capsys):
    assert main(["time-search", "--bits", "12", "--out", str(tmp_path / "x.json")]) == 2
    assert "multiple of 8" in capsys.readouterr().err


def test_time_encoder_json(tmp_path, config_path, torch_threads):
    out = tmp_path / "encoder" / "synthetic" / "tt.json"
    argv = ["time-encoder", "--config", str(config_path), "--dataset", "synthetic", "--backbone", "tt",
            "--bits", "16", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert (result["dataset"], result["backbone"], result["bits"], result["device"]) == ("synthetic", "tt", 16, "cpu")
    assert result["threads"] == 1 and result["checkpoint"] is None
    assert result["feature_dim"] > 0 and result["input_size"] == 32
    assert [row["batch_size"] for row in result["batches"]] == [1, 3]
    for row in result["batches"]:
        assert row["repeats"] == 2 and row["seconds_min"] <= row["seconds_median"]
        assert row["per_image_ms"] == pytest.approx(row["seconds_median"] / row["batch_size"] * 1e3)
    assert result["latency_ms"] == result["batches"][0]["per_image_ms"] > 0
    assert result["throughput_images_per_second"] == max(r["images_per_second"] for r in result["batches"])
    # The CPU and PyTorch's kernel set for it: timings and last bits differ between these.
    assert result["device_name"] == result["machine"]["cpu"] == cpu_name()
    assert f"{torch.backends.cpu.get_cpu_capability()} kernels" in result["device_name"]


def test_cpu_name_shows_the_kernel_set_ATEN_CPU_CAPABILITY_selects():
    """ATEN_CPU_CAPABILITY=default (kernels for CPUs without AVX2) takes another floating-point path
    on the same CPU: the timing files must say which one ran."""
    name = subprocess.run([sys.executable, "-c", "from brcd.timing import cpu_name; print(cpu_name())"],
                          env={**os.environ, "ATEN_CPU_CAPABILITY": "default"}, capture_output=True, text=True,
                          check=True).stdout.strip()
    assert name.endswith(", DEFAULT kernels)"), name


def test_time_encoder_with_checkpoint(tmp_path, config_path, torch_threads):
    from brcd.checkpoint import head_spec, save_checkpoint
    from brcd.models import create_backbone, create_head

    options = TINY_CONFIG["backbones"]["tt"]
    dim = create_backbone(options, "tt").feature_dim
    spec = head_spec(options, 16, dim)
    head = create_head(spec["kind"], spec["in_dim"], spec["bits"], hidden=spec["hidden"])
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, spec, {"teacher": head.state_dict()}, {"teacher": {"epoch": 1, "map": 0.5}},
                    {"model": "teacher/cibhash/tt"})
    out = tmp_path / "tt.json"
    base = ["time-encoder", "--config", str(config_path), "--dataset", "synthetic", "--backbone", "tt",
            "--checkpoint", str(checkpoint), "--batch-sizes", "2", "--repeats", "1", "--warmup", "0"]
    assert main([*base, "--bits", "16", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["checkpoint_head"] == "teacher" and result["latency_ms"] is None
    assert [row["batch_size"] for row in result["batches"]] == [2]
    assert main([*base, "--bits", "32", "--out", str(tmp_path / "bad.json")]) == 2
