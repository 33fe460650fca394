"""Every registered backbone through the real trainer on tiny synthetic data: it learns, a restored run
finishes exactly like an uninterrupted one, and two runs with one seed are identical.

A new backbone is covered by registering it; ``OPTIONS`` holds the few settings tiny data needs.
"""

from __future__ import annotations

import pytest
import torch

from clear_tune.config import TrainConfig
from clear_tune.data import make_synthetic
from clear_tune.models import BACKBONES
from clear_tune.train import EpochReport, Trainer

torch.set_num_threads(1)

# kNN graphs over 80 items need a small k; everything else is each backbone's default.
OPTIONS: dict[str, dict] = {"freedom": {"knn_k": 5}, "clear": {"knn_k": 5}}
TIMING_FIELDS = {"sec_per_epoch", "sec_per_eval", "peak_mem_mb"}


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(n_users=150, n_items=80, d_v=24, d_t=16, pref_dim=8, seed=5)


def config(backbone: str, **overrides) -> TrainConfig:
    projection = {"k": 2, "strength": 0.9, "refresh_every": 2} if BACKBONES[backbone].uses_features else {"mode": "off"}
    base = dict(
        backbone=backbone,
        projection=projection,
        emb_dim=32,
        epochs=8,
        batch_size=128,
        lr=0.01,
        device="cpu",
        topk=[5, 10],
        select_metric="recall@10",
        model_options=OPTIONS.get(backbone, {}),
    )
    return TrainConfig(**{**base, **overrides})


def without_timings(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in TIMING_FIELDS}


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_trains_and_beats_its_first_evaluation(dataset, backbone):
    [result] = Trainer(config(backbone, patience=8), dataset).fit()
    valids = [p["valid"]["recall@10"] for p in result["curve"]]
    assert all(torch.isfinite(torch.tensor(p["loss"])) for p in result["curve"])
    assert max(valids[1:]) > valids[0], valids


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_restored_run_finishes_exactly_like_an_uninterrupted_one(dataset, tmp_path, backbone):
    cfg = config(backbone, epochs=6, patience=2)
    path = tmp_path / "run.ckpt"

    def checkpoint_at_3(trainer: Trainer, report: EpochReport) -> None:
        if report.epoch == 3:
            trainer.save_checkpoint(path)

    [uninterrupted] = Trainer(cfg, dataset).fit(checkpoint_at_3)
    torch.manual_seed(12345)  # a resumed process starts with different global RNG state
    resumed = Trainer(cfg, dataset)
    resumed.load_checkpoint(path)
    assert without_timings(resumed.fit()[0]) == without_timings(uninterrupted)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_two_runs_with_one_seed_are_identical_and_seeds_differ(dataset, backbone):
    [first] = Trainer(config(backbone, epochs=3), dataset).fit()
    torch.manual_seed(999)  # the global RNG must not matter
    assert without_timings(Trainer(config(backbone, epochs=3), dataset).fit()[0]) == without_timings(first)
    [other] = Trainer(config(backbone, epochs=3, seed=1), dataset).fit()
    assert other["curve"][0]["loss"] != first["curve"][0]["loss"]
