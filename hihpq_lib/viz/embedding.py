"""UMAP views of embeddings (``umap-learn``, the ``viz`` extra)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from matplotlib.figure import Figure

from hihpq_lib.viz.style import _check_backend, _label_groups, _mpl_outside_legend, _to_numpy

__all__ = ["umap_coords", "embedding_umap"]


# ---------------------------------------------------------------------- UMAP
def umap_coords(
    features,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "euclidean",
    random_state: int | None = 0,
    max_points: int = 5000,
    reducer=None,
) -> tuple[np.ndarray, np.ndarray]:
    """2-D UMAP coordinates of (a random subset of at most ``max_points``) features.

    Parameters
    ----------
    features : (N, F) float
    n_neighbors, min_dist, metric, random_state : passed to ``umap.UMAP``
        (``random_state`` makes it reproducible and single-threaded).
    max_points : int
        Larger inputs are subsampled (seeded by ``random_state``): UMAP on 5,000 points
        takes seconds on a laptop CPU, plus about 10 s of one-off numba compilation per
        Python process.
    reducer : object with ``fit_transform``, optional
        Replaces UMAP (e.g. ``sklearn.decomposition.PCA(2)`` for a quick look).

    Returns
    -------
    coords : (n, 2) float64
    kept : (n,) int64 indices of the rows used
    """
    X = _to_numpy(features, "features")
    if X.ndim != 2 or X.shape[0] < 3:
        raise ValueError(f"features must be (N, F) with N >= 3, got {X.shape}")
    X = X.astype(np.float32, copy=False)
    n = X.shape[0]
    kept = np.arange(n)
    if n > max_points:
        rng = np.random.default_rng(0 if random_state is None else random_state)
        kept = np.sort(rng.choice(n, max_points, replace=False))
    if reducer is None:
        import umap  # slow import (numba): only when asked for

        reducer = umap.UMAP(
            n_components=2,
            n_neighbors=min(int(n_neighbors), len(kept) - 1),
            min_dist=min_dist,
            metric=metric,
            random_state=random_state,
            n_jobs=1 if random_state is not None else -1,
        )
    coords = np.asarray(reducer.fit_transform(X[kept]), dtype=np.float64)
    if coords.shape != (len(kept), 2):
        raise ValueError(f"the reducer must return (n, 2) coordinates, got {coords.shape}")
    return coords, kept


def embedding_umap(
    features,
    labels=None,
    class_names: Sequence[str] | None = None,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "euclidean",
    random_state: int | None = 0,
    max_points: int = 5000,
    reducer=None,
    title: str | None = "UMAP of the embedding",
    backend: str = "plotly",
):
    """A 2-D UMAP map of features coloured by label (data: :func:`umap_coords`).

    Parameters
    ----------
    features : (N, F) float (e.g. tangent features :func:`hierarchy.tangent_features`)
    labels : (N,) int or str, optional; class_names names integer labels
    backend : {"plotly", "matplotlib"}
    """
    _check_backend(backend)
    coords, kept = umap_coords(
        features,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        metric=metric,
        random_state=random_state,
        max_points=max_points,
        reducer=reducer,
    )
    lab = None if labels is None else _to_numpy(labels, "labels").reshape(-1)[kept]
    groups = _label_groups(lab, len(kept), class_names)
    if backend == "plotly":
        fig = go.Figure()
        for name, idx, col in groups:
            fig.add_trace(
                go.Scattergl(
                    x=coords[idx, 0],
                    y=coords[idx, 1],
                    mode="markers",
                    marker={"size": 4, "color": col},
                    name=name or "points",
                    showlegend=name is not None,
                )
            )
        fig.update_layout(
            title=title,
            width=680,
            height=560,
            template="plotly_white",
            xaxis={"visible": False},
            yaxis={"visible": False},
            legend={"itemsizing": "constant"},  # 4-px points, readable legend markers
        )
        return fig
    fig = Figure(figsize=(7.0, 5.6), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    for name, idx, col in groups:
        ax.scatter(coords[idx, 0], coords[idx, 1], s=4, color=col, label=name)
    ax.set_xticks([])
    ax.set_yticks([])
    if labels is not None:
        _mpl_outside_legend(fig, ax, markerscale=3)
    if title:
        ax.set_title(title, fontsize=11)
    return fig
