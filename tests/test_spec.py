"""Search-spec validation (one line, exit 2, nothing written), grid expansion with dedup, the Optuna space."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from clear_tune.errors import SpecError
from clear_tune.spec import OptunaSpace, load_spec, trial_key

REPO = Path(__file__).resolve().parents[1]
SPECS = Path(__file__).resolve().parent / "specs"

# file -> the exact message after "<path>: "
BAD_SPECS = {
    "unknown_key.yaml": "trainer.epoch: unknown key 'epoch'; did you mean 'epochs'?",
    "unknown_top_key.yaml": "backbone: unknown key 'backbone'; did you mean 'backbones'?",
    "unknown_arm_key.yaml": "arms.full.strenght: unknown key 'strenght'; did you mean 'strength'?",
    "wrong_type.yaml": "trainer.epochs: Input should be a valid integer, unable to parse string as an integer (got 'many')",
    "out_of_range_lambda.yaml": "arms.full.strength: strength λ=1.5 is outside [0, 1]",
    "k_too_big.yaml": "arms.full.k: k=16 is outside [1, emb_dim=16); use k < 16 or raise trainer.emb_dim",
    "unknown_backbone.yaml": "backbones[1]: unknown backbone 'freedomm'; did you mean 'freedom'?",
    # models from outside the package (plugins, MMRec-API trees, clear_at)
    "plugin_missing.yaml": "plugins[0]: tests/fixtures/plugins/nope.py does not exist (paths are relative to {cwd}); "
    "fix the path",
    "plugin_import_error.yaml": "plugin 'tests/fixtures/plugins/broken_import.py': importing "
    "{cwd}/tests/fixtures/plugins/broken_import.py failed (ModuleNotFoundError: No module "
    "named 'clear_tune_missing_dependency' ({cwd}/tests/fixtures/plugins/broken_import.py:3)); "
    "fix the file",
    "plugin_name_taken.yaml": "plugin 'tests/fixtures/plugins/takes_a_builtin_name.py': backbone name 'vbpr' is "
    "registered twice: by clear_tune.models.vbpr.VBPR and by takes_a_builtin_name.MyVBPR; "
    "give one of them another name with register_backbone(name=...)",
    "plugin_not_a_backbone.yaml": "plugin 'tests/fixtures/plugins/not_a_backbone.py': class not_a_backbone.JustALayer "
    "registered as 'justalayer' is not a backbone: subclass clear_tune.models.Recommender "
    "(a model array), or write an nn.Module with loss(users, pos, neg) and embeddings() "
    "or scores(users) (README, 'Your own model')",
    "plugin_option_without_default.yaml": "plugin 'tests/fixtures/plugins/option_without_default.py': class "
    "option_without_default.NeedsDepth registered as 'needsdepth': option 'depth' "
    "of NeedsDepth has no default: give every keyword-only constructor parameter "
    "a default",
    "clear_at_native.yaml": "clear_at.vbpr: 'vbpr' is a native backbone that applies CLEAR at its own documented point; "
    "clear_at is for single-model and MMRec-API models: remove it",
    "clear_at_missing.yaml": "projection: backbone 'mmrec:TinyRec' takes CLEAR only where you name its two encoders: "
    "add 'clear_at: {mmrec:TinyRec: {image: SUBMODULE, text: SUBMODULE}}' to the spec, naming "
    "its two encoders; or set 'mode: off' for it",
    "mmrec_unknown_model.yaml": "backbones[0]: mmrec:TinyRek: {cwd}/examples/mmrec_tree/models/tinyrek.py does not "
    "exist; the tree's models are LowRank, TinyRec",
    "mmrec_not_a_tree.yaml": "plugins[0].mmrec: tests/fixtures is not an MMRec source tree (paths are relative to {cwd}); "
    "point it at the folder that holds models/, common/, utils/ and configs/ (MMRec's src/)",
    "projection_on_bpr.yaml": "arms.full: backbone 'bpr' has no modalities, so it cannot take a projection; "
    "give this arm 'backbones:' without 'bpr' or set 'mode: off'",
    "missing_data.yaml": "data.source: does/not/exist/baby.inter does not exist (paths are relative to {cwd}); fix the path",
    "bad_scheduler.yaml": "scheduler.kind: unknown value 'ashaa'; did you mean 'asha'?",
    "bad_search.yaml": "search.kind: unknown value 'bayes'; valid: grid, optuna",
    "bad_order.yaml": "search.order: unknown value 'random'; valid: auto, listed, shuffled",
    "order_with_optuna.yaml": "search.order: only used by grid search (Optuna picks its own order); remove it",
    "optuna_without_n_trials.yaml": "search.n_trials: required for optuna search; add e.g. 'n_trials: 20'",
    "float_range_no_step.yaml": "arms.full.strength: a float range needs 'step' in grid search (or list the values)",
    "missing_experiment.yaml": "experiment: required key is missing; add 'experiment: ...'",
    "yaml_syntax.yaml": "YAML syntax error at line 3, column 6: expected ',' or '}', but got ':'; "
    "fix the indentation/quoting there",
    "negative_gpus.yaml": "resources.gpus: Input should be greater than or equal to 0 (got -0.5)",
    "bad_mode.yaml": "arms.dyn.mode: unknown rank mode 'dynamik'; did you mean 'dynamic'?",
}


def test_every_fixture_is_in_the_table():
    assert sorted(p.name for p in SPECS.glob("*.yaml")) == sorted(BAD_SPECS)


@pytest.mark.parametrize("name", sorted(BAD_SPECS))
def test_bad_spec_message(name):
    path = SPECS / name
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == f"{path}: " + BAD_SPECS[name].replace("{cwd}", os.getcwd())
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["unknown_key.yaml", "k_too_big.yaml", "projection_on_bpr.yaml"])
def test_bad_spec_cli_exit_2_one_line_nothing_written(name, tmp_path):
    spec = SPECS / name
    proc = subprocess.run(
        [sys.executable, "-m", "clear_tune.run", str(spec), "--results", str(tmp_path / "results")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == f"error: {spec}: " + BAD_SPECS[name].replace("{cwd}", str(REPO)) + "\n"
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_grid_union_is_deduplicated_by_effective_config(tmp_path):
    # strength 0 makes k irrelevant: full's 3 k x {0, 0.9} collapse to 3 + 1 points; no_projection adds
    # nothing new; the dynamic arm's energy matters, fixed mode's does not.
    path = _write(
        tmp_path,
        """
experiment: dedup
trainer: {emb_dim: 16}
backbones: [clear, vbpr]
seeds: [0, 1]
arms:
  full: {mode: fixed, k: [2, 4, 8], strength: [0, 0.9], energy: [0.5, 0.9]}
  no_projection: {mode: "off", k: [2, 4]}
  dynamic: {mode: dynamic, k: 8, energy: [0.5, 0.9]}
""",
    )
    spec = load_spec(path)
    plans = spec.grid_trials()
    # per backbone and seed: full 3 (k, λ=0.9) + 1 (λ=0) ; dynamic 2
    assert len(plans) == 2 * 2 * (3 + 1 + 2)
    assert len({p.key for p in plans}) == len(plans)
    assert {p.arm for p in plans} == {"full", "dynamic"}  # no_projection's points already came from full
    off = [p for p in plans if not p.config.projection.active]
    assert len(off) == 4 and all(p.config.projection.mode == "off" for p in off)
    table = spec.table()
    assert table.splitlines()[-1] == "24 trials after deduplication (64 before) in 3 arm(s)"  # (12 + 2 + 2) x 4


def test_dry_run_prints_table_and_count(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "clear_tune.run", "search_spaces/grid.yaml", "--dry-run", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # 3 seeds x 3 backbones x (5 k x 4 λ + 1 no_projection + 3 ρ)
    assert lines[2 + 216] == "216 trials after deduplication (216 before) in 3 arm(s)"
    assert lines[1].split() == ["#", "arm", "backbone", "dataset", "k", "λ", "mode", "ρ", "τ", "seed"]
    # then the fused groups: per backbone and seed 24 compatible trials, in arrays of 8 on a CPU
    assert lines[2 + 216 + 1].startswith("fused trials: 216 trials in 27 model arrays of up to 8 members")
    assert lines[2 + 216 + 2] == "  clear, seed 0, synthetic: 24 trials in 3 array(s) (3×8 members)"
    assert lines[2 + 216 + 2 + 9] == "trials per arm: full 180, no_projection 9, dynamic 27"
    assert lines[2 + 216 + 2 + 10].startswith("cost estimate (each trial to ~100 epochs, evaluated every 2")
    assert len(lines) == 2 + 216 + 1 + 1 + 9 + 2  # 3 backbones x 3 seeds, then the cost lines
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing


def test_grid_runs_shuffled_when_a_scheduler_prunes(tmp_path):
    body = """
experiment: order
trainer: {emb_dim: 16}
seeds: [0, 1]
projection: {k: [2, 4, 8], strength: [0.5, 0.9]}
"""
    listed = load_spec(_write(tmp_path, body))
    assert not listed.shuffles_grid and listed.run_order() == listed.grid_trials()
    assert "shuffled" not in listed.table()

    pruned = load_spec(_write(tmp_path, body + "scheduler: {kind: asha}\n"))
    order = [p.key for p in pruned.run_order()]
    assert pruned.shuffles_grid and order != [p.key for p in pruned.grid_trials()]
    assert sorted(order) == sorted(p.key for p in pruned.grid_trials())
    assert order == [p.key for p in load_spec(_write(tmp_path, body + "scheduler: {kind: asha}\n")).run_order()]
    table = pruned.table().splitlines()
    assert [row.split()[1:] for row in table[1:3]] == [
        [
            p.arm,
            p.config.backbone,
            "synthetic",
            str(p.config.projection.k),
            f"{p.config.projection.strength:g}",
            "fixed",
            "-",
            "1",
            str(p.config.seed),
        ]
        for p in pruned.run_order()[:2]
    ]
    assert table[-1].startswith("run in shuffled order (search.seed 0) so that the asha scheduler")

    reseeded = load_spec(_write(tmp_path, body + "scheduler: {kind: asha}\nsearch: {seed: 7}\n"))
    assert [p.key for p in reseeded.run_order()] != order
    kept = load_spec(_write(tmp_path, body + "scheduler: {kind: median}\nsearch: {order: listed}\n"))
    assert kept.run_order() == kept.grid_trials()
    forced = load_spec(_write(tmp_path, body + "search: {order: shuffled}\n"))
    assert [p.key for p in forced.run_order()] == order  # same seed, same shuffle


def test_shipped_specs_are_valid():
    for name in ("grid.yaml", "optuna.yaml", "smoke.yaml"):
        spec = load_spec(REPO / "search_spaces" / name)
        assert spec.expected_trials() > 0


def test_trial_keys_are_stable_and_readable():
    spec = load_spec(REPO / "search_spaces" / "smoke.yaml")
    first = [p.key for p in spec.grid_trials()]
    again = [p.key for p in load_spec(REPO / "search_spaces" / "smoke.yaml").grid_trials()]
    assert first == again
    plan = spec.grid_trials()[0]
    assert plan.key.startswith("full-clear-fixed-k2-l0.9-s0-")
    assert trial_key(plan.arm, plan.config) == plan.key


def test_int_range_expands_and_bad_range_is_one_line(tmp_path):
    spec = load_spec(_write(tmp_path, "experiment: r\narms: {full: {k: {low: 2, high: 8, step: 3}}}\n"))
    assert [p.config.projection.k for p in spec.grid_trials()] == [2, 5, 8]
    with pytest.raises(SpecError, match=r"arms\.full\.k: low=8 is above high=2; swap them$"):
        load_spec(_write(tmp_path, "experiment: r\narms: {full: {k: {low: 8, high: 2}}}\n"))


def test_optuna_space_samples_within_bounds_and_conditions():
    spec = load_spec(REPO / "search_spaces" / "optuna.yaml")
    space = OptunaSpace(spec)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_modes = set()
    for _ in range(30):
        trial = study.ask()
        cfg = space(trial)["trial"]["config"]
        pj = cfg["projection"]
        seen_modes.add(pj["mode"])
        assert 2 <= pj["k"] <= 20 and 0.3 <= pj["strength"] <= 0.9
        assert ("energy" in trial.params) == (pj["mode"] == "dynamic")
        assert cfg["backbone"] in ("clear", "vbpr", "freedom") and cfg["seed"] == 0
        study.tell(trial, 0.0)
    assert seen_modes == {"fixed", "dynamic"}
