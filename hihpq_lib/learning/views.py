"""What training draws its inputs from: the features of a split, the training data, and
the three kinds of training views.

* :class:`BankViews` — two different views of each image from a cached augmentation bank
  (the CPU path: frozen backbone);
* :class:`TailViews` — two cached trunk-map views through a trainable backbone tail
  (``tail_blocks``);
* :class:`OnlineViews` — two fresh augmented views through the (partly trainable)
  backbone (the paper's path).

:class:`~hihpq_lib.learning.training.train` uses them through one interface
(``sample``; ``backbone``, ``images``, ``trainable_parameters``, ``clean`` for the last two).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hihpq_lib.utils.arrays import to_numpy

__all__ = [
    "FeatureSplit",
    "TrainingData",
    "view_pairs",
    "BankViews",
    "OnlineViews",
    "TailViews",
    "tail_batch_size",
]


@dataclass
class FeatureSplit:
    """Backbone features ``(N, F)`` and labels ``(N,)`` or ``(N, C)`` of one split."""

    feats: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if self.feats.dim() != 2 or len(self.feats) != len(self.labels):
            raise ValueError(
                f"features (N, F) and labels (N, ...) must agree, got {tuple(self.feats.shape)} "
                f"and {tuple(self.labels.shape)}"
            )
        if len(self.feats) == 0:
            raise ValueError("empty split: no features to train or evaluate on")


@dataclass
class TrainingData:
    """What training needs: augmented views, clean training features, validation.

    Attributes
    ----------
    bank : (N, V, F) float16/float32, V augmented views of each training image (CPU path),
        or None when ``online`` is given.
    train : (N, F) clean features of the training images (for clustering).
    val_query, val_database : FeatureSplit, for model selection.
    online : OnlineViews or TailViews, optional
        The paper's path: fresh augmented views through the backbone at every step; or
        cached trunk maps through a trainable tail (``tail_blocks``).
    val_images : (query, database) uint8 images (OnlineViews) or trunk maps (TailViews),
        optional. With ``online`` and a backbone that trains, validation features are
        recomputed from these before each evaluation.
    """

    bank: torch.Tensor | None
    train: torch.Tensor
    val_query: FeatureSplit
    val_database: FeatureSplit
    online: OnlineViews | None = None
    val_images: tuple | None = None
    #: classes of the dataset (``num_clusters: auto``); default: those the validation
    #: database holds
    n_classes: int | None = None

    def __post_init__(self):
        if self.online is None:
            if self.bank is None or self.bank.dim() != 3 or self.bank.shape[1] < 2:
                shape = None if self.bank is None else tuple(self.bank.shape)
                raise ValueError(f"bank must be (N, V >= 2, F), got {shape}")
            if (
                self.bank.shape[0] != self.train.shape[0]
                or self.bank.shape[2] != self.train.shape[1]
            ):
                raise ValueError(
                    f"bank {tuple(self.bank.shape)} and clean training features "
                    f"{tuple(self.train.shape)} disagree"
                )
        elif len(self.online.images) != len(self.train):
            raise ValueError("online views and clean training features cover different images")

    @property
    def n_train(self) -> int:
        return int(self.train.shape[0])

    def class_count(self) -> int:
        """``n_classes``, else the classes of the validation database (columns of a
        multi-label matrix)."""
        if self.n_classes is not None:
            return int(self.n_classes)
        labels = self.val_database.labels
        return int(labels.shape[1]) if labels.ndim == 2 else int(torch.unique(labels).numel())


def view_pairs(n: int, n_views: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two different view indices per image, ``(n,)`` each, uniform over the ordered pairs
    of ``n_views`` views (the same draws for :class:`BankViews` and :class:`TailViews`).

    >>> v1, v2 = view_pairs(1000, 3, torch.Generator().manual_seed(0))
    >>> bool((v1 != v2).all()), int(v1.max()), int(v2.max())
    (True, 2, 2)
    """
    v1 = torch.randint(0, n_views, (n,), generator=gen)
    v2 = (v1 + torch.randint(1, n_views, (n,), generator=gen)) % n_views
    return v1, v2


class BankViews:
    """Two different views per image, sampled from a precomputed bank ``(N, V, F)``."""

    def __init__(self, bank: torch.Tensor):
        self.bank = bank

    def sample(self, idx: torch.Tensor, gen: torch.Generator, training: bool = True):
        """Two views ``(B, F)`` float32 each (``training`` is ignored: a bank is fixed)."""
        v1, v2 = view_pairs(len(idx), self.bank.shape[1], gen)
        return self.bank[idx, v1].float(), self.bank[idx, v2].float()


class OnlineViews:
    """The paper's path: two fresh augmented views of each image through the backbone.

    Parameters
    ----------
    backbone : nn.Module from :func:`~hihpq_lib.data.backbones.build_backbone`; its parameters
        with ``requires_grad`` (VGG-16's last fc layers with ``trainable_layer_num``) train.
    images : (N, H, W, 3) uint8, the training images.
    resolution : int (the reference: 224).
    device : where the backbone runs (``"cuda"`` for the paper's setting).
    frozen_dropout : bool
        A backbone without trainable layers keeps its Dropout layers in train mode during
        training steps (``frozen_backbone_dropout``: the reference's ``model.train()``);
        everything else in it stays in eval mode.
    """

    def __init__(
        self,
        backbone,
        images,
        resolution: int = 224,
        device: str = "cpu",
        batch_size: int = 256,
        frozen_dropout: bool = False,
    ):
        self.backbone = backbone.to(device)
        self.images = images
        self.resolution, self.device, self.batch_size = int(resolution), device, int(batch_size)
        self.frozen_dropout = bool(frozen_dropout)

    def trainable_parameters(self) -> list:
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def sample(self, idx: torch.Tensor, gen: torch.Generator, training: bool = True):
        """Two augmented views through the backbone, ``(B, F)`` each.

        The backbone runs in train mode (dropout on) when it has trainable layers and
        ``training`` is true, else in eval mode (``eval_mode_after_clustering``); a frozen
        one with ``frozen_dropout`` has its Dropout layers alone follow ``training``.
        Images that keep their full, non-square originals
        (:class:`~hihpq_lib.data.EncodedImages`, ``image_geometry: reference``) are
        cropped from those.
        """
        from hihpq_lib.data.transforms import augment_batch

        rows = to_numpy(idx)
        originals = getattr(self.images, "originals", None)
        imgs = originals(rows) if originals is not None else self.images[rows]
        seeds = torch.randint(0, 2**62, (2,), generator=gen).tolist()
        bb = self.backbone
        trains = bool(self.trainable_parameters())
        bb.train(trains and training)
        if self.frozen_dropout and not trains:
            for m in bb.modules():
                if isinstance(m, torch.nn.modules.dropout._DropoutNd):
                    m.train(training)
        views = [
            augment_batch(imgs, self.resolution, int(s), indices=rows, mean=bb.mean, std=bb.std)
            for s in seeds
        ]
        return tuple(bb(v.to(self.device)) for v in views)

    @torch.no_grad()
    def clean(self, images) -> torch.Tensor:
        """Evaluation-transform features ``(N, F)`` of uint8 images: an ``(N, H, W, 3)``
        array or a :class:`~hihpq_lib.data.LazyImages`, decoded one batch at a time."""
        from hihpq_lib.data.transforms import eval_transform

        bb = self.backbone
        was = bb.training
        bb.eval()
        out = [
            bb(
                eval_transform(
                    images[i : i + self.batch_size], self.resolution, mean=bb.mean, std=bb.std
                ).to(self.device)
            ).cpu()
            for i in range(0, len(images), self.batch_size)
        ]
        bb.train(was)
        return torch.cat(out)


def tail_batch_size(device) -> int:
    """Rows per forward when a tail encodes cached maps without gradients: 128 on the CPU,
    1024 on an accelerator.

    On the CPU, smaller batches keep a block's activations in cache: through Lite2's last
    block at 160 px (maps 208 x 5 x 5), 8,192 maps took 3.0 s in batches of 128 against
    6.0-7.1 s in batches of 1,024 (2 threads, 2026-12-05); the validation database (50,000
    maps) goes through the tail at every evaluation.

    >>> tail_batch_size(torch.device("cpu")), tail_batch_size(torch.device("cuda", 0))
    (128, 1024)
    """
    return 128 if torch.device(device).type == "cpu" else 1024


class TailViews:
    """Two cached views per image through a trainable backbone tail (``tail_blocks``).

    The bank holds the frozen trunk's maps of ``V`` augmented views of every training
    image (:func:`~hihpq_lib.data.features.trunk_maps`); a step picks two different views
    per image exactly as :class:`BankViews` does (same generator draws) and runs them
    through ``tail`` (:class:`~hihpq_lib.data.backbones.tail.BackboneTail`), whose
    convolutions train with the quantizer. It has the interface of :class:`OnlineViews`
    that :func:`train` uses (``backbone``, ``images``, ``trainable_parameters``,
    ``sample``, ``clean``), so the tail's weights are optimised, saved in ``best.pt`` and
    ``checkpoint.pt``, restored on resume, and the validation and clustering features are
    recomputed with the current tail.

    Parameters
    ----------
    tail : nn.Module, ``(B, C, h, w) -> (B, F)``; always in eval mode (frozen BatchNorm).
    bank_maps : (N, V, C, h, w) float16 array (a memory map works), the training views.
    train_maps : (N, C, h, w) float16, the evaluation-transform maps of the same images
        (clean features for clustering: ``clean(images)``).
    batch_size : rows per tail forward in :meth:`clean` (``None``: :func:`tail_batch_size`
        of the tail's device).
    """

    def __init__(self, tail, bank_maps, train_maps, batch_size: int | None = None):
        if bank_maps.ndim != 5 or bank_maps.shape[1] < 2:
            raise ValueError(f"bank maps must be (N, V >= 2, C, h, w), got {bank_maps.shape}")
        if train_maps.shape[0] != bank_maps.shape[0] or train_maps.shape[1:] != bank_maps.shape[2:]:
            raise ValueError(
                f"bank maps {bank_maps.shape} and training maps {train_maps.shape} disagree"
            )
        self.backbone = tail
        self.bank = bank_maps
        self.images = train_maps
        self.batch_size = batch_size

    def trainable_parameters(self) -> list:
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def _device(self):
        return next(self.backbone.parameters()).device

    def sample(self, idx: torch.Tensor, gen: torch.Generator, training: bool = True):
        """Two views ``(B, F)`` float32 through the tail (``training``: the tail stays in
        eval mode either way: its BatchNorm is frozen)."""
        v1, v2 = view_pairs(len(idx), self.bank.shape[1], gen)
        rows = to_numpy(idx)
        device = self._device()
        maps = [
            torch.from_numpy(np.asarray(self.bank[rows, to_numpy(v)])).to(device, torch.float32)
            for v in (v1, v2)
        ]
        return self.backbone(maps[0]), self.backbone(maps[1])

    def clean(self, maps) -> torch.Tensor:
        """Features ``(N, F)`` float32 of cached maps ``(N, C, h, w)`` through the tail."""
        return self.features(self.backbone, maps, self.batch_size)

    @staticmethod
    @torch.no_grad()
    def features(tail, maps, batch_size: int | None = None) -> torch.Tensor:
        """Features ``(N, F)`` float32 (on the CPU) of trunk maps ``(N, C, h, w)`` float16
        through ``tail``, ``batch_size`` rows at a time on the tail's device (``None``:
        :func:`tail_batch_size`). The rows do not depend on the batch size beyond float
        rounding (``tests/test_tail.py``)."""
        device = next(tail.parameters()).device
        batch_size = batch_size or tail_batch_size(device)
        out = [
            tail(
                torch.from_numpy(np.asarray(maps[i : i + batch_size])).to(device, torch.float32)
            ).cpu()
            for i in range(0, len(maps), batch_size)
        ]
        return torch.cat(out)
