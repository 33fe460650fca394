"""Aggregation on hand-made records with known answers (tests/fixtures/clear_records.py)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from fixtures.clear_records import TEST, VALID, handmade_records, write_experiment
from scipy import stats

from clear_tune.aggregate import (
    best_configs,
    build_tables,
    config_summary,
    load_experiment,
    mean_std,
    paired_test,
    trials_frame,
    write_tables,
)
from clear_tune.errors import DataError
from clear_tune.records import write_record

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return trials_frame(handmade_records())


@pytest.fixture(scope="module")
def tables(frame):
    return {t.name: t for t in build_tables(frame)}


def test_frame_has_one_row_per_trial_with_flat_config_and_metrics(frame):
    assert len(frame) == len(handmade_records()) == 24
    row = frame.set_index("trial_id").loc["clear-full-l0.9-k8-s1"]
    assert (row["backbone"], row["variant"], row["k"], row["strength"], row["seed"]) == ("clear", "full", 8, 0.9, 1)
    assert row["valid.recall@20"] == VALID[("clear", "full", 0.9, 8)][1]
    assert row["config.lr"] == 0.001 and row["dataset"] == "baby" and row["dataset_kind"] == "semi-synthetic"
    # replicates (seeds) share one config key; other configs do not
    keys = frame.groupby(["backbone", "arm", "strength", "k"])["config_key"].nunique()
    assert (keys == 1).all() and frame["config_key"].nunique() == len(keys)


def test_selection_is_by_valid_not_test(frame, tables):
    summary = config_summary(frame)
    clear = summary[summary["backbone"] == "clear"]
    best_test = clear.loc[clear["test.recall@20.mean"].idxmax()]
    assert (best_test["strength"], best_test["k"]) == (0.5, 4)  # the trap: best on test
    chosen = best_configs(summary).set_index("backbone").loc["clear"]
    assert (chosen["strength"], chosen["k"]) == (0.9, 8)  # what validation picks
    overall = tables["overall"].data.set_index("backbone")
    assert overall.loc["clear", "config_label"] == "clear fixed k=8 λ=0.9"
    assert overall.loc["clear", "test.recall@20.mean"] == pytest.approx(np.mean(TEST[("clear", "full", 0.9, 8)]))


def test_mean_and_sample_std_over_seeds(tables):
    valid = VALID[("clear", "full", 0.9, 8)]
    row = tables["overall"].data.set_index("backbone").loc["clear"]
    assert row["valid.recall@20.mean"] == pytest.approx(np.mean(valid))
    assert row["valid.recall@20.std"] == pytest.approx(np.std(valid, ddof=1))
    shown = tables["overall"].display.set_index("backbone").loc["clear", "valid R@20"]
    assert shown == f"{np.mean(valid):.4f} ± {np.std(valid, ddof=1):.4f}" == "0.1010 ± 0.0010"
    assert mean_std(0.5, math.nan, 1) == "0.5000 (1 seed)" and mean_std(math.nan, 0.1, 3) == "—"


def test_paired_t_test_p_value_equals_scipy(tables):
    full, off = TEST[("clear", "full", 0.9, 8)], TEST[("clear", "no_projection", 0.0, 8)]
    row = tables["ablation"].data.set_index(["backbone", "variant"]).loc[("clear", "no_projection")]
    assert row["n_pairs"] == 3
    assert row["p_ttest_rel"] == pytest.approx(stats.ttest_rel(off, full).pvalue, rel=1e-12)
    assert math.isnan(row["p_wilcoxon"])  # 3 pairs: too few for a Wilcoxon test, shown as n/a
    display = tables["ablation"].display.set_index(["backbone", "config"]).loc[("clear", "clear no projection")]
    assert display["seeds: p (Wilcoxon)"] == "n/a"
    assert display["seeds: p (paired t)"] == f"{stats.ttest_rel(off, full).pvalue:.3g}"
    assert display["users: Δ [95% CI], d_z"] == "no per-user data"  # these records have none
    assert "ttest_rel" in tables["ablation"].note and "wilcoxon" in tables["ablation"].note
    # dynamic: only seeds 0-1 completed (seed 2 failed), so only 2 pairs
    dynamic = tables["ablation"].data.set_index(["backbone", "variant"]).loc[("clear", "dynamic")]
    assert dynamic["n_pairs"] == 2 and dynamic["n_seeds"] == 2


def test_paired_test_with_enough_pairs_matches_both_scipy_tests():
    rng = np.random.default_rng(0)
    a = rng.normal(0.10, 0.01, size=8)
    b = a + rng.normal(0.004, 0.003, size=8)
    result = paired_test(a, b)
    assert result.n_pairs == 8
    assert result.t_pvalue == pytest.approx(stats.ttest_rel(b, a).pvalue, rel=1e-12)
    assert result.wilcoxon_pvalue == pytest.approx(stats.wilcoxon(b, a).pvalue, rel=1e-12)
    assert result.mean_difference == pytest.approx(np.mean(b - a))
    assert math.isnan(paired_test([0.1], [0.2]).t_pvalue)  # one pair: undefined, not 0


def test_missing_cells_are_missing_never_zero(tables):
    sens = tables["sensitivity"]
    cell = sens.data.set_index(["backbone", "lambda", "k"]).loc[("clear", 0.5, 8)]
    assert cell["n_completed"] == 0 and cell["n_pruned"] == 3
    assert math.isnan(cell["valid.recall@20.mean"]) and math.isnan(cell["test.recall@20.mean"])
    shown = sens.display.set_index(["backbone", "λ"])
    assert shown.loc[("clear", 0.5), "k=8"] == "pruned"
    assert shown.loc[("vbpr", 0.9), "k=4"] == "not run"
    assert shown.loc[("clear", 0.9), "k=8"] == "0.1010 / 0.0950"
    assert "0.0000" not in sens.display.to_string()


def test_generalization_improvement_percent(tables):
    data = tables["generalization"].data.set_index(["backbone", "model"])
    base, clear = np.mean(TEST[("vbpr", "no_projection", 0.0, 8)]), np.mean(TEST[("vbpr", "full", 0.9, 8)])
    assert data.loc[("vbpr", "improvement %"), "test.recall@20.mean"] == pytest.approx(100 * (clear - base) / base)
    assert data.loc[("vbpr", "vbpr + CLEAR"), "config_label"] == "vbpr fixed k=8 λ=0.9"


def test_efficiency_hours_and_pruning_savings(tables):
    data = tables["efficiency"].data.set_index(["dataset", "backbone"])
    clear = data.loc[("baby", "clear")]
    assert (clear["trials"], clear["completed"], clear["pruned"], clear["failed"]) == (18, 14, 3, 1)
    # 3 pruned trials ran 6 epochs; completed trials of their arm ran 30 -> 3 * 24 epochs saved at 2 s/epoch
    assert clear["epochs_saved_by_pruning"] == 72
    assert clear["hours_saved_by_pruning"] == pytest.approx(72 * 2.0 / 3600)
    expected_hours = (14 * 30 * 2.0 + 3 * 6 * 2.0 + 1 * 3 * 2.0) / 3600
    assert clear["trial_hours"] == pytest.approx(expected_hours) and clear["gpu_hours"] == pytest.approx(expected_hours)
    assert data.loc[("all", "all"), "trials"] == 24
    assert "median epochs_run" in tables["efficiency"].note


def test_write_tables_csv_markdown_latex(tmp_path, tables):
    paths = write_tables(list(tables.values()), tmp_path)
    assert {p.name for p in paths} == {f"{n}.{ext}" for n in tables for ext in ("csv", "md", "tex")}
    csv = pd.read_csv(tmp_path / "sensitivity.csv")
    missing = csv[(csv["backbone"] == "clear") & (csv["lambda"] == 0.5) & (csv["k"] == 8)]
    assert missing["valid.recall@20.mean"].isna().all()  # empty in the CSV, not 0
    md = (tmp_path / "ablation.md").read_text()
    assert md.startswith("### Ablation") and "| full (fixed k)" in md and "ttest_rel" in md
    tex = (tmp_path / "overall.tex").read_text()
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex and r"$\lambda$" in tex and "±" not in tex
    assert r"R@20" in tex and "\\toprule" in tex


def test_load_experiment_errors_and_missing_metadata(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_experiment(tmp_path / "nope")
    (tmp_path / "empty" / "records").mkdir(parents=True)
    with pytest.raises(DataError, match="no trial records"):
        load_experiment(tmp_path / "empty")
    bare = write_experiment(tmp_path / "bare", with_meta=False)
    experiment = load_experiment(bare)
    assert len(experiment.records) == 24 and experiment.expected_trials is None and experiment.missing_trials is None
    full = load_experiment(write_experiment(tmp_path / "meta", expected_trials=30))
    assert full.expected_trials == 30 and full.missing_trials == 6


def test_partial_experiment_with_only_pruned_trials(tmp_path):
    """A search interrupted before anything completed still aggregates, with every cell missing."""
    records = [r for r in handmade_records() if r["status"] != "completed"]
    tables = {t.name: t for t in build_tables(trials_frame(records))}
    assert tables["overall"].display["chosen config (by valid R@20)"].eq("no completed config").all()
    assert set(tables["overall"].display["valid R@20"]) <= {"pruned", "failed"}
    write_tables(list(tables.values()), tmp_path)  # and writes without crashing


def test_report_cli_one_line_errors(tmp_path):
    missing = subprocess.run(
        [sys.executable, "-m", "clear_tune.report", str(tmp_path / "nope")], capture_output=True, text=True, cwd=REPO
    )
    assert missing.returncode == 2 and missing.stdout == ""
    assert (
        missing.stderr.startswith("error: ") and missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
    )
    (tmp_path / "exp" / "records").mkdir(parents=True)
    (tmp_path / "exp" / "report.html").write_text("earlier report")  # must survive a failed rebuild
    empty = subprocess.run(
        [sys.executable, "-m", "clear_tune.report", str(tmp_path / "exp")], capture_output=True, text=True, cwd=REPO
    )
    assert empty.returncode == 2 and "no trial records" in empty.stderr and empty.stderr.count("\n") == 1
    assert (tmp_path / "exp" / "report.html").read_text() == "earlier report"
    write_record(tmp_path / "exp" / "records", {"trial_id": "broken", "status": "completed"})
    (tmp_path / "exp" / "records" / "bad.json").write_text("{not json")
    bad = subprocess.run(
        [sys.executable, "-m", "clear_tune.report", str(tmp_path / "exp")], capture_output=True, text=True, cwd=REPO
    )
    assert bad.returncode == 2 and "bad.json" in bad.stderr and bad.stderr.count("\n") == 1
