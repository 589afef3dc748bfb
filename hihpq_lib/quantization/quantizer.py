r"""Product quantizer with soft codebook attention on a product space.

For each subspace :math:`m` with codewords :math:`e_{m,1..K}` (stored as tangent vectors
at the origin and mapped onto the space; :math:`c` is kept for the curvature, see
``docs/notation.md``):

.. math::
    p_{m,j}(x) = \operatorname{softmax}_j\left(-\,T\, d^2_{\mathcal L}(x_m, e_{m,j})\right),
    \qquad \hat x_m = \operatorname{centroid}_j(e_{m,j};\, p_{m,j})

where :math:`d^2_{\mathcal L}` is the squared Lorentzian distance
(:func:`hihpq_lib.geometry.lorentz.pairwise_sqdist`), :math:`T` the softmax temperature (the
reference's ``softmax_temp``) and the centroid the weighted Lorentz centroid. The hard
code of :math:`x_m` is :math:`\arg\min_j d^2(x_m, e_{m,j})`; codes are stored as
``uint8`` when ``K <= 256``. ``attention="sqgeodesic"`` scores the codewords by the
squared geodesic distance instead (an ablation; the hard codes do not change, the
geodesic distance being an increasing function of the squared Lorentzian one). The
Euclidean counterpart is the same class over a
:class:`~hihpq_lib.geometry.manifolds.ProductEuclidean`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hihpq_lib.geometry.manifolds import ProductSpace
from hihpq_lib.utils.arrays import to_numpy

__all__ = ["ATTENTIONS", "QuantizerOutput", "ProductQuantizer", "check_code_config", "m_for_bits"]

#: Distances the codebook attention can use (see :class:`ProductQuantizer`).
ATTENTIONS = ("sqdist", "sqgeodesic")


def check_code_config(feature_dim: int, M: int, K: int) -> int:
    """Validate a (feature dimension, M, K) triple; return the code length in bits.

    Raises ``ValueError`` naming what to change when ``feature_dim`` is not divisible
    by ``M`` or ``K`` is not a power of two.

    >>> check_code_config(64, 4, 256)
    32
    """
    if int(M) < 1:
        raise ValueError(f"M (number of codebooks) must be >= 1, got {M}")
    if int(K) < 2 or (int(K) & (int(K) - 1)) != 0:
        raise ValueError(
            f"K={K} codewords is not a power of 2: codes would waste bits; "
            "use K = 2, 4, ..., 256 (256 gives one byte per subspace)"
        )
    if int(feature_dim) % int(M) != 0:
        raise ValueError(
            f"feature dimension {feature_dim} is not divisible by M={M}: choose M among "
            f"{[m for m in range(1, int(feature_dim) + 1) if int(feature_dim) % m == 0]} "
            "or change the projection dimension"
        )
    return int(M) * int(math.log2(int(K)))


def m_for_bits(bits: int, K: int = 256) -> int:
    """Number of codebooks ``M`` for a code length: ``bits = M * log2(K)``.

    >>> m_for_bits(32)
    4
    """
    check_code_config(1, 1, K)
    per = int(math.log2(K))
    if int(bits) <= 0 or int(bits) % per != 0:
        raise ValueError(
            f"{bits} bits is not M * log2(K) = M * {per} for K={K}: use a multiple of {per}"
        )
    return int(bits) // per


@dataclass
class QuantizerOutput:
    """What :meth:`ProductQuantizer.forward` returns (``B`` = batch size).

    Attributes
    ----------
    points : (B, M, D') the features mapped onto the product space.
    soft : (B, M, D') the soft-quantized points (centroids under the attention).
    codes : (B, M) int64 hard codes (argmin distance).
    assign : (B, M, K) soft assignment probabilities.
    sqdist : (B, M, K) squared distances to the codewords.
    """

    points: torch.Tensor
    soft: torch.Tensor
    codes: torch.Tensor
    assign: torch.Tensor
    sqdist: torch.Tensor

    def quantization_error(self, space: ProductSpace) -> torch.Tensor:
        """Mean distance between each point and its soft quantization."""
        return space.dist(self.points, self.soft).mean()


class ProductQuantizer(nn.Module):
    r"""Soft product quantizer over a product space.

    Parameters
    ----------
    space : ProductSpace
        :class:`~hihpq_lib.geometry.manifolds.ProductLorentz` (HiHPQ) or
        :class:`~hihpq_lib.geometry.manifolds.ProductEuclidean`.
    K : int
        Codewords per codebook, a power of two (256 = one byte per subspace).
    temperature : float
        Softmax temperature :math:`T` multiplying the negative squared distances
        (larger = harder assignment).
    attention : {"sqdist", "sqgeodesic"}
        The distance in the softmax: the space's squared distance (the paper: squared
        Lorentzian, :func:`hihpq_lib.geometry.lorentz.pairwise_sqdist`) or the squared geodesic
        distance (:func:`hihpq_lib.geometry.lorentz.pairwise_dist` squared; the same as
        ``"sqdist"`` in a Euclidean space).
    ambient : bool
        The reference's subspace convention (``subspace="ambient"`` in a config): input
        features are ``(B, M*(d+1))``, each chunk of ``d + 1`` a vector of the ambient
        space whose first (time) coordinate is set to zero, leaving a tangent vector of
        :math:`\mathbb H^d` at the origin; the first input of each chunk is discarded
        (it gets zero gradient). Codewords are drawn the same way (unit ``d+1``-vectors,
        first coordinate dropped). ``False``: input chunks of ``d`` are the tangent
        vectors themselves.

    Attributes
    ----------
    codebooks : nn.Parameter, (M, K, d)
        Codewords as tangent vectors at the origin, initialised uniformly and
        normalised to unit norm as in the reference.
    """

    def __init__(
        self,
        space: ProductSpace,
        K: int = 256,
        temperature: float = 1.0,
        attention: str = "sqdist",
        ambient: bool = False,
    ):
        super().__init__()
        self.bits = check_code_config(space.M * space.dim, space.M, K)
        self.ambient = bool(ambient)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        self.attention = attention
        self.space = space
        self.M, self.K, self.dim = space.M, int(K), space.dim
        self.temperature = float(temperature)
        chunk = self.dim + 1 if self.ambient else self.dim
        cb = torch.empty(self.M, self.K, chunk)
        nn.init.xavier_uniform_(cb.view(self.M * self.K, chunk))
        cb = nn.functional.normalize(cb, dim=-1)
        self.codebooks = nn.Parameter(cb[..., 1:].contiguous() if self.ambient else cb)

    @property
    def chunk_dim(self) -> int:
        """Input features per subspace: ``d + 1`` with ``ambient``, else ``d``."""
        return self.dim + 1 if self.ambient else self.dim

    @property
    def feature_dim(self) -> int:
        """Input feature length ``M * chunk_dim``."""
        return self.M * self.chunk_dim

    def codewords(self) -> torch.Tensor:
        """Codewords on the product space, ``(M, K, D')``."""
        return self.space.embed(self.codebooks.transpose(0, 1)).transpose(0, 1)

    def _split(self, feats: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(feats) or feats.dim() != 2 or feats.shape[1] != self.feature_dim:
            shape = tuple(feats.shape) if torch.is_tensor(feats) else type(feats).__name__
            raise ValueError(
                f"features must have shape (B, {self.feature_dim}) = (B, M*{self.chunk_dim}) "
                f"with M={self.M}, d={self.dim}, ambient={self.ambient}; got {shape}"
            )
        v = feats.view(feats.shape[0], self.M, self.chunk_dim)
        return v[..., 1:] if self.ambient else v

    def tangent_input(self, feats: torch.Tensor) -> torch.Tensor:
        """Features ``(B, feature_dim)`` -> the tangent vectors they stand for ``(B, M, d)``.

        No clipping: the first coordinate of each chunk dropped with ``ambient``, else
        the features reshaped.
        """
        return self._split(feats)

    def embed(self, feats: torch.Tensor) -> torch.Tensor:
        """Features ``(B, M*d)`` -> points on the product space ``(B, M, D')``."""
        return self.space.embed(self._split(feats))

    def forward(self, feats: torch.Tensor) -> QuantizerOutput:
        """Quantize features ``(B, M*d)``; see :class:`QuantizerOutput`."""
        points = self.embed(feats)
        cw = self.codewords()
        sq = self.space.pairwise_sqdist(points, cw, subspace_first=True).transpose(0, 1)
        if self.attention == "sqgeodesic":
            score = self.space.pairwise_dist(points, cw, subspace_first=True).transpose(0, 1)
            score = score.square()
        else:
            score = sq
        assign = torch.softmax(-self.temperature * score, dim=-1)
        soft = self.space.centroid(assign, cw)
        codes = sq.argmin(dim=-1)
        return QuantizerOutput(points=points, soft=soft, codes=codes, assign=assign, sqdist=sq)

    @torch.no_grad()
    def encode_points(self, points: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Hard codes of points ``(N, M, D')`` -> ``(N, M)`` (uint8 when K <= 256)."""
        cw = self.codewords()
        out = []
        for chunk in points.split(batch_size):
            sq = self.space.pairwise_sqdist(chunk, cw, subspace_first=True)
            out.append(sq.argmin(dim=-1).transpose(0, 1))
        codes = torch.cat(out) if out else torch.empty(0, self.M, dtype=torch.long)
        return codes.to(torch.uint8) if self.K <= 256 else codes

    @torch.no_grad()
    def encode(self, feats: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Hard codes of features ``(N, M*d)`` -> ``(N, M)`` uint8 (K <= 256) or int64."""
        return self.encode_points(self.embed(feats), batch_size)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``(N, M)`` -> the codeword points ``(N, M, D')``."""
        cw = self.codewords()
        idx = codes.long()
        return torch.stack([cw[m, idx[:, m]] for m in range(self.M)], dim=1)

    @torch.no_grad()
    def _init_points(self, feats: torch.Tensor) -> torch.Tensor:
        """The clipped (Euclidean: normalised) tangent vectors ``(N, M, d)`` of ``feats``
        that both initialisations draw codewords from; at least ``K`` of them."""
        v = self._split(feats)
        if v.shape[0] < self.K:
            raise ValueError(f"need at least K={self.K} features to initialise, got {v.shape[0]}")
        return self.space.log(self.space.embed(v))

    @torch.no_grad()
    def init_from_features(self, feats: torch.Tensor, generator: torch.Generator | None = None):
        """Initialise codewords from ``K`` random training features per subspace.

        Uses the (clipped) tangent vectors of randomly chosen samples, which avoids dead
        codewords far from the data. ``feats``: ``(N, M*d)`` with ``N >= K``.
        """
        pts = self._init_points(feats)
        for m in range(self.M):
            idx = torch.randperm(pts.shape[0], generator=generator)[: self.K]
            self.codebooks.data[m] = pts[idx, m].to(self.codebooks.dtype)

    @torch.no_grad()
    def init_kmeans(self, feats: torch.Tensor, seed: int = 0, max_iter: int = 50):
        """Initialise codewords by k-means of the (clipped) tangent vectors, per subspace.

        The tangent-space k-means centroids of ``feats`` ``(N, M*d)`` (scikit-learn,
        ``K`` clusters, one k-means++ start seeded by ``seed``) become the codewords, so the
        untrained quantizer starts where classical PQ on the same vectors would.
        """
        from sklearn.cluster import KMeans

        pts = to_numpy(self._init_points(feats), np.float64)
        for m in range(self.M):
            km = KMeans(self.K, n_init=1, max_iter=max_iter, random_state=seed + m).fit(pts[:, m])
            self.codebooks.data[m] = torch.as_tensor(km.cluster_centers_).to(self.codebooks.dtype)

    @torch.no_grad()
    def cluster_centroids(
        self, points: torch.Tensor, codes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The space's centroid of the points each codeword holds, and how many it holds.

        ``points`` ``(N, M, D')`` on the product space, ``codes`` ``(N, M)``. Returns
        ``(M, K, D')`` centroids (the Lorentz centroid of a cluster on a hyperboloid, its
        mean in a flat space; rows of empty codewords are meaningless) and ``(M, K)``
        counts. The Lorentz centroid does not depend on the weights' scale, so a
        cluster's centroid is that of its ambient mean alone.
        """
        idx = codes.long()
        sums = points.new_zeros(self.M, self.K, points.shape[-1])
        counts = points.new_zeros(self.M, self.K)
        for m in range(self.M):
            sums[m].index_add_(0, idx[:, m], points[:, m])
            counts[m] = torch.bincount(idx[:, m], minlength=self.K).to(points.dtype)
        means = sums / counts.clamp_min(1.0).unsqueeze(-1)
        alone = torch.eye(self.K, dtype=points.dtype, device=points.device)
        alone = alone.unsqueeze(1).expand(self.K, self.M, self.K)
        return self.space.centroid(alone, means).transpose(0, 1), counts

    @torch.no_grad()
    def refine_(
        self, points: torch.Tensor, iterations: int = 10, batch_size: int = 4096
    ) -> list[int]:
        """Lloyd iterations on the codebooks, in place: k-means in each subspace's geometry.

        Each iteration assigns every point ``(N, M, D')`` to its nearest codeword (the
        squared distance that encodes, :meth:`encode_points`) and moves each codeword to
        the centroid of its points (:meth:`cluster_centroids`: on a hyperboloid the
        Lorentz centroid, which minimises the sum of squared Lorentzian distances; so
        every step lowers the quantization error the codes pay). A codeword no point
        picks is moved onto the point of its subspace quantized worst (the largest
        squared distance to its codeword, each such point once). Stops early when no
        code changes. Not in the paper, whose codewords are what training left
        (``codebook_refine`` in a config). Returns the number of codes that changed at
        each iteration.
        """
        if points.dim() != 3 or points.shape[1] != self.M:
            raise ValueError(f"points must have shape (N, {self.M}, D'); got {tuple(points.shape)}")
        if points.shape[0] < self.K:
            raise ValueError(f"need at least K={self.K} points to refine, got {points.shape[0]}")
        points = points.to(self.codebooks.dtype)
        changed: list[int] = []
        codes = self.encode_points(points, batch_size).long()
        for _ in range(int(iterations)):
            cw, counts = self.cluster_centroids(points, codes)
            dead = counts == 0
            if dead.any():
                # the codewords as they will encode (a flat space with ``normalize``
                # puts its means back on the sphere)
                live = self.space.embed(self.space.log(cw.transpose(0, 1)))  # (K, M, D')
                sub = torch.arange(self.M, device=codes.device)
                err = self.space.sqdist(points, live[codes, sub])  # (N, M)
                for m in torch.nonzero(dead.any(dim=1)).flatten().tolist():
                    worst = torch.topk(err[:, m], int(dead[m].sum())).indices
                    cw[m, dead[m]] = points[worst, m]
            tangent = self.space.log(cw.transpose(0, 1)).transpose(0, 1)
            self.codebooks.data.copy_(tangent.to(self.codebooks.dtype))
            new = self.encode_points(points, batch_size).long()
            changed.append(int((new != codes).sum()))
            codes = new
            if changed[-1] == 0:
                break
        return changed

    @torch.no_grad()
    def codeword_usage(self, feats: torch.Tensor) -> torch.Tensor:
        """How many features pick each codeword: ``(M, K)`` int64 counts."""
        codes = self.encode(feats).long()
        usage = torch.zeros(self.M, self.K, dtype=torch.long)
        for m in range(self.M):
            usage[m] = torch.bincount(codes[:, m], minlength=self.K)
        return usage

    def extra_repr(self) -> str:
        return f"M={self.M}, K={self.K}, d={self.dim}, bits={self.bits}, T={self.temperature}"
