"""Atomic file output and Parquet-with-metadata helpers shared by every stage.

Outputs are written to a temporary file in the destination directory and then
renamed into place, so an interrupted job never leaves a truncated file that a
later run would mistake for a finished one.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from brcd.errors import DataError, MetadataMismatchError

METADATA_KEY = b"brcd"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp", dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes files owner-only; outputs are for sharing
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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


def read_parquet(path: str | os.PathLike) -> tuple[pa.Table, dict]:
    """Read a Parquet file written by :func:`write_parquet`: (table, metadata)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"file not found: {path}")
    table = pq.read_table(path)
    return table, parquet_metadata(table.schema, path)


def read_parquet_metadata(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise DataError(f"file not found: {path}")
    return parquet_metadata(pq.read_schema(path), path)


def parquet_metadata(schema: pa.Schema, path: str | os.PathLike = "<table>") -> dict:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise DataError(f"{path} has no brcd metadata; was it written by this project?")
    return json.loads(raw)


def check_metadata(found: Mapping[str, Any], expected: Mapping[str, Any], what: str, fix: str) -> None:
    """Raise :class:`MetadataMismatchError` listing every key where ``found`` differs."""
    diffs = [
        f"{key}: file has {found.get(key)!r}, expected {value!r}"
        for key, value in expected.items()
        if found.get(key) != value
    ]
    if diffs:
        raise MetadataMismatchError(f"{what} does not match the requested cell ({'; '.join(diffs)}). {fix}")
