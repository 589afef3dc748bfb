r"""The HiHPQ retrieval index: M bytes per image, searched by table lookup.

A product quantizer splits an embedding into ``M`` sub-points, one per subspace, and
replaces each by the index of its nearest codeword among ``K <= 256``. The database is
therefore stored as ``uint8`` codes of shape ``(N, M)``: **M bytes per image**.

Two ways to rank the database for a query:

* **asymmetric distance (ADC)** — the query stays unquantized. For each query build a
  table of ``M x K`` sub-distances from the query's sub-point :math:`q_m` to every
  codeword :math:`e_{m,j}`; the distance to database item ``n`` is a sum of ``M`` table
  lookups:

  .. math:: d(q, n) = \sum_{m=1}^{M} T[m, \mathrm{code}[n, m]], \qquad
            T[m, j] = d_m(q_m, e_{m, j}) ;

* **symmetric distance (SDC, MeCoQ-style)** — the query is quantized too, and the
  sub-distances come from precomputed codeword-to-codeword tables of shape ``(M, K, K)``:
  :math:`d(q, n) = \sum_m S[m, \mathrm{code}(q)_m, \mathrm{code}[n, m]]`.

The per-subspace distance :math:`d_m` depends on the geometry:

=============  =====================  ================================================
geometry       metric                 :math:`d_m(x, y)`
=============  =====================  ================================================
``lorentz``    ``"geodesic"``         :func:`hihpq_lib.geometry.lorentz.pairwise_dist` with
                                      curvature parameter :math:`k_m` (geoopt's ``k``)
``lorentz``    ``"sqlorentz"``        :func:`hihpq_lib.geometry.lorentz.pairwise_sqdist`
``euclidean``  ``"sqeuclidean"``      :math:`\|x - y\|^2` (classic PQ: the sum is the
                                      squared distance of the concatenation)
``euclidean``  ``"euclidean"``        :math:`\|x - y\|`
=============  =====================  ================================================

One name per distance: ``"sqlorentz"`` is the squared Lorentzian distance
:math:`\|x - y\|^2_{\mathcal L} = -2k - 2\langle x, y\rangle_{\mathcal L}`, the quantity
:class:`hihpq_lib.quantization.quantizer.HyperbolicQuantizer` calls ``attention="sqdist"`` (its
codebook-attention score); ``"geodesic"`` is the geodesic distance
:math:`\sqrt k \operatorname{arcosh}(-\langle x, y\rangle_{\mathcal L} / k)` of
:func:`hihpq_lib.geometry.lorentz.dist`, HiHPQ's retrieval distance.

Search: one reference path, one fast path
-----------------------------------------
:meth:`PQIndex.search` has one **reference path**, written to be read (it is what
nanopq does):

1. per query, the ``(M, K)`` distance table (:meth:`PQIndex.subspace_distances`);
2. a lookup-sum over the codes, ``dist[n] = sum_m T[m, codes[n, m]]``
   (:meth:`PQIndex.distances`);
3. the ``topk`` smallest sums, ascending, ties broken by the lower index
   (:func:`topk_smallest`: nanopq's ``argpartition`` + ``argsort``, made deterministic);

and one **fast path**, :func:`hihpq_lib.quantization.adc_kernel.adc_topk` (numba), that fuses 2 and 3
into one pass over the codes per query with a running top-k threshold (like faiss
``IndexPQ``'s heap). The tests check that the two return identical distances and indices
(ties included) for many ``topk``. ``backend="auto"`` takes the fast path for float32
codebooks on the CPU when numba is importable (:data:`hihpq_lib.quantization.adc_kernel.AVAILABLE`),
the reference path otherwise.

:meth:`PQIndex.to_faiss` hands the same codes to a faiss ``IndexPQ`` (inner-product
metric) for users who outgrow one machine: exact for ``"sqlorentz"`` and
``"sqeuclidean"``, candidates re-ranked by our tables for ``"geodesic"`` and
``"euclidean"`` (see :class:`FaissExport`).

Memory
------
Codes cost ``N * M`` bytes; the codebooks cost ``M * K * D' * itemsize`` bytes, where
``D'`` is the stored sub-point size (``n + 1`` on a hyperboloid: the time coordinate is
stored). For a 128-d float32 embedding (``K = 256``; ``D' = 128/M + 1``) the codebooks
take about 0.14 MB, negligible next to the codes:

==============  ======================  ======================
images          M = 4 (32 bits/image)   M = 8 (64 bits/image)
==============  ======================  ======================
1 million       4 MB + 0.14 MB          8 MB + 0.14 MB
100 million     400 MB + 0.14 MB        800 MB + 0.14 MB
==============  ======================  ======================

(The float features themselves would take ``128 * 4 = 512`` bytes per image: 512 MB for
1 million images.) The fast path keeps at most ``max(4 topk, topk + 256)`` candidates per query,
so searching needs no memory beyond the codes. The reference path builds a
``(batch, N)`` distance buffer per query batch and sizes its query batches to keep it
near ``2**25`` elements.

Ranking is deterministic: ties are broken by the lower database index
(:func:`topk_smallest`), so symmetric search, where many items share a distance,
returns the same order every run.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import numbers
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from hihpq_lib.geometry import lorentz

# the compiled scan needs numba (the ``fast`` extra): adc_kernel.AVAILABLE says whether
# it is there; importing adc_kernel never fails
from hihpq_lib.quantization import adc_kernel
from hihpq_lib.utils.arrays import to_numpy
from hihpq_lib.utils.atomic import atomic_write_bytes
from hihpq_lib.utils.optional import require

__all__ = [
    "FORMAT_VERSION",
    "FaissExport",
    "PQIndex",
    "topk_smallest",
]

#: Version of the on-disk format written by :meth:`PQIndex.save`.
FORMAT_VERSION = 1
_FORMAT_NAME = "hihpq-pq-index"
_INDEX_FILE = "index.json"
_TENSORS_FILE = "tensors.pt"
_METRICS = {
    "lorentz": ("geodesic", "sqlorentz"),
    "euclidean": ("sqeuclidean", "euclidean"),
}
#: Target number of elements in one (query batch, database) distance buffer.
_BUFFER_ELEMENTS = 2**25
#: Elements of one (M, b, K, D') chunk in the torch table computation. Float64 Lorentz
#: tables (M = 2 / 4 / 8, K = 256, D' = 17, 2 threads) took 32 / 69 / 153 us per query
#: at this size, 102 / 176 / 271 at 2**22 (the earlier size) and more at 2**18.
_TABLE_ELEMENTS = 2**20
#: Default queries per batch of the reference path: the lookup runs fastest with (M*K, B)
#: tables in cache.
_SEARCH_BATCH = 128
#: Queries per batch of the fast path (no (batch, N) buffer: only tables).
_COMPILED_BATCH = 256
#: Search backends: "auto" = the fast (compiled) path where it applies, else the reference.
_BACKENDS = ("auto", "compiled", "reference")
#: Older names of the backends, still accepted.
_BACKEND_ALIASES = {"kernel": "compiled", "torch": "reference"}
#: Rows at least this long (and ``topk <= N / 4``) use the threshold top-k.
_THRESHOLD_MIN_N = 4096
#: Largest float32 table entry for which a sum of M entries cannot overflow.
_F32_SAFE = 1e37


def topk_smallest(dist: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``topk`` smallest entries of each row, ascending, ties broken by lower column index.

    What ``np.argpartition(dist, topk - 1)[:, :topk]`` followed by an ``argsort`` of those
    ``topk`` does (nanopq's top-k), made deterministic under ties. :func:`torch.topk` alone
    does not specify which of several equal values it keeps or in which order it returns
    them; this wrapper makes the result deterministic: an entry ranks before another if its
    value is smaller, or equal with a smaller column index.

    Parameters
    ----------
    dist : (B, N) float tensor
        Distances (smaller is better). NaN is rejected.
    topk : int
        ``1 <= topk <= N``.

    Returns
    -------
    values : (B, topk) tensor, dtype of ``dist``
    indices : (B, topk) int64 tensor of column indices

    Examples
    --------
    >>> d = torch.tensor([[1.0, 0.0, 1.0, 0.0, 2.0]])
    >>> topk_smallest(d, 3)
    (tensor([[0., 0., 1.]]), tensor([[1, 3, 0]]))
    """
    if not torch.is_tensor(dist) or dist.dim() != 2:
        raise ValueError(
            f"dist must be a 2-d (B, N) tensor, got "
            f"{tuple(dist.shape) if torch.is_tensor(dist) else type(dist).__name__}"
        )
    b, n = dist.shape
    if not (isinstance(topk, numbers.Integral) and 1 <= topk <= n):
        raise ValueError(f"topk must be an int with 1 <= topk <= N = {n}, got {topk!r}")
    topk = int(topk)
    if b == 0:
        return dist[:, :topk], torch.zeros((0, topk), dtype=torch.long, device=dist.device)
    _reject_nan(dist)
    if n >= _THRESHOLD_MIN_N and 4 * topk <= n and dist.is_floating_point():
        return _topk_by_threshold(dist, topk)
    return _topk_exact(dist, topk)


def _topk_exact(dist: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`topk_smallest` by one :func:`torch.topk` over whole rows (no input checks)."""
    b, n = dist.shape
    # one extra neighbour tells whether the topk-th value is tied with a left-out entry
    wide = min(topk + 1, n)
    vals, idx = torch.topk(dist, wide, dim=1, largest=False, sorted=True)
    boundary = (
        vals[:, topk - 1] == vals[:, wide - 1] if wide > topk else vals.new_zeros(b, dtype=bool)
    )
    vals, idx = vals[:, :topk], idx[:, :topk]
    kth = vals[:, -1:]
    if boundary.any():
        # rows where a tie at the topk-th value crosses the cut: keep the lowest indices
        rows = boundary.nonzero()[:, 0]
        sub = dist[rows]
        below, at = sub < kth[rows], sub == kth[rows]
        need = topk - below.sum(dim=1, keepdim=True)
        keep = below | (at & (torch.cumsum(at, dim=1) <= need))
        sub_idx = keep.nonzero()[:, 1].reshape(len(rows), topk)  # ascending column index
        idx = idx.index_put((rows,), sub_idx)
        vals = vals.index_put((rows,), torch.gather(sub, 1, sub_idx))
    # order by (value, index): sort by index, then stable sort by value
    by_idx = torch.sort(idx, dim=1).indices
    vals, idx = torch.gather(vals, 1, by_idx), torch.gather(idx, 1, by_idx)
    order = torch.sort(vals, dim=1, stable=True).indices
    return torch.gather(vals, 1, order), torch.gather(idx, 1, order)


def _reject_nan(dist: torch.Tensor) -> None:
    # a max reduction propagates NaN and costs a fraction of isnan(dist).any()
    if dist.is_floating_point() and torch.isnan(dist.amax()):
        raise ValueError("dist contains NaN; check the inputs that produced the distances")


def _topk_by_threshold(dist: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`topk_smallest` for ``topk`` much smaller than ``N``, without a full-row top-k.

    1. A threshold per row from a strided sample of its columns: the sample's
       ``ceil(1.3 topk / s) + 8``-th smallest value, so that about ``1.3 topk`` entries of
       the row fall at or below it.
    2. The candidates (every entry ``<=`` the threshold) are gathered row by row in
       ascending column order and padded with ``+inf``.
    3. A stable sort of the candidates by value gives the ``(value, index)`` order.

    The result is exact whenever a row has at least ``topk`` candidates: the
    ``topk``-th smallest value is then at or below the threshold, so every entry tied with it is a
    candidate. Rows with fewer candidates (an unlucky sample) go through
    :func:`_topk_exact`.
    """
    dist = dist.contiguous()
    b, n = dist.shape
    step = max(1, min(32, n // (4 * topk)))
    rank = min(-(-n // step), math.ceil(1.3 * topk / step) + 8)
    sample = dist[:, ::step]
    thr = torch.topk(sample, rank, dim=1, largest=False, sorted=False).values.amax(1)
    rows, cols = (dist <= thr[:, None]).nonzero(as_tuple=True)  # columns ascend per row
    cand = dist.view(-1).index_select(0, rows * n + cols)
    counts = torch.bincount(rows, minlength=b)
    width = int(counts.max())
    pos = torch.arange(rows.numel(), device=dist.device) - (torch.cumsum(counts, 0) - counts)[rows]
    vals = dist.new_full((b, width), math.inf).index_put_((rows, pos), cand)
    idx = torch.full((b, width), n, dtype=torch.long, device=dist.device)
    idx.index_put_((rows, pos), cols)
    # pads (+inf, index n) sit after each row's candidates, so a stable sort keeps them last
    vals, order = torch.sort(vals, dim=1, stable=True)
    vals, idx = vals[:, :topk], torch.gather(idx, 1, order[:, :topk])
    short = (counts < topk).nonzero()[:, 0]
    if short.numel():
        v, i = _topk_exact(dist[short], topk)
        vals, idx = vals.index_put((short,), v), idx.index_put((short,), i)
    return vals, idx


class PQIndex:
    r"""Product-quantization index over hyperbolic (Lorentz) or Euclidean subspaces.

    Parameters
    ----------
    codewords : (M, K, D') float tensor
        Codebooks, one per subspace. For ``geometry="lorentz"`` each codeword is a point
        of :math:`\mathbb H^{D'-1}_{k_m}` (time coordinate first). ``K <= 256`` so codes
        fit in ``uint8``. The index computes in this dtype.
    k : (M,) float tensor, float, or None
        Lorentz curvature parameter per subspace (geoopt's ``k``: sectional curvature
        ``-1/k``; HiHPQ's ``c = 1/k``). ``None`` means 1. Must be ``None`` for Euclidean.
    geometry : {"lorentz", "euclidean"}
    metric : str, optional
        Per-subspace distance, see the module table. Default ``"geodesic"`` (Lorentz) or
        ``"sqeuclidean"`` (Euclidean). ``"sqlorentz"`` is the quantizer's ``"sqdist"``.
    metadata : dict, optional
        JSON-serialisable information saved with the index (e.g. the training config).

    Attributes
    ----------
    codes : (N, M) uint8 tensor
        Database codes, in the order they were added.

    Examples
    --------
    >>> cw = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0))  # M=2, K=4
    >>> index = PQIndex(cw, geometry="euclidean")
    >>> index.add(torch.tensor([[0, 1], [3, 2]], dtype=torch.uint8))  # 2 items, 2 bytes each
    >>> query = index.decode(torch.tensor([[3, 2]]))  # (1, M, D'): item 1's codewords
    >>> dist, idx = index.search(query, 2)
    >>> idx.tolist(), dist[0, 0].item()
    ([[1, 0]], 0.0)
    """

    def __init__(
        self,
        codewords: torch.Tensor,
        k: torch.Tensor | float | None = None,
        *,
        geometry: str = "lorentz",
        metric: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if geometry not in _METRICS:
            raise ValueError(f"geometry must be one of {sorted(_METRICS)}, got {geometry!r}")
        metric = _METRICS[geometry][0] if metric is None else metric
        if metric not in _METRICS[geometry]:
            raise ValueError(
                f"metric {metric!r} is not available for geometry {geometry!r}; "
                f"choose one of {_METRICS[geometry]}"
            )
        if not torch.is_tensor(codewords) or codewords.dim() != 3:
            raise ValueError(
                "codewords must be an (M, K, D') tensor, got "
                f"{tuple(codewords.shape) if torch.is_tensor(codewords) else type(codewords)}"
            )
        if not codewords.is_floating_point():
            raise TypeError(f"codewords must be a float tensor, got dtype {codewords.dtype}")
        m, kk, d = codewords.shape
        if not (1 <= kk <= 256):
            raise ValueError(
                f"K = {kk} codewords per subspace; uint8 codes need 1 <= K <= 256 "
                "(use fewer codewords)"
            )
        if m < 1 or d < 1:
            raise ValueError(
                f"codewords must have M >= 1 and D' >= 1, got {tuple(codewords.shape)}"
            )
        if geometry == "lorentz" and d < 2:
            raise ValueError(
                f"Lorentz codewords need D' = n + 1 >= 2 coordinates (time first), got {d}"
            )
        if not torch.isfinite(codewords).all():
            raise ValueError("codewords contain NaN or inf")
        self.codewords = codewords.detach().clone()
        self.geometry = geometry
        self.metric = metric
        self.k = self._check_k(k)
        self.metadata = dict(metadata) if metadata is not None else {}
        self._check_metadata(self.metadata)
        self.codes = torch.zeros((0, m), dtype=torch.uint8, device=codewords.device)
        self._sym_tables: torch.Tensor | None = None

    # ------------------------------------------------------------------ properties
    @property
    def M(self) -> int:
        """Number of subspaces (bytes per image)."""
        return self.codewords.shape[0]

    @property
    def K(self) -> int:
        """Codewords per subspace."""
        return self.codewords.shape[1]

    @property
    def dim(self) -> int:
        """Stored size D' of one sub-point (``n + 1`` on a hyperboloid)."""
        return self.codewords.shape[2]

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the codewords, used for all distance computations."""
        return self.codewords.dtype

    @property
    def ntotal(self) -> int:
        """Number of database items N."""
        return self.codes.shape[0]

    @property
    def code_size_bits(self) -> int:
        """Bits per database image: ``M * ceil(log2 K)`` (stored as ``M`` bytes)."""
        return self.M * max(1, math.ceil(math.log2(self.K)))

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return (
            f"PQIndex(geometry={self.geometry!r}, metric={self.metric!r}, M={self.M}, "
            f"K={self.K}, dim={self.dim}, ntotal={self.ntotal}, dtype={self.dtype})"
        )

    def memory_bytes(self, *, include_codebooks: bool = True) -> int:
        """Bytes held by the index: ``N * M`` for the codes, plus codebooks and ``k``.

        The symmetric-mode cache (``M * K * K`` floats, built on first use) is not counted.
        """
        total = self.codes.numel() * self.codes.element_size()
        if include_codebooks:
            total += self.codewords.numel() * self.codewords.element_size()
            if self.k is not None:
                total += self.k.numel() * self.k.element_size()
        return total

    # ------------------------------------------------------------------ checks
    def _check_k(self, k) -> torch.Tensor | None:
        if self.geometry == "euclidean":
            if k is not None:
                raise ValueError("k is the Lorentz curvature parameter; pass k=None for euclidean")
            return None
        if k is None:
            return torch.ones(self.M, dtype=self.dtype, device=self.codewords.device)
        if not torch.is_tensor(k):
            if not isinstance(k, (int, float)):
                raise TypeError(f"k must be a tensor of shape (M,), a float or None, got {k!r}")
            k = torch.full((self.M,), float(k), dtype=self.dtype, device=self.codewords.device)
        k = k.detach().to(dtype=self.dtype, device=self.codewords.device).reshape(-1)
        if k.numel() == 1:
            k = k.expand(self.M).clone()
        if k.shape != (self.M,):
            raise ValueError(f"k must have shape (M,) = ({self.M},), got {tuple(k.shape)}")
        if not (torch.isfinite(k).all() and (k > 0).all()):
            raise ValueError(f"k must be finite and > 0, got {k.tolist()}")
        return k.clone()

    @staticmethod
    def _check_metadata(metadata: dict) -> None:
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"metadata must be JSON-serialisable (plain dicts, lists, str, numbers): {exc}"
            ) from None

    def _check_points(self, points: torch.Tensor, name: str) -> torch.Tensor:
        if not torch.is_tensor(points):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(points).__name__}")
        if points.dim() == 2 and points.shape[1] == self.M * self.dim:
            points = points.reshape(points.shape[0], self.M, self.dim)
        if points.dim() != 3 or points.shape[1:] != (self.M, self.dim):
            raise ValueError(
                f"{name} must have shape (Q, M, D') = (Q, {self.M}, {self.dim}) "
                f"(or (Q, M*D')), got {tuple(points.shape)}"
            )
        if not points.is_floating_point():
            raise TypeError(f"{name} must be a float tensor, got {points.dtype}")
        if not torch.isfinite(points).all():
            raise ValueError(f"{name} contain NaN or inf")
        return points.to(dtype=self.dtype, device=self.codewords.device)

    def _check_codes(self, codes: torch.Tensor, name: str = "codes") -> torch.Tensor:
        if not torch.is_tensor(codes):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(codes).__name__}")
        if codes.dim() != 2 or codes.shape[1] != self.M:
            raise ValueError(
                f"{name} must have shape (N, M) = (N, {self.M}), got {tuple(codes.shape)}"
            )
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise TypeError(
                f"{name} must be an integer tensor (uint8 preferred), got {codes.dtype}"
            )
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.K):
            raise ValueError(
                f"{name} must lie in [0, K) = [0, {self.K}), got range "
                f"[{int(codes.min())}, {int(codes.max())}]"
            )
        return codes.to(dtype=torch.uint8, device=self.codewords.device)

    # ------------------------------------------------------------------ distances
    @torch.no_grad()
    def subspace_distances(self, points: torch.Tensor) -> torch.Tensor:
        """Distances from each sub-point to every codeword of its subspace (the ADC tables).

        Parameters
        ----------
        points : (B, M, D') float tensor

        Returns
        -------
        (B, M, K) tensor, dtype of the codewords: ``T[b, m, j] = d_m(points[b, m], c[m, j])``.
        """
        points = self._check_points(points, "points")
        return self._tables(points)

    def _tables(self, points: torch.Tensor) -> torch.Tensor:
        """(B, M, D') points -> (B, M, K) distances to the codewords.

        Lorentz codebooks in float32 on the CPU with numba: the compiled
        :func:`hihpq_lib.quantization.adc_kernel.lorentz_tables` (the formula of :func:`lorentz.sqdist` /
        :func:`lorentz.dist` in float64, rounded once); otherwise torch (:meth:`_pairwise`).
        """
        if (
            self.geometry == "lorentz"
            and self._compiled_fits
            and adc_kernel.AVAILABLE
            and points.shape[0] > 0
        ):
            return torch.from_numpy(
                adc_kernel.lorentz_tables(
                    to_numpy(points.contiguous()),
                    to_numpy(self.codewords.contiguous()),
                    to_numpy(self.k),
                    geodesic=self.metric == "geodesic",
                )
            )
        return self._pairwise(points.transpose(0, 1), self.codewords).transpose(0, 1)

    def _pairwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(M, B, D'), (M, K, D') -> (M, B, K) per-subspace distances.

        Computed from the differences ``x - y`` (elementwise, in chunks of ``B``), not
        with a matrix product: exact zeros for identical points, no cancellation between
        large coordinates, and results that do not depend on the batch size.
        """
        step = max(1, _TABLE_ELEMENTS // max(1, y.shape[0] * y.shape[1] * y.shape[2]))
        yy = y.unsqueeze(1)  # (M, 1, K, D')
        out = []
        for s in range(0, x.shape[1], step):
            xx = x[:, s : s + step].unsqueeze(2)  # (M, b, 1, D')
            if self.geometry == "lorentz":
                if self.metric == "geodesic":
                    out.append(lorentz.dist(xx, yy, k=self.k.view(-1, 1, 1, 1)))
                else:
                    out.append(lorentz.sqdist(xx, yy, k=self.k.view(-1, 1, 1, 1)))
            else:
                sq = (xx - yy).square().sum(-1)
                out.append(sq if self.metric == "sqeuclidean" else sq.sqrt())
        if not out:
            return x.new_zeros((x.shape[0], 0, y.shape[1]))
        return torch.cat(out, dim=1)

    def symmetric_tables(self) -> torch.Tensor:
        """Codeword-to-codeword distances ``S[m, i, j] = d_m(c[m, i], c[m, j])``.

        Returns
        -------
        (M, K, K) tensor, dtype of the codewords, with an exactly zero diagonal.
        Computed once and cached.
        """
        if self._sym_tables is None:
            s = self._pairwise(self.codewords, self.codewords)
            s.diagonal(dim1=1, dim2=2).zero_()  # d(c, c) = 0 exactly (no arcosh floor)
            self._sym_tables = s
        return self._sym_tables

    @torch.no_grad()
    def encode(self, points: torch.Tensor, *, batch_size: int = 4096) -> torch.Tensor:
        """Quantize points: the nearest codeword of each subspace (ties: lower index).

        Parameters
        ----------
        points : (N, M, D') float tensor (or (N, M*D'))

        Returns
        -------
        (N, M) uint8 tensor of codes.
        """
        points = self._check_points(points, "points")
        out = [
            self._tables(points[s : s + batch_size]).argmin(dim=2).to(torch.uint8)
            for s in range(0, points.shape[0], batch_size)
        ]
        if not out:
            return torch.zeros((0, self.M), dtype=torch.uint8, device=self.codewords.device)
        return torch.cat(out)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codewords selected by ``codes``: (N, M) integer -> (N, M, D') float."""
        codes = self._check_codes(codes).long()
        return self.codewords[torch.arange(self.M, device=codes.device), codes]

    # ------------------------------------------------------------------ database
    def add(self, codes: torch.Tensor) -> None:
        """Append database codes.

        Parameters
        ----------
        codes : (N, M) integer tensor with values in ``[0, K)``; stored as uint8.
        """
        self.codes = torch.cat([self.codes, self._check_codes(codes)])

    def add_points(self, points: torch.Tensor) -> torch.Tensor:
        """Encode points with :meth:`encode` and append their codes.

        Parameters
        ----------
        points : (N, M, D') float tensor

        Returns
        -------
        (N, M) uint8 tensor, the codes added.
        """
        codes = self.encode(points)
        self.add(codes)
        return codes

    def reset(self) -> None:
        """Remove all database items (codebooks are kept)."""
        self.codes = self.codes[:0]

    def _flat_codes(self) -> torch.Tensor:
        """Database codes as rows of the stacked tables: ``codes[n, m] + m * K``, (N, M) int64.

        Cached until :meth:`add` or :meth:`reset` replaces ``self.codes``.
        """
        cached = getattr(self, "_flat_cache", None)
        if cached is None or cached[0] is not self.codes:
            offsets = torch.arange(self.M, device=self.codes.device) * self.K
            cached = (self.codes, self.codes.long() + offsets)
            self._flat_cache = cached
        return cached[1]

    def _lookup(self, tables: torch.Tensor) -> torch.Tensor:
        """Sum of table lookups: (B, M, K) tables -> (B, N) distances to the database.

        ``dist[b, n] = sum_m tables[b, m, codes[n, m]]``, accumulated in the order
        m = 0, 1, ..., M-1. One :func:`torch.nn.functional.embedding_bag` call does every
        lookup of the batch: the ``(M*K, B)`` stacked, transposed tables are its weight
        (row ``m*K + c`` holds entry ``c`` of subspace ``m`` for all ``B`` queries), and
        each database item is a bag of its ``M`` rows. The sum over a bag runs over
        contiguous ``B``-vectors, so it vectorises across queries.
        """
        b, n = tables.shape[0], self.ntotal
        if n == 0 or b == 0:
            return tables.new_zeros((b, n))
        weight = tables.reshape(b, self.M * self.K).t().contiguous()  # (M*K, B)
        by_item = torch.nn.functional.embedding_bag(self._flat_codes(), weight, mode="sum")
        return by_item.t().contiguous()  # (N, B) -> (B, N)

    def _query_tables(self, query: torch.Tensor, mode: str) -> torch.Tensor:
        if mode == "asymmetric":
            return self._tables(query)
        if mode == "symmetric":
            qcodes = self.encode(query).long()  # (B, M)
            s = self.symmetric_tables()  # (M, K, K)
            return s[torch.arange(self.M, device=qcodes.device), qcodes]  # (B, M, K)
        raise ValueError(f"mode must be 'asymmetric' or 'symmetric', got {mode!r}")

    @torch.no_grad()
    def distances(self, query_points: torch.Tensor, *, mode: str = "asymmetric") -> torch.Tensor:
        """Distances from each query to every database item.

        Parameters
        ----------
        query_points : (Q, M, D') float tensor
        mode : {"asymmetric", "symmetric"}

        Returns
        -------
        (Q, N) tensor, dtype of the codewords. Memory ``Q * N`` elements: for large
        databases call it on slices of the queries.
        """
        query_points = self._check_points(query_points, "query_points")
        return self._lookup(self._query_tables(query_points, mode))

    @torch.no_grad()
    def search(
        self,
        query_points: torch.Tensor,
        topk: int,
        *,
        mode: str = "asymmetric",
        batch_size: int | None = None,
        backend: str = "auto",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``topk`` nearest database items of each query, nearest first.

        Parameters
        ----------
        query_points : (Q, M, D') float tensor (or (Q, M*D'))
            Unquantized query sub-points (in symmetric mode they are encoded first).
        topk : int
            ``1 <= topk <= N``.
        mode : {"asymmetric", "symmetric"}
        batch_size : int, optional
            Queries per batch. Default: 256 for the fast path; 128 for the reference path,
            fewer when one ``(batch, N)`` distance buffer would exceed ``2**25`` elements.
        backend : {"auto", "compiled", "reference"}
            ``"reference"``: tables, lookup-sum, :func:`topk_smallest` (any device and
            dtype). ``"compiled"``: the fused numba scan
            :func:`hihpq_lib.quantization.adc_kernel.adc_topk` (CPU, float32 codebooks); without numba
            it falls back to the reference path with a warning. ``"auto"``: the compiled
            path where it applies (float32 on the CPU, numba importable, finite tables),
            else the reference path. Both return the same result. The older names
            ``"kernel"`` and ``"torch"`` mean ``"compiled"`` and ``"reference"``.

        Returns
        -------
        dist : (Q, topk) tensor, dtype of the codewords, ascending
        idx : (Q, topk) int64 tensor of database indices (ties: lower index first)
        """
        query_points = self._check_points(query_points, "query_points")
        if mode not in ("asymmetric", "symmetric"):
            raise ValueError(f"mode must be 'asymmetric' or 'symmetric', got {mode!r}")
        if self.ntotal == 0:
            raise ValueError("the index is empty: call add() or add_points() before search()")
        if not (
            isinstance(topk, numbers.Integral)
            and not isinstance(topk, bool)
            and 1 <= topk <= self.ntotal
        ):
            raise ValueError(
                f"topk must be an int with 1 <= topk <= N = {self.ntotal}, got {topk!r}"
            )
        compiled = self._use_compiled(backend)
        if batch_size is None:
            batch_size = (
                _COMPILED_BATCH
                if compiled
                else max(1, min(_SEARCH_BATCH, _BUFFER_ELEMENTS // self.ntotal))
            )
        if not (isinstance(batch_size, numbers.Integral) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        topk, batch_size = int(topk), int(batch_size)
        dists, idxs = [], []
        for s in range(0, query_points.shape[0], batch_size):
            tables = self._query_tables(query_points[s : s + batch_size], mode)
            if compiled and self._compiled_safe(tables):
                v, i = self._search_compiled(tables, topk)
            else:  # also where a table holds inf or NaN (the reference rejects NaN)
                v, i = self._search_reference(tables, topk)
            dists.append(v)
            idxs.append(i)
        if not dists:
            empty = query_points.new_zeros((0, topk))
            return empty, torch.zeros((0, topk), dtype=torch.long, device=empty.device)
        return torch.cat(dists), torch.cat(idxs)

    def _search_reference(
        self, tables: torch.Tensor, topk: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference path: (B, M, K) tables -> lookup-sum (B, N) -> top-k."""
        dist = self._lookup(tables)  # dist[b, n] = sum_m tables[b, m, codes[n, m]]
        return topk_smallest(dist, topk)  # ascending, ties: lower index first

    def _search_compiled(
        self, tables: torch.Tensor, topk: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The fast path: the same result as :meth:`_search_reference`, in one numba scan."""
        v, i = adc_kernel.adc_topk(to_numpy(tables.contiguous()), self._np_codes(), topk)
        return torch.from_numpy(v), torch.from_numpy(i)

    def _np_codes(self):
        """``self.codes`` as a contiguous uint8 ndarray (a view, no copy)."""
        return to_numpy(self.codes.contiguous())

    @staticmethod
    def _compiled_safe(tables: torch.Tensor) -> bool:
        """Finite tables whose ``M``-term sums cannot overflow float32 (else: reference)."""
        return bool(torch.isfinite(tables).all()) and float(tables.abs().amax()) < _F32_SAFE

    @property
    def _compiled_fits(self) -> bool:
        """Whether the compiled code of :mod:`hihpq_lib.quantization.adc_kernel` applies: float32 on CPU."""
        return self.dtype == torch.float32 and self.codewords.device.type == "cpu"

    def _use_compiled(self, backend: str) -> bool:
        """Whether :meth:`search` takes the compiled path for this ``backend``."""
        backend = _BACKEND_ALIASES.get(backend, backend)
        if backend not in _BACKENDS:
            names = (*_BACKENDS, *_BACKEND_ALIASES)
            raise ValueError(f"backend must be one of {names}, got {backend!r}")
        if backend == "reference":
            return False
        fits = self._compiled_fits
        if backend == "compiled" and not fits:
            raise ValueError(
                "backend='compiled' needs float32 codebooks and codes on the CPU, got "
                f"{self.dtype} on {self.codes.device}; use backend='reference' or 'auto'"
            )
        if not adc_kernel.AVAILABLE:
            if backend == "compiled":
                warnings.warn(
                    "numba is not importable: PQIndex.search takes the reference path "
                    '(pip install "hihpq[fast]" for the compiled one)',
                    RuntimeWarning,
                    stacklevel=3,
                )
            return False
        return fits

    # ------------------------------------------------------------------ faiss
    def to_faiss(self) -> FaissExport:
        """The same codes in a faiss ``IndexPQ`` (inner product or L2): a :class:`FaissExport`.

        Needs faiss (the ``fast`` extra: ``pip install "hihpq[fast]"``), imported only here.
        See :class:`FaissExport` for the exact correspondence and the re-ranking of
        ``"geodesic"`` and ``"euclidean"``.
        """
        return FaissExport(self)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike) -> Path:
        """Save to ``folder`` (created if needed): ``index.json`` + ``tensors.pt``.

        ``tensors.pt`` is a :func:`torch.save` of a plain dict of tensors (``codewords``,
        ``codes`` and, for Lorentz, ``k``); ``index.json`` holds the format version,
        geometry, metric, sizes, dtype, metadata and the SHA-256 of ``tensors.pt``. Both
        are written atomically (temporary file + rename), tensors first, so an
        interrupted save never leaves a readable but inconsistent index.

        Returns
        -------
        pathlib.Path of the folder.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"codewords": self.codewords.cpu(), "codes": self.codes.cpu()}
        if self.k is not None:
            tensors["k"] = self.k.cpu()
        buf = io.BytesIO()
        torch.save(tensors, buf)
        payload = buf.getvalue()
        header = {
            "format": _FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "geometry": self.geometry,
            "metric": self.metric,
            "M": self.M,
            "K": self.K,
            "dim": self.dim,
            "ntotal": self.ntotal,
            "dtype": str(self.dtype).removeprefix("torch."),
            "tensors_file": _TENSORS_FILE,
            "tensors_sha256": hashlib.sha256(payload).hexdigest(),
            "metadata": self.metadata,
        }
        atomic_write_bytes(folder / _TENSORS_FILE, payload)
        atomic_write_bytes(
            folder / _INDEX_FILE,
            (json.dumps(header, indent=2, sort_keys=True) + "\n").encode(),
        )
        return folder

    @classmethod
    def load(
        cls, folder: str | os.PathLike, *, map_location: str | torch.device = "cpu"
    ) -> PQIndex:
        """Load an index written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            ``index.json`` or the tensors file is missing.
        ValueError
            Unknown format, incompatible ``format_version``, checksum mismatch, or tensors
            that disagree with ``index.json``.
        """
        folder = Path(folder)
        index_path = folder / _INDEX_FILE
        if not index_path.is_file():
            raise FileNotFoundError(
                f"{index_path} not found: {folder} is not a saved PQIndex (use PQIndex.save)"
            )
        try:
            header = json.loads(index_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{index_path} is not valid JSON ({exc}); re-save the index") from None
        if not isinstance(header, dict) or header.get("format") != _FORMAT_NAME:
            raise ValueError(f"{index_path} is not a {_FORMAT_NAME} header")
        version = header.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{index_path} has format_version {version!r}, but this hihpq_lib reads "
                f"version {FORMAT_VERSION}; re-create the index with this version "
                "(or use the hihpq_lib version that wrote it)"
            )
        missing = [f for f in ("geometry", "metric", "M", "K", "dim", "ntotal") if f not in header]
        if missing:
            raise ValueError(f"{index_path} lacks the fields {missing}; re-save the index")
        tensors_path = folder / header.get("tensors_file", _TENSORS_FILE)
        if not tensors_path.is_file():
            raise FileNotFoundError(f"{tensors_path} not found (listed in {index_path})")
        payload = tensors_path.read_bytes()
        if hashlib.sha256(payload).hexdigest() != header.get("tensors_sha256"):
            raise ValueError(
                f"{tensors_path} does not match the checksum in {index_path} "
                "(interrupted or mixed save?); re-save the index"
            )
        tensors = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
        if not isinstance(tensors, dict) or not {"codewords", "codes"} <= set(tensors):
            raise ValueError(f"{tensors_path} must hold a dict with 'codewords' and 'codes'")
        index = cls(
            tensors["codewords"],
            tensors.get("k"),
            geometry=header["geometry"],
            metric=header["metric"],
            metadata=header.get("metadata", {}),
        )
        index.add(tensors["codes"])
        expected = (header["M"], header["K"], header["dim"], header["ntotal"])
        if (index.M, index.K, index.dim, index.ntotal) != expected:
            raise ValueError(
                f"{tensors_path} holds M, K, dim, N = "
                f"{(index.M, index.K, index.dim, index.ntotal)} but {index_path} says {expected}"
            )
        return index


def _import_faiss():
    """faiss, or an ImportError naming the extra that brings it (``hihpq[fast]``)."""
    return require("faiss", "fast")


class FaissExport:
    r"""A :class:`PQIndex`'s codes in a faiss ``IndexPQ``, with the matching query transform.

    What :meth:`PQIndex.to_faiss` returns: the trained index exported, not trained again
    (the faiss PQ *baseline*, trained on raw features, is
    :class:`hihpq_lib.evaluation.baselines.FaissPQ`).

    **Squared Lorentzian distance is an inner product.** For points of
    :math:`\mathbb H^n_k` (time coordinate first),

    .. math:: \|q - c\|^2_{\mathcal L} = -2k - 2\langle q, c\rangle_{\mathcal L}
              = -2k - 2\,(\tilde q \cdot c), \qquad \tilde q = (-q_0, q_1, \dots, q_n),

    with :math:`\cdot` the Euclidean dot product. Summed over the ``M`` subspaces, the
    ``"sqlorentz"`` ADC distance to item ``n`` is
    :math:`-2\sum_m k_m - 2\,\tilde q \cdot c(n)`, where :math:`c(n)` concatenates the
    item's codewords. The smallest distances are the largest inner products, so a faiss
    ``IndexPQ(M * D', M, 8, METRIC_INNER_PRODUCT)`` whose centroids are the Lorentz
    codewords ranks the database as we do once each query sub-point has its time
    coordinate negated. :meth:`search` returns our distances, :math:`-2\sum_m k_m - 2\,IP`.
    Equal up to float32 rounding (our tables switch to the difference form for nearly
    identical points and clamp at 0; faiss sums the inner products in its own order), so
    two items whose distances differ by a rounding error may swap.

    ``"sqeuclidean"`` is faiss's own ``METRIC_L2`` PQ (exact, queries unchanged).

    ``"geodesic"`` (and ``"euclidean"``) are sums of a non-linear function of each
    subspace's squared distance, not an inner product: faiss returns ``candidates`` items
    per query by the squared distance, and :meth:`search` re-ranks them by the
    :class:`PQIndex`'s own tables. Not exact: ``benchmarks/adc_throughput.py`` measures
    the recall against the exact search.

    Codebooks with ``K < 256`` are padded to 256 (the padding is never referenced), so
    codes stay one byte per subspace. faiss holds its own copy of the codes
    (``N * M`` bytes).

    Attributes
    ----------
    index : faiss.IndexPQ
        Usable on its own with :meth:`query_vectors` (e.g. to build an IVF or sharded index
        from the same codebooks).
    pq : PQIndex
        The source index (its tables re-rank non-exact metrics).
    exact : bool
        Whether faiss's ranking is the :class:`PQIndex`'s ranking (``"sqlorentz"``,
        ``"sqeuclidean"``).

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> v = 0.3 * torch.randn(2, 256, 3, generator=g)  # M = 2, K = 256, on H^3 (k = 1)
    >>> cw = torch.cat([torch.sqrt(1 + (v * v).sum(-1, keepdim=True)), v], -1)
    >>> index = PQIndex(cw, metric="sqlorentz")
    >>> index.add(torch.randint(0, 256, (500, 2), generator=g).to(torch.uint8))
    >>> q = index.decode(index.codes[:3])  # 3 queries: the codewords of items 0, 1, 2
    >>> fx = index.to_faiss()
    >>> bool((fx.search(q, 5)[1] == index.search(q, 5)[1]).all())
    True
    """

    def __init__(self, pq: PQIndex):
        faiss = _import_faiss()
        self.pq = pq
        self.exact = pq.metric in ("sqlorentz", "sqeuclidean")
        self.lorentz = pq.geometry == "lorentz"
        cw = pq.codewords.detach().to("cpu", torch.float32)
        if pq.K < 256:  # faiss's byte codes need 2**8 centroids per subspace
            cw = torch.cat([cw, cw.new_zeros((pq.M, 256 - pq.K, pq.dim))], 1)
        metric = faiss.METRIC_INNER_PRODUCT if self.lorentz else faiss.METRIC_L2
        index = faiss.IndexPQ(pq.M * pq.dim, pq.M, 8, metric)
        faiss.copy_array_to_vector(to_numpy(cw.contiguous()).ravel(), index.pq.centroids)
        index.is_trained = True
        if pq.ntotal:
            index.add_sa_codes(to_numpy(pq.codes.contiguous()))
        self.index = index
        # -2 sum_m k_m: the constant of the sqlorentz distance, in float64
        self._offset = -2.0 * float(pq.k.double().sum()) if self.lorentz else 0.0

    @property
    def ntotal(self) -> int:
        """Number of database items in the faiss index."""
        return int(self.index.ntotal)

    def query_vectors(self, query_points: torch.Tensor):
        """The faiss query rows: ``(Q, M * D')`` float32 ndarray (Lorentz: time negated)."""
        q = self.pq._check_points(query_points, "query_points").detach().to("cpu", torch.float32)
        if self.lorentz:
            q = q.clone()
            q[..., 0] = -q[..., 0]
        return to_numpy(q.reshape(q.shape[0], -1).contiguous())

    def search(
        self, query_points: torch.Tensor, topk: int, *, candidates: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``topk`` nearest items by faiss, in :meth:`PQIndex.search`'s format.

        Parameters
        ----------
        query_points : (Q, M, D') float tensor
        topk : int
            ``1 <= topk <= N``.
        candidates : int, optional
            Non-exact metrics only: items faiss returns per query before the re-ranking
            (default ``max(4 * topk, topk + 100)``, at most ``N``).

        Returns
        -------
        dist : (Q, topk) float32 tensor in the index's metric, ascending
        idx : (Q, topk) int64 tensor
        """
        n = self.ntotal
        if n == 0:
            raise ValueError("the index is empty: add codes to the PQIndex before to_faiss()")
        if not (
            isinstance(topk, numbers.Integral) and not isinstance(topk, bool) and 1 <= topk <= n
        ):
            raise ValueError(f"topk must be an int with 1 <= topk <= N = {n}, got {topk!r}")
        q = self.query_vectors(query_points)
        if self.exact:
            scores, idx = self.index.search(q, int(topk))
            dist = self._offset - 2.0 * scores.astype("float64") if self.lorentz else scores
            return torch.from_numpy(dist).float(), torch.from_numpy(idx).long()
        c = max(4 * topk, topk + 100) if candidates is None else candidates
        if not (isinstance(c, numbers.Integral) and c >= topk):
            raise ValueError(f"candidates must be an int >= topk = {topk}, got {candidates!r}")
        _, cand = self.index.search(q, int(min(c, n)))
        cand = torch.sort(torch.from_numpy(cand).long(), dim=1).values  # ties: lower index
        tables = self.pq._tables(self.pq._check_points(query_points, "query_points"))
        codes = self.pq.codes[cand].long()  # (Q, C, M)
        dist = torch.gather(
            tables.unsqueeze(1).expand(-1, cand.shape[1], -1, -1),
            3,
            codes.unsqueeze(-1),
        )[..., 0].sum(-1)  # (Q, C): the same per-subspace values as the PQIndex's tables
        vals, pos = topk_smallest(dist, int(topk))
        return vals, torch.gather(cand, 1, pos)
