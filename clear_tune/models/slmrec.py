"""SLMRec (Tao et al., IEEE TMM 2022) as MMRec's ``SLMRec``: three LightGCNs (ID, image, text) fused by
concatenation, an in-batch InfoNCE main loss and a self-supervised loss.

MMRec's form, point by point (every tensor carries the member axis R first):

* features: the raw features row-normalised once (``F.normalize``) and frozen (plain tensors, not
  embeddings); encoders ``v_dense``, ``t_dense`` = ``Linear(d_raw → d)`` with ``xavier_uniform_`` weights
  and torch's default bias; the ID tables ``xavier_uniform_`` (``init: normal`` draws N(0, 0.1²): MMRec's
  branch crashes on a typo, this is what it means);
* three propagations over the ``adj_type`` graph (default ``"pre"``: ``D^-1/2 A D^-1/2`` without self
  loops), ``layer_num`` layers, mean of all layers: ``[E_u; E_i]``, ``[E_u; Ṽ]``, ``[E_u; T̃]`` (the user
  part starts from the ID table each time). Here they run as ONE propagation of the ``3d``-wide
  concatenation, which is column-wise the same thing and already the ``concat`` fusion's layout;
* fusion (``mm_fusion_mode: concat``, the only mode MMRec can run): ``user = Linear(3d → d)([i_u, v_u, t_u])``,
  ``item = Linear(3d → d)([i_i, v_i, t_i])`` (``xavier_uniform_``);
* main loss: in-batch InfoNCE over the batch's (user, positive) pairs, ``CE(norm(u) norm(i)ᵀ / temp, diag)``;
  negatives are not used;
* ``ssl_task: FAC`` (default, the one task MMRec can run): over the positives' propagated rows,
  ``CE(g_i_iv(i) g_v_iv(v)ᵀ / ssl_temp) + CE(g_iva_ivat(g_iv_iva(g_i_iv(i))) g_t_ivat(t)ᵀ / ssl_temp)``
  (unnormalised; ``g_* = Linear``, ``xavier_uniform_``; MMRec's unused ``g_a_iva`` for audio is left out);
* loss = main + ``ssl_alpha`` · ssl. MMRec's ``reg`` (its grid's ``reg_weight`` here) is never read by
  MMRec's SLMRec (nor by the original code): ``reg_weight`` has no effect. The L2 is Adam's
  ``weight_decay`` (1e-4 in the yaml), which the trainer applies from this model's ``weight_decay``;
* evaluation: MMRec scores with ``all_users``/``all_items`` kept from the LAST training batch's forward,
  i.e. the weights before that batch's Adam step; :meth:`SLMRec.embeddings` does the same (it falls back
  to the current weights before any training). ``sigmoid`` of the score does not change a ranking.

Where CLEAR enters: the encoder outputs ``v_dense(v)``, ``t_dense(t)``, before they enter their LightGCN.

Departures, options only: MMRec's ``FD``, ``FM`` and ``FD+FM`` tasks crash without audio features (they
read an audio branch that is never built); here they run on the two modalities: two views of the three
propagations, ``FD`` with ``nn.Dropout(dropout_rate)`` after every layer, ``FM`` zeroing the item-side
input of one source per view (two distinct sources among ID, image and text, drawn per batch; MMRec
draws among four with audio), both keeping MMRec's crossed layer lists (view 1 averages its own input
with view 2's layers), then fused, normalised, and InfoNCE with ``ssl_temp`` over users and over items.
Masks come from the model's CPU generator, shared by all members.

Options: ``layer_num`` (3), ``ssl_task`` (``"FAC"``), ``ssl_alpha`` (0.1), ``ssl_temp`` (0.2), ``temp``
(0.2), ``dropout_rate`` (0.3), ``init`` (``"xavier"``), ``adj_type`` (``"pre"``), ``weight_decay`` (1e-4).
MMRec's grid: ``lr`` ∈ {1e-4, 1e-3, 1e-2, 0.1}, ``ssl_temp`` ∈ {0.1, 0.2, 0.5, 1.0}, ``ssl_alpha`` ∈
{0.01, 0.05, 0.1, 0.5, 1.0}, ``reg_weight`` (MMRec's ``reg``, a no-op) ∈ {1e-4, 1e-3, 1e-2, 0.1}.

Example:
    >>> import torch
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.models import ModelContext, build_model
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 3, 0]), torch.randn(4, 10),
    ...                    torch.randn(4, 6), torch.device("cpu"))
    >>> model = build_model(TrainConfig(backbone="slmrec", emb_dim=8, projection={"k": 2}), ctx)
    >>> model.start_epoch(1)
    >>> bool(model.loss(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([3, 3])) > 0)
    True
    >>> [e.shape for e in model.embeddings()], model.weight_decay
    ([torch.Size([1, 3, 8]), torch.Size([1, 4, 8])], 0.0001)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from clear_tune.graphs import ADJ_TYPES, spmm
from clear_tune.models import _losses as L
from clear_tune.models._base import Member, ModelContext
from clear_tune.models._features import FeatureBackbone
from clear_tune.models._graph_cache import ui_graph, unit_features
from clear_tune.models._layers import MemberEmbedding, MemberLinear, stack_members
from clear_tune.models._registry import register_backbone

SSL_TASKS = ("FAC", "FD", "FM", "FD+FM")


def info_nce(a: torch.Tensor, b: torch.Tensor, temp: float) -> torch.Tensor:
    """``CrossEntropy(a bᵀ / temp, arange(B))`` per member: in-batch InfoNCE of ``(R, B, d)`` rows -> ``(R,)``.

    ``1 / temp`` scales ``a`` (``B × d``) rather than the ``B × B`` logits: the same values, up to rounding.
    """
    logits = torch.bmm(a / temp, b.transpose(1, 2))  # (R, B, B)
    members, n, _ = logits.shape
    target = torch.arange(n, device=logits.device).repeat(members)
    return L.batch_mean(F.cross_entropy(logits.reshape(members * n, n), target, reduction="none").view(members, n))


@register_backbone
class SLMRec(FeatureBackbone):
    name = "slmrec"
    default_reg_weight = 1e-4
    mmrec_grid: ClassVar[dict[str, list[Any]]] = {
        "lr": [1e-4, 1e-3, 1e-2, 0.1],
        "ssl_temp": [0.1, 0.2, 0.5, 1.0],
        "ssl_alpha": [0.01, 0.05, 0.1, 0.5, 1.0],
        "reg_weight": [1e-4, 1e-3, 1e-2, 0.1],
    }

    def __init__(
        self,
        ctx: ModelContext,
        *,
        members: Sequence[Member],
        emb_dim: int = 64,
        seed: int = 0,
        layer_num: int = 3,
        ssl_task: str = "FAC",
        ssl_alpha: float = 0.1,
        ssl_temp: float = 0.2,
        temp: float = 0.2,
        dropout_rate: float = 0.3,
        init: str = "xavier",
        adj_type: str = "pre",
        weight_decay: float = 1e-4,
    ) -> None:
        super().__init__(ctx, members=members)
        assert ctx.image_feat is not None and ctx.text_feat is not None
        if ssl_task not in SSL_TASKS:
            raise ValueError(f"ssl_task={ssl_task!r} must be one of {', '.join(SSL_TASKS)}")
        if init not in ("xavier", "normal"):
            raise ValueError(f"init={init!r} must be 'xavier' or 'normal'")
        if adj_type not in ADJ_TYPES:
            raise ValueError(f"adj_type={adj_type!r} must be one of {', '.join(ADJ_TYPES)}")
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate={dropout_rate} must be in [0, 1)")
        if temp <= 0 or ssl_temp <= 0:
            raise ValueError("temp and ssl_temp must be positive")
        R, d = self.n_members, emb_dim
        self.n_users, self.d = ctx.n_users, d
        self.layer_num, self.ssl_task, self.ssl_alpha, self.ssl_temp = layer_num, ssl_task, ssl_alpha, ssl_temp
        self.temp, self.dropout_rate = temp, dropout_rate
        self.weight_decay = weight_decay  # Adam's, read by the trainer
        self.user_emb = MemberEmbedding(R, ctx.n_users, d)
        self.item_emb = MemberEmbedding(R, ctx.n_items, d)
        if init == "normal":
            with torch.no_grad():
                for table in (self.user_emb, self.item_emb):
                    table.weight.copy_(stack_members(R, torch.empty(table.weight.shape[1:]).normal_(std=0.1)))

        def linear(d_in: int, d_out: int) -> MemberLinear:  # nn.Linear, xavier_uniform_ weight, torch's bias
            return MemberLinear(R, d_in, d_out, init="xavier_uniform", bias_init="torch")

        image, text = unit_features(ctx)  # SLMRec encodes F.normalize(raw), and never trains the features
        self.init_modalities(
            dataclasses.replace(ctx, image_feat=image, text_feat=text),
            linear(image.shape[1], d),
            linear(text.shape[1], d),
        )
        self.user_fuse, self.item_fuse = linear(3 * d, d), linear(3 * d, d)  # embedding_{user,item}_after_GCN
        if ssl_task == "FAC":
            self.g_i_iv, self.g_v_iv, self.g_iv_iva = linear(d, d), linear(d, d), linear(d, d)
            self.g_iva_ivat, self.g_t_ivat = linear(d, d // 2), linear(d, d // 2)
        self.graph, self.graph_t = ui_graph(ctx, adj_type)
        self.generator = torch.Generator().manual_seed(seed)  # FD / FM views
        self._last: tuple[torch.Tensor, list[torch.Tensor]] | None = None  # the last batch's forward, for evaluation

    def keep_members(self, index: Sequence[int]) -> None:
        super().keep_members(index)
        if self._last is not None:
            final, weights = self._last
            self._last = final[list(index)], [w[list(index)] for w in weights]

    def egos(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-0 inputs of the three propagations: users ``(R, M, 3d)``, items ``[E_i Ṽ T̃] (R, N, 3d)``."""
        V, T = self.modal_features()  # (R, N, d) each: CLEAR's projection applied
        users = self.user_emb.weight
        return torch.cat([users, users, users], dim=-1), torch.cat([self.item_emb.weight, V, T], dim=-1)

    def _layers(self, x: torch.Tensor, *, dropout: bool = False) -> list[torch.Tensor]:
        """The ``layer_num`` propagated layers of ``x (R, M + N, 3d)`` (after MMRec's dropout when ``dropout``)."""
        layers = []
        for _ in range(self.layer_num):
            x = spmm(self.graph, x, matrix_t=self.graph_t)
            if dropout and self.dropout_rate > 0.0:
                keep = torch.rand(x.shape[1:], generator=self.generator) >= self.dropout_rate  # shared by members
                x = x * keep.to(x.device) / (1.0 - self.dropout_rate)
            layers.append(x)
        return layers

    def propagate(self) -> torch.Tensor:
        """MMRec's ``compute`` up to the fusion: the layer means of the three graphs, ``(R, M + N, 3d)``."""
        x = torch.cat(self.egos(), dim=1)
        return sum(self._layers(x), x) / (self.layer_num + 1)

    def _fac(self, item_rows: torch.Tensor) -> torch.Tensor:
        i, v, t = item_rows.split(self.d, dim=-1)  # (R, B, d) each: propagated ID, image, text rows
        x_i_iv = self.g_i_iv(i)
        v_loss = info_nce(x_i_iv, self.g_v_iv(v), self.ssl_temp)
        t_loss = info_nce(self.g_iva_ivat(self.g_iv_iva(x_i_iv)), self.g_t_ivat(t), self.ssl_temp)
        return v_loss + t_loss

    def _two_views(self, users: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """FD / FM / FD+FM: InfoNCE between two augmented views, over the batch's users and its positives."""
        user_ego, item_ego = self.egos()
        inputs = [item_ego, item_ego]
        if "FM" in self.ssl_task:  # zero the item-side input of one source (ID, image or text) per view
            first = int(torch.randint(3, (1,), generator=self.generator))
            second = (first + 1 + int(torch.randint(2, (1,), generator=self.generator))) % 3
            for view, source in enumerate((first, second)):
                keep = torch.ones(3 * self.d, device=item_ego.device)
                keep[source * self.d : (source + 1) * self.d] = 0.0
                inputs[view] = item_ego * keep
        x1, x2 = (torch.cat([user_ego, items], dim=1) for items in inputs)
        dropout = "FD" in self.ssl_task
        layers1, layers2 = self._layers(x1, dropout=dropout), self._layers(x2, dropout=dropout)
        n = self.layer_num + 1
        views = [sum(layers2, x1) / n, sum(layers1, x2) / n]  # MMRec's crossed lists: own input, other's layers
        u1, u2 = (F.normalize(self.user_fuse(v.index_select(1, users)), dim=-1) for v in views)
        i1, i2 = (F.normalize(self.item_fuse(v.index_select(1, pos + self.n_users)), dim=-1) for v in views)
        return info_nce(u1, u2, self.ssl_temp) + info_nce(i1, i2, self.ssl_temp)

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        final = self.propagate()  # (R, M + N, 3d)
        item_rows = final.index_select(1, pos + self.n_users)  # (R, B, 3d)
        u = F.normalize(self.user_fuse(final.index_select(1, users)), dim=-1)  # (R, B, d)
        main = info_nce(u, F.normalize(self.item_fuse(item_rows), dim=-1), self.temp)
        ssl = self._fac(item_rows) if self.ssl_task == "FAC" else self._two_views(users, pos)
        fuse = [self.user_fuse.weight, self.user_fuse.bias, self.item_fuse.weight, self.item_fuse.bias]
        self._last = final.detach(), [w.detach().clone() for w in fuse]  # what MMRec evaluates with
        return main + self.ssl_alpha * ssl

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._last is None:  # never trained in this process: the current weights
            final = self.propagate()
            weights: list[torch.Tensor] = [
                self.user_fuse.weight,
                self.user_fuse.bias,
                self.item_fuse.weight,
                self.item_fuse.bias,
            ]
        else:
            final, weights = self._last
        user_w, user_b, item_w, item_b = (w.float() for w in weights)
        final = final.float()
        users = torch.baddbmm(user_b.unsqueeze(1), final[:, : self.n_users], user_w)  # (R, M, d)
        items = torch.baddbmm(item_b.unsqueeze(1), final[:, self.n_users :], item_w)  # (R, N, d)
        return users, items
