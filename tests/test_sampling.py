"""Negative sampling: never a train positive, uniform over the rest, reproducible from the generator."""

from __future__ import annotations

import numpy as np
import torch

from clear_tune.sampling import NegativeSampler


def dense_sampler(seed: int = 0) -> tuple[NegativeSampler, torch.Tensor]:
    # user 0 owns 9 of 10 items (only item 7 is a negative); user 1 owns items 0..4
    users = torch.tensor([0] * 9 + [1] * 5)
    items = torch.tensor([0, 1, 2, 3, 4, 5, 6, 8, 9, 0, 1, 2, 3, 4])
    return NegativeSampler(users, items, n_items=10, generator=torch.Generator().manual_seed(seed)), users


def test_never_returns_a_positive_and_redraws_only_collisions():
    sampler, _ = dense_sampler()
    users = torch.tensor([0, 1] * 2000)
    neg = sampler.sample(users)
    assert (neg[users == 0] == 7).all()
    assert (neg[users == 1] >= 5).all()
    assert not sampler.is_positive(users, neg).any()


def test_uniform_over_the_non_positive_items():
    sampler, _ = dense_sampler()
    neg = sampler.sample(torch.ones(20000, dtype=torch.long))  # user 1: items 5..9 equally likely
    counts = np.bincount(neg.numpy(), minlength=10)
    assert counts[:5].sum() == 0
    assert np.all(np.abs(counts[5:] / 20000 - 0.2) < 0.02)


def test_same_generator_state_same_draws():
    a, _ = dense_sampler(seed=3)
    b, _ = dense_sampler(seed=3)
    users = torch.tensor([0, 1, 1, 0, 1] * 50)
    state = a.generator.get_state()
    first = a.sample(users)
    assert torch.equal(first, b.sample(users))
    a.generator.set_state(state)
    assert torch.equal(first, a.sample(users))
    assert not torch.equal(first[users == 1], a.sample(users)[users == 1])


def test_user_owning_every_item_terminates():
    sampler = NegativeSampler(
        torch.zeros(3, dtype=torch.long),
        torch.arange(3),
        n_items=3,
        generator=torch.Generator().manual_seed(0),
        max_rounds=5,
    )
    assert sampler.sample(torch.zeros(4, dtype=torch.long)).shape == (4,)
