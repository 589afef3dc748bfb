# ---
# jupyter:
#   execution:
#     timeout: 180
#   jupytext:
#     formats: py:percent
#     notebook_metadata_filter: execution
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Methods: hyperbolic codebook attention
#
# A quantizer must pick, for each feature, one codeword per subspace. "Pick the nearest"
# (an argmin) has no useful gradient, so a network cannot learn its codebooks through it.
# HiHPQ, like other deep PQ methods, trains with a **soft** choice instead: an attention
# over the codewords, computed from squared Lorentzian distances, whose output is a
# weighted **Lorentz centroid** of the codewords. At retrieval time it stores the **hard**
# choice, one byte per subspace. This notebook takes one hyperbolic subspace of dimension
# 2, so that every step can be drawn exactly on the Poincaré disk.
#
# ## What you will learn
# - the squared Lorentzian distance and the soft assignment (codebook attention) with a
#   temperature, in `quantizer.ProductQuantizer`;
# - the weighted Lorentz centroid (`lorentz.lorentz_centroid`): the "average" of points
#   on the hyperboloid that the soft quantization outputs;
# - soft vs. hard codes, and the Voronoi cells of a hyperbolic codebook on the Poincaré
#   disk, with temperature and curvature sliders;
# - how the quantization error depends on the temperature, and why training at a finite
#   temperature approaches the stored hard codes as the temperature grows.
#
# ## What you need
# - Notebook 01 (hyperboloid, $k$ and $c = 1/k$, `expmap0`, Poincaré disk) and notebook
#   02 (product quantization, codewords, codes).
# - Softmax and k-means at the level of "what they compute". No data download.
# - Notation: one sheet for the whole series, [docs/notation.md](../docs/notation.md).
#
# ## How long it takes on a laptop CPU
# - Reading and doing the exercises: about 40 minutes.
# - **Full mode** (2,000 points, 41 temperatures): 7 s.
# - **Fast mode (`HIHPQ_FAST=1`)** (600 points, 15 temperatures, coarser pictures): 7 s.
# - Measured 2026-12-01 and 2026-12-04 on a 2-core CPU (full mode of 04-07 re-measured on
#   2026-12-04 with the machine idle and the default thread count, 2; the rest on 2026-12-01
#   with the machine shared with three other developers and OMP_NUM_THREADS=1, whose
#   full-mode numbers each entry states beside the new ones), kernel start included
#   (`jupyter nbconvert --execute`, one notebook at a time). Generated from
#   `notebooks/timings.yaml` by `python -m benchmarks.notebook_timings`.

# %% [markdown]
# ## Setup

# %%
# %matplotlib inline
import math

import ipywidgets as widgets
import numpy as np
import torch
from IPython.display import display

from hihpq_lib import viz
from hihpq_lib.app import exercises
from hihpq_lib.evaluation import claims
from hihpq_lib.geometry import lorentz, manifolds
from hihpq_lib.quantization import quantizer
from hihpq_lib.utils import runtime

generator = runtime.seed_everything(0)
torch.set_default_dtype(torch.float64)
N_POINTS = runtime.pick(2000, 600)  # toy data size
RESOLUTION = runtime.pick(220, 100)  # grid of the Voronoi pictures, per axis
N_TEMPS = runtime.pick(41, 15)  # temperatures in section 6
print(f"fast mode: {runtime.fast_mode()}, points: {N_POINTS}")

# %% [markdown]
# ## 1. Toy data and a one-subspace quantizer
#
# Features are 2-D vectors forming a small hierarchy: 3 groups, each split into 2
# subgroups. `manifolds.ProductLorentz(M=1, dim=2)` maps them onto the hyperbolic plane
# with $\exp_o$ (curvature $c = 1$, i.e. $k = 1$), and `quantizer.ProductQuantizer`
# holds $K = 8$ codewords, stored as tangent vectors at the origin (`pq.codebooks`,
# shape $(M, K, d)$) and mapped onto the sheet on use (`pq.codewords()`, shape
# $(M, K, d+1)$). Training starts them at random data points
# (`pq.init_from_features(feats)`); here we place them by hand, near the 6 subgroups
# and 2 halfway to the origin, so that the pictures are easy to read. `clip_r=None`
# switches off the paper's clipping of feature norms (notebook 02) so that the points are
# exactly where we put them.
#
# Calling the quantizer on flat features of shape $(B, M d)$, `out = pq(feats)`, returns a
# `QuantizerOutput` with every intermediate result: `out.points` $(B, M, d+1)$, the
# features on the sheet; `out.sqdist` $(B, M, K)$, their squared distances to the
# codewords (section 2); `out.assign` $(B, M, K)$, the attention weights (section 2);
# `out.soft` $(B, M, d+1)$, the soft quantizations (section 3); `out.codes` $(B, M)$, the
# hard codes (section 4). Here $M = 1$, so we take `[:, 0]` throughout.
#
# **Notation** (notebook 01): $e_j$ is codeword $j$, and $c = 1/k$ is only ever the
# curvature.
#
# The figure below shows only the data on the Poincaré disk: 3 groups of 2 coloured clumps
# (the 6 subgroups); the codewords appear in section 4.

# %%
group = torch.randint(0, 3, (N_POINTS,), generator=generator)
subgroup = torch.randint(0, 2, (N_POINTS,), generator=generator)
angle = (
    2 * math.pi * group / 3
    + 0.35 * (2 * subgroup - 1)
    + 0.12 * torch.randn(N_POINTS, generator=generator)
)
radius = 1.9 + 0.25 * torch.randn(N_POINTS, generator=generator).abs()
feats = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)  # (N, M*d)
labels = 2 * group + subgroup  # 6 subgroups

space = manifolds.ProductLorentz(M=1, dim=2, curvature=1.0, learn_curvature=False, clip_r=None)
pq = quantizer.ProductQuantizer(space, K=8, temperature=1.0)
cw_angle = torch.tensor(
    [2 * math.pi * g / 3 + 0.35 * (2 * s - 1) for g in range(3) for s in range(2)] + [1.0, 3.5]
)
cw_radius = torch.tensor([1.6] * 6 + [0.9, 0.9])
with torch.no_grad():  # codewords as tangent vectors, shape (M=1, K=8, d=2)
    pq.codebooks[0] = torch.stack(
        [cw_radius * torch.cos(cw_angle), cw_radius * torch.sin(cw_angle)], 1
    )
print(pq)
k = space.k[0].item()
with torch.no_grad():
    out = pq(feats)  # a QuantizerOutput
    codewords = pq.codewords()[0]  # (K, 3) points on the sheet
points = out.points[:, 0]  # (N, 3): the features on the sheet (subspace 0, the only one)
print("points", tuple(points.shape), " codewords", tuple(codewords.shape))
group_names = [f"group {g}.{s}" for g in range(3) for s in range(2)]
viz.poincare_disk(points, labels, class_names=group_names)

# %% [markdown]
# The same figure as a static image (renders without a browser):

# %%
viz.poincare_disk(points, labels, class_names=group_names, backend="matplotlib")

# %% [markdown]
# ## 2. Soft assignment: attention over codewords
#
# HiHPQ scores a point $x$ against each codeword $e_j$ with the **squared Lorentzian
# distance** (Law et al., 2019)
#
# $$d^2_{\mathcal L}(x, e_j) = \|x - e_j\|^2_{\mathcal L} = -2k - 2\langle x, e_j\rangle_{\mathcal L}$$
#
# (library: `lorentz.pairwise_sqdist(x, c, k=k)`, shape $(B, K)$ for $B$ points and $K$
# codewords; it is `out.sqdist`). Here $\|u\|^2_{\mathcal L} = \langle u, u\rangle_{\mathcal L}$,
# the Minkowski "squared norm" of notebook 01; the second equality uses
# $\langle x, x\rangle_{\mathcal L} = \langle e_j, e_j\rangle_{\mathcal L} = -k$. It is 0
# for $x = e_j$ and grows with the geodesic distance, but it is not itself a geodesic
# distance (see below). The scores become attention weights with a softmax at
# temperature $T$:
#
# $$p_j(x) = \frac{\exp\left(-T\, d^2_{\mathcal L}(x, e_j)\right)}{\sum_{l=1}^{K} \exp\left(-T\, d^2_{\mathcal L}(x, e_l)\right)}$$
#
# (library: `ProductQuantizer(space, K, temperature=T)`; the weights are `out.assign`, shape
# $(B, M, K)$). **Careful:** here $T$ *multiplies* the distances, as in the paper's code
# (`softmax_temp`): a **larger $T$ makes the assignment harder** (closer to one-hot: all
# the weight on the nearest codeword), the
# opposite of the usual "divide by the temperature" convention. From scratch:

# %%
T = pq.temperature
sq_scratch = -2 * k - 2 * lorentz.pairwise_inner(points, codewords)  # (N, K)
weights = torch.exp(-T * sq_scratch)
p_scratch = weights / weights.sum(dim=1, keepdim=True)

# %%
torch.testing.assert_close(sq_scratch, out.sqdist[:, 0])
torch.testing.assert_close(p_scratch, out.assign[:, 0])
print("first point's attention over the 8 codewords:", out.assign[0, 0].numpy().round(3))

# %% [markdown]
# Why not the geodesic distance $d_k$ itself? The two are tied by
# $d^2_{\mathcal L} = 2k\left(\cosh(d_k/\sqrt k) - 1\right)$, an increasing function, so
# they rank codewords identically (same nearest codeword); $d^2_{\mathcal L}$ is cheaper
# (one inner product, no `arcosh`) and has a well-behaved gradient at $x = e_j$.

# %%
d_geo = lorentz.pairwise_dist(points, codewords, k=k)
torch.testing.assert_close(out.sqdist[:, 0], 2 * k * (torch.cosh(d_geo / math.sqrt(k)) - 1))
assert torch.equal(d_geo.argmin(1), out.sqdist[:, 0].argmin(1))

# %% [markdown]
# ### Exercise 1 — attention at another temperature
# Compute the attention weights $p_j$ of the **first** point, `points[0]`, over the 8
# `codewords` at temperature $T = 5$ (a tensor of shape `(8,)` summing to 1). Use
# `lorentz.pairwise_sqdist` (it wants a batch: `points[:1]` gives a $(1, 8)$ result) or
# the formula; store it in `answer`.

# %%
answer = None  # your code: a tensor of shape (8,)

# %% jupyter={"source_hidden": true} tags=["solution"]
if answer is None:
    sq0 = lorentz.pairwise_sqdist(points[:1], codewords, k=k)[0]
    answer = torch.softmax(-5.0 * sq0, dim=0)

# %% tags=["check"]
assert answer is not None, "set answer to the 8 attention weights"
with torch.no_grad():
    pq5 = quantizer.ProductQuantizer(space, K=8, temperature=5.0)
    pq5.load_state_dict(pq.state_dict())  # same codebooks, T = 5
    expected = pq5(feats[:1]).assign[0, 0]
torch.testing.assert_close(torch.as_tensor(answer, dtype=expected.dtype), expected)
sharper = bool(expected.max() > out.assign[0, 0].max())
print(
    "Exercise 1: correct:",
    expected.numpy().round(3),
    f"(largest weight {expected.max():.3f} at T = 5 vs {out.assign[0, 0].max():.3f} at T = 1:",
    "sharper)" if sharper else "not sharper?)",
)
claims.check(sharper, "a larger T makes the assignment sharper")

# %% [markdown]
# ## 3. The Lorentz centroid: averaging on the hyperboloid
#
# The soft quantization of $x$ is the "average" of the codewords weighted by $p(x)$. A
# plain weighted sum $a = \sum_j p_j e_j$ leaves the sheet (it lies *inside* the bowl,
# $\langle a, a\rangle_{\mathcal L} \le -k$), so it is rescaled back onto the sheet along the
# ray from the origin $(0, 0, 0)$ of $\mathbb R^{3}$ (not the hyperbolic origin $o$):
#
# $$\mu = \sqrt k\, \frac{a}{\sqrt{\left|\langle a, a\rangle_{\mathcal L}\right|}},
#   \qquad a = \sum_{j} p_j\, e_j .$$
#
# Law et al. (2019) show that $\mu$ is the point of the sheet minimising
# $\sum_j p_j\, d^2_{\mathcal L}(\mu, e_j)$: the hyperbolic counterpart of the weighted mean,
# in closed form. Library call: `lorentz.lorentz_centroid(points, weights, k=k)`. From
# scratch:

# %%
a = out.assign[:, 0] @ codewords  # (N, 3), inside the sheet
mu_scratch = math.sqrt(k) * a / torch.sqrt(lorentz.inner(a, a).abs())[:, None]

# %%
torch.testing.assert_close(mu_scratch, lorentz.lorentz_centroid(codewords, out.assign[:, 0], k=k))
torch.testing.assert_close(mu_scratch, out.soft[:, 0])  # the quantizer's soft output
torch.testing.assert_close(lorentz.inner(mu_scratch, mu_scratch), torch.full((N_POINTS,), -k))
print("centroid = lorentz_centroid = out.soft, and it lies on the sheet")

# %% [markdown]
# Its defining property, checked numerically: moving the centroid of the first point
# anywhere nearby on the sheet only increases the weighted sum of squared distances.


# %%
def weighted_sqdist(m, w):
    return (w * lorentz.pairwise_sqdist(m[None], codewords, k=k)[0]).sum()


w0, mu0 = out.assign[0, 0], mu_scratch[0]
nudged = lorentz.project(mu0 + 0.05 * lorentz.lift(torch.randn(200, 2, generator=generator)), k=k)
assert all(weighted_sqdist(m, w0) >= weighted_sqdist(mu0, w0) - 1e-12 for m in nudged)

# %% [markdown]
# ## 4. Soft codes for training, hard codes for storage
#
# The **hard code** is the nearest codeword, $\arg\min_j d^2_{\mathcal L}(x, e_j)$:
# `out.codes` during training, `pq.encode(feats)` (uint8, one byte per subspace) for the
# database, and `pq.decode(codes)` returns the codeword points. The soft output is a blend
# that cannot be stored in a byte, but it has gradients with respect to the codewords (and
# the features and the curvature), which is what training needs.

# %%
codes = pq.encode(feats)  # (N, 1) uint8
assert codes.dtype == torch.uint8 and torch.equal(codes.long(), out.codes)
hard = pq.decode(codes)[:, 0]  # (N, 3) the chosen codewords
show = torch.arange(12)  # a dozen points: each one, its soft quantization and its codeword
segments = [viz.geodesic_segment(points[i], out.soft[i, 0], k=k) for i in show]
segments += [viz.geodesic_segment(points[i], hard[i], k=k) for i in show]
names = np.array(
    ["point"] * len(show) + ["soft quantization (T = 1)"] * len(show) + ["codeword"] * 8
)
soft_args = dict(curves=segments, title="points, their soft quantization and the codewords")
soft_pts = torch.cat([points[show], out.soft[show, 0], codewords])
viz.poincare_disk(soft_pts, names, **soft_args)

# %%
viz.poincare_disk(soft_pts, names, backend="matplotlib", **soft_args)

# %% [markdown]
# In the figure each of the 12 points is joined by a geodesic to its soft quantization
# and to its codeword. Where the soft quantization sits away from the codeword, the
# attention at $T = 1$ is shared between several codewords and the output is a blend;
# where the two coincide, one codeword took almost all the weight.

# %%
gap_soft_hard = lorentz.dist(out.soft[show, 0], hard[show], k=k)
top_weight = out.assign[show, 0].max(-1).values
print("distance soft -> codeword:", gap_soft_hard.numpy().round(3))
print("largest attention weight: ", top_weight.numpy().round(3))

# %% tags=["claim"]
# the picture's reading: the more the weight is shared, the farther the soft point sits
order = torch.argsort(top_weight)
claims.check(
    bool(gap_soft_hard[order[:3]].mean() > gap_soft_hard[order[-3:]].mean()),
    "soft quantizations with shared attention sit farther from their codeword",
)

# %% [markdown]
#
# ## 5. The cells of a hyperbolic codebook (sliders)
#
# The set of points whose nearest codeword is $e_j$ is the **cell** (Voronoi cell) of
# $e_j$; the hard code of a point says which cell it is in.
# Colour every point of the disk by its nearest codeword (hard cell, black boundaries)
# and by the **entropy** of its soft assignment, $-\sum_j p_j \log p_j$: 0 where the
# assignment is certain, up to $\log K$ where it is uniform. `viz.codebook_voronoi`
# computes this on a grid of disk points mapped to the sheet with
# `lorentz.from_poincare`. Things to look for while moving the sliders:
# - the **hard cells never change with $T$**; only the blurred band of uncertain
#   assignment around their boundaries does: it shrinks as $T$ grows;
# - the boundaries are **geodesics** (circular arcs meeting the rim at right angles):
#   points equally far from $e_i$ and $e_j$ satisfy
#   $\langle x, e_i - e_j\rangle_{\mathcal L} = 0$, a plane through the origin of
#   $\mathbb R^3$, which cuts the sheet along a geodesic;
# - with a larger curvature $c$ the same tangent vectors land nearer the rim, where
#   hyperbolic space is roomier: cells near the rim look small but are large in
#   hyperbolic area.

# %%
tangent_codebook = pq.codebooks.detach()[0]  # (K, 2), fixed across the sliders
voronoi_args = dict(points_tangent=feats[:300], resolution=RESOLUTION)
viz.slider_figure(
    lambda temperature, c: viz.voronoi_figure(tangent_codebook, temperature, c, **voronoi_args),
    temperature=widgets.FloatLogSlider(
        value=1.0, base=10, min=-1, max=2, step=0.1, description="T", continuous_update=False
    ),
    c=widgets.FloatLogSlider(
        value=1.0, base=10, min=-1, max=1, step=0.1, description="c = 1/k", continuous_update=False
    ),
)

# %% tags=["claim"]
cold, hot = (
    viz.voronoi_data(codewords, k, temperature=t, resolution=RESOLUTION) for t in (0.3, 10)
)
claims.check(
    np.array_equal(cold["cells"], hot["cells"], equal_nan=True), "hard cells never change with T"
)
claims.check(
    np.nanmean(hot["entropy"]) < np.nanmean(cold["entropy"]),
    "the band of uncertain assignment shrinks as T grows",
)


def disk_radius(c):
    """Mean Poincaré-disk radius of the first 300 points at curvature c (same tangent vectors)."""
    pts = lorentz.expmap0(lorentz.lift(feats[:300]), k=1 / c)
    return float(lorentz.to_poincare(pts, k=1 / c).norm(dim=-1).mean())


radii = [disk_radius(c) for c in (0.1, 1.0, 10.0)]
claims.check(
    radii[0] < radii[1] < radii[2],
    "with a larger curvature c the same tangent vectors land nearer the rim",
    radii=radii,
)

# %% [markdown]
# The same explorations with their sliders built into the figures, computed in advance
# (no kernel needed: they keep working in an exported HTML page and in the book): the
# temperature at $c = 1$, then the curvature at $T = 1$.

# %%
viz.voronoi_explorer(
    tangent_codebook, np.geomspace(0.01, 100.0, 9), vary="temperature", points_tangent=feats[:300]
)

# %%
viz.voronoi_explorer(
    tangent_codebook, np.geomspace(0.1, 10.0, 5), vary="curvature", points_tangent=feats[:300]
)

# %% [markdown]
# The static twins: the same codebook at $T = 0.3$ and $T = 10$ ($c = 1$).

# %% tags=["thumbnail"]
for temp in (0.3, 10.0):
    display(
        viz.codebook_voronoi(
            codewords,
            k,
            temperature=temp,
            resolution=RESOLUTION,
            background="entropy",
            points=points[:300],
            backend="matplotlib",
        )
    )

# %% [markdown]
# ## 6. Quantization error against temperature
#
# The quantization error is the mean geodesic distance between a point and its
# quantization: `out.quantization_error(space)` for the soft one, and
# $\frac1N\sum_n d_k(x_n, e_{\mathrm{code}(x_n)})$ for the hard one. Sweep $T$:

# %%
temperatures = np.logspace(-2, 3, N_TEMPS)
soft_error, mean_max_prob = [], []
with torch.no_grad():
    hard_error = space.dist(out.points, pq.decode(out.codes)).mean().item()
    for temp in temperatures:
        pq.temperature = float(temp)
        o = pq(feats)
        soft_error.append(o.quantization_error(space).item())
        mean_max_prob.append(o.assign.max(-1).values.mean().item())
    pq.temperature = 1.0
soft_error, mean_max_prob = np.array(soft_error), np.array(mean_max_prob)
print(
    f"hard error {hard_error:.4f}; soft error at T = {temperatures[0]:g}: {soft_error[0]:.4f}, "
    f"lowest {soft_error.min():.4f} (T = {temperatures[soft_error.argmin()]:.2g}), "
    f"at T = {temperatures[-1]:g}: {soft_error[-1]:.4f}"
)

# %%
assert abs(soft_error[-1] - hard_error) < 1e-3 * hard_error  # T -> infinity: soft -> hard
assert abs(soft_error[-1] - hard_error) < abs(soft_error[0] - hard_error)
assert mean_max_prob[-1] > 0.99
assert soft_error.min() < hard_error  # the dip discussed below

# %%
curves = [soft_error, np.full_like(soft_error, hard_error)]
viz.line_plot(
    temperatures,
    curves,
    ["soft quantization", "hard code"],
    xlabel="temperature T (larger = harder)",
    ylabel="mean distance to the quantization",
    title="Quantization error vs. temperature",
    log_x=True,
)

# %%
viz.line_plot(
    temperatures,
    curves,
    ["soft quantization", "hard code"],
    xlabel="temperature T (larger = harder)",
    ylabel="mean distance to the quantization",
    title="Quantization error vs. temperature",
    log_x=True,
    backend="matplotlib",
)

# %% [markdown]
# Read the curve from the left: at small $T$ every point gets nearly the same blend of all
# codewords, so the soft quantization sits near the codebook's centroid and the error is
# large. As $T$ grows the soft output becomes the nearest codeword and the two errors
# meet. In between, something too small to see on that scale happens: the soft error
# dips *below* the hard one. The difference soft − hard, on its own axis:

# %%
below = temperatures[soft_error < hard_error]
diff_args = dict(
    xlabel="temperature T (larger = harder)",
    ylabel="soft error − hard error",
    title="Below 0: the blend is closer to the point than its codeword",
    log_x=True,
    ylim=(float(soft_error.min() - hard_error) * 1.5, float(soft_error.min() - hard_error) * -1.5),
)
diff_curves = [soft_error - hard_error, np.zeros_like(soft_error)]
viz.line_plot(temperatures, diff_curves, ["soft − hard", "0"], **diff_args)

# %%
viz.line_plot(temperatures, diff_curves, ["soft − hard", "0"], backend="matplotlib", **diff_args)

# %% tags=["claim"]
claims.check(
    mean_max_prob[0] < 2 / pq.K,
    "at small T every point gets nearly the same blend of all codewords",
    largest_weight=mean_max_prob[0],
)
claims.check(
    abs(soft_error[-1] - hard_error) < 1e-3 * hard_error
    and abs(soft_error[-1] - hard_error) < abs(soft_error[0] - hard_error),
    "as T grows the soft quantization error tends to the hard one: the two errors meet",
)
dip = np.flatnonzero(soft_error < hard_error)
claims.check(
    bool(np.all(np.diff(dip) == 1)),
    "the soft error is below the hard one on one interval of T",
    below=temperatures[dip],
)
if below.max() >= temperatures[-2]:  # the sentence then says "approaching it from below"
    claims.check(
        bool(np.all(np.diff(soft_error[soft_error.argmin() :]) >= -1e-12)),
        "after its lowest point the soft error approaches the hard one from below as T grows",
    )
claims.say(
    "The soft error is below the hard one **{where}**, by at most "
    "{depth:.4f} ({rel:.1%} of the hard error) at T = {tmin:.2g}: a blend of neighbouring "
    "codewords can be closer to a point than any single codeword, but a blend cannot be "
    "stored in a byte. Training at a finite $T$ keeps gradients flowing to several "
    "codewords; the paper's values (`softmax_temp` in `configs/paper/*.yaml`) are 1 to 15.",
    where=(
        f"from T = {below.min():.3g} on, approaching it from below as T grows"
        if below.max() >= temperatures[-2]
        else f"for T from {below.min():.3g} to {below.max():.3g}"
    ),
    depth=hard_error - soft_error.min(),
    rel=(hard_error - soft_error.min()) / hard_error,
    tmin=temperatures[soft_error.argmin()],
)

# %% [markdown]
# ### Exercise 2 — one k-means (Lloyd) step on the hyperboloid
# Improve the codebook: give every codeword the **Lorentz centroid** (equal weights) of
# the points whose hard code it is, and keep a codeword with no points unchanged. Use
# `points`, `out.codes[:, 0]`, `codewords` and `lorentz.lorentz_centroid(pts, k=k)`.
# Store the new $(8, 3)$ codewords in `answer`.

# %%
answer = None  # your code: a tensor of shape (8, 3)

# %% jupyter={"source_hidden": true} tags=["solution"]
if answer is None:
    answer = codewords.clone()
    for j in range(8):
        members = points[out.codes[:, 0] == j]
        if len(members):
            answer[j] = lorentz.lorentz_centroid(members, k=k)

# %% tags=["check"]
assert answer is not None, "set answer to the (8, 3) updated codewords"
empty = [j for j in range(8) if not bool((out.codes[:, 0] == j).any())]
assert empty, "this check needs a codeword without points (the toy codebook has some)"
exercises.check_lloyd_step(answer, points, out.codes[:, 0], codewords, k=k)  # empty: unchanged
new_cw = torch.as_tensor(answer, dtype=codewords.dtype)
torch.testing.assert_close(lorentz.inner(new_cw, new_cw), torch.full((8,), -k))  # on the sheet


def lloyd_objective(cw):
    """Mean squared Lorentzian distance to the nearest codeword."""
    return lorentz.pairwise_sqdist(points, cw, k=k).min(1).values.mean().item()


before, after = lloyd_objective(codewords), lloyd_objective(new_cw)
assert after <= before + 1e-12, "a Lloyd step never increases the objective"
print(
    f"Exercise 2: correct. objective {before:.4f} -> {after:.4f}; codewords {empty} had no points"
)

# %% [markdown]
# Repeating this step is k-means on the hyperboloid (with the squared Lorentzian
# distance, for which the Lorentz centroid is the exact minimiser). HiHPQ instead learns
# its codewords by gradient descent through the soft quantization, together with the
# network and the curvature.
#
# ### Exercise 3 — how hard is "hard enough"?
# Using the sweep of section 6 (`temperatures`, `mean_max_prob`), find the **smallest**
# temperature at which the average largest attention weight reaches 0.9. Store it as a
# float in `answer`.

# %%
answer = None  # your code: a float taken from `temperatures`

# %% jupyter={"source_hidden": true} tags=["solution"]
if answer is None:
    answer = float(temperatures[np.argmax(mean_max_prob >= 0.9)])

# %% tags=["check"]
assert answer is not None, "set answer to a temperature"
t_hard = exercises.check_smallest_temperature(answer, temperatures, mean_max_prob, 0.9)
print(
    f"Exercise 3: correct. From T = {t_hard:.3g} on, the strongest codeword gets 90% of the weight on average"
)

# %% [markdown]
# ## Summary
# - Codebook attention: $p_j(x) = \operatorname{softmax}_j(-T\, d^2_{\mathcal L}(x, e_j))$
#   with $d^2_{\mathcal L} = -2k - 2\langle x, e_j\rangle_{\mathcal L}$
#   (`lorentz.pairwise_sqdist`, `ProductQuantizer`); larger $T$ = harder.
# - The soft quantization is the weighted Lorentz centroid of the codewords
#   (`lorentz.lorentz_centroid`, `out.soft`), the closed-form minimiser of the weighted
#   squared Lorentzian distances.
# - Hard codes (`pq.encode`, uint8) are the argmin; their cells are bounded by geodesics,
#   and do not depend on $T$.
# - As $T$ grows, the soft quantization error tends to the hard one; at moderate $T$ a
#   blend can be slightly closer to a point than its nearest codeword.
#
# Next: **04 · Quantized contrastive learning**, the loss that trains features, codewords
# and curvatures together.
#
# ## Further reading
# - Qiu et al., *HiHPQ: Hierarchical Hyperbolic Product Quantization for Unsupervised
#   Image Retrieval*, AAAI 2024 (hyperbolic codebook attention).
# - Law, Liao, Snell & Zemel, *Lorentzian Distance Learning for Hyperbolic
#   Representations*, ICML 2019 (squared Lorentzian distance, the centroid in closed form).
# - Nickel & Kiela, *Learning Continuous Hierarchies in the Lorentz Model of Hyperbolic
#   Geometry*, ICML 2018.
# - Jégou, Douze & Schmid, *Product Quantization for Nearest Neighbor Search*, TPAMI 2011;
#   Jang & Cho, *Self-supervised Product Quantization for Deep Unsupervised Image
#   Retrieval* (SPQ), ICCV 2021, for soft codeword assignment in Euclidean deep PQ.
# - geoopt's `Lorentz` manifold: https://geoopt.readthedocs.io
