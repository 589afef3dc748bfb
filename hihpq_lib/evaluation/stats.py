r"""Statistics of retrieval experiments: paired differences over seeds, verdicts, seeds
needed, ablation tables, a paired bootstrap over queries, and cluster purity.

Telling a difference from noise
-------------------------------
Two methods trained with the same seeds ``s = 1..n`` give paired mAPs ``a_s`` and
``b_s``. With :math:`\delta_s = a_s - b_s`,

.. math:: \bar\delta = \frac1n \sum_s \delta_s, \qquad
          \mathrm{SE} = \frac{\operatorname{std}(\delta)}{\sqrt n}
          \quad(\operatorname{std} \text{ with } n - 1),

and a difference is read as real when :math:`|\bar\delta| \ge t \cdot \mathrm{SE}`, with
:math:`t` the 97.5% quantile of Student's t with :math:`n - 1` degrees of freedom (4.30
for 3 seeds, 2.78 for 5, about 2 for many): the 95% interval then excludes 0. See
:func:`paired_difference` and :func:`verdict`. The test queries are a sample too:
:func:`paired_bootstrap` resamples them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from hihpq_lib.utils.arrays import to_numpy

__all__ = [
    "paired_difference",
    "t_multiplier",
    "verdict",
    "std_text",
    "seeds_needed",
    "mean_std",
    "compute_deltas",
    "ablation_table",
    "paired_bootstrap",
    "purity",
]


def paired_bootstrap(
    a, b, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Bootstrap confidence interval of ``mean(a) - mean(b)`` for paired samples.

    ``a[q]`` and ``b[q]`` are two models' scores on the same query ``q`` (e.g. per-query
    AP); queries are resampled with replacement ``n_boot`` times.

    Parameters
    ----------
    a, b : (Q,) float arrays or tensors
    n_boot : int
    level : float in (0, 1), the interval's coverage
    seed : int

    Returns
    -------
    dict with ``diff`` (the observed mean difference), ``low``, ``high`` (percentile
    interval) and ``p_a_better`` (fraction of resamples with a positive difference).

    >>> r = paired_bootstrap([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    >>> r["diff"], r["low"], r["high"]
    (0.0, 0.0, 0.0)
    """
    x = to_numpy(torch.as_tensor(a), np.float64).reshape(-1)
    y = to_numpy(torch.as_tensor(b), np.float64).reshape(-1)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"a and b must be non-empty and paired, got {x.shape} and {y.shape}")
    if not np.isfinite(x).all() or not np.isfinite(y).all():
        raise ValueError("scores must be finite (NaN or inf found)")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    d = x - y
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(int(n_boot), d.size))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return {
        "diff": float(d.mean()),
        "low": float(lo),
        "high": float(hi),
        "p_a_better": float((means > 0).mean()),
    }


def purity(clusters, labels) -> float:
    """Fraction of items whose label is the majority label of their cluster.

    1 means every cluster holds one label only (clusters may still split a label into
    several clusters: purity rewards *nesting* in the labels, unlike the ARI).

    >>> purity([0, 0, 1, 1, 2], [5, 5, 5, 7, 7])
    0.8
    """
    c = to_numpy(clusters).reshape(-1)
    y = to_numpy(labels).reshape(-1)
    if c.shape != y.shape or c.size == 0:
        raise ValueError(
            f"clusters and labels must be non-empty and of equal length, got "
            f"{c.shape} and {y.shape}"
        )
    _, ci = np.unique(c, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    table = np.zeros((ci.max() + 1, yi.max() + 1), dtype=np.int64)
    np.add.at(table, (ci, yi), 1)
    return float(table.max(axis=1).sum() / c.size)


def ablation_table(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per method from :func:`run_ablation`'s runs: mean, std and range over seeds.

    >>> ablation_table([{"method": "a", "seed": 0, "map": 0.5}, {"method": "a", "seed": 1, "map": 0.6}])
    [{'method': 'a', 'seeds': 2, 'mean mAP': 0.55, 'std': 0.0707, 'min': 0.5, 'max': 0.6}]
    """
    out = []
    for method in dict.fromkeys(r["method"] for r in runs):
        maps = np.array([r["map"] for r in runs if r["method"] == method], dtype=float)
        std = float(maps.std(ddof=1)) if len(maps) > 1 else 0.0
        out.append(
            {
                "method": method,
                "seeds": len(maps),
                "mean mAP": round(float(maps.mean()), 4),
                "std": round(std, 4),
                "min": round(float(maps.min()), 4),
                "max": round(float(maps.max()), 4),
            }
        )
    return out


# ----------------------------------------------------------------------------- noise
def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    r"""Mean, std and standard error of the paired differences ``a[s] - b[s]``.

    ``a`` and ``b`` hold one mAP per seed, in the same seed order.

    Returns
    -------
    dict with ``delta`` (mean difference), ``std`` (sample std of the differences, 0 for
    one seed), ``se`` (``std / sqrt(n)``), ``n`` and ``t95`` (:func:`t_multiplier`: the
    factor of ``se`` that a real difference must exceed; NaN for one seed).

    >>> d = paired_difference([0.60, 0.62, 0.61], [0.59, 0.60, 0.60])
    >>> round(d["delta"], 4), round(d["std"], 4), round(d["se"], 4), d["n"], round(d["t95"], 2)
    (0.0133, 0.0058, 0.0033, 3, 4.3)
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(
            f"a and b must be two equally long lists of per-seed mAPs, got {a.shape}, {b.shape}"
        )
    diff = a - b
    n = diff.size
    std = float(diff.std(ddof=1)) if n > 1 else 0.0
    return {
        "delta": float(diff.mean()),
        "std": std,
        "se": std / math.sqrt(n),
        "n": n,
        "t95": t_multiplier(n),
    }


def t_multiplier(n: int, level: float = 0.95) -> float:
    """Student's t quantile for a two-sided ``level`` interval of a mean of ``n`` values.

    ``n - 1`` degrees of freedom; NaN for ``n < 2`` (no spread, no interval).

    >>> [round(t_multiplier(n), 2) for n in (3, 5, 30)]
    [4.3, 2.78, 2.05]
    """
    if n < 2:
        return float("nan")
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, n - 1))


def std_text(std: float, decimals: int) -> str:
    """A std over seeds to ``decimals`` decimals, or to one significant digit where that
    would round a nonzero std to 0 (three seeds can agree to 1e-5: "0.000" would read as
    one run repeated).

    >>> std_text(0.0054, 3), std_text(1.69e-05, 3), std_text(1.69e-05, 4), std_text(0.0, 3)
    ('0.005', '2e-05', '2e-05', '0.000')
    """
    if 0 < std < 0.5 * 10.0**-decimals:
        return f"{std:.1g}"
    return f"{std:.{decimals}f}"


def verdict(delta: float, se: float, *, z: float = 2.0, n: int | None = None) -> str:
    """A plain reading of a difference and its standard error: real when ``|delta| >= z se``.

    ``z = 2`` is the large-sample rule (many queries, many seeds); with ``n`` seeds pass
    ``z = t_multiplier(n)`` (``paired_difference(...)["t95"]``). ``n = 1`` (or a NaN
    ``se``) means there is no error bar at all.

    >>> verdict(0.010, 0.002)
    'real (|Δ| = 5.0 SE)'
    >>> verdict(0.010, 0.004, z=4.3)
    'noise (|Δ| = 2.5 SE < 4.3)'
    >>> verdict(0.00893, 0.00207, z=4.303)  # 4.31 SE: one decimal would read "4.3 = 4.3"
    'real (|Δ| = 4.31 SE ≥ 4.30)'
    >>> verdict(0.010, 0.0, n=1)
    'no error bar (1 run)'
    >>> verdict(0.010, 0.0, n=3)
    'real (identical on every seed)'
    """
    if n == 1 or not math.isfinite(se):
        return "no error bar (1 run)"
    if se <= 0:
        return "real (identical on every seed)" if delta != 0 else "no difference"
    if not math.isfinite(z) or z <= 0:
        raise ValueError(f"z must be a positive number, got {z}")
    ratio = abs(delta) / se
    if f"{ratio:.1f}" == f"{z:.1f}":  # one decimal would print the ratio as the threshold
        return f"{'real' if ratio >= z else 'noise'} (|Δ| = {ratio:.2f} SE {'≥' if ratio >= z else '<'} {z:.2f})"
    return (
        f"real (|Δ| = {ratio:.1f} SE)" if ratio >= z else f"noise (|Δ| = {ratio:.1f} SE < {z:.2g})"
    )


def seeds_needed(delta: float, std: float, *, z: float = 2.0) -> int:
    r"""Seeds needed before a true difference ``delta`` stands ``z`` standard errors from 0.

    With paired differences of standard deviation ``std``:
    :math:`z \cdot \mathrm{std} / \sqrt n \le |\delta| \iff n \ge (z\,\mathrm{std}/\delta)^2`.

    >>> seeds_needed(0.01, 0.01), seeds_needed(0.01, 0.004)
    (4, 1)
    """
    if delta == 0:
        raise ValueError("delta must be non-zero: a zero difference is never resolved")
    return max(1, math.ceil((z * std / abs(delta)) ** 2))


# ----------------------------------------------------------------------------- benchmark
def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value).

    >>> mean_std([1.0, 2.0, 3.0])
    (2.0, 1.0)
    """
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def compute_deltas(rows: list[dict], reference: str = "hihpq") -> list[dict]:
    """``reference`` (HiHPQ) minus every other method's mAP, per (protocol, bits).

    Where both have more than one run with the same seeds, the difference is paired
    (per seed) and ``delta_std`` is the std of the paired differences; otherwise it is
    the difference of the means and ``delta_std`` combines the two stds. ``delta_se`` is
    ``delta_std / sqrt(n)``: a difference of a few s.e. is not noise.
    """
    out = []
    cells = sorted({(r["protocol"], r["bits"]) for r in rows}, key=lambda c: (c[0], c[1]))
    for protocol, bits in cells:
        cell = {r["method"]: r for r in rows if (r["protocol"], r["bits"]) == (protocol, bits)}
        ref = cell.get(reference)
        if ref is None:
            continue
        for method, row in cell.items():
            if method == reference:
                continue
            ref_runs = {r["seed"]: r["map"] for r in ref["runs"]}
            runs = {r["seed"]: r["map"] for r in row["runs"]}
            paired = len(ref_runs) > 1 and set(ref_runs) == set(runs)
            if paired:
                diffs = [ref_runs[s] - runs[s] for s in sorted(runs)]
                delta, std = mean_std(diffs)
                n = len(diffs)
            else:
                delta = ref["map"] - row["map"]
                std = math.hypot(ref["map_std"], row["map_std"])
                n = max(ref["n_seeds"], row["n_seeds"])
            out.append(
                {
                    "protocol": protocol,
                    "bits": bits,
                    "reference": reference,
                    "method": method,
                    "delta_map": delta,
                    "delta_std": std,
                    "delta_se": std / math.sqrt(n),
                    "n": n,
                    "paired": paired,
                }
            )
    return out
