"""The compiled ADC kernel: exact top-k of summed tables, against a lexsort of the torch lookup."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch

from hihpq_lib.quantization import adc_kernel
from hihpq_lib.quantization.index import PQIndex


def _reference(tables: np.ndarray, codes: np.ndarray, k: int):
    """Sequential float32 sums (m = 0, 1, ...) and a full (distance, index) sort."""
    b, m, _ = tables.shape
    dist = tables[:, 0, codes[:, 0].astype(np.int64)]
    for mm in range(1, m):
        dist += tables[:, mm, codes[:, mm].astype(np.int64)]
    order = np.lexsort((np.broadcast_to(np.arange(dist.shape[1]), dist.shape), dist), axis=1)
    return np.take_along_axis(dist, order[:, :k], 1), order[:, :k]


def _problem(b, m, n, k_words=256, seed=0, integer=False, signed=False):
    rng = np.random.default_rng(seed)
    tables = rng.random((b, m, k_words)).astype(np.float32)
    if integer:  # few distinct values: ties everywhere
        tables = np.floor(tables * 4).astype(np.float32)
    if signed:
        tables -= 0.5
    codes = rng.integers(0, k_words, (n, m), dtype=np.uint8)
    return tables, codes


def test_doctests():
    result = doctest.testmod(adc_kernel)
    assert result.attempted >= 1
    assert result.failed == 0


@pytest.mark.parametrize("m", [1, 2, 3, 8])
@pytest.mark.parametrize("integer", [False, True])
def test_kernel_equals_full_sort(m, integer):
    tables, codes = _problem(5, m, 5000, integer=integer, seed=m)
    for k in (1, 10, 1000, 4999, 5000):
        vals, idx = adc_kernel.adc_topk(tables, codes, k)
        ref_v, ref_i = _reference(tables, codes, k)
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_array_equal(vals, ref_v)


def test_kernel_orders_negative_distances():
    """The float-bits sort key must order negative values, and tie -0.0 with 0.0."""
    tables, codes = _problem(4, 2, 4096, signed=True, seed=3)
    tables[0, :, :8] = -0.0  # items with codes < 8 in both subspaces sum to -0.0
    tables[0, :, 8:16] = 0.0  # ... and these to +0.0: equal, so ranked by index
    v = _reference(tables, codes, 4096)[0][0]
    assert ((v == 0) & np.signbit(v)).any() and ((v == 0) & ~np.signbit(v)).any()
    for k in (700, 4096):
        vals, idx = adc_kernel.adc_topk(tables, codes, k)
        ref_v, ref_i = _reference(tables, codes, k)
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_array_equal(vals, ref_v)


def test_kernel_falls_back_when_the_sample_misleads():
    """A sample that sees only large distances (fewer than k candidates) and a threshold
    that lets every item through (more than the candidate buffer) both end exact."""
    n, k = 8000, 100
    codes = np.zeros((n, 1), np.uint8)
    codes[::16, 0] = 1  # every sampled item (stride 16 here) has distance 5
    codes[3::16, 0] = 2
    tables = np.array([[[0.5, 5.0, 0.1]]], np.float32)
    for t in (tables, np.ones_like(tables)):  # second: all distances tie
        vals, idx = adc_kernel.adc_topk(t, codes, k)
        ref_v, ref_i = _reference(t, codes, k)
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_array_equal(vals, ref_v)


def test_kernel_result_does_not_depend_on_threads():
    tables, codes = _problem(9, 4, 6000, seed=5)
    one = adc_kernel.adc_topk(tables, codes, 50, threads=1)
    two = adc_kernel.adc_topk(tables, codes, 50, threads=2)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)


def test_kernel_rejects_bad_input():
    tables, codes = _problem(2, 2, 100)
    with pytest.raises(ValueError, match="float32"):
        adc_kernel.adc_topk(tables.astype(np.float64), codes, 5)
    with pytest.raises(ValueError, match="uint8"):
        adc_kernel.adc_topk(tables, codes.astype(np.int64), 5)
    with pytest.raises(ValueError, match="M=2"):
        adc_kernel.adc_topk(tables, codes[:, :1], 5)
    with pytest.raises(ValueError, match="1 <= k <= N = 100"):
        adc_kernel.adc_topk(tables, codes, 101)


def _lorentz_index(n, m=4, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    k = torch.tensor([0.5, 1.0, 2.0, 1.5][:m], dtype=dtype)
    v = torch.randn(m, 32, 3, generator=g, dtype=dtype)
    cw = torch.cat([torch.sqrt(k.view(m, 1, 1) + (v * v).sum(-1, keepdim=True)), v], -1)
    index = PQIndex(cw, k, geometry="lorentz")
    index.add(torch.randint(0, 32, (n, m), generator=g).to(torch.uint8))
    qv = torch.randn(11, m, 3, generator=g, dtype=dtype)
    queries = torch.cat([torch.sqrt(k.view(1, m, 1) + (qv * qv).sum(-1, keepdim=True)), qv], -1)
    return index, queries


@pytest.mark.parametrize("mode", ["asymmetric", "symmetric"])
def test_search_backends_agree(mode):
    index, queries = _lorentz_index(6000)
    for k in (1, 100, 6000):
        kv, ki = index.search(queries, k, mode=mode, backend="kernel", batch_size=4)
        tv, ti = index.search(queries, k, mode=mode, backend="torch")
        av, ai = index.search(queries, k, mode=mode)  # auto: the kernel at this N
        assert torch.equal(ki, ti) and torch.equal(ai, ti)
        assert torch.equal(kv, tv) and torch.equal(av, tv)
        assert kv.dtype == torch.float32 and ki.dtype == torch.int64


def test_search_with_infinite_tables_takes_the_torch_path():
    """An infinite sub-distance (a codeword far out of float32 range) is not the kernel's
    business: auto falls back to the torch path, which ranks inf last."""
    g = torch.Generator().manual_seed(0)
    cw = torch.randn(2, 16, 3, generator=g)
    cw[0, 0] = 1e30  # squared distance overflows float32 to inf
    index = PQIndex(cw, geometry="euclidean")
    index.add(torch.randint(0, 16, (5000, 2), generator=g).to(torch.uint8))
    queries = torch.randn(6, 2, 3, generator=g)
    vals, idx = index.search(queries, 5000)
    ref_v, ref_i = index.search(queries, 5000, backend="torch")
    assert torch.isinf(vals).any() and not torch.isnan(vals).any()
    assert torch.equal(idx, ref_i) and torch.equal(vals, ref_v)


def test_search_backend_validation():
    index, queries = _lorentz_index(100)
    with pytest.raises(ValueError, match="backend must be one of"):
        index.search(queries, 5, backend="faiss")
    index64, queries64 = _lorentz_index(100, dtype=torch.float64)
    with pytest.raises(ValueError, match="float32 codebooks"):
        index64.search(queries64, 5, backend="kernel")
    # auto on float64 is the torch path
    v, i = index64.search(queries64, 5)
    assert v.dtype == torch.float64 and i.shape == (11, 5)


# ---------------------------------------------------------------------- Lorentz tables


@pytest.mark.parametrize("geodesic", [True, False])
@pytest.mark.parametrize("curv", [1e-3, 1.0, 50.0])
@pytest.mark.parametrize("scale", [0.1, 1.0, 6.0])
def test_lorentz_tables_equal_the_library_formula(geodesic, curv, scale):
    """Against :func:`lorentz.dist` / :func:`lorentz.sqdist` in float64 on the same float32
    points: tiny to large curvature, near-origin to far-out points, identical pairs."""
    from hihpq_lib.geometry import lorentz

    g = torch.Generator().manual_seed(int(curv * 10) + int(scale * 10))
    m, kw, n = 3, 20, 5
    k = torch.full((m,), curv)

    def lift(v, kb):  # x0 = sqrt(k + |v|^2), in float64, stored as float32
        v = v.double()
        return torch.cat([torch.sqrt(kb + (v * v).sum(-1, keepdim=True)), v], -1).float()

    cw = lift(scale * math.sqrt(curv) * torch.randn(m, kw, n, generator=g), k.view(m, 1, 1))
    pts = lift(scale * math.sqrt(curv) * torch.randn(6, m, n, generator=g), k.view(1, m, 1))
    pts[0] = cw[:, 3]  # a query equal to codeword 3 of every subspace
    got = adc_kernel.lorentz_tables(pts.numpy(), cw.numpy(), k.numpy(), geodesic=geodesic)
    fn = lorentz.dist if geodesic else lorentz.sqdist
    ref = fn(
        pts.double().transpose(0, 1).unsqueeze(2),
        cw.double().unsqueeze(1),
        k=k.double().view(-1, 1, 1, 1),
    ).transpose(0, 1)
    assert got.dtype == np.float32 and got.shape == (6, m, kw)
    # atol: + 1e-6, the float32 floor of a geodesic distance (sqrt of the 1e-12 sq floor)
    np.testing.assert_allclose(got, ref.numpy(), rtol=2e-5, atol=1e-5 * math.sqrt(curv) + 1e-6)
    if not geodesic:
        assert (got[0, :, 3] == 0).all()  # identical points: exactly zero


def test_lorentz_tables_reject_bad_input():
    pts = np.ones((2, 3, 4), np.float32)
    cw = np.ones((3, 5, 4), np.float32)
    k = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="float32"):
        adc_kernel.lorentz_tables(pts.astype(np.float64), cw, k)
    with pytest.raises(ValueError, match="do not match"):
        adc_kernel.lorentz_tables(pts[:, :2], cw, k)
    with pytest.raises(ValueError, match="do not match"):
        adc_kernel.lorentz_tables(pts, cw[0], k)


def test_kernels_keep_no_reference_to_their_arguments():
    """A compiled call must not retain its array arguments (numba's ``literally``
    dispatch did: every search leaked its tables, and a benchmark grew to 19 GB)."""
    import sys

    tables, codes = _problem(3, 4, 5000)
    before = sys.getrefcount(tables), sys.getrefcount(codes)
    for _ in range(3):
        adc_kernel.adc_topk(tables, codes, 10)
    assert (sys.getrefcount(tables), sys.getrefcount(codes)) == before
    pts = np.ones((2, 3, 4), np.float32)
    cw = np.ones((3, 5, 4), np.float32)
    k = np.ones(3, np.float32)
    before = sys.getrefcount(pts), sys.getrefcount(cw), sys.getrefcount(k)
    for _ in range(3):
        adc_kernel.lorentz_tables(pts, cw, k)
    assert (sys.getrefcount(pts), sys.getrefcount(cw), sys.getrefcount(k)) == before
