"""Tests for hihpq_lib.data: sources, loaders, splits and their invariants.

All fixtures are tiny images generated in ``tmp_path``; the only test that touches the real
CIFAR-10 copy is marked ``slow`` and skips (with the reason) when the archive is absent.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from hihpq_lib import data as D
from hihpq_lib.data import sources as data_sources
from hihpq_lib.data import splits as data_splits
from tests.paths import cifar10_archive

CIFAR_LABELS = np.repeat(np.arange(10), 6000)  # real CIFAR-10 size, train+test pooled


@pytest.fixture
def tmp_data(tmp_path, monkeypatch):
    """Point data_dir()/cache_dir() at a temporary folder and hide HIHPQ_CIFAR10."""
    root = tmp_path / "datadir"
    monkeypatch.setenv("HIHPQ_DATA_DIR", str(root))
    monkeypatch.setenv("HIHPQ_CACHE_DIR", str(root / "cache"))
    monkeypatch.delenv("HIHPQ_CIFAR10", raising=False)
    return root


def _image(seed: int, size=(32, 32)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)


def _write_png(path, seed, size=(32, 32)) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = _image(seed, size)
    Image.fromarray(arr).save(path)
    return arr


def _write_cifar_tree(root, n_train=2, n_test=1, classes=D.CIFAR10_CLASSES) -> None:
    """train/<class>/NNNN.png and test/<class>/NNNN.png, 32x32 lossless."""
    seed = 0
    for part, n in (("train", n_train), ("test", n_test)):
        for name in classes:
            for i in range(n):
                _write_png(root / part / name / f"{i:04d}.png", seed)
                seed += 1


def _tar_gz(src_dir, archive, arcname) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src_dir, arcname=arcname)


def _write_torchvision_batches(root, per_batch=3) -> tuple[np.ndarray, np.ndarray]:
    """A fake cifar-10-batches-py in the real pickle format; return (images, labels)."""
    batches = root / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    rng = np.random.default_rng(0)
    all_imgs, all_labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, size=per_batch)]
        with open(batches / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data}, f, protocol=2)
        all_imgs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        all_labels.extend(labels)
    with open(batches / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(D.CIFAR10_CLASSES), "num_vis": 3072}, f, protocol=2)
    return np.concatenate(all_imgs), np.asarray(all_labels)


def _truncated_jpeg(path) -> None:
    buf = io.BytesIO()
    Image.fromarray(_image(7, (64, 64))).save(buf, format="JPEG", quality=90)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


# --------------------------------------------------------------------------------------
# CIFAR-10 protocols
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "protocol, n_train_per_class", [("I", 5000), ("II", 500), ("ii", 500)], ids=["I", "II", "ii"]
)
def test_cifar10_protocol_sizes_and_per_class_counts(protocol, n_train_per_class):
    s = D.cifar10_splits(CIFAR_LABELS, protocol, seed=0)
    assert s.sizes() == {
        "train": 10 * n_train_per_class,
        "query": 10_000,
        "database": 50_000,
        "val_query": 1_000,
        "val_database": 49_000,
    }
    for name, per_class in [
        ("train", n_train_per_class),
        ("query", 1000),
        ("database", 5000),
        ("val_query", 100),
        ("val_database", 4900),
    ]:
        counts = np.bincount(CIFAR_LABELS[getattr(s, name)], minlength=10)
        np.testing.assert_array_equal(counts, np.full(10, per_class), err_msg=name)
        assert getattr(s, name).dtype == np.int64
    assert s.meta["protocol"] == protocol.upper()


@pytest.mark.parametrize("protocol", ["I", "II"])
def test_cifar10_split_relations(protocol):
    s = D.cifar10_splits(CIFAR_LABELS, protocol, seed=3)
    assert np.intersect1d(s.query, s.database).size == 0
    assert np.union1d(s.query, s.database).size == 60_000  # every image is used once
    assert np.isin(s.val_query, s.database).all()
    assert np.intersect1d(s.val_query, s.query).size == 0
    np.testing.assert_array_equal(np.sort(s.val_database), np.setdiff1d(s.database, s.val_query))
    if protocol == "I":
        np.testing.assert_array_equal(s.train, s.database)
    else:
        assert np.isin(s.train, s.database).all()


def test_cifar10_split_matches_reference_procedure():
    """Independent re-run of the reference: np.random.seed, then one permutation per class."""
    seed = 5
    np.random.seed(seed)  # noqa: NPY002 (the reference uses the global RNG)
    query, train = [], []
    for c in range(10):
        members = np.flatnonzero(CIFAR_LABELS == c)
        perm = np.random.permutation(len(members))  # noqa: NPY002
        query.append(members[perm[:1000]])
        train.append(members[perm[1000:1500]])
    s = D.cifar10_splits(CIFAR_LABELS, "II", seed=seed)
    np.testing.assert_array_equal(s.query, np.concatenate(query))
    np.testing.assert_array_equal(s.train, np.concatenate(train))


def test_splits_deterministic_by_seed_and_change_with_seed():
    a = D.cifar10_splits(CIFAR_LABELS, "II", seed=1)
    b = D.cifar10_splits(CIFAR_LABELS, "II", seed=1)
    c = D.cifar10_splits(CIFAR_LABELS, "II", seed=2)
    for name in data_splits._SPLIT_NAMES:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.query, c.query)
    assert not np.array_equal(a.val_query, c.val_query)


def test_bad_protocol_and_too_small_classes():
    with pytest.raises(ValueError, match="protocol 'III'"):
        D.cifar10_splits(CIFAR_LABELS, "III")
    with pytest.raises(ValueError, match="class 0 has 1200 items"):
        D.cifar10_splits(np.repeat(np.arange(10), 1200), "II")
    with pytest.raises(ValueError, match="lower n_val_per_class"):
        D.per_class_splits(np.repeat(np.arange(3), 10), n_query_per_class=2, n_val_per_class=8)


def test_splits_json_round_trip(tmp_path):
    s = D.cifar10_splits(CIFAR_LABELS, "II", seed=4)
    path = D.save_splits(s, tmp_path / "run" / "splits.json")
    back = D.load_splits(path)
    for name in data_splits._SPLIT_NAMES:
        np.testing.assert_array_equal(getattr(back, name), getattr(s, name))
        assert getattr(back, name).dtype == np.int64
    assert back.meta == s.meta
    assert not list(path.parent.glob(".*tmp*"))  # atomic write left nothing behind


def test_splits_validation_errors(tmp_path):
    ok = dict(
        train=np.arange(4, 10),
        query=np.arange(0, 4),
        database=np.arange(4, 10),
        val_query=np.array([4]),
        val_database=np.arange(5, 10),
    )
    D.Splits(**ok)  # valid
    with pytest.raises(ValueError, match="split 'val_query' is empty"):
        D.Splits(
            **{**ok, "val_query": np.array([], dtype=np.int64), "val_database": ok["database"]}
        )
    with pytest.raises(ValueError, match="query and database overlap"):
        D.Splits(**{**ok, "query": np.arange(0, 5)})
    with pytest.raises(ValueError, match="val_query must be drawn from the database"):
        D.Splits(**{**ok, "val_query": np.array([0])})
    with pytest.raises(ValueError, match="out of range"):
        D.Splits(**ok, meta={"n_items": 5})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": [1]}))
    with pytest.raises(ValueError, match="not a hihpq splits file"):
        D.load_splits(bad)


# --------------------------------------------------------------------------------------
# Subsampling (fast mode)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["I", "II"])
def test_subsample_fraction_keeps_balance_and_relations(protocol):
    s = D.cifar10_splits(CIFAR_LABELS, protocol, seed=0)
    sub = D.subsample_split(s, CIFAR_LABELS, 0.1, seed=0)
    expected = {k: v // 10 for k, v in s.sizes().items()}
    assert sub.sizes() == expected
    for name in ("query", "database", "val_query"):
        counts = np.bincount(CIFAR_LABELS[getattr(sub, name)], minlength=10)
        assert counts.min() == counts.max(), name
    for name in data_splits._SPLIT_NAMES:
        assert np.isin(getattr(sub, name), getattr(s, name)).all()
    if protocol == "I":
        np.testing.assert_array_equal(sub.train, sub.database)
    else:
        assert np.isin(sub.train, sub.database).all()
    again = D.subsample_split(s, CIFAR_LABELS, 0.1, seed=0)
    np.testing.assert_array_equal(again.database, sub.database)
    assert sub.meta["subsample"]["fraction"] == 0.1


def test_subsample_per_class_counts_and_errors():
    s = D.cifar10_splits(CIFAR_LABELS, "I", seed=0)
    sub = D.subsample_split(s, CIFAR_LABELS, per_class={"query": 20, "database": 100})
    np.testing.assert_array_equal(np.bincount(CIFAR_LABELS[sub.query]), np.full(10, 20))
    np.testing.assert_array_equal(np.bincount(CIFAR_LABELS[sub.database]), np.full(10, 100))
    np.testing.assert_array_equal(np.bincount(CIFAR_LABELS[sub.val_query]), np.full(10, 2))
    with pytest.raises(ValueError, match="class 0 has only 1000"):
        D.subsample_split(s, CIFAR_LABELS, per_class={"query": 2000})
    with pytest.raises(ValueError, match="exactly one of"):
        D.subsample_split(s, CIFAR_LABELS)
    with pytest.raises(ValueError, match="fraction must lie in"):
        D.subsample_split(s, CIFAR_LABELS, 1.5)
    with pytest.raises(ValueError, match="training set lies inside the database"):
        D.subsample_split(s, CIFAR_LABELS, per_class={"train": 10})


# --------------------------------------------------------------------------------------
# CIFAR-10 sources
# --------------------------------------------------------------------------------------


def test_tar_gz_extraction_is_atomic_and_idempotent(tmp_path, tmp_data):
    tree = tmp_path / "src"
    _write_cifar_tree(tree)
    archive = tmp_path / "cifar.tar.gz"
    _tar_gz(tree, archive, arcname="cifar10-jpeg")  # one leading folder, like many archives
    root = D.resolve_cifar10(archive)
    assert root == tmp_data / "cifar10"
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(D.CIFAR10_CLASSES)
    marker = root / data_sources._MARKER
    assert json.loads(marker.read_text())["size"] == archive.stat().st_size
    assert not [p for p in tmp_data.iterdir() if p.name.startswith(".")]  # no temp folders
    # Idempotent: the second call reuses the extraction (same inode, marker untouched).
    inode, mtime = root.stat().st_ino, marker.stat().st_mtime_ns
    assert D.resolve_cifar10(archive) == root
    assert root.stat().st_ino == inode and marker.stat().st_mtime_ns == mtime
    # A different archive re-extracts.
    _write_png(tree / "train" / "cat" / "9999.png", 123)
    _tar_gz(tree, archive, arcname="cifar10-jpeg")
    os.utime(archive, ns=(1, 1))
    root2 = D.resolve_cifar10(archive)
    assert (root2 / "train" / "cat" / "9999.png").is_file()
    # The extraction is found again without naming the archive.
    assert D.resolve_cifar10() == root2


def test_tar_extraction_uses_data_filter(tmp_path, tmp_data):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        payload = b"x"
        info = tarfile.TarInfo("../escaped.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(D.CorruptImageError, match="unsafe member"):
        D.resolve_cifar10(archive)
    assert not (tmp_data / "escaped.txt").exists()
    assert not (tmp_data.parent / "escaped.txt").exists()
    assert not (tmp_data / "cifar10").exists()


def test_handmade_folder_is_never_overwritten(tmp_path, tmp_data):
    tree = tmp_path / "src"
    _write_cifar_tree(tree, n_train=1, n_test=1)
    archive = tmp_path / "cifar.tar.gz"
    _tar_gz(tree, archive, arcname=".")
    (tmp_data / "cifar10").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not extracted by hihpq"):
        D.resolve_cifar10(archive)


def test_load_cifar10_from_image_tree_with_cache(tmp_path, tmp_data, monkeypatch):
    tree = tmp_path / "tree"
    _write_cifar_tree(tree, n_train=2, n_test=1)
    ds = D.load_cifar10(tree, progress=False)
    assert ds.images.shape == (30, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.labels, np.r_[np.repeat(np.arange(10), 2), np.arange(10)])
    np.testing.assert_array_equal(ds.is_train, np.r_[np.ones(20, bool), np.zeros(10, bool)])
    np.testing.assert_array_equal(ds.images[0], _image(0))  # train/airplane/0000.png
    assert ds.class_names == list(D.CIFAR10_CLASSES)
    assert ds.superclass_of["truck"] == "vehicles" and ds.superclass_of["cat"] == "animals"
    assert list((tmp_data / "cache").glob("cifar10-*.images.npy"))

    def no_decode(*a, **k):
        raise AssertionError("cache was not used")

    monkeypatch.setattr(data_sources, "_decode_tree", no_decode)
    again = D.load_cifar10(tree, progress=False)
    np.testing.assert_array_equal(again.images, ds.images)


def test_cifar10_tree_with_wrong_classes(tmp_path, tmp_data):
    tree = tmp_path / "tree"
    _write_cifar_tree(tree, n_train=1, n_test=1, classes=("cat", "dog"))
    with pytest.raises(ValueError, match="CIFAR-10 needs exactly"):
        D.load_cifar10(tree, progress=False)


def test_torchvision_root_detection(tmp_path, tmp_data, monkeypatch):
    images, labels = _write_torchvision_batches(tmp_path / "tv")
    for path in (tmp_path / "tv", tmp_path / "tv" / "cifar-10-batches-py"):
        assert D.resolve_cifar10(path) == path
        ds = D.load_cifar10(path)
        np.testing.assert_array_equal(ds.images, images)
        np.testing.assert_array_equal(ds.labels, labels)
        assert ds.is_train.sum() == 15 and not ds.is_train[-3:].any()
    monkeypatch.setenv("HIHPQ_CIFAR10", str(tmp_path / "tv"))
    assert D.resolve_cifar10() == tmp_path / "tv"


def test_missing_source_error_lists_every_option(tmp_data, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(D.DatasetNotFoundError) as err:
        D.resolve_cifar10()
    msg = str(err.value)
    for needle in (
        "--data PATH",
        "HIHPQ_CIFAR10",
        str(tmp_data / "cifar10"),
        "download",
        "no network",
    ):
        assert needle in msg


def test_explicit_path_errors(tmp_path, tmp_data, monkeypatch):
    monkeypatch.setenv("HIHPQ_CIFAR10", str(tmp_path / "nowhere"))
    with pytest.raises(D.DatasetNotFoundError, match="HIHPQ_CIFAR10 = .*nowhere does not exist"):
        D.resolve_cifar10()
    (tmp_path / "empty").mkdir()
    with pytest.raises(D.DatasetNotFoundError, match="is not a CIFAR-10 copy"):
        D.resolve_cifar10(tmp_path / "empty")


def test_corrupt_image_error_names_the_file(tmp_path, tmp_data):
    bad = tmp_path / "folder" / "cat" / "broken.jpg"
    _truncated_jpeg(bad)
    _write_png(tmp_path / "folder" / "dog" / "ok.png", 1)
    ds = D.load_image_folder(tmp_path / "folder")
    with pytest.raises(D.CorruptImageError, match="broken.jpg"):
        D.read_images(ds, [0])
    np.testing.assert_array_equal(D.read_images(ds, [1], size=None)[0], _image(1))
    # Same inside a CIFAR-10 tree.
    tree = tmp_path / "tree"
    _write_cifar_tree(tree, n_train=1, n_test=1)
    _truncated_jpeg(tree / "test" / "ship" / "0001.jpg")
    with pytest.raises(D.CorruptImageError, match=r"test/ship/0001\.jpg"):
        D.load_cifar10(tree, progress=False)


# --------------------------------------------------------------------------------------
# Flickr25K, NUS-WIDE, folders, registry
# --------------------------------------------------------------------------------------


def test_flickr25k_list_format_and_split(tmp_path):
    root = tmp_path / "flickr"
    n, c = 40, 4
    rng = np.random.default_rng(0)
    targets = (rng.random((n, c)) < 0.4).astype(int)
    names = [f"mirflickr/im{i + 1}.jpg" for i in range(n)]
    for i in range(3):  # only a few real files: loading is lazy
        _write_png(root / names[i], i, size=(20 + 5 * i, 16))
    (root / "img.txt").write_text("\n".join(names) + "\n")
    np.savetxt(root / "targets.txt", targets, fmt="%d")
    ds = D.load_dataset("flickr25k", root=root)
    assert len(ds) == n and ds.is_multilabel and not ds.in_memory
    assert ds.labels.dtype == np.uint8 and ds.labels.shape == (n, c)
    np.testing.assert_array_equal(ds.labels, targets)
    assert ds.images[0] == str(root / names[0])
    imgs = D.read_images(ds, [0, 1, 2], size=12)
    assert imgs.shape == (3, 12, 12, 3) and imgs.dtype == np.uint8
    s = D.flickr25k_splits(ds.labels, seed=0, n_query=10, n_train=8)
    assert s.sizes()["query"] == 10 and s.sizes()["database"] == 30 and s.sizes()["train"] == 8
    assert np.isin(s.train, s.database).all() and np.isin(s.val_query, s.database).all()
    np.testing.assert_array_equal(s.query, np.random.RandomState(0).permutation(n)[:10])


def test_flickr25k_mismatched_lists(tmp_path):
    (tmp_path / "img.txt").write_text("a.jpg\nb.jpg\n")
    (tmp_path / "targets.txt").write_text("0 1\n")
    with pytest.raises(ValueError, match="lists 2 images but .* has 1 rows"):
        D.load_flickr25k(tmp_path)
    with pytest.raises(D.DatasetNotFoundError, match="img.txt"):
        D.load_flickr25k(tmp_path / "missing")


def _nus_fixture(root) -> None:
    def line(i, labels):
        return f"images/{i:03d}.png " + " ".join(map(str, labels))

    lab = {i: [(i + j) % 3 == 0 for j in range(5)] for i in range(30)}
    lab = {i: [int(x) for x in v] for i, v in lab.items()}
    root.mkdir(parents=True)
    (root / "database.txt").write_text("\n".join(line(i, lab[i]) for i in range(0, 24)) + "\n")
    (root / "test.txt").write_text("\n".join(line(i, lab[i]) for i in range(24, 30)) + "\n")
    (root / "train.txt").write_text("\n".join(line(i, lab[i]) for i in range(0, 10)) + "\n")
    (root / "train_10500.txt").write_text("\n".join(line(i, lab[i]) for i in range(0, 5)) + "\n")
    _write_png(root / "images" / "000.png", 0, size=(30, 20))


def test_nuswide_lists_and_splits(tmp_path):
    root = tmp_path / "nus"
    _nus_fixture(root)
    ds = D.load_dataset("NUS-WIDE", root=root)
    assert len(ds) == 30  # train paths are deduplicated against the database
    assert ds.labels.shape == (30, 5) and ds.labels.dtype == np.uint8
    s = D.make_splits(ds, seed=0)
    assert s.sizes()["query"] == 6 and s.sizes()["database"] == 24 and s.sizes()["train"] == 10
    assert np.isin(s.train, s.database).all()
    assert s.val_query.size == 2  # at most a tenth of the database
    assert D.load_nuswide(root, train_list="train_10500").predefined["train"].size == 5
    assert D.read_images(ds, [0], size=16).shape == (1, 16, 16, 3)
    with pytest.raises(ValueError, match="train_list"):
        D.load_nuswide(root, train_list="train_500")


def test_list_file_format_errors(tmp_path):
    bad = tmp_path / "database.txt"
    bad.write_text("a.jpg 0 1 0\nb.jpg 0 1\n")
    with pytest.raises(ValueError, match=r"database.txt:2: 2 labels but earlier lines have 3"):
        D.read_list_file(bad)
    bad.write_text("a.jpg 0 x\n")
    with pytest.raises(ValueError, match=r"database.txt:1: expected"):
        D.read_list_file(bad)


@pytest.mark.parametrize("fmt", ["txt", "json"])
def test_image_folder_with_superclasses(tmp_path, fmt):
    root = tmp_path / "pets"
    for k, name in enumerate(["cat", "dog", "car"]):
        for i in range(4):
            _write_png(root / name / f"{i}.png", 10 * k + i, size=(8, 8))
    (root / "notes.txt").write_text("ignored: not a folder")
    mapping = {"cat": "animal", "dog": "animal", "car": "vehicle"}
    sc = tmp_path / f"super.{fmt}"
    if fmt == "json":
        sc.write_text(json.dumps(mapping))
    else:
        sc.write_text("# class superclass\n" + "\n".join(f"{k} {v}" for k, v in mapping.items()))
    ds = D.load_dataset("folder", root=root, superclass_file=sc)
    assert ds.class_names == ["car", "cat", "dog"]
    np.testing.assert_array_equal(ds.labels, np.repeat([0, 1, 2], 4))
    assert ds.superclass_of == mapping
    np.testing.assert_array_equal(ds.superclass_labels(), np.repeat([1, 0, 0], 4))
    assert D.read_images(ds, size=None).shape == (12, 8, 8, 3)
    s = D.make_splits(ds, seed=0)
    assert s.sizes()["query"] == 3 and s.sizes()["val_query"] == 3  # one per class


def test_superclass_file_validation(tmp_path):
    root = tmp_path / "pets"
    for name in ["cat", "dog"]:
        _write_png(root / name / "0.png", 0, size=(8, 8))
    sc = tmp_path / "super.txt"
    sc.write_text("cat animal\ndog animal\ncow animal\n")
    with pytest.raises(ValueError, match=r"unknown class\(es\) \['cow'\]"):
        D.load_image_folder(root, superclass_file=sc)
    sc.write_text("cat animal\n")
    with pytest.raises(ValueError, match=r"no superclass for class\(es\) \['dog'\]"):
        D.load_image_folder(root, superclass_file=sc)
    sc.write_text("cat animal extra\n")
    with pytest.raises(ValueError, match="expected 'class superclass'"):
        D.load_image_folder(root, superclass_file=sc)


def test_cifar10_superclasses_constant():
    assert set(D.CIFAR10_SUPERCLASSES) == set(D.CIFAR10_CLASSES)
    vehicles = sorted(k for k, v in D.CIFAR10_SUPERCLASSES.items() if v == "vehicles")
    assert vehicles == ["airplane", "automobile", "ship", "truck"]
    assert sum(v == "animals" for v in D.CIFAR10_SUPERCLASSES.values()) == 6


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(ValueError, match="cifar10, flickr25k, folder, nuswide"):
        D.load_dataset("imagenet")


def test_image_dataset_input_checks():
    imgs = np.zeros((3, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        D.ImageDataset(imgs, np.array([0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        D.ImageDataset(imgs, np.array([0, 1, 2]), ["a", "b"])
    with pytest.raises(ValueError, match="uint8 array of shape"):
        D.ImageDataset(imgs.astype(np.float32), np.array([0, 1, 1]), ["a", "b"])
    ds = D.ImageDataset(imgs, np.array([0, 1, 1]), ["a", "b"])
    assert D.read_images(ds, [2, 0]).shape == (2, 4, 4, 3)
    assert len(ds.subset([1, 2])) == 2
    paths = D.ImageDataset(np.array(["a.png", "b.png"]), np.array([0, 1]), ["a", "b"])
    assert paths.images == ["a.png", "b.png"] and not paths.in_memory
    with pytest.raises(IndexError, match=r"indices must lie in \[0, 3\)"):
        D.read_images(ds, [3])


# --------------------------------------------------------------------------------------
# The real CIFAR-10 copy
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_cifar10_archive():
    archive = cifar10_archive()
    if archive is None:
        pytest.skip("HIHPQ_CIFAR10 does not name a CIFAR-10 archive (make test sets it)")
    # Extracts into data_dir()/cifar10 (gitignored, reused by later runs) and caches the
    # decoded pixels under cache_dir(); the first run takes about a minute.
    ds = D.load_cifar10(archive, progress=False)
    assert ds.images.shape == (60_000, 32, 32, 3) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(ds.labels, minlength=10), np.full(10, 6000))
    assert ds.is_train.sum() == 50_000
    np.testing.assert_array_equal(np.bincount(ds.labels[ds.is_train]), np.full(10, 5000))
    assert ds.images.std() > 30  # real pixels, not a blank array
    s = D.make_splits(ds, protocol="I", seed=0)
    assert s.sizes()["query"] == 10_000 and s.sizes()["database"] == 50_000
