"""Feature banks, the trainer, teacher training and encoding on synthetic data."""
from __future__ import annotations


import numpy as np
import pytest
import torch
import yaml

from brcd.cells import Cell
from brcd.codes import read_codes, unpack_codes
from brcd.config import REPO_ROOT, validate_schema
from brcd.data import create_dataset
from brcd.data.splits import Splits, write_splits
from brcd.encode import encode_model
from brcd.errors import ConfigError, DataError, MetadataMismatchError
from brcd.features import BankSource, bank_metadata, build_bank, create_source
from brcd.retrieval.metrics import map_at_k
from brcd.train import LossIsNotFinite, fit, sample_view_pairs, train_teacher
from brcd.config import TrainSettings

CELL = Cell("synthetic", 16, "cibhash", "tteacher", 0)


def _config(**train):
    config = validate_schema(yaml.safe_load((REPO_ROOT / "config" / "test.yaml").read_text()))
    config["train"]["teacher"].update(train)
    return config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Split and teacher feature bank of the tiny test config, built once."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("train")
    config = _config()
    ds = create_dataset("synthetic", config["datasets"]["synthetic"])
    write_splits(root / "split.parquet", ds, config["datasets"]["synthetic"], seed=0)
    build_bank(config, "synthetic", "tteacher", str(root / "split.parquet"), root / "bank")
    return root


def test_bank_layout_and_views(workdir):
    config = _config()
    splits = Splits(workdir / "split.parquet")
    bank = BankSource(workdir / "bank", bank_metadata(config, "synthetic", "tteacher", splits))
    assert bank.num_views == 4 and bank.feature_dim == 256
    assert np.load(workdir / "bank" / "views.npy", mmap_mode="r").dtype == np.float16
    pos = np.array([0, 5, 7])
    v1 = bank.views(pos, np.array([0, 1, 2]))
    v2 = bank.views(pos, np.array([1, 1, 3]))
    assert v1.shape == (3, 256) and not torch.equal(v1[0], v2[0]) and torch.equal(v1[1], v2[1])
    assert bank.rotations(pos).shape == (3, 4, 256)
    train = splits.indices["train"][pos]
    # rotation 0 is the clean view
    assert torch.allclose(bank.rotations(pos)[:, 0], bank.clean(train), atol=1e-2)


def test_bank_reads_are_the_stored_floats(workdir):
    """Views, view pairs and rotations read from memory are the stored float16 values exactly, rows in the
    order asked (a training step's reads; training stays byte for byte what it was when they came from
    the memory map)."""
    config = _config()
    splits = Splits(workdir / "split.parquet")
    bank = BankSource(workdir / "bank", bank_metadata(config, "synthetic", "tteacher", splits))
    stored_views = np.load(workdir / "bank" / "views.npy").astype(np.float32)
    stored_rotations = np.load(workdir / "bank" / "rotations.npy").astype(np.float32)
    pos, v1, v2 = np.array([7, 0, 5, 7]), np.array([3, 0, 1, 2]), np.array([1, 2, 1, 0])
    assert np.array_equal(bank.views(pos, v1).numpy(), stored_views[pos, v1])
    pairs = bank.view_pairs(pos, v1, v2)
    assert torch.equal(pairs, torch.cat([bank.views(pos, v1), bank.views(pos, v2)]))
    assert torch.equal(pairs, super(BankSource, bank).view_pairs(pos, v1, v2))  # the sources' default
    assert np.array_equal(bank.rotations(pos).numpy(), stored_rotations[pos])
    # the same arrays held in memory without files (benchmarks/step_cost.py) read the same
    held = BankSource.from_arrays(*(np.load(workdir / "bank" / f"{name}.npy")
                                    for name in ("clean", "clean_index", "views", "rotations")))
    assert (held.num_views, held.feature_dim) == (bank.num_views, bank.feature_dim)
    assert torch.equal(held.view_pairs(pos, v1, v2), pairs) and torch.equal(held.rotations(pos), bank.rotations(pos))
    train = splits.indices["train"][pos]
    assert torch.equal(held.clean(train), bank.clean(train))


def test_bank_matches_online_features(workdir):
    """The bank stores exactly what the online path computes (up to float16)."""
    config = _config()
    splits = Splits(workdir / "split.parquet")
    online = create_source({**config, "mode": "online"}, "synthetic", "tteacher", splits, "cpu")
    bank = create_source(config, "synthetic", "tteacher", splits, "cpu", str(workdir / "bank"))
    pos, views = np.array([1, 2]), np.array([3, 0])
    assert torch.allclose(online.views(pos, views), bank.views(pos, views), atol=2e-2, rtol=1e-2)
    idx = splits.indices["query"][:3]
    assert torch.allclose(online.clean(idx), bank.clean(idx), atol=2e-2, rtol=1e-2)


def test_bank_from_other_split_or_backbone_is_rejected(workdir, tmp_path):
    config = _config()
    ds = create_dataset("synthetic", config["datasets"]["synthetic"])
    write_splits(tmp_path / "other.parquet", ds, config["datasets"]["synthetic"], seed=1)
    other = Splits(tmp_path / "other.parquet")
    with pytest.raises(MetadataMismatchError, match="split: file has .*rebuild it with the `features` rule"):
        BankSource(workdir / "bank", bank_metadata(config, "synthetic", "tteacher", other))
    splits = Splits(workdir / "split.parquet")
    with pytest.raises(MetadataMismatchError, match="backbone: file has 'tteacher', expected 'tstudent'"):
        BankSource(workdir / "bank", bank_metadata(config, "synthetic", "tstudent", splits))


def test_incomplete_bank(tmp_path):
    with pytest.raises(DataError, match="incomplete"):
        BankSource(tmp_path, {})


def test_view_pairs_are_distinct():
    rng = np.random.default_rng(0)
    v1, v2 = sample_view_pairs(rng, 1000, 4)
    assert (v1 != v2).all() and v1.max() < 4 and v2.max() < 4 and set(v1) == {0, 1, 2, 3}
    v1, v2 = sample_view_pairs(rng, 1000, None)
    assert (v1 != v2).all() and len(set(v1)) > 990


def _train(config, workdir, tmp_path, mode_bank=True, name="model.pt"):
    bank = str(workdir / "bank") if mode_bank else None
    result = train_teacher(config, CELL, str(workdir / "split.parquet"), str(tmp_path / name),
                           str(tmp_path / "history.tsv"), bank)
    return result


def _random_code_map(splits, topk, seed=0):
    rng = np.random.default_rng(seed)
    val, db = splits.indices["val"], splits.indices["database"]
    q = np.packbits(rng.random((len(val), 16)) < 0.5, axis=1)
    d = np.packbits(rng.random((len(db), 16)) < 0.5, axis=1)
    return map_at_k(q, d, splits.labels(val), splits.labels(db), topk)


@pytest.mark.parametrize("mode", ["bank", "online"])
def test_teacher_learns_in_both_modes(workdir, tmp_path, mode):
    epochs = 20 if mode == "bank" else 8
    config = _config(epochs=epochs, min_epochs=epochs, eval_every=4 if mode == "online" else 5)
    config["mode"] = mode
    result = _train(config, workdir, tmp_path, mode_bank=(mode == "bank"))
    history = result["history"]
    first, last = history[0]["loss"], np.mean([row["loss"] for row in history[-3:]])
    assert last < first - 0.05, (first, last)
    splits = Splits(workdir / "split.parquet")
    random_map = np.mean([_random_code_map(splits, 50, s) for s in range(5)])
    assert result["best"]["teacher"]["map"] > random_map + 0.1, (result["best"]["teacher"]["map"], random_map)
    lines = (tmp_path / "history.tsv").read_text().splitlines()
    assert lines[0].split("\t")[:4] == ["epoch", "loss", "ntxent", "kl"] and "val_map_teacher" in lines[0]
    assert len(lines) == len(history) + 1


def test_same_seed_same_codes(workdir, tmp_path):
    config = _config(epochs=5, min_epochs=5)
    for name in ("a", "b"):
        _train(config, workdir, tmp_path, name=f"{name}.pt")
        encode_model(config, CELL, str(workdir / "split.parquet"), str(tmp_path / f"{name}.pt"),
                     {"teacher": str(tmp_path / f"{name}.parquet")}, bank=str(workdir / "bank"))
    a, b = read_codes(tmp_path / "a.parquet"), read_codes(tmp_path / "b.parquet")
    assert np.array_equal(a.packed, b.packed) and np.array_equal(a.index, b.index)
    other = Cell("synthetic", 16, "cibhash", "tteacher", 1)
    train_teacher(config, other, str(workdir / "split.parquet"), str(tmp_path / "c.pt"), None, str(workdir / "bank"))
    encode_model(config, other, str(workdir / "split.parquet"), str(tmp_path / "c.pt"),
                 {"teacher": str(tmp_path / "c.parquet")}, bank=str(workdir / "bank"))
    assert not np.array_equal(a.packed, read_codes(tmp_path / "c.parquet").packed)


def test_code_file_round_trip(workdir, tmp_path):
    config = _config(epochs=5, min_epochs=5)
    _train(config, workdir, tmp_path)
    encode_model(config, CELL, str(workdir / "split.parquet"), str(tmp_path / "model.pt"),
                 {"teacher": str(tmp_path / "codes.parquet")}, bank=str(workdir / "bank"))
    codes = read_codes(tmp_path / "codes.parquet")
    meta = codes.metadata
    for key in ("dataset", "model", "bits", "backbone", "seed", "config_hash"):
        assert key in meta
    assert meta["model"] == "teacher/cibhash/tteacher" and meta["bits"] == 16 and meta["backbone"] == "tteacher"
    splits = Splits(workdir / "split.parquet")
    assert sorted(set(codes.split)) == ["database", "query", "train", "val"]
    assert np.array_equal(codes.select("query").index, splits.indices["query"])
    # MSB first: bit 0 of the code is the top bit of byte 0; +1 -> 1
    from brcd.checkpoint import load_checkpoint, load_head

    head = load_head(load_checkpoint(tmp_path / "model.pt"), "teacher")
    bank = BankSource(workdir / "bank", bank_metadata(config, "synthetic", "tteacher", splits))
    q = codes.select("query")
    with torch.no_grad():
        signs = torch.where(head(bank.clean(q.index)) >= 0, 1, -1).numpy()
    assert np.array_equal(unpack_codes(q.packed, 16), signs)
    assert np.array_equal((q.packed[:, 0] >> 7) & 1, (signs[:, 0] > 0).astype(np.uint8))
    # Readable with plain pandas, too
    import pandas as pd

    frame = pd.read_parquet(tmp_path / "codes.parquet")
    assert list(frame.columns) == ["index", "split", "code"] and len(frame.code.iloc[0]) == 2


def test_checkpoint_for_another_cell_is_rejected(workdir, tmp_path):
    config = _config(epochs=2, min_epochs=2)
    _train(config, workdir, tmp_path)
    other = Cell("synthetic", 16, "cibhash", "tteacher", 3)
    with pytest.raises(MetadataMismatchError, match="seed: file has 0, expected 3"):
        encode_model(config, other, str(workdir / "split.parquet"), str(tmp_path / "model.pt"),
                     {"teacher": str(tmp_path / "x.parquet")}, bank=str(workdir / "bank"))


def test_nan_loss_names_epoch_and_term():
    head = torch.nn.Linear(4, 8)

    def step(pos, v1, v2):
        out = head(torch.randn(len(pos), 4)).sum()
        return {"loss": out, "ntxent": out * float("nan")}

    settings = TrainSettings(lr=1e-3, epochs=3, min_epochs=0, batch_size=4, eval_every=1, patience=1, weight_decay=0)
    with pytest.raises(LossIsNotFinite, match="loss term 'ntxent' became nan in epoch 1"):
        fit({"head": head}, step, 8, 2, settings, 0, lambda h: {}, head)


def test_bits_not_multiple_of_8(workdir, tmp_path):
    config = _config(epochs=1)
    bad = Cell("synthetic", 12, "cibhash", "tteacher", 0)
    with pytest.raises(ConfigError, match="multiple of 8"):
        train_teacher(config, bad, str(workdir / "split.parquet"), str(tmp_path / "m.pt"), None, str(workdir / "bank"))


def test_split_file_of_another_draw_is_rejected(workdir):
    config = _config()
    config["split_seed"] = 5
    splits = Splits(workdir / "split.parquet")
    with pytest.raises(MetadataMismatchError, match="split file .*seed: file has 0, expected 5.*`split` rule"):
        create_source(config, "synthetic", "tteacher", splits, "cpu", str(workdir / "bank"))
    config = _config()
    config["datasets"]["synthetic"]["val"] = 50
    with pytest.raises(MetadataMismatchError, match="sizes: file has"):
        create_source(config, "synthetic", "tteacher", splits, "cpu", str(workdir / "bank"))


def test_identical_checkpoints_are_byte_identical(tmp_path):
    """model.pt must not embed its random temp-file name (torch names the zip records after the file)."""
    from brcd.checkpoint import build_head, load_checkpoint, load_head, save_checkpoint

    spec = {"kind": "mlp", "in_dim": 32, "bits": 16, "hidden": 64}
    torch.manual_seed(0)
    head = build_head(spec)
    args = (spec, {"teacher": head.state_dict()}, {"teacher": {"epoch": 3, "map": 0.5}}, {"dataset": "synthetic"})
    save_checkpoint(tmp_path / "a" / "model.pt", *args)
    save_checkpoint(tmp_path / "b" / "model.pt", *args)
    save_checkpoint(tmp_path / "a" / "again.pt", *args)
    first = (tmp_path / "a" / "model.pt").read_bytes()
    assert first == (tmp_path / "b" / "model.pt").read_bytes() == (tmp_path / "a" / "again.pt").read_bytes()
    assert b".model.pt." not in first  # no temp name inside
    loaded = load_head(load_checkpoint(tmp_path / "b" / "model.pt"), "teacher")
    x = torch.randn(4, 32)
    assert torch.equal(loaded(x), head.eval()(x))
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["again.pt", "model.pt"]  # no temp files left


@pytest.mark.parametrize("weight_decay", [0.0, 1e-4])
def test_fused_adam_is_torch_fused_adam_bit_for_bit(weight_decay):
    """brcd.train.FusedAdam (no torch._dynamo import) makes exactly torch.optim.Adam(fused=True)'s
    updates, including parameters that get no gradient in a step."""
    from brcd.train import FusedAdam

    def trajectory(make_optimizer):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(12, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
        unused = torch.nn.Parameter(torch.randn(4))
        optimizer = make_optimizer([*model.parameters(), unused])
        data = torch.randn(5, 16, 12, generator=torch.Generator().manual_seed(1))
        for x in data:
            optimizer.zero_grad(set_to_none=True)
            model(x).square().mean().backward()
            optimizer.step()
        return [p.detach().clone() for p in [*model.parameters(), unused]]

    ours = trajectory(lambda params: FusedAdam(params, lr=1e-2, weight_decay=weight_decay))
    torch_adam = trajectory(lambda params: torch.optim.Adam(params, lr=1e-2, weight_decay=weight_decay, fused=True))
    for a, b in zip(ours, torch_adam):
        assert torch.equal(a, b)
    assert not torch.equal(ours[0], trajectory(lambda params: FusedAdam(params, lr=2e-2))[0])  # it does optimise


@pytest.mark.parametrize("min_delta, stops_at", [(0.0, 12), (0.005, 6)])
def test_min_delta_stops_runs_that_creep_up(min_delta, stops_at):
    """Validation mAP that rises by 0.002 per validation: with min_delta 0 every validation is an
    improvement and the run reaches its cap; with min_delta 0.005 none after the first is, so it
    stops after `patience` of them (past min_epochs). The best checkpoint follows every gain."""
    head = torch.nn.Linear(4, 8)
    scores = iter(0.5 + 0.002 * i for i in range(100))

    def step(pos, v1, v2):
        return {"loss": head(torch.randn(len(pos), 4)).square().mean()}

    settings = TrainSettings(lr=1e-3, epochs=12, min_epochs=4, batch_size=4, eval_every=2, patience=2,
                             weight_decay=0, min_delta=min_delta)
    result = fit({"head": head}, step, 8, 2, settings, 0, lambda h: {"sym": next(scores)}, head)
    assert result["run"]["epochs_run"] == stops_at
    assert result["run"]["stopped_early"] == (stops_at < 12)
    assert result["best"]["sym"]["epoch"] == stops_at  # still the last, highest validation
