"""Trees from hierarchy files and their low-dimensional embeddings (notebook 08).

Each computation is checked against an independent one: tree distances against the
depths of the lowest common ancestor, hyperbolic distances against geoopt, the
per-depth distortion against a plain double loop.
"""

import itertools

import geoopt
import numpy as np
import pytest
import torch

from hihpq_lib import data as D
from hihpq_lib.geometry import lorentz
from hihpq_lib.geometry import tree_embedding as TE

CHAINS = {
    "cat": ["entity", "animal", "mammal", "feline"],
    "dog": ["entity", "animal", "mammal", "canine"],
    "trout": ["entity", "animal"],
    "car": ["entity", "artifact", "vehicle"],
    "bus": ["entity", "artifact", "vehicle"],
}


def _ancestors(parent, i):
    out = [i]
    while parent[out[-1]] >= 0:
        out.append(int(parent[out[-1]]))
    return out


def test_class_tree_structure():
    t = D.class_tree(CHAINS)
    assert t.n_nodes == len({a for c in CHAINS.values() for a in c}) + len(CHAINS)
    assert t.parent[0] == -1 and t.nodes[0] == "entity"
    # parents come first, depth = parent's depth + 1
    for i in range(1, t.n_nodes):
        assert t.parent[i] < i and t.depth[i] == t.depth[t.parent[i]] + 1
    # every class's path to the root spells its chain
    for c, leaf in zip(t.class_names, t.leaves):
        path = [t.nodes[j] for j in reversed(_ancestors(t.parent, leaf))]
        assert path == CHAINS[c] + [c]
    # restricted and reordered classes
    t2 = D.class_tree(CHAINS, ["bus", "cat"])
    assert [t2.nodes[j] for j in t2.leaves] == ["bus", "cat"]
    assert "trout" not in t2.nodes


def test_class_tree_rejects_non_trees():
    with pytest.raises(ValueError, match="different roots"):
        D.class_tree({"a": ["x"], "b": ["y"]})
    with pytest.raises(ValueError, match="two parents"):
        D.class_tree({"a": ["r", "p", "m"], "b": ["r", "q", "m"]})
    with pytest.raises(ValueError, match="no ancestor chain"):
        D.class_tree({"a": ["r"]}, ["a", "zzz"])


def test_example_chains_form_an_unbalanced_tree():
    chains = D.example_chains()
    t = D.class_tree(chains)
    leaf_depths = t.depth[t.leaves]
    assert len(chains) >= 20 and leaf_depths.min() < leaf_depths.max()
    assert chains == D.example_chains()  # deterministic


def test_tree_distances_match_lowest_common_ancestor():
    t = D.class_tree(CHAINS)
    dist = TE.tree_distances(t.parent)
    depth = TE.node_depths(t.parent)
    np.testing.assert_array_equal(depth, t.depth)
    for i, j in itertools.product(range(t.n_nodes), repeat=2):
        ai, aj = _ancestors(t.parent, i), _ancestors(t.parent, j)
        lca = next(a for a in ai if a in aj)
        assert dist[i, j] == depth[i] + depth[j] - 2 * depth[lca]


def test_check_parent_messages():
    with pytest.raises(ValueError, match="exactly one root"):
        TE.check_parent([-1, -1, 0])
    with pytest.raises(ValueError, match="not another node"):
        TE.check_parent([-1, 5])
    with pytest.raises(ValueError, match="cycle"):
        TE.check_parent([-1, 2, 1])


def test_hyperbolic_distances_match_geoopt():
    gen = torch.Generator().manual_seed(0)
    v = 0.8 * torch.randn(7, 3, generator=gen, dtype=torch.float64)
    x = lorentz.expmap0(lorentz.lift(v))
    ours = TE.embedded_distances(x, "hyperbolic")
    ref = geoopt.Lorentz(k=1.0).dist(x[:, None, :], x[None, :, :])
    torch.testing.assert_close(ours, ref, rtol=1e-7, atol=1e-7)
    e = TE.embedded_distances(v, "euclidean")
    torch.testing.assert_close(e, torch.cdist(v, v), rtol=1e-7, atol=1e-6)


def test_distortion_by_depth_matches_a_loop():
    rng = np.random.default_rng(0)
    t = D.class_tree(CHAINS)
    d_tree = TE.tree_distances(t.parent)
    n = t.n_nodes
    noise = rng.uniform(0.5, 1.5, (n, n))
    d_emb = d_tree * (noise + noise.T) / 2
    ratios = [d_emb[i, j] / d_tree[i, j] for i in range(n) for j in range(i + 1, n)]
    s = sum(ratios) / sum(r * r for r in ratios)
    expected = {}
    for d in sorted(set(t.depth.tolist())):
        per_node = []
        for i in range(n):
            if t.depth[i] != d:
                continue
            errs = [abs(s * d_emb[i, j] / d_tree[i, j] - 1) for j in range(n) if j != i]
            per_node.append(sum(errs) / len(errs))
        expected[d] = sum(per_node) / len(per_node)
    got = TE.distortion_by_depth(d_emb, d_tree, t.depth)
    assert got.keys() == expected.keys()
    for d in got:
        assert got[d] == pytest.approx(expected[d], rel=1e-12)
    iu = np.triu_indices(n, 1)
    assert TE.distortion(d_emb[iu], d_tree[iu]) == pytest.approx(
        np.mean([abs(s * r - 1) for r in ratios]), rel=1e-12
    )
    # a scaled copy of the tree metric has no distortion at all
    assert TE.distortion(3.0 * d_tree[iu], d_tree[iu]) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("geometry", TE.GEOMETRIES)
def test_fit_returns_points_of_the_space_and_lowers_the_loss(geometry):
    t = D.class_tree(CHAINS)
    d_tree = TE.tree_distances(t.parent)
    iu = np.triu_indices(t.n_nodes, 1)
    start = TE.fit_tree_embedding(d_tree, 2, geometry, steps=0)
    fit = TE.fit_tree_embedding(d_tree, 2, geometry, steps=200)
    assert fit.dtype == torch.float64
    if geometry == "hyperbolic":
        assert fit.shape == (t.n_nodes, 3)
        torch.testing.assert_close(
            lorentz.inner(fit, fit), -torch.ones(t.n_nodes, dtype=torch.float64)
        )
    else:
        assert fit.shape == (t.n_nodes, 2)

    def dist(p):
        return TE.distortion(TE.embedded_distances(p, geometry).numpy()[iu], d_tree[iu])

    assert dist(fit) < 0.5 * dist(start)
    torch.testing.assert_close(fit, TE.fit_tree_embedding(d_tree, 2, geometry, steps=200))


def test_a_deep_tree_fits_the_hyperbolic_plane_better():
    """The lesson of notebook 08 on a small tree: binary, depth 5, 2 dimensions."""
    parent = [-1] + [(i - 1) // 2 for i in range(1, 63)]
    d_tree = TE.tree_distances(parent)
    iu = np.triu_indices(len(parent), 1)
    out = {}
    for g in TE.GEOMETRIES:
        p = TE.fit_tree_embedding(d_tree, 2, g, steps=500, lr=0.1)
        out[g] = TE.distortion(TE.embedded_distances(p, g).numpy()[iu], d_tree[iu])
    assert out["hyperbolic"] < 0.7 * out["euclidean"]


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="geometry"):
        TE.fit_tree_embedding(np.ones((3, 3)) - np.eye(3), 2, "spherical")
    with pytest.raises(ValueError, match="> 0 between distinct"):
        TE.fit_tree_embedding(np.zeros((3, 3)), 2, "euclidean")
    with pytest.raises(ValueError, match=r"\(n, n\)"):
        TE.fit_tree_embedding(np.zeros(3), 2, "euclidean")


@pytest.mark.parametrize("geometry", TE.GEOMETRIES)
def test_recentre_is_an_isometry_that_moves_the_node_to_the_origin(geometry):
    gen = torch.Generator().manual_seed(1)
    v = 1.5 * torch.randn(12, 3, generator=gen, dtype=torch.float64)
    x = lorentz.expmap0(lorentz.lift(v)) if geometry == "hyperbolic" else v
    y = TE.recentre(x, 4, geometry)
    torch.testing.assert_close(
        TE.embedded_distances(y, geometry), TE.embedded_distances(x, geometry), rtol=1e-8, atol=1e-8
    )
    origin = torch.zeros(3, dtype=torch.float64)
    if geometry == "hyperbolic":
        origin = lorentz.origin(3, dtype=torch.float64)
        torch.testing.assert_close(lorentz.inner(y, y), -torch.ones(12, dtype=torch.float64))
    torch.testing.assert_close(y[4], origin, rtol=0, atol=1e-9)
