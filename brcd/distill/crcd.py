"""``crcd``: complementary relation contrastive distillation (Zhu et al., CVPR 2021).

Same embeddings, banks and settings as ``crd`` (dim 128, 500 negatives,
T = 0.05, momentum 0.5), but what is contrasted are *relations* to anchors:
the anchors are the bank entries of the batch's images. For sample b and
anchor a, the student relation v_s(b) - A_t(a) must match the teacher
relation w_t(b) - A_t(a) of the same image (positive) against the relations
w_t(j) - A_t(a) of 500 random other images; relations are compared by
cosine. Symmetrically for the teacher with the student's bank. NCE loss.

Defaults are what the reference code ran (its ``ContrastMemory`` of CRCD):

- ``anchors: all``: every image of the batch is an anchor, B x B x 501
  relations per side. ``anchors: <int>`` draws that many anchors per step
  instead, a speed option (at B = 64 and 64 bits on one CPU core the loss's
  forward and backward pass take about 6 ms per step with 8 anchors and 30 ms
  with all for 2,000 training images, 11 and 58 ms for 10,500;
  ``benchmarks/step_cost.py``); over an epoch every image still serves as one.
- ``self_pairs: true``: the a = b pairs are included. Their positive teacher
  relation is A_t(b) - A_t(b) = 0; the reference adds 1e-6 to every relation
  before normalising, so a zero relation has the direction of the all-ones
  vector, and so it has here (``RELATION_OFFSET``). ``self_pairs: false``
  drops these degenerate pairs.

As for ``crd``, negatives are drawn uniformly, not from other classes as the
reference's label-based loader does.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from brcd.distill.base import KD_LOSSES, MAX_SIZE, KDBatch, contrastive_nce, on_kernels
from brcd.options import Either, Flag, Int, Options
from brcd.distill.crd import ContrastiveMemoryLoss

#: added to every coordinate of every relation, as in the reference code
RELATION_OFFSET = 1e-6

#: (B, A, J) entries per block of the float64 part of relation_cosines (a block stays in the cache)
_BLOCK = 1 << 16


def _contrast_table(memory: Tensor, contrast: Tensor) -> tuple[Tensor, Tensor, bool]:
    """(table, rows, whole): the bank rows a step reads, ``table[rows] == memory[contrast]``.

    While the bank has no more rows than the step reads, the table is the
    whole bank and products with it are matrix products over all its rows;
    otherwise it is the (B * J) rows read, in order (a copy). The whole bank
    is the bank itself: crcd queues its update of the bank until its next
    forward pass (:meth:`~brcd.distill.crd.ContrastiveMemoryLoss.update_memory`),
    and autograd raises if the bank changes before the backward pass. Float32,
    as the bank: the float64 parts take each value as it is read (exactly), and
    a float64 copy would double what a step reads of it (5 MB for 5,000 rows).
    """
    if memory.shape[0] <= contrast.numel():
        return memory, contrast, True
    rows = torch.arange(contrast.numel(), device=contrast.device).view_as(contrast)
    return memory[contrast.reshape(-1)], rows, False


def _relation_tables(table: Tensor, shifted: Tensor) -> tuple[Tensor, Tensor]:
    """(neg_dots, w_norm2), (R, A) in float64: -table[r] . shifted[a] and |table[r] - shifted[a]|^2."""
    if on_kernels(table):
        from brcd.distill import kernels

        neg_dots, w_norm2 = (torch.empty(len(table), len(shifted), dtype=torch.float64) for _ in range(2))
        kernels.relation_tables(table.numpy(), shifted.numpy(), neg_dots.numpy(), w_norm2.numpy())
        return neg_dots, w_norm2
    table = table.double()
    # (R, A), from the (A, R) product: one with 8 rows is 2x faster than one with 8 columns on one core
    neg_dots = (shifted @ table.t()).t().contiguous()
    # |w|^2 as a squared norm: one pass over the bank (x * x would write a bank-sized product first)
    w_norm2 = (shifted * shifted).sum(1) - 2 * neg_dots
    w_norm2 += torch.linalg.vector_norm(table, dim=1, keepdim=True).square_()
    return neg_dots.neg_(), w_norm2


def _row_dots(table: Tensor, rows: Tensor, whole: bool, sample: Tensor) -> Tensor:
    """table[rows[b, j]] . sample[b]: (B, J)."""
    if whole:
        return (sample @ table.t()).gather(1, rows)
    return torch.einsum("bjd,bd->bj", table.view(*rows.shape, -1), sample)


def _per_entry(table: Tensor, rows: Tensor) -> Tensor:
    """table (A, R) -> (b, A, J): table[a, rows[b, j]]."""
    b, a = rows.shape[0], table.shape[0]
    return torch.gather(table.expand(b, a, -1), 2, rows[:, None, :].expand(b, a, -1))


def _entries_kernel(table, rows, whole, sample64, neg_dots, inv_w, a_v, inv_v, zero, ones, cosine) -> None:
    """Fill ``cosine`` (B, A, J) by the compiled kernel: one pass over the entries, the bank rows read in
    place, the zero relations set there too (no (B, A, J) float64 blocks, no index lists). No scale per
    entry is kept (None): the backward kernel takes it from the (R, A) and (B, A) tables again, cheaper
    than writing and reading back 1 MB per side."""
    from brcd.distill import kernels

    kernels.relation_forward(table.numpy(), rows.numpy(), sample64.numpy(), neg_dots.numpy(), inv_w.numpy(),
                             a_v.numpy(), inv_v.numpy(), zero.numpy(), ones.numpy(), cosine.numpy())
    return None


def _zero_entries(zero: Tensor, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(b, a, j) of the entries whose bank row ``rows[b, j]`` holds anchor a's vector (``zero[r, a]``)."""
    candidates = zero.any(1)[rows].nonzero()  # (b, j) whose bank row is some anchor's vector
    hits = zero[rows[candidates[:, 0], candidates[:, 1]]].nonzero()  # (candidate, a)
    b, j = candidates[hits[:, 0]].unbind(1)
    return b, hits[:, 1], j


def _entries_torch(table, rows, whole, sample64, neg_dots, inv_w, a_v, inv_v, zero, ones, cosine) -> Tensor:
    """What :func:`_entries_kernel` computes, with torch ops on blocks of (B, A, J) entries (other devices), and
    the entries' scale 1 / (|w - A'| |v - A'|) (0 on zero relations) for the backward pass."""
    scale = torch.empty_like(cosine)
    w_v = _row_dots(table.double(), rows, whole, sample64)  # (B, J)
    batch, neg_dots, inv_w = rows.shape[0], neg_dots.t(), inv_w.t()  # (A, R) for _per_entry
    step = max(1, _BLOCK // cosine[0].numel())
    for lo in range(0, batch, step):
        hi = min(batch, lo + step)
        inv_norms = _per_entry(inv_w, rows[lo:hi])
        inv_norms *= inv_v[lo:hi, :, None]
        scale[lo:hi] = inv_norms
        block = _per_entry(neg_dots, rows[lo:hi])
        block += w_v[lo:hi, None, :]
        block -= a_v[lo:hi, :, None]
        cosine[lo:hi] = block.mul_(inv_norms).clamp_(-1.0, 1.0)
    entries = _zero_entries(zero, rows)
    cosine[entries] = ones[entries[:2]].to(cosine.dtype)
    scale[entries] = 0.0
    return scale


def _sums_kernel(grad, scale, cosine, table, rows, whole, zero, inv_w, inv_v) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The backward pass's sums (:meth:`_RelationCosines.backward`) by the compiled kernel, in float64;
    ``scale`` is None (see :func:`_entries_kernel`)."""
    from brcd.distill import kernels

    batch, anchors = cosine.shape[:2]
    h_a, g_cos, g_ones = (torch.empty(batch, anchors, dtype=torch.float64) for _ in range(3))
    w_part = torch.empty(batch, table.shape[1], dtype=torch.float64)
    inv_w = inv_w.masked_fill(zero, 0.0)  # a zero relation's h is 0: the kernel multiplies, without a branch
    kernels.relation_backward(grad.numpy(), cosine.numpy(), table.numpy(), rows.numpy(), inv_w.numpy(), inv_v.numpy(),
                              zero.numpy(), h_a.numpy(), g_cos.numpy(), g_ones.numpy(), w_part.numpy())
    return h_a, g_cos, g_ones, w_part


def _sums_torch(grad, scale, cosine, table, rows, whole, zero, inv_w, inv_v) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """What :func:`_sums_kernel` computes, with torch ops on blocks of entries (other devices)."""
    batch, anchors, count = cosine.shape
    h_w = torch.empty(rows.shape, dtype=torch.float64, device=grad.device)  # sum over anchors of h
    h_a = torch.empty(batch, anchors, dtype=torch.float64, device=grad.device)  # sum over bank rows of h
    g_cos = torch.empty_like(h_a)  # sum over bank rows of grad * cosine
    step = max(1, _BLOCK // cosine[0].numel())
    for lo in range(0, batch, step):
        hi = min(batch, lo + step)
        h = grad[lo:hi] * scale[lo:hi]
        h_w[lo:hi] = h.sum(1, dtype=torch.float64)
        h_a[lo:hi] = h.sum(2, dtype=torch.float64)
        g_cos[lo:hi] = (grad[lo:hi] * cosine[lo:hi]).sum(2, dtype=torch.float64)
    entries = _zero_entries(zero, rows)  # sum over bank rows of grad on the zero relations
    g_ones = torch.zeros_like(h_a).index_put_(entries[:2], grad[entries].double(), accumulate=True)
    table = table.double()
    if whole:
        w_part = torch.zeros(batch, table.shape[0], dtype=table.dtype, device=table.device)
        return h_a, g_cos, g_ones, w_part.scatter_add_(1, rows, h_w) @ table
    return h_a, g_cos, g_ones, torch.einsum("bj,bjd->bd", h_w, table.view(batch, count, -1))


class _RelationCosines(torch.autograd.Function):
    """The relation cosines of :func:`relation_cosines`, differentiable in ``sample``.

    With A' = A - offset, the numerator (w - A').(v - A') is expanded to
    w.v - w.A' - A'.(v - A') and scaled by 1/|w - A'| (``inv_w``, per anchor
    and bank row) and 1/|v - A'|; forward in float64, clamped to [-1, 1]
    (the gradient is not masked there: it is 0 at +-1 anyway). Zero
    relations, the entries ``zero`` = (b, a, j), get their exact cosine
    sum(v - A') / (sqrt(D) |v - A'|) instead.

    Backward: the gradient of entry (b, a, j) has the parts h w and -h A'
    with h = grad / (|w - A'| |v - A'|), large for a short relation and
    cancelling to h (w - A'). h's sums and their products with w and A' are
    float64 (on CPU h too, in the kernel), so the cancellation loses nothing.
    """

    @staticmethod
    def forward(ctx, sample, table, rows, whole, anchors, offset, neg_dots, inv_w, zero):
        # sample (B, D); table (R, D), rows (B, J); anchors (A, D); neg_dots = -table . (anchors - offset)
        # and inv_w = 1 / |table - anchors + offset|: (R, A), float64; zero (R, A): row r holds anchor a's vector
        batch, count = rows.shape
        shifted = anchors.double() - offset
        sample64 = sample.double()
        v_rel = (sample64[:, None, :] - anchors.double()) + offset  # (B, A, D)
        a_v = (v_rel * shifted).sum(-1)  # (B, A)
        inv_v = (v_rel * v_rel).sum(-1).clamp_min(1e-24).rsqrt()  # F.normalize's eps 1e-12 on the norm
        # a zero relation's cosine: with offset * (1, ..., 1)
        ones = (v_rel.sum(-1) * inv_v / math.sqrt(v_rel.shape[-1])).clamp_(-1.0, 1.0)
        cosine = sample.new_empty(batch, len(anchors), count)
        entries = _entries_kernel if on_kernels(table) else _entries_torch
        scale = entries(table, rows, whole, sample64, neg_dots, inv_w, a_v, inv_v, zero, ones, cosine)
        ctx.whole, ctx.offset = whole, offset
        ctx.save_for_backward(sample, table, rows, anchors, inv_v, inv_w, scale, cosine, zero)
        return cosine

    @staticmethod
    def backward(ctx, grad):
        sample, table, rows, anchors, inv_v, inv_w, scale, cosine, zero = ctx.saved_tensors
        sums = _sums_kernel if on_kernels(table) else _sums_torch
        h_a, g_cos, g_ones, w_part = sums(grad.contiguous(), scale, cosine, table, rows, ctx.whole, zero, inv_w, inv_v)
        anchors64 = anchors.double()
        v_rel = (sample.double()[:, None, :] - anchors64) + ctx.offset
        # every entry is proportional to inv_v = |v - A'|^-1, whose derivative is -(v - A') inv_v^3; a zero
        # relation's is d/dv of sum(v - A') inv_v / sqrt(D) through the sum too
        grad_sample = (w_part - h_a @ (anchors64 - ctx.offset)
                       - ((g_cos * inv_v * inv_v)[:, :, None] * v_rel).sum(1)
                       + (g_ones * inv_v).sum(1, keepdim=True) / math.sqrt(v_rel.shape[-1]))
        return grad_sample.to(sample.dtype), None, None, None, None, None, None, None, None


def relation_cosines(memory: Tensor, contrast: Tensor, sample: Tensor, anchor_rows: Tensor,
                     offset: float = RELATION_OFFSET) -> Tensor:
    """cos(w - A + offset, v - A + offset) for all b, a, j: (B, A, J), where w = memory[contrast[b, j]],
    A = memory[anchor_rows[a]] and v = sample[b].

    No (B, A, J, D) tensor of relations is built: the cosines are expanded
    through dot products (:class:`_RelationCosines`). Anchors x bank rows is
    a matrix product (over the whole bank while it has no more rows than a
    step reads); on CPU a compiled kernel
    (:func:`brcd.distill.kernels.relation_forward`) takes the dot products of
    the samples with the rows read, in place, and combines them per (b, a, j)
    in one pass; elsewhere samples x bank rows is a matrix product too, and
    the combination runs in blocks. The combination and |w - A|^2 are
    computed in float64: they subtract terms of size 1, and a relation can be
    short -- w close to A, or w *being* A, a zero relation, whose true
    squared norm is D * offset^2 (~1e-10) -- far below float32 rounding.
    Only small tables are float64 (rows x A, and on other devices B x rows,
    the bank, a block of entries; on CPU the kernels take each float32 value
    to float64 as they read it), not the (B, J, D) rows read as in a plain
    float64 expansion; the (B, A, J) cosines kept for the backward pass are
    float32.

    Zero relations -- the bank row holds the anchor's own vector, as for the
    positive of an a = b pair or a negative drawn at an anchor's position --
    are set exactly, as the reference computes them: w - A + offset is then
    ``offset`` times the all-ones vector, so the cosine is
    sum(v - A + offset) / (sqrt(D) |v - A + offset|). Their gradient is that
    formula's, not the expansion's (terms of size 1 / (sqrt(D) offset) that
    cancel).
    """
    anchors = memory[anchor_rows]
    table, rows, whole = _contrast_table(memory, contrast)
    with torch.no_grad():
        shifted = anchors.double() - offset
        neg_dots, w_norm2 = _relation_tables(table, shifted)
        inv_w = w_norm2.clamp_min(1e-30).rsqrt()
        # zero relations: |w - A + offset|^2 = D offset^2 (to float64 rounding) and w equal to A
        zero = w_norm2 < 2 * memory.shape[1] * offset ** 2  # (R, A)
        pair_r, pair_a = zero.nonzero().unbind(1)
        zero[pair_r, pair_a] = (table[pair_r] == anchors[pair_a]).all(-1)
    return _RelationCosines.apply(sample, table, rows, whole, anchors, offset, neg_dots, inv_w, zero)


@KD_LOSSES.register("crcd")
class CRCD(ContrastiveMemoryLoss):
    settings = Options(**ContrastiveMemoryLoss.settings,
                       anchors=Either("all", "anchors per step: every image of the batch, or that many drawn",
                                      "all", Int(minimum=1, maximum=MAX_SIZE)),
                       self_pairs=Flag(True, "whether an anchor's relation to itself is one of the pairs"))

    def choose_anchors(self, batch_size: int, device) -> Tensor:
        """Rows of the batch that serve as anchors this step."""
        if self.options["anchors"] == "all":
            return torch.arange(batch_size, device=device)
        return torch.randperm(batch_size, device=device)[: min(self.options["anchors"], batch_size)]

    def forward(self, batch: KDBatch) -> dict[str, Tensor]:
        v_s, v_t, contrast = self.embed(batch)
        positions = batch.index.long()
        t = self.options["nce_t"]
        anchors = positions[self.choose_anchors(len(positions), v_s.device)]
        rel_s = relation_cosines(self.memory_t.memory, contrast, v_s, anchors)  # (B, A, J)
        rel_t = relation_cosines(self.memory_s.memory, contrast, v_t, anchors)
        if self.options["self_pairs"]:
            rel_s, rel_t = rel_s.flatten(0, 1), rel_t.flatten(0, 1)
        else:
            pairs = positions[:, None] != anchors[None, :]  # (B, A): False on the a = b pairs
            rel_s, rel_t = rel_s[pairs], rel_t[pairs]
        loss_s = contrastive_nce(rel_s, t, self.z_s, self.num_train)
        loss_t = contrastive_nce(rel_t, t, self.z_t, self.num_train)
        self.update_memory(positions, v_s, v_t)
        return {"loss": loss_s + loss_t, "student_nce": loss_s.detach(), "teacher_nce": loss_t.detach()}
