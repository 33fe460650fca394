"""The paper's experiments from one spec: paper.yaml's dry run (trials per table, CPU/GPU-hours) and its scaled-down
twin paper-smoke.yaml end to end through Ray, down to the Table 2 layout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from clear_tune.records import read_records
from clear_tune.run import run_search

REPO = Path(__file__).resolve().parents[1]


def test_paper_spec_dry_run_counts_trials_per_table_and_estimates_hours(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "clear_tune.run", "search_spaces/paper.yaml", "--dry-run", "--results", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "trials per arm: table2_baselines" in text and "table2_clear 180" in text  # 20 points x 3 seeds x 3 data
    assert "fig3_dynamic 27" in text and "cost estimate" in text and "GPU (H100-class)" in text
    assert "not found" in out.stderr  # the datasets are not downloaded here: said, not an error in a dry run
    assert not (tmp_path / "paper").exists()


def test_paper_smoke_runs_every_table_end_to_end(ray_session, tmp_path):
    outcome = run_search(REPO / "search_spaces" / "paper-smoke.yaml", results=str(tmp_path), verbose=0)
    assert outcome.complete
    records = read_records(tmp_path / "paper-smoke" / "records")
    assert {r["arm"] for r in records} == {
        "table2_baselines",
        "table2_clear",
        "table3_plus_clear",
        "fig3_no_projection",
        "fig3_dynamic",
    }
    assert all(
        (tmp_path / "paper-smoke" / "records" / f"{r['trial_id']}.users.npz").is_file()
        for r in records
        if r["status"] == "completed"
    )
    tables = tmp_path / "paper-smoke" / "tables"
    paper = (tables / "paper.md").read_text()
    assert "| model" in paper and "Improv." in paper and "**" in paper and "<u>" in paper
    for name in ("overall", "generalization", "ablation", "sensitivity", "efficiency", "beyond_accuracy"):
        assert (tables / f"{name}.md").is_file()
    latex = (tables / "paper.tex").read_text()
    assert "\\textbf{" in latex and "\\underline{" in latex
    assert (tmp_path / "paper-smoke" / "report.html").is_file()
