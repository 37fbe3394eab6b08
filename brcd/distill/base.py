"""The distillation-loss interface shared by BRCD and the baselines (SPEC §4).

A loss is an ``nn.Module`` built by :func:`brcd.distill.create_distill_loss`.
``forward(batch: KDBatch)`` returns ``{"loss": L_kd, ...named terms}``;
``L_kd`` is unweighted (the trainer adds ``lambda * loss`` to ``L_hash``).
Trainable parts (embeddings) are parameters of the loss module and must be
optimised with the student's head; memory banks are buffers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brcd.errors import ConfigError
from brcd.options import Choice, Number, Options
from brcd.registry import Registry

KD_LOSSES: Registry = Registry("distillation method", config_key="kd")


@dataclass
class KDBatch:
    """What a distillation loss sees for one batch of B training images.

    ``index`` is each image's *position within the training split*
    (0..num_train-1), i.e. its row in ``Splits.indices["train"]`` (sorted
    dataset indices) -- not its dataset index. Memory banks and the cluster
    lookup of BRCD are addressed by it.
    """

    index: Tensor  # (B,) long
    s_logits: tuple[Tensor, Tensor]  # student pre-sign logits u of view 1 and 2 (B x L), require grad
    s_codes: tuple[Tensor, Tensor]  # student codes b (straight-through sign of s_logits)
    t_logits: tuple[Tensor, Tensor]  # teacher logits of the same two views (no grad)
    t_codes: tuple[Tensor, Tensor]  # teacher codes ±1 (no grad)
    s_rot_logits: Tensor | None = None  # (B, 4, L) student logits of rotations 0/90/180/270 (sskd)
    t_rot_logits: Tensor | None = None  # (B, 4, L) teacher logits of the same rotations


class DistillLoss(nn.Module):
    """Base class: option handling and the two capability flags the trainer reads."""

    #: the trainer must load the teacher's clusters (``brcd cluster``) and pass them
    needs_clusters: ClassVar[bool] = False
    #: the trainer must fill ``KDBatch.s_rot_logits`` / ``t_rot_logits``
    needs_rotations: ClassVar[bool] = False
    #: per-method settings (SPEC §4), each with its type, range and default: the single declared
    #: place of every option a method takes, checked at parse time (config key ``kd_settings``) and
    #: again when the loss is built. The defaults are what the public reference code ran unless the
    #: module docstring says why not.
    settings: ClassVar[Options] = Options()
    #: the defaults of :attr:`settings` (derived)
    defaults: ClassVar[dict] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.defaults = cls.settings.defaults()

    def __init__(self, name: str, bits: int, num_train: int, options: Mapping[str, Any], clusters=None):
        super().__init__()
        self.name = name
        self.bits = int(bits)
        self.num_train = int(num_train)
        self.options = dict(options)

    @classmethod
    def resolve_options(cls, name: str, settings: Mapping[str, Any], where: str | None = None) -> dict:
        """Defaults overridden by ``settings[name]`` (a mapping of per-method values), each typed and
        range-checked by its declared :class:`~brcd.options.Option`; errors name ``where.key``
        (default ``name.key``)."""
        overrides = settings.get(name, {}) if isinstance(settings, Mapping) else {}
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"settings for distillation method {name!r} must be a mapping; got {overrides!r}")
        return cls.settings.resolve(overrides, where or name)

    def forward(self, batch: KDBatch) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


# ---------------------------------------------------------------- helpers

#: what relational/contrastive baselines compare: the codes (as the reference
#: implementation does) or the pre-sign logits
FEATURES = ("codes", "logits")

#: which augmented views a loss reads. The reference code distils view 1 only
#: (the teacher encodes ``raw_imgi``); "both" averages the loss over the two.
VIEWS: dict[str, tuple[int, ...]] = {"first": (0,), "both": (0, 1)}



def features_option(default: str) -> Choice:
    return Choice(default, "what the loss compares: the codes or the pre-sign logits", FEATURES)


def views_option(default: str = "first") -> Choice:
    return Choice(default, "the augmented views it reads: view 1 only, or both averaged", tuple(VIEWS))


#: options of several losses
TEMPERATURE = "softmax temperature"
MOMENTUM = Number(0.5, "memory-bank momentum", minimum=0, maximum=1)
#: an upper bound on sizes that allocate per batch row (negatives, embedding dims): far above the
#: reference values, low enough that a typo fails at parse time instead of allocating absurd memory
MAX_SIZE = 100_000


def view_features(batch: KDBatch, view: int, features: str) -> tuple[Tensor, Tensor]:
    """(student, teacher) tensors of one view; the teacher side is detached."""
    if features == "codes":
        return batch.s_codes[view], batch.t_codes[view].detach()
    return batch.s_logits[view], batch.t_logits[view].detach()


def mean_over_views(batch: KDBatch, views: str, features: str, loss_fn) -> Tensor:
    """``loss_fn(student, teacher)`` averaged over the selected views (``VIEWS``)."""
    chosen = VIEWS[views]
    return sum(loss_fn(*view_features(batch, v, features)) for v in chosen) / len(chosen)


def _safe_norm(x: Tensor) -> tuple[Tensor, Tensor]:
    """(norm, nonzero) along the last dim; the clamp keeps backward finite at 0."""
    squared = (x * x).sum(-1)
    return squared.clamp_min(1e-24).sqrt(), squared > 0


def safe_cosine(x: Tensor, y: Tensor) -> Tensor:
    """Row-wise cosine of matching rows; 0 (not NaN) where either row is all zero."""
    nx, okx = _safe_norm(x)
    ny, oky = _safe_norm(y)
    return torch.where(okx & oky, (x * y).sum(-1) / (nx * ny), torch.zeros_like(nx))


def safe_cosine_matrix(x: Tensor, y: Tensor) -> Tensor:
    """All-pairs cosine (rows of x against rows of y); 0 where a row is all zero."""
    nx, okx = _safe_norm(x)
    ny, oky = _safe_norm(y)
    cos = (x @ y.transpose(-1, -2)) / (nx.unsqueeze(-1) * ny.unsqueeze(-2))
    return torch.where(okx.unsqueeze(-1) & oky.unsqueeze(-2), cos, torch.zeros_like(cos))


def l2_normalize(x: Tensor) -> Tensor:
    return F.normalize(x, p=2, dim=-1, eps=1e-12)


#: whether CPU tensors take the compiled kernels (:mod:`brcd.distill.kernels`); tensors on other devices, and
#: all with this off (the tests: both paths compute the same), take torch ops
KERNELS = True


def on_kernels(tensor: Tensor) -> bool:
    return KERNELS and tensor.device.type == "cpu"


def sample_negatives(positive: Tensor, count: int, num_train: int) -> Tensor:
    """``count`` training positions per row drawn uniformly from all *other* positions.

    Uniform on purpose: the reference code's CRD/PACKD data loaders draw each
    image's negatives from the *other classes* (CRD's ``cls_negative``), i.e.
    with ground-truth labels -- a label leak in an unsupervised benchmark. No
    label reaches any loss here (tests/test_no_label_leak.py).

    Without replacement, as the reference's loader draws them, whenever the
    training split has ``count`` other images; with replacement otherwise
    (CRD's loader does the same: ``replace = k > len(negatives)``).
    """
    others = num_train - 1
    if 0 < count <= others:
        # the ``count`` largest of independent uniform keys: a uniform draw without replacement per row
        draw = top_keys(torch.rand(positive.shape[0], others, device=positive.device), count)
    else:
        draw = torch.randint(0, max(others, 1), (positive.shape[0], count), device=positive.device)
    return draw + (draw >= positive.unsqueeze(1)).long()  # skip the positive itself


def top_keys(keys: Tensor, count: int) -> Tensor:
    """The columns of the ``count`` largest keys of each row (keys in [0, 1)): the set ``keys.topk(count)``
    selects. On CPU a compiled kernel finds it (:func:`brcd.distill.kernels.top_keys`: a histogram
    instead of a selection, 0.25 against 2.3 ms at 64 x 4,999 keys on one core); topk itself where
    the kernel cannot decide (a tie at the cut, which topk breaks its own way) and on other devices.
    Only the order of a row's columns differs between the two: every loss sums over them."""
    if on_kernels(keys) and keys.dtype == torch.float32:
        from brcd.distill import kernels

        draw = torch.empty(keys.shape[0], count, dtype=torch.long)
        if kernels.top_keys(keys.numpy(), count, draw.numpy()):
            return draw
    return keys.topk(count, dim=1, sorted=False).indices


#: ``embeddings`` option of the losses with linear embeddings (crd, crcd, packd): ``trainable`` (CRD's
#: authors train them with the student), ``frozen`` (the BRCD reference optimises only the hashing head,
#: so its embeddings stay at their random initialisation)
EMBEDDINGS = ("trainable", "frozen")


def apply_embeddings_option(loss: nn.Module) -> None:
    """Freeze the loss's ``embed_*`` layers when its ``embeddings`` option says ``frozen``."""
    if loss.options.get("embeddings", "trainable") == "frozen":
        for name, module in loss.named_children():
            if name.startswith("embed_") and module is not None:
                module.requires_grad_(False)


def embeddings_option() -> Choice:
    return Choice("trainable", "the embedding layers: trained with the student (CRD's authors) or frozen at their "
                  "random initialisation (the BRCD reference)", EMBEDDINGS)


def check_positions(index: Tensor, num_train: int, name: str) -> None:
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_train):
        raise IndexError(
            f"{name}: KDBatch.index must hold training positions 0..{num_train - 1} "
            f"(rows of Splits.indices['train']), got values in [{int(index.min())}, {int(index.max())}]"
        )


class MemoryBank(nn.Module):
    """One unit-norm embedding per training position, updated with momentum
    (Wu et al. 2018 / CRD). A buffer: saved with the loss, never trained."""

    def __init__(self, num_train: int, dim: int, momentum: float):
        super().__init__()
        self.momentum = float(momentum)
        bound = 1.0 / (dim / 3) ** 0.5
        self.register_buffer("memory", l2_normalize(torch.rand(num_train, dim) * 2 * bound - bound))

    def forward(self, positions: Tensor) -> Tensor:
        return self.memory[positions].detach()

    @torch.no_grad()
    def update(self, positions: Tensor, values: Tensor, momentum: float | None = None) -> None:
        """Mix ``values`` into the rows at ``positions`` (``momentum`` overrides the bank's own)."""
        keep = self.momentum if momentum is None else float(momentum)
        mixed = self.memory[positions] * keep + values.detach() * (1.0 - keep)
        self.memory.index_copy_(0, positions, l2_normalize(mixed))


def bank_similarities(memory: Tensor, positions: Tensor, sample: Tensor) -> Tensor:
    """``memory[positions[b, k]] . sample[b, ..., :]`` for all b, k: (B, ..., K), from a bank's ``memory``.

    On CPU the rows are read in place by a compiled kernel (:class:`_BankDots`): at B = 64, K = 501,
    D = 128 on one core forward and backward take 0.8 ms, against 2.0 ms for the products with a bank
    of 5,000 rows, and more for a copy of the rows read (a fresh 16 MB per bank and step). Elsewhere:
    for a bank of up to 24 K rows per sample row (every training split of the configs, at K = 501) one
    matrix product with the whole bank and a gather of the products; else the rows copied out. The
    backward pass reads the bank as the forward pass saw it: on CPU the bank itself (a loss must not
    change it in place before that pass -- autograd raises if it does; crd and crcd queue their updates
    until their next forward pass, packd updates its bank before reading it), elsewhere a copy.
    """
    if on_kernels(memory) and sample.dtype == memory.dtype == torch.float32:
        return _BankDots.apply(sample, memory, positions)
    if memory.shape[0] * (sample[0].numel() // sample.shape[-1]) <= 24 * positions.shape[1]:
        products = sample @ memory.t().clone()  # (B, ..., N)
        index = positions.view(positions.shape[0], *[1] * (sample.dim() - 2), -1)
        return products.gather(-1, index.expand(*products.shape[:-1], -1))
    return torch.einsum("b...d,bkd->b...k", sample, memory[positions].detach())


class _BankDots(torch.autograd.Function):
    """:func:`bank_similarities` on CPU: the kernel :func:`~brcd.distill.kernels.bank_dots`, and
    ``embedding_bag``'s weighted sums of the rows read for the backward pass (0.15 ms at B = 64,
    K = 501, D = 128 on one core, where a product with a 5,000-row bank takes 0.8 ms)."""

    @staticmethod
    def forward(ctx, sample, memory, positions):
        from brcd.distill import kernels

        rows = positions.long().contiguous()
        flat = sample.detach().reshape(sample.shape[0], -1, sample.shape[-1]).contiguous()  # (B, S, D)
        out = sample.new_empty(flat.shape[0], flat.shape[1], rows.shape[1])
        kernels.bank_dots(memory.numpy(), rows.numpy(), flat.numpy(), out.numpy())
        ctx.sample_shape = sample.shape
        # the bank itself, not a copy: autograd raises if it changes in place before the backward pass
        ctx.save_for_backward(memory, rows)
        return out.view(*sample.shape[:-1], rows.shape[1])

    @staticmethod
    def backward(ctx, grad):
        table, rows = ctx.saved_tensors
        weights = grad.reshape(grad.shape[0], -1, grad.shape[-1])  # (B, S, K)
        # one bag per (b, s): sum_k weights[b, s, k] table[rows[b, k]], the rows read in place
        bags = rows[:, None, :].expand(weights.shape).reshape(-1, rows.shape[1])
        out = F.embedding_bag(bags, table, per_sample_weights=weights.reshape(bags.shape), mode="sum")
        return out.view(ctx.sample_shape), None, None


def contrastive_nce(similarity: Tensor, temperature: float, z: Tensor, num_train: int) -> Tensor:
    """CRD's NCE objective on similarities (column 0 the positive, the other m columns noise samples
    with prior Pn = 1/num_train), scored exp(similarity / T) / Z with CRD's normaliser Z fixed on
    first use to mean * num_train (written into the buffer ``z``). See :class:`_ContrastiveNCE`."""
    if similarity.shape[0] == 0:  # e.g. crcd on a batch of one image: no relation to contrast
        return similarity.sum() * 0.0
    return _ContrastiveNCE.apply(similarity, float(temperature), z, int(num_train))


class _ContrastiveNCE(torch.autograd.Function):
    """With scores s = exp(similarity / T) / Z, c = noise + eps and n rows:
    loss = -(sum_rows log(s_pos / (s_pos + c)) + sum_neg log(noise / (s_neg + c))) / n.

    One function instead of a chain of autograd ops: at crcd's 512 x 501 entries per side its
    backward pass is one product with the derivative kept from the forward pass, where autograd
    replays every op (forward and backward 0.6 against 0.8 ms on one core). The derivative:
    d loss / d similarity = s / ((s + c) T n) for a negative, -c / ((s + c) T n) for the positive.
    """

    @staticmethod
    def forward(ctx, similarity, temperature, z, num_train):
        eps = 1e-7
        exp = torch.exp(similarity / temperature)
        if float(z) < 0:
            z.fill_(float(exp.mean()) * num_train)
        m = similarity.shape[1] - 1
        noise = m / float(num_train)
        c = noise + eps
        cz = c * float(z)
        positive, negatives = exp[:, 0], exp[:, 1:]
        # log(noise / (s + c)) = log(noise / c) - log(1 + s / c): summands near 0 instead of near log(noise), so
        # their sum loses nothing (torch.log1p would be more exact still, but on CPU it is ~15x slower than log)
        log_d0 = -torch.add(1.0, negatives, alpha=1.0 / cz).log_().sum()
        if m:
            log_d0 = log_d0 + negatives.numel() * math.log(noise / c)
        log_d1 = torch.log(positive / (positive + cz)).sum()
        rows = similarity.shape[0]
        derivative = torch.empty_like(exp)
        torch.div(negatives, negatives + cz, out=derivative[:, 1:])  # s / (s + c)
        torch.div(-cz, positive + cz, out=derivative[:, 0])  # -c / (s + c)
        ctx.save_for_backward(derivative)
        ctx.factor = 1.0 / (temperature * rows)
        return -(log_d1 + log_d0) / rows

    @staticmethod
    def backward(ctx, grad):
        (derivative,) = ctx.saved_tensors
        return derivative * (grad * ctx.factor), None, None, None
