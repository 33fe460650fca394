"""Per-member loss terms, in the forms the reference implementations use. Every function returns ``(R,)``.

Scores and rows arrive member-first: ``(R, B)`` scores, ``(R, B, d)`` rows. A backbone's loss is the
sum of such terms, one value per member; the trainer back-propagates their sum, and since members share
no parameter each member gets exactly the gradient of its own loss.

* :func:`bpr` - ``mean(-log σ(s⁺ − s⁻))`` (``F.logsigmoid``, as FREEDOM and LATTICE write it);
* :func:`mmrec_bpr` - MMRec's ``BPRLoss``: ``mean(-log(1e-10 + σ(s⁺ − s⁻)))``;
* :func:`emb_norm` - MMRec's ``EmbLoss``: ``Σ_t ‖t‖_F / B`` (unsquared norms of whole batch matrices);
* :func:`half_square` - ``Σ_t ½‖t‖² / B`` (LightGCN's and LATTICE's own regulariser).
* :func:`log_sigmoid_bpr` - ``mean(-torch.log(σ(s⁺ − s⁻)))`` as written (MMGCN's and GRCN's inline form);
* :func:`pair_mean_square` - ``mean(E[u]² + E[i]²)`` over the 2B (user, item) pairs (MMGCN's and GRCN's).
* :func:`cosine_info_nce` - in-batch InfoNCE of cosine similarities written as ``-log(exp(s_ii/τ) / Σ_j exp(s_ij/τ))``
  (MGCN's and SMORE's ``InfoNCE``).
* :func:`exp_info_nce` - SimGCL's InfoNCE as MENTOR writes it: ``mean(-log(exp(s_ii/τ) / Σ_j exp(s_ij/τ)))`` over
  ALL rows of two views (cosine ``s``), computed a block of rows at a time when the ``n × n`` matrix is large.
* :func:`moments` - the mean and the unbiased variance of ALL entries of a member's tensors (``torch.var``'s).

A fused member must compute what it would alone, but a reduction may add in another order depending
on the shape around it: ``x.sum(-1)`` of one member's ``(1, B)`` row is a full reduction, of an
``(R, B)`` stack a row-wise one. So sums over the batch accumulate in float64 (:func:`batch_sum`,
:func:`batch_mean`), whose rounding back to float32 does not depend on the order, and sums over several
axes go one axis at a time.

Example:
    >>> import torch
    >>> from clear_tune.models._losses import emb_norm
    >>> emb_norm(torch.ones(2, 4, 3)).tolist()   # ‖ones(4, 3)‖_F / 4 per member
    [0.8660253882408142, 0.8660253882408142]
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def batch_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum over the last axis, accumulated in float64: ``(R, B) -> (R,)`` in ``values``' dtype."""
    return values.sum(-1, dtype=torch.float64).to(values.dtype)


def batch_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over the last axis, accumulated in float64: ``(R, B) -> (R,)``."""
    return batch_sum(values) / values.shape[-1]


def scores(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Inner products of matching rows: ``(R, B, d), (R, B, d) -> (R, B)``."""
    return (users * items).sum(-1)


def bpr(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """``mean_B(-log σ(s⁺ − s⁻))``: ``(R, B), (R, B) -> (R,)``."""
    return -batch_mean(F.logsigmoid(pos_scores - neg_scores))


def mmrec_bpr(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """MMRec's ``BPRLoss``: ``mean_B(-log(1e-10 + σ(s⁺ − s⁻)))``: ``(R, B), (R, B) -> (R,)``."""
    return -batch_mean(torch.log(1e-10 + torch.sigmoid(pos_scores - neg_scores)))


def squared_norm(rows: torch.Tensor) -> torch.Tensor:
    """``‖t_m‖²`` of each member's ``(B, d)`` block of an ``(R, B, d)`` tensor -> ``(R,)``."""
    return batch_sum(rows.pow(2).sum(-1))


def emb_norm(*rows: torch.Tensor) -> torch.Tensor:
    """MMRec's ``EmbLoss``: ``Σ_t ‖t_m‖_F / B`` over ``(R, B, d)`` tensors (B from the last one) -> ``(R,)``."""
    total = cast(torch.Tensor, sum(squared_norm(t).sqrt() for t in rows))  # a tensor: rows is never empty
    return total / rows[-1].shape[1]


def half_square(*rows: torch.Tensor) -> torch.Tensor:
    """``Σ_t ½‖t_m‖² / B`` over ``(R, B, d)`` tensors (B from the first one) -> ``(R,)``."""
    total = cast(torch.Tensor, sum(squared_norm(t) for t in rows))  # a tensor: rows is never empty
    return total / (2 * rows[0].shape[1])


def log_sigmoid_bpr(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """``mean_B(-log σ(s⁺ − s⁻))`` written as ``torch.log(torch.sigmoid(·))`` (no epsilon, not ``logsigmoid``),
    as MMGCN's and GRCN's ``calculate_loss`` do: ``(R, B), (R, B) -> (R,)``."""
    return -batch_mean(torch.log(torch.sigmoid(pos_scores - neg_scores)))


def pair_mean_square(users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """MMGCN's and GRCN's ``(E[user_tensor]**2 + E[item_tensor]**2).mean()`` over the 2B pairs ``(u, i+), (u, i−)``.

    ``(R, B, d)`` rows (or ``(B, d)``: then ``(1,)``) -> ``(R,)``: ``(2‖E_U‖² + ‖E_I+‖² + ‖E_I−‖²) / (2 B d)``.
    """
    users, pos, neg = (t if t.dim() == 3 else t.unsqueeze(0) for t in (users, pos, neg))
    return (2 * squared_norm(users) + squared_norm(pos) + squared_norm(neg)) / (2 * users.shape[1] * users.shape[2])


def cosine_info_nce(view1: torch.Tensor, view2: torch.Tensor, temperature: float) -> torch.Tensor:
    """MGCN's and SMORE's ``InfoNCE``: ``mean_b(-log(exp(c_bb/τ) / Σ_j exp(c_bj/τ)))`` with ``c`` the cosine
    similarities of the rows of ``view1`` and ``view2`` (``F.normalize``), as written (an exp ratio, not
    ``logsumexp``): ``(R, B, d), (R, B, d) -> (R,)``. Computed in float32 (outside autocast)."""
    with torch.autocast(view1.device.type, enabled=False):
        view1, view2 = F.normalize(view1.float(), dim=-1), F.normalize(view2.float(), dim=-1)
        positive = torch.exp((view1 * view2).sum(-1) / temperature)  # (R, B)
        total = batch_sum(torch.exp(torch.bmm(view1, view2.transpose(1, 2)) / temperature))  # (R, B): over j
        return batch_mean(-torch.log(positive / total))


def _row_totals(a: torch.Tensor, b_t: torch.Tensor, temp: float) -> torch.Tensor:
    """``Σ_j exp(a_i · b_j / temp)`` per row: ``(R, c, D), (R, D, n) -> (R, c)`` (float64 accumulation)."""
    return batch_sum(torch.exp(torch.bmm(a, b_t) / temp))


def exp_info_nce(
    view1: torch.Tensor, view2: torch.Tensor, temp: float, *, chunk_elements: int = 1 << 26
) -> torch.Tensor:
    """MENTOR's (SimGCL's) ``InfoNCE(view1, view2, temp)`` per member: ``(R, n, D), (R, n, D) -> (R,)``.

    Rows are L2-normalised (``F.normalize``), ``pos_i = exp(<a_i, b_i> / τ)`` (an elementwise product summed,
    as written), ``ttl_i = Σ_j exp(<a_i, b_j> / τ)`` over all ``n`` rows of the other view (no max shift, as
    written: cosines bound the exponent by ``1/τ``), loss ``mean_i(−log(pos_i / ttl_i))``.

    The ``n × n`` similarities of all members together are formed at most ``chunk_elements`` entries at a time
    (256 MiB of float32 by default): a larger matrix goes a block of rows at a time under activation
    checkpointing, which keeps only the two views for the backward pass and recomputes each block there (one
    more ``n × n × D`` product); the values are the same.
    """
    a, b = F.normalize(view1, dim=-1), F.normalize(view2, dim=-1)
    pos = torch.exp((a * b).sum(-1) / temp)  # (R, n)
    members, n, _ = a.shape
    b_t = b.transpose(1, 2)
    rows = max(1, chunk_elements // max(members * n, 1))
    if rows >= n:
        ttl = _row_totals(a, b_t, temp)
    else:
        ttl = torch.cat(
            [
                checkpoint(
                    _row_totals, a[:, start : start + rows], b_t, temp, use_reentrant=False, preserve_rng_state=False
                )
                for start in range(0, n, rows)
            ],
            1,
        )
    return batch_mean(-torch.log(pos / ttl))


def moments(*parts: tuple[torch.Tensor, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.mean`` and ``torch.var`` (unbiased) of ALL entries of one tensor per member, given in parts.

    Each part is ``(x, copies)``: ``x`` ``(R, ...)`` stands for ``copies`` identical blocks of the tensor (MENTOR's
    ``cat((v, v), dim=1)``), so a duplicated tensor is never built. Sums accumulate in float64, two passes
    (mean, then squared deviations): ``(R,), (R,)``.
    """
    members = parts[0][0].shape[0]
    flat = [(x.reshape(members, -1), copies) for x, copies in parts]
    count = sum(x.shape[1] * copies for x, copies in flat)
    total = cast(torch.Tensor, sum(x.sum(-1, dtype=torch.float64) * copies for x, copies in flat))  # parts non-empty
    mean = (total / count).to(flat[0][0].dtype)  # (R,)
    squares = cast(
        torch.Tensor, sum((x - mean.unsqueeze(1)).pow(2).sum(-1, dtype=torch.float64) * copies for x, copies in flat)
    )
    return mean, (squares / (count - 1)).to(flat[0][0].dtype)
