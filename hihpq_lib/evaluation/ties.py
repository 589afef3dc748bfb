r"""Ties in a ranking: AP@K and precision averaged over every order of tied items.

Why
---
A product-quantization index gives every database item with the same codes the same
distance, so its rankings are full of ties (with 32-bit codes on CIFAR-10 most queries
have tied distances among their first 10 results: :func:`tie_fraction`).
:func:`hihpq_lib.quantization.index.topk_smallest` orders a tie by database index, so
the mAP of a PQ search depends on the order in which the database is stored (the README's
evaluation notes give the numbers of the demo run).

Which fix, and why the expectation
----------------------------------
Two ways make the score independent of the storage order: a seeded random tie-break, or
the **expected** score over all orders of the tied items (the tie-aware metrics of
McSherry & Najork, "Computing information retrieval performance measures efficiently in
the presence of tied scores", ECIR 2008). The expectation is used here because it is

* exactly invariant: it depends only on each tie group's size and number of relevant
  items, so any storage order gives the same bits (a random tie-break still depends on
  the storage order through which item the seed puts where, and adds seed noise);
* deterministic without a seed, and it says what a tie means: the index cannot tell
  the tied items apart, so every order of them is equally right;
* exact and cheap: a closed form, no sampling.

The formula, adapted to AP@K
----------------------------
Split the ranking into tie groups; group :math:`g` starts after :math:`s_g` items, has
:math:`n_g` items of which :math:`r_g` are relevant, and :math:`R_{<g}` relevant items
precede it. With the order inside each group uniformly random, a position :math:`i` of
group :math:`g` holds a hit with probability :math:`p_g = r_g / n_g`, two positions of
the same group both hold hits with probability :math:`q_g = \frac{r_g(r_g-1)}{n_g(n_g-1)}`,
and positions in different groups are independent, so

.. math:: \mathbb E\Big[\sum_{i} h_i\,P@i\Big] = \sum_i \frac{1}{i}
          \Big(p_{g(i)}\,\big(1 + R_{<g(i)}\big) + (i - s_{g(i)} - 1)\, q_{g(i)}\Big).

AP@K divides by the number of hits **in the top K**, which is random when the cut-off
falls inside the last group: the top K take :math:`m` of its :math:`n` items (the
:math:`n` tied with the K-th distance in the whole database, :math:`r` of them
relevant), and the number :math:`X` of hits among those :math:`m` follows the
hypergeometric law :math:`\Pr[X = x] = \binom{r}{x}\binom{n-r}{m-x} / \binom{n}{m}`.
Given :math:`X = x` the :math:`m` positions form a group with :math:`x` hits, so

.. math:: \mathbb E[\mathrm{AP@K}] = \sum_x \Pr[X = x]\;
          \frac{A + x\,B + x(x-1)\,C}{R_{<} + x} \quad (0 \text{ when } R_{<} + x = 0),

with :math:`A` the sum above over the groups before the last one, :math:`R_<` their hits,
:math:`B = \frac{1 + R_<}{m} \sum_{i \in \text{last}} \frac1i` and
:math:`C = \frac{1}{m(m-1)} \sum_{i \in \text{last}} \frac{i - s - 1}{i}`. Without ties
it is the plain AP@K; for K = N it is the mean of scikit-learn's
``average_precision_score`` over every order of the tied items (both tested against
brute force over all orders). The expected precision after :math:`k` items is linear:
:math:`\mathbb E[P@k] = \frac1k \sum_{i \le k} \mathbb E[h_i]`, with
:math:`\mathbb E[h_i] = r / n` inside the last group.
"""

from __future__ import annotations

import torch

__all__ = ["expected_hits_at_k", "expected_average_precision_at_k", "tie_fraction"]


def _as_2d(x, name: str) -> torch.Tensor:
    t = x.detach().cpu() if torch.is_tensor(x) else torch.as_tensor(x)
    if t.dim() != 2:
        raise ValueError(f"{name} must be a (Q, K) array, got shape {tuple(t.shape)}")
    return t


def _check_sorted(values: torch.Tensor, name: str) -> None:
    if values.shape[1] > 1 and bool((values[:, 1:] < values[:, :-1]).any()):
        raise ValueError(
            f"{name} must be ascending along each row (distances as PQIndex.search returns "
            "them); negate similarities first"
        )
    if values.is_floating_point() and bool(torch.isnan(values).any()):
        raise ValueError(f"{name} contains NaN; check the inputs that produced the distances")


def _groups(values, hits, n_tied, relevant_tied):
    """Per-position tie-group statistics of ``(Q, K)`` ranked results (see module doc)."""
    v = _as_2d(values, "sorted_distances")
    h = _as_2d(hits, "hits")
    if h.shape != v.shape:
        raise ValueError(f"hits {tuple(h.shape)} must have the shape of distances {v.shape}")
    _check_sorted(v, "sorted_distances")
    h = (h != 0).double()
    n_q, k = v.shape
    n_tied = torch.as_tensor(n_tied).reshape(-1).double()
    r_tied = torch.as_tensor(relevant_tied).reshape(-1).double()
    if n_tied.shape != (n_q,) or r_tied.shape != (n_q,):
        raise ValueError(f"n_tied and relevant_tied must have shape (Q,) = ({n_q},)")
    new = torch.ones((n_q, k), dtype=torch.bool)
    new[:, 1:] = v[:, 1:] != v[:, :-1]
    gid = new.long().cumsum(dim=1) - 1  # (Q, K) tie group of each position
    size = torch.zeros((n_q, k), dtype=torch.float64).scatter_add_(1, gid, torch.ones_like(h))
    rel = torch.zeros((n_q, k), dtype=torch.float64).scatter_add_(1, gid, h)
    start = size.cumsum(dim=1) - size  # items before each group
    rel_before = rel.cumsum(dim=1) - rel  # hits before each group
    last = v == v[:, -1:]  # positions of the group that holds rank K
    m = last.sum(dim=1).double()
    m_hits = (h * last).sum(dim=1)
    bad = (n_tied < m) | (r_tied < m_hits) | (n_tied - r_tied < m - m_hits)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"query {row}: n_tied={int(n_tied[row])} items tied with the K-th distance, "
            f"{int(r_tied[row])} relevant, cannot hold the {int(m[row])} tied results with "
            f"{int(m_hits[row])} hits in the top K; count the ties over the whole database"
        )
    g = {
        "n": size.gather(1, gid),
        "r": rel.gather(1, gid),
        "s": start.gather(1, gid),
        "R": rel_before.gather(1, gid),
    }
    return v, h, last, m, n_tied, r_tied, g


def expected_hits_at_k(sorted_distances, hits, n_tied, relevant_tied) -> torch.Tensor:
    r"""Probability that rank ``i`` holds a hit when tied items come in a random order.

    Parameters
    ----------
    sorted_distances : (Q, K) float, ascending per row (e.g. ``PQIndex.search``'s first output)
    hits : (Q, K) bool/0-1, relevance of the item at each rank (any order within a tie)
    n_tied : (Q,) int, database items whose distance equals the K-th one (in the whole
        database, not only the top K)
    relevant_tied : (Q,) int, how many of those are relevant

    Returns
    -------
    (Q, K) float64 tensor: ``r_g / n_g`` at each rank of tie group ``g`` (``relevant_tied /
    n_tied`` in the group of rank K). ``cumsum(dim=1) / k`` is the expected precision@k.

    Examples
    --------
    >>> expected_hits_at_k([[0.0, 1.0, 1.0]], [[1, 1, 0]], [3], [1])
    tensor([[1.0000, 0.3333, 0.3333]], dtype=torch.float64)
    """
    _, _, last, _, n_tied, r_tied, g = _groups(sorted_distances, hits, n_tied, relevant_tied)
    p_last = (r_tied / n_tied.clamp_min(1.0)).unsqueeze(1).expand_as(last)
    return torch.where(last, p_last, g["r"] / g["n"])


def expected_average_precision_at_k(sorted_distances, hits, n_tied, relevant_tied) -> torch.Tensor:
    r"""AP@K of each query averaged over every order of its tied items (module formula).

    Parameters
    ----------
    sorted_distances, hits, n_tied, relevant_tied : see :func:`expected_hits_at_k`

    Returns
    -------
    (Q,) float64 tensor; equal to
    :func:`~hihpq_lib.evaluation.metrics.average_precision_at_k` of ``hits`` when no two
    distances tie (and none ties with the K-th from beyond the top K).

    Examples
    --------
    One relevant and one irrelevant item tied at rank 1: AP is 1 or 1/2, on average 3/4.

    >>> expected_average_precision_at_k([[0.5, 0.5]], [[0, 1]], [2], [1])
    tensor([0.7500], dtype=torch.float64)

    The same pair, but only the top 1 is kept: AP@1 is 1 or 0 (no hit), on average 1/2.

    >>> expected_average_precision_at_k([[0.5]], [[0]], [2], [1])
    tensor([0.5000], dtype=torch.float64)
    """
    v, h, last, m, n_tied, r_tied, g = _groups(sorted_distances, hits, n_tied, relevant_tied)
    n_q, k = v.shape
    if n_q == 0 or k == 0:
        return torch.zeros(n_q, dtype=torch.float64)
    pos = torch.arange(1, k + 1, dtype=torch.float64).expand(n_q, k)
    n, r, s, big_r = g["n"], g["r"], g["s"], g["R"]
    p = r / n
    q = r * (r - 1) / (n * (n - 1)).clamp_min(1.0)
    a = torch.where(last, 0.0, (p * (1 + big_r) + (pos - s - 1) * q) / pos).sum(dim=1)
    r_before = (h * ~last).sum(dim=1)
    s_last = k - m
    b = (1 + r_before) * torch.where(last, 1 / pos, 0.0).sum(dim=1) / m
    c_num = torch.where(last, (pos - s_last.unsqueeze(1) - 1) / pos, 0.0).sum(dim=1)
    c = c_num / (m * (m - 1)).clamp_min(1.0)
    # X ~ hypergeometric(population n_tied, r_tied successes, m draws), x = 0..max m
    x = torch.arange(int(m.max()) + 1, dtype=torch.float64).expand(n_q, -1)
    nt, rt, mm = n_tied.unsqueeze(1), r_tied.unsqueeze(1), m.unsqueeze(1)
    ok = (x <= rt) & (x <= mm) & (mm - x <= nt - rt)
    log_pmf = _log_comb(rt, x) + _log_comb(nt - rt, mm - x)
    log_pmf = torch.where(ok, log_pmf, -torch.inf)
    pmf = torch.exp(log_pmf - log_pmf.amax(dim=1, keepdim=True))
    pmf = pmf / pmf.sum(dim=1, keepdim=True)
    num = a.unsqueeze(1) + x * b.unsqueeze(1) + x * (x - 1) * c.unsqueeze(1)
    den = (r_before.unsqueeze(1) + x).clamp_min(1.0)  # num is 0 where no hit at all
    return (pmf * num / den).sum(dim=1)


def _log_comb(n: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """log C(n, k) for float64 tensors, NaN-free where ``0 <= k <= n`` (others masked)."""
    n, k = torch.broadcast_tensors(n, k)
    k = k.clamp(min=0.0)
    n = torch.maximum(n, k)
    return torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)


def tie_fraction(distances, k: int) -> float:
    """Share of queries with at least two equal distances among their first ``k`` results.

    Parameters
    ----------
    distances : (Q, K) float, ascending per row (``PQIndex.search``'s first output), K >= k
    k : int, ``1 <= k <= K``

    Returns
    -------
    float in [0, 1] (NaN without queries). Ties of the k-th result with results beyond
    rank k are not counted.

    Examples
    --------
    >>> tie_fraction([[0.1, 0.2, 0.2], [0.1, 0.2, 0.3]], 3)
    0.5
    >>> tie_fraction([[0.1, 0.2, 0.2], [0.1, 0.2, 0.3]], 2)
    0.0
    """
    d = _as_2d(distances, "distances")
    if not (isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= d.shape[1]):
        raise ValueError(f"k must be an int with 1 <= k <= K = {d.shape[1]}, got {k!r}")
    d = d[:, :k]
    _check_sorted(d, "distances")
    if d.shape[0] == 0:
        return float("nan")
    return float((d[:, 1:] == d[:, :-1]).any(dim=1).double().mean())
