r"""Embedding a tree's distances in a low-dimensional hyperbolic or Euclidean space.

A tree is given by its parent array (``parent[i]`` the parent of node ``i``, ``-1`` for the
root). Its **tree distance** :math:`d_T(i, j)` is the number of edges on the path between
``i`` and ``j``. :func:`fit_tree_embedding` places every node in :math:`\mathbb H^n`
(curvature :math:`-1`, points on the hyperboloid) or in :math:`\mathbb R^n` by gradient
descent on the **relative** error of the distances, up to one global scale :math:`s`:

.. math::

    r_{ij} = \frac{d_{\mathrm{emb}}(i, j)}{d_T(i, j)}, \qquad
    s = \frac{\sum r_{ij}}{\sum r_{ij}^2}, \qquad
    \mathcal L = \frac{1}{|P|}\sum_{(i, j) \in P} (s\, r_{ij} - 1)^2 ,

over the set :math:`P` of pairs of distinct nodes (``s`` is the least-squares scale, held
fixed inside each step). Both geometries get the same parametrisation size (``n``
numbers per node: hyperbolic points are :math:`\exp_o` of tangent vectors at the origin),
the same initialisation, optimiser and number of steps. The **distortion** of a pair is
:math:`|s\, r_{ij} - 1|` (0 is perfect); :func:`distortion_by_depth` averages it per node
and then over the nodes of each depth.

>>> parent = [-1, 0, 0, 1, 1]
>>> tree_distances(parent)[3].tolist()
[2.0, 1.0, 3.0, 0.0, 2.0]
>>> node_depths(parent).tolist()
[0, 1, 1, 2, 2]
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import shortest_path

from hihpq_lib.geometry import lorentz as L
from hihpq_lib.utils.arrays import to_numpy

__all__ = [
    "GEOMETRIES",
    "check_parent",
    "node_depths",
    "tree_distances",
    "embedded_distances",
    "least_squares_scale",
    "distortion",
    "node_distortion",
    "distortion_by_depth",
    "fit_tree_embedding",
    "recentre",
]

#: The two geometries :func:`fit_tree_embedding` knows.
GEOMETRIES = ("hyperbolic", "euclidean")


def check_parent(parent) -> np.ndarray:
    """``parent`` as an ``(n,)`` int64 array, checked to describe one tree.

    Exactly one root (``-1``), every other entry a valid node index, no cycle. Raises
    ``ValueError`` naming the problem.
    """
    par = to_numpy(parent)
    if par.ndim != 1 or par.size == 0 or not np.issubdtype(par.dtype, np.integer):
        raise ValueError(
            f"parent must be a non-empty (n,) integer array (-1 for the root), got shape "
            f"{par.shape} and dtype {par.dtype}"
        )
    par = par.astype(np.int64)
    n = par.size
    roots = np.flatnonzero(par == -1)
    if roots.size != 1:
        raise ValueError(f"parent must have exactly one root (-1), got {roots.size}")
    bad = np.flatnonzero((par < -1) | (par >= n) | (par == np.arange(n)))
    if bad.size:
        raise ValueError(f"parent[{bad[0]}] = {par[bad[0]]} is not another node's index")
    node_depths(par)  # raises on a cycle
    return par


def node_depths(parent) -> np.ndarray:
    """``(n,)`` int64: the number of edges from each node up to the root (the root: 0)."""
    par = to_numpy(parent, np.int64)
    n = par.size
    depth = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        path, j = [], i
        while depth[j] < 0 and par[j] >= 0:
            path.append(j)
            j = par[j]
            if len(path) > n:
                raise ValueError("parent does not describe a tree (cycle found)")
        if depth[j] < 0:  # the root
            depth[j] = 0
        for step, node in enumerate(reversed(path), start=1):
            depth[node] = depth[j] + step
    return depth


def tree_distances(parent) -> np.ndarray:
    """``(n, n)`` float64: numbers of edges between every two nodes (breadth-first search)."""
    par = check_parent(parent)
    n = par.size
    child = np.flatnonzero(par >= 0)
    graph = coo_matrix((np.ones(child.size), (child, par[child])), shape=(n, n))
    return shortest_path(graph, directed=False, unweighted=True)


def embedded_distances(points: torch.Tensor, geometry: str) -> torch.Tensor:
    r"""``(n, n)`` distances between embedded nodes.

    Parameters
    ----------
    points : (n, d+1) float on :math:`\mathbb H^d_1` (``"hyperbolic"``) or (n, d) float
        (``"euclidean"``)
    geometry : {"hyperbolic", "euclidean"}
    """
    if geometry == "hyperbolic":
        return L.pairwise_dist(points, points)
    if geometry == "euclidean":
        diff = points[:, None, :] - points[None, :, :]
        return (diff.pow(2).sum(-1) + torch.finfo(points.dtype).tiny).sqrt()
    raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")


def _pair_ratios(d_emb, d_tree):
    d_emb, d_tree = to_numpy(d_emb, np.float64), to_numpy(d_tree, np.float64)
    if d_emb.shape != d_tree.shape:
        raise ValueError(
            f"d_emb and d_tree must have the same shape, got {d_emb.shape} and {d_tree.shape}"
        )
    return d_emb, d_tree


def least_squares_scale(r) -> float:
    r"""The scale :math:`s = \sum r / \sum r^2` minimising :math:`\sum (s r - 1)^2`."""
    r = to_numpy(r, np.float64)
    return float(r.sum() / (r * r).sum())


def distortion(d_emb, d_tree) -> float:
    r"""Mean relative distortion :math:`\frac1{|P|}\sum |s\, r_{ij} - 1|` over the pairs.

    Parameters
    ----------
    d_emb, d_tree : (P,) float, the embedded and tree distances of the same pairs
        (tree distances > 0)
    """
    d_emb, d_tree = _pair_ratios(d_emb, d_tree)
    r = d_emb / d_tree
    return float(np.abs(least_squares_scale(r) * r - 1.0).mean())


def node_distortion(d_emb, d_tree) -> np.ndarray:
    r"""``(n,)``: for each node ``i``, the mean of :math:`|s\, r_{ij} - 1|` over ``j != i``.

    ``s`` is the least-squares scale of all pairs (one scale for the whole embedding).

    Parameters
    ----------
    d_emb, d_tree : (n, n) float, symmetric, zero diagonal
    """
    d_emb, d_tree = _pair_ratios(d_emb, d_tree)
    n = d_tree.shape[0]
    if d_tree.ndim != 2 or d_tree.shape[1] != n or n < 2:
        raise ValueError(f"d_emb and d_tree must be (n, n) with n >= 2, got {d_tree.shape}")
    off = ~np.eye(n, dtype=bool)
    r = np.zeros_like(d_tree)
    r[off] = d_emb[off] / d_tree[off]
    iu = np.triu_indices(n, 1)
    s = least_squares_scale(r[iu])
    err = np.where(off, np.abs(s * r - 1.0), 0.0)
    return err.sum(1) / (n - 1)


def distortion_by_depth(d_emb, d_tree, depth) -> dict[int, float]:
    """Mean :func:`node_distortion` of the nodes at each depth, ``{depth: value}``."""
    per_node = node_distortion(d_emb, d_tree)
    depth = to_numpy(depth, np.int64)
    if depth.shape != per_node.shape:
        raise ValueError(f"depth must be (n,) = {per_node.shape}, got {depth.shape}")
    return {int(d): float(per_node[depth == d].mean()) for d in np.unique(depth)}


def fit_tree_embedding(
    d_tree,
    dim: int,
    geometry: str,
    *,
    steps: int = 500,
    lr: float = 0.05,
    init_scale: float = 0.1,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    r"""Embed ``n`` nodes with tree distances ``d_tree`` in ``dim`` dimensions.

    Adam on the loss of the module docstring; every node starts at a random point
    (Gaussian tangent vectors of standard deviation ``init_scale``; the same start for
    both geometries with the same ``seed``).

    Parameters
    ----------
    d_tree : (n, n) float, tree distances (:func:`tree_distances`)
    dim : int >= 1, the dimension of the space
    geometry : {"hyperbolic", "euclidean"}
    steps, lr : Adam steps and learning rate
    init_scale : standard deviation of the initial coordinates
    seed : seed of the initialisation
    dtype : float dtype of the computation (float64 by default: deep trees reach far
        from the origin, where float32 distances lose precision)

    Returns
    -------
    (n, dim+1) points on the hyperboloid :math:`\mathbb H^{dim}_1` (``"hyperbolic"``) or
    (n, dim) points of :math:`\mathbb R^{dim}` (``"euclidean"``), ``dtype``.
    """
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
    if int(dim) < 1 or int(steps) < 0:
        raise ValueError(f"dim must be >= 1 and steps >= 0, got dim={dim}, steps={steps}")
    d = torch.as_tensor(to_numpy(d_tree, np.float64), dtype=dtype)
    n = d.shape[0]
    if d.ndim != 2 or d.shape[1] != n or n < 2:
        raise ValueError(f"d_tree must be an (n, n) matrix with n >= 2, got {tuple(d.shape)}")
    iu = torch.triu_indices(n, n, 1)
    target = d[iu[0], iu[1]]
    if not bool((target > 0).all()):
        raise ValueError("d_tree must be > 0 between distinct nodes (tree distances)")
    gen = torch.Generator().manual_seed(int(seed))
    params = (init_scale * torch.randn(n, int(dim), generator=gen, dtype=dtype)).requires_grad_()
    opt = torch.optim.Adam([params], lr=lr)

    def points(v):
        return L.expmap0(L.lift(v)) if geometry == "hyperbolic" else v

    for _ in range(int(steps)):
        r = embedded_distances(points(params), geometry)[iu[0], iu[1]] / target
        s = (r.sum() / (r * r).sum()).detach()
        loss = ((s * r - 1.0) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return points(params.detach())


def recentre(points: torch.Tensor, index: int, geometry: str) -> torch.Tensor:
    r"""Move node ``index`` to the origin by an isometry (all distances unchanged).

    Hyperbolic: :math:`x \mapsto \exp_o\big(\Gamma_{a \to o}(\log_a x)\big)` with
    :math:`a` the point of node ``index`` (the translation along the geodesic from
    :math:`a` to :math:`o`); Euclidean: :math:`x \mapsto x - a`. Only distances between
    nodes are fitted, so the root of a fitted tree can land anywhere; recentring it makes
    the Poincaré-disk picture read from the centre out.

    Parameters
    ----------
    points : (n, d+1) on :math:`\mathbb H^d_1` or (n, d), as :func:`fit_tree_embedding`
    index : the node to move to the origin
    geometry : {"hyperbolic", "euclidean"}
    """
    if geometry == "euclidean":
        return points - points[index]
    if geometry != "hyperbolic":
        raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
    a = points[index].expand_as(points)
    o = L.origin(points.shape[-1] - 1, dtype=points.dtype).expand_as(points)
    moved = L.expmap(o, L.transp(a, o, L.logmap(a, points)))
    return L.project(moved)
