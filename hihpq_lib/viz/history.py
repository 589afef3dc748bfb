"""Training histories: per-epoch series (with the epoch-0 start) and the two-panel history."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from matplotlib.figure import Figure
from plotly.subplots import make_subplots

from hihpq_lib.viz.style import _check_backend, _mpl_integer_x, _plotly_integer_x, palette

__all__ = ["history_series", "training_history"]


def history_series(
    history: Sequence[Mapping], key: str, *, initial: Mapping | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One metric of a training history, per epoch, starting at epoch 0 when it is known.

    ``training.train`` records epoch ``e`` (1-based) *after* its steps, so the value the
    run started from is in no record; give it as ``initial`` (e.g. the untrained
    model's ``model.space.summary()``, whose ``"curvature"`` is the start
    ``cfg.curvature``) and it becomes the point at epoch 0.

    Parameters
    ----------
    history : records with ``"epoch"`` (int) and ``key`` (a number, or a list such as
        ``"curvature"``, one value per subspace); a record without ``key`` (e.g.
        ``"val_map"`` between evaluations) gives NaN
    key : the metric
    initial : a record for epoch 0, optional (its ``"epoch"``, if any, is ignored)

    Returns
    -------
    epochs : (E,) int64, increasing, starting at 0 when ``initial`` holds ``key``
    values : (E,) float64 for a number, (E, M) for a list

    >>> hist = [{"epoch": 1, "curvature": [1.1, 0.9]}, {"epoch": 2, "curvature": [1.2, 0.8]}]
    >>> ep, c = history_series(hist, "curvature", initial={"curvature": [1.0, 1.0]})
    >>> ep.tolist(), c[:, 0].tolist()
    ([0, 1, 2], [1.0, 1.1, 1.2])
    """
    records = [dict(r) for r in history]
    if not records:
        raise ValueError("history is empty: train at least one epoch")
    if any("epoch" not in r for r in records):
        raise ValueError("every history record needs its 'epoch' (training.train writes it)")
    if not any(key in r for r in records):
        raise ValueError(f"no record has {key!r}; keys: {sorted(set().union(*records))}")
    if initial is not None and key in initial:
        records = [{**initial, "epoch": 0}, *records]
    first = next(r[key] for r in records if key in r)
    width, vector = int(np.size(first)), np.ndim(first) > 0
    missing = np.full(width, np.nan) if vector else np.nan
    values = np.array([np.asarray(r.get(key, missing), dtype=np.float64) for r in records])
    epochs = np.array([int(r["epoch"]) for r in records], dtype=np.int64)
    if np.any(np.diff(epochs) <= 0):
        raise ValueError(f"epochs must increase, got {epochs.tolist()}")
    return epochs, values.reshape(len(records), -1) if vector else values.reshape(-1)


def training_history(
    history: Sequence[Mapping],
    *,
    metrics: Mapping[str, str] | None = None,
    losses: Mapping[str, str] | None = None,
    metric_label: str = "validation mAP",
    loss_label: str = "loss",
    selected_epoch: int | None = None,
    title: str | None = "Training history",
    backend: str = "plotly",
):
    """A run's history in two panels on one epoch axis: the metric above, the losses below.

    A score in [0, 1] and a loss of a few units need their own y axes (on one axis the
    losses had to be divided by 10 and the mAP looked flat); the epoch axis is shared and
    has whole-number ticks. Data: :func:`history_series`.

    Parameters
    ----------
    history : ``training.train``'s records (``result["history"]``, ``metrics.jsonl``)
    metrics : {legend name: record key} for the upper panel
        (default ``{"validation mAP": "val_map"}``)
    losses : {legend name: record key} for the lower panel (default the contrastive part
        and the total loss, ``"contrastive"`` and ``"loss"``; keys no record has are left
        out)
    metric_label, loss_label : the two y-axis titles
    selected_epoch : the epoch validation selected, marked in both panels (optional)
    backend : {"plotly", "matplotlib"}
    """
    _check_backend(backend)
    metrics = dict(metrics or {"validation mAP": "val_map"})
    losses = dict(losses or {"contrastive loss": "contrastive", "total loss": "loss"})
    have = set().union(*[set(r) for r in history]) if history else set()
    panels = [
        [(name, *history_series(history, key)) for name, key in metrics.items()],
        [(name, *history_series(history, key)) for name, key in losses.items() if key in have],
    ]
    if not panels[0] and not panels[1]:
        raise ValueError("nothing to draw: no metric or loss key is in the history")
    cols = palette(sum(len(p) for p in panels))
    labels = (metric_label, loss_label)
    epochs = np.concatenate([ep for panel in panels for _, ep, _ in panel])
    if backend == "plotly":
        fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
        i = 0
        for row, panel in enumerate(panels, start=1):
            for name, ep, y in panel:
                fig.add_trace(
                    go.Scatter(
                        x=ep,
                        y=y,
                        mode="lines+markers",
                        name=name,
                        line={"color": cols[i]},
                        marker={"size": 5},
                        connectgaps=True,  # a metric evaluated every few epochs
                    ),
                    row=row,
                    col=1,
                )
                i += 1
            fig.update_yaxes(title_text=labels[row - 1], row=row, col=1)
            _plotly_integer_x(fig, epochs, row=row, col=1)
        if selected_epoch is not None:
            fig.add_vline(
                x=selected_epoch,
                line={"color": "grey", "dash": "dot", "width": 1},
                annotation_text=f"selected: epoch {selected_epoch}",
                annotation_position="bottom right",  # clear of the axis and the peak
                row=1,
                col=1,
            )
            fig.add_vline(
                x=selected_epoch, line={"color": "grey", "dash": "dot", "width": 1}, row=2, col=1
            )
        fig.update_xaxes(title_text="epoch", row=2, col=1)
        fig.update_layout(title=title, width=620, height=520, template="plotly_white")
        return fig
    fig = Figure(figsize=(6.0, 5.2), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    i = 0
    for ax, panel, label in zip(axes, panels, labels):
        for name, ep, y in panel:
            ok = np.isfinite(y)
            ax.plot(ep[ok], y[ok], marker="o", ms=3, color=cols[i], label=name)
            i += 1
        if selected_epoch is not None:
            ax.axvline(selected_epoch, color="grey", ls=":", lw=1)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if selected_epoch is not None:
        axes[0].annotate(
            f"selected: epoch {selected_epoch}",
            (selected_epoch, 0.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, 3),
            textcoords="offset points",
            ha="left",
            va="bottom",
            fontsize=8,
            color="grey",
        )
    axes[1].set_xlabel("epoch")
    _mpl_integer_x(axes[1])
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
