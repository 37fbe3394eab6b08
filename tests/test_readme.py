"""Every command the documentation shows is run by a test, as written.

The documentation is README.md and every Markdown file under docs/ (docs/runs/
included). Its commands are read from the shell code blocks (```bash, ```sh,
```shell, ```console) when the tests run (backslash continuations joined,
trailing comments dropped). Each one must be

- in ``RUN_HERE``: run here, in document order (README.md first, then docs/ by
  path), in one working directory that holds the tiny synthetic grid, with the
  argument order as written and only the replacements in ``SUBSTITUTIONS``
  (the real demo grid takes minutes);
- in ``VIA_MAKEFILE``: a ``make`` target whose recipe is read from the Makefile
  and run here the same way (``make demo`` builds the tiny grid this way);
- or in ``RUN_ELSEWHERE``, naming the test (or CI step) that runs it.

A documented command in none of them fails ``test_every_documented_command_is_run``
with a message saying how to add it; an entry whose command left every document
fails it too. Each (document, command) is its own test case. The commands run
with a minimal PATH (no activated virtualenv), as a reader's fresh shell and
``make demo`` do.

Output shown in the documentation goes in ```text blocks; every fenced block
must name its language, so that no command hides in an untagged block. Every
relative link of the documentation must point to an existing file (and, into a
Markdown file, to an existing heading).
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

from tests.conftest import copy_tiny_grid, job_stats

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
MAKEFILE = REPO / "Makefile"
COMMAND_BLOCKS = ("bash", "sh", "shell", "console")

DEMO_CELL = "results/fashion_mnist/64/student/cibhash/lite2/lite0/brcd/lambda1/seed0/metrics/asym.json"
TEST_CELL = "results/synthetic/16/student/cibhash/tteacher/tstudent/brcd/lambda1/seed0/metrics/asym.json"
CIFAR10_TEACHER = "results/cifar10_jpeg/64/teacher/cibhash/lite2/seed0/model.pt"
TEST_TEACHER = "results/synthetic/16/teacher/cibhash/tteacher/seed0/model.pt"

#: documented text -> what runs here instead (the demo grid takes minutes; the tiny grid has the same rules).
SUBSTITUTIONS = {
    "config/demo.yaml": "config/test.yaml",
    "config/study.yaml": "config/test.yaml",
    "config/cifar10.yaml": "config/test.yaml",
    CIFAR10_TEACHER: TEST_TEACHER,
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
    # (the rules of a λ grid's candidates, train_candidates* and evaluate_candidates*, share one benchmark template)
    planned = {rule: len(paths) for rule, paths in benchmark_files(load_config(REPO / "config/paper.yaml")).items()}
    families = {rule: next((f for f in ("train_candidates", "evaluate_candidates") if rule.startswith(f)), rule)
                for rule in jobs}
    counted = {family: sum(count for rule, count in jobs.items() if families[rule] == family)
               for family in dict.fromkeys(families.values())}
    assert planned == {r: c for r, c in counted.items() if r in planned}, (planned, jobs)
    assert not (workdir / "results/cifar10").exists()  # a dry run builds nothing


def _remove_cell_metrics(workdir: Path) -> None:
    (workdir / TEST_CELL).unlink()


def _rebuilt_only_that_cell(workdir: Path, output: str) -> None:
    assert (workdir / TEST_CELL).is_file()
    assert job_stats(output) == {"evaluate_candidates": 1}, output  # the tiny grid's brcd has one λ candidate


def _html_report(workdir: Path, output: str) -> None:
    assert (workdir / "report.html").stat().st_size > 10_000


def _narrowed_to_the_built_grid(workdir: Path, output: str) -> None:
    # the tiny grid has bits [16] only: narrowed to [16] (passed as the string '16'), it is the grid already
    # built, with the same config hashes -- nothing to do
    assert "Nothing to be done" in output, output


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


def _printed_scale(workdir: Path, output: str) -> None:
    assert "suggested grid" in output and "\nbrcd " in output, output
    assert _results_state(workdir) == _RESULTS_BEFORE.pop(workdir), "it must leave the grid's results alone"


def _printed_job_split(workdir: Path, output: str) -> None:
    assert "GEMM (fp32, 1 thread" in output and "share of all jobs' time: loading" in output, output
    assert _results_state(workdir) == _RESULTS_BEFORE.pop(workdir), "it must leave the grid's results alone"


def _printed_size_choice(workdir: Path, output: str) -> None:
    assert "the teacher alone, then each student without KD" in output, output
    assert "chosen (smallest size within 0.01 of the best mean validation mAP, full bank within 30 TFLOP): tteacher " in output, output
    assert _results_state(workdir) == _RESULTS_BEFORE.pop(workdir), "it must leave the grid's results alone"


def _printed_step_costs(workdir: Path, output: str) -> None:
    from brcd.distill import KD_LOSSES

    assert "single-thread fp32 GEMM" in output and "x kd" in output, output
    printed = {line.split()[0] for line in output.splitlines() if line.strip()}
    assert set(KD_LOSSES.names()) <= printed, output


def _printed_kernel_times(workdir: Path, output: str) -> None:
    from brcd.models.linear import LINEAR_KERNELS

    rows = {fields[0]: fields[1:] for fields in map(str.split, output.splitlines()) if len(fields) == 6}
    assert set(LINEAR_KERNELS.names()) <= set(rows), output
    assert rows["blas"][2] == rows["blas"][4] == "1.00", output  # the baseline's own ratios
    difference, scale = re.search(r"difference from blas: (\S+) \(largest logit (\S+)\)", output).groups()
    assert float(difference) <= 1e-5 * float(scale), output  # fp32 both


def _printed_scheduler_overhead(workdir: Path, output: str) -> None:
    rows = {tuple(fields[:2]): fields[3:] for fields in map(str.split, output.splitlines())
            if len(fields) == 5 and fields[0][:1].isdigit()}  # timespan, scheduler, wall, Snakemake CPU, threads
    # Snakemake's default timespan, then the profile's; each with Snakemake's timers, then the workflow's one
    assert set(rows) == {(span, timers) for span in ("100/1s", "1000/5s") for timers in ("snakemake", "coalesced")}
    assert all(float(cpu) > 0 and int(threads) > 1 for cpu, threads in rows.values()), output
    # one pending timer: never more threads than on Snakemake's own timers, whose runs start one per pass
    assert all(int(rows[span, "coalesced"][1]) <= int(rows[span, "snakemake"][1]) for span in ("100/1s", "1000/5s"))
    assert "1000/5s coalesced / 100/1s snakemake: wall " in output, output


def _teacher_built(workdir: Path, output: str) -> None:
    assert (workdir / TEST_TEACHER).is_file() and (workdir / TEST_TEACHER).with_name("history.tsv").is_file()


def _printed_table(workdir: Path, output: str) -> None:
    assert "mean" in output and "brcd" in output


def _same_conclusions(workdir: Path, output: str) -> None:
    text = (workdir / "test-machines.md").read_text()
    assert "# Same conclusions? this machine vs other machine" in text and "columns agree**" in text
    assert "**Yes:" in text  # a run and itself
    assert "**0 of " in text and " reversed**" in text  # the within-the-intervals line
    assert "Seed by seed" in text and "with one seed" in text  # --tables: the tiny grid has one seed


#: documented command (as written, whitespace collapsed) -> what it must do when run here.
RUN_HERE: dict[str, Expect] = {
    ".venv/bin/snakemake --cores 2 --configfile config/demo.yaml": Expect(_grid_built),
    ".venv/bin/snakemake -n --configfile config/paper.yaml": Expect(_plans_paper_grid),
    f".venv/bin/snakemake --cores 2 {DEMO_CELL} --configfile config/demo.yaml":
        Expect(_rebuilt_only_that_cell, before=_remove_cell_metrics),
    ".venv/bin/snakemake --cores 2 --configfile config/demo.yaml --report report.html": Expect(_html_report),
    ".venv/bin/snakemake -n --configfile config/demo.yaml --config 'bits=[16]'": Expect(_narrowed_to_the_built_grid),
    ".venv/bin/brcd check-config config/demo.yaml": Expect(_printed_config),
    ".venv/bin/snakemake --workflow-profile workflow/profiles/default --configfile config/study.yaml": Expect(_grid_built),
    ".venv/bin/python benchmarks/student_lr.py --config config/study.yaml --lr 0.001 0.002 0.004 0.008 0.016":
        Expect(_printed_lr_choice, before=_snapshot_results),
    ".venv/bin/python benchmarks/paper_gpu_hours.py --measured config/study.yaml": Expect(_printed_projection),
    ".venv/bin/python benchmarks/kd_scale.py --config config/demo.yaml": Expect(_printed_scale, before=_snapshot_results),
    ".venv/bin/python benchmarks/student_job.py --config config/demo.yaml":
        Expect(_printed_job_split, before=_snapshot_results),
    ".venv/bin/python benchmarks/input_size.py --config config/cifar10.yaml --teacher-sizes 32 64 96 128 "
    "--student-sizes 32 64 96 --max-bank-tflop 30": Expect(_printed_size_choice, before=_snapshot_results),
    f".venv/bin/snakemake --cores 2 {CIFAR10_TEACHER} --configfile config/cifar10.yaml": Expect(_teacher_built),
    ".venv/bin/python benchmarks/step_cost.py --bits 16 --train-size 200 --batch-size 16 --hidden 32 --repeats 3":
        Expect(_printed_step_costs),
    ".venv/bin/python benchmarks/matmul_kernels.py": Expect(_printed_kernel_times),
    ".venv/bin/python benchmarks/scheduler_overhead.py --jobs 6 --sleep 0.1 --inputs 2":
        Expect(_printed_scheduler_overhead),
    ".venv/bin/python -c \"import pandas as pd; t = pd.read_parquet('reports/demo.parquet'); t = t[t.in_tables]; "
    "print(t.groupby(['bits', 'paradigm', 'kd']).map_at_k.agg(['mean', 'std', 'count']))\"": Expect(_printed_table),
    ".venv/bin/brcd compare-conclusions reports/demo.findings.parquet other-machine/demo.findings.parquet "
    "--tables reports/demo.parquet other-machine/demo.parquet "
    "--label-a \"this machine\" --label-b \"other machine\" --out demo-machines.md --check": Expect(_same_conclusions),
}

#: documented ``make`` command -> Makefile target whose recipe runs here (its prerequisites `setup` and
#: `data` install .venv, which runs these tests, and Fashion-MNIST, which config/test.yaml does not use).
VIA_MAKEFILE: dict[str, str] = {
    "make demo": "demo",  # builds the tiny grid every other command here works on (make_demo_here)
}

#: the long-run commands of docs/workflow.md ("Long runs: background and resume"): tests/test_resume.py runs them
#: as written (after SUBSTITUTIONS) on the tiny grid, around a run it kills
BACKGROUND_RUN = ("nohup .venv/bin/snakemake --workflow-profile workflow/profiles/default --keep-going --rerun-incomplete "
                  "--configfile config/study.yaml "
                  "> study.log 2>&1 &")
PROGRESS = "grep 'steps (' study.log | tail -n 1"
UNLOCK = ".venv/bin/snakemake --unlock --configfile config/study.yaml"
RESUME_TEST = "tests/test_resume.py::test_a_killed_run_resumes_where_it_stopped"

#: documented command -> the test or CI step that runs it.
RUN_ELSEWHERE: dict[str, str] = {
    BACKGROUND_RUN: RESUME_TEST,
    PROGRESS: RESUME_TEST,
    UNLOCK: RESUME_TEST,
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


# ---------------------------------------------------------------- reading the documentation


def documents() -> list[Path]:
    """README.md, then every Markdown file under docs/ (sorted by path)."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


@dataclass(frozen=True)
class Command:
    file: str  # document, relative to the repository
    line: int  # line the command starts on
    text: str  # as written, continuations joined, comment dropped, whitespace collapsed

    def __str__(self) -> str:
        return f"{self.file} line {self.line}: {self.text}"


@dataclass(frozen=True)
class Fence:
    line: int  # line of the opening fence
    end: int  # line of the closing fence
    kind: str  # its language ("" when it names none)
    body: list[tuple[int, str]]  # (line number, text) of the lines inside


_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")


def fences(text: str) -> list[Fence]:
    """The fenced code blocks of a Markdown text, in order (an unclosed one runs to the end)."""
    found: list[Fence] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        marker, start, body = opening.group(1), i + 1, []
        i += 1
        while i < len(lines) and not re.match(rf"^\s*{re.escape(marker[0])}{{{len(marker)},}}\s*$", lines[i]):
            body.append((i + 1, lines[i]))
            i += 1
        found.append(Fence(start, i + 1, opening.group(2), body))
        i += 1
    return found


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


def doc_commands(text: str, file: str = "README.md") -> list[Command]:
    """Every command of a document's shell code blocks, in order."""
    commands: list[Command] = []
    for fence in fences(text):
        if fence.kind not in COMMAND_BLOCKS:
            continue
        pending, start = "", None
        for number, raw in fence.body:
            line = _strip_comment(raw).rstrip()
            if not line.strip():
                continue
            start = start or number
            continued = line.endswith("\\")
            pending += " " + (line[:-1] if continued else line)
            if not continued:
                commands.append(Command(file, start, " ".join(pending.split())))
                pending, start = "", None
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


COMMANDS = [command for doc in documents() for command in doc_commands(doc.read_text(), relative(doc))]


def _case(command: Command):
    """One test case per (document, command); its id names both, not the line (ids stay stable)."""
    return pytest.param(command.file, command, id=f"{command.file}: {command.text}")


# ---------------------------------------------------------------- links


def prose(text: str, code: str = "code") -> list[tuple[int, str]]:
    """(line number, text) of the lines outside fenced code blocks, each inline code span replaced by
    ``code`` (``None``: by its content, without the backticks)."""
    inside = {number for fence in fences(text) for number in range(fence.line, fence.end + 1)}
    return [(number, re.sub(r"(`+)(.+?)\1", lambda m: m.group(2).strip() if code is None else code, line))
            for number, line in enumerate(text.splitlines(), 1) if number not in inside]


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every inline Markdown link ``[text](target)`` outside code."""
    return [(number, match.group(1)) for number, line in prose(text)
            for match in re.finditer(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line)]


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown text (duplicates get -1, -2, ...)."""
    seen: dict[str, int] = {}
    for _, line in prose(text, code=None):
        heading = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1))  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
    found = set()
    for slug, count in seen.items():
        found |= {slug, *(f"{slug}-{n}" for n in range(1, count + 1))}
    return found


def broken_links(doc: Path) -> list[str]:
    """The relative links of ``doc`` whose file (or heading) does not exist."""
    broken = []
    for number, target in links(doc.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        where = f"{relative(doc)} line {number}: ({target})"
        if not file.exists():
            broken.append(f"{where}: no file {path}")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file.read_text()):
            broken.append(f"{where}: {path or relative(doc)} has no heading with anchor #{fragment}")
    return broken


# ---------------------------------------------------------------- coverage


def test_parser_joins_continuations_and_drops_comments():
    text = ("x\n```bash\nmake demo    # a # comment\nsnakemake --a \\\n    b   # one\necho '# kept'\n```\n"
            "```yaml\nk: v\n```\n  ```sh\n  ls -l\n  ```\n")
    assert doc_commands(text, "docs/x.md") == [
        Command("docs/x.md", 3, "make demo"), Command("docs/x.md", 4, "snakemake --a b"),
        Command("docs/x.md", 6, "echo '# kept'"), Command("docs/x.md", 12, "ls -l")]


def test_link_parser_and_anchors():
    text = ("# Run `one` cell, partial reruns\n\nSee [a](docs/a.md#x) and `[not](a link)`.\n"
            "```bash\n# not a heading\necho [no](link)\n```\n## Run `one` cell, partial reruns\n")
    assert links(text) == [(3, "docs/a.md#x")]
    assert anchors(text) == {"run-one-cell-partial-reruns", "run-one-cell-partial-reruns-1"}
    assert "student_lrpy-the-students-learning-rate" in anchors("## `student_lr.py`: the students' learning rate\n")


def test_documents_are_read():
    files = {relative(doc) for doc in documents()}
    assert "README.md" in files and any(name.startswith("docs/") for name in files), files
    assert {c.file for c in COMMANDS} >= {"README.md"}, "README.md shows no command any more?"


def test_every_documented_command_is_run():
    known = {**RUN_HERE, **VIA_MAKEFILE, **RUN_ELSEWHERE}
    missing = [str(c) for c in COMMANDS if c.text not in known]
    assert not missing, (
        "documented commands that no test runs:\n  " + "\n  ".join(missing) + "\nAdd each to tests/test_readme.py: "
        "to RUN_HERE (with an Expect saying what it must do; it then runs in the tiny-grid working directory, "
        "after the replacements in SUBSTITUTIONS, which you may extend), to VIA_MAKEFILE (a `make` target), "
        "or to RUN_ELSEWHERE with the test that runs it. Output that is not a command goes in a ```text block."
    )
    documented = {c.text for c in COMMANDS}
    stale = [text for text in known if text not in documented]
    assert not stale, ("tests/test_readme.py lists commands that neither README.md nor docs/ shows any more; "
                       "update or remove them:\n  " + "\n  ".join(stale))
    assert not set(RUN_HERE) & set(RUN_ELSEWHERE), "a command is both run here and elsewhere"


def test_every_code_block_names_its_language():
    untagged = [f"{relative(doc)} line {fence.line}" for doc in documents() for fence in fences(doc.read_text())
                if not fence.kind]
    assert not untagged, ("code blocks without a language (commands go in ```bash, output in ```text):\n  "
                          + "\n  ".join(untagged))


def test_relative_links_point_to_existing_files():
    broken = [line for doc in documents() for line in broken_links(doc)]
    assert not broken, "broken links in the documentation:\n  " + "\n  ".join(broken)


# ---------------------------------------------------------------- running them


def _environment() -> dict[str, str]:
    """A fresh shell's environment: no virtualenv on PATH, one thread per job. PYTHONPATH is kept when set:
    the commands must run the `brcd` these tests import (a checkout sharing another one's virtualenv sets
    it to its own tree; without it, the environment's editable install would name the other tree's code)."""
    keep = {key: os.environ[key] for key in ("HOME", "LANG", "TMPDIR", "HF_HOME", "TORCH_HOME", "PYTHONPATH")
            if key in os.environ}
    return {**keep, "PATH": "/usr/local/bin:/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run(workdir: Path, command: str, timeout: int = 600) -> str:
    result = subprocess.run(["bash", "-c", command], cwd=workdir, env=_environment(), capture_output=True,
                            text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"`{command}` failed (exit {result.returncode}):\n{output[-6000:]}"
    return output


def make_demo_here(workdir: Path) -> None:
    """Lay ``workdir`` out like the repository (results go there, not into the checkout) and build the
    tiny grid in it with the `make demo` recipe on config/test.yaml, run as written (after SUBSTITUTIONS).
    The session's one build of the tiny grid (tests/conftest.py, ``built_tiny_grid``)."""
    for name in ("Snakefile", "workflow", "config", "benchmarks"):
        (workdir / name).symlink_to(REPO / name)
    (workdir / ".venv").symlink_to(Path(sys.prefix))  # the environment running these tests
    for line in makefile_recipe(VIA_MAKEFILE["make demo"]):
        run(workdir, substitute(line))


@pytest.fixture(scope="module")
def tiny_grid(built_tiny_grid, tmp_path_factory):
    """A working directory laid out like the repository, with the tiny grid built by the `make demo`
    recipe on config/test.yaml: this module's copy of the session's build (the commands change it)."""
    return copy_tiny_grid(built_tiny_grid, tmp_path_factory.mktemp("readme") / "grid")


@pytest.mark.parametrize(("document", "command"), [_case(c) for c in COMMANDS if c.text in VIA_MAKEFILE])
def test_make_target_runs(tiny_grid, document, command):
    """`make demo`: its recipe (run by the fixture) built the whole tiny grid."""
    _grid_built(tiny_grid, "")


@pytest.mark.parametrize(("document", "command"), [_case(c) for c in COMMANDS if c.text in RUN_HERE])
def test_documented_command_runs(tiny_grid, document, command):
    """A documented command, run as written (after SUBSTITUTIONS) in the tiny-grid working directory."""
    expect = RUN_HERE[command.text]
    expect.before(tiny_grid)
    output = run(tiny_grid, substitute(command.text))
    expect.check(tiny_grid, output)
