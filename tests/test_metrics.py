"""Tests for hihpq_lib.evaluation.metrics: mAP@K, precision/recall by rank, hierarchy agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from hihpq_lib.evaluation import metrics
from hihpq_lib.evaluation.metrics import (
    average_precision_at_k,
    format_table,
    hierarchy_agreement,
    hits_at_k,
    map_at_k,
    map_at_k_levels,
    map_from_distances,
    mean_average_precision,
    precision_at_k_curve,
    precision_recall_by_rank,
    rank_database,
    relevant_counts,
    superclass_labels,
)


# ---------------------------------------------------------------------- hand-computed
def test_hand_computed_single_label():
    # query 0 (class 0) retrieves classes [0, 1, 0, 2]: hits 1,0,1,0 -> AP = (1 + 2/3) / 2
    # query 1 (class 1) retrieves classes [2, 1, 1, 0]: hits 0,1,1,0 -> AP = (1/2 + 2/3) / 2
    # query 2 (class 2) retrieves classes [0, 0, 1, 1]: no hit -> AP = 0
    db = np.array([0, 1, 0, 2, 1, 0])
    topk = np.array([[0, 1, 2, 3], [3, 1, 4, 0], [0, 2, 1, 4]])
    expected = np.array([(1 + 2 / 3) / 2, (1 / 2 + 2 / 3) / 2, 0.0])
    ap = average_precision_at_k(hits_at_k(np.array([0, 1, 2]), db, topk))
    assert ap.dtype == torch.float64
    np.testing.assert_allclose(ap.numpy(), expected, rtol=1e-12)
    assert map_at_k([0, 1, 2], db, topk) == pytest.approx(expected.mean(), rel=1e-12)


def test_hand_computed_multi_label():
    # labels over 3 tags; relevant = shares at least one tag with the query
    db = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]])
    query = np.array([[0, 1, 0], [0, 0, 1]])
    topk = np.array([[0, 1, 2], [0, 2, 3]])
    # q0: items 0,1,2 -> hits 0,1,1 -> (1/2 + 2/3) / 2 ; q1: items 0,2,3 -> hits 0,0,1 -> 1/3
    hits = hits_at_k(query, db, topk)
    assert hits.tolist() == [[False, True, True], [False, False, True]]
    expected = ((1 / 2 + 2 / 3) / 2 + 1 / 3) / 2
    assert map_at_k(query, db, topk) == pytest.approx(expected, rel=1e-12)
    # torch bool multi-hot gives the same
    assert map_at_k(torch.tensor(query).bool(), torch.tensor(db).bool(), topk) == pytest.approx(
        expected, rel=1e-12
    )


def test_mean_average_precision_of_hits():
    assert mean_average_precision([[1, 1], [0, 0]]) == pytest.approx(0.5)


# ---------------------------------------------------------------------- sklearn cross-check
def _random_labels(rng, n, n_classes, multi):
    if not multi:
        return rng.integers(0, n_classes, size=n)
    lab = rng.random((n, n_classes)) < 0.25
    lab[np.arange(n), rng.integers(0, n_classes, size=n)] = True  # at least one tag
    return lab.astype(np.int64)


def _relevance(q, db):
    if q.ndim == 1:
        return db[None, :] == q[:, None]
    return (q @ db.T) > 0


@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_at_n_equals_sklearn_average_precision(seed, multi):
    rng = np.random.default_rng(seed)
    n_q, n_db = 30, 80
    yq = _random_labels(rng, n_q, 5, multi)
    ydb = _random_labels(rng, n_db, 5, multi)
    rel = _relevance(yq, ydb)
    keep = rel.any(axis=1)  # sklearn AP is undefined without a positive
    yq, rel = yq[keep], rel[keep]
    ranking = np.stack([rng.permutation(n_db) for _ in range(len(yq))])  # random rankings
    # sklearn: score = -rank of each database item
    ranks = np.empty_like(ranking)
    np.put_along_axis(ranks, ranking, np.arange(n_db)[None, :].repeat(len(yq), 0), axis=1)
    ref = [average_precision_score(rel[i], -ranks[i]) for i in range(len(yq))]
    ours = average_precision_at_k(hits_at_k(yq, ydb, ranking)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-10)
    assert map_at_k(yq, ydb, ranking) == pytest.approx(np.mean(ref), rel=1e-10)


@pytest.mark.parametrize("seed", [0, 1])
def test_map_from_distances_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    yq, ydb = rng.integers(0, 4, 25), rng.integers(0, 4, 60)
    dist = rng.random((25, 60))  # continuous: no ties
    rel = _relevance(yq, ydb)
    ref = np.mean([average_precision_score(rel[i], -dist[i]) for i in range(25) if rel[i].any()])
    ap = map_from_distances(dist, yq, ydb, 60, return_ap=True)
    assert ap.shape == (25,)
    assert ap[torch.from_numpy(rel.any(1))].mean().item() == pytest.approx(ref, rel=1e-10)


def test_map_at_k_truncates_to_hits_in_top_k():
    # one relevant item at rank 1 and one at rank 4: AP@2 = 1 (only hits in the top 2 count)
    db = np.array([0, 1, 1, 0])
    topk = np.array([[0, 1, 2, 3]])
    assert map_at_k([0], db, topk[:, :2]) == pytest.approx(1.0)
    assert map_at_k([0], db, topk) == pytest.approx((1 + 2 / 4) / 2)


# ---------------------------------------------------------------------- ranking
def test_ties_are_broken_by_lower_index_deterministically():
    rng = np.random.default_rng(0)
    dist = rng.integers(0, 4, size=(40, 50)).astype(np.float64)  # many ties
    ref = np.lexsort((np.broadcast_to(np.arange(50), dist.shape), dist), axis=1)[:, :7]
    got = rank_database(dist, 7)
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), ref)
    np.testing.assert_array_equal(rank_database(dist, 7, chunk_size=3).numpy(), ref)


def test_largest_ranks_similarities_descending():
    rng = np.random.default_rng(1)
    sim = rng.integers(0, 5, size=(10, 30)).astype(np.float32)
    np.testing.assert_array_equal(
        rank_database(sim, 6, largest=True).numpy(), rank_database(-sim, 6).numpy()
    )
    top = np.take_along_axis(sim, rank_database(sim, 6, largest=True).numpy(), 1)
    np.testing.assert_array_equal(top[:, 0], sim.max(axis=1))
    assert (np.diff(top, axis=1) <= 0).all()


def test_chunked_equals_unchunked_and_callable_equals_matrix():
    rng = np.random.default_rng(2)
    q, db = rng.normal(size=(53, 8)), rng.normal(size=(120, 8))
    yq, ydb = rng.integers(0, 3, 53), rng.integers(0, 3, 120)
    dist = torch.cdist(torch.from_numpy(q), torch.from_numpy(db))
    full = map_from_distances(dist, yq, ydb, 20, chunk_size=10_000)
    chunked = map_from_distances(dist, yq, ydb, 20, chunk_size=7)
    called = map_from_distances(lambda s, e: dist[s:e], yq, ydb, 20, chunk_size=5)
    via_rank = map_at_k(yq, ydb, rank_database(dist, 20, chunk_size=11))
    assert full == chunked == called == pytest.approx(via_rank, abs=0)
    assert torch.equal(
        rank_database(lambda s, e: dist[s:e].numpy(), 20, num_queries=53, chunk_size=4),
        rank_database(dist, 20),
    )


def test_item_queried_against_itself_ranks_first():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(size=(200, 16)))
    top = rank_database(torch.cdist(x, x), 5, chunk_size=64)
    assert torch.equal(top[:, 0], torch.arange(200))


def test_ranking_rejects_bad_inputs():
    dist = torch.rand(3, 5)
    with pytest.raises(ValueError, match="k must be"):
        rank_database(dist, 6)
    dist[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        rank_database(dist, 2)
    with pytest.raises(ValueError, match="num_queries"):
        rank_database(lambda s, e: torch.rand(e - s, 5), 2)
    with pytest.raises(ValueError, match=r"\(2, N\)"):
        rank_database(lambda s, e: torch.rand(1, 5), 2, num_queries=2)
    with pytest.raises(ValueError, match="columns"):
        map_from_distances(torch.rand(3, 5), [0, 1, 2], [0, 1, 2, 1], 2)


def test_label_checks():
    with pytest.raises(ValueError, match="both"):
        map_at_k([0, 1], np.zeros((4, 3)), [[0], [1]])
    with pytest.raises(ValueError, match=r"\[0, N\)"):
        map_at_k([0, 1], [0, 1, 1], [[0], [-1]])  # faiss pads with -1
    with pytest.raises(ValueError, match="Q = 2"):
        map_at_k([0, 1], [0, 1, 1], [[0]])
    with pytest.raises(ValueError, match="same number of classes"):
        map_at_k(np.ones((2, 3)), np.ones((4, 2)), [[0], [1]])


# ---------------------------------------------------------------------- P@K, recall
@pytest.mark.parametrize("multi", [False, True])
def test_relevant_counts_matches_loop(multi):
    rng = np.random.default_rng(4)
    yq, ydb = _random_labels(rng, 12, 4, multi), _random_labels(rng, 50, 4, multi)
    expected = _relevance(yq, ydb).sum(axis=1)
    np.testing.assert_array_equal(relevant_counts(yq, ydb).numpy(), expected)


def test_relevant_counts_with_absent_class():
    np.testing.assert_array_equal(relevant_counts([0, 5, -1], [0, 0, -1, 7]).numpy(), [2, 0, 1])


def test_precision_and_recall_by_rank_match_loops():
    rng = np.random.default_rng(5)
    yq, ydb = rng.integers(0, 3, 15), rng.integers(0, 3, 40)
    yq[0] = 7  # a query with no relevant item: excluded from recall, kept in precision
    ranking = np.stack([rng.permutation(40) for _ in range(15)])
    ks = [1, 5, 17, 40]
    k_out, prec = precision_at_k_curve(yq, ydb, ranking, ks)
    res = precision_recall_by_rank(yq, ydb, ranking, ks)
    np.testing.assert_array_equal(k_out, ks)
    np.testing.assert_array_equal(res["k"], ks)
    for j, k in enumerate(ks):
        hits = [(ydb[ranking[i, :k]] == yq[i]).sum() for i in range(15)]
        n_rel = [(ydb == yq[i]).sum() for i in range(15)]
        assert prec[j] == pytest.approx(np.mean(hits) / k)
        assert res["precision"][j] == pytest.approx(np.mean(hits) / k)
        assert res["recall"][j] == pytest.approx(
            np.mean([h / r for h, r in zip(hits[1:], n_rel[1:])])
        )
    assert res["recall"][-1] == pytest.approx(1.0)  # K = N retrieves everything
    k_all, p_all = precision_at_k_curve(yq, ydb, ranking)
    assert k_all.tolist() == list(range(1, 41))
    assert p_all[[0, 4, 16, 39]] == pytest.approx(prec)


def test_ks_validation():
    with pytest.raises(ValueError, match=r"\[1, K\]"):
        precision_at_k_curve([0], [0, 1], [[0, 1]], [3])
    with pytest.raises(ValueError, match="shape"):
        precision_recall_by_rank([0], [0, 1], [[0, 1]], relevant=[1, 2])


# ---------------------------------------------------------------------- hierarchy
NAMES = ["cat", "dog", "car", "truck", "oak"]
SUPER = {"cat": "animal", "dog": "animal", "car": "vehicle", "truck": "vehicle", "oak": "tree"}


def test_superclass_labels_single_and_multi():
    sup, names = superclass_labels(np.array([0, 1, 2, 3, 4, 2]), NAMES, SUPER)
    assert names == ["animal", "vehicle", "tree"]
    assert sup.tolist() == [0, 0, 1, 1, 2, 1]
    sup2, names2 = superclass_labels(
        torch.tensor([4, 0]), NAMES, SUPER, superclass_names=["tree", "vehicle", "animal"]
    )
    assert (sup2.tolist(), names2) == ([0, 2], ["tree", "vehicle", "animal"])
    multi = np.array([[1, 0, 1, 0, 0], [0, 0, 0, 0, 1]])
    sup3, _ = superclass_labels(multi, NAMES, SUPER)
    assert sup3.tolist() == [[True, True, False], [False, False, True]]


def test_superclass_labels_errors():
    with pytest.raises(KeyError, match="oak"):
        superclass_labels([0], NAMES, {k: v for k, v in SUPER.items() if k != "oak"})
    with pytest.raises(ValueError, match="superclass_names"):
        superclass_labels([0], NAMES, SUPER, superclass_names=["animal"])
    with pytest.raises(ValueError, match="lie in"):
        superclass_labels([5], NAMES, SUPER)


def test_map_at_k_levels_is_relabelled_map():
    rng = np.random.default_rng(6)
    yq, ydb = rng.integers(0, 5, 10), rng.integers(0, 5, 30)
    top = np.stack([rng.permutation(30)[:8] for _ in range(10)])
    sq, _ = superclass_labels(yq, NAMES, SUPER)
    sdb, _ = superclass_labels(ydb, NAMES, SUPER)
    out = map_at_k_levels(top, {"class": (yq, ydb), "superclass": (sq, sdb)})
    assert out["class"] == map_at_k(yq, ydb, top)
    assert out["superclass"] == map_at_k(sq, sdb, top)
    assert out["superclass"] != out["class"]


def test_hierarchy_agreement():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 5, 300)
    ys, _ = superclass_labels(y, NAMES, SUPER)
    perm = np.array([3, 0, 4, 1, 2])  # cluster ids are arbitrary: a relabelling is perfect
    rows = hierarchy_agreement(
        [perm[y], ys, rng.integers(0, 5, 300)], y, ys, level_names=["fine", "coarse", "noise"]
    )
    assert [r["level"] for r in rows] == ["fine", "coarse", "noise"]
    assert rows[0]["n_clusters"] == 5 and rows[1]["n_clusters"] == 3
    assert rows[0]["ari_class"] == pytest.approx(1.0) and rows[0]["nmi_class"] == pytest.approx(1.0)
    assert rows[1]["ari_superclass"] == pytest.approx(1.0)
    assert rows[1]["ari_class"] < 1.0
    assert abs(rows[2]["ari_class"]) < 0.05 and rows[2]["nmi_class"] < 0.05
    no_super = hierarchy_agreement([y], y)
    assert set(no_super[0]) == {"level", "n_clusters", "ari_class", "nmi_class"}
    text = format_table(rows)
    assert text.splitlines()[0].split()[:3] == ["level", "n_clusters", "ari_class"]
    assert "1.000" in text
    with pytest.raises(ValueError, match="expected"):
        hierarchy_agreement([y[:10]], y)


@pytest.mark.parametrize("multi", [False, True])
def test_internal_query_chunking_does_not_change_results(monkeypatch, multi):
    rng = np.random.default_rng(8)
    yq, ydb = _random_labels(rng, 23, 4, multi), _random_labels(rng, 40, 4, multi)
    ranking = np.stack([rng.permutation(40) for _ in range(23)])
    ks = [1, 3, 40]
    ref = (
        hits_at_k(yq, ydb, ranking),
        relevant_counts(yq, ydb),
        precision_recall_by_rank(yq, ydb, ranking, ks),
    )
    monkeypatch.setattr(metrics, "_BUFFER_ELEMENTS", 50)  # a few queries per chunk
    assert torch.equal(hits_at_k(yq, ydb, ranking), ref[0])
    assert torch.equal(relevant_counts(yq, ydb), ref[1])
    got = precision_recall_by_rank(yq, ydb, ranking, ks)
    for key in ("precision", "recall"):
        np.testing.assert_allclose(got[key], ref[2][key], rtol=1e-12)
