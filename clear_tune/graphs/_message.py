"""Message passing over an edge list with LEARNED edge weights: what PyG's ``MessagePassing`` layers compute.

MMGCN and GRCN are written as PyTorch Geometric layers in MMRec. Their aggregations are weighted sums
``out_i = Σ_{e: dst_e = i} w_e · x_{src_e}`` where the weights are either fixed (a mean: ``1/deg_i``) or
computed every step from the embeddings (an attention softmax, a learned confidence). The fixed case is a
CSR matrix for :func:`~clear_tune.graphs.spmm`; the learned case is :func:`edge_sum`, a CSR product whose
values are the weights, with gradients to the weights AND the node features.

* :class:`EdgeList` - a directed edge list sorted by target (CSR order), with its transpose's order;
* :func:`bipartite_edges` - both directions of every user-item edge over nodes ``[users | items]``;
* :func:`edge_sum` - ``Σ_e w_e x_src`` per target for member stacks ``w (R, E)``, ``x (R, n, d)``;
* :func:`segment_softmax` - PyG's ``softmax(src, index)``: per-target softmax, max-shifted, ``+ 1e-16``;
* :func:`edge_dot` - ``<x_dst, x_src>`` per edge, the dot-product attention score of GRCN's ``GATConv``.

Edge order: edges are kept sorted by ``(dst, src)`` so a target's edges are contiguous (segment reductions
need no scatter) and the forward product reads the weights in place; ``order`` maps each sorted edge back
to its position in the input list.

Example:
    >>> import torch
    >>> from clear_tune.graphs import EdgeList, edge_sum
    >>> graph = EdgeList(torch.tensor([0, 1, 2]), torch.tensor([2, 2, 0]), 3)   # 0→2, 1→2, 2→0
    >>> x = torch.arange(6.0).reshape(1, 3, 2)                                    # one member
    >>> edge_sum(graph, torch.ones(1, 3), x)[0].tolist()                          # node 2 gets x0 + x1
    [[4.0, 5.0], [0.0, 0.0], [2.0, 4.0]]
"""

from __future__ import annotations

import warnings

import torch


class EdgeList:
    """A directed graph over ``n_nodes`` nodes: ``src``/``dst`` ``(E,)`` sorted by ``(dst, src)``.

    ``order`` ``(E,)`` is the input position of every sorted edge; ``counts`` ``(n,)`` the in-degrees;
    ``crow`` the CSR row pointers of the matrix ``A[dst, src]``; ``t_order``/``t_crow``/``t_col`` the same
    for its transpose (sorted edges reordered by ``(src, dst)``). Everything lives on the device of ``src``.
    """

    def __init__(self, src: torch.Tensor, dst: torch.Tensor, n_nodes: int) -> None:
        self.n_nodes = int(n_nodes)
        self.order = torch.argsort(dst * self.n_nodes + src, stable=True)  # (E,)
        self.src, self.dst = src[self.order].contiguous(), dst[self.order].contiguous()
        self.counts = torch.bincount(self.dst, minlength=self.n_nodes)  # (n,) in-degrees
        self.crow = torch.cat([self.counts.new_zeros(1), self.counts.cumsum(0)])
        self.t_order = torch.argsort(self.src * self.n_nodes + self.dst, stable=True)  # sorted position -> by source
        self.t_col = self.dst[self.t_order].contiguous()
        self.t_crow = torch.cat([self.counts.new_zeros(1), torch.bincount(self.src, minlength=self.n_nodes).cumsum(0)])
        self._blocks: dict[int, tuple[torch.Tensor, ...]] = {}

    @property
    def n_edges(self) -> int:
        return self.src.numel()

    def csr(self, values: torch.Tensor, *, transpose: bool = False) -> torch.Tensor:
        """The ``(n, n)`` matrix ``A[dst_e, src_e] = values_e`` (``values`` in sorted order), or ``Aᵀ``."""
        if transpose:
            crow, col, values = self.t_crow, self.t_col, values[self.t_order]
        else:
            crow, col = self.crow, self.src
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(crow, col, values, (self.n_nodes, self.n_nodes), check_invariants=False)

    def block_csr(self, weights: torch.Tensor, *, transpose: bool = False) -> torch.Tensor:
        """Block-diagonal ``(R·n, R·n)`` CSR with member ``m``'s matrix (values ``weights[m]``) in block ``m``."""
        members = weights.shape[0]
        if members == 1:
            return self.csr(weights[0], transpose=transpose)
        key = members * (-1 if transpose else 1)
        if key not in self._blocks:
            crow, col = (self.t_crow, self.t_col) if transpose else (self.crow, self.src)
            offsets = torch.arange(members, device=crow.device).unsqueeze(1)  # (R, 1)
            block_crow = torch.cat(
                [(crow[:-1] + offsets * self.n_edges).reshape(-1), crow.new_tensor([members * self.n_edges])]
            )
            self._blocks[key] = (block_crow, (col + offsets * self.n_nodes).reshape(-1))
        block_crow, block_col = self._blocks[key]
        values = (weights[:, self.t_order] if transpose else weights).reshape(-1)
        size = members * self.n_nodes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(block_crow, block_col, values, (size, size), check_invariants=False)


def bipartite_edges(users: torch.Tensor, items: torch.Tensor, *, n_users: int, n_items: int) -> EdgeList:
    """Both directions of every ``(user, item)`` edge over nodes ``[users | items]``.

    Input order is ``[user→item edges, item→user edges]`` (PyG's ``cat((edge_index, edge_index[[1, 0]]))``
    over MMRec's ``[user, item + n_users]`` pairs), so ``order % E`` is the undirected edge of a sorted one.
    """
    item_nodes = items + n_users
    return EdgeList(torch.cat([users, item_nodes]), torch.cat([item_nodes, users]), n_users + n_items)


class _EdgeSum(torch.autograd.Function):
    # Forward: one (block-diagonal) CSR product. Backward: Aᵀ g for x, and <g_dst, x_src> per edge for w.
    # Sparse kernels want one dtype, so under autocast this runs in float32 (propagation is memory-bound).
    @staticmethod
    def forward(ctx, graph: EdgeList, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        members, n, d = x.shape
        with torch.autocast(x.device.type, enabled=False):
            weights, x = weights.float(), x.float()
            out = torch.sparse.mm(graph.block_csr(weights), x.reshape(members * n, d))
        ctx.graph = graph
        ctx.save_for_backward(weights, x)
        return out.view(members, n, d)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[None, torch.Tensor | None, torch.Tensor | None]:
        graph, (weights, x) = ctx.graph, ctx.saved_tensors
        members, n, d = x.shape
        grad_w = grad_x = None
        with torch.autocast(grad_out.device.type, enabled=False):
            grad_out = grad_out.float()
            if ctx.needs_input_grad[1]:
                grad_w = (grad_out.index_select(1, graph.dst) * x.index_select(1, graph.src)).sum(-1)  # (R, E)
            if ctx.needs_input_grad[2]:
                grad_x = torch.sparse.mm(
                    graph.block_csr(weights, transpose=True), grad_out.reshape(members * n, d)
                ).view(members, n, d)
        return None, grad_w, grad_x


def edge_sum(graph: EdgeList, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out[m, i] = Σ_{e: dst_e = i} weights[m, e] · x[m, src_e]``: ``(R, E), (R, n, d) -> (R, n, d)``.

    PyG's ``aggr='add'`` over ``message = x_j * w``; gradients reach both ``weights`` and ``x``.
    """
    return _EdgeSum.apply(graph, weights, x)


def edge_dot(graph: EdgeList, x: torch.Tensor) -> torch.Tensor:
    """``<x[m, dst_e], x[m, src_e]>`` for every edge: ``(R, n, d) -> (R, E)``."""
    return (x.index_select(1, graph.dst) * x.index_select(1, graph.src)).sum(-1)


def segment_softmax(graph: EdgeList, scores: torch.Tensor) -> torch.Tensor:
    """Softmax of ``scores (R, E)`` over each target's edges, as PyG's ``softmax(scores, dst)``.

    ``exp(s − max) / (Σ exp(s − max) + 1e-16)`` with the (detached) per-target max; edges are sorted by
    target, so the reductions are contiguous segment reductions.
    """
    lengths = graph.counts.expand(scores.shape[0], -1).contiguous()  # (R, n)
    top = torch.segment_reduce(scores.detach(), "max", lengths=lengths, axis=1, unsafe=True)  # (R, n)
    shifted = (scores - top.index_select(1, graph.dst)).exp()
    total = torch.segment_reduce(shifted, "sum", lengths=lengths, axis=1, unsafe=True) + 1e-16
    return shifted / total.index_select(1, graph.dst)
