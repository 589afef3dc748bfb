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
from hihpq_lib.data.features import FeatureCache, augmentation_bank, extract_features, feature_key
from hihpq_lib.learning.config import TrainConfig
from hihpq_lib.learning.training import (
    BEST,
    CHECKPOINT,
    FeatureSplit,
    OnlineViews,
    TrainingData,
    check_stamp,
    evaluate_map,
    load_checkpoint,
    load_model,
    train,
)
from hihpq_lib.utils.atomic import atomic_write_text, clean_stale_tmp
from hihpq_lib.utils.runtime import runs_dir, thread_budget, use_threads

__all__ = [
    "Prepared",
    "PreparedOnline",
    "prepare",
    "prepare_online",
    "run_experiment",
    "peak_rss_mb",
    "StageTimer",
    "OneClassWarning",
    "RunFolderError",
    "RUN_FILES",
    "run_folder",
    "check_run_folder",
    "check_run_stamps",
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


@dataclass
class Prepared:
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
    """The dataset a config names (CIFAR-10 through the source-resolution order)."""
    if cfg.dataset == "cifar10":
        return D.load_cifar10(cfg.data, progress=progress)
    if cfg.dataset in ("flickr25k", "nuswide"):
        return D.load_dataset(cfg.dataset, root=cfg.data)
    if cfg.dataset == "folder":
        if not cfg.data:
            raise D.DatasetNotFoundError(
                "dataset 'folder' needs data=PATH (a folder of class folders)"
            )
        return D.load_image_folder(cfg.data)
    return D.load_dataset(cfg.dataset)  # raises with the list of known names


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
        image_size=None if ds.in_memory else 224,
    )


def _cached(cache: FeatureCache, key) -> bool:
    path = cache.path_for(key)
    return path.exists() and path.with_suffix(".json").exists()


def prepare(cfg: TrainConfig, *, progress: bool = True, run_dir: Path | None = None) -> Prepared:
    """Load data, make splits, compute or load cached features and the augmentation bank."""
    timer = StageTimer()
    with timer("load images"):
        ds = load_data(cfg, progress)
        splits = make_run_splits(cfg, ds)
    if run_dir is not None:
        D.save_splits(splits, Path(run_dir) / "splits.json")
    _warn_if_one_class(ds, splits)
    needed = np.unique(np.concatenate([splits.query, splits.database, splits.train]))
    backbone = build_backbone(cfg.backbone, pretrained=cfg.pretrained)
    cache = FeatureCache()
    size = None if ds.in_memory else 224
    n_train = len(np.asarray(splits.train))
    key = feature_key(
        ds.name,
        f"clean-{_digest(needed)}-n{len(needed)}",
        backbone,
        cfg.resolution,
        engine=cfg.engine,
        content=D.content_fingerprint(ds, needed),
        image_size=size,
    )
    use_threads(thread_budget(cfg.threads))
    missing = [k for k in (key, _bank_key(cfg, ds, splits, backbone)) if not _cached(cache, k)]
    if missing:  # printed even with progress=False: the user must know why it is slow
        print(first_run_notice(len(needed), n_train * cfg.n_views, cfg.resolution, cache.root))
    with timer("features"):
        feats = cache.get_or_compute(
            key,
            lambda: extract_features(
                backbone,
                D.read_images(ds, needed, size=size),
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
                D.read_images(ds, train_idx, size=size),
                n_views=cfg.n_views,
                resolution=cfg.resolution,
                seed=cfg.seed,
                engine=cfg.engine,
                progress=progress,
            ).half(),
        )
    return Prepared(cfg, ds, splits, needed, feats, bank, timer)


@dataclass
class PreparedOnline:
    """The paper's path: images and a (partly trainable) backbone instead of a bank."""

    cfg: TrainConfig
    dataset: D.ImageDataset
    splits: D.Splits
    online: OnlineViews
    timer: StageTimer = field(default_factory=StageTimer)

    def images(self, name: str) -> np.ndarray:
        size = None if self.dataset.in_memory else 224
        return D.read_images(self.dataset, getattr(self.splits, name), size=size)

    def labels(self, indices) -> torch.Tensor:
        return torch.as_tensor(np.asarray(self.dataset.labels)[np.asarray(indices)])

    def split(self, name: str) -> FeatureSplit:
        return FeatureSplit(
            self.online.clean(self.images(name)), self.labels(getattr(self.splits, name))
        )

    def training_data(self) -> TrainingData:
        train_images = self.images("train")
        self.online.images = train_images
        vq, vd = self.images("val_query"), self.images("val_database")
        return TrainingData(
            bank=None,
            train=self.online.clean(train_images),
            val_query=FeatureSplit(self.online.clean(vq), self.labels(self.splits.val_query)),
            val_database=FeatureSplit(self.online.clean(vd), self.labels(self.splits.val_database)),
            online=self.online,
            val_images=(vq, vd),
        )


def prepare_online(
    cfg: TrainConfig, *, progress: bool = True, run_dir: Path | None = None
) -> PreparedOnline:
    """Data, splits and the backbone for online augmentation (the paper's setting)."""
    timer = StageTimer()
    with timer("load images"):
        ds = load_data(cfg, progress)
        splits = make_run_splits(cfg, ds)
    if run_dir is not None:
        D.save_splits(splits, Path(run_dir) / "splits.json")
    kwargs = {"trainable_layer_num": cfg.trainable_layers} if cfg.backbone == "vgg16" else {}
    backbone = build_backbone(cfg.backbone, pretrained=cfg.pretrained, **kwargs)
    online = OnlineViews(backbone, None, cfg.resolution, device=cfg.device)
    return PreparedOnline(cfg, ds, splits, online, timer)


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
            if ck.get("config") != cfg.to_dict():
                theirs, ours = ck.get("config") or {}, cfg.to_dict()
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
        make = prepare_online if cfg.online_augmentation else prepare
        prepared = make(cfg, progress=progress, run_dir=out)
    prep = prepared
    D.save_splits(prep.splits, out / "splits.json")
    timer = prep.timer
    with timer("train"):
        res = train(cfg, prep.training_data(), out, resume=resume, progress=progress)
    query, database = prep.split("query"), prep.split("database")
    with timer("encode + search + mAP"):
        final_map = evaluate_map(res["model"], query, database, cfg.topk, cfg.symmetric)
    best_model, _ = load_model(out, "best", in_dim=query.feats.shape[1])
    best_backbone = load_checkpoint(out / "best.pt").get("backbone")
    if isinstance(prep, PreparedOnline) and best_backbone is not None:
        # the backbone trained too: the selected epoch's features come from its backbone
        final_backbone = {k: v.clone() for k, v in prep.online.backbone.state_dict().items()}
        prep.online.backbone.load_state_dict(best_backbone)
        best_map = evaluate_map(
            best_model, prep.split("query"), prep.split("database"), cfg.topk, cfg.symmetric
        )
        prep.online.backbone.load_state_dict(final_backbone)
    else:
        best_map = evaluate_map(best_model, query, database, cfg.topk, cfg.symmetric)
    index = res["model"].build_index(
        database.feats, metadata={"config": cfg.to_dict(), "run_id": res["run_id"]}
    )
    index.save(out / "index")
    np.save(out / "database_indices.npy", np.asarray(prep.splits.database))
    results = {
        "name": cfg.name,
        "run_id": res["run_id"],
        "threads": res["threads"],
        "dataset": cfg.dataset,
        "protocol": cfg.protocol,
        "bits": cfg.bits,
        "geometry": cfg.geometry,
        f"map@{cfg.topk}_final": final_map,
        f"map@{cfg.topk}_val_selected": best_map,
        "val_selected_epoch": res["best_epoch"],
        "val_map_best": res["best_val_map"],
        "val_map_final": res["final_val_map"],
        "epochs": cfg.epochs,
        "n_query": len(query.feats),
        "n_database": len(database.feats),
        "n_train": len(prep.splits.train),
        "stage_seconds": {k: round(v, 2) for k, v in timer.seconds.items()},
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    return {**results, "model": res["model"], "prepared": prep, "history": res["history"]}
