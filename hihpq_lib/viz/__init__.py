r"""Figures for the notebooks and reports: plotly (interactive) and matplotlib (static) twins.

Every key figure has a *data* function that computes what is drawn (plain numpy arrays
in a dict) and a *figure* function with ``backend="plotly"`` (an interactive
``plotly.graph_objects.Figure``) or ``backend="matplotlib"`` (a static
``matplotlib.figure.Figure`` that renders without a browser). Both backends draw from the
same data, so the two versions always agree.

=================================  ==========================================================
data                               figure
=================================  ==========================================================
:func:`poincare_coords`            :func:`poincare_disk`
:func:`hyperboloid_data`           :func:`hyperboloid_and_disk`
:func:`geodesic_grid_data`         :func:`geodesic_grid`
:func:`voronoi_data`               :func:`codebook_voronoi`
:func:`subspace_disk_data`         :func:`subspace_codewords_disks`
:func:`geodesic_segment`           :func:`tree_embeddings`
:func:`umap_coords`                :func:`embedding_umap`
:func:`history_series`             :func:`training_history` (also :func:`line_plot`)
(inputs used as given)             :func:`pr_curve`, :func:`precision_at_k_plot`,
                                   :func:`line_plot`
(matplotlib only)                  :func:`dendrogram_vs_labels`, :func:`retrieval_grid`
=================================  ==========================================================

:func:`slider_figure` puts any of them under ipywidgets sliders in a notebook, redrawn
in place; :func:`slider_frames` gives a plotly figure its own slider over precomputed
frames, which needs no kernel (exported HTML, the book): :func:`curvature_explorer` and
:func:`voronoi_explorer` are the two explorations of notebooks 01 and 03. Imported in a
Jupyter kernel, this module selects :func:`use_notebook_renderer` (plotly's JSON plus
offline HTML for every figure).

Geometry is computed on the hyperboloid (:mod:`hihpq_lib.geometry.lorentz`); Poincaré coordinates
are only for pictures and every point drawn on a Poincaré disk goes through
:func:`poincare_coords`, which uses :func:`hihpq_lib.geometry.lorentz.to_poincare` and guarantees
norms strictly below 1 (the unit disk's boundary is "infinitely far away").

Curvature follows :mod:`hihpq_lib.geometry.lorentz`: ``k > 0`` is geoopt's parameter, the
sectional curvature is :math:`-1/k` (HiHPQ's curvature magnitude is ``c = 1/k``).

matplotlib figures are built with :class:`matplotlib.figure.Figure` (not ``pyplot``), so
no global figure is left open; in a notebook end a cell with the figure to display it.
The visualisation layer sits on top of the library: only ``hihpq_lib.app`` imports it. Its
modules, by topic: ``style`` (backends, palette, shared axes), ``hyperbolic`` (disk,
hyperboloid, geodesic grid), ``codebooks`` (Voronoi cells, subspace disks), ``trees`` (trees,
seed strips, dendrograms), ``retrieval`` (image grids, curves), ``history`` (training
histories), ``interactive`` (sliders, explorers, the notebook renderer), ``embedding``
(UMAP); every public name is re-exported here.
"""

from __future__ import annotations

import os

from hihpq_lib.utils.optional import require as _require

for _name in ("matplotlib", "plotly"):  # the ``viz`` extra: say so before any import fails
    _require(_name, "viz")

from hihpq_lib.viz.codebooks import (
    codebook_voronoi,
    subspace_codewords_disks,
    subspace_disk_data,
    voronoi_data,
)
from hihpq_lib.viz.embedding import embedding_umap, umap_coords
from hihpq_lib.viz.history import history_series, training_history
from hihpq_lib.viz.hyperbolic import (
    geodesic_grid,
    geodesic_grid_data,
    hyperboloid_and_disk,
    hyperboloid_data,
    poincare_coords,
    poincare_disk,
)
from hihpq_lib.viz.interactive import (
    RENDERER,
    _in_kernel,
    curvature_explorer,
    curvature_figure,
    slider_figure,
    slider_frames,
    use_notebook_renderer,
    voronoi_explorer,
    voronoi_figure,
)
from hihpq_lib.viz.retrieval import (
    line_plot,
    pr_curve,
    precision_at_k_plot,
    retrieval_grid,
    views_grid,
)
from hihpq_lib.viz.style import BACKENDS, OKABE_ITO, palette
from hihpq_lib.viz.trees import dendrogram_vs_labels, geodesic_segment, seed_strip, tree_embeddings

if _in_kernel() and not os.environ.get("PLOTLY_RENDERER"):
    use_notebook_renderer()

__all__ = [
    "BACKENDS",
    "OKABE_ITO",
    "palette",
    "poincare_coords",
    "poincare_disk",
    "hyperboloid_data",
    "hyperboloid_and_disk",
    "geodesic_grid_data",
    "geodesic_grid",
    "voronoi_data",
    "codebook_voronoi",
    "subspace_disk_data",
    "subspace_codewords_disks",
    "geodesic_segment",
    "tree_embeddings",
    "seed_strip",
    "dendrogram_vs_labels",
    "retrieval_grid",
    "views_grid",
    "pr_curve",
    "precision_at_k_plot",
    "line_plot",
    "history_series",
    "training_history",
    "slider_figure",
    "slider_frames",
    "curvature_figure",
    "curvature_explorer",
    "voronoi_figure",
    "voronoi_explorer",
    "RENDERER",
    "use_notebook_renderer",
    "umap_coords",
    "embedding_umap",
]
