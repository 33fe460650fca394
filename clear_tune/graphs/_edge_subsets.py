"""Fixed-size edge subsets: keep exactly ``int(E · keep_ratio)`` train edges, drawn without replacement.

:func:`~clear_tune.graphs.degree_sensitive_edges` draws such a subset with probability ∝ a weight per
edge; :func:`uniform_edge_subset` draws it uniformly (every subset of that size equally likely), as
``random.sample(range(E), k)`` does in MMRec's LayerGCN, which alternates the two per epoch. Unlike
:func:`~clear_tune.graphs.uniform_edge_dropout` (an independent coin per edge) the size is fixed.

Example:
    >>> import torch
    >>> from clear_tune.graphs import uniform_edge_subset
    >>> kept = uniform_edge_subset(10, keep_ratio=0.7, generator=torch.Generator().manual_seed(0))
    >>> kept.numel(), kept.unique().numel()
    (7, 7)
"""

from __future__ import annotations

import torch


def uniform_edge_subset(
    n_edges: int, *, keep_ratio: float, device: torch.device | str = "cpu", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices of ``max(1, int(n_edges · keep_ratio))`` distinct edges, a uniformly random subset, on ``device``."""
    n_keep = max(1, int(n_edges * keep_ratio))
    draw_on = device if generator is None else generator.device  # draw where the RNG lives
    return torch.randperm(n_edges, device=draw_on, generator=generator)[:n_keep].to(device)
