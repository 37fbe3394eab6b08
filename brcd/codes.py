"""Binary code files (SPEC §7): Parquet, one row per (image, split).

Columns: ``index`` (position in the dataset), ``split``, ``code`` (the L bits
packed into L/8 bytes, most significant bit first, +1 -> 1). File metadata:
dataset, model, bits, backbone, seed, config hash (and anything else the
writer adds).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from brcd.errors import ConfigError, DataError
from brcd.io import read_parquet, rebuild_hint, write_parquet

REQUIRED_METADATA = ("dataset", "model", "bits", "backbone", "seed", "config_hash")


def check_bits(bits: int, key: str = "bits") -> int:
    if not isinstance(bits, (int, np.integer)) or bits <= 0 or bits % 8:
        raise ConfigError(f"`{key}` must be a positive multiple of 8 (codes are packed into bytes); got {bits!r}")
    return int(bits)


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """Codes (N, L) -> packed uint8 (N, L/8), most significant bit first.

    Boolean input is taken as the bits themselves; any numeric input (±1 codes
    or pre-sign logits) maps to bit 1 where the value is >= 0, so an exact zero
    becomes +1, the sign convention of SPEC §2. NaN and infinite values have
    no meaningful sign and raise :class:`DataError`.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"pack_codes expects an N x L array of codes, got shape {codes.shape}")
    check_bits(codes.shape[1])
    if codes.dtype.kind in "fc" and not np.isfinite(codes).all():
        bad = np.argwhere(~np.isfinite(codes))[0]
        raise DataError(
            f"codes contain non-finite values (e.g. {codes[tuple(bad)]} at row {bad[0]}, bit {bad[1]}); "
            "NaN has no sign to become a bit, and NaN or infinite outputs mean the encoder diverged or "
            "was fed NaN features: retrain the model (or check its feature bank) before encoding"
        )
    bits = codes if codes.dtype == np.bool_ else codes >= 0
    return np.packbits(bits, axis=1, bitorder="big")


def unpack_codes(packed: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Packed uint8 (N, L/8) -> int8 codes in {-1, +1}, shape (N, L)."""
    packed = np.asarray(packed, dtype=np.uint8)
    unpacked = np.unpackbits(packed, axis=1, bitorder="big")
    if bits is not None:
        unpacked = unpacked[:, :bits]
    return (unpacked.astype(np.int8) * 2 - 1)


@dataclass
class CodeFile:
    """In-memory form of a code file."""

    index: np.ndarray  # int64 (N,)
    split: np.ndarray  # object/str (N,)
    packed: np.ndarray  # uint8 (N, L/8)
    metadata: dict = field(default_factory=dict)

    @property
    def bits(self) -> int:
        return int(self.metadata["bits"])

    def select(self, split: str) -> "CodeFile":
        """Rows of one split, in file order (which is dataset-index order)."""
        mask = self.split == split
        if not mask.any():
            raise DataError(
                f"code file for {self.metadata.get('model')} has no rows for split {split!r} "
                f"(splits present: {sorted(set(self.split.tolist()))})"
            )
        return CodeFile(self.index[mask], self.split[mask], self.packed[mask], self.metadata)

    def codes(self) -> np.ndarray:
        return unpack_codes(self.packed, self.bits)


def write_codes(path: str | os.PathLike, index, split, packed: np.ndarray, metadata: dict) -> None:
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise ValueError(f"code file metadata lacks {missing}")
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    bits = check_bits(int(metadata["bits"]))
    if packed.ndim != 2 or packed.shape[1] * 8 != bits:
        raise ValueError(f"packed codes have shape {packed.shape}, expected (N, {bits // 8})")
    width = packed.shape[1]
    code_col = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(packed), [None, pa.py_buffer(packed.tobytes())]
    )
    table = pa.table(
        {
            "index": pa.array(np.asarray(index, dtype=np.int64)),
            "split": pa.array(np.asarray(split, dtype=object), type=pa.string()),
            "code": code_col,
        }
    )
    write_parquet(path, table, metadata)


def read_codes(path: str | os.PathLike) -> CodeFile:
    table, metadata = read_parquet(path, "code file", columns=("index", "split", "code"))
    if table.num_rows == 0:
        raise DataError(f"code file {path} is empty; {rebuild_hint(path)}")
    bits = check_bits(int(metadata.get("bits", 0)), key=f"bits in the metadata of {path}")
    code_col = table.column("code").combine_chunks()
    width = code_col.type.byte_width if pa.types.is_fixed_size_binary(code_col.type) else None
    if width is None:
        packed = np.stack([np.frombuffer(b, dtype=np.uint8) for b in code_col.to_pylist()])
    else:
        buf = code_col.buffers()[1]
        packed = np.frombuffer(buf, dtype=np.uint8, count=len(code_col) * width, offset=code_col.offset * width)
        packed = packed.reshape(len(code_col), width)
    if packed.shape[1] * 8 != bits:
        raise DataError(f"code file {path}: codes have {packed.shape[1] * 8} bits but metadata says {bits}")
    return CodeFile(
        index=table.column("index").to_numpy(),
        split=np.asarray(table.column("split").to_pylist(), dtype=object),
        packed=packed.copy(),
        metadata=metadata,
    )
