"""clear-tune: hyperparameter search for CLEAR on Ray Tune and Optuna.

``clear_tune.register_backbone`` registers a backbone of your own (README, "Your own model"); it is imported
on first use, so ``import clear_tune`` stays light.
"""

from typing import Any

from clear_tune.errors import ClearTuneError, DataError, SpecError, TrainingError

__all__ = ["ClearTuneError", "DataError", "SpecError", "TrainingError", "register_backbone"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "register_backbone":
        from clear_tune.models import register_backbone

        return register_backbone
    raise AttributeError(f"module 'clear_tune' has no attribute {name!r}")
