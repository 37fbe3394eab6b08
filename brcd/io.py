"""Atomic file output and Parquet-with-metadata helpers shared by every stage.

Outputs are written to a temporary file in the destination directory and then
renamed into place, so an interrupted job never leaves a truncated file that a
later run would mistake for a finished one. A folder that cannot be written or
a full disk raises :class:`OutputError` naming the folder (and the space
needed and free), with the temporary file removed and an existing output
untouched.

Every project file is read through :func:`read_checked` (Parquet through
:func:`read_parquet`): a missing, unreadable, truncated or corrupt file raises
:class:`~brcd.errors.DataError` naming it and the rule that rebuilds it.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shlex
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from brcd.errors import BrcdError, DataError, MetadataMismatchError
from brcd.layout import written_by

METADATA_KEY = b"brcd"
T = TypeVar("T")

#: errno values meaning "the device is full" (no space left, disk quota exceeded)
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: errno values meaning "this folder cannot be written" (permissions, read-only mount, immutable)
NOT_WRITABLE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


class OutputError(BrcdError):
    """An output cannot be written: its folder is not writable or the disk is full."""


def format_bytes(n: int | float) -> str:
    """``1536`` -> ``'1.5 KiB'`` (exact byte counts go next to it in messages)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes available to this user on the device of ``folder`` (None if it cannot be told)."""
    try:
        return int(shutil.disk_usage(folder).free)
    except OSError:
        return None


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and (exc.errno in DISK_FULL_ERRNOS or "No space left on device" in str(exc))


def disk_full_error(path: str | os.PathLike, needed: int | None = None, existed: bool = False,
                    what: str = "output") -> OutputError:
    """The message for a full disk: the path, bytes needed and free, and that nothing was overwritten."""
    path = Path(path)
    free = free_bytes(path.parent)
    amounts = []
    if needed is not None:
        amounts.append(f"needs {needed} bytes ({format_bytes(needed)})")
    if free is not None:
        amounts.append(f"{free} bytes ({format_bytes(free)}) are free on the device of {path.parent}")
    kept = (f"the existing {path} was not overwritten and is unchanged" if existed
            else "no partial file was left behind")
    return OutputError(
        f"cannot write {what} {path}: not enough space left on the device"
        f"{' (' + '; '.join(amounts) + ')' if amounts else ''}; {kept}. "
        "Free some space (or point the results folder at a larger disk) and rerun."
    )


def not_writable_error(folder: str | os.PathLike, path: str | os.PathLike, exc: OSError) -> OutputError:
    return OutputError(
        f"cannot write {path}: the output folder {folder} is not writable ({exc.strerror or exc}); "
        f"make it writable (e.g. `chmod u+w {folder}`, or remount it read-write) or run from a folder you can write to"
    )


def _writable_folder(path: Path) -> None:
    """Create the parent folder of ``path``; a folder that cannot be created names itself."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in NOT_WRITABLE_ERRNOS:
            raise not_writable_error(_first_existing(path.parent), path, exc) from exc
        if is_disk_full(exc):
            raise disk_full_error(path) from exc
        raise


def _first_existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None, needed: int | None = None,
                what: str = "output") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any failure the temporary file is removed and an existing ``path`` is
    left as it was. A folder that cannot be written and a full disk raise
    :class:`OutputError` naming the folder and the space free (and
    ``needed`` bytes, when the caller knows the size).
    """
    path = Path(path)
    _writable_folder(path)
    existed = path.exists()
    tmp_path = _temporary_file(path, suffix or path.suffix or ".tmp", needed, existed, what)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes files owner-only; outputs are for sharing
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        if is_disk_full(exc):
            tmp_path.unlink(missing_ok=True)  # before measuring the free space
            raise disk_full_error(path, needed, existed, what) from exc
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def _temporary_file(path: Path, suffix: str, needed: int | None = None, existed: bool = False,
                    what: str = "output", folder: Path | None = None) -> Path:
    """A new empty file beside ``path`` (in ``folder``, default its parent); a folder that takes no new
    file and a full disk raise :class:`OutputError` naming them."""
    folder = path.parent if folder is None else folder
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=folder)
    except OSError as exc:
        if exc.errno in NOT_WRITABLE_ERRNOS:
            raise not_writable_error(folder, path, exc) from exc
        if is_disk_full(exc):
            raise disk_full_error(path, needed, existed, what) from exc
        raise
    os.close(fd)
    return Path(tmp)


def check_writable(paths: Sequence[str | os.PathLike]) -> None:
    """Before any work: the folder of every output in ``paths`` (and an output that is an existing
    folder, e.g. a feature bank) takes a new file, by creating and removing one. The error is the one
    writing would raise at the end (:class:`OutputError`, naming the folder and the fix), raised
    before a job spends its time."""
    for path in map(Path, paths):
        # the folder the output goes in, or the folder that will hold it, since the stage creates the missing
        # ones (nothing is created here: a command refused later leaves no trace)
        for folder in [_first_existing(path.parent), *([path] if path.is_dir() else [])]:
            _temporary_file(path, ".probe", folder=folder).unlink()


def write_bytes(path: str | os.PathLike, data: bytes, what: str = "output") -> None:
    """Write ``data`` to ``path`` atomically, checking first that the device has room for it."""
    path = Path(path)
    _writable_folder(path)
    free = free_bytes(path.parent)
    if free is not None and free < len(data):
        raise disk_full_error(path, len(data), path.exists(), what)
    with atomic_path(path, needed=len(data), what=what) as tmp:
        tmp.write_bytes(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def stable_hash(obj: Any, length: int = 12) -> str:
    """Short SHA-256 of the canonical JSON form of ``obj`` (a config hash)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def write_parquet(path: str | os.PathLike, table: pa.Table, metadata: Mapping[str, Any]) -> None:
    """Write ``table`` atomically with ``metadata`` stored as JSON in the schema."""
    existing = dict(table.schema.metadata or {})
    existing[METADATA_KEY] = json.dumps(dict(metadata), sort_keys=True, default=_json_default).encode()
    # Scalars also as their own key-value entries, for tools that list them
    # (DuckDB's parquet_kv_metadata, Polars, pyarrow's schema.metadata).
    for key, value in metadata.items():
        if isinstance(value, (str, int, float, bool)):
            existing.setdefault(key.encode(), str(value).encode())
    table = table.replace_schema_metadata(existing)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def workflow_target(path: str | os.PathLike) -> str:
    """``path`` as Snakemake matches it: relative to the working directory (the workflow root)
    when it lies below it (``--forcerun`` ignores absolute paths)."""
    path = Path(path)
    if path.is_absolute():
        with contextlib.suppress(ValueError):
            return str(path.relative_to(Path.cwd()))
    return str(path)


def snakemake_command(target: str | os.PathLike | None = None, forcerun: str | os.PathLike | None = None,
                      config: str | os.PathLike | None = None) -> str:
    """The one form of every Snakemake command a message of brcd advises, written so that it works as
    typed: ``snakemake --cores N [TARGET] [--forcerun FILE] --configfile CONFIG``.

    ``--configfile`` comes last because it reads every word after it as a config file (a target
    after it is taken for a second config, the trap the README warns about), and ``--forcerun``
    after the target because it, too, takes every word after it. ``N`` and ``CONFIG`` (when
    ``config`` is not known) are for the reader to fill in; paths are made relative to the workflow
    root (:func:`workflow_target`) and quoted for the shell.
    """
    words = ["snakemake", "--cores", "N"]
    if target is not None:
        words.append(shlex.quote(workflow_target(target)))
    if forcerun is not None:
        words += ["--forcerun", shlex.quote(workflow_target(forcerun))]
    words += ["--configfile", shlex.quote(str(config)) if config is not None else "CONFIG"]
    return " ".join(words)


def build_hint(path: str | os.PathLike) -> str:
    """How to produce a missing output: Snakemake with the rule output that is or holds it as the target
    (a file missing from a folder output that exists is a damaged folder: :func:`rebuild_hint`)."""
    output = written_by(path)
    if output is None:
        return "check the path (it is not a path of the workflow's layout, results/... or reports/...)"
    if Path(output.target) != Path(path) and Path(output.target).exists():
        return rebuild_hint(path)
    return f"build it first with `{snakemake_command(output.target)}` (the `{output.rule}` rule writes it)"


def rebuild_hint(path: str | os.PathLike) -> str:
    """How to rebuild a damaged output and everything made from it.

    Deleting it is not enough: Snakemake does not rebuild a missing
    intermediate file whose downstream results are up to date ("Nothing to
    be done"); ``--forcerun`` with the file rebuilds it and reruns the jobs
    that read it.
    """
    output = written_by(path)
    if output is None:
        return ("replace it with an intact copy (it is not a path of the workflow's layout, results/... or "
                "reports/..., which a Snakemake command could rebuild)")
    return (f"rebuild it (the `{output.rule}` rule writes it) with `{snakemake_command(forcerun=output.target)}` "
            "(CONFIG: your grid config; this also reruns what was built from it). Deleting the file alone "
            "is not enough once later results exist: Snakemake then reports 'Nothing to be done'")


def read_checked(path: str | os.PathLike, reader: Callable[[Path], T], what: str = "file",
                 fix: str | None = None) -> T:
    """``reader(path)``, with a missing, unreadable or corrupt file raised as :class:`DataError`.

    The message names ``what`` and the path, says what is wrong and how to
    rebuild it (``fix``, default :func:`rebuild_hint`). Every reader of the
    project's files goes through this.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} {path} not found; {build_hint(path)}")
    fix = fix or rebuild_hint(path)
    if path.is_dir():
        raise DataError(f"{what} {path} is a folder, not a file; {fix}")
    try:
        return reader(path)
    except PermissionError as exc:
        raise DataError(f"{what} {path} cannot be read ({exc.strerror}); fix its permissions, or {fix}") from None
    except (pa.ArrowException, OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # .npz: a zip
        raise DataError(
            f"{what} {path} is corrupt or truncated ({type(exc).__name__}: {exc}); "
            f"an interrupted job or a full disk may have damaged it: {fix}"
        ) from None


def read_parquet(path: str | os.PathLike, what: str = "file", fix: str | None = None,
                 columns: Sequence[str] = ()) -> tuple[pa.Table, dict]:
    """Read a Parquet file written by :func:`write_parquet`: (table, metadata).

    Damaged files raise :class:`DataError` (:func:`read_checked`), as do
    files without brcd metadata or without one of ``columns``.
    """
    path = Path(path)
    fix = fix or rebuild_hint(path)
    table = read_checked(path, pq.read_table, what, fix)
    metadata = parquet_metadata(table.schema, path, what, fix)
    missing = [name for name in columns if name not in table.column_names]
    if missing:
        raise DataError(f"{what} {path} lacks column(s) {', '.join(map(repr, missing))}; {fix}")
    return table, metadata


def read_parquet_metadata(path: str | os.PathLike, what: str = "file", fix: str | None = None) -> dict:
    path = Path(path)
    fix = fix or rebuild_hint(path)
    return parquet_metadata(read_checked(path, pq.read_schema, what, fix), path, what, fix)


def parquet_metadata(schema: pa.Schema, path: str | os.PathLike = "<table>", what: str = "file",
                     fix: str | None = None) -> dict:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise DataError(f"{path} has no brcd metadata; was it written by this project?"
                        + (f" If so, {fix}" if fix else ""))
    try:
        metadata = json.loads(raw)
    except ValueError as exc:
        raise DataError(f"{what} {path} has corrupt brcd metadata ({exc}); {fix or rebuild_hint(path)}") from None
    if not isinstance(metadata, dict):
        raise DataError(f"{what} {path} has malformed brcd metadata (not a JSON object); {fix or rebuild_hint(path)}")
    return metadata


def check_metadata(found: Mapping[str, Any], expected: Mapping[str, Any], what: str, fix: str) -> None:
    """Raise :class:`MetadataMismatchError` listing every key where ``found`` differs."""
    diffs = [
        f"{key}: file has {found.get(key)!r}, expected {value!r}"
        for key, value in expected.items()
        if found.get(key) != value
    ]
    if diffs:
        raise MetadataMismatchError(f"{what} does not match the requested cell ({'; '.join(diffs)}). {fix}")
