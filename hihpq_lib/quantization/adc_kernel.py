"""Compiled ADC scan with top-k selection (numba): what :meth:`PQIndex.search` runs on CPU.

The torch path of :class:`~hihpq_lib.quantization.index.PQIndex` builds a ``(N, B)`` distance buffer
with one :func:`torch.nn.functional.embedding_bag` call and then selects the top-k of each
column. Its cost is memory traffic: the buffer is written once and read twice. This module
fuses the two steps per query, the way faiss ``IndexPQ`` does, but without a heap:

1. A threshold from a strided sample of the database: the distances of every ``s``-th
   item (``s = clip(N // 4k, 1, 32)``) and their ``ceil(1.3 k / s) + 8``-th smallest
   value, so that about ``1.3 k`` items fall at or below it.
2. One pass over the codes: ``dist[n] = sum_m table[m, codes[n, m]]`` (``m = 0, 1, ...``
   in order, the same float32 additions as the torch path), keeping only the items at or
   below the threshold, in ascending item order.
3. The candidates sorted by ``(distance, item)`` with one integer sort: the float32 bits
   mapped to an order-preserving unsigned integer in the high word, the item in the low.

If fewer than ``k`` items pass the threshold (an unlucky sample) or more than the
candidate buffer holds (many ties), the query is redone exactly: every distance, the
``k``-th smallest by :func:`numpy.partition`, every item at or below it. The result is
therefore always exact and equal to :func:`~hihpq_lib.quantization.index.topk_smallest` of the summed
tables: ascending distances, ties broken by the lower item index.

``M`` is a compile-time constant (one compiled scan per ``M``): LLVM unrolls the ``M``
lookups of an item, which makes the scan about twice as fast as a loop over ``M``. Each
``M`` compiles once (about a second) and is cached on disk: next to this file when the
folder is writable, else in numba's user cache folder, else under ``cache_dir()/numba``
(``HIHPQ_CACHE_DIR``), else not at all (a read-only install with no writable home: each
process compiles again); a one-line note on stderr says which fallback was taken. Queries run in parallel (``prange``) on
:func:`torch.get_num_threads` threads.

:func:`lorentz_tables` builds the ADC tables themselves for Lorentz codebooks: one loop
per (query, subspace, codeword) pair instead of several ``(B, M, K, D')`` torch
temporaries, the same formula as :func:`hihpq_lib.geometry.lorentz.sqdist` and
:func:`hihpq_lib.geometry.lorentz.dist` accumulated in float64 and rounded once to float32.

Measured by ``python -m benchmarks.adc_throughput`` (see ``benchmarks/README.md``).
"""

from __future__ import annotations

import math
import os
import sys

import numba
import numpy as np
import torch
from numba import njit, prange

__all__ = ["adc_topk", "lorentz_tables"]

_CACHE_NOTED: list[str] = []


def _note(text: str) -> None:
    if text not in _CACHE_NOTED:
        _CACHE_NOTED.append(text)
        print(f"hihpq: note: {text}", file=sys.stderr)


def _cached_njit(**options):
    """``numba.njit(cache=True, **options)`` that survives a read-only install.

    numba looks for a writable cache folder beside the source file, then in the user's
    cache folder, and raises ``RuntimeError: cannot cache function ...: no locator
    available`` when both are read-only: every command crashed on a shared install.
    Here the next place is ``cache_dir()/numba`` (``HIHPQ_CACHE_DIR``), then no cache.
    """

    def decorate(fn):
        try:
            return njit(cache=True, **options)(fn)
        except RuntimeError as exc:
            if "no locator available" not in str(exc):
                raise
        if not numba.config.CACHE_DIR:
            from hihpq_lib.utils.runtime import cache_dir

            folder = cache_dir() / "numba"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                if os.access(folder, os.W_OK):
                    numba.config.CACHE_DIR = str(folder)
                    _note(
                        f"the package folder is read-only: compiled search kernels are cached "
                        f"in {folder} (set NUMBA_CACHE_DIR to choose another folder)"
                    )
                    return njit(cache=True, **options)(fn)
            except (OSError, RuntimeError):
                numba.config.CACHE_DIR = ""
        _note(
            "no writable folder for numba's cache (package, home and HIHPQ_CACHE_DIR are "
            "read-only): the search kernels compile in each process; set NUMBA_CACHE_DIR "
            "to a writable folder to keep them"
        )
        return njit(cache=False, **options)(fn)

    return decorate


_HIGH_BIT = np.uint64(0x80000000)
_LOW_WORD = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)


@_cached_njit(nogil=True)
def _sort_candidates(cv, ci, cnt, k, out_v, out_i):
    """Write the ``k`` smallest of ``cv[:cnt]`` (ties: lower ``ci``) to ``out_*``, ascending."""
    bits = cv[:cnt].view(np.uint32)
    keys = np.empty(cnt, np.uint64)
    for r in range(cnt):
        b = np.uint64(bits[r])
        if b == _HIGH_BIT:  # -0.0 == 0.0: the same key, so the item index breaks the tie
            b = np.uint64(0)
        # IEEE-754 -> unsigned order: flip all bits of negatives, set the sign of positives
        b = (~b & _LOW_WORD) if (b & _HIGH_BIT) else (b | _HIGH_BIT)
        keys[r] = (b << _SHIFT) | np.uint64(r)  # r ascends with the item index
    keys = np.sort(keys)
    for r in range(k):
        pos = np.int64(keys[r] & _LOW_WORD)
        out_v[r] = cv[pos]
        out_i[r] = ci[pos]


@_cached_njit(nogil=True, inline="always")
def _item(t, codes, j, m):
    s = t[0, codes[j, 0]]
    for mm in range(1, m):
        s += t[mm, codes[j, mm]]
    return s


@_cached_njit(nogil=True)
def _query_exact(t, codes, k, m, out_v, out_i):
    """Every distance, the exact k-th value, every item at or below it (fallback)."""
    n = codes.shape[0]
    dist = np.empty(n, t.dtype)
    for j in range(n):
        dist[j] = _item(t, codes, j, m)
    kth = np.partition(dist, k - 1)[k - 1]  # a partitioned copy: dist stays in order
    cnt = 0
    for j in range(n):
        if dist[j] <= kth:
            cnt += 1
    cv = np.empty(cnt, t.dtype)
    ci = np.empty(cnt, np.int64)
    c = 0
    for j in range(n):
        if dist[j] <= kth:
            cv[c] = dist[j]
            ci[c] = j
            c += 1
    _sort_candidates(cv, ci, cnt, k, out_v, out_i)


@_cached_njit(nogil=True)
def _query(t, codes, k, m, out_v, out_i):
    n = codes.shape[0]
    step = max(1, min(32, n // (4 * k)))
    ns = (n + step - 1) // step
    ks = min(ns, math.ceil(1.3 * k / step) + 8)
    sample = np.empty(ns, t.dtype)
    for r in range(ns):
        sample[r] = _item(t, codes, r * step, m)
    thr = np.partition(sample, ks - 1)[ks - 1]
    cap = 2 * k + 64
    cv = np.empty(cap, t.dtype)
    ci = np.empty(cap, np.int64)
    cnt = 0
    for j in range(n):
        s = _item(t, codes, j, m)
        if s <= thr:
            if cnt < cap:
                cv[cnt] = s
                ci[cnt] = j
            cnt += 1
    if cnt < k or cnt > cap:
        _query_exact(t, codes, k, m, out_v, out_i)
    else:
        _sort_candidates(cv, ci, cnt, k, out_v, out_i)


_SCANS: dict = {}


def _scan_kernel(m: int):
    """The parallel scan for ``M = m`` subspaces, compiled once per ``m``.

    ``m`` is a closure constant, so numba compiles it as a literal and LLVM unrolls the
    ``m`` lookups of an item. (:func:`numba.literally` would do the same, but its
    dispatch kept a reference to every array argument: the memory of long runs grew
    by the size of each call's tables.)
    """
    kernel = _SCANS.get(m)
    if kernel is None:

        @_cached_njit(nogil=True, parallel=True)
        def kernel(tables, codes, k, out_v, out_i):
            for q in prange(tables.shape[0]):
                _query(tables[q], codes, k, m, out_v[q], out_i[q])

        _SCANS[m] = kernel
    return kernel


def adc_topk(
    tables: np.ndarray, codes: np.ndarray, k: int, *, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest database items of each query from its ADC tables.

    Parameters
    ----------
    tables : (B, M, K) float32 ndarray
        Per-query distance tables; finite (the caller checks).
    codes : (N, M) uint8 ndarray
        Database codes.
    k : int
        ``1 <= k <= N``.
    threads : int, optional
        Threads for the query loop; default :func:`torch.get_num_threads` (capped at
        numba's pool size).

    Returns
    -------
    values : (B, k) float32 ndarray, ascending per row
    indices : (B, k) int64 ndarray (ties: lower index first)

    Examples
    --------
    >>> tables = np.array([[[0.0, 2.0], [1.0, 0.5]]], dtype=np.float32)  # B=1, M=2, K=2
    >>> codes = np.array([[0, 0], [1, 1], [0, 1]], dtype=np.uint8)  # N=3
    >>> v, i = adc_topk(tables, codes, 2)
    >>> v.tolist(), i.tolist()
    ([[0.5, 1.0]], [[2, 0]])
    """
    if tables.dtype != np.float32 or tables.ndim != 3:
        raise ValueError(
            f"tables must be a (B, M, K) float32 array, got {tables.dtype} {tables.shape}"
        )
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != tables.shape[1]:
        raise ValueError(
            f"codes must be a (N, M={tables.shape[1]}) uint8 array, got {codes.dtype} {codes.shape}"
        )
    if not 1 <= k <= codes.shape[0]:
        raise ValueError(f"k must satisfy 1 <= k <= N = {codes.shape[0]}, got {k}")
    _set_threads(threads)
    out_v = np.empty((tables.shape[0], int(k)), np.float32)
    out_i = np.empty((tables.shape[0], int(k)), np.int64)
    _scan_kernel(int(tables.shape[1]))(
        np.ascontiguousarray(tables), np.ascontiguousarray(codes), int(k), out_v, out_i
    )
    return out_v, out_i


def _set_threads(threads: int | None) -> None:
    torch_threads = torch.get_num_threads()
    t = torch_threads if threads is None else threads
    numba.set_num_threads(max(1, min(int(t), numba.config.NUMBA_NUM_THREADS)))
    # numba's OpenMP pool, started by its first parallel call, resets the process-wide
    # OpenMP thread count that torch shares: put torch's back (see runtime.use_threads)
    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)


@_cached_njit(nogil=True, parallel=True)
def _lorentz_tables(points, codewords, k, geodesic, out):
    b, m, d = points.shape
    kw = codewords.shape[1]
    for q in prange(b):
        for mm in range(m):
            kk = np.float64(k[mm])
            half = 2.0 * math.sqrt(kk)
            for j in range(kw):
                xy = -np.float64(points[q, mm, 0]) * np.float64(codewords[mm, j, 0])
                dd = np.float64(points[q, mm, 0]) - np.float64(codewords[mm, j, 0])
                diff = -dd * dd
                for i in range(1, d):
                    xi = np.float64(points[q, mm, i])
                    yi = np.float64(codewords[mm, j, i])
                    xy += xi * yi
                    diff += (xi - yi) * (xi - yi)
                sq = -2.0 * kk - 2.0 * xy
                if not sq > 2e-3 * abs(xy):  # nearly identical points: the difference form
                    sq = diff
                sq = max(sq, 0.0)
                if geodesic:
                    sq = half * math.asinh(math.sqrt(max(sq, 1e-12)) / half)
                out[q, mm, j] = sq


def lorentz_tables(
    points: np.ndarray, codewords: np.ndarray, k: np.ndarray, *, geodesic: bool = True
) -> np.ndarray:
    """ADC tables on products of hyperboloids: distances of sub-points to every codeword.

    Parameters
    ----------
    points : (B, M, D') float32 ndarray
        Query sub-points on :math:`\\mathbb H^{D'-1}_{k_m}` (time coordinate first).
    codewords : (M, K, D') float32 ndarray
    k : (M,) float32 ndarray
        Curvature parameter per subspace (geoopt's ``k``).
    geodesic : bool
        Geodesic distance (:func:`hihpq_lib.geometry.lorentz.dist`); ``False``: squared
        Lorentzian distance (:func:`hihpq_lib.geometry.lorentz.sqdist`).

    Returns
    -------
    (B, M, K) float32 ndarray

    Examples
    --------
    >>> origin = np.array([[[1.0, 0.0]]], dtype=np.float32)  # B=1, M=1, on H^1 with k=1
    >>> cw = np.array([[[1.0, 0.0], [np.cosh(2.0), np.sinh(2.0)]]], dtype=np.float32)
    >>> lorentz_tables(origin, cw, np.ones(1, np.float32)).round(4).tolist()
    [[[0.0, 2.0]]]
    """
    if points.dtype != np.float32 or codewords.dtype != np.float32:
        raise ValueError(
            f"points and codewords must be float32, got {points.dtype}, {codewords.dtype}"
        )
    m, _, d = codewords.shape if codewords.ndim == 3 else (None, None, None)
    if points.ndim != 3 or m is None or points.shape[1:] != (m, d):
        raise ValueError(
            f"points (B, M, D') and codewords (M, K, D') do not match: {points.shape}, "
            f"{codewords.shape}"
        )
    _set_threads(None)
    out = np.empty((points.shape[0], m, codewords.shape[1]), np.float32)
    _lorentz_tables(
        np.ascontiguousarray(points),
        np.ascontiguousarray(codewords),
        np.ascontiguousarray(k, dtype=np.float32),
        bool(geodesic),
        out,
    )
    return out
