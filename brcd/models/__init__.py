"""Encoders: frozen pretrained backbones, their weights, and trainable hash heads."""
from brcd.models.backbones import (
    BACKBONE_SOURCES,
    FrozenBackbone,
    check_backbone_entries,
    check_backbone_options,
    create_backbone,
)
from brcd.models.heads import HEADS, create_head
from brcd.models.weights import WEIGHT_SOURCES

__all__ = [
    "BACKBONE_SOURCES",
    "FrozenBackbone",
    "HEADS",
    "WEIGHT_SOURCES",
    "check_backbone_entries",
    "check_backbone_options",
    "create_backbone",
    "create_head",
]
