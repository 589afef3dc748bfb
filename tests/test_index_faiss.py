"""PQIndex.to_faiss(): the same codes searched by faiss IndexPQ.

``"sqlorentz"`` is an inner-product PQ search with the query's time coordinate negated,
so faiss must return our ranking (up to float32 rounding of near-equal distances) and
our distances; ``"geodesic"`` re-ranks faiss's candidates with our tables.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from hihpq_lib.geometry import lorentz
from hihpq_lib.quantization.index import FaissExport, PQIndex

faiss = pytest.importorskip("faiss")


def _lorentz_problem(n=20000, m=4, n_sub=8, q=60, seed=0, metric="sqlorentz", k_words=256):
    """Random codewords and queries on products of hyperboloids, curvature k_m != 1."""
    g = torch.Generator().manual_seed(seed)
    k = torch.tensor([0.5, 1.0, 2.0, 1.5, 0.8, 1.2, 3.0, 0.3][:m])
    scale = 0.6 / n_sub**0.5
    cw = lorentz.expmap0(
        lorentz.lift(scale * torch.randn(m, k_words, n_sub, generator=g)), k=k.view(m, 1, 1)
    )
    queries = lorentz.expmap0(
        lorentz.lift(scale * torch.randn(q, m, n_sub, generator=g)), k=k.view(1, m, 1)
    )
    index = PQIndex(cw, k, metric=metric)
    index.add(torch.randint(0, k_words, (n, m), generator=g).to(torch.uint8))
    return index, queries


def _overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(
        np.mean(
            [len(set(x.tolist()) & set(y.tolist())) / len(x) for x, y in zip(a, b, strict=True)]
        )
    )


@pytest.mark.parametrize("k_words", [256, 37])
def test_sqlorentz_to_faiss_gives_our_ranking_and_distances(k_words):
    index, queries = _lorentz_problem(k_words=k_words)
    fx = index.to_faiss()
    assert isinstance(fx, FaissExport) and fx.exact and fx.ntotal == index.ntotal
    assert isinstance(fx.index, faiss.IndexPQ)
    assert fx.index.metric_type == faiss.METRIC_INNER_PRODUCT
    ours_d, ours_i = index.search(queries, 100)
    f_d, f_i = fx.search(queries, 100)
    assert _overlap(ours_i, f_i) == 1.0  # the same top-100 sets
    # the same distances: faiss's -2 sum(k) - 2 IP equals our summed tables
    torch.testing.assert_close(f_d, ours_d, rtol=0, atol=2e-5)
    # positions may differ only between items whose distances tie up to rounding (or
    # exactly: items with the same code; faiss orders exact ties in its own way)
    differ = ours_i != f_i
    if k_words == 256:  # few shared codes: nearly every position agrees
        assert differ.float().mean() < 0.01
    exact = index.distances(queries).double()
    gap = (
        torch.gather(exact, 1, ours_i[differ.any(1)]) - torch.gather(exact, 1, f_i[differ.any(1)])
    ).abs()
    assert gap.numel() == 0 or gap.max() < 2e-5


def test_sqlorentz_distances_are_an_affine_map_of_faiss_inner_products():
    """faiss's raw scores on the transformed queries: dist = -2 sum_m k_m - 2 IP."""
    index, queries = _lorentz_problem(n=3000, q=10)
    fx = index.to_faiss()
    scores, idx = fx.index.search(fx.query_vectors(queries), 50)
    dist = index.distances(queries).double().numpy()
    ours = np.take_along_axis(dist, idx, 1)
    np.testing.assert_allclose(ours, -2 * float(index.k.sum()) - 2 * scores, atol=2e-5)
    assert (fx.query_vectors(queries)[:, 0] == -queries[:, 0, 0].numpy()).all()


def test_sqeuclidean_to_faiss_is_faiss_l2_pq():
    g = torch.Generator().manual_seed(1)
    index = PQIndex(torch.randn(4, 256, 4, generator=g), geometry="euclidean")
    index.add(torch.randint(0, 256, (5000, 4), generator=g).to(torch.uint8))
    queries = torch.randn(20, 4, 4, generator=g)
    fx = index.to_faiss()
    assert fx.exact and fx.index.metric_type == faiss.METRIC_L2
    ours_d, ours_i = index.search(queries, 50)
    f_d, f_i = fx.search(queries, 50)
    assert _overlap(ours_i, f_i) == 1.0
    torch.testing.assert_close(f_d, ours_d, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("metric", ["geodesic"])
def test_geodesic_to_faiss_reranks_candidates_with_high_recall(metric):
    """Not exact: faiss candidates by squared Lorentzian distance, re-ranked by geodesic
    tables. The re-ranked distances are our distances, and recall@10 stays high."""
    index, queries = _lorentz_problem(metric=metric, n=20000, q=50)
    fx = index.to_faiss()
    assert not fx.exact
    exact_d, exact_i = index.search(queries, 10)
    f_d, f_i = fx.search(queries, 10)
    recall = _overlap(exact_i, f_i)
    assert recall >= 0.95, recall
    # whatever faiss returns carries our geodesic distance to that item
    all_d = index.distances(queries)
    torch.testing.assert_close(f_d, torch.gather(all_d, 1, f_i), rtol=1e-5, atol=1e-5)
    assert (f_d[:, 1:] >= f_d[:, :-1]).all()
    # candidates = N: every item is re-ranked, so the result is exact
    full_d, full_i = fx.search(queries, 10, candidates=index.ntotal)
    assert torch.equal(full_i, exact_i)
    # fewer candidates can only lose recall
    assert _overlap(exact_i, fx.search(queries, 10, candidates=10)[1]) <= recall


def test_to_faiss_checks_inputs():
    index, queries = _lorentz_problem(n=200, q=3, metric="geodesic")
    fx = index.to_faiss()
    for bad in (0, 201, 2.5):
        with pytest.raises(ValueError, match="topk must be an int"):
            fx.search(queries, bad)
    with pytest.raises(ValueError, match="candidates must be"):
        fx.search(queries, 10, candidates=5)
    with pytest.raises(ValueError, match=r"\(Q, M, D'\)"):
        fx.search(queries[:, :2], 3)
    empty = PQIndex(index.codewords, index.k)
    with pytest.raises(ValueError, match="empty"):
        empty.to_faiss().search(queries, 1)


def test_to_faiss_without_faiss_names_the_package(monkeypatch):
    index, _ = _lorentz_problem(n=10, q=1)
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r"hihpq\[fast\]"):
        index.to_faiss()


def test_benchmark_to_faiss_rows_and_markdown():
    """The benchmark's to_faiss rows: exact recall for sqlorentz, M bytes per image."""
    from benchmarks import adc_throughput

    rows = adc_throughput.to_faiss_rows(3000, M=4, Q=5, topks=(10,), threads=(1,))
    assert [r["metric"] for r in rows] == ["sqlorentz", "geodesic"]
    assert rows[0]["recall"] == 1.0 and rows[0]["faiss_exact"] is True
    assert 0.5 < rows[1]["recall"] <= 1.0
    for r in rows:
        assert r["bytes_per_image_ours"] == 4 and r["bytes_per_image_faiss"] == 4
        assert r["ours_qps"] > 0 and r["to_faiss_qps"] > 0
    payload = {
        "rows": [],
        "to_faiss": rows,
        "load_before": 0.0,
        "load_after": 0.0,
        "meta": {"command": "x", "date": "d", "machine": "m"},
    }
    md = adc_throughput.markdown(payload)
    assert "| 3,000 | sqlorentz | 10 | 1 | 1.0000 |" in md


def test_euclidean_metric_to_faiss_reranks_l2_candidates():
    """``"euclidean"`` (sum of per-subspace norms) is not faiss's L2: re-ranked, and exact
    when every item is a candidate."""
    g = torch.Generator().manual_seed(2)
    index = PQIndex(torch.randn(3, 256, 4, generator=g), geometry="euclidean", metric="euclidean")
    index.add(torch.randint(0, 256, (4000, 3), generator=g).to(torch.uint8))
    queries = torch.randn(15, 3, 4, generator=g)
    fx = index.to_faiss()
    assert not fx.exact and fx.index.metric_type == faiss.METRIC_L2
    exact_d, exact_i = index.search(queries, 20)
    got_d, got_i = fx.search(queries, 20)
    assert _overlap(exact_i, got_i) >= 0.9
    full_d, full_i = fx.search(queries, 20, candidates=4000)
    assert torch.equal(full_i, exact_i)
    torch.testing.assert_close(full_d, exact_d, rtol=1e-5, atol=1e-5)
