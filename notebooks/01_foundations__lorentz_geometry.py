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
# # 01 · Foundations: Lorentz geometry
#
# HiHPQ (Qiu et al., AAAI 2024) quantizes image features in **hyperbolic space** instead
# of Euclidean space, because hyperbolic space has room for hierarchies (animal → dog →
# terrier). This notebook builds the geometry from scratch, one formula at a time, and
# shows each formula's one-line call in `hihpq_lib.geometry.lorentz`.
#
# ## What you will learn
# - the **hyperboloid** (Lorentz model): points with Minkowski "norm" $-k$, and what the
#   knob $k$ (or the paper's curvature $c = 1/k$) does;
# - the **exponential and logarithmic maps**, at the origin (which turn an ordinary
#   feature vector into a hyperbolic point and back) and at any point, and **parallel
#   transport** (which moves a direction from one point to another);
# - the **Poincaré disk**, the picture we use for hyperbolic points, and why distances
#   explode toward its boundary;
# - **why trees fit**: a tree embedded in the hyperbolic plane keeps its distances far
#   better than the same tree in the Euclidean plane (we measure it).
#
# ## What you need
# - Python and NumPy/PyTorch basics, vectors, dot products, `cosh`/`sinh`. No prior
#   hyperbolic geometry: every idea is introduced here.
# - The project's environment (`make lab` from the repository root opens this notebook
#   with the right kernel). No data download, no GPU.
# - Notation: one sheet for the whole series, [docs/notation.md](../docs/notation.md).
#
# ## How long it takes on a laptop CPU
# - Reading and doing the exercises: about 45 minutes.
# - **Full mode** (600 optimisation steps for the tree): 9 s.
# - **Fast mode (`HIHPQ_FAST=1`)** (150 steps): 8 s.
# - Measured 2026-12-01 and 2026-12-04 on a 2-core CPU (full mode of 04-07 re-measured on
#   2026-12-04 with the machine idle and the default thread count, 2; the rest on 2026-12-01
#   with the machine shared with three other developers and OMP_NUM_THREADS=1, whose
#   full-mode numbers each entry states beside the new ones), kernel start included
#   (`jupyter nbconvert --execute`, one notebook at a time). Generated from
#   `notebooks/timings.yaml` by `python -m benchmarks.notebook_timings`.

# %% [markdown]
# ## Setup
# The setup cell seeds every random generator and reads fast mode (`HIHPQ_FAST=1`) from
# the environment; `runtime.pick(full, fast)` is the only place where sizes change with it.
# We compute in float64 so that the checks below can use tight tolerances (the library
# works in float32 too).

# %%
# %matplotlib inline
import math

import ipywidgets as widgets
import numpy as np
import torch
from IPython.display import display
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import shortest_path

from hihpq_lib import viz
from hihpq_lib.app import exercises
from hihpq_lib.evaluation import claims
from hihpq_lib.geometry import lorentz
from hihpq_lib.utils import runtime

runtime.seed_everything(0)
torch.set_default_dtype(torch.float64)
OPT_STEPS = runtime.pick(600, 150)  # optimisation steps in the tree experiment
print(f"fast mode: {runtime.fast_mode()}, tree optimisation steps: {OPT_STEPS}")

# %% [markdown]
# ## 1. The Minkowski inner product and the hyperboloid
#
# A point of the $n$-dimensional hyperbolic space is stored as a vector with $n+1$
# coordinates, $x = (x_0, x_1, \dots, x_n)$; $x_0$ is called the *time* coordinate (the
# vocabulary comes from relativity). The only change from ordinary geometry is one minus
# sign in the inner product, the **Minkowski inner product**:
#
# $$\langle x, y\rangle_{\mathcal L} = -x_0 y_0 + \sum_{i=1}^n x_i y_i .$$
#
# Library call: `lorentz.inner(x, y)`. It works on batches: inputs of shape $(\dots, n+1)$
# (time coordinate first) give one number per row, shape $(\dots)$. Written from scratch
# first, then checked:


# %%
def minkowski_inner(x, y):
    """-x0*y0 + x1*y1 + ... + xn*yn, over the last dimension."""
    return -x[..., 0] * y[..., 0] + (x[..., 1:] * y[..., 1:]).sum(-1)


x = torch.tensor([2.0, 1.0, 0.5])
y = torch.tensor([1.5, -0.3, 1.0])
print("from scratch:", minkowski_inner(x, y).item(), " library:", lorentz.inner(x, y).item())

# %%
xs, ys = torch.randn(100, 3), torch.randn(100, 3)
torch.testing.assert_close(minkowski_inner(xs, ys), lorentz.inner(xs, ys))

# %% [markdown]
# A sphere of radius $r$ is the set of points with $\langle x, x\rangle = r^2$. The
# **hyperboloid** is the same idea with the Minkowski product and a negative value:
#
# $$\mathbb H^n_k = \{x \in \mathbb R^{n+1} : \langle x, x\rangle_{\mathcal L} = -k,\ x_0 > 0\}.$$
#
# The equation $-x_0^2 + x_1^2 + \dots + x_n^2 = -k$ describes a hyperboloid with two
# bowl-shaped sheets, one above and one below the plane $x_0 = 0$; $x_0 > 0$ keeps the
# upper one, which we simply call **the sheet**. (For $n = 2$ it is a bowl in 3-D: see the
# picture in section 3.)
# Solving for $x_0$ gives $x_0 = \sqrt{k + x_1^2 + \dots + x_n^2}$: pick any spatial part
# $(x_1, \dots, x_n)$ and the time coordinate follows. Library call:
# `lorentz.project(x, k=k)` (it recomputes $x_0$). The **origin** is the lowest point of
# the sheet, $o = (\sqrt k, 0, \dots, 0)$: `lorentz.origin(n, k=k)`.
#
# **Curvature.** Curvature measures how fast a space bends away from flat: a sphere of
# radius $r$ has curvature $+1/r^2$ at every point, a plane has 0. The sheet has constant
# *negative* curvature $-1/k$ (its precise name is *sectional curvature*), so $\sqrt k$
# plays the part of the sphere's radius. Negative curvature is what makes circles grow
# exponentially (section 4).
#
# **Two names for one knob.** The library follows geoopt and uses $k > 0$; the sectional
# curvature of $\mathbb H^n_k$ is $-1/k$. The HiHPQ paper (and
# `manifolds.ProductLorentz.curvature`) uses the curvature *magnitude* $c = 1/k$. Large $c$
# (small $k$) = strongly curved; $c \to 0$ = almost flat. (Some texts write the curvature
# itself as $K = -1/k$; in this series upper-case $K$ always means the number of codewords,
# from notebook 02 on.)
#
# **Notation for the whole series (one letter per concept).** $k$ is the curvature
# parameter in geoopt's convention, $\langle x, x\rangle_{\mathcal L} = -k$; every
# formula and every library call uses it. $c = 1/k$ appears only where the paper's own
# quantities are shown (`ProductLorentz.curvature`, the curvature sliders, the learned
# curvature plots). $K$ is the number of codewords per codebook, and a codeword is
# $e_{m,j}$ (codeword $j$ of subspace $m$; the letter of VQ-VAE's codebook), never $c$.
# $o$ is the origin, $d_k$ the geodesic distance, $T$ the codebook softmax temperature
# and $\tau$ the contrastive temperature.

# %%
k = 2.0
p = lorentz.project(torch.tensor([0.0, 3.0, 4.0]), k=k)  # x0 is recomputed
o = lorentz.origin(2, k=k)
print("point:", p.tolist(), " <p, p> =", lorentz.inner(p, p).item(), "(should be -k =", -k, ")")
print("origin:", o.tolist(), " <o, o> =", lorentz.inner(o, o).item())
assert abs(lorentz.inner(p, p).item() + k) < 1e-9

# %% [markdown]
# ### Exercise 1 — the time coordinate
# Find the time coordinate $x_0$ of the point of $\mathbb H^2_1$ (so $k = 1$) whose
# spatial part is $(3, 4)$. Store it as a Python float in `answer`. (Use the formula for
# $x_0$ above, by hand or with numpy.)

# %%
answer = None  # your code: a float

# %% jupyter={"source_hidden": true} tags=["solution"]
if answer is None:
    answer = math.sqrt(1.0 + 3.0**2 + 4.0**2)

# %% tags=["check"]
assert answer is not None, "set answer to your value of x0"
expected = exercises.check_time_coordinate(answer, (3.0, 4.0), k=1.0)  # float32 passes too
x0_lib = lorentz.project(torch.tensor([0.0, 3.0, 4.0]), k=1.0)[0].item()  # float32
assert abs(x0_lib - expected) <= exercises.FLOAT32_RTOL * expected, "the library agrees"
print("Exercise 1: correct, x0 =", expected)

# %% [markdown]
# ## 2. Exponential and logarithmic maps at the origin
#
# A backbone network outputs an ordinary vector $v \in \mathbb R^n$. HiHPQ puts it on the
# hyperboloid with the **exponential map at the origin**: walk from $o$ along the
# **geodesic** (the shortest path on the sheet, its version of a straight line) that
# starts in direction $v$, for a distance $\|v\|$:
#
# $$\exp_o^k(v) = \left(\sqrt k \cosh\theta,\ \sqrt k \sinh\theta \,\frac{v}{\|v\|}\right),
#   \qquad \theta = \frac{\|v\|}{\sqrt k}.$$
#
# Library call: `lorentz.expmap0(lorentz.lift(v), k=k)`. The vectors you can start walking
# along from $o$ form the **tangent plane** at $o$: the flat plane touching the sheet at
# its lowest point, i.e. the vectors with time coordinate 0 (for any $n$ it is called the
# **tangent space at the origin**, an ordinary $\mathbb R^n$; notebook 05 clusters in it).
# `lift` writes $v$ as such a tangent vector, $(0, v)$: shape $(\dots, n) \to
# (\dots, n+1)$; `expmap0` returns points of shape $(\dots, n+1)$. The **logarithmic map**
# `lorentz.logmap0(x, k=k)` is its inverse; it returns the tangent vector *with* its zero
# time coordinate, shape $(\dots, n+1)$, so `[..., 1:]` recovers $v$. (`cosh²θ − sinh²θ = 1`
# is exactly why the result lands on the sheet.)


# %%
def expmap0_from_scratch(v, k):
    """exp_o(v) for v of shape (..., n), straight from the formula."""
    norm = v.norm(dim=-1, keepdim=True)
    theta = norm / math.sqrt(k)
    return torch.cat(
        [math.sqrt(k) * torch.cosh(theta), math.sqrt(k) * torch.sinh(theta) * v / norm], -1
    )


v = torch.randn(50, 2)
torch.testing.assert_close(expmap0_from_scratch(v, k=2.0), lorentz.expmap0(lorentz.lift(v), k=2.0))

# %% [markdown]
# (The library version also works at $v = 0$, where the formula divides by zero, and for
# huge $\|v\|$ where `cosh` overflows; see the module docstring of `hihpq_lib.geometry.lorentz`.)
#
# Three facts worth checking once: the result lies on the sheet, `logmap0` undoes
# `expmap0`, and the geodesic distance from the origin equals $\|v\|$ (so the exponential
# map keeps distances *from the origin*, whatever $k$ is).

# %%
for k in (0.5, 1.0, 4.0):
    x = lorentz.expmap0(lorentz.lift(v), k=k)
    torch.testing.assert_close(lorentz.inner(x, x), torch.full((50,), -k))
    torch.testing.assert_close(lorentz.logmap0(x, k=k)[:, 1:], v)
    torch.testing.assert_close(lorentz.dist(lorentz.origin(2, k=k), x, k=k), v.norm(dim=-1))
print("on the sheet, log∘exp = id, d(o, exp(v)) = |v|: all checked for k = 0.5, 1, 4")

# %% [markdown]
# ### 2b. Exp and log at any point, and parallel transport
#
# The origin is not special: every point $x$ of the sheet has its own tangent space, the
# vectors $u$ with $\langle x, u\rangle_{\mathcal L} = 0$ (at the origin: time
# coordinate 0). Walking from $x$ along $u$ for the distance
# $\|u\|_{\mathcal L} = \sqrt{\langle u, u\rangle_{\mathcal L}}$ is the exponential map
# at $x$, and the logarithmic map at $x$ gives the direction and distance from $x$ to $y$:
#
# $$\exp_x^k(u) = \cosh\theta\, x + \sqrt k \sinh\theta\, \frac{u}{\|u\|_{\mathcal L}},
#   \quad \theta = \frac{\|u\|_{\mathcal L}}{\sqrt k}, \qquad
#   \log_x^k(y) = \frac{d_k(x, y)}{\|v\|_{\mathcal L}}\, v, \quad
#   v = y + \frac{\langle x, y\rangle_{\mathcal L}}{k}\, x .$$
#
# ($v$ is $y$ minus its component along $x$: the part of $y$ tangent at $x$.) Library
# calls: `lorentz.expmap(x, u, k=k)` and `lorentz.logmap(x, y, k=k)`, shapes $(\dots,
# n+1)$ in and out, the same formulas and argument order as geoopt's `Lorentz.expmap` /
# `Lorentz.logmap`; `lorentz.tangent_project(x, w, k=k)` turns any vector $w$ into a
# tangent vector at $x$. At $x = o$ they are `expmap0` / `logmap0`.
#
# Why you need them: the geodesic from $x$ to $y$ is $t \mapsto \exp_x(t \log_x y)$,
# $t \in [0, 1]$ (that is how `viz.geodesic_segment` draws edges), and its midpoint is
# exactly the Lorentz centroid of $x$ and $y$ with equal weights (notebook 03 averages
# codewords with that centroid).

# %%
k = 2.0
x = lorentz.expmap0(lorentz.lift(torch.randn(50, 2)), k=k)  # 50 points anywhere
y = lorentz.expmap0(lorentz.lift(torch.randn(50, 2)), k=k)
u = lorentz.tangent_project(x, torch.randn(50, 3), k=k)  # tangent vectors at x


def expmap_from_scratch(x, u, k):
    n = torch.sqrt(lorentz.inner(u, u, keepdim=True))
    return torch.cosh(n / math.sqrt(k)) * x + math.sqrt(k) * torch.sinh(n / math.sqrt(k)) * u / n


torch.testing.assert_close(expmap_from_scratch(x, u, k), lorentz.expmap(x, u, k=k))
torch.testing.assert_close(lorentz.logmap(x, lorentz.expmap(x, u, k=k), k=k), u)  # log∘exp = id
torch.testing.assert_close(
    lorentz.dist(x, lorentz.expmap(x, u, k=k), k=k), lorentz.inner(u, u).sqrt()
)
midpoint = lorentz.expmap(x, 0.5 * lorentz.logmap(x, y, k=k), k=k)
torch.testing.assert_close(midpoint, lorentz.lorentz_centroid(torch.stack([x, y], 1), k=k))
print("exp_x from scratch = library; log_x(exp_x(u)) = u; d(x, exp_x(u)) = |u|_L;")
print("midpoint of the geodesic x -> y = Lorentz centroid of {x, y}: all checked")

# %% [markdown]
# A tangent vector at $x$ cannot be compared with one at $y$ directly: they live in
# different tangent spaces. **Parallel transport** slides $u$ along the geodesic from $x$
# to $y$ without turning or stretching it:
#
# $$\Gamma_{x \to y}(u) = u + \frac{\langle y, u\rangle_{\mathcal L}}{k - \langle x, y\rangle_{\mathcal L}}\,(x + y) .$$
#
# Library call: `lorentz.transp(x, y, u, k=k)` (geoopt's `Lorentz.transp`). It keeps
# lengths and angles, and the direction "towards $y$" at $x$ arrives as "away from $x$"
# at $y$:

# %%
w = lorentz.tangent_project(x, torch.randn(50, 3), k=k)
moved_u, moved_w = lorentz.transp(x, y, u, k=k), lorentz.transp(x, y, w, k=k)
torch.testing.assert_close(lorentz.inner(y, moved_u), torch.zeros(50), atol=1e-9, rtol=0)
torch.testing.assert_close(lorentz.inner(moved_u, moved_w), lorentz.inner(u, w))
torch.testing.assert_close(
    lorentz.transp(x, y, lorentz.logmap(x, y, k=k), k=k), -lorentz.logmap(y, x, k=k)
)
print("transported vectors are tangent at y, keep inner products, and log_x(y) -> -log_y(x)")

# %% [markdown]
# ## 3. The hyperboloid and the Poincaré disk side by side
#
# The sheet lives in 3-D even for the hyperbolic *plane*, which is awkward to look at. The
# **Poincaré disk** flattens it: draw the straight line from the pole $(-\sqrt k, 0, 0)$
# (below the sheet) to the point $x$; it crosses the plane $x_0 = 0$ inside a disk of
# radius $\sqrt k$. Rescaled to the unit disk:
#
# $$p = \frac{(x_1, \dots, x_n)}{x_0 + \sqrt k}, \qquad \|p\| < 1 .$$
#
# Library call: `lorentz.to_poincare(x, k=k)`; every figure in `hihpq_lib.viz` goes through
# `viz.poincare_coords`, which uses it and guarantees $\|p\| < 1$.

# %%
k = 1.0
x = lorentz.expmap0(lorentz.lift(torch.randn(40, 2)), k=k)
p_scratch = x[:, 1:] / (x[:, :1] + math.sqrt(k))
torch.testing.assert_close(p_scratch, lorentz.to_poincare(x, k=k))

# %% [markdown]
# Below, 3 groups of points around three directions and one geodesic from the origin
# (red), drawn on the sheet (left, with the projection lines down to the disk) and on the
# Poincaré disk (right). Drag the 3-D view to look from below. What to look at: the
# farther up the bowl a point sits (the larger its distance from $o$), the closer to the
# rim it lands on the disk; the geodesic from the origin is a straight radius of the disk.

# %%
directions = torch.tensor([[1.0, 0.0], [-0.5, 0.87], [-0.5, -0.87]])
group = torch.arange(30) % 3
tangent = 1.6 * directions[group] + 0.35 * torch.randn(30, 2)  # fixed "features"
geodesic = lorentz.geodesic0(torch.tensor([0.6, 0.8]), torch.linspace(0, 2.2, 60), k=1.0)
points = lorentz.expmap0(lorentz.lift(tangent), k=1.0)
GROUPS = ["group A", "group B", "group C"]  # the three directions
viz.hyperboloid_and_disk(points, 1.0, labels=group, class_names=GROUPS, curves=[geodesic])

# %% [markdown]
# The same figure as a static image (renders without a browser, e.g. on GitHub):

# %% tags=["thumbnail"]
viz.hyperboloid_and_disk(
    points, 1.0, labels=group, class_names=GROUPS, curves=[geodesic], backend="matplotlib"
)

# %% [markdown]
# ## 4. Distances, and why they explode toward the boundary
#
# The geodesic (shortest-path) distance on the hyperboloid is
#
# $$d_k(x, y) = \sqrt k\,\operatorname{arcosh}\!\left(-\frac{\langle x, y\rangle_{\mathcal L}}{k}\right).$$
#
# Library call: `lorentz.dist(x, y, k=k)`, one distance per row, shape $(\dots)$; all
# pairs: `lorentz.pairwise_dist(x, y, k=k)`, shape $(B, N)$ for inputs of shapes
# $(B, n+1)$ and $(N, n+1)$. ($\operatorname{arcosh}$ is the inverse of $\cosh$.) The library
# evaluates an equivalent form that stays accurate for nearby points, where `arcosh` near 1
# loses digits; for points at a reasonable distance both agree:

# %%
a = lorentz.expmap0(lorentz.lift(torch.randn(100, 2)), k=2.0)
b = lorentz.expmap0(lorentz.lift(torch.randn(100, 2)), k=2.0)
d_scratch = math.sqrt(2.0) * torch.acosh(-lorentz.inner(a, b) / 2.0)
torch.testing.assert_close(d_scratch, lorentz.dist(a, b, k=2.0), rtol=1e-7, atol=1e-7)

# %% [markdown]
# A point at distance $d$ from the origin sits at Euclidean radius
# $\|p\| = \tanh\!\big(d / 2\sqrt k\big)$ in the unit disk (below, $k = 1$): equal steps of
# hyperbolic distance take smaller and smaller steps on the picture, and the same
# Euclidean step of 0.01 on the picture costs far more hyperbolic distance near the rim
# than at the centre (the ratio is printed below):

# %%
for d in (1, 2, 3, 4, 5, 6):
    print(f"hyperbolic distance {d}: disk radius {math.tanh(d / 2):.4f}")


def disk_step(r):
    """Hyperbolic distance between the disk points (r, 0) and (r + 0.01, 0), k = 1."""
    pts = lorentz.from_poincare(torch.tensor([[r, 0.0], [r + 0.01, 0.0]]))
    return lorentz.dist(pts[0], pts[1]).item()


print(f"a step of 0.01 at the centre: {disk_step(0.0):.3f}, at radius 0.98: {disk_step(0.98):.3f}")
print(f"the same step costs {disk_step(0.98) / disk_step(0.0):.0f} times more near the rim")

# %% tags=["claim"]
claims.check(disk_step(0.98) > 10 * disk_step(0.0), "a disk step costs far more near the rim")

# %% [markdown]
# `viz.geodesic_grid` draws circles of hyperbolic radius 1, 2, …, 5 (equally spaced in
# hyperbolic distance), geodesics from the origin (the diameters) and geodesics between
# far-away points (dashed). Geodesics that avoid the origin are circular arcs meeting the
# boundary at right angles: the shortest way between two far points dips toward the
# centre, where distances are cheaper.

# %%
viz.geodesic_grid(1.0)

# %%
viz.geodesic_grid(1.0, backend="matplotlib")

# %% [markdown]
# ### Exercise 2 — circles grow exponentially
# In the plane a circle of radius $r$ has circumference $2\pi r$. Measure the circumference
# of the hyperbolic circle of radius $r = 3$ ($k = 1$): place 2,000 points
# $\exp_o(3\,(\cos t, \sin t))$ around it, for 2,000 evenly spaced angles $t$ in
# $[0, 2\pi)$ (`lorentz.expmap0(lorentz.lift(...))`), and add up `lorentz.dist` between
# consecutive points. A circle is a closed curve: your sum must include the step from the
# last point back to the first. Store the total as a float in `answer`; the check is
# precise to a tenth of one step.

# %%
answer = None  # your code: a float

# %% jupyter={"source_hidden": true} tags=["solution"]
if answer is None:
    t = torch.linspace(0, 2 * math.pi, 2001)  # first and last points coincide: loop closed
    circle = lorentz.expmap0(lorentz.lift(3.0 * torch.stack([torch.cos(t), torch.sin(t)], 1)))
    answer = lorentz.dist(circle[:-1], circle[1:]).sum().item()

# %% tags=["check"]
assert answer is not None, "set answer to the measured circumference"
exercises.check_circumference(answer, r=3.0, n=2000, k=1.0)  # raises with a hint if wrong
exact = 2 * math.pi * math.sinh(3.0)  # the hyperbolic circumference 2π √k sinh(r/√k)
print(
    f"Exercise 2: correct. {answer:.2f} vs 2π sinh(3) = {exact:.2f}; Euclidean 2π·3 = {6 * math.pi:.2f}"
)

# %% [markdown]
# The circumference grows like $e^r$: a tree also has exponentially many nodes at depth
# $r$, and that is the whole reason hierarchies fit in hyperbolic space (section 6).
#
# ## 5. What the curvature does (slider)
#
# The same tangent vectors (think: the same backbone features) are mapped with
# $\exp_o^k$ for different curvature magnitudes $c = 1/k$. Move the slider:
# - the sheet $x_0 = \sqrt{1/c + x_1^2 + x_2^2}$ sharpens into a cone as $c$ grows and
#   flattens as $c \to 0$ (near the origin a gently curved space looks Euclidean);
# - every point keeps its distance $\|v\|$ from the origin, but moves toward the rim of
#   the disk (radius $\tanh(\|v\|\sqrt c / 2)$);
# - distances *between* the groups grow with $c$: more curvature, more room. HiHPQ learns
#   one $c$ per subspace, i.e. per block of the feature vector (notebook 02).
#
# The 3-D view is fixed to the same part of the sheet for every $c$; points that move
# beyond it are still drawn on the disk. In a live notebook the figure is redrawn in place
# when you release the slider (`viz.curvature_figure`, the same call for every `c`).

# %%
curvature_args = dict(labels=group, class_names=GROUPS, geodesic=[0.6, 0.8])
viz.slider_figure(
    lambda c: viz.curvature_figure(tangent, c, **curvature_args),
    c=widgets.FloatLogSlider(
        value=1.0, base=10, min=-1, max=1, step=0.05, description="c = 1/k", continuous_update=False
    ),
)


# %% tags=["claim"]
def between_groups(c):
    """Mean hyperbolic distance between points of different groups at curvature c."""
    pts = lorentz.expmap0(lorentz.lift(tangent), k=1 / c)
    d = lorentz.pairwise_dist(pts, pts, k=1 / c)
    return float(d[group[:, None] != group[None]].mean())


gaps = [between_groups(c) for c in (0.1, 1.0, 10.0)]
claims.check(gaps[0] < gaps[1] < gaps[2], "distances between the groups grow with c", gaps=gaps)

# %% [markdown]
# The same exploration with its slider built into the figure (9 values of $c$ computed in
# advance): it needs no kernel, so it keeps working in an exported HTML page and in the
# book (`make book`).

# %%
viz.curvature_explorer(tangent, np.geomspace(0.1, 10.0, 9), **curvature_args)

# %% [markdown]
# The static twin: $c = 0.25$ and $c = 4$.

# %%
for c in (0.25, 4.0):
    display(viz.curvature_figure(tangent, c, backend="matplotlib", **curvature_args))

# %% [markdown]
# ## 6. Why trees fit: embedding a tree in 2-D
#
# Take a balanced tree, branching 3, depth 4 (1 + 3 + 9 + 27 + 81 = 121 nodes). The *tree
# distance* between two nodes is the number of edges on the path between them. An
# embedding places each node at a point; its **distortion** measures how far embedded
# distances are from tree distances. We allow one global scale $s$ (only the shape
# matters), chosen by least squares; the mean runs over the set $P$ of all pairs of
# distinct nodes:
#
# $$\text{distortion} = \frac{1}{|P|}\sum_{(i,j)\in P}\left|\frac{s\, d_{\text{emb}}(i,j)}{d_{\text{tree}}(i,j)} - 1\right|,
#   \qquad s = \frac{\sum r_{ij}}{\sum r_{ij}^2},\ r_{ij} = \frac{d_{\text{emb}}(i,j)}{d_{\text{tree}}(i,j)} .$$
#
# 0 is perfect. We compare the Euclidean plane and the hyperbolic plane, **both
# 2-dimensional**, with the same recipe.

# %%
BRANCHING, DEPTH = 3, 4
parent = [-1]
frontier = [0]
for _ in range(DEPTH):
    new = []
    for node in frontier:
        for _ in range(BRANCHING):
            parent.append(node)
            new.append(len(parent) - 1)
    frontier = new
parent = np.array(parent)
n_nodes = len(parent)
children = [np.flatnonzero(parent == i).tolist() for i in range(n_nodes)]
edges = coo_matrix((np.ones(n_nodes - 1), (np.arange(1, n_nodes), parent[1:])), (n_nodes, n_nodes))
tree_dist = shortest_path(edges, directed=False)  # (n, n) numbers of edges
iu = np.triu_indices(n_nodes, 1)  # every pair once
print(f"{n_nodes} nodes, {len(iu[0])} pairs, largest tree distance {tree_dist.max():.0f}")


def distortion(d_emb, d_tree):
    """Mean |s r - 1| with r = d_emb / d_tree and the least-squares scale s."""
    r = d_emb / d_tree
    s = r.sum() / (r * r).sum()
    return float(abs(s * r - 1).mean())


# %% [markdown]
# **The recipe (Sarkar, 2011).** Put the root at the origin. For every node, spread its
# children evenly on a circle of radius $\tau$ around it, leaving the slot that points back
# to its parent free. In the plane "around a node" is a translation; in the Poincaré disk
# it is a **Möbius transformation** $m_a(z) = \frac{z - a}{1 - \bar a z}$ (disk points
# written as complex numbers $z = p_1 + i p_2$, and $\bar a$ the complex conjugate of $a$),
# a hyperbolic **isometry** (a map that
# keeps all distances) that moves the point $a$ to the centre. A child at hyperbolic
# distance $\tau$ from the centre sits at disk radius $\tanh(\tau/2)$ ($k = 1$).


# %%
def mobius(z, a):
    """Möbius transformation of the unit disk sending a to 0 (complex numbers)."""
    return (z - a) / (1 - np.conj(a) * z)


def sarkar_embedding(tau, geometry):
    """(n, 2) coordinates of the tree's nodes: 'hyperbolic' (unit disk, k=1) or 'euclidean'."""
    if geometry == "hyperbolic":
        radius, to_node_frame, from_node_frame = (
            math.tanh(tau / 2),
            mobius,
            lambda w, a: mobius(w, -a),
        )
    else:
        radius, to_node_frame, from_node_frame = tau, lambda z, a: z - a, lambda w, a: w + a
    z = np.zeros(n_nodes, dtype=complex)
    for node in range(n_nodes):  # nodes are numbered level by level: parents come first
        kids = children[node]
        if not kids:
            continue
        if parent[node] < 0:
            back, slots, first = 0.0, len(kids), 0
        else:  # direction of the parent as seen from the node
            back, slots, first = np.angle(to_node_frame(z[parent[node]], z[node])), len(kids) + 1, 1
        for j, child in enumerate(kids):
            w = radius * np.exp(1j * (back + 2 * math.pi * (j + first) / slots))
            z[child] = from_node_frame(w, z[node])
    return np.stack([z.real, z.imag], axis=1)


# %% [markdown]
# The Möbius map is an isometry: it does not change hyperbolic distances. Checked with the
# library's distance (disk points go to the hyperboloid with `lorentz.from_poincare`):


# %%
def disk_dist(p, q):
    return lorentz.dist(
        lorentz.from_poincare(torch.as_tensor(p)), lorentz.from_poincare(torch.as_tensor(q))
    )


zz = 0.6 * (np.random.default_rng(0).random((20, 2)) - 0.5)
za, zb, a0 = zz[:10, 0] + 1j * zz[:10, 1], zz[10:, 0] + 1j * zz[10:, 1], 0.3 - 0.4j


def as_xy(z):
    """Complex numbers (n,) -> points (n, 2)."""
    return np.stack([z.real, z.imag], 1)


torch.testing.assert_close(
    disk_dist(as_xy(mobius(za, a0)), as_xy(mobius(zb, a0))), disk_dist(as_xy(za), as_xy(zb))
)

# %%
TAU = 2.0
hyp_xy = sarkar_embedding(TAU, "hyperbolic")
euc_xy = sarkar_embedding(TAU, "euclidean")
hyp_points = lorentz.from_poincare(torch.from_numpy(hyp_xy))
d_hyp = lorentz.pairwise_dist(hyp_points, hyp_points).numpy()[iu]
d_euc = np.linalg.norm(euc_xy[:, None] - euc_xy[None], axis=-1)[iu]
construction = {
    "hyperbolic": distortion(d_hyp, tree_dist[iu]),
    "euclidean": distortion(d_euc, tree_dist[iu]),
}
print("distortion of the construction:", {g: round(v, 3) for g, v in construction.items()})
print("pairs of distinct nodes at the same place in the plane:", int((d_euc < 1e-9).sum()))

# %% [markdown]
# In the plane the recipe fails: grandchildren of different branches land on top of each
# other (circles only grow linearly), while in the disk no two nodes meet.

# %% tags=["claim"]
claims.check(
    int((d_euc < 1e-9).sum()) > 0 and float(d_hyp.min()) > 1e-6,
    "in the plane grandchildren of different branches land on top of each other; in the "
    "disk no two nodes meet",
    overlapping_pairs=int((d_euc < 1e-9).sum()),
)

# %% [markdown]
# Is that just a bad recipe? Give both embeddings to an optimiser for the same number of
# Adam steps, minimising the squared relative error with the same scale trick. The
# hyperbolic points are optimised through their tangent vectors, $x = \exp_o(v)$, and
# measured with `lorentz.pairwise_dist`.

# %%
pairs = torch.from_numpy(np.stack(iu))
d_tree_t = torch.from_numpy(tree_dist[iu])


def embedded_distances(params, geometry):
    if geometry == "hyperbolic":
        pts = lorentz.expmap0(lorentz.lift(params))
        return lorentz.pairwise_dist(pts, pts)[pairs[0], pairs[1]]
    return torch.cdist(params, params)[pairs[0], pairs[1]]


def optimise(start, geometry, steps, lr=0.01):
    params = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([params], lr=lr)
    for _ in range(steps):
        r = embedded_distances(params, geometry) / d_tree_t
        s = (r.sum() / (r * r).sum()).detach()
        loss = ((s * r - 1) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return params.detach()


start_hyp = lorentz.logmap0(hyp_points)[:, 1:]  # tangent vectors of the construction
start_euc = torch.from_numpy(euc_xy) + 1e-3 * torch.randn(n_nodes, 2)  # break exact overlaps
v_opt = optimise(start_hyp, "hyperbolic", OPT_STEPS)
e_opt = optimise(start_euc, "euclidean", OPT_STEPS)
optimised = {
    "hyperbolic": distortion(embedded_distances(v_opt, "hyperbolic").numpy(), tree_dist[iu]),
    "euclidean": distortion(embedded_distances(e_opt, "euclidean").numpy(), tree_dist[iu]),
}
print(f"{'':12s} {'construction':>13s} {'+ ' + str(OPT_STEPS) + ' Adam steps':>18s}")
for g in ("euclidean", "hyperbolic"):
    print(f"{g:12s} {construction[g]:13.3f} {optimised[g]:18.3f}")
assert optimised["hyperbolic"] < optimised["euclidean"]
assert construction["hyperbolic"] < construction["euclidean"]

# %%
gain = optimised["euclidean"] / optimised["hyperbolic"]
claims.check(gain > 1, "the hyperbolic plane keeps the tree's distances better", gain=gain)
claims.say(
    "Same dimension, same number of steps: the hyperbolic plane keeps the tree's distances "
    "**{gain:.1f} times** better (distortion {h:.3f} against {e:.3f}).",
    gain=gain,
    h=optimised["hyperbolic"],
    e=optimised["euclidean"],
)

# %% [markdown]
# How to draw the result? On the Poincaré disk the deep levels crowd against the rim
# (section 4: near the rim a tiny gap on the picture is a large hyperbolic distance), so
# the 81 leaves hide each other. The picture below is drawn through $\log_o$ instead
# (`viz.tree_embeddings(..., radial="distance")`): every node sits at its **true
# hyperbolic distance from the root**, in its true direction, so the depths form evenly
# spaced rings (dotted: each depth's median distance). Left, the optimised hyperbolic
# embedding (edges are geodesics, `viz.geodesic_segment`); right, the optimised
# Euclidean one. Look at how the hyperbolic tree's subtrees fan out without crossing,
# while the Euclidean one has to fold branches over each other.

# %%
hyp_opt_xy = lorentz.to_poincare(lorentz.expmap0(lorentz.lift(v_opt)))
titles = (
    f"hyperbolic plane, drawn through log_o: distortion {optimised['hyperbolic']:.3f}",
    f"Euclidean plane: distortion {optimised['euclidean']:.3f}",
)
viz.tree_embeddings(parent, hyp_opt_xy, e_opt, titles=titles, radial="distance")

# %%
viz.tree_embeddings(
    parent, hyp_opt_xy, e_opt, titles=titles, radial="distance", backend="matplotlib"
)


# %% tags=["claim"]
def crossing_edges(xy):
    """Pairs of tree edges, drawn as straight segments, that cross (sharing no node)."""
    kid, par = np.arange(1, n_nodes), parent[1:]
    a, b = xy[par], xy[kid]  # (E, 2) the two ends of every edge

    def side(p, q, r):  # which side of the line p -> q the point r is on
        return np.sign(
            (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1])
            - (q[..., 1] - p[..., 1]) * (r[..., 0] - p[..., 0])
        )

    A, B, C, D = a[:, None], b[:, None], a[None], b[None]
    cross = (side(A, B, C) != side(A, B, D)) & (side(C, D, A) != side(C, D, B))
    ends = np.stack([par, kid], 1)
    touch = (ends[:, None, :, None] == ends[None, :, None, :]).any((2, 3))
    return int(np.triu(cross & ~touch, 1).sum())


def subtrees_in_sectors(v):
    """Whether, at every depth, each node's descendants occupy their own angular sector of
    the picture drawn through log_o (v: the nodes' tangent vectors)."""
    depth = np.zeros(n_nodes, int)
    for node in range(1, n_nodes):
        depth[node] = depth[parent[node]] + 1
    angle = np.arctan2(v[:, 1], v[:, 0])
    for d in range(1, DEPTH):
        ancestor = np.arange(n_nodes)
        while (depth[ancestor] > d).any():
            ancestor = np.where(depth[ancestor] > d, parent[ancestor], ancestor)
        below = np.flatnonzero(depth >= d)
        owner = ancestor[below[np.argsort(angle[below])]]
        if (owner != np.roll(owner, 1)).sum() != (depth == d).sum():  # one run per owner
            return False
    return True


claims.check(
    subtrees_in_sectors(v_opt.numpy()) and crossing_edges(e_opt.numpy()) > 0,
    "the hyperbolic tree's subtrees fan out without crossing, while the Euclidean one has "
    "to fold branches over each other",
    euclidean_crossings=crossing_edges(e_opt.numpy()),
)

# %% [markdown]
# The same hyperbolic embedding on the Poincaré disk, for comparison: the leaves are
# squeezed against the rim (half of them beyond 0.9 of the radius), yet these are the
# same points, with the same distortion when measured with `lorentz.dist`.

# %%
viz.tree_embeddings(
    parent,
    hyp_opt_xy,
    e_opt,
    titles=(f"the same, on the Poincaré disk: {optimised['hyperbolic']:.3f}", titles[1]),
    backend="matplotlib",
)

# %% tags=["claim"]
leaf_radius = np.linalg.norm(hyp_opt_xy.numpy()[n_nodes - BRANCHING**DEPTH :], axis=1)
claims.check(gain > 2, "the hyperbolic plane keeps the tree's distances several times better")
claims.check(
    np.median(leaf_radius) > 0.9,
    "on the Poincaré disk the leaves are squeezed against the rim, half beyond 0.9 of the radius",
    median_radius=float(np.median(leaf_radius)),
)

# %% [markdown]
# ### Exercise 3 — more room farther out
# Build the hyperbolic construction again with a longer edge, $\tau = 4$, and store its
# distortion (a float, computed exactly as above: `sarkar_embedding`,
# `lorentz.from_poincare`, `lorentz.pairwise_dist`, `distortion`) in `answer`. Before you
# run it: should it be larger or smaller than with $\tau = 2$?

# %%
answer = None  # your code: a float

# %% jupyter={"source_hidden": true} tags=["solution"]
if answer is None:
    pts4 = lorentz.from_poincare(torch.from_numpy(sarkar_embedding(4.0, "hyperbolic")))
    answer = distortion(lorentz.pairwise_dist(pts4, pts4).numpy()[iu], tree_dist[iu])

# %% tags=["check"]
assert answer is not None, "set answer to the distortion with tau = 4"
pts4_check = lorentz.from_poincare(torch.from_numpy(sarkar_embedding(4.0, "hyperbolic")))
expected = distortion(lorentz.pairwise_dist(pts4_check, pts4_check).numpy()[iu], tree_dist[iu])
assert abs(float(answer) - expected) < 1e-6, f"expected {expected:.4f}"
assert expected < construction["hyperbolic"]
print(f"Exercise 3: correct. tau=4 gives {expected:.3f} < {construction['hyperbolic']:.3f} (tau=2)")

# %% [markdown]
# Farther from the origin, space grows faster, so longer edges give each subtree more room
# and the distortion drops toward 0 (Sarkar proves that long enough edges bring it as
# close to perfect as you like; his paper measures distortion as a worst-case ratio, where
# 1 is perfect, hence "distortion $1 + \varepsilon$"; our mean measure then goes to 0).
# In the plane no scale helps: the distortion of the Euclidean construction does not
# depend on $\tau$ at all (checked below: scaling every position scales every distance).

# %% tags=["claim"]
claims.check(
    expected < construction["hyperbolic"],
    "longer edges give each subtree more room and the distortion drops toward 0",
    tau4=expected,
    tau2=construction["hyperbolic"],
)
euc4 = sarkar_embedding(4.0, "euclidean")
d_euc4 = np.linalg.norm(euc4[:, None] - euc4[None], axis=-1)[iu]
claims.check(
    abs(distortion(d_euc4, tree_dist[iu]) - construction["euclidean"]) < 1e-9,
    "the Euclidean construction's distortion does not depend on tau",
)

# %% [markdown]
#
# ## Summary
# - Hyperbolic points live on the sheet $\langle x, x\rangle_{\mathcal L} = -k$
#   (`lorentz.inner`, `lorentz.project`); $c = 1/k$ is the paper's curvature.
# - `lorentz.expmap0` / `lorentz.logmap0` move features between $\mathbb R^n$ and the
#   sheet, keeping distances from the origin; `lorentz.expmap` / `lorentz.logmap` do the
#   same at any point, and `lorentz.transp` carries tangent vectors between points.
# - `lorentz.dist` grows without bound toward the rim of the Poincaré disk
#   (`lorentz.to_poincare`, `viz.poincare_coords`); circles grow like $e^r$.
# - That exponential room is why a tree embeds with low distortion in the hyperbolic plane
#   and not in the Euclidean plane of the same dimension.
#
# Next: **02 · Product quantization**, and the product of hyperboloids HiHPQ quantizes in.
#
# ## Further reading
# - Qiu et al., *HiHPQ: Hierarchical Hyperbolic Product Quantization for Unsupervised
#   Image Retrieval*, AAAI 2024.
# - Nickel & Kiela, *Poincaré Embeddings for Learning Hierarchical Representations*,
#   NeurIPS 2017, and *Learning Continuous Hierarchies in the Lorentz Model of Hyperbolic
#   Geometry*, ICML 2018.
# - Sarkar, *Low Distortion Delaunay Embedding of Trees in Hyperbolic Plane*, Graph
#   Drawing 2011 (the construction of section 6).
# - Law et al., *Lorentzian Distance Learning for Hyperbolic Representations*, ICML 2019
#   (the squared Lorentzian distance and centroid used in notebook 03).
# - geoopt, the Riemannian optimisation library whose `Lorentz` conventions we follow:
#   https://geoopt.readthedocs.io
# - Jégou, Douze & Schmid, *Product Quantization for Nearest Neighbor Search*, TPAMI 2011
#   (notebook 02).
