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
# # 07 · Pipeline: ablations and reproduction
#
# HiHPQ adds two things to contrastive product quantization: **hyperbolic** subspaces
# instead of Euclidean ones, and **hierarchy losses** that pull images towards the
# prototypes of clusters at several granularities. An *ablation* switches one of them
# off and measures the difference it makes. This notebook runs a small ablation live,
# reads the project's benchmark table as a lesson (geometry, hierarchy, PQ vs OPQ,
# 16/32/64 bits), puts our numbers beside the paper's and explains the gap, and shows how
# to reproduce the paper's setting on a GPU. Throughout, one question: **is a difference
# of 0.01 mAP real, or noise?**
#
# ## What you will learn
# - the ablations as configuration overrides (`benchmarks.ABLATIONS`) and how to run
#   them with several seeds (`experiments.run_ablation`);
# - two sources of noise in an mAP, the training seed and the sample of test queries,
#   and how to measure each: paired differences over seeds with their standard error,
#   and a paired bootstrap over queries;
# - how to read the benchmark table (`benchmarks/results/`): what each contrast
#   isolates and which differences stand out of the noise;
# - why our CPU numbers differ from the paper's (backbone, resolution, data, budget,
#   model selection), and the commands that reproduce the paper on a GPU.
#
# ## What you need
# - Notebook 06 (the pipeline, mAP@1000, validation-selected vs final epoch).
#   Standard deviation and the idea of a confidence interval.
# - CIFAR-10 through `HIHPQ_CIFAR10` as in notebook 06, and its cached features of the
#   quick subset (notebook 06 in fast mode, `hihpq demo --quick` or
#   `python -m benchmarks.run_all --quick` computes them; otherwise the first run
#   extracts them; how long: the next paragraph).
# - The benchmark results: the `results.json` of `benchmarks/results/protocol_ii/`,
#   `protocol_ii_16/`, `protocol_i_16_32/`, `protocol_i_16_64/` and
#   `protocol_i_16_64_ablations/` (`make bench`, committed), or
#   `benchmarks/results/quick/results.json` (`python -m benchmarks.run_all --quick`).
#   Without any of them the notebook still runs and shows the live ablation only.
# - Notation: one sheet for the whole series, [docs/notation.md](../docs/notation.md).
#
# ## How long it takes on a laptop CPU
# - Reading and doing the exercises: about 45 minutes.
# - **Full mode** (3 methods × 5 seeds on the quick subset): 19 s with its saved runs loaded
#   (13 s measured 2026-12-01); **training it yourself** instead: 47 s (15 short runs), this
#   measurement including the first run's quick-subset features (1 min 04 s measured
#   2026-12-01).
# - **Fast mode (`HIHPQ_FAST=1`)** (3 methods × 3 seeds; seeds 0–2 are shared with full
#   mode): 12 s with its saved runs loaded; **training it yourself** instead: 24 s (9 short
#   runs).
# - **First run on a new machine:** this notebook always uses the quick subset, so in both
#   modes the frozen backbone features are computed and cached first: about 1 min (decoding
#   CIFAR-10 12 s, 3,600 images at 128 px 25 s, the bank of 300 images × 3 views 5 s,
#   measured by notebook 04's cold start). The notebook prints a FIRST RUN notice when that
#   happens; later runs load the features in seconds.
# - Measured 2026-12-01 and 2026-12-04 on a 2-core CPU (full mode of 04-07 re-measured on
#   2026-12-04 with the machine idle and the default thread count, 2; the rest on 2026-12-01
#   with the machine shared with three other developers and OMP_NUM_THREADS=1, whose
#   full-mode numbers each entry states beside the new ones), kernel start included
#   (`jupyter nbconvert --execute`, one notebook at a time). Generated from
#   `notebooks/timings.yaml` by `python -m benchmarks.notebook_timings`.

# %% [markdown]
# ## Setup
#
# The live ablation always uses the quick subset (300 training images, 600 test
# queries, 3,000 database images) with the benchmark's quick settings (10 epochs,
# batches of 32) on the quick profile's backbone (the cell prints which: not the
# profile of the benchmark tables in section 4), so each training takes seconds; fast
# mode runs 3 seeds instead of 5 (`SEEDS`).

# %%
# %matplotlib inline
from pathlib import Path

import numpy as np

from hihpq_lib import viz
from hihpq_lib.app import exercises, experiments, prepare
from hihpq_lib.evaluation import benchmarks, claims, metrics, stats
from hihpq_lib.learning import config
from hihpq_lib.utils import runtime

runtime.seed_everything(0)
SEEDS = list(range(runtime.pick(5, 3)))  # training seeds per method
METHODS = ["hihpq", "hihpq_no_hier", "euclidean_cpq"]  # full, no hierarchy, Euclidean
base = config.demo_config(quick=True, overrides=["epochs=10", "batch_size=32"])
print(f"fast mode: {runtime.fast_mode()}; seeds {SEEDS}; methods {METHODS}")
profile_ii32 = config.load_config(
    config.cpu_profile_path("II", 32)
)  # every CPU profile of section 4 shares its backbone and resolution
print(
    f"live ablation: frozen {base.backbone} at {base.resolution} px; the benchmark tables of "
    f"section 4: {profile_ii32.backbone} at {profile_ii32.resolution} px"
)

# %% [markdown]
# ## 1. The ablations are configuration overrides
#
# Every variant is the HiHPQ configuration with a few keys changed
# (`TrainConfig.with_overrides`), the same definitions the benchmark uses:
#
# | key | what changes | what it isolates |
# |---|---|---|
# | `hihpq` | nothing | the full method |
# | `hihpq_no_hier` | `proto_weight=0, instance_weight=0` | the hierarchy losses (hyperbolic geometry kept) |
# | `euclidean_hier` | `geometry=euclidean` | the hyperbolic geometry (hierarchy kept) |
# | `euclidean_cpq` | both | contrastive PQ in Euclidean space, the MeCoQ/SPQ-style baseline (with the profile's other settings: at II · 16, I · 16 and I · 32 its neighbour term, which MeCoQ and SPQ do not have, and at II · 16 the Lloyd refinement of the codebooks after training, `codebook_refine`, which every learned row there carries) |
#
# So `hihpq − hihpq_no_hier` measures the hierarchy losses, `hihpq_no_hier −
# euclidean_cpq` the geometry without them, and so on: each contrast changes exactly
# one thing.

# %%
for key, overrides in benchmarks.ABLATIONS.items():
    cfg = base.with_overrides(list(overrides))
    print(
        f"{key:15s} geometry={cfg.geometry:9s} proto_weight={cfg.proto_weight} "
        f"instance_weight={cfg.instance_weight}"
    )

# %% [markdown]
# ## 2. A live ablation, several seeds
#
# `experiments.run_ablation` trains each method with each seed on the same prepared
# features (the seed changes only the training randomness: initialisation, batches,
# view pairs, clustering), keeps the validation-selected epoch, and scores it on the
# test queries. Each run goes to its own folder, `runs/tutorial/07_ablation_<method>_seed<s>-<digest>`
# (`experiments.experiment_folder`); a finished run is loaded instead of retrained.
#
# It returns a list with one dict per (method, seed): `method`, `seed`, `map` (test
# mAP@1000 of the validation-selected epoch), `map_final` (last epoch), `ap` (the
# per-query APs, used in section 3), `val_selected_epoch`, `seconds`.
# `stats.ablation_table(runs)` summarises them per method: number of seeds, mean
# mAP, **std** (sample standard deviation over seeds), min and max.

# %%
prep = prepare.prepare_for(base, progress=False)
runs = experiments.run_ablation(prep, base, METHODS, SEEDS)
print(metrics.format_table(stats.ablation_table(runs), floatfmt=".4f"))

# %% [markdown]
# One line per run (`seconds`: the time to train and score it, or only to score it when
# it was loaded from its folder):

# %%
per_run = [
    {
        **{k: r[k] for k in ("method", "seed", "map", "map_final", "val_selected_epoch")},
        "seconds": f"{r['seconds']:.1f}",
    }
    for r in runs
]
print(metrics.format_table(per_run, floatfmt=".4f"))

# %%
table = stats.ablation_table(runs)
stds = [r["std"] for r in table]
means = sorted(r["mean mAP"] for r in table)
gaps = np.diff(means)
claims.say(
    "Read the **std** column first: the same method, the same data, only another seed, "
    "and mAP moves by {lo:.4f}–{hi:.4f}, while neighbouring methods' means are "
    "{glo:.4f}–{ghi:.4f} apart: {cmp}. Section 3 shows how to compare methods despite "
    "that spread.",
    lo=min(stds),
    hi=max(stds),
    glo=float(gaps.min()),
    ghi=float(gaps.max()),
    cmp=f"the largest seed spread is {max(stds) / float(gaps.min()):.1f} times the smallest gap"
    if max(stds) >= float(gaps.min())
    else "here the gaps are larger than the seed spread",
)

# %% [markdown]
# ## 3. Telling a 0.01 difference from noise
#
# **Seeds.** Train methods $a$ and $b$ with the same seeds $s = 1..n$ and take the
# paired differences $\delta_s = \mathrm{mAP}_a(s) - \mathrm{mAP}_b(s)$ (pairing
# removes what the two share, such as a lucky initialisation of the head). Their mean
# and its **standard error** are
#
# $$\bar\delta = \frac1n \sum_{s=1}^{n} \delta_s, \qquad
#   \mathrm{SE}(\bar\delta) = \frac{\sqrt{\frac{1}{n-1}\sum_s (\delta_s - \bar\delta)^2}}{\sqrt n}.$$
#
# Read the difference as real when $|\bar\delta| \ge t_{n-1} \cdot \mathrm{SE}$, where
# $t_{n-1}$ is the 97.5% quantile of Student's t distribution with $n - 1$ degrees of
# freedom: then the 95% confidence interval $\bar\delta \pm t_{n-1}\,\mathrm{SE}$
# excludes 0. With few seeds $t$ is large (4.30 for 3 seeds, 2.78 for 5; checked in the
# next cell) because the std itself is a rough estimate; with many it tends to the
# familiar 2 (1.96). Library
# calls: `stats.paired_difference(a, b)` (its `"t95"` is $t_{n-1}$, from
# `stats.t_multiplier`) and `stats.verdict(delta, se, z=t95)`.

# %% tags=["claim"]
claims.check(
    round(stats.t_multiplier(3), 2) == 4.30 and round(stats.t_multiplier(5), 2) == 2.78,
    "t is 4.30 for 3 seeds and 2.78 for 5",
)

# %%
maps = {m: [r["map"] for r in runs if r["method"] == m] for m in METHODS}  # seed order
contrasts = [
    ("hihpq", "hihpq_no_hier"),
    ("hihpq", "euclidean_cpq"),
    ("hihpq_no_hier", "euclidean_cpq"),
]
seed_rows = []
for a, b in contrasts:
    d = stats.paired_difference(maps[a], maps[b])
    seed_rows.append(
        {
            "contrast": f"{a} − {b}",
            "Δ mAP": d["delta"],
            "std of δ": d["std"],
            "SE": d["se"],
            "seeds": d["n"],
            "t": d["t95"],
            "reading": stats.verdict(d["delta"], d["se"], z=d["t95"], n=d["n"]),
        }
    )
print(metrics.format_table(seed_rows, floatfmt=".4f"))
noise_std = float(np.mean([r["std of δ"] for r in seed_rows]))  # typical seed noise
print(f"typical std of a paired difference between two 1-seed runs: {noise_std:.4f}")

# %%
n_real_seeds = sum(r["reading"].startswith("real") for r in seed_rows)
fast_seeds = SEEDS[:3]  # fast mode's seeds, shared with full mode
first3 = {f"{a} − {b}": stats.paired_difference(maps[a][:3], maps[b][:3]) for a, b in contrasts}
readings3 = {c: stats.verdict(d["delta"], d["se"], z=d["t95"], n=d["n"]) for c, d in first3.items()}
changed = [r["contrast"] for r in seed_rows if r["reading"][:4] != readings3[r["contrast"]][:4]]
claims.say(
    "With these {n} seeds, **{k} of {m}** contrasts read as real. With 3 seeds the "
    "standard error is itself a rough estimate (hence $t$ = 4.30), so few seeds can "
    "mislead in both directions. {compare}",
    n=len(SEEDS),
    k=n_real_seeds,
    m=len(seed_rows),
    compare=(
        "Fast mode runs seeds 0–2 only; full mode adds seeds 3 and 4: run it and compare "
        "the two tables."
        if len(SEEDS) <= len(fast_seeds)
        else "The same contrasts on seeds 0–2 alone (fast mode's table) read as real "
        f"{sum(v.startswith('real') for v in readings3.values())} of {len(readings3)} "
        "times; "
        + (
            "adding seeds 3 and 4 changed the reading of " + ", ".join(f"`{c}`" for c in changed)
            if changed
            else "adding seeds 3 and 4 changed none of the readings here"
        )
        + "."
    ),
)

# %% [markdown]
# A contrast can be "real" on the quick subset and still say nothing about the full
# setting: 300 training images are not the paper's 5,000, and what is true of a tiny
# model (whose 40 finest clusters hold about 7 images each) need not survive at scale.
# Significance answers "is it noise?", not "does it generalise?".
#
# **Queries.** Even with training fixed, the test queries are a sample: another 600
# (or 10,000) queries would give a slightly different mAP. A paired **bootstrap**
# resamples the queries with replacement and recomputes the difference of the two
# methods' mean AP each time; the middle 95% of those differences is a confidence
# interval, and the difference is real for these queries when the interval excludes 0
# (`stats.paired_bootstrap`, as in notebook 05, on the per-query APs that
# `run_ablation` kept). Here for seed 0:

# %%
ap = {m: next(r["ap"] for r in runs if r["method"] == m and r["seed"] == 0) for m in METHODS}
boot_rows = []
for a, b in contrasts:
    bs = stats.paired_bootstrap(ap[a], ap[b], n_boot=2000, seed=0)
    excludes_zero = bs["low"] > 0 or bs["high"] < 0
    boot_rows.append(
        {
            "contrast (seed 0)": f"{a} − {b}",
            "Δ mAP": bs["diff"],
            "95% interval": f"[{bs['low']:+.4f}, {bs['high']:+.4f}]",
            "reading": "real (excludes 0)" if excludes_zero else "noise (contains 0)",
        }
    )
print(f"{len(ap['hihpq'])} test queries")
print(metrics.format_table(boot_rows, floatfmt=".4f"))

# %%
n_real_boot = sum(r["reading"].startswith("real") for r in boot_rows)
boot_halfwidth = float(
    np.mean([stats.paired_bootstrap(ap[a], ap[b], n_boot=2000, seed=0)["high"]
             - stats.paired_bootstrap(ap[a], ap[b], n_boot=2000, seed=0)["low"]
             for a, b in contrasts]) / 2
)  # fmt: skip
claims.say(
    "Compare the two tables. With the trained models of seed 0 fixed, the queries alone "
    "call **{kb} of {m}** differences real; across seeds, **{ks} of {m}**. The typical "
    "seed-to-seed std of a difference ({noise:.4f}) is {cmp} the half-width of a "
    "query interval ({half:.4f}). {lesson}",
    kb=n_real_boot,
    ks=n_real_seeds,
    m=len(contrasts),
    noise=noise_std,
    cmp=claims.direction(noise_std, boot_halfwidth, up="larger than", down="smaller than"),
    half=boot_halfwidth,
    lesson=(
        "Here the seed-to-seed variation is the larger noise, and a bootstrap over the "
        "queries of one trained model cannot see it: a paper that trains once and "
        "reports a query-bootstrap interval is overconfident."
        if noise_std > boot_halfwidth
        else "Here the query sample is the larger noise; with more queries (below) that "
        "changes, since only the query noise shrinks."
    ),
)

# %% [markdown]
# The query noise shrinks like $1/\sqrt{Q}$: with the 10,000 test queries of the full
# protocol the intervals above would be about $\sqrt{600/10000} \approx 0.25$ times as
# wide. More queries do not average the seed noise away: only more seeds do (the
# standard error of a mean over $n$ seeds falls like $1/\sqrt n$). It is the noise that
# remains in the full benchmark, where section 4 measures its size.
#
# **Hardware.** A third source hides in published numbers. MeCoQ's authors re-ran
# their own scripts, fixed seeds included, on different GPUs: CIFAR-10 protocol II
# at 32 bits gave 0.641 on a GTX 1080 Ti and 0.632 on a V100 (their README). A
# 0.01 gap between two papers' tables can come from the machine alone.
#
# The per-seed mAPs of each method, one marker per run (`viz.seed_strip`: seeds are
# separate runs, so no line joins them; each seed has the same colour in every method,
# the black bar is the method's mean):

# %%
strip_args = dict(
    ylabel="test mAP@1000 (val-selected epoch)", title="Per-seed mAP of each method (quick subset)"
)
viz.seed_strip({m: maps[m] for m in METHODS}, SEEDS, **strip_args)

# %% tags=["thumbnail"]
viz.seed_strip({m: maps[m] for m in METHODS}, SEEDS, backend="matplotlib", **strip_args)


# %%
def pairing_row(a, b):
    """The std of the paired difference a − b over seeds, the std it would have if the two
    methods' seeds were unrelated (√(std_a² + std_b²)), and their correlation."""
    x, y = np.asarray(maps[a]), np.asarray(maps[b])
    return {
        "contrast": f"{a} − {b}",
        "paired": float(np.std(x - y, ddof=1)),
        "unpaired": float(np.hypot(np.std(x, ddof=1), np.std(y, ddof=1))),
        "corr": float(np.corrcoef(x, y)[0, 1]),
    }


pairing_rows = [pairing_row(a, b) for a, b in contrasts]
helped = [r for r in pairing_rows if r["paired"] < r["unpaired"]]
claims.check(  # var(a − b) = var a + var b − 2 cov(a, b)
    all((r["paired"] < r["unpaired"]) == (r["corr"] > 0) for r in pairing_rows),
    "pairing narrows exactly the contrasts whose per-seed mAPs correlate positively",
)
wins = {f"{a} − {b}": int(np.sum(np.asarray(maps[a]) > np.asarray(maps[b]))) for a, b in contrasts}
claims.say(
    "Two things to look for. Does a seed that is good for one method tend to be good for "
    "the others (the same seed gives every method the same batches and view pairs)? If so, "
    "the difference of the two methods on the same seed varies less than it would if their "
    "seeds were unrelated, and pairing pays. Per contrast, the std of the paired difference "
    "against the unpaired √(std_a² + std_b²), with the correlation of the two methods' "
    "per-seed mAPs: {per}. Pairing narrows the difference in {k} of the {c} contrasts: "
    "exactly those whose two methods' per-seed mAPs correlate positively. And does the "
    "winner change from seed to seed? Of the {n} seeds, the first method of each contrast "
    "won {wins}. {split_reading}",
    per="; ".join(
        f"{r['contrast']}: {r['paired']:.4f} against {r['unpaired']:.4f} "
        f"(correlation {r['corr']:+.2f})"
        for r in pairing_rows
    ),
    k=len(helped),
    c=len(pairing_rows),
    wins=", ".join(f"{k}: {v}" for k, v in wins.items()),
    n=len(SEEDS),
    split_reading=claims.split_reading(wins, len(SEEDS)),
)

# %% [markdown]
# ### Exercise 1 — the standard error by hand
# Using NumPy only, compute the mean paired difference and its standard error for
# `maps["hihpq"]` minus `maps["euclidean_cpq"]` (sample standard deviation with
# $n - 1$, divided by $\sqrt n$). Store `answer = (delta, se)` (two floats).

# %%
answer = None  # your code: a tuple (float, float)

# %% jupyter={"source_hidden": true} tags=["solution"]
if answer is None:
    diffs = np.asarray(maps["hihpq"]) - np.asarray(maps["euclidean_cpq"])
    answer = (diffs.mean(), diffs.std(ddof=1) / np.sqrt(len(diffs)))

# %% tags=["check"]
assert answer is not None, "set answer = (delta, se)"
want = stats.paired_difference(maps["hihpq"], maps["euclidean_cpq"])
exercises.check_paired_difference(answer, maps["hihpq"], maps["euclidean_cpq"])  # float32 ok
print(f"Exercise 1: correct, Δ = {want['delta']:+.4f} ± {want['se']:.4f} (SE)")

# %% [markdown]
# ### Exercise 2 — how many seeds for 0.01?
# Suppose a true difference of $0.01$ mAP and paired differences whose standard
# deviation is the `noise_std` measured above. How many seeds $n$ are needed before
# $0.01 \ge 2\,\mathrm{std}/\sqrt n$ (the large-sample rule, $t \approx 2$)? Store the
# smallest such $n$ (an int) in `answer`.

# %%
answer = None  # your code: an int

# %% jupyter={"source_hidden": true} tags=["solution"]
if answer is None:
    answer = max(1, int(np.ceil((2 * noise_std / 0.01) ** 2)))

# %% tags=["check"]
assert answer is not None, "set answer to the number of seeds (an int)"
n = int(answer)
assert n >= 1 and 2 * noise_std / np.sqrt(n) <= 0.01 + 1e-12, (
    f"with n = {n} seeds, 2 SE = {2 * noise_std / np.sqrt(n):.4f} is still above 0.01"
)
assert n == 1 or 2 * noise_std / np.sqrt(n - 1) > 0.01, f"{n - 1} seeds already suffice"
assert n == stats.seeds_needed(0.01, noise_std)
print(f"Exercise 2: correct, {n} seeds for std {noise_std:.4f}")

# %% [markdown]
# The answer grows with the square of the noise: halving the std cuts the seeds by
# four. (With few seeds $t_{n-1} > 2$, so the honest number is a little larger:
# `stats.seeds_needed(0.01, noise_std, z=stats.t_multiplier(n))` for your $n$.)
# So with the seed noise of the quick subset, one seed per method cannot rank methods
# that are 0.01 apart (checked below): a benchmark has to run several seeds per cell
# and pair them. Section 4's `seeds` column says how many each row of its files ran.
#
# ## 4. The benchmark table, read as a lesson
#
# `benchmarks/run_all.py` trains every method on the same frozen features and writes
# one `results.json` per run (`make bench` writes `benchmarks/results/protocol_ii/`,
# `protocol_ii_16/`, `protocol_i_16_32/`, `protocol_i_16_64/` and `protocol_i_16_64_ablations/`;
# `--quick` writes `quick/`).
# Each file records how long its run took, its preparation time and its peak memory; the
# cell prints them. `benchmarks.load_benchmark_suite` ranks the files (a complete run over
# an interrupted one, full over quick, then the newest run) and, for each protocol, keeps
# the first file with HiHPQ rows whole and takes from the others only the cells (code
# length, method) it lacks; the cell prints which files it read and which code lengths each
# gave. **mAP** is the test mAP@1000 of the
# validation-selected epoch; `± std` is over seeds where several ran; `HiHPQ − this` is
# HiHPQ's mAP minus the row's.

# %%
results, results_paths = benchmarks.load_benchmark_suite()
if results is None:
    print("no benchmark results found: run `make bench` (or `python -m benchmarks.run_all")
    print("--quick`); the rest of this section then shows empty tables")
    results = {"rows": [], "deltas": [], "meta": {}}
else:
    for src in results["meta"]["sources"]:
        mode = "quick subset" if src["quick"] else "full protocol"
        path = Path(src["path"]).relative_to(runtime.project_dir())
        print(f"protocol {src['protocol']}: read {path} ({mode}, started {src['started']})")
        print(f"  options: {' '.join(src['argv'])}")
        print(f"  gave the rows of {', '.join(f'{b} bits' for b in src.get('bits', []))}")
        if src.get("seconds") is not None:  # the file's own meta.total_seconds
            h, m = divmod(round(src["seconds"] / 60), 60)
            prep_s = sum((src.get("prepare_seconds") or {}).values())  # the file's own
            peak = src.get("peak_rss_mb")
            print(
                f"  ran {f'{h} h {m} min' if h else f'{m} min'} ({src['seconds']:,.0f} s), "
                f"of which {prep_s / 60:.0f} min preparing images, features and bank "
                "(long only when the feature cache was empty)"
                + (f"; peak memory {peak / 1000:.1f} GB" if peak else "")
            )
        if not src["complete"]:
            print("  NOTE: this run is incomplete (interrupted or still running): rows are missing")
print(metrics.format_table(benchmarks.benchmark_rows(results), floatfmt=".4f"))
claims.check(
    stats.seeds_needed(0.01, noise_std) > 1,
    "with the seed noise of the quick subset one seed cannot rank methods 0.01 apart",
    noise_std=noise_std,
)

# %% [markdown]
# The contrasts, each changing one thing, with a reading. Where the benchmark ran
# several seeds the difference is paired per seed and judged with Student's t. Where
# it ran one seed, two learned methods get the seed noise measured in section 3 as a
# stand-in error bar (marked; it was measured on the quick subset, so it is only a
# rough guide for the full protocol); the faiss baselines have none.

# %%
effects = benchmarks.ablation_effects(results, noise_std=noise_std)
print(metrics.format_table(effects, floatfmt=".4f"))

# %%
geometry_rows = [e for e in effects if e["contrast"].startswith("hyperbolic vs Euclidean")]


def geometry_tally(rows):
    """Clear gains, clear losses and differences within noise: "real" counts by its sign."""
    return claims.tally([e["Δ mAP"] for e in rows], [e["reading"].startswith("real") for e in rows])


def plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


def listed(rows):
    return "; ".join(
        f"protocol {e['protocol']} · {e['bits']} bits, {e['contrast'].split(', ')[-1]}: "
        f"{e['Δ mAP']:+.4f}"
        for e in rows
    )


if not geometry_rows:
    geometry_sentence = claims.say("No benchmark file was read, so the table says nothing here.")
else:
    geo = geometry_tally(geometry_rows)
    with_h = geometry_tally([e for e in geometry_rows if e["contrast"].endswith("with hierarchy")])
    no_h = geometry_tally([e for e in geometry_rows if e["contrast"].endswith("no hierarchy")])
    overall = claims.majority_reading(geo)
    if overall == "a measurable gain at most settings" and geo["loss"] == 0:
        meaning = (
            "So on these features the hyperbolic geometry adds a measurable gain at most "
            "settings and a loss at none, as the paper claims."
        )
    elif 2 * with_h["gain"] > sum(with_h.values()) and no_h["loss"] >= no_h["gain"]:
        meaning = (
            "So the geometry pays off together with the hierarchy losses: with them the "
            "hyperbolic model is ahead at most settings, as the paper claims; without them "
            "it is as often below its Euclidean twin as above it, or more often. A "
            "significant difference is not a gain until its sign is read."
        )
    elif overall == "mostly within noise":
        meaning = (
            "So on these frozen features the geometry's effect is mostly within the noise: "
            "the theory of notebook 01 (trees need exponential room) says what the geometry "
            "*can* offer, and this benchmark says that with a frozen backbone, a small head "
            "and a short budget the offer is rarely taken up at a size we can measure."
        )
    else:
        meaning = (
            "So the sign of the geometry's effect depends on the setting: read the gains and "
            "the losses apart before believing either."
        )
    geometry_sentence = claims.say(
        "**What the table says about the geometry.** Of the {n} hyperbolic-vs-Euclidean "
        "contrasts in the benchmark files read here, **{g} are clear gains** ({gains}), "
        "**{l}** ({losses}) and {z} within noise. With the hierarchy losses on "
        "both sides: {wg}, {wl}, {wz} within noise; without them: {ng}, {nl}, {nz} within "
        "noise. {meaning}",
        n=len(geometry_rows),
        g=geo["gain"],
        l=plural(geo["loss"], "clear loss"),
        z=geo["noise"],
        gains=listed(
            [e for e in geometry_rows if e["reading"].startswith("real") and e["Δ mAP"] > 0]
        )
        or "none",
        losses=listed(
            [e for e in geometry_rows if e["reading"].startswith("real") and e["Δ mAP"] < 0]
        )
        or "none",
        wg=plural(with_h["gain"], "gain"),
        wl=plural(with_h["loss"], "loss"),
        wz=with_h["noise"],
        ng=plural(no_h["gain"], "gain"),
        nl=plural(no_h["loss"], "loss"),
        nz=no_h["noise"],
        meaning=meaning,
    )
geometry_sentence

# %%
paired = [e for e in effects if e["seeds"] > 1]  # contrasts with several paired seeds
if not paired:
    noise_sentence = claims.say(
        "No benchmark file with paired seeds was read, so its seed noise is unknown here."
    )
else:
    bench_std = np.array([e["SE"] * np.sqrt(e["seeds"]) for e in paired])  # std of a δ
    med, hi = float(np.median(bench_std)), float(bench_std.max())
    noise_sentence = claims.say(
        "How big is the seed noise at the benchmark's scale? From its paired seeds, the "
        "std of the difference between two 1-seed runs is {lo:.4f}–{hi:.4f} (median "
        "{med:.4f}) over these {n} contrasts, against {quick:.4f} on the quick subset of "
        "section 3. A single-seed difference of 0.01 is {ratio:.1f} such stds at the "
        "median and {ratio_hi:.1f} at the noisiest contrast: {need_med} seed(s) per method "
        "resolve it at the median noise, {need_hi} at the noisiest (`stats.seeds_needed`, "
        "2 SE). {transfer}",
        lo=float(bench_std.min()),
        hi=hi,
        med=med,
        n=len(paired),
        quick=noise_std,
        ratio=0.01 / med,
        ratio_hi=0.01 / hi,
        need_med=stats.seeds_needed(0.01, med),
        need_hi=stats.seeds_needed(0.01, hi),
        transfer=(
            f"The quick subset's seed noise is {noise_std / hi:.1f} times even the noisiest "
            "of these: seed noise measured on a toy subset does not transfer to the full "
            "setting, so measure it where you compare."
            if noise_std > hi
            else "The quick subset's seed noise is within this range here."
        ),
    )
noise_sentence

# %% [markdown]
# How to read each line:
#
# - **hyperbolic vs Euclidean** (with or without the hierarchy): the paper's claim is
#   that hyperbolic subspaces embed the coarse-to-fine structure of the classes with
#   less distortion. Here the backbone is frozen and only a small head learns, so the
#   geometry has less to work with than on a fine-tuned VGG-16; the table measures
#   how much it still adds at each code length. Check the reading column before
#   believing a sign, and whether one seed or several ran.
# - **hierarchy losses**: they need meaningful clusters. With the quick subset, 300
#   images cut into 40/20/10 clusters give clusters of a handful of images (section 3
#   measures what the losses do there); with protocol II's 5,000 images in 100/50/25
#   clusters, or protocol I's 50,000 in 200/100/50, they have structure to use, and in
#   the benchmark files the hierarchy losses are a clear gain at every setting where
#   both were run, with either geometry (checked below).
# - **OPQ vs PQ**: no learning at all. OPQ learns a rotation before splitting the
#   features so that every subspace carries a similar share of the variance, which
#   usually helps PQ. The benchmark's OPQ also reduces 1280 → 256 dimensions (a full
#   1280-d OPQ takes minutes to fit), and that reduction throws information away: on
#   these features OPQ ends level with plain PQ or below it at every setting (checked
#   below). Either way, faiss
#   PQ/OPQ are strong, cheap baselines that a learned method must beat to be worth
#   its training.
# - **HiHPQ vs faiss OPQ**: the whole learned method against that baseline at the
#   same code length.
#
# **Code length.** More bits = more codebooks $M$ = finer quantization, so mAP usually
# rises from 16 to 64 bits. It is not guaranteed: the official protocol I numbers of
# section 5 fall with more bits (printed below), and more codebooks also mean more
# parameters to train in the same budget. What our protocol II runs did, for every method
# of the benchmark files and not only the three in this table, is written below it:

# %%
by_bits = {}
for r in results["rows"]:
    if r["method"] in ("hihpq", "faiss_opq", "euclidean_cpq"):
        by_bits.setdefault((r["protocol"], r["method"]), {})[r["bits"]] = r["map"]
bits_rows = [
    {"protocol": p, "method": m, **{f"{b} bits": v.get(b, "—") for b in (16, 32, 64)}}
    for (p, m), v in sorted(by_bits.items())
]
print(metrics.format_table(bits_rows, floatfmt=".4f") or "(no benchmark rows)")
paper_i = [benchmarks.PAPER_HIHPQ_MAP[("I", b)] for b in (16, 32, 64)]
print("official HiHPQ, protocol I, 16/32/64 bits:", paper_i)
claims.check(paper_i[0] > paper_i[-1], "the official protocol I numbers fall with more bits")
hier = [e for e in effects if e["contrast"].startswith("hierarchy losses")]
claims.check(
    all(e["reading"].startswith("real") and e["Δ mAP"] > 0 for e in hier),
    "in the benchmark files the hierarchy losses are a clear gain at every setting where "
    "both were run, with either geometry",
    rows=[(e["protocol"], e["bits"], e["contrast"], e["Δ mAP"]) for e in hier],
)
opq = [e["Δ mAP"] for e in effects if e["contrast"].startswith("OPQ vs PQ")]
claims.check(
    all(d <= 0.002 for d in opq),
    "on these features OPQ ends level with plain PQ or below it at every setting",
    opq_minus_pq=opq,
)

# %%
every_ii = {}
for r in results["rows"]:
    if r["protocol"] == "II":
        every_ii.setdefault(r["method"], {})[r["bits"]] = r["map"]
full_bits = {m: v for m, v in every_ii.items() if len(v) == 3 and m != "float"}
rising = [m for m, v in full_bits.items() if v[16] < v[32] < v[64]]
not_rising = [m for m in full_bits if m not in rising]
diminishing = [
    m for m in rising if full_bits[m][64] - full_bits[m][32] < full_bits[m][32] - full_bits[m][16]
]


def settings_by_bits(protocol):
    """The settings a protocol's CPU profiles change with the code length, besides M and
    feat_dim, each as "`key` v16, v32, v64"."""
    profiles = {b: config.load_config(config.cpu_profile_path(protocol, b)) for b in (16, 32, 64)}
    return [
        f"`{k}` {', '.join(str(getattr(profiles[b], k)) for b in (16, 32, 64))}"
        for k in (
            "softmax_temp",
            "clip_r",
            "instance_weight",
            "neighbour_weight",
            "codebook_refine",
        )
        if len({getattr(c, k) for c in profiles.values()}) > 1
    ]


per_bits = settings_by_bits("ii")
per_bits_i = settings_by_bits("i")
hihpq_i = {
    r["bits"]: r["map"] for r in results["rows"] if r["protocol"] == "I" and r["method"] == "hihpq"
}
ii_sources = [s for s in results.get("meta", {}).get("sources", []) if s["protocol"] == "II"]
ii_days = sorted({s["started"][:10] for s in ii_sources})
bits_sentence = claims.say(
    "In our protocol II runs mAP rises from 16 to 32 to 64 bits for **{n_up} of {n}** "
    "methods ({up}){dim}. {others}The float row is the same features at every code length, "
    "so it does not move.{settings}{files}{protocol_i}",
    settings=f" The step is not the code length alone: the profiles at 16, 32 and 64 bits "
    f"also differ in {'; '.join(per_bits)} (the reference's values per code length, or "
    f'validation\'s where docs/fidelity.md, "settings per code length", says so).'
    if per_bits
    else "",
    files=f" Nor is it one run: the code lengths come from {len(ii_sources)} benchmark files "
    f"started on {' and '.join(ii_days)} (listed in section 4's first cell)."
    if len(ii_days) > 1
    else "",
    protocol_i=f" At protocol I HiHPQ scores "
    f"{' / '.join(f'{hihpq_i[b]:.4f}' for b in (16, 32, 64))} at 16, 32 and 64 bits, and "
    f"its profiles differ with the code length in {'; '.join(per_bits_i)} too, so that row "
    "is not a code-length curve either."
    if len(hihpq_i) == 3 and per_bits_i
    else "",
    n_up=len(rising),
    n=len(full_bits),
    up=", ".join(f"`{m}`" for m in rising) or "none",
    dim=f", with smaller gains from 32 to 64 than from 16 to 32 for {len(diminishing)} of them"
    if diminishing
    else "",
    others="".join(
        f"`{m}` does not rise steadily "
        f"({', '.join(f'{full_bits[m][b]:.4f}' for b in (16, 32, 64))}). "
        for m in not_rising
    ),
)
float_ii = sorted(every_ii.get("float", {}).values())
claims.check(
    all(v[16] < v[32] < v[64] for m, v in full_bits.items() if m in rising)
    and (not float_ii or float_ii[0] == float_ii[-1]),
    "mAP rises from 16 to 32 to 64 bits for the methods named; the float row is the same "
    "at every code length",
    float_row=float_ii,
)
paper_ii_map = [benchmarks.PAPER_HIHPQ_MAP[("II", b)] for b in (16, 32, 64)]
claims.check(
    paper_ii_map == sorted(paper_ii_map),
    "more bits, finer quantization: mAP usually rises from 16 to 64 bits (the paper's "
    "protocol II numbers do)",
    paper_ii=paper_ii_map,
)
bits_sentence

# %% [markdown]
# ## 5. Our numbers beside the paper's
#
# The paper's setting, run with HiHPQ's official code on a GPU (numbers re-run by
# others), and MeCoQ (the Euclidean contrastive-quantization method HiHPQ builds on)
# from its own README, beside ours from the benchmark files:

# %%
print(metrics.format_table(benchmarks.paper_comparison_rows(results), floatfmt=".3f"))

# %% tags=["claim"]
ours_vs_paper = [
    (r["protocol"], r["bits"], r["ours: HiHPQ"], r["HiHPQ (official, VGG-16)"])
    for r in benchmarks.paper_comparison_rows(results)
    if r["ours: HiHPQ"] != "—"
]
below = [(q, b, p - o) for q, b, o, p in ours_vs_paper if o < p]
above = [(q, b, o - p) for q, b, o, p in ours_vs_paper if o >= p]
if ours_vs_paper:
    quick = (
        " (the quick benchmark file: 300 training images)" if results["meta"].get("quick") else ""
    )
    parts = []
    if below:
        gaps = [g for _, _, g in below]
        parts.append(
            f"Ours sit below the paper's in {len(below)} of the {len(ours_vs_paper)} cells that "
            f"both report, by {min(gaps):.3f} to {max(gaps):.3f} mAP"
        )
    if above:
        where = ", ".join(f"{q} · {b}, +{g:.3f}" for q, b, g in above)
        if below:
            parts.append(f"at or above it in {len(above)} ({where})")
        else:
            parts.append(
                f"Ours sit at or above the paper's in {len(above)} of the "
                f"{len(ours_vs_paper)} cells ({where})"
            )
    display_gap = claims.say("; ".join(parts) + quick + ".")
else:
    display_gap = claims.say("No benchmark file was read: nothing of ours to set beside the paper.")
claims.check(
    all(o != p for _, _, o, p in ours_vs_paper),
    "our CPU numbers differ from the paper's numbers in every cell both report",
    cells=ours_vs_paper,
)
display_gap

# %% [markdown]
# The differences between the paper's setting and ours. None is measured one at a time
# against the paper here; the order is what we expect, not a measurement (for the fourth,
# what is printed below is the last epoch against the validation-selected one, not how much
# the reference's test-query selection adds):
#
# 1. **Backbone and resolution.** The paper fine-tunes the last layers of an
#    ImageNet VGG-16 on 224-px images (CIFAR's 32-px images upscaled), trained
#    together with the quantizer. We use a **frozen** EfficientNet-Lite2 at 160 px (the
#    same backbone and resolution for both benchmark protocols and `make demo`, with
#    different bank sizes and epochs, printed below; the only trainable part is a small
#    head), because a CPU cannot push 50 epochs of
#    fresh augmentations through a CNN. Frozen features bound what a head trained on them
#    can learn. The float-feature row is exact cosine search on those same features
#    (1,280 dimensions: 20,480 bits per image as cached in float16, 40,960 as searched in
#    float32, which the results files record), not that bound: HiHPQ's trained head
#    ends above the float-feature row in every cell of the benchmark (checked below).
# 2. **Augmentation budget.** The paper draws two fresh augmentations of every image
#    at every step for 50 epochs; we draw pairs from a bank of a few pre-computed views
#    per image, for the epochs printed below (each benchmark file records its own).
# 3. **Data.** Our CIFAR-10 copy is stored as JPEG (`cifar10-jpeg.tar.gz`): the images
#    were recompressed, which blurs fine texture. The original is lossless.
# 4. **Model selection.** The reference code keeps the epoch with the best mAP on the
#    *test* queries, which flatters its number; we select on validation queries carved
#    from the database and report the test mAP of that epoch (notebook 06). The
#    `map_final` column of section 2's per-run table (the last epoch) beside `map`
#    (validation-selected) shows how much the choice moves the number (printed below).
# 5. **Subset** (only where section 4 read the quick file). The quick file uses 300
#    training images (not 5,000) and 3,000 database images: its numbers only show that
#    the pipeline runs.
# 6. **The profiles' own departures**, chosen on validation, which lift our numbers: at
#    some cells an instance-wise loss weighed 0.6 (the paper's 0.1) and a term that keeps
#    the frozen features' neighbours, and at II · 16 Lloyd iterations on the codebooks
#    after training (`codebook_refine`); section 3 lists the settings per code length.

# %% tags=["claim"]
paper_ii_cfg = config.load_config(
    runtime.project_dir() / "configs/paper/paper_cifar10_ii_32bits.yaml"
)
claims.check(
    paper_ii_cfg.epochs == 50 and paper_ii_cfg.online_augmentation,
    "the paper draws fresh augmentations of every image at every step for 50 epochs",
)
profiles = {
    (p, b): config.load_config(config.cpu_profile_path(p, b))
    for p in ("I", "II")
    for b in (16, 32, 64)
}
claims.check(
    any(c.instance_weight == 0.6 for c in profiles.values())
    and paper_ii_cfg.instance_weight == 0.1
    and any(c.neighbour_weight > 0 for c in profiles.values())
    and [k for k, c in profiles.items() if c.codebook_refine] == [("II", 16)],
    "the profiles' own departures: an instance weight of 0.6 at some cells (the paper's 0.1), "
    "a neighbour term, Lloyd refinement of the codebooks after training at II · 16",
)
float_map = {
    (r["protocol"], r["bits"]): r["map"] for r in results["rows"] if r["method"] == "float"
}
hihpq_map = {
    (r["protocol"], r["bits"]): r["map"] for r in results["rows"] if r["method"] == "hihpq"
}
claims.check(
    all(hihpq_map[c] > float_map[c] for c in hihpq_map if c in float_map),
    "HiHPQ's trained head ends above the float-feature row in every cell of the benchmark",
    hihpq=hihpq_map,
    float=float_map,
)
budget = {}  # protocol -> epochs of the benchmark's HiHPQ runs (each run records its own)
for r in results["rows"]:
    if r["method"] == "hihpq":
        budget.setdefault(r["protocol"], set()).update(x["epochs"] for x in r.get("runs", []))
cfg_epochs = {p: config.load_config(config.cpu_profile_path(p, 32)).epochs for p in budget}
overridden = [p for p, e in budget.items() if e != {cfg_epochs[p]}]
argv_epochs = {  # what the benchmark's command line passed, from each file's meta
    src["protocol"]: src["argv"][src["argv"].index("--epochs") + 1]
    for src in results["meta"].get("sources", [])
    if "--epochs" in src["argv"][:-1]
}
claims.say(
    "The budget of the benchmark files read here: {bench}{override}. The live runs of "
    "section 2: a bank of {qv} views per image, {qe} epochs. The paper: fresh views at "
    "every step, {pe} epochs.",
    override=""
    if not overridden
    else " ("
    + "; ".join(
        f"protocol {p} ran with `--epochs {argv_epochs.get(p, '?')}` on the command line, "
        f"while `configs/cpu/cpu_cifar10_{p.lower()}_32bits.yaml` says {cfg_epochs[p]}"
        for p in overridden
    )
    + ")",
    bench="; ".join(
        f"protocol {p}: a bank of {results.get('protocols', {}).get(p, {}).get('n_views', '?')} views "
        f"per image, {', '.join(map(str, sorted(e)))} epochs"
        for p, e in sorted(budget.items(), key=lambda kv: (len(kv[0]), kv[0]))
    )
    or "none read",
    qv=base.n_views,
    qe=base.epochs,
    pe=paper_ii_cfg.epochs,
)

# %%
sel_vs_final = [r["map_final"] - r["map"] for r in runs]
ours_ii32 = [
    r for r in results["rows"] if (r["protocol"], r["bits"], r["method"]) == ("II", 32, "hihpq")
]
claims.say(
    "The last epoch's test mAP minus the validation-selected epoch's, over the live runs: "
    "{lo:+.4f} to {hi:+.4f}; {last_clause}. For scale at "
    "protocol II, 32 bits: the benchmark file's HiHPQ scores **{ours}**, against "
    "{paper:.3f} for the official code on a GPU (re-run by others) and {mecoq:.3f} for "
    "MeCoQ (its README). Notebook 06 in full mode runs the demo's 160-px setting and prints its "
    "own number.",
    lo=min(sel_vs_final),
    hi=max(sel_vs_final),
    last_clause=(
        f"the last epoch scored higher in {sum(d > 0 for d in sel_vs_final)} of "
        f"{len(sel_vs_final)} runs, so on these short runs honest selection cost test mAP "
        + (
            "more often than not"
            if 2 * sum(d > 0 for d in sel_vs_final) > len(sel_vs_final)
            else "in at most half of them"
        )
    ),
    ours=(
        f"{ours_ii32[0]['map']:.3f}"
        + (
            f" ± {ours_ii32[0]['map_std']:.3f} ({ours_ii32[0]['n_seeds']} seeds)"
            if ours_ii32[0].get("n_seeds", 1) > 1
            else ""
        )
        if ours_ii32
        else "— (no benchmark file)"
    ),
    paper=benchmarks.PAPER_HIHPQ_MAP[("II", 32)],
    mecoq=benchmarks.MECOQ_README_MAP[("II", 32)],
)

# %% [markdown]
#
# ## 6. Reproducing the paper on a GPU
#
# `configs/paper/` holds one file per script of the reference repository
# (`scripts/cifar10_ii/32bits.sh` becomes `configs/paper/paper_cifar10_ii_32bits.yaml`,
# and so on for protocol I, Flickr25K and NUS-WIDE). They select VGG-16 at 224 px with
# online augmentation and `device: cuda`. On a machine with a GPU and internet access
# (the VGG-16 weights are downloaded by torchvision the first time):
#
# ```bash
# export HIHPQ_CIFAR10=/path/to/cifar10          # the original (PNG/pickle) copy, if you can
# hihpq train configs/paper/paper_cifar10_ii_32bits.yaml          # runs/paper_cifar10_ii_32bits/
# hihpq train configs/paper/paper_cifar10_ii_16bits.yaml
# hihpq train configs/paper/paper_cifar10_ii_64bits.yaml
# hihpq train configs/paper/paper_cifar10_i_32bits.yaml           # protocol I: 50,000 training images
# hihpq train configs/paper/paper_cifar10_ii_32bits.yaml --set seed=1 --out runs/paper_ii_32_seed1
# hihpq train configs/paper/paper_cifar10_ii_32bits.yaml --resume  # continue an interrupted run
# hihpq evaluate runs/paper_cifar10_ii_32bits                       # mAP@1000 on the test queries
# ```
#
# Each run writes `results.json` with the validation-selected and final test mAP; run
# three or more seeds per setting and compare means with the paired standard error of
# section 3. Expect the protocol II runs to take hours on one GPU (50 epochs, a VGG-16
# forward and backward pass per view).

# %% [markdown]
# ### Reference mode: the paper's method as its code runs it
#
# Side by side with the reference implementation on identical tensors, most of our code
# agrees to rounding; ten details did not, and each is now a config option whose
# reference value every `configs/paper/` file sets (`config.REFERENCE_OPTIONS`):
# the subspace convention (`subspace: ambient` — the first of each chunk of head outputs
# is discarded, so a 32-bit subspace is $\mathbb H^{15}$), the two hierarchy losses as the
# reference writes them (`prototype_loss: reference`, `instance_loss: reference`, taught
# in notebook 05), Ward on the raw head outputs (`cluster_input: raw`), one learning rate
# for every parameter group (`backbone_lr: shared`), the model left in eval mode after
# the first clustering (`eval_mode_after_clustering: true`), the `numpy.linspace`
# warm-up and the last partial batch (`lr_warmup: linspace`, `drop_last: false`), and
# two that act only on the online (GPU) path: a frozen VGG-16's dropout left on until the
# first clustering (`frozen_backbone_dropout: true`) and the reference's Flickr25K /
# NUS-WIDE image geometry (`image_geometry: reference`: `Resize(256) + CenterCrop(224)`,
# training crops from the whole image). The paper configs also take the reference's seed
# (`seed: 2021`, the same split permutations) and NUS-WIDE list (`train_list: train_10500`).
# [docs/fidelity.md](../docs/fidelity.md) lists them with the test that pins each one.
# The paper configs load in reference mode:

# %%
paper_ii = config.load_config(runtime.project_dir() / "configs/paper/paper_cifar10_ii_32bits.yaml")
assert paper_ii.fidelity() == config.REFERENCE_OPTIONS
for key, value in paper_ii.fidelity().items():
    print(f"{key:28s} paper: {value!s:10s} CPU profile: {getattr(config.TrainConfig(), key)}")
claims.check(
    len(config.REFERENCE_OPTIONS) == 10,
    "ten details of our code did not agree with the reference: one config option each",
    n=len(config.REFERENCE_OPTIONS),
)

# %% [markdown]
# Why offer the other behaviour at all? Some of the reference's choices look like
# accidents (the anchor competing with its own neighbour in the instance loss, a
# prototype counted once per batch member, dropout silently switched off after the
# warm-up), and a student reproducing the paper should be able to ask whether they
# matter. We measured those that change a computation on a frozen, cached backbone (seven
# of the ten, in six rows: `schedule` takes `lr_warmup` and `drop_last` together;
# `backbone_lr`, `frozen_backbone_dropout` and `image_geometry` act only where the backbone
# runs at every step or images are read from files, so they have no row) on the CPU
# profile of the time — protocol II, 32 bits,
# 12 epochs, 3 seeds paired, the option alone on top of our earlier behaviour, HiHPQ and
# its Euclidean twin with the same option (`python -m benchmarks.fidelity_ablation` on
# 2026-12-01, commit 7bf60ec, whose CPU profile was EfficientNet-Lite0 at 128 px; table
# in `benchmarks/results/fidelity/`). The profile has since moved to Lite2 at 160 px, so
# these mAPs sit below section 4's (checked below): compare the rows with each other, not
# with the benchmark. Per row: the HiHPQ test mAP, its paired change against our earlier
# behaviour (± the std of the paired differences), the validation mAP and its change,
# and the hyperbolic − Euclidean margin:

# %%
for line in benchmarks.fidelity_rows():
    print(line)
assert config.TrainConfig().fidelity() == config.CPU_DEFAULT_OPTIONS
fid_ii = benchmarks.load_fidelity_results("II", 32)
if fid_ii is not None and ours_ii32:
    claims.check(
        "--epochs 12" in fid_ii["meta"]["command"]
        and max(r["map"] for r in fid_ii["runs"]) < ours_ii32[0]["map"],
        "these mAPs (12 epochs, the CPU profile of the time) sit below section 4's",
    )


# %%
def fid_per_seed(fid, row, key):
    """HiHPQ's ``key`` (``map`` or ``val_map_best``) of a fidelity row, in seed order."""
    runs_ = [r for r in fid["runs"] if r["row"] == row and r["geometry"] == "lorentz"]
    return [r[key] for r in sorted(runs_, key=lambda r: r["seed"])]


def fid_vs_reference(fid, key):
    """The CPU defaults minus full reference mode, paired per seed."""
    return stats.paired_difference(
        fid_per_seed(fid, "reference_losses_clustering", key),
        fid_per_seed(fid, "reference", key),
    )


if fid_ii is None:
    fidelity_sentence = claims.say("No fidelity table is committed here, so nothing to read.")
else:
    rows_ii = {r["row"]: r for r in fid_ii["summary"]}
    combo = rows_ii["reference_losses_clustering"]
    singles = [
        r
        for r in rows_ii
        if r not in ("current", "reference", "reference_losses_clustering")
        and "delta_val" in rows_ii[r]["lorentz"]
    ]
    val = {r: rows_ii[r]["lorentz"]["delta_val"] for r in [*singles, "reference_losses_clustering"]}
    t95 = val["reference_losses_clustering"]["t95"]
    up = [r for r in singles if val[r]["delta"] > 0]
    passed = [r for r in singles if abs(val[r]["delta"]) >= t95 * val[r]["se"]]
    cpu, ref = config.CPU_DEFAULT_OPTIONS, config.REFERENCE_OPTIONS
    claims.check(
        set(up) == set(combo["options"])
        and all(cpu[o] == ref[o] for o in combo["options"])
        and all(cpu[o] != ref[o] for r in singles if r not in up for o in rows_ii[r]["options"]),
        "the CPU profile takes from the reference the options that moved validation up alone, "
        "and keeps ours for the rest",
        up=up,
        combined=combo["options"],
    )
    vs_ref = fid_vs_reference(fid_ii, "val_map_best")
    combo_val = val["reference_losses_clustering"]
    fidelity_sentence = claims.say(
        "Read the rows with section 3 in mind: with {n} seeds a paired difference must "
        "exceed $t$ = {t:.1f} standard errors (SE = the ± above / √{n}). On **validation** "
        "mAP (the only number used to choose), each reference option alone moved HiHPQ "
        "by {singles}: **{n_pass} of {m}** clear that bar alone{alone}. The {k} that moved "
        "it up ({up}), together (row `reference_losses_clustering`), moved it by {cd:+.4f} "
        "({cx:.1f} SE): {combo_reading}. So the CPU profile takes those {k} from the "
        "reference{untested} and keeps ours for the rest (`config.CPU_DEFAULT_OPTIONS`). "
        "Against full "
        "reference mode, the combination's validation mAP is {vs_dir} by {vsd:+.4f} "
        "({vsx:.1f} SE): {vs_reading}. The HiHPQ − Euclidean margin was {m_cur:+.4f} with "
        "our earlier behaviour and {m_combo:+.4f} with the combination. The GPU configs "
        "stay in full reference mode: they exist to reproduce the paper as its code runs.",
        n=combo_val["n"],
        t=t95,
        singles=", ".join(
            f"`{r}` {val[r]['delta']:+.4f} ({abs(val[r]['delta']) / val[r]['se']:.1f} SE)"
            for r in singles
        ),
        n_pass=len(passed),
        m=len(singles),
        alone=": each is a hint, not a verdict" if not passed else "",
        k=len(up),
        up=", ".join(f"`{r}`" for r in up),
        cd=combo_val["delta"],
        cx=abs(combo_val["delta"]) / combo_val["se"],
        combo_reading="a real change"
        if abs(combo_val["delta"]) >= t95 * combo_val["se"]
        else "still within noise",
        vs_dir=claims.direction(vs_ref["delta"], 0.0),
        vsd=vs_ref["delta"],
        vsx=abs(vs_ref["delta"]) / vs_ref["se"],
        vs_reading="a real difference"
        if abs(vs_ref["delta"]) >= vs_ref["t95"] * vs_ref["se"]
        else "within noise, so the choice over full reference mode is a hint, not a verdict",
        m_cur=rows_ii["current"]["margin"]["delta"],
        m_combo=combo["margin"]["delta"],
        untested="".join(
            f", as well as `{o}: {cpu[o]}` (no row: it acts only when a backbone trains, "
            "and these runs train on frozen features)"
            for o in ref
            if cpu[o] == ref[o] and o not in {x for r in rows_ii.values() for x in r["options"]}
        ),
    )
fidelity_sentence

# %% [markdown]
# Does the choice carry over to protocol I (all 50,000 training images, scalable Ward)?
# The same script at protocol I (`--protocol I --epochs 8`, 2026-12-01, commit b716f7a)
# compared the two settings that matter, full
# reference mode and the CPU defaults, 3 seeds paired (no `current` row there, so no
# "vs current" column):

# %%
for line in benchmarks.fidelity_rows(protocol="I"):
    print(line)

# %%
fid_i = benchmarks.load_fidelity_results("I", 32)
if fid_i is None or fid_ii is None:
    protocol_i_sentence = claims.say(
        "No protocol I fidelity table is committed here, so nothing to compare."
    )
else:
    rows_i = {r["row"]: r for r in fid_i["summary"]}
    dv, dt = fid_vs_reference(fid_i, "val_map_best"), fid_vs_reference(fid_i, "map")
    real = [abs(d["delta"]) >= d["t95"] * d["se"] for d in (dv, dt)]
    margin = {
        (p, row): rows[row]["margin"]["delta"]
        for p, rows in (("I", rows_i), ("II", rows_ii))
        for row in ("reference", "reference_losses_clustering")
    }
    wider = [
        margin["I", row] > margin["II", row] for row in ("reference", "reference_losses_clustering")
    ]
    protocol_i_sentence = claims.say(
        "At protocol I, the CPU defaults minus full reference mode, paired per seed: "
        "validation {dv:+.4f} ± {sv:.4f}, test {dt:+.4f} ± {st:.4f} (± the std of the "
        "paired differences; {xv:.1f} and {xt:.1f} SE): {reading}. The hyperbolic − "
        "Euclidean margin is {mi_ref:+.4f} in reference mode and {mi_cpu:+.4f} with the CPU "
        "defaults here, against {mii_ref:+.4f} and {mii_cpu:+.4f} at protocol II: {wider} "
        "(`docs/fidelity.md` has the paired figures).",
        dv=dv["delta"],
        sv=dv["std"],
        dt=dt["delta"],
        st=dt["std"],
        xv=abs(dv["delta"]) / dv["se"],
        xt=abs(dt["delta"]) / dt["se"],
        reading=(
            f"{claims.direction(dv['delta'], 0, up='ahead', down='behind')} on validation and "
            f"{claims.direction(dt['delta'], 0, up='ahead', down='behind')} on test, "
            + (
                "both real"
                if all(real)
                else "but within noise: with three seeds that is a hint, not a verdict"
            )
        ),
        mi_ref=margin["I", "reference"],
        mi_cpu=margin["I", "reference_losses_clustering"],
        mii_ref=margin["II", "reference"],
        mii_cpu=margin["II", "reference_losses_clustering"],
        wider="wider at protocol I under both settings"
        if all(wider)
        else "not wider at protocol I under both settings",
    )
protocol_i_sentence

# %% [markdown]
# ### Exercise 3 — how much more work is the paper's setting?
# The paper's protocol I, 64-bit configuration is `configs/paper/paper_cifar10_i_64bits.yaml`;
# our CPU profile of the same cell is `configs/cpu/cpu_cifar10_i_64bits.yaml` (paths
# relative to `runtime.project_dir()`; load them with `config.load_config`). How many times
# more **pixels per input image** does the paper's backbone see (images are square,
# `cfg.resolution` pixels on a side), and how many times more **epochs** does it train?
# Store `answer = (pixel_ratio, epoch_ratio)`: two floats, paper over CPU.

# %%
answer = None  # your code: a tuple (float, float)

# %% jupyter={"source_hidden": true} tags=["solution"]
if answer is None:
    paper_cfg = config.load_config(
        runtime.project_dir() / "configs/paper/paper_cifar10_i_64bits.yaml"
    )
    cpu_cfg = config.load_config(runtime.project_dir() / "configs/cpu/cpu_cifar10_i_64bits.yaml")
    answer = (
        (paper_cfg.resolution / cpu_cfg.resolution) ** 2,
        paper_cfg.epochs / cpu_cfg.epochs,
    )

# %% tags=["check"]
assert answer is not None, "set answer = (pixel_ratio, epoch_ratio)"
paper_check = config.load_config(
    runtime.project_dir() / "configs/paper/paper_cifar10_i_64bits.yaml"
)
cpu_check = config.load_config(runtime.project_dir() / "configs/cpu/cpu_cifar10_i_64bits.yaml")
pix, ep = exercises.check_config_ratios(answer, paper_check, cpu_check)
bench_epochs = sorted(budget.get("I", ()))  # what the benchmark's protocol I rows ran
bench_note = (
    f"; the benchmark's protocol I rows override it to {bench_epochs[0]}, "
    f"{paper_check.epochs / bench_epochs[0]:.2f}x"
    if len(bench_epochs) == 1 and bench_epochs[0] != cpu_check.epochs
    else ""
)
print(
    f"Exercise 3: correct: {paper_check.backbone} at {paper_check.resolution} px sees {pix:.2f}x "
    f"the pixels of {cpu_check.backbone} at {cpu_check.resolution} px, for {ep:.2f}x the "
    f"epochs of the config file ({paper_check.epochs} against {cpu_check.epochs}{bench_note}), "
    f"and augments every image afresh at every step (online augmentation) where the CPU "
    f"profile draws from a bank of {cpu_check.n_views} views per image computed once"
)

# %% [markdown]
# Compare the rest of the two files: the paper fine-tunes the backbone's last layers
# (`trainable_layers`, `lr_backbone_scale`) on fresh augmentations at every step, while
# the CPU profile keeps the backbone frozen and trains on a bank of a few views per
# image (`n_views`).
#
# ## Summary
# - An ablation switches one component off through config overrides
#   (`benchmarks.ABLATIONS`): geometry (`geometry=euclidean`) and hierarchy
#   (`proto_weight=0, instance_weight=0`).
# - mAP carries seed noise (training randomness), query noise (which test images)
#   and hardware noise. Pair runs by seed, report mean ± SE, and call a difference
#   real only beyond $t_{n-1}$ SE, about 2 SE with many seeds
#   (`stats.paired_difference`, `stats.verdict`, `stats.paired_bootstrap`).
#   Seeds needed grow as $(2\,\mathrm{std}/\Delta)^2$, and the seed noise of a toy
#   subset says little about the full setting's: measure it where you compare.
# - A difference that stands out of the noise still has a sign: count the clear gains
#   and the clear losses apart.
# - Where our CPU numbers sit below the paper's (section 5 counts the cells from the
#   files), the likeliest main cause is the frozen EfficientNet-Lite2 at 160 px in place
#   of a fine-tuned VGG-16 at 224 px; the JPEG copy, the shorter augmentation budget and
#   honest (validation) model selection are the other differences; none is measured one
#   at a time against the paper here. Where a cell reaches the paper, the profile's own
#   departures (an instance weight of 0.6, a neighbour term, Lloyd refinement of the
#   codebooks after training) are part of why.
# - `hihpq train configs/paper/...yaml` runs the paper's setting on a GPU.
#
# ## Further reading
# - Qiu, Liu, Chen & King, *HiHPQ: Hierarchical Hyperbolic Product Quantization for
#   Unsupervised Image Retrieval*, AAAI 2024 (ablation table, main results);
#   code: https://github.com/zexuanqiu/HiHPQ.
# - Wang et al., *Contrastive Quantization with Code Memory for Unsupervised Image
#   Retrieval* (MeCoQ), AAAI 2022; the README of https://github.com/gimpong/AAAI22-MeCoQ
#   on results that change with the GPU.
# - Ge et al., *Optimized Product Quantization*, TPAMI 2014 (OPQ).
# - Bouthillier et al., *Accounting for Variance in Machine Learning Benchmarks*, MLSys
#   2021 (seeds, data sampling and how many runs a comparison needs).
# - Efron & Tibshirani, *An Introduction to the Bootstrap*, Chapman & Hall 1993.
# - Dodge et al., *Show Your Work: Improved Reporting of Experimental Results*, EMNLP
#   2019.
# - The project's `benchmarks/README.md` (every column of the table).
