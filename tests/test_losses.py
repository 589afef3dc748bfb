"""Losses against brute-force loops, and learning on a toy two-level hierarchy."""

import math

import numpy as np
import pytest
import torch

from hihpq_lib.geometry.manifolds import ProductEuclidean, ProductLorentz
from hihpq_lib.learning.hierarchy import TangentWardHierarchy
from hihpq_lib.learning.losses import (
    HiHPQLoss,
    first_neighbour,
    instance_loss,
    prototype_loss,
    quantized_contrastive_loss,
)
from hihpq_lib.quantization.quantizer import ProductQuantizer

SPACES = {
    "lorentz": lambda dtype: ProductLorentz(2, 3, curvature=[0.7, 2.0]).to(dtype),
    "euclidean": lambda dtype: ProductEuclidean(2, 3).to(dtype),
}
DTYPES = [torch.float32, torch.float64]
#: Largest gap between a loss and its brute-force loop (losses are of order 1; the loop
#: adds up the same per-pair distances in Python floats).
TOL = {torch.float32: 2e-5, torch.float64: 1e-9}


def prod_dist(space, a, b):
    """Brute-force product distance between two single points (M, D')."""
    return float(space.dist(a, b).detach().sum())


def points(space, n, seed, dtype=torch.float64):
    """``n`` points of ``space`` in ``dtype``: the same draws for every dtype."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, space.M, space.dim, generator=g, dtype=torch.float64)
    return space.embed(v.to(dtype))


loss_params = pytest.mark.parametrize(
    "geometry,dtype", [(g, t) for g in SPACES for t in DTYPES], ids=lambda p: str(p)
)


@loss_params
def test_contrastive_loss_equals_loop(geometry, dtype):
    space = SPACES[geometry](dtype)
    tau = 0.3
    z1, z2 = points(space, 4, 0, dtype), points(space, 4, 1, dtype)
    assert z1.dtype == dtype
    z = torch.cat([z1, z2])
    n = len(z)
    total = 0.0
    for i in range(n):
        pos = (i + 4) % n
        sims = {j: -prod_dist(space, z[i], z[j]) / tau for j in range(n) if j != i}
        lse = math.log(sum(math.exp(s) for s in sims.values()))
        total += -(sims[pos] - lse)
    got = quantized_contrastive_loss(z1, z2, space, tau)
    assert got.dtype == dtype
    assert abs(got.detach().item() - total / n) < TOL[dtype]


@loss_params
def test_prototype_loss_equals_loop(geometry, dtype):
    space = SPACES[geometry](dtype)
    tau = 0.5
    z = points(space, 5, 2, dtype)
    g = torch.Generator().manual_seed(3)
    cents = [
        torch.randn(3, 6, generator=g, dtype=torch.float64).to(dtype),
        torch.randn(2, 6, generator=g, dtype=torch.float64).to(dtype),
    ]
    labels = [torch.tensor([0, 1, 2, 1, 0]), torch.tensor([0, 0, 1, 0, 0])]
    expected = 0.0
    for lab, cent in zip(labels, cents):
        mu = space.embed(cent.view(-1, 2, 3))
        level = 0.0
        for i in range(5):
            sims = [-prod_dist(space, z[i], mu[c]) / tau for c in range(len(mu))]
            level += -(sims[int(lab[i])] - math.log(sum(math.exp(s) for s in sims)))
        expected += level / 5
    got = prototype_loss(z, labels, cents, space, tau, mode="clusters")
    assert got.dtype == dtype
    assert abs(got.detach().item() - expected / 2) < TOL[dtype]


@loss_params
def test_instance_loss_equals_loop(geometry, dtype):
    space = SPACES[geometry](dtype)
    tau = 0.4
    z = points(space, 6, 4, dtype)
    labels = [torch.tensor([0, 1, 0, 2, 1, 0]), torch.tensor([0, 0, 0, 1, 1, 1])]
    expected = 0.0
    for lab in labels:
        terms = []
        for i in range(6):
            nbrs = [j for j in range(6) if j != i and lab[j] == lab[i]]
            if not nbrs:
                continue
            sims = {j: -prod_dist(space, z[i], z[j]) / tau for j in range(6) if j != i}
            lse = math.log(sum(math.exp(s) for s in sims.values()))
            terms.append(-(sims[nbrs[0]] - lse))
        expected += sum(terms) / len(terms)
    got = instance_loss(z, labels, space, tau, mode="masked")
    assert got.dtype == dtype
    assert abs(got.detach().item() - expected / 2) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_first_neighbour_and_no_neighbour_level(dtype):
    assert first_neighbour(torch.tensor([5, 6, 7])).tolist() == [-1, -1, -1]
    space = SPACES["lorentz"](dtype)
    z = points(space, 3, 0, dtype)
    got = instance_loss(z, [torch.tensor([0, 1, 2])], space)
    assert got.dtype == dtype and float(got) == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_input_errors(dtype):
    space = SPACES["lorentz"](dtype)
    z = points(space, 4, 0, dtype)
    with pytest.raises(ValueError, match="tau must be positive"):
        quantized_contrastive_loss(z, z, space, tau=0)
    with pytest.raises(ValueError, match="at least 2"):
        quantized_contrastive_loss(z[:1], z[:1], space)
    with pytest.raises(ValueError, match="equal length"):
        prototype_loss(z, [torch.zeros(4, dtype=torch.long)], [], space)


def toy_hierarchy(n_per_leaf=24, seed=0):
    """Two superclasses x two classes each, in 8 dimensions: labels (leaf, super)."""
    g = np.random.default_rng(seed)
    supers = g.normal(size=(2, 8)) * 3.0
    leaves = np.concatenate([supers[s] + g.normal(size=(2, 8)) * 1.2 for s in range(2)])
    x = np.concatenate([leaves[c] + g.normal(size=(n_per_leaf, 8)) * 0.6 for c in range(4)])
    leaf = np.repeat(np.arange(4), n_per_leaf)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(leaf), torch.tensor(leaf // 2)


@pytest.mark.parametrize("modes", [("clusters", "masked"), ("reference", "reference")])
@pytest.mark.parametrize("geometry", ["lorentz", "euclidean"])
def test_total_loss_decreases_on_toy_hierarchy(geometry, modes):
    torch.manual_seed(0)
    x, leaf, sup = toy_hierarchy()
    space = ProductLorentz(2, 4, curvature=1.0) if geometry == "lorentz" else ProductEuclidean(2, 4)
    head = torch.nn.Linear(8, 8)
    pq = ProductQuantizer(space, K=16, temperature=5.0)
    loss_fn = HiHPQLoss(space, tau=0.5, prototype_mode=modes[0], instance_mode=modes[1])
    params = list(head.parameters()) + list(pq.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    hier = TangentWardHierarchy(n_clusters=(4, 2))

    def step_loss(update):
        noise = [x + 0.3 * torch.randn_like(x) for _ in range(2)]
        o1, o2 = pq(head(noise[0])), pq(head(noise[1]))
        with torch.no_grad():
            hier.fit(pq.space.log(pq.embed(head(x))).reshape(len(x), -1))
        labels = [torch.as_tensor(lab) for lab in hier.labels_]
        cents = [torch.as_tensor(c, dtype=torch.float32) for c in hier.centroids_]
        parts = loss_fn(o1.soft, o2.soft, labels, cents)
        if update:
            opt.zero_grad()
            parts["loss"].backward()
            opt.step()
            space.project_parameters_()
        return parts["loss"].detach().item()

    first = np.mean([step_loss(False) for _ in range(5)])
    for _ in range(200):
        step_loss(True)
    last = np.mean([step_loss(False) for _ in range(5)])
    assert np.isfinite(last)
    if modes[0] == "clusters":
        assert last < 0.8 * first, (first, last)
    else:
        # the reference's prototype loss has a floor of mean log(batch members of one's own
        # cluster) (its prototype repeats once per member): ask for a drop of one nat
        assert last < first - 1.0, (first, last)
