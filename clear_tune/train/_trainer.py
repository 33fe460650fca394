"""The trainer: BPR epochs, full-ranking evaluation, early stopping, exact checkpoint/restore.

One trial, or a fused group of trials, top to bottom (DESIGN.md §3, §6). The model is an array of ``R``
members (one per config; ``R = 1`` for one trial) that share the data, the backbone and the seed, so they
share every batch and negative; members differ only in CLEAR's projection and ``reg_weight``. Every
epoch calls ``model.start_epoch(epoch)`` (edge dropout, projection refresh), then walks the train
interactions in shuffled mini-batches, each positive paired with one negative the user never interacted
with (drawn among the items seen in train, as MMRec does), and takes an Adam step on the sum of the
members' losses: members share no parameter, so each gets exactly the gradient of its own loss, and Adam
is elementwise, so each gets exactly its own update. Every ``eval_every`` epochs (and at the last) each
member ranks all items for the valid and test users. A member stops after ``patience`` evaluations
without a better valid ``select_metric``; it fails when its loss turns non-finite; ``on_epoch`` may prune
members. A member that stops leaves the array (its rows are cut out of every parameter and of Adam's
state) while the others go on exactly as before. The test metrics reported are those at each member's
best-valid epoch; test never selects anything.

Determinism: model init is seeded by the registry; shuffling and negatives draw only from the trainer's
own :class:`torch.Generator`; checkpoints carry it, every generator the backbone keeps (edge dropout) and
the global RNG states. Two CPU runs with one seed give identical results, a run restored from a
checkpoint finishes exactly as an uninterrupted one, and a member of a fused group ends where the same
config trained alone ends, up to float rounding.

Example:
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.data import make_synthetic
    >>> from clear_tune.train import Trainer
    >>> ds = make_synthetic(n_users=60, n_items=40, d_v=16, d_t=16, seed=0)
    >>> cfg = TrainConfig(backbone="bpr", projection={"mode": "off"}, emb_dim=8, epochs=2, batch_size=256)
    >>> [result] = Trainer(cfg, ds).fit()           # fit() returns one result per member: here one trial
    >>> result["epochs_run"], str(result["stop_reason"]), result["valid"]["recall@20"] > 0
    (2, 'max_epochs', True)
    >>> group = Trainer([cfg, cfg.model_copy(update={"reg_weight": 1e-2})], ds).fit()   # two members, one model
    >>> [r["epochs_run"] for r in group]
    [2, 2]

Command line: ``python -m clear_tune.train --help`` (see :mod:`clear_tune.train.__main__`).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch

from clear_tune._storage import atomic_file
from clear_tune.config import TrainConfig
from clear_tune.data import RecDataset
from clear_tune.errors import DataError, TrainingError
from clear_tune.metrics import Evaluation, RankingEvaluator
from clear_tune.models import ModelContext, Recommender, backbone_uses_features, build_model
from clear_tune.records import StopReason, dataset_summary, training_part
from clear_tune.sampling import NegativeSampler
from clear_tune.train._device import (
    global_rng_state,
    model_context,
    model_generators,
    peak_memory_mb,
    resolve_device,
    set_global_rng_state,
)
from clear_tune.train._progress import LEFT, EpochReport, MemberEpoch, MemberProgress, OnEpoch
from clear_tune.train._threads import ThreadGovernor, batch_work

# Fields that may differ between the run that wrote a checkpoint and the one resuming from it.
# Parameters of at least this many elements per member take fused Adam on a CPU (see Trainer._new_optimizer).
FUSED_ADAM_ROWS = 1_000_000
RESUMABLE_CHANGES = {"epochs", "patience", "min_epochs", "device", "amp", "eval_batch_users", "threads"}


class Trainer:
    """Train and evaluate one :class:`TrainConfig` (one trial) or several that differ only in their projection
    and ``reg_weight`` (one fused group, one member each); see the module docstring.

    ``fit()`` returns a list of results, one per member (one for one config).
    """

    def __init__(
        self,
        config: TrainConfig | Sequence[TrainConfig],
        dataset: RecDataset | None = None,
        *,
        model_factory: Callable[[list[TrainConfig], ModelContext], Recommender] | None = None,
        cpu_budget: float | None = None,
    ) -> None:
        self.single = isinstance(config, TrainConfig)
        configs = [config] if isinstance(config, TrainConfig) else list(config)
        config = configs[0]
        # Cheap checks first, so a typo fails before any data loads.
        if model_factory is None:
            backbone_uses_features(config.backbone)  # SpecError for an unknown backbone
        self.device = resolve_device(config.device)
        if dataset is None:
            from clear_tune.data import cached_dataset

            dataset = cached_dataset(config.data, config.data_options)
        self.config, self.dataset = config, dataset  # config: the settings every member shares
        # a CPU trial must not collapse beside other jobs: threads are chosen again before every epoch
        self.governor = ThreadGovernor(config.threads, work=batch_work(config, dataset), cpu_budget=cpu_budget)
        self.use_amp = config.amp  # bf16 autocast: for GPUs, and CPUs with native bf16 (AVX512-BF16, AMX)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)  # peak_mem_mb is this run's, not the process's

        ctx = model_context(dataset, self.device)
        self.train_users, self.train_items = ctx.train_users, ctx.train_items  # (E,) each
        self.model = (model_factory or build_model)(configs, ctx).to(self.device)
        self.optimizer = self._new_optimizer()
        # Every draw comes from CPU generators, so one seed trains the same run on CPU and CUDA (up to float rounding).
        self.generator = torch.Generator().manual_seed(config.seed)
        pool = torch.unique(ctx.train_items) if config.negatives == "train_items" else None
        self.sampler = NegativeSampler(
            self.train_users, self.train_items, n_items=dataset.n_items, generator=self.generator, pool=pool
        )
        self.evaluator = RankingEvaluator(  # valid and test share one ranking per evaluation
            n_users=dataset.n_users,
            n_items=dataset.n_items,
            train=dataset.train,
            heldout={"valid": dataset.valid, "test": dataset.test},
            topk=config.topk,
            batch_users=config.eval_batch_users,
            device=self.device,
            per_user=True,
        )
        if self.evaluator.split_sizes["valid"] == 0:
            raise DataError(f"dataset {dataset.name!r} has no valid interactions: early stopping needs a valid split")
        if len(dataset.train) == 0:
            raise DataError(f"dataset {dataset.name!r} has no train interactions")

        # Progress, all of it checkpointed.
        self.epoch = 0
        self.members = [MemberProgress(c) for c in configs]
        self.array = list(range(len(configs)))  # the members in the model array, in array order
        self.live = list(self.array)  # ... those of them still training (all of them, unless none is)
        self.sec_train: list[float] = []
        self.sec_eval: list[float] = []

    def _new_optimizer(self) -> torch.optim.Optimizer:
        """One Adam over every parameter (weight_decay for a backbone whose MMRec yaml sets one: SLMRec). Tables of at
        least :data:`FUSED_ADAM_ROWS` floats per member (the raw-feature copies MMRec trains) take torch's fused Adam,
        on a CPU too: one pass over the table instead of several ((R, 7,050, 4,096): 19 ms a step instead of 168 ms),
        the same update up to float rounding. The rest keep the default implementation, so small models train as
        before; which group a parameter is in does not depend on how many members the array has."""
        params = list(self.model.parameters())
        members = max(self.model.n_members, 1)
        big = [p for p in params if p.is_floating_point() and p.numel() // members >= FUSED_ADAM_ROWS]
        small = [p for p in params if not any(p is q for q in big)]
        groups = ([{"params": small}] if small or not big else []) + ([{"params": big, "fused": True}] if big else [])
        return torch.optim.Adam(
            groups,
            lr=self.config.lr,
            weight_decay=float(getattr(self.model, "weight_decay", 0.0)),
            # decoupled (AdamW) for a backbone whose reference trains with AdamW (MMSSL)
            decoupled_weight_decay=bool(getattr(self.model, "decoupled_weight_decay", False)),
            fused=True if self.device.type == "cuda" else None,
        )

    # --------------------------------------------------------------- one trial: its member's progress
    best_metrics = property(lambda self: self.members[0].best_metrics)
    best_valid = property(lambda self: self.members[0].best_valid)
    best_epoch = property(lambda self: self.members[0].best_epoch)
    curve = property(lambda self: self.members[0].curve)
    stop_reason = property(lambda self: self.members[0].stop_reason)

    # ---------------------------------------------------------------------------------------- training
    def _train_epoch(self, epoch: int) -> tuple[list[float], list[int], int]:
        """One pass over the train interactions.

        Returns each member's mean batch loss, each member's first non-finite batch (-1: none) and the
        number of batches.
        """
        model, cfg = self.model, self.config
        self.governor.threads_now()
        model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * self.lr_scale(epoch)
        model.start_epoch(epoch)
        n_edges = self.train_users.numel()
        order = torch.randperm(n_edges, generator=self.generator).to(self.device)  # (E,)
        epoch_users, epoch_pos = self.train_users[order], self.train_items[order]  # (E,) each, shuffled
        # One negative per positive for the whole epoch in one vectorised draw: a handful of device syncs
        # per epoch instead of several per batch (what dominated small-batch steps on a GPU).
        epoch_neg = self.sampler.sample(epoch_users)  # (E,)
        batches = list(zip(*(t.split(cfg.batch_size) for t in (epoch_users, epoch_pos, epoch_neg))))
        losses = torch.empty(len(batches), model.n_members, device=self.device)  # (n_batches, R): no sync per step
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.use_amp else nullcontext()
        for b, (users, pos, neg) in enumerate(batches):  # (B,) each
            with autocast:
                loss = model.loss(users, pos, neg)  # (R,)
            self.optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()  # members share no parameter: each gets the gradient of its own loss
            self.optimizer.step()
            losses[b] = loss.detach()
        model.end_epoch(epoch)
        per_member = losses.T.tolist()  # (R, n_batches) on the host: one sync per epoch
        means = [math.fsum(values) / len(values) for values in per_member]
        first_bad = [next((b for b, v in enumerate(values) if not math.isfinite(v)), -1) for values in per_member]
        return means, first_bad, len(batches)

    def lr_scale(self, epoch: int) -> float:
        """MMRec's ``learning_rate_scheduler [factor, step]``: the lr of epoch ``e`` is ``lr · factor^((e−1)/step)``."""
        factor, step = self.config.lr_decay if self.config.lr_decay is not None else self.model.lr_decay
        return float(factor) ** ((epoch - 1) / float(step))

    @torch.no_grad()
    def evaluate_members(self) -> list[Evaluation]:
        """Full-ranking evaluation of every member in the array, in array order: ``metrics["valid"]``,
        ``metrics["test"]`` and the per-user values behind them."""
        self.model.eval()
        if self.model.ranks_by == "scores":  # a score function (MMRec's full_sort_predict, say), member by member
            return self.evaluator.evaluate_scores(self.model.member_scores, self.model.n_members)
        user_emb, item_emb = self.model.embeddings()  # (R, n_users, D), (R, n_items, D)
        return self.evaluator(user_emb, item_emb)

    def evaluate(self) -> tuple[dict[str, float], dict[str, float]]:
        """Full-ranking ``(valid, test)`` metrics of the first member in the array (the trial, for one trial)."""
        first = self.evaluate_members()[0]
        return first.metrics["valid"], first.metrics["test"]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def fit(self, on_epoch: OnEpoch | None = None) -> list[dict[str, Any]]:
        """Train epochs ``self.epoch + 1 .. config.epochs``; returns :meth:`result` of every member, in config order.

        ``on_epoch(trainer, report)`` runs after every epoch (after its evaluation, if any). Returning True
        pauses the whole run with stop reason ``STOPPED`` (a later ``fit()`` goes on); returning member
        indices prunes those members (:meth:`prune`), which leave the array. Members that left
        stay out of a later ``fit()``. With one config, a non-finite loss raises :class:`TrainingError`
        (the trial cannot go on); in a group it fails that member only.
        """
        cfg = self.config
        for m in self.live:
            if self.members[m].stop_reason in (StopReason.STOPPED, StopReason.MAX_EPOCHS):
                self.members[m].stop_reason = None
        while self.live and self.epoch < cfg.epochs:
            epoch = self.epoch + 1
            self._sync()
            start = time.perf_counter()
            losses, first_bad, n_batches = self._train_epoch(epoch)
            self._sync()
            self.sec_train.append(time.perf_counter() - start)
            trained = list(self.live)
            loss_of = dict(zip(trained, losses))
            for m in trained:
                self.members[m].share_s += self.sec_train[-1] / len(trained)
            for m, loss, bad in zip(trained, losses, first_bad):
                if bad >= 0:
                    self._fail(m, epoch, loss, bad, n_batches)
                else:
                    self.members[m].epochs_run = epoch
            self.epoch = epoch
            self._drop([m for m in trained if self.members[m].stop_reason == StopReason.FAILED])

            valid: dict[int, dict[str, float]] = {}
            sec_eval = None
            if self.live and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
                start = time.perf_counter()
                metrics = self.evaluate_members()  # array order: the live members
                sec_eval = time.perf_counter() - start
                self.sec_eval.append(sec_eval)
                for m, evaluation in zip(self.live, metrics):
                    valid[m] = self.members[m].record_evaluation(epoch, loss_of[m], evaluation)
                    self.members[m].share_s += sec_eval / len(self.live)

            report = EpochReport(
                epoch,
                [
                    MemberEpoch(
                        m,
                        loss,
                        valid.get(m),
                        self.members[m].best_valid,
                        self.members[m].best_epoch,
                        self.members[m].stop_reason,
                    )
                    for m, loss in zip(trained, losses)
                ],
                self.sec_train[-1],
                sec_eval,
            )
            decision = on_epoch(self, report) if on_epoch is not None else None
            if decision is True:
                for m in self.live:
                    self.members[m].stop_reason = self.members[m].stop_reason or StopReason.STOPPED
            elif decision:
                for m in decision:
                    if m in self.live and self.members[m].stop_reason is None:
                        self.prune(m)
            self._drop([m for m in self.live if self.members[m].stop_reason in LEFT])
            if any(self.members[m].stop_reason == StopReason.STOPPED for m in self.live):
                break
        for m in self.live:
            self.members[m].stop_reason = self.members[m].stop_reason or StopReason.MAX_EPOCHS
        return [self.result(m) for m in range(len(self.members))]

    def _fail(self, m: int, epoch: int, loss: float, batch: int, n_batches: int) -> None:
        cfg = self.members[m].config
        reason = (
            f"{cfg.backbone}: loss became {loss} at epoch {epoch}, batch {batch + 1}/{n_batches}: "
            f"lower the learning rate (lr={cfg.lr:g}) or raise reg_weight"
            + (", or run without --amp" if self.use_amp else "")
        )
        if self.single:
            raise TrainingError(reason)
        self.members[m].stop_reason, self.members[m].failed_reason = StopReason.FAILED, reason

    def prune(self, member: int, reason: str | None = None) -> None:
        """Prune ``member`` (a scheduler's verdict, ``reason`` its wording): it leaves the array at the end of this
        epoch and its record says pruned."""
        progress = self.members[member]
        if progress.stop_reason is None or not progress.stop_reason.left:
            progress.stop_reason, progress.failed_reason = StopReason.PRUNED, reason

    def drop_members(self, members: list[int], reason: StopReason) -> None:
        """Take ``members`` out of training for good (``reason`` becomes their stop reason): a fused trial drops
        the members whose records the harness already has."""
        members = [m for m in members if m in self.live]
        for m in members:
            self.members[m].stop_reason = reason
        self._drop(members)

    def _drop(self, leaving: list[int]) -> None:
        """Cut the members in ``leaving`` out of the model array and out of Adam's state.

        When nobody would be left the array stays as it is (``self.array``), for checkpoints; only
        ``self.live`` empties.
        """
        if not leaving:
            return
        for m in leaving:
            self.members[m].spectrum = self.model.spectrum_history(self.array.index(m))
        self.live = [m for m in self.live if m not in leaving]
        if not self.live:
            return
        keep = [self.array.index(m) for m in self.live]
        state = self.optimizer.state_dict()
        for param_state in state["state"].values():
            for name, value in param_state.items():
                if name != "step" and torch.is_tensor(value) and value.dim() > 0:
                    param_state[name] = value[keep]
        self.model.keep_members(keep)
        self.array = list(self.live)
        self.optimizer = self._new_optimizer()
        self.optimizer.load_state_dict(state)

    def result(self, member: int = 0) -> dict[str, Any]:
        """The trial-record fields of ``member`` so far (see :mod:`clear_tune.records`)."""
        progress = self.members[member]
        spectrum = self.model.spectrum_history(self.array.index(member)) if member in self.array else progress.spectrum
        return training_part(
            config=progress.config.model_dump(),
            dataset=dataset_summary(self.dataset),
            best_epoch=progress.best_epoch or None,
            epochs_run=progress.epochs_run,
            valid=dict(progress.best_metrics["valid"]),
            test=dict(progress.best_metrics["test"]),
            curve=[dict(point) for point in progress.curve],
            spectrum=spectrum,
            sec_per_epoch=statistics.median(self.sec_train) if self.sec_train else None,
            sec_per_eval=statistics.median(self.sec_eval) if self.sec_eval else None,
            peak_mem_mb=peak_memory_mb(self.device),
            device=str(self.device),
            stop_reason=progress.stop_reason,
        )

    # ------------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: model, optimizer, RNG states and every member's progress."""
        return {
            "configs": [m.config.model_dump() for m in self.members],
            "array": list(self.array),
            "live": list(self.live),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "model_generators": {name: g.get_state() for name, g in model_generators(self.model).items()},
            "rng": global_rng_state(),
            "progress": {
                "epoch": self.epoch,
                "members": [m.state() for m in self.members],
                "sec_train": self.sec_train,
                "sec_eval": self.sec_eval,
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output into a trainer built from the same configs, which may differ only
        in ``RESUMABLE_CHANGES``; members that had left the array are cut out of this one first."""
        saved_configs = state["configs"]
        if len(saved_configs) != len(self.members):
            raise TrainingError(
                f"checkpoint holds {len(saved_configs)} member(s), this run {len(self.members)}: "
                "resume with the same settings or start a new run"
            )
        for saved, member in zip(saved_configs, self.members):
            now = member.config.model_dump()
            changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
            if changed:
                raise TrainingError(
                    f"checkpoint was written for a different config ({', '.join(changed)} differ): "
                    f"resume with the same settings or start a new run"
                )
        if state["array"] != self.array:
            self.model.keep_members([self.array.index(m) for m in state["array"]])
            self.array = list(state["array"])
            self.optimizer = self._new_optimizer()
        self.live = list(state["live"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        for name, generator in model_generators(self.model).items():
            if name in state["model_generators"]:
                generator.set_state(state["model_generators"][name])
        set_global_rng_state(state["rng"])
        progress = state["progress"]
        self.epoch, self.sec_train, self.sec_eval = progress["epoch"], progress["sec_train"], progress["sec_eval"]
        for member, saved in zip(self.members, progress["members"]):
            for key, value in saved.items():
                if key == "stop_reason" and value is not None:
                    value = StopReason(value)  # a checkpoint from before the enum holds the plain string
                setattr(member, key, value)

    def save_checkpoint(self, path: str | os.PathLike[str], *, durable: bool = True) -> None:
        """Write :meth:`state_dict` to ``path`` atomically (temporary file in the same folder, then rename).

        ``durable=False`` skips the fsync, for a scratch folder that something else persists (Ray Tune).
        """
        with atomic_file(path, durable=durable) as out:
            torch.save(self.state_dict(), out)

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint` (our own file: not weights-only)."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except FileNotFoundError:
            raise TrainingError(f"checkpoint {str(path)!r} does not exist: check the --resume path") from None
        except Exception as exc:  # a truncated or foreign file
            raise TrainingError(
                f"checkpoint {str(path)!r} cannot be read ({type(exc).__name__}): it is not a "
                f"clear_tune checkpoint or is damaged"
            ) from None
        if not isinstance(state, dict) or not {"model", "optimizer", "progress", "configs"} <= state.keys():
            raise TrainingError(f"checkpoint {str(path)!r} is not a clear_tune trainer checkpoint")
        self.load_state_dict(state)


def train(
    config: TrainConfig | Sequence[TrainConfig],
    dataset: RecDataset | None = None,
    on_epoch: OnEpoch | None = None,
) -> list[dict[str, Any]]:
    """Build a :class:`Trainer` and run :meth:`Trainer.fit`; returns one result per member."""
    return Trainer(config, dataset).fit(on_epoch)
