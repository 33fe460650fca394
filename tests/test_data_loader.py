"""MMRec-format loader: good data loads, every kind of bad data is ONE exact DataError line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clear_tune.data import load_dataset, load_mmrec, read_inter
from clear_tune.errors import DataError

HEADER = "userID\titemID\tx_label"
# 3 users x 4 items; user 2 appears only in valid/test and must be dropped from them.
GOOD_ROWS = [
    "0\t0\t0",
    "0\t1\t0",
    "0\t2\t1",
    "0\t3\t2",
    "1\t1\t0",
    "1\t2\t0",
    "1\t0\t1",
    "1\t3\t2",
    "2\t0\t1",
    "2\t1\t2",
]


def write_dataset(root: Path, lines: list[str], *, name: str = "toy", image=None, text=None) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    if image is not None:
        np.save(folder / "image_feat.npy", image)
    if text is not None:
        np.save(folder / "text_feat.npy", text)
    return folder


def test_loads_good_data_drops_users_without_train_and_converts_float64(tmp_path):
    image = np.arange(4 * 5, dtype=np.float64).reshape(4, 5)
    text = np.ones((4, 3), dtype=np.float64)
    write_dataset(tmp_path, [HEADER, *GOOD_ROWS], image=image, text=text)
    ds = load_mmrec(tmp_path, "toy")
    assert (ds.n_users, ds.n_items, ds.kind) == (3, 4, "mmrec")
    assert ds.train.tolist() == [[0, 0], [0, 1], [1, 1], [1, 2]]
    assert ds.valid.tolist() == [[0, 2], [1, 0]]  # user 2 dropped: no train interaction
    assert ds.test.tolist() == [[0, 3], [1, 3]]
    assert ds.provenance["dropped_valid"] == 1 and ds.provenance["dropped_test"] == 1
    assert ds.image_feat.dtype == np.float32 and ds.text_feat.dtype == np.float32
    np.testing.assert_array_equal(ds.image_feat, image.astype(np.float32))
    assert ds.train.dtype == np.int64
    assert ds.provenance["kind"] == "mmrec" and ds.provenance["source"] == str((tmp_path / "toy").resolve())


def test_extra_columns_and_no_features(tmp_path):
    lines = ["userID\titemID\trating\ttimestamp\tx_label"]
    lines += [f"{u}\t{i}\t5\t1700000000\t{s}" for u, i, s in (r.split("\t") for r in GOOD_ROWS)]
    write_dataset(tmp_path, lines)
    ds = load_dataset(f"mmrec:{tmp_path}/toy")
    assert not ds.has_features and ds.image_feat is None
    assert len(ds.train) == 4


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(DataError) as err:
        load_mmrec(tmp_path, "nope")
    assert str(err.value) == (
        f"{tmp_path / 'nope'}: dataset folder not found; check ROOT/NAME or run "
        "`python -m clear_tune.data download nope`"
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as err:
        load_mmrec(tmp_path, "empty")
    assert str(err.value) == (
        f"{tmp_path / 'empty' / 'empty.inter'}: interaction file not found (the folder has no such file); "
        "check the path or run `python -m clear_tune.data download`"
    )


INTER = "{inter}"
BAD_INTER_CASES = [
    pytest.param(
        ["userID\titemID"] + [r.rsplit("\t", 1)[0] for r in GOOD_ROWS],
        f"{INTER}: the header lacks column(s) x_label (found userID, itemID); the first line must be a "
        "tab-separated header with userID, itemID, x_label",
        id="missing-column",
    ),
    pytest.param(
        ["0\t1587\t0", *GOOD_ROWS],
        f"{INTER}: the header lacks column(s) userID, itemID, x_label (found 0, 1587, 0); the first line must be a "
        "tab-separated header with userID, itemID, x_label",
        id="no-header",
    ),
    pytest.param(
        ["userID\titemID\titemID\tx_label"] + ["0\t1\t1\t0"],
        f"{INTER}: the header names column(s) itemID more than once; keep one of each",
        id="duplicate-column",
    ),
    pytest.param(
        [HEADER, *GOOD_ROWS[:3], HEADER, *GOOD_ROWS[3:]],
        f"{INTER}: the header is repeated at line 5 ('userID'); remove the duplicate header lines",
        id="repeated-header-row",
    ),
    pytest.param(
        [HEADER, *GOOD_ROWS[:2], "-1\t2\t0", *GOOD_ROWS[2:]],
        f"{INTER}: column userID has a negative id at line 4 ('-1'); ids must be integers >= 0",
        id="negative-id",
    ),
    pytest.param(
        [HEADER, "0\t1.5\t0", *GOOD_ROWS],
        f"{INTER}: column itemID must hold integer ids, found line 2 ('1.5'); fix that line",
        id="fractional-id",
    ),
    pytest.param(
        [HEADER, *GOOD_ROWS, "1\tabc\t0"],
        f"{INTER}: column itemID must hold integer ids, found line 12 ('abc'); fix that line",
        id="text-id",
    ),
    pytest.param(
        [HEADER, *GOOD_ROWS, "1\t2"],
        f"{INTER}: column x_label must hold integer ids, found line 12 (''); fix that line",
        id="short-row",
    ),
    pytest.param(
        [HEADER, *GOOD_ROWS[:1], "0\t3\t3", *GOOD_ROWS[1:]],
        f"{INTER}: x_label must be 0 (train), 1 (valid) or 2 (test), found line 3 ('3'); fix that line",
        id="bad-label",
    ),
    pytest.param(
        [HEADER],
        f"{INTER}: no interactions after the header; the file is empty",
        id="empty",
    ),
    pytest.param(
        [HEADER, *(r for r in GOOD_ROWS if not r.endswith("\t2"))],
        f"{INTER}: the test split (x_label=2) is empty after dropping users without train interactions; "
        "every split needs interactions",
        id="empty-test",
    ),
    pytest.param(
        [HEADER, "0\t0\t0", "1\t1\t0", "2\t2\t1", "0\t3\t2"],
        f"{INTER}: the valid split (x_label=1) is empty after dropping users without train interactions; "
        "every split needs interactions",
        id="valid-empty-after-dropping",
    ),
]


@pytest.mark.parametrize(("lines", "message"), BAD_INTER_CASES)
def test_bad_interaction_files(tmp_path, lines, message):
    write_dataset(tmp_path, lines)
    inter = tmp_path / "toy" / "toy.inter"
    with pytest.raises(DataError) as err:
        load_mmrec(tmp_path, "toy")
    assert str(err.value) == message.format(inter=inter)
    assert "\n" not in str(err.value)


def _feat(rows, cols=3, value=1.0, dtype=np.float32):
    return np.full((rows, cols), value, dtype=dtype)


def _with_nan():
    array = _feat(4)
    array[2, 1] = np.nan
    return array


def _with_inf():
    array = _feat(4, dtype=np.float64)
    array[3, 0] = np.inf
    return array


BAD_FEATURE_CASES = [
    pytest.param(
        _feat(5),
        _feat(4),
        "{image}: has 5 rows but the interactions have 4 items (max itemID + 1); row i must be item i",
        id="too-many-rows",
    ),
    pytest.param(
        _feat(4),
        _feat(3),
        "{text}: has 3 rows but the interactions have 4 items (max itemID + 1); row i must be item i",
        id="too-few-rows",
    ),
    pytest.param(
        _with_nan(),
        _feat(4),
        "{image}: contains NaN or inf (first at row 2); clean or re-extract the features",
        id="nan",
    ),
    pytest.param(
        _feat(4),
        _with_inf(),
        "{text}: contains NaN or inf (first at row 3); clean or re-extract the features",
        id="inf",
    ),
    pytest.param(
        np.ones(4),
        _feat(4),
        "{image}: expected a 2-D numeric array (items x dims), got shape (4,) dtype float64",
        id="1-d",
    ),
    pytest.param(
        np.array([{"a": 1}] * 4, dtype=object).reshape(4, 1),
        _feat(4),
        "{image}: not a readable .npy array (Object arrays cannot be loaded when allow_pickle=False); re-create it with numpy.save",
        id="pickled",
    ),
]


@pytest.mark.parametrize(("image", "text", "message"), BAD_FEATURE_CASES)
def test_bad_feature_files(tmp_path, image, text, message):
    folder = write_dataset(tmp_path, [HEADER, *GOOD_ROWS], image=image, text=text)
    with pytest.raises(DataError) as err:
        load_mmrec(tmp_path, "toy")
    assert str(err.value) == message.format(image=folder / "image_feat.npy", text=folder / "text_feat.npy")


def test_only_one_feature_file_is_an_error(tmp_path):
    folder = write_dataset(tmp_path, [HEADER, *GOOD_ROWS], image=_feat(4))
    with pytest.raises(DataError) as err:
        load_mmrec(tmp_path, "toy")
    assert str(err.value) == (
        f"{folder / 'text_feat.npy'}: not found but image_feat.npy is there; provide both feature files or neither"
    )


def test_corrupt_npy(tmp_path):
    folder = write_dataset(tmp_path, [HEADER, *GOOD_ROWS], text=_feat(4))
    (folder / "image_feat.npy").write_bytes(b"not numpy at all")
    with pytest.raises(
        DataError, match=r"image_feat\.npy: not a readable \.npy array .*; re-create it with numpy\.save$"
    ):
        load_mmrec(tmp_path, "toy")


def test_read_inter_on_real_baby(amazon_dir):
    users, items, labels = read_inter(amazon_dir / "baby" / "baby.inter")
    assert len(users) == 160_792
    assert (users.max() + 1, items.max() + 1) == (19_445, 7_050)
    assert np.bincount(labels).tolist() == [118_551, 20_559, 21_682]
