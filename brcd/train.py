"""The trainer shared by teachers and students (SPEC §2).

Only the hashing head (and a distillation loss's own embeddings) is trained;
backbones are frozen and reached through a :class:`~brcd.features.FeatureSource`
(feature bank or online). Every ``eval_every`` epochs the head encodes the
clean validation images and the database, and validation mAP@K decides the
best checkpoint; training stops early after ``patience`` validations without
an improvement of more than ``min_delta`` (never before ``min_epochs``). Several selection criteria can be
tracked at once — a student keeps one best head for the symmetric and one for
the asymmetric paradigm, like the reference code, but always selects on the
validation split, never on the queries.
"""
from __future__ import annotations

import copy
import csv
import logging
import os
import time
from typing import Callable, Mapping

import numpy as np
import torch
from tqdm import tqdm

from brcd.codes import pack_codes
from brcd.config import TrainSettings
from brcd.hashing import codes_from_logits
from brcd.errors import BrcdError
from brcd.io import atomic_path

log = logging.getLogger(__name__)

class LossIsNotFinite(BrcdError):
    pass


def sample_view_pairs(rng: np.random.Generator, n: int, num_views: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Two distinct view ids per image: from the bank's ``num_views``, or fresh (online)."""
    high = num_views if num_views is not None else 2**31 - 1
    v1 = rng.integers(0, high, size=n)
    v2 = (v1 + rng.integers(1, high, size=n)) % high  # never equal to v1
    return v1, v2


@torch.no_grad()
def encode_features(head: torch.nn.Module, features: torch.Tensor, batch_size: int = 4096) -> np.ndarray:
    """Packed codes (N x L/8 uint8) of clean features; sign(u) with 0 -> +1."""
    head.eval()
    logits = torch.cat([head(features[s:s + batch_size]) for s in range(0, len(features), batch_size)])
    return pack_codes(codes_from_logits(logits).cpu().numpy())


class Validator:
    """Validation mAP@K of a head, one value per selection criterion.

    The head encodes the clean validation images once; each criterion
    searches them in its own database: ``None`` means the head's own codes of
    the database images (symmetric), a packed code array fixes the database
    side (the teacher's codes, for the asymmetric criterion).
    """

    def __init__(self, val_features, val_labels, db_features, db_labels, topk: int,
                 databases: Mapping[str, np.ndarray | None]):
        self.val_features, self.db_features = val_features, db_features
        self.val_labels, self.db_labels = val_labels, db_labels
        if int(topk) > len(db_labels):  # never rank with a smaller K than the config asks for
            from brcd.errors import ConfigError

            raise ConfigError(f"`topk` {topk} is larger than the database ({len(db_labels)} images); "
                              f"set the dataset's `datasets.<name>.topk` to at most {len(db_labels)}")
        self.topk = int(topk)
        self.databases = dict(databases)

    def __call__(self, head) -> dict[str, float]:
        from brcd.retrieval.metrics import map_at_k

        query = encode_features(head, self.val_features)
        own = None
        scores = {}
        for name, database in self.databases.items():
            if database is None:
                own = encode_features(head, self.db_features) if own is None else own
                database = own
            scores[name] = float(map_at_k(query, database, self.val_labels, self.db_labels, self.topk))
        return scores


StepFn = Callable[[np.ndarray, np.ndarray, np.ndarray], Mapping[str, torch.Tensor]]


def _check_finite(terms: Mapping[str, torch.Tensor], epoch: int) -> None:
    for name, value in terms.items():
        if not torch.isfinite(value).all():
            raise LossIsNotFinite(
                f"loss term {name!r} became {value.item() if value.numel() == 1 else 'non-finite'} in epoch {epoch}; "
                "lower the learning rate (`train.<role>.lr`) or check the input features"
            )


class FusedAdam:
    """Adam with weight decay as one fused kernel over all parameters: the update of
    ``torch.optim.Adam(params, lr, weight_decay=..., fused=True)``, bit for bit (tests/test_train.py).

    Why not torch.optim: its ``step`` imports ``torch._dynamo`` on first use, ~1 s of start-up
    in every training process (the demo starts ~80); this calls the same kernel without it.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.weight_decay, self.betas, self.eps = float(lr), float(weight_decay), betas, float(eps)
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]  # as torch.optim: skip unused
        if not live:
            return
        pick = lambda tensors: [tensors[i] for i in live]  # noqa: E731
        steps = pick(self.steps)
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(pick(self.params), [self.params[i].grad for i in live], pick(self.exp_avgs),
                           pick(self.exp_avg_sqs), [], steps, amsgrad=False, lr=self.lr, beta1=self.betas[0],
                           beta2=self.betas[1], weight_decay=self.weight_decay, eps=self.eps, maximize=False,
                           grad_scale=None, found_inf=None)


def fit(
    modules: Mapping[str, torch.nn.Module],
    step: StepFn,
    num_train: int,
    num_views: int | None,
    settings: TrainSettings,
    seed: int,
    validator: Callable[[torch.nn.Module], Mapping[str, float]],
    head: torch.nn.Module,
    log_path: str | os.PathLike | None = None,
    desc: str = "train",
) -> dict:
    """Optimise ``modules`` with Adam on ``step``'s ``loss``; keep ``head``'s best state per criterion.

    ``validator(head)`` gives one validation mAP per selection criterion.
    Returns ``{"best": {criterion: {"epoch", "map", "state"}}, "history": [...], "run": training_run(...),
    "seconds": {"steps": ..., "validation": ...}}`` (wall-clock seconds, for the log and benchmarks only:
    no result file holds them, so identical runs write identical files).
    """
    rng = np.random.default_rng([seed, 7])
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    # fused Adam: one kernel for all parameters, ~4x faster than the default on CPU
    optimizer = FusedAdam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    batch = min(settings.batch_size, num_train)
    best: dict[str, dict] = {}
    history, stale, stopped_early = [], 0, False
    seconds = {"steps": 0.0, "validation": 0.0}
    # a bar in a terminal only (disable=None): in a job's log file its carriage-return updates would
    # run into the per-epoch log lines below, which already show the progress there
    bar = tqdm(range(1, settings.epochs + 1), desc=desc, unit="epoch", mininterval=5, disable=None)
    for epoch in bar:
        for m in modules.values():
            m.train()
        started, sums, steps = time.perf_counter(), {}, 0
        order = rng.permutation(num_train)
        for start in range(0, num_train - batch + 1, batch):  # drop the ragged last batch
            pos = order[start:start + batch]
            v1, v2 = sample_view_pairs(rng, len(pos), num_views)
            terms = step(pos, v1, v2)
            _check_finite(terms, epoch)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            steps += 1
        row = {"epoch": epoch, **{name: total / max(steps, 1) for name, total in sums.items()}}
        seconds["steps"] += time.perf_counter() - started
        if epoch % settings.eval_every == 0 or epoch == settings.epochs:
            improved, validation_started = False, time.perf_counter()
            for name, score in validator(head).items():
                row[f"val_map_{name}"] = score
                previous = best.get(name, {"map": -1.0})["map"]
                if score > previous:
                    best[name] = {"epoch": epoch, "map": score, "state": copy.deepcopy(head.state_dict())}
                improved |= score > previous + settings.min_delta
            stale = 0 if improved else stale + 1
            seconds["validation"] += time.perf_counter() - validation_started
        history.append(row)
        bar.set_postfix({k: f"{v:.4f}" for k, v in row.items() if k in ("loss",) or k.startswith("val_map")})
        # wall-clock time goes to the log only: result files must not differ between identical runs
        log.info("%s epoch %d (%.2f s): %s", desc, epoch, time.perf_counter() - started,
                 ", ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch"))
        if stale >= settings.patience and epoch >= settings.min_epochs:
            log.info("%s: early stop at epoch %d (no improvement in %d validations)", desc, epoch, stale)
            stopped_early = True
            break
    if log_path is not None:
        write_history(log_path, history)
    return {"best": best, "history": history, "run": training_run(history, settings, stopped_early),
            "seconds": seconds}


def training_run(history: list[dict], settings: TrainSettings, stopped_early: bool) -> dict:
    """How a training run ended: what the report needs to say whether it converged.

    ``stopped_early``: early stopping ended it (``patience`` validations without
    improvement, after ``min_epochs``); otherwise it ran into the ``epochs`` cap.
    """
    validated = [row["epoch"] for row in history if any(k.startswith("val_map_") for k in row)]
    return {
        "epochs_run": int(history[-1]["epoch"]) if history else 0,
        "epoch_cap": int(settings.epochs),
        "last_validation": int(validated[-1]) if validated else 0,
        "stopped_early": bool(stopped_early),
    }


def converged(run: Mapping, best_epoch: int) -> bool:
    """False when a run hit its epoch cap while its best validation was its last one: it was
    still improving when it was cut off (the report flags such cells)."""
    hit_cap = not run["stopped_early"] and run["epochs_run"] >= run["epoch_cap"]
    return not (hit_cap and best_epoch >= run["last_validation"])


def write_history(path: str | os.PathLike, history: list[dict]) -> None:
    """The per-epoch log as a small TSV table (loss terms, val mAP)."""
    columns = list(dict.fromkeys(key for row in history for key in row))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns, delimiter="\t", restval="")
            writer.writeheader()
            for row in history:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def two_views(head, source, pos, v1, v2) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's logits of views ``v1`` and ``v2`` of the images at ``pos``.

    One forward pass over both views: a single 2B-row matrix product runs
    about twice as fast on a CPU core as two B-row ones.
    """
    return head(source.view_pairs(pos, v1, v2)).chunk(2)


def validation_data(source, splits) -> tuple:
    """What a :class:`Validator` searches: the clean val images' features and labels, then the
    database's."""
    val, db = splits.indices["val"], splits.indices["database"]
    return source.clean(val), splits.labels(val), source.clean(db), splits.labels(db)


def split_validator(source, splits, topk: int, databases: Mapping[str, np.ndarray | None]) -> Validator:
    """Validator over the clean val images against the clean database images."""
    return Validator(*validation_data(source, splits), topk, databases)


def train_teacher(config: Mapping, cell, split_path: str, out: str, log_path: str | None = None,
                  bank: str | None = None, device="cpu") -> dict:
    """Train a teacher's hashing head with its own objective; save ``model.pt``."""
    from brcd.checkpoint import head_spec, build_head, save_checkpoint
    from brcd.codes import check_bits
    from brcd.config import backbone_options, dataset_options
    from brcd.data.splits import Splits
    from brcd.features import create_source
    from brcd.hashing import create_objective
    from brcd.runtime import seed_everything

    check_bits(cell.bits)
    settings = TrainSettings.from_config(config, "teacher")
    splits = Splits(split_path)
    source = create_source(config, cell.dataset, cell.teacher, splits, device, bank)
    seed_everything(cell.seed)
    spec = head_spec(backbone_options(config, cell.teacher, cell.dataset), cell.bits, source.feature_dim,
                     settings.matmul)
    head = build_head(spec).to(device)
    objective = create_objective(cell.hash, cell.bits).to(device)
    validator = split_validator(source, splits, dataset_options(config, cell.dataset)["topk"], {"teacher": None})

    def step(pos, v1, v2):
        return objective(*two_views(head, source, pos, v1, v2))

    result = fit({"head": head, "objective": objective}, step, len(splits.indices["train"]), source.num_views,
                 settings, cell.seed, validator, head, log_path, desc=cell.model)
    best = result["best"]
    metadata = {**cell.metadata(config), "split": splits.fingerprint, "runs": {"teacher": result["run"]}}
    save_checkpoint(out, spec, {name: b["state"] for name, b in best.items()}, best, metadata)
    log.info("%s: best val mAP@K %.4f at epoch %d -> %s", cell.model, best["teacher"]["map"], best["teacher"]["epoch"], out)
    return result


def configure_parser(parser) -> None:
    from brcd.cells import add_cell_arguments
    from brcd.runtime import add_runtime_arguments

    parser.add_argument("--config", required=True, help="grid config YAML")
    add_cell_arguments(parser)
    parser.add_argument("--split", required=True, help="results/{dataset}/split.parquet")
    parser.add_argument("--bank", help="feature bank folder of the teacher backbone (mode: bank)")
    parser.add_argument("--out", required=True, help="model.pt to write")
    parser.add_argument("--log", help="per-epoch log (TSV) to write")
    add_runtime_arguments(parser)


def run(args) -> None:
    from brcd.cells import cell_from_args
    from brcd.runtime import load_stage

    config, device = load_stage(args)
    train_teacher(config, cell_from_args(args), args.split, args.out, args.log, args.bank, device)
