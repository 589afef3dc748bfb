"""hihpq_lib: Hierarchical Hyperbolic Product Quantization (HiHPQ), tested and CPU-friendly.

Modules, in the direction data flows:

=================  ==========================================================
``runtime``        fast mode, seeding, data/cache/runs folders
``lorentz``        Lorentz-model geometry (exp/log maps, distances, centroid, Poincaré)
``manifolds``      products of M hyperboloids (learnable curvatures) or Euclidean spaces
``quantizer``      soft product quantizer (codebook attention, hard uint8 codes)
``losses``         quantized contrastive, prototype-wise and instance-wise losses
``hierarchy``      tangent-space Ward clustering (exact and scalable)
``data``           CIFAR-10 / Flickr25K / NUS-WIDE / image folders, protocol splits
``transforms``     evaluation transform and the reference's augmentation recipe
``backbones``      EfficientNet-Lite0 (offline weights), VGG-16, ONNX Runtime path
``features``       cached frozen features and augmentation banks
``metrics``        mAP@K, precision@K, PR curves, hierarchy agreement
``baselines``      float features, faiss PQ / OPQ
``index``          the retrieval index: uint8 codes + asymmetric distance search
=================  ==========================================================
"""

import warnings as _warnings

with _warnings.catch_warnings():
    # geoopt compiles three helpers with torch.jit.script when imported; torch >= 2.10
    # deprecates that with a FutureWarning printed at every start of the CLI, a notebook or
    # a script. None of those helpers is used here, so the message only confuses readers.
    _warnings.filterwarnings(
        "ignore", message="`torch.jit.script` is deprecated", category=FutureWarning
    )
    import geoopt as _geoopt  # noqa: F401

__version__ = "0.1.0"
