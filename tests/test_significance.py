"""Tests over users: the statistics against scipy and by hand, corrections, per-user files, and the tables.

The hand-made experiment (tests/fixtures/clear_records.py) gets per-user test values written beside its records:
on ``clear`` the full model beats λ = 0 for every user by a small margin (significant over 400 users although three
seeds are not), on ``vbpr`` the two differ only by noise. The tables must say which is which, corrected.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
from fixtures.clear_records import handmade_records
from scipy import stats

from clear_tune.aggregate import build_tables, trials_frame
from clear_tune.aggregate._significance import compare_users, correct
from clear_tune.records import read_user_metrics, user_metrics_bytes, write_record, write_user_metrics

N_USERS = 400


def test_compare_users_matches_scipy_and_a_hand_bootstrap():
    rng = np.random.default_rng(1)
    a = rng.random(300)
    b = a + 0.02 + 0.05 * rng.standard_normal(300)
    result = compare_users(a, b, resamples=400, seed=3)
    assert result.n_users == 300 and result.relative_gain == pytest.approx(b.mean() / a.mean() - 1)
    assert result.t_pvalue == pytest.approx(stats.ttest_rel(b, a).pvalue, rel=1e-12)
    assert result.wilcoxon_pvalue == pytest.approx(stats.wilcoxon(b, a).pvalue, rel=1e-12)
    assert result.effect_size == pytest.approx((b - a).mean() / (b - a).std(ddof=1))
    assert result.ci_low < result.relative_gain < result.ci_high
    again = compare_users(a, b, resamples=400, seed=3)
    assert (again.ci_low, again.ci_high) == (result.ci_low, result.ci_high)  # seeded
    same = compare_users(a, a)
    assert same.t_pvalue == 1.0 and same.relative_gain == 0.0


def test_corrections_by_hand():
    p = [0.01, 0.04, 0.03, math.nan]
    assert correct(p, method="bonferroni")[:3] == pytest.approx([0.03, 0.12, 0.09])
    assert correct(p, method="holm")[:3] == pytest.approx([0.03, 0.06, 0.06])  # 3·0.01, max(2·0.03, .), 1·0.04 -> 0.06
    assert correct(p, method="fdr_bh")[:3] == pytest.approx([0.03, 0.04, 0.04])
    assert math.isnan(correct(p)[3])
    with pytest.raises(ValueError, match="unknown correction"):
        correct(p, method="sidak")


def test_per_user_files_round_trip_compactly(tmp_path):
    ids = np.arange(19445, dtype=np.int32)
    rng = np.random.default_rng(0)
    per_user = {
        split: {
            "users": ids,
            **{m: rng.random(ids.size).astype(np.float32) for m in ("recall@10", "recall@20", "ndcg@10", "ndcg@20")},
        }
        for split in ("valid", "test")
    }
    assert write_user_metrics(tmp_path, "t1", per_user) and not write_user_metrics(tmp_path, "t1", per_user)
    back = read_user_metrics(tmp_path, "t1")
    assert back["test"]["users"].dtype == np.int32 and back["test"]["recall@20"].dtype == np.float16
    assert np.allclose(back["test"]["recall@20"], per_user["test"]["recall@20"], atol=5e-4)
    assert read_user_metrics(tmp_path, "t2") is None
    assert len(user_metrics_bytes(per_user)) < 19445 * 8 * 2 + 2 * 19445 * 4  # float16 values, int32 ids, compressed


def _experiment_with_users(folder) -> None:
    rng = np.random.default_rng(7)
    base = rng.random(N_USERS) * 0.2  # each user's λ = 0 level
    for record in handmade_records():
        write_record(folder, record)
        if record["status"] != "completed":
            continue
        backbone, arm = record["config"]["backbone"], record["arm"]
        # zlib.crc32, not hash(): str hashes change with each process's PYTHONHASHSEED, and so would the draw
        noise = 0.01 * np.random.default_rng(zlib.crc32(record["trial_id"].encode())).standard_normal(N_USERS)
        gain = 0.02 if (backbone == "clear" and arm != "no_projection") else 0.0
        values = np.clip(base + gain + noise, 0, 1).astype(np.float32)
        write_user_metrics(
            folder,
            record["trial_id"],
            {"test": {"users": np.arange(N_USERS), "recall@20": values, "ndcg@20": values / 2}},
        )


def test_tables_carry_corrected_tests_over_users(tmp_path):
    _experiment_with_users(tmp_path)
    frame = trials_frame(handmade_records())
    tables = {t.name: t for t in build_tables(frame, per_user=lambda key: read_user_metrics(tmp_path, key))}

    ablation = tables["ablation"].data.set_index(["backbone", "variant"])
    off = ablation.loc[("clear", "no_projection")]
    assert off["users_n"] == N_USERS and off["users_gain_pct"] < 0  # λ = 0 is worse than the full model
    assert off["p_users_t"] < 1e-6 and off["p_users_t_corrected"] <= min(1.0, 3 * off["p_users_t"])  # Holm: ≤ m·p
    family = ablation[ablation.index.get_level_values("variant") != "full"]
    assert list(family["p_users_t_corrected"]) == pytest.approx(list(correct(family["p_users_t"], method="holm")))
    assert 0 < off["p_ttest_rel"] < 1 and off["n_pairs"] == 3  # the seed-level test stays beside it

    generalization = tables["generalization"]
    improv = generalization.display[generalization.display["model"] == "Improv."].set_index("dataset")
    rows = generalization.data[generalization.data["model"] == "improvement %"].set_index("backbone")
    assert rows.loc["clear", "p_users_t_corrected"] < 0.05 and rows.loc["vbpr", "p_users_t_corrected"] > 0.05
    starred = [str(v).endswith("*") for v in improv["R@20"]]
    assert starred.count(True) == 1  # clear's gain is significant over users, vbpr's noise is not
    assert "Holm" in generalization.note and "users" in tables["ablation"].note

    overall = tables["overall"].display
    assert (overall["backbone"] == "Improv.").sum() == 1  # clear over its best baseline (vbpr), once per dataset


def test_without_per_user_files_the_tables_say_so():
    tables = {t.name: t for t in build_tables(trials_frame(handmade_records()))}
    display = tables["ablation"].display
    assert set(display.loc[display["variant"] != "full (fixed k)", "users: Δ [95% CI], d_z"]) == {"no per-user data"}
