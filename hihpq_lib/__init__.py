"""hihpq_lib: Hierarchical Hyperbolic Product Quantization (HiHPQ), tested and CPU-friendly.

Subpackages, bottom to top; a subpackage imports only those above it in this table
(``tests/test_layers.py`` checks it):

================  ===========================================================================
``utils``         run-time settings (fast mode, seeding, folders, threads), atomic writes,
                  optional dependencies
``geometry``      the Lorentz model (``lorentz``) and products of hyperboloids or Euclidean
                  spaces with learnable curvatures (``manifolds``)
``quantization``  the soft product quantizer (``quantizer``), the retrieval index of uint8
                  codes (``index``) and its compiled scan (``adc_kernel``)
``data``          datasets and protocol splits, image transforms, frozen backbones
                  (``data.backbones``) and the feature cache (``features``)
``evaluation``    metrics (mAP@K, PR curves), faiss baselines, statistics over seeds, the
                  benchmark tables, the notebooks' claims
``learning``      losses, the tangent-space Ward hierarchy, the model, the trainer, the
                  configuration and its profiles, model diagnostics
``viz``           figures: plotly and matplotlib twins, by topic
``app``           the pipeline (data to run), the notebooks' experiments, the exercises, the
                  ``hihpq`` CLI and its demo
================  ===========================================================================

Importing ``hihpq_lib`` itself loads nothing heavy: import the subpackage you need, e.g.
``from hihpq_lib.geometry import lorentz``.
"""

__version__ = "0.1.0"
