"""VGG-16 (torchvision ImageNet weights) truncated as in the reference: fc7 features, 4096-d."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn as nn

from hihpq_lib.data.backbones.registry import (
    MissingWeightsError,
    _check_input,
    register_backbone,
    weights_fingerprint,
)
from hihpq_lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["VGG16"]


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
