"""Geometry of the Lorentz model: identities, agreement with geoopt, hard points."""

import math

import numpy as np
import pytest
import torch
from geoopt.manifolds.lorentz import math as gmath
from hypothesis import given
from hypothesis import strategies as st

from hihpq_lib.geometry import lorentz as L

KS = [0.01, 0.1, 1.0, 10.0, 100.0]


def rand_tangent(gen, n_points, n, dtype, radius=1.5):
    """Random spatial tangent vectors with norms uniform in (0, radius]."""
    v = torch.randn(n_points, n, generator=gen, dtype=dtype)
    r = torch.rand(n_points, 1, generator=gen, dtype=dtype) * radius + 1e-3
    return v / v.norm(dim=-1, keepdim=True) * r


def rand_points(gen, n_points, n, dtype, k, radius=1.5):
    return L.expmap0(L.lift(rand_tangent(gen, n_points, n, dtype, radius)), k=k)


@pytest.mark.parametrize("k", [0.1, 1.0, 10.0])
def test_expmap0_lands_on_manifold(dtype, gen, tol, k):
    x = rand_points(gen, 64, 5, dtype, k)
    assert x.dtype == dtype
    assert torch.all(x[:, 0] > 0)
    # <x, x>_L = -k up to rounding, which is relative to the size of x0^2
    err = (L.inner(x, x) + k).abs() / (x[:, 0] ** 2)
    assert torch.all(err < (1e-6 if dtype == torch.float32 else 1e-14))


@pytest.mark.parametrize("k", [0.1, 1.0, 10.0])
def test_log_exp_identity(dtype, gen, tol, k):
    v = rand_tangent(gen, 64, 6, dtype, radius=1.5)
    back = L.logmap0(L.expmap0(L.lift(v), k=k), k=k)
    assert back.dtype == dtype
    assert torch.all(back[:, 0] == 0)
    torch.testing.assert_close(back[:, 1:], v, **tol)


def test_log_exp_identity_within_clip_radius(dtype, gen, tol):
    v = rand_tangent(gen, 64, 4, dtype, radius=5.0)
    r = 1.5
    back = L.logmap0(L.expmap0(L.lift(v), k=1.0, clip_r=r), k=1.0)[:, 1:]
    expected = L.clip_tangent(v, r)
    assert torch.all(back.norm(dim=-1) <= r * (1 + 1e-5))
    torch.testing.assert_close(back, expected, **tol)


def test_exp_log_identity_on_points(dtype, gen, tol):
    x = rand_points(gen, 32, 3, dtype, 2.0)
    torch.testing.assert_close(L.expmap0(L.logmap0(x, k=2.0), k=2.0), x, **tol)


@pytest.mark.parametrize("k", [0.5, 1.0, 4.0])
def test_distance_axioms(dtype, gen, tol, k):
    x, y, z = (rand_points(gen, 50, 4, dtype, k) for _ in range(3))
    dxy, dyx = L.dist(x, y, k=k), L.dist(y, x, k=k)
    torch.testing.assert_close(dxy, dyx, **tol)
    assert torch.all(dxy >= 0)
    self_d = L.dist(x, x, k=k)
    assert torch.all(self_d < (1e-5 if dtype == torch.float32 else 1e-12))
    # triangle inequality on random triples
    slack = 1e-4 if dtype == torch.float32 else 1e-10
    assert torch.all(L.dist(x, z, k=k) <= dxy + L.dist(y, z, k=k) + slack)


def test_distance_from_origin_equals_tangent_norm(dtype, gen, tol):
    k = 2.0
    v = rand_tangent(gen, 40, 3, dtype)
    x = L.expmap0(L.lift(v), k=k)
    o = L.origin(3, k=k, dtype=dtype).expand_as(x)
    torch.testing.assert_close(L.dist(o, x, k=k), v.norm(dim=-1), **tol)


def test_pairwise_matches_elementwise(dtype, gen, tol):
    k = 0.7
    x, y = rand_points(gen, 7, 4, dtype, k), rand_points(gen, 5, 4, dtype, k)
    pw = L.pairwise_dist(x, y, k=k)
    loop = torch.stack([torch.stack([L.dist(a, b, k=k) for b in y]) for a in x])
    torch.testing.assert_close(pw, loop, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)
    pw_sq = L.pairwise_sqdist(x, y, k=k)
    loop_sq = torch.stack([torch.stack([L.sqdist(a, b, k=k) for b in y]) for a in x])
    torch.testing.assert_close(pw_sq, loop_sq, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)


def test_pairwise_per_subspace_curvature(dtype, gen, tol):
    """k of shape (M, 1, 1) gives each stacked subspace its own curvature."""
    ks = torch.tensor([0.5, 1.0, 3.0], dtype=dtype)
    x = torch.stack([rand_points(gen, 6, 2, dtype, float(k)) for k in ks])
    y = torch.stack([rand_points(gen, 4, 2, dtype, float(k)) for k in ks])
    pw = L.pairwise_dist(x, y, k=ks.view(3, 1, 1))
    for m, k in enumerate(ks):
        torch.testing.assert_close(pw[m], L.pairwise_dist(x[m], y[m], k=float(k)), **tol)


@pytest.mark.parametrize("k", [0.3, 1.0, 5.0])
def test_agrees_with_geoopt(dtype, gen, tol, k):
    kk = torch.tensor(k, dtype=dtype)
    v = rand_tangent(gen, 30, 5, dtype)
    u = L.lift(v)
    x = L.expmap0(u, k=kk)
    torch.testing.assert_close(x, gmath.expmap0(u, k=kk), **tol)
    y = rand_points(gen, 30, 5, dtype, k)
    torch.testing.assert_close(L.logmap0(y, k=kk), gmath.logmap0(y, k=kk), **tol)
    torch.testing.assert_close(L.inner(x, y), gmath.inner(x, y), **tol)
    # geoopt's arcosh is clamped at 1 + ~1e-15 and computed in float64 internally
    torch.testing.assert_close(L.dist(x, y, k=kk), gmath.dist(x, y, k=kk), **tol)
    torch.testing.assert_close(L.project(y * 1.01, k=kk), gmath.project(y * 1.01, k=kk), **tol)
    torch.testing.assert_close(L.to_poincare(y, k=kk), gmath.lorentz_to_poincare(y, kk), **tol)


def test_sqdist_formula(dtype, gen, tol):
    """Squared Lorentzian distance equals -2k - 2<x, y>_L (the paper's form)."""
    k = 1.7
    x, y = rand_points(gen, 20, 3, dtype, k), rand_points(gen, 20, 3, dtype, k)
    paper = -2 * k - 2 * L.inner(x, y)
    torch.testing.assert_close(
        L.sqdist(x, y, k=k), paper, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10
    )
    # and dist = sqrt(k) arcosh(-<x,y>/k)
    ref = math.sqrt(k) * torch.acosh((-L.inner(x, y) / k).clamp_min(1))
    torch.testing.assert_close(
        L.dist(x, y, k=k),
        ref,
        rtol=1e-3 if dtype == torch.float32 else 1e-9,
        atol=1e-3 if dtype == torch.float32 else 1e-9,
    )


def test_poincare_round_trip(dtype, gen, tol):
    k = 0.5
    x = rand_points(gen, 40, 2, dtype, k, radius=3.0)
    p = L.to_poincare(x, k=k)
    assert p.shape == (40, 2)
    assert torch.all(p.norm(dim=-1) < 1)
    torch.testing.assert_close(
        L.from_poincare(p, k=k), x, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10
    )
    # ||p|| = tanh(d(o, x) / (2 sqrt k))
    o = L.origin(2, k=k, dtype=dtype).expand_as(x)
    torch.testing.assert_close(
        p.norm(dim=-1), torch.tanh(L.dist(o, x, k=k) / (2 * math.sqrt(k))), **tol
    )


def test_poincare_norm_strictly_below_one_far_away(dtype):
    v = torch.tensor([[1e3, 0.0], [0.0, 50.0]], dtype=dtype)
    p = L.to_poincare(L.expmap0(L.lift(v), k=1.0), k=1.0)
    assert torch.all(torch.isfinite(p))
    assert torch.all(p.norm(dim=-1) < 1)


def test_from_poincare_rejects_outside_ball():
    with pytest.raises(ValueError, match="inside the unit ball"):
        L.from_poincare(torch.tensor([[1.0, 0.0]]))


def test_centroid_properties(dtype, gen, tol):
    k = 1.3
    pts = rand_points(gen, 6, 3, dtype, k)
    w = torch.softmax(torch.randn(4, 6, generator=gen, dtype=dtype), -1)
    mu = L.lorentz_centroid(pts, w, k=k)
    assert mu.shape == (4, 4)
    torch.testing.assert_close(
        L.inner(mu, mu), torch.full((4,), -k, dtype=dtype), rtol=tol["rtol"], atol=tol["atol"] * 10
    )
    # one-hot weights give the point itself
    onehot = torch.eye(6, dtype=dtype)
    torch.testing.assert_close(L.lorentz_centroid(pts, onehot, k=k), pts, **tol)
    # two points: the centroid lies on the geodesic between them
    a, b = pts[0], pts[1]
    for t in (0.2, 0.5, 0.9):
        m = L.lorentz_centroid(torch.stack([a, b]), torch.tensor([[t, 1 - t]], dtype=dtype), k=k)[0]
        torch.testing.assert_close(
            L.dist(a, m, k=k) + L.dist(m, b, k=k),
            L.dist(a, b, k=k),
            rtol=1e-3 if dtype == torch.float32 else 1e-9,
            atol=1e-3 if dtype == torch.float32 else 1e-9,
        )
    # equal weights on two points: the geodesic midpoint
    m = L.lorentz_centroid(torch.stack([a, b]), k=k)
    torch.testing.assert_close(
        L.dist(a, m, k=k),
        L.dist(b, m, k=k),
        rtol=1e-3 if dtype == torch.float32 else 1e-9,
        atol=1e-3 if dtype == torch.float32 else 1e-9,
    )


def test_centroid_minimises_squared_lorentzian_distance(gen):
    """The closed form is the minimiser of sum_j w_j d_L^2(mu, x_j) (Law et al. 2019)."""
    dtype = torch.float64
    k = 1.0
    pts = rand_points(gen, 5, 2, dtype, k)
    w = torch.softmax(torch.randn(1, 5, generator=gen, dtype=dtype), -1)
    mu = L.lorentz_centroid(pts, w, k=k)[0]

    def cost(p):
        return (w[0] * L.sqdist(p.expand_as(pts), pts, k=k)).sum()

    base = cost(mu)
    for _ in range(50):
        q = L.expmap0(
            L.logmap0(mu, k=k) + L.lift(1e-2 * torch.randn(2, generator=gen, dtype=dtype)), k=k
        )
        assert cost(q) >= base - 1e-12


@given(
    norm=st.floats(min_value=1e-8, max_value=1e3),
    k=st.floats(min_value=0.01, max_value=100.0),
    seed=st.integers(0, 2**16),
)
def test_float32_finite_values_and_gradients_property(norm, k, seed):
    """Every finite float32 input in range gives finite values and gradients."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(3, 4, generator=g)
    v = (v / v.norm(dim=-1, keepdim=True) * norm).requires_grad_(True)
    kk = torch.tensor(k, requires_grad=True)
    x = L.expmap0(L.lift(v), k=kk)
    w = torch.softmax(torch.randn(2, 3, generator=g), -1)
    total = (
        L.dist(x, x, k=kk).sum()
        + L.dist(x, x.flip(0), k=kk).sum()
        + L.pairwise_dist(x, x, k=kk).sum()
        + L.pairwise_sqdist(x, x, k=kk).sum() * 1e-30
        + L.logmap0(x, k=kk).sum()
        + L.lorentz_centroid(x, w, k=kk).sum() * 1e-20
        + L.to_poincare(x, k=kk).sum()
    )
    total.backward()
    assert torch.isfinite(total)
    assert torch.all(torch.isfinite(v.grad))
    assert torch.isfinite(kk.grad)


def float32_stress_grid():
    """The stress figure of the closing note: inputs x functions, count non-finite."""
    norms = np.logspace(-8, 3, 23)
    ks = np.logspace(-2, 2, 9)
    return norms, ks


def test_float32_stress_grid_all_finite():
    norms, ks = float32_stress_grid()
    bad = 0
    total = 0
    g = torch.Generator().manual_seed(0)
    for n in norms:
        for k in ks:
            v = torch.randn(4, 3, generator=g)
            v = (v / v.norm(dim=-1, keepdim=True) * float(n)).requires_grad_(True)
            kk = torch.tensor(float(k), requires_grad=True)
            x = L.expmap0(L.lift(v), k=kk)
            outs = [
                L.dist(x, x, k=kk),
                L.dist(x, x.roll(1, 0), k=kk),
                L.logmap0(x, k=kk),
                L.lorentz_centroid(x, torch.full((1, 4), 0.25), k=kk),
            ]
            for out in outs:
                v.grad, kk.grad = None, None
                out.sum().backward(retain_graph=True)
                total += 1
                finite = bool(
                    torch.isfinite(out).all()
                    and torch.isfinite(v.grad).all()
                    and torch.isfinite(kk.grad)
                )
                bad += not finite
    assert total == len(norms) * len(ks) * 4
    assert bad == 0, f"{bad} of {total} float32 cases gave non-finite values or gradients"


def test_identical_points_gradient_is_finite_and_zero_distance(dtype):
    x = L.expmap0(L.lift(torch.tensor([[0.3, -0.2]], dtype=dtype)), k=1.0).requires_grad_(True)
    d = L.dist(x, x.clone(), k=1.0)
    d.sum().backward()
    assert torch.all(torch.isfinite(x.grad))
    assert float(d.detach()) < 1e-5


def test_float64_is_exact_for_large_norms():
    v = torch.tensor([[20.0, 0.0]], dtype=torch.float64)
    x = L.expmap0(L.lift(v), k=1.0)
    torch.testing.assert_close(L.logmap0(x, k=1.0)[:, 1:], v, rtol=1e-12, atol=1e-12)


def test_angle_clamp_documented_value():
    v = torch.tensor([[1e3, 0.0]])
    x = L.expmap0(L.lift(v), k=0.01)
    o = L.origin(2, k=0.01).expand_as(x)
    # distance from the origin is capped at sqrt(k) * max_angle
    assert torch.isfinite(x).all()
    torch.testing.assert_close(
        L.dist(o, x, k=0.01), torch.tensor([0.1 * L.max_angle(torch.float32)]), rtol=1e-4, atol=1e-4
    )


def test_bad_inputs_have_clear_errors():
    with pytest.raises(ValueError, match="positive finite"):
        L.expmap0(torch.zeros(3, 3), k=-1.0)
    with pytest.raises(ValueError, match=r"\(\.\.\., n\+1\)"):
        L.inner(torch.zeros(3, 1), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="last dimension"):
        L.pairwise_inner(torch.zeros(3, 3), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="clip radius"):
        L.clip_tangent(torch.zeros(3), 0.0)
    with pytest.raises(ValueError, match="K = 3 columns"):
        L.lorentz_centroid(torch.zeros(3, 4), torch.ones(2, 5))


def test_geodesic0_distance_grows_linearly(dtype):
    t = torch.linspace(0, 3, 7, dtype=dtype)
    path = L.geodesic0(torch.tensor([0.6, 0.8], dtype=dtype), t, k=2.0)
    o = L.origin(2, k=2.0, dtype=dtype).expand_as(path)
    torch.testing.assert_close(
        L.dist(o, path, k=2.0),
        t,
        **({"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {}),
    )


@pytest.mark.parametrize("k", [0.1, 1.0, 10.0])
def test_pairwise_self_distance_small_in_float32(k):
    """The Gram-matrix form is evaluated in float64 on re-projected points."""
    g = torch.Generator().manual_seed(0)
    x = rand_points(g, 200, 16, torch.float32, k, radius=1.5)
    d = L.pairwise_dist(x, x, k=k)
    assert d.dtype == torch.float32
    assert float(d.diagonal().max()) < 1e-5
    xd = L.project(x.double(), k=k)  # the float32 points, exactly on the manifold
    torch.testing.assert_close(d, L.pairwise_dist(xd, xd, k=k).float(), rtol=1e-4, atol=1e-4)


def test_self_pairwise_has_zero_diagonal_and_true_curvature_gradient():
    """Distances within one set: the diagonal is exactly 0 and adds no gradient."""
    g = torch.Generator().manual_seed(3)
    v = rand_tangent(g, 6, 3, torch.float32)
    k = torch.tensor(0.8, requires_grad=True)
    x = L.expmap0(L.lift(v), k=k)
    assert torch.all(L.pairwise_sqdist(x, k=k).diagonal() == 0)
    d = L.pairwise_dist(x, k=k)
    assert torch.all(d.diagonal() <= 1e-6)  # the documented sqrt floor
    d.sum().backward()
    # reference: the off-diagonal pairs only, in float64
    k64 = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    x64 = L.expmap0(L.lift(v.double()), k=k64)
    off = ~torch.eye(6, dtype=torch.bool)
    L.pairwise_dist(x64, x64.clone(), k=k64)[off].sum().backward()
    assert abs(float(k.grad) - float(k64.grad)) < 1e-3 * max(1.0, abs(float(k64.grad)))


# --- exp / log / parallel transport at a general point -------------------------------


def rand_points_at_angle(gen, n_points, n, dtype, k, angle=1.5):
    """Points whose distance from the origin is at most ``angle * sqrt(k)``."""
    return rand_points(gen, n_points, n, dtype, k, radius=angle * math.sqrt(k))


def rand_tangent_at(gen, x, k, radius=1.5):
    """Random tangent vectors at the points x, Minkowski norms in (0, radius * sqrt(k)].

    Angles (norm / sqrt k) up to 1.5, as for the points of ``rand_points_at_angle``: far
    beyond that, float32 Minkowski products of the large coordinates lose the digits
    any test tolerance needs (geoopt's formulas alike).
    """
    radius = radius * math.sqrt(k)
    u = L.tangent_project(x, torch.randn(x.shape, generator=gen, dtype=x.dtype), k=k)
    norm = L.inner(u, u, keepdim=True).clamp_min(1e-30).sqrt()
    r = torch.rand(x.shape[:-1] + (1,), generator=gen, dtype=x.dtype) * radius + 1e-3
    return u / norm * r


@pytest.mark.parametrize("k", [0.1, 1.0, 10.0])
def test_expmap_general_point_on_sheet_and_distance(dtype, gen, tol, k):
    x = rand_points_at_angle(gen, 40, 4, dtype, k)
    u = rand_tangent_at(gen, x, k)
    scale = x.abs().amax(-1) * u.abs().amax(-1)  # rounding of <x, u> is relative to this
    assert torch.all(L.inner(x, u).abs() < (1e-5 if dtype == torch.float32 else 1e-13) * scale)
    y = L.expmap(x, u, k=k)
    assert y.dtype == dtype
    err = (L.inner(y, y) + k).abs() / y[:, 0] ** 2
    assert torch.all(err < (1e-6 if dtype == torch.float32 else 1e-13))
    torch.testing.assert_close(L.dist(x, y, k=k), L.inner(u, u).sqrt(), **tol)


@pytest.mark.parametrize("k", [0.1, 1.0, 10.0])
def test_log_exp_identity_general_point(dtype, gen, tol, k):
    x = rand_points_at_angle(gen, 40, 4, dtype, k)
    u = rand_tangent_at(gen, x, k)
    torch.testing.assert_close(L.logmap(x, L.expmap(x, u, k=k), k=k), u, **tol)
    y = rand_points_at_angle(gen, 40, 4, dtype, k)
    torch.testing.assert_close(L.expmap(x, L.logmap(x, y, k=k), k=k), y, **tol)


def test_general_maps_reduce_to_the_origin_maps(dtype, gen, tol):
    o = L.origin(3, k=2.0, dtype=dtype).expand(20, 4)
    v = L.lift(rand_tangent(gen, 20, 3, dtype))
    torch.testing.assert_close(L.expmap(o, v, k=2.0), L.expmap0(v, k=2.0), **tol)
    y = rand_points_at_angle(gen, 20, 3, dtype, 2.0)
    torch.testing.assert_close(L.logmap(o, y, k=2.0), L.logmap0(y, k=2.0), **tol)


@pytest.mark.parametrize("k", [0.3, 1.0, 5.0])
def test_general_maps_agree_with_geoopt(dtype, gen, tol, k):
    kk = torch.tensor(k, dtype=dtype)
    x = rand_points_at_angle(gen, 30, 5, dtype, k)
    y = rand_points_at_angle(gen, 30, 5, dtype, k)
    u = rand_tangent_at(gen, x, k)
    torch.testing.assert_close(L.expmap(x, u, k=kk), gmath.expmap(x, u, k=kk), **tol)
    torch.testing.assert_close(L.logmap(x, y, k=kk), gmath.logmap(x, y, k=kk), **tol)
    torch.testing.assert_close(
        L.transp(x, y, u, k=kk), gmath.parallel_transport(x, y, u, k=kk), **tol
    )


def test_transp_is_an_isometry_between_tangent_spaces(dtype, gen, tol):
    k = 1.5
    x, y = rand_points_at_angle(gen, 30, 4, dtype, k), rand_points_at_angle(gen, 30, 4, dtype, k)
    u, w = rand_tangent_at(gen, x, k), rand_tangent_at(gen, x, k)
    pu, pw = L.transp(x, y, u, k=k), L.transp(x, y, w, k=k)
    torch.testing.assert_close(L.inner(y, pu), torch.zeros(30, dtype=dtype), **tol)
    torch.testing.assert_close(L.inner(pu, pw), L.inner(u, w), **tol)
    # the direction to y is carried to minus the direction back to x
    torch.testing.assert_close(
        L.transp(x, y, L.logmap(x, y, k=k), k=k), -L.logmap(y, x, k=k), **tol
    )


@pytest.mark.parametrize("k", [0.01, 1.0, 100.0])
def test_general_maps_have_finite_gradients_at_hard_points(dtype, k):
    gen = torch.Generator().manual_seed(0)
    x = rand_points_at_angle(gen, 8, 3, dtype, k).requires_grad_(True)
    y = x.detach().clone().requires_grad_(True)  # identical points: asinh(s)/s at s = 0
    L.logmap(x, y, k=k).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    zero = torch.zeros_like(x, requires_grad=True)  # u = 0
    out = L.expmap(x.detach(), zero, k=k)
    torch.testing.assert_close(out, x.detach(), **TOL_FOR(dtype))
    out.sum().backward()
    assert torch.isfinite(zero.grad).all()
    big = (1e3 * L.tangent_project(x.detach(), torch.ones_like(x), k=k)).requires_grad_(True)
    far = L.expmap(x.detach(), big, k=k)  # angle clamp: finite, no overflow
    far.sum().backward()
    assert torch.isfinite(far).all() and torch.isfinite(big.grad).all()


def TOL_FOR(dtype):  # noqa: N802 - the tolerance table of conftest, outside a fixture
    return (
        {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    )
