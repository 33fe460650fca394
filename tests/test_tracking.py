"""Experiment tracking (``tracking:``): one MLflow / W&B run per trial key, fused members included.

One real search (real local Ray, a tiny synthetic grid of 3 trials in 2 Ray trials: a fused pair and a lone
trial) with every tracker that is installed and ``tensorboard: false``, read back with ``MlflowClient`` (a
SQLite store) and from the W&B offline run folders; ``tensorboard: true`` (the default) at the logger level.
The MLflow / W&B tests skip, saying so, without their extras (``pip install -e '.[mlflow,wandb]'``).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import pytest

from clear_tune.errors import SpecError
from clear_tune.records import read_records
from clear_tune.run import run_search
from clear_tune.spec import load_spec

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")  # MLflow on SA 2.1
HAS = {name: importlib.util.find_spec(name) is not None for name in ("mlflow", "wandb")}
SPEC = """
experiment: {name}
data: {{source: synthetic, options: {{n_users: 150, n_items: 80, d_v: 24, d_t: 16, pref_dim: 8, seed: 0}}}}
backbones: [vbpr]
trainer: {{epochs: 3, patience: 3, emb_dim: 16, batch_size: 256}}
arms:
  full: {{k: [2, 4], strength: 0.9}}
  no_projection: {{mode: "off"}}
fusion: {{max_members: 2}}
max_concurrent: 2
checkpoint_interval_s: 0
tracking: {tracking}
"""


def _spec(tmp: Path, name: str, tracking: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, tracking=tracking))
    return path


def _need(extra: str) -> None:
    if not HAS[extra]:
        pytest.skip(f"{extra} is not installed (pip install 'clear-tune[{extra}]')")


@pytest.fixture(scope="module")
def tracked(ray_session, tmp_path_factory):
    """One search tracked by every installed tracker: (records by key, experiment folder, MLflow URI)."""
    tmp = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    parts = (
        ["tensorboard: false"]
        + [f"mlflow: '{uri}'"] * HAS["mlflow"]
        + ["wandb: {project: clear-tune-test, mode: offline}"] * HAS["wandb"]
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        spec = _spec(tmp, "tracked", "{" + ", ".join(parts) + "}")
        outcome = run_search(spec, results=str(tmp / "results"), verbose=0, build_report=False)
    assert outcome.complete
    experiment = tmp / "results" / "tracked"
    records = {r["trial_id"]: r for r in read_records(experiment / "records")}
    assert len(records) == 3 and sum(r["fused"] is not None for r in records.values()) == 2  # a fused pair
    return records, experiment, uri


def test_tracking_keys_are_checked_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(SpecError, match=r"tracking\.mlfow: unknown key 'mlfow'; did you mean 'mlflow'\?$"):
        load_spec(_spec(tmp_path, "a", "{mlfow: 'sqlite:///x.db'}"))
    with pytest.raises(SpecError, match=r"tracking\.wandb\.mode: unknown value 'ofline'; did you mean 'offline'\?"):
        load_spec(_spec(tmp_path, "b", "{wandb: {project: p, mode: ofline}}"))
    with pytest.raises(SpecError, match=r"tracking\.wandb\.project: required key is missing"):
        load_spec(_spec(tmp_path, "c", "{wandb: {entity: me}}"))
    if HAS["mlflow"]:
        with pytest.raises(SpecError, match=r"tracking\.mlflow: MLflow 3 refuses a file store .*sqlite:///"):
            load_spec(_spec(tmp_path, "d", "{mlflow: 'file:///tmp/mlruns'}"))
    spec = load_spec(_spec(tmp_path, "e", "{tensorboard: false}"))
    assert spec.settings.tracking.mlflow is None and spec.settings.tracking.tensorboard is False


@pytest.mark.parametrize("extra", ["mlflow", "wandb"])
def test_a_missing_extra_is_one_line_before_ray_starts(tmp_path, monkeypatch, capsys, extra):
    from clear_tune._cli_errors import run_cli
    from clear_tune.run.__main__ import main

    monkeypatch.setitem(sys.modules, extra, None)  # what find_spec sees when the package is not installed
    tracking = "{mlflow: 'sqlite:///x.db'}" if extra == "mlflow" else "{wandb: {project: p}}"
    spec = _spec(tmp_path, "missing", tracking)
    assert run_cli(main, [str(spec), "--results", str(tmp_path / "results")]) == 2
    name = "MLflow" if extra == "mlflow" else "Weights & Biases (wandb)"
    assert capsys.readouterr().err.splitlines() == [
        f"error: {spec}: tracking.{extra}: {name} is not installed; pip install 'clear-tune[{extra}]'"
    ]
    assert not (tmp_path / "results").exists()  # nothing started, nothing written


def test_mlflow_one_run_per_trial_with_its_curve_and_final_metrics(tracked):
    _need("mlflow")
    from mlflow.tracking import MlflowClient

    records, _, uri = tracked
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(records)  # one run per trial key, not per Ray trial
    for run in runs:
        record, tags, params = records[run.info.run_name], run.data.tags, run.data.params
        assert run.info.status == "FINISHED"
        assert {k: tags[k] for k in ("experiment", "trial_key", "arm", "backbone", "status")} == {
            "experiment": "tracked",
            "trial_key": record["trial_id"],
            "arm": record["arm"],
            "backbone": "vbpr",
            "status": "completed",
        }
        assert tags.get("group") == (record["fused"] or {}).get("group")
        assert params["projection/k"] == str(record["config"]["projection"]["k"]) and params["lr"] == "0.001"
        history = sorted(client.get_metric_history(run.info.run_id, "valid/recall_at_20"), key=lambda m: m.step)
        assert [m.step for m in history] == [p["epoch"] for p in record["curve"]] == [1, 2, 3]
        assert [m.value for m in history] == pytest.approx([p["valid"]["recall@20"] for p in record["curve"]])
        assert len(client.get_metric_history(run.info.run_id, "loss")) == len(record["curve"]) == 3
        assert len(client.get_metric_history(run.info.run_id, "valid_score")) == 3  # reported live
        metrics = run.data.metrics
        for split in ("valid", "test"):
            assert metrics[f"best/{split}/ndcg_at_10"] == pytest.approx(record[split]["ndcg@10"])
        assert metrics["best_epoch"] == record["best_epoch"] and metrics["epochs_run"] == 3


def test_wandb_offline_writes_one_run_folder_per_trial(tracked):
    _need("wandb")
    records, experiment, _ = tracked
    folders = sorted((experiment / "wandb").glob("offline-run-*"))
    assert len(folders) == len(records)
    logs = [next(folder.glob("*.wandb")).read_bytes() for folder in folders]
    for key, record in records.items():
        mine = [log for log in logs if key.encode() in log]
        assert len(mine) == 1, key  # named by its trial key, in a run of its own
        for name in (b"valid/recall_at_20", b"best/test/recall_at_20", record["arm"].encode()):
            assert name in mine[0]


def test_tensorboard_false_writes_no_event_files_but_keeps_csv_and_json(tracked):
    _, experiment, _ = tracked
    trial_dirs = [p for p in experiment.iterdir() if (p / "progress.csv").is_file() and (p / "result.json").is_file()]
    assert len(trial_dirs) == 2  # Ray's CSV and JSON loggers, one folder per Ray trial
    assert not list(experiment.rglob("events.out.tfevents*"))


class _Trial:
    """What Ray's TBX logger reads of a trial."""

    def __init__(self, local_path: str) -> None:
        self.local_path, self.evaluated_params = local_path, {}

    def init_local_path(self) -> None:
        pass


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_tensorboard_true_writes_event_files_without_warning_about_gpu_ids(tmp_path):
    from ray.tune.logger import TBXLoggerCallback
    from ray.util.debug import reset_log_once

    from clear_tune.tune import tracking_callbacks
    from clear_tune.tune._tracking import _NoTensorBoard, _TensorBoard

    spec = load_spec(_spec(tmp_path, "tb", "{}"))
    assert [type(c) for c in tracking_callbacks(spec, writer=None)] == [_TensorBoard]  # Ray then adds no TBX logger
    spec.settings.tracking.tensorboard = False
    assert [type(c) for c in tracking_callbacks(spec, writer=None)] == [_NoTensorBoard]

    result = {"training_iteration": 1, "epoch": 1, "valid_score": 0.5, "trial_info": {"gpu_ids": ["0"], "restores": 0}}
    handler, tbx_log = _Warnings(), logging.getLogger("ray.tune.logger.tensorboardx")
    tbx_log.addHandler(handler)
    try:
        seen = []
        for cls in (TBXLoggerCallback, _TensorBoard):
            reset_log_once("invalid_tbx_value")
            trial = _Trial(str(tmp_path / cls.__name__))
            logger = cls()
            logger.log_trial_result(1, trial, dict(result))
            logger.log_trial_end(trial)
            assert list((tmp_path / cls.__name__).glob("events.out.tfevents*"))
            seen.append([m for m in handler.messages if "gpu_ids" in m])
            handler.messages.clear()
        assert seen[0] and not seen[1], seen  # Ray's warns about the list of GPU ids; ours leaves it out
    finally:
        tbx_log.removeHandler(handler)
