"""The benchmark on an image folder with a class hierarchy (``make bench``'s folder section).

Run::

    python -m benchmarks.folder_bench --data DATA/train --query-data DATA/val \\
        --hierarchy DATA/wordnet_hierarchy.json [--seeds 3] [--epochs N] [--threads 2] \\
        [--methods float faiss_pq faiss_opq hihpq euclidean_hier] [--set KEY=VALUE ...] \\
        [--out DIR] [--quick]

The folder profile ``configs/cpu/cpu_folder_32bits.yaml`` (32 bits) on ``--data``, the test
queries from ``--query-data``, the levels of ``--hierarchy`` chosen by its
``hierarchy_levels`` (``auto``: up to three depths). :func:`~hihpq_lib.app.prepare.prepare`
computes or loads the frozen features once; then

* the untrained baselines of :mod:`benchmarks.run_all` (``float``, ``faiss_pq``,
  ``faiss_opq``) on those features, fit on the training images;
* the learned methods (``hihpq`` and the ablations of :data:`benchmarks.run_all.METHODS`)
  through :func:`~hihpq_lib.app.pipeline.run_experiment`, ``--seeds`` seeds each
  (0, 1, ...): mAP@1000 of the validation-selected model on the test queries at every
  level (class and each chosen depth of the hierarchy), mean ± std over seeds.

Outputs (atomic, after every method): ``<out>/results.json`` and ``<out>/results.md``, with
the command, date, machine and commit. Run folders go to ``runs_dir()/bench_folder/``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from benchmarks.run_all import (
    METHODS,
    OPQ_D_OUT,
    REPO_ROOT,
    RSSSampler,
    _git_commit,
    write_atomic,
)
from hihpq_lib.app.pipeline import run_experiment
from hihpq_lib.app.prepare import prepare
from hihpq_lib.evaluation.baselines import FaissOPQ, FaissPQ, FloatBaseline
from hihpq_lib.evaluation.metrics import map_at_k_levels
from hihpq_lib.evaluation.stats import mean_std
from hihpq_lib.learning.config import TrainConfig, load_config
from hihpq_lib.utils.runtime import runs_dir
from hihpq_lib.utils.timing import peak_rss_mb

__all__ = ["PROFILE", "main", "parse_args", "format_markdown", "level_rows"]

PROFILE = REPO_ROOT / "configs" / "cpu" / "cpu_folder_32bits.yaml"
DEFAULT_METHODS = ("float", "faiss_pq", "faiss_opq", "hihpq", "euclidean_hier")
#: ``--quick``: a few images per class, few epochs (a smoke test of the script, not a result).
QUICK = ("subsample_per_class=12", "n_views=3", "epochs=2", "hierarchy_warmup=1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.folder_bench",
        description="HiHPQ vs baselines on an image folder, mAP at every hierarchy level",
    )
    ap.add_argument("--data", required=True, help="FOLDER/<class>/<image>: database + training")
    ap.add_argument("--query-data", default=None, help="test queries (same class folders)")
    ap.add_argument("--hierarchy", default=None, help="JSON class -> ancestor chain")
    ap.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    ap.add_argument("--seeds", type=int, default=3, help="seeds of every learned method")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="overrides")
    ap.add_argument("--out", type=Path, default=None, help="results folder")
    ap.add_argument("--quick", action="store_true", help="tiny subset (smoke test)")
    args = ap.parse_args(argv)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    if args.seeds < 1:
        ap.error("--seeds must be >= 1")
    return args


def base_config(args) -> TrainConfig:
    items = [f"data={args.data}"]
    if args.query_data:
        items.append(f"query_data={args.query_data}")
    if args.hierarchy:
        items.append(f"hierarchy_file={args.hierarchy}")
    if args.quick:
        items += list(QUICK)
    if args.epochs is not None:
        items.append(f"epochs={int(args.epochs)}")
    if args.threads:
        items.append(f"threads={int(args.threads)}")
    return load_config(PROFILE, [*items, *args.overrides])


def run_baseline(method: str, M: int, train_x, q, db, levels, k: int) -> dict:  # noqa: N803
    est = {
        "float": FloatBaseline,
        "faiss_pq": lambda: FaissPQ(M),
        "faiss_opq": lambda: FaissOPQ(M, d_out=OPQ_D_OUT),
    }[method]()
    with RSSSampler() as mem:
        t = time.perf_counter()
        est.fit(train_x)
        est.add(db.feats.float().numpy())
        _, idx = est.search(q.feats.float().numpy(), k)
        seconds = time.perf_counter() - t
    return {
        "seed": 0,
        "levels": map_at_k_levels(idx, levels),
        "seconds": round(seconds, 2),
        "rss_peak_mb": round(mem.peak_mb, 1),
        "code_bits": int(est.code_size_bits),
    }


def run_learned(prep, base: TrainConfig, method: str, seed: int, workdir: Path) -> dict:
    m = METHODS[method]
    name = f"folder_{base.bits}bits_{method}_seed{seed}"
    cfg = base.with_overrides(
        [*m.overrides, f"seed={seed}", f"name={name}", "baseline_guard=false"]
    )
    t = time.perf_counter()
    with RSSSampler() as mem:
        res = run_experiment(cfg, workdir / name, overwrite=True, progress=False, prepared=prep)
    key = f"map@{cfg.topk}_levels"
    return {
        "seed": seed,
        "levels": res[f"{key}_val_selected"],
        "levels_final": res[f"{key}_final"],
        "val_selected_epoch": res["val_selected_epoch"],
        "val_map_best": res["val_map_best"],
        "num_clusters": res["num_clusters"],
        "seconds": round(time.perf_counter() - t, 1),
        "rss_peak_mb": round(mem.peak_mb, 1),
        "code_bits": cfg.bits,
    }


def aggregate(runs: list[dict]) -> dict:
    levels = list(runs[0]["levels"])
    out = {}
    for level in levels:
        mean, std = mean_std([r["levels"][level] for r in runs])
        out[level] = {"mean": mean, "std": std, "n": len(runs)}
    return out


def level_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """The table: one row per method, one column per level (mean ± std over seeds)."""
    levels = results["levels"]
    head = ["method", "bits", *[f"{lv} ({n})" for lv, n in levels.items()], "seeds"]
    body = []
    for row in results["methods"].values():
        cells = []
        for level in levels:
            agg = row["aggregate"][level]
            cell = f"{agg['mean']:.3f}"
            if agg["n"] > 1:
                cell += f" ± {agg['std']:.3f}"
            cells.append(cell)
        body.append([row["label"], str(row["code_bits"]), *cells, str(len(row["runs"]))])
    return head, body


def paired_gaps(results: dict, ref: str = "hihpq") -> list[str]:
    """HiHPQ minus every other method at each level (mean of HiHPQ's seeds)."""
    rows = results["methods"]
    if ref not in rows:
        return []
    lines = []
    for key, row in rows.items():
        if key == ref:
            continue
        gaps = [
            f"{lv} {rows[ref]['aggregate'][lv]['mean'] - row['aggregate'][lv]['mean']:+.3f}"
            for lv in results["levels"]
        ]
        lines.append(f"- HiHPQ − {row['label']}: " + ", ".join(gaps))
    return lines


def format_markdown(results: dict) -> str:
    head, body = level_rows(results)
    meta = results["meta"]
    lines = [
        f"# {meta['dataset']}: HiHPQ vs baselines, {meta['bits']} bits, mAP@{meta['topk']}",
        "",
        f"Measured {meta['date']} on {meta['machine']} (commit {meta['commit']}) with",
        "",
        f"    {meta['command']}",
        "",
        f"{meta['n_query']} test queries against {meta['n_database']} database images "
        f"({meta['n_classes']} classes; the database is the training set, unlabelled); "
        "every column is mAP@1000 of the validation-selected model at one level of the class "
        "hierarchy (relevant = same node at that depth; the number of nodes in brackets). "
        "Learned methods: mean ± std over seeds; baselines are fit on the same frozen "
        "features. The backbone's ImageNet pretraining has seen these classes (not these "
        "64-px images).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    lines += ["", *paired_gaps(results), ""]
    lines += [
        f"Profile: {meta['profile']} with {', '.join(meta['overrides']) or 'no overrides'}; "
        f"clusters {meta.get('num_clusters')}; peak memory {meta['peak_rss_mb']:.0f} MB; "
        f"{meta['minutes']:.0f} min in all.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg = base_config(args)
    if args.threads:
        torch.set_num_threads(int(args.threads))
    t0 = time.perf_counter()
    prep = prepare(cfg, progress=False)
    q, db = prep.split("query"), prep.split("database")
    ql, dl = prep.level_labels("query"), prep.level_labels("database")
    levels = {n: (ql[n], dl[n]) for n in ql}
    k = min(cfg.topk, len(db.feats))
    train_x = prep.split("train").feats.float().numpy()
    # one level deeper than the CIFAR-10 tables, so their loader never mixes the two
    out = args.out or (REPO_ROOT / "benchmarks" / "results" / "folders" / prep.dataset.display_name)
    workdir = runs_dir() / "bench_folder"
    results: dict = {
        "meta": {
            "dataset": prep.dataset.display_name,
            "bits": cfg.bits,
            "topk": k,
            "n_query": len(q.feats),
            "n_database": len(db.feats),
            "n_train": len(prep.splits.train),
            "n_classes": prep.dataset.n_classes,
            "profile": str(PROFILE.relative_to(REPO_ROOT)),
            "overrides": list(args.overrides),
            "command": "python -m benchmarks.folder_bench "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"{platform.python_implementation()} {platform.python_version()}",
            "commit": _git_commit(),
        },
        "levels": {n: int(len(np.unique(np.asarray(v[1])))) for n, v in levels.items()},
        "methods": {},
    }

    def save():
        results["meta"]["peak_rss_mb"] = peak_rss_mb()
        results["meta"]["minutes"] = (time.perf_counter() - t0) / 60
        write_atomic(out / "results.json", json.dumps(results, indent=1, default=float) + "\n")
        write_atomic(out / "results.md", format_markdown(results))

    for method in args.methods:
        m = METHODS[method]
        if m.kind == "baseline":
            runs = [run_baseline(method, cfg.M, train_x, q, db, levels, k)]
        else:
            runs = [run_learned(prep, cfg, method, s, workdir) for s in range(args.seeds)]
            results["meta"]["num_clusters"] = runs[0]["num_clusters"]
        results["methods"][method] = {
            "label": m.label,
            "code_bits": runs[0]["code_bits"],
            "runs": runs,
            "aggregate": aggregate(runs),
        }
        save()
        print(
            f"{method}: "
            + ", ".join(
                f"{lv} {a['mean']:.4f}" for lv, a in results["methods"][method]["aggregate"].items()
            ),
            flush=True,
        )
    return results


if __name__ == "__main__":  # pragma: no cover
    main()
