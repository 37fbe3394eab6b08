"""``brcd evaluate``: paradigm wiring, the metrics JSON, and bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from brcd.cli import main
from brcd.codes import write_codes
from brcd.data import create_dataset
from brcd.data.splits import Splits, write_splits
from brcd.errors import ConfigError, DataError, MetadataMismatchError
from brcd.evaluate import evaluate_cell, parse_cell, parse_cells
from brcd.retrieval.paradigms import PARADIGMS
from brcd.retrieval import TIE_POLICY

BITS = 16
CELL = {"dataset": "synthetic", "bits": BITS, "hash": "cibhash", "teacher": "tt", "student": "ss", "kd": "brcd",
        "variant": "lambda1", "seed": 0}
TEACHER_CELL = {**CELL, "student": None, "kd": None, "variant": None}


@pytest.fixture(scope="module")
def split_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("split") / "split.parquet"
    dataset = create_dataset("synthetic", {"num_classes": 4, "train_size": 200, "test_size": 80, "image_size": 8})
    write_splits(path, dataset, {"train_per_class": 5, "query": 30, "val": 20, "database": 120}, seed=0)
    return path


def class_codes(labels: np.ndarray) -> np.ndarray:
    """A perfect hash: one distinct packed code per class."""
    prototypes = np.random.default_rng(123).integers(0, 256, size=(labels.shape[1], BITS // 8), dtype=np.uint8)
    return prototypes[labels.argmax(axis=1)]


def random_codes(n: int, seed: int, bits: int = BITS) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, bits // 8), dtype=np.uint8)


def metadata(role: str, splits: Splits, **changes) -> dict:
    cell = {**CELL, **changes}
    meta = {key: cell[key] for key in ("dataset", "bits", "hash", "teacher", "seed")}
    if role == "teacher":
        meta.update(model=f"teacher/{cell['hash']}/{cell['teacher']}", backbone=cell["teacher"], config_hash="t-hash")
    else:
        meta.update(student=cell["student"], kd=cell["kd"], variant=cell["variant"], backbone=cell["student"],
                    config_hash=cell.get("config_hash", "s-hash"),
                    model=f"student/{cell['hash']}/{cell['teacher']}/{cell['student']}/{cell['kd']}/{cell['variant']}")
    meta["split"] = splits.fingerprint
    return meta


def write_model_codes(path, splits: Splits, role: str, query_codes, database_codes, extra_rows=(), **changes):
    """Query and database rows (plus val rows, which evaluation must ignore)."""
    q, db, val = splits.indices["query"], splits.indices["database"], splits.indices["val"]
    index = np.concatenate([val, db, q, np.asarray(extra_rows, dtype=np.int64)])  # not in index order on purpose
    split = ["val"] * len(val) + ["database"] * len(db) + ["query"] * len(q) + ["query"] * len(extra_rows)
    bits = changes.get("bits", BITS)
    packed = np.concatenate([random_codes(len(val), 9, bits), database_codes, query_codes,
                             random_codes(len(extra_rows), 10, bits)])
    write_codes(path, index, split, packed, metadata(role, splits, **changes))
    return path


@pytest.fixture(scope="module")
def files(split_path, tmp_path_factory):
    """Teacher: perfect codes. Student A: the teacher's query codes, random database codes.
    Student B: random query codes, the teacher's database codes."""
    folder = tmp_path_factory.mktemp("codes")
    splits = Splits(split_path)
    q_perfect = class_codes(splits.labels(splits.indices["query"]))
    db_perfect = class_codes(splits.labels(splits.indices["database"]))
    n_q, n_db = len(q_perfect), len(db_perfect)
    return {
        "split": split_path,
        "teacher": write_model_codes(folder / "teacher.parquet", splits, "teacher", q_perfect, db_perfect),
        "student_a": write_model_codes(folder / "a.parquet", splits, "student", q_perfect, random_codes(n_db, 1)),
        "student_b": write_model_codes(folder / "b.parquet", splits, "student", random_codes(n_q, 2), db_perfect),
        "folder": folder,
        "splits": splits,
    }


def evaluate(files, paradigm, student=None, topk=10, cell=None, **kwargs):
    cell = cell or (CELL if PARADIGMS.get(paradigm).needs_student else TEACHER_CELL)
    return evaluate_cell(files["split"], files["teacher"], paradigm, topk, cell,
                         student_codes=files.get(student) if student else None, **kwargs)


# ----------------------------------------------------------------------------- paradigms


def test_paradigm_registry():
    assert PARADIGMS.names() == ["asym", "sym", "teacher"]
    asym = PARADIGMS.get("asym")
    assert (asym.query, asym.database) == ("student", "teacher")
    with pytest.raises(ConfigError, match="allowed values: asym, sym, teacher"):
        PARADIGMS.get("symmetric")


def test_asym_reads_student_queries_against_teacher_database(files):
    key = "map@10"
    assert evaluate(files, "teacher")["metrics"][key] == pytest.approx(1.0)
    a_asym = evaluate(files, "asym", "student_a")
    a_sym = evaluate(files, "sym", "student_a")
    b_asym = evaluate(files, "asym", "student_b")
    b_sym = evaluate(files, "sym", "student_b")
    # A's queries are the teacher's: against the teacher's database they are perfect
    assert a_asym["metrics"][key] == pytest.approx(1.0)
    assert a_asym["metrics"]["nra@10"] == pytest.approx(1.0)
    assert a_asym["metrics"]["isd"] == 0.0
    # ... and against A's own random database they are not
    assert a_sym["metrics"][key] < 0.8
    assert a_sym["metrics"]["nra@10"] < 0.5
    # B's random queries fail against either database
    assert b_asym["metrics"][key] < 0.8 and b_sym["metrics"][key] < 0.8
    assert b_asym["metrics"]["isd"] > 0.2
    assert (a_asym["query_side"], a_asym["database_side"]) == ("student", "teacher")


def test_metrics_json_layout(files, tmp_path):
    out = tmp_path / "metrics" / "asym.json"
    argv = ["evaluate", "--split", str(files["split"]), "--teacher-codes", str(files["teacher"]),
            "--student-codes", str(files["student_a"]), "--paradigm", "asym", "--topk", "10",
            "--cell", "dataset=synthetic", f"bits={BITS}", "hash=cibhash", "teacher=tt", "student=ss", "kd=brcd", "variant=lambda1",
            "seed=0", "--config-hash", "s-hash", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    for key, value in {**CELL, "paradigm": "asym", "topk": 10, "tie_policy": TIE_POLICY,
                       "config_hash": "s-hash"}.items():
        assert result[key] == value
    metrics = result["metrics"]
    assert set(metrics) == {"map@10", "map@10_tie_aware", "map_all", "map_all_tie_aware", "precision@k", "pr_curve",
                            "isd", "nra@10"}
    assert set(metrics["precision@k"]) == {"1", "10", "100"}  # 1000 > database of 120
    assert metrics["pr_curve"]["radius"] == list(range(BITS + 1))
    assert len(metrics["pr_curve"]["precision"]) == BITS + 1
    assert result["counts"] == {"queries": 30, "database": 120}
    assert result["codes"] == {"teacher": str(files["teacher"]), "student": str(files["student_a"])}
    assert "seconds" not in result and result["search_threads"] >= 1  # wall time goes to the log only
    assert result["training"] is None  # these hand-made code files carry no training record


def test_per_query_file_matches_the_metrics(files, tmp_path):
    """Per-query AP@K beside the JSON: its mean is the reported mAP, rows are the queries in
    dataset-index order, and a second identical run writes identical bytes."""
    from brcd.evaluate import read_per_query

    outputs = []
    for run in ("first", "second"):
        out = tmp_path / run / "metrics" / "sym.json"
        argv = ["evaluate", "--split", str(files["split"]), "--teacher-codes", str(files["teacher"]),
                "--student-codes", str(files["student_a"]), "--paradigm", "sym", "--topk", "10",
                "--cell", "dataset=synthetic", f"bits={BITS}", "hash=cibhash", "teacher=tt", "student=ss",
                "kd=brcd", "variant=lambda1", "seed=0", "--out", str(out)]
        assert main(argv) == 0
        outputs.append(out)
    result = json.loads(outputs[0].read_text())
    queries = outputs[0].with_name("sym.queries.parquet")
    assert result["per_query"] == str(queries)
    columns = read_per_query(queries, {**CELL, "paradigm": "sym", "topk": 10})
    assert set(columns) == {"index", "ap@10", "ap@10_tie_aware", "relevant@10"}
    np.testing.assert_array_equal(columns["index"], np.sort(files["splits"].indices["query"]))
    assert columns["ap@10"].mean() == pytest.approx(result["metrics"]["map@10"])
    assert columns["ap@10_tie_aware"].mean() == pytest.approx(result["metrics"]["map@10_tie_aware"])
    assert columns["relevant@10"].mean() / 10 == pytest.approx(result["metrics"]["precision@k"]["10"])
    assert ((columns["relevant@10"] == 0) <= (columns["ap@10"] == 0)).all()
    name = "sym.queries.parquet"
    assert (tmp_path / "first/metrics" / name).read_bytes() == (tmp_path / "second/metrics" / name).read_bytes()
    second = json.loads(outputs[1].read_text())
    assert {**second, "per_query": None} == {**result, "per_query": None}  # only the output folder differs
    with pytest.raises(MetadataMismatchError, match=r"per-query file .*another cell or config; replace it"):
        read_per_query(queries, {**CELL, "kd": "rkd"})


def test_one_call_evaluates_several_paradigms_as_separate_calls_would(files, tmp_path, capsys):
    """`--paradigm sym asym` (rule evaluate): one process reads the split and each code file once and
    writes, per paradigm, the bytes a call of its own writes; counts that do not match are refused."""
    out = tmp_path / "metrics"
    cell = ["--cell", *(f"{key}={value}" for key, value in CELL.items())]
    common = ["evaluate", "--split", str(files["split"]), "--teacher-codes", str(files["teacher"]), "--topk", "10",
              *cell, "--config-hash", "s-hash"]
    students = {"sym": str(files["student_a"]), "asym": str(files["student_b"])}
    names = [f"{p}{suffix}" for p in students for suffix in (".json", ".queries.parquet")]
    for paradigm, codes in students.items():
        argv = ["--paradigm", paradigm, "--student-codes", codes, "--out", str(out / f"{paradigm}.json")]
        assert main([*common, *argv]) == 0
    alone = {name: (out / name).read_bytes() for name in names}
    for name in names:
        (out / name).unlink()
    assert main([*common, "--paradigm", "asym", "sym", "--student-codes", students["asym"], students["sym"],
                 "--out", str(out / "asym.json"), str(out / "sym.json"),
                 "--out-queries", str(out / "asym.queries.parquet"), str(out / "sym.queries.parquet")]) == 0
    assert {name: (out / name).read_bytes() for name in names} == alone
    assert json.loads((out / "asym.json").read_text())["codes"]["student"] == students["asym"]

    two = ["--paradigm", "sym", "asym", "--student-codes", students["sym"], students["asym"]]
    fresh = tmp_path / "refused"
    for argv, message in [
        ([*two, "--out", str(fresh / "sym.json")], "--out: 1 given for 2 paradigms (sym asym)"),
        ([*two, "--out", str(fresh / "s.json"), str(fresh / "a.json"), "--out-queries", str(fresh / "s.parquet")],
         "--out-queries: 1 given for 2 paradigms"),
        (["--paradigm", "sym", "asym", "--student-codes", students["sym"], "--out", str(fresh / "s.json"),
          str(fresh / "a.json")], "--student-codes: 1 given for 2 paradigms"),
        (["--paradigm", "sym", "sym", "--student-codes", students["sym"], students["sym"], "--out",
          str(fresh / "s.json"), str(fresh / "a.json")], "names sym more than once"),
        (["--paradigm", "teacher", "sym", "--student-codes", students["sym"], students["sym"], "--out",
          str(fresh / "s.json"), str(fresh / "a.json")], "evaluate them in separate calls"),
    ]:
        assert main([*common, *argv]) == 2
        assert message in capsys.readouterr().err, argv
    # a bad input of the second paradigm fails the call before the first paradigm's files are written
    other = write_model_codes(tmp_path / "seed1.parquet", files["splits"], "student", *_student_a_codes(files), seed=1)
    assert main([*common, "--paradigm", "sym", "asym", "--student-codes", students["sym"], str(other),
                 "--out", str(fresh / "sym.json"), str(fresh / "asym.json")]) == 2
    assert not fresh.exists()


def test_one_call_evaluates_several_runs_as_separate_calls_would(files, tmp_path, capsys, monkeypatch):
    """`--cell ... seed=0 seed=1 variant=lambda0.5 variant=lambda2` (rules evaluate_candidates* and
    evaluate_selected name the runs one student training job wrote): one process writes, per run and
    paradigm, the bytes that run's own call writes, reading the split once and each code file once (a
    seed's teacher codes serve all its runs); counts that do not match, and a bad input of any run, are
    refused before anything is written."""
    import brcd.data.splits
    import brcd.evaluate

    splits, n_q, n_db = files["splits"], *(len(files["splits"].indices[s]) for s in ("query", "database"))
    runs = [(seed, variant) for seed in (0, 1) for variant in ("lambda0.5", "lambda2")]  # seed-major
    teachers = {0: files["teacher"], 1: write_model_codes(tmp_path / "teacher1.parquet", splits, "teacher",
                                                          *_student_a_codes(files), seed=1)}
    hashes = {run: f"hash-{run[0]}-{run[1]}" for run in runs}
    codes = {(*run, paradigm): write_model_codes(tmp_path / f"{run[0]}-{run[1]}-{paradigm}.parquet", splits, "student",
                                                 random_codes(n_q, 20 + i), random_codes(n_db, 40 + i), seed=run[0],
                                                 variant=run[1], config_hash=hashes[run])
             for i, (run, paradigm) in enumerate((run, p) for run in runs for p in ("sym", "asym"))}
    out = {(*run, p): tmp_path / "out" / f"{run[0]}-{run[1]}" / f"{p}.json" for run in runs for p in ("sym", "asym")}
    shared = ["evaluate", "--split", str(files["split"]), "--topk", "10", "--paradigm", "sym", "asym", "--cell",
              *(f"{key}={CELL[key]}" for key in ("dataset", "bits", "hash", "teacher", "student", "kd"))]
    for seed, variant in runs:
        assert main([*shared, f"seed={seed}", f"variant={variant}", "--teacher-codes", str(teachers[seed]),
                     "--student-codes", *(str(codes[seed, variant, p]) for p in ("sym", "asym")),
                     "--config-hash", hashes[seed, variant],
                     "--out", *(str(out[seed, variant, p]) for p in ("sym", "asym"))]) == 0
    names = [path.parent / name for path in out.values() for name in (path.name, path.stem + ".queries.parquet")]
    alone = {path: path.read_bytes() for path in names}
    for path in names:
        path.unlink()
    reads = {"split": 0, "codes": []}
    monkeypatch.setattr(brcd.data.splits.Splits, "__init__", _counted(brcd.data.splits.Splits.__init__, reads))
    monkeypatch.setattr(brcd.evaluate, "load_split_codes", _recorded(brcd.evaluate.load_split_codes, reads))
    cell = ["seed=0", "seed=1", "variant=lambda0.5", "variant=lambda2"]

    def group(cell=cell, teacher=tuple(map(str, teachers.values())), hashes=tuple(hashes.values()),
              out=tuple(map(str, out.values()))):
        return [*shared, *cell, "--teacher-codes", *teacher, "--student-codes", *map(str, codes.values()),
                "--config-hash", *hashes, "--out", *out]

    assert main(group()) == 0
    assert {path: path.read_bytes() for path in names} == alone
    assert reads["split"] == 1 and sorted(reads["codes"]) == sorted(map(str, [*teachers.values(), *codes.values()]))
    monkeypatch.undo()

    fresh = [str(tmp_path / "refused" / f"{i}.json") for i in range(8)]
    swapped = (hashes[0, "lambda2"], hashes[0, "lambda0.5"], *list(hashes.values())[2:])
    for argv, message in [
        (group(out=fresh[:2]), "--out: 2 given for 4 runs x 2 paradigms (sym asym)"),
        (group(hashes=list(hashes.values())[:3], out=fresh), "--config-hash: 3 given for 4 runs"),
        (group(teacher=[str(teachers[0])], out=fresh),
         "--teacher-codes: 1 given for 2 seeds of --cell; give one per seed=, in the same order"),
        (group(cell=[*cell, "bits=32"], out=fresh), "--cell gives bits more than once"),
        (group(cell=[*cell, "variant=lambda2"], out=fresh), "--cell gives variant=lambda2 more than once"),
        # the hashes of two runs swapped: the second run's code files belong to another config
        (group(hashes=swapped, out=fresh), "config_hash: file has 'hash-0-lambda0.5', expected 'hash-0-lambda2'"),
    ]:
        assert main(argv) == 2
        assert message in capsys.readouterr().err, argv
    assert not (tmp_path / "refused").exists()


def _counted(function, reads):
    def wrapper(*args, **kwargs):
        reads["split"] += 1
        return function(*args, **kwargs)
    return wrapper


def _recorded(function, reads):
    def wrapper(path, splits):
        reads["codes"].append(str(path))
        return function(path, splits)
    return wrapper


def test_selected_run_records_how_lambda_was_chosen(files, tmp_path):
    from brcd.tuning import select_lambda, write_selection

    keys = {key: CELL[key] for key in ("dataset", "bits", "hash", "teacher", "student", "kd")}
    selection = tmp_path / "selection.json"
    write_selection(selection, keys, [0.1, 1.0], 0, select_lambda({0.1: {"sym": 0.4, "asym": 0.6},
                                                                   1.0: {"sym": 0.5, "asym": 0.2}}))
    out = tmp_path / "metrics" / "asym.json"
    cell = [f"{key}={value}" for key, value in {**CELL, "variant": "selected"}.items()]
    codes = tmp_path / "selected.parquet"
    write_model_codes(codes, files["splits"], "student", *_student_a_codes(files), variant="selected")
    argv = ["evaluate", "--split", str(files["split"]), "--teacher-codes", str(files["teacher"]),
            "--student-codes", str(codes), "--paradigm", "asym", "--topk", "10", "--cell", *cell,
            "--selection", str(selection), "--out", str(out)]
    assert main(argv) == 0
    record = json.loads(out.read_text())["selection"]
    assert record["selected"] == 0.1 and record["candidates"] == {"0.1": 0.6, "1": 0.2}
    assert record["tuning_seed"] == 0 and record["grid"] == [0.1, 1.0]
    wrong = tmp_path / "other.json"
    write_selection(wrong, {**keys, "kd": "rkd"}, [1.0], 0, select_lambda({1.0: {"sym": 0.5, "asym": 0.5}}))
    assert main([*argv[:-4], "--selection", str(wrong), "--out", str(out)]) == 2


def _student_a_codes(files):
    splits = files["splits"]
    return class_codes(splits.labels(splits.indices["query"])), random_codes(len(splits.indices["database"]), 1)


def test_teacher_paradigm_has_no_student_metrics(files):
    result = evaluate(files, "teacher")
    assert result["student"] is None and result["kd"] is None
    assert "isd" not in result["metrics"] and "nra@10" not in result["metrics"]
    assert result["config_hash"] == "t-hash"


def test_parse_cell():
    sym = PARADIGMS.get("sym")
    cell = parse_cell(["dataset=d", "bits=16", "hash=h", "teacher=t", "student=s", "kd=k", "variant=selected",
                       "seed=3"], sym, "sym")
    assert cell == {"dataset": "d", "bits": 16, "hash": "h", "teacher": "t", "student": "s", "kd": "k",
                    "variant": "selected", "seed": 3}
    with pytest.raises(ConfigError, match="lacks student=..., kd=..., variant=..."):
        parse_cell(["dataset=d", "bits=16", "hash=h", "teacher=t", "seed=0"], sym, "sym")
    with pytest.raises(ConfigError, match="unknown key 'bit'"):
        parse_cell(["bit=16"], sym, "sym")
    with pytest.raises(ConfigError, match="bits must be an integer"):
        parse_cell(["bits=sixteen"], sym, "sym")
    with pytest.raises(ConfigError, match="teacher codes only"):
        parse_cell(["dataset=d", "bits=16", "hash=h", "teacher=t", "seed=0", "student=s"], PARADIGMS.get("teacher"),
                   "teacher")
    # several runs: every seed x variant, seed-major
    cells = parse_cells(["dataset=d", "bits=16", "hash=h", "teacher=t", "seed=1", "seed=2", "student=s", "kd=k",
                         "variant=lambda1", "variant=lambda2"], sym, "sym")
    assert [(c["seed"], c["variant"]) for c in cells] == [(1, "lambda1"), (1, "lambda2"), (2, "lambda1"),
                                                         (2, "lambda2")]
    teachers = parse_cells(["dataset=d", "bits=16", "hash=h", "teacher=t", "seed=0", "seed=1"], PARADIGMS.get("teacher"),
                           "teacher")
    assert [c["seed"] for c in teachers] == [0, 1] and teachers[0]["variant"] is None


# ----------------------------------------------------------------------------- bad input


def test_codes_of_different_bit_lengths(files):
    splits = files["splits"]
    n_q, n_db = len(splits.indices["query"]), len(splits.indices["database"])
    path = files["folder"] / "bits64.parquet"
    q, db = np.zeros((n_q, 8), np.uint8), np.zeros((n_db, 8), np.uint8)
    write_model_codes(path, splits, "student", q, db, bits=64)
    with pytest.raises(MetadataMismatchError, match=r"have bits 16 .* have bits 64; pass code files of the same bits"):
        evaluate({**files, "odd": path}, "sym", "odd")


def test_codes_of_different_datasets(files):
    splits = files["splits"]
    path = files["folder"] / "other_dataset.parquet"
    write_model_codes(path, splits, "student", random_codes(30, 3), random_codes(120, 4), dataset="cifar10")
    with pytest.raises(MetadataMismatchError, match="dataset 'synthetic' but student codes .* 'cifar10'"):
        evaluate({**files, "odd": path}, "asym", "odd")


def test_empty_code_file(files):
    path = files["folder"] / "empty.parquet"
    write_codes(path, [], [], np.zeros((0, BITS // 8), np.uint8), metadata("student", files["splits"]))
    with pytest.raises(DataError, match="empty.parquet is empty"):
        evaluate({**files, "odd": path}, "sym", "odd")


def test_topk_larger_than_database(files):
    with pytest.raises(ConfigError, match=r"--topk 500 is larger than the database .* \(120 images\)"):
        evaluate(files, "teacher", topk=500)


def test_codes_without_labels(files):
    splits = files["splits"]
    train_only = np.setdiff1d(splits.indices["train"], splits.indices["database"])
    outside = np.setdiff1d(np.arange(280), splits.all_indices())[:2]  # indices no split uses
    assert len(outside) == 2 and len(train_only) == 0
    path = files["folder"] / "extra.parquet"
    write_model_codes(path, splits, "student", random_codes(30, 3), random_codes(120, 4), extra_rows=outside)
    with pytest.raises(DataError, match=rf"2 query codes \(e.g. dataset index {outside[0]}\) have no query labels"):
        evaluate({**files, "odd": path}, "sym", "odd")


def test_code_file_for_another_cell(files):
    with pytest.raises(MetadataMismatchError, match=r"seed: file has 0, expected 1"):
        evaluate(files, "asym", "student_a", cell={**CELL, "seed": 1})
    with pytest.raises(MetadataMismatchError, match=r"kd: file has 'brcd', expected 'crd'.*model"):
        evaluate(files, "sym", "student_a", cell={**CELL, "kd": "crd"})
    with pytest.raises(MetadataMismatchError, match=r"config_hash: file has 's-hash', expected 'zzz'"):
        evaluate(files, "sym", "student_a", config_hash="zzz")


def test_split_of_another_dataset(files):
    splits = files["splits"]
    folder = files["folder"]
    other = {"teacher": write_model_codes(folder / "t_other.parquet", splits, "teacher", random_codes(30, 1),
                                          random_codes(120, 2), dataset="cifar10"),
             "split": files["split"]}
    expected = r"split file .*\(dataset: file has 'synthetic', expected 'cifar10'\)"
    with pytest.raises(MetadataMismatchError, match=expected):
        evaluate(other, "teacher", cell={**TEACHER_CELL, "dataset": "cifar10"})


def test_cli_reports_errors_cleanly(files, tmp_path, capsys):
    argv = ["evaluate", "--split", str(files["split"]), "--teacher-codes", str(files["teacher"]), "--paradigm", "sym",
            "--topk", "10", "--cell", "dataset=synthetic", "bits=16", "hash=cibhash", "teacher=tt", "seed=0",
            "--out", str(tmp_path / "x.json")]
    assert main(argv) == 2
    assert "lacks student=..., kd=..." in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
