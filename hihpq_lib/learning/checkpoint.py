"""A run folder's files: the checkpoint, the validation-selected model, the metrics log
and the pseudo hierarchy; reading them back (``weights_only``: a checkpoint never runs
code) and checking that they belong to one run (:func:`check_stamp`).
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hihpq_lib.learning.config import TrainConfig, with_legacy_fidelity
from hihpq_lib.learning.model import HiHPQModel, build_model
from hihpq_lib.utils.arrays import to_numpy
from hihpq_lib.utils.atomic import atomic_torch_save, atomic_write_bytes, atomic_write_text

__all__ = [
    "CHECKPOINT",
    "BEST",
    "METRICS",
    "PSEUDO_HIERARCHY",
    "CheckpointError",
    "load_checkpoint",
    "save_best",
    "save_checkpoint",
    "save_pseudo_hierarchy",
    "load_pseudo_hierarchy",
    "write_metrics",
    "check_stamp",
    "load_model",
    "model_from_state",
    "TrainedRun",
]

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
METRICS = "metrics.jsonl"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used (empty, truncated, foreign or hostile)."""


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint written by :func:`train` (``weights_only=True``: tensors and plain data).

    Raises :class:`CheckpointError` with one line naming the file for an empty, truncated
    or foreign file, and for one that holds anything but tensors and plain data (such a
    file is never unpickled: it could run code).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"checkpoint {path} is empty (a crash while it was first written?); delete it "
            "and train again, or resume from a copy"
        )
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain data, so it was "
            "not loaded (it may run code); use a checkpoint written by hihpq, or train again"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a hihpq checkpoint "
            f"({type(exc).__name__}); delete it and train again"
        ) from None
    if not isinstance(ck, dict) or "model" not in ck:
        raise CheckpointError(f"{path} is not a hihpq checkpoint (no model weights); train again")
    return ck


def save_best(
    path: Path, model: HiHPQModel, epoch: int, val_map: float, run_id: str, backbone=None
) -> None:
    """Write the validation-selected model to ``path`` (``best.pt``), atomically.

    ``epoch`` is 0-based; ``backbone``: the online backbone when it trains.
    """
    best = {"model": model.state_dict(), "epoch": epoch, "val_map": val_map, "run_id": run_id}
    if backbone is not None:
        best["backbone"] = backbone.state_dict()
    atomic_torch_save(best, path)


def save_checkpoint(
    path: Path,
    cfg: TrainConfig,
    model: HiHPQModel,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    history: list[dict],
    best: tuple[float, int],
    run_id: str,
    threads: int,
    backbone=None,
) -> None:
    """Write everything a resumed run needs to ``path`` (``checkpoint.pt``), atomically.

    The model, the optimiser, the last finished ``epoch`` (0-based), the ``history``,
    ``best = (best_val_map, best_epoch)``, the config, the online ``backbone`` (when it
    trains), the run id and the thread count (it changes float rounding).
    """
    atomic_torch_save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "history": history,
            "best_val_map": best[0],
            "best_epoch": best[1],
            "config": cfg.to_dict(),
            "backbone": backbone.state_dict() if backbone is not None else None,
            "run_id": run_id,
            "threads": int(threads),
        },
        path,
    )


#: The Ward clusters of the training images at the last clustering epoch (``.npz``).
PSEUDO_HIERARCHY = "pseudo_hierarchy.npz"


def save_pseudo_hierarchy(path: Path, labels, epoch: int, run_id: str) -> None:
    """Write the pseudo hierarchy of one epoch: ``level_<i>`` = the cluster of every
    training image (in training-set order) at granularity ``i``, plus ``epoch``."""
    arrays = {f"level_{i}": to_numpy(lab) for i, lab in enumerate(labels)}
    buf = io.BytesIO()
    np.savez(buf, epoch=np.int64(epoch), run_id=np.str_(run_id), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_pseudo_hierarchy(path: Path) -> tuple[list, int, str | None] | None:
    """``(labels per granularity, epoch, run_id)`` written by :func:`save_pseudo_hierarchy`,
    or ``None`` when the run never clustered (no file)."""
    path = Path(path)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        n = len([k for k in z.files if k.startswith("level_")])
        labels = [z[f"level_{i}"] for i in range(n)]
        run_id = str(z["run_id"]) if "run_id" in z.files else None
        return labels, int(z["epoch"]), run_id


def write_metrics(path: Path, history: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(h) + "\n" for h in history))


def check_stamp(path: Path, stamp: str | None, run_id: str | None) -> None:
    """Refuse a file of a run folder written by another run than its ``checkpoint.pt``.

    Every file a run writes carries the run's id (``run_id`` in ``checkpoint.pt`` and
    ``best.pt``, in the index metadata and ``results.json``); a folder where training
    into it was interrupted after an older run could otherwise pair the new model with
    the old index. Folders written before run ids existed carry none and pass.
    """
    if run_id is not None and stamp != run_id:
        raise CheckpointError(
            f"{path} was written by another run than {Path(path).parent / CHECKPOINT} "
            f"(run id {stamp} vs {run_id}): the run folder mixes two runs; train again "
            "into an empty folder (or with --overwrite)"
        )


def model_from_state(cfg: TrainConfig, state: dict, in_dim: int | None = None) -> HiHPQModel:
    """The model ``cfg`` describes with the weights ``state``, in eval mode, on the CPU.

    ``in_dim``: the backbone feature width (read from the head's weights when omitted)."""
    first = "head.net.0.weight" if "head.net.0.weight" in state else "head.net.weight"
    dim = in_dim if in_dim is not None else state[first].shape[1]
    model = build_model(cfg, dim)
    model.load_state_dict(state)
    model.eval()
    return model


def load_model(
    run_dir: str | Path, which: str = "final", in_dim: int | None = None
) -> tuple[HiHPQModel, TrainConfig]:
    """Rebuild a trained model from a run folder (``which``: "final" or "best").

    The model only: a run whose backbone trained needs its backbone too, which
    :class:`TrainedRun` restores with it."""
    run = Path(run_dir)
    ck = load_checkpoint(run / CHECKPOINT)
    cfg = TrainConfig.from_dict(with_legacy_fidelity(ck["config"]))
    if _which(which) == "final":
        return model_from_state(cfg, ck["model"], in_dim), cfg
    best = load_checkpoint(run / BEST)
    check_stamp(run / BEST, best.get("run_id"), ck.get("run_id"))
    return model_from_state(cfg, best["model"], in_dim), cfg


@dataclass
class TrainedRun:
    """A run folder restored: its config, its final and validation-selected models and,
    when the backbone (or its tail) trained, the backbone state of each.

    ``backbone(which)`` is ``None`` for a frozen backbone. Every consumer (``train``'s
    report, ``hihpq evaluate``, ``hihpq search``, the notebooks) scores a run through
    this, so none rebuilds a piece of it from the config
    (:mod:`hihpq_lib.app.scoring`).
    """

    path: Path
    cfg: TrainConfig
    run_id: str | None
    final: HiHPQModel
    best: HiHPQModel
    best_epoch: int
    final_backbone: dict | None
    best_backbone: dict | None
    #: images in the run's index (``database_indices.npy``; 0 before it is written)
    n_database: int = 0

    @classmethod
    def load(cls, run_dir: str | Path, *, in_dim: int | None = None) -> TrainedRun:
        """Load ``checkpoint.pt`` and ``best.pt`` of ``run_dir`` (refused when they come
        from two runs, :func:`check_stamp`)."""
        run = Path(run_dir)
        ck = load_checkpoint(run / CHECKPOINT)
        best = load_checkpoint(run / BEST)
        check_stamp(run / BEST, best.get("run_id"), ck.get("run_id"))
        cfg = TrainConfig.from_dict(with_legacy_fidelity(ck["config"]))
        return cls(
            path=run,
            cfg=cfg,
            run_id=ck.get("run_id"),
            final=model_from_state(cfg, ck["model"], in_dim),
            best=model_from_state(cfg, best["model"], in_dim),
            best_epoch=int(best.get("epoch", -1)) + 1,
            final_backbone=ck.get("backbone"),
            best_backbone=best.get("backbone"),
        )

    def model(self, which: str) -> HiHPQModel:
        """The ``"final"`` or the ``"best"`` (validation-selected) model."""
        return {"final": self.final, "best": self.best}[_which(which)]

    def backbone(self, which: str) -> dict | None:
        """The backbone state that goes with :meth:`model` (``None``: frozen)."""
        return {"final": self.final_backbone, "best": self.best_backbone}[_which(which)]


def _which(which: str) -> str:
    if which not in ("final", "best"):
        raise ValueError(f"which must be 'final' or 'best', got {which!r}")
    return which
