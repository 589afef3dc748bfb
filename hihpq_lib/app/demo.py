"""``hihpq demo``: the README's main job.

CIFAR-10 protocol II, 32 bits, the CPU profile with the backbone at 160 px
(EfficientNet-Lite0 features, an 8-view augmentation bank, 20 epochs). Prints a
table — HiHPQ against float features and faiss OPQ on the same frozen features,
mAP@1000 on the 10,000 test queries — and saves a retrieval grid and a Poincaré-disk picture under ``runs/demo``.

``--quick`` (and fast mode, ``HIHPQ_FAST=1``) shrinks the splits and epochs and drops to
128 px, so the whole path runs in a minute or two; CI runs it as an
integration test.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from hihpq_lib.app.pipeline import check_run_folder, run_experiment
from hihpq_lib.app.prepare import prepare
from hihpq_lib.evaluation.baselines import FaissOPQ, FloatBaseline
from hihpq_lib.evaluation.metrics import format_table, map_at_k
from hihpq_lib.learning.config import TrainConfig, demo_config
from hihpq_lib.utils.arrays import to_numpy
from hihpq_lib.utils.atomic import atomic_write_text
from hihpq_lib.utils.runtime import fast_mode, runs_dir
from hihpq_lib.utils.timing import peak_rss_mb

__all__ = ["run_demo", "baseline_maps"]


def baseline_maps(prep, cfg: TrainConfig) -> list[dict]:
    """Float-feature and faiss OPQ baselines on the same frozen features."""
    q = prep.split("query")
    db = prep.split("database")
    train = to_numpy(prep.feats[prep.rows(prep.splits.train)], np.float32)
    if len(train) < train.shape[1]:
        # OPQ needs n >= dim (quick mode has few training images): fit on the database,
        # which an index sees anyway (no labels are used)
        train = to_numpy(db.feats)
    topk = min(cfg.topk, len(db.feats))
    rows = []
    for name, method, bits in (
        ("float features (cosine)", FloatBaseline(), 32 * train.shape[1]),
        (f"faiss OPQ (M={cfg.M}, {train.shape[1]}->256)", FaissOPQ(cfg.M, d_out=256), cfg.bits),
    ):
        t = time.perf_counter()
        method.fit(train)
        method.add(to_numpy(db.feats))
        _, idx = method.search(to_numpy(q.feats), topk)
        rows.append(
            {
                "method": name,
                "bits": bits,
                f"mAP@{cfg.topk}": map_at_k(q.labels, db.labels, torch.as_tensor(idx)),
                "seconds": round(time.perf_counter() - t, 1),
            }
        )
    return rows


def _figures(res: dict, out: Path) -> list[Path]:
    """Retrieval grid and Poincaré disks, as PNG files."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from hihpq_lib import viz

    prep, model, cfg = res["prepared"], res["model"], res["prepared"].cfg
    q_idx, db_idx = np.asarray(prep.splits.query), np.asarray(prep.splits.database)
    rng = np.random.default_rng(cfg.seed)
    labels = np.asarray(prep.dataset.labels)
    # one query per class (first few classes), nearest 10
    picks = [rng.choice(q_idx[labels[q_idx] == c]) for c in np.unique(labels[q_idx])[:6]]
    index = model.build_index(prep.split("database").feats)
    q_feats = prep.feats[prep.rows(picks)].float()
    _, top = index.search(model.points(q_feats), 10)
    top = db_idx[to_numpy(top)]
    from hihpq_lib.data import read_images

    q_img = read_images(prep.dataset, picks, size=64)
    r_img = np.stack([read_images(prep.dataset, row, size=64) for row in top])
    hits = labels[top] == labels[np.asarray(picks)][:, None]
    paths = []
    names = prep.dataset.class_names
    titles = [names[int(c)] for c in labels[np.asarray(picks)]]
    fig = viz.retrieval_grid(
        q_img,
        r_img,
        hits,
        query_titles=titles,
        title="HiHPQ: query (left) and its 10 nearest database images",
    )
    paths.append(out / "retrieval_grid.png")
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    if model.space.k is not None:  # the codeword disks are drawn with the curvature
        sample = prep.rows(rng.choice(db_idx, size=min(1500, len(db_idx)), replace=False))
        pts = model.points(prep.feats[sample].float())
        point_labels = [names[int(c)] for c in labels[prep.feat_index[to_numpy(sample)]]]
        fig = viz.subspace_codewords_disks(
            model.quantizer.codewords().detach(),
            model.space.k.detach(),
            points=pts,
            point_labels=point_labels,
            backend="matplotlib",
            title="Codewords (black) and database points on each subspace's Poincaré disk",
        )
        paths.append(out / "poincare_disks.png")
        fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    return paths


def _is_demo_run(out: Path) -> bool:
    """Whether ``out`` holds a demo run (its config is named ``demo``), e.g. a killed one."""
    try:
        return yaml.safe_load((out / "config.yaml").read_text()).get("name") == "demo"
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return False


def run_demo(
    out_dir=None,
    quick: bool = False,
    data: str | None = None,
    overrides=None,
    figures: bool = True,
    overwrite: bool = False,
) -> dict:
    """Run the demo; return the table rows and write ``results.json`` / ``table.md``."""
    quick = quick or fast_mode()
    cfg = demo_config(quick, data or os.environ.get("HIHPQ_CIFAR10"), overrides)
    out = Path(out_dir) if out_dir else runs_dir() / "demo"
    # The demo replaces its own earlier output, and nothing else: a folder that holds
    # files but no demo.json is someone's run, refused as `hihpq train` refuses it.
    own = overwrite or (out / "demo.json").is_file() or _is_demo_run(out)
    check_run_folder(cfg, out, overwrite=own)
    t0 = time.perf_counter()
    prep = prepare(cfg)
    res = run_experiment(cfg, out, prepared=prep, overwrite=own)
    key = f"mAP@{cfg.topk}"
    rows = [
        {
            "method": "HiHPQ (val-selected epoch)",
            "bits": cfg.bits,
            key: res[f"map@{cfg.topk}_val_selected"],
            "seconds": round(res["stage_seconds"].get("train", 0.0), 1),
        },
        {
            "method": "HiHPQ (final epoch)",
            "bits": cfg.bits,
            key: res[f"map@{cfg.topk}_final"],
            "seconds": None,
        },
    ]
    rows += baseline_maps(prep, cfg)
    table = format_table(rows)
    total = time.perf_counter() - t0
    print()
    print(
        f"CIFAR-10 protocol {cfg.protocol}, {cfg.bits} bits, {res['n_query']} queries vs "
        f"{res['n_database']} database images ({'quick' if quick else 'full'} mode)"
    )
    print(table)
    print("stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in res["stage_seconds"].items()))
    print(f"total {total:.0f} s, peak memory {peak_rss_mb():.0f} MB")
    figs = _figures(res, out) if figures else []
    for p in figs:
        print(f"saved {p}")
    summary = {
        "rows": rows,
        "total_seconds": round(total, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "stage_seconds": res["stage_seconds"],
        "quick": quick,
        "config": cfg.to_dict(),
    }
    atomic_write_text(out / "demo.json", json.dumps(summary, indent=2))
    atomic_write_text(out / "table.md", table + "\n")
    return summary
