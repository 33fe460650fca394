"""The trainer on tiny synthetic data: protocol, determinism, exact resume, errors."""

from __future__ import annotations

import pytest
import torch

from clear_tune.config import TrainConfig
from clear_tune.data import make_synthetic
from clear_tune.errors import TrainingError
from clear_tune.models import BPR, Member
from clear_tune.train import EpochReport, Trainer, train

RECORD_FIELDS = {
    "config",
    "dataset",
    "best_epoch",
    "epochs_run",
    "valid",
    "test",
    "curve",
    "spectrum",
    "sec_per_epoch",
    "sec_per_eval",
    "peak_mem_mb",
    "device",
    "stop_reason",
}
TIMING_FIELDS = {"sec_per_epoch", "sec_per_eval", "peak_mem_mb"}


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(n_users=120, n_items=80, d_v=16, d_t=16, pref_dim=8, seed=0)


def config(**overrides) -> TrainConfig:
    base = dict(
        backbone="bpr",
        projection={"mode": "off"},
        emb_dim=8,
        epochs=4,
        batch_size=128,
        lr=0.01,
        device="cpu",
        topk=[5, 10],
        select_metric="recall@10",
    )
    return TrainConfig(**{**base, **overrides})


def vbpr_config(*, backbone: str = "vbpr", **overrides) -> TrainConfig:
    projection = {"mode": "fixed", "k": 2, "strength": 0.9, "refresh_every": 2}
    return config(backbone=backbone, projection=projection, **overrides)


def without_timings(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in TIMING_FIELDS}


def test_result_has_the_record_fields(dataset):
    result = train(config(epochs=3), dataset)[0]
    assert set(result) == RECORD_FIELDS
    assert result["epochs_run"] == 3 and result["stop_reason"] == "max_epochs"
    assert result["device"] == "cpu" and result["peak_mem_mb"] > 1 and result["sec_per_epoch"] > 0
    ranking = {"recall@5", "recall@10", "ndcg@5", "ndcg@10", "precision@5", "precision@10"}
    beyond = {f"{m}@{k}" for m in ("coverage", "gini", "arp", "aplt", "novelty") for k in (5, 10)}
    assert set(result["valid"]) == set(result["test"]) == ranking | beyond
    assert set(result["curve"][0]["valid"]) == ranking  # the curve keeps the ranking metrics
    assert [p["epoch"] for p in result["curve"]] == [1, 2, 3]
    assert result["dataset"]["users"] == 120 and result["dataset"]["provenance"]["kind"] == "synthetic"
    assert result["config"]["backbone"] == "bpr"
    assert result["curve"][-1]["loss"] < result["curve"][0]["loss"]  # it learns


def test_two_runs_with_one_seed_are_identical_and_seeds_differ(dataset):
    first, second = train(vbpr_config(), dataset)[0], train(vbpr_config(), dataset)[0]
    assert without_timings(first) == without_timings(second)
    other = train(vbpr_config(seed=1), dataset)[0]
    assert other["curve"][0]["loss"] != first["curve"][0]["loss"]


def test_test_metrics_are_those_at_the_best_valid_epoch(dataset):
    test_by_epoch = {}

    def record_test(trainer: Trainer, report: EpochReport) -> None:
        test_by_epoch[report.epoch] = trainer.evaluate()[1]

    [result] = Trainer(vbpr_config(epochs=8, patience=5, lr=0.05), dataset).fit(record_test)
    valids = [p["valid"]["recall@10"] for p in result["curve"]]
    best = valids.index(max(valids)) + 1  # first epoch reaching the best valid score
    assert result["best_epoch"] == best < result["epochs_run"]  # the best is not simply the last
    assert test_by_epoch[best] != test_by_epoch[result["epochs_run"]]
    curve_valid = result["curve"][best - 1]["valid"]
    assert {k: result["valid"][k] for k in curve_valid} == curve_valid
    assert result["test"] == test_by_epoch[best]


def test_patience_counts_epochs_whatever_eval_every_is_and_min_epochs_holds_it_back(dataset):
    # the ranking never changes (lr ~ 0): best at the first evaluation (epoch 2), 4 epochs of patience -> epoch 6
    result = train(config(epochs=50, patience=4, eval_every=2, lr=1e-12), dataset)[0]
    assert result["stop_reason"] == "early_stop" and result["best_epoch"] == 2 and result["epochs_run"] == 6
    held = train(config(epochs=50, patience=4, eval_every=2, min_epochs=12, lr=1e-12), dataset)[0]
    assert held["stop_reason"] == "early_stop" and held["epochs_run"] == 12


def test_early_stopping_after_patience_evaluations_without_improvement(dataset):
    # a learning rate this small leaves the ranking, hence valid recall, unchanged after epoch 1
    result = train(config(epochs=50, patience=3, lr=1e-12), dataset)[0]
    assert result["stop_reason"] == "early_stop"
    assert result["best_epoch"] == 1 and result["epochs_run"] == 4


def test_eval_every_evaluates_on_schedule_and_at_the_last_epoch(dataset):
    reports = []
    [result] = Trainer(config(epochs=5, eval_every=2), dataset).fit(lambda t, r: reports.append(r))
    assert [p["epoch"] for p in result["curve"]] == [2, 4, 5]
    assert [r.valid is None for r in reports] == [True, False, True, False, False]
    assert reports[0].sec_eval is None and reports[1].sec_eval > 0


def test_callback_returning_true_stops_the_run(dataset):
    [result] = Trainer(config(epochs=10), dataset).fit(lambda t, r: r.epoch == 2)
    assert result["stop_reason"] == "stopped" and result["epochs_run"] == 2


@pytest.mark.parametrize("backbone", ["vbpr", "clear"])  # clear: its edge-dropout generator too
def test_restored_run_finishes_exactly_like_an_uninterrupted_one(dataset, tmp_path, backbone):
    # refresh_every=2: the checkpoint is taken after epoch 3, so epoch 4's projection refresh and the
    # rest run after the restore; patience 2 lets early stopping's counter cross the restore too
    cfg = vbpr_config(backbone=backbone, epochs=8, patience=2, lr=0.05)
    path = tmp_path / "run.ckpt"

    def checkpoint_at_3(trainer: Trainer, report: EpochReport) -> None:
        if report.epoch == 3:
            trainer.save_checkpoint(path)

    [uninterrupted] = Trainer(cfg, dataset).fit(checkpoint_at_3)
    torch.manual_seed(12345)  # a resumed process starts with different global RNG state
    resumed_trainer = Trainer(cfg, dataset)
    resumed_trainer.load_checkpoint(path)
    assert resumed_trainer.epoch == 3 and len(resumed_trainer.model.spectrum_history()) == 2  # epochs 1, 2
    [resumed] = resumed_trainer.fit()
    assert without_timings(resumed) == without_timings(uninterrupted)
    assert [s["epoch"] for s in resumed["spectrum"]] == [e for e in (1, 2, 4, 6, 8) if e <= resumed["epochs_run"]]
    # the restored state is what makes it match: skipping to epoch 3 without it diverges
    skipped = Trainer(cfg, dataset)
    skipped.epoch = 3
    assert skipped.fit()[0]["curve"] != uninterrupted["curve"][3:]


def test_resume_can_extend_epochs_but_not_change_the_model(dataset, tmp_path):
    path = tmp_path / "run.ckpt"
    short = Trainer(config(epochs=2), dataset)
    short.fit()
    short.save_checkpoint(path)
    longer = Trainer(config(epochs=4), dataset)
    longer.load_checkpoint(path)
    assert longer.fit()[0]["epochs_run"] == 4
    assert without_timings(longer.result()) == without_timings(train(config(epochs=4), dataset)[0])
    with pytest.raises(TrainingError, match="lr differ"):
        Trainer(config(lr=0.5), dataset).load_checkpoint(path)


def test_bad_checkpoint_is_one_line_error(dataset, tmp_path):
    trainer = Trainer(config(), dataset)
    with pytest.raises(TrainingError, match="does not exist"):
        trainer.load_checkpoint(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="cannot be read") as info:
        trainer.load_checkpoint(tmp_path / "junk.ckpt")
    assert "\n" not in str(info.value)


class NaNAfterEpoch1(BPR):
    """BPR whose loss turns NaN from epoch 2 on (a diverging run)."""

    def start_epoch(self, epoch: int) -> None:
        self.poisoned = epoch >= 2

    def loss(self, users, pos, neg):
        loss = super().loss(users, pos, neg)
        return loss * float("nan") if self.poisoned else loss


def test_non_finite_loss_raises_one_line_training_error(dataset):
    def factory(configs, ctx):
        return NaNAfterEpoch1(ctx, members=[Member(c.projection, 1e-4) for c in configs], emb_dim=configs[0].emb_dim)

    trainer = Trainer(config(epochs=3), dataset, model_factory=factory)
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 2, batch 1/\d+") as info:
        trainer.fit()
    assert "\n" not in str(info.value) and trainer.epoch == 1


def test_default_backbone_registry_is_used(dataset):
    assert type(Trainer(config(backbone="lightgcn"), dataset).model).__name__ == "LightGCN"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_training_error(dataset):
    with pytest.raises(TrainingError, match="no CUDA GPU"):
        Trainer(config(device="cuda"), dataset)


def test_amp_on_cpu_trains_clear_with_features_cast_once(dataset):
    cfg = vbpr_config(backbone="clear", epochs=6, amp=True)
    trainer = Trainer(cfg, dataset)
    [result] = trainer.fit()
    assert all(torch.isfinite(torch.tensor(p["loss"])) for p in result["curve"])
    assert result["curve"][-1]["loss"] < result["curve"][0]["loss"]
    full = train(vbpr_config(backbone="clear", epochs=6), dataset)[0]
    assert result["valid"]["recall@10"] == pytest.approx(full["valid"]["recall@10"], abs=0.1)

    model = trainer.model
    assert model.raw_features()[0] is model.image_feat  # fp32 outside autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        image, text = model.raw_features()
        assert image.dtype == text.dtype == torch.bfloat16
        assert model.raw_features()[0] is image  # cached: not cast again per batch
        V, _ = model.encode()
        assert V.dtype == torch.bfloat16
    assert torch.equal(image.float(), model.image_feat.to(torch.bfloat16).float())
