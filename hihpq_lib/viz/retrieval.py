"""Retrieval results: image grids, precision-recall and precision@k curves, line plots."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from hihpq_lib.utils.arrays import to_numpy
from hihpq_lib.viz.style import (
    _check_backend,
    _mpl_integer_x,
    _plotly_integer_x,
    _to_numpy,
    palette,
)

__all__ = ["retrieval_grid", "views_grid", "pr_curve", "precision_at_k_plot", "line_plot"]


# ---------------------------------------------------------------------- retrieval
def retrieval_grid(
    query_images,
    result_images,
    hits,
    *,
    query_titles: Sequence[str] | None = None,
    cell_size: float = 1.3,
    title: str | None = None,
) -> Figure:
    """Queries (first column) and their top-k results, hits framed green, misses red.

    Parameters
    ----------
    query_images : (Q, H, W, 3) uint8 (or (Q, H, W) grey)
    result_images : (Q, k, H, W, 3) uint8 (or (Q, k, H, W) grey)
    hits : (Q, k) bool, whether each result is relevant
    query_titles : Q strings shown above the queries, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    q = _to_numpy(query_images, "query_images")
    r = _to_numpy(result_images, "result_images")
    h = _to_numpy(hits, "hits").astype(bool)
    if q.dtype != np.uint8 or r.dtype != np.uint8:
        raise TypeError(f"images must be uint8 (0-255), got {q.dtype} and {r.dtype}")
    if q.ndim not in (3, 4) or r.ndim != q.ndim + 1:
        raise ValueError(
            "query_images must be (Q, H, W, 3) or (Q, H, W) and result_images "
            f"(Q, k, H, W, 3) or (Q, k, H, W); got {q.shape} and {r.shape}"
        )
    Q, kk = r.shape[:2]
    if q.shape[0] != Q or r.shape[2:] != q.shape[1:] or h.shape != (Q, kk):
        raise ValueError(
            f"shapes disagree: queries {q.shape}, results {r.shape}, hits {h.shape} "
            "(need Q queries, k results of the same image size, hits (Q, k))"
        )
    grey = q.ndim == 3
    fig = Figure(figsize=(cell_size * (kk + 1) + 0.3, cell_size * Q + 0.4))
    gs = fig.add_gridspec(Q, kk + 1, wspace=0.08, hspace=0.35 if query_titles else 0.15)
    for i in range(Q):
        for j in range(kk + 1):
            ax = fig.add_subplot(gs[i, j])
            img = q[i] if j == 0 else r[i, j - 1]
            ax.imshow(img, cmap="gray" if grey else None, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            color = "black" if j == 0 else ("#2ca02c" if h[i, j - 1] else "#d62728")
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(1.5 if j == 0 else 3.5)
            if j == 0 and query_titles is not None:
                ax.set_title(str(query_titles[i]), fontsize=8)
            if i == 0 and j > 0:
                ax.set_title(f"#{j}", fontsize=8)
    handles = [
        Line2D([], [], color="#2ca02c", lw=3, label="hit"),
        Line2D([], [], color="#d62728", lw=3, label="miss"),
    ]
    fig.legend(handles=handles, loc="upper right", ncol=2, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10, x=0.02, ha="left")
    return fig


def _as_curves(xs, ys, labels, xname: str, yname: str):
    """Normalise one curve or a list of curves into [(x, y, label)]."""
    ys_list = [ys] if np.ndim(ys[0] if len(ys) else ys) == 0 else list(ys)
    if np.ndim(xs[0] if len(xs) else xs) == 0:
        xs_list = [xs] * len(ys_list)
    else:
        xs_list = list(xs)
    if labels is None:
        labels = [f"curve {i}" for i in range(len(ys_list))]
    elif isinstance(labels, str):
        labels = [labels]
    if not (len(xs_list) == len(ys_list) == len(labels)):
        raise ValueError(
            f"need one {xname}, {yname} and label per curve, got {len(xs_list)}, "
            f"{len(ys_list)} and {len(labels)}"
        )
    out = []
    for x, y, lab in zip(xs_list, ys_list, labels):
        x = np.asarray(_to_numpy(x, xname), dtype=np.float64).reshape(-1)
        y = np.asarray(_to_numpy(y, yname), dtype=np.float64).reshape(-1)
        if x.shape != y.shape:
            raise ValueError(f"curve {lab!r}: {xname} {x.shape} and {yname} {y.shape} differ")
        out.append((x, y, str(lab)))
    return out


def _line_figure(
    curves, xlabel, ylabel, title, backend, ylim=(0.0, 1.02), log_x=False, integer_x=False
):
    cols = palette(len(curves))
    if backend == "plotly":
        fig = go.Figure()
        for (x, y, lab), col in zip(curves, cols):
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=lab, line={"color": col}))
        fig.update_layout(
            title=title,
            xaxis_title=xlabel,
            yaxis_title=ylabel,
            yaxis_range=None if ylim is None else list(ylim),
            xaxis_type="log" if log_x else None,
            width=620,
            height=440,
            template="plotly_white",
        )
        if integer_x:
            _plotly_integer_x(fig, np.concatenate([x for x, _, _ in curves]))
        return fig
    fig = Figure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    for (x, y, lab), col in zip(curves, cols):
        ax.plot(x, y, label=lab, color=col)
    if integer_x:
        _mpl_integer_x(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if log_x:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=11)
    return fig


def pr_curve(
    precision,
    recall,
    labels: Sequence[str] | str | None = None,
    *,
    title: str | None = "Precision-recall",
    backend: str = "plotly",
):
    """Precision-recall curves, one per method.

    Parameters
    ----------
    precision, recall : (L,) float or a list of such arrays (one per method), e.g. from
        :func:`hihpq_lib.evaluation.metrics.precision_recall_by_rank`
    labels : one name per curve
    backend : {"plotly", "matplotlib"}
    """
    _check_backend(backend)
    curves = _as_curves(recall, precision, labels, "recall", "precision")
    return _line_figure(curves, "recall", "precision", title, backend)


def precision_at_k_plot(
    ks,
    precisions,
    labels: Sequence[str] | str | None = None,
    *,
    title: str | None = "Precision@k",
    backend: str = "plotly",
):
    """Precision@k against k, one curve per method.

    Parameters
    ----------
    ks : (L,) int, shared by all curves, or a list of (L_i,) arrays
    precisions : (L,) float or a list of arrays, e.g. from
        :func:`hihpq_lib.evaluation.metrics.precision_at_k_curve`
    labels : one name per curve
    """
    _check_backend(backend)
    curves = _as_curves(ks, precisions, labels, "ks", "precisions")
    return _line_figure(curves, "k (items retrieved)", "precision@k", title, backend)


def line_plot(
    x,
    ys,
    labels: Sequence[str] | str | None = None,
    *,
    xlabel: str = "x",
    ylabel: str = "y",
    title: str | None = None,
    log_x: bool = False,
    ylim: tuple[float, float] | None = None,
    integer_x: bool = False,
    backend: str = "plotly",
):
    """Generic curves ``y(x)`` (e.g. quantization error against temperature).

    Parameters
    ----------
    x : (L,) float shared by all curves, or a list of (L_i,) arrays
    ys : (L,) float or a list of arrays, one per curve
    labels : one name per curve
    log_x : logarithmic x axis
    ylim : y range, default automatic
    integer_x : whole-number x ticks only (an x of counts, e.g. epochs)
    """
    _check_backend(backend)
    curves = _as_curves(x, ys, labels, "x", "ys")
    return _line_figure(
        curves, xlabel, ylabel, title, backend, ylim=ylim, log_x=log_x, integer_x=integer_x
    )


def _to_display(img) -> np.ndarray:
    """(3, H, W) float in [0, 1] or (H, W, 3) uint8 -> (H, W, 3) float in [0, 1]."""
    x = to_numpy(img)
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
