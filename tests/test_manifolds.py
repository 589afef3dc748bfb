"""The product-space contract: both spaces x float32/float64 x seeds, per-dtype tolerances."""

import inspect

import geoopt
import pytest
import torch

from hihpq_lib.geometry import lorentz as L
from hihpq_lib.geometry.manifolds import ProductEuclidean, ProductLorentz, ProductSpace, make_space

M, D = 3, 4

#: What "equal" means per dtype: on the manifold (relative constraint residual), a
#: distance that should be 0 (floored, see lorentz's clamp 3), relative closeness.
TOL = {
    torch.float32: {"on": 2e-4, "zero": 1e-5, "rtol": 1e-4, "atol": 1e-5},
    torch.float64: {"on": 1e-10, "zero": 1e-7, "rtol": 1e-10, "atol": 1e-12},
}

SPACES = {
    "lorentz": lambda: ProductLorentz(M, D, curvature=[0.5, 1.0, 3.0]),
    "euclidean": lambda: ProductEuclidean(M, D),
    "euclidean-raw": lambda: ProductEuclidean(M, D, normalize=False),
}
DTYPES = [torch.float32, torch.float64]
SEEDS = [0, 1, 2]


def make(name, dtype, grad=False):
    """A space in ``dtype``; its curvatures learnable only when a test needs gradients."""
    return SPACES[name]().to(dtype).requires_grad_(grad)


def tangent(n, dtype, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, M, D, generator=g, dtype=torch.float64).to(dtype)


def points(space, n, dtype, seed, scale=1.0):
    return space.embed(tangent(n, dtype, seed, scale))


params = pytest.mark.parametrize(
    "name,dtype,seed", [(n, t, s) for n in SPACES for t in DTYPES for s in SEEDS]
)


def test_the_base_is_abstract_and_both_spaces_implement_it_fully():
    with pytest.raises(TypeError, match="abstract"):
        ProductSpace(M, D)
    for cls in (ProductLorentz, ProductEuclidean):
        assert inspect.isabstract(cls) is False
        assert not cls.__abstractmethods__
        assert issubclass(cls, ProductSpace)


def test_k_is_the_curvature_parameter_or_none():
    lor = make_space("lorentz", M, D, curvature=[0.5, 1.0, 3.0])
    torch.testing.assert_close(lor.k, 1.0 / torch.tensor([0.5, 1.0, 3.0]))
    assert lor.summary() == {"curvature": [0.5, 1.0, 3.0]}
    euc = make_space("euclidean", M, D)
    assert euc.k is None and euc.summary() == {} and euc.clip_r is None


@params
def test_points_lie_on_the_space_after_projection_and_embedding(name, dtype, seed):
    space = make(name, dtype)
    g = torch.Generator().manual_seed(seed)
    ambient = torch.randn(6, M, space.point_dim, generator=g, dtype=torch.float64).to(dtype)
    for x in (space.project(ambient), points(space, 6, dtype, seed, scale=2.0)):
        assert x.shape == (6, M, space.point_dim) and x.dtype == dtype
        res = space.constraint_residual(x)
        assert res.shape == (6, M) and res.dtype == dtype
        assert float(res.max()) < TOL[dtype]["on"], (name, float(res.max()))
    # off the space: the residual says so
    if name != "euclidean-raw":
        assert float(space.constraint_residual(2.0 * space.project(ambient)).min()) > 0.1


@params
def test_project_is_idempotent_and_exp_log_round_trips(name, dtype, seed):
    space = make(name, dtype)
    tol = TOL[dtype]
    x = points(space, 5, dtype, seed)
    torch.testing.assert_close(space.project(x), x, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)
    v = space.log(x)
    assert v.shape == (5, M, D) and v.dtype == dtype
    torch.testing.assert_close(space.expmap0(v), x, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)
    torch.testing.assert_close(space.embed(v), space.expmap0(space.clip_tangent(v)))


@params
def test_distances_are_symmetric_consistent_and_zero_on_the_diagonal(name, dtype, seed):
    space = make(name, dtype)
    tol = TOL[dtype]
    x, y = points(space, 5, dtype, seed), points(space, 7, dtype, seed + 100)
    for fn in (space.pairwise_dist, space.pairwise_sqdist):
        xy, yx = fn(x, y), fn(y, x)
        assert xy.shape == (M, 5, 7) and xy.dtype == dtype
        torch.testing.assert_close(xy, yx.transpose(1, 2), rtol=tol["rtol"], atol=tol["atol"])
        assert bool((xy >= 0).all())
        within = fn(x, x).diagonal(dim1=1, dim2=2)
        if fn == space.pairwise_sqdist:
            assert bool((within == 0).all())  # y is x: exact zeros
        else:  # up to the documented floor (lorentz's clamp 3)
            assert float(within.max()) < tol["zero"]
    # elementwise forms agree with the pairwise ones
    yy = y[:5]
    d, sq = space.dist(x, yy), space.sqdist(x, yy)
    assert d.shape == sq.shape == (5, M) and d.dtype == sq.dtype == dtype
    diag = space.pairwise_dist(x, yy).diagonal(dim1=1, dim2=2).T
    torch.testing.assert_close(d, diag, rtol=tol["rtol"] * 10, atol=tol["zero"])
    diag_sq = space.pairwise_sqdist(x, yy).diagonal(dim1=1, dim2=2).T
    torch.testing.assert_close(sq, diag_sq, rtol=tol["rtol"] * 100, atol=tol["zero"])
    # d(x, x) is 0 up to the documented floor
    assert float(space.dist(x, x).max()) < tol["zero"]
    assert float(space.sqdist(x, x).max()) < tol["zero"]


@pytest.mark.parametrize("seed", SEEDS)
def test_lorentz_distance_matches_geoopt(seed):
    space = make("lorentz", torch.float64)
    x, y = points(space, 5, torch.float64, seed), points(space, 5, torch.float64, seed + 7)
    got = space.dist(x, y)
    for m in range(M):
        ref = geoopt.Lorentz(k=space.k[m].detach().clone()).dist(x[:, m], y[:, m])
        torch.testing.assert_close(got[:, m], ref, rtol=1e-9, atol=1e-9)


@params
def test_centroid_of_one_point_is_itself(name, dtype, seed):
    space = make(name, dtype)
    tol = TOL[dtype]
    x = points(space, 4, dtype, seed)  # (B, M, D')
    # centroid of a single point with any positive weight
    w = torch.full((4, M, 1), 0.7, dtype=dtype)
    for b in range(4):
        mu = space.centroid(w[b : b + 1], x[b].unsqueeze(1))  # points (M, 1, D')
        assert mu.shape == (1, M, space.point_dim) and mu.dtype == dtype
        torch.testing.assert_close(mu[0], x[b], rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)
    # and of K copies of one point, under random weights
    g = torch.Generator().manual_seed(seed)
    wk = torch.rand(2, M, 5, generator=g, dtype=torch.float64).to(dtype)
    copies = x[0].unsqueeze(1).expand(M, 5, space.point_dim)
    mu = space.centroid(wk, copies)
    torch.testing.assert_close(mu, x[:1].expand(2, M, -1), rtol=tol["rtol"] * 10, atol=1e-5)


@params
def test_to_poincare_stays_inside_the_unit_ball(name, dtype, seed):
    space = make(name, dtype)
    for scale in (1.0, 50.0, 1e3):  # far points sit next to the rim
        x = points(space, 8, dtype, seed, scale=scale)
        p = space.to_poincare(x)
        assert p.shape == (8, M, D) and p.dtype == dtype
        assert bool((p.norm(dim=-1) < 1.0).all())


def test_lorentz_to_poincare_is_the_lorentz_map_per_subspace():
    space = make("lorentz", torch.float64)
    x = points(space, 5, torch.float64, 0)
    p = space.to_poincare(x)
    for m in range(M):
        torch.testing.assert_close(p[:, m], L.to_poincare(x[:, m], k=space.k[m]))


def _grads_finite(space, loss):
    params = [t for t in space.parameters() if t.requires_grad]
    loss.backward()
    return all(t.grad is None or bool(torch.isfinite(t.grad).all()) for t in params)


@params
def test_gradients_are_finite_at_identical_points(name, dtype, seed):
    space = make(name, dtype, grad=True)
    v = tangent(4, dtype, seed).requires_grad_(True)
    x = space.embed(v)
    loss = space.dist(x, x).sum() + space.pairwise_dist(x, x).sum()
    loss = loss + space.pairwise_dist(x, x.detach().clone()).sum() + space.sqdist(x, x).sum()
    assert _grads_finite(space, loss)
    assert v.grad is not None and bool(torch.isfinite(v.grad).all())


@params
def test_gradients_are_finite_for_large_tangent_norms(name, dtype, seed):
    space = make(name, dtype, grad=True)
    if hasattr(space, "clip_r") and isinstance(space, ProductLorentz):
        space.clip_r = None  # no clip: the exponential map itself must stay finite
    for scale in (1e-8, 1e2, 1e3):
        v = tangent(4, dtype, seed, scale=scale).requires_grad_(True)
        x = space.embed(v)
        cw = space.embed(tangent(6, dtype, seed + 1)).transpose(0, 1)  # (M, K, D')
        sq = space.pairwise_sqdist(x, cw, subspace_first=True)
        w = torch.softmax(-sq.transpose(0, 1), dim=-1)
        loss = space.centroid(w, cw).sum() + space.dist(x, x.flip(0)).sum()
        loss = loss + space.to_poincare(x).sum()
        assert torch.isfinite(loss)
        assert _grads_finite(space, loss), (name, scale)
        assert bool(torch.isfinite(v.grad).all()), (name, scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("magnitude", [0.01, 0.0101, 9.99, 10.0])
def test_lorentz_gradients_are_finite_at_the_curvature_bounds(dtype, magnitude):
    space = ProductLorentz(M, D, curvature=magnitude).to(dtype)
    v = tangent(5, dtype, 0, scale=3.0).requires_grad_(True)
    x = space.embed(v)
    res = space.constraint_residual(x).detach()
    assert float(res.max()) < TOL[dtype]["on"] * 10, float(res.max())
    loss = space.pairwise_dist(x, x).sum() + space.dist(x, x.flip(0)).sum()
    loss = loss + space.centroid(torch.full((5, M, 5), 0.2, dtype=dtype), x.transpose(0, 1)).sum()
    assert _grads_finite(space, loss)
    assert space.curvature.grad is not None and bool(torch.isfinite(space.curvature.grad).all())
    # the step that follows keeps the curvature in its range
    with torch.no_grad():
        space.curvature.add_(torch.tensor([-1.0, 0.0, 100.0], dtype=dtype))
    space.project_parameters_()
    lo, hi = space.curvature_range
    assert bool(((space.curvature >= lo) & (space.curvature <= hi)).all())


def test_make_space_names():
    assert isinstance(make_space("hyperbolic", M, D), ProductLorentz)
    assert isinstance(make_space("Euclidean", M, D), ProductEuclidean)
    with pytest.raises(ValueError, match="unknown geometry"):
        make_space("spherical", M, D)
