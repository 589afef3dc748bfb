"""Datasets and retrieval splits: CIFAR-10, Flickr25K, NUS-WIDE and user image folders.

This module is the first stage of the pipeline (data → backbone features → quantizer → ...).
It finds the images, loads them into an :class:`ImageDataset` and draws the index splits
(:class:`Splits`) of the retrieval protocols used by HiHPQ (Qiu et al., AAAI 2024), which
follow the reference implementation ``zexuanqiu/HiHPQ`` (``data.py``):

* **CIFAR-10 protocol I**: the 60,000 train+test images are pooled; per class 1,000 random
  images are queries and the other 5,000 are both the database and the training set
  (10,000 queries / 50,000 database / 50,000 training images).
* **CIFAR-10 protocol II**: same queries and database; the training set is 500 images per
  class taken from the database (10,000 / 50,000 / 5,000).
* **Flickr25K**: 2,000 random queries, the rest is the database, 5,000 of which train.
* **NUS-WIDE**: the published lists ``test.txt`` (queries), ``database.txt`` and
  ``train.txt`` (or ``train_10500.txt``).

On top of the reference, every split carries a **validation** pair carved from the database
side only: ``val_query`` (``n_val_per_class`` images per class drawn from the database) and
``val_database`` (the database minus ``val_query``). Model selection must use only
``(val_query, val_database)``; the test queries are never looked at.

Examples
--------
>>> import numpy as np
>>> labels = np.repeat(np.arange(10), 6000)          # CIFAR-10 sized labels, no images
>>> s = cifar10_splits(labels, protocol="II", seed=0)
>>> s.sizes()
{'train': 5000, 'query': 10000, 'database': 50000, 'val_query': 1000, 'val_database': 49000}
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from hihpq_lib.atomic import atomic_write, atomic_write_text, check_writable, clean_stale_tmp
from hihpq_lib.runtime import cache_dir, data_dir

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_SUPERCLASSES",
    "IMAGE_EXTENSIONS",
    "DATASETS",
    "CorruptImageError",
    "DatasetNotFoundError",
    "content_fingerprint",
    "ImageDataset",
    "Splits",
    "resolve_cifar10",
    "load_cifar10",
    "load_flickr25k",
    "load_nuswide",
    "load_image_folder",
    "load_dataset",
    "read_superclass_file",
    "read_list_file",
    "read_images",
    "read_image_file",
    "per_class_splits",
    "cifar10_splits",
    "flickr25k_splits",
    "list_splits",
    "make_splits",
    "add_validation",
    "subsample_split",
    "save_splits",
    "load_splits",
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

#: File name endings recognised as images in image-folder trees (lower case).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
)

_SPLIT_NAMES = ("train", "query", "database", "val_query", "val_database")
_MARKER = ".hihpq_source.json"
_CACHE_VERSION = 1


class CorruptImageError(OSError):
    """An image file could not be decoded; the message names the file."""


class DatasetNotFoundError(FileNotFoundError):
    """No usable copy of a dataset was found; the message lists the ways to provide one."""


# --------------------------------------------------------------------------------------
# ImageDataset
# --------------------------------------------------------------------------------------


@dataclass
class ImageDataset:
    """Images with labels, either decoded in memory or as a list of file paths (lazy).

    Parameters
    ----------
    images : (N, H, W, 3) uint8 ndarray, or list of N file paths (str)
        In-memory RGB pixels, or paths read on demand by :func:`read_images`.
    labels : (N,) int64 ndarray, or (N, C) uint8 ndarray
        Single-label class indices in ``[0, C)``, or multi-hot rows (Flickr25K, NUS-WIDE).
    class_names : sequence of str, length C
        Name of each class index / label column.
    superclass_of : dict str -> str, optional
        Two-level hierarchy: class name -> superclass name (must cover every class).
    name : str
        Registry name of the dataset (``"cifar10"``, ``"flickr25k"``, ``"nuswide"``,
        ``"folder"``); :func:`make_splits` dispatches on it.
    is_train : (N,) bool ndarray, optional
        Whether each item comes from the source's original training split (CIFAR-10 keeps
        it so the reference's pooling of train+test is reproducible and auditable).
    predefined : dict str -> (n,) int64 ndarray, optional
        Splits that come with the dataset (NUS-WIDE lists: ``"query"``, ``"database"``,
        ``"train"``), used by :func:`make_splits`.
    """

    images: np.ndarray | list[str]
    labels: np.ndarray
    class_names: Sequence[str]
    superclass_of: dict[str, str] | None = None
    name: str = "dataset"
    is_train: np.ndarray | None = None
    predefined: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.class_names = list(self.class_names)
        n_classes = len(self.class_names)
        if n_classes == 0:
            raise ValueError("ImageDataset needs at least one class name (class_names is empty)")
        if len(set(self.class_names)) != n_classes:
            raise ValueError(f"class_names contains duplicates: {self.class_names}")
        if isinstance(self.images, np.ndarray) and self.images.dtype.kind in "USO":
            self.images = self.images.tolist()  # an array of paths, as the reference keeps them
        if isinstance(self.images, np.ndarray):
            if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
                raise ValueError(
                    "in-memory images must be a uint8 array of shape (N, H, W, 3); got "
                    f"dtype {self.images.dtype} shape {self.images.shape}"
                )
        else:
            self.images = [str(p) for p in self.images]
        n = len(self.images)
        labels = np.asarray(self.labels)
        if labels.shape[0] != n:
            raise ValueError(f"{n} images but {labels.shape[0]} labels: they must match one to one")
        if labels.ndim == 1:
            if not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(f"single labels must be integers, got dtype {labels.dtype}")
            labels = labels.astype(np.int64, copy=False)
            if n and (labels.min() < 0 or labels.max() >= n_classes):
                raise ValueError(
                    f"labels must lie in [0, {n_classes}) to index class_names; got range "
                    f"[{labels.min()}, {labels.max()}]"
                )
        elif labels.ndim == 2:
            if labels.shape[1] != n_classes:
                raise ValueError(
                    f"multi-hot labels have {labels.shape[1]} columns but there are "
                    f"{n_classes} class names"
                )
            if n and not np.isin(labels, (0, 1)).all():
                raise ValueError("multi-hot labels must contain only 0 and 1")
            labels = labels.astype(np.uint8, copy=False)
        else:
            raise ValueError(f"labels must be (N,) or (N, C); got shape {labels.shape}")
        self.labels = labels
        if self.is_train is not None:
            self.is_train = np.asarray(self.is_train, dtype=bool)
            if self.is_train.shape != (n,):
                raise ValueError(f"is_train must have shape ({n},), got {self.is_train.shape}")
        if self.superclass_of is not None:
            _check_superclass_map(self.superclass_of, self.class_names, source="superclass_of")
            self.superclass_of = dict(self.superclass_of)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def n_classes(self) -> int:
        """Number of classes C."""
        return len(self.class_names)

    @property
    def is_multilabel(self) -> bool:
        """True for (N, C) multi-hot labels."""
        return self.labels.ndim == 2

    @property
    def in_memory(self) -> bool:
        """True when ``images`` is a decoded (N, H, W, 3) array rather than file paths."""
        return isinstance(self.images, np.ndarray)

    @property
    def superclass_names(self) -> list[str]:
        """Sorted distinct superclass names (empty without a hierarchy)."""
        return sorted(set(self.superclass_of.values())) if self.superclass_of else []

    def superclass_labels(self) -> np.ndarray:
        """Superclass index of every item.

        Returns
        -------
        (N,) int64 ndarray
            Index into :attr:`superclass_names`. Only for single-label datasets with a
            hierarchy.
        """
        if not self.superclass_of:
            raise ValueError(f"dataset {self.name!r} has no superclass_of map")
        if self.is_multilabel:
            raise ValueError("superclass_labels() needs single labels; this dataset is multi-label")
        names = self.superclass_names
        lookup = np.array([names.index(self.superclass_of[c]) for c in self.class_names])
        return lookup[self.labels].astype(np.int64)

    def subset(self, indices) -> ImageDataset:
        """A new dataset holding the items at ``indices`` ((n,) int), in that order."""
        idx = _check_indices(indices, len(self))
        images = self.images[idx] if self.in_memory else [self.images[i] for i in idx]
        return ImageDataset(
            images=images,
            labels=self.labels[idx],
            class_names=self.class_names,
            superclass_of=self.superclass_of,
            name=self.name,
            is_train=None if self.is_train is None else self.is_train[idx],
        )


def content_fingerprint(ds: ImageDataset, indices=None) -> str:
    """A digest of the images ``indices`` of ``ds`` as they are now (feature-cache keys).

    In-memory images (CIFAR-10): a BLAKE2 hash of their pixels. Images read from files:
    each file's resolved path, size and modification time, so another folder with the same
    number of images, or a file replaced in place, gives another digest.

    >>> a = ImageDataset(np.zeros((2, 4, 4, 3), np.uint8), [0, 1], ["a", "b"])
    >>> b = ImageDataset(np.ones((2, 4, 4, 3), np.uint8), [0, 1], ["a", "b"])
    >>> content_fingerprint(a) == content_fingerprint(b)
    False
    """
    idx = np.arange(len(ds)) if indices is None else _check_indices(indices, len(ds))
    h = hashlib.blake2b(digest_size=16)
    h.update(f"n={idx.size};".encode())
    if ds.in_memory:
        images = ds.images
        h.update(f"pixels{images.shape[1:]}:".encode())
        for start in range(0, idx.size, 4096):
            h.update(np.ascontiguousarray(images[idx[start : start + 4096]]).tobytes())
    else:
        for i in idx.tolist():
            path = ds.images[i]
            try:
                st = os.stat(path)
                h.update(f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{path}:missing\n".encode())
    return h.hexdigest()


def _check_superclass_map(mapping: Mapping, class_names: Sequence[str], source: str) -> None:
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{source} must map class name -> superclass name, got {type(mapping)}")
    unknown = sorted(set(mapping) - set(class_names))
    if unknown:
        raise ValueError(
            f"{source} names unknown class(es) {unknown}; known classes are {list(class_names)}. "
            "Fix the spelling or remove those lines."
        )
    missing = [c for c in class_names if c not in mapping]
    if missing:
        raise ValueError(f"{source} gives no superclass for class(es) {missing}; add a line each.")
    bad = [c for c, s in mapping.items() if not isinstance(s, str) or not s.strip()]
    if bad:
        raise ValueError(f"{source}: superclass of {bad} must be a non-empty string")


def _check_indices(indices, n: int) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 1:
        raise ValueError(f"indices must be 1-D, got shape {idx.shape}")
    if idx.size == 0:
        return idx.astype(np.int64)
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {idx.dtype}")
    if idx.min() < 0 or idx.max() >= n:
        raise IndexError(f"indices must lie in [0, {n}); got range [{idx.min()}, {idx.max()}]")
    return idx.astype(np.int64, copy=False)


# --------------------------------------------------------------------------------------
# Reading image files
# --------------------------------------------------------------------------------------


def _open_rgb(path: str | Path) -> Image.Image:
    """Open and fully decode one image as RGB; errors name the file."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError as exc:
        raise CorruptImageError(f"image file not found: {path}") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise CorruptImageError(
            f"cannot decode image {path}: {exc}. Replace or delete this file (re-extract the "
            "dataset if it came from an archive)."
        ) from exc


def _resize_center_crop(im: Image.Image, size: int) -> Image.Image:
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def read_image_file(path: str | os.PathLike, *, size: int | None = None) -> np.ndarray:
    """One image file as a uint8 array ``(H, W, 3)`` (RGB).

    ``size`` resizes the shorter side to ``size`` and centre-crops a square, as
    :func:`read_images` does for path-backed datasets. A missing or corrupt file raises
    :class:`CorruptImageError` naming the path.
    """
    im = _open_rgb(path)
    if size is not None:
        im = _resize_center_crop(im, int(size))
    return np.array(im, dtype=np.uint8)  # a writable copy (np.asarray of PIL is read-only)


def read_images(
    dataset: ImageDataset, indices=None, *, size: int | None = 224, progress: bool = False
) -> np.ndarray:
    """Pixels of the items at ``indices`` as one uint8 array.

    Parameters
    ----------
    dataset : ImageDataset
        In-memory or path-backed dataset.
    indices : (n,) int array-like, optional
        Items to read, in order (default: all).
    size : int or None, default 224
        Path-backed images only: the shorter side is resized to ``size`` (bilinear) and the
        centre ``size x size`` square is cropped, so images of different shapes stack
        (Flickr25K, NUS-WIDE). ``None`` keeps the stored size (all images must then agree).
        In-memory images are returned at their stored size.
    progress : bool
        Show a tqdm bar while decoding files.

    Returns
    -------
    (n, H, W, 3) uint8 ndarray

    Raises
    ------
    CorruptImageError
        If a file is missing or cannot be decoded; the message names the file.
    """
    if not isinstance(dataset, ImageDataset):
        raise TypeError(f"read_images expects an ImageDataset, got {type(dataset).__name__}")
    idx = np.arange(len(dataset)) if indices is None else _check_indices(indices, len(dataset))
    if dataset.in_memory:
        return dataset.images[idx]
    if size is not None and (not isinstance(size, (int, np.integer)) or size <= 0):
        raise ValueError(f"size must be a positive int or None, got {size!r}")
    out = None
    for k, i in enumerate(_progress(idx, progress, "reading images")):
        path = dataset.images[i]
        im = _open_rgb(path)
        if size is not None:
            im = _resize_center_crop(im, int(size))
        arr = np.asarray(im, dtype=np.uint8)
        if out is None:
            out = np.empty((len(idx), *arr.shape), dtype=np.uint8)
        elif arr.shape != out.shape[1:]:
            raise ValueError(
                f"image {path} has shape {arr.shape} but earlier ones have {out.shape[1:]}; "
                "pass size=<int> to resize them to a common size"
            )
        out[k] = arr
    if out is None:
        h = w = size or 0
        out = np.empty((0, h, w, 3), dtype=np.uint8)
    return out


def _progress(iterable, enabled: bool, desc: str, total: int | None = None):
    if not enabled:
        return iterable
    from .runtime import progress_bar

    return progress_bar(iterable, desc=desc, total=total, unit="img")


def _list_class_folder(root: Path) -> tuple[list[str], list[list[Path]]]:
    """Class names (sorted sub-folders) and their image files (sorted names)."""
    classes, files = [], []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        imgs = sorted(
            f.name
            for f in os.scandir(entry.path)
            if f.is_file() and f.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not imgs:
            raise ValueError(
                f"class folder {entry.path} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "add images or remove the folder"
            )
        classes.append(entry.name)
        files.append([Path(entry.path, name) for name in imgs])
    if not classes:
        raise ValueError(f"{root} holds no class sub-folders; expected {root}/<class>/<image>")
    return classes, files


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


def load_image_folder(
    root: str | os.PathLike, superclass_file: str | os.PathLike | None = None
) -> ImageDataset:
    """A user dataset laid out as ``root/<class>/<image>``, read lazily.

    Parameters
    ----------
    root : path-like
        Folder with one sub-folder per class (sorted names give the label order); image
        files end in one of :data:`IMAGE_EXTENSIONS` and are taken in sorted order.
    superclass_file : path-like, optional
        Two-level hierarchy, see :func:`read_superclass_file`; every class must be mapped.

    Returns
    -------
    ImageDataset
        ``images``: list of N paths; ``labels``: (N,) int64; ``name="folder"``.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"image folder {root} does not exist (expected root/<class>/<image>)"
        )
    classes, per_class = _list_class_folder(root)
    paths = [str(p) for fs in per_class for p in fs]
    labels = np.concatenate([np.full(len(fs), i, dtype=np.int64) for i, fs in enumerate(per_class)])
    superclass_of = (
        read_superclass_file(superclass_file, classes) if superclass_file is not None else None
    )
    return ImageDataset(
        images=paths, labels=labels, class_names=classes, superclass_of=superclass_of, name="folder"
    )


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


# --------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------


@dataclass
class Splits:
    """Index splits of one dataset for retrieval training and evaluation.

    Attributes
    ----------
    train, query, database : (n,) int64 ndarray
        Training images, test queries and the retrieval database (indices into the
        dataset). ``query`` and ``database`` are disjoint.
    val_query, val_database : (n,) int64 ndarray
        Validation pair for model selection, carved from the database only:
        ``val_query ⊂ database`` and ``val_database = database \\ val_query``.
    meta : dict
        JSON-able provenance (dataset, protocol, seed, number of items, ...).

    All five arrays must be non-empty; the relations above are checked on construction.
    """

    train: np.ndarray
    query: np.ndarray
    database: np.ndarray
    val_query: np.ndarray
    val_database: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in _SPLIT_NAMES:
            arr = np.asarray(getattr(self, name))
            if arr.ndim != 1:
                raise ValueError(f"split {name!r} must be 1-D, got shape {arr.shape}")
            if arr.size == 0:
                if name == "val_query":
                    raise ValueError(
                        "split 'val_query' is empty: no validation queries were carved from "
                        "the database; raise n_val_per_class (or n_val) to at least 1"
                    )
                raise ValueError(
                    f"split {name!r} is empty; use more data or smaller per-class counts "
                    "(e.g. n_val_per_class, n_query_per_class, the subsample fraction)"
                )
            if not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"split {name!r} must hold integer indices, got {arr.dtype}")
            if arr.min() < 0:
                raise ValueError(f"split {name!r} holds negative indices")
            if len(np.unique(arr)) != arr.size:
                raise ValueError(f"split {name!r} holds repeated indices")
            setattr(self, name, arr.astype(np.int64, copy=False))
        if np.intersect1d(self.query, self.database).size:
            raise ValueError("query and database overlap; test queries must not be in the database")
        if np.setdiff1d(self.val_query, self.database).size:
            raise ValueError("val_query must be drawn from the database (found indices outside it)")
        if np.intersect1d(self.val_query, self.val_database).size:
            raise ValueError("val_query and val_database overlap")
        expected = np.setdiff1d(self.database, self.val_query)
        if not np.array_equal(np.sort(self.val_database), expected):
            raise ValueError("val_database must equal the database minus val_query")
        n_items = self.meta.get("n_items")
        if n_items is not None:
            top = max(int(getattr(self, k).max()) for k in _SPLIT_NAMES)
            if top >= n_items:
                raise ValueError(f"split index {top} out of range for a dataset of {n_items} items")

    def sizes(self) -> dict[str, int]:
        """Number of indices in each split."""
        return {k: int(getattr(self, k).size) for k in _SPLIT_NAMES}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={v}" for k, v in self.sizes().items())
        return f"Splits({sizes}, meta={self.meta})"


def _rng(seed, stream: int) -> np.random.Generator:
    if seed is None:
        raise ValueError("seed must be an int (splits are always seeded, for reproducibility)")
    return np.random.default_rng([int(seed), stream])


def _single_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be (N,) integers for per-class splits, got {labels.dtype} {labels.shape}"
        )
    if labels.size == 0:
        raise ValueError("labels is empty: no items to split")
    return labels


def _strata(labels) -> np.ndarray:
    """One stratum per item: the class, or for multi-hot rows the first positive column."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return labels.astype(np.int64)
    if labels.ndim == 2:
        first = labels.argmax(axis=1).astype(np.int64)
        first[labels.max(axis=1) == 0] = labels.shape[1]
        return first
    raise ValueError(f"labels must be (N,) or (N, C), got shape {labels.shape}")


def add_validation(
    database: np.ndarray,
    labels,
    *,
    n_val_per_class: int = 100,
    n_val: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Carve a validation query set out of the database.

    Parameters
    ----------
    database : (n,) int64 ndarray
        Database indices.
    labels : (N,) int or (N, C) multi-hot ndarray
        Labels of the whole dataset.
    n_val_per_class : int
        Single-label: validation queries drawn at random per class from the database.
        Multi-label: ``n_val_per_class * C`` are drawn at random from the database, unless
        ``n_val`` is given.
    n_val : int, optional
        Total number of validation queries, drawn at random from the database (overrides
        ``n_val_per_class``; no per-class balance).
    seed : int

    Returns
    -------
    val_query : (m,) int64 ndarray
        In class order, random order within a class (single-label).
    val_database : (n - m,) int64 ndarray
        The database minus ``val_query``, in database order.
    """
    database = np.asarray(database, dtype=np.int64)
    labels = np.asarray(labels)
    if n_val_per_class < 0:
        raise ValueError(f"n_val_per_class must be >= 0, got {n_val_per_class}")
    rng = _rng(seed, 1)
    if labels.ndim == 1 and n_val is None:
        parts = []
        db_labels = labels[database]
        for c in np.unique(db_labels):
            members = database[db_labels == c]
            if n_val_per_class >= members.size:
                raise ValueError(
                    f"class {c} has {members.size} database items, too few to carve "
                    f"n_val_per_class={n_val_per_class} validation queries and keep a database; "
                    "lower n_val_per_class or add images to this class"
                )
            parts.append(rng.permutation(members)[:n_val_per_class])
        val_query = np.concatenate(parts) if parts else np.empty(0, np.int64)
    else:
        total = n_val if n_val is not None else n_val_per_class * labels.shape[1]
        total = int(total)
        if not 0 <= total < database.size:
            raise ValueError(
                f"cannot draw {total} validation queries from a database of {database.size}; "
                "lower n_val / n_val_per_class"
            )
        val_query = rng.permutation(database)[:total]
    val_database = database[~np.isin(database, val_query)]
    return val_query.astype(np.int64), val_database


def per_class_splits(
    labels,
    *,
    n_query_per_class: int,
    n_train_per_class: int | None = None,
    n_val_per_class: int = 100,
    seed: int = 0,
    meta: dict | None = None,
) -> Splits:
    """Per-class query/database split (the reference's CIFAR-10 procedure, any sizes).

    For each class ``c`` in increasing order, the indices with label ``c`` (in dataset order)
    are permuted with ``np.random.RandomState(seed).permutation`` (one shared stream, class
    after class, exactly as the reference's ``np.random.permutation`` after
    ``np.random.seed(seed)``); the first ``n_query_per_class`` are queries, the rest is the
    database; the training set is the whole database (``n_train_per_class=None``) or the
    next ``n_train_per_class`` after the queries. Arrays are concatenated in class order.

    Parameters
    ----------
    labels : (N,) int array
    n_query_per_class, n_train_per_class, n_val_per_class : int
    seed : int

    Returns
    -------
    Splits
    """
    labels = _single_labels(labels)
    if n_query_per_class <= 0:
        raise ValueError(f"n_query_per_class must be positive, got {n_query_per_class}")
    rs = np.random.RandomState(int(seed))
    query, database, train = [], [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        need = n_query_per_class + (n_train_per_class or 1)
        if members.size < need:
            raise ValueError(
                f"class {c} has {members.size} items; need at least {need} for "
                f"{n_query_per_class} queries and a non-empty training set / database"
            )
        perm = members[rs.permutation(members.size)]
        query.append(perm[:n_query_per_class])
        database.append(perm[n_query_per_class:])
        if n_train_per_class is None:
            train.append(perm[n_query_per_class:])
        else:
            train.append(perm[n_query_per_class : n_query_per_class + n_train_per_class])
    database = np.concatenate(database)
    val_query, val_database = add_validation(
        database, labels, n_val_per_class=n_val_per_class, seed=seed
    )
    info = {"n_items": int(labels.size), "seed": int(seed), "n_val_per_class": n_val_per_class}
    info.update(meta or {})
    return Splits(
        train=np.concatenate(train),
        query=np.concatenate(query),
        database=database,
        val_query=val_query,
        val_database=val_database,
        meta=info,
    )


def cifar10_splits(
    labels, protocol: str = "I", *, seed: int = 0, n_val_per_class: int = 100
) -> Splits:
    """CIFAR-10 retrieval protocol I or II over the pooled 60,000 images.

    As in the reference, queries are drawn from the **pooled** train+test images, not from
    the test split: per class 1,000 queries; the other 5,000 per class form the database.
    Protocol I trains on the whole database (10,000 / 50,000 / 50,000 queries / database /
    training); protocol II trains on 500 database images per class (10,000 / 50,000 / 5,000).
    See :func:`per_class_splits` for the random procedure and :func:`add_validation` for
    ``val_query`` / ``val_database``.

    Parameters
    ----------
    labels : (60000,) int array
        Labels of the pooled dataset (``load_cifar10().labels``); other sizes work if every
        class holds more than 1,000 (I) or 1,500 (II) items.
    protocol : {"I", "II"}
    seed : int
    n_val_per_class : int, default 100
    """
    protocol = str(protocol).upper()
    if protocol not in ("I", "II"):
        raise ValueError(f"unknown CIFAR-10 protocol {protocol!r}; use 'I' or 'II'")
    return per_class_splits(
        labels,
        n_query_per_class=1000,
        n_train_per_class=None if protocol == "I" else 500,
        n_val_per_class=n_val_per_class,
        seed=seed,
        meta={"dataset": "cifar10", "protocol": protocol},
    )


def flickr25k_splits(
    labels, *, seed: int = 0, n_query: int = 2000, n_train: int = 5000, n_val: int | None = None
) -> Splits:
    """Flickr25K split as in the reference: one random permutation of all items.

    ``perm = RandomState(seed).permutation(N)``; ``query = perm[:n_query]``,
    ``database = perm[n_query:]``, ``train = perm[n_query:n_query + n_train]`` (so the
    training set is inside the database). ``n_val`` validation queries (default 100 per
    label column) are drawn at random from the database.

    Parameters
    ----------
    labels : (N, C) multi-hot array (or (N,) labels)
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    if n_query <= 0 or n_train <= 0:
        raise ValueError("n_query and n_train must be positive")
    if n <= n_query + 1:
        raise ValueError(f"{n} items are too few for {n_query} queries plus a database")
    perm = np.random.RandomState(int(seed)).permutation(n)
    database = perm[n_query:]
    if n_val is None:
        n_val = 100 * (labels.shape[1] if labels.ndim == 2 else len(np.unique(labels)))
        n_val = min(n_val, database.size // 10)
    val_query, val_database = add_validation(database, labels, n_val=n_val, seed=seed)
    return Splits(
        train=perm[n_query : n_query + n_train],
        query=perm[:n_query],
        database=database,
        val_query=val_query,
        val_database=val_database,
        meta={"dataset": "flickr25k", "n_items": int(n), "seed": int(seed), "n_val": int(n_val)},
    )


def list_splits(dataset: ImageDataset, *, seed: int = 0, n_val: int | None = None) -> Splits:
    """Splits given by a dataset's own lists (``dataset.predefined``, e.g. NUS-WIDE).

    ``query``/``database``/``train`` are the lists; ``n_val`` validation queries (default 100
    per label column, at most a tenth of the database) are drawn from the database.
    """
    if not dataset.predefined:
        raise ValueError(f"dataset {dataset.name!r} has no predefined lists; use per_class_splits")
    pre = dataset.predefined
    database = np.asarray(pre["database"], dtype=np.int64)
    if n_val is None:
        n_val = min(100 * dataset.n_classes, database.size // 10)
    val_query, val_database = add_validation(database, dataset.labels, n_val=n_val, seed=seed)
    return Splits(
        train=pre["train"],
        query=pre["query"],
        database=database,
        val_query=val_query,
        val_database=val_database,
        meta={
            "dataset": dataset.name,
            "n_items": len(dataset),
            "seed": int(seed),
            "n_val": int(n_val),
        },
    )


def make_splits(
    dataset: ImageDataset, *, protocol: str = "I", seed: int = 0, n_val_per_class: int = 100
) -> Splits:
    """The standard splits for ``dataset`` (dispatch on ``dataset.name``).

    ``cifar10`` → :func:`cifar10_splits` (``protocol``); ``flickr25k`` →
    :func:`flickr25k_splits`; ``nuswide`` (or any dataset with ``predefined`` lists) →
    :func:`list_splits`; other single-label datasets (``folder``) → :func:`per_class_splits`
    with 10% of the smallest class as queries per class, the rest as database and training
    set, and at most ``n_val_per_class`` (and a tenth of the smallest class) validation
    queries per class.
    """
    if not isinstance(dataset, ImageDataset):
        raise TypeError(f"make_splits expects an ImageDataset, got {type(dataset).__name__}")
    if dataset.name == "cifar10":
        return cifar10_splits(dataset.labels, protocol, seed=seed, n_val_per_class=n_val_per_class)
    if dataset.predefined:
        return list_splits(dataset, seed=seed)
    if dataset.name == "flickr25k":
        return flickr25k_splits(dataset.labels, seed=seed)
    if dataset.is_multilabel:
        raise ValueError(f"no default split for multi-label dataset {dataset.name!r}")
    smallest = int(np.bincount(dataset.labels).min()) if len(dataset) else 0
    n_query = max(1, smallest // 10)
    n_val = max(1, min(n_val_per_class, (smallest - n_query) // 10))
    return per_class_splits(
        dataset.labels,
        n_query_per_class=n_query,
        n_val_per_class=n_val,
        seed=seed,
        meta={"dataset": dataset.name},
    )


def _apportion(target: int, sizes: np.ndarray) -> np.ndarray:
    """Split ``target`` over parts proportionally to ``sizes`` (largest remainder)."""
    total = sizes.sum()
    exact = target * sizes / total
    counts = np.floor(exact).astype(np.int64)
    remainder = target - counts.sum()
    if remainder > 0:
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:remainder]] += 1
    return np.minimum(counts, sizes)


def subsample_split(
    splits: Splits,
    labels,
    fraction: float | None = None,
    *,
    per_class: Mapping[str, int] | None = None,
    seed: int = 0,
) -> Splits:
    """A smaller, per-class balanced copy of ``splits`` (fast mode, CI).

    Every item is classified by which splits it belongs to (query; val_query or
    val_database; train) and by its stratum (its class; for multi-hot labels its first
    positive column). Within each class, the query side and the database side are each
    shrunk to a target count, apportioned over those groups by largest remainder, and the
    groups are sampled at random. The relations between the splits therefore survive:
    ``train == database`` stays true (protocol I), ``train ⊂ database`` stays true
    (protocol II, Flickr25K), queries stay disjoint from the database, and ``val_query``
    keeps its share of the database.

    Parameters
    ----------
    splits : Splits
    labels : (N,) int or (N, C) multi-hot ndarray
        Labels of the whole dataset.
    fraction : float in (0, 1], optional
        Keep this fraction of each split per class (at least one item per non-empty class).
    per_class : dict, optional
        Target counts per class instead of ``fraction``: keys ``"query"`` and ``"database"``
        (the training set follows the database when it lies inside it) and ``"train"`` for
        training items outside the database. Missing keys keep that side whole.
    seed : int

    Returns
    -------
    Splits
        Indices in the original order of each split; ``meta["subsample"]`` records the call.
    """
    if not isinstance(splits, Splits):
        raise TypeError(f"subsample_split expects a Splits, got {type(splits).__name__}")
    if (fraction is None) == (per_class is None):
        raise ValueError("give exactly one of fraction= or per_class=")
    if fraction is not None and not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    if per_class is not None:
        unknown = set(per_class) - {"query", "database", "train"}
        if unknown:
            raise ValueError(
                f"per_class keys must be 'query', 'database', 'train'; got {sorted(unknown)}"
            )
        if any(int(v) <= 0 for v in per_class.values()):
            raise ValueError(f"per_class counts must be positive, got {dict(per_class)}")
    strata = _strata(labels)
    universe = np.unique(np.concatenate([getattr(splits, k) for k in _SPLIT_NAMES]))
    if universe.max() >= strata.size:
        raise ValueError(
            f"splits index item {universe.max()} but labels has only {strata.size} rows"
        )
    in_q = np.isin(universe, splits.query)
    in_vq = np.isin(universe, splits.val_query)
    in_db = np.isin(universe, splits.database)
    in_tr = np.isin(universe, splits.train)
    side = np.where(in_q, 0, np.where(in_db, 1, np.where(in_tr, 2, 3)))  # 3: in none (never)
    group = in_q * 1 + in_vq * 2 + in_db * 4 + in_tr * 8
    side_names = {0: "query", 1: "database", 2: "train"}
    rng = _rng(seed, 2)
    keep = []
    for c in np.unique(strata[universe]):
        in_c = strata[universe] == c
        for s, sname in side_names.items():
            members = universe[in_c & (side == s)]
            if members.size == 0:
                continue
            if fraction is not None:
                target = max(1, int(round(fraction * members.size)))
            elif sname in per_class:
                target = int(per_class[sname])
                if target > members.size:
                    raise ValueError(
                        f"per_class[{sname!r}]={target} but class {c} has only {members.size} "
                        f"items on the {sname} side; lower it"
                    )
            else:
                keep.append(members)
                continue
            groups = group[in_c & (side == s)]
            gids, gsizes = np.unique(groups, return_counts=True)
            counts = _apportion(target, gsizes)
            for gid, k in zip(gids, counts):
                pool = members[groups == gid]
                keep.append(rng.choice(pool, size=int(k), replace=False))
    if per_class is not None and "train" in per_class and not (side == 2).any():
        raise ValueError(
            "per_class['train'] applies to training items outside the database, and there are "
            "none here (the training set lies inside the database): drop the key, the training "
            "set follows per_class['database']"
        )
    kept = np.concatenate(keep)
    new = {k: getattr(splits, k)[np.isin(getattr(splits, k), kept)] for k in _SPLIT_NAMES}
    meta = dict(splits.meta)
    meta["subsample"] = {
        "fraction": fraction,
        "per_class": dict(per_class or {}) or None,
        "seed": int(seed),
    }
    return Splits(**new, meta=meta)


def save_splits(splits: Splits, path: str | os.PathLike) -> Path:
    """Write ``splits`` to ``path`` as JSON (atomic); return the path."""
    if not isinstance(splits, Splits):
        raise TypeError(f"save_splits expects a Splits, got {type(splits).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": "hihpq-splits", "version": 1, "meta": splits.meta}
    payload.update({k: getattr(splits, k).tolist() for k in _SPLIT_NAMES})
    return atomic_write_text(path, json.dumps(payload))


def load_splits(path: str | os.PathLike) -> Splits:
    """Read splits written by :func:`save_splits` (validated on load)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"splits file {path} not found")
    try:
        payload = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"splits file {path} is not valid JSON: {exc}") from exc
    if payload.get("format") != "hihpq-splits":
        raise ValueError(f"{path} is not a hihpq splits file (missing format='hihpq-splits')")
    missing = [k for k in _SPLIT_NAMES if k not in payload]
    if missing:
        raise ValueError(f"splits file {path} lacks {missing}")
    return Splits(
        **{k: np.asarray(payload[k], dtype=np.int64) for k in _SPLIT_NAMES},
        meta=payload.get("meta", {}),
    )
