"""Tests for hihpq_lib.evaluation.baselines: float, PQ and OPQ baselines with faiss."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from hihpq_lib.evaluation.baselines import FaissOPQ, FaissPQ, FloatBaseline, set_num_threads


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    set_num_threads(1)


def _clustered(seed, n=1500, d=16, n_clusters=20, spread=0.5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    x = centres[rng.integers(0, n_clusters, n)] + spread * rng.normal(size=(n, d))
    return x.astype(np.float32)


def _correlated(seed, n=2000, d=16):
    """Variance concentrated in a few directions, then rotated: PQ's worst case."""
    rng = np.random.default_rng(seed)
    rot = np.linalg.qr(rng.normal(size=(d, d)))[0]
    x = (rng.normal(size=(n, d)) * np.exp(-np.arange(d) / 3.0)) @ rot
    return x.astype(np.float32)


def _exact_nn(db, q):
    flat = faiss.IndexFlatL2(db.shape[1])
    flat.add(db)
    return flat.search(q, 1)[1][:, 0]


def _recall_of_nn(model, db, q, k=10):
    gt = _exact_nn(db, q)
    _, idx = model.search(q, k)
    return float((idx == gt[:, None]).any(axis=1).mean())


def test_float_baseline_self_query_and_cosine_distance():
    x = _clustered(0, n=300)
    base = FloatBaseline().fit(x)
    base.add(x)
    dist, idx = base.search(x, 5)
    assert dist.dtype == np.float32 and idx.dtype == np.int64 and idx.shape == (300, 5)
    np.testing.assert_array_equal(idx[:, 0], np.arange(300))
    np.testing.assert_allclose(dist[:, 0], 0.0, atol=1e-5)
    assert (np.diff(dist, axis=1) >= -1e-6).all()  # ascending distances
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = (xn[:7, None, :] * xn[idx[:7]]).sum(-1)
    np.testing.assert_allclose(dist[:7], 1.0 - cos, atol=1e-5)
    assert base.code_size_bits == 32 * 16 and base.ntotal == 300


def test_float_baseline_accepts_torch_float64_noncontiguous():
    x = torch.from_numpy(_clustered(1, n=200, d=8).astype(np.float64)).T.contiguous().T
    assert not x.is_contiguous()
    base = FloatBaseline().fit(x)
    base.add(x)
    _, idx = base.search(x[:10], 1)
    np.testing.assert_array_equal(idx[:, 0], np.arange(10))


@pytest.mark.parametrize("seed", [0, 1])
def test_pq_finds_the_exact_nearest_neighbour_on_clustered_data(seed):
    x = _clustered(seed)
    db, q = x[:1300], x[1300:]
    pq = FaissPQ(8, nbits=6).fit(db)
    pq.add(db)
    assert pq.ntotal == 1300 and pq.code_size_bits == 48
    assert _recall_of_nn(pq, db, q, k=10) >= 0.9
    dist, _ = pq.search(q, 10)
    assert (np.diff(dist, axis=1) >= 0).all()


def test_pq_default_nbits_is_bytes():
    x = _clustered(2, n=600)
    pq = FaissPQ(8).fit(x)
    pq.add(x)
    assert pq.code_size_bits == 64
    assert pq.index_.code_size == 8  # faiss bytes per vector
    _, idx = pq.search(x[:50], 1)
    assert (idx[:, 0] == np.arange(50)).mean() >= 0.8  # clustered, 256 codewords: near exact


def test_opq_beats_pq_on_correlated_data():
    x = _correlated(0)
    db, q = x[:1500], x[1500:]
    pq = FaissPQ(4, nbits=6).fit(db)
    opq = FaissOPQ(4, nbits=6, niter=8).fit(db)
    pq.add(db)
    opq.add(db)
    assert opq.code_size_bits == pq.code_size_bits == 24

    def distortion(model):  # mean squared reconstruction error of the database
        return float(((model.index_.reconstruct_n(0, len(db)) - db) ** 2).sum(1).mean())

    assert distortion(pq) > 1.2 * distortion(opq)  # 1.57x with this seed
    assert _recall_of_nn(opq, db, q) >= _recall_of_nn(pq, db, q)  # 0.954 vs 0.934


def test_normalize_option_matches_cosine_ranking_for_self_queries():
    x = _clustered(3, n=500) * np.linspace(0.5, 3, 500, dtype=np.float32)[:, None]
    pq = FaissPQ(4, nbits=6, normalize=True).fit(x)
    pq.add(x)
    _, idx = pq.search(x[:100] * 10.0, 1)  # scale does not matter after normalisation
    _, idx_plain = pq.search(x[:100], 1)
    np.testing.assert_array_equal(idx, idx_plain)


def test_input_checks():
    x = _clustered(4, n=300)
    with pytest.raises(ValueError, match="not divisible by M = 5"):
        FaissPQ(5, nbits=4).fit(x)
    with pytest.raises(ValueError, match="fewer than"):
        FaissPQ(4, nbits=8).fit(x[:100])
    with pytest.raises(RuntimeError, match="not fitted"):
        FaissPQ(4).add(x)
    with pytest.raises(ValueError, match="M must be"):
        FaissPQ(0)
    with pytest.raises(ValueError, match="nbits"):
        FaissPQ(4, nbits=0)
    base = FloatBaseline().fit(x)
    with pytest.raises(ValueError, match="k must be"):
        base.search(x[:2], 1)  # empty database
    base.add(x)
    with pytest.raises(ValueError, match="k must be"):
        base.search(x[:2], 301)
    with pytest.raises(ValueError, match="features but the index was fit on 16"):
        base.search(x[:2, :8], 1)
    with pytest.raises(ValueError, match="2-d"):
        base.search(x[0], 1)
    bad = x[:2].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        base.search(bad, 1)
    with pytest.raises(ValueError, match="zero feature"):
        base.search(np.zeros((1, 16), dtype=np.float32), 1)
    with pytest.raises(ValueError, match="positive int"):
        set_num_threads(0)


def test_opq_refuses_fewer_vectors_than_dimensions():
    """faiss's OPQ training segfaults when n < dim; we raise a clear error instead."""
    from hihpq_lib.evaluation.baselines import FaissOPQ

    x = np.random.default_rng(0).normal(size=(20, 64)).astype(np.float32)
    with pytest.raises(ValueError, match="at least as many training vectors as dimensions"):
        FaissOPQ(4, nbits=4).fit(x)


def test_opq_with_dimension_reduction():
    from hihpq_lib.evaluation.baselines import FaissOPQ

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(8, 64)).astype(np.float32) * 4
    x = centres[rng.integers(0, 8, 400)] + rng.normal(size=(400, 64)).astype(np.float32)
    opq = FaissOPQ(4, nbits=4, d_out=16, niter=5).fit(x)
    opq.add(x)
    _, idx = opq.search(x[:50], 5)
    # the item itself is among its 5 nearest neighbours after compression
    assert np.mean([i in row for i, row in enumerate(idx)]) > 0.8
    with pytest.raises(ValueError, match="multiple of M=4"):
        FaissOPQ(4, d_out=10)


@pytest.mark.parametrize("cls", ["pq", "opq"])
def test_small_training_sets_train_silently_and_exactly_like_plain_faiss(cls, capfd):
    # 600 vectors for K = 256 codewords: plain faiss prints "WARNING clustering 600 points to
    # 256 centroids" once per subspace (and per OPQ iteration); ours must not, and must
    # train exactly the same codebooks.
    x = _clustered(5, n=600, d=16)
    q = x[:40] + 0.01
    if cls == "pq":
        ours = FaissPQ(4, nbits=8)
        plain = faiss.IndexPQ(16, 4, 8)
    else:
        ours = FaissOPQ(4, nbits=8, niter=3)
        opq = faiss.OPQMatrix(16, 4, 16)
        opq.niter = 3
        plain = faiss.IndexPreTransform(opq, faiss.IndexPQ(16, 4, 8))
    capfd.readouterr()
    ours.fit(x)
    ours.add(x)
    assert "WARNING clustering" not in capfd.readouterr().err
    plain.train(x)
    plain.add(x)
    assert "WARNING clustering" in capfd.readouterr().err  # the message we silence
    d_ours, i_ours = ours.search(q, 10)
    d_plain, i_plain = plain.search(q, 10)
    np.testing.assert_array_equal(i_ours, i_plain)
    np.testing.assert_array_equal(d_ours, d_plain)
