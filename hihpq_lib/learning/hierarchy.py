r"""Tangent-space hierarchical (Ward) clustering: HiHPQ's pseudo hierarchy.

Points of the product of hyperboloids are mapped to the tangent space at the origin of
each subspace (:math:`\log_o`), concatenated, and clustered with Ward's method; cutting
the one dendrogram at several granularities (e.g. 100 / 50 / 25 clusters) gives nested
labels. Centroids are tangent-space means per cluster (the prototype loss maps them back
onto the manifold).

Exact Ward (:func:`scipy.cluster.hierarchy.linkage`) stores the condensed distance
matrix: :math:`8 N(N-1)/2` bytes, ~10 GB for the 50,000 images of CIFAR-10 protocol I.
The *scalable* mode first summarises the data with k-means into ``n_anchors`` centres
(default 2,000), runs Ward on the centres weighted by their sizes (each centre enters
the merge cost with its member count, so big and small centres merge as the full data
would), and gives each point its centre's labels. Memory is then
:math:`O(N\cdot F + n_{anchors}^2)`. Features wider than ``anchor_dims`` (256) are
assigned to their centres by k-means on their first ``anchor_dims`` principal components
(the centres themselves are means of the full features): k-means costs
:math:`O(N\cdot n_{anchors}\cdot F)` per iteration, 5x less at 1,280 features.
``auto`` picks exact Ward up to 10,000 points (the condensed matrix then takes 0.4 GB,
and scipy holds about twice that), scalable above.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans

from hihpq_lib.geometry import lorentz as L
from hihpq_lib.utils.arrays import to_numpy

__all__ = ["TangentWardHierarchy", "tangent_features", "weighted_ward_linkage"]


def tangent_features(points, k=None) -> np.ndarray:
    """Concatenated tangent features of product points.

    Parameters
    ----------
    points : (N, M, n+1) array or tensor of hyperboloid points, with ``k`` a float or
        ``(M,)`` curvature parameters; or (N, F) features already in the tangent space
        (returned as float64 numpy).

    Returns
    -------
    (N, F) float64 numpy array (``F = M * n`` for points).
    """
    x = torch.as_tensor(points)
    if x.dim() == 2:
        return to_numpy(x, np.float64)
    if x.dim() != 3:
        raise ValueError(
            f"expected (N, F) tangent features or (N, M, n+1) points, got {tuple(x.shape)}"
        )
    if k is None:
        raise ValueError("points of shape (N, M, n+1) need the curvature parameter k")
    kk = torch.as_tensor(k, dtype=x.dtype)
    kk = kk.view(-1, 1) if kk.dim() > 0 else kk
    v = L.logmap0(x, k=kk)[..., 1:]
    return to_numpy(v.reshape(x.shape[0], -1), np.float64)


def weighted_ward_linkage(X: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Ward linkage of weighted points (each point stands for ``weights[i]`` points).

    Nearest-neighbour-chain-free O(P^2) implementation with the Lance-Williams update of
    the Ward merge cost :math:`\\Delta(a, b) = \\frac{n_a n_b}{n_a + n_b}\\|c_a - c_b\\|^2`.
    Returns a scipy-format linkage matrix ``(P-1, 4)`` whose heights are
    :math:`\\sqrt{2\\Delta}` (scipy's convention for Ward), so
    :func:`scipy.cluster.hierarchy.fcluster` works on it. With all weights 1 it agrees
    with ``scipy.cluster.hierarchy.linkage(X, "ward")`` (up to ties).

    Parameters
    ----------
    X : (P, F) float
    weights : (P,) positive

    Returns
    -------
    (P-1, 4) float64
    """
    X = to_numpy(X, np.float64)
    w = to_numpy(weights, np.float64).copy()
    P = X.shape[0]
    if P < 2:
        raise ValueError("need at least 2 points to build a linkage")
    if w.shape != (P,) or not np.all(w > 0):
        raise ValueError("weights must be a positive array with one entry per point")
    sq = (X * X).sum(1)
    D = sq[:, None] + sq[None, :] - 2.0 * X @ X.T
    np.maximum(D, 0.0, out=D)
    # Ward cost between singletons-with-weights
    cost = (w[:, None] * w[None, :]) / (w[:, None] + w[None, :]) * D
    np.fill_diagonal(cost, np.inf)
    active = np.ones(P, dtype=bool)
    cluster_id = np.arange(P)
    out = np.zeros((P - 1, 4))
    counts = np.ones(P)
    for step in range(P - 1):
        flat = np.argmin(cost)
        a, b = divmod(flat, P)
        if a > b:
            a, b = b, a
        d_ab = cost[a, b]
        na, nb = w[a], w[b]
        out[step] = [cluster_id[a], cluster_id[b], np.sqrt(2.0 * d_ab), counts[a] + counts[b]]
        # Lance-Williams update for Ward on merge costs
        nk = w
        new = ((na + nk) * cost[a] + (nb + nk) * cost[b] - nk * d_ab) / (na + nb + nk)
        cost[a] = new
        cost[:, a] = new
        cost[a, a] = np.inf
        cost[b, :] = np.inf
        cost[:, b] = np.inf
        active[b] = False
        w[a] = na + nb
        counts[a] = counts[a] + counts[b]
        cluster_id[a] = P + step
    # scipy requires monotone heights; Ward is monotone, guard against rounding
    out[:, 2] = np.maximum.accumulate(out[:, 2])
    return out


def _anchor_space(feats: np.ndarray, dims: int | None) -> np.ndarray:
    """The features k-means assigns to anchors: themselves (float32), or for more than
    ``dims`` columns their first ``dims`` principal components (an orthogonal projection
    of the centred features, so squared distances there are at most the full ones)."""
    x = np.asarray(feats, dtype=np.float32)
    if dims is None or x.shape[1] <= int(dims):
        return x
    centred = x - x.mean(0, keepdims=True)
    c64 = centred.astype(np.float64)  # one float64 copy for the covariance
    cov = c64.T @ c64
    del c64
    _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
    top = vecs[:, ::-1][:, : int(dims)].astype(np.float32)
    return centred @ top


def _relabel(labels: np.ndarray) -> np.ndarray:
    _, inv = np.unique(labels, return_inverse=True)
    return inv.astype(np.int64)


class TangentWardHierarchy(ClusterMixin, BaseEstimator):
    """Nested Ward clusterings of tangent-space features (scikit-learn style).

    Parameters
    ----------
    n_clusters : sequence of int
        Granularities, e.g. ``(100, 50, 25)``; any order, stored fine to coarse.
    method : {"auto", "exact", "scalable"}
        ``auto`` uses exact Ward up to ``exact_max`` points, scalable above.
    n_anchors : int
        k-means centres of the scalable mode.
    exact_max : int
        Largest N for exact Ward in ``auto`` mode (10,000 points: a 0.4 GB condensed
        distance matrix; at 20,000 points it is 1.6 GB and the fit peaked near 3 GB above
        the rest of a run).
    anchor_dims : int or None
        Scalable mode: features wider than this are assigned to k-means centres on their
        first ``anchor_dims`` principal components (``None``: always on all features).
    k : float or (M,) array, optional
        Curvature parameters when ``fit`` receives ``(N, M, n+1)`` points.
    random_state : int

    Attributes
    ----------
    labels_ : list of (N,) int64 arrays, one per level (fine to coarse)
    centroids_ : list of (C_l, F) float arrays, tangent-space means
    n_clusters_ : list of int, the cluster counts actually obtained
    parents_ : list of (C_l,) int64 arrays: cluster of level l -> its cluster at level l+1
    linkage_ : (P-1, 4) linkage matrix (of the points, or of the anchors)
    method_ : str, the method used
    anchor_labels_ : (N,) int64, the k-means centre of each point (scalable mode)
    """

    def __init__(
        self,
        n_clusters: Sequence[int] = (100, 50, 25),
        method: str = "auto",
        n_anchors: int = 2000,
        exact_max: int = 10000,
        k=None,
        random_state: int = 0,
        anchor_dims: int | None = 256,
    ):
        self.n_clusters = n_clusters
        self.method = method
        self.n_anchors = n_anchors
        self.exact_max = exact_max
        self.anchor_dims = anchor_dims
        self.k = k
        self.random_state = random_state

    def _levels(self, n: int) -> list[int]:
        levels = sorted({int(c) for c in self.n_clusters}, reverse=True)
        if not levels or levels[-1] < 1:
            raise ValueError(f"n_clusters must be positive integers, got {self.n_clusters}")
        if levels[0] > n:
            raise ValueError(f"cannot make {levels[0]} clusters from {n} points")
        return levels

    def fit(self, X, y=None):
        feats = tangent_features(X, self.k)
        n = feats.shape[0]
        levels = self._levels(n)
        method = self.method
        if method not in ("auto", "exact", "scalable"):
            raise ValueError(f"method must be 'auto', 'exact' or 'scalable', got {method!r}")
        if method == "auto":
            method = "exact" if n <= self.exact_max else "scalable"
        if method == "exact":
            Z = linkage(feats, method="ward")
            point_of = np.arange(n)
            self.anchor_labels_ = None
        else:
            n_anchors = min(int(self.n_anchors), n)
            if n_anchors < levels[0]:
                raise ValueError(
                    f"n_anchors={n_anchors} is smaller than the finest level {levels[0]}"
                )
            km = KMeans(n_clusters=n_anchors, n_init=1, max_iter=50, random_state=self.random_state)
            point_of = km.fit_predict(_anchor_space(feats, self.anchor_dims))
            counts = np.bincount(point_of, minlength=n_anchors).astype(np.float64)
            keep = counts > 0
            remap = np.cumsum(keep) - 1
            point_of = remap[point_of]
            centres = np.stack([feats[point_of == a].mean(0) for a in range(int(keep.sum()))])
            Z = weighted_ward_linkage(centres, counts[keep])
            self.anchor_labels_ = point_of.astype(np.int64)
        self.linkage_ = Z
        self.method_ = method
        self.labels_, self.centroids_ = [], []
        for c in levels:
            lab = _relabel(fcluster(Z, c, criterion="maxclust")[point_of])
            self.labels_.append(lab)
            n_c = int(lab.max()) + 1
            sums = np.zeros((n_c, feats.shape[1]))
            np.add.at(sums, lab, feats)
            self.centroids_.append(sums / np.bincount(lab, minlength=n_c)[:, None])
        self.n_clusters_ = [len(c) for c in self.centroids_]
        self.parents_ = []
        for fine, coarse in zip(self.labels_[:-1], self.labels_[1:]):
            parent = np.zeros(int(fine.max()) + 1, dtype=np.int64)
            parent[fine] = coarse
            self.parents_.append(parent)
        return self

    def fit_predict(self, X, y=None):
        """Fit and return the finest level's labels (use ``labels_`` for all levels)."""
        return self.fit(X).labels_[0]

    def predict(self, X) -> list[np.ndarray]:
        """Labels of new points at every level: nearest finest centroid, then parents."""
        if not hasattr(self, "centroids_"):
            raise RuntimeError("call fit before predict")
        feats = tangent_features(X, self.k)
        C = self.centroids_[0]
        d = (feats * feats).sum(1)[:, None] + (C * C).sum(1)[None] - 2 * feats @ C.T
        lab = d.argmin(1).astype(np.int64)
        out = [lab]
        for parent in self.parents_:
            lab = parent[lab]
            out.append(lab)
        return out
