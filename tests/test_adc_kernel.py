"""The compiled ADC search (fast path): the reference path's result, bit for bit, at every k."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from hihpq_lib.quantization import adc_kernel
from hihpq_lib.quantization.index import PQIndex

KS = (1, 2, 10, 100, 257, 1000)  # plus N - 1 and N (k >= N) where listed


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


@pytest.mark.parametrize("m", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("integer", [False, True])
def test_kernel_equals_full_sort(m, integer):
    tables, codes = _problem(5, m, 5000, integer=integer, seed=m)
    for k in (*KS, 4999, 5000):
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


@pytest.mark.parametrize("order", ["descending", "ascending", "all_tied", "sawtooth"])
def test_kernel_is_exact_for_adversarial_item_orders(order):
    """The running threshold's worst cases: distances that fall with the item index (every
    item is kept and the buffer is compacted again and again), that rise (nothing after
    the first buffer), all equal (ties across every compaction), and a sawtooth."""
    n = 6000
    k_words = 256
    codes = np.zeros((n, 2), np.uint8)
    j = np.arange(n)
    if order == "descending":
        codes[:, 0] = 255 - (j * 256 // n)
        codes[:, 1] = 255 - (j * 256 // n)
    elif order == "ascending":
        codes[:, 0] = j * 256 // n
        codes[:, 1] = (j * 7) % 256
    elif order == "sawtooth":
        codes[:, 0] = (255 - j) % 256
        codes[:, 1] = (j // 256) % 256
    tables = np.tile(np.linspace(0, 1, k_words, dtype=np.float32), (1, 2, 1))
    if order == "all_tied":
        tables = np.ones_like(tables)
    for k in (*KS, n - 1, n):
        vals, idx = adc_kernel.adc_topk(tables, codes, k)
        ref_v, ref_i = _reference(tables, codes, k)
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
        adc_kernel.adc_topk(torch.from_numpy(tables), codes, 5)
    with pytest.raises(ValueError, match="uint8"):
        adc_kernel.adc_topk(tables, codes.T.copy(), 5)
    with pytest.raises(ValueError, match="1 <= topk"):
        adc_kernel.adc_topk(tables, codes, 0)
    with pytest.raises(ValueError, match="float32"):
        adc_kernel.adc_topk(tables.astype(np.float64), codes, 5)
    with pytest.raises(ValueError, match="uint8"):
        adc_kernel.adc_topk(tables, codes.astype(np.int64), 5)
    with pytest.raises(ValueError, match="M=2"):
        adc_kernel.adc_topk(tables, codes[:, :1], 5)
    with pytest.raises(ValueError, match="1 <= topk <= N = 100"):
        adc_kernel.adc_topk(tables, codes, 101)


def _lorentz_index(n, m=4, seed=0, dtype=torch.float32, metric="geodesic"):
    g = torch.Generator().manual_seed(seed)
    k = torch.tensor([0.5, 1.0, 2.0, 1.5][:m], dtype=dtype)
    v = torch.randn(m, 32, 3, generator=g, dtype=dtype)
    cw = torch.cat([torch.sqrt(k.view(m, 1, 1) + (v * v).sum(-1, keepdim=True)), v], -1)
    index = PQIndex(cw, k, geometry="lorentz", metric=metric)
    index.add(torch.randint(0, 32, (n, m), generator=g).to(torch.uint8))
    qv = torch.randn(11, m, 3, generator=g, dtype=dtype)
    queries = torch.cat([torch.sqrt(k.view(1, m, 1) + (qv * qv).sum(-1, keepdim=True)), qv], -1)
    return index, queries


@pytest.mark.parametrize("mode", ["asymmetric", "symmetric"])
@pytest.mark.parametrize("metric", ["geodesic", "sqlorentz"])
def test_fast_path_equals_reference_path(mode, metric):
    """The compiled path and the reference path of PQIndex.search: identical distances
    and indices (ties included; symmetric mode ties everywhere) for k = 1 ... N."""
    index, queries = _lorentz_index(6000, metric=metric)
    for k in (*KS, 5999, 6000):
        cv, ci = index.search(queries, k, mode=mode, backend="compiled", batch_size=4)
        rv, ri = index.search(queries, k, mode=mode, backend="reference")
        av, ai = index.search(queries, k, mode=mode)  # auto: the compiled path here
        assert torch.equal(ci, ri) and torch.equal(ai, ri)
        assert torch.equal(cv, rv) and torch.equal(av, rv)
        assert cv.dtype == torch.float32 and ci.dtype == torch.int64
        assert ci.shape == (len(queries), k)


def test_fast_path_equals_reference_on_random_euclidean_problems():
    """Random sizes, M and K (K < 256 too), Gaussian codebooks: the same ranking."""
    rng = np.random.default_rng(7)
    for trial in range(6):
        m = int(rng.integers(1, 9))
        k_words = int(rng.choice([3, 16, 256]))
        n = int(rng.integers(1, 9000))
        index = PQIndex(
            torch.from_numpy(rng.standard_normal((m, k_words, 3), np.float32)), geometry="euclidean"
        )
        index.add(torch.from_numpy(rng.integers(0, k_words, (n, m), dtype=np.uint8)))
        queries = torch.from_numpy(rng.standard_normal((5, m, 3), np.float32))
        for k in sorted({1, min(10, n), min(100, n), min(1000, n), n}):
            cv, ci = index.search(queries, k, backend="compiled")
            rv, ri = index.search(queries, k, backend="reference")
            assert torch.equal(ci, ri) and torch.equal(cv, rv), (trial, m, k_words, n, k)


def test_old_backend_names_still_work():
    index, queries = _lorentz_index(300)
    a = index.search(queries, 7, backend="kernel")
    b = index.search(queries, 7, backend="torch")
    c = index.search(queries, 7, backend="compiled")
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_search_without_numba_takes_the_reference_path(monkeypatch):
    """adc_kernel.AVAILABLE is False without numba: auto and the tables use torch, and an
    explicit backend='compiled' warns and falls back; the results do not change."""
    index, queries = _lorentz_index(5000)
    expected = index.search(queries, 20, backend="reference")

    def boom(*args, **kwargs):
        raise AssertionError("the compiled code must not run without numba")

    monkeypatch.setattr(adc_kernel, "AVAILABLE", False)
    monkeypatch.setattr(adc_kernel, "adc_topk", boom)
    monkeypatch.setattr(adc_kernel, "lorentz_tables", boom)
    got = index.search(queries, 20)
    assert torch.equal(got[1], expected[1])
    torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-5)  # torch tables
    with pytest.warns(RuntimeWarning, match="numba is not importable"):
        again = index.search(queries, 20, backend="compiled")
    assert torch.equal(again[1], got[1]) and torch.equal(again[0], got[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index.search(queries, 5, backend="reference")  # no warning on the reference path


def test_index_imports_and_searches_in_a_process_without_numba():
    """A real ImportError for numba (blocked in sys.modules): the package imports, the
    fast path reports itself unavailable, and search returns the reference result."""
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "import torch\n"
        "from hihpq_lib.quantization import adc_kernel\n"
        "from hihpq_lib.quantization.index import PQIndex\n"
        "assert adc_kernel.AVAILABLE is False\n"
        "g = torch.Generator().manual_seed(0)\n"
        "ix = PQIndex(torch.randn(2, 8, 3, generator=g), geometry='euclidean')\n"
        "ix.add(torch.randint(0, 8, (50, 2), generator=g))\n"
        "v, i = ix.search(torch.randn(3, 2, 3, generator=g), 4)\n"
        "d = ix.distances(torch.randn(3, 2, 3, generator=torch.Generator().manual_seed(1)))\n"
        "print(i.shape[1], bool((v[:, 1:] >= v[:, :-1]).all()))\n"
        "try:\n"
        "    adc_kernel.adc_topk(None, None, 1)\n"
        "except ImportError as e:\n"
        "    print('ImportError', 'hihpq[fast]' in str(e))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["4", "True", "ImportError", "True"]


def test_search_with_infinite_tables_takes_the_reference_path():
    """An infinite sub-distance (a codeword far out of float32 range) is not the compiled
    path's business: auto falls back to the reference path, which ranks inf last."""
    g = torch.Generator().manual_seed(0)
    cw = torch.randn(2, 16, 3, generator=g)
    cw[0, 0] = 1e30  # squared distance overflows float32 to inf
    index = PQIndex(cw, geometry="euclidean")
    index.add(torch.randint(0, 16, (5000, 2), generator=g).to(torch.uint8))
    queries = torch.randn(6, 2, 3, generator=g)
    vals, idx = index.search(queries, 5000)
    ref_v, ref_i = index.search(queries, 5000, backend="reference")
    assert torch.isinf(vals).any() and not torch.isnan(vals).any()
    assert torch.equal(idx, ref_i) and torch.equal(vals, ref_v)


def test_search_backend_validation():
    index, queries = _lorentz_index(100)
    with pytest.raises(ValueError, match="backend must be one of"):
        index.search(queries, 5, backend="faiss")
    index64, queries64 = _lorentz_index(100, dtype=torch.float64)
    for name in ("compiled", "kernel"):
        with pytest.raises(ValueError, match="float32 codebooks"):
            index64.search(queries64, 5, backend=name)
    # auto on float64 is the reference path
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

    assert lorentz.SQDIST_SWITCH > 0 and lorentz.DIST_FLOOR_FLOAT32 > 0  # the shared constants
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
