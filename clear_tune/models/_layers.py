"""Member-stacked layers: every parameter of a backbone carries the member axis first.

A backbone is a model ARRAY of ``R`` members (``R = 1`` for one trial). Its tables and weights are
``(R, ...)`` tensors, initialised once as a single ``(rows, cols)`` tensor from the seeded RNG and copied
to every member, so a member starts exactly where the same config trained alone would start, whatever
``R`` is. Lookups and products keep the member axis first: ``(R, B, d)`` rows, ``(R, n, d_out)`` outputs.

Initialisers mirror what the reference models use (``nn.init.xavier_uniform_`` / ``xavier_normal_`` on
``nn.Embedding`` tables and ``nn.Linear`` weights, or ``nn.Linear``'s own default), applied to the same
2-D shapes, so the fan-in and fan-out are the ones the reference sees.

Example:
    >>> import torch
    >>> from clear_tune.models._layers import MemberEmbedding, MemberLinear
    >>> table = MemberEmbedding(3, 10, 4)                      # 3 members, 10 rows, width 4
    >>> table(torch.tensor([1, 2])).shape
    torch.Size([3, 2, 4])
    >>> bool((table.weight[0] == table.weight[2]).all())     # every member starts the same
    True
    >>> MemberLinear(3, 6, 4)(torch.randn(5, 6)).shape       # shared input -> one output per member
    torch.Size([3, 5, 4])
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

Init = Literal["xavier_uniform", "xavier_normal", "torch", "zeros"]


def init_matrix(rows: int, cols: int, init: Init) -> torch.Tensor:
    """A ``(rows, cols)`` tensor drawn as torch draws ``nn.Embedding(rows, cols)`` / ``nn.Linear(cols, rows)``
    weights under ``init``; ``"torch"`` is ``nn.Linear``'s default (Kaiming-uniform, a = √5)."""
    weight = torch.empty(rows, cols)
    if init == "xavier_uniform":
        nn.init.xavier_uniform_(weight)
    elif init == "xavier_normal":
        nn.init.xavier_normal_(weight)
    elif init == "torch":
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    elif init == "zeros":
        nn.init.zeros_(weight)
    else:
        raise ValueError(f"unknown init {init!r}")
    return weight


def stack_members(members: int, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` copied into a new leading member axis of size ``members``."""
    return tensor.unsqueeze(0).repeat(members, *([1] * tensor.dim())).contiguous()


class MemberEmbedding(nn.Module):
    """``R`` copies of an ``(n, d)`` table; ``table(ids)`` gathers ``(R, B, d)`` rows."""

    def __init__(self, members: int, n_rows: int, dim: int, *, init: Init = "xavier_uniform") -> None:
        super().__init__()
        self.weight = nn.Parameter(stack_members(members, init_matrix(n_rows, dim, init)))  # (R, n, d)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight.index_select(1, ids)  # (R, B, d)


class MemberLinear(nn.Module):
    """``R`` affine maps ``x W_m + b_m`` (``W_m``: ``d_in × d_out``), like ``nn.Linear(d_in, d_out)`` per member.

    A shared input ``(n, d_in)`` goes through ONE ``(n × d_in) @ (d_in × R·d_out)`` product, so the big
    feature matrices are read once for all members; a per-member input ``(R, n, d_in)`` is one batched
    product. ``bias_init`` ``"torch"`` is ``nn.Linear``'s uniform(±1/√d_in); ``"zeros"`` what MMRec's
    initialisation helpers set.
    """

    def __init__(
        self,
        members: int,
        d_in: int,
        d_out: int,
        *,
        bias: bool = True,
        init: Init = "xavier_uniform",
        bias_init: Literal["zeros", "torch"] = "zeros",
    ) -> None:
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        weight = init_matrix(d_out, d_in, init).T  # drawn in nn.Linear's (d_out, d_in) layout, stored (d_in, d_out)
        self.weight = nn.Parameter(stack_members(members, weight))  # (R, d_in, d_out)
        if bias:
            b = torch.zeros(d_out)
            if bias_init == "torch":
                nn.init.uniform_(b, -1 / math.sqrt(d_in), 1 / math.sqrt(d_in))
            self.bias = nn.Parameter(stack_members(members, b))  # (R, d_out)
        else:
            self.register_parameter("bias", None)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """``x W_m`` without the bias: ``(n, d_in)`` or ``(R, n, d_in)`` -> ``(R, n, d_out)``."""
        return self._affine(x, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._affine(x, self.bias)

    def _affine(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        # addmm / baddbmm: one kernel, and autocast runs the bias in the product's dtype as nn.Linear does
        members = self.weight.shape[0]
        if x.dim() == 2:
            wide = self.weight.transpose(0, 1).reshape(self.d_in, members * self.d_out)  # (d_in, R·d_out)
            out = x @ wide if bias is None else torch.addmm(bias.reshape(-1), x, wide)  # (n, R·d_out)
            return out.view(x.shape[0], members, self.d_out).transpose(0, 1)
        return torch.bmm(x, self.weight) if bias is None else torch.baddbmm(bias.unsqueeze(1), x, self.weight)


class MemberMLP(nn.Sequential):
    """``Linear → activation → Linear → ...`` of :class:`MemberLinear` layers; ``d_out`` is the last width.

    ``init="torch", bias_init="torch"`` with widths ``[d_raw, 4d, d]`` is the modality GCN's front end of MMRec's
    DualGNN, DRAGON and MENTOR (``MLP_1(leaky_relu(MLP(x)))``, both ``nn.Linear`` as constructed): layers 0 and 2.
    """

    def __init__(
        self,
        members: int,
        widths: list[int],
        *,
        activation: type[nn.Module] = nn.LeakyReLU,
        init: Init = "xavier_uniform",
        bias_init: Literal["zeros", "torch"] = "zeros",
    ) -> None:
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:])):
            if i:
                layers.append(activation())
            layers.append(MemberLinear(members, d_in, d_out, init=init, bias_init=bias_init))
        super().__init__(*layers)
        self.d_in, self.d_out = widths[0], widths[-1]


def modality_weights(members: int, rows: int) -> torch.Tensor:
    """``(R, rows, 2)`` per-row weights of two modalities as MMRec's DualGNN, DRAGON and MENTOR start ``weight_u``:
    ``xavier_normal_`` on a ``(rows, 2, 1)`` tensor (fan_in 2, fan_out rows), then a softmax over the two."""
    weight = torch.empty(rows, 2, 1)
    nn.init.xavier_normal_(weight)
    return stack_members(members, torch.softmax(weight, dim=1).squeeze(2))
