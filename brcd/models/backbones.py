"""Frozen pretrained backbones (SPEC §2), selected by ``<source>:<name>``.

A config ``backbones`` entry names the model (``timm:efficientnet_lite0``,
``torchvision:vit_b_16``), the input size, the weights (``default``,
``none``, ``package:<name>`` or a state-dict file) and what the head reads
(``pooled`` pre-logits features or ImageNet ``logits``).
:func:`create_backbone` turns it into a :class:`FrozenBackbone`: eval mode,
no gradients, mapping normalised images to one feature vector per image.
"""
from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from brcd.errors import ConfigError
from brcd.models.heads import check_head_settings
from brcd.models.weights import WEIGHT_SOURCES, load_state_dict_file
from brcd.registry import Registry

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEAD_INPUTS = ("pooled", "logits")
#: weights values that are not a package or a file
NO_WEIGHTS, LIBRARY_WEIGHTS = "none", "default"

#: prefix of `model` before ':' -> source class (builds architectures, knows names).
BACKBONE_SOURCES: Registry = Registry("backbone source", config_key="backbones.<alias>.model")


def _unknown_model_error(source: str, name: str, known: list[str], key: str, listing: str) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    return ConfigError(f"`{key}`: unknown {source} model {name!r}{hint}; list the available names with {listing}")


class _LibraryWeightsError(Exception):
    """Raised inside a source when the library's own weight download fails."""


def _library_download(build):
    """Run ``build()``; turn network/cache failures into :class:`_LibraryWeightsError`."""
    try:
        return build()
    except (OSError, RuntimeError, ValueError) as exc:  # URLError, hub LocalEntryNotFoundError, "no weights"
        raise _LibraryWeightsError(str(exc)) from exc


class TimmFeatures(nn.Module):
    """timm model -> pooled pre-logits features or logits."""

    def __init__(self, model: nn.Module, pre_logits: bool):
        super().__init__()
        self.model = model
        self.pre_logits = pre_logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_logits:
            return self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return self.model(x)


@BACKBONE_SOURCES.register("timm")
class TimmSource:
    """Any model of timm's registry (``timm.list_models()``)."""

    listing = "`python -c \"import timm; print(timm.list_models('*lite*'))\"`"

    def check_name(self, name: str, key: str) -> None:
        import timm

        if not timm.is_model(name):
            raise _unknown_model_error("timm", name, timm.list_models(), key, self.listing)

    def build(self, name: str, pretrained: bool, **kwargs) -> nn.Module:
        import timm

        if pretrained:
            return _library_download(lambda: timm.create_model(name, pretrained=True, **kwargs))
        return timm.create_model(name, pretrained=False, **kwargs)

    def normalisation(self, model: nn.Module) -> tuple[tuple, tuple]:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        return tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))

    def extractor(self, model: nn.Module, head_input: str, key: str) -> nn.Module:
        if head_input == "logits" and not getattr(model, "num_classes", 0):
            raise ConfigError(f"`{key}.head_input`: this model has no classifier; use head_input: pooled")
        return TimmFeatures(model, pre_logits=head_input == "pooled")


@BACKBONE_SOURCES.register("torchvision")
class TorchvisionSource:
    """Classification models of ``torchvision.models``."""

    listing = "`python -c \"import torchvision; print(torchvision.models.list_models(module=torchvision.models))\"`"

    @staticmethod
    def _names() -> list[str]:
        import torchvision

        return torchvision.models.list_models(module=torchvision.models)

    def check_name(self, name: str, key: str) -> None:
        known = self._names()
        if name not in known:
            raise _unknown_model_error("torchvision", name, known, key, self.listing)

    def build(self, name: str, pretrained: bool, **kwargs) -> nn.Module:
        import torchvision

        if pretrained:
            return _library_download(lambda: torchvision.models.get_model(name, weights="DEFAULT", **kwargs))
        return torchvision.models.get_model(name, weights=None, **kwargs)

    def normalisation(self, model: nn.Module) -> tuple[tuple, tuple]:
        # The model object does not record its preprocessing; every torchvision
        # classification weight uses ImageNet statistics.
        return IMAGENET_MEAN, IMAGENET_STD

    def extractor(self, model: nn.Module, head_input: str, key: str) -> nn.Module:
        if head_input == "logits":
            return model
        # The pooled feature is the input of the final classifier Linear
        # (resnet.fc, vit.heads.head, efficientnet.classifier[1], ...).
        linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
        if not linears:
            raise ConfigError(f"`{key}.head_input`: this model has no Linear classifier to strip; use head_input: logits")
        parent_name, _, child = linears[-1].rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, nn.Identity())
        return model


class FrozenBackbone(nn.Module):
    """A pretrained feature extractor that never trains.

    ``forward(x)``: x is a float B x 3 x S x S batch already normalised with
    ``mean``/``std``; returns B x ``feature_dim`` features (pooled pre-logits
    or logits), computed without autograd.
    """

    def __init__(
        self,
        extractor: nn.Module,
        feature_dim: int,
        input_size: int,
        mean: tuple,
        std: tuple,
        description: Mapping | None = None,
    ):
        super().__init__()
        self.extractor = extractor
        self.feature_dim = int(feature_dim)
        self.input_size = int(input_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.description = dict(description or {})
        self.requires_grad_(False)
        # Channels-last runs convolutions (depthwise ones above all) 1.5-3x faster
        # on CPUs; results agree with the default layout to float tolerance.
        self.extractor.to(memory_format=torch.channels_last)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenBackbone":
        # Frozen means eval mode too: BN running statistics and dropout never change.
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.extractor(x.contiguous(memory_format=torch.channels_last))


def parse_model(model: object, key: str) -> tuple[str, str]:
    if not isinstance(model, str) or ":" not in model:
        raise ConfigError(
            f"`{key}.model` must look like 'timm:<name>' or 'torchvision:<name>'; got {model!r}"
        )
    source, name = model.split(":", 1)
    BACKBONE_SOURCES.get(source)  # raises listing the sources
    return source, name


def _check_input_size(options: Mapping, key: str) -> int:
    size = options.get("input_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 8:
        raise ConfigError(f"`{key}.input_size` must be an integer >= 8 (pixels); got {size!r}")
    return size


def _check_head_input(options: Mapping, key: str) -> str:
    head_input = options.get("head_input", "pooled")
    if head_input not in HEAD_INPUTS:
        raise ConfigError(f"`{key}.head_input` must be one of {', '.join(HEAD_INPUTS)}; got {head_input!r}")
    return head_input


def check_weights_option(weights: object, model: str, key: str) -> None:
    """Validate ``weights`` without loading anything (cheap, for config checks)."""
    if weights in (NO_WEIGHTS, LIBRARY_WEIGHTS):
        return
    if not isinstance(weights, str) or not weights:
        raise ConfigError(f"`{key}.weights` must be 'default', 'none', 'package:<name>' or a file path; got {weights!r}")
    if weights.startswith("package:"):
        packaged = WEIGHT_SOURCES.get(weights)
        if packaged.model != model:
            raise ConfigError(
                f"`{key}.weights`: {weights} fits model {packaged.model}, not {model}; "
                f"set `{key}.model: {packaged.model}` or choose other weights"
            )
        return
    if not Path(weights).expanduser().is_file():
        raise ConfigError(
            f"`{key}.weights`: weights file {weights} not found; give an existing state-dict file, "
            f"'default', 'none' or one of {', '.join(WEIGHT_SOURCES.names())}"
        )


def check_backbone_options(options: Mapping, key: str) -> None:
    """All cheap checks of one ``backbones`` entry: source, model name, size, weights, the head's settings."""
    model = options.get("model")
    source_name, name = parse_model(model, key)
    BACKBONE_SOURCES.get(source_name)().check_name(name, f"{key}.model")
    _check_input_size(options, key)
    _check_head_input(options, key)
    check_weights_option(options.get("weights", LIBRARY_WEIGHTS), model, key)
    check_head_settings(options.get("head", "mlp"), options, key)


RANDOM_INIT_SEED = 0


def _build_with_weights(source, model: str, name: str, weights: str, key: str):
    """The architecture with its weights loaded, and the normalisation they expect."""
    if weights.startswith("package:"):
        packaged = WEIGHT_SOURCES.get(weights)
        network = source.build(name, pretrained=False, **dict(packaged.model_kwargs))
        packaged.load_into(network, f"{key}.weights")
        return network, packaged.normalisation()
    if weights == LIBRARY_WEIGHTS:
        try:
            network = source.build(name, pretrained=True)
        except _LibraryWeightsError as exc:
            raise ConfigError(
                f"`{key}.weights`: 'default' loads {model}'s pretrained weights from the library's online "
                f"source, which failed ({exc}); without internet, set `{key}.weights` to a local state-dict "
                f"file or to one of {', '.join(WEIGHT_SOURCES.names())}"
            ) from None
        return network, source.normalisation(network)
    # Randomly initialised weights (`none`, e.g. timm's test models) must be the
    # same in every process -- the teacher's bank, the trainer and the timing
    # job each build the backbone -- so draw them from a fixed seed without
    # touching the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        network = source.build(name, pretrained=False)
    if weights != NO_WEIGHTS:
        load_state_dict_file(network, weights, f"{key}.weights", model)
    return network, source.normalisation(network)


def create_backbone(options: Mapping, alias: str | None = None) -> FrozenBackbone:
    """Build the frozen backbone described by one config ``backbones`` entry.

    ``alias`` (the entry's key in ``backbones``) only makes error messages
    name the exact config key.
    """
    key = f"backbones.{alias or '<alias>'}"
    options = dict(options)
    options.setdefault("weights", LIBRARY_WEIGHTS)
    check_backbone_options(options, key)
    source_name, name = parse_model(options["model"], key)
    source = BACKBONE_SOURCES.get(source_name)()
    head_input = _check_head_input(options, key)
    input_size = _check_input_size(options, key)

    network, (mean, std) = _build_with_weights(source, options["model"], name, options["weights"], key)
    extractor = source.extractor(network, head_input, key).eval()
    # One dummy forward settles the feature width and fails early on sizes the
    # architecture cannot take (e.g. torchvision ViTs are fixed to 224).
    try:
        with torch.no_grad():
            probe = extractor(torch.zeros(1, 3, input_size, input_size))
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise ConfigError(f"`{key}.input_size` {input_size} does not work with {options['model']}: {exc}") from None
    if probe.ndim != 2:
        raise ConfigError(
            f"`{key}`: {options['model']} gives features of shape {tuple(probe.shape)[1:]}, not a vector; "
            "choose a classification model"
        )
    description = {
        "model": options["model"],
        "weights": options["weights"],
        "head_input": head_input,
        "input_size": input_size,
    }
    backbone = FrozenBackbone(extractor, probe.shape[1], input_size, mean, std, description)
    logger.info("backbone %s: %s, %d-d %s features", key, description, backbone.feature_dim, head_input)
    return backbone


def check_backbone_entries(config: Mapping, source: str = "config") -> None:
    """Config hook: every ``backbones`` entry names a known model and valid weights."""
    from brcd.config import backbone_options

    datasets = list(config.get("datasets") or {}) or [None]
    for alias in config.get("backbones") or {}:
        try:
            for dataset in datasets:  # an input size given per dataset must name every dataset of the grid
                check_backbone_options(backbone_options(config, alias, dataset), f"backbones.{alias}")
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def forward_gflops(options: Mapping) -> float:
    """Forward GFLOPs of one image through the backbone of a ``backbones`` entry (multiply-add = 2 FLOPs),
    counted by ``torch.utils.flop_counter`` on the architecture at its ``input_size``; weights not loaded."""
    from torch.utils.flop_counter import FlopCounterMode

    backbone = create_backbone({**options, "weights": NO_WEIGHTS})
    size = int(options["input_size"])
    counter = FlopCounterMode(display=False)
    # train mode: in eval mode nn.MultiheadAttention takes a fused fast path whose matrix products the
    # counter does not see (ViT-B/16 would count 22.5 instead of 33.7 GFLOPs); the FLOPs are the same
    with counter, torch.no_grad():
        backbone.extractor.train()(torch.zeros(2, 3, size, size))  # 2 images: batch norm needs more than 1
    return counter.get_total_flops() / 2 / 1e9
