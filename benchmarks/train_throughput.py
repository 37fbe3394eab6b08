"""Training throughput: ``bank`` vs ``online`` mode on the same data and models.

Both modes run the same teacher training step (two views per image, head +
hashing objective, Adam) on the same images; ``bank`` reads the stored
backbone features of the views, ``online`` augments the images and runs the
frozen backbone every step. Prints steps per second of each and the ratio.

With ``--map`` it also trains the teacher for a few epochs in ``online`` mode
and in ``bank`` mode with several numbers of stored views V, and prints the
validation mAP of each, to show how far the bank shortcut moves mAP (SPEC §8).

    .venv/bin/python benchmarks/train_throughput.py                 # tiny synthetic grid (config/test.yaml)
    .venv/bin/python benchmarks/train_throughput.py --config config/demo.yaml --dataset fashion_mnist \\
        --backbone lite2 --steps 20
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from brcd.cells import Cell
from brcd.checkpoint import build_head, head_spec
from brcd.config import REPO_ROOT, TrainSettings, backbone_options, dataset_options, load_config
from brcd.data import create_dataset
from brcd.data.splits import Splits, write_splits
from brcd.features import build_bank, create_source
from brcd.hashing import create_objective
from brcd.train import sample_view_pairs, train_teacher, two_views


def time_steps(source, spec, bits: int, n_train: int, batch: int, steps: int, seed: int = 0) -> float:
    """Seconds per training step (after one warm-up step)."""
    torch.manual_seed(seed)
    head = build_head(spec)
    objective = create_objective("cibhash", bits)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    times = []
    for step in range(steps + 1):
        pos = rng.choice(n_train, size=batch, replace=False)
        v1, v2 = sample_view_pairs(rng, batch, source.num_views)
        started = time.perf_counter()
        loss = objective(*two_views(head, source, pos, v1, v2))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step:  # the first step warms caches and allocators
            times.append(time.perf_counter() - started)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO_ROOT / "config" / "test.yaml"))
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--backbone", default="tteacher")
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--map", action="store_true", help="also compare validation mAP of bank (several V) vs online")
    parser.add_argument("--views", type=int, nargs="+", default=[2, 4, 8], help="V values for --map")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs for --map")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        options = dataset_options(config, args.dataset)
        dataset = create_dataset(args.dataset, options)
        write_splits(tmp / "split.parquet", dataset, options, seed=config["split_seed"])
        splits = Splits(tmp / "split.parquet")
        print(f"building the feature bank of {args.backbone} on {args.dataset} ({len(splits.indices['train'])} "
              f"training images x {config['views']} views) ...", flush=True)
        started = time.perf_counter()
        build_bank(config, args.dataset, args.backbone, str(tmp / "split.parquet"), tmp / "bank")
        bank_seconds = time.perf_counter() - started

        bank = create_source(config, args.dataset, args.backbone, splits, "cpu", str(tmp / "bank"))
        online = create_source({**config, "mode": "online"}, args.dataset, args.backbone, splits, "cpu")
        spec = head_spec(backbone_options(config, args.backbone, args.dataset), args.bits, bank.feature_dim,
                         TrainSettings.from_config(config, "student").matmul)
        batch = min(args.batch, len(splits.indices["train"]))
        n_train = len(splits.indices["train"])
        t_bank = time_steps(bank, spec, args.bits, n_train, batch, args.steps)
        t_online = time_steps(online, spec, args.bits, n_train, batch, max(3, args.steps // 5))
        print()
        print(f"{'mode':<8} {'s/step':>10} {'steps/s':>10}   ({args.backbone}, batch {batch}, {args.bits} bits, "
              f"{args.threads} threads)")
        print(f"{'online':<8} {t_online:>10.4f} {1 / t_online:>10.1f}")
        print(f"{'bank':<8} {t_bank:>10.4f} {1 / t_bank:>10.1f}")
        print(f"bank / online speed-up: {t_online / t_bank:.1f}x  (one-off bank build: {bank_seconds:.1f} s, "
              f"worth it after {bank_seconds / max(t_online - t_bank, 1e-9):.0f} steps)")

        if args.map:
            compare_map(config, args, tmp)


def compare_map(config: dict, args, tmp: Path) -> None:
    """Validation mAP after the same training budget: online vs bank with several V."""
    cell = Cell(args.dataset, args.bits, "cibhash", args.backbone, 0)
    settings = {"epochs": args.epochs, "min_epochs": args.epochs, "eval_every": args.epochs}
    results = {}
    for mode, views in [("online", None)] + [("bank", v) for v in args.views]:
        run_config = copy.deepcopy(config)
        run_config["mode"] = mode
        run_config["train"]["teacher"] = {**run_config.get("train", {}).get("teacher", {}), **settings}
        bank = None
        if mode == "bank":
            run_config["views"] = views
            bank = str(tmp / f"bank{views}")
            build_bank(run_config, args.dataset, args.backbone, str(tmp / "split.parquet"), bank)
        result = train_teacher(run_config, cell, str(tmp / "split.parquet"), str(tmp / f"{mode}{views}.pt"), None, bank)
        results[(mode, views)] = result["best"]["teacher"]["map"]
    print()
    print(f"validation mAP@K after {args.epochs} epochs ({args.backbone}, {args.bits} bits):")
    online = results[("online", None)]
    for (mode, views), value in results.items():
        label = "online" if mode == "online" else f"bank V={views}"
        print(f"  {label:<12} {value:.4f}   ({value - online:+.4f} vs online)")


if __name__ == "__main__":
    main()
