"""MMRec-format datasets on disk: ``<root>/<name>/<name>.inter`` plus optional ``image_feat.npy``/``text_feat.npy``.

The ``.inter`` file is a TSV with a header naming at least ``userID``, ``itemID`` and ``x_label``
(0 = train, 1 = valid, 2 = test); ``rating``/``timestamp`` columns may be present and are ignored.
Ids are non-negative integers, contiguous from 0 in MMRec's published data, so ``n_users`` and
``n_items`` are ``max id + 1``. Users with no train interaction are dropped from valid/test (they
could not be ranked from anything they did). Every problem becomes one :class:`DataError` line that
names the file and says how to fix it.

Example:
    >>> import tempfile, pathlib
    >>> from clear_tune.data import load_mmrec
    >>> root = pathlib.Path(tempfile.mkdtemp()); (root / "toy").mkdir()
    >>> rows = ["userID\\titemID\\tx_label"] + [
    ...     f"{u}\\t{i}\\t{s}" for u in range(2) for i, s in [(0, 0), (1, 1), (2, 2)]
    ... ]
    >>> _ = (root / "toy" / "toy.inter").write_text("\\n".join(rows) + "\\n")
    >>> ds = load_mmrec(root, "toy")
    >>> ds.n_users, ds.n_items, len(ds.train), ds.has_features
    (2, 3, 2, False)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clear_tune.data._dataset import RecDataset
from clear_tune.errors import DataError

REQUIRED_COLUMNS = ("userID", "itemID", "x_label")
FEATURE_FILES = ("image_feat.npy", "text_feat.npy")


def _first_bad_line(column: pd.Series, bad: np.ndarray) -> str:
    """``line N ('value')`` for the first True in ``bad`` (line 1 is the header)."""
    row = int(np.flatnonzero(bad)[0])
    return f"line {row + 2} ({column.iloc[row]!r})"


def _integer_column(frame: pd.DataFrame, name: str, path: Path) -> np.ndarray:
    """Column ``name`` as int64, or a DataError naming the first line that is not a non-negative integer."""
    values = pd.to_numeric(frame[name], errors="coerce")
    as_float = values.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(as_float) | (as_float != np.round(as_float))
    if bad.any():
        if (frame[name].astype(str) == name).any():
            line = _first_bad_line(frame[name], (frame[name].astype(str) == name).to_numpy())
            raise DataError(f"{path}: the header is repeated at {line}; remove the duplicate header lines")
        raise DataError(
            f"{path}: column {name} must hold integer ids, found {_first_bad_line(frame[name], bad)}; fix that line"
        )
    ints = as_float.astype(np.int64)
    if (ints < 0).any():
        raise DataError(
            f"{path}: column {name} has a negative id at {_first_bad_line(frame[name], ints < 0)}; "
            "ids must be integers >= 0"
        )
    return ints


def read_inter(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read an MMRec ``.inter`` file into ``(users, items, x_label)`` int64 arrays (validated)."""
    path = Path(path)
    if not path.is_file():
        hint = "the folder does not exist" if not path.parent.is_dir() else "the folder has no such file"
        raise DataError(
            f"{path}: interaction file not found ({hint}); check the path or run `python -m clear_tune.data download`"
        )
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        header = handle.readline().rstrip("\r\n").split("\t")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataError(
            f"{path}: the header lacks column(s) {', '.join(missing)} (found {', '.join(header) or 'nothing'}); "
            "the first line must be a tab-separated header with userID, itemID, x_label"
        )
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise DataError(f"{path}: the header names column(s) {', '.join(duplicates)} more than once; keep one of each")
    try:
        frame = pd.read_csv(path, sep="\t", usecols=list(REQUIRED_COLUMNS), dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: not a valid tab-separated file ({str(exc).splitlines()[0]}); fix the file") from None
    if frame.empty:
        raise DataError(f"{path}: no interactions after the header; the file is empty")
    users = _integer_column(frame, "userID", path)
    items = _integer_column(frame, "itemID", path)
    labels = _integer_column(frame, "x_label", path)
    bad = ~np.isin(labels, (0, 1, 2))
    if bad.any():
        raise DataError(
            f"{path}: x_label must be 0 (train), 1 (valid) or 2 (test), "
            f"found {_first_bad_line(frame['x_label'], bad)}; "
            "fix that line"
        )
    return users, items, labels


def load_features(path: Path, n_items: int) -> np.ndarray:
    """A feature matrix ``(n_items, d)`` as float32, validated (row count, finiteness, no pickles)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not a readable .npy array ({reason}); re-create it with numpy.save") from None
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise DataError(
            f"{path}: expected a 2-D numeric array (items x dims), got shape {array.shape} dtype {array.dtype}"
        )
    if array.shape[0] != n_items:
        raise DataError(
            f"{path}: has {array.shape[0]} rows but the interactions have {n_items} items (max itemID + 1); "
            "row i must be item i"
        )
    array = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise DataError(f"{path}: contains NaN or inf (first at row {row}); clean or re-extract the features")
    return array


def drop_users_without_train(train: np.ndarray, held: np.ndarray) -> np.ndarray:
    """Rows of ``held`` (E, 2) whose user has at least one train interaction."""
    return held[np.isin(held[:, 0], np.unique(train[:, 0]))]


def load_mmrec(root: str | Path, name: str) -> RecDataset:
    """Load ``<root>/<name>/<name>.inter`` and its features as a :class:`RecDataset` (``kind="mmrec"``)."""
    folder = Path(root) / name
    if not folder.is_dir():
        raise DataError(
            f"{folder}: dataset folder not found; check ROOT/NAME or run `python -m clear_tune.data download {name}`"
        )
    inter_path = folder / f"{name}.inter"
    users, items, labels = read_inter(inter_path)
    pairs = np.column_stack([users, items])
    train = pairs[labels == 0]
    valid = drop_users_without_train(train, pairs[labels == 1])
    test = drop_users_without_train(train, pairs[labels == 2])
    for split, rows in (("train", train), ("valid", valid), ("test", test)):
        if len(rows) == 0:
            raise DataError(
                f"{inter_path}: the {split} split (x_label={('train', 'valid', 'test').index(split)}) is empty "
                "after dropping users without train interactions; every split needs interactions"
            )
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1

    feature_paths = [folder / f for f in FEATURE_FILES]
    present = [p.is_file() for p in feature_paths]
    if any(present) and not all(present):
        have, lack = (feature_paths[0], feature_paths[1]) if present[0] else (feature_paths[1], feature_paths[0])
        raise DataError(f"{lack}: not found but {have.name} is there; provide both feature files or neither")
    image_feat = text_feat = None
    if all(present):
        image_feat = load_features(feature_paths[0], n_items)
        text_feat = load_features(feature_paths[1], n_items)

    return RecDataset(
        name=name,
        kind="mmrec",
        n_users=n_users,
        n_items=n_items,
        train=train,
        valid=valid,
        test=test,
        image_feat=image_feat,
        text_feat=text_feat,
        provenance={
            "kind": "mmrec",
            "source": str(folder.resolve()),
            "inter": str(inter_path.resolve()),
            "features": "files" if image_feat is not None else "none",
            "dropped_valid": int((labels == 1).sum()) - len(valid),
            "dropped_test": int((labels == 2).sum()) - len(test),
        },
    )


def write_mmrec(dataset: RecDataset, root: str | Path, name: str | None = None) -> Path:
    """Write ``dataset`` as an MMRec-format folder ``<root>/<name>/`` (``name`` defaults to the dataset's) and
    return it: ``<name>.inter`` (userID, itemID, x_label) plus ``image_feat.npy``/``text_feat.npy`` when it has
    features. :func:`load_mmrec` reads it back to the same splits, and MMRec itself reads the same files, so
    a generated or semi-synthetic dataset can run in both systems side by side.

    Example:
        >>> import tempfile
        >>> from clear_tune.data import load_mmrec, make_synthetic, write_mmrec
        >>> ds = make_synthetic(n_users=40, n_items=30, d_v=16, d_t=16, pref_dim=8, seed=0)
        >>> folder = write_mmrec(ds, tempfile.mkdtemp(), "toy")
        >>> back = load_mmrec(folder.parent, "toy")
        >>> (back.train == ds.train).all() and back.n_items == ds.n_items
        True
    """
    name = name or dataset.name
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    splits = [(rows, label) for label, rows in enumerate((dataset.train, dataset.valid, dataset.test))]
    frame = pd.DataFrame(
        np.concatenate([np.column_stack([rows, np.full(len(rows), label)]) for rows, label in splits]),
        columns=list(REQUIRED_COLUMNS),
    )
    frame.to_csv(folder / f"{name}.inter", sep="\t", index=False)
    if dataset.has_features:
        np.save(folder / FEATURE_FILES[0], np.asarray(dataset.image_feat, dtype=np.float32))
        np.save(folder / FEATURE_FILES[1], np.asarray(dataset.text_feat, dtype=np.float32))
    return folder


USER_GRAPH_FILE = "user_graph_dict.npy"


def write_user_graph(dataset: RecDataset, folder: str | Path, k: int = 200) -> Path:
    """Write MMRec's ``user_graph_dict.npy`` for ``dataset`` into ``folder`` (DualGNN and DRAGON read it) and
    return its path.

    The file is what MMRec's ``preprocessing/dualgnn-gen-u-u-matrix.py`` writes: a pickled dict
    ``{user: [neighbours, counts]}`` (Python lists, every user ``0 .. n_users − 1``) of each user's top-``k``
    train co-occurrence neighbours, built by :func:`clear_tune.graphs.user_cooccurrence`, the same lists
    clear-tune's DualGNN reads, so both systems train on one graph.

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from clear_tune.data import make_synthetic, write_mmrec, write_user_graph
        >>> ds = make_synthetic(n_users=40, n_items=30, d_v=16, d_t=16, pref_dim=8, seed=0)
        >>> path = write_user_graph(ds, write_mmrec(ds, tempfile.mkdtemp(), "toy"))
        >>> graph = np.load(path, allow_pickle=True).item()
        >>> len(graph), [type(part).__name__ for part in graph[0]]
        (40, ['list', 'list'])
    """
    import torch

    from clear_tune.graphs import user_cooccurrence

    train = torch.as_tensor(np.asarray(dataset.train, dtype=np.int64))
    graph = user_cooccurrence(train[:, 0], train[:, 1], dataset.n_users, cap=k)
    indptr, index, weight = graph.indptr.tolist(), graph.index.tolist(), graph.weight.tolist()
    table = {u: [index[indptr[u] : indptr[u + 1]], weight[indptr[u] : indptr[u + 1]]] for u in range(dataset.n_users)}
    path = Path(folder) / USER_GRAPH_FILE
    np.save(path, np.array(table, dtype=object), allow_pickle=True)
    return path
