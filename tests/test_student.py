"""Student training: distillation wiring, the two selection heads, bad input."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml

from brcd.cells import Cell
from brcd.checkpoint import load_checkpoint
from brcd.cluster import load_clusters, write_clusters
from brcd.codes import read_codes
from brcd.config import REPO_ROOT, validate_schema
from tests.conftest import build_teacher_grid
from brcd.distill.train_student import train_student
from brcd.encode import encode_model
from brcd.errors import ConfigError, DataError, MetadataMismatchError

TEACHER = Cell("synthetic", 16, "cibhash", "tteacher", 0)


def student(kd: str, seed: int = 0) -> Cell:
    return Cell("synthetic", 16, "cibhash", "tteacher", seed, "tstudent", kd)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """Split, both banks, a trained teacher, its codes and clusters of the tiny config."""
    root = tmp_path_factory.mktemp("student")
    config = validate_schema(yaml.safe_load((REPO_ROOT / "config" / "test.yaml").read_text()))
    for role in ("teacher", "student"):
        config["train"][role].update(epochs=6, min_epochs=6, eval_every=3)
    build_teacher_grid(root, config)
    return config, root


def _train(config, root, cell, out, **overrides):
    kwargs = dict(student_bank=str(root / "tstudent"), teacher_bank=str(root / "tteacher"),
                  clusters_path=str(root / "clusters.parquet"))
    kwargs.update(overrides)
    return train_student(config, cell, str(root / "split.parquet"), str(root / "teacher.pt"), str(out), None, **kwargs)


@pytest.mark.parametrize("kd", ["brcd", "sskd", "crd"])
def test_student_trains_and_keeps_two_heads(grid, tmp_path, kd):
    config, root = grid
    result = _train(config, root, student(kd), tmp_path / "model.pt")
    bundle = load_checkpoint(tmp_path / "model.pt")
    assert set(bundle["heads"]) == {"sym", "asym"}
    assert bundle["metadata"]["model"] == f"student/cibhash/tteacher/tstudent/{kd}/lambda1"  # default λ = 1
    assert bundle["metadata"]["lambda"] == {"sym": 1.0, "asym": 1.0}
    assert {"hash_loss", "kd_loss"} <= set(result["history"][0])
    assert np.isfinite([row["loss"] for row in result["history"]]).all()
    outputs = {selection: str(tmp_path / f"{selection}.parquet") for selection in ("sym", "asym")}
    encode_model(config, student(kd), str(root / "split.parquet"), str(tmp_path / "model.pt"), outputs,
                 bank=str(root / "tstudent"))
    for selection in ("sym", "asym"):
        meta = read_codes(tmp_path / f"{selection}.parquet").metadata
        assert meta["selection"] == selection and meta["val_map"] == bundle["best"][selection]["map"]


def test_codes_written_by_training_equal_brcd_encode(grid, tmp_path):
    """train_student's in-process code files are byte-for-byte what `brcd encode` writes from
    the saved checkpoint, and they carry how the head was trained."""
    config, root = grid
    cell = student("pkt")
    written = {selection: str(tmp_path / f"train_{selection}.parquet") for selection in ("sym", "asym")}
    result = _train(config, root, cell, tmp_path / "model.pt", codes=written)
    encoded = {selection: str(tmp_path / f"encode_{selection}.parquet") for selection in ("sym", "asym")}
    encode_model(config, cell, str(root / "split.parquet"), str(tmp_path / "model.pt"), encoded,
                 bank=str(root / "tstudent"))
    for selection in ("sym", "asym"):
        a, b = read_codes(written[selection]), read_codes(encoded[selection])
        np.testing.assert_array_equal(a.packed, b.packed)
        assert a.metadata == b.metadata
        training = a.metadata["training"]
        run = result["runs"][1.0]["run"]
        assert training["epoch_cap"] == 6 and training["epochs_run"] == run["epochs_run"]
        assert training["best_epoch"] == result["best"][selection]["epoch"]
        # 6 epochs, validation every 3, min_epochs 6: the run reaches its cap
        assert not training["stopped_early"] and training["last_validation"] == 6
        assert training["converged"] == (training["best_epoch"] < 6)


def test_candidates_in_one_process_write_what_they_write_alone(grid, tmp_path):
    """`brcd train-student --variant lambda0.5 lambda2` (rules train_candidates*): one loading of
    banks and teacher, and every file byte-for-byte that of the run trained alone."""
    from brcd.cli import main

    config, root = grid
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    variants = ["lambda0.5", "lambda2"]
    files = {v: {kind: tmp_path / "together" / v / name for kind, name in
                 (("out", "model.pt"), ("log", "history.tsv"), ("codes", "codes.parquet"),
                  ("codes-asym", "codes_asym.parquet"))} for v in variants}
    argv = ["train-student", "--config", str(config_path), "--dataset", "synthetic", "--bits", "16",
            "--teacher", "tteacher", "--student", "tstudent", "--kd", "brcd", "--seed", "0",
            "--split", str(root / "split.parquet"), "--teacher-checkpoint", str(root / "teacher.pt"),
            "--student-bank", str(root / "tstudent"), "--teacher-bank", str(root / "tteacher"),
            "--clusters", str(root / "clusters.parquet"), "--variant", *variants]
    for kind in ("out", "log", "codes", "codes-asym"):
        argv += [f"--{kind}", *(str(files[v][kind]) for v in variants)]
    assert main(argv) == 0
    alone = tmp_path / "alone"
    alone_codes = {"sym": str(alone / "codes.parquet"), "asym": str(alone / "codes_asym.parquet")}
    _train(config, root, replace(student("brcd"), variant="lambda2"), alone / "model.pt", codes=alone_codes)
    assert files["lambda2"]["out"].read_bytes() == (alone / "model.pt").read_bytes()
    for kind, name in (("codes", "codes.parquet"), ("codes-asym", "codes_asym.parquet")):
        assert files["lambda2"][kind].read_bytes() == (alone / name).read_bytes()
    assert load_checkpoint(files["lambda0.5"]["out"])["metadata"]["lambda"] == {"sym": 0.5, "asym": 0.5}
    # one output list per variant, or a clear error before anything is loaded
    bad = argv[:argv.index("--out") + 2] + argv[argv.index("--log"):]
    assert main(bad) == 2


def test_seeds_in_one_process_write_what_they_write_alone(grid, tmp_path):
    """`brcd train-student --variant selected --seed 1 2` (rule train_student): one loading of the split,
    the student's bank and the validation data, each seed's teacher files once, and every file byte for
    byte that of the seed's run alone."""
    from brcd.cli import main
    from brcd.train import train_teacher
    from brcd.tuning import select_lambda, write_selection

    config, root = grid
    config = {**config, "seeds": [0, 1, 2], "lambda": [0.5, 2.0]}
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    split, seeds = str(root / "split.parquet"), [1, 2]
    teachers = {seed: {"checkpoint": str(tmp_path / f"teacher{seed}.pt"), "codes": str(tmp_path / f"teacher{seed}.parquet"),
                       "logits": str(tmp_path / f"teacher{seed}.npz")} for seed in seeds}
    for seed, files in teachers.items():  # every seed has its own teacher
        teacher = replace(TEACHER, seed=seed)
        train_teacher(config, teacher, split, files["checkpoint"], None, str(root / "tteacher"))
        encode_model(config, teacher, split, files["checkpoint"], {"teacher": files["codes"]},
                     bank=str(root / "tteacher"), logits_path=files["logits"])
    keys = {"dataset": "synthetic", "bits": 16, "hash": "cibhash", "teacher": "tteacher", "student": "tstudent",
            "kd": "kd"}
    write_selection(tmp_path / "selection.json", keys, [0.5, 2.0], 0,
                    select_lambda({0.5: {"sym": 0.9, "asym": 0.1}, 2.0: {"sym": 0.1, "asym": 0.9}}))
    outputs = {seed: {kind: tmp_path / "together" / str(seed) / name for kind, name in
                      (("out", "model.pt"), ("codes", "codes.parquet"), ("codes-asym", "codes_asym.parquet"))}
               for seed in seeds}
    argv = ["train-student", "--config", str(config_path), "--dataset", "synthetic", "--bits", "16",
            "--teacher", "tteacher", "--student", "tstudent", "--kd", "kd", "--variant", "selected",
            "--seed", "1", "2", "--split", split, "--selection", str(tmp_path / "selection.json"),
            "--student-bank", str(root / "tstudent")]
    for flag, name in (("--teacher-checkpoint", "checkpoint"), ("--teacher-codes", "codes"),
                       ("--teacher-logits", "logits")):
        argv += [flag, *(teachers[seed][name] for seed in seeds)]
    for kind in ("out", "codes", "codes-asym"):
        argv += [f"--{kind}", *(str(outputs[seed][kind]) for seed in seeds)]
    assert main(argv) == 0
    for seed in seeds:
        alone = tmp_path / "alone" / str(seed)
        codes = {"sym": str(alone / "codes.parquet"), "asym": str(alone / "codes_asym.parquet")}
        train_student(config, replace(student("kd", seed), variant="selected"), split, teachers[seed]["checkpoint"],
                      str(alone / "model.pt"), student_bank=str(root / "tstudent"), teacher_bank=str(root / "tteacher"),
                      codes=codes, selection_path=str(tmp_path / "selection.json"))
        for kind, name in (("out", "model.pt"), ("codes", "codes.parquet"), ("codes-asym", "codes_asym.parquet")):
            assert outputs[seed][kind].read_bytes() == (alone / name).read_bytes(), (seed, name)
    assert load_checkpoint(outputs[2]["out"])["metadata"]["seed"] == 2
    # one teacher file per seed, or a clear error before anything is loaded
    short = argv[:argv.index("--teacher-codes") + 2] + argv[argv.index("--teacher-logits"):]
    assert main(short) == 2


def test_convergence_flag():
    from brcd.train import converged

    capped = {"epochs_run": 12, "epoch_cap": 12, "last_validation": 12, "stopped_early": False}
    assert not converged(capped, best_epoch=12)  # cut off while still improving
    assert converged(capped, best_epoch=8)  # peaked before the cap
    assert converged({**capped, "epochs_run": 8, "stopped_early": True}, best_epoch=4)


def test_cached_teacher_logits_equal_fresh_ones(grid):
    from brcd.checkpoint import load_head
    from brcd.data.splits import Splits
    from brcd.distill.train_student import TeacherLogits
    from brcd.encode import read_teacher_logits, teacher_logits_metadata
    from brcd.features import create_source

    config, root = grid
    splits = Splits(root / "split.parquet")
    head = load_head(load_checkpoint(root / "teacher.pt"), "teacher")
    source = create_source(config, "synthetic", "tteacher", splits, "cpu", str(root / "tteacher"))
    cached = TeacherLogits.computed(head, source, len(splits.indices["train"]), rotations=True)
    pos, views = np.array([3, 0, 17]), np.array([1, 3, 0])
    with torch.no_grad():
        assert torch.allclose(cached.views(pos, views), head(source.views(pos, views)), atol=1e-5)
        fresh_rot = head(source.rotations(pos).flatten(0, 1)).view(3, 4, -1)
    assert torch.allclose(cached.rotations(pos), fresh_rot, atol=1e-5)
    # the teacher's encode job stores exactly these floats (teacher_logits.npz, once per teacher)
    expected = teacher_logits_metadata({**TEACHER.metadata(config), "split": splits.fingerprint}, source.meta)
    stored = TeacherLogits.stored(*read_teacher_logits(root / "teacher_logits.npz", expected))
    assert torch.equal(stored.views(pos, views), cached.views(pos, views))
    assert torch.equal(stored.rotations(pos), cached.rotations(pos))


@pytest.mark.parametrize("kd", ["sskd", "brcd"])
def test_stored_teacher_files_train_the_same_student(grid, tmp_path, kd):
    """A student job reading the teacher's codes and stored logits (the workflow's way: no teacher bank)
    writes byte for byte the files of one that computes them from the teacher's bank."""
    config, root = grid
    paths = {name: {selection: str(tmp_path / name / f"{selection}.parquet") for selection in ("sym", "asym")}
             for name in ("stored", "computed")}
    _train(config, root, student(kd), tmp_path / "stored" / "model.pt", codes=paths["stored"], teacher_bank=None,
           teacher_codes=str(root / "teacher.parquet"), teacher_logits=str(root / "teacher_logits.npz"))
    _train(config, root, student(kd), tmp_path / "computed" / "model.pt", codes=paths["computed"])
    for name in ("model.pt", "sym.parquet", "asym.parquet"):
        assert (tmp_path / "stored" / name).read_bytes() == (tmp_path / "computed" / name).read_bytes(), name


def test_teacher_files_of_another_cell_are_refused(grid, tmp_path):
    """Logits of another teacher seed, or codes of another split, stop the job before training."""
    import shutil

    from brcd.encode import LOGIT_ARRAYS

    config, root = grid
    other = dict(np.load(root / "teacher_logits.npz"))
    meta = __import__("json").loads(other["meta"].tobytes())
    other["meta"] = np.frombuffer(__import__("json").dumps({**meta, "seed": 1}).encode(), dtype=np.uint8)
    np.savez(tmp_path / "other.npz", **{name: other[name] for name in LOGIT_ARRAYS})
    with pytest.raises(MetadataMismatchError, match="teacher-logits file .*seed: file has 1, expected 0"):
        _train(config, root, student("kd"), tmp_path / "model.pt", teacher_bank=None,
               teacher_codes=str(root / "teacher.parquet"), teacher_logits=str(tmp_path / "other.npz"))
    shutil.copy(root / "teacher_logits.npz", tmp_path / "broken.npz")
    (tmp_path / "broken.npz").write_bytes((tmp_path / "broken.npz").read_bytes()[:100])
    with pytest.raises(DataError, match="teacher-logits file .*broken.npz"):
        _train(config, root, student("kd"), tmp_path / "model.pt", teacher_bank=None,
               teacher_codes=str(root / "teacher.parquet"), teacher_logits=str(tmp_path / "broken.npz"))
    assert not (tmp_path / "model.pt").exists()


def test_evaluate_refuses_the_other_head(grid, tmp_path):
    from brcd.evaluate import evaluate_cell

    config, root = grid
    _train(config, root, student("none"), tmp_path / "model.pt")
    encode_model(config, student("none"), str(root / "split.parquet"), str(tmp_path / "model.pt"),
                 {"sym": str(tmp_path / "sym.parquet")}, bank=str(root / "tstudent"))
    cell = student("none").parameters()
    with pytest.raises(MetadataMismatchError, match="holds the head selected for 'sym'.*pass codes_asym.parquet"):
        evaluate_cell(str(root / "split.parquet"), str(root / "teacher.parquet"), "asym", 50, cell,
                      student_codes=str(tmp_path / "sym.parquet"))
    result = evaluate_cell(str(root / "split.parquet"), str(root / "teacher.parquet"), "sym", 50, cell,
                           student_codes=str(tmp_path / "sym.parquet"))
    assert 0 <= result["metrics"]["map@50"] <= 1


def test_student_needs_a_trained_teacher(grid, tmp_path):
    config, root = grid
    with pytest.raises(DataError, match="checkpoint .*missing.pt not found; train it first"):
        train_student(config, student("brcd"), str(root / "split.parquet"), str(root / "missing.pt"),
                      str(tmp_path / "m.pt"), None, str(root / "tstudent"), str(root / "tteacher"),
                      str(root / "clusters.parquet"))


def test_teacher_of_another_cell_is_rejected(grid, tmp_path):
    config, root = grid
    with pytest.raises(MetadataMismatchError, match="seed: file has 0, expected 1"):
        _train(config, root, student("none", seed=1), tmp_path / "m.pt")


def test_unknown_kd_method(grid, tmp_path):
    config, root = grid
    with pytest.raises(ConfigError, match="unknown distillation method 'telepathy'.*allowed values: brcd"):
        _train(config, root, student("telepathy"), tmp_path / "m.pt")


def test_brcd_with_clusters_of_another_teacher_or_bits(grid, tmp_path):
    config, root = grid
    loaded = load_clusters(root / "clusters.parquet")
    loaded.metadata.update({"teacher": "teacher/cibhash/other"})
    write_clusters(tmp_path / "other.parquet", loaded)
    with pytest.raises(MetadataMismatchError, match="teacher: file has 'teacher/cibhash/other'"):
        _train(config, root, student("brcd"), tmp_path / "m.pt", clusters_path=str(tmp_path / "other.parquet"))
    loaded.metadata.update({"teacher": TEACHER.model, "bits": 32})
    write_clusters(tmp_path / "bits.parquet", loaded)
    with pytest.raises(MetadataMismatchError, match="bits: file has 32, expected 16"):
        _train(config, root, student("brcd"), tmp_path / "m.pt", clusters_path=str(tmp_path / "bits.parquet"))


def test_brcd_without_clusters(grid, tmp_path):
    config, root = grid
    with pytest.raises(ConfigError, match="'brcd' needs the teacher's clusters: run the `cluster` rule"):
        _train(config, root, student("brcd"), tmp_path / "m.pt", clusters_path=None)


def test_end_of_training_gradient_ratio_is_recorded_and_deterministic(grid, tmp_path):
    """Issue 27: each λ run records ‖∇L_hash‖, ‖∇L_kd‖ and λ·‖∇L_kd‖/‖∇L_hash‖ on a fixed batch at the end
    of training (history's last row, the checkpoint's run record, the code files' training record)."""
    config, root = grid
    cell = replace(student("sp"), variant="lambda3")
    written = {selection: str(tmp_path / f"{selection}.parquet") for selection in ("sym", "asym")}
    result = _train(config, root, cell, tmp_path / "model.pt", codes=written)
    run = result["runs"][3.0]["run"]
    assert run["grad_norm_hash"] > 0 and run["grad_norm_kd"] > 0
    assert run["kd_grad_ratio"] == pytest.approx(3.0 * run["grad_norm_kd"] / run["grad_norm_hash"])
    assert result["history"][-1]["kd_grad_ratio"] == run["kd_grad_ratio"]
    assert read_codes(written["sym"]).metadata["training"]["kd_grad_ratio"] == run["kd_grad_ratio"]
    again = _train(config, root, cell, tmp_path / "again.pt")
    assert again["runs"][3.0]["run"] == run  # measured on a fixed batch: the same run, the same numbers
    assert again["history"] == result["history"]
    none = _train(config, root, replace(student("none"), variant="lambda0"), tmp_path / "none.pt")
    assert "kd_grad_ratio" not in none["runs"][0.0]["run"]  # no KD term, nothing to measure
