"""Trained hashing heads on disk: ``model.pt`` as a plain state-dict bundle.

Loaded with ``torch.load(weights_only=True)``: tensors, numbers and strings
only, never arbitrary pickled objects.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping

import torch

from brcd.errors import DataError
from brcd.io import check_metadata, rebuild_hint, write_bytes

FORMAT = "brcd-checkpoint-1"


def head_spec(backbone_options: Mapping, bits: int, feature_dim: int, matmul: str | None = None) -> dict:
    """Everything needed to rebuild a head: kind, input width, bits, hidden width, and the kernel of its
    products (``train.<role>.matmul``) where it is not the default -- so that its encode jobs compute
    as its training did, and checkpoints of the default stay byte for byte what they were."""
    from brcd.models.linear import DEFAULT_KERNEL

    spec = {
        "kind": backbone_options.get("head", "mlp"),
        "in_dim": int(feature_dim),
        "bits": int(bits),
        "hidden": int(backbone_options.get("hidden", 1000)),
    }
    if matmul not in (None, DEFAULT_KERNEL):
        spec["matmul"] = matmul
    return spec


def build_head(spec: Mapping) -> torch.nn.Module:
    from brcd.models import create_head
    from brcd.models.linear import DEFAULT_KERNEL

    return create_head(spec["kind"], spec["in_dim"], spec["bits"], hidden=spec["hidden"],
                       matmul=spec.get("matmul", DEFAULT_KERNEL))


def save_checkpoint(path: str | os.PathLike, spec: Mapping, heads: Mapping[str, Mapping], best: Mapping,
                    metadata: Mapping) -> None:
    """``heads``: selection criterion -> head state dict (e.g. ``teacher``, or ``sym`` and ``asym``)."""
    bundle = {
        "format": FORMAT,
        "head": dict(spec),
        "heads": {name: {k: v.detach().cpu() for k, v in state.items()} for name, state in heads.items()},
        "best": {name: {"epoch": int(b["epoch"]), "map": float(b["map"])} for name, b in best.items()},
        "metadata": dict(metadata),
    }
    # Serialised in memory, then written atomically: torch.save to a file names the zip's
    # records after the (random) temp-file name, so two identical saves would differ; in
    # memory the record name is always "archive". The size is known before anything is
    # written, so a full disk is reported (with the bytes needed) instead of torch's
    # "enforce fail at inline_container.cc", and an existing model.pt is never touched.
    buffer = io.BytesIO()
    torch.save(bundle, buffer)
    write_bytes(path, buffer.getvalue(), what="checkpoint")


def load_checkpoint(path: str | os.PathLike, expected: Mapping | None = None) -> dict:
    path = Path(path)
    if not path.exists():
        raise DataError(f"checkpoint {path} not found; train it first (rule train_teacher / train_student)")
    try:
        bundle = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(
            f"checkpoint {path} cannot be read as a brcd checkpoint with weights_only=True ({exc}); "
            f"it is corrupt or truncated (an interrupted job, a full disk) or not a brcd checkpoint: {rebuild_hint(path)}"
        ) from None
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise DataError(f"{path} is not a {FORMAT} checkpoint; retrain it with this version of brcd ({rebuild_hint(path)})")
    if expected:
        check_metadata(bundle["metadata"], expected, f"checkpoint {path}", "Retrain it for the requested cell.")
    return bundle


def load_head(bundle: Mapping, criterion: str) -> torch.nn.Module:
    head = build_head(bundle["head"])
    head.load_state_dict(bundle["heads"][criterion])
    return head.eval()
