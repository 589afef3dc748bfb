# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     notebook_metadata_filter: execution
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
#   execution:
#     timeout: 600
# ---

# %% [markdown]
# # 04 · Methods: quantized contrastive learning
#
# HiHPQ learns without labels. Its main training signal is **contrastive**: two randomly
# augmented views of the same image should end up close to each other, and far from the
# other images of the batch. What makes it *quantized* contrastive learning is that the
# loss compares the **soft quantizations** of the two views (notebook 03), not the raw
# features: the codewords, the projection head and the curvatures all learn so that the
# *codes* of two views of one image agree. This notebook shows the views on real CIFAR-10
# images, writes the loss on the product of hyperboloids from scratch, trains it for a
# few epochs on frozen backbone features, and looks at what came out: the loss and
# validation mAP, which codewords are used, and the curvatures learned.
#
# ## What you will learn
# - what an augmented **view** is (the reference's SimCLR-style recipe,
#   `transforms.augment_batch`) and how the CPU path precomputes them once, as backbone
#   features in an **augmentation bank**;
# - the **NT-Xent loss over the product distance** of the hyperboloids, from scratch and
#   as `losses.quantized_contrastive_loss`, and its value for a collapsed batch;
# - how to run `training.train` with the hierarchy losses switched off, with the
#   "load the checkpoint, else train" pattern, and read its loss and validation curves;
# - **codeword usage**: how many of the 256 codewords per subspace are actually used,
#   what a *dead* codeword is and what it costs;
# - the **curvatures** the model learns, and what a larger curvature does to distances.
#
# ## What you need
# - Notebooks 01 (hyperboloid, $c = 1/k$, distances), 02 (product quantization, the
#   product of hyperboloids) and 03 (soft assignment, the Lorentz centroid, `out.soft`).
# - Softmax and cross-entropy; the idea of training with a minibatch optimiser.
# - CIFAR-10: set `HIHPQ_CIFAR10` to a copy (the Makefile exports the development copy
#   when it has one; otherwise torchvision downloads it). The frozen EfficientNet-Lite features are cached under `data/cache`; if they are
#   missing, the first run computes them (how long: the next paragraph). No GPU.
# - Notation: one sheet for the whole series, [docs/notation.md](../docs/notation.md).
#
# ## How long it takes on a laptop CPU
# - Reading and doing the exercises: about 45 minutes.
# - **Full mode** (5,000 training images at 160 px, 8 epochs of 39 steps; its run is shared
#   with 05): 40 s with its saved run loaded (16 s measured 2026-12-01); **training it
#   yourself** instead: 59 s (35 s measured 2026-12-01).
# - **Fast mode (`HIHPQ_FAST=1`)** (the quick subset: 300 training images at 128 px, 20
#   epochs of 2 steps): 10 s with its saved run loaded; **training it yourself** instead: 1
#   min 20 s, this measurement including the first run's features.
# - **First run on a new machine:** before any of this the frozen backbone features are
#   computed and cached: about 7 min for full mode (60,000 images through EfficientNet-Lite2
#   at 160 px 206 s, the augmentation bank of 5,000 images × 8 views 183 s, decoding
#   CIFAR-10 about 12 s, measured by `make demo`'s cold start on 2026-12-02 (2 threads)) and
#   about 1 min for fast mode (decoding CIFAR-10 12 s, 3,600 images at 128 px 25 s, the bank
#   of 300 images × 3 views 5 s, measured by notebook 04's cold start). The notebook prints
#   a FIRST RUN notice when that happens; later runs load the features in seconds.
# - Measured 2026-12-01 and 2026-12-04 on a 2-core CPU (full mode of 04-07 re-measured on
#   2026-12-04 with the machine idle and the default thread count, 2; the rest on 2026-12-01
#   with the machine shared with three other developers and OMP_NUM_THREADS=1, whose
#   full-mode numbers each entry states beside the new ones), kernel start included
#   (`jupyter nbconvert --execute`, one notebook at a time). Generated from
#   `notebooks/timings.yaml` by `python -m benchmarks.notebook_timings`.

# %% [markdown]
# ## Setup
# `runtime.pick(full, fast)` sets every size that fast mode changes. An epoch is one pass
# over the training images in batches of 128: 39 steps on the full training set (5,000
# images), but only 2 steps on the quick subset (300 images), hence more epochs in fast
# mode. Notebook 05 uses the same constants and so **shares this run**: whichever notebook
# runs first trains it, the other one loads it.

# %%
# %matplotlib inline
import math
import warnings

import numpy as np
import torch

from hihpq_lib import data, viz
from hihpq_lib.app import exercises, experiments
from hihpq_lib.app.prepare import prepare
from hihpq_lib.data import transforms
from hihpq_lib.evaluation import claims, metrics
from hihpq_lib.geometry import lorentz, manifolds
from hihpq_lib.learning import config, diagnostics, losses, training
from hihpq_lib.utils import runtime

warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")  # harmless
runtime.seed_everything(0)
QUICK = runtime.pick(False, True)  # the quick CIFAR-10 subset (demo --quick) in fast mode
EPOCHS = runtime.pick(8, 20)  # 8 x 39 = 312 steps (full) or 20 x 2 = 40 steps (fast)
N_VAL_PER_CLASS = runtime.pick(100, 30)  # validation queries per class (from the database)
print(f"fast mode: {runtime.fast_mode()}, quick subset: {QUICK}, epochs: {EPOCHS}")

# %% [markdown]
# ## 1. Two views of the same image
#
# The configuration is the demo's CPU profile (`config.demo_config`): CIFAR-10 protocol II
# (in full mode 5,000 training images, 10,000 test queries, a 50,000-image database; fast
# mode's quick subset keeps 300 / 600 / 3,000 of them: the cell below prints which), 32-bit codes
# ($M = 4$ subspaces of dimension $d = 16$, $K = 256$ codewords each), the frozen
# backbone `cfg.backbone` at `cfg.resolution` px (EfficientNet-Lite2 at 160 px in full mode,
# as in `make demo`; EfficientNet-Lite0 at 128 px in fast mode's quick subset).
#
# A few words used from here on. **Protocol II** is one of the paper's two ways of
# splitting CIFAR-10's 60,000 images (1,000 queries per class, the other 5,000 per class
# are the database, and 500 database images per class train; notebook 06 has the
# details). The **backbone** is a pretrained image network (an EfficientNet-Lite, trained
# on ImageNet) that turns an image into a feature vector of $F$ numbers; **frozen** means
# its weights never change, so its features are computed once and cached. The model we
# train sits on top: a small **projection head** (a 2-layer network, applied by
# `model.project`) maps the $F$ backbone numbers to the $M d$ numbers that the quantizer
# of notebooks 02–03 maps onto the product of hyperboloids.
#
# `config.tutorial_config` shortens the CPU profile to `EPOCHS` epochs and, here,
# switches the two hierarchy losses of notebook 05 off (`proto_weight=0,
# instance_weight=0`). `prepare` loads the images, the splits and the cached features.
#
# Model selection uses **validation** queries drawn from the database, never the test
# queries. The quick subset keeps only one validation query per class, too few to
# compare models, so `experiments.training_data` draws `N_VAL_PER_CLASS` per class from the
# database instead (the rest of the database is the validation database).

# %%
cfg = config.tutorial_config(QUICK, EPOCHS, hierarchy=False)
prep = prepare(cfg)  # progress bars only if features must be computed
train_data = experiments.training_data(prep, N_VAL_PER_CLASS)
names = prep.dataset.class_names
print(
    f"training images {train_data.n_train}, test queries {len(prep.splits.query)}, "
    f"database {len(prep.splits.database)}"
)
print(
    f"validation: {len(train_data.val_query.feats)} queries against "
    f"{len(train_data.val_database.feats)} database images"
)
print(f"M = {cfg.M} subspaces of d = {cfg.sub_dim}, K = {cfg.K}, tau = {cfg.tau}")
print(f"proto_weight = {cfg.proto_weight}, instance_weight = {cfg.instance_weight}")

# %% [markdown]
# A **view** is the image after a random crop (50–100% of its area, resized to the
# backbone's input size, `cfg.resolution` px),
# a horizontal flip (half the time), colour jitter (70%), grey scale (20%) and a blur
# (50%): the recipe of the reference implementation, `transforms.augment_batch`. A good
# representation should not care about any of these, so the two views of one image make a
# **positive pair**; every other image of the batch is a **negative**.
#
# Training on a CPU cannot afford to push fresh views through the backbone at every step,
# so `prepare` did it once: the **augmentation bank** `prep.bank` holds the backbone
# features of `cfg.n_views` views of every training image, shape $(N, V, F)$ in float16
# ($N$ training images, $V$ views, $F$ backbone features).
# View $v$ of training image $i$ is `augment_batch` with the seed
# `derive_seed(cfg.seed, v)` and index $i$, so we can redraw exactly the views the bank
# holds. For display we skip the backbone's colour normalisation (`mean=0, std=1`). In the
# grid each row is one image: the original, then its views 0 and 1; they differ in crop,
# zoom, flip and colour, yet show the same object, and that sameness is what the loss
# will ask the codes to capture:

# %%
train_labels = np.asarray(prep.dataset.labels)[prep.splits.train]
show = [int(np.flatnonzero(train_labels == c)[0]) for c in (0, 3, 7, 9)]  # positions in train
images = data.read_images(prep.dataset, prep.splits.train[show], size=None)  # (4, 32, 32, 3)
views = [
    transforms.augment_batch(
        images,
        cfg.resolution,
        transforms.derive_seed(cfg.seed, v),
        indices=show,
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )
    for v in (0, 1)
]
print("bank:", tuple(prep.bank.shape), prep.bank.dtype, " one view:", tuple(views[0].shape))
viz.views_grid(
    images,
    views,
    row_titles=[names[c] for c in train_labels[show]],
    view_titles=["bank view 0", "bank view 1"],
    title=f"CIFAR-10 images (32 px) and two augmented views ({cfg.resolution} px)",
)

# %% [markdown]
# Each training step picks, for every image of the batch, two *different* views from the
# bank (`hihpq_lib.learning.views.BankViews`). With only `cfg.n_views` views per image (8 in the full
# profile, 3 in the quick one) the model sees fewer distinct pairs than with fresh
# augmentation at every step, as the paper does on a GPU; that is the price of the CPU
# path.
#
# ## 2. The quantized contrastive loss
#
# Take a batch of $B$ images and two views of each. The model maps every view to a point
# of the product of hyperboloids $\mathcal P = \mathbb H^{d}_{k_1} \times \dots \times
# \mathbb H^{d}_{k_M}$ (notebook 02) and soft-quantizes it (notebook 03): that gives $2B$ points
# $z_1, \dots, z_{2B}$, where $z_i$ and $z_{i+B}$ come from the same image. The
# **positive** of $z_i$, written $z_{i^+}$, is the other view of its image. Distances add
# up over the subspaces, each with its own curvature:
#
# $$D(a, b) = \sum_{m=1}^{M} d_{k_m}(a_m, b_m), \qquad s(a, b) = -\frac{D(a, b)}{\tau}$$
#
# (library: `losses.product_distance(space, a, b)`, all pairs: $(B, M, d+1)$ and
# $(N, M, d+1)$ points give a $(B, N)$ matrix). The similarity $s$ is a
# negative distance divided by the temperature $\tau = 0.2$: here, as in SimCLR, a
# *smaller* $\tau$ is sharper (the opposite of the codebook softmax temperature $T$ of
# notebook 03, which multiplies). The loss is the cross-entropy of finding the positive
# among the $2B - 1$ other points (**NT-Xent**, *normalised temperature-scaled
# cross-entropy*):
#
# $$\mathcal L_{cl} = -\frac{1}{2B}\sum_{i=1}^{2B}
#   \log\frac{\exp s(z_i, z_{i^+})}{\sum_{j \ne i} \exp s(z_i, z_j)} .$$
#
# Library call: `losses.quantized_contrastive_loss(z1, z2, space, tau=cfg.tau)`, with
# `z1`, `z2` the $(B, M, d+1)$ soft quantizations of the two views; it returns a scalar.
# Before training, on a tiny batch of $B = 4$ images, with the model exactly as training
# will start it (`diagnostics.initial_model`). Calling the model on backbone features
# $(B, F)$ runs the head and then the quantizer, and returns notebook 03's
# `QuantizerOutput`; `.soft` is its soft quantization:

# %%
start = diagnostics.initial_model(cfg, train_data)
space = start.space
x1, x2 = prep.bank[show, 0].float(), prep.bank[show, 1].float()  # (4, F) backbone features
with torch.no_grad():
    z1, z2 = start(x1).soft, start(x2).soft  # (4, M, d+1) soft quantizations
print(space, " z1:", tuple(z1.shape))
print("library loss:", losses.quantized_contrastive_loss(z1, z2, space, tau=cfg.tau).item())

# %% [markdown]
# From scratch, one term at a time (a double Python loop: fine for 8 points; the library
# computes all pairs at once):


# %%
def nt_xent_from_scratch(z1, z2, k, tau):
    """NT-Xent over the product distance; k: (M,) curvature parameters k_m = 1/c_m."""
    z = torch.cat([z1, z2])  # (2B, M, d+1): rows i and i + B are views of image i
    n, B = len(z), len(z1)
    terms = []
    for i in range(n):
        sims = {}
        for j in range(n):
            if j != i:
                D = sum(lorentz.dist(z[i, m], z[j, m], k=k[m]) for m in range(z.shape[1]))
                sims[j] = -D / tau
        positive = (i + B) % n
        log_denominator = torch.logsumexp(torch.stack(list(sims.values())), dim=0)
        terms.append(-(sims[positive] - log_denominator))
    return torch.stack(terms).mean()


with torch.no_grad():
    scratch = nt_xent_from_scratch(z1, z2, space.k, cfg.tau)
print("from scratch:", scratch.item())

# %%
with torch.no_grad():
    torch.testing.assert_close(scratch, losses.quantized_contrastive_loss(z1, z2, space, cfg.tau))

# %% [markdown]
# ### Exercise 1 — the loss of a collapsed batch
# The easiest way to make two views agree is to map *every* image to the same point. What
# is $\mathcal L_{cl}$ then, for a batch of $B = 4$ images? Give the exact value as a float
# in `answer` (work it out from the formula: what are all the similarities?). The check
# evaluates the library on such a batch.

# %%
answer = None  # your code: a float

# %% jupyter={"source_hidden": true} tags=["solution"]
if answer is None:
    answer = math.log(2 * 4 - 1)  # every s = 0: the positive is 1 of 2B - 1 equal choices

# %% tags=["check"]
assert answer is not None, "set answer to the loss of a batch whose 2B points coincide"
same = z1[:1].expand(4, -1, -1)  # 4 copies of one point, for both views
collapsed = losses.quantized_contrastive_loss(same, same, space, cfg.tau).item()
assert math.isfinite(float(answer)), "answer must be a finite number"
assert abs(float(answer) - collapsed) < 1e-4, f"the library gives {collapsed:.4f}"
print(f"Exercise 1: correct. A collapsed batch costs log(2B - 1) = {collapsed:.4f}")

# %% [markdown]
# Collapse does not pay: the loss stays at $\log(2B - 1)$, the value of guessing. With the
# training batch of $B = 128$ that is $\log 255 \approx 5.54$; the loss only goes down
# when the positive is *closer* than the negatives. This is the job of the denominator,
# and why contrastive learning needs negatives.
#
# ## 3. A short training run: load the checkpoint, else train
#
# `training.train(cfg, data, run, resume=True)` trains with Riemannian SGD (geoopt's
# `RiemannianSGD`: SGD with momentum whose steps keep parameters that live on a manifold
# on it; here every parameter, codebooks included since they are stored as tangent
# vectors, is an ordinary tensor, so it acts as plain SGD). The codebooks, the projection
# head and the curvatures all learn, with a linear warm-up and a cosine decay of the
# learning rate. After every epoch it computes mAP@1000 (notebook 02's mAP@K with a
# cut-off of `cfg.topk` = 1000 results) on the
# **validation** queries (drawn from the database; never the test queries) and writes
# `checkpoint.pt`, `best.pt` (the best validation epoch) and `metrics.jsonl` to `run`.
# With `resume=True` a finished checkpoint is simply loaded, so re-running this cell costs
# seconds (while it trains, it prints one line per epoch; an interrupted run continues
# where it stopped). The folder name holds a digest of the configuration
# (`experiments.experiment_folder`): change a setting and you get a fresh run instead of
# an error.

# %%
run = experiments.experiment_folder("contrastive", cfg, N_VAL_PER_CLASS)
found = (run / "checkpoint.pt").is_file()
print(("loading" if found else "training, then saving to"), run)
result = training.train(cfg, train_data, run, resume=True)
history = result["history"]
trained = result["model"]  # the model after the last epoch
print(
    f"{len(history)} epochs; best validation mAP@{cfg.topk} {result['best_val_map']:.3f} "
    f"(epoch {result['best_epoch']}), last {result['final_val_map']:.3f}"
)

# %% [markdown]
# The loss per epoch (averaged over its steps), with the collapse level $\log(2B-1)$ for
# reference, and the validation mAP:

# %%
epochs = [h["epoch"] for h in history]
loss_curve = [h["contrastive"] for h in history]
collapse = [math.log(2 * cfg.batch_size - 1)] * len(epochs)
loss_args = dict(
    xlabel="epoch",
    ylabel="contrastive loss",
    title="Training loss (contrastive only)",
    ylim=None,
    integer_x=True,
)
viz.line_plot(epochs, [loss_curve, collapse], ["L_cl", "log(2B - 1): collapse"], **loss_args)

# %% tags=["thumbnail"]
viz.line_plot(
    epochs,
    [loss_curve, collapse],
    ["L_cl", "log(2B - 1): collapse"],
    backend="matplotlib",
    **loss_args,
)

# %%
val_curve = [h["val_map"] for h in history]
val_args = dict(
    xlabel="epoch",
    ylabel=f"mAP@{cfg.topk}",
    title="Validation mAP (32-bit codes)",
    ylim=None,
    integer_x=True,
)
viz.line_plot(epochs, val_curve, "validation queries", **val_args)

# %%
viz.line_plot(epochs, val_curve, "validation queries", backend="matplotlib", **val_args)

# %%
demo = config.demo_config(False)
lr_curve = [h["lr"] for h in history]
claims.check(
    lr_curve[-1] < 0.05 * max(lr_curve),
    "the learning rate decays to almost zero at the end",
    lr_peak=max(lr_curve),
    lr_last=lr_curve[-1],
)
claims.say(
    "No label was used for training; the labels only score the retrieval. The loss went "
    "from {l0:.2f} to **{l1:.2f}**, {below} the collapse level {lc:.2f}, and the "
    "validation mAP from {v0:.3f} to {v1:.3f} (best {vb:.3f} at epoch {eb}); the learning "
    "rate decays from its peak {lr_max:.3g} to {lr_end:.2g} at the last step. The demo (`make "
    "demo`, notebook 06) trains HiHPQ on the full CIFAR-10 profile ({de} epochs, "
    "`{bb}` at {res} px) with the hierarchy losses of notebook 05 switched on "
    "(`proto_weight` {pw:g}, `instance_weight` {iw:g}); notebook 05 adds them to this run "
    "and compares.",
    l0=loss_curve[0],
    l1=loss_curve[-1],
    below=claims.direction(loss_curve[-1], collapse[0], up="above", down="below", same="at"),
    lc=collapse[0],
    v0=val_curve[0],
    v1=val_curve[-1],
    vb=result["best_val_map"],
    eb=result["best_epoch"],
    lr_max=max(lr_curve),
    lr_end=lr_curve[-1],
    de=demo.epochs,
    bb=demo.backbone,
    res=demo.resolution,
    pw=demo.proto_weight,
    iw=demo.instance_weight,
)

# %% tags=["claim"]
claims.check(loss_curve[-1] < collapse[0], "the loss ends below the collapse level")
claims.check(result["best_val_map"] > val_curve[0], "training raised the validation mAP")

# %% [markdown]
#
# ## 4. Codeword usage and dead codewords
#
# Each subspace has $K = 256$ codewords, so a code has $\log_2 256 = 8$ bits per subspace
# — *if* all codewords are used. `model.quantizer.codeword_usage(h)` counts how many
# database images pick each codeword (their hard code, notebook 03), for head outputs
# `h = model.project(features)`; shape $(M, K)$. A codeword that no image picks is
# **dead**: it wastes code space. A usage-weighted measure is the **perplexity**
# $\exp H$, with $H = -\sum_j p_j \log p_j$ and $p_j$ the fraction of images on codeword
# $j$: the number of equally used codewords that would give the same entropy, and
# $\log_2 \exp H$ the bits a subspace really carries.

# %%
database = prep.split("database")


def usage_table(net, name):
    with torch.no_grad():
        usage = net.quantizer.codeword_usage(net.project(database.feats))  # (M, K)
    p = usage.double() / usage.sum(1, keepdim=True)
    entropy = -(p * p.clamp_min(1e-300).log()).sum(1)
    rows = [
        {
            "model": name,
            "subspace": m,
            "used": int((usage[m] > 0).sum()),
            "dead": int((usage[m] == 0).sum()),
            "perplexity": float(entropy[m].exp()),
            "bits": float(entropy[m] / math.log(2)),
        }
        for m in range(net.quantizer.M)
    ]
    return usage, rows


usage_start, rows_start = usage_table(start, "before training")
usage_trained, rows_trained = usage_table(trained, "after training")
print(f"{len(database.feats)} database images, {cfg.K} codewords per subspace")
print(metrics.format_table(rows_start + rows_trained, floatfmt=".1f"))

# %% [markdown]
# The same in a picture, for subspace 0: sort the codewords from the most to the least
# used and plot the share of the database held by the $r$ most used ones. Even use is the
# straight diagonal; a curve that reaches 100% early means that a few codewords take most
# images and the rest are rare or dead (where it goes flat).

# %%
rank = np.arange(1, cfg.K + 1)


def cumulative_share(counts):
    ordered = np.sort(counts.numpy())[::-1]
    return np.cumsum(ordered) / ordered.sum()


usage_curves = [cumulative_share(usage_start[0]), cumulative_share(usage_trained[0]), rank / cfg.K]
usage_names = ["before training", "after training", "even use"]
usage_args = dict(
    xlabel="number of most-used codewords r",
    ylabel="share of the database images",
    title="Codeword usage, subspace 0",
)
viz.line_plot(rank, usage_curves, usage_names, **usage_args)

# %%
viz.line_plot(rank, usage_curves, usage_names, backend="matplotlib", **usage_args)

# %% tags=["claim"]
dead_start = sum(r["dead"] for r in rows_start)
dead_trained = sum(r["dead"] for r in rows_trained)
claims.check(dead_trained < dead_start, "training revives dead codewords", before=dead_start)
# Where do the missing bits go? Dead codewords cap a subspace at log2(K - dead) bits;
# below that cap, the loss is uneven use of the codewords that are alive.
cap = [math.log2(cfg.K - r["dead"]) for r in rows_trained]
lost_dead = [math.log2(cfg.K) - c for c in cap]
lost_uneven = [c - r["bits"] for c, r in zip(cap, rows_trained)]
cause = (
    "uneven use of the codewords that are alive, not the dead ones"
    if all(u > d for u, d in zip(lost_uneven, lost_dead))
    else "the dead codewords, not uneven use"
    if all(d > u for u, d in zip(lost_uneven, lost_dead))
    else "partly the dead codewords, partly uneven use (it depends on the subspace)"
)
claims.say(
    "After training {d_lo}–{d_hi} codewords per subspace are still dead ({d0} in all before "
    "training, {d1} after). Dead codewords alone would cap a subspace at "
    "$\\log_2(K - \\text{{dead}})$ = {c_lo:.2f}–{c_hi:.2f} bits, yet the subspaces carry "
    "{b_lo:.1f}–{b_hi:.1f} bits (perplexity {p_lo:.0f}–{p_hi:.0f} of {K}): most of the "
    "shortfall from {full:.0f} bits is **{cause}**.",
    d_lo=min(r["dead"] for r in rows_trained),
    d_hi=max(r["dead"] for r in rows_trained),
    d0=dead_start,
    d1=dead_trained,
    c_lo=min(cap),
    c_hi=max(cap),
    b_lo=min(r["bits"] for r in rows_trained),
    b_hi=max(r["bits"] for r in rows_trained),
    p_lo=min(r["perplexity"] for r in rows_trained),
    p_hi=max(r["perplexity"] for r in rows_trained),
    K=cfg.K,
    full=math.log2(cfg.K),
    cause=cause,
)

# %% [markdown]
# Why do dead codewords appear? The codebooks start as random unit-length tangent
# vectors (`codebook_init="uniform"`, as in the reference), while the features lie in a
# ball of radius `clip_r` = 1.5 in every subspace (the clip keeps them there; a later cell
# prints how many sit on its surface), in directions the random
# codewords do not know about. A codeword that is nobody's nearest gets attention weights
# near 0 from every point (the softmax of notebook 03), hence almost no gradient, and can
# stay dead. Training revives many of them: the contrastive loss wants different images
# to get different codes, and spreading images over more codewords is how the codes tell
# them apart. The sentence above splits the missing bits (the "bits" column; 8 is the
# maximum) between dead codewords and uneven use. Remedies used in practice against
# dead codewords: initialise the codewords from data
# (`codebook_init="data"`, `quantizer.init_from_features`), or re-seed dead codewords
# during training.
#
# ### Exercise 2 — initialise the codewords from data
# Take a copy of the untrained model (`import copy; net = copy.deepcopy(start)`),
# initialise its codebooks from the training images (`train_data.train`, the $(N, F)$
# backbone features of the un-augmented training images) with
# `net.quantizer.init_from_features(net.project(train_data.train), generator)` (use
# `torch.Generator().manual_seed(0)`; call it inside `torch.no_grad()`). Then measure how
# evenly subspace 0 uses its codewords on the database: the **share of the database
# images held by the 26 most used codewords** (about 10% of $K$), i.e. the height of the
# usage curve above at $r = 26$ for the data-initialised model. Store it as a float in
# `answer`. (Before you compute: with even use it would be $26/256 \approx 0.10$; the
# random start is the blue curve above.)

# %%
answer = None  # your code: a float in [0, 1]

# %% jupyter={"source_hidden": true} tags=["solution"]
if answer is None:
    import copy

    net = copy.deepcopy(start)
    with torch.no_grad():
        net.quantizer.init_from_features(
            net.project(train_data.train), torch.Generator().manual_seed(0)
        )
        counts = net.quantizer.codeword_usage(net.project(database.feats))[0]
    answer = float(cumulative_share(counts)[26 - 1])

# %% tags=["check"]
assert answer is not None, "set answer to the share of the 26 most used codewords"
import copy

reference = copy.deepcopy(start)
with torch.no_grad():
    reference.quantizer.init_from_features(
        reference.project(train_data.train), torch.Generator().manual_seed(0)
    )
    ref_usage = reference.quantizer.codeword_usage(reference.project(database.feats))
share = exercises.check_top_share(answer, ref_usage[0].numpy(), 26, counts_before=usage_start[0])
dead_data = (ref_usage == 0).sum(1).tolist()
print(
    f"Exercise 2: correct. Top-26 share with data init {share:.3f}; random start "
    f"{exercises.top_share(usage_start[0], 26):.3f}; trained {exercises.top_share(usage_trained[0], 26):.3f}; "
    f"even use {26 / cfg.K:.3f}. Dead codewords per subspace: data init {dead_data}, "
    f"random init {[row['dead'] for row in rows_start]}"
)

# %% [markdown]
# Every codeword now starts *on* a training image, so each is the nearest codeword of at
# least that image, and on the database far fewer are dead (the printout: the counts per
# subspace, data init first). The
# contrastive training of section 3 fixes much of the random start by itself, but before
# any training the data initialisation already spreads use more evenly than training did.

# %% tags=["claim"]
claims.check(
    sum(dead_data) < dead_start and share < exercises.top_share(usage_start[0], 26),
    "data initialisation leaves fewer dead codewords and spreads use more evenly",
    dead_data=dead_data,
)
claims.check(
    2 * sum(dead_data) < dead_start,
    "on the database far fewer are dead: initialising from data avoids most dead codewords",
    dead_data=dead_data,
    dead_random=dead_start,
)
claims.check(
    share < exercises.top_share(usage_trained[0], 26),
    "before any training the data initialisation already spreads use more evenly than training did",
    data_init=share,
    trained=exercises.top_share(usage_trained[0], 26),
)

# %% [markdown]
# ## 5. The curvatures the model learned
#
# Each subspace has its own learnable curvature magnitude $c_m = 1/k_m$
# (`model.space.curvature`, initialised at `cfg.curvature` = 1 and clamped to
# $[0.01, 10]$ after each step). The training history records them after every epoch;
# epoch 0 is where they started, read from the untrained model `start`:

# %%
# (epochs + 1, M): epoch 0, the start cfg.curvature, then the value after each epoch
curv_epochs, curv = viz.history_series(history, "curvature", initial=start.space.summary())
curv_names = [f"subspace {m}" for m in range(cfg.M)]
curv_args = dict(
    xlabel="epoch",
    ylabel="curvature c = 1/k",
    title="Learned curvatures (epoch 0: the start)",
    ylim=None,
    integer_x=True,
)
print("final curvatures:", [round(c, 3) for c in trained.space.curvature.tolist()])
viz.line_plot(curv_epochs, list(curv.T), curv_names, **curv_args)

# %%
viz.line_plot(curv_epochs, list(curv.T), curv_names, backend="matplotlib", **curv_args)

# %%
c_final = trained.space.curvature.detach()
spread = float((c_final.max() - c_final.min()) / c_final.mean())
with torch.no_grad():
    h_db = trained.project(database.feats).view(-1, cfg.M, cfg.sub_dim)
clipped = (h_db.norm(dim=-1) >= cfg.clip_r).double().mean(0)  # (M,) share at the clip radius
claims.say(
    "The curvatures moved from {c0:g} to {lo:.3f}–{hi:.3f}: **{direction}**, and they "
    "stayed within **{spread:.1%}** of each other. {clip:.0%} of the database's head "
    "outputs (per subspace: {per}) are longer than `clip_r` = {r}, so they are clipped "
    "onto the sphere of radius {r}.",
    c0=cfg.curvature,
    lo=float(c_final.min()),
    hi=float(c_final.max()),
    direction=claims.direction(float(c_final.mean()), cfg.curvature, up="up", down="down"),
    spread=spread,
    clip=float(clipped.mean()),
    per=", ".join(f"{v:.0%}" for v in clipped.tolist()),
    r=cfg.clip_r,
)

# %% [markdown]
# **Why are the learned curvatures nearly equal?** "Each subspace chooses its own
# curvature" is what the parameterisation allows, not what this training produces. Three
# things make the subspaces interchangeable: they all start at the same $c = 1$; the
# loss adds their distances with equal weight, and the head's random initialisation
# treats every block of its output alike; and, measured above, nearly every point is
# clipped to the same tangent norm `clip_r`, so every subspace sees the same radial
# distribution and only the directions differ. The gradient on each $c_m$ then has
# about the same size and sign, and the curvatures move together (checked below). The
# paper's code has the same symmetric setup, and notebook 06's longer run shows the same
# thing. A subspace would need its own reason, for instance data of a different radial
# spread, to choose a different curvature.

# %% tags=["claim"]
moved = np.sign(curv[-1] - cfg.curvature)
claims.check(spread < 0.1, "the learned curvatures are nearly equal", spread=spread)
claims.check(bool((moved == moved[0]).all()), "the curvatures move together", final=curv[-1])
claims.check(float(clipped.min()) > 0.5, "most points are clipped to clip_r", clipped=clipped)

# %% [markdown]
# What does the curvature change? Every feature is mapped with $\exp_o$ after clipping its
# tangent norm to `clip_r`, and $\exp_o$ keeps distances *from the origin* (notebook 01):
# each point stays within distance 1.5 of the origin whatever $c$ is. But distances
# *between* points at the same radius grow with $c$ (notebook 01's slider): more
# curvature, more room between directions, so the similarities $s = -D/\tau$ spread out
# and the positive can stand out from the negatives; less curvature, less room. Exercise
# 3 measures which way the trained model went.
#
# ### Exercise 3 — how much room did the curvature add?
# Map the head outputs of the first 300 database images,
# `h = trained.project(database.feats[:300])` reshaped to $(300, M, d)$, onto two product
# spaces: `trained.space` (the learned curvatures) and
# `manifolds.ProductLorentz(cfg.M, cfg.sub_dim, curvature=1.0, clip_r=cfg.clip_r)` (all
# curvatures 1), each with `space.embed(h)`. In each space compute the **mean product
# distance over all pairs of distinct images** (`losses.product_distance` gives the
# $(300, 300)$ matrix; an image and itself is not a pair). Store the two means as a
# tuple `(mean_learned, mean_flat)` in `answer`; the check prints their ratio. Use
# `torch.no_grad()`.

# %%
answer = None  # your code: a tuple of two floats

# %% jupyter={"source_hidden": true} tags=["solution"]
if answer is None:
    with torch.no_grad():
        h = trained.project(database.feats[:300]).view(300, cfg.M, cfg.sub_dim)
        unit = manifolds.ProductLorentz(cfg.M, cfg.sub_dim, curvature=1.0, clip_r=cfg.clip_r)
        mean_dist = []
        for sp in (trained.space, unit):
            p = sp.embed(h)
            D = losses.product_distance(sp, p, p)
            mean_dist.append(float(D.sum() / (300 * 299)))  # the diagonal is 0
    answer = tuple(mean_dist)

# %% tags=["check"]
assert answer is not None, "set answer = (mean distance learned, mean distance with c = 1)"
with torch.no_grad():
    h_check = trained.project(database.feats[:300]).view(300, cfg.M, cfg.sub_dim)
    flat = manifolds.ProductLorentz(cfg.M, cfg.sub_dim, curvature=1.0, clip_r=cfg.clip_r)
    pair_d = []
    for sp in (trained.space, flat):
        pts = sp.embed(h_check)
        pair_d.append(
            sum(lorentz.pairwise_dist(pts[:, m], pts[:, m], k=sp.k[m]) for m in range(cfg.M))
        )
mean_learned, mean_flat = exercises.check_mean_pair_distances(answer, *pair_d)
ratio = mean_learned / mean_flat
print(f"Exercise 3: correct. With the learned curvatures pairs are {ratio:.2f} x farther apart")

# %% tags=["claim"]
claims.check(
    (ratio > 1) == (float(c_final.mean()) > 1),
    "more curvature than 1 spreads the points apart, less brings them together",
    ratio=ratio,
)

# %% [markdown]
# ## Summary
# - A view is a random crop / flip / colour change of an image
#   (`transforms.augment_batch`); the CPU path stores the backbone features of a few
#   views per training image in an augmentation bank (`prep.bank`).
# - The quantized contrastive loss is NT-Xent over the product distance
#   $D = \sum_m d_{k_m}$ between the **soft quantizations** of two views
#   (`losses.quantized_contrastive_loss`); a collapsed batch costs $\log(2B-1)$.
# - `training.train(cfg, data, run, resume=True)` trains, or loads a finished run;
#   validation mAP is measured on validation queries only.
# - Codeword usage (`quantizer.codeword_usage`) shows dead codewords; training revives
#   many, initialising from data avoids most or all of them (the printout of section 4).
# - The curvatures are learned per subspace, but here they move together (same start,
#   symmetric loss, points clipped to the same radius); a larger curvature spreads
#   points apart.
#
# Next: **05 · Hierarchical semantics**, the pseudo hierarchy built on these features and
# the two losses that use it.
#
# ## Further reading
# - Qiu et al., *HiHPQ: Hierarchical Hyperbolic Product Quantization for Unsupervised
#   Image Retrieval*, AAAI 2024 (the quantized contrastive loss on the product of
#   hyperboloids); the reference code is `zexuanqiu/HiHPQ` on GitHub.
# - Chen, Kornblith, Norouzi & Hinton, *A Simple Framework for Contrastive Learning of
#   Visual Representations* (SimCLR), ICML 2020: NT-Xent and the augmentation recipe.
# - Oord, Li & Vinyals, *Representation Learning with Contrastive Predictive Coding*,
#   arXiv 2018 (the InfoNCE loss).
# - Jang & Cho, *Self-supervised Product Quantization for Deep Unsupervised Image
#   Retrieval* (SPQ), ICCV 2021, and Wang et al., *Contrastive Quantization with Code
#   Memory for Unsupervised Image Retrieval* (MeCoQ), AAAI 2022: contrastive learning of
#   Euclidean product quantizers.
# - Łańcucki et al., *Robust Training of Vector Quantized Bottleneck Models*, IJCNN 2020
#   (dead codewords and re-initialising them).
# - Bécigneul & Ganea, *Riemannian Adaptive Optimization Methods*, ICLR 2019, and geoopt's
#   Riemannian optimisers: https://geoopt.readthedocs.io
