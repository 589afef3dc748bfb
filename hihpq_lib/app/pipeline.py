"""A run from a config: prepare its inputs, train, score it, write its folder.

:func:`run_experiment` prepares the inputs of the config's mode
(:func:`~hihpq_lib.app.prepare.prepare_for`), trains, scores the final and the
validation-selected model on the test queries (:func:`~hihpq_lib.app.scoring.evaluate_run`,
the same path ``hihpq evaluate`` takes), and writes ``results.json`` and the index to the
run folder (:func:`run_folder`, checked by :func:`check_run_folder`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from hihpq_lib import data as D
from hihpq_lib.app.prepare import Prepared, prepare_for
from hihpq_lib.app.recipe import CANDIDATES, CANDIDATES_DIR, choose_and_train
from hihpq_lib.app.scoring import (
    baseline_guard,
    evaluate_run,
    hierarchy_results,
    pseudo_hierarchy_report,
    restore_run,
)
from hihpq_lib.learning.checkpoint import BEST, CHECKPOINT, PSEUDO_HIERARCHY, load_checkpoint
from hihpq_lib.learning.config import TrainConfig, bank_views, config_differences
from hihpq_lib.learning.training import train
from hihpq_lib.utils.atomic import atomic_write_text, clean_stale_tmp
from hihpq_lib.utils.runtime import runs_dir
from hihpq_lib.utils.timing import StageTimer, peak_rss_mb

__all__ = [
    "run_experiment",
    "RunFolderError",
    "RUN_FILES",
    "run_folder",
    "check_run_folder",
]


#: What a run writes into its folder (``--overwrite`` removes exactly these).
RUN_FILES = (
    "config.yaml",
    "splits.json",
    "metrics.jsonl",
    CHECKPOINT,
    BEST,
    "results.json",
    "index",
    "database_indices.npy",
    PSEUDO_HIERARCHY,
    CANDIDATES_DIR,
)


class RunFolderError(ValueError):
    """A run folder that a command must not write into (or read from) as asked."""


def run_folder(cfg: TrainConfig, out_dir: str | Path | None = None) -> Path:
    """The folder a run writes to: ``out_dir``, else ``runs_dir() / cfg.name``."""
    return Path(out_dir) if out_dir is not None else runs_dir() / cfg.name


def check_run_folder(
    cfg: TrainConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False
) -> Path:
    """Validate a run folder before anything is written to it; return it.

    * ``out`` must be a folder (or not exist yet);
    * with ``resume``, a checkpoint there must have been written with ``cfg`` (nothing
      is written when it was not);
    * otherwise the folder must be empty, unless ``overwrite``: then the files of the
      earlier run (:data:`RUN_FILES`) are removed first, so a new run killed midway never
      leaves a folder that mixes two runs.

    Orphaned temporary files of killed writers are removed in every case.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(
            f"run folder {out} exists and is a file, not a folder; pass another --out"
        )
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other; pass one")
    if not out.is_dir():
        return out
    clean_stale_tmp(out)
    clean_stale_tmp(out / "index")
    if resume:
        ckpt = out / CHECKPOINT
        if ckpt.is_file():
            ck = load_checkpoint(ckpt)
            theirs, ours = ck.get("config") or {}, cfg.to_dict()
            if cfg.recipe == "auto":  # the checkpoint is the winning candidate's copy:
                # the keys a candidate sets (and its name) are the recipe's, not the run's
                owned = {"recipe", "name"}.union(*CANDIDATES.values())
                theirs = {k: v for k, v in theirs.items() if k not in owned}
                ours = {k: v for k, v in ours.items() if k not in owned}
            if ours.get("num_clusters") == "auto":  # resolved from the data when it trained
                # (training.train); open_run compares the resolved value before training
                ours.pop("num_clusters")
                theirs = {k: v for k, v in theirs.items() if k != "num_clusters"}
            diff = config_differences(theirs, ours)
            if diff:
                raise RunFolderError(
                    f"{ckpt} was written with another configuration (differs in "
                    f"{', '.join(diff[:5])}); start a new run folder or drop --resume"
                )
        return out
    present = sorted(p.name for p in out.iterdir())
    if not present:
        return out
    if not overwrite:
        shown = ", ".join(present[:4]) + (", ..." if len(present) > 4 else "")
        raise RunFolderError(
            f"run folder {out} is not empty (holds {shown}); pass --resume to continue its "
            "run, --overwrite to replace it, or another --out"
        )
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    return out


def run_experiment(
    cfg: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    prepared=None,
) -> dict:
    """Prepare, train, and score on the test queries; write ``results.json`` and the index.

    The validation queries select the epoch (``best``); the test queries are only used to
    report the final model and the selected model, never to choose between them. Both are
    scored by :func:`~hihpq_lib.app.scoring.evaluate_run` from the saved run, each with
    its own backbone, as ``hihpq evaluate`` scores them later.

    A non-empty run folder is refused unless ``resume`` (continue its checkpoint; a
    checkpoint of another configuration is refused before anything is written) or
    ``overwrite`` (its earlier run's files are removed first); see
    :func:`check_run_folder`. ``prepared``: inputs already prepared for ``cfg``
    (:func:`~hihpq_lib.app.prepare.prepare_for`).
    """
    out = check_run_folder(cfg, run_folder(cfg, out_dir), resume=resume, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.yaml")
    prep = prepared or prepare_for(cfg, progress=progress, run_dir=out)
    D.save_splits(prep.splits, out / "splits.json")
    # this run's stages on a copy: prepared inputs shared by several runs (a study's seeds)
    # keep only their own preparation seconds, so each run reports its own training time
    timer = StageTimer()
    timer.seconds = dict(prep.timer.seconds)
    recipe_report = None
    with timer("train"):
        data = prep.training_data()
        if cfg.recipe == "auto":  # screen the candidate recipes on validation, finish one
            res, recipe_report = choose_and_train(cfg, data, out, resume=resume, progress=progress)
        else:
            res = train(cfg, data, out, resume=resume, progress=progress)
    run_cfg = res["config"]  # num_clusters: auto resolved from the data
    with timer("encode + search + mAP"):
        run = restore_run(out)
        scores = evaluate_run(run, prep)
    query, database = scores.query, scores.database
    guard = None
    if cfg.baseline_guard and isinstance(prep, Prepared):  # frozen features only
        with timer("baselines"):
            guard = baseline_guard(prep, run_cfg, query, database, scores.best)
    meta = {"config": run_cfg.to_dict(), "run_id": res["run_id"], "read_size": prep.read_size()}
    run.final.build_index(database.feats, metadata=meta).save(out / "index")
    np.save(out / "database_indices.npy", np.asarray(prep.splits.database))
    is_cifar = cfg.dataset == "cifar10"
    results = {
        "name": cfg.name,
        "run_id": res["run_id"],
        "threads": res["threads"],
        "dataset": prep.dataset.display_name,
        "dataset_kind": cfg.dataset,
        "protocol": cfg.protocol if is_cifar else None,
        "split": f"protocol {cfg.protocol}" if is_cifar else _split_label(prep.splits),
        "bits": cfg.bits,
        "geometry": cfg.geometry,
        "input_mode": prep.mode,
        f"map@{cfg.topk}_final": scores.final["class"],
        f"map@{cfg.topk}_val_selected": scores.best["class"],
        "val_selected_epoch": res["best_epoch"],
        "val_map_best": res["best_val_map"],
        "val_map_final": res["final_val_map"],
        "val_map_init": res.get("init_val_map"),
        # codebook_refine: each saved model's Lloyd refinement (validation before / after, kept)
        "codebook_refine": res.get("refine"),
        "epochs": cfg.epochs,
        "n_classes": prep.dataset.n_classes,
        "num_clusters": list(run_cfg.num_clusters),
        "n_query": len(query.feats),
        "n_database": len(database.feats),
        "n_train": len(prep.splits.train),
        # augmented views per training image (view_budget can lower n_views; online: none)
        "bank_views": None if cfg.online_augmentation else bank_views(cfg, len(prep.splits.train)),
        **hierarchy_results(prep, cfg, scores.final, scores.best),
        "baselines": guard,
        "recipe": recipe_report,
        "pseudo_hierarchy": pseudo_hierarchy_report(out, prep, res["run_id"]),
        "stage_seconds": {k: round(v, 2) for k, v in timer.seconds.items()},
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    return {**results, "model": res["model"], "prepared": prep, "history": res["history"]}


def _split_label(splits: D.Splits) -> str:
    source = splits.meta.get("query_source")
    return "folder split" + (f" (queries from the {source})" if source else "")
