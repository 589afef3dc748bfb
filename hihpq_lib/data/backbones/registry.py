"""The backbone registry: :func:`register_backbone`, :func:`build_backbone`,
:func:`available_backbones`, and the attributes every backbone carries.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable

import torch
import torch.nn as nn

from hihpq_lib.utils.arrays import to_numpy

__all__ = [
    "MissingWeightsError",
    "REQUIRED_ATTRIBUTES",
    "register_backbone",
    "build_backbone",
    "available_backbones",
    "weights_fingerprint",
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
        h.update(to_numpy(t.reshape(-1).view(torch.uint8)).tobytes() if t.numel() else b"")
    return h.hexdigest()[:length]


def _check_input(x: torch.Tensor) -> None:
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"backbone input must be a (B, 3, H, W) float tensor, got {shape}; "
            "prepare uint8 (N, H, W, 3) images with hihpq_lib.data.transforms.eval_transform"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"backbone input must be float (normalised), got {x.dtype}; "
            "use hihpq_lib.data.transforms.eval_transform"
        )
