"""Tools for plugin authors: :func:`check_backbone` runs the backbone contract on your class.

``python -m clear_tune.testing --plugin my_models.py my_backbone`` does the same from a shell.

Example:
    >>> from clear_tune.testing import check_backbone
    >>> report = check_backbone("bpr")
    >>> report.passed[:2]
    ['options typed', 'shapes']
"""

from clear_tune.testing._check import BackboneContractError, BackboneReport, check_backbone

__all__ = ["BackboneContractError", "BackboneReport", "check_backbone"]
