"""Classical retrieval baselines on the same frozen features, with faiss.

* :class:`FloatBaseline` — exact cosine search on L2-normalised float features (the
  upper bound a quantizer tries to approach; ``32 * d`` bits per image);
* :class:`FaissPQ` — product quantization (``faiss.IndexPQ``): ``M`` sub-vectors, ``2**nbits``
  k-means codewords each, asymmetric (ADC) squared-L2 search; ``M * nbits`` bits per image;
* :class:`FaissOPQ` — the same after a learned rotation (``faiss.OPQMatrix`` in a
  ``faiss.IndexPreTransform``), which balances the variance across sub-vectors.

All three share ``fit(train) -> self``, ``add(db)``, ``search(queries, k) -> (distances,
indices)`` with **ascending distances** (cosine distance ``1 - cos`` for the float
baseline), so their indices go straight into :func:`hihpq_lib.evaluation.metrics.map_at_k`.

Inputs may be numpy arrays or torch tensors of shape ``(n, d)``; faiss computes in
float32, so they are converted to C-contiguous float32 here (the one place where float32
is required, by faiss). Outputs are numpy: distances ``(Q, k) float32``, indices
``(Q, k) int64``.

Threads: faiss uses OpenMP; the library never changes the thread count. Set it yourself,
e.g. ``set_num_threads(1)`` in tests or on a shared machine.
"""

from __future__ import annotations

import numpy as np
import torch

from hihpq_lib.utils.arrays import to_numpy
from hihpq_lib.utils.optional import LazyModule

#: faiss (the ``baselines`` extra), imported when a baseline is first built.
faiss = LazyModule("faiss", "baselines")

__all__ = ["FloatBaseline", "FaissPQ", "FaissOPQ", "set_num_threads"]


def set_num_threads(n: int) -> None:
    """Set the number of OpenMP threads faiss uses (``faiss.omp_set_num_threads``)."""
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n must be a positive int, got {n!r}")
    faiss.omp_set_num_threads(n)


def _as_float32(x, name: str, dim: int | None = None) -> np.ndarray:
    """(n, d) array-like -> C-contiguous float32 numpy array, checked."""
    if torch.is_tensor(x):
        x = to_numpy(x)
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-d (n, d) array, got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has {x.shape[1]} features but the index was fit on {dim}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf (or values beyond float32 range)")
    return x


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("cannot L2-normalise a zero feature vector; remove or perturb it")
    return np.ascontiguousarray(x / norms, dtype=np.float32)


class _FaissBaseline:
    """Shared fit/add/search plumbing; subclasses build ``self.index_``."""

    normalize: bool

    def __init__(self) -> None:
        self.index_: faiss.Index | None = None
        self.dim_: int | None = None

    def _prepare(self, x, name: str) -> np.ndarray:
        x = _as_float32(x, name, self.dim_)
        return _l2_normalise(x) if self.normalize else x

    def _build(self, dim: int) -> faiss.Index:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_fitted(self) -> faiss.Index:
        if self.index_ is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(train_feats) first")
        return self.index_

    def fit(self, train_feats) -> _FaissBaseline:
        """Build (and train, where needed) the index on ``train_feats`` (n, d)."""
        x = _as_float32(train_feats, "train_feats")
        self.dim_ = x.shape[1]
        index = self._build(self.dim_)
        x = _l2_normalise(x) if self.normalize else x
        if not index.is_trained:
            index.train(x)
        self.index_ = index
        return self

    def add(self, db_feats) -> None:
        """Append database features (N, d); they are encoded with the fitted quantizer."""
        index = self._check_fitted()
        index.add(self._prepare(db_feats, "db_feats"))

    @property
    def ntotal(self) -> int:
        """Number of database items added."""
        return 0 if self.index_ is None else int(self.index_.ntotal)

    def reset(self) -> None:
        """Remove the database items (keep the trained quantizer)."""
        self._check_fitted().reset()

    def search(self, query_feats, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest database items of each query.

        Parameters
        ----------
        query_feats : (Q, d) float array or tensor
        k : int, ``1 <= k <= ntotal``

        Returns
        -------
        distances : (Q, k) float32 ndarray, ascending
        indices : (Q, k) int64 ndarray
        """
        index = self._check_fitted()
        if not (isinstance(k, (int, np.integer)) and 1 <= k <= index.ntotal):
            raise ValueError(
                f"k must be an int with 1 <= k <= ntotal = {index.ntotal}, got {k!r} "
                "(add database items before searching)"
            )
        dist, idx = index.search(self._prepare(query_feats, "query_feats"), int(k))
        return self._postprocess(dist), idx.astype(np.int64, copy=False)

    def _postprocess(self, dist: np.ndarray) -> np.ndarray:
        return dist

    @property
    def code_size_bits(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


class FloatBaseline(_FaissBaseline):
    """Exact cosine-similarity search on L2-normalised float features (``IndexFlatIP``).

    ``search`` returns cosine *distances* ``1 - cos`` (ascending). ``fit`` only records the
    dimension (no training).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(20, 8)).astype(np.float32)
    >>> base = FloatBaseline().fit(x)
    >>> base.add(x)
    >>> base.search(x[:3], 1)[1].ravel().tolist()
    [0, 1, 2]
    """

    normalize = True

    def _build(self, dim: int) -> faiss.Index:
        return faiss.IndexFlatIP(dim)

    def _postprocess(self, dist: np.ndarray) -> np.ndarray:
        return (1.0 - dist).astype(np.float32, copy=False)

    @property
    def code_size_bits(self) -> int:
        """Bits per database image: 32 per float feature."""
        return 32 * (self.dim_ or 0)


def _quiet_kmeans(pq):
    """Silence faiss's "please provide at least 39 * K training points" k-means warning.

    faiss prints it (to stderr, once per subspace and OPQ iteration) whenever fewer than
    ``min_points_per_centroid * K`` vectors train a codebook -- every CPU profile here trains
    on 5,000 images for K = 256. The threshold only gates that message; training is unchanged.
    """
    pq.cp.min_points_per_centroid = 1
    return pq


class FaissPQ(_FaissBaseline):
    """Product quantization with ``faiss.IndexPQ`` (squared-L2 ADC search).

    Parameters
    ----------
    M : int
        Number of sub-vectors; must divide the feature dimension.
    nbits : int
        Bits per sub-vector code (``2**nbits`` codewords per subspace); 8 gives bytes.
    normalize : bool
        L2-normalise train, database and query features first (cosine-style PQ).

    Notes
    -----
    faiss k-means needs at least ``2**nbits`` training vectors (and warns below about
    ``39 * 2**nbits``).
    """

    normalize: bool

    def __init__(self, M: int, nbits: int = 8, *, normalize: bool = False) -> None:  # noqa: N803
        super().__init__()
        if not (isinstance(M, int) and M >= 1):
            raise ValueError(f"M must be a positive int, got {M!r}")
        if not (isinstance(nbits, int) and 1 <= nbits <= 16):
            raise ValueError(f"nbits must be an int in [1, 16], got {nbits!r}")
        self.M = M
        self.nbits = nbits
        self.normalize = normalize

    def __repr__(self) -> str:
        return f"{type(self).__name__}(M={self.M}, nbits={self.nbits}, normalize={self.normalize})"

    def _check_train(self, x: np.ndarray) -> None:
        if x.shape[1] % self.M:
            raise ValueError(
                f"feature dimension {x.shape[1]} is not divisible by M = {self.M}; "
                "choose M dividing d (or pad the features)"
            )
        if x.shape[0] < 2**self.nbits:
            raise ValueError(
                f"{x.shape[0]} training vectors are fewer than the 2**nbits = {2**self.nbits} "
                "codewords per subspace; use more training data or a smaller nbits"
            )

    def fit(self, train_feats) -> FaissPQ:
        """Train the codebooks (k-means per subspace) on ``train_feats`` (n, d)."""
        self._check_train(_as_float32(train_feats, "train_feats"))
        return super().fit(train_feats)

    def _build(self, dim: int) -> faiss.Index:
        index = faiss.IndexPQ(dim, self.M, self.nbits)
        _quiet_kmeans(index.pq)
        return index

    @property
    def code_size_bits(self) -> int:
        """Bits per database image: ``M * nbits``."""
        return self.M * self.nbits


class FaissOPQ(FaissPQ):
    """Optimized product quantization: a learned rotation (``OPQMatrix``) then ``IndexPQ``.

    Same parameters and methods as :class:`FaissPQ`; the rotation is trained jointly with
    the codebooks in ``fit`` and applied to database and query features.

    Parameters
    ----------
    M, nbits, normalize : see :class:`FaissPQ`
    niter : int
        OPQ alternating-optimisation iterations (faiss default 50).
    d_out : int, optional
        Output dimension of the learned transform (faiss's ``OPQ{M}_{d_out}``): a
        rotation plus dimension reduction, the usual choice for high-dimensional CNN
        features (e.g. 1280 -> 256 is ~10x faster to train). Default: no reduction.
    """

    def __init__(
        self,
        M: int,  # noqa: N803
        nbits: int = 8,
        *,
        normalize: bool = False,
        niter: int = 50,
        d_out: int | None = None,
    ) -> None:
        super().__init__(M, nbits, normalize=normalize)
        if not (isinstance(niter, int) and niter >= 1):
            raise ValueError(f"niter must be a positive int, got {niter!r}")
        if d_out is not None and (int(d_out) < M or int(d_out) % M):
            raise ValueError(f"d_out={d_out} must be a positive multiple of M={M}")
        self.niter = niter
        self.d_out = None if d_out is None else int(d_out)

    def fit(self, train_feats) -> FaissOPQ:
        n = len(train_feats)
        dim = to_numpy(train_feats).shape[1] if n else 0
        if n < dim:
            # faiss's OPQMatrix training crashes the process (segfault) when n < dim
            raise ValueError(
                f"OPQ needs at least as many training vectors as dimensions: got {n} vectors "
                f"of dimension {dim}; train on more vectors (e.g. the database) or use FaissPQ"
            )
        return super().fit(train_feats)

    def _build(self, dim: int) -> faiss.Index:
        d_out = dim if self.d_out is None else min(self.d_out, dim)
        opq = faiss.OPQMatrix(dim, self.M, d_out)
        opq.niter = self.niter
        # OPQ trains its codebooks with a ProductQuantizer of its own (faiss's default when
        # unset); handing it one lets us silence its k-means warning as well.
        opq_pq = _quiet_kmeans(faiss.ProductQuantizer(d_out, self.M, self.nbits))
        opq.pq = opq_pq
        pq = faiss.IndexPQ(d_out, self.M, self.nbits)
        _quiet_kmeans(pq.pq)
        # keep the parts alive as long as this object (the C++ wrapper does not own them)
        self._parts = (opq, pq, opq_pq)
        return faiss.IndexPreTransform(opq, pq)
