"""The compiled ADC search (numba): the fast path of :meth:`PQIndex.search` on CPU.

It computes exactly what the reference path of :class:`~hihpq_lib.quantization.index.PQIndex` computes
(per-query ``M x K`` tables, a lookup-sum over the codes, the ``topk`` smallest sums with
ties broken by the lower item index), fused into one pass over the codes per query, the
way faiss ``IndexPQ`` scans:

1. ``dist[n] = sum_m table[m, codes[n, m]]`` (``m = 0, 1, ...`` in order: the same
   float32 additions as the reference path, so the same sums bit for bit);
2. a **running threshold**: an item is kept only if its sum is below the ``topk``-th
   smallest sum seen so far. Kept items go to a buffer of ``max(4 topk, topk + 256)`` sort
   keys; when it fills, a partition keeps its ``topk`` smallest and the ``topk``-th becomes
   the new threshold.
   A later item that *equals* the threshold ranks after every kept item (its index is
   larger), so the test is a strict ``<``. On random codes only about
   ``topk (1 + ln(N / topk))`` items are ever kept, so the scan is nearly all lookups;
3. at the end, one sort of the buffer's keys. A key is the float32 sum mapped to an
   order-preserving unsigned integer (high word) and the item index (low word), so one
   integer sort orders by ``(distance, item)``.

``M`` is a compile-time constant (one compiled scan per ``M``): LLVM unrolls the ``M``
lookups of an item. Queries run in parallel (``prange``) on :func:`torch.get_num_threads`
threads. Each ``M`` compiles once (about a second) and is cached on disk: next to this
file when the folder is writable, else in numba's user cache folder, else under
``cache_dir()/numba`` (``HIHPQ_CACHE_DIR``), else not at all (a read-only install with no
writable home: each process compiles again); a one-line note on stderr says which
fallback was taken.

:func:`lorentz_tables` builds the ADC tables for Lorentz codebooks: one loop per
(query, subspace, codeword) pair instead of several ``(B, M, K, D')`` torch temporaries.
It evaluates the formula of :func:`hihpq_lib.geometry.lorentz.sqdist` (and of
:func:`hihpq_lib.geometry.lorentz.dist` on top of it) in float64 and rounds once to float32; the
two numerical constants of that formula, the switch between the inner-product and the
difference form (:data:`hihpq_lib.geometry.lorentz.SQDIST_SWITCH`) and the float32 floor of the
geodesic distance (:data:`hihpq_lib.geometry.lorentz.DIST_FLOOR_FLOAT32`), are read from
:mod:`hihpq_lib.geometry.lorentz` at every call and passed in, so they have one source.

This module needs numba; :mod:`hihpq_lib.quantization.index` checks :data:`AVAILABLE` (importing it
never fails) and falls back to its reference path without numba.

Measured by ``python -m benchmarks.adc_throughput`` (see ``benchmarks/README.md``).
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import torch

from hihpq_lib.geometry import lorentz

try:
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - exercised by a subprocess test
    numba = None

#: Whether numba is importable (the compiled search exists).
AVAILABLE = numba is not None

__all__ = ["AVAILABLE", "adc_topk", "lorentz_tables"]

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
    Without numba the function stays plain Python (never called: see :data:`AVAILABLE`).
    """

    def decorate(fn):
        if not AVAILABLE:
            return fn
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


def _require_numba() -> None:
    if not AVAILABLE:
        raise ImportError(
            'the compiled search needs numba (pip install "hihpq[fast]"); PQIndex.search falls '
            "back "
            "to its reference path without it"
        )


_HIGH_BIT = np.uint32(0x80000000)
_SHIFT = np.uint64(32)
_LOW_WORD = np.uint64(0xFFFFFFFF)
#: The candidate buffer holds ``max(CAP_FACTOR * topk, topk + 256)`` sort keys.
CAP_FACTOR = 4
#: Items per query at most (the item index is the low 32 bits of a sort key).
MAX_ITEMS = 2**32


@_cached_njit(nogil=True, inline="always")
def _key(bits, j):
    """Sort key of item ``j`` whose float32 sum has the bits ``bits``: orders by ``(s, j)``."""
    b = np.uint32(bits)
    if b == _HIGH_BIT:  # -0.0 == 0.0: the same key, so the item index breaks the tie
        b = np.uint32(0)
    # IEEE-754 -> unsigned order: flip all bits of negatives, set the sign of positives
    b = ~b if b & _HIGH_BIT else b | _HIGH_BIT
    return (np.uint64(b) << _SHIFT) | np.uint64(j)


@_cached_njit(nogil=True, inline="always")
def _item(t, codes, j, m):
    s = t[0, codes[j, 0]]
    for mm in range(1, m):
        s += t[mm, codes[j, mm]]
    return s


_SCANS: dict = {}


def _scan_kernel(m: int):
    """The parallel scan for ``M = m`` subspaces, compiled once per ``m``.

    ``m`` is a closure constant, so numba compiles it as a literal and LLVM unrolls the
    ``m`` lookups of an item. (:func:`numba.literally` would do the same, but its
    dispatch kept a reference to every array argument: the memory of long runs grew
    by the size of each call's tables.)
    """
    kernel = _SCANS.get(m)
    if kernel is not None:
        return kernel

    @_cached_njit(nogil=True)
    def query(t, codes, topk, out_v, out_i):
        """Top-``topk`` of one query: scan with a running threshold, then sort the buffer."""
        n = codes.shape[0]
        cap = min(n, max(CAP_FACTOR * topk, topk + 256))
        keys = np.empty(cap, np.uint64)
        cnt = 0
        thr = np.float32(np.inf)
        full = False  # thr is the topk-th smallest sum so far (until then every item is kept)
        sbuf = np.empty(1, np.float32)  # the float32 sum and its bits (a view of the same bytes)
        bits = sbuf.view(np.uint32)
        for j in range(n):
            s = _item(t, codes, j, m)
            if s < thr or not full:
                sbuf[0] = s
                keys[cnt] = _key(bits[0], j)
                cnt += 1
                if cnt == cap:  # keep the topk smallest keys; the topk-th sum: new threshold
                    keys[:topk] = np.partition(keys, topk - 1)[:topk]
                    cnt = topk
                    full = True
                    thr = _item(t, codes, np.int64(keys[topk - 1] & _LOW_WORD), m)
        if cnt > topk:
            keys[:topk] = np.partition(keys[:cnt], topk - 1)[:topk]
        top = np.sort(keys[:topk])
        for r in range(topk):
            j = np.int64(top[r] & _LOW_WORD)
            out_i[r] = j
            out_v[r] = _item(t, codes, j, m)

    @_cached_njit(nogil=True, parallel=True)
    def kernel(tables, codes, topk, out_v, out_i):
        for q in prange(tables.shape[0]):
            query(tables[q], codes, topk, out_v[q], out_i[q])

    _SCANS[m] = kernel
    return kernel


def adc_topk(
    tables: np.ndarray, codes: np.ndarray, topk: int, *, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``topk`` nearest database items of each query from its ADC tables.

    Parameters
    ----------
    tables : (B, M, K) float32 ndarray
        Per-query distance tables; finite, and small enough that a sum of ``M`` entries
        stays finite (:meth:`PQIndex.search` checks).
    codes : (N, M) uint8 ndarray
        Database codes, ``N < 2**32``.
    topk : int
        ``1 <= topk <= N``.
    threads : int, optional
        Threads for the query loop; default :func:`torch.get_num_threads` (capped at
        numba's pool size).

    Returns
    -------
    values : (B, topk) float32 ndarray, ascending per row
    indices : (B, topk) int64 ndarray (ties: lower index first)

    Examples
    --------
    >>> tables = np.array([[[0.0, 2.0], [1.0, 0.5]]], dtype=np.float32)  # B=1, M=2, K=2
    >>> codes = np.array([[0, 0], [1, 1], [0, 1]], dtype=np.uint8)  # N=3
    >>> v, i = adc_topk(tables, codes, 2)
    >>> v.tolist(), i.tolist()
    ([[0.5, 1.0]], [[2, 0]])
    """
    _require_numba()
    if not isinstance(tables, np.ndarray) or tables.dtype != np.float32 or tables.ndim != 3:
        raise ValueError(
            f"tables must be a (B, M, K) float32 array, got "
            f"{getattr(tables, 'dtype', type(tables))} {getattr(tables, 'shape', '')}"
        )
    if (
        not isinstance(codes, np.ndarray)
        or codes.dtype != np.uint8
        or codes.ndim != 2
        or codes.shape[1] != tables.shape[1]
    ):
        raise ValueError(
            f"codes must be a (N, M={tables.shape[1]}) uint8 array, got "
            f"{getattr(codes, 'dtype', type(codes))} {getattr(codes, 'shape', '')}"
        )
    if codes.shape[0] >= MAX_ITEMS:
        raise ValueError(f"at most 2**32 - 1 database items per search, got {codes.shape[0]}")
    if not 1 <= topk <= codes.shape[0]:
        raise ValueError(f"topk must satisfy 1 <= topk <= N = {codes.shape[0]}, got {topk}")
    _set_threads(threads)
    out_v = np.empty((tables.shape[0], int(topk)), np.float32)
    out_i = np.empty((tables.shape[0], int(topk)), np.int64)
    _scan_kernel(int(tables.shape[1]))(
        np.ascontiguousarray(tables), np.ascontiguousarray(codes), int(topk), out_v, out_i
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
def _lorentz_tables(points, cw_t, k, geodesic, switch, floor, out):
    """``cw_t``: the codewords as (M, D', K) float64, so the loops over codewords vectorise."""
    b, m, d = points.shape
    kw = cw_t.shape[2]
    for q in prange(b):
        xy = np.empty(kw)  # <x, y>_L for every codeword of the subspace
        diff = np.empty(kw)  # <x - y, x - y>_L
        for mm in range(m):
            kk = np.float64(k[mm])
            half = 2.0 * math.sqrt(kk)
            p0 = np.float64(points[q, mm, 0])
            for j in range(kw):
                xy[j] = -p0 * cw_t[mm, 0, j]
                dd = p0 - cw_t[mm, 0, j]
                diff[j] = -dd * dd
            for i in range(1, d):
                pi = np.float64(points[q, mm, i])
                for j in range(kw):
                    yi = cw_t[mm, i, j]
                    xy[j] += pi * yi
                    diff[j] += (pi - yi) * (pi - yi)
            for j in range(kw):
                # lorentz.sqdist: -2k - 2<x, y>_L, or <x-y, x-y>_L where that cancels
                sq = -2.0 * kk - 2.0 * xy[j]
                if not sq > switch * abs(xy[j]):
                    sq = diff[j]
                sq = max(sq, 0.0)
                if geodesic:  # lorentz.dist: 2 sqrt(k) asinh(sqrt(max(sq, floor)) / (2 sqrt(k)))
                    sq = half * math.asinh(math.sqrt(max(sq, floor)) / half)
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
    _require_numba()
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
        np.ascontiguousarray(codewords.transpose(0, 2, 1), dtype=np.float64),
        np.ascontiguousarray(k, dtype=np.float32),
        bool(geodesic),
        float(lorentz.SQDIST_SWITCH),
        float(lorentz.DIST_FLOOR_FLOAT32),
        out,
    )
    return out
