"""The end-to-end pipeline: data -> cached frozen features -> training -> index -> metrics.

:func:`prepare` loads a dataset, makes (and saves) the splits, and computes — or loads from
the feature cache — the frozen backbone features of every image a run needs plus the
augmentation bank of the training images. :func:`run_experiment` trains, then evaluates
the final model and the validation-selected model on the test queries, and writes
``results.json`` and the index to the run folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import resource
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hihpq_lib import data as D
from hihpq_lib.data.backbones import build_backbone
from hihpq_lib.data.backbones.tail import split_backbone
from hihpq_lib.data.features import (
    MAPS_CODE_VERSION,
    FeatureCache,
    augmentation_bank,
    extract_features,
    feature_key,
    trunk_maps,
)
from hihpq_lib.evaluation.metrics import hierarchy_agreement, map_at_k_levels
from hihpq_lib.learning.config import TrainConfig, resolve_num_clusters
from hihpq_lib.learning.training import (
    BEST,
    CHECKPOINT,
    PSEUDO_HIERARCHY,
    FeatureSplit,
    OnlineViews,
    TailViews,
    TrainingData,
    check_stamp,
    evaluate_levels,
    load_checkpoint,
    load_model,
    load_pseudo_hierarchy,
    train,
)
from hihpq_lib.utils.atomic import atomic_write_text, clean_stale_tmp
from hihpq_lib.utils.runtime import runs_dir, thread_budget, use_threads

__all__ = [
    "Prepared",
    "PreparedOnline",
    "PreparedTail",
    "prepare",
    "prepare_online",
    "read_sizes",
    "prepare_tail",
    "maps_key",
    "run_experiment",
    "peak_rss_mb",
    "StageTimer",
    "OneClassWarning",
    "RunFolderError",
    "RUN_FILES",
    "run_folder",
    "check_run_folder",
    "check_run_stamps",
    "load_data",
    "class_chains",
    "hierarchy_levels",
    "hierarchy_results",
    "pseudo_hierarchy_report",
    "run_config",
    "baseline_guard",
]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StageTimer:
    """Collects wall-clock seconds per named stage."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[name] = timer.seconds.get(name, 0.0) + time.perf_counter() - self.t

        return _Ctx()


class _HierarchyLevels:
    """Per-level labels shared by :class:`Prepared` and :class:`PreparedOnline`: ``levels``
    maps a hierarchy level's name to the labels of every dataset item (default: the class)."""

    dataset: D.ImageDataset
    splits: D.Splits
    levels: dict

    def __post_init__(self):
        if not self.levels:
            self.levels = {"class": np.asarray(self.dataset.labels)}

    def level_labels(self, name: str) -> dict[str, torch.Tensor]:
        """Per hierarchy level, the labels of ``splits.<name>`` (:func:`evaluate_levels`)."""
        idx = np.asarray(getattr(self.splits, name))
        return {k: torch.as_tensor(v[idx]) for k, v in self.levels.items()}


@dataclass
class Prepared(_HierarchyLevels):
    """Everything a run needs after feature extraction.

    ``feats`` holds the clean features of the images ``feat_index`` (dataset indices);
    ``rows(indices)`` maps dataset indices to rows of ``feats``.
    """

    cfg: TrainConfig
    dataset: D.ImageDataset
    splits: D.Splits
    feat_index: np.ndarray
    feats: torch.Tensor
    bank: torch.Tensor
    timer: StageTimer = field(default_factory=StageTimer)
    #: labels of every item per hierarchy level (:func:`hierarchy_levels`); default: the class
    levels: dict = field(default_factory=dict)

    def rows(self, indices) -> torch.Tensor:
        pos = np.searchsorted(self.feat_index, np.asarray(indices))
        return torch.as_tensor(pos)

    def labels(self, indices) -> torch.Tensor:
        return torch.as_tensor(np.asarray(self.dataset.labels)[np.asarray(indices)])

    def split(self, name: str) -> FeatureSplit:
        idx = getattr(self.splits, name)
        return FeatureSplit(self.feats[self.rows(idx)].float(), self.labels(idx))

    def training_data(self) -> TrainingData:
        return TrainingData(
            bank=self.bank,
            train=self.feats[self.rows(self.splits.train)].float(),
            val_query=self.split("val_query"),
            val_database=self.split("val_database"),
        )


def _digest(indices: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()[:12]


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
    if cfg.dataset in ("flickr25k", "nuswide"):
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


def run_config(cfg: TrainConfig, ds: D.ImageDataset, splits: D.Splits) -> TrainConfig:
    """``cfg`` with ``num_clusters: auto`` resolved from the data
    (:func:`~hihpq_lib.learning.config.resolve_num_clusters`)."""
    if cfg.num_clusters != "auto":
        return cfg
    counts = resolve_num_clusters("auto", ds.n_classes, len(np.asarray(splits.train)))
    return dataclasses.replace(cfg, num_clusters=counts)


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


#: Measured first-run throughput of the frozen EfficientNet-Lite0 (ONNX) on the 2 shared
#: CPU cores of the development machine, at 160 px (``make demo``'s cold start on
#: 2026-12-01: 60,000 images in 171 s, 40,000 augmented views in 460 s with other work
#: on the machine). Cost scales with the pixels, ``(resolution / 160) ** 2``.
FIRST_RUN_RATES = {"images_per_s": 350.0, "views_per_s": 87.0, "resolution": 160}


def first_run_notice(n_images: int, n_views: int, resolution: int, where=None) -> str:
    """The warning printed before the frozen features are computed for the first time.

    >>> print(first_run_notice(60_000, 40_000, 160).splitlines()[0])
    FIRST RUN: the frozen backbone features are not cached yet; computing them takes about 11 min
    """
    scale = (resolution / FIRST_RUN_RATES["resolution"]) ** 2
    seconds = scale * (
        n_images / FIRST_RUN_RATES["images_per_s"] + n_views / FIRST_RUN_RATES["views_per_s"]
    )
    minutes = max(1, round(seconds / 60))
    return (
        f"FIRST RUN: the frozen backbone features are not cached yet; computing them takes "
        f"about {minutes} min\n"
        f"  ({n_images:,} images + {n_views:,} augmented views at {resolution} px, at the rates "
        f"measured on 2 shared CPU cores; notebooks/timings.yaml). They are cached"
        + (f" under {where}" if where is not None else "")
        + " and every later run loads them in seconds."
    )


def read_sizes(cfg: TrainConfig, ds: D.ImageDataset) -> tuple[int | None, int | None]:
    """The sides (px) at which ``prepare`` reads the images: ``(clean, bank)``.

    In-memory images (CIFAR-10) are used as stored (``None``). Image files are read at
    the backbone's input, ``cfg.resolution``, for the clean features, and a margin above
    it for the augmentation bank (:func:`~hihpq_lib.data.folder_read_size`). Both enter
    the cache keys as ``image_size``.
    """
    if ds.in_memory:
        return None, None
    return (
        D.folder_read_size(cfg.resolution),
        D.folder_read_size(cfg.resolution, augment=True),
    )


def _clean_key(cfg: TrainConfig, ds, needed, backbone) -> dict:
    return feature_key(
        ds.name,
        f"clean-{_digest(needed)}-n{len(needed)}",
        backbone,
        cfg.resolution,
        engine=cfg.engine,
        content=D.content_fingerprint(ds, needed),
        image_size=read_sizes(cfg, ds)[0],
    )


def _bank_key(cfg: TrainConfig, ds, splits, backbone) -> dict:
    train_idx = np.asarray(splits.train)
    return feature_key(
        ds.name,
        f"bank-{_digest(train_idx)}-n{len(train_idx)}",
        backbone,
        cfg.resolution,
        engine=cfg.engine,
        n_views=cfg.n_views,
        seed=cfg.seed,
        content=D.content_fingerprint(ds, train_idx),
        image_size=read_sizes(cfg, ds)[1],
    )


def _cached(cache: FeatureCache, key) -> bool:
    path = cache.path_for(key)
    return path.exists() and path.with_suffix(".json").exists()


def _load_and_split(cfg: TrainConfig, progress: bool, run_dir: Path | None):
    """What every ``prepare*`` starts with: the dataset, the run's splits (saved in
    ``run_dir`` when given) and the hierarchy levels, timed as "load images". A bad
    hierarchy file fails here, before any feature is computed."""
    timer = StageTimer()
    with timer("load images"):
        ds = load_data(cfg, progress)
        splits = make_run_splits(cfg, ds)
        levels = hierarchy_levels(cfg, ds)
    if run_dir is not None:
        D.save_splits(splits, Path(run_dir) / "splits.json")
    _warn_if_one_class(ds, splits)
    return timer, ds, splits, levels


def prepare(cfg: TrainConfig, *, progress: bool = True, run_dir: Path | None = None) -> Prepared:
    """Load data, make splits, compute or load cached features and the augmentation bank."""
    timer, ds, splits, levels = _load_and_split(cfg, progress, run_dir)
    needed = np.unique(np.concatenate([splits.query, splits.database, splits.train]))
    backbone = build_backbone(cfg.backbone, pretrained=cfg.pretrained)
    cache = FeatureCache()
    clean_size, bank_size = read_sizes(cfg, ds)
    n_train = len(np.asarray(splits.train))
    key = _clean_key(cfg, ds, needed, backbone)
    use_threads(thread_budget(cfg.threads))
    missing = [k for k in (key, _bank_key(cfg, ds, splits, backbone)) if not _cached(cache, k)]
    if missing:  # printed even with progress=False: the user must know why it is slow
        print(first_run_notice(len(needed), n_train * cfg.n_views, cfg.resolution, cache.root))
    # the images are decoded chunk by chunk inside extract_features / augmentation_bank
    # (LazyImages), so no stage holds all of them: memory stays flat in the dataset size
    with timer("features"):
        feats = cache.get_or_compute(
            key,
            lambda: extract_features(
                backbone,
                D.LazyImages(ds, needed, size=clean_size),
                cfg.resolution,
                engine=cfg.engine,
                progress=progress,
            ).half(),
        )
    train_idx = np.asarray(splits.train)
    bkey = _bank_key(cfg, ds, splits, backbone)
    use_threads(thread_budget(cfg.threads))
    with timer("augmentation bank"):
        bank = cache.get_or_compute(
            bkey,
            lambda: augmentation_bank(
                backbone,
                D.LazyImages(ds, train_idx, size=bank_size),
                n_views=cfg.n_views,
                resolution=cfg.resolution,
                seed=cfg.seed,
                engine=cfg.engine,
                progress=progress,
            ).half(),
        )
    return Prepared(cfg, ds, splits, needed, feats, bank, timer, levels)


def maps_key(cfg: TrainConfig, ds, indices, trunk, *, bank: bool) -> dict:
    """Cache key of the trunk maps of ``indices`` (``bank``: the ``n_views`` augmented
    views of each, else the evaluation transform).

    :func:`~hihpq_lib.data.features.feature_key` of the trunk (its name, ``weights_id``
    and a digest of all its weights, the resolution, the normalisation) plus
    ``tail_blocks``, a digest of the images and of the split's indices, the engine, the
    maps code version and, for a bank, ``n_views`` and ``seed``: any change recomputes.
    """
    idx = np.asarray(indices)
    kind = "maps-bank" if bank else "maps-clean"
    extra = {"n_views": cfg.n_views, "seed": cfg.seed} if bank else {}
    return feature_key(
        ds.name,
        f"{kind}-{_digest(idx)}-n{len(idx)}",
        trunk,
        cfg.resolution,
        engine=cfg.engine,
        tail_blocks=cfg.tail_blocks,
        maps_code_version=MAPS_CODE_VERSION,
        content=D.content_fingerprint(ds, idx),
        image_size=read_sizes(cfg, ds)[1 if bank else 0],
        **extra,
    )


@dataclass
class PreparedTail(_HierarchyLevels):
    """The cached path with a trainable backbone tail (``tail_blocks`` 1 or 2).

    ``maps`` holds the frozen trunk's maps ``(N, C, h, w)`` float16 of the images
    ``feat_index`` (memory-mapped from the feature cache); ``bank_maps`` those of the
    ``n_views`` augmented views of the training images ``(N_train, V, C, h, w)``;
    ``online`` the :class:`~hihpq_lib.learning.training.TailViews` that trains the tail.
    ``split(name)`` runs the tail as it is now on the cached maps of that split.
    """

    cfg: TrainConfig
    dataset: D.ImageDataset
    splits: D.Splits
    feat_index: np.ndarray
    maps: np.ndarray
    bank_maps: np.ndarray
    online: TailViews
    timer: StageTimer = field(default_factory=StageTimer)
    levels: dict = field(default_factory=dict)

    def rows(self, indices) -> np.ndarray:
        return np.searchsorted(self.feat_index, np.asarray(indices))

    def labels(self, indices) -> torch.Tensor:
        return torch.as_tensor(np.asarray(self.dataset.labels)[np.asarray(indices)])

    def split_maps(self, name: str) -> np.ndarray:
        """The cached trunk maps ``(n, C, h, w)`` float16 of ``splits.<name>``."""
        return np.asarray(self.maps[self.rows(getattr(self.splits, name))])

    def split(self, name: str) -> FeatureSplit:
        idx = getattr(self.splits, name)
        return FeatureSplit(self.online.clean(self.split_maps(name)), self.labels(idx))

    def training_data(self) -> TrainingData:
        vq, vd = self.split_maps("val_query"), self.split_maps("val_database")
        return _views_training_data(self, self.online.images, vq, vd)


def prepare_tail(
    cfg: TrainConfig, *, progress: bool = True, run_dir: Path | None = None
) -> PreparedTail:
    """Load data, make splits, compute or load the cached trunk maps of every image a run
    needs and of the ``n_views`` augmented views of the training images; build the tail.

    The backbone is split (:func:`~hihpq_lib.data.backbones.tail.split_backbone`) before
    its last ``cfg.tail_blocks`` MBConv blocks; the trunk runs once per image/view
    (``cfg.engine``) and its maps are stored in float16 as memory-mapped ``.npy`` files
    under the feature cache (key: :func:`maps_key`).
    """
    timer, ds, splits, levels = _load_and_split(cfg, progress, run_dir)
    needed = np.unique(np.concatenate([splits.query, splits.database, splits.train]))
    train_idx = np.asarray(splits.train)
    backbone = build_backbone(cfg.backbone, pretrained=cfg.pretrained)
    trunk, tail = split_backbone(backbone, cfg.tail_blocks)
    with torch.no_grad():
        shape = tuple(trunk(torch.zeros(1, 3, cfg.resolution, cfg.resolution)).shape[1:])
    cache = FeatureCache()
    clean_size, bank_size = read_sizes(cfg, ds)
    key, bkey = (
        maps_key(cfg, ds, needed, trunk, bank=False),
        maps_key(cfg, ds, train_idx, trunk, bank=True),
    )
    use_threads(thread_budget(cfg.threads))
    if any(cache.load_array(k) is None for k in (key, bkey)):
        print(
            first_run_notice(len(needed), len(train_idx) * cfg.n_views, cfg.resolution, cache.root)
        )
    common = {"resolution": cfg.resolution, "engine": cfg.engine, "progress": progress}
    with timer("trunk maps"):
        maps = cache.get_or_fill_array(
            key,
            (len(needed), *shape),
            np.float16,
            lambda out: trunk_maps(trunk, D.LazyImages(ds, needed, size=clean_size), out, **common),
        )
    with timer("trunk bank maps"):
        bank_maps = cache.get_or_fill_array(
            bkey,
            (len(train_idx), cfg.n_views, *shape),
            np.float16,
            lambda out: trunk_maps(
                trunk,
                D.LazyImages(ds, train_idx, size=bank_size),
                out,
                n_views=cfg.n_views,
                seed=cfg.seed,
                **common,
            ),
        )
    tail = tail.to(cfg.device)
    train_maps = maps[np.searchsorted(needed, train_idx)]
    online = TailViews(tail, bank_maps, np.asarray(train_maps))
    return PreparedTail(cfg, ds, splits, needed, maps, bank_maps, online, timer, levels)


@dataclass
class PreparedOnline(_HierarchyLevels):
    """The paper's path: images and a (partly trainable) backbone instead of a bank."""

    cfg: TrainConfig
    dataset: D.ImageDataset
    splits: D.Splits
    online: OnlineViews
    timer: StageTimer = field(default_factory=StageTimer)
    levels: dict = field(default_factory=dict)

    def images(self, name: str, *, lazy: bool = True):
        """The split's uint8 images, read at 224 px from files (as they come when in memory).

        Only the training images, which every step samples, are held (``lazy=False``);
        the others (validation, queries, database: 193,734 NUS-WIDE images would be 29 GB
        at 224 px) are a :class:`~hihpq_lib.data.LazyImages`, decoded a batch at a time
        by ``OnlineViews.clean``.
        """
        size = None if self.dataset.in_memory else 224
        indices = getattr(self.splits, name)
        if lazy and not self.dataset.in_memory:
            return D.LazyImages(self.dataset, indices, size=size)
        return D.read_images(self.dataset, indices, size=size)

    def labels(self, indices) -> torch.Tensor:
        return torch.as_tensor(np.asarray(self.dataset.labels)[np.asarray(indices)])

    def split(self, name: str) -> FeatureSplit:
        return FeatureSplit(
            self.online.clean(self.images(name)), self.labels(getattr(self.splits, name))
        )

    def training_data(self) -> TrainingData:
        train_images = self.images("train", lazy=False)
        self.online.images = train_images
        vq, vd = self.images("val_query"), self.images("val_database")
        return _views_training_data(self, train_images, vq, vd)


def _views_training_data(prep, train_inputs, vq, vd) -> TrainingData:
    """Training data whose views come from ``prep.online`` (images or trunk maps), with the
    validation features computed through it from ``vq`` / ``vd``."""
    online, splits = prep.online, prep.splits
    return TrainingData(
        bank=None,
        train=online.clean(train_inputs),
        val_query=FeatureSplit(online.clean(vq), prep.labels(splits.val_query)),
        val_database=FeatureSplit(online.clean(vd), prep.labels(splits.val_database)),
        online=online,
        val_images=(vq, vd),
    )


def prepare_online(
    cfg: TrainConfig, *, progress: bool = True, run_dir: Path | None = None
) -> PreparedOnline:
    """Data, splits and the backbone for online augmentation (the paper's setting)."""
    timer, ds, splits, levels = _load_and_split(cfg, progress, run_dir)
    kwargs = {"trainable_layer_num": cfg.trainable_layers} if cfg.backbone == "vgg16" else {}
    backbone = build_backbone(cfg.backbone, pretrained=cfg.pretrained, **kwargs)
    online = OnlineViews(backbone, None, cfg.resolution, device=cfg.device)
    return PreparedOnline(cfg, ds, splits, online, timer, levels)


#: What a run writes into its folder (``--overwrite`` removes exactly these).
RUN_FILES = (
    "config.yaml",
    "splits.json",
    "metrics.jsonl",
    CHECKPOINT,
    BEST,
    "results.json",
    "index",
    "database_indices.npy",
    PSEUDO_HIERARCHY,
)


class RunFolderError(ValueError):
    """A run folder that a command must not write into (or read from) as asked."""


def run_folder(cfg: TrainConfig, out_dir: str | Path | None = None) -> Path:
    """The folder a run writes to: ``out_dir``, else ``runs_dir() / cfg.name``."""
    return Path(out_dir) if out_dir is not None else runs_dir() / cfg.name


def check_run_folder(
    cfg: TrainConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False
) -> Path:
    """Validate a run folder before anything is written to it; return it.

    * ``out`` must be a folder (or not exist yet);
    * with ``resume``, a checkpoint there must have been written with ``cfg`` (nothing
      is written when it was not);
    * otherwise the folder must be empty, unless ``overwrite``: then the files of the
      earlier run (:data:`RUN_FILES`) are removed first, so a new run killed midway never
      leaves a folder that mixes two runs.

    Orphaned temporary files of killed writers are removed in every case.
    """
    cfg.validate()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(
            f"run folder {out} exists and is a file, not a folder; pass another --out"
        )
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other; pass one")
    if not out.is_dir():
        return out
    clean_stale_tmp(out)
    clean_stale_tmp(out / "index")
    if resume:
        ckpt = out / CHECKPOINT
        if ckpt.is_file():
            ck = load_checkpoint(ckpt)
            theirs, ours = ck.get("config") or {}, cfg.to_dict()
            if ours.get("num_clusters") == "auto":  # resolved from the data when it trained
                ours["num_clusters"] = theirs.get("num_clusters")
            if theirs != ours:
                diff = sorted(
                    k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)
                )
                raise RunFolderError(
                    f"{ckpt} was written with another configuration (differs in "
                    f"{', '.join(diff[:5])}); start a new run folder or drop --resume"
                )
        return out
    present = sorted(p.name for p in out.iterdir())
    if not present:
        return out
    if not overwrite:
        shown = ", ".join(present[:4]) + (", ..." if len(present) > 4 else "")
        raise RunFolderError(
            f"run folder {out} is not empty (holds {shown}); pass --resume to continue its "
            "run, --overwrite to replace it, or another --out"
        )
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    return out


def check_run_stamps(run: str | Path) -> dict:
    """Load ``checkpoint.pt`` of a run folder and check that its index and results belong
    to the same run (see :func:`~hihpq_lib.learning.training.check_stamp`); return the checkpoint."""
    run = Path(run)
    ck = load_checkpoint(run / CHECKPOINT)
    run_id = ck.get("run_id")
    header = run / "index" / "index.json"
    if header.is_file():
        try:
            meta = json.loads(header.read_text()).get("metadata", {})
        except (OSError, ValueError, AttributeError):
            meta = {}
        check_stamp(run / "index", meta.get("run_id"), run_id)
    results = run / "results.json"
    if results.is_file():
        try:
            stamp = json.loads(results.read_text()).get("run_id")
        except (OSError, ValueError, AttributeError):
            stamp = None
        check_stamp(results, stamp, run_id)
    return ck


def run_experiment(
    cfg: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    prepared: Prepared | None = None,
) -> dict:
    """Prepare, train, and evaluate on the test queries; write ``results.json``.

    The validation queries select the epoch (``best``); the test queries are only used to
    report the final model and the selected model, never to choose between them.

    A non-empty run folder is refused unless ``resume`` (continue its checkpoint; a
    checkpoint of another configuration is refused before anything is written) or
    ``overwrite`` (its earlier run's files are removed first); see
    :func:`check_run_folder`.
    """
    out = check_run_folder(cfg, run_folder(cfg, out_dir), resume=resume, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.yaml")
    if prepared is None:
        make = (
            prepare_online
            if cfg.online_augmentation
            else prepare_tail
            if cfg.tail_blocks
            else prepare
        )
        prepared = make(cfg, progress=progress, run_dir=out)
    prep = prepared
    D.save_splits(prep.splits, out / "splits.json")
    run_cfg = run_config(cfg, prep.dataset, prep.splits)
    timer = prep.timer
    with timer("train"):
        res = train(run_cfg, prep.training_data(), out, resume=resume, progress=progress)
    query, database = prep.split("query"), prep.split("database")
    ql, dl = prep.level_labels("query"), prep.level_labels("database")
    with timer("encode + search + mAP"):
        final_levels = _levels_map(res["model"], query, database, ql, dl, cfg)
    best_model, _ = load_model(out, "best", in_dim=query.feats.shape[1])
    best_backbone = load_checkpoint(out / "best.pt").get("backbone")
    if isinstance(prep, (PreparedOnline, PreparedTail)) and best_backbone is not None:
        # the backbone (or its tail) trained too: the selected epoch's features come
        # from the selected epoch's backbone
        final_backbone = {k: v.clone() for k, v in prep.online.backbone.state_dict().items()}
        prep.online.backbone.load_state_dict(best_backbone)
        best_levels = _levels_map(
            best_model, prep.split("query"), prep.split("database"), ql, dl, cfg
        )
        prep.online.backbone.load_state_dict(final_backbone)
    else:
        best_levels = _levels_map(best_model, query, database, ql, dl, cfg)
    final_map, best_map = final_levels["class"], best_levels["class"]
    guard = None
    if cfg.baseline_guard and isinstance(prep, Prepared):  # frozen features only
        with timer("baselines"):
            guard = baseline_guard(prep, run_cfg, query, database, best_levels)
    index = res["model"].build_index(
        database.feats, metadata={"config": run_cfg.to_dict(), "run_id": res["run_id"]}
    )
    index.save(out / "index")
    np.save(out / "database_indices.npy", np.asarray(prep.splits.database))
    is_cifar = cfg.dataset == "cifar10"
    results = {
        "name": cfg.name,
        "run_id": res["run_id"],
        "threads": res["threads"],
        "dataset": prep.dataset.display_name,
        "dataset_kind": cfg.dataset,
        "protocol": cfg.protocol if is_cifar else None,
        "split": f"protocol {cfg.protocol}" if is_cifar else _split_label(prep.splits),
        "bits": cfg.bits,
        "geometry": cfg.geometry,
        f"map@{cfg.topk}_final": final_map,
        f"map@{cfg.topk}_val_selected": best_map,
        "val_selected_epoch": res["best_epoch"],
        "val_map_best": res["best_val_map"],
        "val_map_final": res["final_val_map"],
        "val_map_init": res.get("init_val_map"),
        "epochs": cfg.epochs,
        "n_classes": prep.dataset.n_classes,
        "num_clusters": list(run_cfg.num_clusters),
        "n_query": len(query.feats),
        "n_database": len(database.feats),
        "n_train": len(prep.splits.train),
        **hierarchy_results(prep, cfg, final_levels, best_levels),
        "baselines": guard,
        "pseudo_hierarchy": pseudo_hierarchy_report(out, prep, res["run_id"]),
        "stage_seconds": {k: round(v, 2) for k, v in timer.seconds.items()},
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    return {**results, "model": res["model"], "prepared": prep, "history": res["history"]}


def _topk_float(query: torch.Tensor, database: torch.Tensor, k: int) -> np.ndarray:
    """Exact cosine top-``k`` (the float baseline), in chunks of queries."""
    db = torch.nn.functional.normalize(database.float(), dim=1)
    out = []
    for chunk in query.float().split(1024):
        sims = torch.nn.functional.normalize(chunk, dim=1) @ db.T
        out.append(sims.topk(k, dim=1).indices)
    return torch.cat(out).numpy()


def baseline_guard(
    prep, cfg: TrainConfig, query: FeatureSplit, database: FeatureSplit, model_levels
):
    """The untrained baselines on the same frozen features, and a warning below them.

    ``float``: exact cosine search on the backbone features (32 bits per dimension);
    ``faiss_pq``: faiss PQ with HiHPQ's bytes (``M`` sub-vectors of 8 bits), trained on
    the training images' features, when faiss is installed (the ``baselines`` extra).
    mAP@``topk`` at every level ``model_levels`` has (the validation-selected model's).
    When the model is below a baseline at any level, a ``warning:`` line on stderr says
    so and ``below`` lists the comparisons.
    """
    import sys

    k = min(cfg.topk, len(database.feats))
    ql, dl = prep.level_labels("query"), prep.level_labels("database")
    levels = {n: (ql[n], dl[n]) for n in ql}
    report: dict = {"float": map_at_k_levels(_topk_float(query.feats, database.feats, k), levels)}
    fit = prep.split("train").feats
    fit = fit if len(fit) >= 256 else database.feats  # k-means needs K = 256 vectors
    report["faiss_pq"] = None  # lean install (pip install "hihpq[baselines]"), tiny runs
    if len(fit) >= 256 and fit.shape[1] % cfg.M == 0:
        try:
            from hihpq_lib.evaluation.baselines import FaissPQ

            pq = FaissPQ(cfg.M).fit(fit.float().numpy())
            pq.add(database.feats.float().numpy())
            _, idx = pq.search(query.feats.float().numpy(), k)
            report["faiss_pq"] = map_at_k_levels(idx, levels)
        except ImportError:
            pass
    below = [
        f"{level} {model_levels[level]:.3f} < {name} {scores[level]:.3f}"
        for name, scores in report.items()
        if scores is not None
        for level in scores
        if level in model_levels and model_levels[level] < scores[level]
    ]
    report["below"] = below
    if below:
        print(
            f"warning: HiHPQ (validation-selected) is below the untrained baselines on the same "
            f'frozen features: {"; ".join(below)} (mAP@{k}); see docs/folders.md, "Never worse '
            f'than doing nothing" (head_init=pca, neighbour_weight, eval_init)',
            file=sys.stderr,
        )
    return report


def _split_label(splits: D.Splits) -> str:
    source = splits.meta.get("query_source")
    return "folder split" + (f" (queries from the {source})" if source else "")


def _levels_map(model, query: FeatureSplit, database: FeatureSplit, ql, dl, cfg) -> dict:
    levels = {k: (ql[k], dl[k]) for k in ql}
    return evaluate_levels(model, query.feats, database.feats, levels, cfg.topk, cfg.symmetric)


def hierarchy_results(prep, cfg: TrainConfig, final_levels: dict, best_levels: dict) -> dict:
    """The per-level part of ``results.json``: what the hierarchy is and mAP at each level
    (``class`` included) for the final and the validation-selected model."""
    source = (
        "hierarchy_file"
        if cfg.hierarchy_file
        else "superclass_file"
        if cfg.superclass_file
        else "dataset"
        if len(prep.levels) > 1
        else None
    )
    nodes = {k: int(len(np.unique(v))) for k, v in prep.levels.items() if np.asarray(v).ndim == 1}
    return {
        "hierarchy": {"source": source, "levels": nodes},
        f"map@{cfg.topk}_levels_final": final_levels,
        f"map@{cfg.topk}_levels_val_selected": best_levels,
    }


def pseudo_hierarchy_report(run_dir: str | Path, prep, run_id: str | None = None) -> dict | None:
    """ARI and NMI of the learned pseudo hierarchy against every true level.

    The pseudo hierarchy is the Ward clustering of the training images at the last epoch
    that clustered (``pseudo_hierarchy.npz``, one partition per granularity of
    ``num_clusters``); each is compared with the training images' labels at every level
    of ``prep.levels`` (class, superclass or the chosen depths) with
    :func:`~hihpq_lib.evaluation.metrics.hierarchy_agreement`. ``None`` when the run never
    clustered, or the file belongs to another run or training set.
    """
    loaded = load_pseudo_hierarchy(Path(run_dir) / PSEUDO_HIERARCHY)
    if loaded is None:
        return None
    labels, epoch, stamp = loaded
    train_idx = np.asarray(prep.splits.train)
    if (run_id is not None and stamp != run_id) or any(
        len(lab) != len(train_idx) for lab in labels
    ):
        return None
    names = [f"{len(np.unique(lab))} clusters" for lab in labels]
    agreement = {}
    for level, lab in prep.levels.items():
        lab = np.asarray(lab)
        if lab.ndim != 1:
            continue
        rows = hierarchy_agreement(labels, lab[train_idx], level_names=names)
        agreement[level] = [
            {
                "granularity": r["level"],
                "n_clusters": r["n_clusters"],
                "ari": round(r["ari_class"], 4),
                "nmi": round(r["nmi_class"], 4),
            }
            for r in rows
        ]
    return {"epoch": epoch, "n_train": int(len(train_idx)), "agreement": agreement}
