"""Issue 27, item 4: negatives without replacement, and the embeddings option of crd/crcd/packd."""
from __future__ import annotations

import pytest
import torch

from brcd.distill import create_distill_loss
from brcd.distill.base import sample_negatives
from brcd.errors import ConfigError


def test_negatives_are_drawn_without_replacement_and_never_the_positive():
    torch.manual_seed(0)
    positives = torch.tensor([0, 5, 99, 42])
    draw = sample_negatives(positives, 60, 100)
    assert draw.shape == (4, 60)
    for row, positive in zip(draw.tolist(), positives.tolist()):
        assert len(set(row)) == 60  # no repeats
        assert positive not in row and min(row) >= 0 and max(row) < 100
    # every other image once: a permutation of the other 99
    full = sample_negatives(torch.tensor([7]), 99, 100)[0].tolist()
    assert sorted(full) == [i for i in range(100) if i != 7]


def test_more_negatives_than_other_images_fall_back_to_replacement():
    torch.manual_seed(0)
    draw = sample_negatives(torch.tensor([1, 3]), 20, 10)
    assert draw.shape == (2, 20)
    assert not (draw == torch.tensor([[1], [3]])).any() and draw.max() < 10


@pytest.mark.parametrize("name", ["crd", "crcd", "packd"])
def test_embeddings_train_by_default_and_freeze_on_request(name):
    trainable = create_distill_loss(name, 16, 50, {name: {"negatives": 8}})
    assert [p for p in trainable.parameters() if p.requires_grad]
    frozen = create_distill_loss(name, 16, 50, {name: {"negatives": 8, "embeddings": "frozen"}})
    assert list(frozen.parameters()) and not [p for p in frozen.parameters() if p.requires_grad]


def test_embeddings_option_is_checked():
    with pytest.raises(ConfigError, match="embeddings"):
        create_distill_loss("crd", 16, 50, {"crd": {"embeddings": "fixed"}})
    with pytest.raises(ConfigError, match="unknown setting"):
        create_distill_loss("sp", 16, 50, {"sp": {"embeddings": "frozen"}})
