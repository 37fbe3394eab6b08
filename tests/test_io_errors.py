"""Failure paths of reading and writing files: damaged inputs, unwritable folders, full disks.

Every error must be a BrcdError (one clean CLI line) naming the file and the
fix, raised before expensive work, with nothing computed lost and no
temporary file or folder left behind.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from brcd import io as brcd_io
from brcd.errors import BrcdError, DataError
from brcd.io import OutputError, read_parquet, read_parquet_metadata, write_json, write_parquet

DiskUsage = namedtuple("DiskUsage", "total used free")


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def small_disk(monkeypatch, free: int) -> None:
    """Make every free-space query report ``free`` bytes."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(10 ** 12, 10 ** 12 - free, free))


# ----------------------------------------------------------------------------- damaged Parquet files


def _split_file(path: Path) -> None:
    from brcd.data.splits import SPLITS

    n = 8
    table = pa.table({
        "index": pa.array(np.arange(n, dtype=np.int64)),
        "split": pa.array([SPLITS[i % 4] for i in range(n)], type=pa.string()),
        "labels": pa.FixedSizeListArray.from_arrays(pa.array(np.eye(n, 2, dtype=np.uint8).reshape(-1)), 2),
    })
    write_parquet(path, table, {"dataset": "synthetic", "seed": 0, "num_classes": 2, "sizes": {}})


def _code_file(path: Path) -> None:
    from brcd.codes import write_codes

    metadata = {"dataset": "synthetic", "model": "cibhash", "bits": 16, "backbone": "b", "seed": 0, "config_hash": "x"}
    write_codes(path, np.arange(4), ["train", "query", "val", "database"],
                np.arange(8, dtype=np.uint8).reshape(4, 2), metadata)


def _clusters_file(path: Path) -> None:
    table = pa.table({"index": pa.array(np.arange(4, dtype=np.int64)), "cluster": pa.array(np.zeros(4, np.int32))})
    write_parquet(path, table, {"K": 1, "bits": 16, "centres": [[0.0] * 16], "mask": [[1] * 16]})


def _read_split(path):
    from brcd.data.splits import Splits

    return Splits(path)


def _read_codes(path):
    from brcd.codes import read_codes

    return read_codes(path)


def _read_clusters(path):
    from brcd.cluster import load_clusters

    return load_clusters(path)


READERS = {
    # name: (relative path as the workflow lays it out, writer, reader, what the message says, rule)
    "split": ("results/synthetic/split.parquet", _split_file, _read_split, "split file", "`split` rule"),
    "codes": ("results/synthetic/16/teacher/h/t/seed0/codes.parquet", _code_file, _read_codes, "code file",
              "`encode_teacher` rule"),
    "student_codes": ("results/synthetic/16/student/h/t/s/brcd/lambda1/seed0/codes.parquet", _code_file, _read_codes,
                      "code file", "`train_candidates` rule"),
    "clusters": ("results/synthetic/16/clusters/h/t/seed0/clusters.parquet", _clusters_file, _read_clusters,
                 "clusters file", "--forcerun"),
}


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garble_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[8:middle] = bytes(len(data[8:middle]))  # keep the magic bytes, zero the column chunks
    path.write_bytes(bytes(data))


def empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [truncate, empty, garble_middle])
@pytest.mark.parametrize("kind", sorted(READERS))
def test_damaged_parquet_names_file_and_rebuild(tmp_path, kind, damage):
    rel, write, read, what, rule = READERS[kind]
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    write(path)
    read(path)  # intact: reads
    damage(path)
    with pytest.raises(DataError) as info:
        read(path)
    message = str(info.value)
    assert what in message and str(path) in message
    assert f"--forcerun {path}" in message and rule in message  # deleting it would not make Snakemake rebuild it
    assert "corrupt" in message or "truncated" in message


def test_damaged_parquet_metadata_read(tmp_path):
    path = tmp_path / "results/synthetic/split.parquet"
    path.parent.mkdir(parents=True)
    _split_file(path)
    truncate(path)
    with pytest.raises(DataError, match=r"split.parquet is corrupt or truncated.*`split` rule.*--forcerun .*split.parquet"):
        read_parquet_metadata(path)


def test_unreadable_parquet_names_file(tmp_path, monkeypatch):
    """A file this user may not read (simulated: root reads everything)."""
    path = tmp_path / "results/synthetic/split.parquet"
    path.parent.mkdir(parents=True)
    _split_file(path)

    def denied(source, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(source))

    monkeypatch.setattr(brcd_io.pq, "read_table", denied)
    with pytest.raises(DataError, match=r"split file .*split.parquet cannot be read \(Permission denied\); fix its permissions"):
        _read_split(path)


def test_parquet_missing_column_or_folder(tmp_path):
    path = tmp_path / "x.parquet"
    write_parquet(path, pa.table({"index": pa.array([1, 2])}), {"a": 1})
    with pytest.raises(DataError, match="x.parquet lacks column.*'split'"):
        read_parquet(path, "split file", columns=("index", "split"))
    with pytest.raises(DataError, match="is a folder, not a file"):
        read_parquet(tmp_path)
    with pytest.raises(DataError, match=r"split file .*split.parquet not found; build it first.*`split` rule"):
        _read_split(tmp_path / "results/d/split.parquet")


def test_rebuild_hint_is_a_forcerun_snakemake_can_match(tmp_path, monkeypatch):
    from brcd.io import build_hint, rebuild_hint

    monkeypatch.chdir(tmp_path)  # the workflow root
    path = tmp_path / "results/synthetic/16/teacher/h/t/seed0/codes.parquet"
    hint = rebuild_hint(path)
    # Snakemake ignores absolute paths in --forcerun: the hint gives the path relative to the workflow root
    assert "`snakemake --cores N --forcerun results/synthetic/16/teacher/h/t/seed0/codes.parquet --configfile CONFIG`" \
        in hint and "`encode_teacher` rule" in hint
    assert "Nothing to be done" in hint
    # the target before --configfile, which reads every word after it as a config file (issue 28)
    assert "`snakemake --cores N results/synthetic/split.parquet --configfile CONFIG` (the `split` rule" \
        in build_hint("results/synthetic/split.parquet")


def test_damaged_checkpoint_names_file_and_rule(tmp_path):
    from brcd.checkpoint import load_checkpoint

    path = tmp_path / "results/synthetic/16/student/h/t/s/brcd/selected/seed1/model.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=r"model.pt cannot be read.*corrupt or truncated.*`train_student` rule"):
        load_checkpoint(path)


# ----------------------------------------------------------------------------- unwritable folders


@pytest.fixture
def unwritable_dir(tmp_path):
    """A folder nobody can create files in, root included (root ignores chmod 0555)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("running as root and cannot make a folder immutable (chattr +i): see the simulated test")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_read_only_output_folder_is_named(unwritable_dir):
    with pytest.raises(OutputError) as info:
        write_json(unwritable_dir / "metrics.json", {"a": 1})
    message = str(info.value)
    assert f"output folder {unwritable_dir} is not writable" in message and "metrics.json" in message
    assert listing(unwritable_dir) == []


def test_folder_that_cannot_be_created_is_named(unwritable_dir):
    with pytest.raises(OutputError, match=f"output folder {unwritable_dir} is not writable"):
        write_json(unwritable_dir / "sub" / "metrics.json", {"a": 1})


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_read_only_output_folder_simulated(tmp_path, monkeypatch, code):
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(tmp_path / ".metrics.json.abc123.json"))

    monkeypatch.setattr(brcd_io.tempfile, "mkstemp", refuse)
    with pytest.raises(OutputError, match=f"output folder {tmp_path} is not writable .*{os.strerror(code)}"):
        write_json(tmp_path / "metrics.json", {"a": 1})
    assert listing(tmp_path) == []


# ----------------------------------------------------------------------------- full disk


def test_full_disk_while_writing_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    path.write_text("old\n")
    real_write_text = Path.write_text

    def fill_up(self, text, *args, **kwargs):
        real_write_text(self, text[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", fill_up)
    with pytest.raises(OutputError, match="not enough space left.*existing .*metrics.json was not overwritten"):
        write_json(path, {"a": 1})
    assert path.read_text() == "old\n" and listing(tmp_path) == ["metrics.json"]


def _checkpoint_args():
    import torch

    from brcd.checkpoint import build_head

    spec = {"kind": "mlp", "in_dim": 32, "bits": 16, "hidden": 64}
    torch.manual_seed(0)
    head = build_head(spec)
    return spec, {"teacher": head.state_dict()}, {"teacher": {"epoch": 3, "map": 0.5}}, {"dataset": "synthetic"}


def test_checkpoint_on_a_full_disk_is_refused_before_writing(tmp_path, monkeypatch):
    from brcd.checkpoint import save_checkpoint

    path = tmp_path / "model.pt"
    path.write_bytes(b"the previous checkpoint")
    small_disk(monkeypatch, free=1000)
    with pytest.raises(OutputError) as info:
        save_checkpoint(path, *_checkpoint_args())
    message = str(info.value)
    assert f"checkpoint {path}" in message and "not enough space left" in message
    assert "1000 bytes" in message and "needs" in message  # free and needed
    assert "was not overwritten" in message
    assert path.read_bytes() == b"the previous checkpoint" and listing(tmp_path) == ["model.pt"]


def test_checkpoint_disk_fills_up_during_write(tmp_path, monkeypatch):
    """The free-space check passed but the disk filled up meanwhile (another job): no temp file left."""
    from brcd.checkpoint import save_checkpoint

    real_write_bytes = Path.write_bytes

    def fill_up(self, data):
        real_write_bytes(self, data[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", fill_up)
    with pytest.raises(OutputError, match=r"checkpoint .*model.pt: not enough space left.*needs \d+ bytes.*no partial file"):
        save_checkpoint(tmp_path / "model.pt", *_checkpoint_args())
    assert listing(tmp_path) == []


def test_parquet_writer_disk_full_is_clean(tmp_path, monkeypatch):
    def fill_up(table, where, *args, **kwargs):
        Path(where).write_bytes(b"PAR1")
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(brcd_io.pq, "write_table", fill_up)
    with pytest.raises(OutputError, match="codes.parquet: not enough space left"):
        write_parquet(tmp_path / "codes.parquet", pa.table({"a": [1]}), {})
    assert listing(tmp_path) == []


def test_output_errors_print_as_one_clean_line():
    assert issubclass(OutputError, BrcdError)


# ----------------------------------------------------------------------------- feature banks


@pytest.fixture(scope="module")
def bank_inputs(tmp_path_factory):
    import torch
    import yaml

    from brcd.config import REPO_ROOT, validate_schema
    from brcd.data import create_dataset
    from brcd.data.splits import write_splits

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bank")
    config = validate_schema(yaml.safe_load((REPO_ROOT / "config" / "test.yaml").read_text()))
    options = config["datasets"]["synthetic"]
    write_splits(root / "split.parquet", create_dataset("synthetic", options), options, seed=0)
    return config, root / "split.parquet"


def build(bank_inputs, out: Path):
    from brcd.features import build_bank

    config, split = bank_inputs
    return build_bank(config, "synthetic", "tteacher", str(split), out)


def test_bank_needing_more_space_than_free_is_refused_before_any_work(bank_inputs, tmp_path, monkeypatch):
    from brcd.features import OnlineSource

    def never(*args, **kwargs):
        raise AssertionError("the backbone ran although the bank cannot fit")

    monkeypatch.setattr(OnlineSource, "clean_uncached", never)
    monkeypatch.setattr(OnlineSource, "views", never)
    small_disk(monkeypatch, free=12345)
    out = tmp_path / "features" / "tteacher"
    with pytest.raises(OutputError) as info:
        build(bank_inputs, out)
    message = str(info.value)
    assert f"feature bank {out} needs" in message and "12345 bytes" in message
    # 420 images in some split (160 of them train), 256-d float16 features: clean + train x (4 views + 4 rotations)
    needed = int(message.split(" needs ")[1].split(" bytes")[0])
    assert 2 * 256 * (420 + 160 * 8) + 8 * (420 + 160) <= needed <= 2 * 256 * (420 + 160 * 8) + 8 * (420 + 160) + 65536
    assert "`views` (now 4)" in message and "datasets.synthetic.train" in message
    assert listing(out.parent) == []


def test_bank_preallocation_turns_a_full_disk_into_an_error(bank_inputs, tmp_path, monkeypatch):
    """A full disk under memory-mapped writes is a SIGBUS; reserving the blocks first makes it ENOSPC."""
    calls = []

    def full(fd, offset, length):
        calls.append(length)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    out = tmp_path / "features" / "tteacher"
    with pytest.raises(OutputError, match=r"feature bank .*tteacher: the disk filled up.*needs \d+ bytes.*`views`"):
        build(bank_inputs, out)
    assert calls and listing(out.parent) == []  # the partial folder is gone


def test_bank_failure_keeps_the_old_bank_and_leaves_no_partial_folder(bank_inputs, tmp_path, monkeypatch):
    from brcd.features import OnlineSource

    out = tmp_path / "features" / "tteacher"
    out.mkdir(parents=True)
    (out / "meta.json").write_text("old bank")

    def crash(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(OnlineSource, "views", crash)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        build(bank_inputs, out)
    assert listing(out.parent) == ["tteacher"] and (out / "meta.json").read_text() == "old bank"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_partial_banks_of_killed_jobs_are_removed(bank_inputs, tmp_path):
    from brcd.features import LEGACY_STALE_SECONDS, _host

    out = tmp_path / "features" / "tteacher"
    out.parent.mkdir(parents=True)
    host = _host()
    dead = out.parent / f".tteacher.partial-{host}-{_dead_pid()}-k2j4x8_q"
    live = out.parent / f".tteacher.partial-{host}-{os.getppid()}-a1b2c3d4"  # a running process
    elsewhere = out.parent / f".tteacher.partial-otherhost-{_dead_pid()}-a1b2c3d4"  # cannot tell: keep
    legacy = out.parent / ".tteacher.x7q_2mzp"  # today's mkdtemp name, from a job killed long ago
    recent_legacy = out.parent / ".tteacher.r3c3n7ab"
    not_ours = out.parent / ".tteacher.notes123"
    other_bank = out.parent / f".tstudent.partial-{host}-{_dead_pid()}-a1b2c3d4"
    for folder in (dead, live, elsewhere, legacy, recent_legacy, not_ours, other_bank):
        folder.mkdir()
        np.save(folder / "clean.npy", np.zeros(3))
    (not_ours / "my-notes.txt").write_text("keep me")
    old = os.path.getmtime(legacy) - LEGACY_STALE_SECONDS - 60
    for path in (legacy / "clean.npy", legacy):
        os.utime(path, (old, old))
    build(bank_inputs, out)
    assert not dead.exists() and not legacy.exists()
    for kept in (live, elsewhere, recent_legacy, not_ours, other_bank):
        assert kept.exists(), kept
    assert (out / "meta.json").exists()


def test_bank_folder_has_the_permissions_of_other_outputs(bank_inputs, tmp_path):
    previous = os.umask(0o022)
    try:
        out = build(bank_inputs, tmp_path / "features" / "tteacher")
    finally:
        os.umask(previous)
    assert out.stat().st_mode & 0o777 == 0o755
    assert (out / "clean.npy").stat().st_mode & 0o777 == 0o644
    assert listing(out.parent) == ["tteacher"]
    first = (out / "views.npy").read_bytes()
    build(bank_inputs, out)  # rebuilding replaces the bank in place, leaving nothing beside it
    assert listing(out.parent) == ["tteacher"] and (out / "views.npy").read_bytes() == first


def test_damaged_bank_file_names_the_bank(bank_inputs, tmp_path):
    from brcd.data.splits import Splits
    from brcd.features import BankSource, bank_metadata

    config, split = bank_inputs
    out = build(bank_inputs, tmp_path / "results" / "synthetic" / "features" / "tteacher")
    truncate(out / "views.npy")
    with pytest.raises(DataError, match=r"feature bank file .*views.npy is corrupt or truncated.*`features` rule.*"
                                        r"--forcerun .*features/tteacher --configfile CONFIG`"):
        BankSource(out, bank_metadata(config, "synthetic", "tteacher", Splits(split)))


SLOW_BUILD = """
import argparse, sys, time
from brcd import features

def slow(self, *args, **kwargs):
    print("writing", flush=True)
    time.sleep(300)

features.OnlineSource.views = slow
parser = argparse.ArgumentParser()
features.configure_parser(parser)
features.run(parser.parse_args(sys.argv[1:]))
"""


def test_cancelled_bank_job_removes_its_partial_folder(bank_inputs, tmp_path):
    """Snakemake cancels a job with SIGTERM: the partial bank must not stay behind."""
    import signal

    from brcd.config import REPO_ROOT

    _, split = bank_inputs
    out = tmp_path / "features" / "tteacher"
    command = [sys.executable, "-c", SLOW_BUILD, "--config", str(REPO_ROOT / "config" / "test.yaml"),
               "--dataset", "synthetic", "--backbone", "tteacher", "--split", str(split), "--out", str(out),
               "--threads", "1", "--device", "cpu"]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert job.stdout.readline().strip() == "writing", job.stderr.read()
        partial = [p.name for p in out.parent.iterdir()]
        assert len(partial) == 1 and partial[0].startswith(".tteacher.partial-")
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert listing(out.parent) == []


# ---------------------------------------------------------------- issue 28: unwritable outputs, before the work


def _refuse_writes_in(monkeypatch, folder: Path) -> None:
    """Make ``folder`` refuse new files, as a read-only folder does (chmod does not stop root, who runs
    the tests on some machines): mkstemp there fails with EACCES."""
    import errno
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_an_unwritable_output_folder_stops_a_training_job_before_it_reads_anything(tmp_path, monkeypatch, capsys):
    """Issue 28: the history.tsv folder was found unwritable only after every epoch had run. Every stage
    names its outputs (brcd.cli.OUTPUT_OPTIONS); they are checked before the stage starts, so the error
    comes before the job reads its inputs (here: none exist) or trains."""
    from brcd.cli import main

    out = tmp_path / "teacher"
    out.mkdir()
    _refuse_writes_in(monkeypatch, out)
    code = main(["train-teacher", "--config", str(tmp_path / "absent.yaml"), "--dataset", "synthetic", "--bits", "16",
                 "--teacher", "t", "--split", str(tmp_path / "absent.parquet"), "--out", str(out / "model.pt"),
                 "--log", str(out / "history.tsv")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"cannot write {out / 'model.pt'}: the output folder {out} is not writable" in err, err
    assert "chmod u+w" in err and "not found" not in err  # before the config or the split was read
    assert list(out.iterdir()) == []  # no probe left behind


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_stops_a_job_before_it_starts(tmp_path, capsys):
    from brcd.cli import main

    out = tmp_path / "codes"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert main(["encode", "--config", "absent.yaml", "--dataset", "synthetic", "--bits", "16", "--model",
                     "teacher/cibhash/t", "--split", "absent.parquet", "--checkpoint", "absent.pt",
                     "--out", str(out / "codes.parquet")]) == 2
    finally:
        out.chmod(0o755)
    assert "is not writable" in capsys.readouterr().err
