"""Diagnostics of a model: the model as training starts it (the "before" of a run) and where
points, codewords and soft quantizations sit (distances from the origin, quantization errors,
what a 2-D PCA view keeps).
"""

from __future__ import annotations

import numpy as np
import torch

from hihpq_lib.learning.config import TrainConfig
from hihpq_lib.learning.model import HiHPQModel
from hihpq_lib.learning.views import TrainingData
from hihpq_lib.utils.arrays import to_numpy

__all__ = ["initial_model", "codeword_geometry"]


def initial_model(cfg: TrainConfig, data: TrainingData) -> HiHPQModel:
    """The model exactly as :func:`~hihpq_lib.learning.training.train` starts it, before any step.

    Calls ``train(cfg, data, <temporary folder>, stop_after=0)``: same seed, same
    initialisation (including ``codebook_init="data"``), nothing trained or saved. Note
    that, like ``train``, it re-seeds torch's global generator with ``cfg.seed``.
    """
    import tempfile

    from hihpq_lib.learning.training import train

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
    from hihpq_lib.geometry import lorentz

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

        pts_ball = to_numpy(lorentz.to_poincare(out.points[:, m].double(), k=km.double()))
        cw_ball = to_numpy(lorentz.to_poincare(cw[m].double(), k=km.double()))
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
