r"""Products of M spaces, one per product-quantization subspace.

Two spaces with one interface, so every ablation is one switch:

* :class:`ProductLorentz` — ``M`` hyperboloids :math:`\mathbb H^d_{k_1} \times \dots \times
  \mathbb H^d_{k_M}`, each with its own learnable curvature (HiHPQ);
* :class:`ProductEuclidean` — ``M`` copies of :math:`\mathbb R^d` (the Euclidean
  counterpart, as in SPQ / MeCoQ), optionally with unit-normalised sub-vectors.

Shapes: features enter as tangent vectors ``(..., M, d)``; points of the product
have shape ``(..., M, D')`` with ``D' = d + 1`` (Lorentz) or ``D' = d`` (Euclidean).
Pairwise functions return one matrix per subspace, ``(M, B, N)``; sum over the first
dimension for the product distance.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hihpq_lib.geometry import lorentz as L

__all__ = ["ProductSpace", "ProductLorentz", "ProductEuclidean", "make_space"]


def _check_features(v: torch.Tensor, M: int, d: int, name: str = "v") -> None:
    if not torch.is_tensor(v):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
    if v.dim() < 2 or v.shape[-2:] != (M, d):
        raise ValueError(f"{name} must have shape (..., M={M}, d={d}), got {tuple(v.shape)}")


class ProductSpace(nn.Module):
    """Common interface of the product spaces (see the module docstring)."""

    geometry: str = ""

    def __init__(self, M: int, dim: int):
        super().__init__()
        if int(M) < 1 or int(dim) < 1:
            raise ValueError(f"M and dim must be positive integers, got M={M}, dim={dim}")
        self.M, self.dim = int(M), int(dim)

    @property
    def point_dim(self) -> int:
        """Length ``D'`` of one sub-point."""
        raise NotImplementedError

    def embed(self, v: torch.Tensor) -> torch.Tensor:
        """Tangent features ``(..., M, d)`` -> points ``(..., M, D')``."""
        raise NotImplementedError

    def log(self, x: torch.Tensor) -> torch.Tensor:
        """Points ``(..., M, D')`` -> tangent features ``(..., M, d)``."""
        raise NotImplementedError

    def pairwise_sqdist(self, x: torch.Tensor, y: torch.Tensor, subspace_first: bool = False):
        """Squared distances per subspace: ``(B, M, D'), (N, M, D') -> (M, B, N)``.

        With ``subspace_first=True``, ``y`` is given per subspace as ``(M, N, D')``
        (e.g. the codewords).
        """
        raise NotImplementedError

    def pairwise_dist(self, x: torch.Tensor, y: torch.Tensor, subspace_first: bool = False):
        """Distances per subspace: ``(B, M, D'), (N, M, D') -> (M, B, N)``."""
        raise NotImplementedError

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Elementwise distances per subspace: ``(..., M, D')`` twice -> ``(..., M)``."""
        raise NotImplementedError

    def centroid(self, weights: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Weighted centroids: weights ``(B, M, K)``, points ``(M, K, D')`` -> ``(B, M, D')``."""
        raise NotImplementedError

    def project_parameters_(self) -> None:
        """Keep learnable geometry parameters in their safe range (after each step)."""

    @staticmethod
    def _subspace_first(x: torch.Tensor) -> torch.Tensor:
        # (B, M, D') -> (M, B, D')
        return x.transpose(0, 1)


class ProductLorentz(ProductSpace):
    r"""Product of ``M`` Lorentz hyperboloids with per-subspace learnable curvature.

    Parameters
    ----------
    M : int
        Number of subspaces (codebooks).
    dim : int
        Spatial dimension ``d`` of each hyperboloid (points live in :math:`\mathbb R^{d+1}`).
    curvature : float or sequence of M floats
        Initial curvature magnitude :math:`c_m` (sectional curvature :math:`-c_m`;
        geoopt's ``k = 1/c``), like the reference's ``init_neg_curvs``.
    learn_curvature : bool
        Whether the curvatures are trained.
    clip_r : float or None
        Tangent-norm clip radius applied before the exponential map (reference: 1.0-1.5).
    curvature_range : (float, float)
        Safe range for :math:`c_m`; the reference clamps to ``[0.01, 10]`` after each step
        (:meth:`project_parameters_`) and so do we, and :attr:`k` clamps too.

    Attributes
    ----------
    curvature : nn.Parameter, shape (M,)
    """

    geometry = "lorentz"

    def __init__(
        self,
        M: int,
        dim: int,
        curvature=1.0,
        learn_curvature: bool = True,
        clip_r: float | None = 1.5,
        curvature_range: tuple[float, float] = (0.01, 10.0),
    ):
        super().__init__(M, dim)
        lo, hi = curvature_range
        if not (0 < lo < hi):
            raise ValueError(f"curvature_range must satisfy 0 < low < high, got {curvature_range}")
        c = torch.as_tensor(curvature, dtype=torch.get_default_dtype()).flatten()
        if c.numel() == 1:
            c = c.repeat(self.M)
        if c.numel() != self.M:
            raise ValueError(f"curvature needs 1 or M={self.M} values, got {c.numel()}")
        if not bool(((c >= lo) & (c <= hi)).all()):
            raise ValueError(f"initial curvature {c.tolist()} is outside {curvature_range}")
        self.curvature = nn.Parameter(c.clone(), requires_grad=learn_curvature)
        self.curvature_range = (float(lo), float(hi))
        if clip_r is not None and not clip_r > 0:
            raise ValueError(f"clip_r must be positive or None, got {clip_r}")
        self.clip_r = clip_r

    @property
    def point_dim(self) -> int:
        return self.dim + 1

    @property
    def k(self) -> torch.Tensor:
        """geoopt's curvature parameter per subspace, ``k = 1 / c`` (c clamped), shape (M,)."""
        return 1.0 / self.curvature.clamp(*self.curvature_range)

    def _k_points(self, ref: torch.Tensor) -> torch.Tensor:
        # broadcast against (..., M, D')
        return self.k.to(ref.dtype).view(self.M, 1)

    def _k_pairs(self, ref: torch.Tensor) -> torch.Tensor:
        # broadcast against (M, B, N)
        return self.k.to(ref.dtype).view(self.M, 1, 1)

    def embed(self, v):
        _check_features(v, self.M, self.dim)
        return L.expmap0(L.lift(v), k=self._k_points(v), clip_r=self.clip_r)

    def log(self, x):
        _check_features(x, self.M, self.point_dim, "x")
        return L.logmap0(x, k=self._k_points(x))[..., 1:]

    def _pair(self, x, y, subspace_first):
        xs = self._subspace_first(x)
        if y is x:  # distances within one set: exact zero diagonal (see lorentz.pairwise_sqdist)
            return xs, None
        return xs, (y if subspace_first else self._subspace_first(y))

    def pairwise_sqdist(self, x, y, subspace_first: bool = False):
        xs, ys = self._pair(x, y, subspace_first)
        return L.pairwise_sqdist(xs, ys, k=self._k_pairs(x))

    def pairwise_dist(self, x, y, subspace_first: bool = False):
        xs, ys = self._pair(x, y, subspace_first)
        return L.pairwise_dist(xs, ys, k=self._k_pairs(x))

    def dist(self, x, y):
        return L.dist(x, y, k=self._k_points(x))

    def centroid(self, weights, points):
        # (M, B, K) @ (M, K, D') -> (M, B, D')
        mu = L.lorentz_centroid(points, weights.transpose(0, 1), k=self._k_pairs(points))
        return mu.transpose(0, 1)

    def to_poincare(self, x: torch.Tensor) -> torch.Tensor:
        """Points ``(..., M, d+1)`` -> unit Poincaré-ball coordinates ``(..., M, d)``."""
        return L.to_poincare(x, k=self._k_points(x))

    @torch.no_grad()
    def project_parameters_(self):
        self.curvature.clamp_(*self.curvature_range)

    def extra_repr(self) -> str:
        return f"M={self.M}, dim={self.dim}, clip_r={self.clip_r}"


class ProductEuclidean(ProductSpace):
    """``M`` copies of :math:`\\mathbb R^d`: the Euclidean counterpart of :class:`ProductLorentz`.

    Parameters
    ----------
    M, dim : int
    normalize : bool
        Unit-normalise each sub-vector (and codeword) as SPQ/MeCoQ do, so distances are
        bounded like cosine similarities (``|a - b|^2 = 2 - 2 cos``).
    """

    geometry = "euclidean"

    def __init__(self, M: int, dim: int, normalize: bool = True):
        super().__init__(M, dim)
        self.normalize = bool(normalize)

    @property
    def point_dim(self) -> int:
        return self.dim

    def embed(self, v):
        _check_features(v, self.M, self.dim)
        return nn.functional.normalize(v, dim=-1) if self.normalize else v

    def log(self, x):
        _check_features(x, self.M, self.dim, "x")
        return x

    def pairwise_sqdist(self, x, y, subspace_first: bool = False):
        xs = self._subspace_first(x)
        ys = y if subspace_first else self._subspace_first(y)
        sq = (
            (xs * xs).sum(-1, keepdim=True)
            + (ys * ys).sum(-1).unsqueeze(-2)
            - 2.0 * xs @ ys.transpose(-1, -2)
        )
        return sq.clamp_min(0.0)

    def pairwise_dist(self, x, y, subspace_first: bool = False):
        floor = 1e-12 if x.dtype != torch.float64 else 1e-30
        return torch.sqrt(self.pairwise_sqdist(x, y, subspace_first).clamp_min(floor))

    def dist(self, x, y):
        floor = 1e-12 if x.dtype != torch.float64 else 1e-30
        return torch.sqrt(((x - y) ** 2).sum(-1).clamp_min(floor))

    def centroid(self, weights, points):
        w = weights.transpose(0, 1)
        mu = (w / w.sum(-1, keepdim=True).clamp_min(1e-12)) @ points
        return mu.transpose(0, 1)

    def to_poincare(self, x: torch.Tensor) -> torch.Tensor:
        """For plots: squash into the unit ball with ``x / (1 + |x|)``."""
        return x / (1.0 + x.norm(dim=-1, keepdim=True))

    def extra_repr(self) -> str:
        return f"M={self.M}, dim={self.dim}, normalize={self.normalize}"


def make_space(geometry: str, M: int, dim: int, **kwargs) -> ProductSpace:
    """Build a product space by name: ``"lorentz"`` or ``"euclidean"``.

    Keyword arguments go to the class (unknown ones raise ``TypeError``).
    """
    name = str(geometry).lower()
    if name in ("lorentz", "hyperbolic", "hyperboloid"):
        return ProductLorentz(M, dim, **kwargs)
    if name == "euclidean":
        return ProductEuclidean(M, dim, **kwargs)
    raise ValueError(f"unknown geometry {geometry!r}: use 'lorentz' or 'euclidean'")


def code_bits(M: int, K: int) -> int:
    """Code length in bits: ``M * log2(K)``."""
    return int(M * math.log2(K))
