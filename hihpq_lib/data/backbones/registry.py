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
    "backbone_members",
    "is_known_backbone",
    "ConcatBackbone",
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


#: Joins the members of a concatenated backbone's name: ``"efficientnet_lite2+efficientnet_lite0"``.
JOIN = "+"


def backbone_members(name: str) -> list[str]:
    """The registered backbones a name stands for: itself, or the members of a
    concatenation ``"a+b"`` in order.

    >>> backbone_members("efficientnet_lite2+efficientnet_lite0")
    ['efficientnet_lite2', 'efficientnet_lite0']
    >>> backbone_members("efficientnet_lite0")
    ['efficientnet_lite0']
    """
    if not isinstance(name, str):
        raise TypeError(f"backbone name must be a string, got {name!r}")
    return name.split(JOIN)


def is_known_backbone(name) -> bool:
    """Whether :func:`build_backbone` knows ``name``: a registered backbone, or two or
    more different registered backbones joined by ``+`` (their features concatenated).

    >>> is_known_backbone("efficientnet_lite2+efficientnet_lite0"), is_known_backbone("vgg")
    (True, False)
    >>> is_known_backbone("efficientnet_lite0+efficientnet_lite0")
    False
    """
    if not isinstance(name, str) or not name:
        return False
    members = backbone_members(name)
    return all(m in _REGISTRY for m in members) and len(set(members)) == len(members)


def build_backbone(
    name: str = "efficientnet_lite0", pretrained: bool = True, **kwargs
) -> nn.Module:
    """Build a registered backbone.

    Parameters
    ----------
    name : str
        One of :func:`available_backbones`, or two or more different ones joined by
        ``+`` (``"efficientnet_lite2+efficientnet_lite0"``): a :class:`ConcatBackbone`
        whose features are the members' side by side.
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
    ValueError: unknown backbone 'resnet9000'; known backbones: efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, vgg16, or two or more of them joined by '+' (register others with register_backbone)
    """
    if not is_known_backbone(name):
        known = ", ".join(available_backbones())
        raise ValueError(
            f"unknown backbone {name!r}; known backbones: {known}, or two or more of them "
            f"joined by '{JOIN}' (register others with register_backbone)"
        )
    members = backbone_members(name)
    if len(members) > 1:
        if kwargs:
            raise ValueError(
                f"backbone {name!r} concatenates frozen backbones and takes no options, "
                f"got {sorted(kwargs)}; build its members one by one to pass them"
            )
        return ConcatBackbone([build_backbone(m, pretrained=pretrained) for m in members])
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


class ConcatBackbone(nn.Module):
    """Frozen backbones side by side: ``(B, 3, H, W)`` float -> ``(B, F_1 + F_2 + ...)``.

    Every member sees the same normalised images (so they must expect the same ``mean``
    and ``std``) and none of them trains. ``name`` joins the members' names with ``+``
    and ``weights_id`` their weights ids, so the feature cache and the ONNX export keep a
    concatenation apart from each member. Built by :func:`build_backbone` from a name
    such as ``"efficientnet_lite2+efficientnet_lite0"``.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"a concatenation needs two or more backbones, got {len(members)}")
        first = members[0]
        for other in members[1:]:
            if [float(v) for v in other.mean] != [float(v) for v in first.mean] or [
                float(v) for v in other.std
            ] != [float(v) for v in first.std]:
                raise ValueError(
                    f"{first.name} and {other.name} expect different input normalisations "
                    f"(mean {list(first.mean)} / {list(other.mean)}, std {list(first.std)} / "
                    f"{list(other.std)}); concatenate backbones that share one"
                )
        if any(p.requires_grad for m in members for p in m.parameters()):
            raise ValueError(
                "a concatenation holds frozen backbones only; build its members without "
                "trainable layers"
            )
        self.members = nn.ModuleList(members)
        self.name = JOIN.join(str(m.name) for m in members)
        self.weights_id = JOIN.join(str(m.weights_id) for m in members)
        self.feature_dim = sum(int(m.feature_dim) for m in members)
        self.mean, self.std = first.mean, first.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, 3, H, W)`` float, normalised with ``mean/std`` -> ``(B, feature_dim)``."""
        _check_input(x)
        return torch.cat([m(x) for m in self.members], dim=1)
