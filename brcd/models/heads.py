"""Hash heads (SPEC §2): the only trained part of an encoder.

A head maps the frozen backbone's feature to ``bits`` pre-sign logits u;
:func:`brcd.hashing.hash_codes` turns u into codes. Each head kind declares
the settings it reads from its ``backbones`` entry (``settings``), with their
types and ranges; the config check validates every entry against them.
"""
from __future__ import annotations

from typing import ClassVar, Mapping

from torch import nn

from brcd.codes import check_bits
from brcd.errors import ConfigError
from brcd.models.linear import DEFAULT_KERNEL, linear_layer
from brcd.options import Int, Options
from brcd.registry import Registry

#: head kind -> class with ``settings`` and ``build(in_dim, bits, hidden, linear) -> nn.Module``, where
#: ``linear(in, out)`` makes its linear layers (:func:`brcd.models.linear.linear_layer`)
HEADS: Registry = Registry("hash head", config_key="backbones.<alias>.head")


@HEADS.register("linear")
class LinearHead:
    settings: ClassVar[Options] = Options()

    @staticmethod
    def build(in_dim: int, bits: int, hidden: int, linear=nn.Linear) -> nn.Module:
        return linear(in_dim, bits)


@HEADS.register("mlp")
class MLPHead:
    settings: ClassVar[Options] = Options(hidden=Int(1000, "hidden units", minimum=1, maximum=65536))

    @staticmethod
    def build(in_dim: int, bits: int, hidden: int, linear=nn.Linear) -> nn.Module:
        return nn.Sequential(linear(in_dim, hidden), nn.ReLU(), linear(hidden, bits))


def check_head_settings(kind: str, entry: Mapping, key: str) -> dict:
    """The settings head ``kind`` declares, read from the backbone entry ``entry`` (at config key ``key``)
    and typed; a value out of range names ``key.setting``."""
    declared = HEADS.get(kind).settings
    return declared.parse({name: entry[name] for name in declared if name in entry}, key)


def create_head(kind: str, in_dim: int, bits: int, hidden: int = 1000, matmul: str = DEFAULT_KERNEL) -> nn.Module:
    """A fresh head of ``kind`` mapping ``in_dim`` features to ``bits`` logits, its products on the
    ``matmul`` kernel (:data:`brcd.models.linear.LINEAR_KERNELS`)."""
    head = HEADS.get(kind)
    check_bits(bits)
    if not isinstance(in_dim, int) or in_dim < 1:
        raise ConfigError(f"a head's input width must be a positive integer; got {in_dim!r}")
    return head.build(in_dim, bits, check_head_settings(kind, {"hidden": hidden}, "head").get("hidden", hidden),
                      linear_layer(matmul))
