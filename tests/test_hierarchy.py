"""Tangent-space Ward hierarchy: planted hierarchies, nesting, scalable mode."""

import numpy as np
import pytest
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from sklearn.metrics import adjusted_rand_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from hihpq_lib.geometry import lorentz as L
from hihpq_lib.learning.hierarchy import (
    TangentWardHierarchy,
    tangent_features,
    weighted_ward_linkage,
)


def planted(n_super=3, n_sub=4, n_per=40, dim=6, seed=0):
    """A two-level planted hierarchy: (features, fine labels, coarse labels)."""
    g = np.random.default_rng(seed)
    supers = g.normal(size=(n_super, dim)) * 10
    x, fine, coarse = [], [], []
    for s in range(n_super):
        subs = supers[s] + g.normal(size=(n_sub, dim)) * 2.5
        for j in range(n_sub):
            x.append(subs[j] + g.normal(size=(n_per, dim)) * 0.4)
            fine += [s * n_sub + j] * n_per
            coarse += [s] * n_per
    return np.concatenate(x), np.array(fine), np.array(coarse)


@pytest.mark.parametrize("method", ["exact", "scalable"])
def test_recovers_planted_two_level_hierarchy(method):
    x, fine, coarse = planted()
    h = TangentWardHierarchy(n_clusters=(12, 3), method=method, n_anchors=200).fit(x)
    assert h.method_ == method
    assert adjusted_rand_score(fine, h.labels_[0]) >= 0.9
    assert adjusted_rand_score(coarse, h.labels_[1]) >= 0.9
    assert h.n_clusters_ == [12, 3]


def test_levels_nest_and_centroids_are_means():
    x, _, _ = planted(seed=1)
    h = TangentWardHierarchy(n_clusters=(3, 12, 6)).fit(x)
    assert [len(c) for c in h.centroids_] == [12, 6, 3]
    for fine, coarse, parent in zip(h.labels_[:-1], h.labels_[1:], h.parents_):
        # every fine cluster sits inside exactly one coarse cluster
        for c in np.unique(fine):
            assert len(np.unique(coarse[fine == c])) == 1
        assert np.array_equal(parent[fine], coarse)
    for lab, cent in zip(h.labels_, h.centroids_):
        for c in range(len(cent)):
            np.testing.assert_allclose(cent[c], x[lab == c].mean(0), rtol=1e-10, atol=1e-10)
    # predict on the training points reproduces the finest level for nearly all
    pred = h.predict(x)
    assert adjusted_rand_score(pred[0], h.labels_[0]) > 0.95
    assert all(np.array_equal(p, par[q]) for p, q, par in zip(pred[1:], pred[:-1], h.parents_))


def test_exact_equals_scipy_ward():
    x, _, _ = planted(seed=2, n_per=10)
    h = TangentWardHierarchy(n_clusters=(7,), method="exact").fit(x)
    ref = fcluster(linkage(x, "ward"), 7, criterion="maxclust")
    assert adjusted_rand_score(ref, h.labels_[0]) == 1.0


def test_weighted_ward_equals_scipy_with_unit_weights():
    g = np.random.default_rng(0)
    x = g.normal(size=(60, 4))
    Z = weighted_ward_linkage(x, np.ones(60))
    Zs = linkage(x, "ward")
    np.testing.assert_allclose(np.sort(Z[:, 2]), np.sort(Zs[:, 2]), rtol=1e-9)
    for c in (2, 5, 9):
        assert adjusted_rand_score(fcluster(Z, c, "maxclust"), fcluster(Zs, c, "maxclust")) == 1.0


def test_weighted_ward_equals_ward_on_repeated_points():
    """A point of weight w merges like w copies of itself."""
    g = np.random.default_rng(1)
    x = g.normal(size=(15, 3))
    w = g.integers(1, 4, size=15)
    Z = weighted_ward_linkage(x, w.astype(float))
    Zr = linkage(np.repeat(x, w, axis=0), "ward")
    # the top merges (where every copy is already together) have the same heights
    np.testing.assert_allclose(Z[-5:, 2], Zr[-5:, 2], rtol=1e-8)


def test_scalable_agrees_with_exact_on_planted_data():
    x, _, _ = planted(n_super=4, n_sub=5, n_per=60, seed=3)
    exact = TangentWardHierarchy(n_clusters=(20, 4), method="exact").fit(x)
    scal = TangentWardHierarchy(n_clusters=(20, 4), method="scalable", n_anchors=300).fit(x)
    for a, b in zip(exact.labels_, scal.labels_):
        assert adjusted_rand_score(a, b) >= 0.9


def test_fit_on_hyperboloid_points_uses_log_map():
    g = torch.Generator().manual_seed(0)
    k = torch.tensor([0.5, 2.0], dtype=torch.float64)
    v = torch.randn(50, 2, 3, generator=g, dtype=torch.float64)
    pts = L.expmap0(L.lift(v), k=k.view(2, 1))
    np.testing.assert_allclose(tangent_features(pts, k), v.reshape(50, -1).numpy(), atol=1e-10)
    h1 = TangentWardHierarchy(n_clusters=(5,), k=k).fit(pts)
    h2 = TangentWardHierarchy(n_clusters=(5,)).fit(v.reshape(50, -1).numpy())
    assert adjusted_rand_score(h1.labels_[0], h2.labels_[0]) == 1.0


def test_sklearn_pipeline_composition():
    x, fine, _ = planted(seed=4, n_per=15)
    pipe = make_pipeline(
        FunctionTransformer(lambda a: a * 2.0), TangentWardHierarchy(n_clusters=(12,))
    )
    labels = pipe.fit_predict(x)
    assert adjusted_rand_score(fine, labels) >= 0.9


def test_bad_inputs():
    x, _, _ = planted(n_per=2)
    with pytest.raises(ValueError, match="cannot make 100 clusters"):
        TangentWardHierarchy(n_clusters=(100,)).fit(x[:20])
    with pytest.raises(ValueError, match="method must be"):
        TangentWardHierarchy(n_clusters=(2,), method="fast").fit(x)
    with pytest.raises(ValueError, match="need the curvature"):
        tangent_features(np.zeros((4, 2, 3)))
    with pytest.raises(RuntimeError, match="call fit"):
        TangentWardHierarchy().predict(x)


def test_auto_switches_to_scalable_above_ten_thousand_points():
    """Exact Ward's condensed matrix is 8 N(N-1)/2 bytes: 1.6 GB at 20,000 points (a
    30,000-image folder's training set peaked at 4.8 GB); ``auto`` stays exact only up to
    10,000 (0.4 GB)."""
    assert TangentWardHierarchy().exact_max == 10_000
    g = np.random.default_rng(4)
    x = g.normal(size=(10_001, 3)).astype(np.float32)
    h = TangentWardHierarchy(n_clusters=(4, 2), n_anchors=50).fit(x)
    assert h.method_ == "scalable" and h.n_clusters_ == [4, 2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wide_features_meet_their_anchors_on_principal_components(dtype):
    """Above ``anchor_dims`` columns the k-means of the scalable mode runs on the first
    principal components: the same planted hierarchy is recovered from 600-wide features
    (its structure lives in 6 directions, rotated into the 600), the centroids are still
    means of the full features, and the projection is the centred data times the top
    eigenvectors (checked against an SVD)."""
    x6, fine, coarse = planted(seed=3)
    g = np.random.default_rng(5)
    rot, _ = np.linalg.qr(g.normal(size=(600, 600)))
    x = (np.concatenate([x6, 0.05 * g.normal(size=(len(x6), 594))], 1) @ rot).astype(dtype)
    h = TangentWardHierarchy(n_clusters=(12, 3), method="scalable", n_anchors=200, anchor_dims=16)
    h.fit(x)
    assert adjusted_rand_score(fine, h.labels_[0]) >= 0.9
    assert adjusted_rand_score(coarse, h.labels_[1]) >= 0.9
    for lab, cent in zip(h.labels_, h.centroids_):
        np.testing.assert_allclose(cent[2], x[lab == 2].mean(0), rtol=1e-5, atol=1e-5)
    from hihpq_lib.learning.hierarchy import _anchor_space

    proj = _anchor_space(x, 16)
    c = x.astype(np.float64) - x.astype(np.float64).mean(0)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    ref = c @ vt[:16].T
    # principal directions are defined up to sign
    np.testing.assert_allclose(np.abs(proj), np.abs(ref), rtol=1e-3, atol=1e-3)
    assert _anchor_space(x, 600).shape == (len(x), 600)  # not wider than anchor_dims: as is
    assert np.array_equal(_anchor_space(x, None), x.astype(np.float32))
