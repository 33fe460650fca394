"""Trial records -> tidy per-trial table -> the paper's ablation tables (CSV, Markdown, LaTeX).

Selection is always by validation (mean over seeds of the experiment's valid select metric, Recall@20 by
default); test numbers are only reported.

Example:
    >>> from clear_tune.aggregate import trials_frame, build_tables
    >>> records = [{"trial_id": f"t{s}", "status": "completed", "config": {"seed": s},
    ...             "valid": {"recall@20": 0.1 + s / 100}, "test": {"recall@20": 0.1}} for s in range(3)]
    >>> overall = build_tables(trials_frame(records))[0]
    >>> overall.display.loc[0, "valid R@20"]
    '0.1100 ± 0.0100'
"""

from clear_tune.aggregate._frame import VARIANT_NAMES, VARIANTS, metric_columns, trials_frame
from clear_tune.aggregate._load import LoadedExperiment, load_experiment
from clear_tune.aggregate._select import (
    PairedTest,
    best_by_validation,
    best_configs,
    config_summary,
    paired_test,
    paired_values,
)
from clear_tune.aggregate._tables import (
    TEST_NAME,
    Table,
    ablation_table,
    build_tables,
    efficiency_table,
    generalization_table,
    mean_std,
    overall_table,
    sensitivity_table,
    short_name,
    test_name,
)
from clear_tune.aggregate._write import to_latex, to_markdown, write_tables

__all__ = [
    "LoadedExperiment",
    "PairedTest",
    "TEST_NAME",
    "Table",
    "VARIANTS",
    "VARIANT_NAMES",
    "ablation_table",
    "best_by_validation",
    "best_configs",
    "build_tables",
    "config_summary",
    "efficiency_table",
    "generalization_table",
    "load_experiment",
    "mean_std",
    "metric_columns",
    "overall_table",
    "paired_test",
    "paired_values",
    "sensitivity_table",
    "short_name",
    "test_name",
    "to_latex",
    "to_markdown",
    "trials_frame",
    "write_tables",
]
