"""Product spaces and the soft product quantizer."""

import pytest
import torch

from hihpq_lib.geometry import lorentz as L
from hihpq_lib.geometry.manifolds import ProductEuclidean, ProductLorentz, code_bits, make_space
from hihpq_lib.quantization.quantizer import ProductQuantizer, check_code_config, m_for_bits


def make_pq(geometry="lorentz", M=3, d=4, K=8, T=1.0, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    space = (
        make_space(geometry, M, d)
        if geometry == "euclidean"
        else ProductLorentz(M, d, curvature=[0.5, 1.0, 2.0][:M] if M == 3 else 1.0)
    )
    return ProductQuantizer(space, K=K, temperature=T).to(dtype)


@pytest.mark.parametrize("geometry", ["lorentz", "euclidean"])
def test_hard_codes_equal_bruteforce_argmin(geometry, dtype):
    pq = make_pq(geometry, dtype=dtype)
    feats = torch.randn(20, pq.feature_dim, dtype=dtype)
    codes = pq.encode(feats)
    assert codes.dtype == torch.uint8 and codes.shape == (20, pq.M)
    with torch.no_grad():
        pts = pq.embed(feats)
        cw = pq.codewords()
    for i in range(20):
        for m in range(pq.M):
            if geometry == "lorentz":
                k = float(pq.space.k[m].detach())
                d = [float(L.sqdist(pts[i, m], cw[m, j], k=k)) for j in range(pq.K)]
            else:
                d = [float(((pts[i, m] - cw[m, j]) ** 2).sum()) for j in range(pq.K)]
            assert int(codes[i, m]) == min(range(pq.K), key=d.__getitem__)
    out = pq(feats)
    assert torch.equal(out.codes.to(torch.uint8), codes)


def test_soft_output_lies_on_manifold_and_dtype(dtype):
    pq = make_pq(dtype=dtype)
    out = pq(torch.randn(10, pq.feature_dim, dtype=dtype))
    assert out.soft.dtype == dtype and out.soft.shape == (10, 3, 5)
    k = pq.space.k.detach().to(dtype).view(1, 3)
    err = (L.inner(out.soft, out.soft) + k).abs()
    assert torch.all(err < (1e-4 if dtype == torch.float32 else 1e-10))
    torch.testing.assert_close(out.assign.sum(-1), torch.ones(10, 3, dtype=dtype))


@pytest.mark.parametrize("geometry", ["lorentz", "euclidean"])
def test_large_temperature_approaches_nearest_codeword(geometry):
    feats = torch.randn(16, 12, dtype=torch.float64)
    errors = []
    for T in (1.0, 10.0, 100.0, 1e4):
        pq = make_pq(geometry, T=T)
        out = pq(feats)
        nearest = pq.decode(out.codes)
        errors.append(pq.space.dist(out.soft, nearest).detach().max().item())
    assert errors[-1] < 1e-3
    assert errors == sorted(errors, reverse=True)


def test_gradients_reach_inputs_codebooks_and_curvatures():
    pq = make_pq(dtype=torch.float32)
    feats = torch.randn(8, pq.feature_dim, requires_grad=True)
    out = pq(feats)
    (out.soft**2).sum().backward()
    for name, g in [
        ("input", feats.grad),
        ("codebooks", pq.codebooks.grad),
        ("curvature", pq.space.curvature.grad),
    ]:
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name


@pytest.mark.parametrize("geometry", ["lorentz", "euclidean"])
def test_sqgeodesic_attention_is_the_softmax_of_squared_geodesic_distances(geometry, dtype):
    """``attention="sqgeodesic"``: softmax(-T d_geo^2) against an elementwise loop over
    :func:`lorentz.dist` (Euclidean: the squared distance itself); hard codes unchanged."""
    T = 3.0
    pq = make_pq(geometry, T=T, dtype=dtype)
    pq_geo = make_pq(geometry, T=T, dtype=dtype)
    pq_geo.attention = "sqgeodesic"
    feats = torch.randn(6, pq.feature_dim, dtype=dtype)
    out, out_geo = pq(feats), pq_geo(feats)
    assert torch.equal(out.codes, out_geo.codes)
    with torch.no_grad():
        pts, cw = pq.embed(feats), pq.codewords()
        ref = torch.empty(6, pq.M, pq.K, dtype=torch.float64)
        for i in range(6):
            for m in range(pq.M):
                for j in range(pq.K):
                    x, y = pts[i, m].double(), cw[m, j].double()
                    if geometry == "lorentz":
                        k = float(pq.space.k[m])
                        ref[i, m, j] = L.dist(x, y, k=k) ** 2
                    else:
                        ref[i, m, j] = ((x - y) ** 2).sum()
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(
        out_geo.assign.double(), torch.softmax(-T * ref, -1), atol=tol, rtol=tol
    )
    if geometry == "euclidean":  # the same attention as "sqdist"
        torch.testing.assert_close(out_geo.assign, out.assign)
    else:  # d_geo^2 > d_L^2 away from 0: a different, sharper attention
        assert not torch.allclose(out_geo.assign, out.assign)


def test_sqgeodesic_attention_gradients_are_finite_at_hard_points(dtype):
    """A feature equal to a codeword (distance 0), far-out features, tiny and large
    curvature: finite, non-zero gradients through the squared geodesic attention."""
    for curv in (0.01, 1.0, 10.0):  # the ends of the allowed curvature range
        torch.manual_seed(1)
        pq = ProductQuantizer(ProductLorentz(2, 3, curvature=curv), K=8, attention="sqgeodesic")
        pq = pq.to(dtype)
        feats = torch.randn(4, 6, dtype=dtype) * torch.tensor(
            [[1.0], [0.01], [1.0], [50.0]], dtype=dtype
        )
        with torch.no_grad():
            feats[0] = pq.codebooks[:, 0].reshape(-1)  # the tangent vectors of codewords 0
        feats.requires_grad_(True)
        out = pq(feats)
        (out.soft**2).sum().backward()
        for name, g in [("input", feats.grad), ("codebooks", pq.codebooks.grad)]:
            assert torch.isfinite(g).all() and g.abs().sum() > 0, (curv, name)
        assert torch.isfinite(pq.space.curvature.grad).all()


def test_unknown_attention_is_refused():
    with pytest.raises(ValueError, match="attention must be one of"):
        ProductQuantizer(make_space("euclidean", 2, 4), K=8, attention="cosine")


def test_code_length_and_bad_configs():
    assert check_code_config(64, 4, 256) == 32
    assert code_bits(8, 256) == 64
    assert m_for_bits(16) == 2 and m_for_bits(64) == 8
    with pytest.raises(ValueError, match="not divisible by M=3"):
        check_code_config(64, 3, 256)
    with pytest.raises(ValueError, match="not a power of 2"):
        ProductQuantizer(ProductLorentz(4, 16), K=200)
    with pytest.raises(ValueError, match="multiple of 8"):
        m_for_bits(20)
    pq = make_pq()
    with pytest.raises(ValueError, match=r"shape \(B, 12\)"):
        pq(torch.randn(4, 10, dtype=torch.float64))


def test_curvature_range_and_projection():
    space = ProductLorentz(2, 3, curvature=1.0)
    with torch.no_grad():
        space.curvature.copy_(torch.tensor([50.0, 1e-5]))
    torch.testing.assert_close(space.k, torch.tensor([0.1, 100.0]))
    space.project_parameters_()
    torch.testing.assert_close(space.curvature.data, torch.tensor([10.0, 0.01]))
    with pytest.raises(ValueError, match="outside"):
        ProductLorentz(2, 3, curvature=20.0)
    with pytest.raises(ValueError, match="1 or M=2"):
        ProductLorentz(2, 3, curvature=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="unknown geometry"):
        make_space("spherical", 2, 3)


def test_product_space_shapes_and_pairwise_consistency(dtype):
    for space in (ProductLorentz(3, 4, curvature=[0.5, 1.0, 3.0]), ProductEuclidean(3, 4)):
        space = space.to(dtype)
        x = space.embed(torch.randn(5, 3, 4, dtype=dtype))
        y = space.embed(torch.randn(7, 3, 4, dtype=dtype))
        pw = space.pairwise_dist(x, y)
        assert pw.shape == (3, 5, 7)
        loop = torch.stack([torch.stack([space.dist(a, b) for b in y], dim=-1) for a in x], dim=1)
        tol = 1e-4 if dtype == torch.float32 else 1e-9
        torch.testing.assert_close(pw, loop, rtol=tol, atol=tol)
        if space.geometry == "lorentz":
            # squared Lorentzian distance = 2k (cosh(d / sqrt k) - 1)
            k = space.k.detach().to(dtype).view(3, 1, 1)
            expected = 2 * k * (torch.cosh(pw / k.sqrt()) - 1)
        else:
            expected = pw**2
        torch.testing.assert_close(
            space.pairwise_sqdist(x, y), expected, rtol=tol * 10, atol=tol * 10
        )


def test_lorentz_space_log_inverts_embed_within_clip():
    space = ProductLorentz(2, 3, curvature=[0.5, 4.0], clip_r=1.5).double()
    v = torch.randn(10, 2, 3, dtype=torch.float64)
    v = v / v.norm(dim=-1, keepdim=True) * 1.2
    torch.testing.assert_close(space.log(space.embed(v)), v)
    p = space.to_poincare(space.embed(v))
    assert p.shape == (10, 2, 3) and torch.all(p.norm(dim=-1) < 1)


def test_init_from_features_and_usage():
    pq = make_pq(K=8, dtype=torch.float32)
    feats = torch.randn(64, pq.feature_dim)
    pq.init_from_features(feats, generator=torch.Generator().manual_seed(0))
    usage = pq.codeword_usage(feats)
    assert usage.shape == (3, 8) and torch.all(usage.sum(1) == 64)
    # each codeword is a (clipped) data point, so each is chosen at least by itself
    assert torch.all(usage > 0)
    with pytest.raises(ValueError, match="at least K=8"):
        pq.init_from_features(feats[:4])
