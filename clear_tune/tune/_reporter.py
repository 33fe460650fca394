"""Ray's progress table, trimmed to what a CLEAR search needs.

Example:
    >>> from clear_tune.tune import make_reporter
    >>> make_reporter(spec)   # doctest: +SKIP
"""

from __future__ import annotations

from ray.tune import CLIReporter

from clear_tune.spec import Spec
from clear_tune.tune._trainable import BEST_METRIC, METRIC


def make_reporter(spec: Spec, *, fused: bool = False) -> CLIReporter:
    """Ray's progress table trimmed to trial, arm, backbone, k, λ, epoch, valid score and best so far; with
    ``fused`` trials also the members still training (``live/total``; k and λ show a group's range, the
    scores its best member)."""
    from clear_tune.metrics import short_name

    short = short_name(spec.metric)
    members = {"live": "members"} if fused else {}
    return CLIReporter(
        metric_columns={
            "arm": "arm",
            "backbone": "backbone",
            "k": "k",
            "lambda": "λ",
            **members,
            "epoch": "epoch",
            METRIC: f"valid {short}",
            BEST_METRIC: "best",
        },
        parameter_columns=_NoColumns(),
        max_report_frequency=30,
        sort_by_metric=False,
        max_column_length=24,
    )


class _NoColumns(dict):
    """An empty but truthy column mapping: Ray shows no config columns (the metrics above say it all)."""

    def __bool__(self) -> bool:
        return True
