"""Stored-order against tie-aware mAP@K of a trained run (issue 27, "ties in the ranking").

Run: ``python -m benchmarks.tie_aware_map RUN [--orders 5] [--threads 1] [--out FILE]``

``RUN`` is a run folder (e.g. the one ``hihpq demo`` writes); its inputs come from the
feature cache (``HIHPQ_CIFAR10``, ``HIHPQ_DATA_DIR``, ``HIHPQ_CACHE_DIR`` as when it was
trained). For the final and the validation-selected model it prints

* mAP@K as the reports compute it (``scoring.evaluate_run``: tied distances in database
  order) and averaged over every order of the tied items (``evaluate_run(...,
  ties="expected")``), at every label level of the run;
* the stored-order mAP with the database codes in ``--orders`` random orders (the same
  codes, so the same distances), and the tie-aware mAP of the first of them, which must
  equal the stored one bit for bit;
* how much the ranking ties: distinct database codes, the share of queries with tied
  distances in their top 10 (``metrics.tie_fraction``), and precision@k in both modes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from hihpq_lib import data as D
from hihpq_lib.app.prepare import prepare_for
from hihpq_lib.app.scoring import evaluate_run, restore_run
from hihpq_lib.evaluation import metrics

KS = [1, 10, 50, 1000]


def _model_report(model, query, database, cfg, orders: int, seed: int) -> dict:
    k = min(cfg.topk, len(database.feats))
    mode = "symmetric" if cfg.symmetric else "asymmetric"
    index = model.build_index(database.feats)
    points = model.points(query.feats)
    codes = index.codes.clone()
    dist_top, top = index.search(points, k, mode=mode)
    ks = [x for x in KS if x <= k]
    out = {
        "distinct_codes": int(torch.unique(codes, dim=0).shape[0]),
        "n_database": int(codes.shape[0]),
        "tie_fraction_top10": metrics.tie_fraction(dist_top, min(10, k)),
        "precision_stored": dict(
            zip(ks, metrics.precision_at_k_curve(query.labels, database.labels, top, ks)[1])
        ),
    }
    dist = lambda s, e: index.distances(points[s:e], mode=mode).cpu()  # noqa: E731
    p_exp = metrics.precision_at_k_from_distances(
        dist, query.labels, database.labels, ks, ties="expected", chunk_size=512
    )[1]
    out["precision_expected"] = dict(zip(ks, p_exp))
    rng = np.random.default_rng(seed)
    shuffled, expected_shuffled = [], None
    for i in range(orders):
        perm = torch.from_numpy(rng.permutation(len(codes)))
        index.reset()
        index.add(codes[perm])
        labels = database.labels[perm]
        shuffled.append(metrics.map_at_k(query.labels, labels, index.search(points, k)[1]))
        if i == 0:
            expected_shuffled = metrics.map_from_distances(
                dist, query.labels, labels, k, ties="expected", chunk_size=512
            )
    out["map_random_orders"] = shuffled
    out["map_expected_first_random_order"] = expected_shuffled
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--orders", type=int, default=5, help="random database orders")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the report as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    run = restore_run(args.run)
    prep = prepare_for(run.cfg, splits=D.load_splits(args.run / "splits.json"), progress=False)
    stored = evaluate_run(run, prep)
    t1 = time.perf_counter()
    expected = evaluate_run(run, prep, ties="expected")
    t2 = time.perf_counter()
    report = {
        "run": str(args.run),
        "run_id": run.run_id,
        "topk": run.cfg.topk,
        "stored_order": {"final": stored.final, "val_selected": stored.best},
        "tie_aware": {"final": expected.final, "val_selected": expected.best},
        "seconds": {"stored_order": round(t1 - t0, 1), "tie_aware": round(t2 - t1, 1)},
    }
    for which, key in (("final", "final"), ("best", "val_selected")):
        with torch.no_grad():
            model = run.model(which).to(run.cfg.device)
            report[key] = _model_report(
                model, stored.query, stored.database, run.cfg, args.orders, args.seed
            )
        tie_aware = expected.final if which == "final" else expected.best
        exact = report[key]["map_expected_first_random_order"]
        report[key]["expected_order_invariant"] = exact == tie_aware.get("class")
    print(json.dumps(report, indent=2, default=float))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    return report


if __name__ == "__main__":
    main()
