"""Tests for hihpq_lib.evaluation.metrics: mAP@K, precision/recall by rank, hierarchy agreement,
and the tie-aware scores of hihpq_lib.evaluation.ties."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from hihpq_lib.evaluation import metrics
from hihpq_lib.evaluation.metrics import (
    average_precision_at_k,
    expected_average_precision_at_k,
    format_table,
    hierarchy_agreement,
    hits_at_k,
    map_at_k,
    map_at_k_levels,
    map_from_distances,
    map_levels_from_distances,
    mean_average_precision,
    precision_at_k_curve,
    precision_at_k_from_distances,
    precision_recall_by_rank,
    rank_database,
    relevant_counts,
    superclass_labels,
    tie_fraction,
)
from hihpq_lib.learning import config, retrieval
from hihpq_lib.learning.model import build_model
from hihpq_lib.learning.views import FeatureSplit
from hihpq_lib.quantization.index import PQIndex


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


# ---------------------------------------------------------------------- ties
#: AP and precision are float64 whatever the distances' dtype; the dtype decides which
#: distances tie (1 and 1 + 1e-9 tie in float32, not in float64).
TIE_TOL = {torch.float32: 1e-12, torch.float64: 1e-12}


def _tied_distances(rng, n_q, n_db, dtype):
    raw = rng.integers(0, 3, (n_q, n_db)) + 1e-9 * rng.integers(0, 2, (n_q, n_db))
    dist = torch.as_tensor(raw).to(dtype)
    assert dist.dtype == dtype
    return dist


def _orders_of_ties(row: np.ndarray):
    """Every ranking of one query's database: ascending distance, each tie in every order."""
    groups = [np.flatnonzero(row == v) for v in np.unique(row)]
    for parts in itertools.product(*(itertools.permutations(g) for g in groups)):
        yield np.concatenate(parts).astype(np.int64)


def _ap_loop(hits) -> float:
    found, total = 0, 0.0
    for i, h in enumerate(hits, start=1):
        if h:
            found += 1
            total += found / i
    return total / found if found else 0.0


@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_expected_ap_and_precision_equal_brute_force_over_every_order(dtype, seed, multi):
    rng = np.random.default_rng(seed)
    n_q, n_db = 6, 7
    dist = _tied_distances(rng, n_q, n_db, dtype)
    yq, ydb = _random_labels(rng, n_q, 3, multi), _random_labels(rng, n_db, 3, multi)
    rel = _relevance(yq, ydb)
    orders = [list(_orders_of_ties(dist[i].numpy())) for i in range(n_q)]
    ks = np.arange(1, n_db + 1)
    got_p = precision_at_k_from_distances(dist, yq, ydb, ks, ties="expected")[1]
    want_p = np.mean(
        [np.mean([np.cumsum(rel[i][o]) / ks for o in orders[i]], axis=0) for i in range(n_q)],
        axis=0,
    )
    np.testing.assert_allclose(got_p, want_p, rtol=TIE_TOL[dtype], atol=TIE_TOL[dtype])
    for k in ks:
        got = map_from_distances(dist, yq, ydb, int(k), ties="expected", return_ap=True)
        want = [np.mean([_ap_loop(rel[i][o[:k]]) for o in orders[i]]) for i in range(n_q)]
        np.testing.assert_allclose(got.numpy(), want, rtol=TIE_TOL[dtype], atol=TIE_TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_expected_ap_at_n_is_sklearn_average_precision_over_every_order(dtype):
    rng = np.random.default_rng(3)
    n_q, n_db = 8, 7
    dist = _tied_distances(rng, n_q, n_db, dtype)
    yq, ydb = rng.integers(0, 3, n_q), rng.integers(0, 3, n_db)
    rel = _relevance(yq, ydb)
    got = map_from_distances(dist, yq, ydb, n_db, ties="expected", return_ap=True).numpy()
    for i in np.flatnonzero(rel.any(axis=1)):  # sklearn AP needs a positive
        scores = []
        for o in _orders_of_ties(dist[i].numpy()):
            s = np.empty(n_db)
            s[o] = -np.arange(n_db)  # this order as strictly decreasing scores
            scores.append(average_precision_score(rel[i], s))
        assert got[i] == pytest.approx(np.mean(scores), rel=TIE_TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_expected_equals_index_order_without_ties(dtype):
    rng = np.random.default_rng(4)
    dist = torch.as_tensor(rng.permuted(np.tile(np.arange(60.0), (20, 1)), axis=1)).to(dtype)
    yq, ydb = rng.integers(0, 4, 20), rng.integers(0, 4, 60)
    rel = _relevance(yq, ydb)
    for k in (1, 9, 60):
        a = map_from_distances(dist, yq, ydb, k, return_ap=True)
        b = map_from_distances(dist, yq, ydb, k, ties="expected", return_ap=True)
        torch.testing.assert_close(a, b, rtol=TIE_TOL[dtype], atol=TIE_TOL[dtype])
    ref = [average_precision_score(rel[i], -dist[i].double()) for i in range(20) if rel[i].any()]
    full = map_from_distances(dist, yq, ydb, 60, ties="expected", return_ap=True)
    np.testing.assert_allclose(full[torch.from_numpy(rel.any(1))], ref, rtol=1e-10)
    ks = [1, 5, 60]
    np.testing.assert_allclose(
        precision_at_k_from_distances(dist, yq, ydb, ks, ties="expected")[1],
        precision_at_k_from_distances(dist, yq, ydb, ks)[1],
        rtol=1e-12,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_expected_map_does_not_depend_on_database_order(dtype):
    rng = np.random.default_rng(5)
    n_q, n_db = 40, 300
    dist = torch.as_tensor(rng.integers(0, 25, (n_q, n_db))).to(dtype)  # heavy ties
    yq, ydb = rng.integers(0, 5, n_q), np.sort(rng.integers(0, 5, n_db))  # class by class
    perm = torch.from_numpy(rng.permutation(n_db))
    for k in (1, 10, 57, n_db):
        stored = map_from_distances(dist, yq, ydb, k, ties="expected")
        shuffled = map_from_distances(dist[:, perm], yq, ydb[perm], k, ties="expected")
        assert stored == shuffled  # bit for bit
    # the lower-index order, by contrast, depends on how the database is stored
    assert map_from_distances(dist, yq, ydb, 10) != map_from_distances(
        dist[:, perm], yq, ydb[perm], 10
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_expected_map_of_a_pq_index_does_not_depend_on_database_order(dtype):
    gen = torch.Generator().manual_seed(0)
    index = PQIndex(torch.randn(2, 4, 3, generator=gen, dtype=dtype), geometry="euclidean")
    codes = torch.randint(0, 4, (400, 2), generator=gen, dtype=torch.uint8)  # 16 codes
    ydb = torch.sort(torch.randint(0, 4, (400,), generator=gen)).values  # class by class
    queries = torch.randn(30, 2, 3, generator=gen, dtype=dtype)
    yq = torch.randint(0, 4, (30,), generator=gen)
    perm = torch.randperm(400, generator=gen)
    scores = {}
    for name, order in (("stored", torch.arange(400)), ("shuffled", perm)):
        index.reset()
        index.add(codes[order])
        dist = index.distances(queries)
        assert dist.dtype == dtype
        _, top = index.search(queries, 50)
        scores[name] = (
            map_at_k(yq, ydb[order], top),
            map_from_distances(dist, yq, ydb[order], 50, ties="expected"),
        )
    assert scores["stored"][1] == scores["shuffled"][1]
    assert scores["stored"][0] != scores["shuffled"][0]
    assert tie_fraction(index.search(queries, 10)[0], 10) == 1.0  # 16 codes for 400 items


def test_evaluate_levels_ties_option():
    cfg = config.tutorial_config(True, 2, hierarchy=False).with_overrides(
        ["bits=8", "K=16", "feat_dim=8", "head_hidden=0", "topk=20"]
    )
    torch.manual_seed(0)
    model = build_model(cfg, 6).eval()
    gen = torch.Generator().manual_seed(1)
    qf, dbf = torch.randn(25, 6, generator=gen), torch.randn(90, 6, generator=gen)
    yq, ydb = torch.randint(0, 3, (25,), generator=gen), torch.randint(0, 3, (90,), generator=gen)
    levels = {"class": (yq, ydb), "parity": (yq % 2, ydb % 2)}
    index = model.build_index(dbf)
    points = model.points(qf)
    with torch.no_grad():
        dist = index.distances(points)
    got = retrieval.evaluate_levels(model, qf, dbf, levels, 20, ties="expected")
    want = map_levels_from_distances(dist, levels, 20, ties="expected")
    assert got == want
    assert want == {
        n: map_from_distances(dist, q, d, 20, ties="expected") for n, (q, d) in levels.items()
    }
    # the default is unchanged: the lower-index order of the PQ search
    assert retrieval.evaluate_levels(model, qf, dbf, levels, 20) == map_at_k_levels(
        index.search(points, 20)[1], levels
    )
    split_q, split_db = FeatureSplit(qf, yq), FeatureSplit(dbf, ydb)
    assert retrieval.evaluate_map(model, split_q, split_db, 20, ties="expected") == got["class"]


def test_map_levels_and_precision_from_distances_match_the_ranked_versions():
    rng = np.random.default_rng(6)
    dist = rng.integers(0, 6, (30, 80)).astype(np.float32)
    yq, ydb = rng.integers(0, 4, 30), rng.integers(0, 4, 80)
    levels = {"class": (yq, ydb), "parity": (yq % 2, ydb % 2)}
    top = rank_database(dist, 25)
    assert map_levels_from_distances(dist, levels, 25, chunk_size=7) == pytest.approx(
        map_at_k_levels(top, levels), rel=1e-12
    )
    ks = [1, 4, 25]
    np.testing.assert_allclose(
        precision_at_k_from_distances(lambda s, e: dist[s:e], yq, ydb, ks, chunk_size=4)[1],
        precision_at_k_curve(yq, ydb, top, ks)[1],
        rtol=1e-12,
    )
    assert map_levels_from_distances(dist, {}, 5) == {}


def test_tie_fraction_counts_queries_with_a_tie_in_the_top_k():
    d = np.array([[0.1, 0.2, 0.2, 0.3], [0.1, 0.2, 0.3, 0.3], [0.0, 0.0, 0.5, 0.6]])
    assert tie_fraction(d, 4) == pytest.approx(1.0)
    assert tie_fraction(d, 3) == pytest.approx(2 / 3)
    assert tie_fraction(d, 2) == pytest.approx(1 / 3)
    assert tie_fraction(d, 1) == 0.0
    rng = np.random.default_rng(7)
    d = np.sort(rng.integers(0, 30, (50, 12)), axis=1).astype(np.float32)
    loop = np.mean([len(set(row[:10].tolist())) < 10 for row in d])
    assert tie_fraction(d, 10) == pytest.approx(loop)
    with pytest.raises(ValueError, match="ascending"):
        tie_fraction(d[:, ::-1].copy(), 5)
    with pytest.raises(ValueError, match="1 <= k"):
        tie_fraction(d, 13)


def test_tie_aware_inputs_are_checked():
    with pytest.raises(ValueError, match="ties must be one of"):
        map_from_distances([[0.5, 0.5]], [0], [1, 0], 2, ties="random")
    with pytest.raises(ValueError, match="count the ties over the whole database"):
        expected_average_precision_at_k([[0.5, 0.5]], [[1, 0]], [1], [1])  # 2 tied in top K
    with pytest.raises(ValueError, match="ascending"):
        expected_average_precision_at_k([[0.6, 0.5]], [[1, 0]], [1], [0])
    with pytest.raises(ValueError, match=r"shape \(Q,\)"):
        expected_average_precision_at_k([[0.5]], [[1]], [1, 1], [1])
