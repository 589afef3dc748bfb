"""Where the images come from: archives, CIFAR-10, Flickr25K, NUS-WIDE and image folders.

Finds or extracts a dataset (:func:`resolve_cifar10`), decodes it once into a cache and
returns an :class:`~hihpq_lib.data.dataset.ImageDataset` (:func:`load_dataset` by name).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import tarfile
import uuid
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from hihpq_lib.data.dataset import (
    CorruptImageError,
    DatasetNotFoundError,
    ImageDataset,
    _check_superclass_map,
)
from hihpq_lib.data.images import _list_class_folder, _open_rgb, _progress
from hihpq_lib.utils.atomic import atomic_write, check_writable, clean_stale_tmp
from hihpq_lib.utils.runtime import cache_dir, data_dir

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_SUPERCLASSES",
    "DATASETS",
    "resolve_cifar10",
    "load_cifar10",
    "load_flickr25k",
    "load_nuswide",
    "load_image_folder",
    "folder_title",
    "looks_like_image_folder",
    "load_dataset",
    "read_superclass_file",
    "read_list_file",
]


#: CIFAR-10 class names in torchvision's label order (label ``i`` is ``CIFAR10_CLASSES[i]``).
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


#: The two-level CIFAR-10 hierarchy used for the hierarchy experiments: class -> superclass.
CIFAR10_SUPERCLASSES: dict[str, str] = {
    name: ("vehicles" if name in {"airplane", "automobile", "ship", "truck"} else "animals")
    for name in CIFAR10_CLASSES
}


_MARKER = ".hihpq_source.json"


_CACHE_VERSION = 1


# --------------------------------------------------------------------------------------
# CIFAR-10 sources
# --------------------------------------------------------------------------------------


def _torchvision_batches_dir(path: Path) -> Path | None:
    """The ``cifar-10-batches-py`` folder for a torchvision root (or that folder itself)."""
    for cand in (path / "cifar-10-batches-py", path):
        if (cand / "data_batch_1").is_file() and (cand / "test_batch").is_file():
            return cand
    return None


def _image_tree_root(path: Path) -> Path | None:
    """``path`` (or its single sub-folder) if it holds ``train/`` and ``test/`` folders."""
    if (path / "train").is_dir() and (path / "test").is_dir():
        return path
    subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subdirs) == 1 and (subdirs[0] / "train").is_dir() and (subdirs[0] / "test").is_dir():
        return subdirs[0]
    return None


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith((".tar.gz", ".tgz", ".tar"))


def _cifar10_help() -> str:
    return (
        "Provide CIFAR-10 in one of these ways:\n"
        "  1. --data PATH (CLI) or resolve_cifar10(PATH) / load_cifar10(PATH), where PATH is a "
        "torchvision root (holding cifar-10-batches-py), an image tree train/<class>/*.jpg + "
        "test/<class>/*.jpg, or a .tar.gz of such a tree;\n"
        "  2. the environment variable HIHPQ_CIFAR10=PATH (same kinds of PATH);\n"
        f"  3. an image tree at {data_dir() / 'cifar10'} (HIHPQ_DATA_DIR sets the data folder);\n"
        f"  4. an internet connection, for torchvision's download into "
        f"{data_dir() / 'cifar10-torchvision'}."
    )


def _archive_signature(archive: Path) -> dict:
    st = archive.stat()
    return {"archive": str(archive.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _extract_archive(archive: Path, target: Path) -> Path:
    """Extract ``archive`` into ``target`` atomically and idempotently; return the tree root.

    The archive is unpacked with ``tarfile``'s ``"data"`` filter into a temporary folder beside
    ``target`` and renamed into place. A marker file records the archive's path, size and
    mtime; a later call with the same archive reuses ``target``, a different archive
    replaces it. A ``target`` without a marker (made by hand) is never overwritten.
    """
    signature = _archive_signature(archive)
    marker = target / _MARKER
    if target.exists():
        if marker.is_file():
            try:
                recorded = json.loads(marker.read_text())
            except (OSError, ValueError):
                recorded = None
            if recorded == signature:
                root = _image_tree_root(target)
                if root is not None:
                    return root
        else:
            raise FileExistsError(
                f"{target} exists but was not extracted by hihpq (no {_MARKER} marker), so it is "
                f"not overwritten with {archive}. Delete or rename {target}, or point HIHPQ_CIFAR10 "
                "/ --data at it directly."
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    old = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(tmp, filter="data")
        except tarfile.FilterError as exc:
            raise CorruptImageError(
                f"archive {archive} holds an unsafe member, refused ({exc}); use an archive "
                "from a trusted source"
            ) from None
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, gzip.BadGzipFile):
                if exc.errno is not None:  # disk full, permissions: not the archive's fault
                    raise
            detail = (str(exc).splitlines() or [""])[0].rstrip(":")
            raise CorruptImageError(
                f"archive {archive} is truncated or not a .tar.gz/.tar ({type(exc).__name__}: "
                f"{detail}); download it again or unpack it by hand and pass the folder"
            ) from None
        root = _image_tree_root(tmp)
        if root is None:
            raise ValueError(
                f"archive {archive} does not contain train/<class>/ and test/<class>/ folders "
                "(at its top level or under one leading folder)"
            )
        (root / _MARKER).write_text(json.dumps(signature))
        if target.exists():  # a different archive was extracted before: swap it out
            os.rename(target, old)
        try:
            os.rename(root, target)
        except OSError:
            # Another process finished first: reuse its copy if it is the same archive.
            if (target / _MARKER).is_file() and json.loads(
                (target / _MARKER).read_text()
            ) == signature:
                return _image_tree_root(target)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return _image_tree_root(target)


def _recognise_cifar10(path: Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetNotFoundError(f"{what} {path} does not exist.\n{_cifar10_help()}")
    if _is_archive(path):
        return _extract_archive(path, data_dir() / "cifar10")
    if path.is_dir():
        if _torchvision_batches_dir(path) is not None:
            return path
        root = _image_tree_root(path)
        if root is not None:
            return root
    raise DatasetNotFoundError(
        f"{what} {path} is not a CIFAR-10 copy: expected a folder holding cifar-10-batches-py "
        "(or data_batch_1..5 + test_batch), a folder with train/<class>/ and test/<class>/, or "
        f"a .tar.gz of such a tree.\n{_cifar10_help()}"
    )


def resolve_cifar10(path: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Find (extracting or downloading if needed) a CIFAR-10 copy and return its folder.

    Resolution order:

    1. ``path``, else the environment variable ``HIHPQ_CIFAR10``: a torchvision root
       (holding ``cifar-10-batches-py``, or that folder itself), an image tree
       ``train/<class>/*`` + ``test/<class>/*`` (possibly under one leading folder), or a
       ``.tar.gz`` of such a tree, extracted into ``data_dir()/cifar10`` (atomically, once;
       a marker file records the archive's size and mtime so another archive re-extracts);
    2. ``data_dir()/cifar10`` if it exists;
    3. an earlier torchvision download in ``data_dir()/cifar10-torchvision``;
    4. ``torchvision.datasets.CIFAR10(root=data_dir()/'cifar10-torchvision', download=True)``
       (when ``download`` is true).

    Returns
    -------
    pathlib.Path
        Either a torchvision root / batches folder or an image-tree root (the folder holding
        ``train/`` and ``test/``); :func:`load_cifar10` accepts both.

    Raises
    ------
    DatasetNotFoundError
        When nothing is found and the download fails (e.g. offline); the message lists
        every way to provide the data.
    """
    if path is not None:
        return _recognise_cifar10(Path(path), "CIFAR-10 path")
    env = os.environ.get("HIHPQ_CIFAR10")
    if env:
        return _recognise_cifar10(Path(env), "HIHPQ_CIFAR10 =")
    default = data_dir() / "cifar10"
    if default.exists():
        return _recognise_cifar10(default, "default CIFAR-10 folder")
    tv_root = data_dir() / "cifar10-torchvision"
    if _torchvision_batches_dir(tv_root) is not None:
        return tv_root
    if not download:
        raise DatasetNotFoundError(f"CIFAR-10 not found (download disabled).\n{_cifar10_help()}")
    try:
        import torchvision

        torchvision.datasets.CIFAR10(root=str(tv_root), train=True, download=True)
    except Exception as exc:  # offline, proxy, disk full...: one clear message
        raise DatasetNotFoundError(
            f"CIFAR-10 not found locally and the torchvision download failed "
            f"({type(exc).__name__}: {exc}).\n{_cifar10_help()}"
        ) from exc
    return tv_root


#: What a CIFAR-10 batch pickle may build besides dicts, lists, strings, bytes and numbers:
#: numpy arrays (its reconstruct helper, ndarray and dtype, the scalar helper for labels
#: stored as numpy ints) and ``_codecs.encode``, with which Python 3 pickles bytes at
#: protocol 2. Nothing that can run code (``os.system``, ``builtins.eval``, ...).
_CIFAR_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),  # arrays at pickle protocol 5
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that builds only the types of the CIFAR-10 python batches."""

    def find_class(self, module: str, name: str):
        if (module, name) in _CIFAR_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a CIFAR-10 batch holds only arrays, lists "
            "and strings, and anything else could run code"
        )


def _load_pickle_batch(path: Path) -> dict:
    """A CIFAR-10 python batch file, read without running code from it.

    Raises ``CorruptImageError`` naming the file when it holds anything but the format's
    dict / list / bytes / str / ndarray (a hostile or foreign pickle is refused, not run).
    """
    try:
        with open(path, "rb") as f:
            entry = _CifarUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise CorruptImageError(
            f"CIFAR-10 batch file {path} is not a plain CIFAR-10 batch ({exc}); download a "
            "fresh copy, or convert it to an image tree (train/<class>/*.png, "
            "test/<class>/*.png) and pass that folder"
        ) from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise CorruptImageError(
            f"CIFAR-10 batch file {path} is truncated or corrupt ({type(exc).__name__}); "
            "download a fresh copy"
        ) from None
    if not isinstance(entry, dict):
        raise CorruptImageError(
            f"CIFAR-10 batch file {path} holds a {type(entry).__name__}, not a dict; "
            "download a fresh copy"
        )
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _load_cifar10_torchvision(batches: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    images, labels, is_train = [], [], []
    for name in names:
        file = batches / name
        if not file.is_file():
            raise DatasetNotFoundError(f"CIFAR-10 batch file {file} is missing")
        entry = _load_pickle_batch(file)
        try:
            data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            lab = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
        except Exception as exc:
            raise CorruptImageError(f"cannot read CIFAR-10 batch file {file}: {exc}") from exc
        images.append(data.transpose(0, 2, 3, 1))
        labels.append(lab)
        is_train.append(np.full(len(lab), name != "test_batch"))
    class_names = list(CIFAR10_CLASSES)
    meta = batches / "batches.meta"
    if meta.is_file():
        names = _load_pickle_batch(meta).get("label_names", CIFAR10_CLASSES)
        class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return (
        np.ascontiguousarray(np.concatenate(images)),
        np.concatenate(labels),
        np.concatenate(is_train),
        class_names,
    )


def _tree_files(root: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Files of a CIFAR-10 image tree: train then test, class order, sorted names."""
    files, labels, is_train = [], [], []
    for part in ("train", "test"):
        classes, per_class = _list_class_folder(root / part)
        if sorted(classes) != sorted(CIFAR10_CLASSES):
            raise ValueError(
                f"{root / part} has class folders {classes}; CIFAR-10 needs exactly "
                f"{list(CIFAR10_CLASSES)}"
            )
        for name, fs in zip(classes, per_class):
            files.extend(fs)
            labels.extend([CIFAR10_CLASSES.index(name)] * len(fs))
            is_train.extend([part == "train"] * len(fs))
    return files, np.asarray(labels, dtype=np.int64), np.asarray(is_train, dtype=bool)


def _files_key(root: Path, files: list[Path]) -> str:
    h = hashlib.sha1(f"v{_CACHE_VERSION}:{root.resolve()}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array))


def _decode_tree(files: list[Path], progress: bool) -> np.ndarray:
    out = np.empty((len(files), 32, 32, 3), dtype=np.uint8)
    for k, f in enumerate(_progress(files, progress, "decoding CIFAR-10")):
        arr = np.asarray(_open_rgb(f), dtype=np.uint8)
        if arr.shape != (32, 32, 3):
            raise ValueError(f"CIFAR-10 image {f} has shape {arr.shape}, expected (32, 32, 3)")
        out[k] = arr
    return out


def load_cifar10(
    path: str | os.PathLike | None = None, *, progress: bool = True, cache: bool = True
) -> ImageDataset:
    """Load all 60,000 CIFAR-10 images into memory (train images first, then test).

    Parameters
    ----------
    path : path-like, optional
        Any source :func:`resolve_cifar10` accepts (default: its resolution order).
    progress : bool
        Show a tqdm bar while decoding image files.
    cache : bool
        For image trees, keep the decoded pixels as ``.npy`` files under ``cache_dir()``,
        keyed by the tree's file names, sizes and mtimes, so later loads take about a second.

    Returns
    -------
    ImageDataset
        ``images`` (60000, 32, 32, 3) uint8; ``labels`` (60000,) int64 in torchvision order
        (:data:`CIFAR10_CLASSES`); ``is_train`` (60000,) bool; ``superclass_of`` =
        :data:`CIFAR10_SUPERCLASSES`; ``name="cifar10"``. Image trees are read class folder by
        class folder, files in sorted order; torchvision roots in batch order.
    """
    root = resolve_cifar10(path)
    batches = _torchvision_batches_dir(root)
    if batches is not None:
        images, labels, is_train, class_names = _load_cifar10_torchvision(batches)
    else:
        files, labels, is_train = _tree_files(root)
        class_names = list(CIFAR10_CLASSES)
        images = None
        if cache:
            key = _files_key(root, files)
            cdir = cache_dir()
            img_file, meta_file = (
                cdir / f"cifar10-{key}.images.npy",
                cdir / f"cifar10-{key}.meta.npz",
            )
            if img_file.is_file() and meta_file.is_file():
                with np.load(meta_file) as meta:
                    if np.array_equal(meta["labels"], labels) and np.array_equal(
                        meta["is_train"], is_train
                    ):
                        images = np.load(img_file)
            if images is None or images.shape != (len(files), 32, 32, 3):
                check_writable(
                    cdir,
                    "image cache folder",
                    "set HIHPQ_CACHE_DIR (or HIHPQ_DATA_DIR) to a writable folder",
                )
                clean_stale_tmp(cdir)
                images = _decode_tree(files, progress)
                _atomic_save_npy(img_file, images)
                atomic_write(meta_file, lambda f: np.savez(f, labels=labels, is_train=is_train))
        else:
            images = _decode_tree(files, progress)
    superclass_of = CIFAR10_SUPERCLASSES if class_names == list(CIFAR10_CLASSES) else None
    return ImageDataset(
        images=images,
        labels=labels,
        class_names=class_names,
        superclass_of=superclass_of,
        name="cifar10",
        is_train=is_train,
    )


# --------------------------------------------------------------------------------------
# Flickr25K, NUS-WIDE, user folders
# --------------------------------------------------------------------------------------


def read_list_file(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Parse a NUS-WIDE style list: one ``<image path> <0/1> <0/1> ...`` line per image.

    Returns
    -------
    paths : list of str, length n
    labels : (n, C) uint8 ndarray of 0/1
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"list file {path} not found")
    paths, rows = [], []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            row = [int(t) for t in tokens[1:]]
        except ValueError as exc:
            raise ValueError(
                f"{path}:{lineno}: expected '<image path> <0/1> ...' (labels as integers); {exc}"
            ) from exc
        if rows and len(row) != len(rows[0]):
            raise ValueError(
                f"{path}:{lineno}: {len(row)} labels but earlier lines have {len(rows[0])}"
            )
        paths.append(tokens[0])
        rows.append(row)
    if not paths:
        raise ValueError(f"list file {path} is empty")
    labels = np.asarray(rows, dtype=np.int64)
    if labels.shape[1] == 0 or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{path}: labels must be a non-empty multi-hot row of 0/1 per line")
    return paths, labels.astype(np.uint8)


def _default_class_names(n: int, prefix: str) -> list[str]:
    return [f"{prefix}{i:02d}" for i in range(n)]


def load_flickr25k(
    root: str | os.PathLike | None = None,
    img_root: str | os.PathLike | None = None,
    *,
    class_names: Sequence[str] | None = None,
) -> ImageDataset:
    """Flickr25K (MIRFLICKR-25K) in the reference's list format, images read lazily.

    Parameters
    ----------
    root : path-like, optional
        Folder holding ``img.txt`` (one relative image path per line) and ``targets.txt``
        (one whitespace-separated multi-hot row per line, same order); default
        ``data_dir()/flickr25k``.
    img_root : path-like, optional
        Folder the image paths are relative to (default ``root``).
    class_names : sequence of str, optional
        Names of the C label columns (default ``label00``, ``label01``, ...).

    Returns
    -------
    ImageDataset
        ``images``: list of N paths; ``labels``: (N, C) uint8 multi-hot; ``name="flickr25k"``.
    """
    root = Path(root) if root is not None else data_dir() / "flickr25k"
    img_root = Path(img_root) if img_root is not None else root
    img_file, tgt_file = root / "img.txt", root / "targets.txt"
    for f in (img_file, tgt_file):
        if not f.is_file():
            raise DatasetNotFoundError(
                f"Flickr25K list file {f} not found: pass root= the folder holding img.txt and "
                "targets.txt (the reference's format), or place them in data/flickr25k"
            )
    paths = [line.strip() for line in img_file.read_text().splitlines() if line.strip()]
    try:
        targets = np.loadtxt(tgt_file, dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise ValueError(f"{tgt_file}: expected rows of 0/1 integers; {exc}") from exc
    if len(paths) != len(targets):
        raise ValueError(
            f"{img_file} lists {len(paths)} images but {tgt_file} has {len(targets)} rows"
        )
    names = (
        list(class_names)
        if class_names is not None
        else _default_class_names(targets.shape[1], "label")
    )
    return ImageDataset(
        images=[str(img_root / p) for p in paths],
        labels=targets,
        class_names=names,
        name="flickr25k",
    )


def load_nuswide(
    root: str | os.PathLike | None = None,
    img_root: str | os.PathLike | None = None,
    *,
    train_list: str = "train",
    class_names: Sequence[str] | None = None,
) -> ImageDataset:
    """NUS-WIDE in the reference's list format, images read lazily.

    Parameters
    ----------
    root : path-like, optional
        Folder holding ``database.txt``, ``test.txt`` and ``train.txt`` (or
        ``train_10500.txt``), each line ``<image path> <0/1> x C`` (see
        :func:`read_list_file`); default ``data_dir()/nuswide``.
    img_root : path-like, optional
        Folder the image paths are relative to (default ``root``).
    train_list : {"train", "train_10500"}
        Which training list to read (the reference's ``train_file`` option).
    class_names : sequence of str, optional
        Names of the C label columns (default ``concept00``, ...).

    Returns
    -------
    ImageDataset
        ``images``: list of the distinct paths (database, then test, then train-only);
        ``labels``: (N, C) uint8; ``predefined``: ``{"query", "database", "train"}`` (n,) int64
        index arrays into the dataset; ``name="nuswide"``.
    """
    if train_list not in ("train", "train_10500"):
        raise ValueError(f"train_list must be 'train' or 'train_10500', got {train_list!r}")
    root = Path(root) if root is not None else data_dir() / "nuswide"
    img_root = Path(img_root) if img_root is not None else root
    files = {"database": "database.txt", "query": "test.txt", "train": f"{train_list}.txt"}
    for f in files.values():
        if not (root / f).is_file():
            raise DatasetNotFoundError(
                f"NUS-WIDE list file {root / f} not found: pass root= the folder holding "
                f"{', '.join(files.values())} (the reference's format), or place them in data/nuswide"
            )
    index: dict[str, int] = {}
    all_paths: list[str] = []
    all_labels: list[np.ndarray] = []
    predefined = {}
    for split, fname in files.items():
        paths, labels = read_list_file(root / fname)
        if all_labels and labels.shape[1] != all_labels[0].shape[0]:
            raise ValueError(
                f"{root / fname} has {labels.shape[1]} label columns, other lists differ"
            )
        ids = np.empty(len(paths), dtype=np.int64)
        for k, (p, row) in enumerate(zip(paths, labels)):
            if p not in index:
                index[p] = len(all_paths)
                all_paths.append(p)
                all_labels.append(row)
            elif not np.array_equal(all_labels[index[p]], row):
                raise ValueError(f"{p} appears in several lists with different labels ({fname})")
            ids[k] = index[p]
        predefined[split] = ids
    labels = np.stack(all_labels)
    names = (
        list(class_names)
        if class_names is not None
        else _default_class_names(labels.shape[1], "concept")
    )
    return ImageDataset(
        images=[str(img_root / p) for p in all_paths],
        labels=labels,
        class_names=names,
        name="nuswide",
        predefined=predefined,
    )


def _no_duplicate_keys(path: Path):
    def hook(pairs):
        seen: dict = {}
        for key, value in pairs:
            if key in seen:
                raise ValueError(
                    f"class {key!r} appears twice (superclasses {seen[key]!r} and {value!r}); "
                    "keep one line per class"
                )
            seen[key] = value
        return seen

    return hook


def read_superclass_file(
    path: str | os.PathLike, class_names: Sequence[str] | None = None
) -> dict[str, str]:
    """Read a class -> superclass map from a text file or a JSON file.

    Text format: one ``class superclass`` pair per line (whitespace-separated; ``#`` starts a
    comment). JSON format: an object ``{"class": "superclass", ...}``. With ``class_names``
    the map is validated: an unknown or missing class raises ``ValueError`` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"superclass file {path} not found")
    text = path.read_text()
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            mapping = json.loads(text, object_pairs_hook=_no_duplicate_keys(path))
        except ValueError as exc:
            raise ValueError(f"superclass file {path} is not valid JSON: {exc}") from None
    else:
        mapping = {}
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{path}:{lineno}: expected 'class superclass', got {line!r}")
            if parts[0] in mapping and mapping[parts[0]] != parts[1]:
                raise ValueError(f"{path}:{lineno}: class {parts[0]!r} is given two superclasses")
            mapping[parts[0]] = parts[1]
    if class_names is not None:
        _check_superclass_map(mapping, class_names, source=f"superclass file {path}")
    return mapping


#: Folder names that describe a split rather than a dataset: a folder so named takes its
#: parent's name in results (``tiny-imagenet/train`` is "tiny-imagenet").
_SPLIT_FOLDER_NAMES = {"train", "training", "val", "valid", "validation", "test", "images"}


def folder_title(root: str | os.PathLike) -> str:
    """The name results give an image folder: its own name, or its parent's for a split
    folder (``train``, ``val``, ...).

    >>> folder_title("/data/tiny-imagenet/train"), folder_title("/data/flowers")
    ('tiny-imagenet', 'flowers')
    """
    path = Path(root).expanduser().resolve()
    if path.name.lower() in _SPLIT_FOLDER_NAMES and path.parent.name:
        return path.parent.name
    return path.name or "folder"


def _read_class_tree(root: Path, what: str) -> tuple[list[str], list[list[Path]]]:
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"{what} {root} does not exist (expected {root}/<class>/<image>)"
        )
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_like = [p.name for p in subdirs if p.name.lower() in _SPLIT_FOLDER_NAMES]
    if split_like and all(
        not any(f.is_file() for f in p.iterdir()) for p in subdirs if p.name in split_like
    ):
        train = next((n for n in split_like if n.lower().startswith("train")), split_like[0])
        other = next((n for n in split_like if n != train), None)
        hint = f" --query-data {root / other}" if other else ""
        raise ValueError(
            f"{what} {root} holds split folders ({', '.join(split_like)}), not class folders: "
            f"pass --data {root / train}{hint}"
        )
    return _list_class_folder(root)


def load_image_folder(
    root: str | os.PathLike,
    superclass_file: str | os.PathLike | None = None,
    *,
    query_root: str | os.PathLike | None = None,
) -> ImageDataset:
    """A user dataset laid out as ``root/<class>/<image>``, read lazily.

    Parameters
    ----------
    root : path-like
        Folder with one sub-folder per class (sorted names give the label order); image
        files end in one of :data:`IMAGE_EXTENSIONS` and are taken in sorted order.
    superclass_file : path-like, optional
        Two-level hierarchy, see :func:`read_superclass_file`; every class must be mapped.
    query_root : path-like, optional
        A second folder with the **same** class sub-folders (e.g. an official ``val/``):
        its images come after ``root``'s and are marked ``is_train=False``, so
        :func:`~hihpq_lib.data.splits.folder_splits` takes the queries from it.

    Returns
    -------
    ImageDataset
        ``images``: list of N paths; ``labels``: (N,) int64; ``name="folder"``; ``title``:
        the folder's name (:func:`folder_title`); ``is_train``: which images come from
        ``root`` (only with ``query_root``).
    """
    root = Path(root).expanduser()
    classes, per_class = _read_class_tree(root, "image folder")
    paths = [str(p) for fs in per_class for p in fs]
    labels = np.concatenate([np.full(len(fs), i, dtype=np.int64) for i, fs in enumerate(per_class)])
    is_train = None
    if query_root is not None:
        query_root = Path(query_root).expanduser()
        q_classes, q_files = _read_class_tree(query_root, "query folder")
        if q_classes != classes:
            only_q = sorted(set(q_classes) - set(classes))
            only_d = sorted(set(classes) - set(q_classes))
            parts = []
            if only_q:
                parts.append(f"only in the query folder: {', '.join(only_q[:5])}")
            if only_d:
                parts.append(f"only in the data folder: {', '.join(only_d[:5])}")
            raise ValueError(
                f"query folder {query_root} and image folder {root} must hold the same class "
                f"sub-folders ({'; '.join(parts)}); rename or remove those folders"
            )
        paths += [str(p) for fs in q_files for p in fs]
        q_labels = [np.full(len(fs), i, dtype=np.int64) for i, fs in enumerate(q_files)]
        is_train = np.concatenate(
            [np.ones(len(labels), bool), np.zeros(len(paths) - len(labels), bool)]
        )
        labels = np.concatenate([labels, *q_labels])
    superclass_of = (
        read_superclass_file(superclass_file, classes) if superclass_file is not None else None
    )
    return ImageDataset(
        images=paths,
        labels=labels,
        class_names=classes,
        superclass_of=superclass_of,
        name="folder",
        is_train=is_train,
        title=folder_title(root),
    )


def looks_like_image_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder of class sub-folders holding images (not CIFAR-10)."""
    try:
        _read_class_tree(Path(path).expanduser(), "image folder")
    except (OSError, ValueError):
        return False
    return True


#: Dataset registry used by :func:`load_dataset`: name -> loader.
DATASETS: dict[str, Callable[..., ImageDataset]] = {
    "cifar10": load_cifar10,
    "flickr25k": load_flickr25k,
    "nuswide": load_nuswide,
    "folder": load_image_folder,
}


def load_dataset(name: str, **kwargs) -> ImageDataset:
    """Load a dataset by registry name (``cifar10``, ``flickr25k``, ``nuswide``, ``folder``).

    Keyword arguments go to the loader (:func:`load_cifar10`, :func:`load_flickr25k`,
    :func:`load_nuswide`, :func:`load_image_folder`). Names are case-insensitive and ignore
    ``-`` and ``_`` (``"NUS-WIDE"`` works).
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    return DATASETS[key](**kwargs)
