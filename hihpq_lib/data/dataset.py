"""The dataset container: :class:`ImageDataset` (images or paths, labels, class names)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["CorruptImageError", "DatasetNotFoundError", "content_fingerprint", "ImageDataset"]


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
    title : str, optional
        What results call the dataset (an image folder's own name); default ``name``.
    """

    images: np.ndarray | list[str]
    labels: np.ndarray
    class_names: Sequence[str]
    superclass_of: dict[str, str] | None = None
    name: str = "dataset"
    is_train: np.ndarray | None = None
    predefined: dict[str, np.ndarray] | None = field(default=None, repr=False)
    title: str | None = None

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
    def display_name(self) -> str:
        """The dataset's name in results: ``title`` if set, else ``name``."""
        return self.title or self.name

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
            title=self.title,
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
