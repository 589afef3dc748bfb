"""Preparing a run's inputs: one object per training-input mode, chosen in one place.

:func:`input_mode` names the mode a config asks for, and :func:`prepare_for` prepares it:

* ``"bank"`` (:class:`Prepared`): a frozen backbone; the clean features of every image
  and an augmentation bank of the training images, computed once and cached;
* ``"tail"`` (:class:`PreparedTail`, ``tail_blocks`` >= 1): the frozen trunk's maps,
  cached, through a backbone tail that trains with the quantizer;
* ``"online"`` (:class:`PreparedOnline`, ``online_augmentation``, the paper's path):
  images through a backbone whose last layers may train (``trainable_layers``).

Each holds an *encoder* (:class:`FrozenEncoder`, :class:`TailEncoder`,
:class:`OnlineEncoder`) that computes the features of new images exactly as the
database's were computed (same read size, transform, engine and stored precision), and
that can take a run's trained backbone state (``encoder.restored(state)``). So a run is
scored, and searched, with its own backbone: :mod:`hihpq_lib.app.scoring`.
"""

from __future__ import annotations

import hashlib
import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hihpq_lib import data as D
from hihpq_lib.app.datasets import load_and_split
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
from hihpq_lib.learning.config import TrainConfig, bank_views
from hihpq_lib.learning.views import FeatureSplit, OnlineViews, TailViews, TrainingData
from hihpq_lib.utils.runtime import project_dir, thread_budget, use_threads
from hihpq_lib.utils.timing import StageTimer

__all__ = [
    "MODES",
    "input_mode",
    "encoder_for",
    "prepare_for",
    "FrozenEncoder",
    "TailEncoder",
    "OnlineEncoder",
    "Prepared",
    "PreparedTail",
    "PreparedOnline",
    "prepare",
    "prepare_tail",
    "prepare_online",
    "read_sizes",
    "maps_key",
    "first_run_rates",
    "concatenation_notice",
    "first_run_notice",
    "first_run_seconds",
]

#: The training-input modes, in the order :func:`input_mode` checks them.
MODES = ("online", "tail", "bank")


def input_mode(cfg: TrainConfig) -> str:
    """The training-input mode ``cfg`` asks for: ``"online"`` (``online_augmentation``),
    ``"tail"`` (``tail_blocks`` >= 1) or ``"bank"``. The one place the mode is chosen.

    >>> from hihpq_lib.learning.config import TrainConfig
    >>> input_mode(TrainConfig()), input_mode(TrainConfig(tail_blocks=1))
    ('bank', 'tail')
    """
    if cfg.online_augmentation:
        return "online"
    if cfg.tail_blocks:
        return "tail"
    return "bank"


# ----------------------------------------------------------------------------- encoders


class _Encoder:
    """What the three encoders share: the part of the backbone that trains (``trainable``,
    ``None`` when nothing does) and :meth:`restored`, which loads a run's state into it
    for the duration of a ``with`` block and puts the current state back after."""

    mode: str
    cfg: TrainConfig

    @property
    def trainable(self) -> torch.nn.Module | None:
        return None

    @contextmanager
    def restored(self, state: dict | None):
        """The encoder with the backbone ``state`` (a ``state_dict`` saved by training;
        ``None``: as it is) loaded, the current state put back on exit."""
        module = self.trainable
        if state is None or module is None:
            if state is not None:
                raise ValueError(
                    f"this {self.mode} run's backbone does not train, yet a trained backbone "
                    "state was given: the checkpoint belongs to another configuration"
                )
            yield self
            return
        saved = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict(state)
        try:
            yield self
        finally:
            module.load_state_dict(saved)

    @classmethod
    def read_size_for(cls, cfg: TrainConfig, dataset: D.ImageDataset) -> int | None:
        """The side (px) at which clean (query, database) images of ``dataset`` are read:
        ``None`` for in-memory images (used as stored)."""
        return read_sizes(cfg, dataset)[0]

    def encode(self, images) -> torch.Tensor:
        """Features ``(N, F)`` float32 of uint8 images ``(N, H, W, 3)`` (or a
        :class:`~hihpq_lib.data.LazyImages`), exactly as the database's were computed."""
        raise NotImplementedError


class FrozenEncoder(_Encoder):
    """The bank mode's encoder: a frozen backbone through ``cfg.engine``, its features
    stored in float16 (as the feature cache holds them)."""

    mode = "bank"

    def __init__(self, cfg: TrainConfig, backbone=None):
        self.cfg = cfg
        self.backbone = backbone or build_backbone(cfg.backbone, pretrained=cfg.pretrained)

    @property
    def members(self) -> list:
        """The backbones whose features are stored side by side: the backbone itself, or
        the members of a concatenation (each cached on its own by :func:`prepare`)."""
        return list(getattr(self.backbone, "members", [self.backbone]))

    def stored(self, images, *, progress: bool = False) -> torch.Tensor:
        """Features ``(N, F)`` float16, as the feature cache stores them: a concatenation
        member by member, as :func:`prepare` caches and joins them."""
        cfg = self.cfg
        return _side_by_side(
            [
                extract_features(
                    m, images, cfg.resolution, engine=cfg.engine, progress=progress
                ).half()
                for m in self.members
            ],
            dim=1,
        )

    def encode(self, images) -> torch.Tensor:
        return self.stored(images).float()


class TailEncoder(_Encoder):
    """The tail mode's encoder: the frozen trunk (``cfg.engine``, maps stored in float16)
    then the trainable tail (``cfg.device``, float32)."""

    mode = "tail"

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        backbone = build_backbone(cfg.backbone, pretrained=cfg.pretrained)
        self.trunk, tail = split_backbone(backbone, cfg.tail_blocks)
        self.tail = tail.to(cfg.device)
        with torch.no_grad():
            zeros = torch.zeros(1, 3, cfg.resolution, cfg.resolution)
            self.map_shape = tuple(self.trunk(zeros).shape[1:])

    @property
    def trainable(self) -> torch.nn.Module:
        return self.tail

    def maps(self, images, out: np.ndarray | None = None, **kwargs) -> np.ndarray:
        """The trunk's maps ``(N, C, h, w)`` float16 of ``images`` (into ``out`` when
        given; ``kwargs``: ``n_views``, ``seed``, ``progress`` of
        :func:`~hihpq_lib.data.features.trunk_maps`)."""
        if out is None:
            views = (kwargs["n_views"],) if kwargs.get("n_views") else ()
            out = np.empty((len(images), *views, *self.map_shape), dtype=np.float16)
        kwargs.setdefault("progress", False)
        cfg = self.cfg
        return trunk_maps(
            self.trunk, images, out, resolution=cfg.resolution, engine=cfg.engine, **kwargs
        )

    def encode(self, images) -> torch.Tensor:
        return TailViews.features(self.tail, self.maps(images))


class OnlineEncoder(_Encoder):
    """The online mode's encoder: the whole backbone on ``cfg.device``, its last
    ``trainable_layers`` layers training (VGG-16), evaluation transform."""

    mode = "online"

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        kwargs = {"trainable_layer_num": cfg.trainable_layers} if cfg.backbone == "vgg16" else {}
        backbone = build_backbone(cfg.backbone, pretrained=cfg.pretrained, **kwargs)
        self.views = OnlineViews(
            backbone,
            None,
            cfg.resolution,
            device=cfg.device,
            frozen_dropout=cfg.frozen_backbone_dropout,
        )

    @property
    def trainable(self) -> torch.nn.Module | None:
        return self.views.backbone if self.views.trainable_parameters() else None

    @classmethod
    def read_size_for(cls, cfg: TrainConfig, dataset: D.ImageDataset):
        """Image files: 224 (``image_geometry: square``), or ``(crop, resize)``, the
        reference's ``Resize(256) + CenterCrop(224)`` (``reference``); queries are read
        the same way (the index metadata's ``read_size``)."""
        if dataset.in_memory:
            return None
        if cfg.image_geometry == "reference":
            return D.reference_read_size(cfg.resolution)
        return 224

    def encode(self, images) -> torch.Tensor:
        return self.views.clean(images)


_ENCODERS = {"bank": FrozenEncoder, "tail": TailEncoder, "online": OnlineEncoder}


def encoder_for(cfg: TrainConfig) -> _Encoder:
    """The encoder of ``cfg``'s input mode (:func:`input_mode`), with the pretrained (or,
    ``pretrained: false``, random) backbone; a run's trained state goes in with
    ``encoder.restored(state)``."""
    return _ENCODERS[input_mode(cfg)](cfg)


# --------------------------------------------------------------------- prepared inputs


class _PreparedBase:
    """What every prepared input has: the data, its splits, the labels per hierarchy level,
    the stage timer and the encoder. ``levels`` maps a hierarchy level's name to the labels
    of every dataset item (default: the class)."""

    cfg: TrainConfig
    dataset: D.ImageDataset
    splits: D.Splits
    levels: dict
    encoder: _Encoder | None

    def __post_init__(self):
        if not self.levels:
            self.levels = {"class": np.asarray(self.dataset.labels)}

    @property
    def mode(self) -> str:
        return input_mode(self.cfg)

    def level_labels(self, name: str) -> dict[str, torch.Tensor]:
        """Per hierarchy level, the labels of ``splits.<name>``."""
        idx = np.asarray(getattr(self.splits, name))
        return {k: torch.as_tensor(v[idx]) for k, v in self.levels.items()}

    def labels(self, indices) -> torch.Tensor:
        return torch.as_tensor(np.asarray(self.dataset.labels)[np.asarray(indices)])

    def restored(self, state: dict | None):
        """The backbone with a run's trained ``state`` for a ``with`` block (see
        :meth:`_Encoder.restored`); ``split()`` inside it uses that backbone. ``None``
        (a frozen backbone's run): the inputs as they are."""
        if state is None:
            return nullcontext(self)
        return self._encoder().restored(state)

    def read_size(self):
        """The side (px) at which this data's clean images are read (``None``: as stored;
        ``(crop, resize)``: the online path's ``image_geometry: reference``)."""
        return _ENCODERS[self.mode].read_size_for(self.cfg, self.dataset)

    def _encoder(self) -> _Encoder:
        if self.encoder is None:
            self.encoder = encoder_for(self.cfg)
        return self.encoder


@dataclass
class Prepared(_PreparedBase):
    """The bank mode's inputs: cached frozen features and the augmentation bank.

    ``feats`` holds the clean features (float16) of the images ``feat_index`` (dataset
    indices); ``rows(indices)`` maps dataset indices to rows of ``feats``; ``bank`` the
    ``(N_train, V, F)`` float16 views of the training images.
    """

    cfg: TrainConfig
    dataset: D.ImageDataset
    splits: D.Splits
    feat_index: np.ndarray
    feats: torch.Tensor
    bank: torch.Tensor
    timer: StageTimer = field(default_factory=StageTimer)
    #: labels of every item per hierarchy level (:func:`~hihpq_lib.app.datasets.hierarchy_levels`)
    levels: dict = field(default_factory=dict)
    encoder: FrozenEncoder | None = None

    def rows(self, indices) -> torch.Tensor:
        pos = np.searchsorted(self.feat_index, np.asarray(indices))
        return torch.as_tensor(pos)

    def split(self, name: str) -> FeatureSplit:
        idx = getattr(self.splits, name)
        return FeatureSplit(self.feats[self.rows(idx)].float(), self.labels(idx))

    def training_data(self) -> TrainingData:
        return TrainingData(
            bank=self.bank,
            train=self.feats[self.rows(self.splits.train)].float(),
            val_query=self.split("val_query"),
            val_database=self.split("val_database"),
            n_classes=self.dataset.n_classes,
        )


def prepare(
    cfg: TrainConfig, *, progress: bool = True, run_dir: Path | None = None, splits=None
) -> Prepared:
    """The bank mode: load data, make splits, compute or load the cached frozen features
    of every image a run needs and the augmentation bank of the training images.

    A concatenation (``backbone: efficientnet_lite2+efficientnet_lite0``) takes each
    member's features and bank from the member's own cache entry (the one a run of that
    backbone alone uses; the views are the same images, drawn from ``cfg.seed``) and puts
    them side by side, so only the members not cached yet cost a first run."""
    timer, ds, splits, levels = load_and_split(cfg, progress, run_dir, splits)
    needed = np.unique(np.concatenate([splits.query, splits.database, splits.train]))
    encoder = FrozenEncoder(cfg)
    members = encoder.members
    alone = len(members) == 1
    own = [cfg] if alone else [cfg.with_overrides([f"backbone={m.name}"]) for m in members]
    # each member's cache keys and what is missing, built once (the bank key fingerprints
    # every training image): the notices and the computation below share them
    todo = [_todo(c, ds, splits, needed, m) for c, m in zip(own, members, strict=True)]
    if not alone and any(t.n_images or t.n_views for t in todo):
        # one line up front: each member's own notice comes only when its turn starts
        print(
            concatenation_notice(
                [(m.name, t.n_images, t.n_views) for m, t in zip(members, todo, strict=True)],
                cfg.resolution,
            )
        )
    parts = [
        _frozen_inputs(
            c,
            ds,
            splits,
            needed,
            m,
            t,
            timer,
            progress,
            what=f"the frozen {'backbone' if alone else m.name} features are",
        )
        for c, m, t in zip(own, members, todo, strict=True)
    ]
    feats = _side_by_side([f for f, _ in parts], dim=1)
    bank = _side_by_side([b for _, b in parts], dim=2)
    return Prepared(cfg, ds, splits, needed, feats, bank, timer, levels, encoder)


@dataclass(frozen=True)
class _Todo:
    """One backbone's feature-cache keys (clean features, bank) and the counts of images
    and bank views still to compute (0 where the entry is cached)."""

    key: dict
    bkey: dict
    n_images: int
    n_views: int


def _todo(cfg: TrainConfig, ds, splits, needed, backbone) -> _Todo:
    """:class:`_Todo` of ``backbone`` on ``needed`` and ``splits.train``: it counts only
    what is missing (a cached clean entry with a missing bank costs the bank alone)."""
    cache = FeatureCache()
    n_train = len(np.asarray(splits.train))
    key = _clean_key(cfg, ds, needed, backbone)
    bkey = _bank_key(cfg, ds, splits, backbone)  # fingerprints every training image
    return _Todo(
        key,
        bkey,
        0 if key in cache else len(needed),
        0 if bkey in cache else n_train * bank_views(cfg, n_train),
    )


def _side_by_side(parts: list[torch.Tensor], dim: int) -> torch.Tensor:
    """The members' features joined along ``dim``; one backbone's as they are (no copy)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def _frozen_inputs(
    cfg: TrainConfig,
    ds,
    splits,
    needed,
    backbone,
    todo: _Todo,
    timer: StageTimer,
    progress: bool,
    what: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One backbone's clean features of ``needed`` and bank of ``splits.train`` (float16),
    from the feature cache (under ``todo``'s keys) or computed and cached; ``what`` names
    them in the first-run notice."""
    cache = FeatureCache()
    clean_size, bank_size = read_sizes(cfg, ds)
    views = bank_views(cfg, len(np.asarray(splits.train)))  # n_views, or fewer (view_budget)
    key, bkey = todo.key, todo.bkey
    use_threads(thread_budget(cfg.threads))
    # printed even with progress=False: the user must know why it is slow
    if todo.n_images or todo.n_views:
        print(first_run_notice(todo.n_images, todo.n_views, cfg.resolution, cache.root, what=what))
    # the images are decoded chunk by chunk inside extract_features / augmentation_bank
    # (LazyImages), so no stage holds all of them: memory stays flat in the dataset size
    with timer("features"):
        feats = cache.get_or_compute(
            key,
            lambda: FrozenEncoder(cfg, backbone).stored(
                D.LazyImages(ds, needed, size=clean_size), progress=progress
            ),
        )
    train_idx = np.asarray(splits.train)
    use_threads(thread_budget(cfg.threads))
    with timer("augmentation bank"):
        bank = cache.get_or_compute(
            bkey,
            lambda: augmentation_bank(
                backbone,
                D.LazyImages(ds, train_idx, size=bank_size),
                n_views=views,
                resolution=cfg.resolution,
                seed=cfg.seed,
                engine=cfg.engine,
                progress=progress,
            ).half(),
        )
    return feats, bank


@dataclass
class PreparedTail(_PreparedBase):
    """The tail mode's inputs (``tail_blocks`` 1 or 2).

    ``maps`` holds the frozen trunk's maps ``(N, C, h, w)`` float16 of the images
    ``feat_index`` (memory-mapped from the feature cache); ``bank_maps`` those of the
    ``n_views`` augmented views of the training images ``(N_train, V, C, h, w)``;
    ``online`` the :class:`~hihpq_lib.learning.views.TailViews` that trains the tail
    (``encoder.tail``). ``split(name)`` runs the tail as it is now on the cached maps.
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
    encoder: TailEncoder | None = None

    def rows(self, indices) -> np.ndarray:
        return np.searchsorted(self.feat_index, np.asarray(indices))

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
    cfg: TrainConfig, *, progress: bool = True, run_dir: Path | None = None, splits=None
) -> PreparedTail:
    """The tail mode: load data, make splits, compute or load the cached trunk maps of
    every image a run needs and of the ``n_views`` augmented views of the training images.

    The backbone is split (:func:`~hihpq_lib.data.backbones.tail.split_backbone`) before
    its last ``cfg.tail_blocks`` MBConv blocks (:class:`TailEncoder`); the trunk runs once
    per image/view (``cfg.engine``) and its maps are stored in float16 as memory-mapped
    ``.npy`` files under the feature cache (key: :func:`maps_key`).
    """
    timer, ds, splits, levels = load_and_split(cfg, progress, run_dir, splits)
    needed = np.unique(np.concatenate([splits.query, splits.database, splits.train]))
    train_idx = np.asarray(splits.train)
    views = bank_views(cfg, len(train_idx))  # n_views, or fewer under view_budget
    encoder = TailEncoder(cfg)
    cache = FeatureCache()
    clean_size, bank_size = read_sizes(cfg, ds)
    key, bkey = (
        maps_key(cfg, ds, needed, encoder.trunk, bank=False),
        maps_key(cfg, ds, train_idx, encoder.trunk, bank=True),
    )
    use_threads(thread_budget(cfg.threads))
    n_images = 0 if key in cache else len(needed)  # only what is missing
    n_views = 0 if bkey in cache else len(train_idx) * views
    if n_images or n_views:
        print(
            first_run_notice(
                n_images,
                n_views,
                cfg.resolution,
                cache.root,
                what="the frozen trunk's maps (tail_blocks) are",
            )
        )
    with timer("trunk maps"):
        maps = cache.get_or_fill_array(
            key,
            (len(needed), *encoder.map_shape),
            np.float16,
            lambda out: encoder.maps(
                D.LazyImages(ds, needed, size=clean_size), out, progress=progress
            ),
        )
    with timer("trunk bank maps"):
        bank_maps = cache.get_or_fill_array(
            bkey,
            (len(train_idx), views, *encoder.map_shape),
            np.float16,
            lambda out: encoder.maps(
                D.LazyImages(ds, train_idx, size=bank_size),
                out,
                n_views=views,
                seed=cfg.seed,
                progress=progress,
            ),
        )
    train_maps = maps[np.searchsorted(needed, train_idx)]
    online = TailViews(encoder.tail, bank_maps, np.asarray(train_maps))
    return PreparedTail(cfg, ds, splits, needed, maps, bank_maps, online, timer, levels, encoder)


@dataclass
class PreparedOnline(_PreparedBase):
    """The online mode's inputs (the paper's path): images and a (partly trainable)
    backbone instead of a bank; ``online`` is the encoder's
    :class:`~hihpq_lib.learning.views.OnlineViews`."""

    cfg: TrainConfig
    dataset: D.ImageDataset
    splits: D.Splits
    online: OnlineViews
    timer: StageTimer = field(default_factory=StageTimer)
    levels: dict = field(default_factory=dict)
    encoder: OnlineEncoder | None = None

    def images(self, name: str, *, lazy: bool = True):
        """The split's uint8 images, read at :meth:`read_size` from files (as they come
        when in memory).

        Only the training images, which every step samples, are held (``lazy=False``);
        the others (validation, queries, database: 193,734 NUS-WIDE images would be 29 GB
        at 224 px) are a :class:`~hihpq_lib.data.LazyImages`, decoded a batch at a time
        by ``OnlineViews.clean``. With ``image_geometry: reference`` the training images
        are held as their encoded files (:class:`~hihpq_lib.data.EncodedImages`): the
        views crop the whole, non-square images, decoded at each step.
        """
        size = self.read_size()
        indices = getattr(self.splits, name)
        if lazy and not self.dataset.in_memory:
            return D.LazyImages(self.dataset, indices, size=size)
        if self.cfg.image_geometry == "reference" and not self.dataset.in_memory:
            # the encoded files: views crop the whole images, slices read at ``size``
            return D.EncodedImages(self.dataset, indices, size=size)
        return D.read_images(self.dataset, indices, size=size)

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
        n_classes=prep.dataset.n_classes,
    )


def prepare_online(
    cfg: TrainConfig, *, progress: bool = True, run_dir: Path | None = None, splits=None
) -> PreparedOnline:
    """The online mode: data, splits and the backbone for online augmentation."""
    timer, ds, splits, levels = load_and_split(cfg, progress, run_dir, splits)
    encoder = OnlineEncoder(cfg)
    return PreparedOnline(cfg, ds, splits, encoder.views, timer, levels, encoder)


_PREPARE = {"bank": prepare, "tail": prepare_tail, "online": prepare_online}


def prepare_for(
    cfg: TrainConfig, *, progress: bool = True, run_dir: Path | None = None, splits=None
) -> Prepared | PreparedTail | PreparedOnline:
    """Prepare the inputs of ``cfg``'s mode (:func:`input_mode`): :func:`prepare`,
    :func:`prepare_tail` or :func:`prepare_online`. ``run_dir``: save the splits there;
    ``splits``: use these instead of drawing them (a run's own ``splits.json``)."""
    return _PREPARE[input_mode(cfg)](cfg, progress=progress, run_dir=run_dir, splits=splits)


# ------------------------------------------------------------------------- cache keys


def _digest(indices: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()[:12]


def first_run_rates(path: Path | None = None) -> dict | None:
    """The measured cold-start cost of the frozen features: ``first_run.full.rates`` of
    ``notebooks/timings.yaml`` (the one source of the notebooks' first-run times).

    A dict with ``backbone``, ``resolution`` (px), ``images`` and ``images_s`` (the clean
    features: that many images in that many seconds), ``views`` and ``views_s`` (the
    augmentation bank). The file is looked up in the project folder
    (:func:`~hihpq_lib.utils.runtime.project_dir`), then beside this source checkout;
    ``None`` when neither has it (an installed package) or PyYAML is missing.
    """
    candidates = (
        [path]
        if path is not None
        else [
            project_dir() / "notebooks" / "timings.yaml",
            Path(__file__).resolve().parents[2] / "notebooks" / "timings.yaml",
        ]
    )
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML comes with the data extra
        return None
    for candidate in candidates:
        if candidate.is_file():
            return dict(
                yaml.safe_load(candidate.read_text(encoding="utf-8"))["first_run"]["full"]["rates"]
            )
    return None


def first_run_notice(
    n_images: int,
    n_views: int,
    resolution: int,
    where=None,
    *,
    rates: dict | None = None,
    what: str = "the frozen backbone features are",
) -> str:
    """The warning printed before the frozen features (or, ``what``, the tail mode's trunk
    maps: nearly the same forward passes) are computed for the first time.

    The time is estimated from the cold start measured in ``notebooks/timings.yaml``
    (:func:`first_run_rates`, or ``rates``), scaled by the number of images and views and
    by the pixels, ``(resolution / measured resolution) ** 2``, rounded up to a minute.
    At the measured sizes (``make demo``: 60,000 images, 5,000 × 8 views, 160 px) it
    states the first-run minutes that the notebooks' headers state
    (``tests/test_notebook_timings.py`` checks they agree):

    >>> rates = first_run_rates()
    >>> print(first_run_notice(rates["images"], rates["views"], rates["resolution"]).splitlines()[0])
    FIRST RUN: the frozen backbone features are not cached yet; computing them takes about 7 min
    >>> first_run_notice(1, 0, 160, rates=rates, what="the frozen trunk's maps are").split(";")[0]
    "FIRST RUN: the frozen trunk's maps are not cached yet"

    A zero count is left out (a cached clean entry whose bank is missing):

    >>> first_run_notice(0, 40_000, 160, rates=rates).splitlines()[1].split(" at ")[0]
    '  (40,000 augmented views'
    """
    rates = first_run_rates() if rates is None else rates
    if rates is None:
        estimate, basis = "several minutes", "no notebooks/timings.yaml found to estimate from"
    else:
        estimate = (
            f"about {_whole_minutes(first_run_seconds(n_images, n_views, resolution, rates))} min"
        )
        basis = (
            f"at the rates measured for {rates['backbone']} at {rates['resolution']} px "
            f"on 2 CPU cores, notebooks/timings.yaml; longer on a busy machine"
        )
    counted = " + ".join(
        f"{n:,} {unit}" for n, unit in ((n_images, "images"), (n_views, "augmented views")) if n
    )
    return (
        f"FIRST RUN: {what} not cached yet; computing them takes "
        f"{estimate}\n"
        f"  ({counted} at {resolution} px, {basis})."
        f" They are cached"
        + (f" under {where}" if where is not None else "")
        + " and every later run loads them in seconds."
    )


def first_run_seconds(n_images: int, n_views: int, resolution: int, rates: dict) -> float:
    """Seconds to compute ``n_images`` clean features and ``n_views`` bank views at
    ``resolution`` px, at the measured ``rates`` (:func:`first_run_rates`), scaled by the
    pixels, ``(resolution / measured resolution) ** 2``."""
    scale = (resolution / rates["resolution"]) ** 2
    return scale * (
        n_images * rates["images_s"] / rates["images"] + n_views * rates["views_s"] / rates["views"]
    )


def _whole_minutes(seconds: float) -> int:
    """Minutes rounded up, at least 1: what a FIRST RUN notice states."""
    return max(1, math.ceil(seconds / 60))


def concatenation_notice(
    missing: list[tuple[str, int, int]], resolution: int, *, rates: dict | None = None
) -> str:
    """The line printed before a concatenation's members (``backbone: a+b+c``) are
    prepared, when any of them is not cached: which ones, and the time for all of them
    together, the sum of the minutes that each member's own :func:`first_run_notice`
    states when its turn comes.

    ``missing``: ``(name, images, views)`` per member, the counts still to compute.

    >>> rates = first_run_rates()
    >>> print(concatenation_notice(
    ...     [("efficientnet_lite2", 0, 0), ("efficientnet_lite0", 60_000, 40_000),
    ...      ("efficientnet_lite1", 60_000, 40_000)], 160, rates=rates))
    FIRST RUN: 2 of the 3 backbones side by side are not cached yet (efficientnet_lite0, efficientnet_lite1); computing their features, one after the other, takes about 14 min in all at the measured rates; longer on a busy machine.
    """
    rates = first_run_rates() if rates is None else rates
    todo = [(name, n_i, n_v) for name, n_i, n_v in missing if n_i or n_v]
    if rates is None:
        estimate = "several minutes"
    else:
        # the sum of the minutes each member's own notice will state
        minutes = [
            _whole_minutes(first_run_seconds(n_i, n_v, resolution, rates)) for _, n_i, n_v in todo
        ]
        estimate = f"about {sum(minutes)} min"
    return (
        f"FIRST RUN: {len(todo)} of the {len(missing)} backbones side by side "
        f"{'is' if len(todo) == 1 else 'are'} not cached yet "
        f"({', '.join(name for name, _, _ in todo)}); computing "
        f"{'its features' if len(todo) == 1 else 'their features, one after the other,'} "
        f"takes {estimate} in all"
        + ("" if rates is None else " at the measured rates; longer on a busy machine")
        + "."
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
        n_views=bank_views(cfg, len(train_idx)),
        seed=cfg.seed,
        content=D.content_fingerprint(ds, train_idx),
        image_size=read_sizes(cfg, ds)[1],
    )


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
    extra = {"n_views": bank_views(cfg, len(idx)), "seed": cfg.seed} if bank else {}
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
