"""The Snakemake workflow: dry runs, early config errors, the tiny grid end to end,
partial reruns."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from brcd.config import REPO_ROOT
from brcd.data.splits import Splits
from tests.conftest import copy_tiny_grid, job_stats, snakemake_here

TEST_CONFIG = REPO_ROOT / "config" / "test.yaml"
#: the tiny grid has one seed and one λ (1): every student run is the candidate lambda1 (none: lambda0)
STUDENT = "results/synthetic/16/student/cibhash/tteacher/tstudent/{kd}/lambda{lam}/seed0"
TEACHER = "results/synthetic/16/teacher/cibhash/tteacher/seed0"
CIFAR10_ARCHIVE = REPO_ROOT.parent / "shared" / "datasets" / "cifar10-jpeg" / "cifar10-jpeg.tar"


def snakemake(workdir, *args, check=True):
    """`snakemake --cores 2 ARGS` in ``workdir``, in this process (tests.conftest.snakemake_here)."""
    result = snakemake_here(workdir, "--cores", "2", *args)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout}\n{result.stderr}")
    return result




@pytest.mark.parametrize("config", ["demo.yaml", "study.yaml", "test.yaml"])
def test_dry_run_plans_jobs(tmp_path, config):
    grid = yaml.safe_load((REPO_ROOT / "config" / config).read_text())
    if "cifar10_jpeg" in grid["datasets"]:  # the study reads it from ../shared, relative to the working directory
        if not CIFAR10_ARCHIVE.is_file():
            pytest.skip("the shared CIFAR-10 JPEG archive is not here")
        (tmp_path / "shared").symlink_to(CIFAR10_ARCHIVE.parents[2])
    out = snakemake(tmp_path / "run", "-n", "--configfile", str(REPO_ROOT / "config" / config)).stdout
    jobs = job_stats(out)
    for rule in ("split", "features", "train_teacher", "encode_teacher", "cluster", "train_candidates",
                 "train_candidates_none", "select_lambda", "evaluate_teacher", "evaluate_candidates",
                 "evaluate_candidates_none", "time_encoder", "time_search", "report"):
        assert jobs.get(rule), (rule, jobs)
    if config in ("demo.yaml", "study.yaml"):  # the same methods and λ grids; the study at the full protocol's
        # sizes, on two datasets, with two students and five seeds
        teachers = len(grid["datasets"]) * len(grid["bits"]) * len(grid["seeds"])
        methods = len(grid["datasets"]) * len(grid["bits"]) * len(grid["students"])  # per method: its columns
        # seed 0 tries every λ of each method's own grid (issue 27: 4 for pkt and sp, 3 for the other 10; none:
        # λ 0 only), one job per method; the other seeds train the selected λ, one job per method.
        # The default grid's methods (rkd, brcd and its 3 ablations) share rule train_candidates; each method
        # with its own grid has its own rule
        assert jobs["train_candidates"] == methods * 5 and jobs["train_candidates_none"] == methods
        assert all(jobs[f"train_candidates_{kd}"] == methods for kd in ("kd", "pkt", "sp", "crd", "crcd", "sskd",
                                                                         "packd"))
        assert jobs["train_student"] == methods * 13 and jobs["select_lambda"] == methods * 13
        assert jobs["features"] == len(grid["datasets"]) * (1 + len(grid["students"]))
        # one evaluation job per teacher run, and one per student training job (both paradigms of each of its
        # runs): each train_candidates* rule has its evaluate_candidates* rule
        assert jobs["evaluate_teacher"] == teachers and "evaluate" not in jobs
        assert {rule.replace("train", "evaluate", 1): count for rule, count in jobs.items()
                if rule.startswith("train_candidates")} == {rule: count for rule, count in jobs.items()
                                                            if rule.startswith("evaluate_candidates")}
        assert jobs["evaluate_selected"] == jobs["train_student"]


def test_tuned_grid_trains_candidates_then_the_selected_lambda(tmp_path):
    """Seed 0 trains every λ candidate; select_lambda chooses; seed 1 trains only `selected`."""
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config.update(seeds=[0, 1], **{"lambda": {"default": [0.5, 2]}})
    path = tmp_path / "tuned.yaml"
    path.write_text(yaml.safe_dump(config))
    out = snakemake(tmp_path, "-n", "--configfile", str(path)).stdout
    jobs = job_stats(out)
    assert jobs["train_candidates"] == 1 and jobs["train_candidates_none"] == 1 and jobs["train_student"] == 2, jobs
    assert jobs["select_lambda"] == 2 and jobs["evaluate_teacher"] == 2, jobs
    # one evaluation job per training job: brcd's two candidates, none's one, the selected runs of each method
    assert jobs["evaluate_candidates"] == 1 and jobs["evaluate_candidates_none"] == 1, jobs
    assert jobs["evaluate_selected"] == 2 and "evaluate" not in jobs, jobs
    root = "results/synthetic/16/student/cibhash/tteacher/tstudent"
    for run in ("brcd/lambda0.5/seed0", "brcd/lambda2/seed0", "none/lambda0/seed0", "brcd/selected/seed1",
                "none/selected/seed1"):
        assert f"{root}/{run}/model.pt" in out, run
    assert f"{root}/brcd/lambda2/seed1" not in out and f"{root}/brcd/selection.json" in out


def _single_cell_evaluation(config: dict, cell) -> list[str]:
    """The `brcd evaluate` call of the per-cell rule `evaluate` before issue 25 evaluated student runs one job
    each (written out here, not with the workflow's helpers): one cell, both paradigms of the grid."""
    from brcd import layout

    files = cell.parameters()
    paradigms = config["paradigms"]
    metrics = [layout.METRICS.format(**files, model=cell.model, paradigm=p) for p in paradigms]
    return ["evaluate", "--split", layout.SPLIT.format(**files),
            "--teacher-codes", layout.TEACHER_CODES.format(**cell.teacher_cell().parameters()),
            "--student-codes", *((layout.STUDENT_CODES_ASYM if p == "asym" else layout.STUDENT_CODES).format(**files)
                                 for p in paradigms),
            *(["--selection", cell.selection_path()] if cell.variant == "selected" else []),
            "--paradigm", *paradigms, "--topk", str(config["datasets"][cell.dataset]["topk"]),
            "--cell", *(f"{key}={value}" for key, value in files.items()),
            "--config-hash", cell.config_hash(config), "--threads", "1",
            "--out", *metrics, "--out-queries", *(str(Path(m).with_suffix("")) + ".queries.parquet" for m in metrics)]


def test_grouped_evaluation_writes_what_single_cell_jobs_wrote(built_tiny_grid, tmp_path, monkeypatch):
    """Issue 25: one job evaluates a method's λ candidates of the tuning seed (rules evaluate_candidates*), one
    its other seeds' runs of the selected λ (evaluate_selected). Naming one run's metrics file runs its group's
    job, and every run's metrics and per-query files are byte for byte those its own single-cell call wrote."""
    from brcd import layout
    from brcd.cli import main
    from brcd.config import load_config
    from brcd.workflow import student_cells

    config = yaml.safe_load(TEST_CONFIG.read_text())
    config.update(seeds=[0, 1, 2], kd=["kd"], **{"lambda": [0.5, 2]})
    config["train"]["student"].update(epochs=4, min_epochs=2, eval_every=2)  # the evaluation is what is tested
    path = tmp_path / "tuned.yaml"
    path.write_text(yaml.safe_dump(config))
    grid = copy_tiny_grid(built_tiny_grid, tmp_path / "grid")  # its split, banks and seed 0's teacher
    root = "results/synthetic/16/student/cibhash/tteacher/tstudent/kd"
    for target, evaluation in ((f"{root}/selected/seed2/metrics/asym.json", "evaluate_selected"),
                               (f"{root}/lambda2/seed0/metrics/sym.json", "evaluate_candidates")):
        jobs = job_stats(snakemake(grid, "-n", target, "--configfile", str(path)).stdout)
        assert jobs[evaluation] == 1 and not {"evaluate_candidates", "evaluate_selected"} - {evaluation} & set(jobs)
        snakemake(grid, target, "--configfile", str(path))
    monkeypatch.chdir(grid)  # paths as the jobs see them (the metrics files record them)
    checked = load_config(path)
    runs = student_cells(checked)
    assert [cell.variant for cell in runs] == ["lambda0.5", "lambda2", "selected", "selected"]
    for cell in runs:
        folder = Path(layout.STUDENT_DIR.format(**cell.parameters())) / "metrics"
        grouped = {file.name: file.read_bytes() for file in sorted(folder.iterdir())}
        assert sorted(grouped) == ["asym.json", "asym.queries.parquet", "sym.json", "sym.queries.parquet"]
        shutil.rmtree(folder)
        assert main(_single_cell_evaluation(checked, cell)) == 0
        assert {name: (folder / name).read_bytes() for name in grouped} == grouped, cell.model


def test_tiny_config_builds_split(tmp_path):
    snakemake(tmp_path, "results/synthetic/split.parquet", "--configfile", str(TEST_CONFIG))
    splits = Splits(tmp_path / "results/synthetic/split.parquet")
    assert splits.metadata["counts"] == {"train": 160, "query": 60, "val": 60, "database": 300}
    assert (tmp_path / "logs/split/synthetic.log").exists()


def test_another_grid_is_stopped_before_it_overwrites_results(tmp_path):
    """Every grid writes the same paths: a second grid in the same folder must not rebuild the first one's."""
    snakemake(tmp_path, "results/synthetic/split.parquet", "--configfile", str(TEST_CONFIG))
    split = tmp_path / "results/synthetic/split.parquet"
    before = (split.read_bytes(), split.stat().st_mtime_ns)
    other = tmp_path / "other.yaml"
    other.write_text(TEST_CONFIG.read_text().replace("name: test", "name: other"))
    assert snakemake(tmp_path, "-n", "--configfile", str(other)).returncode == 0  # a dry run claims nothing
    result = snakemake(tmp_path, "results/synthetic/split.parquet", "--forcerun", "split",
                       "--configfile", str(other), check=False)
    assert result.returncode != 0
    assert "results/ holds the results of grid 'test'" in result.stderr, result.stderr
    assert "git worktree add ../other" in result.stderr
    assert (split.read_bytes(), split.stat().st_mtime_ns) == before
    # the same grid again (the demo's `make demo`, a rerun of one cell) runs as before
    snakemake(tmp_path, "results/synthetic/split.parquet", "--forcerun", "split", "--configfile", str(TEST_CONFIG))
    assert json.loads((tmp_path / "results/.grid.json").read_text())["name"] == "test"


def test_claim_results_names_both_grids_and_the_way_out(tmp_path):
    from brcd.errors import BrcdError
    from brcd.workflow import claim_results

    owner = tmp_path / "results" / ".grid.json"
    (tmp_path / "results" / ".config").mkdir(parents=True)  # a dry run's effective config: not results
    claim_results("demo", "results/.config/demo-1.yaml", owner)
    assert json.loads(owner.read_text()) == {"name": "demo", "config": "results/.config/demo-1.yaml"}
    (tmp_path / "results" / "fashion_mnist").mkdir()
    claim_results("demo", "results/.config/demo-2.yaml", owner)  # an edited config of the same grid
    with pytest.raises(BrcdError, match=r"grid 'demo' .*running grid 'study' here would rebuild and overwrite"
                                        r".*git worktree add \.\./study.*delete results/ first"):
        claim_results("study", "results/.config/study-1.yaml", owner)
    assert json.loads(owner.read_text())["name"] == "demo"


def test_results_without_a_claim_stop_every_grid_until_told_whose(tmp_path):
    """Results from before results/.grid.json existed (or with a damaged one) may be another grid's."""
    from brcd.errors import BrcdError
    from brcd.workflow import claim_results

    owner = tmp_path / "results" / ".grid.json"
    (tmp_path / "results" / "fashion_mnist").mkdir(parents=True)
    for state in ("missing", "damaged"):
        expected = rf"holds results \(fashion_mnist\), but .*\.grid\.json.* is {state}"
        with pytest.raises(BrcdError, match=expected) as err:
            claim_results("study", "c.yaml", owner)
        owner.write_text("{damaged")
    # the command the message gives records whose they are; then the grid runs
    subprocess.run(["bash", "-c", re.search(r"`(echo .*?)`", str(err.value)).group(1)], check=True)
    assert json.loads(owner.read_text()) == {"name": "study"}
    claim_results("study", "c.yaml", owner)
    assert (tmp_path / "results" / "fashion_mnist").is_dir()


def _bad_config(tmp_path, mutate):
    config = yaml.safe_load(TEST_CONFIG.read_text())
    mutate(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("mutate,expected", [
    (lambda c: c.update(kd=["none", "telepathy"]), r"unknown value 'telepathy' in `kd`; allowed values: brcd, brcd_nocluster"),
    (lambda c: c.update(students=["lite9"]), r"`students` names backbone alias 'lite9'.*defined aliases: .*tteacher"),
    (lambda c: c.update(paradigms=["sym", "both"]), r"unknown value 'both' in `paradigms`; allowed values: asym, sym"),
    (lambda c: c["datasets"].update(mnist=c["datasets"]["synthetic"]), r"unknown value 'mnist' in `datasets`; allowed values: cifar10"),
    (lambda c: c.update(bits=[16, 12]), r"key `bits.1`: 12 is not a multiple of 8"),
    (lambda c: c.update(hash=[]), r"hash.*should be non-empty"),
    (lambda c: c.update(hash=["spectral"]), r"unknown value 'spectral' in `hash`; allowed values: cibhash, greedyhash"),
    # sizes: the split job's message (key, largest valid value), before any job instead of in one
    (lambda c: c["datasets"]["synthetic"].update(query=500), r"`datasets.synthetic.query` asks for 500 .* at most 200"),
    (lambda c: c["datasets"]["synthetic"].update(topk=1000), r"`datasets.synthetic.topk` asks for 1000 .* at most 300"),
    (lambda c: c["datasets"]["synthetic"].update(num_clases=4), r"`datasets.synthetic` has unknown key `num_clases`"),
    # issue 28: values that passed the check and failed late, in a training job or with a MissingInputException
    (lambda c: c.update(kd_settings={"crd": {"negatives": -5}}), r"`kd_settings.crd.negatives` must be an integer in "
                                                                 r"\[1, 100000\]; got -5"),
    (lambda c: c.update(**{"lambda": float("inf")}), r"key `lambda`: inf is not a finite number >= 0"),
    (lambda c: c.update(seeds=[99999999999999999999]), r"key `seeds.0`: 99999999999999999999 is greater than"),
    (lambda c: c["brcd"].update(clusters=500), r"`brcd.clusters` = 500 exceeds the 160 training images"),
    (lambda c: c["datasets"]["synthetic"].update(train_size=10_000_000_000),
     r"`datasets.synthetic.train_size` must be an integer in \[1, 1000000\]; got 10000000000"),
    (lambda c: c.update(name="x" * 5000), r"key `name`: .* of at most 100 characters"),
])
def test_bad_config_fails_before_any_job(tmp_path, mutate, expected):
    result = snakemake(tmp_path, "-n", "--configfile", str(_bad_config(tmp_path, mutate)), check=False)
    assert result.returncode != 0
    assert re.search(expected, result.stdout + result.stderr), result.stdout + result.stderr
    assert not (tmp_path / "results" / "synthetic").exists()


def test_whole_number_floats_and_config_overrides_plan_the_grid(tmp_path):
    """Issue 28: `bits: [16.0]`, `seeds: [0.0]` and `topk: 50.0` are read as integers (they failed the dry
    run with a MissingInputException, or reran the grid and failed in evaluate_teacher), and
    `--config 'bits=[16]'`, whose list items Snakemake passes as strings, narrows the grid."""
    def mutate(config):
        config.update(bits=[16.0, 32], seeds=[0.0])
        config["datasets"]["synthetic"]["topk"] = 50.0

    path = _bad_config(tmp_path, mutate)
    both = job_stats(snakemake(tmp_path, "-n", "--configfile", str(path)).stdout)
    narrowed = snakemake(tmp_path, "-n", "--configfile", str(path), "--config", "bits=[16]").stdout
    assert both["time_search"] == 2 and job_stats(narrowed)["time_search"] == 1, (both, narrowed)
    assert "results/synthetic/16/teacher" in narrowed and "results/synthetic/32/" not in narrowed
    effective = yaml.safe_load(next((tmp_path / "results" / ".config").glob("test-*.yaml")).read_text())
    assert effective["seeds"] == [0] and effective["datasets"]["synthetic"]["topk"] == 50
    wrong = snakemake(tmp_path, "-n", "--configfile", str(path), "--config", "bits=[16.5]", check=False)
    output = wrong.stdout + wrong.stderr
    assert wrong.returncode != 0 and "key `bits.0`: '16.5' is not an integer in [8, 4096]" in output, output


CIFAR10_CONFIG = REPO_ROOT / "config" / "cifar10.yaml"


def _cifar10_config(tmp_path, **entry) -> Path:
    """config/cifar10.yaml with its dataset entry changed (its relative path made absolute: these
    runs use another working directory)."""
    config = yaml.safe_load(CIFAR10_CONFIG.read_text())
    options = config["datasets"]["cifar10_jpeg"]
    options["path"] = str((REPO_ROOT / options["path"]).resolve())
    options.update(entry)
    for key in [k for k, v in options.items() if v is None]:
        del options[key]
    path = tmp_path / "cifar10.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.skipif(not CIFAR10_ARCHIVE.is_file(), reason="the shared CIFAR-10 JPEG archive is not here")
def test_cifar10_grid_plans_both_students(tmp_path):
    """config/cifar10.yaml: CIFAR-10 from the JPEG archive, Lite2 teaching Lite0 and Lite1."""
    out = snakemake(tmp_path, "-n", "--configfile", str(_cifar10_config(tmp_path))).stdout
    jobs = job_stats(out)
    assert jobs["split"] == 1 and jobs["features"] == 3 and jobs["train_teacher"] == 2 * 3, jobs
    # per student: as the study (seed 0 tries 3 λ for 12 methods, seeds 1 and 2 the selected λ in one job)
    assert jobs["train_candidates"] == 2 * 2 * 12 and jobs["train_student"] == 2 * 2 * 13, jobs
    assert jobs["time_encoder"] == 3, jobs
    for student in ("lite0", "lite1"):
        assert f"results/cifar10_jpeg/64/student/cibhash/lite2/{student}/brcd/selected/seed2/model.pt" in out
    assert not (tmp_path / "results" / "cifar10_jpeg").exists()


def _tiny_cifar_tar(path: Path, corrupt: str | None = None) -> Path:
    from tests.test_image_folder import tiny_files, write_tar

    files = tiny_files(top="cifar10-jpeg/")
    if corrupt:
        files[corrupt] = b"not a JPEG"
    return write_tar(path, files)


@pytest.mark.parametrize("problem", ["missing archive", "wrong sha256", "corrupt JPEG"])
def test_cifar10_archive_problems_stop_the_grid_before_any_job(tmp_path, problem):
    """Each names the file (and the image) and what to do, at parse time: no job starts, not even the split."""
    if problem == "missing archive":
        config = _cifar10_config(tmp_path, path=str(tmp_path / "shared" / "cifar10-jpeg.tar"))
        expected = (rf"{tmp_path}/shared/cifar10-jpeg.tar not found \(`datasets.cifar10_jpeg.path`\); "
                    r"in this project it is \.\./shared/datasets/cifar10-jpeg/cifar10-jpeg.tar")
    elif problem == "wrong sha256":  # another file where the archive should be
        config = _cifar10_config(tmp_path, path=str(_tiny_cifar_tar(tmp_path / "other.tar")))
        expected = (rf"archive {tmp_path}/other.tar \(`datasets.cifar10_jpeg.path`\) has sha256 [0-9a-f]{{64}}, "
                    r"not the expected 06afdf53.* \(`datasets.cifar10_jpeg.sha256`\).*Replace it with an intact copy")
    else:
        tar = _tiny_cifar_tar(tmp_path / "damaged.tar", corrupt="cifar10-jpeg/train/dog/0002.png")
        config = _cifar10_config(tmp_path, path=str(tar), sha256=None)
        expected = (rf"archive {tmp_path}/damaged.tar \(`datasets.cifar10_jpeg.path`\): 1 image\(s\) cannot be "
                    r"decoded: cifar10-jpeg/train/dog/0002.png \(UnidentifiedImageError")
    result = snakemake(tmp_path, "-n", "--configfile", str(config), check=False)
    assert result.returncode != 0
    assert re.search(expected, result.stdout + result.stderr), result.stdout + result.stderr
    assert "Job stats" not in result.stdout and not (tmp_path / "results" / "cifar10_jpeg").exists()


@pytest.fixture(scope="module")
def tiny_run(built_tiny_grid, tmp_path_factory):
    """The tiny synthetic grid, end to end through Snakemake: this module's copy of the session's one
    build (tests/conftest.py, ``built_tiny_grid``; about a minute)."""
    return copy_tiny_grid(built_tiny_grid, tmp_path_factory.mktemp("tiny_run") / "grid")


def test_tiny_grid_end_to_end(tiny_run):
    for kd in ("none", "brcd"):
        for paradigm in ("sym", "asym"):
            metrics = json.loads((tiny_run / STUDENT.format(kd=kd, lam=0 if kd == "none" else 1) / "metrics" / f"{paradigm}.json").read_text())
            assert metrics["kd"] == kd and metrics["paradigm"] == paradigm and 0 <= metrics["metrics"]["map@50"] <= 1
    assert (tiny_run / TEACHER / "metrics" / "teacher.json").exists()
    assert (tiny_run / "results/timing/search/16.json").exists()
    assert (tiny_run / "results/timing/encoder/synthetic/tstudent.json").exists()
    report = (tiny_run / "reports" / "test.md").read_text()
    assert "| teacher (`tteacher`)" in report and "| student, no KD (`tstudent`)" in report and "| `brcd`" in report
    assert "16 bits sym" in report and "16 bits asym" in report
    for figure in re.findall(r"\]\((test/[^)]+\.png)\)", report):
        assert (tiny_run / "reports" / figure).stat().st_size > 0
    # every job wrote the benchmark file the report's time per stage reads (brcd.workflow.benchmark_files): one
    # evaluation job per student training job, here every λ candidate of one method (the grid has one seed)
    from brcd.config import load_config
    from brcd.workflow import benchmark_files

    files = benchmark_files(load_config(TEST_CONFIG))
    assert [path for paths in files.values() for path in paths if not (tiny_run / path).is_file()] == []
    assert len(files["evaluate_candidates"]) == len(files["train_candidates"]) == 2 and "evaluate_selected" not in files
    assert re.search(r"^\| `evaluate_candidates` +\| +2 +\| ", report, re.M) and "| `evaluate` " not in report


def test_brcd_aligns_the_student_better_than_no_kd(tiny_run):
    """BRCD lowers the teacher-student distance (ISD) in the asymmetric paradigm."""
    isd = {kd: json.loads((tiny_run / STUDENT.format(kd=kd, lam=0 if kd == "none" else 1) / "metrics" / "asym.json").read_text())["metrics"]["isd"]
           for kd in ("none", "brcd")}
    assert isd["brcd"] < isd["none"] - 0.05, isd


def test_removing_one_cell_reruns_only_that_cell(tiny_run):
    up_to_date = snakemake(tiny_run, "-n", "--configfile", str(TEST_CONFIG))
    assert "Nothing to be done" in up_to_date.stdout + up_to_date.stderr
    cell = tiny_run / STUDENT.format(kd="brcd", lam=1)
    backup = tiny_run / "backup"
    shutil.copytree(cell, backup)
    try:
        for name in ("model.pt", "codes.parquet", "codes_asym.parquet", "metrics"):
            path = cell / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        jobs = job_stats(snakemake(tiny_run, "-n", "--configfile", str(TEST_CONFIG)).stdout)
        # the λ selection reads the candidate's model.pt, so it is redone too (one candidate: λ = 1)
        assert jobs == {"train_candidates": 1, "select_lambda": 1, "evaluate_candidates": 1, "report": 1, "all": 1}, jobs
        # Naming one metrics file builds only what that cell needs (one evaluation job: both paradigms).
        target = str(Path(STUDENT.format(kd="brcd", lam=1)) / "metrics" / "asym.json")
        jobs = job_stats(snakemake(tiny_run, "-n", target, "--configfile", str(TEST_CONFIG)).stdout)
        assert jobs == {"train_candidates": 1, "evaluate_candidates": 1}, jobs
    finally:
        shutil.rmtree(cell)
        shutil.copytree(backup, cell)


# ---------------------------------------------------------------- effective config, interpreter, advice

CLUSTERS_FILE = "results/synthetic/16/clusters/cibhash/tteacher/seed0/clusters.parquet"
#: the rules downstream of a student's settings (a student's λ selection included)
STUDENT_AND_AFTER = {"train_candidates", "train_candidates_none", "train_student", "select_lambda", "evaluate_candidates",
                     "evaluate_candidates_none", "evaluate_selected", "report", "all"}
#: the rules that train students: λ candidates (one job per method and seed) and selected runs
TRAINING = ("train_candidates", "train_candidates_none", "train_student")


def _config_with_student_lr(lr):
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config["train"]["student"]["lr"] = lr
    return config


def test_effective_config_is_named_by_its_content(tmp_path):
    from brcd.config import validate_schema
    from brcd.workflow import write_effective_config

    config = validate_schema(yaml.safe_load(TEST_CONFIG.read_text()))
    first = Path(write_effective_config(config, tmp_path))
    written = first.stat().st_mtime_ns
    second = Path(write_effective_config(validate_schema(_config_with_student_lr(0.1)), tmp_path))
    assert first != second and first.name.startswith("test-") and second.name.startswith("test-")
    assert yaml.safe_load(first.read_text())["train"]["student"]["lr"] == 0.003  # never rewritten in place
    assert yaml.safe_load(second.read_text())["train"]["student"]["lr"] == 0.1
    assert Path(write_effective_config(config, tmp_path)) == first and first.stat().st_mtime_ns == written
    first.write_text("damaged")
    write_effective_config(config, tmp_path)
    assert yaml.safe_load(first.read_text()) == config


def test_jobs_run_the_python_that_runs_snakemake(tmp_path):
    import os

    from brcd.errors import BrcdError
    from brcd.workflow import BRCD_COMMAND, CONFIG_ENV, prepare_job_environment

    assert BRCD_COMMAND == "python3 -m brcd"  # no interpreter path in any rule's parameters
    env = {"PATH": "/usr/bin:/bin"}
    prepare_job_environment("results/.config/test-0.yaml", env, sys.executable)
    prepare_job_environment("results/.config/test-0.yaml", env, sys.executable)
    assert env["PATH"] == os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    assert env[CONFIG_ENV] == "results/.config/test-0.yaml"
    with pytest.raises(BrcdError, match=r"has no python3; run Snakemake from this project's environment"):
        prepare_job_environment("x.yaml", {}, str(tmp_path / "python"))


def _moved_environment(tmp_path) -> Path:
    """This virtualenv at another path (its pyvenv.cfg, the base interpreter, its packages):
    what recreating .venv elsewhere, or a cluster node with another path, gives."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("the tests do not run in a virtualenv")
    moved = tmp_path / "elsewhere" / "venv"
    (moved / "bin").mkdir(parents=True)
    shutil.copy(Path(sys.prefix) / "pyvenv.cfg", moved / "pyvenv.cfg")
    for name in ("python3", "python"):
        (moved / "bin" / name).symlink_to(Path(sys._base_executable))
    (moved / "lib").symlink_to(Path(sys.prefix) / "lib")
    return moved / "bin" / "python3"


def test_moved_environment_reruns_nothing(tiny_run, tmp_path):
    python = _moved_environment(tmp_path)
    cmd = [str(python), "-m", "snakemake", "-s", str(REPO_ROOT / "Snakefile"), "--directory", str(tiny_run),
           "--cores", "2", "-n", "--configfile", str(TEST_CONFIG)]
    result = subprocess.run(cmd, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr, result.stdout


def test_dry_run_of_an_edited_config_changes_nothing_a_run_reads(tiny_run, tmp_path):
    """A dry run of an edited config cannot change the settings the jobs of a running
    workflow read; its new effective-config name reruns only the jobs the edit affects
    (and so does writing the config with its keys in another order: sorted here)."""
    folder = tiny_run / "results" / ".config"
    before = {path.name: path.read_text() for path in folder.iterdir()}
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(_config_with_student_lr(0.001), sort_keys=True))
    jobs = job_stats(snakemake(tiny_run, "-n", "--configfile", str(edited)).stdout)
    assert sum(jobs.get(rule, 0) for rule in TRAINING) >= 2 and set(jobs) <= STUDENT_AND_AFTER, jobs  # no split, bank, teacher, timing
    assert {name: (folder / name).read_text() for name in before} == before
    up_to_date = snakemake(tiny_run, "-n", "--configfile", str(TEST_CONFIG))
    assert "Nothing to be done" in up_to_date.stdout + up_to_date.stderr


def _commands(message: str) -> list[str]:
    """The Snakemake commands a message advises (in backquotes)."""
    commands = re.findall(r"`(snakemake [^`]+)`", message)
    assert commands, message
    return commands


def run_as_written(workdir: Path, command: str) -> dict[str, int]:
    """Dry-run an advised command with its words in the order written, N and CONFIG filled in: the planned
    jobs (rule -> count). In this process (tests.conftest.snakemake_here): a fresh Snakemake per command
    would cost ~4 s each."""
    import shlex

    words = shlex.split(command)
    assert words[0] == "snakemake", command
    args = [{"N": "2", "CONFIG": str(TEST_CONFIG)}.get(word, word) for word in words[1:]]
    result = snakemake_here(workdir, "-n", *args)
    text = result.stdout + result.stderr
    assert result.returncode == 0, f"`{command}` failed as written:\n{text}"
    return job_stats(text) if "Job stats:" in text else {}


def _plans(jobs: dict[str, int], rule: str) -> bool:
    """Whether the plan runs ``rule`` (``train_candidates``, ``evaluate_candidates``: any rule of that family,
    e.g. train_candidates_none)."""
    return any(name == rule or (rule.endswith("_candidates") and name.startswith(rule)) for name in jobs)


def _tiny_grid_outputs() -> dict[str, str]:
    """One path of the tiny grid per output template of the layout (brcd.layout.WRITTEN_BY), and a file
    inside a feature bank: every kind of path a hint can name."""
    from brcd import layout

    teacher = {"dataset": "synthetic", "bits": 16, "hash": "cibhash", "teacher": "tteacher", "seed": 0}
    student = {**teacher, "student": "tstudent", "kd": "brcd", "variant": "lambda1"}
    none = {**student, "kd": "none", "variant": "lambda0"}
    fields = {layout.SPLIT: teacher, layout.FEATURES: {"dataset": "synthetic", "backbone": "tstudent"},
              layout.TIMING_ENCODER: {"dataset": "synthetic", "backbone": "tstudent"}, layout.REPORT: {"name": "test"},
              layout.REPORT_TABLE: {"name": "test"}, layout.REPORT_FINDINGS: {"name": "test"},
              layout.METRICS: {**student, "model": "student/cibhash/tteacher/tstudent/brcd/lambda1", "paradigm": "asym"},
              layout.PER_QUERY: {**teacher, "model": "teacher/cibhash/tteacher", "paradigm": "teacher"},
              layout.STUDENT_HISTORY: none}
    paths = {template: template.format(**fields.get(template, student)) for template in layout.WRITTEN_BY}
    return {**paths, "a file of a feature bank": paths[layout.FEATURES] + "/meta.json"}


def test_every_hint_runs_as_written(tiny_run, monkeypatch, capsys):
    """Issue 28: every "run this" hint is built by brcd.io.snakemake_command, target before --configfile
    (which reads every word after it as a config file). Each hint the code can produce -- to build a
    missing file and to rebuild a damaged one, for every kind of path the layout has; the report's
    missing-inputs advice (one file, the whole grid); the report's own header -- runs as written on
    the tiny grid and plans the rule that writes the file."""
    from brcd.cli import main
    from brcd.io import build_hint, rebuild_hint
    from brcd.layout import written_by

    monkeypatch.chdir(tiny_run)  # paths as the jobs see them
    for name, path in _tiny_grid_outputs().items():
        rule = written_by(path).rule
        (command,) = _commands(rebuild_hint(path))
        assert _plans(run_as_written(tiny_run, command), rule), (name, command)
        parked = tiny_run / "parked"
        Path(path).rename(parked)  # a missing file (or folder): how read_checked finds it
        try:
            (command,) = _commands(build_hint(path))
            assert _plans(run_as_written(tiny_run, command), rule), (name, command)
        finally:
            parked.rename(path)
    metrics = _tiny_grid_outputs()["results/{dataset}/{bits}/{model}/seed{seed}/metrics/{paradigm}.json"]
    Path(metrics).rename("parked")
    try:
        assert main(["report", "--config", str(TEST_CONFIG), "--out", "reports/again.md"]) == 2
        one_file, whole_grid = _commands(capsys.readouterr().err)
        assert _plans(run_as_written(tiny_run, one_file), "evaluate_candidates")
        assert {"evaluate_candidates", "report"} <= set(run_as_written(tiny_run, whole_grid))
    finally:
        Path("parked").rename(metrics)
    (header,) = _commands((tiny_run / "reports" / "test.md").read_text().split("\n\n")[1])
    assert run_as_written(tiny_run, header) == {}  # up to date: nothing to do, and no error


def test_every_advised_snakemake_command_comes_from_one_function():
    """No message of brcd spells a Snakemake command itself: brcd.io.snakemake_command builds them all."""
    import ast

    spelled = []
    for path in sorted((REPO_ROOT / "brcd").rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
                      and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                    and re.search(r"snakemake (--|\.\.\.)|`snakemake [^`]", node.value):
                spelled.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {node.value!r}")
    assert spelled == [], "build these with brcd.io.snakemake_command:\n" + "\n".join(spelled)


def test_clusters_mismatch_names_a_command_that_rebuilds_them(tiny_run, monkeypatch, tmp_path):
    from brcd.cluster import load_clusters
    from brcd.errors import BrcdError

    monkeypatch.chdir(tiny_run)  # paths as the jobs see them
    with pytest.raises(BrcdError) as error:
        load_clusters(CLUSTERS_FILE, {"teacher": "teacher/cibhash/another"})
    (command,) = _commands(str(error.value))
    assert command == f"snakemake --cores N --forcerun {CLUSTERS_FILE} --configfile CONFIG"
    jobs = run_as_written(tiny_run, command)
    assert jobs["cluster"] == 1 and jobs["train_candidates"] >= 1 and set(jobs) <= {"cluster"} | STUDENT_AND_AFTER, jobs
    # what the message used to advise: deleting the file rebuilds nothing
    backup = tmp_path / "clusters.parquet"
    shutil.copy(tiny_run / CLUSTERS_FILE, backup)
    try:
        (tiny_run / CLUSTERS_FILE).unlink()
        deleted = snakemake(tiny_run, "-n", "--configfile", str(TEST_CONFIG))
        assert "Nothing to be done" in deleted.stdout + deleted.stderr
        assert run_as_written(tiny_run, command) == jobs
    finally:
        shutil.copy(backup, tiny_run / CLUSTERS_FILE)


@pytest.mark.parametrize("config", ["demo.yaml", "test.yaml"])
def test_snakemake_lint_is_clean(tmp_path, config):
    """`snakemake --lint` (the Makefile's `lint` target) finds nothing: every rule has a log, a conda
    environment (environment.yml), no absolute paths, no functions beside rules. It exits 1 with
    findings and 0 without, printing them as "Lints for ..." blocks (its `--lint json` prints the
    same text in Snakemake 9.27.1), so both are checked."""
    result = snakemake(tmp_path, "--lint", "--configfile", str(REPO_ROOT / "config" / config), check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Lints for" not in output, output
    assert "Congratulations, your workflow is in a good condition!" in output, output
