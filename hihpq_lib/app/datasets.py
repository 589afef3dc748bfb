"""A run's data: the dataset a config names, its splits and the labels at every hierarchy
level.

Every preparation (:mod:`hihpq_lib.app.prepare`) starts with :func:`load_and_split`.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np

from hihpq_lib import data as D
from hihpq_lib.learning.config import TrainConfig
from hihpq_lib.utils.timing import StageTimer

__all__ = [
    "OneClassWarning",
    "load_data",
    "class_chains",
    "hierarchy_levels",
    "make_run_splits",
    "subsample_train",
    "load_and_split",
]


class OneClassWarning(UserWarning):
    """The retrieval task is trivial: every item has the same label."""


def _warn_if_one_class(ds: D.ImageDataset, splits: D.Splits) -> None:
    labels = np.asarray(ds.labels)
    idx = np.concatenate([splits.query, splits.database])
    sub = labels[idx]
    same = len(np.unique(sub)) == 1 if sub.ndim == 1 else bool((sub == sub[:1]).all())
    if same:
        warnings.warn(
            f"dataset {ds.name!r}: every query and database item has the same label, so "
            "every retrieved item counts as relevant and mAP is 1.0 whatever the model does; "
            "use a dataset with at least two classes",
            OneClassWarning,
            stacklevel=3,
        )


def load_data(cfg: TrainConfig, progress: bool = True) -> D.ImageDataset:
    """The dataset a config names (CIFAR-10 through the source-resolution order).

    ``dataset: cifar10`` with ``data`` pointing at a class-per-subfolder tree that is not
    CIFAR-10 fails with one line naming the fix (``--set dataset=folder`` or the folder
    profile); nothing is guessed.
    """
    if cfg.dataset == "cifar10":
        try:
            return D.load_cifar10(cfg.data, progress=progress)
        except D.DatasetNotFoundError:
            if cfg.data and D.looks_like_image_folder(cfg.data):
                raise D.DatasetNotFoundError(
                    f"{cfg.data} is an image folder (one sub-folder per class), not CIFAR-10, "
                    "and the config says dataset: cifar10; add --set dataset=folder or use "
                    "configs/cpu/cpu_folder_32bits.yaml"
                ) from None
            raise
    if cfg.dataset == "nuswide":
        return D.load_dataset(cfg.dataset, root=cfg.data, train_list=cfg.train_list)
    if cfg.dataset == "flickr25k":
        return D.load_dataset(cfg.dataset, root=cfg.data)
    if cfg.dataset == "folder":
        if not cfg.data:
            raise D.DatasetNotFoundError(
                "dataset 'folder' needs data=PATH (a folder of class folders): pass --data FOLDER"
            )
        return D.load_image_folder(
            cfg.data, superclass_file=cfg.superclass_file, query_root=cfg.query_data
        )
    return D.load_dataset(cfg.dataset)  # raises with the list of known names


def class_chains(cfg: TrainConfig, ds: D.ImageDataset) -> dict[str, list[str]] | None:
    """Every class's ancestor chain (root first): from ``cfg.hierarchy_file``, else from
    ``cfg.superclass_file`` or the dataset's own superclasses (one level); ``None`` if none."""
    if cfg.hierarchy_file:
        return D.read_hierarchy_file(cfg.hierarchy_file, ds.class_names)
    if cfg.superclass_file:
        return D.superclass_chains(D.read_superclass_file(cfg.superclass_file, ds.class_names))
    if ds.superclass_of:
        return D.superclass_chains(ds.superclass_of)
    return None


def hierarchy_levels(cfg: TrainConfig, ds: D.ImageDataset) -> dict[str, np.ndarray]:
    """The label of every item at each level the run evaluates at.

    ``"class"`` always (the dataset's labels); with a hierarchy file, ``"depth d"`` for each
    depth of ``cfg.hierarchy_levels`` (the ancestor at that depth, see
    :mod:`hihpq_lib.data.taxonomy`); with superclasses, ``"superclass"``.
    Multi-label datasets get ``"class"`` only.
    """
    levels = {"class": np.asarray(ds.labels)}
    if ds.is_multilabel:
        return levels
    chains = class_chains(cfg, ds)
    if chains is None:
        return levels
    if cfg.hierarchy_file:
        depths = D.resolve_levels(chains, cfg.hierarchy_levels)
    else:
        depths = [0]
    for name, (class_to_node, _) in D.level_labels(chains, ds.class_names, depths).items():
        key = name if cfg.hierarchy_file else "superclass"
        levels[key] = class_to_node[np.asarray(ds.labels)]
    return levels


def make_run_splits(cfg: TrainConfig, ds: D.ImageDataset) -> D.Splits:
    splits = D.make_splits(
        ds, protocol=cfg.protocol, seed=cfg.seed, n_val_per_class=cfg.n_val_per_class
    )
    if cfg.subsample_per_class:
        n = int(cfg.subsample_per_class)
        splits = D.subsample_split(
            splits,
            ds.labels,
            per_class={"query": max(2, n // 5), "database": n},
            seed=cfg.seed,
        )
    if cfg.train_per_class:
        splits = subsample_train(splits, ds.labels, int(cfg.train_per_class), cfg.seed)
    return splits


def subsample_train(splits: D.Splits, labels, per_class: int, seed: int = 0) -> D.Splits:
    """Keep at most ``per_class`` training images per class (queries and database unchanged).

    For protocol I on a CPU: the database stays 50,000 images, the model trains on a
    per-class balanced subset of them.
    """
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise ValueError("train_per_class needs single-label data")
    rng = np.random.default_rng(seed + 7919)
    train = np.asarray(splits.train)
    keep = []
    for c in np.unique(lab[train]):
        members = train[lab[train] == c]
        keep.append(rng.choice(members, size=min(per_class, len(members)), replace=False))
    new = np.sort(np.concatenate(keep))
    meta = {**dict(splits.meta), "train_per_class": per_class}
    return dataclasses.replace(splits, train=new, meta=meta)


def load_and_split(
    cfg: TrainConfig, progress: bool, run_dir: Path | None, splits: D.Splits | None = None
):
    """What every ``prepare*`` starts with: the dataset, the run's splits (saved in
    ``run_dir`` when given) and the hierarchy levels, timed as "load images". A bad
    hierarchy file fails here, before any feature is computed.

    ``splits``: use these (a run's own ``splits.json``, :func:`~hihpq_lib.data.load_splits`)
    instead of drawing them from ``cfg``; refused when they index past the dataset."""
    timer = StageTimer()
    with timer("load images"):
        ds = load_data(cfg, progress)
        if splits is None:
            splits = make_run_splits(cfg, ds)
        else:
            _check_splits_fit(splits, ds)
        levels = hierarchy_levels(cfg, ds)
    if run_dir is not None:
        D.save_splits(splits, Path(run_dir) / "splits.json")
    _warn_if_one_class(ds, splits)
    return timer, ds, splits, levels


def _check_splits_fit(splits: D.Splits, ds: D.ImageDataset) -> None:
    names = ("train", "query", "database", "val_query", "val_database")
    top = max(int(np.max(getattr(splits, k), initial=-1)) for k in names)
    if top >= len(ds.labels):
        raise ValueError(
            f"the run's splits.json indexes item {top} but {ds.display_name} has "
            f"{len(ds.labels)} items: this is not the data the run was trained on; pass "
            "--data with your copy of that dataset"
        )
