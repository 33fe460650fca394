"""clear-tune: hyperparameter search for CLEAR on Ray Tune and Optuna."""

import os as _os

# OpenMP threads sleep instead of spinning between parallel regions (clear_tune.train._threads): set before
# torch starts OpenMP, which clear-tune's commands and Ray workers import after this package.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from clear_tune.errors import ClearTuneError, DataError, SpecError, TrainingError

__all__ = ["ClearTuneError", "DataError", "SpecError", "TrainingError"]
__version__ = "0.1.0"
