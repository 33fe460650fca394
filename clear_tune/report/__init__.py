"""The Plotly report of an experiment: ``python -m clear_tune.report results/<experiment> [--open]``.

``build_report`` writes the tables (``tables/*.csv|md|tex`` plus ``trials.csv``) and one self-contained,
offline ``report.html`` (plotly.js embedded once, no CDN). ``clear_tune.run`` calls it at the end of a
search; it also works on a running or interrupted experiment.

Example:
    >>> from clear_tune.report import build_report, ReportPaths
    >>> callable(build_report) and ReportPaths.__name__
    'ReportPaths'
"""

from clear_tune.report._build import ReportPaths, build_report

__all__ = ["ReportPaths", "build_report"]
