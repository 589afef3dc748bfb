"""One training recipe for any dataset, chosen on its validation queries (``recipe: auto``).

Each recipe wins where it was tuned (docs/folders.md, "One recipe for every folder"):
the contrastive recipe of the CIFAR-10 profiles (a random head learns what the frozen
features lack) beats doing nothing on a folder whose classes the backbone never saw, and
loses what the features knew on one whose classes it was pretrained on; the
feature-keeping recipe (a head that starts as the features themselves, split into
subspaces as classical PQ splits them, k-means codebooks, a term that keeps the features'
neighbourhoods, the untrained model a candidate) is the other way round. A third
candidate, ``kept_sqrt``, is the feature-keeping recipe with each block of the centred
features at the square root of its norm (``block_norm_power: 0.5``), between classical PQ,
which keeps the norms, and the Euclidean twin's sphere, which keeps directions only.
``recipe: auto`` does not guess which one a dataset needs:

1. every candidate of :data:`CANDIDATES` trains for ``recipe_screen_epochs`` epochs of
   its full schedule (the same learning-rate curve as a full run: ``train(...,
   stop_after=...)``), each in ``RUN/candidates/<name>/``, on the same prepared inputs;
2. the candidate whose validation-selected model scores highest on the **validation**
   queries wins (the feature-keeping candidates count their untrained models, epoch 0, so
   doing nothing with the same bytes is always on the list); a tie keeps the first;
3. the winner continues from its checkpoint to the last epoch (or until ``patience``
   epochs pass without a better validation mAP), and its files become the run's
   (``checkpoint.pt``, ``best.pt``, ``metrics.jsonl``, the pseudo hierarchy).

The test queries are never read before the winner is scored. ``results.json`` records the
screening under ``recipe`` (each candidate's settings, validation mAP and selected epoch,
and the winner). The assumption, and what happens when it fails: a candidate that leads
after the screening epochs is assumed to stay ahead; when another candidate would have
overtaken it later, the run ends below what that candidate would have reached, never below
the winner's own validation-selected model (``docs/folders.md``).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from hihpq_lib.learning.checkpoint import (
    BEST,
    CHECKPOINT,
    METRICS,
    PSEUDO_HIERARCHY,
    load_checkpoint,
)
from hihpq_lib.learning.config import TrainConfig
from hihpq_lib.learning.training import train

__all__ = ["CANDIDATES", "candidate_configs", "choose_and_train", "CANDIDATES_DIR"]

#: Where the candidates' runs go inside the run folder.
CANDIDATES_DIR = "candidates"

#: Keep what the frozen features know: the untrained start (epoch 0) is a candidate; the
#: head starts as the centred features themselves, each subspace a contiguous block, as
#: classical PQ splits them (feat_dim None = the features' dimension; with one that M
#: does not divide, the first principal components, PCA_FALLBACK of them).
_KEPT: dict = {
    "head_init": "raw",
    "feat_dim": None,
    "pca_norm": 0.1,
    "codebook_init": "kmeans",
    "neighbour_weight": 1.0,
    "eval_init": True,
    "block_norm_power": 1.0,
}

#: The candidate recipes, in order of preference on a tie: what each sets on top of the
#: run's config (backbone, bits, epochs, clustering and the rest stay the run's).
CANDIDATES: dict[str, dict] = {
    "kept": _KEPT,
    # the same, each block of the centred features at the square root of its norm before the
    # head: between classical PQ (norms kept) and the Euclidean twin's sphere (directions
    # only); the block's direction decides more, its norm still counts (docs/folders.md)
    "kept_sqrt": {**_KEPT, "block_norm_power": 0.5},
    # learn what they lack: the CIFAR-10 profiles' recipe (the reference's random head)
    "contrastive": {
        "head_init": "random",
        "feat_dim": 64,
        "pca_norm": 1.0,
        "codebook_init": "uniform",
        "neighbour_weight": 0.0,
        "eval_init": False,
        "block_norm_power": 1.0,
    },
}


#: The kept candidate's width when ``M`` does not divide the features' dimension: the head
#: then starts at this many principal components (``head_init: pca``).
PCA_FALLBACK = 256


def candidate_configs(cfg: TrainConfig, in_dim: int = 1280) -> dict[str, TrainConfig]:
    """Each candidate's config: ``cfg`` with the candidate's settings, ``recipe: fixed``.

    ``in_dim``: the features' dimension (``feat_dim: None`` takes it). A ``feat_dim``
    that ``cfg.M`` does not divide is rounded up to the next multiple; a raw start whose
    width ``M`` does not divide falls back to :data:`PCA_FALLBACK` principal components.
    """
    out = {}
    m = cfg.M
    for name, settings in CANDIDATES.items():
        settings = dict(settings)
        if settings["feat_dim"] is None:
            settings["feat_dim"] = int(in_dim)
            if in_dim % m:
                settings.update(head_init="pca", feat_dim=PCA_FALLBACK)
        settings["feat_dim"] = -(-int(settings["feat_dim"]) // m) * m
        out[name] = dataclasses.replace(
            cfg, **settings, recipe="fixed", name=f"{cfg.name}-{name}"[:100]
        )
    return out


#: The files of the winner's run that become the run's own.
_PROMOTED = (CHECKPOINT, BEST, METRICS, PSEUDO_HIERARCHY)


def choose_and_train(
    cfg: TrainConfig, data, out: Path, *, resume: bool = False, progress: bool = True
) -> tuple[dict, dict]:
    """Screen the candidates on ``data``'s validation queries, finish the winner in ``out``.

    Returns ``(res, report)``: ``res`` as :func:`~hihpq_lib.learning.training.train`
    returns it for the winner's whole run, ``report`` the ``recipe`` block of
    ``results.json``. With ``resume``, a candidate whose folder holds a checkpoint of its
    config continues from it (a killed screening loses at most an epoch).
    """
    out = Path(out)
    screen = min(int(cfg.recipe_screen_epochs), int(cfg.epochs))
    configs = candidate_configs(cfg, int(data.train.shape[1]))
    screened: dict[str, dict] = {}
    for name, c in configs.items():
        where = out / CANDIDATES_DIR / name
        done = _epochs_done(where) if resume else 0
        if progress:
            print(f"recipe: screening candidate {name!r} ({screen} epochs)", flush=True)
        r = train(
            c,
            data,
            where,
            resume=resume,
            progress=progress,
            stop_after=max(screen - done, 0),
        )
        screened[name] = {
            "settings": {k: getattr(c, k) for k in CANDIDATES[name]},
            "val_map_best": float(r["best_val_map"]),
            "val_selected_epoch": int(r["best_epoch"]),
            "screen_epochs": screen,
        }
    winner = max(screened, key=lambda n: (screened[n]["val_map_best"], -list(configs).index(n)))
    if progress:
        summary = ", ".join(f"{n} {v['val_map_best']:.4f}" for n, v in screened.items())
        print(f"recipe: validation mAP after screening: {summary}; keeping {winner!r}")
    res = train(
        configs[winner], data, out / CANDIDATES_DIR / winner, resume=True, progress=progress
    )
    for name in _PROMOTED:
        src = out / CANDIDATES_DIR / winner / name
        if src.exists():
            shutil.copy2(src, out / name)
    report = {"chosen": winner, "screen_epochs": screen, "candidates": screened}
    return res, report


def _epochs_done(run_dir: Path) -> int:
    """Epochs a candidate's run folder has finished (0 without a checkpoint)."""
    ckpt = run_dir / CHECKPOINT
    if not ckpt.is_file():
        return 0
    return int(load_checkpoint(ckpt)["epoch"]) + 1
