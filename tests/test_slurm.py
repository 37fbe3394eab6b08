"""workflow/profiles/slurm on a real Slurm cluster.

Fast checks (no cluster): the profile names only rules of the workflow, the
workflow parses without --cores (as on Slurm), and GPUs are requested only where
the grid's mode needs one. Their Snakemake runs in this process
(tests.conftest.snakemake_here); the cluster's runs are processes of their own.

Cluster checks: the single-node cluster of workflow/slurm/cluster-up.sh (Debian's
Slurm with accounting and 2 fake GPUs) is brought up -- installed first when
missing -- and taken down afterwards if this module started it. Without root or
apt-get those tests are skipped, saying why; CI (root, fresh Debian) runs them.
Three runs go at once (1.5-2 min on 2 cores, much of it waiting: the plugin
first checks its jobs' status 2 s after submitting and waits 10 s longer after
each check that finds none finished, so a run notices a finished job up to half
a minute late; installing and starting the cluster on a fresh machine adds
about 20 s, taking it down 10 s):

- the teacher cell of config/test.yaml (split, features, train_teacher,
  encode_teacher, evaluate_teacher): a SUBSET of the test grid, named by its metrics
  file, with the profile exactly as written and its five jobs GROUPED into one
  sbatch (the grouping command of docs/cluster.md);
- a site copy of the profile (docs/cluster.md: account, partition choice, squeue status
  command) building the split and the student's feature bank, one sbatch each;
- a local run of the teacher cell: the reference for the results.

Last, the cluster is shut down with jobs in it and brought up again: it must come
back empty and idle (about 10 s).

Runs through the cluster use --max-threads 1 (the node has 2 CPUs; the profile
asks up to 8 threads) and the local run too: thread counts change the order of
floating-point sums, and the results must match byte for byte. Their first
status check comes after 2 s instead of the plugin's 40 s, and they keep the
Slurm logs of successful jobs to check them.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from brcd.config import REPO_ROOT
from tests.conftest import job_stats, snakemake_here

PROFILE = REPO_ROOT / "workflow" / "profiles" / "slurm"
CLUSTER_UP = REPO_ROOT / "workflow" / "slurm" / "cluster-up.sh"
CLUSTER_DOWN = REPO_ROOT / "workflow" / "slurm" / "cluster-down.sh"
TEST_CONFIG = REPO_ROOT / "config" / "test.yaml"
TEACHER = "results/synthetic/16/teacher/cibhash/tteacher/seed0"
TEACHER_METRICS = f"{TEACHER}/metrics/teacher.json"
TEACHER_CELL_JOBS = {"split": 1, "features": 1, "train_teacher": 1, "encode_teacher": 1, "evaluate_teacher": 1}
# docs/cluster.md, "Grouping short jobs": a cell's short jobs in one sbatch.
GROUPS = ["--groups", "split=cell", "features=cell", "train_teacher=cell", "encode_teacher=cell",
          "evaluate_teacher=cell"]
# Test-only settings: the first status check after 2 s (plugin default 40 s), Slurm logs kept.
FAST_POLLING = ["--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2",
                "--slurm-keep-successful-logs"]
PROFILE_MAX_MB = 8000  # the largest mem_mb in the profile (test_profile_resources_fit_a_24gb_node)
RUN_TIMEOUT = 420  # s; a run that never notices its jobs finished (docs/cluster.md, pitfalls) fails instead of hanging
SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO_ROOT / "Snakefile"), "--directory", str(workdir), *args]


def run(cmd: list[str], check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def planned_resources(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job a dry run lists, threads included."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        match = re.match(r"(?:local)?rule (\w+):", block)
        if not match:
            continue
        resources = {}
        line = re.search(r"^\s+resources: (.*)$", block, re.M)
        if line:
            resources = dict(item.split("=", 1) for item in line.group(1).split(", "))
        threads = re.search(r"^\s+threads: (\d+)$", block, re.M)
        resources["threads"] = threads.group(1) if threads else "1"
        jobs.append((match.group(1), resources))
    return jobs


# --- fast checks: the profile and the rules --------------------------------------------

@pytest.fixture(scope="module")
def rule_names(tmp_path_factory) -> set[str]:
    """Rule names, from `snakemake --list-rules`, of the test grid with a second seed (rule train_student,
    the selected λ's runs of the other seeds, exists only in a grid that has them)."""
    result = snakemake_here(tmp_path_factory.mktemp("rules"), "--list-rules", "--configfile", str(TEST_CONFIG),
                            "--config", "seeds=[0,1]")
    assert result.returncode == 0, result.stdout + result.stderr
    names = set(result.stdout.split())
    assert {"split", "features", "train_teacher", "evaluate_teacher", "evaluate_candidates", "evaluate_selected",
            "all"} <= names, result.stdout
    return names


def test_workflow_parses_without_cores(tmp_path):
    """Issue: `threads: workflow.cores` stopped every Slurm run at once ("Workflow requires a
    total number of cores"), and `-n` hid it. Parse with the slurm executor and no --cores;
    the bogus target makes Snakemake stop right after parsing, before any submission."""
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="the slurm plugin comes with pip install -e '.[test]'")
    result = snakemake_here(tmp_path, "--executor", "slurm", "--jobs", "1", "no/such/file",
                            "--configfile", str(TEST_CONFIG))
    output = result.stdout + result.stderr
    assert "No rule to produce no/such/file" in output, f"the workflow does not parse without --cores:\n{output}"


def test_profile_names_only_existing_rules(rule_names):
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    named = set(profile.get("set-threads", {})) | set(profile.get("set-resources", {}))
    assert named, "the profile sets no per-rule threads or resources"
    assert named <= rule_names, f"the slurm profile names rules that do not exist: {sorted(named - rule_names)}"
    assert profile["cores"] >= max(profile["set-threads"].values()), "profile `cores` caps the threads it asks for"


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory) -> dict[str, list[tuple[str, dict[str, str]]]]:
    """Dry runs of the test grid with the slurm profile, in bank and in online mode:
    (rule, resources) of every job."""
    root = tmp_path_factory.mktemp("dry")
    jobs = {}
    for mode in ("bank", "online"):
        result = snakemake_here(root / mode, "-n", "--workflow-profile", str(PROFILE), "--configfile",
                                str(TEST_CONFIG), "--config", f"mode={mode}")
        out = result.stdout + result.stderr
        assert result.returncode == 0, f"dry run in {mode} mode failed:\n{out}"
        jobs[mode] = planned_resources(out)
    return jobs


def gpu_requests(jobs: list[tuple[str, dict[str, str]]]) -> dict[str, set[int]]:
    """rule -> the `gpu` values its jobs ask for (0 when they ask for none)."""
    requests: dict[str, set[int]] = {}
    for rule, resources in jobs:
        requests.setdefault(rule, set()).add(int(resources.get("gpu", 0)))
    return requests


def test_gpus_only_where_the_mode_needs_them(dry_runs):
    bank = gpu_requests(dry_runs["bank"])
    assert bank.pop("features") == {1} and bank.pop("time_encoder") == {1}, bank
    assert all(values == {0} for values in bank.values()), f"bank mode: GPU asked by {bank}"
    online = gpu_requests(dry_runs["online"])
    assert "features" not in online
    for rule in ("train_teacher", "train_candidates", "train_candidates_none", "encode_teacher", "time_encoder"):
        assert online.pop(rule) == {1}, (rule, online)
    assert all(values == {0} for values in online.values()), f"online mode: GPU asked by {online}"


def test_profile_resources_fit_a_24gb_node(dry_runs):
    """Issue: `features` asked for 32000 MB. Every job fits a 24 GB node (two side by side), with a time limit."""
    for mode, jobs in dry_runs.items():
        for rule, resources in jobs:
            assert int(resources["mem_mb"]) <= PROFILE_MAX_MB and int(resources["runtime"]) > 0, (mode, rule, resources)


def test_timing_jobs_get_a_node_alone(dry_runs):
    """Locally a timing job holds every core; on Slurm the profile asks for an exclusive node."""
    timing = [(rule, res) for rule, res in dry_runs["bank"] if rule in ("time_encoder", "time_search")]
    assert {rule for rule, _ in timing} == {"time_encoder", "time_search"}
    assert all(res.get("slurm_extra") == "--exclusive" for _, res in timing), timing


# --- the cluster ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    """The single-node test cluster with 2 fake GPUs; skipped, with the reason, where it
    cannot be installed (cluster-up.sh exits 3)."""
    if os.geteuid() != 0:
        pytest.skip("the Slurm test cluster needs root (workflow/slurm/cluster-up.sh installs Debian's Slurm)")
    if shutil.which("apt-get") is None:
        pytest.skip("the Slurm test cluster needs apt-get (it installs Debian's slurmctld, slurmd and munge)")
    up = run([str(CLUSTER_UP), "--gpus", "2"], check=False, timeout=600)
    if up.returncode == 3:
        pytest.skip(up.stderr.strip())
    assert up.returncode == 0, f"cluster-up.sh failed:\n{up.stdout}\n{up.stderr}"
    started_here = "already up" not in up.stdout
    node_mb = int(run(["sinfo", "-h", "-o", "%m"]).stdout.split()[0].rstrip("+"))
    assert node_mb >= PROFILE_MAX_MB, (f"the test cluster's node has {node_mb} MB, the slurm profile asks up to "
                                       f"{PROFILE_MAX_MB} MB per job: run this test on a machine with more memory")
    yield up.stdout
    if started_here:
        run([str(CLUSTER_DOWN)], check=False)


def site_profile(directory: Path) -> Path:
    """A copy of the profile with the site settings docs/cluster.md describes: the account,
    and the plugin's partition choice from partitions.yaml (test cluster: cpu, gpu)."""
    copy = directory / "my-slurm"
    shutil.copytree(PROFILE, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["default-resources"]["slurm_account"] = "brcd"
    config["slurm-partition-config"] = "partitions.yaml"
    (copy / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return copy


def finish(process: subprocess.Popen, name: str, deadline: float) -> str:
    try:
        out, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        raise AssertionError(f"{name} did not finish within {RUN_TIMEOUT} s:\n{out}")
    assert process.returncode == 0, f"{name} failed ({process.returncode}):\n{out}"
    return out


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """The three runs of the module docstring, started together; their outputs and folders."""
    root = tmp_path_factory.mktemp("slurm")
    dirs = {name: root / name for name in ("cell", "site", "local")}
    commands = {
        # docs/cluster.md: the profile's command, on one cell of the test grid, grouped.
        "cell": snakemake_cmd(dirs["cell"], TEACHER_METRICS, "--workflow-profile", str(PROFILE),
                              "--configfile", str(TEST_CONFIG), "--max-threads", "1", *GROUPS, *FAST_POLLING),
        # docs/cluster.md: a site copy of the profile, and squeue for job status.
        "site": snakemake_cmd(dirs["site"], "results/synthetic/split.parquet", "results/synthetic/features/tstudent",
                              "--workflow-profile", str(site_profile(root)), "--configfile", str(TEST_CONFIG),
                              "--max-threads", "1", "--slurm-status-command", "squeue", *FAST_POLLING),
        "local": snakemake_cmd(dirs["local"], TEACHER_METRICS, "--cores", "2", "--max-threads", "1",
                               "--configfile", str(TEST_CONFIG)),
    }
    start = time.monotonic()
    processes = {name: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for name, cmd in commands.items()}
    deadline = start + RUN_TIMEOUT
    try:
        outputs = {name: finish(process, name, deadline) for name, process in processes.items()}
    finally:  # one run failed: stop the others (their Slurm jobs end with cluster-down.sh)
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    print(f"three runs took {time.monotonic() - start:.0f} s")
    return {"dirs": dirs, "out": outputs}


def sacct(job_ids: list[str], fields: str, steps: bool = False) -> list[dict[str, str]]:
    """Accounting records of these Slurm jobs (-X: allocations only, unless steps)."""
    names = fields.split(",")
    cmd = ["sacct", "-n", "-P", "-j", ",".join(job_ids), "-o", fields] + ([] if steps else ["-X"])
    # slurmdbd records a finished job a moment after the run has seen it end.
    for _ in range(20):
        rows = [dict(zip(names, line.split("|"))) for line in run(cmd).stdout.splitlines() if line]
        if rows and all(row.get("State", "COMPLETED") == "COMPLETED" for row in rows):
            break
        time.sleep(0.5)
    return rows


def submitted(output: str) -> list[tuple[str, str]]:
    """(Slurm job id, its log folder: rule_<rule> or group_<group>...) of every sbatch a run made."""
    return [(slurm_id, next(part for part in Path(log).parts if part.startswith(("rule_", "group_"))))
            for _, slurm_id, log in SUBMITTED.findall(output)]


def test_naming_one_cell_schedules_only_that_cell(runs):
    assert job_stats(runs["out"]["cell"]) == TEACHER_CELL_JOBS
    assert job_stats(runs["out"]["local"]) == TEACHER_CELL_JOBS


def test_every_job_of_the_cell_went_through_slurm(runs):
    out = runs["out"]["cell"]
    assert "localrule" not in out, "a job ran on the submit host, not through Slurm"
    (slurm_id, group), = submitted(out)  # one sbatch: the grouped cell
    assert group.startswith("group_cell"), group
    log = next((runs["dirs"]["cell"] / ".snakemake" / "slurm_logs").glob(f"group_cell*/{slurm_id}.log")).read_text()
    ran = re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", log)
    # Each job appears twice in the Slurm log: the job step's Snakemake and the one inside it.
    assert {rule: ran.count(rule) // 2 for rule in set(ran)} == TEACHER_CELL_JOBS, ran
    (job,) = sacct([slurm_id], "JobID,JobName,State,ReqTRES")
    assert job["State"] == "COMPLETED" and "gres/gpu=1" in job["ReqTRES"], job  # features asks for a GPU
    run_id = re.search(r"SLURM run ID: (\S+)", out).group(1)
    assert job["JobName"] == run_id
    # One srun step per job in the group (plus the batch step).
    steps = [row["JobID"] for row in sacct([slurm_id], "JobID,State", steps=True)]
    assert len([s for s in steps if re.fullmatch(rf"{slurm_id}\.\d+", s)]) == sum(TEACHER_CELL_JOBS.values()), steps


def test_slurm_results_equal_the_local_run(runs):
    for path in (f"{TEACHER}/codes.parquet", TEACHER_METRICS):
        slurm_bytes, local_bytes = ((runs["dirs"][name] / path).read_bytes() for name in ("cell", "local"))
        assert slurm_bytes == local_bytes, f"{path} differs between the Slurm and the local run"


def test_site_copy_sets_the_account_and_sends_gpu_jobs_to_the_gpu_partition(runs):
    jobs = submitted(runs["out"]["site"])
    assert sorted(rule for _, rule in jobs) == ["rule_features", "rule_split"], jobs
    rows = {row["JobID"]: row for row in sacct([i for i, _ in jobs], "JobID,State,Account,Partition,ReqTRES")}
    for slurm_id, rule in jobs:
        row = rows[slurm_id]
        assert row["State"] == "COMPLETED" and row["Account"] == "brcd", row
        if rule == "rule_features":
            assert row["Partition"] == "gpu" and "gres/gpu=1" in row["ReqTRES"], row
        else:
            assert row["Partition"] == "cpu" and "gres/gpu" not in row["ReqTRES"], row


def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {seconds:.0f} s"
        time.sleep(0.5)


# Last in the module: it restarts the cluster the tests above used.
def test_a_cluster_that_died_with_jobs_comes_back_empty(cluster):
    """Daemons that die with jobs in them (a killed test session) leave those jobs in
    slurmctld's saved state. cluster-up.sh must bring the cluster back empty and idle,
    with job ids the accounting database has not seen, not with its node allocated to
    jobs that no longer run (CI failed so once: 'node vm is not idle')."""
    leftover = "sleep 611"  # a command line nothing else runs, to clean up after
    old_ids = [int(run(["sbatch", "--parsable", "-t", "5", "-o", "/dev/null", "--wrap", leftover]).stdout
                   .strip().split(";")[0]) for _ in range(2)]
    wait_until(lambda: "RUNNING" in run(["squeue", "-h", "-o", "%T"]).stdout, 30, "a job did not start")
    run(["scontrol", "shutdown"])  # slurmctld saves its state, jobs in it, and the daemons exit
    wait_until(lambda: run(["scontrol", "ping"], check=False).returncode != 0, 30, "slurmctld did not stop")
    try:
        up = run([str(CLUSTER_UP), "--gpus", "2"], check=False, timeout=600)
    finally:
        subprocess.run(["pkill", "-f", leftover], check=False)
    assert up.returncode == 0, f"cluster-up.sh failed:\n{up.stdout}\n{up.stderr}"
    assert "partly up" in up.stdout, up.stdout
    assert run(["squeue", "-h", "-o", "%i"]).stdout.split() == []
    assert set(run(["sinfo", "-h", "-o", "%T"]).stdout.split()) == {"idle"}
    test_job = int(re.search(r"test job (\d+) ran", up.stdout).group(1))
    assert test_job > max(old_ids), (test_job, old_ids)
