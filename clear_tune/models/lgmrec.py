"""LGMRec (Guo et al., AAAI 2024) as MMRec's ``LGMRec``: local graph embeddings (collaborative + modality) plus
global hypergraph embeddings, with a hypergraph contrastive term.

What MMRec's implementation computes, point by point (every tensor carries the member axis R first; ``M`` users,
``N`` items, ``R_ui`` the 0/1 ``M × N`` train matrix, ``G = D^-1/2 A D^-1/2`` the normalised ``(M+N)²`` graph):

* trainable: the ID tables ``E_u``, ``E_i`` (``xavier_uniform_``), the modality encoders ``W_v (d_v × d)``,
  ``W_t (d_t × d)`` and the hyperedge weights ``H_v (d_v × hyper_num)``, ``H_t (d_t × hyper_num)``, all bare
  matrices drawn with ``xavier_uniform_`` in those shapes (here ``MemberLinear(bias=False)``). The raw features
  are frozen (``nn.Embedding.from_pretrained(..., freeze=True)``);
* CGE (``cf_model: lightgcn``): the mean of ``[E, G E, ..., G^{n_ui_layers} E]`` over ``E = [E_u; E_i]``
  (``cf_model: mf``: ``E`` itself);
* MGE per modality: items ``Ṽ = (v W_v) P_v``, users ``(R_ui Ṽ) / (d_u + 1e-7)`` (the mean of their items),
  then ``G^{n_mm_layers}`` (the last layer, no mean);
* hyperedges per modality: logits ``v H_v`` (items, from the RAW features) and ``R_ui (v H_v)`` (users, a sum),
  each turned into soft assignments by ``gumbel_softmax(·, tau=0.2)``, then ``Dropout(1 − keep_rate)`` in
  training; GHE: ``n_hyper_layer`` times ``lat = A_iᵀ X_i``, ``X_i = A_i lat``, ``X_u = A_u lat`` from
  ``X_i = CGE_items``;
* representation: ``CGE + (norm(MGE_v) + norm(MGE_t)) + alpha · norm(GHE_v + GHE_t)`` (row L2 norms);
* loss: ``BPR`` (``-mean logsigmoid``) + ``cl_weight`` · (InfoNCE(``X_u^v[u]``, ``X_u^t[u]``; all users) +
  InfoNCE(``X_i^v[i+]``, ``X_i^t[i+]``; all items)), each ``-Σ_B log(exp(cos/τ) / Σ_all exp(cos/τ))`` summed
  over the batch, ``τ = 0.2`` + ``reg_weight`` · ``(‖u‖ + ‖i+‖ + ‖i−‖) / B`` (MMRec's unsquared norms of the
  final rows, :func:`~clear_tune.models._losses.emb_norm`);
* evaluation: MMRec's ``full_sort_predict`` runs the forward in eval mode: no dropout, but ``gumbel_softmax``
  still draws noise.

MMRec's yaml (Baby): ``n_ui_layers`` 2, ``n_mm_layers`` 2, ``n_hyper_layer`` 1, ``hyper_num`` 4, ``keep_rate``
0.5, ``alpha`` 0.3, ``cl_weight`` 1e-4, ``reg_weight`` 1e-6; ``feat_embed_dim`` = ``embedding_size`` (the sum
needs it: here both are ``emb_dim``); learning rate and scheduler from MMRec's overall.yaml (1e-3, constant).

Where CLEAR enters: the encoded item features ``v W_v``, ``t W_t`` (MMRec's ``item_image_trs``, ``item_text_trs``),
before the users' means and the MGE propagation. The hyperedge logits read the raw features through ``H_v``,
``H_t`` and are not projected.

Randomness: the Gumbel noise and the dropout masks are drawn in MMRec's order (``iv, uv, it, ut``, then the
four masks) from the model's CPU generator (``self.generator``, seeded from ``seed``, checkpointed by the
trainer), one draw per step shared by all members, so a fused member draws what it draws alone. Evaluation
draws its Gumbel noise from a generator seeded from ``(seed, epoch)`` on every call, so ``embeddings()`` is a
function of the weights and the epoch and never moves the training stream. MMRec re-runs the forward for
every evaluation batch of users (one draw each, valid and test apart); here one forward (one draw) scores
all users for valid and test: the same distribution, computed once.

Faster, same values: the raw image (``N × 4096`` on Baby) and text features are read once per step for both
the encoder and the hyperedge logits (one product with ``[W | H]``); CGE and both MGEs share one sparse
product per layer (``[E | Ṽ | T̃]`` columns); both modalities' hypergraph layers run as one batched product;
the contrastive logits are scaled and exponentiated in place (one ``B × M`` buffer per member). Measured on one
CPU thread (3000 users, 2000 items, 4096-d image, batch 2048): 0.20 s of CPU per step against MMRec's 0.27 s; the
``B × M`` and ``B × N`` contrastive products dominate and grow with R (4 members: 0.86 s). Evaluation runs one
forward instead of MMRec's one per 4096 users, for valid and again for test.

Options (MMRec's names): ``cf_model`` (``"lightgcn"``), ``n_ui_layers`` (2), ``n_mm_layers`` (2),
``n_hyper_layer`` (1), ``hyper_num`` (4), ``keep_rate`` (0.5), ``alpha`` (0.3), ``cl_weight`` (1e-4), ``tau``
(0.2, MMRec's constant ``self.tau``, both the Gumbel temperature and the InfoNCE one), ``gumbel``
(``"always"``). Departures, options only: ``gumbel: "train"`` evaluates with the noiseless ``softmax(logits / tau)``
(a deterministic ranking), ``gumbel: "never"`` uses it in training too (no noise at all; with ``keep_rate: 1``
a loss is a function of the weights and the batch).
MMRec's grid: one value per hyper-parameter, the defaults above (``reg_weight`` 1e-6).

Example:
    >>> import torch
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.models import ModelContext, build_model
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 3, 0]), torch.randn(4, 10),
    ...                    torch.randn(4, 6), torch.device("cpu"))
    >>> model = build_model(TrainConfig(backbone="lgmrec", emb_dim=8, projection={"k": 2}), ctx)
    >>> model.start_epoch(1)
    >>> bool(model.loss(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([3, 3])) > 0)
    True
    >>> [e.shape for e in model.embeddings()]
    [torch.Size([1, 3, 8]), torch.Size([1, 4, 8])]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from clear_tune.graphs import spmm
from clear_tune.models import _losses as L
from clear_tune.models._base import Member, ModelContext
from clear_tune.models._features import FeatureBackbone
from clear_tune.models._graph_cache import ui_adjacency, ui_interaction_matrix
from clear_tune.models._layers import MemberEmbedding, MemberLinear, init_matrix, stack_members
from clear_tune.models._registry import register_backbone

CF_MODELS = ("lightgcn", "mf")
GUMBEL = ("always", "train", "never")  # where gumbel_softmax draws noise: MMRec's (training and evaluation), ...
MIN_SPMM_COLUMNS = 32


def wide_spmm(matrix: torch.Tensor, dense: torch.Tensor, matrix_t: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`~clear_tune.graphs.spmm` of a member stack ``(R, n, w)``, each member's block zero-padded so the
    folded operand has at least 32 columns (same values).

    On a CPU, torch's CSR product takes another code path below 32 columns whose rounding differs from the
    wide one: the hyperedge logits (``2·hyper_num`` = 8 columns a member) would round differently alone and
    fused. Padded, every member's columns go through the wide path, as inside any wider operand.
    """
    members, _, width = dense.shape
    pad = max(0, -(-MIN_SPMM_COLUMNS // members) - width)
    if pad == 0:
        return spmm(matrix, dense, matrix_t=matrix_t)
    return spmm(matrix, F.pad(dense, (0, pad)), matrix_t=matrix_t)[..., :width]


def hyper_contrast(first: torch.Tensor, second: torch.Tensor, every: torch.Tensor, tau: float) -> torch.Tensor:
    """MMRec's ``ssl_triple_loss``: ``-Σ_B log(exp(cos(a, b)/τ) / Σ_j exp(cos(a, c_j)/τ))`` -> ``(R,)``.

    ``first``, ``second``: ``(R, B, d)`` rows of two views; ``every``: ``(R, n, d)``, all rows of the second view.
    The ``B × n`` logits are divided and exponentiated in place: one buffer, MMRec's values.
    """
    a, b, c = F.normalize(first, dim=-1), F.normalize(second, dim=-1), F.normalize(every, dim=-1)
    pos = torch.exp((a * b).sum(-1) / tau)  # (R, B)
    total = torch.bmm(a, c.transpose(1, 2)).div_(tau).exp_().sum(-1)  # (R, B)
    return -L.batch_sum(torch.log(pos / total))


@register_backbone
class LGMRec(FeatureBackbone):
    name = "lgmrec"
    default_reg_weight = 1e-6
    mmrec_grid: ClassVar[dict[str, list[Any]]] = {
        "n_ui_layers": [2],
        "n_mm_layers": [2],
        "n_hyper_layer": [1],
        "hyper_num": [4],
        "keep_rate": [0.5],
        "alpha": [0.3],
        "cl_weight": [1e-4],
        "reg_weight": [1e-6],
    }
    image_encoder: MemberLinear  # set by init_modalities
    text_encoder: MemberLinear

    def __init__(
        self,
        ctx: ModelContext,
        *,
        members: Sequence[Member],
        emb_dim: int = 64,
        seed: int = 0,
        cf_model: str = "lightgcn",
        n_ui_layers: int = 2,
        n_mm_layers: int = 2,
        n_hyper_layer: int = 1,
        hyper_num: int = 4,
        keep_rate: float = 0.5,
        alpha: float = 0.3,
        cl_weight: float = 1e-4,
        tau: float = 0.2,
        gumbel: str = "always",
    ) -> None:
        super().__init__(ctx, members=members)
        assert ctx.image_feat is not None and ctx.text_feat is not None
        if cf_model not in CF_MODELS:
            raise ValueError(f"cf_model={cf_model!r} must be one of {', '.join(CF_MODELS)}")
        if n_hyper_layer < 1:  # MMRec's HGNNLayer returns an undefined u_ret with 0 layers
            raise ValueError(f"n_hyper_layer={n_hyper_layer} must be at least 1")
        if hyper_num < 1 or n_ui_layers < 0 or n_mm_layers < 0:
            raise ValueError("hyper_num must be positive and n_ui_layers, n_mm_layers non-negative")
        if not 0.0 < keep_rate <= 1.0:
            raise ValueError(f"keep_rate={keep_rate} must be in (0, 1]")
        if tau <= 0:
            raise ValueError(f"tau={tau} must be positive")
        if gumbel not in GUMBEL:
            raise ValueError(f"gumbel={gumbel!r} must be one of {', '.join(GUMBEL)}")
        R, d = self.n_members, emb_dim
        self.n_users, self.n_items, self.d, self.seed = ctx.n_users, ctx.n_items, d, seed
        self.cf_model, self.n_ui_layers, self.n_mm_layers = cf_model, n_ui_layers, n_mm_layers
        self.n_hyper_layer, self.hyper_num, self.alpha, self.cl_weight, self.tau = (
            n_hyper_layer,
            hyper_num,
            alpha,
            cl_weight,
            tau,
        )
        self.drop_p = 1.0 - keep_rate  # nn.Dropout(p=1 - keep_rate), which keeps with 1 - p
        self.gumbel = gumbel
        # MMRec's draw order: user, item, item_image_trs, v_hyper, item_text_trs, t_hyper
        self.user_emb = MemberEmbedding(R, ctx.n_users, d)
        self.item_emb = MemberEmbedding(R, ctx.n_items, d)

        def matrix(d_in: int, d_out: int) -> MemberLinear:  # nn.Parameter(xavier_uniform_(zeros(d_in, d_out)))
            layer = MemberLinear(R, d_in, d_out, bias=False, init="zeros")
            with torch.no_grad():
                layer.weight.copy_(stack_members(R, init_matrix(d_in, d_out, "xavier_uniform")))
            return layer

        d_v, d_t = ctx.image_feat.shape[1], ctx.text_feat.shape[1]
        image_encoder, self.image_hyper = matrix(d_v, d), matrix(d_v, hyper_num)
        text_encoder, self.text_hyper = matrix(d_t, d), matrix(d_t, hyper_num)
        self.init_modalities(ctx, image_encoder, text_encoder)
        self.graph = ui_adjacency(ctx)
        self.interactions, self.interactions_t, self.inverse_user_degree = ui_interaction_matrix(ctx)
        self.generator = torch.Generator().manual_seed(seed)  # Gumbel noise and dropout masks in training
        self.epoch = 0

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.refresh_projection(epoch)

    # ------------------------------------------------------------------------------------------ pieces
    @staticmethod
    def _encode_and_hyper(raw: torch.Tensor, encoder: MemberLinear, hyper: MemberLinear):
        """``(raw W, raw H)``: ``(R, N, d)`` and ``(R, N, hyper_num)`` from ONE product over the raw features."""
        members, d_in = encoder.weight.shape[:2]
        weight = torch.cat([encoder.weight, hyper.weight], dim=-1)  # (R, d_in, d + H)
        width = weight.shape[-1]
        out = raw @ weight.transpose(0, 1).reshape(d_in, members * width)  # (N, R·(d + H))
        out = out.view(raw.shape[0], members, width).transpose(0, 1)  # (R, N, d + H)
        return out[..., : encoder.d_out], out[..., encoder.d_out :]

    def eval_generator(self) -> torch.Generator | None:
        """Where evaluation draws its Gumbel noise: a generator seeded from ``(seed, epoch)``, fresh on every call
        (``None``: no noise, with ``gumbel`` ``"train"`` or ``"never"``)."""
        if self.gumbel != "always":
            return None
        key = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator().manual_seed(int(key) & (2**63 - 1))

    def _noise(self, generator: torch.Generator | None, device: torch.device):
        """Gumbel noise for ``(items, users)``, ``(N, 2H), (M, 2H)`` in ``[image | text]`` blocks, drawn as
        ``F.gumbel_softmax`` draws it (``-log Exp(1)``) in MMRec's order iv, uv, it, ut; zeros without a generator."""
        H, N, M = self.hyper_num, self.n_items, self.n_users
        if generator is None:
            return torch.zeros(N, 2 * H, device=device), torch.zeros(M, 2 * H, device=device)
        iv, uv, it, ut = (-torch.empty(n, H).exponential_(generator=generator).log() for n in (N, M, N, M))
        return torch.cat([iv, it], 1).to(device), torch.cat([uv, ut], 1).to(device)

    def _masks(self, device: torch.device):
        """Dropout multipliers ``bernoulli(1 − p) / (1 − p)`` (CPU ``nn.Dropout``) in MMRec's order iv, uv, it, ut."""
        H, N, M = self.hyper_num, self.n_items, self.n_users
        keep = 1.0 - self.drop_p
        iv, uv, it, ut = (torch.empty(n, H).bernoulli_(keep, generator=self.generator).div_(keep) for n in (N, M, N, M))
        return torch.cat([iv, it], 1).to(device), torch.cat([uv, ut], 1).to(device)

    def _assignments(self, logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``gumbel_softmax`` per modality block: ``(R, n, 2H)`` logits -> ``(2, R, n, H)`` soft assignments."""
        R, n, _ = logits.shape
        soft = ((logits + noise) / self.tau).view(R, n, 2, self.hyper_num).softmax(-1)
        return soft.permute(2, 0, 1, 3)

    def _propagate(self, ego: torch.Tensor, modal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CGE (mean of ``n_ui_layers + 1`` layers of ``ego``) and MGE (layer ``n_mm_layers`` of ``modal``), sharing
        one sparse product per layer while both still propagate."""
        d = ego.shape[-1]
        n_ui = self.n_ui_layers if self.cf_model == "lightgcn" else 0
        layer, total = ego, ego
        for k in range(max(n_ui, self.n_mm_layers)):
            if k < n_ui and k < self.n_mm_layers:
                both = wide_spmm(self.graph, torch.cat([layer, modal], dim=-1))
                layer, modal = both[..., :d], both[..., d:]
            elif k < n_ui:
                layer = wide_spmm(self.graph, layer)
            else:
                modal = wide_spmm(self.graph, modal)
            if k < n_ui:
                total = total + layer
        return total / (n_ui + 1), modal

    def forward_all(self, *, train: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """MMRec's ``forward``: final ``[users; items]`` rows ``(R, M + N, d)`` and the hypergraph outputs
        ``X_u (2, R, M, d)``, ``X_i (2, R, N, d)`` (``[image, text]``); ``train`` draws dropout masks."""
        M = self.n_users
        image, text = self.raw_features()
        v, iv_logits = self._encode_and_hyper(image, self.image_encoder, self.image_hyper)
        t, it_logits = self._encode_and_hyper(text, self.text_encoder, self.text_hyper)
        V, T = self.project(v, t)  # CLEAR: the encoded item features (R, N, d) each
        item_logits = torch.cat([iv_logits, it_logits], dim=-1)  # (R, N, 2H)
        user_logits = wide_spmm(self.interactions, item_logits, self.interactions_t)  # (R, M, 2H)
        device = item_logits.device
        if train:
            generator = self.generator if self.gumbel != "never" else None
        else:
            generator = self.eval_generator()
        item_noise, user_noise = self._noise(generator, device)
        item_hyper = self._assignments(item_logits, item_noise)  # (2, R, N, H)
        user_hyper = self._assignments(user_logits, user_noise)  # (2, R, M, H)
        if train and self.drop_p > 0.0:
            item_mask, user_mask = self._masks(device)
            item_hyper = item_hyper * item_mask.view(self.n_items, 2, -1).permute(1, 0, 2).unsqueeze(1)
            user_hyper = user_hyper * user_mask.view(M, 2, -1).permute(1, 0, 2).unsqueeze(1)

        items = torch.cat([V, T], dim=-1)  # (R, N, 2d)
        users = wide_spmm(self.interactions, items, self.interactions_t) * self.inverse_user_degree
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight], dim=1)  # (R, M + N, d)
        cge, mge = self._propagate(ego, torch.cat([users, items], dim=1))
        mge_v, mge_t = mge[..., : self.d], mge[..., self.d :]

        x_i = cge[:, M:]  # (R, N, d), broadcast over the two modalities in the first layer
        for _ in range(self.n_hyper_layer):
            lat = item_hyper.transpose(-1, -2) @ x_i  # (2, R, H, d)
            x_i = item_hyper @ lat  # (2, R, N, d)
            x_u = user_hyper @ lat  # (2, R, M, d)
        ghe = torch.cat([x_u[0], x_i[0]], dim=1) + torch.cat([x_u[1], x_i[1]], dim=1)  # (R, M + N, d)
        local = cge + (F.normalize(mge_v, dim=-1) + F.normalize(mge_t, dim=-1))
        return local + self.alpha * F.normalize(ghe, dim=-1), x_u, x_i

    # --------------------------------------------------------------------------------------- interface
    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        final, x_u, x_i = self.forward_all(train=True)
        M = self.n_users
        u = final.index_select(1, users)  # (R, B, d)
        p, n = final.index_select(1, pos + M), final.index_select(1, neg + M)
        bpr = L.bpr(L.scores(u, p), L.scores(u, n))
        hcl = hyper_contrast(
            x_u[0].index_select(1, users), x_u[1].index_select(1, users), x_u[1], self.tau
        ) + hyper_contrast(x_i[0].index_select(1, pos), x_i[1].index_select(1, pos), x_i[1], self.tau)
        return bpr + self.cl_weight * hcl + self.reg_weight * L.emb_norm(u, p, n)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        final, _, _ = self.forward_all(train=False)
        return final[:, : self.n_users], final[:, self.n_users :]
