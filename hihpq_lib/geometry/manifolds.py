r"""Products of M spaces, one per product-quantization subspace.

Two spaces with one interface (:class:`ProductSpace`, an abstract base in the spirit of
geoopt's ``Manifold``), so every ablation is one switch and no caller asks which space it
holds:

* :class:`ProductLorentz` — ``M`` hyperboloids :math:`\mathbb H^d_{k_1} \times \dots \times
  \mathbb H^d_{k_M}`, each with its own learnable curvature (HiHPQ);
* :class:`ProductEuclidean` — ``M`` copies of :math:`\mathbb R^d` (the Euclidean
  counterpart, as in SPQ / MeCoQ), optionally with unit-normalised sub-vectors.

Shapes: features enter as tangent vectors ``(..., M, d)``; points of the product
have shape ``(..., M, D')`` with ``D' = d + 1`` (Lorentz) or ``D' = d`` (Euclidean).
Pairwise functions return one matrix per subspace, ``(M, B, N)``; sum over the first
dimension for the product distance.

Curvature: in code the curvature is geoopt's ``k`` (:attr:`ProductSpace.k`, sectional
curvature :math:`-1/k`); the learnable parameter :attr:`ProductLorentz.curvature` is the
paper's curvature magnitude :math:`c = 1/k` (the reference learns and clamps it).
"""

from __future__ import annotations

import abc
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


class ProductSpace(nn.Module, metaclass=abc.ABCMeta):
    """The contract every product space implements (see the module docstring).

    Callers (quantizer, losses, model, trainer, figures) use only these members, so a
    new geometry is one subclass. Abstract members: :attr:`point_dim`, :attr:`k`,
    :meth:`clip_tangent`, :meth:`expmap0`, :meth:`log`, :meth:`project`,
    :meth:`constraint_residual`, :meth:`sqdist`, :meth:`pairwise_sqdist`, :meth:`dist`,
    :meth:`pairwise_dist`, :meth:`centroid`, :meth:`to_poincare`. :meth:`embed`,
    :meth:`project_parameters_` and :meth:`summary` have defaults.

    Attributes
    ----------
    geometry : str
        The space's name (``"lorentz"``, ``"euclidean"``), recorded in configs and index
        files; never needed to decide how to compute.
    M, dim : int
        Number of subspaces and tangent dimension ``d`` of each.
    """

    geometry: str = ""

    def __init__(self, M: int, dim: int):
        super().__init__()
        if int(M) < 1 or int(dim) < 1:
            raise ValueError(f"M and dim must be positive integers, got M={M}, dim={dim}")
        self.M, self.dim = int(M), int(dim)

    # ------------------------------------------------------------------ description
    @property
    @abc.abstractmethod
    def point_dim(self) -> int:
        """Length ``D'`` of one sub-point."""

    @property
    @abc.abstractmethod
    def k(self) -> torch.Tensor | None:
        """geoopt's curvature parameter per subspace, shape ``(M,)``; ``None`` when flat."""

    def summary(self) -> dict:
        """The learnable geometry values, as plain numbers, for a metrics record.

        Empty when the space has none; see the subclasses.
        """
        return {}

    # ------------------------------------------------------------ maps to the space
    @abc.abstractmethod
    def clip_tangent(self, v: torch.Tensor) -> torch.Tensor:
        """Tangent features ``(..., M, d)`` with the space's norm clip applied, same shape."""

    @abc.abstractmethod
    def expmap0(self, v: torch.Tensor) -> torch.Tensor:
        """Tangent features at the origin ``(..., M, d)`` -> points ``(..., M, D')`` (no clip)."""

    def embed(self, v: torch.Tensor) -> torch.Tensor:
        """Tangent features ``(..., M, d)`` -> points ``(..., M, D')``: ``expmap0(clip_tangent(v))``."""
        _check_features(v, self.M, self.dim)
        return self.expmap0(self.clip_tangent(v))

    @abc.abstractmethod
    def log(self, x: torch.Tensor) -> torch.Tensor:
        """Points ``(..., M, D')`` -> tangent features ``(..., M, d)`` (inverse of :meth:`expmap0`)."""

    @abc.abstractmethod
    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Ambient vectors ``(..., M, D')`` -> the nearest points of the space, same shape."""

    @abc.abstractmethod
    def constraint_residual(self, x: torch.Tensor) -> torch.Tensor:
        """How far points ``(..., M, D')`` are off the space, ``(..., M)`` (0 = on it)."""

    # -------------------------------------------------------------------- distances
    @abc.abstractmethod
    def sqdist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Elementwise squared distances per subspace: ``(..., M, D')`` twice -> ``(..., M)``.

        The quantity the codebook attention uses (squared Lorentzian distance on the
        hyperboloid, squared Euclidean distance in the flat space).
        """

    @abc.abstractmethod
    def pairwise_sqdist(
        self, x: torch.Tensor, y: torch.Tensor, subspace_first: bool = False
    ) -> torch.Tensor:
        """Squared distances per subspace: ``(B, M, D'), (N, M, D') -> (M, B, N)``.

        With ``subspace_first=True``, ``y`` is given per subspace as ``(M, N, D')``
        (e.g. the codewords). ``y is x`` gives an exactly zero diagonal.
        """

    @abc.abstractmethod
    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Elementwise geodesic distances per subspace: ``(..., M, D')`` twice -> ``(..., M)``."""

    @abc.abstractmethod
    def pairwise_dist(
        self, x: torch.Tensor, y: torch.Tensor, subspace_first: bool = False
    ) -> torch.Tensor:
        """Geodesic distances per subspace: ``(B, M, D'), (N, M, D') -> (M, B, N)``."""

    @abc.abstractmethod
    def centroid(self, weights: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Weighted centroids: weights ``(B, M, K)``, points ``(M, K, D')`` -> ``(B, M, D')``."""

    # ---------------------------------------------------------------------- figures
    @abc.abstractmethod
    def to_poincare(self, x: torch.Tensor) -> torch.Tensor:
        """Points ``(..., M, D')`` -> coordinates in the open unit ball ``(..., M, d)`` (plots only)."""

    # ------------------------------------------------------------------- parameters
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
        Initial curvature magnitude, the paper's :math:`c_m = 1/k_m` (sectional curvature
        :math:`-c_m`), like the reference's ``init_neg_curvs``.
    learn_curvature : bool
        Whether the curvatures are trained.
    clip_r : float or None
        Tangent-norm clip radius applied before the exponential map (reference: 1.0-1.5).
    curvature_range : (float, float)
        Safe range for the magnitude :math:`c_m`; the reference clamps to ``[0.01, 10]``
        after each step (:meth:`project_parameters_`) and so do we, and :attr:`k` clamps
        too (so ``k`` lies in ``[0.1, 100]`` by default).

    Attributes
    ----------
    curvature : nn.Parameter, shape (M,)
        The learnable magnitudes :math:`c_m` (the paper's parametrisation; the geometry
        uses :attr:`k`).
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
        magnitude = torch.as_tensor(curvature, dtype=torch.get_default_dtype()).flatten()
        if magnitude.numel() == 1:
            magnitude = magnitude.repeat(self.M)
        if magnitude.numel() != self.M:
            raise ValueError(f"curvature needs 1 or M={self.M} values, got {magnitude.numel()}")
        if not bool(((magnitude >= lo) & (magnitude <= hi)).all()):
            raise ValueError(f"initial curvature {magnitude.tolist()} is outside {curvature_range}")
        self.curvature = nn.Parameter(magnitude.clone(), requires_grad=learn_curvature)
        self.curvature_range = (float(lo), float(hi))
        if clip_r is not None and not clip_r > 0:
            raise ValueError(f"clip_r must be positive or None, got {clip_r}")
        self.clip_r = clip_r

    @property
    def point_dim(self) -> int:
        return self.dim + 1

    @property
    def k(self) -> torch.Tensor:
        r"""geoopt's curvature parameter per subspace, shape ``(M,)``.

        .. math:: k_m = 1 / \operatorname{clamp}(c_m, c_{\min}, c_{\max})
        """
        return 1.0 / self.curvature.clamp(*self.curvature_range)

    def summary(self) -> dict:
        """``{"curvature": [c_1, ..., c_M]}``, the magnitudes rounded to 4 decimals."""
        return {"curvature": [round(float(c), 4) for c in self.curvature.detach()]}

    def _k_points(self, ref: torch.Tensor) -> torch.Tensor:
        # broadcast against (..., M, D')
        return self.k.to(ref.dtype).view(self.M, 1)

    def _k_pairs(self, ref: torch.Tensor) -> torch.Tensor:
        # broadcast against (M, B, N)
        return self.k.to(ref.dtype).view(self.M, 1, 1)

    def clip_tangent(self, v):
        """:func:`~hihpq_lib.geometry.lorentz.clip_tangent` at radius ``clip_r`` (no-op for ``None``)."""
        return L.clip_tangent(v, self.clip_r)

    def expmap0(self, v):
        """:func:`~hihpq_lib.geometry.lorentz.expmap0` of ``(0, v)`` on each hyperboloid."""
        return L.expmap0(L.lift(v), k=self._k_points(v))

    def log(self, x):
        _check_features(x, self.M, self.point_dim, "x")
        return L.logmap0(x, k=self._k_points(x))[..., 1:]

    def project(self, x):
        """:func:`~hihpq_lib.geometry.lorentz.project`: the time coordinate recomputed per subspace."""
        return L.project(x, k=self._k_points(x))

    def constraint_residual(self, x):
        r"""Relative violation :math:`|\langle x, x\rangle_{\mathcal L} + k| / k`, ``inf`` off the upper sheet."""
        kk = self.k.to(x.dtype)
        res = (L.inner(x, x) + kk).abs() / kk
        return torch.where(x[..., 0] > 0, res, torch.full_like(res, math.inf))

    def _pair(self, x, y, subspace_first):
        xs = self._subspace_first(x)
        if y is x:  # distances within one set: exact zero diagonal (see lorentz.pairwise_sqdist)
            return xs, None
        return xs, (y if subspace_first else self._subspace_first(y))

    def sqdist(self, x, y):
        """Squared Lorentzian distance per subspace (:func:`~hihpq_lib.geometry.lorentz.sqdist`)."""
        return L.sqdist(x, y, k=self._k_points(x))

    def pairwise_sqdist(self, x, y, subspace_first: bool = False):
        xs, ys = self._pair(x, y, subspace_first)
        return L.pairwise_sqdist(xs, ys, k=self._k_pairs(x))

    def pairwise_dist(self, x, y, subspace_first: bool = False):
        xs, ys = self._pair(x, y, subspace_first)
        return L.pairwise_dist(xs, ys, k=self._k_pairs(x))

    def dist(self, x, y):
        return L.dist(x, y, k=self._k_points(x))

    def centroid(self, weights, points):
        """Weighted Lorentz centroids (:func:`~hihpq_lib.geometry.lorentz.lorentz_centroid`)."""
        # (M, B, K) @ (M, K, D') -> (M, B, D')
        mu = L.lorentz_centroid(points, weights.transpose(0, 1), k=self._k_pairs(points))
        return mu.transpose(0, 1)

    def to_poincare(self, x: torch.Tensor) -> torch.Tensor:
        """Points ``(..., M, d+1)`` -> unit Poincaré-ball coordinates ``(..., M, d)``.

        :func:`~hihpq_lib.geometry.lorentz.to_poincare`: an isometry onto the ball model, norms
        kept strictly below 1.
        """
        return L.to_poincare(x, k=self._k_points(x))

    @torch.no_grad()
    def project_parameters_(self):
        """Clamp the curvature magnitudes to ``curvature_range`` (in place)."""
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
        bounded like cosine similarities (``|a - b|^2 = 2 - 2 cos``). The points then
        live on unit spheres: :meth:`expmap0` and :meth:`project` normalise.

    The flat space has no curvature (:attr:`k` is ``None``) and no norm clip
    (:attr:`clip_r` is ``None``: :meth:`clip_tangent` returns its input).
    """

    geometry = "euclidean"
    clip_r = None

    def __init__(self, M: int, dim: int, normalize: bool = True):
        super().__init__(M, dim)
        self.normalize = bool(normalize)

    @property
    def point_dim(self) -> int:
        return self.dim

    @property
    def k(self) -> None:
        """``None``: a flat space has no curvature parameter."""
        return None

    def clip_tangent(self, v):
        """The identity (no clip radius in the flat space)."""
        return v

    def expmap0(self, v):
        """The identity, or the unit normalisation with ``normalize``."""
        return nn.functional.normalize(v, dim=-1) if self.normalize else v

    def log(self, x):
        _check_features(x, self.M, self.dim, "x")
        return x

    def project(self, x):
        """The identity, or the unit normalisation with ``normalize``."""
        return nn.functional.normalize(x, dim=-1) if self.normalize else x

    def constraint_residual(self, x):
        """``| |x| - 1 |`` with ``normalize``, else zeros."""
        if self.normalize:
            return (x.norm(dim=-1) - 1.0).abs()
        return x.new_zeros(x.shape[:-1])

    def sqdist(self, x, y):
        """Squared Euclidean distance per subspace."""
        return ((x - y) ** 2).sum(-1)

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
        """Weighted means (weights normalised to sum 1); not re-normalised with ``normalize``."""
        w = weights.transpose(0, 1)
        mu = (w / w.sum(-1, keepdim=True).clamp_min(1e-12)) @ points
        return mu.transpose(0, 1)

    def to_poincare(self, x: torch.Tensor) -> torch.Tensor:
        r"""For plots only: squash into the open unit ball with :math:`x / (1 + \|x\|)`.

        A radial, monotone map (directions and the order of norms are kept), not an
        isometry: so Euclidean and hyperbolic runs can share a disk figure.
        """
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
