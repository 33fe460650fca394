"""The YAML search spec: schema, validation (one-line errors), grid expansion with dedup, Optuna space.

Example:
    >>> from clear_tune.spec import load_spec
    >>> spec = load_spec("search_spaces/smoke.yaml")   # doctest: +SKIP
    >>> [plan.key for plan in spec.grid_trials()][:1]   # doctest: +SKIP
"""

from clear_tune.spec._groups import TrialGroup, group_plans
from clear_tune.spec._load import load_spec
from clear_tune.spec._optuna_space import OptunaSpace
from clear_tune.spec._schema import OPTUNA_PRUNERS, RAY_SCHEDULERS, SCHEDULERS, SEARCH_KINDS, SearchSpec
from clear_tune.spec._spec import Spec, TrialPlan, effective_projection, trial_key

__all__ = [
    "OPTUNA_PRUNERS",
    "OptunaSpace",
    "RAY_SCHEDULERS",
    "SCHEDULERS",
    "SEARCH_KINDS",
    "SearchSpec",
    "Spec",
    "TrialGroup",
    "TrialPlan",
    "effective_projection",
    "group_plans",
    "load_spec",
    "trial_key",
]
