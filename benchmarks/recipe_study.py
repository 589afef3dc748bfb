"""The folder default (``recipe: auto``) on a dataset, beside what each candidate would have
given and the untrained baselines (issue 28, "one recipe that beats doing nothing").

Run: ``python -m benchmarks.recipe_study --data FOLDER [--query-data FOLDER]
[--hierarchy FILE] [--seeds 3] [--set key=value ...] --out DIR``

Per seed, one ``pipeline.run_experiment`` of the folder default
(``config.folder_config``: the candidates screened on the validation queries, the winner
finished), then each candidate that lost is trained to the end as well (in its own folder,
from its screening checkpoint) and scored the same way, so the table shows whether the
validation choice picked the candidate that is better on the test queries. Every seed
uses seed 0's prepared inputs (splits, features and augmentation bank), as ``make bench``
does; the seeds vary the training only. Writes ``DIR/results.json`` and ``DIR/results.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hihpq_lib.app.pipeline import run_experiment
from hihpq_lib.app.prepare import prepare_for
from hihpq_lib.app.recipe import CANDIDATES_DIR, candidate_configs
from hihpq_lib.learning.checkpoint import TrainedRun
from hihpq_lib.learning.config import folder_config
from hihpq_lib.learning.retrieval import evaluate_levels
from hihpq_lib.learning.training import train
from hihpq_lib.utils.timing import peak_rss_mb


def _levels(prep) -> dict:
    qa, db = prep.level_labels("query"), prep.level_labels("database")
    return {n: (qa[n], db[n]) for n in qa}


def _score_candidate(run_dir: Path, prep, topk: int) -> dict:
    run = TrainedRun.load(run_dir)
    query, database = prep.split("query"), prep.split("database")
    with torch.no_grad():
        return evaluate_levels(run.best.eval(), query.feats, database.feats, _levels(prep), topk)


def _mean_std(values) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        "n": len(a),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--query-data")
    ap.add_argument("--hierarchy")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--label", default=None, help="dataset name in the table")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    items = [f"data={args.data}", *args.overrides]
    if args.query_data:
        items.append(f"query_data={args.query_data}")
    if args.hierarchy:
        items.append(f"hierarchy_file={args.hierarchy}")
    t0 = time.perf_counter()
    base = folder_config(items)
    prep = prepare_for(base)
    prepare_s = time.perf_counter() - t0
    runs = []
    for seed in range(args.seeds):
        cfg = dataclasses.replace(base, seed=seed)
        out = args.out / "runs" / f"seed{seed}"
        ts = time.perf_counter()
        res = run_experiment(cfg, out, prepared=prep, progress=False, overwrite=True)
        auto_s = time.perf_counter() - ts
        block = res["recipe"]
        row = {
            "seed": seed,
            "chosen": block["chosen"],
            "screen": block["candidates"],
            "val_map_best": res["val_map_best"],
            "val_selected_epoch": res["val_selected_epoch"],
            "levels": res[f"map@{cfg.topk}_levels_val_selected"],
            "baselines": {k: v for k, v in (res.get("baselines") or {}).items() if k != "below"},
            "seconds": round(auto_s, 1),
            "train_seconds": res["stage_seconds"].get("train"),
            "candidates_full": {},
        }
        configs = candidate_configs(cfg, int(prep.training_data().train.shape[1]))
        for name, ccfg in configs.items():
            cdir = out / CANDIDATES_DIR / name
            if name != block["chosen"]:  # the loser, trained to the end for the table only
                tl = time.perf_counter()
                r = train(ccfg, prep.training_data(), cdir, resume=True, progress=False)
                extra = round(time.perf_counter() - tl, 1)
            else:
                r, extra = {"best_val_map": res["val_map_best"]}, 0.0
            row["candidates_full"][name] = {
                "val_map_best": float(r["best_val_map"]),
                "levels": _score_candidate(cdir, prep, cfg.topk),
                "extra_seconds": extra,
            }
        runs.append(row)
        print(
            f"seed {seed}: chose {block['chosen']} "
            + ", ".join(f"{n} val {v['val_map_best']:.4f}" for n, v in block["candidates"].items())
            + " | test "
            + ", ".join(f"{lv} {v:.4f}" for lv, v in row["levels"].items())
            + f" ({auto_s:.0f} s)",
            flush=True,
        )
    levels = list(runs[0]["levels"])
    summary = {
        "auto": {lv: _mean_std([r["levels"][lv] for r in runs]) for lv in levels},
        "candidates": {
            n: {
                lv: _mean_std([r["candidates_full"][n]["levels"][lv] for r in runs])
                for lv in levels
            }
            for n in runs[0]["candidates_full"]
        },
        "baselines": runs[0]["baselines"],
        "chosen": [r["chosen"] for r in runs],
    }
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    meta = {
        "dataset": args.label or Path(args.data).name,
        "command": "python -m benchmarks.recipe_study "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "topk": base.topk,
        "overrides": args.overrides,
        "seeds": args.seeds,
        "n_train": len(prep.splits.train),
        "n_query": len(prep.splits.query),
        "n_database": len(prep.splits.database),
        "prepare_seconds": round(prepare_s, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "commit": commit,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "note": "every seed on seed 0's splits, features and bank; each losing candidate "
        "trained to the end for the table only (the auto run never scores them)",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=2)
    )
    (args.out / "results.md").write_text(_markdown(meta, summary, levels))
    print(_markdown(meta, summary, levels))
    return 0


def _markdown(meta: dict, summary: dict, levels: list[str]) -> str:
    def cell(s):
        return f"{s['mean']:.3f} ± {s['std']:.3f}" if s["n"] > 1 else f"{s['mean']:.3f}"

    head = "| method | " + " | ".join(levels) + " |\n|---|" + "---|" * len(levels) + "\n"
    rows = []
    for name, label in (("float", "float features (cosine)"), ("faiss_pq", "faiss PQ, 32 bits")):
        b = summary["baselines"].get(name)
        if b:
            rows.append(f"| {label} | " + " | ".join(f"{b[lv]:.3f}" for lv in levels) + " |")
    for name, s in summary["candidates"].items():
        rows.append(
            f"| candidate `{name}` trained to the end | "
            + " | ".join(cell(s[lv]) for lv in levels)
            + " |"
        )
    chosen = ", ".join(summary["chosen"])
    rows.append(
        f"| **folder default** (`recipe: auto`; chose {chosen}) | "
        + " | ".join(cell(summary["auto"][lv]) for lv in levels)
        + " |"
    )
    return (
        f"# {meta['dataset']}: the folder default beside its candidates and the untrained "
        f"baselines\n\nTest mAP@{meta['topk']} of the validation-selected model, mean ± std over "
        f"{meta['seeds']} seeds; {meta['n_train']} training images, {meta['n_query']} queries, "
        f"{meta['n_database']} database images. `{meta['command']}` ({meta['date']}, commit "
        f"{meta['commit']}, {meta['machine']}).\n\n" + head + "\n".join(rows) + "\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
