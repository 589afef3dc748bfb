"""Tests for hihpq_lib.quantization.index: ADC / symmetric search, encoding, persistence, checks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hihpq_lib.quantization import index as index_module
from hihpq_lib.quantization.index import FORMAT_VERSION, PQIndex, topk_smallest

M, K, N_SUB = 3, 16, 4  # subspaces, codewords per subspace, hyperbolic dimension per subspace
CURV = [0.5, 1.0, 2.0]  # geoopt's k per subspace (sectional curvature -1/k)
# absolute tolerance on summed distances, per dtype
ATOL = {torch.float32: 2e-3, torch.float64: 1e-7}


def _hyperboloid(v: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Lift space coordinates v (..., n) onto <x, x>_L = -k: x0 = sqrt(k + |v|^2)."""
    return torch.cat([torch.sqrt(k + (v * v).sum(-1, keepdim=True)), v], dim=-1)


def _make(geometry, dtype, seed=0, n_db=60, metric=None):
    g = torch.Generator().manual_seed(seed)
    if geometry == "lorentz":
        k = torch.tensor(CURV, dtype=dtype)
        cw = _hyperboloid(torch.randn(M, K, N_SUB, generator=g, dtype=dtype), k.view(M, 1, 1))
        queries = _hyperboloid(torch.randn(7, M, N_SUB, generator=g, dtype=dtype), k.view(1, M, 1))
    else:
        k = None
        cw = torch.randn(M, K, N_SUB, generator=g, dtype=dtype)
        queries = torch.randn(7, M, N_SUB, generator=g, dtype=dtype)
    index = PQIndex(cw, k, geometry=geometry, metric=metric, metadata={"seed": seed})
    codes = torch.randint(0, K, (n_db, M), generator=g).to(torch.uint8)
    index.add(codes)
    return index, queries


def _ref_dist(x, y, k, geometry, metric):
    """Independent float64 reference for one pair of sub-points."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if geometry == "euclidean":
        sq = float(((x - y) ** 2).sum())
        return sq if metric == "sqeuclidean" else math.sqrt(sq)
    inner = -x[0] * y[0] + float((x[1:] * y[1:]).sum())
    if metric == "sqlorentz":
        return max(-2 * k - 2 * inner, 0.0)
    return math.sqrt(k) * math.acosh(max(1.0, -inner / k))


def _brute_force(index, queries, mode):
    """Double loop over queries and database items (and subspaces)."""
    cw, codes = index.codewords, index.codes.long()
    kk = index.k.tolist() if index.k is not None else [None] * index.M
    out = np.zeros((len(queries), index.ntotal))
    for qi in range(len(queries)):
        sub = queries[qi]
        if mode == "symmetric":  # quantize the query with a brute-force argmin first
            sub = torch.stack(
                [
                    cw[m][
                        int(
                            np.argmin(
                                [
                                    _ref_dist(sub[m], cw[m, j], kk[m], index.geometry, index.metric)
                                    for j in range(index.K)
                                ]
                            )
                        )
                    ]
                    for m in range(index.M)
                ]
            )
        for n in range(index.ntotal):
            out[qi, n] = sum(
                _ref_dist(sub[m], cw[m, codes[n, m]], kk[m], index.geometry, index.metric)
                for m in range(index.M)
            )
    return out


CASES = [
    ("lorentz", "geodesic"),
    ("lorentz", "sqlorentz"),
    ("euclidean", "sqeuclidean"),
    ("euclidean", "euclidean"),
]


# ---------------------------------------------------------------------- distances
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("geometry", "metric"), CASES)
@pytest.mark.parametrize("mode", ["asymmetric", "symmetric"])
def test_distances_equal_brute_force_loop(geometry, metric, mode, dtype):
    index, queries = _make(geometry, dtype, metric=metric)
    got = index.distances(queries, mode=mode)
    assert got.dtype == dtype and got.shape == (7, 60)
    ref = _brute_force(index, queries, mode)
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=1e-5, atol=ATOL[dtype])
    assert torch.isfinite(got).all()


@pytest.mark.parametrize(("geometry", "metric"), CASES)
def test_search_is_the_sorted_brute_force_ranking(geometry, metric):
    index, queries = _make(geometry, torch.float64, seed=1, metric=metric)
    for mode in ("asymmetric", "symmetric"):
        dist, idx = index.search(queries, 10, mode=mode)
        ref = _brute_force(index, queries, mode)
        # break ties (frequent in symmetric mode) by the lower index, as documented
        order = np.lexsort((np.broadcast_to(np.arange(60), ref.shape), ref.round(9)), axis=1)
        np.testing.assert_array_equal(idx.numpy(), order[:, :10])
        np.testing.assert_allclose(
            dist.numpy(), np.take_along_axis(ref, order[:, :10], 1), atol=1e-7
        )


def test_search_batches_do_not_change_results():
    index, queries = _make("lorentz", torch.float32, seed=2, n_db=200)
    for mode in ("asymmetric", "symmetric"):
        d1, i1 = index.search(queries, 25, mode=mode)
        d2, i2 = index.search(queries, 25, mode=mode, batch_size=2)
        assert torch.equal(i1, i2) and torch.equal(d1, d2)
        assert i1.dtype == torch.int64 and d1.dtype == torch.float32


def test_large_database_lookup_path_matches_small_path_and_tables():
    # N >= 2048 uses a per-query gather loop, smaller databases a batched gather
    big, queries = _make("lorentz", torch.float32, seed=5, n_db=2500)
    small = PQIndex(big.codewords, big.k)
    small.add(big.codes[:100])
    d_big = big.distances(queries)
    assert torch.equal(d_big[:, :100], small.distances(queries))
    tables, codes = big.subspace_distances(queries), big.codes.long()
    ref = sum(tables[:, m, codes[:, m]] for m in range(M))
    torch.testing.assert_close(d_big, ref, rtol=0, atol=1e-5)
    dist, idx = big.search(queries, 50)
    assert torch.equal(dist, torch.gather(d_big, 1, idx))
    assert torch.equal(idx, torch.sort(d_big, dim=1, stable=True).indices[:, :50])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("geometry", ["lorentz", "euclidean"])
def test_item_queried_against_itself_ranks_first(geometry, dtype):
    index, _ = _make(geometry, dtype, n_db=0)
    g = torch.Generator().manual_seed(3)
    codes = torch.stack([torch.randperm(K, generator=g) for _ in range(M)], dim=1)  # unique rows
    index.add(codes.to(torch.uint8))
    points = index.decode(codes)  # codeword-exact points, (K, M, D')
    assert points.shape == (K, M, N_SUB + 1 if geometry == "lorentz" else N_SUB)
    for mode in ("asymmetric", "symmetric"):
        dist, idx = index.search(points, 3, mode=mode)
        assert torch.equal(idx[:, 0], torch.arange(K))
        assert (dist[:, 0] < dist[:, 1]).all()
    assert (index.search(points, 1, mode="symmetric")[0] == 0).all()  # exact zero diagonal


def test_ties_in_symmetric_mode_rank_lower_index_first():
    index, _ = _make("euclidean", torch.float64, n_db=0)
    codes = torch.tensor([[1, 2, 3], [4, 5, 6], [1, 2, 3], [1, 2, 3]], dtype=torch.uint8)
    index.add(codes)
    dist, idx = index.search(index.decode(codes[2:3]), 4, mode="symmetric")
    assert idx.tolist() == [[0, 2, 3, 1]]
    assert dist[0, :3].tolist() == [0.0, 0.0, 0.0]


def test_topk_smallest_matches_lexsort():
    rng = np.random.default_rng(0)
    for levels in (3, 50, 10_000):  # heavy ties ... almost none
        d = rng.integers(0, levels, size=(20, 300)).astype(np.float64)
        ref = np.lexsort((np.broadcast_to(np.arange(300), d.shape), d), axis=1)
        for k in (1, 17, 300):
            vals, idx = topk_smallest(torch.from_numpy(d), k)
            np.testing.assert_array_equal(idx.numpy(), ref[:, :k])
            np.testing.assert_array_equal(vals.numpy(), np.take_along_axis(d, ref[:, :k], 1))
    with pytest.raises(ValueError, match="NaN"):
        topk_smallest(torch.tensor([[0.0, float("nan")]]), 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["shuffled", "sorted", "reversed"])
def test_topk_smallest_threshold_path_matches_lexsort(dtype, layout):
    """Rows of N >= 4096 with k <= N/4 take the sampled-threshold path; it must agree
    with a full lexsort, also when the sample misleads (sorted rows put every small value
    in the first columns, reversed rows in the last) and under heavy ties."""
    rng = np.random.default_rng(1)
    n = 6000
    for levels in (2, 40, 10**6):
        d = rng.integers(0, levels, size=(9, n)).astype(np.float64)
        if layout == "sorted":
            d.sort(axis=1)
        elif layout == "reversed":
            d = -np.sort(-d, axis=1)
        d[0, ::7] = np.inf  # infinite distances sort last, by index
        t = torch.from_numpy(d).to(dtype)
        ref = np.lexsort((np.broadcast_to(np.arange(n), d.shape), t.double().numpy()), axis=1)
        for k in (1, 10, 1000, 1500):
            vals, idx = topk_smallest(t, k)
            np.testing.assert_array_equal(idx.numpy(), ref[:, :k])
            assert vals.dtype == dtype
            np.testing.assert_array_equal(
                vals.numpy(), np.take_along_axis(t.numpy(), ref[:, :k], 1)
            )


def test_topk_smallest_threshold_path_falls_back_when_the_sample_misleads(monkeypatch):
    """Small values exactly on the sampled columns make the sampled threshold admit fewer
    than k entries; those rows must be recomputed exactly (and the result still agree)."""

    exact_rows = []
    real_exact = index_module._topk_exact

    def spy(dist, k):
        exact_rows.append(dist.shape[0])
        return real_exact(dist, k)

    monkeypatch.setattr(index_module, "_topk_exact", spy)
    n, k = 6000, 100  # sampling step min(32, n // (4 k)) = 15
    d = torch.full((3, n), 5.0, dtype=torch.float64)
    d[1:, ::15] = torch.arange(0, n, 15, dtype=torch.float64) / n  # only rows 1 and 2 mislead
    d[:, 7] = 4.0
    vals, idx = topk_smallest(d, k)
    assert exact_rows == [2]
    ref = np.lexsort((np.broadcast_to(np.arange(n), d.shape), d.numpy()), axis=1)
    np.testing.assert_array_equal(idx.numpy(), ref[:, :k])


@pytest.mark.parametrize("geometry", ["lorentz", "euclidean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_search_on_a_large_database_equals_sorting_all_distances(geometry, dtype):
    """Both search paths (float32: the compiled one by default; float64: the reference,
    whose top-k uses a sampled threshold at this N) return exactly the first k of a full
    (distance, index) sort, also in symmetric mode where ties are everywhere."""
    index, queries = _make(geometry, dtype, n_db=6000)
    for mode in ("asymmetric", "symmetric"):
        d = index.distances(queries, mode=mode).double().numpy()
        ref = np.lexsort((np.broadcast_to(np.arange(d.shape[1]), d.shape), d), axis=1)
        for k in (1, 10, 1500):
            for batch_size in (None, 3):
                vals, idx = index.search(queries, k, mode=mode, batch_size=batch_size)
                np.testing.assert_array_equal(idx.numpy(), ref[:, :k])
                np.testing.assert_array_equal(
                    vals.double().numpy(), np.take_along_axis(d, ref[:, :k], 1)
                )


def test_topk_smallest_threshold_path_rejects_nan():
    d = torch.rand(3, 5000)
    d[2, 4321] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        topk_smallest(d, 10)


# ---------------------------------------------------------------------- encoding
@pytest.mark.parametrize("geometry", ["lorentz", "euclidean"])
def test_add_points_encodes_by_nearest_codeword(geometry):
    index, queries = _make(geometry, torch.float64, n_db=0)
    codes = index.add_points(queries)
    assert codes.dtype == torch.uint8 and codes.shape == (7, M)
    assert torch.equal(index.codes, codes)
    kk = index.k.tolist() if index.k is not None else [None] * M
    for q in range(7):
        for m in range(M):
            ref = [
                _ref_dist(queries[q, m], index.codewords[m, j], kk[m], geometry, index.metric)
                for j in range(K)
            ]
            assert int(codes[q, m]) == int(np.argmin(ref))
    assert torch.equal(index.encode(index.decode(codes)), codes)
    # flat (Q, M*D') input is accepted
    assert torch.equal(index.encode(queries.reshape(7, -1)), codes)


# ---------------------------------------------------------------------- persistence
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("geometry", ["lorentz", "euclidean"])
def test_save_load_round_trip(tmp_path, geometry, dtype):
    index, queries = _make(geometry, dtype, seed=4)
    index.metadata["config"] = {"M": M, "lr": 1e-3, "name": "toy"}
    folder = index.save(tmp_path / "idx")
    assert sorted(p.name for p in folder.iterdir()) == ["index.json", "tensors.pt"]
    header = json.loads((folder / "index.json").read_text())
    assert header["format_version"] == FORMAT_VERSION
    assert (header["geometry"], header["M"], header["K"], header["ntotal"]) == (geometry, M, K, 60)
    loaded = PQIndex.load(folder)
    assert loaded.dtype == dtype and loaded.metadata == index.metadata
    assert torch.equal(loaded.codes, index.codes)
    for mode in ("asymmetric", "symmetric"):
        a, b = index.search(queries, 9, mode=mode), loaded.search(queries, 9, mode=mode)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    index.save(folder)  # overwriting an existing folder works
    assert PQIndex.load(folder).ntotal == 60


def test_load_rejects_other_format_version(tmp_path):
    index, _ = _make("lorentz", torch.float32)
    folder = index.save(tmp_path / "idx")
    header = json.loads((folder / "index.json").read_text())
    header["format_version"] = FORMAT_VERSION + 1
    (folder / "index.json").write_text(json.dumps(header))
    with pytest.raises(ValueError, match=r"format_version 2.*reads version 1"):
        PQIndex.load(folder)


def test_load_reports_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved PQIndex"):
        PQIndex.load(tmp_path)
    index, _ = _make("euclidean", torch.float32)
    folder = index.save(tmp_path / "idx")
    payload = (folder / "tensors.pt").read_bytes()
    (folder / "tensors.pt").write_bytes(payload[:-10] + b"0123456789")
    with pytest.raises(ValueError, match="checksum"):
        PQIndex.load(folder)
    (folder / "tensors.pt").unlink()
    with pytest.raises(FileNotFoundError, match="tensors.pt"):
        PQIndex.load(folder)
    (folder / "index.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        PQIndex.load(folder)
    assert not list(folder.glob("*.tmp"))  # atomic writes leave no temporary files


# ---------------------------------------------------------------------- checks, memory
def test_memory_and_code_size():
    index, _ = _make("lorentz", torch.float32, n_db=1000)
    assert index.memory_bytes(include_codebooks=False) == 1000 * M
    assert index.memory_bytes() == 1000 * M + M * K * (N_SUB + 1) * 4 + M * 4
    assert index.code_size_bits == M * 4  # K = 16 -> 4 bits per subspace (stored in a byte)
    assert len(index) == 1000 and "ntotal=1000" in repr(index)
    index.reset()
    assert index.ntotal == 0


def test_input_validation():
    cw = torch.randn(M, K, N_SUB + 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="K = 300"):
        PQIndex(torch.randn(2, 300, 3), geometry="euclidean")
    with pytest.raises(ValueError, match="geometry"):
        PQIndex(cw, geometry="poincare")
    with pytest.raises(ValueError, match="metric 'geodesic' is not available"):
        PQIndex(cw, geometry="euclidean", metric="geodesic")
    with pytest.raises(ValueError, match="k=None for euclidean"):
        PQIndex(cw, 1.0, geometry="euclidean")
    with pytest.raises(ValueError, match=r"shape \(M,\)"):
        PQIndex(cw, torch.ones(2))
    with pytest.raises(ValueError, match="> 0"):
        PQIndex(cw, torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(TypeError, match="JSON"):
        PQIndex(cw, metadata={"bad": object()})
    index = PQIndex(cw, 2.0)
    assert index.k.tolist() == [2.0] * M and index.k.dtype == torch.float64
    with pytest.raises(ValueError, match=r"\[0, K\) = \[0, 16\)"):
        index.add(torch.full((2, M), 16, dtype=torch.uint8))
    with pytest.raises(TypeError, match="integer"):
        index.add(torch.zeros(2, M))
    with pytest.raises(ValueError, match=r"\(N, M\)"):
        index.add(torch.zeros(2, M + 1, dtype=torch.uint8))
    with pytest.raises(ValueError, match="empty"):
        index.search(torch.randn(1, M, N_SUB + 1), 1)
    index.add(torch.zeros(2, M, dtype=torch.int64))  # other integer dtypes are converted
    assert index.codes.dtype == torch.uint8
    with pytest.raises(ValueError, match="topk"):
        index.search(torch.randn(1, M, N_SUB + 1), 3)
    for bad_k in (0, -1, 1.0, True, "2"):
        with pytest.raises(ValueError, match=r"topk must be an int with 1 <= topk <= N = 2"):
            index.search(torch.randn(1, M, N_SUB + 1), bad_k)
    with pytest.raises(TypeError, match="integer tensor"):
        index.add(torch.zeros(2, M, dtype=torch.bool))
    with pytest.raises(TypeError, match="torch.Tensor"):
        index.add(np.zeros((2, M), np.uint8))
    with pytest.raises(ValueError, match=r"shape \(N, M\) = \(N, 3\)"):
        index.add(torch.zeros(M, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(Q, M, D'\)"):
        index.search(torch.randn(1, M, N_SUB), 1)
    with pytest.raises(ValueError, match="mode"):
        index.search(torch.randn(1, M, N_SUB + 1), 1, mode="hamming")
    with pytest.raises(ValueError, match="NaN"):
        index.search(torch.full((1, M, N_SUB + 1), float("nan")), 1)
