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
# # 02 · Foundations: product quantization
#
# An image-retrieval system stores one vector per image and, for a query, returns the
# database images with the nearest vectors. With millions of images the float vectors no
# longer fit in memory and comparing against all of them is slow. **Product quantization**
# (PQ, Jégou et al. 2011) stores each vector as a few bytes and compares a query against
# those bytes with table lookups. HiHPQ is a PQ method whose subspaces are hyperbolic;
# this notebook builds classical PQ first, then the product of hyperboloids it runs in.
#
# ## What you will learn
# - PQ in four steps (split, k-means per subspace, encode, decode), written from scratch
#   in a few lines and checked against **faiss** (`IndexPQ`) and the library's `PQIndex`;
# - the code length $M \log_2 K$ bits and the memory per image ($M$ bytes for $K = 256$);
# - **asymmetric distance computation** (ADC) with lookup tables: a naive loop, the
#   vectorised version, and why the two agree;
# - retrieval quality of PQ against exact float search (mAP@100, precision@k);
# - the **product of hyperboloids** with one learnable curvature per subspace
#   (`manifolds.ProductLorentz`) and its distance.
#
# ## What you need
# - NumPy, k-means (what it does, not how), and notebook 01 for the last section (the
#   hyperboloid, $k$ vs. $c = 1/k$, `lorentz.dist`).
# - The project's environment (faiss-cpu, scikit-learn). The data are scikit-learn's
#   8×8 handwritten digits, bundled with scikit-learn: no download.
# - Notation: one sheet for the whole series, [docs/notation.md](../docs/notation.md).
#
# ## How long it takes on a laptop CPU
# - Reading and doing the exercises: about 45 minutes.
# - **Full mode** (4 k-means initialisations per subspace): 8 s.
# - **Fast mode (`HIHPQ_FAST=1`)** (1 initialisation): 8 s.
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

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from hihpq_lib import viz
from hihpq_lib.evaluation import baselines, claims, metrics
from hihpq_lib.geometry import lorentz, manifolds
from hihpq_lib.learning import losses
from hihpq_lib.quantization import quantizer
from hihpq_lib.quantization.index import PQIndex
from hihpq_lib.utils import runtime

runtime.seed_everything(0)
baselines.set_num_threads(1)  # faiss: one thread (shared machines, reproducible timings)
N_INIT = runtime.pick(4, 1)  # k-means restarts per subspace
TOPK = 100  # mAP@100
print(f"fast mode: {runtime.fast_mode()}, k-means restarts: {N_INIT}")

# %% [markdown]
# ## 1. The data: 1,797 digits as 64-dimensional vectors
#
# Each image is 8×8 grey pixels, flattened to a vector of $D = 64$ intensities in $[0, 1]$.
# We hold out 297 images as **queries**; the other 1,500 form the **database** (the
# codebooks are learnt on the database, as usual for PQ). A retrieved image is a *hit*
# when it shows the same digit as the query.

# %%
digits = load_digits()
X_all = (digits.data / 16.0).astype(np.float32)  # (1797, 64)
y_all = digits.target
images_all = (digits.images / 16.0 * 255).astype(np.uint8)  # (1797, 8, 8) for pictures
db_idx, q_idx = train_test_split(
    np.arange(len(X_all)), test_size=297, stratify=y_all, random_state=0
)
X_db, y_db, X_q, y_q = X_all[db_idx], y_all[db_idx], X_all[q_idx], y_all[q_idx]
N, D = X_db.shape
print(f"database {X_db.shape}, queries {X_q.shape}, float32: {X_db.itemsize * D} bytes per image")

# %% [markdown]
# ## 2. Product quantization from scratch
#
# Split every vector into $M$ sub-vectors of $D/M$ consecutive numbers,
# $x = [x^{(1)}, \dots, x^{(M)}]$; the block of coordinates that $x^{(m)}$ occupies is
# called **subspace** $m$. For each subspace $m$ learn a **codebook** of $K$
# **codewords** $e_{m,1}, \dots, e_{m,K}$ (the $K$ centres that k-means finds among the
# database's sub-vectors of subspace $m$, each a vector of length $D/M$). A vector
# is stored as the index of the nearest codeword in each subspace, its **code**:
#
# $$\mathrm{code}_m(x) = \arg\min_{j} \|x^{(m)} - e_{m,j}\|^2, \qquad
#   \hat x = [e_{1,\mathrm{code}_1(x)}, \dots, e_{M,\mathrm{code}_M(x)}] .$$
#
# (Codewords are $e_{m,j}$ throughout the series; the letter $c$ is kept for the
# curvature, notebook 01.)
#
# Each code is a number in $\{0, \dots, K-1\}$, i.e. $\log_2 K$ bits, so a vector costs
# $M \log_2 K$ bits. Library call: `quantizer.check_code_config(D, M, K)` checks the
# choice ($M$ divides $D$, $K$ a power of two) and returns the bits. The paper uses
# $K = 256$ (one byte per subspace); our database is small (k-means wants many points per
# codeword), so we take $K = 16$.

# %%
M, K = 8, 16
bits = quantizer.check_code_config(D, M, K)
print(f"M = {M} subspaces of {D // M} numbers, K = {K} codewords: {bits} bits per image")


def fit_codebooks(X, M, K, seed=0):
    """k-means in each subspace -> codebooks (M, K, D/M)."""
    subs = X.reshape(len(X), M, -1)
    return np.stack(
        [
            KMeans(K, n_init=N_INIT, random_state=seed).fit(subs[:, m]).cluster_centers_
            for m in range(M)
        ]
    ).astype(np.float32)


def encode(X, codebooks):
    """Nearest codeword per subspace -> codes (N, M) uint8."""
    subs = X.reshape(len(X), codebooks.shape[0], -1)  # (N, M, D/M)
    sq = ((subs[:, :, None, :] - codebooks[None]) ** 2).sum(-1)  # (N, M, K)
    return sq.argmin(-1).astype(np.uint8)


def decode(codes, codebooks):
    """Codes (N, M) -> reconstructions (N, D): concatenate the chosen codewords."""
    M = codebooks.shape[0]
    return codebooks[np.arange(M), codes].reshape(len(codes), -1)  # (N, M, D/M) -> (N, D)


codebooks = fit_codebooks(X_db, M, K)
codes_db = encode(X_db, codebooks)
X_db_hat = decode(codes_db, codebooks)
mse_ours = float(((X_db - X_db_hat) ** 2).sum(1).mean())
print("codebooks", codebooks.shape, "codes", codes_db.shape, codes_db.dtype)
print(f"mean squared reconstruction error ||x - x_hat||^2: {mse_ours:.3f}")

# %% [markdown]
# (`codebooks[np.arange(M), codes]` is NumPy fancy indexing: for every image $n$ and
# subspace $m$ it picks `codebooks[m, codes[n, m]]`, giving an $(N, M, D/M)$ array.)
#
# **Checked against the library.** `hihpq_lib.quantization.index.PQIndex` holds the same codebooks
# (Euclidean geometry) and encodes/decodes the same way:

# %%
pq_index = PQIndex(torch.from_numpy(codebooks), geometry="euclidean")
sub_points = torch.from_numpy(X_db).view(N, M, -1)  # (N, M, D/M)
assert torch.equal(pq_index.encode(sub_points), torch.from_numpy(codes_db))
np.testing.assert_allclose(pq_index.decode(torch.from_numpy(codes_db)).reshape(N, D), X_db_hat)

# %% [markdown]
# **Checked against faiss.** faiss's `IndexPQ` (here through `baselines.FaissPQ`, the
# library's wrapper) trains its own k-means, so its codes differ from ours; what must
# agree is the quality, e.g. the reconstruction error:

# %%
faiss_pq = baselines.FaissPQ(M, nbits=int(math.log2(K))).fit(X_db)
faiss_pq.add(X_db)
X_db_faiss = faiss_pq.index_.reconstruct_n(0, N)
mse_faiss = float(((X_db - X_db_faiss) ** 2).sum(1).mean())
print(f"reconstruction error: ours {mse_ours:.3f}, faiss {mse_faiss:.3f}")
assert abs(mse_ours - mse_faiss) < 0.1 * mse_faiss
print(f"faiss stores {faiss_pq.index_.code_size} bytes per image ({faiss_pq.code_size_bits} bits)")

# %% [markdown]
# ## 3. Asymmetric distance computation (ADC) with lookup tables
#
# To rank the database for a query $q$ we never decode the database. The query stays
# exact and only the database is quantized (hence *asymmetric*); the squared distance to a database vector's reconstruction splits over
# the subspaces:
#
# $$\tilde d(q, x) = \|q - \hat x\|^2 = \sum_{m=1}^{M} T_q[m, \mathrm{code}_m(x)],
#   \qquad T_q[m, j] = \|q^{(m)} - e_{m,j}\|^2 .$$
#
# The table $T_q$ has only $M \times K$ entries (computed once per query, $K \cdot D$
# multiply-adds); each database item then costs $M$ lookups and additions instead of $D$
# multiply-adds. Library call: `PQIndex.distances(query_points)`: queries split as
# $(Q, M, D/M)$ in, a $(Q, N)$ array of distances to the $N$ database items out. For the
# top-$k$, `PQIndex.search(query_points, k)` returns a pair `(distances, indices)`, each
# $(Q, k)$, nearest first (like faiss's `search`; below we keep `[1]`, the indices).
# First a naive loop, exactly as the formula reads:


# %%
def adc_tables(Q, codebooks):
    """T[q, m, j] = ||q^(m) - e_{m,j}||^2, shape (n_queries, M, K)."""
    subs = Q.reshape(len(Q), codebooks.shape[0], -1)
    return ((subs[:, :, None, :] - codebooks[None]) ** 2).sum(-1)


def adc_naive(Q, codes, codebooks):
    T = adc_tables(Q, codebooks)
    out = np.zeros((len(Q), len(codes)), dtype=np.float32)
    for i in range(len(Q)):
        for n in range(len(codes)):
            for m in range(codes.shape[1]):
                out[i, n] += T[i, m, codes[n, m]]
    return out


def adc(Q, codes, codebooks):
    """Vectorised: gather T[q, m, codes[n, m]] for all (q, n, m), sum over m."""
    T = adc_tables(Q, codebooks)  # (Q, M, K)
    M = codes.shape[1]
    return T[:, np.arange(M), codes].sum(-1)  # (Q, N, M) -> (Q, N)


d_naive = adc_naive(X_q[:5], codes_db[:300], codebooks)  # the loop is slow: a small slice
d_fast = adc(X_q[:5], codes_db[:300], codebooks)
np.testing.assert_allclose(d_naive, d_fast, rtol=1e-5)

# %% [markdown]
# The naive loop is fine for teaching but orders of magnitude slower (three nested Python
# loops); always call the vectorised version (or the library) on real data. Two more
# checks: ADC is the exact distance to the reconstructions, and the library computes the
# same numbers.

# %%
d_adc = adc(X_q, codes_db, codebooks)  # (297, 1500)
d_to_recon = ((X_q[:, None, :] - X_db_hat[None]) ** 2).sum(-1)
np.testing.assert_allclose(d_adc, d_to_recon, rtol=1e-4, atol=1e-4)
pq_index.add(torch.from_numpy(codes_db))
d_lib = pq_index.distances(torch.from_numpy(X_q).view(len(X_q), M, -1))
np.testing.assert_allclose(d_lib.numpy(), d_adc, rtol=1e-4, atol=1e-4)
print("naive loop = vectorised = ||q - x_hat||^2 = PQIndex.distances")

# %% [markdown]
# ## 4. Retrieval quality and memory
#
# Rank the database for each query by (a) exact search on the float vectors (squared L2,
# and cosine through `baselines.FloatBaseline`), (b) our PQ with ADC through
# `PQIndex.search`, (c) faiss PQ, and score the rankings with mAP@100
# (`metrics.map_at_k`) and precision@k (`metrics.precision_at_k_curve`). Every ranking is a
# $(Q, 100)$ array of database rows, nearest first (`metrics.rank_database(d, 100)` sorts a
# $(Q, N)$ distance array; the `search` methods return `(distances, indices)`).
#
# **precision@k** is the fraction of hits among a query's first $k$ results. **mAP@K**
# (mean average precision): for one query, take the precision@$i$ at every rank
# $i \le K$ that is a hit and average them (0 if the top $K$ holds no hit); then average
# over the queries. It is 1 when all hits come first; notebook 06 writes it out in
# full. (This $K = 100$ is a ranking cut-off, unrelated to the $K = 16$ codewords.)

# %%
exact = baselines.FloatBaseline().fit(X_db)  # cosine on L2-normalised floats
exact.add(X_db)
d_exact = ((X_q[:, None, :] - X_db[None]) ** 2).sum(-1)  # squared L2 on raw floats
rankings = {
    "float (exact L2)": metrics.rank_database(torch.from_numpy(d_exact), TOPK),
    "float (exact cosine, faiss)": exact.search(X_q, TOPK)[1],
    f"PQ from scratch ({bits} bits)": pq_index.search(
        torch.from_numpy(X_q).view(len(X_q), M, -1), TOPK
    )[1],
    f"faiss PQ ({bits} bits)": faiss_pq.search(X_q, TOPK)[1],
}
ks = np.arange(1, TOPK + 1)
p_at_k = {}
for name, top in rankings.items():
    p_at_k[name] = metrics.precision_at_k_curve(y_q, y_db, top, ks)[1]
    print(f"{name:30s} mAP@{TOPK} = {metrics.map_at_k(y_q, y_db, top):.3f}")
assert metrics.map_at_k(y_q, y_db, rankings[f"PQ from scratch ({bits} bits)"]) > 0.7

# %% [markdown]
# Precision@k for $k = 1, \dots, 100$, averaged over the queries, one curve per method:
# the higher the better. The gap between the PQ curves and the exact-search ones is the
# price of storing 32 bits instead of 64 floats; the sentence after the figures says
# how large it is.

# %%
viz.precision_at_k_plot(ks, list(p_at_k.values()), list(p_at_k.keys()))

# %%
viz.precision_at_k_plot(ks, list(p_at_k.values()), list(p_at_k.keys()), backend="matplotlib")

# %%
map_of = {name: metrics.map_at_k(y_q, y_db, top) for name, top in rankings.items()}
map_exact = map_of["float (exact L2)"]
map_pq = map_of[f"PQ from scratch ({bits} bits)"]
pq_curves = [p_at_k[f"PQ from scratch ({bits} bits)"], p_at_k[f"faiss PQ ({bits} bits)"]]
exact_curves = [p_at_k["float (exact L2)"], p_at_k["float (exact cosine, faiss)"]]
curve_gap = max(float(np.abs(a - b).max()) for a in pq_curves for b in exact_curves)
claims.say(
    "In this run PQ's mAP@100 is **{pq:.3f}** against **{ex:.3f}** for exact L2 search "
    "({rel:.0%} of it), and at no $k$ is a PQ curve (ours or faiss's) more than {gap:.3f} "
    "from an exact one: {reading}",
    pq=map_pq,
    ex=map_exact,
    rel=map_pq / map_exact,
    gap=curve_gap,
    reading=(
        "at this scale the PQ curves lie almost on top of the exact ones."
        if curve_gap < 0.05
        else "the PQ curves sit visibly "
        + claims.direction(np.mean(pq_curves), np.mean(exact_curves), up="above", down="below")
        + " the exact ones."
    ),
)

# %% [markdown]
# Four queries (left) and their first 8 results under PQ, framed green when the digit
# matches and red when it does not: two random queries and the two with the most misses.

# %%
top8 = rankings[f"PQ from scratch ({bits} bits)"][:, :8].numpy()  # (Q, 8) database rows
hits8 = y_db[top8] == y_q[:, None]
worst = [i for i in np.argsort(hits8.sum(1), kind="stable") if i > 1][:2]  # most misses
shown = np.array([0, 1, *worst])
viz.retrieval_grid(
    images_all[q_idx[shown]],
    images_all[db_idx[top8[shown]]],
    hits8[shown],
    query_titles=[f"query: {d}" for d in y_q[shown]],
)

# %% [markdown]
# With 32 bits (4 bytes, packed) instead of 256 bytes the ranking stays close to exact
# search (checked in the next cell). Memory for one
# million images (`PQIndex.memory_bytes` counts codes plus codebooks; the simple layout
# keeps one byte per subspace even when $K < 256$, faiss packs two 4-bit codes per byte):

# %% tags=["claim"]
claims.check(map_pq > 0.9 * map_exact, "32-bit PQ stays close to exact search", pq=map_pq)

# %%
million = 1_000_000
print(f"float32 vectors : {million * D * 4 / 2**20:8.1f} MiB")
print(f"PQ, 1 byte/code : {million * M / 2**20:8.1f} MiB  (M = {M} bytes per image)")
print(f"PQ, packed bits : {million * bits / 8 / 2**20:8.1f} MiB  ({bits} bits per image)")
print(f"this index now  : {pq_index.memory_bytes() / 1024:.1f} KiB for {pq_index.ntotal} images")

# %% [markdown]
# ### Exercise 1 — code length and memory
# HiHPQ's 32-bit setting on 128-dimensional features uses $M = 4$ codebooks of $K = 256$
# codewords. How many bits does one image cost, and how many megabytes ($10^6$ bytes)
# do the codes of one million images take? Store `answer = (bits, megabytes)`.

# %%
answer = None  # your code: a tuple (int, float)

# %% jupyter={"source_hidden": true} tags=["solution"]
if answer is None:
    bits_32 = quantizer.check_code_config(128, 4, 256)  # 4 * log2(256) = 32
    answer = (bits_32, 1_000_000 * bits_32 / 8 / 1e6)

# %% tags=["check"]
assert answer is not None, "set answer = (bits, megabytes)"
assert int(answer[0]) == quantizer.check_code_config(128, 4, 256), "bits = M * log2(K)"
assert abs(float(answer[1]) - 4.0) < 1e-9, "one byte per codebook: 4 bytes per image"
print("Exercise 1: correct, 32 bits = 4 bytes per image, 4 MB per million images")

# %% [markdown]
# ### Exercise 2 — symmetric distance (SDC)
# In *symmetric* distance computation the query is quantized too, and
# $d(q, x) = \sum_m \|e_{m,\mathrm{code}_m(q)} - e_{m,\mathrm{code}_m(x)}\|^2$: all
# distances come from a precomputed $M \times K \times K$ table of codeword-to-codeword
# distances. Compute the $(10, N)$ array of symmetric distances from the first 10 queries
# `X_q[:10]` to the database (use `encode` and `codebooks`; NumPy only). Store it in
# `answer`.

# %%
answer = None  # your code: a (10, 1500) array

# %% jupyter={"source_hidden": true} tags=["solution"]
if answer is None:
    S = ((codebooks[:, :, None, :] - codebooks[:, None, :, :]) ** 2).sum(-1)  # (M, K, K)
    q_codes = encode(X_q[:10], codebooks)  # (10, M)
    answer = S[np.arange(M), q_codes[:, None, :], codes_db[None, :, :]].sum(-1)

# %% tags=["check"]
assert answer is not None, "set answer to the (10, N) symmetric distances"
expected = pq_index.distances(torch.from_numpy(X_q[:10]).view(10, M, -1), mode="symmetric")
np.testing.assert_allclose(np.asarray(answer), expected.numpy(), rtol=1e-4, atol=1e-4)
print("Exercise 2: correct, matches PQIndex.distances(..., mode='symmetric')")

# %% [markdown]
# SDC is cheaper (no per-query table) but coarser: two quantization errors instead of
# one. Compare `metrics.map_at_k` of both if you like; HiHPQ evaluates with ADC.
#
# ## 5. The product of hyperboloids
#
# HiHPQ keeps the product structure but replaces each Euclidean subspace
# $\mathbb R^{d}$ ($d = D/M$) by a hyperboloid $\mathbb H^{d}_{k_m}$ (notebook 01), **each
# with its own learnable curvature** $c_m = 1/k_m$ (the paper's curvature; the formulas
# use $k_m$):
#
# $$\mathcal P = \mathbb H^{d}_{k_1} \times \dots \times \mathbb H^{d}_{k_M}, \qquad
#   d_{\mathcal P}(x, y) = \sum_{m=1}^{M} d_{k_m}(x_m, y_m).$$
#
# Library: `manifolds.ProductLorentz(M, dim=d, curvature=...)`. Its `.curvature` is the
# learnable parameter $c$ (shape $(M,)$, kept in $[0.01, 10]$ as in the paper's code) and
# `.k` $= 1/c$ is what the `lorentz` functions take. `.embed` maps features of shape
# $(B, M, d)$ onto the product with $\exp_o$ per subspace (after clipping the tangent
# norm to at most `clip_r`, 1.5 by default, as the paper does); a point of $\mathcal P$
# has shape $(B, M, d+1)$.

# %%
space = manifolds.ProductLorentz(
    M=M, dim=D // M, curvature=[0.5, 1.0, 2.0, 1.0, 1.0, 0.5, 1.0, 2.0]
)
print(space)
print("curvature c:", space.curvature.detach().numpy().round(3))
print("k = 1/c     :", space.k.detach().numpy().round(3))
# six query images as features (B=6, M, d), centred on the database mean so that they
# spread around the origin like the output of a network's projection head
features = torch.from_numpy(X_q[:6] - X_db.mean(0)).double().view(6, M, -1)
with torch.no_grad():
    P = space.embed(features)  # (6, M, d+1)
print("points on the product:", tuple(P.shape))
for m in range(M):  # every sub-point lies on its own sheet <x, x> = -k_m
    torch.testing.assert_close(
        lorentz.inner(P[:, m], P[:, m]), -space.k[m].detach().double().expand(6)
    )

# %% [markdown]
# The product distance, elementwise (`space.dist(x, y)` gives the $(B, M)$ per-subspace
# distances; sum over $M$) and for all pairs (`losses.product_distance`, used by the
# training losses):

# %%
with torch.no_grad():
    d_pairs = losses.product_distance(space, P, P)  # (6, 6)
    d_01 = space.dist(P[0], P[1]).sum()
print(f"d_P(x0, x1) = {d_01.item():.4f}")
print(d_pairs.numpy().round(2))
torch.testing.assert_close(d_pairs[0, 1], d_01)

# %% [markdown]
# Because the curvature is a parameter, a loss built on these distances has a gradient
# with respect to each $c_m$: training can move every subspace's curvature on its own
# (notebook 04 shows what a short training does with that freedom). After
# each optimiser step `space.project_parameters_()` clamps $c$ back into its safe range.
# (We use pairs of *distinct* points: the distance of a point to itself is 0 but its
# numerical gradient is not, which is why the training losses mask the diagonal of
# `product_distance(space, z, z)`.)

# %%
P_grad = space.embed(features)  # with gradients this time
d_sum = losses.product_distance(space, P_grad[:3], P_grad[3:]).sum()  # 3 x 3 distinct pairs
d_sum.backward()
print("d(sum of distances)/dc:", space.curvature.grad.numpy().round(3))
assert space.curvature.grad is not None and bool((space.curvature.grad != 0).any())
space.zero_grad()

# %% [markdown]
# The quantizer HiHPQ trains lives on this product: one codebook of $K$ codewords per
# subspace, each on its own hyperboloid (`quantizer.ProductQuantizer`, notebook 03). Here
# its codewords start at random database images (`init_from_features`), drawn with the
# database (coloured by digit) on one Poincaré disk per subspace. Unlike `space.embed`,
# the quantizer's `hpq.embed` (like all `ProductQuantizer` methods) takes flat features
# $(N, M d)$ and splits them into $(N, M, d)$ itself. The subspaces are
# 8-dimensional, so each panel is a 2-D view of the Poincaré ball: every point keeps its
# true distance from the centre (its disk radius is exact) and takes its direction from
# the two directions along which the points spread most (PCA; the titles give the share
# of the squared norm a plain projection would keep). Good for a look, not for
# measuring distances between points; notebook 06 explains why a plain projection
# would shrink the codewords into a blob.

# %%
hpq = quantizer.ProductQuantizer(space, K=K)
db_features = torch.from_numpy(X_db - X_db.mean(0)).double()  # (N, M*d)
with torch.no_grad():
    hpq.init_from_features(db_features, generator=torch.Generator().manual_seed(0))
    db_points = hpq.embed(db_features)  # (N, M, d+1)
    viz_args = (hpq.codewords(), space.k, db_points)
viz.subspace_codewords_disks(*viz_args, point_labels=y_db, max_points=500)

# %% tags=["thumbnail"]
viz.subspace_codewords_disks(*viz_args, point_labels=y_db, max_points=500, backend="matplotlib")

# %% [markdown]
# ### Exercise 3 — the product distance by hand
# Compute $d_{\mathcal P}(x, y) = \sum_m d_{k_m}(x_m, y_m)$ between the rows of
# `P[:3]` and `P[3:]` (three pairs) with `lorentz.dist` and the right `k` for each
# subspace (`space.k[m]`). Store the three distances as a tensor of shape `(3,)` in
# `answer`.

# %%
answer = None  # your code: a tensor of shape (3,)

# %% jupyter={"source_hidden": true} tags=["solution"]
if answer is None:
    with torch.no_grad():
        answer = sum(lorentz.dist(P[:3, m], P[3:, m], k=space.k[m]) for m in range(M))

# %% tags=["check"]
assert answer is not None, "set answer to the three product distances"
with torch.no_grad():
    expected = space.dist(P[:3], P[3:]).sum(-1)
torch.testing.assert_close(torch.as_tensor(answer, dtype=expected.dtype), expected)
print("Exercise 3: correct:", expected.numpy().round(4))

# %% [markdown]
# ## Summary
# - PQ = split into $M$ subspaces, k-means codebooks of $K$ codewords, store the argmin
#   indices: $M \log_2 K$ bits per image (`quantizer.check_code_config`), one byte per
#   subspace for $K = 256$.
# - ADC ranks the database with an $M \times K$ table per query and $M$ lookups per item,
#   and equals the exact distance to the reconstructions (`PQIndex.distances`).
# - Our few-line PQ matches faiss's quality and the library's index exactly.
# - HiHPQ quantizes in a product of hyperboloids with one learnable curvature per
#   subspace (`manifolds.ProductLorentz`); the product distance is the sum of the
#   per-subspace geodesic distances.
#
# Next: **03 · Hyperbolic codebook attention**: how HiHPQ assigns a point to codewords on
# a hyperboloid, softly for training and hard for the codes.
#
# ## Further reading
# - Jégou, Douze & Schmid, *Product Quantization for Nearest Neighbor Search*, IEEE TPAMI
#   2011 (PQ, ADC and SDC).
# - Ge et al., *Optimized Product Quantization*, TPAMI 2014 (`baselines.FaissOPQ`).
# - The faiss wiki, *Faiss building blocks: clustering, PCA, quantization* and the
#   `IndexPQ` tutorial: https://github.com/facebookresearch/faiss/wiki
# - Qiu et al., *HiHPQ: Hierarchical Hyperbolic Product Quantization for Unsupervised
#   Image Retrieval*, AAAI 2024 (the product of hyperboloids, section "Hyperbolic PQ").
# - Nickel & Kiela, *Learning Continuous Hierarchies in the Lorentz Model of Hyperbolic
#   Geometry*, ICML 2018; Law et al., *Lorentzian Distance Learning for Hyperbolic
#   Representations*, ICML 2019.
# - geoopt's `Lorentz` manifold and product manifolds: https://geoopt.readthedocs.io
