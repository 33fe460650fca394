"""Pieces every backbone shares: the BPR loss, Xavier embeddings, and the one way to plug in CLEAR.

:class:`FeatureBackbone` is the only place a backbone touches
:class:`~clear_tune.projection.CrossModalProjection`, so every feature backbone uses CLEAR the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clear_tune.config import ProjectionConfig
from clear_tune.models._base import ModelContext, Recommender
from clear_tune.projection import CrossModalProjection


def bpr_loss(user_emb: torch.Tensor, pos_emb: torch.Tensor, neg_emb: torch.Tensor) -> torch.Tensor:
    """Mean of ``-log σ(<u, i+> - <u, i->)`` over the batch; all inputs ``(B, D)``."""
    pos_scores = (user_emb * pos_emb).sum(dim=1)  # (B,)
    neg_scores = (user_emb * neg_emb).sum(dim=1)
    return -F.logsigmoid(pos_scores - neg_scores).mean()


def bpr_gap_loss(user_emb: torch.Tensor, item_gap: torch.Tensor) -> torch.Tensor:
    """:func:`bpr_loss` given ``item_gap = pos_emb − neg_emb`` ``(B, D)``: mean of ``-log σ(<u, gap>)``."""
    return -F.logsigmoid((user_emb * item_gap).sum(dim=1)).mean()


def l2_per_row(*batch_embeddings: torch.Tensor) -> torch.Tensor:
    """LightGCN's regulariser: ½ Σ ‖x‖² over the given ``(B, ·)`` tensors, divided by the batch size B."""
    return sum(x.pow(2).sum() for x in batch_embeddings) / (2 * batch_embeddings[0].shape[0])


def xavier_embedding(n_rows: int, dim: int) -> nn.Embedding:
    table = nn.Embedding(n_rows, dim)
    nn.init.xavier_uniform_(table.weight)
    return table


def xavier_linear(d_in: int, d_out: int, *, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(d_in, d_out, bias=bias)
    nn.init.xavier_uniform_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


@torch.no_grad()
def output_dim(encoder: nn.Module, d_in: int) -> int:
    """Width of ``encoder``'s output for ``d_in``-wide rows, probed where the encoder's weights live (a model
    is built on the CPU and moved to the device afterwards, while the features are already there)."""
    weight = next(encoder.parameters(), None)
    probe = torch.zeros(1, d_in, device=None if weight is None else weight.device)
    return int(encoder(probe).shape[1])


class FeatureBackbone(Recommender):
    """A backbone with feature encoders φ_v, φ_t over frozen raw features, followed by CLEAR when active.

    Subclasses call :meth:`init_modalities` in ``__init__`` and then use :meth:`modal_features`. The raw
    features are plain tensors (no gradient), so backward only reaches the encoder weights. This class is
    the only place a backbone touches :class:`~clear_tune.projection.CrossModalProjection`: the projectors
    are refreshed at the start of an epoch from the encoders' full outputs under ``no_grad`` and applied
    to the encoder outputs in the forward pass.
    """

    uses_features = True

    def init_modalities(
        self, ctx: ModelContext, image_encoder: nn.Module, text_encoder: nn.Module, *, projection: ProjectionConfig
    ) -> None:
        if ctx.image_feat is None or ctx.text_feat is None:
            raise ValueError(f"{type(self).__name__} needs image and text features")
        # attributes, not buffers: they belong to the dataset and never go into checkpoints
        self.image_feat, self.text_feat = ctx.image_feat, ctx.text_feat
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        if projection.active:
            d_v, d_t = output_dim(image_encoder, ctx.image_feat.shape[1]), output_dim(text_encoder, ctx.text_feat.shape[1])
            self.projection = CrossModalProjection(
                d_v, d_t, mode=projection.mode, k=projection.k, strength=projection.strength,
                energy=projection.energy, refresh_every=projection.refresh_every,
            )

    def encode(self, items: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder outputs V, T before projection for ``items`` (all items when ``None``): ``(n, d)`` each."""
        image_feat, text_feat = self.raw_features()
        v_raw = image_feat if items is None else image_feat[items]
        t_raw = text_feat if items is None else text_feat[items]
        return self.image_encoder(v_raw), self.text_encoder(t_raw)

    def raw_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw features, as a copy in the autocast dtype (made once) while autocast is on.

        Autocast would otherwise cast the whole ``N × d_raw`` matrix in every batch, which on a CPU costs
        about what the faster bf16 product saves. The copy is the same rounding autocast applies.
        """
        device_type = self.image_feat.device.type
        if not torch.is_autocast_enabled(device_type):
            return self.image_feat, self.text_feat
        dtype = torch.get_autocast_dtype(device_type)
        cache = self.__dict__.setdefault("_autocast_feats", {})
        if dtype not in cache:
            cache[dtype] = (self.image_feat.to(dtype), self.text_feat.to(dtype))
        return cache[dtype]

    def project(self, V: torch.Tensor, T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 10 on encoded rows (identity when the projection is off)."""
        return (V, T) if self.projection is None else self.projection(V, T)

    def modal_features(self, items: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected Ṽ, T̃ for ``items`` (all when ``None``); the projection is row-wise, so a subset is exact."""
        return self.project(*self.encode(items))

    def raw_gaps(self, pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(V_raw[pos] − V_raw[neg], T_raw[pos] − T_raw[neg])``: ``(B, d_v)``, ``(B, d_t)``, no gradient.

        The rows land in scratch buffers kept between batches: a fresh ``2048 × 4096`` float tensor is
        above glibc's mmap threshold, and page-faulting it in every batch cost more than the gather
        itself on CPU. Autograd's version counters make reuse safe: calling ``loss`` twice and then
        backpropagating through the first raises instead of reading overwritten rows.
        """
        gaps = []
        for name, raw in (("image", self.image_feat), ("text", self.text_feat)):
            scratch = self.__dict__.setdefault("_scratch", {})
            if name not in scratch or scratch[name].shape[1] < pos.numel():
                scratch[name] = raw.new_empty(2, pos.numel(), raw.shape[1])
            pos_rows, neg_rows = scratch[name][0, : pos.numel()], scratch[name][1, : pos.numel()]
            torch.index_select(raw, 0, pos, out=pos_rows)
            torch.index_select(raw, 0, neg, out=neg_rows)
            gaps.append(pos_rows.sub_(neg_rows))
        return gaps[0], gaps[1]

    def encode_gaps(self, image_gap: torch.Tensor, text_gap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Ṽ[pos] − Ṽ[neg], T̃[pos] − T̃[neg])`` from :meth:`raw_gaps`, for ``nn.Linear`` encoders only.

        Encoder and projection are affine, so the difference of two encoded rows is the encoder's weight
        (its bias cancels) applied to the difference of the raw rows: one ``B × d_raw`` product instead of
        encoding both rows, same values and gradients. BPR terms only ever read such differences.
        """
        assert isinstance(self.image_encoder, nn.Linear) and isinstance(self.text_encoder, nn.Linear)
        return self.project(F.linear(image_gap, self.image_encoder.weight), F.linear(text_gap, self.text_encoder.weight))

    def refresh_projection(self, epoch: int) -> None:
        """Algorithm 1 lines 2-8: recompute P_v, P_t from the full encoder outputs when due."""
        if self.projection is not None and self.projection.due(epoch):
            with torch.no_grad():
                V, T = self.encode()
            self.projection.maybe_refresh(V, T, epoch=epoch)

    def start_epoch(self, epoch: int) -> None:
        self.refresh_projection(epoch)
