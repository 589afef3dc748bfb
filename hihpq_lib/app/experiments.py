"""Experiments of the pipeline notebooks (04-08): training data with a validation pair, run
folders named after the configuration, ranked retrieval, retrieval examples, ablations
over seeds, and HiHPQ against its Euclidean twin on an image folder with a class hierarchy.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hihpq_lib import data as D
from hihpq_lib.data import add_validation
from hihpq_lib.evaluation.benchmarks import ABLATIONS
from hihpq_lib.evaluation.metrics import (
    average_precision_at_k,
    hits_at_k,
)
from hihpq_lib.learning.config import TrainConfig
from hihpq_lib.learning.model import HiHPQModel
from hihpq_lib.learning.views import FeatureSplit, TrainingData
from hihpq_lib.utils.arrays import to_numpy
from hihpq_lib.utils.runtime import project_dir, runs_dir

__all__ = [
    "training_data",
    "experiment_folder",
    "rank_with_model",
    "pick_queries",
    "retrieval_examples",
    "run_ablation",
    "TINY_IMAGENET_ENV",
    "HierarchyFolder",
    "hierarchy_folder",
    "folder_twin_config",
    "geometry_twins",
    "levels_table",
]


def training_data(prepared, n_val_per_class: int, *, seed: int | None = None) -> TrainingData:
    """Training data of a :class:`~hihpq_lib.app.prepare.Prepared` with a chosen validation pair.

    The validation queries are ``n_val_per_class`` database images per class
    (:func:`~hihpq_lib.data.add_validation`); the validation database is the rest of the
    database. The **test** queries (``prepared.splits.query``) are never touched.

    Parameters
    ----------
    prepared : Prepared (features of every split and the augmentation bank)
    n_val_per_class : int
    seed : int, optional (default: the configuration's seed)

    Returns
    -------
    TrainingData
    """
    seed = prepared.cfg.seed if seed is None else int(seed)
    labels = np.asarray(prepared.dataset.labels)
    vq, vdb = add_validation(
        prepared.splits.database, labels, n_val_per_class=int(n_val_per_class), seed=seed
    )
    base = prepared.training_data()

    def split(idx):
        return FeatureSplit(prepared.feats[prepared.rows(idx)].float(), prepared.labels(idx))

    return TrainingData(
        bank=base.bank, train=base.train, val_query=split(vq), val_database=split(vdb)
    )


def experiment_folder(tag: str, cfg: TrainConfig, *extra) -> Path:
    """``runs_dir()/tutorial/<tag>-<digest>``: one folder per configuration (and ``extra``).

    The folder of a notebook experiment, named after its tag and a digest of what it
    runs (:func:`hihpq_lib.app.pipeline.run_folder` is the folder of a ``hihpq train``
    run: ``out_dir``, else ``runs_dir()/<config name>``). ``extra`` holds anything else
    that changes the run (e.g. the validation size), as JSON-able values.

    >>> from hihpq_lib.learning.config import tutorial_config
    >>> a = experiment_folder("x", tutorial_config(True, 2, hierarchy=False), 10)
    >>> a == experiment_folder("x", tutorial_config(True, 2, hierarchy=False), 10)
    True
    >>> a == experiment_folder("x", tutorial_config(True, 3, hierarchy=False), 10)
    False
    >>> import dataclasses
    >>> cfg = tutorial_config(True, 2, hierarchy=False)
    >>> a == experiment_folder("x", dataclasses.replace(cfg, view_budget=40_000), 10)
    False
    """
    # keys left at None are left out, so that a new optional key (default None) does not
    # move every saved run's folder
    settings = {k: v for k, v in cfg.to_dict().items() if v is not None}
    blob = json.dumps([settings, list(extra)], sort_keys=True, default=str)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
    return runs_dir() / "tutorial" / f"{tag}-{digest}"


@torch.no_grad()
def rank_with_model(
    model: HiHPQModel,
    query: FeatureSplit | torch.Tensor,
    database: FeatureSplit | torch.Tensor,
    topk: int,
) -> torch.Tensor:
    """Database indices ranked by the model's asymmetric PQ search, ``(Q, min(topk, N))``.

    The database is encoded with the model's codebooks, the queries stay unquantized
    (the same search as :func:`~hihpq_lib.learning.retrieval.evaluate_map`, whose mAP is
    ``metrics.map_at_k(query.labels, database.labels, rank_with_model(...))``). To rank
    from a distance matrix instead, use :func:`hihpq_lib.evaluation.metrics.rank_database`.

    Returns
    -------
    (Q, min(topk, N)) int64 tensor, nearest first.
    """
    qf = query.feats if isinstance(query, FeatureSplit) else query
    dbf = database.feats if isinstance(database, FeatureSplit) else database
    index = model.build_index(dbf)
    _, idx = index.search(model.points(qf), min(int(topk), len(dbf)))
    return idx


# ----------------------------------------------------------------------------- retrieval
def pick_queries(prep, per_class: int = 1, n_classes: int | None = None, seed: int = 0):
    """Dataset indices of test queries: ``per_class`` random ones for each class.

    Parameters
    ----------
    prep : :class:`~hihpq_lib.app.prepare.Prepared`
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
    prep : :class:`~hihpq_lib.app.prepare.Prepared`
    model : :class:`~hihpq_lib.learning.model.HiHPQModel`
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
    top = db_idx[to_numpy(top)]  # (Q, k) dataset indices
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
    ``experiment_folder(f"{tag}_{method}_seed{seed}", cfg)`` (under
    ``runs/tutorial/``, named after a digest of the configuration); a folder that
    already holds a finished run is loaded instead of trained (``resume=True``).

    Returns
    -------
    list of dicts, one per (method, seed): ``method``, ``seed``, ``map`` (test mAP@K of
    the validation-selected epoch), ``map_final`` (last epoch), ``ap`` ((Q,) float64
    per-query AP of the selected model, for the query bootstrap), ``val_selected_epoch``,
    ``seconds`` (wall clock of this call, ~0 when loaded) and ``folder``.
    """
    from hihpq_lib.learning.checkpoint import load_model
    from hihpq_lib.learning.retrieval import evaluate_map
    from hihpq_lib.learning.training import train

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
            out = experiment_folder(f"{tag}_{method}_seed{int(seed)}", cfg)
            t0 = time.perf_counter()
            res = train(cfg, prep.training_data(), out, resume=True, progress=progress)
            best, _ = load_model(out, "best", in_dim=q.feats.shape[1])
            ap = average_precision_at_k(
                hits_at_k(q.labels, db.labels, rank_with_model(best, q, db, k))
            )
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


#: The environment variable naming a Tiny-ImageNet-style folder (notebook 08).
TINY_IMAGENET_ENV = "HIHPQ_TINY_IMAGENET"


class HierarchyFolder:
    """An image folder with a class hierarchy: ``train/``, ``val/`` and the hierarchy JSON.

    Attributes ``root``, ``train``, ``val`` and ``hierarchy`` (paths).
    """

    HIERARCHY_NAME = "wordnet_hierarchy.json"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        self.train = self.root / "train"
        self.val = self.root / "val"
        self.hierarchy = self.root / self.HIERARCHY_NAME

    def __repr__(self) -> str:
        return f"HierarchyFolder({str(self.root)!r})"


def hierarchy_folder(env: str = TINY_IMAGENET_ENV) -> HierarchyFolder | None:
    """The folder the environment variable ``env`` names, checked; ``None`` when unset.

    The folder must hold ``train/<class>/<image>``, ``val/<class>/<image>`` (the same class
    sub-folders) and ``wordnet_hierarchy.json`` (class -> ``{"name", "ancestors"}``, root
    first; :func:`hihpq_lib.data.read_hierarchy_file`). A variable that names anything
    else raises ``FileNotFoundError`` saying what is missing and how to fix it.
    """
    value = os.environ.get(env, "").strip()
    if not value:
        return None
    folder = HierarchyFolder(value)
    missing = [
        str(p.relative_to(folder.root)) + ("/" if p.suffix == "" else "")
        for p in (folder.train, folder.val, folder.hierarchy)
        if not (p.is_dir() if p.suffix == "" else p.is_file())
    ]
    if missing:
        raise FileNotFoundError(
            f"{env}={value} lacks {', '.join(missing)}; point it at a folder holding train/ "
            f"and val/ (one sub-folder per class) and {HierarchyFolder.HIERARCHY_NAME}, or "
            "unset it"
        )
    return folder


#: The folder profile the twins start from (relative to the checkout).
FOLDER_PROFILE = Path("configs") / "cpu" / "cpu_folder_32bits.yaml"


def folder_twin_config(
    folder: HierarchyFolder, overrides: Sequence[str] = (), geometry: str = "lorentz"
) -> TrainConfig:
    """The folder profile (``configs/cpu/cpu_folder_32bits.yaml``) on ``folder``.

    ``train/`` is the database and training set, every image of ``val/`` a test query,
    the hierarchy file gives the levels; ``overrides`` (``key=value``) and the geometry
    come last.
    """
    from hihpq_lib.learning.config import load_config

    profile = project_dir() / FOLDER_PROFILE
    items = [
        f"data={folder.train}",
        f"query_data={folder.val}",
        f"hierarchy_file={folder.hierarchy}",
        *overrides,
        f"geometry={geometry}",
        f"name=08_{geometry}",
    ]
    return load_config(profile, items)


def geometry_twins(
    folder: HierarchyFolder,
    overrides: Sequence[str] = (),
    *,
    tag: str = "08_twins",
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """HiHPQ (``geometry=lorentz``) and its Euclidean twin, same data, features and seed.

    Both runs share one :func:`~hihpq_lib.app.prepare.prepare` (the frozen features, the
    augmentation bank and the splits) and differ only in ``geometry``. Each has its own
    folder, ``experiment_folder(f"{tag}_{geometry}", cfg)``; a folder whose ``results.json``
    exists is loaded instead of trained.

    Returns
    -------
    ``{"lorentz": results, "euclidean": results}``: the ``results.json`` of each run
    (per-level mAP under ``map@K_levels_val_selected``), with ``"folder"`` and
    ``"trained_now"`` (trained by this call, or loaded) added.
    """
    from hihpq_lib.app.pipeline import run_experiment
    from hihpq_lib.app.prepare import prepare

    cfgs = {g: folder_twin_config(folder, overrides, g) for g in ("lorentz", "euclidean")}
    out: dict[str, dict[str, Any]] = {}
    prep = None
    for geometry, cfg in cfgs.items():
        run = experiment_folder(f"{tag}_{geometry}", cfg)
        results = run / "results.json"
        if not results.is_file():
            if prep is None:
                prep = prepare(cfg, progress=progress)
            res = run_experiment(cfg, run, overwrite=True, progress=progress, prepared=prep)
            res = {k: v for k, v in res.items() if k not in ("model", "prepared", "history")}
            res["trained_now"] = True
        else:
            res = json.loads(results.read_text())
            res["trained_now"] = False
        out[geometry] = {**res, "folder": str(run)}
    return out


def levels_table(results: dict[str, dict[str, Any]], topk: int) -> list[dict[str, Any]]:
    """One row per hierarchy level: its number of nodes and each run's test mAP@``topk``.

    ``results`` as :func:`geometry_twins` returns it; mAP of the validation-selected
    epochs. Rows from the finest level (``class``) to the coarsest. When the runs measured
    the untrained baselines on their features (``results.json``'s ``baselines``), each
    row also holds ``faiss PQ (untrained)`` and ``float features``.
    """
    key = f"map@{topk}_levels_val_selected"
    first = next(iter(results.values()))
    nodes = first["hierarchy"]["levels"]
    # the untrained baselines the runs share (same features, splits and bytes), when
    # `train` measured them (`baseline_guard`): the first run's, as every run's are equal
    guard = first.get("baselines") or {}
    baselines = {
        label: guard[name]
        for name, label in (("faiss_pq", "faiss PQ (untrained)"), ("float", "float features"))
        if guard.get(name)
    }
    rows = []
    for level in sorted(nodes, key=lambda k: -nodes[k]):
        row: dict[str, Any] = {"level": level, "nodes": int(nodes[level])}
        for name, res in results.items():
            row[name] = float(res[key][level])
        for label, scores in baselines.items():
            if level in scores:
                row[label] = float(scores[level])
        rows.append(row)
    return rows
