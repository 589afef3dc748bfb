"""What the untrained hyperbolic start loses against faiss PQ on the same features, and why.

Run: ``python -m benchmarks.untrained_start CONFIG [--set key=value ...] [--data FOLDER]
[--query-data FOLDER] [--hierarchy FILE] [--out FILE]``

Issue 28, item 3: on the Tiny-ImageNet subset the untrained start of the folder recipe
(a head at the features' principal components, k-means codebooks) scored class mAP 0.219
where faiss PQ on the raw 1280-d features scored 0.234. Nothing here trains: each row is
the model the recipe starts from, built on one ``prepare`` (the same cached features,
splits and levels), and scored on the validation queries (what a choice may use) and the
test queries (reported, never used to choose). One step changed per row:

* ``faiss PQ (raw)`` / ``faiss PQ (PCA q)``: classical PQ on the features, and on their first
  ``q`` principal components spread over the subspaces as the head spreads them;
* ``width q``: the head's width (``feat_dim``), the rest of the recipe unchanged;
* ``norm s``: the projection's median sub-vector norm (``pca_norm``: how far from the
  origin the points sit, so how much the exponential map and the clip bend them);
* ``euclidean``: the same start with ``geometry: euclidean`` (no exponential map, no
  curvature), so what the hyperbolic geometry itself costs or gains;
* ``clip off``: a clip radius large enough never to act;
* ``raw blocks``: no rotation (``head_init: raw``): the centred features themselves, each
  subspace a contiguous block as faiss PQ splits them, scaled to the same norm;
* ``block-normalised``: each image's centred features with every block scaled to unit
  length before the head (and before faiss PQ in its row), so that a subspace compares
  directions only, as the Euclidean twin's sphere does; ``centred, L2``: the whole centred
  vector scaled to unit length instead. These transform the features given to the start
  (a study, not a library setting);
* ``block norms ** 0.5``: each centred block at the square root of its norm, faiss PQ on
  those, and the library's ``block_norm_power: 0.5`` start (the raw blocks at norm 0.1:
  ``recipe: auto``'s ``kept_sqrt`` candidate untrained).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from hihpq_lib.app.prepare import prepare_for
from hihpq_lib.evaluation.metrics import map_at_k_levels
from hihpq_lib.learning.config import load_config
from hihpq_lib.learning.retrieval import evaluate_levels
from hihpq_lib.learning.training import init_model
from hihpq_lib.utils.arrays import to_numpy


def _levels(prep, a: str, b: str) -> dict:
    qa, db = prep.level_labels(a), prep.level_labels(b)
    return {n: (qa[n], db[n]) for n in qa}


def _faiss_pq(train, query, database, m: int, k: int, levels: dict) -> dict:
    from hihpq_lib.evaluation.baselines import FaissPQ

    pq = FaissPQ(m).fit(train)
    pq.add(database)
    _, idx = pq.search(query, k)
    return map_at_k_levels(idx, levels)


def _pca_spread(train: np.ndarray, q: int, m: int) -> np.ndarray:
    """The projection onto the first ``q`` principal components, component ``j * m + s``
    at position ``s * (q / m) + j`` (the head's spread), as an ``(F, q)`` matrix."""
    x = train.astype(np.float64) - train.mean(0)
    evals, evecs = np.linalg.eigh(x.T @ x)
    v = evecs[:, np.argsort(evals)[::-1][:q]]
    d = q // m
    out = np.zeros_like(v)
    for s in range(m):
        for j in range(d):
            out[:, s * d + j] = v[:, j * m + s]
    return out


def _block_normalised(mean, m: int, power: float = 0.0):
    """``a -> `` the rows of ``a`` minus ``mean``, each of their ``m`` contiguous blocks
    scaled to norm ``|block| ** power`` (``power = 0``: unit length; ``m = 1``: the whole
    vector), float32."""

    def transform(a) -> np.ndarray:
        x = np.asarray(a, dtype=np.float64) - mean
        b = x.reshape(len(x), m, -1)
        b = b * np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12) ** (power - 1)
        return b.reshape(x.shape).astype(np.float32)

    return transform


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--data")
    ap.add_argument("--query-data")
    ap.add_argument("--hierarchy")
    ap.add_argument("--widths", type=int, nargs="+", default=[256, 512, 1280])
    ap.add_argument("--norms", type=float, nargs="+", default=[0.3, 0.1, 1.0])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    items = list(args.overrides)
    for key, val in (
        ("data", args.data),
        ("query_data", args.query_data),
        ("hierarchy_file", args.hierarchy),
    ):
        if val:
            items.append(f"{key}={val}")
    base = load_config(args.config, items)
    base = dataclasses.replace(base, recipe="fixed", eval_init=True)
    prep = prepare_for(base)
    data = prep.training_data()
    query, database = prep.split("query"), prep.split("database")
    test_levels = _levels(prep, "query", "database")
    val_levels = {
        "class": (data.val_query.labels, data.val_database.labels),
    }
    k = min(base.topk, len(database.feats))
    rows = []

    def record(name, val, test, seconds):
        rows.append({"setting": name, "val": val, "test": test, "seconds": round(seconds, 1)})
        cells = " ".join(f"{lv} {v:.4f}" for lv, v in test.items())
        print(f"{name:28s} val {val['class']:.4f} | test {cells} ({seconds:.1f} s)", flush=True)

    train = to_numpy(data.train.float())
    vq, vd = to_numpy(data.val_query.feats), to_numpy(data.val_database.feats)
    tq, td = to_numpy(query.feats), to_numpy(database.feats)
    mu = train.mean(0)

    def pq_row(name, transform=None):
        """faiss PQ fitted on the training features through ``transform`` (once), scored on
        the validation and test queries through it."""
        f = (lambda a: a) if transform is None else transform
        t = time.perf_counter()
        tr = f(train)
        val = _faiss_pq(tr, f(vq), f(vd), base.M, k, val_levels)
        test = _faiss_pq(tr, f(tq), f(td), base.M, k, test_levels)
        record(name, val, test, time.perf_counter() - t)

    pq_row("faiss PQ (raw)")
    for q in args.widths:
        if q <= train.shape[1]:
            rot = _pca_spread(train, q, base.M)
            pq_row(f"faiss PQ (PCA {q})", lambda a, r=rot: ((a - mu) @ r).astype(np.float32))

    def start(name, transform=None, **changes):
        cfg = dataclasses.replace(base, **changes)
        t = time.perf_counter()
        f = (lambda a: a) if transform is None else (lambda a: torch.from_numpy(transform(a)))
        vq_, vd_, tq_, td_ = (
            f(a.feats) for a in (data.val_query, data.val_database, query, database)
        )
        own = data if transform is None else dataclasses.replace(data, train=f(data.train.float()))
        torch.manual_seed(cfg.seed)
        model = init_model(cfg, own, torch.device("cpu")).eval()
        with torch.no_grad():
            val = evaluate_levels(model, vq_, vd_, val_levels, k)
            test = evaluate_levels(model, tq_, td_, test_levels, k)
        record(name, val, test, time.perf_counter() - t)

    for q in args.widths:
        if q <= train.shape[1]:
            start(f"width {q} (norm {base.pca_norm})", feat_dim=q)
    for s in args.norms:
        if s != base.pca_norm:
            start(f"width {base.feat_dim}, norm {s}", pca_norm=s)
    f_dim = train.shape[1]
    if f_dim % base.M == 0:  # the features' own blocks, as faiss PQ splits them
        start(f"raw blocks, width {f_dim}", head_init="raw", feat_dim=f_dim)
        start(f"raw blocks, width {f_dim}, norm 0.1", head_init="raw", feat_dim=f_dim, pca_norm=0.1)
        start("raw blocks, euclidean", head_init="raw", feat_dim=f_dim, geometry="euclidean")
        blocks = _block_normalised(mu, base.M)
        pq_row("faiss PQ (block-normalised)", blocks)
        start("raw blocks, block-normalised", blocks, head_init="raw", feat_dim=f_dim)
        start(
            "raw blocks, centred, L2",
            _block_normalised(mu, 1),
            head_init="raw",
            feat_dim=f_dim,
        )
        start(
            "raw blocks, block-normalised, euclidean",
            blocks,
            head_init="raw",
            feat_dim=f_dim,
            geometry="euclidean",
        )
        # the square root of each block's norm: recipe: auto's kept_sqrt candidate, untrained
        # (the library's block_norm_power, not a transform of the study), beside faiss PQ
        # given the same inputs
        pq_row("faiss PQ (block norms ** 0.5)", _block_normalised(mu, base.M, 0.5))
        start(
            "kept_sqrt: block norms ** 0.5, norm 0.1",
            head_init="raw",
            feat_dim=f_dim,
            pca_norm=0.1,
            block_norm_power=0.5,
        )
    start(f"width {base.feat_dim}, euclidean", geometry="euclidean")
    start(f"width {base.feat_dim}, clip off", clip_r=1e6)
    if args.out:
        meta = {"config": args.config, "overrides": items, "n_train": len(train)}
        meta |= {"n_query": len(tq), "n_database": len(td), "n_val_query": len(vq)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
