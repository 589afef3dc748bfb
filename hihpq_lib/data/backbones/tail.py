"""Split a frozen EfficientNet-Lite into a frozen trunk and a trainable tail.

``tail_blocks = N`` (1 or 2) cuts the backbone before its last ``N`` MBConv blocks:

* :class:`BackboneTrunk` -- ``conv_stem -> bn1 -> blocks[:-N]``: ``(B, 3, R, R)`` float ->
  ``(B, C, h, w)`` maps (the tail's input); frozen, always in eval mode. Its maps are
  computed once and cached (:func:`hihpq_lib.data.features.trunk_maps`).
* :class:`BackboneTail` -- ``blocks[-N:] -> conv_head -> bn2 -> global average pool``:
  ``(B, C, h, w)`` -> ``(B, 1280)``. Its convolution weights train with the quantizer;
  its BatchNorm layers stay frozen (running statistics and affine parameters; the module
  is always in eval mode), so that ``tail(trunk(x)) == backbone(x)`` at initialisation
  and features are a deterministic function of the maps (no batch statistics over the
  two views of a 128-image batch of 4 x 4 maps).

For Lite0 at 128 px the trunk's maps are ``(192, 4, 4)`` for ``N = 1`` and ``N = 2``
(the last two blocks run at stride 32): 3,072 values, 6 KB per image in float16.

>>> from hihpq_lib.data.backbones import EfficientNetLite0
>>> trunk, tail = split_backbone(EfficientNetLite0(pretrained=False), 1)
>>> x = torch.zeros(2, 3, 64, 64)
>>> tuple(trunk(x).shape), tuple(tail(trunk(x)).shape)
((2, 192, 2, 2), (2, 1280))
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from hihpq_lib.data.backbones.registry import _check_input

__all__ = ["TAIL_BLOCKS", "BackboneTrunk", "BackboneTail", "split_backbone", "block_count"]

#: Allowed numbers of trainable last MBConv blocks (0 = the whole backbone frozen).
TAIL_BLOCKS = (0, 1, 2)


def _flat_blocks(model) -> list[tuple[int, int]]:
    """``(stage, index)`` of every MBConv block of a timm EfficientNet, in order."""
    return [(s, i) for s, stage in enumerate(model.blocks) for i in range(len(stage))]


def block_count(backbone) -> int:
    """Number of MBConv blocks of an EfficientNet-Lite backbone (16 for Lite0)."""
    return len(_flat_blocks(backbone.model))


def _check_splittable(backbone, tail_blocks: int) -> None:
    from hihpq_lib.data.backbones.efficientnet import EfficientNetLite

    if not isinstance(backbone, EfficientNetLite):
        raise ValueError(
            f"tail_blocks needs an EfficientNet-Lite backbone, got "
            f"{getattr(backbone, 'name', type(backbone).__name__)!r}; use "
            "backbone=efficientnet_lite0 (VGG-16 has trainable_layers instead)"
        )
    if isinstance(tail_blocks, bool) or tail_blocks not in TAIL_BLOCKS[1:]:
        raise ValueError(f"tail_blocks must be one of {TAIL_BLOCKS[1:]}, got {tail_blocks!r}")


class BackboneTrunk(nn.Module):
    """The frozen first part of an EfficientNet-Lite: images -> the tail's input maps.

    ``(B, 3, R, R)`` float (normalised with ``mean/std``) -> ``(B, C, h, w)`` float.
    Carries the attributes the feature code and the ONNX export need: ``name``,
    ``weights_id`` (both name the split), ``feature_dim`` (the channel count ``C``: the
    map size ``h, w`` depends on the resolution), ``mean``, ``std``. Shares its weights
    with the backbone.
    """

    def __init__(self, backbone, tail_blocks: int):
        _check_splittable(backbone, tail_blocks)
        super().__init__()
        model = backbone.model
        flat = _flat_blocks(model)
        cut = flat[len(flat) - tail_blocks]
        self.conv_stem, self.bn1 = model.conv_stem, model.bn1
        kept = [model.blocks[s][i] for s, i in flat[: len(flat) - tail_blocks]]
        self.blocks = nn.Sequential(*kept)
        self.tail_blocks = int(tail_blocks)
        self.name = f"{backbone.name}-trunk{tail_blocks}"
        self.weights_id = f"{backbone.weights_id}:trunk{tail_blocks}"
        self.feature_dim = int(model.blocks[cut[0]][cut[1]].conv_pw.in_channels)
        self.mean, self.std = backbone.mean, backbone.std
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> BackboneTrunk:
        """No-op: the trunk is frozen and always in eval mode."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x)
        return self.blocks(self.bn1(self.conv_stem(x)))


class BackboneTail(nn.Module):
    """The trainable last part of an EfficientNet-Lite: maps -> pooled features.

    ``(B, C, h, w)`` float -> ``(B, 1280)`` float: the last ``tail_blocks`` MBConv blocks,
    ``conv_head``, ``bn2`` and the global average pool. A deep copy of the backbone's
    layers (training it leaves the backbone untouched). Convolution weights have
    ``requires_grad=True``; BatchNorm layers are frozen (running statistics and affine
    parameters) and the module is always in eval mode: ``train()`` is a no-op.
    """

    def __init__(self, backbone, tail_blocks: int):
        _check_splittable(backbone, tail_blocks)
        super().__init__()
        model = backbone.model
        flat = _flat_blocks(model)
        tail = [model.blocks[s][i] for s, i in flat[len(flat) - tail_blocks :]]
        self.blocks = copy.deepcopy(nn.Sequential(*tail))
        self.conv_head = copy.deepcopy(model.conv_head)
        self.bn2 = copy.deepcopy(model.bn2)
        self.global_pool = copy.deepcopy(model.global_pool)
        self.tail_blocks = int(tail_blocks)
        self.name = f"{backbone.name}-tail{tail_blocks}"
        self.feature_dim = int(backbone.feature_dim)
        self.in_channels = int(self.blocks[0].conv_pw.in_channels)
        self.requires_grad_(False)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                module.requires_grad_(True)
        super().train(False)

    def train(self, mode: bool = True) -> BackboneTail:
        """No-op: BatchNorm stays frozen (eval mode) while the convolutions train."""
        return super().train(False)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """``maps: (B, C, h, w)`` float -> ``(B, 1280)``."""
        if maps.dim() != 4 or maps.shape[1] != self.in_channels:
            raise ValueError(
                f"tail input must be (B, {self.in_channels}, h, w) trunk maps, got "
                f"{tuple(maps.shape)}; compute them with the trunk of the same tail_blocks"
            )
        return self.global_pool(self.bn2(self.conv_head(self.blocks(maps))))


def split_backbone(backbone, tail_blocks: int) -> tuple[BackboneTrunk, BackboneTail]:
    """``(trunk, tail)`` with ``tail(trunk(x)) == backbone(x)`` (before training).

    ``backbone``: an EfficientNet-Lite from :func:`~hihpq_lib.data.backbones.build_backbone`;
    ``tail_blocks``: 1 or 2 (the last MBConv blocks that train).
    """
    return BackboneTrunk(backbone, tail_blocks), BackboneTail(backbone, tail_blocks)
