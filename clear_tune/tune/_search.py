"""Search algorithms: the full grid needs none; ``search.kind: optuna`` is :class:`FusedOptunaSearch`.

Optuna search runs over :class:`~clear_tune.spec.OptunaSpace` (define-by-run), with the spec's sampler (TPE by
default) seeded by ``search.seed``, and its study persisted in ``<experiment>/optuna.db`` (Optuna RDB storage on
SQLite) so that ``optuna-dashboard sqlite:///.../optuna.db`` opens it. One Optuna trial is one clear-tune trial.

Fused trials: whenever Ray asks for a trial, the searcher asks the study for up to ``max_members``
suggestions at once (or takes those still pending), and hands Ray one group of the suggestions that share
backbone, seed, data and trainer settings (:meth:`~clear_tune.config.TrainConfig.fusion_key`; the others wait
for the next group). Each member is told to the study as soon as it leaves its array (its best valid score,
PRUNED or FAIL), so TPE learns from finished members while their group's other members still train.

Example:
    >>> from clear_tune.tune import make_sampler
    >>> type(make_sampler("tpe", 0)).__name__
    'TPESampler'
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import optuna
from ray.tune.search import Searcher

from clear_tune.experiment import OPTUNA_DB
from clear_tune.records import Status, TrialReport
from clear_tune.spec import OptunaSpace, Spec, TrialPlan, group_plans, trial_key
from clear_tune.tune._trainable import BEST_METRIC


def optuna_storage_url(study_dir: str | Path) -> str:
    return f"sqlite:///{Path(study_dir).resolve() / OPTUNA_DB}"


def make_sampler(kind: str, seed: int | None) -> optuna.samplers.BaseSampler:
    from clear_tune.spec._schema import SAMPLERS

    return getattr(optuna.samplers, SAMPLERS[kind])(seed=seed)


def make_searcher(spec: Spec, study_dir: str | Path) -> Any | None:
    """:class:`FusedOptunaSearch` persisted to ``<study_dir>/optuna.db`` for optuna specs; None for grid."""
    if spec.settings.search.kind != "optuna":
        return None
    Path(study_dir).mkdir(parents=True, exist_ok=True)
    return FusedOptunaSearch(
        OptunaSpace(spec),
        storage=optuna_storage_url(study_dir),
        study_name=spec.name,
        sampler=make_sampler(spec.settings.search.sampler, spec.settings.search.seed),
        n_trials=spec.expected_trials(),
        max_members=spec.max_members(),
    )


class FusedOptunaSearch(Searcher):
    """Ray Tune searcher over an Optuna study whose Ray trials are groups of fused suggestions (see the module
    docstring). ``max_members=1`` gives one suggestion per Ray trial."""

    def __init__(
        self,
        space: OptunaSpace,
        *,
        storage: str,
        study_name: str,
        sampler: optuna.samplers.BaseSampler,
        n_trials: int,
        max_members: int,
    ) -> None:
        super().__init__(metric=BEST_METRIC, mode="max")
        self._space, self._storage, self._study_name, self._sampler = space, storage, study_name, sampler
        self._n_trials, self._max_members = n_trials, max_members
        self._study: optuna.Study | None = None
        self._pending: list[tuple[int, dict[str, Any]]] = []  # (Optuna trial number, plan param), not yet in a group
        self._asked = 0
        self._members: dict[str, dict[str, int]] = {}  # Ray trial id -> member key -> Optuna trial number
        self._told: set[int] = set()

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            self._study = optuna.create_study(
                storage=self._storage,
                study_name=self._study_name,
                load_if_exists=True,
                sampler=self._sampler,
                direction="maximize",
            )
        return self._study

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # the objective is fixed: each member's best valid score, maximised

    # Searcher.FINISHED is a str, returned as Ray's own searchers do; Ray's annotation leaves it out
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        while len(self._pending) < self._max_members and self._asked < self._n_trials:
            ot_trial = self.study.ask()
            self._pending.append((ot_trial.number, self._space(ot_trial)["trial"]))
            self._asked += 1
        if not self._pending:
            return Searcher.FINISHED if self._asked >= self._n_trials else None
        plans = []
        for number, param in self._pending:
            plan = TrialPlan.from_param({**param, "key": "pending"})
            plans.append(TrialPlan(plan.arm, trial_key(plan.arm, plan.config, suffix=f"t{number}"), plan.config))
        group = group_plans(plans, max_members=self._max_members)[0]  # the first suggestion and its partners
        chosen = {plan.key for plan in group.plans}
        numbers = {plan.key: number for plan, (number, _) in zip(plans, self._pending)}
        self._pending = [(n, p) for plan, (n, p) in zip(plans, self._pending) if plan.key not in chosen]
        self._members[trial_id] = {key: numbers[key] for key in chosen}
        return {"trial": group.to_param()}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        for key, member in TrialReport.from_result(result).members.items():
            if member.left:
                self._tell(trial_id, key, member.status, member.best_score)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        self.on_trial_result(trial_id, result or {})
        for key in list(self._members.get(trial_id, {})):
            # still untold at the end: failed with its trial, or stopped by a trial-level scheduler
            self._tell(trial_id, key, Status.FAILED if error or (result or {}).get("failed") else Status.PRUNED, None)
        self._members.pop(trial_id, None)

    def _tell(self, trial_id: str, key: str, status: str | None, value: float | None) -> None:
        number = self._members.get(trial_id, {}).pop(key, None)
        if number is None or number in self._told:
            return
        self._told.add(number)
        if status == "completed" and value is not None:
            self.study.tell(number, value)
        else:
            state = optuna.trial.TrialState.PRUNED if status == "pruned" else optuna.trial.TrialState.FAIL
            self.study.tell(number, state=state)

    def save(self, checkpoint_path: str) -> None:
        state = {k: v for k, v in self.__dict__.items() if k != "_study"}  # the study lives in its storage
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(state, fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            self.__dict__.update(pickle.load(fh))
        self._study = None
