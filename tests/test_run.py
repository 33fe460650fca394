"""End-to-end searches on the real local Ray (session fixture): records, failures, warnings, CLI guards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clear_tune.errors import SpecError
from clear_tune.records import RECORD_FIELDS as RECORD_KEYS
from clear_tune.records import read_records
from clear_tune.run import run_search

REPO = Path(__file__).resolve().parents[1]
TINY_DATA = "data: {source: synthetic, options: {n_users: 120, n_items: 80, d_v: 16, d_t: 16, seed: 0}}"


def _spec(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(body)
    return path


def test_smoke_search_writes_complete_records(ray_session, tmp_path, capsys):
    spec = _spec(
        tmp_path,
        f"""
experiment: e2e
{TINY_DATA}
backbones: [clear]
trainer: {{epochs: 3, patience: 2, emb_dim: 8, batch_size: 512}}
arms:
  full: {{k: [2, 4], strength: 0.9}}
  no_projection: {{mode: "off"}}
resources: {{cpus: 1, gpus: 0.5}}
max_concurrent: 2
""",
    )
    outcome = run_search(spec, results=str(tmp_path / "results"), verbose=0, build_report=False)
    out = capsys.readouterr()
    # a GPU fraction on a GPU-less cluster: one warning line, then the search runs on CPU
    warnings = [ln for ln in out.err.splitlines() if ln.startswith("warning:")]
    assert warnings == [f"warning: {spec}: resources.gpus=0.5 but the Ray cluster has no GPU; running on CPU"]

    exp = tmp_path / "results" / "e2e"
    records = read_records(exp / "records")
    assert outcome.complete and len(records) == 3
    assert {r["status"] for r in records} == {"completed"}
    assert {r["arm"] for r in records} == {"full", "no_projection"}
    for rec in records:
        assert set(RECORD_KEYS) <= set(rec)
        assert rec["experiment"] == "e2e" and rec["device"] == "cpu" and rec["node_id"]
        assert rec["epochs_run"] == 3 and len(rec["curve"]) == 3 and rec["reason"] in ("max_epochs", "early_stop")
        assert "recall@20" in rec["valid"] and "recall@20" in rec["test"]
        assert rec["dataset"]["users"] == 120 and rec["wall_end"] >= rec["wall_start"]
        assert rec["config"]["projection"]["mode"] in ("fixed", "off")
    assert any(r["spectrum"] for r in records if r["arm"] == "full")
    info = json.loads((exp / "experiment.json").read_text())
    assert info["expected_trials"] == 3 and info["search"] == "grid" and info["ray"]["nodes"] == 1
    assert (exp / "spec.yaml").read_text() == spec.read_text()
    # one summary line per finished trial, and the best config by validation at the end
    assert sum(ln.startswith("[completed] ") for ln in out.err.splitlines()) == 3
    assert "best by validation (mean over seeds [0] of valid recall@20)" in out.out

    # the same experiment again without --resume would mix results: refused, nothing touched
    before = {p.name: p.stat().st_mtime_ns for p in (exp / "records").iterdir()}
    with pytest.raises(SpecError, match="already holds experiment 'e2e': add --resume"):
        run_search(spec, results=str(tmp_path / "results"), verbose=0)
    assert {p.name: p.stat().st_mtime_ns for p in (exp / "records").iterdir()} == before


def test_failing_trials_are_recorded_and_the_search_goes_on(ray_session, tmp_path):
    # lightgcn accepts n_layers; bpr does not: its trials fail at run time with the registry's one line.
    spec = _spec(
        tmp_path,
        f"""
experiment: failing
{TINY_DATA}
backbones: [lightgcn, bpr]
seeds: [0, 1]
trainer: {{epochs: 2, emb_dim: 8, batch_size: 512, model_options: {{n_layers: 1}}}}
projection: {{mode: "off"}}
max_concurrent: 2
""",
    )
    outcome = run_search(spec, results=str(tmp_path / "results"), verbose=0, build_report=False)
    by_backbone: dict[str, list[dict]] = {}
    for rec in outcome.records:
        by_backbone.setdefault(rec["config"]["backbone"], []).append(rec)
    assert [r["status"] for r in by_backbone["lightgcn"]] == ["completed", "completed"]
    assert [r["status"] for r in by_backbone["bpr"]] == ["failed", "failed"]
    for rec in by_backbone["bpr"]:
        assert rec["reason"].startswith("backbone 'bpr' has no model option 'n_layers'")
        assert "\n" not in rec["reason"] and rec["epochs_run"] == 0
        assert set(RECORD_KEYS) <= set(rec)


def test_nan_loss_is_a_failed_record_not_a_crash(ray_session, tmp_path):
    spec = _spec(
        tmp_path,
        f"""
experiment: nan
{TINY_DATA}
backbones: [lightgcn]
trainer: {{epochs: 3, emb_dim: 8, batch_size: 512, lr: 1.0e+20}}
projection: {{mode: "off"}}
""",
    )
    outcome = run_search(spec, results=str(tmp_path / "results"), verbose=0, build_report=False)
    (rec,) = outcome.records
    assert rec["status"] == "failed" and "loss became nan" in rec["reason"]


def test_resume_without_an_experiment_is_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "clear_tune.run",
            "search_spaces/smoke.yaml",
            "--resume",
            "--results",
            str(tmp_path / "nothing"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        f"error: search_spaces/smoke.yaml: nothing to resume in {tmp_path / 'nothing' / 'smoke'}: "
        "run without --resume to start this experiment\n"
    )


def test_cli_help_lists_every_option():
    proc = subprocess.run(
        [sys.executable, "-m", "clear_tune.cli", "run", "--help"], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert proc.returncode == 0
    for option in ("--address", "--dry-run", "--resume", "--retry-failed", "--results", "--no-report", "--verbose"):
        assert option in proc.stdout


def test_optuna_search_persists_its_study(ray_session, tmp_path):
    import optuna

    spec = _spec(
        tmp_path,
        f"""
experiment: tpe
{TINY_DATA}
backbones: [clear, vbpr]
trainer: {{epochs: 4, patience: 4, emb_dim: 8, batch_size: 512}}
projection: {{mode: [fixed, dynamic], k: {{low: 2, high: 6}}, strength: {{low: 0.3, high: 0.9}}, energy: [0.5, 0.9]}}
search: {{kind: optuna, n_trials: 4, sampler: tpe, seed: 3}}
scheduler: {{kind: median, grace_period: 2, n_startup_trials: 1}}
max_concurrent: 2
checkpoint_every: 3
""",
    )
    outcome = run_search(spec, results=str(tmp_path / "results"), verbose=0, build_report=False)
    assert outcome.complete and len(outcome.records) == 4
    assert len({r["trial_id"] for r in outcome.records}) == 4
    study = optuna.load_study(study_name="tpe", storage=f"sqlite:///{tmp_path / 'results' / 'tpe' / 'optuna.db'}")
    assert len(study.trials) == 4
    states = sorted(t.state.name for t in study.trials)
    statuses = sorted({"completed": "COMPLETE", "pruned": "PRUNED"}[r["status"]] for r in outcome.records)
    assert states == statuses
    for rec in outcome.records:  # checkpoints every 3rd evaluation; the curve is still complete and exact
        assert [p["epoch"] for p in rec["curve"]] == list(range(1, rec["epochs_run"] + 1))
        assert rec["valid"]["recall@20"] == max(p["valid"]["recall@20"] for p in rec["curve"])
    for trial in study.trials:
        assert 2 <= trial.params["k"] <= 6 and trial.params["backbone"] in ("clear", "vbpr")
        assert ("energy" in trial.params) == (trial.params["mode"] == "dynamic")


def test_every_place_selects_on_the_recorded_select_metric(ray_session, tmp_path, capsys):
    """A spec that selects on ndcg@20: the printed best, the tables, the report header and experiment.json agree."""
    import pandas as pd

    from clear_tune.aggregate import best_by_validation, trials_frame

    spec = _spec(
        tmp_path,
        f"""
experiment: ndcg
{TINY_DATA}
backbones: [clear]
seeds: [0, 1]
trainer: {{epochs: 3, patience: 3, emb_dim: 8, batch_size: 512, select_metric: ndcg@20}}
arms:
  full: {{k: [2, 4], strength: [0.3, 0.9]}}
  no_projection: {{mode: "off"}}
max_concurrent: 2
""",
    )
    outcome = run_search(spec, results=str(tmp_path / "results"), verbose=0)
    out = capsys.readouterr().out
    exp = tmp_path / "results" / "ndcg"
    records = read_records(exp / "records")
    assert json.loads((exp / "experiment.json").read_text())["select_metric"] == "ndcg@20"

    # the choice the harness prints is the best mean valid NDCG@20 ...
    frame = trials_frame(records)
    means = frame[frame["status"] == "completed"].groupby("config_label")["valid.ndcg@20"].mean()
    by_recall = frame[frame["status"] == "completed"].groupby("config_label")["valid.recall@20"].mean()
    chosen = means.idxmax()
    assert outcome.best == best_by_validation(records, "ndcg@20")
    assert f"of valid ndcg@20): {means.max():.4f}" in out
    # ... and the tables choose the same config, saying which metric chose it
    overall = pd.read_csv(exp / "tables" / "overall.csv")
    assert list(overall["config_label"]) == [chosen]
    overall_md = (exp / "tables" / "overall.md").read_text()
    assert "chosen config (by valid N@20)" in overall_md and chosen in overall_md
    assert "valid N@20" in (exp / "tables" / "ablation.md").read_text()
    html = (exp / "report.html").read_text()
    assert "best config by mean valid N@20 over seeds (select metric ndcg@20)" in html
    assert by_recall.idxmax() != chosen  # on this data the two metrics disagree, so the test can tell them apart
