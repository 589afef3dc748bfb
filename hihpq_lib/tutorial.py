"""Helpers for the tutorial notebooks on CIFAR-10 (``notebooks/04_*``, ``notebooks/05_*``).

The notebooks stay thin: what they would otherwise assemble by hand lives here, tested in
``tests/test_tutorial.py``.

* :func:`tutorial_config` -- the short training runs of notebooks 04 and 05 (the demo's
  CPU profile with fewer epochs, with or without the hierarchy losses). Both notebooks
  build the contrastive-only run from it, so they share one checkpoint.
* :func:`training_data` -- :meth:`Prepared.training_data
  <hihpq_lib.pipeline.Prepared.training_data>` with a validation pair carved from the
  **database** with a chosen number of queries per class (the quick subset keeps only one
  validation query per class, too few to compare two models).
* :func:`run_folder` -- a run folder under :func:`~hihpq_lib.runtime.runs_dir` named after
  a digest of the configuration, so "load the checkpoint, else train"
  (``train(..., resume=True)``) never meets a checkpoint written with other settings.
* :func:`search` -- the ranked database indices of PQ search (what
  :func:`~hihpq_lib.training.evaluate_map` averages), for per-query APs.
* :func:`paired_bootstrap` -- a confidence interval for the difference of two models'
  mAP on the same queries.
* :func:`purity` -- how pure clusters are with respect to labels.
* :func:`views_grid` -- images and augmented views side by side (matplotlib).
* :func:`initial_model` -- the model as training starts it (the "before" of a run).
* :func:`codeword_geometry` -- where points, codewords and soft quantizations sit
  (distances from the origin, quantization errors, what a 2-D PCA view keeps).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from .config import TrainConfig
from .data import add_validation
from .demo import demo_config
from .model import HiHPQModel
from .runtime import runs_dir
from .training import FeatureSplit, TrainingData

__all__ = [
    "tutorial_config",
    "training_data",
    "run_folder",
    "search",
    "paired_bootstrap",
    "purity",
    "views_grid",
    "initial_model",
    "codeword_geometry",
]


def tutorial_config(quick: bool, epochs: int, *, hierarchy: bool) -> TrainConfig:
    """The short runs of notebooks 04-05: the demo's CPU profile with ``epochs`` epochs.

    Parameters
    ----------
    quick : bool
        The quick CIFAR-10 subset (:func:`~hihpq_lib.demo.demo_config`).
    epochs : int
    hierarchy : bool
        ``False``: contrastive loss only (``proto_weight=0, instance_weight=0``);
        ``True``: the full HiHPQ objective with the demo's weights and cluster counts.

    >>> tutorial_config(True, 5, hierarchy=False).proto_weight
    0.0
    """
    overrides = [f"epochs={int(epochs)}"]
    if hierarchy:
        overrides.append("name=tutorial_hierarchy")
    else:
        overrides += ["name=tutorial_contrastive", "proto_weight=0", "instance_weight=0"]
    return demo_config(quick, overrides=overrides)


def training_data(prepared, n_val_per_class: int, *, seed: int | None = None) -> TrainingData:
    """Training data of a :class:`~hihpq_lib.pipeline.Prepared` with a chosen validation pair.

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


def run_folder(tag: str, cfg: TrainConfig, *extra) -> Path:
    """``runs_dir()/tutorial/<tag>-<digest>``: one folder per configuration (and ``extra``).

    ``extra`` holds anything else that changes the run (e.g. the validation size), as
    JSON-able values.

    >>> a = run_folder("x", tutorial_config(True, 2, hierarchy=False), 10)
    >>> a == run_folder("x", tutorial_config(True, 2, hierarchy=False), 10)
    True
    >>> a == run_folder("x", tutorial_config(True, 3, hierarchy=False), 10)
    False
    """
    blob = json.dumps([cfg.to_dict(), list(extra)], sort_keys=True, default=str)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
    return runs_dir() / "tutorial" / f"{tag}-{digest}"


@torch.no_grad()
def search(
    model: HiHPQModel,
    query: FeatureSplit | torch.Tensor,
    database: FeatureSplit | torch.Tensor,
    topk: int,
) -> torch.Tensor:
    """Ranked database indices of asymmetric PQ search, ``(Q, min(topk, N))`` int64.

    The database is encoded with the model's codebooks, the queries stay unquantized
    (the same search as :func:`~hihpq_lib.training.evaluate_map`, whose mAP is
    ``metrics.map_at_k(query.labels, database.labels, search(...))``).
    """
    qf = query.feats if isinstance(query, FeatureSplit) else query
    dbf = database.feats if isinstance(database, FeatureSplit) else database
    index = model.build_index(dbf)
    _, idx = index.search(model.points(qf), min(int(topk), len(dbf)))
    return idx


def paired_bootstrap(
    a, b, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Bootstrap confidence interval of ``mean(a) - mean(b)`` for paired samples.

    ``a[q]`` and ``b[q]`` are two models' scores on the same query ``q`` (e.g. per-query
    AP); queries are resampled with replacement ``n_boot`` times.

    Parameters
    ----------
    a, b : (Q,) float arrays or tensors
    n_boot : int
    level : float in (0, 1), the interval's coverage
    seed : int

    Returns
    -------
    dict with ``diff`` (the observed mean difference), ``low``, ``high`` (percentile
    interval) and ``p_a_better`` (fraction of resamples with a positive difference).

    >>> r = paired_bootstrap([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    >>> r["diff"], r["low"], r["high"]
    (0.0, 0.0, 0.0)
    """
    x = np.asarray(torch.as_tensor(a).double().cpu().numpy(), dtype=np.float64).reshape(-1)
    y = np.asarray(torch.as_tensor(b).double().cpu().numpy(), dtype=np.float64).reshape(-1)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"a and b must be non-empty and paired, got {x.shape} and {y.shape}")
    if not np.isfinite(x).all() or not np.isfinite(y).all():
        raise ValueError("scores must be finite (NaN or inf found)")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    d = x - y
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(int(n_boot), d.size))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return {
        "diff": float(d.mean()),
        "low": float(lo),
        "high": float(hi),
        "p_a_better": float((means > 0).mean()),
    }


def purity(clusters, labels) -> float:
    """Fraction of items whose label is the majority label of their cluster.

    1 means every cluster holds one label only (clusters may still split a label into
    several clusters: purity rewards *nesting* in the labels, unlike the ARI).

    >>> purity([0, 0, 1, 1, 2], [5, 5, 5, 7, 7])
    0.8
    """
    c = np.asarray(clusters).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if c.shape != y.shape or c.size == 0:
        raise ValueError(
            f"clusters and labels must be non-empty and of equal length, got "
            f"{c.shape} and {y.shape}"
        )
    _, ci = np.unique(c, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    table = np.zeros((ci.max() + 1, yi.max() + 1), dtype=np.int64)
    np.add.at(table, (ci, yi), 1)
    return float(table.max(axis=1).sum() / c.size)


def _to_display(img) -> np.ndarray:
    """(3, H, W) float in [0, 1] or (H, W, 3) uint8 -> (H, W, 3) float in [0, 1]."""
    x = img.detach().cpu().numpy() if torch.is_tensor(img) else np.asarray(img)
    if x.ndim != 3:
        raise ValueError(f"an image must be (3, H, W) or (H, W, 3), got shape {x.shape}")
    if x.shape[0] == 3 and x.shape[-1] != 3:
        x = x.transpose(1, 2, 0)
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255.0
    return np.clip(x.astype(np.float64), 0.0, 1.0)


def views_grid(
    images,
    views: Sequence,
    *,
    row_titles: Sequence[str] | None = None,
    view_titles: Sequence[str] | None = None,
    cell_size: float = 1.5,
    title: str | None = None,
) -> Figure:
    """Each image (one row) beside its augmented views (one column per view).

    Parameters
    ----------
    images : (N, H, W, 3) uint8, the originals
    views : sequence of V tensors (N, 3, R, R) float in [0, 1] (un-normalised, e.g.
        ``transforms.augment_batch(..., mean=(0, 0, 0), std=(1, 1, 1))``) or
        (N, R, R, 3) uint8
    row_titles : N strings (e.g. class names), optional
    view_titles : V strings, optional (default "view 1", "view 2", ...)

    Returns
    -------
    matplotlib.figure.Figure
    """
    imgs = np.asarray(images)
    if imgs.ndim != 4 or imgs.shape[-1] != 3 or imgs.dtype != np.uint8:
        raise ValueError(
            f"images must be (N, H, W, 3) uint8, got {imgs.shape} {imgs.dtype} "
            "(data.read_images returns this)"
        )
    n = imgs.shape[0]
    if not views or any(len(v) != n for v in views):
        raise ValueError(f"views must be a non-empty list of batches with {n} images each")
    view_titles = list(view_titles or [f"view {j + 1}" for j in range(len(views))])
    if len(view_titles) != len(views):
        raise ValueError("view_titles needs one title per view")
    ncol = 1 + len(views)
    fig = Figure(figsize=(cell_size * ncol, cell_size * n + (0.4 if title else 0.1)))
    gs = fig.add_gridspec(n, ncol, wspace=0.05, hspace=0.12)
    for i in range(n):
        for j in range(ncol):
            ax = fig.add_subplot(gs[i, j])
            ax.imshow(_to_display(imgs[i] if j == 0 else views[j - 1][i]))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("original" if j == 0 else view_titles[j - 1], fontsize=9)
            if j == 0 and row_titles is not None:
                ax.set_ylabel(str(row_titles[i]), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def initial_model(cfg: TrainConfig, data: TrainingData) -> HiHPQModel:
    """The model exactly as :func:`~hihpq_lib.training.train` starts it, before any step.

    Calls ``train(cfg, data, <temporary folder>, stop_after=0)``: same seed, same
    initialisation (including ``codebook_init="data"``), nothing trained or saved. Note
    that, like ``train``, it re-seeds torch's global generator with ``cfg.seed``.
    """
    import tempfile

    from .training import train

    with tempfile.TemporaryDirectory() as tmp:
        return train(cfg, data, tmp, progress=False, stop_after=0)["model"].eval()


def _pca_share(x: np.ndarray, directions: np.ndarray) -> float:
    """Share of the squared norm of the rows of ``x`` kept by the 2 ``directions``."""
    tot = float((x * x).sum())
    return float(((x @ directions) ** 2).sum()) / tot if tot > 0 else 1.0


def codeword_geometry(model: HiHPQModel, feats: torch.Tensor) -> list[dict]:
    """Where the points, the codewords and the soft quantizations sit, per subspace.

    What the codeword disks of notebook 06 show, measured instead of seen: distances
    from the origin :math:`d_k(o, \\cdot)` (the radius on the Poincaré disk is
    :math:`\\tanh(d / 2\\sqrt k)`), the quantization errors, and the share of the squared
    Poincaré-ball norm that a 2-D PCA view keeps (the same projection as
    :func:`~hihpq_lib.viz.subspace_disk_data`, fitted on codewords and points together).

    Parameters
    ----------
    model : HiHPQModel with a Lorentz product space
    feats : (N, F) backbone features

    Returns
    -------
    list of M dicts with ``subspace``, ``c`` (curvature 1/k), ``d(o, point)``,
    ``d(o, codeword)``, ``d(o, soft)`` (medians), ``soft error`` and ``hard error``
    (mean ``d(x, soft(x))`` and ``d(x, nearest codeword)``), ``PCA share points`` and
    ``PCA share codewords``.
    """
    from . import lorentz

    if model.space.k is None:
        raise ValueError("codeword_geometry needs a hyperbolic (Lorentz) model")
    with torch.no_grad():
        out = model(feats)
        cw = model.quantizer.codewords()  # (M, K, d+1)
        k = model.space.k
        hard = model.quantizer.decode(out.codes)  # (N, M, d+1)
    rows = []
    for m in range(model.quantizer.M):
        km = k[m]
        o = lorentz.origin(cw.shape[-1] - 1, k=km, dtype=cw.dtype)

        def radius(x, km=km, o=o):
            return float(lorentz.dist(o.expand_as(x), x, k=km).median())

        pts_ball = lorentz.to_poincare(out.points[:, m].double(), k=km.double()).numpy()
        cw_ball = lorentz.to_poincare(cw[m].double(), k=km.double()).numpy()
        both = np.concatenate([cw_ball, pts_ball])
        _, _, vt = np.linalg.svd(both - both.mean(0), full_matrices=False)
        rows.append(
            {
                "subspace": m,
                "c": float(1.0 / km),
                "d(o, point)": radius(out.points[:, m]),
                "d(o, codeword)": radius(cw[m]),
                "d(o, soft)": radius(out.soft[:, m]),
                "soft error": float(lorentz.dist(out.points[:, m], out.soft[:, m], k=km).mean()),
                "hard error": float(lorentz.dist(out.points[:, m], hard[:, m], k=km).mean()),
                "PCA share points": _pca_share(pts_ball, vt[:2].T),
                "PCA share codewords": _pca_share(cw_ball, vt[:2].T),
            }
        )
    return rows
