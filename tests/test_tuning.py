"""λ per method chosen on validation (brcd.tuning): grids, the selection, no query leak, config errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from brcd.cells import Cell
from brcd.cli import main
from brcd.checks import load_checked_config
from brcd.config import REPO_ROOT, load_config, validate_schema
from brcd.data.splits import Splits
from brcd.distill.train_student import train_student
from brcd.errors import ConfigError
from brcd.lambdas import candidate_lambda, format_lambda, lambda_grid, variant_of, variants
from brcd.tuning import select_lambda
from tests.conftest import build_teacher_grid, rewrite_split_labels

TEACHER = Cell("synthetic", 16, "cibhash", "tteacher", 0)
GRID = [0.5, 2.0]


def test_lambda_grids():
    assert lambda_grid({"lambda": 1.0}, "rkd") == [1.0]
    assert lambda_grid({"lambda": [0.3, 1, 3]}, "crd") == [0.3, 1.0, 3.0]
    per_method = {"lambda": {"default": [0.3, 1, 3], "brcd": [1, 2]}}
    assert lambda_grid(per_method, "brcd") == [1.0, 2.0] and lambda_grid(per_method, "kd") == [0.3, 1.0, 3.0]
    assert lambda_grid(per_method, "none") == [0.0]  # no L_kd to weight
    assert lambda_grid({}, "kd") == [1.0]
    assert [format_lambda(x) for x in (0.3, 1.0, 10.0, 1e-5)] == ["0.3", "1", "10", "1e-05"]
    assert candidate_lambda(variant_of(0.3)) == 0.3 and candidate_lambda("selected") is None
    config = {"seeds": [4, 5], "lambda": [0.5, 2]}
    assert variants(config, "kd", 4) == ["lambda0.5", "lambda2"] and variants(config, "kd", 5) == ["selected"]


def test_selection_picks_the_best_validation_per_paradigm_first_on_ties():
    scores = {0.3: {"sym": 0.50, "asym": 0.70}, 1.0: {"sym": 0.60, "asym": 0.70}, 3.0: {"sym": 0.55, "asym": 0.60}}
    chosen = select_lambda(scores)
    assert chosen["sym"]["lambda"] == 1.0 and chosen["asym"]["lambda"] == 0.3  # tie 0.3/1 -> first of the grid
    assert chosen["sym"]["candidates"] == {"0.3": 0.50, "1": 0.60, "3": 0.55}


def _config_with(tmp_path, **changes):
    config = yaml.safe_load((REPO_ROOT / "config" / "test.yaml").read_text())
    config.update(changes)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("changes,expected", [
    ({"kd_settings": {"crd": {"negativs": 4096}}},
     r"`kd_settings.crd` has unknown setting `negativs` \(did you mean `negatives`\?\); accepted settings: .*negatives"),
    ({"kd_settings": {"crdd": {}}}, r"kd_settings.crdd.*no distillation method 'crdd'; allowed: brcd"),
    ({"lambda": {"default": [1], "rkdd": [1]}}, r"`lambda` names 'rkdd'.*allowed keys: default, none, brcd"),
    ({"lambda": {"default": 1, "none": 1}}, r"lambda.none.*no L_kd"),
    ({"lambda": {"brcdd": [1]}}, r"`lambda` gives no `default` and no entry for brcd"),
    ({"lambda": [0.1234567, 1]}, r"λ 0.1234567 needs more than 6 significant digits"),
    # issue 28: each λ failure says the allowed form, not "is not valid under any of the given schemas"
    ({"lambda": [1, 1.0]}, r"key `lambda`: \[1, 1.0\] has non-unique elements; allowed: a non-empty list of distinct "
                           r"values, each a finite number >= 0"),
    ({"lambda": -1}, r"key `lambda`: -1 is less than the minimum of 0; allowed: a finite number >= 0"),
    ({"lambda": "abc"}, r"key `lambda`: 'abc' is not a finite number >= 0, or a non-empty list .* \(e.g. 1.0 or "),
    ({"lambda": []}, r"key `lambda`: \[\] should be non-empty; allowed: a non-empty list of distinct values"),
    ({"lambda": float("inf")}, r"key `lambda`: inf is not a finite number >= 0, or "),
    ({"lambda": float("nan")}, r"key `lambda`: nan is not a finite number >= 0, or "),
    ({"lambda": {"default": [1, float("inf")]}}, r"key `lambda.default.1`: inf is not a finite number >= 0"),
    # issue 28: typed per-method settings fail at parse time, naming the key, the value and the range
    ({"kd_settings": {"crd": {"negatives": -5}}}, r"`kd_settings.crd.negatives` must be an integer in \[1, 100000\]; "
                                                  r"got -5"),
    ({"kd_settings": {"crd": {"negatives": "many"}}}, r"`kd_settings.crd.negatives` must be an integer .*; got 'many'"),
    ({"kd_settings": {"kd": {"temperature": 0}}}, r"`kd_settings.kd.temperature` must be a finite number > 0; got 0"),
    ({"kd_settings": {"kd": {"temperature": -1}}}, r"`kd_settings.kd.temperature` must be a finite number > 0; got -1"),
    ({"brcd": {"clusters": 4, "tau": 0}}, r"key `brcd.tau`: 0 is less than or equal to the minimum of 0"),
    ({"brcd": {"clusters": 4, "lambda": 1.0}}, r"`brcd.lambda` moved to the top-level `lambda`"),
])
def test_check_config_names_bad_tuning_settings(tmp_path, capsys, changes, expected):
    path = _config_with(tmp_path, **changes)
    with pytest.raises(ConfigError, match=expected):
        load_checked_config(path)
    assert main(["check-config", str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_kd_settings_reach_the_loss(tmp_path):
    from brcd.distill import create_distill_loss
    from brcd.distill.train_student import kd_settings

    config = load_config(_config_with(tmp_path, kd_settings={"crd": {"negatives": 7}}))
    loss = create_distill_loss("crd", 16, 100, kd_settings(config))
    assert loss.options["negatives"] == 7


# --------------------------------------------------------------------------- selection sees no query labels


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("tuning")
    config = validate_schema(yaml.safe_load((REPO_ROOT / "config" / "test.yaml").read_text()))
    config["lambda"] = GRID
    for role in ("teacher", "student"):
        config["train"][role].update(epochs=4, min_epochs=4, eval_every=2)
    build_teacher_grid(root, config)
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return config, config_path, root


def relabel(source, target, split: str, labels_of) -> None:
    """A copy of a split file whose ``split`` rows get other labels (membership unchanged)."""
    def change(index, splits, labels):
        labels = labels.copy()
        rows = np.flatnonzero(splits == split)
        labels[rows] = labels_of(labels[rows])
        return labels

    rewrite_split_labels(source, target, change)


SELECT = ["select", "--dataset", "synthetic", "--bits", "16", "--hash", "cibhash", "--teacher", "tteacher",
          "--student", "tstudent", "--kd", "pkt", "--seed", "0"]


def select_with(config, config_path, root, split_path, out_dir) -> dict:
    """Train every λ candidate of `pkt` on ``split_path`` and run `brcd select` on their code files (the
    validation mAP of each head is in its code file's metadata: the same as in its checkpoint)."""
    from brcd.checkpoint import load_checkpoint

    out_dir.mkdir()
    candidates, best = [], {}
    for lam in GRID:
        cell = Cell("synthetic", 16, "cibhash", "tteacher", 0, "tstudent", "pkt", variant_of(lam))
        model, codes = out_dir / f"{format_lambda(lam)}.pt", candidate_codes(out_dir, lam)
        train_student(config, cell, str(split_path), str(root / "teacher.pt"), str(model), codes=codes,
                      student_bank=str(root / "tstudent"), teacher_bank=str(root / "tteacher"))
        candidates += [f"{format_lambda(lam)}={path}" for path in codes.values()]
        best[format_lambda(lam)] = {head: entry["map"] for head, entry in load_checkpoint(model)["best"].items()}
    out = out_dir / "selection.json"
    assert main([*SELECT, "--config", str(config_path), "--candidates", *candidates, "--out", str(out)]) == 0
    selection = json.loads(out.read_text())
    for head, entry in selection["paradigms"].items():
        assert entry["candidates"] == {lam: scores[head] for lam, scores in best.items()}
    return selection


def candidate_codes(folder, lam) -> dict[str, str]:
    """The code files of one candidate: head -> path."""
    return {head: str(folder / f"{format_lambda(lam)}.{head}.parquet") for head in ("sym", "asym")}


def test_shuffled_query_labels_leave_the_selection_unchanged(grid, tmp_path):
    config, config_path, root = grid
    original = select_with(config, config_path, root, root / "split.parquet", tmp_path / "original")
    shuffled_split = tmp_path / "shuffled_queries.parquet"
    relabel(root / "split.parquet", shuffled_split, "query", lambda labels: np.random.default_rng(1).permutation(labels))
    assert Splits(shuffled_split).fingerprint == Splits(root / "split.parquet").fingerprint
    assert not np.array_equal(Splits(shuffled_split).labels(Splits(shuffled_split).indices["query"]),
                              Splits(root / "split.parquet").labels(Splits(root / "split.parquet").indices["query"]))
    shuffled = select_with(config, config_path, root, shuffled_split, tmp_path / "shuffled")
    assert shuffled == original  # same λ, same validation score of every candidate
    assert set(original["paradigms"]) == {"sym", "asym"} and original["grid"] == GRID
    # the control: the scores that drive the selection do react to validation labels
    val_split = tmp_path / "shuffled_val.parquet"
    relabel(root / "split.parquet", val_split, "val", lambda labels: np.roll(labels, 1, axis=1))
    changed = select_with(config, config_path, root, val_split, tmp_path / "val")
    assert changed["paradigms"]["sym"]["candidates"] != original["paradigms"]["sym"]["candidates"]


def test_select_reads_code_files_without_torch(grid, tmp_path, capsys):
    """`brcd select` reads each head's validation mAP from its code file's metadata: its process never
    imports torch (about 2 s of its start-up), and code files that are not one per head of each λ of the
    config's grid are refused."""
    import subprocess
    import sys

    config, config_path, root = grid
    selection = select_with(config, config_path, root, root / "split.parquet", tmp_path / "run")
    files = {lam: candidate_codes(tmp_path / "run", lam) for lam in GRID}
    candidates = [f"{format_lambda(lam)}={path}" for lam, codes in files.items() for path in codes.values()]
    out = tmp_path / "again.json"
    script = ("import sys; from brcd.cli import main; code = main(sys.argv[1:]); "
              "assert 'torch' not in sys.modules, 'brcd select imported torch'; sys.exit(code)")
    subprocess.run([sys.executable, "-c", script, *SELECT, "--config", str(config_path), "--candidates",
                    *candidates, "--out", str(out)], check=True, capture_output=True, cwd=REPO_ROOT)
    assert json.loads(out.read_text()) == selection
    sym_only = [f"{format_lambda(lam)}={codes['sym']}" for lam, codes in files.items()]
    twice = [*sym_only, f"0.5={files[0.5]['sym']}", f"2={files[2.0]['asym']}"]
    other = [f"{format_lambda(lam)}={codes[head]}" for lam, codes in files.items() for head in codes if lam != 2.0]
    for given, message in [(sym_only, "no code file of the head selected for asym of λ = 0.5"),
                           (twice, "holds the head selected for 'sym', like another file of this λ"),
                           ([*other, f"2={files[0.5]['asym']}"], "lambda: file has 0.5, expected 2.0"),
                           (other, "--candidates gives λ [0.5] but the config's grid for 'pkt' is [0.5, 2.0]")]:
        assert main([*SELECT, "--config", str(config_path), "--candidates", *given, "--out", str(out)]) == 2
        assert message in capsys.readouterr().err, given


def test_selected_run_trains_each_chosen_lambda(grid, tmp_path):
    """A `selected` run takes sym's head from the sym λ's training and asym's from the asym λ's,
    and equals the candidate of that λ trained alone (same seed, same draws)."""
    from brcd.checkpoint import load_checkpoint
    from brcd.tuning import write_selection

    config, _, root = grid
    split = str(root / "split.parquet")
    keys = {"dataset": "synthetic", "bits": 16, "hash": "cibhash", "teacher": "tteacher", "student": "tstudent",
            "kd": "pkt"}
    chosen = select_lambda({0.5: {"sym": 0.9, "asym": 0.1}, 2.0: {"sym": 0.1, "asym": 0.9}})
    write_selection(tmp_path / "selection.json", keys, GRID, 0, chosen)
    kwargs = dict(student_bank=str(root / "tstudent"), teacher_bank=str(root / "tteacher"))
    selected = Cell("synthetic", 16, "cibhash", "tteacher", 0, "tstudent", "pkt", "selected")
    result = train_student(config, selected, split, str(root / "teacher.pt"), str(tmp_path / "sel.pt"),
                           selection_path=str(tmp_path / "selection.json"), **kwargs)
    assert sorted(result["runs"]) == GRID
    bundle = load_checkpoint(tmp_path / "sel.pt")
    assert bundle["metadata"]["lambda"] == {"sym": 0.5, "asym": 2.0}
    alone = Cell("synthetic", 16, "cibhash", "tteacher", 0, "tstudent", "pkt", variant_of(2.0))
    train_student(config, alone, split, str(root / "teacher.pt"), str(tmp_path / "alone.pt"), **kwargs)
    for name, tensor in load_checkpoint(tmp_path / "alone.pt")["heads"]["asym"].items():
        assert torch.equal(bundle["heads"]["asym"][name], tensor)
    with pytest.raises(ConfigError, match="pass its .*selection.json with --selection"):
        train_student(config, selected, split, str(root / "teacher.pt"), str(tmp_path / "x.pt"), **kwargs)
    stale = {**config, "lambda": [1.0, 4.0]}
    with pytest.raises(ConfigError, match=r"chose among λ \[0.5, 2.0\] with seed 0, but the config's grid"):
        train_student(stale, selected, split, str(root / "teacher.pt"), str(tmp_path / "x.pt"),
                      selection_path=str(tmp_path / "selection.json"), **kwargs)
