"""MMSSL (Wei et al., WWW 2023) as its authors' code computes it (``HKUDS/MMSSL``: ``MMSSL/Models.py`` and
``MMSSL/main.py`` with ``utility/parser.py``'s defaults, which are the same for every dataset: no per-dataset
settings exist, so Amazon-Baby runs them too). A generator (the recommender) is trained against a
Wasserstein discriminator with a gradient penalty; a cross-modal contrastive term and two feature graphs sit
on top of a LightGCN-like ID model.

The authors' form, point by point (every tensor carries the member axis R first; ``d = emb_dim``):

* graphs: ``ui = D_u^-1/2 R`` and ``iu = D_i^-1/2 Rᵀ`` (``csr_norm(·, mean_flag=True)``: each side normalised
  by its own row sums only, :func:`~clear_tune.graphs.sqrt_row_normalised`);
* features: ``V = image_trans(v)``, ``T = text_trans(t)`` (``nn.Linear(d_raw → d)``, ``xavier_uniform_`` weight,
  torch's bias; the raw features are frozen: the authors' trainable ``image_embedding`` copies are never
  read), ``nn.Dropout(drop_rate)``, then ``V_u = ui V``, ``V_i = iu V_u`` (and ``T_u``, ``T_i``);
* modality ID views ``X_u^m = G_ui^m E_i``, ``X_i^m = G_iu^m E_u`` over per-modality graphs (below); their
  "multi-head self-attention" reduces EXACTLY to ``Z^m = X^m Σ_h W_cat[h]`` (sum of the ``head_num`` row
  blocks of ``w_self_attention_cat``): the code builds K from Q (``w_k`` is never used) and weights the
  QUERY's own rows, so the softmax weights sum to one out of the result (``w_q`` gets no gradient either);
  ``u⁰ = E_u + id_cat_rate · norm(mean_m Z_u^m)``, ``i⁰ = E_i + id_cat_rate · norm(mean_m Z_i^m)``;
* ``len(weight_size)`` layers ``u^{l+1} = ui i^l``, ``i^{l+1} = iu u^{l+1}``, the last one under a softmax over
  the embedding axis; mean of all layers; then ``+ model_cat_rate · (norm(V_u) + norm(T_u))`` (items: ``V_i``,
  ``T_i``). ``norm`` is ``F.normalize``. ID tables ``xavier_uniform_``;
* loss: ``-mean log σ(s⁺ − s⁻)`` + ``reg_weight · ½(‖u‖² + ‖i⁺‖² + ‖i⁻‖²) / batch_size`` (``regs[0]`` = 1e-5;
  the epoch's first batch size, as LATTICE here) + ``feat_reg_decay · ½ Σ‖V_u, V_i, T_u, T_i‖² / n_items``
  + ``cl_rate · (InfoNCE(X_u^img[b], u[b]) + InfoNCE(X_u^txt[b], u[b]))`` (``tau``; the negatives are
  the batch's other rows in both views, ``-log(pos / (Σ refl + Σ between − refl_ii) + 1e-8)``)
  + ``G_rate · (−mean D([S_img; S_txt]))`` with ``S_m = norm((V_u[b] V_iᵀ) ⊙ (1 − R[b]))`` ``(B, N)``;
* discriminator ``D(x) = 100 σ(L3(drop(BN(act(L2(drop(BN(act(L1 x)))))))))`` over ``N``-wide rows, widths
  ``N → N/4 → N/8 → 1``, BatchNorm on batch statistics (D is never put in eval mode, so its running
  statistics are never read and are not kept), ``kaiming_normal_`` weights, zero biases. ``act`` is
  ``nn.LeakyReLU(True)``: the positional ``True`` is the NEGATIVE SLOPE, 1.0, so it is the identity
  (``leaky_slope``). Its own Adam (``D_lr``, betas (0.5, 0.9)) minimises, per batch BEFORE the generator
  step, ``−mean D(real) + mean D(fake) + gp_rate · 0.3 · mean(‖∇D(α real + (1−α) fake)‖ − 1)²`` with
  ``fake = [S_img; S_txt]`` and ``real = norm(softmax(R[b] − log_log_scale · log(−log U) / real_data_tau)
  + ui_pre_scale · norm((u[b] iᵀ) ⊙ (1 − R[b])))`` twice (Gumbel noise ``U``; the code divides only the noise
  by the temperature), all from a separate, detached forward of the model (its own dropout masks);
* modality graphs: both start as ``ui``/``iu``. At batch ``idx`` of an epoch (``T``, ``m_topk_rate``): when
  ``idx % T == 0 and idx != 0`` they are rebuilt from the pairs collected since the last rebuild (a pair
  list that may repeat, ``D_r^-1/2 C`` per side) and the list is emptied; otherwise each modality appends
  the batch's top-``int(n_items · m_topk_rate)`` items of ``S_m``, pairing ``users.repeat(k)`` (tiled) with
  the row-major top-k ids, as the code does. The graphs persist across epochs and are used in evaluation.
  **With the defaults this branch is dead after two batches**: ``T = 1`` rebuilds at every batch from
  the one before, and ``int(7050 · 1e-4) = 0`` (Baby; any catalogue under 10 000 items) collects nothing,
  so from the third training batch on both graphs are empty, ``Z = 0``, ``u⁰ = E_u`` and the contrastive
  term is the constant ``≈ 2 log(2B − 1)`` (its gradient is zero). ``modal_graphs: frozen`` keeps ``ui``/``iu``;
* optimiser: AdamW (``lr`` 0.00055 in the authors' parser: set ``lr`` in the spec or use ``preset: mmrec``; weight
  decay 0.01, torch's default), constant learning rate (its ``LambdaLR`` is never stepped);
* evaluation: the eval-mode forward (no dropout) with the current modality graphs.

Adversarial steps inside the trainer's loop: ``loss()`` runs the discriminator step first, on detached
generator outputs, with its own per-member Adam whose weights and moments are buffers (so they are in
``state_dict``, move with ``keep_members`` and never reach the trainer's optimizer), then returns the
generator loss the trainer steps. The discriminator runs one member at a time on that member's rows, so a
fused member's discriminator update is bit for bit the one it makes alone (three of its parameters, the
biases before each BatchNorm and the first BatchNorm's shift, are cancelled by the BatchNorm after them: their
gradients are rounding noise that Adam amplifies to full steps, in the authors' code too, so anything but the
same kernels would make them differ). Cost for fusion: none of the discriminator's work is shared (its
``N × N/4`` first layer dominates a batch at Baby scale: ``R`` members cost ``R`` times one), and each member
keeps its discriminator and its Adam moments (about 14 M floats × 3 at Baby); the encoders, the ID part and
the graph products are shared as usual. Under ``torch.no_grad()`` ``loss()`` is a pure evaluation: no
discriminator step, no graph update, no random draw (so no dropout). The batch counter, the modality graphs
and the collected pairs are ``get_extra_state``.

Where CLEAR enters: the encoder outputs ``image_trans(v)``, ``text_trans(t)`` (before dropout and the
feature graphs, the only place MMSSL reads them).

Work done once: the encoders and the deterministic ID part run once per batch and serve both the
discriminator's forward and the generator's (the authors run the whole model twice; only the dropout masks
differ, and they are drawn twice). Initial weights are drawn in the authors' order from the seeded global
RNG (including the draws of their unused layers), so one seed gives the authors' initial model.

Departures: randomness (dropout masks, shared by the members; Gumbel noise; ``α``) comes from the model's
CPU generator; batches are the harness's (every train interaction once per epoch, MMRec's sampler) instead
of ``n_train // B + 1`` batches of distinct random users; the ``1/batch_size`` and the penalty's ``α`` use
the actual batch. Options: ``weight_size`` ((64, 64): its length is the number of layers), ``head_num`` (4),
``drop_rate`` (0.2), ``model_cat_rate`` (0.55), ``id_cat_rate`` (0.36), ``feat_reg_decay`` (1e-5),
``cl_rate`` (0.03), ``tau`` (0.5), ``G_rate`` (1e-4), ``D_lr`` (3e-4), ``gp_rate`` (1.0), ``G_drop1`` (0.31),
``G_drop2`` (0.5), ``real_data_tau`` (0.005), ``ui_pre_scale`` (100), ``log_log_scale`` (1e-5), ``T`` (1),
``m_topk_rate`` (1e-4), ``modal_graphs`` (``"reference"`` | ``"frozen"``), ``leaky_slope`` (1.0),
``weight_decay`` (0.01). The authors publish no search grid: ``mmrec_grid`` holds their one learning rate,
so ``preset: mmrec`` trains their default configuration (their ``batch_size`` is 1024: set it in the spec).

Example:
    >>> import torch
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.models import ModelContext, build_model
    >>> ctx = ModelContext(3, 8, torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 3, 0]), torch.randn(8, 10),
    ...                    torch.randn(8, 6), torch.device("cpu"))
    >>> model = build_model(TrainConfig(backbone="mmssl", emb_dim=8, projection={"k": 2}), ctx)
    >>> model.start_epoch(1)
    >>> before = model.disc.w1.clone()
    >>> loss = model.loss(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([3, 3]))  # D steps inside
    >>> loss.shape, bool((model.disc.w1 != before).any()), model.decoupled_weight_decay
    (torch.Size([1]), True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from clear_tune.graphs import dense_rows, spmm, sqrt_row_normalised, transpose
from clear_tune.models import _losses as L
from clear_tune.models._base import Member, ModelContext
from clear_tune.models._features import FeatureBackbone
from clear_tune.models._graph_cache import row_normalised_graphs
from clear_tune.models._layers import MemberEmbedding, MemberLinear, stack_members
from clear_tune.models._registry import register_backbone

MODAL_GRAPHS = ("reference", "frozen")
GP_LAMBDA = 0.3  # gradient_penalty's LAMBDA, fixed in the authors' code
BN_EPS = 1e-5  # nn.BatchNorm1d's
Edges = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # users (E,), image items (R, E), text items (R, E)


def reference_init(ctx: ModelContext, d: int, head_num: int) -> dict[str, torch.Tensor]:
    """The authors' initial weights, drawn from the global RNG in their order (``MMSSL.__init__``, then
    ``Discriminator`` and ``D.apply(weights_init)``), unused layers' draws included. Linear weights come back
    in ``nn.Linear``'s ``(out, in)`` layout."""
    assert ctx.image_feat is not None and ctx.text_feat is not None
    image, text = nn.Linear(ctx.image_feat.shape[1], d), nn.Linear(ctx.text_feat.shape[1], d)
    nn.init.xavier_uniform_(image.weight)
    nn.init.xavier_uniform_(text.weight)
    nn.init.xavier_uniform_(nn.Linear(d, d).weight)  # common_trans: never used
    users, items = nn.Embedding(ctx.n_users, d), nn.Embedding(ctx.n_items, d)
    nn.init.xavier_uniform_(users.weight)
    nn.init.xavier_uniform_(items.weight)
    for _ in range(5):  # w_q, w_k, w_v, w_self_attention_item, w_self_attention_user: no effect (module docstring)
        nn.init.xavier_uniform_(torch.empty(d, d))
    w_cat = nn.init.xavier_uniform_(torch.empty(head_num * d, d))
    n = ctx.n_items
    layers = [nn.Linear(n, int(n / 4)), nn.Linear(int(n / 4), int(n / 8)), nn.Linear(int(n / 8), 1)]
    for layer in layers:  # Trainer.weights_init
        nn.init.kaiming_normal_(layer.weight)
        nn.init.zeros_(layer.bias)
    weights = {
        "image_w": image.weight,
        "image_b": image.bias,
        "text_w": text.weight,
        "text_b": text.bias,
        "users": users.weight,
        "items": items.weight,
        "w_cat": w_cat,
    }
    weights.update(
        {
            f"d_{k}": t
            for k, t in zip(
                ("w1", "b1", "w2", "b2", "w3", "b3"), (p for layer in layers for p in (layer.weight, layer.bias))
            )
        }
    )
    return {k: v.detach().clone() for k, v in weights.items()}


def contrastive(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """The authors' ``batched_contrastive_loss`` on ``(R, B, d)`` rows: ``mean_i −log(e_ii / (Σ_j r_ij + Σ_j e_ij −
    r_ii) + 1e-8)`` with ``r = exp(cos(z1, z1) / tau)``, ``e = exp(cos(z1, z2) / tau)`` -> ``(R,)``."""
    z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    refl = torch.exp(torch.bmm(z1, z1.transpose(1, 2)) / tau)  # (R, B, B)
    between = torch.exp(torch.bmm(z1, z2.transpose(1, 2)) / tau)
    denominator = L.batch_sum(refl) + L.batch_sum(between) - refl.diagonal(dim1=1, dim2=2)
    return L.batch_mean(-torch.log(between.diagonal(dim1=1, dim2=2) / denominator + 1e-8))


class MemberDiscriminator(nn.Module):
    """``R`` copies of MMSSL's ``Discriminator`` with their own Adam; weights and moments are buffers.

    ``forward(x (R, S, N), weights, masks) -> (R, S)``: ``weights`` defaults to the buffers (constants: no
    gradient reaches them, as the authors' generator step never updates D); the discriminator step passes
    leaf copies and :meth:`adam_update` applies their gradients the way ``torch.optim.Adam`` does.
    """

    NAMES = ("w1", "b1", "gamma1", "beta1", "w2", "b2", "gamma2", "beta2", "w3", "b3")
    # buffers registered in __init__ that are read by name
    w1: torch.Tensor
    w2: torch.Tensor
    adam_steps: torch.Tensor

    def __init__(
        self,
        members: int,
        init: dict[str, torch.Tensor],
        *,
        drop1: float,
        drop2: float,
        leaky_slope: float,
        lr: float,
        betas: tuple[float, float] = (0.5, 0.9),
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.drop1, self.drop2, self.leaky_slope = drop1, drop2, leaky_slope
        self.lr, self.betas, self.eps = lr, betas, eps
        h1, h2 = init["d_w1"].shape[0], init["d_w2"].shape[0]
        start = {
            "w1": init["d_w1"].T,
            "b1": init["d_b1"],
            "gamma1": torch.ones(h1),
            "beta1": torch.zeros(h1),
            "w2": init["d_w2"].T,
            "b2": init["d_b2"],
            "gamma2": torch.ones(h2),
            "beta2": torch.zeros(h2),
            "w3": init["d_w3"].T,
            "b3": init["d_b3"],
        }  # weights stored (in, out)
        for name in self.NAMES:
            self.register_buffer(name, stack_members(members, start[name]))
        for name in self.NAMES:
            self.register_buffer(f"exp_avg_{name}", torch.zeros_like(getattr(self, name)))
            self.register_buffer(f"exp_avg_sq_{name}", torch.zeros_like(getattr(self, name)))
        self.register_buffer("adam_steps", torch.zeros(members))  # equal for all members (they step together)

    @property
    def widths(self) -> tuple[int, int]:
        return self.w1.shape[2], self.w2.shape[2]

    def weights(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in self.NAMES]

    def _block(
        self, h: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, mask: torch.Tensor | None, p: float
    ) -> torch.Tensor:
        if self.leaky_slope != 1.0:  # nn.LeakyReLU(True): slope 1, the identity
            h = F.leaky_relu(h, self.leaky_slope)
        centred = h - h.mean(1, keepdim=True)  # BatchNorm1d in train mode: the batch's mean and biased variance
        h = centred / torch.sqrt(centred.pow(2).mean(1, keepdim=True) + BN_EPS) * gamma.unsqueeze(1) + beta.unsqueeze(1)
        return h if mask is None else h * mask / (1.0 - p)

    def _one(
        self, x: torch.Tensor, weights: Sequence[torch.Tensor], masks: tuple[torch.Tensor | None, torch.Tensor | None]
    ) -> torch.Tensor:
        w1, b1, g1, be1, w2, b2, g2, be2, w3, b3 = weights
        h = self._block(torch.baddbmm(b1.unsqueeze(1), x, w1), g1, be1, masks[0], self.drop1)
        h = self._block(torch.baddbmm(b2.unsqueeze(1), h, w2), g2, be2, masks[1], self.drop2)
        return 100.0 * torch.sigmoid(torch.baddbmm(b3.unsqueeze(1), h, w3)).squeeze(-1)

    def forward(
        self,
        x: torch.Tensor,
        weights: Sequence[torch.Tensor] | None = None,
        masks: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
    ) -> torch.Tensor:
        """``(R, S, N) -> (R, S)``, one member at a time: the members share nothing here, and a ``(1, S, ·)``
        slice runs exactly the kernels the member runs alone, so its update is bit for bit its own (in a
        batched product the reductions over S, and Adam's amplification of the dead biases' rounding-level
        gradients, would differ between a fused member and the same member alone)."""
        weights = self.weights() if weights is None else weights
        return torch.cat([self._one(x[m : m + 1], [w[m : m + 1] for w in weights], masks) for m in range(x.shape[0])])

    @torch.no_grad()
    def adam_update(self, grads: Sequence[torch.Tensor]) -> None:
        """One ``torch.optim.Adam`` step (single-tensor form, no weight decay) of every member's weights."""
        self.adam_steps += 1
        step = float(self.adam_steps[0])
        beta1, beta2 = self.betas
        step_size = self.lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        for name, grad in zip(self.NAMES, grads):
            param, exp_avg, exp_avg_sq = (getattr(self, p + name) for p in ("", "exp_avg_", "exp_avg_sq_"))
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
            param.addcdiv_(exp_avg, denom, value=-step_size)


@register_backbone
class MMSSL(FeatureBackbone):
    name = "mmssl"
    default_reg_weight = 1e-5  # regs[0], the authors' `decay`
    # the authors publish no search grid; ``preset: mmrec`` runs their parser's learning rate (the harness's is 1e-3)
    mmrec_grid: ClassVar[dict[str, list[Any]]] = {"lr": [0.00055]}
    decoupled_weight_decay: ClassVar[bool] = True  # AdamW, read by the trainer with `weight_decay`

    def __init__(
        self,
        ctx: ModelContext,
        *,
        members: Sequence[Member],
        emb_dim: int = 64,
        seed: int = 0,
        weight_size: Sequence[int] = (64, 64),
        head_num: int = 4,
        drop_rate: float = 0.2,
        model_cat_rate: float = 0.55,
        id_cat_rate: float = 0.36,
        feat_reg_decay: float = 1e-5,
        cl_rate: float = 0.03,
        tau: float = 0.5,
        G_rate: float = 1e-4,
        D_lr: float = 3e-4,
        gp_rate: float = 1.0,
        G_drop1: float = 0.31,
        G_drop2: float = 0.5,
        real_data_tau: float = 0.005,
        ui_pre_scale: float = 100.0,
        log_log_scale: float = 1e-5,
        T: int = 1,
        m_topk_rate: float = 1e-4,
        modal_graphs: str = "reference",
        leaky_slope: float = 1.0,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(ctx, members=members)
        assert ctx.image_feat is not None and ctx.text_feat is not None
        for name, p in (("drop_rate", drop_rate), ("G_drop1", G_drop1), ("G_drop2", G_drop2)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name}={p} must be in [0, 1)")
        if head_num < 1 or emb_dim % head_num:
            raise ValueError(f"head_num={head_num} must divide emb_dim={emb_dim} (the authors reshape into heads)")
        if not weight_size:
            raise ValueError("weight_size needs at least one entry (its length is the number of layers)")
        if T < 1:
            raise ValueError(f"T={T} must be at least 1")
        if modal_graphs not in MODAL_GRAPHS:
            raise ValueError(f"modal_graphs={modal_graphs!r} must be one of {', '.join(MODAL_GRAPHS)}")
        if tau <= 0 or real_data_tau <= 0:
            raise ValueError("tau and real_data_tau must be positive")
        if ctx.n_items < 8:
            raise ValueError(f"the discriminator's widths n_items/4, n_items/8 need n_items >= 8 (got {ctx.n_items})")
        R, d = self.n_members, emb_dim
        self.n_users, self.n_items, self.d, self.head_num = ctx.n_users, ctx.n_items, d, head_num
        self.n_ui_layers = len(weight_size)
        self.drop_rate, self.model_cat_rate, self.id_cat_rate = drop_rate, model_cat_rate, id_cat_rate
        self.feat_reg_decay, self.cl_rate, self.tau, self.G_rate, self.gp_rate = (
            feat_reg_decay,
            cl_rate,
            tau,
            G_rate,
            gp_rate,
        )
        self.real_data_tau, self.ui_pre_scale, self.log_log_scale = real_data_tau, ui_pre_scale, log_log_scale
        self.T, self.top_k, self.modal_graphs = T, int(ctx.n_items * m_topk_rate), modal_graphs
        self.weight_decay = weight_decay  # the trainer's AdamW

        init = reference_init(ctx, d, head_num)  # first: the global RNG is seeded by build_model
        self.user_emb = MemberEmbedding(R, ctx.n_users, d, init="zeros")
        self.item_emb = MemberEmbedding(R, ctx.n_items, d, init="zeros")
        image = MemberLinear(R, ctx.image_feat.shape[1], d, init="zeros", bias_init="zeros")
        text = MemberLinear(R, ctx.text_feat.shape[1], d, init="zeros", bias_init="zeros")
        with torch.no_grad():
            for target, value in (
                (self.user_emb.weight, init["users"]),
                (self.item_emb.weight, init["items"]),
                (image.weight, init["image_w"].T),
                (image.bias, init["image_b"]),
                (text.weight, init["text_w"].T),
                (text.bias, init["text_b"]),
            ):
                target.copy_(stack_members(R, value))
        self.init_modalities(ctx, image, text)  # frozen raw features
        self.w_cat = nn.Parameter(stack_members(R, init["w_cat"]))  # (R, head_num·d, d): w_self_attention_cat
        self.disc = MemberDiscriminator(R, init, drop1=G_drop1, drop2=G_drop2, leaky_slope=leaky_slope, lr=D_lr)
        graphs = row_normalised_graphs(ctx)
        self.ui, self.ui_t, self.iu, self.iu_t = graphs["ui"], graphs["ui_t"], graphs["iu"], graphs["iu_t"]
        self.interactions = graphs["interactions"]
        self.generator = torch.Generator().manual_seed(seed)  # dropout masks, Gumbel noise, α: shared by members
        empty = torch.zeros(R, 0, dtype=torch.long, device=ctx.device)
        self._batch = 0  # batch index in the epoch
        self._reg_batch: int | None = None  # the epoch's first batch size
        self._edges: Edges | None = None  # None: the modality graphs are still ui / iu
        self._pending: Edges = (torch.zeros(0, dtype=torch.long, device=ctx.device), empty, empty.clone())
        self._modal_cache: list[tuple[torch.Tensor, ...]] | None = None

    # ------------------------------------------------------------------------------------------ state
    def start_epoch(self, epoch: int) -> None:
        self.refresh_projection(epoch)
        self._batch, self._reg_batch = 0, None

    def get_extra_state(self) -> dict[str, Any]:
        return {"batch": self._batch, "reg_batch": self._reg_batch, "edges": self._edges, "pending": self._pending}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        device = self.user_emb.weight.device
        self._batch, self._reg_batch = state["batch"], state["reg_batch"]
        self._edges = None if state["edges"] is None else tuple(t.to(device) for t in state["edges"])
        self._pending = tuple(t.to(device) for t in state["pending"])
        self._modal_cache = None

    def keep_members(self, index: Sequence[int]) -> None:
        super().keep_members(index)
        index = list(index)
        if self._edges is not None:
            self._edges = (self._edges[0], self._edges[1][index], self._edges[2][index])
        self._pending = (self._pending[0], self._pending[1][index], self._pending[2][index])
        self._modal_cache = None

    def modality_graphs(self) -> list[tuple[torch.Tensor, ...]] | None:
        """Per modality (image, text): ``(G_ui, G_ui^T, G_iu, G_iu^T)``, block-diagonal over the members
        (``(R·M) × (R·N)`` and ``(R·N) × (R·M)`` CSR); ``None`` while they are still ``ui`` / ``iu``."""
        if self._edges is None:
            return None
        if self._modal_cache is None:
            users = self._edges[0]
            cache: list[tuple[torch.Tensor, ...]] = []
            for items in self._edges[1:]:
                ui = sqrt_row_normalised(users, items, n_rows=self.n_users, n_cols=self.n_items)
                iu = sqrt_row_normalised(items, users, n_rows=self.n_items, n_cols=self.n_users)
                cache.append((ui, transpose(ui), iu, transpose(iu)))
            self._modal_cache = cache
        return self._modal_cache

    def _update_modality_graphs(self, users: torch.Tensor, sims: Sequence[torch.Tensor]) -> None:
        """The authors' per-batch update after the generator's forward: rebuild, or collect this batch's top-k."""
        if self.modal_graphs == "reference":
            if self._batch % self.T == 0 and self._batch != 0:
                self._edges, self._modal_cache = self._pending, None
                self._pending = cast(
                    Edges, (users.new_zeros(0), *(t.new_zeros(t.shape[0], 0) for t in self._pending[1:]))
                )
            else:
                k = min(self.top_k, self.n_items)
                tops = [s.topk(k, dim=-1).indices.reshape(s.shape[0], -1) for s in sims]  # (R, B·k), row-major
                rows = users.repeat(k)  # tiled, as `torch.tensor(users).repeat(1, k).view(-1)`
                self._pending = cast(
                    Edges,
                    (
                        torch.cat([self._pending[0], rows]),
                        *(torch.cat([old, new], 1) for old, new in zip(self._pending[1:], tops)),
                    ),
                )
        self._batch += 1

    # ---------------------------------------------------------------------------------------- forward
    def _dropout(self, x: torch.Tensor, p: float, drop: bool) -> torch.Tensor:
        """``nn.Dropout(p)`` (when ``drop``) on ``(R, n, w)``, one ``(n, w)`` mask for all members."""
        if not drop or p == 0.0:
            return x
        keep = torch.rand(x.shape[1:], generator=self.generator) >= p
        return x * keep.to(x.device) / (1.0 - p)

    def _disc_masks(self, rows: int, drop: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The discriminator's two dropout masks for one call on ``rows`` rows (None: off)."""
        masks: list[torch.Tensor | None] = []
        for width, p in zip(self.disc.widths, (self.disc.drop1, self.disc.drop2)):
            if not drop or p == 0.0:
                masks.append(None)
            else:
                masks.append((torch.rand(rows, width, generator=self.generator) >= p).to(self.user_emb.weight.device))
        return masks[0], masks[1]

    def id_part(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The deterministic part of the forward: ``(users (R, M, d), items (R, N, d))`` after the ID layers
        (before the feature terms) and the user-side modality ID views ``X_u^img``, ``X_u^txt``."""
        R, M, N, d = self.n_members, self.n_users, self.n_items, self.d
        E_u, E_i = self.user_emb.weight, self.item_emb.weight
        graphs = self.modality_graphs()
        if graphs is None:  # both modalities on ui / iu: one product serves both
            x_u, x_i = spmm(self.ui, E_i, matrix_t=self.ui_t), spmm(self.iu, E_u, matrix_t=self.iu_t)
            views_u, views_i = [x_u, x_u], [x_i, x_i]
        else:
            flat_u, flat_i = E_u.reshape(R * M, d), E_i.reshape(R * N, d)
            views_u = [spmm(g[0], flat_i, matrix_t=g[1]).view(R, M, d) for g in graphs]
            views_i = [spmm(g[2], flat_u, matrix_t=g[3]).view(R, N, d) for g in graphs]
        heads = self.w_cat.view(R, self.head_num, d, d).sum(1)  # (R, d, d): what the attention reduces to
        z_u = (torch.bmm(views_u[0], heads) + torch.bmm(views_u[1], heads)) / 2
        z_i = (torch.bmm(views_i[0], heads) + torch.bmm(views_i[1], heads)) / 2
        u = E_u + self.id_cat_rate * F.normalize(z_u, p=2, dim=-1)
        i = E_i + self.id_cat_rate * F.normalize(z_i, p=2, dim=-1)
        users, items = [u], [i]
        for layer in range(self.n_ui_layers):
            u = spmm(self.ui, i, matrix_t=self.ui_t)
            if layer == self.n_ui_layers - 1:
                u = torch.softmax(u, dim=-1)
            i = spmm(self.iu, u, matrix_t=self.iu_t)
            if layer == self.n_ui_layers - 1:
                i = torch.softmax(i, dim=-1)
            users.append(u)
            items.append(i)
        return torch.stack(users).mean(0), torch.stack(items).mean(0), views_u[0], views_u[1]

    def feature_views(
        self, V: torch.Tensor, T: torch.Tensor, *, drop: bool = False
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``[(V_u, V_i), (T_u, T_i)]`` from encoded ``V``, ``T`` ``(R, N, d)`` (after dropout when ``drop``)."""
        views = []
        for X in (V, T):  # the image mask is drawn before the text mask, as the authors' forward
            X = self._dropout(X, self.drop_rate, drop)
            x_u = spmm(self.ui, X, matrix_t=self.ui_t)
            views.append((x_u, spmm(self.iu, x_u, matrix_t=self.iu_t)))
        return views

    def final(
        self, users: torch.Tensor, items: torch.Tensor, views: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        (image_u, image_i), (text_u, text_i) = views
        a = self.model_cat_rate
        return (
            users + a * F.normalize(image_u, p=2, dim=-1) + a * F.normalize(text_u, p=2, dim=-1),
            items + a * F.normalize(image_i, p=2, dim=-1) + a * F.normalize(text_i, p=2, dim=-1),
        )

    @staticmethod
    def user_sims(
        users: torch.Tensor, user_all: torch.Tensor, item_all: torch.Tensor, seen: torch.Tensor
    ) -> torch.Tensor:
        """``u_sim_calculation``: ``norm((U[b] Iᵀ) ⊙ (1 − R[b]))`` -> ``(R, B, N)``."""
        sims = torch.bmm(user_all.index_select(1, users), item_all.transpose(1, 2))
        return F.normalize(sims * (1.0 - seen), p=2, dim=-1)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The authors' ``test``: the forward without dropout, on the current modality graphs."""
        users, items, _, _ = self.id_part()
        return self.final(users, items, self.feature_views(*self.modal_features()))

    # ------------------------------------------------------------------------------------ adversarial
    def discriminator_step(
        self,
        users: torch.Tensor,
        seen: torch.Tensor,
        id_users: torch.Tensor,
        id_items: torch.Tensor,
        V: torch.Tensor,
        T: torch.Tensor,
    ) -> torch.Tensor:
        """The authors' D step of one batch on a detached forward (its own dropout masks); returns ``loss_D (R,)``.

        Draw order: the forward's dropout masks, D's masks on the fake rows, the Gumbel ``U``, D's masks on the
        real rows, ``α``, D's masks on the interpolates.
        """
        with torch.no_grad():
            views = self.feature_views(V, T, drop=self.training)
            user_all, item_all = self.final(id_users, id_items, views)
            (image_u, image_i), (text_u, text_i) = views
            fake = torch.cat(
                [self.user_sims(users, image_u, image_i, seen), self.user_sims(users, text_u, text_i, seen)], dim=1
            )  # (R, 2B, N)
            masks_fake = self._disc_masks(fake.shape[1], self.training)
            uniform = torch.rand(seen.shape, generator=self.generator).to(seen.device)
            gumbel = torch.log(-torch.log(uniform + 1e-8) + 1e-8)
            # the authors' precedence: only the noise term is divided by real_data_tau
            real = F.softmax(seen - self.log_log_scale * gumbel / self.real_data_tau, dim=-1)  # (B, N)
            real = F.normalize(real + self.user_sims(users, user_all, item_all, seen) * self.ui_pre_scale, dim=-1)
            real = torch.cat([real, real], dim=1)  # (R, 2B, N)
            masks_real = self._disc_masks(real.shape[1], self.training)
            alpha = torch.rand(real.shape[1], 1, generator=self.generator).to(real.device)
            masks_mixed = self._disc_masks(real.shape[1], self.training)
        autocast = (
            torch.autocast(real.device.type, enabled=False)
            if torch.is_autocast_enabled(real.device.type)
            else nullcontext()
        )
        with torch.enable_grad(), autocast:
            weights = [w.detach().requires_grad_() for w in self.disc.weights()]
            fake, real = fake.float(), real.float()
            loss_fake = L.batch_mean(self.disc(fake, weights, masks_fake))
            loss_real = -L.batch_mean(self.disc(real, weights, masks_real))
            mixed = (alpha * real + (1 - alpha) * fake).requires_grad_()
            out = self.disc(mixed, weights, masks_mixed)
            (grad_mixed,) = torch.autograd.grad(out.sum(), mixed, create_graph=True)
            penalty = L.batch_mean((grad_mixed.norm(2, dim=-1) - 1) ** 2) * GP_LAMBDA
            loss_d = loss_real + loss_fake + self.gp_rate * penalty
            grads = torch.autograd.grad(loss_d.sum(), weights)
        self.disc.adam_update(grads)
        return loss_d.detach()

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        training_step = torch.is_grad_enabled()  # no_grad: a pure evaluation (no D step, graph update or draw)
        drop = training_step and self.training
        V, T = self.modal_features()  # (R, N, d) each: encoders once per batch, CLEAR's projection applied
        id_users, id_items, x_image, x_text = self.id_part()
        seen = dense_rows(self.interactions, users)  # (B, N): R[users]
        if training_step:
            self.discriminator_step(users, seen, id_users.detach(), id_items.detach(), V.detach(), T.detach())
        views = self.feature_views(V, T, drop=drop)  # the generator's own dropout masks
        user_all, item_all = self.final(id_users, id_items, views)
        u, p, n = (t.index_select(1, ids) for t, ids in ((user_all, users), (item_all, pos), (item_all, neg)))
        reg_batch = self._reg_batch or users.numel()
        if training_step and self._batch == 0:
            self._reg_batch = reg_batch
        main = L.bpr(L.scores(u, p), L.scores(u, n))
        emb = self.reg_weight * (L.squared_norm(u) + L.squared_norm(p) + L.squared_norm(n)) / (2 * reg_batch)
        (image_u, image_i), (text_u, text_i) = views
        feat = (
            self.feat_reg_decay
            * (L.squared_norm(image_i) + L.squared_norm(text_i) + L.squared_norm(image_u) + L.squared_norm(text_u))
            / (2 * self.n_items)
        )
        cl = contrastive(x_image.index_select(1, users), u, self.tau) + contrastive(
            x_text.index_select(1, users), u, self.tau
        )
        sims = [self.user_sims(users, image_u, image_i, seen), self.user_sims(users, text_u, text_i, seen)]
        fake = torch.cat(sims, dim=1)  # (R, 2B, N), with gradient to the generator
        adversarial = -L.batch_mean(self.disc(fake.float(), masks=self._disc_masks(fake.shape[1], drop)))
        if training_step:
            self._update_modality_graphs(users, [s.detach() for s in sims])
        return main + emb + feat + self.cl_rate * cl + self.G_rate * adversarial
