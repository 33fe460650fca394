"""The trainer, projection, evaluator and harness on a CUDA GPU: same results as the CPU up to float tolerance.

Skipped where no CUDA GPU is visible (CI); run on a GPU machine with ``pytest -q tests/test_cuda.py``.
Randomness is drawn on the CPU (see ``clear_tune.train``), so one seed trains the same run on both devices
and any difference is float rounding (cuBLAS/cuSPARSE summation order, TF32 is off by default).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from clear_tune.config import TrainConfig
from clear_tune.data import make_synthetic
from clear_tune.metrics import RankingEvaluator
from clear_tune.projection import CrossModalProjection
from clear_tune.records import read_records
from clear_tune.train import Trainer, train

# CLEAR_TUNE_GPU_TEST_DEVICE=cpu runs these comparisons CPU-against-CPU: a check of the tests themselves.
GPU = os.environ.get("CLEAR_TUNE_GPU_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(GPU == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")

REPO = Path(__file__).resolve().parents[1]
FEATURE_BACKBONES = ["vbpr", "freedom", "clear"]


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(n_users=300, n_items=200, d_v=32, d_t=16, pref_dim=8, seed=0)


def config(backbone: str, device: str, **overrides) -> TrainConfig:
    projection = {"mode": "fixed", "k": 2, "strength": 0.9} if backbone in FEATURE_BACKBONES else {"mode": "off"}
    base = dict(
        backbone=backbone,
        projection=projection,
        emb_dim=16,
        epochs=4,
        batch_size=256,
        lr=0.01,
        device=device,
        topk=[10, 20],
        select_metric="recall@20",
    )
    return TrainConfig(**{**base, **overrides})


def assert_same_run(cpu: dict, gpu: dict, *, loss_rtol: float = 1e-3, metric_atol: float = 0.02) -> None:
    cpu_loss = [p["loss"] for p in cpu["curve"]]
    gpu_loss = [p["loss"] for p in gpu["curve"]]
    np.testing.assert_allclose(gpu_loss, cpu_loss, rtol=loss_rtol)
    for split in ("valid", "test"):
        for name, value in cpu[split].items():
            assert gpu[split][name] == pytest.approx(value, abs=metric_atol), (split, name)


@pytest.mark.parametrize("backbone", ["bpr", "lightgcn", *FEATURE_BACKBONES])
def test_one_seed_trains_the_same_run_on_cuda_and_cpu(dataset, backbone):
    cpu = train(config(backbone, "cpu"), dataset)[0]
    gpu = train(config(backbone, GPU), dataset)[0]
    assert gpu["device"].startswith(GPU) and cpu["device"] == "cpu"
    assert_same_run(cpu, gpu)
    assert gpu["peak_mem_mb"] > 0  # CUDA's allocator peak for this trial


def test_cuda_resume_from_a_checkpoint_matches_an_uninterrupted_run(dataset, tmp_path):
    whole = train(config("clear", GPU, epochs=6), dataset)[0]
    first = Trainer(config("clear", GPU, epochs=6), dataset)
    first.fit(on_epoch=lambda trainer, report: report.epoch >= 3)  # stop after epoch 3
    first.save_checkpoint(tmp_path / "ckpt.pt")
    second = Trainer(config("clear", GPU, epochs=6), dataset)
    second.load_checkpoint(tmp_path / "ckpt.pt")
    [resumed] = second.fit()
    assert resumed["epochs_run"] == whole["epochs_run"]
    assert_same_run(whole, resumed, loss_rtol=1e-5, metric_atol=1e-6)


def test_a_cuda_checkpoint_finishes_on_the_cpu(dataset, tmp_path):
    gpu = Trainer(config("freedom", GPU, epochs=4), dataset)
    gpu.fit(on_epoch=lambda trainer, report: report.epoch >= 2)
    gpu.save_checkpoint(tmp_path / "ckpt.pt")
    cpu = Trainer(config("freedom", "cpu", epochs=4), dataset)
    cpu.load_checkpoint(tmp_path / "ckpt.pt")
    [finished] = cpu.fit()
    assert finished["epochs_run"] == 4 and finished["device"] == "cpu"
    assert_same_run(train(config("freedom", "cpu", epochs=4), dataset)[0], finished)


@pytest.mark.parametrize("backbone", ["lightgcn", *FEATURE_BACKBONES])
def test_mixed_precision_trains_close_to_float32(dataset, backbone):
    full = train(config(backbone, GPU, epochs=6), dataset)[0]
    amp = train(config(backbone, GPU, epochs=6, amp=True), dataset)[0]
    assert all(np.isfinite(p["loss"]) for p in amp["curve"])
    assert amp["curve"][-1]["loss"] < amp["curve"][0]["loss"]
    assert amp["valid"]["recall@20"] == pytest.approx(full["valid"]["recall@20"], abs=0.05)


def test_evaluator_ranks_the_same_on_cuda(dataset):
    gen = torch.Generator().manual_seed(0)
    user_emb = torch.randn(dataset.n_users, 16, generator=gen)
    item_emb = torch.randn(dataset.n_items, 16, generator=gen)
    results = {}
    for device in ("cpu", GPU):
        evaluator = RankingEvaluator(
            n_users=dataset.n_users,
            n_items=dataset.n_items,
            train=dataset.train,
            heldout={"valid": dataset.valid, "test": dataset.test},
            topk=[10, 20],
            batch_users=64,
            device=torch.device(device),
        )
        results[device] = evaluator(user_emb.to(device), item_emb.to(device))[0].metrics
    for split, metrics in results["cpu"].items():
        for name, value in metrics.items():
            assert results[GPU][split][name] == pytest.approx(value, abs=1e-6), (split, name)


def test_dynamic_rank_trains_the_same_run_on_cuda_and_cpu(dataset):
    dynamic = {"mode": "dynamic", "k": 8, "energy": 0.9, "strength": 0.9}
    cpu = train(config("clear", "cpu", projection=dynamic), dataset)[0]
    gpu = train(config("clear", GPU, projection=dynamic), dataset)[0]
    assert_same_run(cpu, gpu)
    assert [r["k"] for r in gpu["spectrum"]] == [r["k"] for r in cpu["spectrum"]]


@pytest.mark.parametrize("mode", ["fixed", "dynamic"])
def test_projection_is_the_same_on_cuda(mode):
    gen = torch.Generator().manual_seed(0)
    image, text = torch.randn(500, 48, generator=gen), torch.randn(500, 24, generator=gen)
    text[:, :4] += 3 * image[:, :4]  # a shared subspace with clear singular-value gaps
    projectors = {}
    for device in ("cpu", GPU):
        projection = CrossModalProjection(48, 24, mode=mode, k=4, energy=0.5, strength=0.9).to(device)
        projection.refresh(image.to(device), text.to(device), epoch=1)
        v, t = projection(image.to(device), text.to(device))
        projectors[device] = (v.cpu(), t.cpu())
    for cpu, gpu in zip(projectors["cpu"], projectors[GPU]):
        torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(GPU != "cuda", reason="needs a real GPU")
def test_fractional_gpu_trials_share_one_gpu(tmp_path):
    """A real search with ``gpus: 0.25`` per trial: trials run on CUDA and record the GPU they used."""
    spec = tmp_path / "gpu.yaml"
    spec.write_text(
        textwrap.dedent(f"""\
        experiment: gpu_share
        results: {tmp_path / "results"}
        data: {{source: synthetic, options: {{n_users: 300, n_items: 200, d_v: 32, d_t: 16, seed: 0}}}}
        backbones: [clear]
        seeds: [0]
        trainer: {{epochs: 3, patience: 3, emb_dim: 16, batch_size: 1024}}
        arms:
          full: {{mode: fixed, k: [2, 4], strength: 0.9}}
          dynamic: {{mode: dynamic, k: 8, energy: [0.8, 0.95], strength: 0.9}}
        search: {{kind: grid}}
        resources: {{cpus: 1, gpus: 0.25}}
        max_concurrent: 4
        """)
    )
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "clear_tune.run", str(spec), "--verbose", "0", "--no-report"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = read_records(tmp_path / "results" / "gpu_share" / "records")
    assert len(records) == 4 and all(r["status"] == "completed" for r in records)
    assert all(r["device"].startswith("cuda") and r["gpu_ids"] for r in records), [r["device"] for r in records]
