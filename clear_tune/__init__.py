"""clear-tune: hyperparameter search for CLEAR on Ray Tune and Optuna."""

from clear_tune.errors import ClearTuneError, DataError, SpecError, TrainingError

__all__ = ["ClearTuneError", "DataError", "SpecError", "TrainingError"]
__version__ = "0.1.0"
