"""Hash heads (SPEC §2): the only trained part of an encoder.

A head maps the frozen backbone's feature to ``bits`` pre-sign logits u;
:func:`brcd.hashing.hash_codes` turns u into codes.
"""
from __future__ import annotations

from torch import nn

from brcd.codes import check_bits
from brcd.errors import ConfigError
from brcd.registry import Registry

#: head kind -> factory(in_dim, bits, hidden) -> nn.Module
HEADS: Registry = Registry("hash head", config_key="backbones.<alias>.head")


@HEADS.register("linear")
def linear_head(in_dim: int, bits: int, hidden: int) -> nn.Module:
    return nn.Linear(in_dim, bits)


@HEADS.register("mlp")
def mlp_head(in_dim: int, bits: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, bits))


def create_head(kind: str, in_dim: int, bits: int, hidden: int = 1000) -> nn.Module:
    """A fresh head of ``kind`` mapping ``in_dim`` features to ``bits`` logits."""
    factory = HEADS.get(kind)
    check_bits(bits)
    for name, value in (("in_dim", in_dim), ("hidden", hidden)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"head `{name}` must be a positive integer; got {value!r}")
    return factory(in_dim, bits, hidden)
