"""Beyond-accuracy metrics from the same top-K lists: who gets recommended, not only whether it was right.

For the users a split evaluates, from each user's top-K list (items the user trained on are never in it), with
item popularity = the item's number of train interactions:

* ``coverage@K``: the share of all items that appear in at least one top-K list;
* ``gini@K``: the Gini index of how often each item is recommended (0: every item equally often, → 1: a few items
  take every slot);
* ``arp@K``: average recommended popularity, the mean over users of their top-K items' mean popularity;
* ``aplt@K``: average percentage of long tail, the mean over users of the share of their top-K items outside the
  short head (the ⌈20%⌉ most popular items);
* ``novelty@K``: the mean over users of their top-K items' mean self-information ``−log2(p_i)``, ``p_i`` = the share
  of users who interacted with item ``i`` in train (at least one).

:class:`ExposureTally` accumulates them chunk by chunk of users on the device (one ``scatter_add`` and a few
gathers per chunk, no Python loop over users), for every member of a model array at once.

Example:
    >>> import torch
    >>> tally = ExposureTally(torch.tensor([5.0, 1.0, 1.0, 0.0]), n_users=6, topk=[2], members=1, splits=["test"])
    >>> top = torch.tensor([[[0, 1], [0, 2]]])                  # (R=1, B=2 users, depth 2)
    >>> tally.add("test", top, torch.ones_like(top, dtype=torch.bool))
    >>> metrics = tally.result("test", n_users=2)
    >>> metrics["coverage@2"], metrics["arp@2"]
    ([0.75], [3.0])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

EXPOSURE_METRICS = ("coverage", "gini", "arp", "aplt", "novelty")
SHORT_HEAD_SHARE = 0.2


def exposure_names(topk: Sequence[int]) -> list[str]:
    """``["coverage@10", "coverage@20", "gini@10", ...]`` in a fixed order."""
    return [f"{m}@{k}" for m in EXPOSURE_METRICS for k in sorted(set(topk))]


class ExposureTally:
    """Running sums of the beyond-accuracy metrics of every member and split (see the module docstring)."""

    def __init__(
        self, popularity: torch.Tensor, *, n_users: int, topk: Sequence[int], members: int, splits: Sequence[str]
    ) -> None:
        self.topk = sorted(set(int(k) for k in topk))
        self.popularity = popularity.to(torch.float64)  # (n_items,) train interactions per item
        n_items = popularity.numel()
        head = torch.argsort(self.popularity, descending=True, stable=True)[: math.ceil(SHORT_HEAD_SHARE * n_items)]
        self.long_tail = torch.ones(n_items, dtype=torch.float64, device=popularity.device)
        self.long_tail[head] = 0.0  # (n_items,) 1 for long-tail items
        share = self.popularity.clamp(min=1.0) / max(n_users, 1)
        self.self_information = -torch.log2(share.clamp(max=1.0))  # (n_items,)
        device = popularity.device
        self.counts = {
            (s, k): torch.zeros(members, n_items, dtype=torch.float64, device=device) for s in splits for k in self.topk
        }  # how often each item is recommended
        self.sums = {
            (s, name, k): torch.zeros(members, dtype=torch.float64, device=device)
            for s in splits
            for name in ("arp", "aplt", "novelty")
            for k in self.topk
        }

    def add(self, split: str, top_items: torch.Tensor, ranked: torch.Tensor) -> None:
        """One chunk of the split's users: their ``(R, B, depth)`` top items and which of the places are real
        (``ranked``: False past the end of a user's candidates)."""
        for k in self.topk:
            items, real = top_items[..., :k], ranked[..., :k].to(torch.float64)  # (R, B, K) each
            n_real = real.sum(-1).clamp(min=1.0)  # (R, B)
            self.counts[(split, k)].scatter_add_(1, items.flatten(1), real.flatten(1))
            for name, table in (("arp", self.popularity), ("aplt", self.long_tail), ("novelty", self.self_information)):
                per_user = (table[items] * real).sum(-1) / n_real  # (R, B) mean over the user's list
                self.sums[(split, name, k)] += per_user.sum(-1)

    def result(self, split: str, *, n_users: int) -> dict[str, list[float]]:
        """``{metric@K: [value of each member]}`` for the split's ``n_users`` users."""
        out: dict[str, list[float]] = {}
        for k in self.topk:
            counts = self.counts[(split, k)]  # (R, n_items)
            out[f"coverage@{k}"] = ((counts > 0).sum(-1).to(torch.float64) / counts.shape[1]).tolist()
            out[f"gini@{k}"] = gini(counts).tolist()
            for name in ("arp", "aplt", "novelty"):
                out[f"{name}@{k}"] = (self.sums[(split, name, k)] / max(n_users, 1)).tolist()
        return {name: out[name] for name in exposure_names(self.topk)}


def gini(counts: torch.Tensor) -> torch.Tensor:
    """Gini index of each row of non-negative ``(R, n)`` counts: ``Σ_i (2i − n − 1) c_(i) / (n Σ c)`` over the
    counts sorted ascending; 0 for a row of zeros."""
    n = counts.shape[-1]
    ordered = torch.sort(counts, dim=-1).values
    weights = 2.0 * torch.arange(1, n + 1, dtype=counts.dtype, device=counts.device) - n - 1
    total = ordered.sum(-1)
    return torch.where(total > 0, (ordered * weights).sum(-1) / (n * total.clamp(min=1e-300)), torch.zeros_like(total))
