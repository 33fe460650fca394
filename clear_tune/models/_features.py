"""Feature backbones: encoders over item features, then CLEAR's projection, the one way every backbone uses it.

:class:`FeatureBackbone` is the only place a backbone touches :class:`~clear_tune.projection.ProjectionArray`,
so every feature backbone gets CLEAR at the same point: the encoder outputs ``V = φ_v(V_raw)`` and
``T = φ_t(T_raw)`` (``(R, n, d)`` member stacks) go through ``Ṽ = V P_v``, ``T̃ = T P_t`` before anything
else of the backbone reads them. The projectors are refreshed at the start of an epoch, when due, from
the encoders' full outputs under ``no_grad``. Each backbone's docstring names what its encoder is.

The raw features are the dataset's frozen ``(N, d_raw)`` tensors, shared by all members, unless the
backbone trains them (``train_raw_features``, as MMRec's FREEDOM, BM3 and LATTICE do through
``nn.Embedding.from_pretrained(..., freeze=False)``): then each member owns an ``(R, N, d_raw)`` copy.

Example:
    >>> import torch
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.models import ModelContext, build_model
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), torch.randn(4, 10),
    ...                    torch.randn(4, 6), torch.device("cpu"))
    >>> model = build_model(TrainConfig(backbone="vbpr", projection={"k": 2}, emb_dim=8), ctx)
    >>> model.start_epoch(1)
    >>> [V.shape for V in model.modal_features()]      # one member, all items, projected
    [torch.Size([1, 4, 8]), torch.Size([1, 4, 8])]
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from clear_tune.models._base import ModelContext, Recommender
from clear_tune.models._layers import MemberLinear, stack_members
from clear_tune.projection import ProjectionArray


class FeatureBackbone(Recommender):
    """A backbone with feature encoders φ_v, φ_t over item features, followed by CLEAR when active.

    Subclasses call :meth:`init_modalities` in ``__init__`` and then use :meth:`modal_features` (or
    :meth:`encode_gaps`). Encoders are member modules (``MemberLinear``, ``MemberMLP``) with a ``d_out``.
    """

    uses_features = True

    def init_modalities(
        self, ctx: ModelContext, image_encoder: nn.Module, text_encoder: nn.Module, *, train_raw_features: bool = False
    ) -> None:
        if ctx.image_feat is None or ctx.text_feat is None:
            raise ValueError(f"{type(self).__name__} needs image and text features")
        self.train_raw_features = train_raw_features
        if train_raw_features:
            self.image_raw = nn.Parameter(stack_members(self.n_members, ctx.image_feat))  # (R, N, d_v)
            self.text_raw = nn.Parameter(stack_members(self.n_members, ctx.text_feat))  # (R, N, d_t)
        else:  # attributes, not buffers: they belong to the dataset and never go into checkpoints
            self.image_feat, self.text_feat = ctx.image_feat, ctx.text_feat
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        settings = [m.projection for m in self.members]
        if any(s.active for s in settings):
            d_v, d_t = cast(int, image_encoder.d_out), cast(int, text_encoder.d_out)  # member modules' widths
            self.projection = ProjectionArray(d_v, d_t, settings)

    def raw_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, d_v), (N, d_t)`` shared frozen features, or the members' ``(R, N, ·)`` trained copies.

        Under autocast the frozen features come as a copy in the autocast dtype (made once): autocast would
        otherwise cast the whole ``N × d_raw`` matrix in every batch, which on a CPU costs about what the
        faster bf16 product saves. The copy is the same rounding autocast applies.
        """
        if self.train_raw_features:
            return self.image_raw, self.text_raw
        device_type = self.image_feat.device.type
        if not torch.is_autocast_enabled(device_type):
            return self.image_feat, self.text_feat
        dtype = torch.get_autocast_dtype(device_type)
        cache = self.__dict__.setdefault("_autocast_feats", {})
        if dtype not in cache:
            cache[dtype] = (self.image_feat.to(dtype), self.text_feat.to(dtype))
        return cache[dtype]

    def encode(self, items: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder outputs V, T before projection for ``items`` (all items when ``None``): ``(R, n, d)`` each."""
        image, text = self.raw_features()
        if items is not None:
            image, text = image.index_select(-2, items), text.index_select(-2, items)
        return self.image_encoder(image), self.text_encoder(text)

    def project(self, V: torch.Tensor, T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 10 on encoded ``(R, n, d)`` rows (identity when no member projects)."""
        return (V, T) if self.projection is None else self.projection(V, T)

    def modal_features(self, items: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected Ṽ, T̃ for ``items`` (all when ``None``); the projection is row-wise, so a subset is exact."""
        return self.project(*self.encode(items))

    def raw_gaps(self, pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(V_raw[pos] − V_raw[neg], T_raw[pos] − T_raw[neg])``: ``(B, d_v), (B, d_t)`` (``(R, B, ·)`` when trained).

        Frozen rows land in scratch buffers kept between batches: a fresh ``2048 × 4096`` float tensor is
        above glibc's mmap threshold, and page-faulting it in every batch cost more than the gather
        itself on CPU. Autograd's version counters make reuse safe: calling ``loss`` twice and then
        backpropagating through the first raises instead of reading overwritten rows.
        """
        if self.train_raw_features:
            gap_v, gap_t = (
                raw.index_select(1, pos) - raw.index_select(1, neg) for raw in (self.image_raw, self.text_raw)
            )
            return gap_v, gap_t
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
        """``(Ṽ[pos] − Ṽ[neg], T̃[pos] − T̃[neg])`` ``(R, B, d)`` from :meth:`raw_gaps`, for ``MemberLinear`` encoders.

        Encoder and projection are affine, so the difference of two encoded rows is the encoder's weight
        (its bias cancels) applied to the difference of the raw rows: one ``B × d_raw`` product instead of
        encoding both rows, same values and gradients. BPR terms only ever read such differences.
        """
        assert isinstance(self.image_encoder, MemberLinear) and isinstance(self.text_encoder, MemberLinear)
        return self.project(self.image_encoder.linear(image_gap), self.text_encoder.linear(text_gap))

    def refresh_projection(self, epoch: int) -> None:
        """Algorithm 1 lines 2-8: recompute P_v, P_t of every member that is due, from the full encoder outputs."""
        if self.projection is not None and self.projection.due(epoch):
            with torch.no_grad():
                V, T = self.encode()
            self.projection.maybe_refresh(V, T, epoch=epoch)

    def start_epoch(self, epoch: int) -> None:
        self.refresh_projection(epoch)
