"""Experiment configuration: one dataclass, YAML files in ``configs/``, ``--set`` overrides.

A config file holds only the keys it changes; everything else keeps the defaults below,
which are the CPU profile for CIFAR-10 protocol II at 32 bits. Unknown keys are errors
(with the closest known key suggested), and so are code lengths that are not
``M * log2(K)`` for the feature dimension.

The profiles on top of it live here too (the CLI, the notebooks and the benchmarks read
them): :data:`DEMO_OVERRIDES` and :data:`QUICK_OVERRIDES` with :func:`demo_config` (``hihpq
demo`` and its ``--quick`` subset), and :func:`tutorial_config` (the short runs of
notebooks 04-05).

>>> cfg = TrainConfig().with_overrides(["bits=16", "epochs=3"])
>>> cfg.M, cfg.epochs
(2, 3)
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from hihpq_lib.quantization.quantizer import ATTENTIONS, check_code_config, m_for_bits

__all__ = [
    "TrainConfig",
    "ConfigError",
    "load_config",
    "FIDELITY_OPTIONS",
    "REFERENCE_OPTIONS",
    "FOLDER_DEFAULTS",
    "folder_config",
    "CURRENT_OPTIONS",
    "CPU_DEFAULT_OPTIONS",
    "with_legacy_fidelity",
    "resolve_num_clusters",
    "bank_views",
    "config_differences",
    "demo_config",
    "DEMO_OVERRIDES",
    "QUICK_OVERRIDES",
    "tutorial_config",
]

#: Every place where the reference implementation (github.com/zexuanqiu/HiHPQ) and our
#: earlier code differed, as ``key: (reference value, earlier value, allowed values)``.
#: ``configs/paper/*`` set the reference value of each; ``docs/fidelity.md`` explains
#: them and ``benchmarks/results/fidelity/`` measures them on the CPU profile.
FIDELITY_OPTIONS: dict[str, tuple] = {
    "subspace": ("ambient", "tangent", ("ambient", "tangent")),
    "instance_loss": ("reference", "masked", ("reference", "masked")),
    "prototype_loss": ("reference", "clusters", ("reference", "clusters")),
    "cluster_input": ("raw", "clipped", ("raw", "clipped")),
    "backbone_lr": ("shared", "scaled", ("shared", "scaled")),
    "eval_mode_after_clustering": (True, False, (True, False)),
    "lr_warmup": ("linspace", "linear", ("linspace", "linear")),
    "drop_last": (False, True, (False, True)),
    "frozen_backbone_dropout": (True, False, (True, False)),
    "image_geometry": ("reference", "square", ("reference", "square")),
}
#: The reference's behaviour for every option of :data:`FIDELITY_OPTIONS`.
REFERENCE_OPTIONS: dict = {k: v[0] for k, v in FIDELITY_OPTIONS.items()}
#: Our earlier behaviour (the CPU defaults before the fidelity options existed; the row
#: ``current`` of the fidelity ablation) for every option.
CURRENT_OPTIONS: dict = {k: v[1] for k, v in FIDELITY_OPTIONS.items()}
#: The CPU profile's choice (``TrainConfig``'s defaults), made on validation mAP with the
#: fidelity ablation (docs/fidelity.md): the reference's losses and clustering input;
#: our subspace convention, train mode and schedule, which did not score higher there.
#: ``frozen_backbone_dropout`` and ``image_geometry`` act only on the online (paper) path
#: and keep our earlier behaviour here (the CPU profile's backbone runs once, cached).
CPU_DEFAULT_OPTIONS: dict = {
    **REFERENCE_OPTIONS,
    "subspace": "tangent",
    "eval_mode_after_clustering": False,
    "lr_warmup": "linear",
    "drop_last": True,
    "frozen_backbone_dropout": False,
    "image_geometry": "square",
}


#: The CIFAR-10 protocols (README, "Benchmarks"): a config's ``protocol`` and the CPU profiles.
CIFAR10_PROTOCOLS = ("I", "II")


class ConfigError(ValueError):
    """A configuration problem, with a message that says what to change."""


@dataclass
class TrainConfig:
    """Every knob of a HiHPQ run. Defaults: the CIFAR-10 protocol II CPU profile.

    The fidelity options (:data:`FIDELITY_OPTIONS`) default to :data:`CPU_DEFAULT_OPTIONS`;
    ``configs/paper/*`` set :data:`REFERENCE_OPTIONS`.
    """

    name: str = "cifar10_ii_32bits_cpu"
    # data
    dataset: str = "cifar10"  # "cifar10", "folder" (root/<class>/<image>), "flickr25k", "nuswide"
    protocol: str = "II"  # CIFAR-10 only; image folders use the folder split (docs/folders.md)
    data: str | None = None
    # dataset=folder: a second folder with the same class sub-folders (e.g. an official
    # val/) whose images are all the test queries; the data folder is database + training set
    query_data: str | None = None
    # A class hierarchy for the per-level metrics: a superclass file (two levels: "class
    # superclass" lines or a JSON object) or a hierarchy file (JSON class -> ancestor chain,
    # root first, e.g. WordNet's); at most one of the two. CIFAR-10 has its own superclasses.
    superclass_file: str | None = None
    hierarchy_file: str | None = None
    # Depths of the hierarchy file's chains to evaluate at (0 = the root), or "auto": every
    # depth >= 1 with 2..C/2 distinct nodes, at most three of them (data.taxonomy).
    hierarchy_levels: list[int] | str = "auto"
    # Splits (RandomState(seed).permutation, as the reference's np.random.permutation after
    # np.random.seed), validation carving, initialisation, batches and views. The
    # reference's scripts run with its default --seed 2021 (configs/paper set it).
    seed: int = 0
    n_val_per_class: int = 100
    subsample_per_class: int | None = None  # shrink every split (fast mode, CI)
    train_per_class: int | None = None  # shrink only the training set (protocol I on a CPU)
    # backbone and the CPU fast path; two or more frozen backbones joined by "+"
    # ("efficientnet_lite2+efficientnet_lite0+efficientnet_lite1") concatenate their features
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    # 160 px: the CPU profile of make demo, make bench, notebook 06 and the README (chosen
    # on validation mAP among the EfficientNet-Lite variants: benchmarks/results/backbone_study/;
    # the profile's backbone, Lite2, is set by the configs and DEMO_OVERRIDES)
    resolution: int = 160
    engine: str = "onnx"  # frozen forward pass: "onnx" or "torch"
    n_views: int = 8  # augmented views per training image in the bank
    # a cap on the bank's views of all training images together: each image gets
    # min(n_views, max(2, view_budget // N_train)) (bank_views; None = always n_views). The
    # bank costs one backbone pass per view, so this bounds the first run of a big folder.
    view_budget: int | None = None
    online_augmentation: bool = False  # the paper's path (GPU): augment + backbone every step
    trainable_layers: int = 0  # VGG-16: how many of the last fc layers train (0, 1, 2)
    # EfficientNet-Lite on the cached path: how many of the last MBConv blocks (+ conv_head,
    # bn2, pool) train with the quantizer, on cached trunk maps (0 = all frozen; 1 or 2).
    # Their lr follows backbone_lr / lr_backbone_scale; their BatchNorm stays frozen
    # (docs/adapted_tail.md).
    tail_blocks: int = 0
    # quantizer
    bits: int = 32
    K: int = 256
    feat_dim: int = 64
    head_hidden: int = 512
    geometry: str = "lorentz"  # "lorentz" (HiHPQ) or "euclidean" (ablation)
    curvature: float = 1.0  # initial curvature magnitude c (k = 1/c)
    learn_curvature: bool = True
    clip_r: float = 1.5
    softmax_temp: float = 1.0
    attention: str = "sqdist"  # softmax over -T * d^2: "sqdist" (paper) or "sqgeodesic"
    # "uniform" (reference: unit-norm random), "data" (random samples) or "kmeans" (k-means
    # of the training images' tangent vectors per subspace: where classical PQ starts)
    codebook_init: str = "uniform"
    # "random" (reference): the head starts at PyTorch's random init. "pca": the head gains a
    # linear path initialised to the frozen features' principal components (spread over the
    # subspaces, scaled to unit median sub-vector norm) and its MLP starts at zero, so the
    # untrained model keeps the features' geometry (docs/folders.md, "Never worse than doing
    # nothing").
    # "raw": the same linear path without the rotation: the centred features themselves,
    # each subspace a contiguous block of them as classical PQ splits them (feat_dim = the
    # features' dimension).
    head_init: str = "random"
    pca_norm: float = 1.0  # head_init=pca: the median sub-vector norm of the projection
    # Below 1: before the head, each contiguous block of the centred features (M blocks, as
    # classical PQ splits them; the whole vector when M does not divide their dimension)
    # keeps its direction and gets norm |block| ** block_norm_power (0: unit length, as the
    # Euclidean twin's sphere; 0.5: the square root). 1 (reference): the features as they
    # are. The mean is fitted on the training features and saved with the model.
    block_norm_power: float = 1.0
    # A term that keeps each image's neighbours in the frozen features: KL(teacher || student)
    # over the batch, teacher softmax(cos / neighbour_tau) of the frozen view features,
    # student softmax(-D / tau) of the soft-quantized product distances. 0 = off (reference).
    neighbour_weight: float = 0.0
    neighbour_tau: float = 0.1
    # Evaluate the untrained model on the validation queries too: if no epoch beats it, the
    # val-selected model is the initial one (val_selected_epoch 0).
    eval_init: bool = False
    # After training, this many Lloyd iterations on the codebooks of each saved model (the
    # validation-selected and the final one): each codeword moves to the centroid (Lorentz
    # centroid on a hyperboloid) of the clean training points it encodes, a codeword no
    # point picks to the point quantized worst; each kept only when its validation mAP does
    # not fall. 0 = none (reference: the codewords are what training left).
    codebook_refine: int = 0
    # "fixed": train this config as it is. "auto": train each candidate recipe of
    # hihpq_lib.app.recipe (the feature-keeping one above, with the untrained model a
    # candidate, the same at block_norm_power 0.5, and the contrastive one of the CIFAR-10
    # profiles) for recipe_screen_epochs
    # epochs, keep the one the validation queries prefer and finish it (docs/folders.md);
    # the head/codebook keys of the config are then the candidates'.
    recipe: str = "fixed"
    recipe_screen_epochs: int = 4
    # Report the untrained baselines on the same frozen features beside HiHPQ in
    # results.json (exact cosine search on the floats; faiss PQ with the same bytes when
    # faiss is installed) and warn when the validation-selected model falls below them.
    baseline_guard: bool = True
    # Each chunk of feat_dim / M head outputs is one subspace. "ambient" (reference): the
    # chunk is a vector of R^D whose first (time) coordinate is zeroed, a tangent vector
    # of H^(D-1); the first output of each chunk is discarded (zero gradient), so a
    # subspace has D - 1 usable dimensions (15 at 32 bits). "tangent": the chunk is a
    # tangent vector of H^D (a zero time coordinate is prepended), D usable dimensions.
    # The Euclidean ablation follows the same rule (R^(D-1) or R^D) so both geometries
    # get the same degrees of freedom.
    subspace: str = "tangent"
    # losses
    tau: float = 0.2
    proto_weight: float = 1.0
    instance_weight: float = 0.1
    # Ward granularities of the pseudo hierarchy, fine to coarse, or "auto": [4C, 2C, C] for
    # C classes, each capped at a tenth of the training images (at least 2), duplicates
    # dropped (resolve_num_clusters; resolved once the data is loaded).
    num_clusters: list[int] | str = field(default_factory=lambda: [100, 50, 25])
    cluster_method: str = "auto"
    cluster_anchors: int = 1000
    hierarchy_warmup: int = 3  # epochs before the first clustering
    # Instance-wise loss. "reference": the anchor's similarity to itself stays in the
    # softmax denominator and the sum over anchors with a same-cluster neighbour is
    # divided by the batch size. "masked": self excluded, mean over those anchors.
    instance_loss: str = "reference"
    # Prototype-wise loss. "reference": one prototype column per batch sample plus one
    # per cluster absent from the batch, i.e. -s_own + log sum_c m_c exp(s_c) with m_c
    # the batch members of cluster c (1 if none). "clusters": cross-entropy over the
    # clusters (each once). They agree when every sample is in its own cluster.
    prototype_loss: str = "reference"
    # What Ward clusters. "raw" (reference): the head outputs as they are (first
    # coordinate of each chunk dropped with subspace=ambient), no clipping and no
    # exp/log map. "clipped": log_o(exp_o(clip(x))) = the clipped tangent vectors
    # (unit-normalised sub-vectors for the Euclidean ablation).
    cluster_input: str = "raw"
    # optimisation
    epochs: int = 20
    # Stop when this many epochs in a row have not beaten the best validation mAP (0 = never:
    # every epoch of the schedule runs). Model selection is unchanged: the best epoch is kept.
    patience: int = 0
    batch_size: int = 128
    optimizer: str = "rsgd"  # "rsgd" (reference) or "radam"
    lr: float = 0.01
    lr_backbone_scale: float = 1e-3
    # "shared" (reference): the warm-up/cosine schedule sets the same lr on every
    # parameter group, so trainable backbone layers (VGG fc6/fc7) train at the full lr and
    # lr_backbone_scale has no effect. "scaled": backbone lr = schedule x lr_backbone_scale.
    # No effect on the CPU profile (frozen backbone).
    backbone_lr: str = "shared"
    momentum: float = 0.9
    weight_decay: float = 5e-3
    lr_warmup_epochs: int = 1
    start_lr: float = 1e-5
    final_lr: float = 1e-5
    # "linspace" (reference): the warm-up is linspace(start_lr, lr, W) over its W steps,
    # reaching lr at its last step. "linear": start_lr + (lr - start_lr) * step / W,
    # reaching lr at step W (the first step after the warm-up).
    lr_warmup: str = "linear"
    # True: floor(N / batch_size) steps per epoch, the last partial batch dropped.
    # False (reference, a DataLoader without drop_last): ceil(N / batch_size) steps, the
    # last batch smaller (a last batch of one image is skipped: the losses need two).
    drop_last: bool = True
    # True (reference): epochs that start with a clustering pass (epoch >=
    # hierarchy_warmup) train with the model in eval mode: the reference computes the
    # clustering features after model.eval() and does not switch back, so VGG's dropout
    # is off from then on (and a BatchNorm head, ours, uses its running statistics).
    eval_mode_after_clustering: bool = False
    # True (reference): on the online path a frozen backbone (trainable_layers: 0, the
    # reference's Flickr25K / NUS-WIDE scripts) keeps its Dropout layers in train mode
    # while the model trains, as the reference's model.train() does (VGG-16's fc6/fc7
    # dropout, p = 0.5); with eval_mode_after_clustering they are off from the first
    # clustering epoch on. Only Dropout modules switch (a BatchNorm backbone keeps its
    # running statistics). False: a frozen backbone always runs in eval mode. A backbone
    # with trainable layers follows the model's mode either way.
    frozen_backbone_dropout: bool = False
    # Image files on the online path. "reference": clean images (clustering, validation,
    # queries, database) are read as Resize(256) + CenterCrop(224) (scaled with
    # resolution: the shorter side to round(resolution * 256 / 224), the long side
    # truncated as torchvision does), and the training views are RandomResizedCrops of
    # the whole, non-square image (its encoded bytes are held in memory, decoded per
    # step). "square": every file is read once with the shorter side at 224 and
    # centre-cropped to 224 x 224; the views crop that square. No effect on in-memory
    # images (CIFAR-10) or on the cached (bank / tail) paths.
    image_geometry: str = "square"
    # NUS-WIDE only: the training list file, "train" (train.txt) or "train_10500"
    # (train_10500.txt, the reference's scripts: NUSWIDE(train_file="train_10500")).
    train_list: str = "train"
    # evaluation
    topk: int = 1000
    eval_interval: int = 1
    symmetric: bool = False
    device: str = "cpu"
    threads: int = 0  # 0 = torch default

    @property
    def M(self) -> int:
        """Number of codebooks: ``bits / log2(K)``."""
        return m_for_bits(self.bits, self.K)

    @property
    def sub_dim(self) -> int:
        """Head outputs per subspace: ``feat_dim / M``."""
        return self.feat_dim // self.M

    @property
    def space_dim(self) -> int:
        """Usable dimensions per subspace: ``sub_dim - 1`` with ``subspace="ambient"``."""
        return self.sub_dim - 1 if self.subspace == "ambient" else self.sub_dim

    def fidelity(self) -> dict:
        """The fidelity options of this config (see :data:`FIDELITY_OPTIONS`)."""
        return {k: getattr(self, k) for k in FIDELITY_OPTIONS}

    def __post_init__(self):
        self.validate()  # once, when a config is made (from_dict, replace, the constructor)

    def validate(self) -> TrainConfig:
        """Check every value; raise :class:`ConfigError` naming the key and the fix.

        Run when a config is made (``__post_init__``), so a ``TrainConfig`` in hand is a
        valid one; nothing downstream validates it again. Returns ``self``."""
        try:
            M = self.M
            check_code_config(self.feat_dim, M, self.K)
        except ValueError as err:
            raise ConfigError(
                f"bits={self.bits}, K={self.K}, feat_dim={self.feat_dim}: {err}"
            ) from None
        from hihpq_lib.data import DATASETS
        from hihpq_lib.data.backbones import available_backbones, is_known_backbone

        if self.dataset not in DATASETS:
            raise ConfigError(
                f"unknown dataset {self.dataset!r}; known datasets: {', '.join(sorted(DATASETS))}"
            )
        if not is_known_backbone(self.backbone):
            raise ConfigError(
                f"unknown backbone {self.backbone!r}; known backbones: "
                f"{', '.join(available_backbones())}, or two or more different ones joined "
                "by '+' (their features side by side)"
            )
        if self.protocol not in CIFAR10_PROTOCOLS:
            raise ConfigError(f"protocol must be 'I' or 'II', got {self.protocol!r}")
        if self.geometry not in ("lorentz", "euclidean"):
            raise ConfigError(f"geometry must be 'lorentz' or 'euclidean', got {self.geometry!r}")
        if self.attention not in ATTENTIONS:
            raise ConfigError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.engine not in ("onnx", "torch"):
            raise ConfigError(f"engine must be 'onnx' or 'torch', got {self.engine!r}")
        if self.optimizer not in ("rsgd", "radam"):
            raise ConfigError(f"optimizer must be 'rsgd' or 'radam', got {self.optimizer!r}")
        if self.codebook_init not in ("data", "uniform", "kmeans"):
            raise ConfigError(
                f"codebook_init must be 'uniform', 'data' or 'kmeans', got {self.codebook_init!r}"
            )
        if self.recipe not in ("fixed", "auto"):
            raise ConfigError(f"recipe must be 'fixed' or 'auto', got {self.recipe!r}")
        if self.recipe == "auto" and (self.online_augmentation or self.tail_blocks):
            raise ConfigError(
                "recipe=auto screens recipes on cached frozen features: it needs "
                "online_augmentation=false and tail_blocks=0 (or set recipe=fixed)"
            )
        if self.head_init not in ("random", "pca", "raw"):
            raise ConfigError(f"head_init must be 'random', 'pca' or 'raw', got {self.head_init!r}")
        for key, (_, _, allowed) in FIDELITY_OPTIONS.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(
                    f"{key} must be one of {list(allowed)}, got {getattr(self, key)!r} "
                    "(see docs/fidelity.md)"
                )
        if self.train_list not in ("train", "train_10500"):
            raise ConfigError(
                f"train_list must be 'train' or 'train_10500' (NUS-WIDE's train.txt or "
                f"train_10500.txt), got {self.train_list!r}"
            )
        if self.subspace == "ambient" and self.sub_dim < 2:
            raise ConfigError(
                f"subspace=ambient drops the first of feat_dim/M = {self.sub_dim} outputs per "
                "subspace, leaving none: raise feat_dim or use subspace=tangent"
            )
        if self.n_views < 2 and not self.online_augmentation:
            raise ConfigError("n_views must be >= 2: each step needs two augmented views")
        if self.patience < 0:
            raise ConfigError(f"patience must be >= 0 (0 = off), got {self.patience}")
        if self.codebook_refine < 0:
            raise ConfigError(
                f"codebook_refine must be >= 0 (Lloyd iterations after training; 0 = off), "
                f"got {self.codebook_refine}"
            )
        for name in ("epochs", "batch_size", "resolution", "topk", "recipe_screen_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_clusters != "auto" and (
            not isinstance(self.num_clusters, list)
            or not self.num_clusters
            or min(self.num_clusters) < 2
        ):
            raise ConfigError(
                f"num_clusters must list granularities >= 2 or be 'auto', got {self.num_clusters}"
            )
        if self.hierarchy_levels != "auto" and (
            not isinstance(self.hierarchy_levels, list)
            or not self.hierarchy_levels
            or min(self.hierarchy_levels) < 0
        ):
            raise ConfigError(
                "hierarchy_levels must list depths >= 0 (0 = the root) or be 'auto', got "
                f"{self.hierarchy_levels}"
            )
        if self.superclass_file and self.hierarchy_file:
            raise ConfigError(
                "give superclass_file or hierarchy_file, not both (a hierarchy file holds "
                "every level; pick levels with hierarchy_levels)"
            )
        if self.query_data and self.dataset != "folder":
            raise ConfigError(
                f"query_data needs dataset=folder (dataset is {self.dataset!r}); add "
                "--set dataset=folder or use configs/cpu/cpu_folder_32bits.yaml"
            )
        _check_ranges(self)
        return self

    # --- construction -------------------------------------------------------------
    @classmethod
    def fields(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = cls.fields()
        for key in d:
            if key not in known:
                close = difflib.get_close_matches(key, list(known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"unknown config key {key!r}{hint}")
        return cls(**d)

    def with_overrides(self, items: list[str] | None) -> TrainConfig:
        """Apply ``key=value`` strings (values parsed as YAML: ``3``, ``true``, ``[1, 2]``)."""
        d = asdict(self)
        for item in items or []:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not key=value")
            key, raw = item.split("=", 1)
            key = key.strip()
            if key not in d:
                close = difflib.get_close_matches(key, list(d), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"unknown config key {key!r}{hint}")
            d[key] = _coerce(key, _parse_value(key, raw, self.fields()[key]), self.fields()[key])
        return TrainConfig.from_dict(d)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def key(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


#: Run names become folder names under the runs folder: no path separators, no "..".
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,99}$")

#: (key, lower bound, whether the bound itself is allowed) for numeric keys.
_BOUNDS = [
    ("lr", 0.0, False),
    ("start_lr", 0.0, True),
    ("final_lr", 0.0, True),
    ("lr_backbone_scale", 0.0, True),
    ("momentum", 0.0, True),
    ("weight_decay", 0.0, True),
    ("tau", 0.0, False),
    ("proto_weight", 0.0, True),
    ("instance_weight", 0.0, True),
    ("curvature", 0.0, False),
    ("clip_r", 0.0, False),
    ("softmax_temp", 0.0, False),
    ("n_val_per_class", 1, True),
    ("n_views", 1, True),
    ("view_budget", 2, True),
    ("eval_interval", 1, True),
    ("hierarchy_warmup", 0, True),
    ("lr_warmup_epochs", 0, True),
    ("cluster_anchors", 1, True),
    ("head_hidden", 0, True),
    ("neighbour_weight", 0.0, True),
    ("pca_norm", 0.0, False),
    ("block_norm_power", 0.0, True),
    ("neighbour_tau", 0.0, False),
    ("threads", 0, True),
    ("trainable_layers", 0, True),
]


def _check_ranges(cfg: TrainConfig) -> None:
    """Every value a run would only reject later (after data preparation), checked now."""
    if not isinstance(cfg.name, str) or not _NAME_RE.match(cfg.name):
        raise ConfigError(
            f"run name {cfg.name!r} is not a plain folder name; use letters, digits and "
            "'_', '-', '.', '+' (no '/', '\\', '..' or spaces), e.g. name=my_run"
        )
    for key, low, inclusive in _BOUNDS:
        if key not in cfg.fields():
            continue
        value = getattr(cfg, key)
        if value is None:
            continue
        if value < low or (value == low and not inclusive):
            rel = ">=" if inclusive else ">"
            raise ConfigError(f"{key} must be {rel} {low}, got {value}")
    if cfg.momentum >= 1:
        raise ConfigError(f"momentum must be < 1, got {cfg.momentum}")
    if cfg.block_norm_power > 1:
        raise ConfigError(
            f"block_norm_power must be <= 1 (1 keeps the features' norms), got {cfg.block_norm_power}"
        )
    if cfg.batch_size < 2:
        raise ConfigError(f"batch_size must be >= 2 (the contrastive loss), got {cfg.batch_size}")
    for key in ("subsample_per_class", "train_per_class"):
        value = getattr(cfg, key)
        if value is not None and value < 1:
            raise ConfigError(f"{key} must be >= 1 or null, got {value}")
    if cfg.trainable_layers > 2:
        raise ConfigError(f"trainable_layers must be 0, 1 or 2, got {cfg.trainable_layers}")
    if isinstance(cfg.tail_blocks, bool) or cfg.tail_blocks not in (0, 1, 2):
        raise ConfigError(f"tail_blocks must be 0, 1 or 2, got {cfg.tail_blocks!r}")
    from hihpq_lib.data.backbones import backbone_members

    concatenated = len(backbone_members(cfg.backbone)) > 1
    lite = cfg.backbone.startswith("efficientnet") and not concatenated
    if cfg.tail_blocks and (cfg.online_augmentation or not lite):
        raise ConfigError(
            f"tail_blocks={cfg.tail_blocks} needs one EfficientNet-Lite backbone (not a "
            "concatenation) on the cached path (not online_augmentation); set tail_blocks=0, "
            "or use trainable_layers with vgg16"
        )
    if concatenated and cfg.trainable_layers:
        raise ConfigError(
            f"backbone {cfg.backbone!r} concatenates frozen backbones: trainable_layers must "
            f"be 0, got {cfg.trainable_layers}"
        )


def config_differences(saved: dict, current: dict) -> list[str]:
    """The keys whose values differ between a saved config dict and ``current``; a key
    missing from one side counts as ``None`` there (a key added to :class:`TrainConfig`
    after a run was saved has default ``None`` when it keeps the earlier behaviour).

    >>> config_differences({"epochs": 3}, {"epochs": 3, "view_budget": None})
    []
    >>> config_differences({"epochs": 3}, {"epochs": 4, "view_budget": 100})
    ['epochs', 'view_budget']
    """
    return sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))


def bank_views(cfg: TrainConfig, n_train: int) -> int:
    """Augmented views per training image in the bank: ``n_views``, or fewer where
    ``view_budget`` caps the views of all ``n_train`` images together (at least 2: a
    step needs two different views).

    >>> bank_views(TrainConfig(n_views=8, view_budget=40_000), 5_000)
    8
    >>> bank_views(TrainConfig(n_views=8, view_budget=40_000), 10_000)
    4
    >>> bank_views(TrainConfig(n_views=8, view_budget=40_000), 30_000)
    2
    >>> bank_views(TrainConfig(n_views=8), 30_000)
    8
    """
    if cfg.view_budget is None:
        return int(cfg.n_views)
    return int(min(cfg.n_views, max(2, int(cfg.view_budget) // max(1, int(n_train)))))


def resolve_num_clusters(num_clusters, n_classes: int, n_train: int) -> list[int]:
    """The Ward granularities a run uses: ``num_clusters`` itself, or for ``"auto"``
    ``[4C, 2C, C]`` for ``C`` classes, each capped at ``n_train // 10`` (about ten training
    images per cluster) and at least 2, duplicates dropped (fine to coarse).

    >>> resolve_num_clusters("auto", 10, 5000), resolve_num_clusters("auto", 200, 5000)
    ([40, 20, 10], [500, 400, 200])
    >>> resolve_num_clusters([100, 50], 10, 5000)
    [100, 50]
    """
    if num_clusters != "auto":
        return [int(k) for k in num_clusters]
    cap = max(2, int(n_train) // 10)
    counts = [max(2, min(cap, m * int(n_classes))) for m in (4, 2, 1)]
    return sorted(set(counts), reverse=True)


def with_legacy_fidelity(d: dict) -> dict:
    """A saved config dict, with :data:`CURRENT_OPTIONS` filled in if it predates them.

    Run folders written before the fidelity options existed hold none of their keys;
    they were trained with the earlier behaviour, which is what they must be rebuilt with.

    >>> with_legacy_fidelity({"epochs": 3})["prototype_loss"]
    'clusters'
    """
    if any(k in d for k in FIDELITY_OPTIONS):
        return dict(d)
    return {**d, **CURRENT_OPTIONS}


def _coerce(key: str, value, f: dataclasses.Field):
    ann = str(f.type)
    if ann.endswith("| str") and isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if value is None:
        if "None" not in ann:
            raise ConfigError(f"{key} cannot be null")
        return None
    try:
        if ann.startswith("int") and not isinstance(value, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if ann.startswith("float"):
            v = float(value)
            if not math.isfinite(v):
                raise ValueError
            return v
        if ann.startswith("bool"):
            if not isinstance(value, bool):
                raise ValueError
            return value
        if ann.startswith("list"):
            items = value if isinstance(value, list) else [value]
            if any(isinstance(v, bool) or float(v) != int(v) for v in items):
                raise ValueError
            return [int(v) for v in items]
        if ann.startswith("str"):
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} is not a valid {ann}") from None
    return value


def _parse_value(key: str, raw: str, f: dataclasses.Field):
    """An override's value: the text itself for string keys (``name=a: b`` is the string
    ``a: b``, not a YAML mapping), YAML for everything else (``3``, ``true``, ``[1, 2]``)."""
    if str(f.type).startswith("str"):
        text = raw.strip()
        if "None" in str(f.type) and text in ("", "null", "None", "~"):
            return None
        return text
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}={raw!r}: the value is not valid YAML") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a YAML config (``None`` = defaults) and apply ``key=value`` overrides."""
    if path is None:
        cfg = TrainConfig()
    else:
        p = Path(path)
        if p.is_dir():
            raise ConfigError(
                f"config path {p} is a folder, not a file; pass one YAML file in it "
                "(e.g. configs/cpu/cpu_cifar10_ii_32bits.yaml)"
            )
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist (see the configs/ folder)")
        try:
            text = p.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(
                f"config file {p} is not UTF-8 text (a binary file?); pass a YAML file "
                "such as configs/cpu/cpu_cifar10_ii_32bits.yaml"
            ) from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(
                f"config file {p} is not valid YAML{where}: {problem}; fix that line "
                "(each line is key: value)"
            ) from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {p} must hold a mapping of key: value")
        raw = {
            k: _coerce(k, v, TrainConfig.fields()[k]) if k in TrainConfig.fields() else v
            for k, v in raw.items()
        }
        cfg = TrainConfig.from_dict(raw)
    return cfg.with_overrides(overrides)


#: Where the CIFAR-10 CPU profiles live, relative to the checkout (``runtime.project_dir()``).
CPU_PROFILE_DIR = Path("configs") / "cpu"


def cpu_profile_path(protocol: str, bits: int, root: str | Path | None = None) -> Path:
    """The CIFAR-10 CPU profile of one cell:
    ``<root>/configs/cpu/cpu_cifar10_<protocol>_<bits>bits.yaml``, checked to exist.

    ``protocol`` is ``"I"`` or ``"II"`` (either case); ``root`` is the checkout, by default
    :func:`hihpq_lib.utils.runtime.project_dir`. A cell without a profile raises
    :class:`ConfigError` naming the profiles there are.
    """
    if not isinstance(protocol, str) or protocol.upper() not in CIFAR10_PROTOCOLS:
        raise ConfigError(f"protocol must be one of {CIFAR10_PROTOCOLS}, got {protocol!r}")
    if root is None:
        from hihpq_lib.utils.runtime import project_dir

        root = project_dir()
    folder = Path(root) / CPU_PROFILE_DIR
    path = folder / f"cpu_cifar10_{protocol.lower()}_{int(bits)}bits.yaml"
    if not path.is_file():
        have = sorted(p.name for p in folder.glob("cpu_cifar10_*.yaml"))
        raise ConfigError(
            f"no CPU profile for protocol {protocol.upper()}, {bits} bits ({path.name} in "
            f"{folder}); available: {', '.join(have) or 'none'} — add a profile or pick "
            "other bits"
        )
    return path


#: The full demo's changes to ``TrainConfig()``: EfficientNet-Lite2 (chosen on validation
#: mAP, README "The CPU profile: how it was chosen"). The demo is the benchmark's protocol
#: II / 32-bit cell with seed 0 (``configs/cpu/cpu_cifar10_ii_32bits.yaml``, same profile).
DEMO_OVERRIDES: list[str] = ["backbone=efficientnet_lite2"]


#: The default for an image folder (``hihpq train --data FOLDER`` with no config;
#: ``configs/cpu/cpu_folder_auto_32bits.yaml`` holds the same): the recipe is chosen on the
#: folder's validation queries (``recipe: auto``, docs/folders.md), training stops after 5
#: epochs without a better validation mAP, Ward's granularities come from the class count,
#: the hierarchy levels from a hierarchy file when one is given.
FOLDER_DEFAULTS: dict = {
    "name": "folder_auto_32bits",
    "dataset": "folder",
    "bits": 32,
    "resolution": 128,
    "recipe": "auto",
    "patience": 5,
    "view_budget": 40_000,
    "num_clusters": "auto",
    "hierarchy_levels": "auto",
    "n_val_per_class": 100,
}


def folder_config(overrides: list[str] | None = None) -> TrainConfig:
    """:data:`FOLDER_DEFAULTS` on ``TrainConfig()``, then ``overrides`` (``key=value``)."""
    return TrainConfig(**FOLDER_DEFAULTS).with_overrides(overrides)


#: The quick subset (``--quick``, fast mode): 300 images per class, few epochs and views, and
#: 128 px (a smoke test of the same pipeline; its features cost 40% less).
QUICK_OVERRIDES = [
    "subsample_per_class=300",
    "resolution=128",
    "epochs=4",
    "hierarchy_warmup=1",
    "num_clusters=[40, 20, 10]",
    "n_views=3",
    "n_val_per_class=20",
]


def demo_config(
    quick: bool = False, data: str | None = None, overrides: list[str] | None = None
) -> TrainConfig:
    """The demo's configuration: the CPU profile with :data:`DEMO_OVERRIDES`, or with
    :data:`QUICK_OVERRIDES` when ``quick``; ``overrides`` (``key=value``) come last."""
    items = ["name=demo"] + (QUICK_OVERRIDES if quick else DEMO_OVERRIDES) + list(overrides or [])
    if data:
        items.append(f"data={data}")
    return TrainConfig().with_overrides(items)


def tutorial_config(quick: bool, epochs: int, *, hierarchy: bool) -> TrainConfig:
    """The short runs of notebooks 04-05: the demo's CPU profile with ``epochs`` epochs.

    Parameters
    ----------
    quick : bool
        The quick CIFAR-10 subset (:func:`~hihpq_lib.learning.config.demo_config`).
    epochs : int
    hierarchy : bool
        ``False``: contrastive loss only (``proto_weight=0, instance_weight=0``);
        ``True``: the full HiHPQ objective with the demo's weights and cluster counts.

    >>> tutorial_config(True, 5, hierarchy=False).proto_weight
    0.0
    """
    overrides = [f"epochs={int(epochs)}"]
    if hierarchy:
        overrides.append("name=tutorial_hierarchy")
    else:
        overrides += ["name=tutorial_contrastive", "proto_weight=0", "instance_weight=0"]
    return demo_config(quick, overrides=overrides)
