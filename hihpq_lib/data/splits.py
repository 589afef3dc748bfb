"""The retrieval protocols' index splits (:class:`Splits`), with a validation pair carved
from the database side only; saved and loaded as ``.npz``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hihpq_lib.data.dataset import ImageDataset
from hihpq_lib.utils.atomic import atomic_write_text

__all__ = [
    "Splits",
    "per_class_splits",
    "cifar10_splits",
    "flickr25k_splits",
    "list_splits",
    "make_splits",
    "folder_splits",
    "FOLDER_RULE",
    "QUERY_FOLDER_RULE",
    "add_validation",
    "subsample_split",
    "save_splits",
    "load_splits",
]


_SPLIT_NAMES = ("train", "query", "database", "val_query", "val_database")


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
    :func:`list_splits`; other single-label datasets (``folder``) → :func:`folder_splits`
    (10% of the smallest class as queries per class, the rest as database and training
    set; or the queries of a separate query folder).
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
    return folder_splits(dataset, seed=seed, n_val_per_class=n_val_per_class)


#: The split rule of image folders, as recorded in ``splits.json`` (``meta["rule"]``).
FOLDER_RULE = (
    "per class: 10% of the smallest class (at least 1) as test queries, the rest as database "
    "and training set; validation queries: min(n_val_per_class, a tenth of the rest of the "
    "smallest class, at least 1) per class, drawn from the database"
)
#: The rule with a separate query folder.
QUERY_FOLDER_RULE = (
    "every image of the query folder is a test query; every image of the data folder is "
    "database and training set; validation queries: min(n_val_per_class, a tenth of the "
    "smallest class, at least 1) per class, drawn from the database"
)


def folder_splits(dataset: ImageDataset, *, seed: int = 0, n_val_per_class: int = 100) -> Splits:
    """The split of a single-label image folder (:data:`FOLDER_RULE`).

    With a separate query folder (``dataset.is_train`` marks the data folder's images,
    see :func:`~hihpq_lib.data.sources.load_image_folder`), :data:`QUERY_FOLDER_RULE`:
    the queries are the query folder, the database and training set the data folder.
    ``meta`` records the rule, the query source and the sizes (``splits.json``).
    """
    labels = _single_labels(dataset.labels)
    base = {
        "dataset": dataset.name,
        "title": dataset.display_name,
        "n_classes": dataset.n_classes,
    }
    if dataset.is_train is not None and not dataset.is_train.all():
        database = np.flatnonzero(dataset.is_train)
        query = np.flatnonzero(~dataset.is_train)
        smallest = int(np.bincount(labels[database], minlength=dataset.n_classes).min())
        if smallest < 2:
            raise ValueError(
                "every class of the data folder needs at least 2 images (a validation query "
                "and a database image)"
            )
        n_val = max(1, min(n_val_per_class, smallest // 10))
        val_query, val_database = add_validation(database, labels, n_val_per_class=n_val, seed=seed)
        splits = Splits(
            train=database,
            query=query,
            database=database,
            val_query=val_query,
            val_database=val_database,
            meta={
                **base,
                "n_items": int(labels.size),
                "seed": int(seed),
                "n_val_per_class": n_val,
                "rule": QUERY_FOLDER_RULE,
                "query_source": "query folder",
            },
        )
    else:
        smallest = int(np.bincount(labels).min()) if labels.size else 0
        n_query = max(1, smallest // 10)
        n_val = max(1, min(n_val_per_class, (smallest - n_query) // 10))
        splits = per_class_splits(
            labels,
            n_query_per_class=n_query,
            n_val_per_class=n_val,
            seed=seed,
            meta={
                **base,
                "n_query_per_class": n_query,
                "rule": FOLDER_RULE,
                "query_source": "data folder",
            },
        )
    return splits


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
    payload = {
        "format": "hihpq-splits",
        "version": 1,
        "meta": splits.meta,
        "sizes": splits.sizes(),
    }
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
