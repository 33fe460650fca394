"""Fused trials: a model array of members equals each member trained alone; members leave on their own.

Trainer level for every registered backbone (members differ in the projection, or in reg_weight for the
interaction-only backbones), then the harness: a fused grid gives the records of the unfused one, and
member-level pruners prune members.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from clear_tune.config import TrainConfig
from clear_tune.data import make_synthetic
from clear_tune.models import BACKBONES, BPR, Member
from clear_tune.records import read_records
from clear_tune.run import run_search
from clear_tune.train import EpochReport, Trainer

torch.set_num_threads(1)

OPTIONS: dict[str, dict] = {"freedom": {"knn_k": 5}, "clear": {"knn_k": 5}}
TIMING_FIELDS = {"sec_per_epoch", "sec_per_eval", "peak_mem_mb"}


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(n_users=150, n_items=80, d_v=24, d_t=16, pref_dim=8, seed=5)


def members(backbone: str, **overrides) -> list[TrainConfig]:
    """Three configs one model array can hold: three projections (one off), or three L2 weights."""
    base = {
        **dict(
            backbone=backbone,
            emb_dim=32,
            epochs=8,
            patience=3,
            batch_size=128,
            lr=0.01,
            device="cpu",
            topk=[5, 10],
            select_metric="recall@10",
            model_options=OPTIONS.get(backbone, {}),
        ),
        **overrides,
    }
    if BACKBONES[backbone].uses_features:
        projections = [
            {"k": 2, "strength": 0.9},
            {"mode": "off"},
            {"mode": "dynamic", "k": 6, "energy": 0.7, "refresh_every": 2},
        ]
        return [TrainConfig(projection=p, **base) for p in projections]
    return [TrainConfig(projection={"mode": "off"}, reg_weight=w, **base) for w in (1e-4, 1e-2, 0.0)]


def close(a: dict, b: dict, rel: float = 1e-4) -> bool:
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=rel, abs_tol=1e-9) for k in a)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_each_member_ends_where_it_ends_alone(dataset, backbone):
    configs = members(backbone)
    fused = Trainer(configs, dataset).fit()
    for config, member in zip(configs, fused):
        [alone] = Trainer(config, dataset).fit()
        assert member["best_epoch"] == alone["best_epoch"] and member["epochs_run"] == alone["epochs_run"]
        assert member["stop_reason"] == alone["stop_reason"]
        assert close(member["valid"], alone["valid"]) and close(member["test"], alone["test"])
        assert len(member["spectrum"]) == len(alone["spectrum"])


def test_members_leave_the_array_and_the_others_go_on(dataset):
    with pytest.raises(ValueError, match="differ only in projection and reg_weight"):
        Trainer([members("clear")[0], members("clear", patience=1)[1]], dataset)  # patience is shared
    configs = members("clear", patience=2, epochs=12)
    sizes = []
    trainer = Trainer(configs, dataset)
    results = trainer.fit(lambda t, r: sizes.append(t.model.n_members))
    stops = sorted(r["epochs_run"] for r in results)
    assert stops[0] < stops[-1], stops  # one member early-stopped before another
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < 3  # the array shrank as they left
    assert [r["stop_reason"] for r in results if r["epochs_run"] < 12] == ["early_stop"] * sum(s < 12 for s in stops)
    for config, member in zip(configs, results):  # and each left exactly where it leaves alone
        assert member["epochs_run"] == Trainer(config, dataset).fit()[0]["epochs_run"]


class NaNMember(BPR):
    """BPR whose second member's loss turns NaN from epoch 2 on (a diverging member)."""

    def start_epoch(self, epoch: int) -> None:
        self.poisoned = epoch >= 2

    def loss(self, users, pos, neg):
        loss = super().loss(users, pos, neg)
        if self.poisoned and self.n_members == 3:
            loss = loss * torch.tensor([1.0, float("nan"), 1.0])
        return loss


def test_a_failing_member_fails_alone(dataset):
    configs = members("bpr")

    def factory(cfgs, ctx):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfgs[0].seed)  # as build_model seeds every backbone's initialisation
            return NaNMember(ctx, members=[Member(c.projection, c.reg_weight) for c in cfgs], emb_dim=32)

    results = Trainer(configs, dataset, model_factory=factory).fit()
    assert results[1]["stop_reason"] == "failed" and results[1]["epochs_run"] == 1
    for config, member in zip([configs[0], configs[2]], [results[0], results[2]]):
        [alone] = Trainer(config, dataset).fit()
        assert member["best_epoch"] == alone["best_epoch"] and close(member["valid"], alone["valid"])


def test_pruned_members_leave_and_a_restored_group_finishes_like_an_uninterrupted_one(dataset, tmp_path):
    configs = members("vbpr", epochs=6, patience=6)
    path = tmp_path / "group.ckpt"

    def prune_then_checkpoint(trainer: Trainer, report: EpochReport):
        if report.epoch == 3:
            trainer.save_checkpoint(path)  # after epoch 3, with member 1 already pruned at epoch 2
        return {1} if report.epoch == 2 else None

    uninterrupted = Trainer(configs, dataset).fit(prune_then_checkpoint)
    assert uninterrupted[1]["stop_reason"] == "pruned" and uninterrupted[1]["epochs_run"] == 2
    resumed = Trainer(configs, dataset)
    resumed.load_checkpoint(path)
    assert resumed.live == [0, 2] and resumed.model.n_members == 2
    again = resumed.fit()
    strip = lambda r: {k: v for k, v in r.items() if k not in TIMING_FIELDS}  # noqa: E731
    assert [strip(r) for r in again] == [strip(r) for r in uninterrupted]


TINY = "data: {source: synthetic, options: {n_users: 150, n_items: 80, d_v: 24, d_t: 16, pref_dim: 8, seed: 0}}"
GRID = f"""
experiment: {{name}}
{TINY}
backbones: [clear, vbpr]
trainer: {{epochs: 6, patience: 6, emb_dim: 32, batch_size: 256}}
arms:
  full: {{k: [2, 4], strength: [0.5, 0.9]}}
  no_projection: {{mode: "off"}}
max_concurrent: 2
checkpoint_interval_s: 0
"""


def _run(tmp_path, name: str, extra: str = "", *, replace: dict[str, str] | None = None) -> list[dict]:
    text = GRID.replace("{name}", name)
    for old, new in (replace or {}).items():
        text = text.replace(old, new)
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(text + extra)
    outcome = run_search(spec, results=str(tmp_path / "results"), verbose=0, build_report=False)
    assert outcome.complete
    return read_records(tmp_path / "results" / name / "records")


def test_a_fused_grid_records_what_the_unfused_grid_records(ray_session, tmp_path):
    fused = {r["trial_id"]: r for r in _run(tmp_path, "fused")}
    alone = {r["trial_id"]: r for r in _run(tmp_path, "alone", "fusion: {enabled: false}\n")}
    assert fused.keys() == alone.keys() and len(fused) == 10
    for key, record in fused.items():
        other = alone[key]
        assert record["status"] == other["status"] == "completed"
        assert record["best_epoch"] == other["best_epoch"] and record["epochs_run"] == other["epochs_run"]
        assert close(record["valid"], other["valid"]) and close(record["test"], other["test"])
        assert record["fused"]["members"] == 5 and other["fused"] is None
        assert 0 < record["fused"]["share_s"]
    folders = [p.name for p in (tmp_path / "results" / "fused").iterdir() if p.name.startswith("group-")]
    assert len(folders) == 2  # one Ray trial per backbone: five members each


@pytest.mark.parametrize(
    "scheduler",
    ["{kind: asha, grace_period: 1, reduction_factor: 2}", "{kind: median, grace_period: 1, n_startup_trials: 2}"],
)
def test_member_level_schedulers_prune_members(ray_session, tmp_path, scheduler):
    name = "asha" if "asha" in scheduler else "median"
    # Optuna's pruners compare with COMPLETED trials, so the median pruner can only judge a second group:
    # one backbone, two seeds (two arrays), one at a time
    one_at_a_time = {
        "backbones: [clear, vbpr]": "backbones: [clear]\nseeds: [0, 1]",
        "max_concurrent: 2": "max_concurrent: 1",
    }
    records = _run(
        tmp_path,
        name,
        f"scheduler: {scheduler}\nsearch: {{kind: grid, order: listed}}\n",
        replace=one_at_a_time if name == "median" else None,
    )
    pruned = [r for r in records if r["status"] == "pruned"]
    assert pruned and len(pruned) < len(records), [(r["trial_id"], r["status"]) for r in records]
    groups = {r["fused"]["group"] for r in pruned}
    assert any(r["status"] == "completed" for r in records if r["fused"]["group"] in groups)  # pruned apart
    for record in pruned:
        assert record["fused"]["members"] == 5
        assert record["reason"].startswith("stopped by the ") and record["reason"].endswith(
            f"epoch {record['epochs_run']}"
        )
        assert [p["epoch"] for p in record["curve"]][-1] == record["epochs_run"] < 6
    if name == "median":  # one Optuna trial per member in the bridge's study
        import optuna

        study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'results' / name / 'pruner.db'}")
        assert sorted(t.user_attrs["ray_trial_id"] for t in study.trials) == sorted(r["trial_id"] for r in records)
        assert sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials) == len(pruned)
    info = json.loads((tmp_path / "results" / name / "experiment.json").read_text())
    assert info["expected_trials"] == len(records) == 10


def test_auto_members_on_a_cpu_follow_the_raw_feature_work(tmp_path):
    from clear_tune.spec import load_spec
    from clear_tune.spec._groups import CPU_MEMBERS, CPU_MEMBERS_LARGE

    path = tmp_path / "auto.yaml"
    path.write_text("experiment: auto\nbackbones: [clear]\nprojection: {k: [2, 4]}\n")
    spec = load_spec(path)
    from types import SimpleNamespace

    def described(n_items, d_v, d_t):  # what sizing reads of a dataset: its size and feature widths
        return SimpleNamespace(
            n_users=100,
            n_items=n_items,
            image_feat=SimpleNamespace(shape=(n_items, d_v)),
            text_feat=SimpleNamespace(shape=(n_items, d_t)),
        )

    small, baby_like = described(300, 64, 32), described(7050, 4096, 384)
    assert spec.max_members() == CPU_MEMBERS  # no data yet (dry run): the small-data size
    assert spec.max_members({"small": small}) == CPU_MEMBERS
    assert spec.max_members({"baby": baby_like}) == CPU_MEMBERS_LARGE < CPU_MEMBERS
