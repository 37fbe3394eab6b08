"""Every command README.md shows is run by a test, as written.

The commands are read from README.md's ```bash blocks when the tests run
(backslash continuations joined, trailing comments dropped). Each one must be

- in ``RUN_HERE``: run here, in README order, in one working directory that
  holds the tiny synthetic grid, with the argument order as written and only
  the replacements in ``SUBSTITUTIONS`` (the real demo grid takes minutes);
- in ``VIA_MAKEFILE``: a ``make`` target whose recipe is read from the Makefile
  and run here the same way (``make demo`` builds the tiny grid this way);
- or in ``RUN_ELSEWHERE``, naming the test (or CI step) that runs it.

A README command in none of them fails ``test_every_readme_command_is_run``
with a message saying how to add it; an entry whose command left the README
fails it too. The commands run with a minimal PATH (no activated virtualenv),
as a reader's fresh shell and ``make demo`` do.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import job_stats

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAKEFILE = REPO / "Makefile"
COMMAND_BLOCKS = ("bash", "sh", "shell", "console")

DEMO_CELL = "results/fashion_mnist/64/student/cibhash/lite2/lite0/brcd/lambda1/seed0/metrics/asym.json"
TEST_CELL = "results/synthetic/16/student/cibhash/tteacher/tstudent/brcd/lambda1/seed0/metrics/asym.json"

#: README text -> what runs here instead (the demo grid takes minutes; the tiny grid has the same rules).
SUBSTITUTIONS = {
    "config/demo.yaml": "config/test.yaml",
    "config/study.yaml": "config/test.yaml",
    DEMO_CELL: TEST_CELL,
    "reports/demo.parquet": "reports/test.parquet",
    # the tiny grid has one run: compared with itself, it must reach its own conclusions
    "reports/demo.findings.parquet": "reports/test.findings.parquet",
    "other-machine/demo.findings.parquet": "reports/test.findings.parquet",
    "other-machine/demo.parquet": "reports/test.parquet",
    "demo-machines.md": "test-machines.md",
}


@dataclass(frozen=True)
class Expect:
    """What a command run here must do: exit 0, then ``check(workdir, output)``;
    ``before(workdir)`` prepares what the command should redo."""

    check: Callable[[Path, str], None] = lambda workdir, output: None
    before: Callable[[Path], None] = lambda workdir: None




def _grid_built(workdir: Path, output: str) -> None:
    assert "| `brcd`" in (workdir / "reports/test.md").read_text()
    assert (workdir / TEST_CELL).is_file()


def _plans_paper_grid(workdir: Path, output: str) -> None:
    from brcd.config import load_config
    from brcd.workflow import benchmark_files

    jobs = job_stats(output)
    assert jobs["train_student"] > 100 and jobs["split"] == 3, jobs
    # the job list the report's time table and benchmarks/paper_gpu_hours.py enumerate is Snakemake's plan
    planned = {rule: len(paths) for rule, paths in benchmark_files(load_config(REPO / "config/paper.yaml",
                                                                                check_registries=False)).items()}
    candidates = sum(count for rule, count in jobs.items() if rule.startswith("train_candidates"))
    assert planned == {**{r: c for r, c in jobs.items() if r in planned}, "train_candidates": candidates}, (planned, jobs)
    assert not (workdir / "results/cifar10").exists()  # a dry run builds nothing


def _remove_cell_metrics(workdir: Path) -> None:
    (workdir / TEST_CELL).unlink()


def _rebuilt_only_that_cell(workdir: Path, output: str) -> None:
    assert (workdir / TEST_CELL).is_file()
    assert job_stats(output) == {"evaluate": 1}, output


def _html_report(workdir: Path, output: str) -> None:
    assert (workdir / "report.html").stat().st_size > 10_000


def _printed_config(workdir: Path, output: str) -> None:
    assert "name: test" in output and "split_seed: 0" in output


def _printed_projection(workdir: Path, output: str) -> None:
    assert "GPU-hours in all" in output and "vitb16" in output and "train_candidates" in output, output


_RESULTS_BEFORE: dict[Path, dict] = {}


def _results_state(workdir: Path) -> dict:
    return {path: path.stat().st_mtime_ns for path in (workdir / "results").rglob("*") if path.is_file()}


def _snapshot_results(workdir: Path) -> None:
    _RESULTS_BEFORE[workdir] = _results_state(workdir)


def _printed_lr_choice(workdir: Path, output: str) -> None:
    assert "no KD, seed 0" in output and "chosen: lr " in output, output
    assert _results_state(workdir) == _RESULTS_BEFORE.pop(workdir), "it must leave the grid's results alone"


def _printed_table(workdir: Path, output: str) -> None:
    assert "mean" in output and "brcd" in output


def _same_conclusions(workdir: Path, output: str) -> None:
    text = (workdir / "test-machines.md").read_text()
    assert "# Same conclusions? this machine vs other machine" in text and "columns agree**" in text
    assert "**Yes:" in text  # a run and itself
    assert "**0 of " in text and " reversed**" in text  # the within-the-intervals line
    assert "Seed by seed" in text and "with one seed" in text  # --tables: the tiny grid has one seed


#: README command (as written, whitespace collapsed) -> what it must do when run here.
RUN_HERE: dict[str, Expect] = {
    ".venv/bin/snakemake --cores 2 --configfile config/demo.yaml": Expect(_grid_built),
    ".venv/bin/snakemake -n --configfile config/paper.yaml": Expect(_plans_paper_grid),
    f".venv/bin/snakemake --cores 2 {DEMO_CELL} --configfile config/demo.yaml":
        Expect(_rebuilt_only_that_cell, before=_remove_cell_metrics),
    ".venv/bin/snakemake --cores 2 --configfile config/demo.yaml --report report.html": Expect(_html_report),
    ".venv/bin/brcd check-config config/demo.yaml": Expect(_printed_config),
    ".venv/bin/snakemake --cores 2 --configfile config/study.yaml": Expect(_grid_built),
    ".venv/bin/python benchmarks/student_lr.py --config config/study.yaml --lr 0.001 0.002 0.004 0.008 0.016":
        Expect(_printed_lr_choice, before=_snapshot_results),
    ".venv/bin/python benchmarks/paper_gpu_hours.py --measured config/study.yaml": Expect(_printed_projection),
    ".venv/bin/python -c \"import pandas as pd; t = pd.read_parquet('reports/demo.parquet'); t = t[t.in_tables]; "
    "print(t.groupby(['bits', 'paradigm', 'kd']).map_at_k.agg(['mean', 'std', 'count']))\"": Expect(_printed_table),
    ".venv/bin/brcd compare-conclusions reports/demo.findings.parquet other-machine/demo.findings.parquet "
    "--tables reports/demo.parquet other-machine/demo.parquet "
    "--label-a \"this machine\" --label-b \"other machine\" --out demo-machines.md --check": Expect(_same_conclusions),
}

#: README ``make`` command -> Makefile target whose recipe runs here (its prerequisites `setup` and
#: `data` install .venv, which runs these tests, and Fashion-MNIST, which config/test.yaml does not use).
VIA_MAKEFILE: dict[str, str] = {
    "make demo": "demo",  # the tiny grid every other command here works on (the `tiny_grid` fixture)
}

#: README command -> the test or CI step that runs it.
RUN_ELSEWHERE: dict[str, str] = {
    "make test": "CI: .ci/run runs exactly `make test` (running it from a test would recurse)",
    # the cluster commands need a Slurm cluster: tests/test_slurm.py brings one up (root, apt) and runs them
    ".venv/bin/pip install -e '.[slurm]'": "CI: `make test` installs .[test], whose test extra pins the same plugin",
    ".venv/bin/snakemake --workflow-profile workflow/profiles/slurm --configfile config/paper.yaml":
        "tests/test_slurm.py, runs fixture 'cell'",
    "cp -r workflow/profiles/slurm my-slurm": "tests/test_slurm.py::site_profile",
    ".venv/bin/snakemake --workflow-profile my-slurm --configfile config/paper.yaml": "tests/test_slurm.py, runs fixture 'site'",
    ".venv/bin/snakemake results/fashion_mnist/64/teacher/cibhash/lite2/seed0/metrics/teacher.json --workflow-profile "
    "workflow/profiles/slurm --configfile config/demo.yaml --groups split=cell features=cell train_teacher=cell "
    "encode_teacher=cell evaluate_teacher=cell": "tests/test_slurm.py, runs fixture 'cell'",
    "sudo workflow/slurm/cluster-up.sh --gpus 2": "tests/test_slurm.py::cluster",
    "sudo workflow/slurm/cluster-down.sh": "tests/test_slurm.py::cluster",
    ".venv/bin/snakemake --workflow-profile my-slurm --configfile config/paper.yaml --slurm-status-command squeue":
        "tests/test_slurm.py, runs fixture 'site'",
}


# ---------------------------------------------------------------- reading the README


@dataclass(frozen=True)
class Command:
    line: int  # README line the command starts on
    text: str  # as written, continuations joined, comment dropped, whitespace collapsed

    def __str__(self) -> str:
        return f"README.md line {self.line}: {self.text}"


def _strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a ``#`` outside quotes, after a blank)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def readme_commands(text: str) -> list[Command]:
    """Every command of the README's shell code blocks, in order."""
    commands: list[Command] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*```\s*(\w*)", lines[i])
        if not fence:
            i += 1
            continue
        kind, i = fence.group(1), i + 1
        pending, start = "", None
        while i < len(lines) and not re.match(r"^\s*```", lines[i]):
            if kind in COMMAND_BLOCKS:
                line = _strip_comment(lines[i]).rstrip()
                if line.strip():
                    start = start or i + 1
                    continued = line.endswith("\\")
                    pending += " " + (line[:-1] if continued else line)
                    if not continued:
                        commands.append(Command(start, " ".join(pending.split())))
                        pending, start = "", None
            i += 1
        i += 1
    return commands


def makefile_recipe(target: str) -> list[str]:
    """The recipe lines of ``target`` with the Makefile's own variables expanded."""
    text = MAKEFILE.read_text()
    variables = dict(re.findall(r"^(\w+)\s*[:?]?=\s*(.*?)\s*$", text, re.M))
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n?)+)", text, re.M)
    assert match, f"Makefile has no recipe for `{target}`"

    def expand(line: str) -> str:
        while (new := re.sub(r"\$\((\w+)\)", lambda m: variables[m.group(1)], line)) != line:
            line = new
        return line

    return [expand(line.strip()) for line in match.group(1).splitlines() if line.strip()]


def substitute(command: str) -> str:
    for old, new in SUBSTITUTIONS.items():
        command = command.replace(old, new)
    return command


COMMANDS = readme_commands(README.read_text())


# ---------------------------------------------------------------- coverage


def test_readme_parser_joins_continuations_and_drops_comments():
    text = "x\n```bash\nmake demo    # a # comment\nsnakemake --a \\\n    b   # one\necho '# kept'\n```\n```yaml\nk: v\n```\n"
    assert readme_commands(text) == [Command(3, "make demo"), Command(4, "snakemake --a b"),
                                     Command(6, "echo '# kept'")]


def test_every_readme_command_is_run():
    known = {**RUN_HERE, **VIA_MAKEFILE, **RUN_ELSEWHERE}
    missing = [str(c) for c in COMMANDS if c.text not in known]
    assert not missing, (
        "README commands that no test runs:\n  " + "\n  ".join(missing) + "\nAdd each to tests/test_readme.py: "
        "to RUN_HERE (with an Expect saying what it must do; it then runs in the tiny-grid working directory, "
        "after the replacements in SUBSTITUTIONS, which you may extend), to VIA_MAKEFILE (a `make` target), "
        "or to RUN_ELSEWHERE with the test that runs it."
    )
    in_readme = {c.text for c in COMMANDS}
    stale = [text for text in known if text not in in_readme]
    assert not stale, ("tests/test_readme.py lists commands the README no longer shows; update or remove them:\n  "
                       + "\n  ".join(stale))
    assert not set(RUN_HERE) & set(RUN_ELSEWHERE), "a command is both run here and elsewhere"


# ---------------------------------------------------------------- running them


def _environment() -> dict[str, str]:
    """A fresh shell's environment: no virtualenv on PATH, one thread per job."""
    keep = {key: os.environ[key] for key in ("HOME", "LANG", "TMPDIR", "HF_HOME", "TORCH_HOME") if key in os.environ}
    return {**keep, "PATH": "/usr/local/bin:/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run(workdir: Path, command: str, timeout: int = 600) -> str:
    result = subprocess.run(["bash", "-c", command], cwd=workdir, env=_environment(), capture_output=True,
                            text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"`{command}` failed (exit {result.returncode}):\n{output[-6000:]}"
    return output


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory):
    """A working directory laid out like the repository (results go here, not into the
    checkout), with the tiny grid built by the `make demo` recipe on config/test.yaml."""
    workdir = tmp_path_factory.mktemp("readme")
    for name in ("Snakefile", "workflow", "config", "benchmarks"):
        (workdir / name).symlink_to(REPO / name)
    (workdir / ".venv").symlink_to(Path(sys.prefix))  # the environment running these tests
    for line in makefile_recipe(VIA_MAKEFILE["make demo"]):
        run(workdir, substitute(line))
    return workdir


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.text in VIA_MAKEFILE], ids=str)
def test_make_target_runs(tiny_grid, command):
    """`make demo`: its recipe (run by the fixture) built the whole tiny grid."""
    _grid_built(tiny_grid, "")


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.text in RUN_HERE], ids=str)
def test_readme_command_runs(tiny_grid, command):
    expect = RUN_HERE[command.text]
    expect.before(tiny_grid)
    output = run(tiny_grid, substitute(command.text))
    expect.check(tiny_grid, output)
