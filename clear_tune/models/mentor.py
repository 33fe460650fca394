"""MENTOR (Xu et al., AAAI 2025) as its authors' MMRec-based ``MENTOR``: DRAGON's modality GCNs and item graph
(without DRAGON's user graph), plus an ID GCN, two noise-perturbed GCN views per modality, and three
self-supervised terms.

Seven GCNs of one form, MMRec's ``GCN``: ``x = normalize([P; MLP_1(leaky_relu(MLP(f)))])`` (a user preference
table ``P`` ``U × d``, ``xavier_normal_``; ``nn.Linear(d_f, 4d)``, ``nn.Linear(4d, d)`` with ``nn.Linear``'s own
initialisation; slope 0.01), ``h = Â x``, ``h_1 = Â h``, ``x̂ = x + h + h_1`` (Â = D^-1/2 A D^-1/2, the train graph
without self loops, PyG's ``Base_gcn`` with ``aggr='add'``), each with its own weights:

* ``v_gcn``, ``t_gcn`` over the FROZEN raw image and text features (the model's main views);
* ``id_gcn`` over ``id_feat`` (``I × d``, ``xavier_normal_``, trained): the ID ("guide") view;
* ``v_gcn_n1``, ``t_gcn_n1``, ``v_gcn_n2``, ``t_gcn_n2``: perturbed views. After each hop
  ``h ← h + sign(h) ⊙ normalize(U[0, 1)) · 0.1`` (SimGCL's noise: a fresh uniform draw per hop, per view and per
  batch, rows scaled to unit norm; from this model's CPU generator, shared by the members, on the tensor's own
  device where MENTOR's code calls ``.cuda()``); the noise is a constant to autograd, as MENTOR's in-place add is.

Views (``w = weight_u`` ``U × 2``: ``xavier_normal_`` over ``(U, 2, 1)``, softmax at init, then free;
``A_mm`` = FREEDOM's/DRAGON's frozen kNN item graph, ``i + A_mm^{n_mm_layers} i``):

* main ``r``: users ``[w_0 v̂_u ‖ w_1 t̂_u]``, items ``[v̂_i ‖ t̂_i] + A_mm [v̂_i ‖ t̂_i]``; it alone ranks;
* guide ``g`` = ``[id ‖ id]``, ``v`` = ``[v̂ ‖ v̂]``, ``t`` = ``[t̂ ‖ t̂]`` (users unweighted, items plus A_mm);
* noise ``n1``, ``n2`` as ``r`` from the perturbed GCNs (with the same ``weight_u``).

Loss, term by term as written (means over all entries unless said):

* ``−mean(log2 σ(s⁺ − s⁻))`` on ``r`` (no epsilon) + ``reg_weight · (mean(P_v[U_B]²) + mean(P_t[U_B]²)) +
  reg_weight · mean(weight_u²)`` (the main GCNs' preferences of the batch's users);
* ``align_weight · Σ_{(a, b)} (|var(a) − var(b)| + |mean(a) − mean(b)|)`` over the six pairs of
  ``{r, g, v, t}`` (``torch.var``: unbiased, over every entry of each view's ``(U + I) × 2d`` embedding);
* ``mask_weight_f · (2 − cos(drop(r_I), mlp(r_I)).mean() − cos(drop(r_U), mlp(r_U)).mean())``, computed entirely
  under ``torch.no_grad`` as MENTOR does: a CONSTANT in the loss (no gradient reaches anything; ``mlp``, an
  ``nn.Linear(2d, 2d)``, never trains); ``drop`` is ``F.dropout(·, dropout)`` (a mask from the CPU generator);
* ``mask_weight_g · (InfoNCE(n1_U, n2_U) + InfoNCE(n1_I, n2_I))`` at temperature ``temp`` over ALL users and
  ALL items (:func:`~clear_tune.models._losses.exp_info_nce`: ``exp`` without a max shift, as written).

Evaluation: like DRAGON, MENTOR's ``full_sort_predict`` scores with ``result_embed``, the main view its LAST
training batch computed (before that batch's step); ``eval_from_last_batch`` (default) keeps it, false recomputes
the main view (only ``v_gcn``, ``t_gcn`` and A_mm: no noise) from the final weights.

Not computed, as nothing of them reaches the loss in MENTOR: the user-user graph (``pre_epoch_processing`` samples
it every epoch, ``forward`` never reads it), ``image_embedding``/``text_embedding`` (only build A_mm),
``image_trs``/``text_trs``, ``weight_i``, ``MLP_user``, the edge-dropout lists and the ``result_embed*`` tensors
MENTOR creates before its forward overwrites them. MENTOR's GCN width ``dim_latent`` is hard-coded 64 (our
``emb_dim``, default 64): final embeddings are ``2 · emb_dim`` wide. The yaml's ``n_layers`` (2) and
``feat_embed_dim`` are unread (two hops hard-coded: our ``n_layers`` default).

Where CLEAR enters: the main encoders ``v_gcn``'s and ``t_gcn``'s MLP (MMRec's ``v_gcn.MLP_1(leaky_relu(
v_gcn.MLP(v)))``, the ``clear_at`` MENTOR takes through the MMRec adapter): their ``(R, I, d)`` outputs are
projected before they join the preferences. The noise views' encoders are separate networks whose outputs live
in other bases and only feed the InfoNCE term: they are not projected.

Speed: all seven GCNs propagate as one ``7R``-member stack (one sparse product per hop), A_mm acts on the seven
GCNs' item rows once (``[v ‖ v]``, ``[id ‖ id]`` … are never built: A_mm of a column-duplicated matrix is the
duplicate of A_mm's product, and the align term counts duplicated entries twice). The InfoNCE term forms the
``U × U`` and ``I × I`` similarity matrices in every batch (as MENTOR does), a block of rows at a time when large:
MENTOR at Amazon scale wants a GPU. Every random draw (noise: ``8 · (U + I) · d`` uniforms per batch; the dropout
mask) comes from the CPU generator, so one seed trains the same run on CPU and CUDA.

Options: ``n_mm_layers`` (1), ``knn_k`` (10), ``mm_image_weight`` (0.1), ``n_layers`` (2: GCN hops), ``dropout``
(0.5), ``mask_weight_f`` (1.5), ``mask_weight_g`` (1e-4, the first of the yaml's {1e-4, 1e-3}), ``align_weight``
(0.1), ``temp`` (0.2, the first of {0.2, 0.4, 0.6}), ``noise_eps`` (0.1, hard-coded in MENTOR),
``eval_from_last_batch`` (true), ``feature_mask_value`` (true; false skips the no-gradient feature-masking term,
which changes only the reported loss, never a gradient). ``reg_weight`` defaults to 1e-3 (the yaml's only value).
MENTOR trains at ``learning_rate`` 1e-4 (the yaml's only value); clear-tune's ``lr`` default is 1e-3 for every
backbone, so set ``lr: 1e-4`` (``preset: mmrec`` does). MENTOR's grid: ``reg_weight`` ∈ {1e-3}, ``lr`` ∈ {1e-4},
``dropout`` ∈ {0.5}, ``mask_weight_f`` ∈ {1.5}, ``mask_weight_g`` ∈ {1e-4, 1e-3}, ``align_weight`` ∈ {0.1},
``temp`` ∈ {0.2, 0.4, 0.6}.

Example:
    >>> import torch
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.models import ModelContext, build_model
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 3, 2]), torch.randn(4, 10),
    ...                    torch.randn(4, 6), torch.device("cpu"))
    >>> model = build_model(TrainConfig(backbone="mentor", emb_dim=8, projection={"k": 2}, lr=1e-4,
    ...                                 model_options={"knn_k": 2}), ctx)
    >>> model.start_epoch(1)
    >>> bool(torch.isfinite(model.loss(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([3, 0]))).all())
    True
    >>> [e.shape for e in model.embeddings()]          # [v ‖ t]: twice emb_dim
    [torch.Size([1, 3, 16]), torch.Size([1, 4, 16])]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from clear_tune.graphs import spmm
from clear_tune.models import _losses as L
from clear_tune.models._base import Member, ModelContext
from clear_tune.models._features import FeatureBackbone
from clear_tune.models._graph_cache import modality_knn_graph, ui_adjacency
from clear_tune.models._layers import MemberLinear, MemberMLP, init_matrix, modality_weights, stack_members
from clear_tune.models._registry import register_backbone

# the seven GCNs, in the order of the stack: v, t (main), id, then the NOISE perturbed ones v_n1, t_n1, v_n2, t_n2
NOISE = 4


@register_backbone
class MENTOR(FeatureBackbone):
    name = "mentor"
    default_reg_weight = 1e-3
    mmrec_grid: ClassVar[dict[str, list[Any]]] = {
        "reg_weight": [1e-3],
        "lr": [1e-4],
        "dropout": [0.5],
        "mask_weight_f": [1.5],
        "mask_weight_g": [1e-4, 1e-3],
        "align_weight": [0.1],
        "temp": [0.2, 0.4, 0.6],
    }

    def __init__(
        self,
        ctx: ModelContext,
        *,
        members: Sequence[Member],
        emb_dim: int = 64,
        seed: int = 0,
        n_mm_layers: int = 1,
        knn_k: int = 10,
        mm_image_weight: float = 0.1,
        n_layers: int = 2,
        dropout: float = 0.5,
        mask_weight_f: float = 1.5,
        mask_weight_g: float = 1e-4,
        align_weight: float = 0.1,
        temp: float = 0.2,
        noise_eps: float = 0.1,
        eval_from_last_batch: bool = True,
        feature_mask_value: bool = True,
    ) -> None:
        super().__init__(ctx, members=members)
        assert ctx.image_feat is not None and ctx.text_feat is not None
        if n_layers < 1 or knn_k < 1 or n_mm_layers < 0:
            raise ValueError(f"n_layers={n_layers} and knn_k={knn_k} must be >= 1, n_mm_layers={n_mm_layers} >= 0")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        if temp <= 0.0 or noise_eps < 0.0:
            raise ValueError(f"temp={temp} must be > 0 and noise_eps={noise_eps} >= 0")
        if not 0.0 <= mm_image_weight <= 1.0:
            raise ValueError(f"mm_image_weight={mm_image_weight} must be in [0, 1]")
        R, d, U, n_i = self.n_members, emb_dim, ctx.n_users, ctx.n_items
        self.n_users, self.n_items, self.n_layers, self.n_mm_layers = U, n_i, n_layers, n_mm_layers
        self.dropout, self.mask_weight_f, self.mask_weight_g = dropout, mask_weight_f, mask_weight_g
        self.align_weight, self.temp, self.noise_eps = align_weight, temp, noise_eps
        self.eval_from_last_batch, self.feature_mask_value = eval_from_last_batch, feature_mask_value
        d_v, d_t = ctx.image_feat.shape[1], ctx.text_feat.shape[1]

        def gcn(d_feat: int) -> tuple[torch.Tensor, MemberMLP]:  # MMRec's GCN: preference, MLP, MLP_1
            pref = stack_members(R, init_matrix(U, d, "xavier_normal"))
            return pref, MemberMLP(R, [d_feat, 4 * d, d], init="torch", bias_init="torch")

        # MENTOR's creation order: mlp, weight_u, v_gcn, v_gcn_n1, v_gcn_n2, t_gcn, t_gcn_n1, t_gcn_n2, id_feat, id_gcn
        self.mlp = MemberLinear(R, 2 * d, 2 * d, init="torch", bias_init="torch").requires_grad_(False)
        self.weight_u = nn.Parameter(modality_weights(R, U))  # (R, U, 2)
        built = {name: gcn(d_v) for name in ("v", "v_n1", "v_n2")}
        built.update({name: gcn(d_t) for name in ("t", "t_n1", "t_n2")})
        self.id_feat = nn.Parameter(stack_members(R, init_matrix(n_i, d, "xavier_normal")))  # (R, I, d)
        built["id"] = gcn(d)
        self.image_pref, self.text_pref, self.id_pref = (nn.Parameter(built[n][0]) for n in ("v", "t", "id"))
        self.id_encoder = built["id"][1]
        noise = ("v_n1", "t_n1", "v_n2", "t_n2")
        self.noise_pref = nn.Parameter(torch.stack([built[n][0] for n in noise], 1))  # (R, 4, U, d)
        self.noise_encoders = nn.ModuleList(built[n][1] for n in noise)
        self.init_modalities(ctx, built["v"][1], built["t"][1])
        self.adjacency = ui_adjacency(ctx)  # (U + I)² D^-1/2 A D^-1/2, symmetric
        self.mm_graph, self.mm_graph_t = modality_knn_graph(ctx, knn_k=knn_k, image_weight=mm_image_weight)
        self.generator = torch.Generator().manual_seed(seed)  # noise and dropout, on the CPU: one draw on any device
        # MMRec's result_embed (users, items): the last training batch's main view (not checkpointed: every epoch
        # trains before it evaluates; buffers so keep_members slices them)
        self.register_buffer("last_users", None, persistent=False)
        self.register_buffer("last_items", None, persistent=False)

    # ------------------------------------------------------------------------------------------- forward
    def noise(self, views: int, like: torch.Tensor) -> torch.Tensor:
        """``eps · normalize(U[0, 1))`` for ``views`` perturbed GCNs: ``(views, 1, n, d)``, shared by the members."""
        n, d = like.shape[-2:]
        draw = torch.rand(views, n, d, generator=self.generator).to(device=like.device, dtype=like.dtype)
        return (F.normalize(draw, dim=-1) * self.noise_eps).unsqueeze(1)

    def gcns(self, prefs: list[torch.Tensor], feats: list[torch.Tensor], perturbed: int) -> torch.Tensor:
        """MMRec's ``GCN.forward`` for ``G`` GCNs at once, the last ``perturbed`` of them with noise:
        ``(G, R, U + I, d)``."""
        G, R = len(prefs), self.n_members
        x = torch.stack([torch.cat([p, f], 1) for p, f in zip(prefs, feats)])  # (G, R, U + I, d)
        x = F.normalize(x, dim=-1).reshape(G * R, *x.shape[2:])
        hop, total = x, x
        for _ in range(self.n_layers):
            hop = spmm(self.adjacency, hop)  # (G·R, U + I, d)
            if perturbed and self.noise_eps > 0.0:
                grouped = hop.reshape(G, R, *hop.shape[1:])
                clean, noisy = grouped[: G - perturbed], grouped[G - perturbed :]
                hop = torch.cat([clean, noisy + torch.sign(noisy.detach()) * self.noise(perturbed, noisy)])
                hop = hop.reshape(G * R, *hop.shape[2:])
            total = total + hop  # MENTOR's x + h + h_1
        return total.reshape(G, R, *total.shape[1:])

    def item_graph(self, reps: torch.Tensor) -> torch.Tensor:
        """``i + A_mm^L i`` on the item rows of ``(G, R, U + I, d)`` GCN outputs: ``(G, R, I, d)``."""
        G, R, _, d = reps.shape
        items = reps[:, :, self.n_users :]
        h = items.reshape(G * R, self.n_items, d)
        for _ in range(self.n_mm_layers):
            h = spmm(self.mm_graph, h, matrix_t=self.mm_graph_t)
        return items + h.reshape(G, R, self.n_items, d)

    def fuse_users(self, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``[w_0 v_u ‖ w_1 t_u]``: ``(R, U, 2d)`` from ``(R, U + I, d)`` GCN outputs."""
        U = self.n_users
        return torch.cat([v[:, :U] * self.weight_u[..., :1], t[:, :U] * self.weight_u[..., 1:]], -1)

    def main_view(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(R, U, 2d)`` users and ``(R, I, 2d)`` items of the main view ``r`` (``v_gcn``, ``t_gcn``, A_mm only)."""
        V, T = self.modal_features()
        reps = self.gcns([self.image_pref, self.text_pref], [V, T], 0)
        items = self.item_graph(reps)
        return self.fuse_users(reps[0], reps[1]), torch.cat([items[0], items[1]], -1)

    def dropout_mask(self, rows: int, like: torch.Tensor) -> torch.Tensor:
        """``F.dropout``'s multiplier ``(rows, width)``: 0 or ``1/(1 − p)``, from the CPU generator, shared by the
        members."""
        keep = torch.rand(rows, like.shape[-1], generator=self.generator) >= self.dropout  # P(keep) = 1 − p
        return keep.to(device=like.device, dtype=like.dtype).div_(1.0 - self.dropout)

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        R, U = self.n_members, self.n_users
        V, T = self.modal_features()  # (R, I, d) each: the main encoders, then CLEAR
        image, text = self.raw_features()
        noise_feats = [enc(raw) for enc, raw in zip(self.noise_encoders, (image, text, image, text))]
        reps = self.gcns(
            [self.image_pref, self.text_pref, self.id_pref, *self.noise_pref.unbind(1)],
            [V, T, self.id_encoder(self.id_feat), *noise_feats],
            NOISE,
        )  # (7, R, U + I, d)
        items = self.item_graph(reps)  # (7, R, I, d): each GCN's i + A_mm i
        v, t, ids, v1, t1, v2, t2 = reps.unbind(0)
        user_r, item_r = self.fuse_users(v, t), torch.cat([items[0], items[1]], -1)  # the main view r
        self.last_users, self.last_items = user_r.detach(), item_r.detach()

        u = user_r.index_select(1, users)  # (R, B, 2d)
        gap = L.scores(u, item_r.index_select(1, pos)) - L.scores(u, item_r.index_select(1, neg))
        bpr = -L.batch_mean(torch.log2(torch.sigmoid(gap)))
        prefs = L.batch_mean(self.image_pref.index_select(1, users).pow(2).reshape(R, -1)) + L.batch_mean(
            self.text_pref.index_select(1, users).pow(2).reshape(R, -1)
        )
        reg = self.reg_weight * prefs + self.reg_weight * L.batch_mean(self.weight_u.pow(2).reshape(R, -1))

        # fit_Gaussian_dis: mean and var of every entry of r, g = [id ‖ id], v = [v ‖ v], t = [t ‖ t]
        r_mean, r_var = L.moments((user_r, 1), (item_r, 1))
        g_mean, g_var = L.moments((ids[:, :U], 2), (items[2], 2))
        v_mean, v_var = L.moments((v[:, :U], 2), (items[0], 2))
        t_mean, t_var = L.moments((t[:, :U], 2), (items[1], 2))
        align: torch.Tensor | float = 0.0
        for (a_var, a_mean), (b_var, b_mean) in (
            ((g_var, g_mean), (r_var, r_mean)),
            ((g_var, g_mean), (v_var, v_mean)),
            ((g_var, g_mean), (t_var, t_mean)),
            ((r_var, r_mean), (v_var, v_mean)),
            ((r_var, r_mean), (t_var, t_mean)),
            ((v_var, v_mean), (t_var, t_mean)),
        ):
            align = align + ((a_var - b_var).abs() + (a_mean - b_mean).abs())

        mask_f = self.feature_mask(user_r, item_r)
        users_n1, users_n2 = self.fuse_users(v1, t1), self.fuse_users(v2, t2)
        items_n1, items_n2 = torch.cat([items[3], items[4]], -1), torch.cat([items[5], items[6]], -1)
        mask_g = L.exp_info_nce(users_n1, users_n2, self.temp) + L.exp_info_nce(items_n1, items_n2, self.temp)
        return bpr + reg + align * self.align_weight + mask_f + mask_g * self.mask_weight_g

    @torch.no_grad()
    def feature_mask(self, user_r: torch.Tensor, item_r: torch.Tensor) -> torch.Tensor:
        """MENTOR's ``mask_f_loss``, a constant: ``w_f · ((1 − cos(drop(i), mlp(i))) + (1 − cos(drop(u), mlp(u))))``."""
        if not self.feature_mask_value:
            return torch.zeros(self.n_members, device=user_r.device, dtype=user_r.dtype)
        dropped = []
        for rows in (user_r, item_r):  # MENTOR's order of draws: users, then items
            dropped.append(rows * self.dropout_mask(rows.shape[1], rows) if self.dropout > 0.0 else rows)
        mask_u = 1 - L.batch_mean(F.cosine_similarity(dropped[0], self.mlp(user_r), dim=-1))
        mask_i = 1 - L.batch_mean(F.cosine_similarity(dropped[1], self.mlp(item_r), dim=-1))
        return self.mask_weight_f * (mask_i + mask_u)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.eval_from_last_batch and self.last_users is not None:
            return self.last_users.float(), self.last_items.float()
        return self.main_view()
