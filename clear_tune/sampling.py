"""Uniform negative sampling that never returns one of the user's train positives.

One negative per positive, drawn uniformly over a pool of items (all items, or as MMRec's data loader
does the items seen in train); draws that hit a train positive of that user are redrawn (only those), so
the result is uniform over the user's non-positive items of the pool. Membership is a
binary search of ``user * n_items + item`` in the sorted train keys: vectorised, on the device, and
deterministic for a given :class:`torch.Generator`.

Example:
    >>> import torch
    >>> from clear_tune.sampling import NegativeSampler
    >>> users, items = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 2])
    >>> sampler = NegativeSampler(users, items, n_items=3, generator=torch.Generator().manual_seed(0))
    >>> neg = sampler.sample(torch.tensor([0, 0, 1]))
    >>> neg[:2].tolist()  # user 0 owns items 0 and 1: item 2 is the only negative
    [2, 2]
    >>> bool(sampler.is_positive(torch.tensor([1]), neg[2:]).any())
    False
"""

from __future__ import annotations

import torch


class NegativeSampler:
    """Draws negatives for ``(B,)`` user ids, avoiding ``(train_users, train_items)`` pairs.

    ``generator`` is the only randomness used, so saving and restoring its state (``generator.get_state()``)
    reproduces the draws exactly. Draws happen on the generator's device (the trainer keeps it on the CPU,
    so a seed gives the same negatives on CPU and CUDA) and move to the device of ``users``. A user who
    owns every item has no negative; after ``max_rounds`` redraws such draws are returned as they are.
    """

    def __init__(
        self,
        train_users: torch.Tensor,
        train_items: torch.Tensor,
        *,
        n_items: int,
        generator: torch.Generator,
        pool: torch.Tensor | None = None,
        max_rounds: int = 100,
    ) -> None:
        self.n_items = int(n_items)
        self.generator = generator
        self.max_rounds = max_rounds
        self._keys = torch.unique(train_users.long() * self.n_items + train_items.long())  # (E,) sorted
        # the candidate items, kept where the draws happen (the generator's device)
        self._pool = None if pool is None else pool.long().to(generator.device)

    def is_positive(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bool: whether each ``(user, item)`` is a train interaction."""
        if self._keys.numel() == 0:
            return torch.zeros_like(users, dtype=torch.bool)
        query = users.long() * self.n_items + items.long()  # (B,)
        pos = torch.searchsorted(self._keys, query).clamp_(max=self._keys.numel() - 1)
        return self._keys[pos] == query

    def _draw(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        draw_on = self.generator.device
        if self._pool is None:
            return torch.randint(self.n_items, shape, generator=self.generator, device=draw_on).to(device)
        picks = torch.randint(self._pool.numel(), shape, generator=self.generator, device=draw_on)
        return self._pool[picks].to(device)

    def sample(self, users: torch.Tensor) -> torch.Tensor:
        """``(B,)`` int64 negative item ids, one per entry of ``users``."""
        device = users.device
        neg = self._draw(users.shape, device)  # (B,)
        redraw = self.is_positive(users, neg).nonzero().squeeze(1)  # (R,) indices of collisions
        for _ in range(self.max_rounds):  # rounds, not users: each round shrinks R by ~1/density
            if redraw.numel() == 0:
                break
            fresh = self._draw(redraw.shape, device)
            neg[redraw] = fresh
            redraw = redraw[self.is_positive(users[redraw], fresh)]
        return neg
