"""Datasets: the MMRec-format loader, synthetic and semi-synthetic generators, and download.

Every stage downstream consumes a :class:`RecDataset`. Name one by a source string:

* ``"synthetic"``: the built-in generator (:func:`make_synthetic`), the default on a fresh machine;
* ``"semi:PATH/TO/name.inter"``: a real interaction graph with generated features (:func:`make_semi_synthetic`);
* ``"mmrec:ROOT/NAME"``: an MMRec-format folder on disk (:func:`load_mmrec`), e.g. after :func:`download`.

Example:
    >>> from clear_tune.data import load_dataset
    >>> ds = load_dataset("synthetic", n_users=100, n_items=60, d_v=16, d_t=12, pref_dim=8)
    >>> ds.kind, ds.has_features
    ('synthetic', True)
"""

from clear_tune.data._dataset import RecDataset
from clear_tune.data._download import DEFAULT_URLS, download
from clear_tune.data._mmrec import load_mmrec, read_inter, write_mmrec, write_user_graph
from clear_tune.data._semi import make_semi_synthetic
from clear_tune.data._source import DataSource, cached_dataset, clear_dataset_cache, load_dataset, parse_source
from clear_tune.data._synthetic import SyntheticTruth, make_synthetic

__all__ = [
    "DEFAULT_URLS",
    "DataSource",
    "RecDataset",
    "SyntheticTruth",
    "cached_dataset",
    "clear_dataset_cache",
    "download",
    "load_dataset",
    "load_mmrec",
    "make_semi_synthetic",
    "make_synthetic",
    "parse_source",
    "read_inter",
    "write_mmrec",
    "write_user_graph",
]
