"""``python -m clear_tune.train`` as a user runs it: a real subprocess each time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clear_tune._cli_errors import run_cli
from clear_tune.train.__main__ import main

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--data",
    "synthetic",
    "--data-option",
    "n_users=80",
    "--data-option",
    "n_items=60",
    "--data-option",
    "d_v=16",
    "--data-option",
    "d_t=16",
    "--data-option",
    "pref_dim=8",
    "--emb-dim",
    "8",
    "--batch-size",
    "256",
    "--device",
    "cpu",
]
FLAGS = [
    "--data",
    "--backbone",
    "--k",
    "--strength",
    "--rank-mode",
    "--energy",
    "--refresh-every",
    "--epochs",
    "--patience",
    "--lr",
    "--batch-size",
    "--emb-dim",
    "--reg-weight",
    "--eval-every",
    "--topk",
    "--seed",
    "--device",
    "--amp",
    "--data-option",
    "--model-option",
    "--checkpoint",
    "--resume",
    "--json",
]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "clear_tune.train", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_documents_every_flag():
    proc = run("--help")
    assert proc.returncode == 0
    for flag in FLAGS:
        assert flag in proc.stdout, flag


def test_two_epoch_run_prints_description_bar_and_one_json_record(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    proc = run(
        *TINY,
        "--backbone",
        "vbpr",
        "--k",
        "2",
        "--refresh-every",
        "2",
        "--epochs",
        "2",
        "--topk",
        "5",
        "10",
        "--select-metric",
        "recall@10",
        "--checkpoint",
        str(ckpt),
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)  # the whole of stdout is one JSON object
    assert {
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
    } <= set(record)
    assert record["epochs_run"] == 2 and record["stop_reason"] == "max_epochs"
    assert record["config"]["projection"]["k"] == 2 and record["config"]["data_options"]["n_users"] == 80
    assert set(record["valid"]) >= {"recall@10", "ndcg@5"} and record["device"] == "cpu"
    assert "synthetic" in proc.stderr and "2/2" in proc.stderr  # description and progress bar
    assert ckpt.is_file()

    # --resume from the epoch-2 checkpoint with more epochs: continues at epoch 3, --json prints JSON only
    proc = run(
        *TINY,
        "--backbone",
        "vbpr",
        "--k",
        "2",
        "--refresh-every",
        "2",
        "--epochs",
        "3",
        "--topk",
        "5",
        "10",
        "--select-metric",
        "recall@10",
        "--resume",
        str(ckpt),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    resumed = json.loads(proc.stdout)
    assert [p["epoch"] for p in resumed["curve"]] == [1, 2, 3]
    assert resumed["curve"][:2] == record["curve"]
    assert proc.stderr == ""


def assert_one_error_line(stderr: str, needle: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--strength", "1.5"], "projection.strength"), (["--no-such-flag"], "--no-such-flag")],
)
def test_bad_input_is_one_line_and_exit_2(args, needle):
    proc = run(*TINY, "--backbone", "bpr", "--rank-mode", "off", *args)
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, needle)
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--epochs", "many"], "--epochs"),
        (["--topk", "5", "10"], "select_metric"),  # recall@20 is not among the cut-offs
        (["--backbone", "nope"], "unknown backbone 'nope'"),
        (["--data-option", "colour=blue", "--epochs", "1"], "colour"),
        (["--data-option", "colour"], "KEY=VALUE"),
        (["--epochs", "1", "--resume", "/nonexistent/run.ckpt"], "does not exist"),
    ],
)
def test_more_bad_input_in_process(args, needle, capsys):
    # the same main() and run_cli() as the command, without paying a Python start-up per case
    assert run_cli(main, [*TINY, "--backbone", "bpr", "--rank-mode", "off", *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_error_line(err, needle)
