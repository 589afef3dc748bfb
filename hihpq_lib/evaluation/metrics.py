r"""Retrieval and hierarchy metrics: mAP@K, precision/recall by rank, ARI/NMI per level.

mAP@K (the product-quantization literature's, and the HiHPQ reference's)
------------------------------------------------------------------------
Rank the database by distance (ascending), keep the top ``K`` and mark each kept item
as a hit when it is relevant to the query: same class (single-label data) or at least
one shared label (multi-label data, labels given as multi-hot rows). With
:math:`h_i \in \{0, 1\}` the hit at rank :math:`i` and
:math:`P@i = \frac1i\sum_{j\le i} h_j`,

.. math:: \mathrm{AP@K} = \frac{\sum_{i=1}^{K} h_i \, P@i}{\sum_{i=1}^{K} h_i}
          \quad(0 \text{ when there is no hit}), \qquad
          \mathrm{mAP@K} = \frac1Q \sum_q \mathrm{AP@K}(q).

The denominator counts hits *within the top K*, not all relevant items in the database;
for ``K = N`` the two agree and AP@N equals scikit-learn's ``average_precision_score``
(tested).

Ranking is deterministic: equal distances are ordered by the lower database index
(:func:`hihpq_lib.quantization.index.topk_smallest`). Everything is chunked over queries, so 10,000
queries against 50,000 database items run in seconds in bounded memory.

Ties
----
A PQ index gives the same distance to every item with the same codes, so "lower index
first" makes the score depend on the order in which the database is stored. The scores
computed from distances (:func:`map_from_distances`, :func:`map_levels_from_distances`,
:func:`precision_at_k_from_distances`) take ``ties="expected"`` for the score averaged
over every order of the tied items (exactly invariant to the storage order; the formula
and the reasons for it over a random tie-break are in :mod:`hihpq_lib.evaluation.ties`).
The default, ``ties="index"``, is the lower-index order that the committed benchmark
numbers used. :func:`tie_fraction` says how often ties occur near the top.

Labels
------
* single-label: ``(N,)`` integer array (numpy or torch);
* multi-label: ``(N, C)`` multi-hot array (any dtype; nonzero means "has the label").

Query and database labels must be of the same kind.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from hihpq_lib.evaluation.ties import (
    expected_average_precision_at_k,
    expected_hits_at_k,
    tie_fraction,
)
from hihpq_lib.quantization.index import topk_smallest
from hihpq_lib.utils.arrays import to_numpy

__all__ = [
    "rank_database",
    "hits_at_k",
    "average_precision_at_k",
    "mean_average_precision",
    "map_at_k",
    "map_from_distances",
    "map_levels_from_distances",
    "precision_at_k_from_distances",
    "expected_average_precision_at_k",
    "expected_hits_at_k",
    "tie_fraction",
    "relevant_counts",
    "precision_at_k_curve",
    "precision_recall_by_rank",
    "superclass_labels",
    "map_at_k_levels",
    "hierarchy_agreement",
    "format_table",
    "precision_recall_curve",
]

DistanceSource = torch.Tensor | np.ndarray | Callable[[int, int], Any]

#: Target number of elements in one working buffer (queries x database or x labels).
_BUFFER_ELEMENTS = 2**24
#: How ties are ordered: by lower database index, or averaged over every order.
_TIES = ("index", "expected")


# ---------------------------------------------------------------------- input helpers
def _as_tensor(x, name: str) -> torch.Tensor:
    if torch.is_tensor(x):
        return x.detach().cpu()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, (list, tuple)):
        return torch.as_tensor(np.asarray(x))
    raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")


def _check_labels(query_labels, db_labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (query, db) labels as tensors: int64 (single-label) or bool (multi-hot)."""
    q = _as_tensor(query_labels, "query_labels")
    d = _as_tensor(db_labels, "db_labels")
    if q.dim() != d.dim() or q.dim() not in (1, 2):
        raise ValueError(
            "labels must be both (N,) class indices or both (N, C) multi-hot; got query "
            f"labels {tuple(q.shape)} and database labels {tuple(d.shape)}"
        )
    if q.dim() == 1:
        if q.is_floating_point() or d.is_floating_point():
            if not (torch.equal(q, q.round()) and torch.equal(d, d.round())):
                raise ValueError("single-label labels must be integer class indices")
        return q.long(), d.long()
    if q.shape[1] != d.shape[1]:
        raise ValueError(
            f"multi-hot labels need the same number of classes C: query {q.shape[1]}, "
            f"database {d.shape[1]}"
        )
    return q != 0, d != 0


def _check_topk(topk_indices, n_queries: int, n_db: int) -> torch.Tensor:
    idx = _as_tensor(topk_indices, "topk_indices")
    if idx.dim() != 2 or idx.shape[0] != n_queries:
        raise ValueError(
            f"topk_indices must have shape (Q, K) with Q = {n_queries} queries, "
            f"got {tuple(idx.shape)}"
        )
    if idx.is_floating_point() or idx.dtype == torch.bool:
        raise TypeError(f"topk_indices must be integer database indices, got {idx.dtype}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n_db):
        raise ValueError(
            f"topk_indices must lie in [0, N) = [0, {n_db}); got range "
            f"[{int(idx.min())}, {int(idx.max())}] (faiss returns -1 when k > N)"
        )
    return idx.long()


def _query_chunk(n_per_query: int) -> int:
    return max(1, _BUFFER_ELEMENTS // max(1, n_per_query))


def _hits(q: torch.Tensor, d: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B,) or (B, C) query labels, database labels, (B, K) indices -> (B, K) bool hits."""
    if q.dim() == 1:
        return d[idx] == q.unsqueeze(1)
    return (d[idx] & q.unsqueeze(1)).any(dim=-1)


# ---------------------------------------------------------------------- ranking
def _distance_chunks(distances: DistanceSource, num_queries: int | None, chunk_size: int):
    """Yield (start, stop, (stop - start, N) tensor) chunks of a distance source."""
    if not (isinstance(chunk_size, numbers.Integral) and chunk_size >= 1):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    chunk_size = int(chunk_size)
    if callable(distances):
        if num_queries is None:
            raise ValueError("num_queries is required when distances is a callable")
        for s in range(0, num_queries, chunk_size):
            e = min(s + chunk_size, num_queries)
            chunk = _as_tensor(distances(s, e), "distances(start, stop)")
            if chunk.dim() != 2 or chunk.shape[0] != e - s:
                raise ValueError(
                    f"distances({s}, {e}) must return a ({e - s}, N) array, "
                    f"got {tuple(chunk.shape)}"
                )
            yield s, e, chunk
        return
    dist = _as_tensor(distances, "distances")
    if dist.dim() != 2:
        raise ValueError(f"distances must be a (Q, N) matrix, got shape {tuple(dist.shape)}")
    if num_queries is not None and num_queries != dist.shape[0]:
        raise ValueError(f"distances has {dist.shape[0]} rows but num_queries={num_queries}")
    for s in range(0, dist.shape[0], chunk_size):
        yield s, min(s + chunk_size, dist.shape[0]), dist[s : s + chunk_size]


def _rank_chunk(chunk: torch.Tensor, k: int, largest: bool) -> torch.Tensor:
    n = chunk.shape[1]
    if not (isinstance(k, numbers.Integral) and 1 <= k <= n):
        raise ValueError(f"k must be an int with 1 <= k <= N = {n}, got {k!r}")
    if not chunk.is_floating_point():
        chunk = chunk.double()
    return topk_smallest(-chunk if largest else chunk, k)[1]


def _check_ties(ties) -> str:
    if ties not in _TIES:
        raise ValueError(f"ties must be one of {_TIES}, got {ties!r}")
    return ties


def _tie_stats(chunk: torch.Tensor, q: torch.Tensor, d: torch.Tensor, k: int, largest: bool):
    """What the expected scores need from a ``(B, N)`` distance chunk: the ascending top-k
    values ``(B, k)``, their hits ``(B, k)``, the number of database items tied with the
    k-th value ``(B,)`` and how many of those are relevant ``(B,)``."""
    n = chunk.shape[1]
    if not (isinstance(k, numbers.Integral) and 1 <= k <= n):
        raise ValueError(f"k must be an int with 1 <= k <= N = {n}, got {k!r}")
    x = chunk if chunk.is_floating_point() else chunk.double()
    x = -x if largest else x
    vals, idx = topk_smallest(x, int(k))
    tied = x == vals[:, -1:]
    n_tied = tied.sum(dim=1)
    r_tied = torch.zeros_like(n_tied)
    step = _query_chunk(n * (q.shape[1] if q.dim() == 2 else 1))
    for s in range(0, x.shape[0], step):
        qs = q[s : s + step]
        rel = d == qs.unsqueeze(1) if q.dim() == 1 else (qs.double() @ d.double().T) > 0
        r_tied[s : s + step] = (rel & tied[s : s + step]).sum(dim=1)
    return vals, _hits(q, d, idx), n_tied, r_tied


def _chunk_ap(chunk, q, d, k: int, largest: bool, ties: str) -> torch.Tensor:
    """(B,) AP@k of a ``(B, N)`` distance chunk, ties ordered as ``ties`` says."""
    if chunk.shape[1] != d.shape[0]:
        raise ValueError(
            f"distances have {chunk.shape[1]} columns but there are {d.shape[0]} database labels"
        )
    if ties == "expected":
        return expected_average_precision_at_k(*_tie_stats(chunk, q, d, k, largest))
    return average_precision_at_k(_hits(q, d, _rank_chunk(chunk, k, largest)))


def rank_database(
    distances: DistanceSource,
    k: int,
    *,
    num_queries: int | None = None,
    chunk_size: int = 1024,
    largest: bool = False,
) -> torch.Tensor:
    """Indices of the ``k`` best database items per query, best first.

    Parameters
    ----------
    distances : (Q, N) float array/tensor, or callable ``f(start, stop) -> (stop-start, N)``
        Query-to-database distances, or a function producing them for a slice of queries
        (so the full matrix never has to exist), e.g.
        ``lambda s, e: index.distances(queries[s:e])``.
    k : int
        ``1 <= k <= N``.
    num_queries : int, optional
        Q; required when ``distances`` is a callable.
    chunk_size : int
        Queries per chunk.
    largest : bool
        ``True`` when the values are similarities (larger is better).

    Returns
    -------
    (Q, k) int64 tensor, ties broken by lower database index.

    Examples
    --------
    >>> rank_database(torch.tensor([[0.5, 0.1, 0.5], [0.0, 0.0, 1.0]]), 2)
    tensor([[1, 0],
            [0, 1]])
    """
    out = [
        _rank_chunk(c, k, largest)
        for _, _, c in _distance_chunks(distances, num_queries, chunk_size)
    ]
    if not out:
        return torch.zeros((0, k), dtype=torch.long)
    return torch.cat(out)


# ---------------------------------------------------------------------- mAP
def hits_at_k(query_labels, db_labels, topk_indices) -> torch.Tensor:
    """Relevance of each retrieved item.

    Parameters
    ----------
    query_labels : (Q,) int or (Q, C) multi-hot
    db_labels : (N,) int or (N, C) multi-hot
    topk_indices : (Q, K) int database indices, best first

    Returns
    -------
    (Q, K) bool tensor: ``hits[q, i]`` is True when the item at rank ``i + 1`` is relevant.
    """
    q, d = _check_labels(query_labels, db_labels)
    idx = _check_topk(topk_indices, q.shape[0], d.shape[0])
    per_query = idx.shape[1] * (q.shape[1] if q.dim() == 2 else 1)
    step = _query_chunk(per_query)
    out = [_hits(q[s : s + step], d, idx[s : s + step]) for s in range(0, q.shape[0], step)]
    return torch.cat(out) if out else torch.zeros(idx.shape, dtype=torch.bool)


def average_precision_at_k(hits) -> torch.Tensor:
    r"""AP@K of each query from its ranked hits (see the module formula).

    Parameters
    ----------
    hits : (Q, K) bool/0-1 array or tensor, best rank first

    Returns
    -------
    (Q,) float64 tensor; 0 for a query without any hit.

    Examples
    --------
    >>> average_precision_at_k(torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0]]))
    tensor([0.8333, 0.0000], dtype=torch.float64)
    """
    h = _as_tensor(hits, "hits")
    if h.dim() != 2:
        raise ValueError(f"hits must be a (Q, K) array, got shape {tuple(h.shape)}")
    h = (h != 0).double()
    ranks = torch.arange(1, h.shape[1] + 1, dtype=torch.float64)
    precision = h.cumsum(dim=1) / ranks
    n_hits = h.sum(dim=1)
    return (precision * h).sum(dim=1) / n_hits.clamp_min(1.0)


def mean_average_precision(hits) -> float:
    """mAP@K: the mean over queries of :func:`average_precision_at_k`."""
    ap = average_precision_at_k(hits)
    return float(ap.mean()) if ap.numel() else float("nan")


def map_at_k(query_labels, db_labels, topk_indices) -> float:
    """mAP@K from ranked database indices (K = ``topk_indices.shape[1]``).

    Parameters
    ----------
    query_labels : (Q,) int or (Q, C) multi-hot
    db_labels : (N,) int or (N, C) multi-hot
    topk_indices : (Q, K) int database indices sorted by ascending distance

    Returns
    -------
    float

    Examples
    --------
    >>> map_at_k([0, 1], [0, 1, 0], [[0, 1], [0, 1]])  # APs 1 and 1/2
    0.75
    """
    return mean_average_precision(hits_at_k(query_labels, db_labels, topk_indices))


def map_from_distances(
    distances: DistanceSource,
    query_labels,
    db_labels,
    k: int,
    *,
    chunk_size: int = 1024,
    largest: bool = False,
    return_ap: bool = False,
    ties: str = "index",
) -> float | torch.Tensor:
    """mAP@K straight from distances, one chunk of queries at a time.

    Parameters
    ----------
    distances : (Q, N) float array/tensor, or callable ``f(start, stop) -> (stop-start, N)``
        See :func:`rank_database`.
    query_labels : (Q,) int or (Q, C) multi-hot
    db_labels : (N,) int or (N, C) multi-hot
    k : int
        Cut-off K (``1 <= k <= N``).
    chunk_size : int
        Queries per chunk.
    largest : bool
        ``True`` for similarities.
    return_ap : bool
        Return the (Q,) float64 tensor of per-query APs instead of their mean.
    ties : {"index", "expected"}
        ``"index"``: equal distances ranked by lower database index (the default, what
        :func:`map_at_k` of :func:`rank_database` gives); ``"expected"``: each AP averaged
        over every order of the tied items
        (:func:`~hihpq_lib.evaluation.ties.expected_average_precision_at_k`), the same for
        any order of the database. Ties are exact equalities of the distances given.

    Examples
    --------
    Two database items at the same distance, one relevant: stored first it gives AP 1,
    stored second 1/2; the expected AP is 3/4 either way.

    >>> tied = [[0.5, 0.5]]
    >>> map_from_distances(tied, [0], [0, 1], 2), map_from_distances(tied, [0], [1, 0], 2)
    (1.0, 0.5)
    >>> map_from_distances(tied, [0], [1, 0], 2, ties="expected")
    0.75
    """
    q, d = _check_labels(query_labels, db_labels)
    _check_ties(ties)
    aps = [
        _chunk_ap(chunk, q[s:e], d, k, largest, ties)
        for s, e, chunk in _distance_chunks(distances, q.shape[0], chunk_size)
    ]
    ap = torch.cat(aps) if aps else torch.zeros(0, dtype=torch.float64)
    if return_ap:
        return ap
    return float(ap.mean()) if ap.numel() else float("nan")


def map_levels_from_distances(
    distances: DistanceSource,
    levels: Mapping[str, tuple[Any, Any]],
    k: int,
    *,
    ties: str = "index",
    chunk_size: int = 1024,
    largest: bool = False,
) -> dict[str, float]:
    """mAP@K of one set of distances judged at several label levels, each chunk of
    distances computed once (:func:`map_from_distances` per level otherwise).

    Parameters
    ----------
    distances : (Q, N) float, or callable ``f(start, stop)``; see :func:`rank_database`
    levels : mapping level name -> (query_labels, db_labels), as in :func:`map_at_k_levels`
    k, ties, chunk_size, largest : see :func:`map_from_distances`

    Returns
    -------
    dict level name -> mAP@K (with ``ties="index"`` equal to
    ``map_at_k_levels(rank_database(distances, k), levels)``).
    """
    _check_ties(ties)
    checked = {name: _check_labels(ql, dl) for name, (ql, dl) in levels.items()}
    if not checked:
        return {}
    n_q = {q.shape[0] for q, _ in checked.values()}
    if len(n_q) != 1:
        raise ValueError(f"every level needs the same number of queries, got {sorted(n_q)}")
    aps: dict[str, list] = {name: [] for name in checked}
    for s, e, chunk in _distance_chunks(distances, n_q.pop(), chunk_size):
        for name, (q, d) in checked.items():
            aps[name].append(_chunk_ap(chunk, q[s:e], d, k, largest, ties))
    out = {}
    for name, parts in aps.items():
        ap = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
        out[name] = float(ap.mean()) if ap.numel() else float("nan")
    return out


# ---------------------------------------------------------------------- P@K and recall
def relevant_counts(query_labels, db_labels) -> torch.Tensor:
    """Number of relevant database items for each query (the recall denominator).

    Returns
    -------
    (Q,) int64 tensor.
    """
    q, d = _check_labels(query_labels, db_labels)
    if q.dim() == 1:
        if d.numel() == 0:
            return torch.zeros(q.shape[0], dtype=torch.long)
        values, counts = torch.unique(d, return_counts=True)  # sorted
        pos = torch.searchsorted(values, q).clamp_max(values.numel() - 1)
        return torch.where(values[pos] == q, counts[pos], 0)
    dm = d.double()
    step = _query_chunk(d.shape[0])
    out = [((q[s : s + step].double() @ dm.T) > 0).sum(dim=1) for s in range(0, q.shape[0], step)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def _check_ks(ks, kmax: int) -> np.ndarray:
    if ks is None:
        return np.arange(1, kmax + 1)
    arr = np.asarray(ks)
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"ks must be a non-empty 1-d sequence of ints, got {ks!r}")
    if arr.min() < 1 or arr.max() > kmax:
        raise ValueError(f"ks must lie in [1, K] = [1, {kmax}] (K = topk_indices.shape[1])")
    return arr.astype(np.int64)


def _precision_recall_sums(query_labels, db_labels, topk_indices, ks, relevant):
    """Chunked sums over queries of precision@k and recall@k (for queries with relevant>0).

    Returns ks, precision sum (L,), recall sum (L,), number of queries, number of queries
    with at least one relevant item. Memory per chunk: (chunk, K) hits and (chunk, L).
    """
    q, d = _check_labels(query_labels, db_labels)
    idx = _check_topk(topk_indices, q.shape[0], d.shape[0])
    ks = _check_ks(ks, idx.shape[1])
    cols = torch.from_numpy(ks - 1)
    kf = torch.from_numpy(ks).double()
    p_sum = torch.zeros(len(ks), dtype=torch.float64)
    r_sum = torch.zeros(len(ks), dtype=torch.float64)
    n_with = 0
    per_query = max(idx.shape[1] * (q.shape[1] if q.dim() == 2 else 1), len(ks))
    step = _query_chunk(per_query)
    for s in range(0, q.shape[0], step):
        cum = _hits(q[s : s + step], d, idx[s : s + step]).double().cumsum(dim=1)[:, cols]
        p_sum += (cum / kf).sum(dim=0)
        if relevant is not None:
            rel = relevant[s : s + step]
            has = rel > 0
            r_sum += (cum[has] / rel[has].double().unsqueeze(1)).sum(dim=0)
            n_with += int(has.sum())
    return ks, p_sum, r_sum, q.shape[0], n_with


def precision_at_k_curve(
    query_labels, db_labels, topk_indices, ks=None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean precision@k over queries, for k = 1..K or the given ``ks``.

    Parameters
    ----------
    query_labels, db_labels : see :func:`map_at_k`
    topk_indices : (Q, K) int database indices, best first
    ks : sequence of int in [1, K], optional

    Returns
    -------
    ks : (L,) int64 ndarray
    precision : (L,) float64 ndarray
    """
    ks, p_sum, _, n_q, _ = _precision_recall_sums(query_labels, db_labels, topk_indices, ks, None)
    return ks, to_numpy(p_sum / max(n_q, 1))


def precision_at_k_from_distances(
    distances: DistanceSource,
    query_labels,
    db_labels,
    ks,
    *,
    ties: str = "index",
    chunk_size: int = 1024,
    largest: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean precision@k over queries straight from distances, for the given ``ks``.

    Parameters
    ----------
    distances : (Q, N) float, or callable ``f(start, stop)``; see :func:`rank_database`
    query_labels, db_labels : see :func:`map_at_k`
    ks : sequence of int in [1, N]
    ties : {"index", "expected"}
        ``"index"``: the precision of the lower-index order (equal to
        :func:`precision_at_k_curve` of :func:`rank_database`); ``"expected"``: averaged
        over every order of the tied items
        (:func:`~hihpq_lib.evaluation.ties.expected_hits_at_k`).
    chunk_size, largest : see :func:`map_from_distances`

    Returns
    -------
    ks : (L,) int64 ndarray
    precision : (L,) float64 ndarray

    Examples
    --------
    >>> precision_at_k_from_distances([[0.5, 0.5]], [0], [1, 0], [1], ties="expected")
    (array([1]), array([0.5]))
    """
    q, d = _check_labels(query_labels, db_labels)
    _check_ties(ties)
    ks = _check_ks(ks, max(d.shape[0], 1))
    kmax = int(ks.max())
    cols = torch.from_numpy(ks - 1)
    kf = torch.from_numpy(ks).double()
    p_sum = torch.zeros(len(ks), dtype=torch.float64)
    for s, e, chunk in _distance_chunks(distances, q.shape[0], chunk_size):
        if chunk.shape[1] != d.shape[0]:
            raise ValueError(
                f"distances have {chunk.shape[1]} columns but there are {d.shape[0]} "
                "database labels"
            )
        if ties == "expected":
            hits = expected_hits_at_k(*_tie_stats(chunk, q[s:e], d, kmax, largest))
        else:
            hits = _hits(q[s:e], d, _rank_chunk(chunk, kmax, largest)).double()
        p_sum += (hits.cumsum(dim=1)[:, cols] / kf).sum(dim=0)
    return ks, to_numpy(p_sum / max(q.shape[0], 1))


def precision_recall_by_rank(
    query_labels, db_labels, topk_indices, ks=None, *, relevant=None
) -> dict[str, np.ndarray]:
    """Precision and recall after the first k retrieved items, averaged over queries.

    Recall at k is ``hits in the top k / relevant items in the whole database``; queries
    with no relevant item in the database are left out of the recall mean (their recall
    is undefined) but kept in the precision mean.

    Parameters
    ----------
    query_labels, db_labels : see :func:`map_at_k`
    topk_indices : (Q, K) int database indices, best first (use K = N for a full curve,
        with a few ``ks`` to keep the output short)
    ks : sequence of int in [1, K], optional (default 1..K)
    relevant : (Q,) int, optional
        Relevant items per query, if already known (else :func:`relevant_counts`).

    Returns
    -------
    dict with ``"k"`` (L,) int64, ``"precision"`` (L,) float64, ``"recall"`` (L,) float64
    (NaN recall if no query has a relevant item).
    """
    rel = (
        relevant_counts(query_labels, db_labels)
        if relevant is None
        else _as_tensor(relevant, "relevant")
    )
    n_q = len(query_labels)
    if rel.shape != (n_q,):
        raise ValueError(f"relevant must have shape (Q,) = ({n_q},), got {tuple(rel.shape)}")
    ks, p_sum, r_sum, n_q, n_with = _precision_recall_sums(
        query_labels, db_labels, topk_indices, ks, rel
    )
    recall = r_sum / n_with if n_with else torch.full_like(r_sum, float("nan"))
    return {"k": ks, "precision": to_numpy(p_sum / max(n_q, 1)), "recall": to_numpy(recall)}


# ---------------------------------------------------------------------- hierarchy
def superclass_labels(
    labels,
    class_names: Sequence[str],
    superclass_of: Mapping[str, str],
    *,
    superclass_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Relabel fine classes with their superclass (e.g. CIFAR-100's 20 coarse classes).

    mAP at the superclass level is then ``map_at_k(sup_q, sup_db, topk)``.

    Parameters
    ----------
    labels : (N,) int class indices, or (N, C) multi-hot
    class_names : sequence of C str
        ``class_names[c]`` names class ``c``.
    superclass_of : mapping str -> str
        Fine class name -> superclass name; must cover every class name.
    superclass_names : sequence of str, optional
        Order of the superclasses (index ``s`` = ``superclass_names[s]``). Default: order
        of first appearance when walking ``class_names``.

    Returns
    -------
    super_labels : (N,) int64 or (N, S) bool ndarray
    superclass_names : list of S str

    Examples
    --------
    >>> sup, names = superclass_labels(
    ...     [0, 2, 1], ["cat", "dog", "car"], {"cat": "animal", "dog": "animal", "car": "vehicle"}
    ... )
    >>> sup.tolist(), names
    ([0, 1, 0], ['animal', 'vehicle'])
    """
    missing = [c for c in class_names if c not in superclass_of]
    if missing:
        raise KeyError(f"superclass_of has no entry for classes {missing[:5]}; add them")
    if superclass_names is None:
        superclass_names = list(dict.fromkeys(superclass_of[c] for c in class_names))
    superclass_names = list(superclass_names)
    pos = {s: i for i, s in enumerate(superclass_names)}
    unknown = sorted({superclass_of[c] for c in class_names} - set(pos))
    if unknown:
        raise ValueError(f"superclasses {unknown[:5]} are missing from superclass_names")
    fine_to_super = np.array([pos[superclass_of[c]] for c in class_names], dtype=np.int64)
    lab = to_numpy(_as_tensor(labels, "labels"))
    if lab.ndim == 1:
        if lab.size and (lab.min() < 0 or lab.max() >= len(class_names)):
            raise ValueError(f"labels must lie in [0, {len(class_names)}) (one per class name)")
        return fine_to_super[lab.astype(np.int64)], superclass_names
    if lab.ndim != 2 or lab.shape[1] != len(class_names):
        raise ValueError(
            f"multi-hot labels must have shape (N, C) = (N, {len(class_names)}), got {lab.shape}"
        )
    onehot = np.zeros((len(class_names), len(superclass_names)), dtype=np.int64)
    onehot[np.arange(len(class_names)), fine_to_super] = 1
    return (lab != 0).astype(np.int64) @ onehot > 0, superclass_names


def map_at_k_levels(topk_indices, levels: Mapping[str, tuple[Any, Any]]) -> dict[str, float]:
    """mAP@K of one ranking judged at several label levels.

    Parameters
    ----------
    topk_indices : (Q, K) int database indices, best first
    levels : mapping level name -> (query_labels, db_labels)
        e.g. ``{"class": (yq, ydb), "superclass": (sq, sdb)}``.

    Returns
    -------
    dict level name -> mAP@K.
    """
    return {name: map_at_k(q, d, topk_indices) for name, (q, d) in levels.items()}


def hierarchy_agreement(
    level_labels: Sequence,
    true_labels,
    true_superlabels=None,
    *,
    level_names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """How well each level of a learned hierarchy agrees with the true class hierarchy.

    For each level's cluster assignment, the adjusted Rand index (ARI, chance-corrected,
    1 = identical partitions) and normalised mutual information (NMI, in [0, 1]) against
    the true classes and, if given, the true superclasses (scikit-learn's
    ``adjusted_rand_score`` and ``normalized_mutual_info_score``).

    Parameters
    ----------
    level_labels : sequence of (N,) int arrays
        Cluster index of every item at each level (e.g. fine to coarse prototypes).
    true_labels : (N,) int
    true_superlabels : (N,) int, optional
    level_names : sequence of str, optional (default ``"level 0"``, ``"level 1"``, ...)

    Returns
    -------
    list of dicts, one per level, with keys ``level``, ``n_clusters``, ``ari_class``,
    ``nmi_class`` and, with superclasses, ``ari_superclass``, ``nmi_superclass``
    (``pandas.DataFrame(rows)`` or :func:`format_table` display it).
    """
    y = to_numpy(_as_tensor(true_labels, "true_labels"))
    if y.ndim != 1:
        raise ValueError(f"true_labels must be (N,) class indices, got shape {y.shape}")
    ys = None
    if true_superlabels is not None:
        ys = to_numpy(_as_tensor(true_superlabels, "true_superlabels"))
        if ys.shape != y.shape:
            raise ValueError(f"true_superlabels must have shape {y.shape}, got {ys.shape}")
    if level_names is None:
        level_names = [f"level {i}" for i in range(len(level_labels))]
    if len(level_names) != len(level_labels):
        raise ValueError("level_names must have one name per entry of level_labels")
    rows = []
    for name, lab in zip(level_names, level_labels, strict=True):
        c = to_numpy(_as_tensor(lab, "level_labels[i]"))
        if c.shape != y.shape:
            raise ValueError(f"level {name!r} labels have shape {c.shape}, expected {y.shape}")
        row: dict[str, Any] = {
            "level": name,
            "n_clusters": int(np.unique(c).size),
            "ari_class": float(adjusted_rand_score(y, c)),
            "nmi_class": float(normalized_mutual_info_score(y, c)),
        }
        if ys is not None:
            row["ari_superclass"] = float(adjusted_rand_score(ys, c))
            row["nmi_superclass"] = float(normalized_mutual_info_score(ys, c))
        rows.append(row)
    return rows


def format_table(rows: Sequence[Mapping[str, Any]], *, floatfmt: str = ".3f") -> str:
    """Plain-text table of a list of dicts (columns from the first row).

    >>> print(format_table([{"level": "a", "ari": 0.5}, {"level": "b", "ari": 1.0}]))
    level  ari
    a      0.500
    b      1.000
    """
    if not rows:
        return ""
    cols = list(rows[0])
    cells = [
        [
            format(r.get(c, ""), floatfmt) if isinstance(r.get(c), float) else str(r.get(c, ""))
            for c in cols
        ]
        for r in rows
    ]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def precision_recall_curve(
    index, query_points, query_labels, db_labels, ks, *, chunk_size: int = 100
) -> dict[str, np.ndarray]:
    """Precision and recall after the first ``k`` results, over the **whole** ranking.

    Recall needs every relevant item, so each query ranks the full database; queries go
    ``chunk_size`` at a time so that only a ``(chunk_size, N)`` ranking exists at once
    (:func:`hihpq_lib.evaluation.metrics.precision_recall_by_rank` on the full ``(Q, N)`` ranking
    gives the same numbers but needs ``Q * N`` int64s: 4 GB for 10,000 x 50,000).

    Parameters
    ----------
    index : :class:`~hihpq_lib.quantization.index.PQIndex` holding the database codes
    query_points : (Q, M, D') float, e.g. ``model.points(query_feats)``
    query_labels, db_labels : (Q,) / (N,) int or multi-hot
    ks : sequence of int in [1, N] (e.g. log-spaced)
    chunk_size : int

    Returns
    -------
    dict with ``"k"`` (L,) int64, ``"precision"`` (L,) float64, ``"recall"`` (L,) float64.
    """
    n_q, n_db = len(query_points), index.ntotal
    if len(query_labels) != n_q or len(db_labels) != n_db:
        raise ValueError(
            f"{n_q} query points need {n_q} query labels (got {len(query_labels)}) and the "
            f"index's {n_db} items need {n_db} database labels (got {len(db_labels)})"
        )
    rel = relevant_counts(query_labels, db_labels)
    ks = np.asarray(ks, dtype=np.int64)
    p_sum = np.zeros(len(ks))
    r_sum = np.zeros(len(ks))
    n_with = 0
    for s in range(0, n_q, chunk_size):
        e = min(s + chunk_size, n_q)
        _, idx = index.search(query_points[s:e], n_db)
        part = precision_recall_by_rank(query_labels[s:e], db_labels, idx, ks, relevant=rel[s:e])
        p_sum += part["precision"] * (e - s)
        has = int((rel[s:e] > 0).sum())
        if has:
            r_sum += part["recall"] * has
            n_with += has
    recall = r_sum / n_with if n_with else np.full(len(ks), np.nan)
    return {"k": ks, "precision": p_sum / max(n_q, 1), "recall": recall}
