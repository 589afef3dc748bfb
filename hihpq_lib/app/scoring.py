"""Scoring a run, one way: restore it (:func:`restore_run`), then :func:`evaluate_run`
on its prepared inputs, or :func:`search_files` with image files. Both use the run's own
backbone states, so a run whose backbone or tail trained is scored as it trained.

Also what ``results.json`` reports beside the mAP: the untrained baselines on the same
frozen features (:func:`baseline_guard`), the per-level results
(:func:`hierarchy_results`) and the pseudo hierarchy's agreement with the true levels
(:func:`pseudo_hierarchy_report`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hihpq_lib import data as D
from hihpq_lib.app.prepare import encoder_for
from hihpq_lib.evaluation.metrics import hierarchy_agreement, map_at_k_levels
from hihpq_lib.learning.checkpoint import (
    CHECKPOINT,
    PSEUDO_HIERARCHY,
    TrainedRun,
    check_stamp,
    load_pseudo_hierarchy,
)
from hihpq_lib.learning.config import TrainConfig
from hihpq_lib.learning.retrieval import evaluate_levels
from hihpq_lib.learning.views import FeatureSplit
from hihpq_lib.quantization.index import PQIndex
from hihpq_lib.utils.arrays import to_numpy

__all__ = [
    "restore_run",
    "RunScores",
    "evaluate_run",
    "encode_query_files",
    "search_files",
    "index_metadata",
    "baseline_guard",
    "hierarchy_results",
    "pseudo_hierarchy_report",
]


def _check_files(run: str | Path, run_id: str | None) -> None:
    run = Path(run)
    header = run / "index" / "index.json"
    if header.is_file():
        check_stamp(run / "index", index_metadata(run).get("run_id"), run_id)
    results = run / "results.json"
    if results.is_file():
        try:
            stamp = json.loads(results.read_text()).get("run_id")
        except (OSError, ValueError, AttributeError):
            stamp = None
        check_stamp(results, stamp, run_id)


def index_metadata(run: str | Path) -> dict:
    """The metadata a run stored with its index (``{}`` when unreadable or absent)."""
    try:
        meta = json.loads((Path(run) / "index" / "index.json").read_text()).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def restore_run(run: str | Path, *, device: str | None = None) -> TrainedRun:
    """A run folder restored for scoring or search: its models and backbone states
    (:class:`~hihpq_lib.learning.checkpoint.TrainedRun`), after checking that its index and
    ``results.json`` belong to the same run.

    ``device``: where the run's backbone and models go (default: the run's own
    ``device``, or the CPU when that is a GPU this machine lacks).
    """
    run = Path(run)
    if not (run / CHECKPOINT).is_file():
        raise FileNotFoundError(
            f"{run} is not a run folder (no {CHECKPOINT}); train one with `hihpq train`"
        )
    trained = TrainedRun.load(run)
    _check_files(run, trained.run_id)
    ids = run / "database_indices.npy"
    trained.n_database = len(np.load(ids, mmap_mode="r")) if ids.is_file() else 0
    device = device or trained.cfg.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        device = "cpu"
    if device != trained.cfg.device:
        trained.cfg = dataclasses.replace(trained.cfg, device=device)
    return trained


@dataclass
class RunScores:
    """mAP@``topk`` of a run on its test queries, per hierarchy level, for the final and
    the validation-selected model, each with its own backbone (:func:`evaluate_run`).

    ``query`` and ``database`` are the final backbone's features (the index's)."""

    final: dict[str, float]
    best: dict[str, float]
    query: FeatureSplit
    database: FeatureSplit


def evaluate_run(run: TrainedRun | str | Path, prep, *, ties: str = "index") -> RunScores:
    """Score a run on ``prep``'s test queries against its database: the one scoring path.

    ``run``: a :class:`~hihpq_lib.learning.checkpoint.TrainedRun` or its folder
    (:func:`restore_run`); ``prep``: the run's prepared inputs
    (:func:`~hihpq_lib.app.prepare.prepare_for`). Each of the final and the
    validation-selected model is scored with the backbone state saved with it (loaded
    into ``prep``'s encoder for the duration, then put back), so a run whose backbone
    or tail trained is scored as it was trained. ``train``'s report, ``hihpq evaluate``
    and the notebooks call this. ``ties``: ``"index"`` (tied distances in database order,
    what the reports use) or ``"expected"`` (averaged over every order of the tied items;
    :func:`~hihpq_lib.learning.retrieval.evaluate_levels`).
    """
    if not isinstance(run, TrainedRun):
        run = restore_run(run)
    cfg = run.cfg
    ql, dl = prep.level_labels("query"), prep.level_labels("database")
    levels = {k: (ql[k], dl[k]) for k in ql}
    scores, splits = {}, {}
    for which in ("final", "best"):
        with prep.restored(run.backbone(which)):
            if which == "final" or run.backbone(which) is not None:
                splits[which] = (prep.split("query"), prep.split("database"))
            q, db = splits.get(which, splits["final"])
            model = run.model(which)
            if model.quantizer.codebooks.device != torch.device(cfg.device):
                model = copy.deepcopy(model).to(cfg.device)  # the run's own stays where it is
            scores[which] = evaluate_levels(
                model, q.feats, db.feats, levels, cfg.topk, cfg.symmetric, ties=ties
            )
    return RunScores(scores["final"], scores["best"], *splits["final"])


def encode_query_files(run: TrainedRun, paths) -> torch.Tensor:
    """Features ``(n, F)`` float32 of image files as the run's database images were
    computed: read at the run's read size, through the run's final backbone
    (:func:`~hihpq_lib.app.prepare.encoder_for` with the trained state restored), in a
    batch of the database's batch size (:data:`QUERY_BATCH`)."""
    meta = index_metadata(run.path)
    size = meta.get("read_size") if "read_size" in meta else _legacy_read_size(run.cfg)
    images = np.stack([D.read_image_file(p, size=size) for p in paths])
    encoder = encoder_for(run.cfg)
    with encoder.restored(run.backbone("final")):
        return encoder.encode(_padded(images, QUERY_BATCH))[: len(images)]


#: Queries are encoded in batches of this many images, the batch size the database was
#: encoded with: CPU and GPU convolution kernels are chosen per batch size, and a batch of
#: one image can differ from a full batch in the last bits (one float16 step of a cached
#: trunk map), which would make a query's features differ from its own database entry.
QUERY_BATCH = 256


def _padded(images: np.ndarray, batch: int) -> np.ndarray:
    """``images`` followed by copies of the last one, up to a multiple of ``batch``."""
    pad = -len(images) % batch
    if pad == 0:
        return images
    return np.concatenate([images, np.repeat(images[-1:], pad, axis=0)])


def _legacy_read_size(cfg: TrainConfig) -> int | None:
    """The read size of a run indexed before ``read_size`` was stored with its index."""
    if cfg.dataset == "cifar10":
        return None
    return 224 if cfg.online_augmentation else D.folder_read_size(cfg.resolution)


def search_files(run: TrainedRun, paths, k: int):
    """``(distances (n, k), database rows (n, k), dataset indices (n, k))`` of the run's
    index searched with image files (:func:`encode_query_files`, the final model, the
    run's ``symmetric`` setting)."""
    index = PQIndex.load(run.path / "index")
    if k < 1 or k > index.ntotal:
        raise ValueError(f"--k must lie in 1..{index.ntotal}, got {k}")
    feats = encode_query_files(run, paths)
    model = run.final
    mode = "symmetric" if run.cfg.symmetric else "asymmetric"
    codebooks = model.quantizer.codebooks  # the model may sit on a GPU, the index on the CPU
    points = model.points(feats.to(codebooks.device, codebooks.dtype)).cpu()
    dist, rows = index.search(points, k, mode=mode)
    db_ids = np.load(run.path / "database_indices.npy")
    rows = to_numpy(rows)
    return to_numpy(dist), rows, db_ids[rows]


def _topk_float(query: torch.Tensor, database: torch.Tensor, k: int) -> np.ndarray:
    """Exact cosine top-``k`` (the float baseline), in chunks of queries."""
    db = torch.nn.functional.normalize(database.float(), dim=1)
    out = []
    for chunk in query.float().split(1024):
        sims = torch.nn.functional.normalize(chunk, dim=1) @ db.T
        out.append(sims.topk(k, dim=1).indices)
    return to_numpy(torch.cat(out))


def method_name(cfg: TrainConfig | str) -> str:
    """What a run trains, in words: HiHPQ, or its twin in another geometry (``cfg``: a
    config, or its ``geometry`` as ``results.json`` records it).

    >>> from hihpq_lib.learning.config import TrainConfig
    >>> method_name(TrainConfig()), method_name(TrainConfig(geometry="euclidean"))
    ('HiHPQ', 'the Euclidean twin of HiHPQ')
    >>> method_name("euclidean")
    'the Euclidean twin of HiHPQ'
    """
    geometry = cfg if isinstance(cfg, str) else cfg.geometry
    return "HiHPQ" if geometry == "lorentz" else f"the {geometry.capitalize()} twin of HiHPQ"


def baseline_guard(
    prep, cfg: TrainConfig, query: FeatureSplit, database: FeatureSplit, model_levels
):
    """The untrained baselines on the same frozen features, and a warning below them.

    ``float``: exact cosine search on the backbone features (32 bits per dimension);
    ``faiss_pq``: faiss PQ with HiHPQ's bytes (``M`` sub-vectors of 8 bits), trained on
    the training images' features, when faiss is installed (the ``baselines`` extra).
    mAP@``topk`` at every level ``model_levels`` has (the validation-selected model's).
    When the model is below a baseline at any level, a ``warning:`` line on stderr says
    so and ``below`` lists the comparisons.
    """
    k = min(cfg.topk, len(database.feats))
    ql, dl = prep.level_labels("query"), prep.level_labels("database")
    levels = {n: (ql[n], dl[n]) for n in ql}
    report: dict = {"float": map_at_k_levels(_topk_float(query.feats, database.feats, k), levels)}
    fit = prep.split("train").feats
    fit = fit if len(fit) >= 256 else database.feats  # k-means needs K = 256 vectors
    report["faiss_pq"] = None  # lean install (pip install "hihpq[baselines]"), tiny runs
    if len(fit) >= 256 and fit.shape[1] % cfg.M == 0:
        try:
            from hihpq_lib.evaluation.baselines import FaissPQ

            pq = FaissPQ(cfg.M).fit(to_numpy(fit.float()))
            pq.add(to_numpy(database.feats.float()))
            _, idx = pq.search(to_numpy(query.feats.float()), k)
            report["faiss_pq"] = map_at_k_levels(idx, levels)
        except ImportError:
            pass
    below = [
        f"{level} {model_levels[level]:.4f} < {name} {scores[level]:.4f} "
        f"({model_levels[level] - scores[level]:+.4f})"
        for name, scores in report.items()
        if scores is not None
        for level in scores
        if level in model_levels and model_levels[level] < scores[level]
    ]
    report["below"] = below
    if below:
        hint = (
            "the folder default chose this on the validation queries; docs/folders.md says "
            "when it can land below doing nothing"
            if cfg.recipe == "auto"
            else "see docs/folders.md: on an image folder the default (no config, recipe: "
            "auto) also tries a start that keeps what the features know"
        )
        print(
            f"warning: {method_name(cfg)} (validation-selected) is below the untrained "
            f"baselines on the same frozen features: {'; '.join(below)} (mAP@{k}); {hint}",
            file=sys.stderr,
        )
    return report


def hierarchy_results(prep, cfg: TrainConfig, final_levels: dict, best_levels: dict) -> dict:
    """The per-level part of ``results.json``: what the hierarchy is and mAP at each level
    (``class`` included) for the final and the validation-selected model."""
    source = (
        "hierarchy_file"
        if cfg.hierarchy_file
        else "superclass_file"
        if cfg.superclass_file
        else "dataset"
        if len(prep.levels) > 1
        else None
    )
    nodes = {k: int(len(np.unique(v))) for k, v in prep.levels.items() if np.asarray(v).ndim == 1}
    return {
        "hierarchy": {"source": source, "levels": nodes},
        f"map@{cfg.topk}_levels_final": final_levels,
        f"map@{cfg.topk}_levels_val_selected": best_levels,
    }


def pseudo_hierarchy_report(run_dir: str | Path, prep, run_id: str | None = None) -> dict | None:
    """ARI and NMI of the learned pseudo hierarchy against every true level.

    The pseudo hierarchy is the Ward clustering of the training images at the last epoch
    that clustered (``pseudo_hierarchy.npz``, one partition per granularity of
    ``num_clusters``); each is compared with the training images' labels at every level
    of ``prep.levels`` (class, superclass or the chosen depths) with
    :func:`~hihpq_lib.evaluation.metrics.hierarchy_agreement`. ``None`` when the run never
    clustered, or the file belongs to another run or training set.
    """
    loaded = load_pseudo_hierarchy(Path(run_dir) / PSEUDO_HIERARCHY)
    if loaded is None:
        return None
    labels, epoch, stamp = loaded
    train_idx = np.asarray(prep.splits.train)
    if (run_id is not None and stamp != run_id) or any(
        len(lab) != len(train_idx) for lab in labels
    ):
        return None
    names = [f"{len(np.unique(lab))} clusters" for lab in labels]
    agreement = {}
    for level, lab in prep.levels.items():
        lab = np.asarray(lab)
        if lab.ndim != 1:
            continue
        rows = hierarchy_agreement(labels, lab[train_idx], level_names=names)
        agreement[level] = [
            {
                "granularity": r["level"],
                "n_clusters": r["n_clusters"],
                "ari": round(r["ari_class"], 4),
                "nmi": round(r["nmi_class"], 4),
            }
            for r in rows
        ]
    return {"epoch": epoch, "n_train": int(len(train_idx)), "agreement": agreement}
