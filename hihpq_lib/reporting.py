r"""Reporting helpers for the pipeline notebooks 06 and 07: retrieval examples, chunked
precision-recall curves, ablations over seeds, seed noise, and the benchmark table read
against the paper.

Everything here sits on top of the pipeline (``pipeline``, ``training``, ``model``,
``index``, ``metrics``) and next to :mod:`hihpq_lib.tutorial` (whose run folders and
paired bootstrap it reuses); nothing below imports it.

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
:func:`hihpq_lib.tutorial.paired_bootstrap` resamples them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import data as D
from .config import TrainConfig
from .metrics import average_precision_at_k, hits_at_k, precision_recall_by_rank, relevant_counts
from .runtime import REPO_ROOT

__all__ = [
    "ABLATIONS",
    "PAPER_HIHPQ_MAP",
    "MECOQ_README_MAP",
    "pick_queries",
    "retrieval_examples",
    "precision_recall_curve",
    "run_ablation",
    "ablation_table",
    "paired_difference",
    "verdict",
    "t_multiplier",
    "seeds_needed",
    "mean_std",
    "compute_deltas",
    "load_benchmark_results",
    "load_benchmark_suite",
    "benchmark_rows",
    "ablation_effects",
    "paper_comparison_rows",
    "FIDELITY_RESULTS",
    "load_fidelity_results",
    "fidelity_rows",
]

#: The ablations of notebook 07, as config overrides on top of the HiHPQ profile (the same
#: definitions as ``benchmarks/run_all.py``'s ``METHODS``; a test keeps them in sync).
ABLATIONS: dict[str, tuple[str, ...]] = {
    "hihpq": (),
    "hihpq_no_hier": ("proto_weight=0", "instance_weight=0"),
    "euclidean_hier": ("geometry=euclidean",),
    "euclidean_cpq": ("geometry=euclidean", "proto_weight=0", "instance_weight=0"),
}

#: HiHPQ mAP@1000 on CIFAR-10 with the official code (VGG-16, 224 px, GPU), by
#: (protocol, bits), as re-run by others and supplied to this project.
PAPER_HIHPQ_MAP: dict[tuple[str, int], float] = {
    ("I", 16): 0.727,
    ("I", 32): 0.724,
    ("I", 64): 0.705,
    ("II", 16): 0.633,
    ("II", 32): 0.652,
    ("II", 64): 0.665,
}

#: MeCoQ (Wang et al., AAAI 2022) on CIFAR-10 protocol II, asymmetric distance, from its
#: own README (github.com/gimpong/AAAI22-MeCoQ, GTX 1080 Ti column), by (protocol, bits).
MECOQ_README_MAP: dict[tuple[str, int], float] = {
    ("II", 16): 0.628,
    ("II", 32): 0.641,
    ("II", 64): 0.651,
}


# ----------------------------------------------------------------------------- retrieval
def pick_queries(prep, per_class: int = 1, n_classes: int | None = None, seed: int = 0):
    """Dataset indices of test queries: ``per_class`` random ones for each class.

    Parameters
    ----------
    prep : :class:`~hihpq_lib.pipeline.Prepared`
    per_class : int, queries per class
    n_classes : int, optional, only the first ``n_classes`` classes (single-label data)
    seed : int

    Returns
    -------
    (n,) int64 ndarray of dataset indices (class by class).
    """
    q_idx = np.asarray(prep.splits.query)
    labels = np.asarray(prep.dataset.labels)
    if labels.ndim != 1:
        raise ValueError("pick_queries needs single-label data (one class per image)")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels[q_idx])[: n_classes or None]
    out = []
    for c in classes:
        pool = q_idx[labels[q_idx] == c]
        out.extend(rng.choice(pool, size=min(per_class, len(pool)), replace=False))
    return np.asarray(out, dtype=np.int64)


def retrieval_examples(prep, model, query_indices, k: int = 10, size: int = 64) -> dict:
    """The top-``k`` database images of some test queries, ready for ``viz.retrieval_grid``.

    The database is encoded with ``model`` (``model.build_index``) and searched with
    asymmetric distances, as in the evaluation.

    Parameters
    ----------
    prep : :class:`~hihpq_lib.pipeline.Prepared`
    model : :class:`~hihpq_lib.model.HiHPQModel`
    query_indices : (Q,) dataset indices of test queries (e.g. :func:`pick_queries`)
    k : int, results per query
    size : int, image size for path-backed datasets (in-memory images keep theirs)

    Returns
    -------
    dict with ``query_images`` (Q, H, W, 3) uint8, ``result_images`` (Q, k, H, W, 3)
    uint8, ``hits`` (Q, k) bool, ``titles`` (Q,) class names, ``result_indices`` (Q, k)
    dataset indices and ``precision`` (float, the mean precision@k of these queries).
    """
    query_indices = np.asarray(query_indices, dtype=np.int64)
    db_idx = np.asarray(prep.splits.database)
    labels = np.asarray(prep.dataset.labels)
    index = model.build_index(prep.split("database").feats)
    _, top = index.search(model.points(prep.feats[prep.rows(query_indices)].float()), k)
    top = db_idx[top.numpy()]  # (Q, k) dataset indices
    hits = labels[top] == labels[query_indices][:, None]
    q_img = D.read_images(prep.dataset, query_indices, size=size)
    r_img = D.read_images(prep.dataset, top.reshape(-1), size=size)
    names = prep.dataset.class_names
    return {
        "query_images": q_img,
        "result_images": r_img.reshape(len(query_indices), k, *r_img.shape[1:]),
        "hits": hits,
        "titles": [names[int(c)] for c in labels[query_indices]],
        "result_indices": top,
        "precision": float(hits.mean()) if hits.size else float("nan"),
    }


def precision_recall_curve(
    index, query_points, query_labels, db_labels, ks, *, chunk_size: int = 100
) -> dict[str, np.ndarray]:
    """Precision and recall after the first ``k`` results, over the **whole** ranking.

    Recall needs every relevant item, so each query ranks the full database; queries go
    ``chunk_size`` at a time so that only a ``(chunk_size, N)`` ranking exists at once
    (:func:`hihpq_lib.metrics.precision_recall_by_rank` on the full ``(Q, N)`` ranking
    gives the same numbers but needs ``Q * N`` int64s: 4 GB for 10,000 x 50,000).

    Parameters
    ----------
    index : :class:`~hihpq_lib.index.PQIndex` holding the database codes
    query_points : (Q, M, D') float, e.g. ``model.points(query_feats)``
    query_labels, db_labels : (Q,) / (N,) int or multi-hot
    ks : sequence of int in [1, N] (e.g. log-spaced)
    chunk_size : int

    Returns
    -------
    dict with ``"k"`` (L,) int64, ``"precision"`` (L,) float64, ``"recall"`` (L,) float64.
    """
    n_q, n_db = len(query_points), index.ntotal
    if len(query_labels) != n_q or len(db_labels) != n_db:
        raise ValueError(
            f"{n_q} query points need {n_q} query labels (got {len(query_labels)}) and the "
            f"index's {n_db} items need {n_db} database labels (got {len(db_labels)})"
        )
    rel = relevant_counts(query_labels, db_labels)
    ks = np.asarray(ks, dtype=np.int64)
    p_sum = np.zeros(len(ks))
    r_sum = np.zeros(len(ks))
    n_with = 0
    for s in range(0, n_q, chunk_size):
        e = min(s + chunk_size, n_q)
        _, idx = index.search(query_points[s:e], n_db)
        part = precision_recall_by_rank(query_labels[s:e], db_labels, idx, ks, relevant=rel[s:e])
        p_sum += part["precision"] * (e - s)
        has = int((rel[s:e] > 0).sum())
        if has:
            r_sum += part["recall"] * has
            n_with += has
    recall = r_sum / n_with if n_with else np.full(len(ks), np.nan)
    return {"k": ks, "precision": p_sum / max(n_q, 1), "recall": recall}


# ----------------------------------------------------------------------------- ablations
def run_ablation(
    prep,
    base: TrainConfig,
    methods: Sequence[str],
    seeds: Sequence[int],
    *,
    tag: str = "07_ablation",
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Train each method of :data:`ABLATIONS` with each seed on ``prep``; test-query mAPs.

    Every run uses the same prepared features, bank and splits (those of ``prep``); the
    seed changes only the training randomness (initialisation, batches, view pairs,
    clustering), as in the benchmark. Each run has its own folder,
    ``tutorial.run_folder(f"{tag}_{method}_seed{seed}", cfg)`` (under
    ``runs/tutorial/``, named after a digest of the configuration); a folder that
    already holds a finished run is loaded instead of trained (``resume=True``).

    Returns
    -------
    list of dicts, one per (method, seed): ``method``, ``seed``, ``map`` (test mAP@K of
    the validation-selected epoch), ``map_final`` (last epoch), ``ap`` ((Q,) float64
    per-query AP of the selected model, for the query bootstrap), ``val_selected_epoch``,
    ``seconds`` (wall clock of this call, ~0 when loaded) and ``folder``.
    """
    from .training import evaluate_map, load_model, train
    from .tutorial import run_folder, search

    unknown = [m for m in methods if m not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(ABLATIONS)}")
    q, db = prep.split("query"), prep.split("database")
    k = min(base.topk, len(db.feats))
    rows = []
    for method in methods:
        for seed in seeds:
            cfg = base.with_overrides(
                [*ABLATIONS[method], f"seed={int(seed)}", f"name={method}_seed{int(seed)}"]
            )
            out = run_folder(f"{tag}_{method}_seed{int(seed)}", cfg)
            t0 = time.perf_counter()
            res = train(cfg, prep.training_data(), out, resume=True, progress=progress)
            best, _ = load_model(out, "best", in_dim=q.feats.shape[1])
            ap = average_precision_at_k(hits_at_k(q.labels, db.labels, search(best, q, db, k)))
            rows.append(
                {
                    "method": method,
                    "seed": int(seed),
                    "map": float(ap.mean()),
                    "map_final": evaluate_map(res["model"], q, db, k, cfg.symmetric),
                    "ap": ap,
                    "val_selected_epoch": int(res["best_epoch"]),
                    "seconds": round(time.perf_counter() - t0, 1),
                    "folder": str(out),
                }
            )
    return rows


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


def verdict(delta: float, se: float, *, z: float = 2.0, n: int | None = None) -> str:
    """A plain reading of a difference and its standard error: real when ``|delta| >= z se``.

    ``z = 2`` is the large-sample rule (many queries, many seeds); with ``n`` seeds pass
    ``z = t_multiplier(n)`` (``paired_difference(...)["t95"]``). ``n = 1`` (or a NaN
    ``se``) means there is no error bar at all.

    >>> verdict(0.010, 0.002)
    'real (|Δ| = 5.0 SE)'
    >>> verdict(0.010, 0.004, z=4.3)
    'noise (|Δ| = 2.5 SE < 4.3)'
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


def _ranked_result_files(folder: str | Path | None) -> list[tuple[dict, Path]]:
    """Every readable ``results.json`` in ``folder`` and its subfolders, best first.

    Best: complete over interrupted runs, full over ``--quick`` runs, the top-level file
    over subfolders, then the newest (ties by path). A file that does not parse (being
    written) is skipped.
    """
    root = Path(folder) if folder is not None else REPO_ROOT / "benchmarks" / "results"
    ranked = []
    for p in [root / "results.json", *sorted(root.glob("*/results.json"))]:
        if not p.is_file():
            continue
        try:
            res = json.loads(p.read_text())
        except json.JSONDecodeError:  # a file being written: skip it
            continue
        rank = (
            not res.get("complete", False),
            bool(res.get("meta", {}).get("quick", False)),
            p.parent != root,
            -p.stat().st_mtime,
            str(p),
        )
        ranked.append((rank, res, p))
    ranked.sort(key=lambda t: t[0])
    return [(res, p) for _, res, p in ranked]


def load_benchmark_results(
    path: str | Path | None = None, *, folder: str | Path | None = None
) -> tuple[dict | None, Path | None]:
    """The benchmark results to read: ``path`` if given, else the best file in ``folder``.

    ``folder`` (default ``benchmarks/results``) holds ``results.json`` (``make bench``)
    and possibly subfolders with their own ``results.json`` (``--out``, ``--quick``
    writes ``quick/``). Preferred, in order: complete over interrupted runs, full over
    ``--quick`` runs, the top-level file over subfolders, then the newest.

    Returns
    -------
    (results dict, path read) or (None, None) when no file exists.
    """
    if path is not None:
        p = Path(path)
        return (json.loads(p.read_text()), p) if p.is_file() else (None, None)
    ranked = _ranked_result_files(folder)
    return ranked[0] if ranked else (None, None)


def load_benchmark_suite(folder: str | Path | None = None) -> tuple[dict | None, list[Path]]:
    """All protocols and methods of the benchmark in one results dict.

    ``make bench`` writes one folder per protocol (``protocol_i/``, ``protocol_ii/``);
    extra methods can be run into folders of their own. This reads every
    ``results.json`` in ``folder`` (default ``benchmarks/results``) and its subfolders,
    ranks them as :func:`load_benchmark_results` does (complete, then full over
    ``--quick``, then top level, then newest), and for each protocol:

    * the best file with that protocol and HiHPQ rows (else the best file with that
      protocol) is its **primary**: its rows, deltas, ADC rows and protocol summary are
      kept whole;
    * lower-ranked files of the same kind (quick or full) add the rows of
      (bits, method) cells the primary lacks. Their ``HiHPQ − this`` comes from
      :func:`compute_deltas` against the primary's HiHPQ rows (as ``make bench``
      computes it within one file: paired where both ran the same several seeds).

    Returns
    -------
    (merged results, the files read) or (None, []) when no file exists. The merged
    dict has the keys of one results file; ``meta`` holds ``sources`` (one entry per
    protocol and file: path, start time, argv, quick, complete, methods) and ``quick``
    (True if any source was).
    """
    ranked = _ranked_result_files(folder)
    protocols = sorted(
        {r["protocol"] for res, _ in ranked for r in res.get("rows", [])},
        key=lambda q: (len(q), q),  # I before II
    )
    if not protocols:
        return None, []
    merged: dict[str, Any] = {"rows": [], "deltas": [], "adc": [], "protocols": {}}
    sources, paths = [], []
    for protocol in protocols:
        files = [
            (res, p)
            for res, p in ranked
            if any(r["protocol"] == protocol for r in res.get("rows", []))
        ]
        # the primary holds the reference (HiHPQ) rows where any file does
        files.sort(
            key=lambda f: (
                not any(
                    r["protocol"] == protocol and r["method"] == "hihpq"
                    for r in f[0].get("rows", [])
                )
            )
        )
        primary_quick = bool(files[0][0].get("meta", {}).get("quick", False))
        have: set[tuple[int, str]] = set()
        for i, (res, p) in enumerate(files):
            meta = res.get("meta", {})
            if i > 0 and bool(meta.get("quick", False)) != primary_quick:
                continue
            rows = [
                r
                for r in res.get("rows", [])
                if r["protocol"] == protocol and (r["bits"], r["method"]) not in have
            ]
            if not rows:
                continue
            merged["rows"] += rows
            cells = {(r["bits"], r["method"]) for r in rows}
            if i == 0:
                merged["deltas"] += [d for d in res.get("deltas", []) if d["protocol"] == protocol]
                merged["adc"] += [a for a in res.get("adc", []) if a.get("protocol") == protocol]
                if protocol in res.get("protocols", {}):
                    merged["protocols"][protocol] = res["protocols"][protocol]
            else:  # HiHPQ − this for the added cells, against the primary's HiHPQ rows
                ref = [
                    r
                    for r in merged["rows"]
                    if r["protocol"] == protocol and r["method"] == "hihpq"
                ]
                merged["deltas"] += [
                    d for d in compute_deltas(ref + rows) if (d["bits"], d["method"]) in cells
                ]
            have |= cells
            sources.append(
                {
                    "protocol": protocol,
                    "path": str(p),
                    "started": meta.get("started"),
                    "argv": meta.get("argv", []),
                    "quick": bool(meta.get("quick", False)),
                    "complete": bool(res.get("complete", False)),
                    "methods": sorted({m for _, m in cells}),
                }
            )
            paths.append(p)
    merged["meta"] = {"sources": sources, "quick": any(s["quick"] for s in sources)}
    merged["complete"] = all(s["complete"] for s in sources)
    return merged, list(dict.fromkeys(paths))


def benchmark_rows(results: Mapping, *, protocol: str | None = None, bits: int | None = None):
    """The benchmark's main table as plain rows (for ``metrics.format_table``).

    ``mAP`` is the validation-selected test mAP@1000, ``± std`` over seeds where several
    ran; ``HiHPQ − this`` is the benchmark's (paired where possible) difference.
    """
    deltas = {(d["protocol"], d["bits"], d["method"]): d for d in results.get("deltas", [])}
    out = []
    for r in results.get("rows", []):
        if (protocol and r["protocol"] != protocol) or (bits and r["bits"] != bits):
            continue
        d = deltas.get((r["protocol"], r["bits"], r["method"]))
        n = r.get("n_seeds", 1)
        out.append(
            {
                "protocol": r["protocol"],
                "bits": r["bits"],
                "method": r["label"],
                "mAP": r["map"],
                "± std": r["map_std"] if n > 1 else "",
                "seeds": n,
                "HiHPQ − this": "(ref)"
                if r["method"] == "hihpq"
                else (f"{d['delta_map']:+.4f}" if d else "—"),
            }
        )
    return out


#: The contrasts notebook 07 reads: (name, method a, method b) for ``mAP(a) - mAP(b)``.
CONTRASTS = (
    ("hyperbolic vs Euclidean, no hierarchy", "hihpq_no_hier", "euclidean_cpq"),
    ("hyperbolic vs Euclidean, with hierarchy", "hihpq", "euclidean_hier"),
    ("hierarchy losses, hyperbolic", "hihpq", "hihpq_no_hier"),
    ("hierarchy losses, Euclidean", "euclidean_hier", "euclidean_cpq"),
    ("OPQ vs PQ (faiss, no learning)", "faiss_opq", "faiss_pq"),
    ("HiHPQ vs faiss OPQ", "hihpq", "faiss_opq"),
)


def ablation_effects(results: Mapping, *, noise_std: float | None = None) -> list[dict]:
    """The benchmark's contrasts (:data:`CONTRASTS`) per (protocol, bits), with a verdict.

    Where both methods ran the same several seeds the difference is paired per seed
    (:func:`paired_difference`) and judged with Student's t. With one seed there is no
    error bar; for two learned methods (:data:`ABLATIONS`) ``noise_std``, the std of
    paired differences measured elsewhere (e.g. notebook 07's live seeds), stands in
    for it if given (``se = noise_std``, judged at 2 SE). faiss baselines keep "no error
    bar": their noise is not a training seed's.
    """
    cells = {}
    for r in results.get("rows", []):
        cells.setdefault((r["protocol"], r["bits"]), {})[r["method"]] = r
    out = []
    for (protocol, bits), cell in sorted(cells.items()):
        for name, a, b in CONTRASTS:
            if a not in cell or b not in cell:
                continue
            ra = {x["seed"]: x["map"] for x in cell[a].get("runs", [])}
            rb = {x["seed"]: x["map"] for x in cell[b].get("runs", [])}
            common = sorted(set(ra) & set(rb))
            if len(common) > 1:
                d = paired_difference([ra[s] for s in common], [rb[s] for s in common])
            else:
                d = {"delta": cell[a]["map"] - cell[b]["map"], "se": 0.0, "n": 1, "t95": 2.0}
            se, z, note = d["se"], d["t95"], ""
            if d["n"] == 1 and noise_std and a in ABLATIONS and b in ABLATIONS:
                # a single-seed difference varies like one paired difference: se = std
                se, z, note = float(noise_std), 2.0, " (SE from the live seeds)"
            out.append(
                {
                    "protocol": protocol,
                    "bits": bits,
                    "contrast": name,
                    "Δ mAP": round(d["delta"], 4),
                    "seeds": d["n"],
                    "SE": round(se, 4),
                    "reading": verdict(d["delta"], se, z=z, n=None if note else d["n"]) + note,
                }
            )
    return out


def paper_comparison_rows(results: Mapping | None) -> list[dict]:
    """Paper numbers beside ours, one row per (protocol, bits).

    Columns: the HiHPQ official code (:data:`PAPER_HIHPQ_MAP`), MeCoQ's README
    (:data:`MECOQ_README_MAP`), and from ``results`` (may be None) our HiHPQ, our
    Euclidean contrastive PQ (the MeCoQ-like ablation) and the float features.
    """
    ours = {}
    for r in (results or {}).get("rows", []):
        ours[(r["protocol"], r["bits"], r["method"])] = r["map"]

    def fmt(v):
        return "—" if v is None else round(float(v), 3)

    rows = []
    for protocol, bits in sorted(PAPER_HIHPQ_MAP, key=lambda c: (len(c[0]), c[1])):
        rows.append(
            {
                "protocol": protocol,
                "bits": bits,
                "HiHPQ (official, VGG-16)": fmt(PAPER_HIHPQ_MAP.get((protocol, bits))),
                "MeCoQ (README)": fmt(MECOQ_README_MAP.get((protocol, bits))),
                "ours: HiHPQ": fmt(ours.get((protocol, bits, "hihpq"))),
                "ours: Euclidean CPQ": fmt(ours.get((protocol, bits, "euclidean_cpq"))),
                "ours: float features": fmt(ours.get((protocol, bits, "float"))),
            }
        )
    return rows


#: The committed reference-fidelity ablation (``benchmarks/fidelity_ablation.py``), by protocol.
FIDELITY_RESULTS = REPO_ROOT / "benchmarks" / "results" / "fidelity"


def load_fidelity_results(protocol: str = "II", bits: int = 32) -> dict | None:
    """The fidelity ablation's ``results.json`` for a cell, or ``None`` if not committed."""
    p = FIDELITY_RESULTS / f"protocol_{protocol.lower()}_{int(bits)}bits" / "results.json"
    return json.loads(p.read_text()) if p.is_file() else None


def fidelity_rows(
    rows: Sequence[str] | None = None, protocol: str = "II", bits: int = 32
) -> list[str]:
    """Printable lines of the fidelity ablation: per row, HiHPQ test mAP (validation-selected
    epoch, mean ± std over seeds) and its paired change against ``current`` (our earlier
    behaviour), the validation mAP and its change, and the HiHPQ - Euclidean margin. One
    explanatory line when the table is not committed.

    >>> fidelity_rows(protocol="I", bits=48)
    ['no fidelity table committed for protocol I / 48 bits']
    """
    res = load_fidelity_results(protocol, bits)
    if res is None:
        return [f"no fidelity table committed for protocol {protocol} / {bits} bits"]
    out = []
    for s in res.get("summary", []):
        if rows is not None and s["row"] not in rows:
            continue
        h = s.get("lorentz")
        if not h:
            continue
        n = len(h["seeds"])
        line = f"{s['row']:27s} HiHPQ mAP {h['map'][0]:.4f} ± {h['map'][1]:.4f} ({n} seeds)"
        d = h.get("delta_map")
        if d:
            line += f", vs current {d['delta']:+.4f} ± {d['std']:.4f}"
        line += f"; val {h['val_map'][0]:.4f}"
        dv = h.get("delta_val")
        if dv:
            line += f" ({dv['delta']:+.4f} ± {dv['std']:.4f})"
        m = s.get("margin")
        if m:
            line += f"; HiHPQ - Euclidean {m['delta']:+.4f} ± {m['std']:.4f}"
        out.append(line)
    return out
