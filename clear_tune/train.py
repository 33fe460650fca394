"""The trainer: BPR epochs, full-ranking evaluation, early stopping, exact checkpoint/restore.

One trial, top to bottom (DESIGN.md §3): every epoch calls ``model.start_epoch(epoch)`` (edge dropout,
CLEAR projection refresh), then walks the train interactions in shuffled mini-batches, each positive
paired with one uniform negative the user never interacted with, and takes an Adam step on the
backbone's loss. Every ``eval_every`` epochs (and at the last) it ranks all items for the valid and test
users; training stops after ``patience`` evaluations without a better valid ``select_metric``. The test
metrics reported are those at the best-valid epoch; test never selects anything.

Determinism: model init is seeded by the registry; shuffling and negatives draw only from the trainer's
own :class:`torch.Generator`; checkpoints carry it, every generator the backbone keeps (edge dropout) and
the global RNG states. Two CPU runs with one seed
give identical results, and a run restored from a checkpoint finishes exactly as an uninterrupted one.

Example:
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.data import make_synthetic
    >>> from clear_tune.train import Trainer
    >>> ds = make_synthetic(n_users=60, n_items=40, d_v=16, d_t=16, seed=0)
    >>> cfg = TrainConfig(backbone="bpr", projection={"mode": "off"}, emb_dim=8, epochs=2, batch_size=256)
    >>> result = Trainer(cfg, ds).fit()
    >>> result["epochs_run"], result["stop_reason"], sorted(result["valid"])[:2]
    (2, 'max_epochs', ['ndcg@10', 'ndcg@20'])

Command line: ``python -m clear_tune.train --help`` (see :mod:`clear_tune._train_cli`).
"""

from __future__ import annotations

import math
import os
import random
import resource
import statistics
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clear_tune.config import TrainConfig
from clear_tune.data import RecDataset
from clear_tune.errors import DataError, TrainingError
from clear_tune.metrics import RankingEvaluator
from clear_tune.models import ModelContext, Recommender, backbone_uses_features, build_model
from clear_tune.sampling import NegativeSampler

# Fields that may differ between the run that wrote a checkpoint and the one resuming from it.
RESUMABLE_CHANGES = {"epochs", "patience", "device", "amp", "eval_batch_users"}


@dataclass
class EpochReport:
    """What :meth:`Trainer.fit` hands its ``on_epoch`` callback after every epoch."""

    epoch: int
    loss: float
    valid: dict[str, float] | None  # None when this epoch was not evaluated
    best_valid: float  # best select_metric so far (-inf before the first evaluation)
    best_epoch: int  # 0 before the first evaluation
    sec_train: float
    sec_eval: float | None


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the current CUDA device when available, else CPU."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError("device 'cuda' was asked for but no CUDA GPU is visible: use --device auto or cpu")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# One ModelContext per (dataset object, device) in this process, so trials on one dataset share the
# device copies and whatever graphs backbones memoise in ctx.cache. Entries go when the dataset does.
_CONTEXTS: dict[tuple[int, str], ModelContext] = {}


def model_context(dataset: RecDataset, device: torch.device) -> ModelContext:
    """The dataset's train graph and features as tensors on ``device`` (memoised per dataset)."""
    key = (id(dataset), str(device))
    if key not in _CONTEXTS:
        feats = [None if f is None else torch.as_tensor(f, dtype=torch.float32, device=device)
                 for f in (dataset.image_feat, dataset.text_feat)]
        train = torch.as_tensor(dataset.train, dtype=torch.long, device=device)  # (E, 2)
        _CONTEXTS[key] = ModelContext(
            n_users=dataset.n_users, n_items=dataset.n_items, train_users=train[:, 0].contiguous(),
            train_items=train[:, 1].contiguous(), image_feat=feats[0], text_feat=feats[1], device=device,
        )
        weakref.finalize(dataset, _CONTEXTS.pop, key, None)
    return _CONTEXTS[key]


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on ``device``, or this process's peak RSS on CPU, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def model_generators(model: torch.nn.Module) -> dict[str, torch.Generator]:
    """Every :class:`torch.Generator` a backbone keeps as an attribute (edge dropout, say), by dotted name.

    They are not in ``state_dict()``, so the trainer checkpoints their states itself.
    """
    return {
        f"{name}.{attr}" if name else attr: value
        for name, module in model.named_modules()
        for attr, value in vars(module).items()
        if isinstance(value, torch.Generator)
    }


class Trainer:
    """Train and evaluate one :class:`TrainConfig` (one trial); see the module docstring."""

    def __init__(
        self,
        config: TrainConfig,
        dataset: RecDataset | None = None,
        *,
        model_factory: Callable[[TrainConfig, ModelContext], Recommender] | None = None,
    ) -> None:
        # Cheap checks first, so a typo fails before any data loads.
        if model_factory is None:
            backbone_uses_features(config.backbone)  # SpecError for an unknown backbone
        self.device = resolve_device(config.device)
        if dataset is None:
            from clear_tune.data import cached_dataset

            dataset = cached_dataset(config.data, config.data_options)
        self.config, self.dataset = config, dataset
        self.use_amp = config.amp  # bf16 autocast: for GPUs, and CPUs with native bf16 (AVX512-BF16, AMX)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)  # peak_mem_mb is this trial's, not the process's

        ctx = model_context(dataset, self.device)
        self.train_users, self.train_items = ctx.train_users, ctx.train_items  # (E,) each
        self.model = (model_factory or build_model)(config, ctx).to(self.device)
        # fused Adam: one kernel per step on CUDA (same update up to float rounding); CPU keeps the default
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr,
                                          fused=True if self.device.type == "cuda" else None)
        # Every draw comes from CPU generators, so one seed trains the same run on CPU and CUDA (up to float rounding).
        self.generator = torch.Generator().manual_seed(config.seed)
        self.sampler = NegativeSampler(self.train_users, self.train_items, n_items=dataset.n_items,
                                       generator=self.generator)
        self.evaluator = RankingEvaluator(  # valid and test share one ranking per evaluation
            n_users=dataset.n_users, n_items=dataset.n_items, train=dataset.train,
            heldout={"valid": dataset.valid, "test": dataset.test}, topk=config.topk,
            batch_users=config.eval_batch_users, device=self.device,
        )
        if self.evaluator.split_sizes["valid"] == 0:
            raise DataError(f"dataset {dataset.name!r} has no valid interactions: early stopping needs a valid split")
        if len(dataset.train) == 0:
            raise DataError(f"dataset {dataset.name!r} has no train interactions")

        # Progress, all of it checkpointed.
        self.epoch = 0
        self.best_valid = -math.inf
        self.best_epoch = 0
        self.best_metrics: dict[str, dict[str, float]] = {"valid": {}, "test": {}}
        self.evals_since_best = 0
        self.curve: list[dict[str, Any]] = []
        self.sec_train: list[float] = []
        self.sec_eval: list[float] = []
        self.stop_reason: str | None = None

    # ---------------------------------------------------------------------------------------- training
    def _train_epoch(self, epoch: int) -> float:
        """One pass over the train interactions; returns the mean mini-batch loss."""
        model, cfg = self.model, self.config
        model.train()
        model.start_epoch(epoch)
        n_edges = self.train_users.numel()
        order = torch.randperm(n_edges, generator=self.generator).to(self.device)  # (E,)
        epoch_users, epoch_pos = self.train_users[order], self.train_items[order]  # (E,) each, shuffled
        # One negative per positive for the whole epoch in one vectorised draw: a handful of device syncs
        # per epoch instead of several per batch (what dominated small-batch steps on a GPU).
        epoch_neg = self.sampler.sample(epoch_users)  # (E,)
        batches = list(zip(*(t.split(cfg.batch_size) for t in (epoch_users, epoch_pos, epoch_neg))))
        losses = torch.empty(len(batches), device=self.device)  # (n_batches,) kept on device: no sync per step
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.use_amp else nullcontext()
        for b, (users, pos, neg) in enumerate(batches):  # (B,) each
            with autocast:
                loss = model.loss(users, pos, neg)  # scalar
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses[b] = loss.detach()
        bad = (~torch.isfinite(losses)).nonzero()
        if bad.numel():
            b = int(bad[0])
            raise TrainingError(
                f"{cfg.backbone}: loss became {float(losses[b])} at epoch {epoch}, batch {b + 1}/{len(batches)}: "
                f"lower the learning rate (lr={cfg.lr:g}) or raise reg_weight"
                + (", or run without --amp" if self.use_amp else "")
            )
        return float(losses.mean())

    @torch.no_grad()
    def evaluate(self) -> tuple[dict[str, float], dict[str, float]]:
        """Full-ranking ``(valid, test)`` metrics of the current model."""
        self.model.eval()
        user_emb, item_emb = self.model.embeddings()  # (n_users, D), (n_items, D)
        metrics = self.evaluator(user_emb, item_emb)
        return metrics["valid"], metrics["test"]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def fit(self, on_epoch: Callable[[Trainer, EpochReport], bool | None] | None = None) -> dict[str, Any]:
        """Train epochs ``self.epoch + 1 .. config.epochs`` with early stopping; returns :meth:`result`.

        ``on_epoch(trainer, report)`` runs after every epoch (after its evaluation, if any); returning
        True stops the run with stop reason ``"stopped"`` (a pruned trial, say). Resuming a run that
        stopped early returns at once.
        """
        cfg = self.config
        if self.stop_reason == "early_stop":
            return self.result()
        self.stop_reason = None
        while self.epoch < cfg.epochs:
            epoch = self.epoch + 1
            self._sync()
            start = time.perf_counter()
            loss = self._train_epoch(epoch)
            self._sync()
            self.sec_train.append(time.perf_counter() - start)
            self.epoch = epoch

            valid = sec_eval = None
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                start = time.perf_counter()
                valid, test = self.evaluate()
                sec_eval = time.perf_counter() - start
                self.sec_eval.append(sec_eval)
                self.curve.append({"epoch": epoch, "loss": loss, "valid": valid})
                if valid[cfg.select_metric] > self.best_valid:
                    self.best_valid, self.best_epoch = valid[cfg.select_metric], epoch
                    self.best_metrics = {"valid": valid, "test": test}
                    self.evals_since_best = 0
                else:
                    self.evals_since_best += 1
                if self.evals_since_best >= cfg.patience:
                    self.stop_reason = "early_stop"

            report = EpochReport(epoch, loss, valid, self.best_valid, self.best_epoch, self.sec_train[-1], sec_eval)
            if on_epoch is not None and on_epoch(self, report) and self.stop_reason is None:
                self.stop_reason = "stopped"
            if self.stop_reason is not None:
                break
        if self.stop_reason is None:
            self.stop_reason = "max_epochs"
        return self.result()

    def result(self) -> dict[str, Any]:
        """The trial-record fields of this run so far (see :mod:`clear_tune.records`)."""
        return {
            "config": self.config.model_dump(),
            "dataset": {**self.dataset.stats(), "provenance": dict(self.dataset.provenance)},
            "best_epoch": self.best_epoch or None,
            "epochs_run": self.epoch,
            "valid": dict(self.best_metrics["valid"]),
            "test": dict(self.best_metrics["test"]),
            "curve": [dict(point) for point in self.curve],
            "spectrum": self.model.spectrum_history(),
            "sec_per_epoch": statistics.median(self.sec_train) if self.sec_train else None,
            "sec_per_eval": statistics.median(self.sec_eval) if self.sec_eval else None,
            "peak_mem_mb": peak_memory_mb(self.device),
            "device": str(self.device),
            "stop_reason": self.stop_reason,
        }

    # ------------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: model, optimizer, RNG states and progress."""
        return {
            "config": self.config.model_dump(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "model_generators": {name: g.get_state() for name, g in model_generators(self.model).items()},
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
            "progress": {
                "epoch": self.epoch,
                "best_valid": self.best_valid,
                "best_epoch": self.best_epoch,
                "best_metrics": self.best_metrics,
                "evals_since_best": self.evals_since_best,
                "curve": self.curve,
                "sec_train": self.sec_train,
                "sec_eval": self.sec_eval,
                "stop_reason": self.stop_reason,
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the config may differ only in ``RESUMABLE_CHANGES``."""
        saved, now = state["config"], self.config.model_dump()
        changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
        if changed:
            raise TrainingError(
                f"checkpoint was written for a different config ({', '.join(changed)} differ): "
                f"resume with the same settings or start a new run"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        for name, generator in model_generators(self.model).items():
            if name in state["model_generators"]:
                generator.set_state(state["model_generators"][name])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        progress = state["progress"]
        self.epoch, self.best_valid, self.best_epoch = progress["epoch"], progress["best_valid"], progress["best_epoch"]
        self.best_metrics, self.evals_since_best = progress["best_metrics"], progress["evals_since_best"]
        self.curve, self.sec_train, self.sec_eval = progress["curve"], progress["sec_train"], progress["sec_eval"]
        self.stop_reason = progress["stop_reason"]

    def save_checkpoint(self, path: str | os.PathLike[str], *, durable: bool = True) -> None:
        """Write :meth:`state_dict` to ``path`` atomically (temporary file in the same folder, then rename).

        ``durable=False`` skips the fsync, for a scratch folder that something else persists (Ray Tune).
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(self.state_dict(), fh)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint` (our own file: not weights-only)."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except FileNotFoundError:
            raise TrainingError(f"checkpoint {str(path)!r} does not exist: check the --resume path") from None
        except Exception as exc:  # a truncated or foreign file
            raise TrainingError(f"checkpoint {str(path)!r} cannot be read ({type(exc).__name__}): it is not a "
                                f"clear_tune checkpoint or is damaged") from None
        if not isinstance(state, dict) or not {"model", "optimizer", "progress"} <= state.keys():
            raise TrainingError(f"checkpoint {str(path)!r} is not a clear_tune trainer checkpoint")
        self.load_state_dict(state)


def train(
    config: TrainConfig,
    dataset: RecDataset | None = None,
    on_epoch: Callable[[Trainer, EpochReport], bool | None] | None = None,
) -> dict[str, Any]:
    """Build a :class:`Trainer` and run :meth:`Trainer.fit`; returns the result dict."""
    return Trainer(config, dataset).fit(on_epoch)


if __name__ == "__main__":
    from clear_tune._cli_errors import run_cli
    from clear_tune._train_cli import main

    sys.exit(run_cli(main))
