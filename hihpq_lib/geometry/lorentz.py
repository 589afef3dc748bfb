r"""The Lorentz (hyperboloid) model of hyperbolic space, numerically safe in float32.

Conventions follow :mod:`geoopt.manifolds.lorentz` (and its keyword-only ``k``):

* a point is a vector :math:`x = (x_0, x_1, \dots, x_n) \in \mathbb{R}^{n+1}`, time
  coordinate first, on the upper sheet of

  .. math:: \mathbb{H}^n_k = \{x : \langle x, x\rangle_{\mathcal L} = -k,\; x_0 > 0\},
            \qquad \langle x, y\rangle_{\mathcal L} = -x_0 y_0 + \sum_{i\ge 1} x_i y_i ;

* ``k > 0`` is geoopt's "negative curvature" parameter: the sectional curvature is
  :math:`-1/k`. The HiHPQ reference code stores the curvature magnitude ``c = 1/k``;
  :class:`hihpq_lib.geometry.manifolds.ProductLorentz` does too and converts;
* the origin is :math:`o = (\sqrt k, 0, \dots, 0)`; a tangent vector at the origin has
  time coordinate 0, so it is stored as :math:`(0, v)` with :math:`v \in \mathbb{R}^n`
  (:func:`lift` pads the zero).

Every function takes ``k`` as a float or a tensor that broadcasts against the result
with the feature dimension kept (for example shape ``(M, 1, 1)`` for ``(M, B, n+1)``
inputs). Results follow the dtype of the inputs.

Numerical safety
----------------
Plain formulas overflow (``cosh`` of large arguments), divide by zero (``v / ||v||`` at
``v = 0``) and have infinite derivatives (``arcosh'(1)``, ``sqrt'(0)``). Each is
handled by one documented clamp, so that every finite float32 input gives finite values
and finite gradients (tested for tangent norms 1e-8 to 1e3 and k from 0.01 to 100):

1. *Angle clamp* — in :func:`expmap0` the hyperbolic angle
   :math:`\theta = \|v\| / \sqrt k` is clamped to :func:`max_angle` (32 in float32, 300
   in float64), far beyond any radius the method uses (the tangent norm is clipped to
   ``clip_r`` <= 3 first), so that :math:`k\cosh^2\theta` stays representable.
2. *Norm floor* — norms are computed as :math:`\sqrt{\max(\|v\|^2, \epsilon^2)}`
   (``eps`` of :func:`_eps`), so ``v / ||v||`` and the derivative of the norm at 0 are finite;
   ``sinh(θ)/θ`` and ``asinh(s)/s`` use their Taylor series near 0.
3. *Distance floor* — :func:`dist` uses the identity
   :math:`\operatorname{arcosh}(z) = 2\operatorname{asinh}\sqrt{(z-1)/2}` on the squared
   Lorentzian distance, floored at a tiny positive value: no overflow for far points,
   a finite gradient for identical points, and ``dist(x, x)`` of order ``sqrt(eps)``.
4. *Centroid floor* — :func:`lorentz_centroid` divides by
   :math:`\sqrt{\max(|\langle a, a\rangle_{\mathcal L}|, \epsilon)}`.
5. *Ball clamp* — :func:`to_poincare` keeps norms at most ``1 - 1e-6`` (float32) or
   ``1 - 1e-12`` (float64), so plots never touch the boundary.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "inner",
    "pairwise_inner",
    "lift",
    "origin",
    "clip_tangent",
    "expmap0",
    "logmap0",
    "expmap",
    "logmap",
    "transp",
    "tangent_project",
    "sqdist",
    "pairwise_sqdist",
    "dist",
    "pairwise_dist",
    "project",
    "lorentz_centroid",
    "to_poincare",
    "from_poincare",
    "geodesic0",
    "max_angle",
    "SQDIST_SWITCH",
    "DIST_FLOOR_FLOAT32",
]

#: :func:`sqdist` keeps the inner-product form ``-2k - 2<x, y>`` where it exceeds
#: ``SQDIST_SWITCH * |<x, y>|`` (about 1e-3 of its own magnitude), the difference form
#: elsewhere. Shared with the compiled tables of :mod:`hihpq_lib.quantization.adc_kernel`.
SQDIST_SWITCH = 2e-3
#: Floor of the squared distance under the square root of :func:`dist` in float32 and
#: half precision (clamp 3); float64 uses ``_eps(float64) ** 2``. Shared with
#: :mod:`hihpq_lib.quantization.adc_kernel`.
DIST_FLOOR_FLOAT32 = 1e-12


def _eps(dtype: torch.dtype) -> float:
    """Smallest norm / squared-distance floor used for ``dtype``."""
    return 1e-7 if dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-15


def max_angle(dtype: torch.dtype) -> float:
    """Largest hyperbolic angle :math:`\\|v\\|/\\sqrt k` that :func:`expmap0` allows.

    32 for float32 (``cosh(32)^2 * 100`` is far below the float32 maximum),
    300 for float64.
    """
    return 32.0 if dtype in (torch.float16, torch.bfloat16, torch.float32) else 300.0


def _as_k(k, like: torch.Tensor) -> torch.Tensor:
    """``k`` as a tensor of ``like``'s dtype and device; checks k > 0."""
    if not torch.is_tensor(k):
        if not (isinstance(k, (int, float)) and math.isfinite(k) and k > 0):
            raise ValueError(f"k must be a positive finite number, got {k!r}")
        return torch.tensor(float(k), dtype=like.dtype, device=like.device)
    return k.to(dtype=like.dtype, device=like.device)


def _check_point_dim(x: torch.Tensor, name: str = "x") -> None:
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[-1] < 2:
        raise ValueError(
            f"{name} must have shape (..., n+1) with n >= 1 (time coordinate first), "
            f"got {tuple(x.shape)}"
        )


def inner(x: torch.Tensor, y: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
    r"""Minkowski inner product, broadcasting over leading dimensions.

    .. math:: \langle x, y\rangle_{\mathcal L} = -x_0 y_0 + \sum_{i=1}^n x_i y_i

    Parameters
    ----------
    x, y : (..., n+1) float
    keepdim : keep the last dimension (size 1).

    Returns
    -------
    (...) or (..., 1) float

    >>> inner(torch.tensor([2.0, 1.0]), torch.tensor([1.0, 3.0]))
    tensor(1.)
    """
    _check_point_dim(x, "x")
    _check_point_dim(y, "y")
    xy = x * y
    out = xy[..., 1:].sum(-1, keepdim=True) - xy[..., :1]
    return out if keepdim else out.squeeze(-1)


def pairwise_inner(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """All-pairs Minkowski inner products.

    Parameters
    ----------
    x : (..., B, n+1) float
    y : (..., N, n+1) float (leading dimensions broadcast with ``x``'s)

    Returns
    -------
    (..., B, N) float
    """
    _check_point_dim(x, "x")
    _check_point_dim(y, "y")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y differ in the last dimension: {x.shape[-1]} vs {y.shape[-1]}")
    space = x[..., 1:] @ y[..., 1:].transpose(-1, -2)
    time = x[..., :1] @ y[..., :1].transpose(-1, -2)
    return space - time


def lift(v: torch.Tensor) -> torch.Tensor:
    """Pad a zero time coordinate: ``(..., n) -> (..., n+1)``.

    Turns a vector of :math:`\\mathbb{R}^n` into a tangent vector at the origin.

    >>> lift(torch.tensor([3.0, 4.0]))
    tensor([0., 3., 4.])
    """
    if not torch.is_tensor(v) or v.dim() < 1:
        raise ValueError("lift expects a tensor of shape (..., n)")
    return torch.nn.functional.pad(v, (1, 0))


def origin(n: int, *, k=1.0, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    r"""The origin :math:`(\sqrt k, 0, \dots, 0)` of :math:`\mathbb H^n_k`, shape ``(n+1,)``."""
    dtype = dtype or torch.get_default_dtype()
    o = torch.zeros(n + 1, dtype=dtype, device=device)
    kk = _as_k(k, o)
    return o + torch.nn.functional.pad(torch.sqrt(kk).reshape(1), (0, n))


def _safe_norm(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last dim, floored at eps (clamp 2), keepdim."""
    eps = _eps(v.dtype)
    return torch.sqrt(torch.clamp_min((v * v).sum(-1, keepdim=True), eps * eps))


def clip_tangent(v: torch.Tensor, r: float | None) -> torch.Tensor:
    r"""Scale vectors whose norm exceeds ``r`` back to norm ``r`` (HiHPQ's feature clipping).

    .. math:: v \mapsto \min\left(1, \frac{r}{\|v\|}\right) v

    ``r=None`` returns ``v`` unchanged. Works on any ``(..., n)`` tensor.
    """
    if r is None:
        return v
    if not r > 0:
        raise ValueError(f"clip radius r must be positive, got {r}")
    return v * torch.clamp_max(r / _safe_norm(v), 1.0)


def _sinhc(t: torch.Tensor) -> torch.Tensor:
    """sinh(t)/t, with its Taylor series near 0 (finite value and gradient at 0)."""
    small = t.abs() < 1e-3
    t_safe = torch.where(small, torch.ones_like(t), t)
    return torch.where(small, 1.0 + t * t / 6.0, torch.sinh(t_safe) / t_safe)


def _asinhc(s: torch.Tensor) -> torch.Tensor:
    """asinh(s)/s, with its Taylor series near 0."""
    small = s.abs() < 1e-3
    s_safe = torch.where(small, torch.ones_like(s), s)
    return torch.where(small, 1.0 - s * s / 6.0, torch.asinh(s_safe) / s_safe)


def expmap0(u: torch.Tensor, *, k=1.0, clip_r: float | None = None) -> torch.Tensor:
    r"""Exponential map at the origin.

    .. math::
        \exp_o^k(v) = \left(\sqrt k \cosh\theta,\; \sqrt k \sinh\theta \frac{v}{\|v\|}\right),
        \qquad \theta = \frac{\|v\|}{\sqrt k}

    Parameters
    ----------
    u : (..., n+1) float
        Tangent vector at the origin in ambient coordinates ``(0, v)``; the time
        coordinate is ignored (this projects onto the tangent space at the origin, as
        the reference's ``proj_tan0`` does). Use :func:`lift` for a ``(..., n)`` vector.
    k : float or tensor broadcastable to (..., 1)
        Curvature parameter (sectional curvature ``-1/k``).
    clip_r : float, optional
        Clip ``||v||`` to at most ``clip_r`` first (:func:`clip_tangent`).

    Returns
    -------
    (..., n+1) float
        A point on :math:`\mathbb H^n_k`. The angle is clamped to :func:`max_angle`.
    """
    _check_point_dim(u, "u")
    kk = _as_k(k, u)
    v = clip_tangent(u[..., 1:], clip_r)
    sqrt_k = torch.sqrt(kk)
    norm = _safe_norm(v)
    theta_max = max_angle(u.dtype)
    theta = torch.clamp_max(norm / sqrt_k, theta_max)  # clamp 1
    # x_s = sqrt(k) sinh(theta) v / |v|, which is sinh(theta)/theta * v without the clamp.
    clamped = norm / sqrt_k > theta_max
    scale = torch.where(clamped, math.sinh(theta_max) * sqrt_k / norm, _sinhc(theta))
    x0 = sqrt_k * torch.cosh(theta)
    return torch.cat([x0.expand(v.shape[:-1] + (1,)), scale * v], dim=-1)


def logmap0(x: torch.Tensor, *, k=1.0) -> torch.Tensor:
    r"""Logarithmic map at the origin (inverse of :func:`expmap0`).

    .. math::
        \log_o^k(x) = \left(0,\; \sqrt k\, \frac{\operatorname{asinh}(s)}{s}
        \frac{x_{1:n}}{\sqrt k}\right), \qquad s = \frac{\|x_{1:n}\|}{\sqrt k}

    Uses only the spatial part (``sinh θ = s``), which avoids the cancellation in
    ``arcosh(x_0/√k)`` near the origin.

    Parameters
    ----------
    x : (..., n+1) float, on :math:`\mathbb H^n_k`
    k : float or tensor broadcastable to (..., 1)

    Returns
    -------
    (..., n+1) float, time coordinate 0.
    """
    _check_point_dim(x, "x")
    kk = _as_k(k, x)
    xs = x[..., 1:]
    s = _safe_norm(xs) / torch.sqrt(kk)
    return lift(_asinhc(s) * xs)


def tangent_project(x: torch.Tensor, u: torch.Tensor, *, k=1.0) -> torch.Tensor:
    r"""Project an ambient vector onto the tangent space at ``x``.

    .. math:: P_x(u) = u + \frac{\langle x, u\rangle_{\mathcal L}}{k}\, x ,
              \qquad \langle x, P_x(u)\rangle_{\mathcal L} = 0

    (geoopt's ``project_u``). Shapes: ``x, u`` of shape ``(..., n+1)``, same out.
    """
    kk = _as_k(k, x)
    return u + inner(x, u, keepdim=True) / kk * x


def expmap(x: torch.Tensor, u: torch.Tensor, *, k=1.0) -> torch.Tensor:
    r"""Exponential map at a general point ``x``: walk the geodesic from ``x`` along ``u``.

    .. math::
        \exp_x^k(u) = \cosh\theta\; x + \sqrt k \sinh\theta\, \frac{u}{\|u\|_{\mathcal L}},
        \qquad \theta = \frac{\|u\|_{\mathcal L}}{\sqrt k},\quad
        \|u\|_{\mathcal L} = \sqrt{\langle u, u\rangle_{\mathcal L}}

    Same formula and argument order as geoopt's ``Lorentz.expmap(x, u)``; at the origin
    it is :func:`expmap0`. ``d(x, exp_x(u)) = ||u||_L``.

    Parameters
    ----------
    x : (..., n+1) float, on :math:`\mathbb H^n_k`
    u : (..., n+1) float, tangent at ``x`` (:math:`\langle x, u\rangle_{\mathcal L} = 0`;
        :func:`tangent_project` makes it so)
    k : float or tensor broadcastable to (..., 1)

    Returns
    -------
    (..., n+1) float, on the sheet (the time coordinate is recomputed by :func:`project`
    to remove rounding drift). The angle is clamped to :func:`max_angle` (clamp 1) and
    the norm floored (clamp 2), so ``u = 0`` gives ``x`` with finite gradients.
    """
    _check_point_dim(x, "x")
    _check_point_dim(u, "u")
    kk = _as_k(k, x)
    sqrt_k = torch.sqrt(kk)
    eps = _eps(u.dtype)
    norm = torch.sqrt(torch.clamp_min(inner(u, u, keepdim=True), eps * eps))
    theta = torch.clamp_max(norm / sqrt_k, max_angle(u.dtype))
    # sqrt(k) sinh(theta) / ||u|| = sinh(theta)/theta without the clamp
    clamped = norm / sqrt_k > max_angle(u.dtype)
    scale = torch.where(clamped, sqrt_k * torch.sinh(theta) / norm, _sinhc(theta))
    return project(torch.cosh(theta) * x + scale * u, k=kk)


def logmap(x: torch.Tensor, y: torch.Tensor, *, k=1.0) -> torch.Tensor:
    r"""Logarithmic map at ``x`` (inverse of :func:`expmap`): the tangent vector at ``x``
    pointing to ``y``, of Minkowski norm :math:`d_k(x, y)`.

    .. math::
        \log_x^k(y) = \frac{\operatorname{asinh}(s)}{s}\,
        \Big(y + \frac{\langle x, y\rangle_{\mathcal L}}{k}\,x\Big),
        \qquad s = \sinh\frac{d_k(x, y)}{\sqrt k}

    This equals geoopt's ``Lorentz.logmap(x, y)`` (``d * v / ||v||_L`` with
    ``v = y + <x, y> x / k``); writing it with ``asinh(s)/s`` (Taylor series near 0) and
    ``s`` from :func:`sqdist` keeps it finite, with finite gradients, at ``y = x``.

    Parameters
    ----------
    x, y : (..., n+1) float, on :math:`\mathbb H^n_k`
    k : float or tensor broadcastable to (..., 1)

    Returns
    -------
    (..., n+1) float, tangent at ``x``.
    """
    _check_point_dim(x, "x")
    _check_point_dim(y, "y")
    kk = _as_k(k, x)
    v = y + inner(x, y, keepdim=True) / kk * x
    z = torch.clamp_min(sqdist(x, y, k=kk).unsqueeze(-1) / (2.0 * kk), 0.0)  # alpha - 1
    s = torch.sqrt(torch.clamp_min(z * (2.0 + z), _eps(x.dtype) ** 2))  # sinh(d / sqrt k)
    return _asinhc(s) * v


def transp(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, *, k=1.0) -> torch.Tensor:
    r"""Parallel transport of a tangent vector ``v`` at ``x`` along the geodesic to ``y``.

    .. math::
        \Gamma_{x \to y}(v) = v + \frac{\langle y, v\rangle_{\mathcal L}}
        {k - \langle x, y\rangle_{\mathcal L}}\,(x + y)

    It keeps Minkowski norms and inner products and maps :math:`\log_x(y)` to
    :math:`-\log_y(x)`; the same map as geoopt's ``Lorentz.transp(x, y, v)``. Used to
    compare tangent vectors that live at different points (e.g. move a direction at
    the origin to a centroid).

    Parameters
    ----------
    x, y : (..., n+1) float, on :math:`\mathbb H^n_k`
    v : (..., n+1) float, tangent at ``x``
    k : float or tensor broadcastable to (..., 1)

    Returns
    -------
    (..., n+1) float, tangent at ``y``.
    """
    _check_point_dim(v, "v")
    kk = _as_k(k, x)
    denom = kk - inner(x, y, keepdim=True)  # >= 2k > 0 on the sheet
    return v + inner(y, v, keepdim=True) / denom * (x + y)


def sqdist(x: torch.Tensor, y: torch.Tensor, *, k=1.0) -> torch.Tensor:
    r"""Squared Lorentzian distance (HiHPQ's attention score), elementwise.

    .. math:: d^2_{\mathcal L}(x, y) = \|x - y\|^2_{\mathcal L} = -2k - 2\langle x, y\rangle_{\mathcal L}

    On the manifold this also equals :math:`\langle x-y, x-y\rangle_{\mathcal L}`. The two
    forms lose precision in opposite cases: ``-2k - 2<x, y>`` cancels for nearby points
    (it is not exactly 0 for ``x = y``), the difference form cancels for points far
    apart along a ray. Both are computed and the inner-product form is kept where it is
    large against its own rounding (more than ``1e-3 * 2|<x, y>|``), the difference form
    elsewhere: identical points give exactly 0 and far points keep full relative
    precision. Clamped at 0 from below.

    Parameters
    ----------
    x, y : (..., n+1) float (broadcast), on :math:`\mathbb H^n_k`

    Returns
    -------
    (...) float
    """
    kk = _as_k(k, x)
    kk = kk.squeeze(-1) if kk.dim() > 0 else kk
    xy = inner(x, y)
    by_inner = -2.0 * kk - 2.0 * xy
    diff = x - y
    by_diff = inner(diff, diff)
    sq = torch.where(by_inner > SQDIST_SWITCH * xy.abs(), by_inner, by_diff)
    return torch.clamp_min(sq, 0.0)


def pairwise_sqdist(x: torch.Tensor, y: torch.Tensor | None = None, *, k=1.0) -> torch.Tensor:
    """All-pairs squared Lorentzian distances: ``(..., B, n+1), (..., N, n+1) -> (..., B, N)``.

    ``k`` broadcasts against ``(..., B, N)`` (e.g. shape ``(M, 1, 1)``). ``y=None`` (or
    ``y is x``) gives the distances within ``x`` with an exactly zero diagonal, so the
    self-pairs carry no rounding noise and no gradient.

    The Gram-matrix form ``-2k - 2<x, y>`` cancels for nearby points, and a float32 point
    is itself off the manifold by rounding. So for float32 (and half) inputs the points
    are taken to float64 and their time coordinate is recomputed from the spatial part
    (:func:`project`), then the result is cast back: the self-distance of float32 points
    drops from ~1e-3 (up to 1e-2 far from the origin) to ~1e-7. Inputs must lie on the
    manifold (the time coordinate is not used for float32).
    """
    self_pairs = y is None or y is x
    y = x if y is None else y
    dtype = x.dtype
    if dtype in (torch.float16, torch.bfloat16, torch.float32):
        kk = _as_k(k, x.double())
        kp = kk if kk.dim() == 0 else kk[..., :1, :]  # (..., 1, 1) for the point dims
        xw, yw = project(x.double(), k=kp), project(y.double(), k=kp)
    else:
        kk = _as_k(k, x)
        xw, yw = x, y
    sq = torch.clamp_min(-2.0 * kk - 2.0 * pairwise_inner(xw, yw), 0.0)
    if self_pairs:
        eye = torch.eye(sq.shape[-1], dtype=torch.bool, device=sq.device)
        sq = sq.masked_fill(eye, 0.0)
    return sq.to(dtype)


def _dist_from_sq(sq: torch.Tensor, kk: torch.Tensor) -> torch.Tensor:
    # arcosh(z) = 2 asinh(sqrt((z - 1) / 2)) with z - 1 = sq / (2k)   (clamp 3)
    floor = _eps(sq.dtype) ** 2 if sq.dtype == torch.float64 else DIST_FLOOR_FLOAT32
    sqrt_k = torch.sqrt(kk)
    return 2.0 * sqrt_k * torch.asinh(torch.sqrt(torch.clamp_min(sq, floor)) / (2.0 * sqrt_k))


def dist(x: torch.Tensor, y: torch.Tensor, *, k=1.0, keepdim: bool = False) -> torch.Tensor:
    r"""Geodesic distance, elementwise (broadcast over leading dimensions).

    .. math::
        d_k(x, y) = \sqrt k \operatorname{arcosh}\left(-\frac{\langle x, y\rangle_{\mathcal L}}{k}\right)
                  = 2\sqrt k \operatorname{asinh}\frac{d_{\mathcal L}(x, y)}{2\sqrt k}

    The second form (with :func:`sqdist`) is the one computed (clamp 3).

    Parameters
    ----------
    x, y : (..., n+1) float, on :math:`\mathbb H^n_k`
    k : float or tensor broadcastable to (..., 1)

    Returns
    -------
    (...) float, or (..., 1) with ``keepdim``.
    """
    kk = _as_k(k, x)
    sq = sqdist(x, y, k=kk)
    out = _dist_from_sq(sq, kk.squeeze(-1) if kk.dim() > 0 else kk)
    return out.unsqueeze(-1) if keepdim else out


def pairwise_dist(x: torch.Tensor, y: torch.Tensor | None = None, *, k=1.0) -> torch.Tensor:
    """All-pairs geodesic distances: ``(..., B, n+1), (..., N, n+1) -> (..., B, N)``.

    ``k`` broadcasts against ``(..., B, N)``, e.g. shape ``(M, 1, 1)`` for a product of
    ``M`` hyperboloids stacked on the first dimension.
    """
    kk = _as_k(k, x)
    return _dist_from_sq(pairwise_sqdist(x, y, k=kk), kk)


def project(x: torch.Tensor, *, k=1.0) -> torch.Tensor:
    r"""Project onto the hyperboloid by recomputing the time coordinate.

    .. math:: \Pi(x) = \left(\sqrt{k + \|x_{1:n}\|^2},\; x_{1:n}\right)
    """
    _check_point_dim(x, "x")
    kk = _as_k(k, x)
    xs = x[..., 1:]
    x0 = torch.sqrt(kk + (xs * xs).sum(-1, keepdim=True))
    return torch.cat([x0, xs], dim=-1)


def lorentz_centroid(
    points: torch.Tensor, weights: torch.Tensor | None = None, *, k=1.0
) -> torch.Tensor:
    r"""Weighted Lorentz centroid (the closed form HiHPQ uses for soft quantization).

    .. math::
        \mu = \sqrt k \,\frac{a}{\sqrt{|\langle a, a\rangle_{\mathcal L}|}},
        \qquad a = \sum_j w_j x_j

    It minimises the weighted sum of squared Lorentzian distances
    (Law et al., 2019). The denominator is floored (clamp 4).

    Parameters
    ----------
    points : (..., K, n+1) float
        Points on :math:`\mathbb H^n_k`.
    weights : (..., B, K) float, optional
        Non-negative weights (rows typically sum to 1). ``None`` gives the unweighted
        centroid of all ``K`` points, shape ``(..., n+1)``.
    k : float or tensor broadcastable to (..., B, 1)

    Returns
    -------
    (..., B, n+1) float, or (..., n+1) when ``weights`` is None.
    """
    _check_point_dim(points, "points")
    if points.dim() < 2:
        raise ValueError(f"points must have shape (..., K, n+1), got {tuple(points.shape)}")
    kk = _as_k(k, points)
    if weights is None:
        a = points.mean(dim=-2)
    else:
        if weights.shape[-1] != points.shape[-2]:
            raise ValueError(
                f"weights (..., B, K) must have K = {points.shape[-2]} columns "
                f"(one per point), got shape {tuple(weights.shape)}"
            )
        a = weights.to(points.dtype) @ points
    denom = torch.sqrt(torch.clamp_min(inner(a, a, keepdim=True).abs(), _eps(a.dtype)))
    return torch.sqrt(kk) * a / denom


def _ball_max(dtype: torch.dtype) -> float:
    return 1.0 - 1e-6 if dtype in (torch.float16, torch.bfloat16, torch.float32) else 1.0 - 1e-12


def to_poincare(x: torch.Tensor, *, k=1.0) -> torch.Tensor:
    r"""Hyperboloid to the unit Poincaré ball (for pictures).

    .. math:: p = \frac{x_{1:n}}{x_0 + \sqrt k}, \qquad \|p\| = \tanh\frac{d_k(o, x)}{2\sqrt k} < 1

    Same map as geoopt's ``lorentz_to_poincare``. Norms are kept at most
    ``1 - 1e-6`` (float32) / ``1 - 1e-12`` (float64) (clamp 5).

    Parameters
    ----------
    x : (..., n+1) float

    Returns
    -------
    (..., n) float, every row of norm < 1.
    """
    _check_point_dim(x, "x")
    kk = _as_k(k, x)
    p = x[..., 1:] / (x[..., :1] + torch.sqrt(kk))
    norm = _safe_norm(p)
    return p * torch.clamp_max(_ball_max(p.dtype) / norm, 1.0)


def from_poincare(p: torch.Tensor, *, k=1.0) -> torch.Tensor:
    r"""Unit Poincaré ball to the hyperboloid (inverse of :func:`to_poincare`).

    .. math:: x = \sqrt k\, \frac{(1 + \|p\|^2,\; 2p)}{1 - \|p\|^2}

    Parameters
    ----------
    p : (..., n) float, norms < 1 (an error is raised otherwise).

    Returns
    -------
    (..., n+1) float
    """
    if not torch.is_tensor(p) or p.dim() < 1:
        raise ValueError("from_poincare expects a tensor of shape (..., n)")
    sq = (p * p).sum(-1, keepdim=True)
    if bool((sq >= 1.0).any()):
        raise ValueError("points must lie strictly inside the unit ball (norm < 1)")
    kk = _as_k(k, p)
    return torch.sqrt(kk) * torch.cat([1.0 + sq, 2.0 * p], dim=-1) / (1.0 - sq)


def geodesic0(v: torch.Tensor, t: torch.Tensor, *, k=1.0) -> torch.Tensor:
    r"""Points :math:`\exp_o(t\,v)` along the geodesic from the origin in direction ``v``.

    Parameters
    ----------
    v : (n,) float, tangent direction (spatial part).
    t : (T,) float, times.

    Returns
    -------
    (T, n+1) float
    """
    return expmap0(lift(t[:, None] * v[None, :]), k=k)
