"""What every figure shares: the two backends, the Okabe-Ito palette, disk axes, input checks."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import torch
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from hihpq_lib.utils.arrays import to_numpy

__all__ = ["BACKENDS", "OKABE_ITO", "palette"]


#: The two figure backends every twin function accepts.
BACKENDS = ("plotly", "matplotlib")


#: Largest norm kept by :func:`poincare_coords` (float64, strictly below 1).
_DISK_MAX = 1.0 - 1e-9


#: tab10, then the light tab20 shades: categorical colours shared by both backends.
_TAB20 = [to_hex(c) for c in colormaps["tab10"].colors] + [
    to_hex(c) for c in colormaps["tab20"].colors[1::2]
]


# ---------------------------------------------------------------------- small helpers
def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


#: Okabe & Ito's colour-blind-safe qualitative palette (black replaced by grey, so that
#: black stays free for codewords and cell boundaries), in an order whose first colours
#: are the most distinct for the common colour-vision deficiencies.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999"]


def palette(n: int) -> list[str]:
    """``n`` distinct hex colours, the same for both backends.

    Okabe-Ito (safe for colour-blind readers) for ``n <= 8``; beyond that no palette
    stays safe, so tab10 up to 10 (e.g. the CIFAR-10 classes), tab20 up to 20 and
    evenly spaced hues beyond.

    >>> palette(3)
    ['#0072B2', '#E69F00', '#009E73']
    >>> len(set(palette(10))) == 10
    True
    """
    if n <= len(OKABE_ITO):
        return OKABE_ITO[:n]
    if n <= 20:
        return _TAB20[:n]
    import colorsys

    return [to_hex(colorsys.hsv_to_rgb(i / n, 0.65, 0.85)) for i in range(n)]


def _to_numpy(x, name: str) -> np.ndarray:
    if torch.is_tensor(x):
        return to_numpy(x)
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - defensive
        raise TypeError(f"{name} must be array-like, got {type(x).__name__}") from exc


def _to_tensor(x, name: str) -> torch.Tensor:
    """Array-like -> float tensor (numpy input becomes float64; tensors keep their dtype)."""
    if torch.is_tensor(x):
        t = x.detach().cpu()
        return t if t.is_floating_point() else t.double()
    arr = _to_numpy(x, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    return torch.as_tensor(arr, dtype=torch.float64)


def _label_groups(labels, n: int, class_names=None):
    """Split ``n`` points into (name, index array, colour) groups by label.

    Integer labels are named ``class_names[label]``, or ``"class <label>"`` without names
    (a legend that reads "0 1 2" does not say what the numbers are).

    >>> [g[0] for g in _label_groups([2, 0, 2], 3)]
    ['class 0', 'class 2']
    >>> [g[0] for g in _label_groups(["cat", "dog"], 2)]
    ['cat', 'dog']
    """
    if labels is None:
        return [(None, np.arange(n), palette(1)[0])]
    lab = _to_numpy(labels, "labels").reshape(-1)
    if lab.shape[0] != n:
        raise ValueError(f"labels must have one entry per point ({n}), got {lab.shape[0]}")
    values = list(dict.fromkeys(lab.tolist()))
    if all(isinstance(v, (int, np.integer)) for v in values):
        values = sorted(values)
    cols = palette(max(len(values), 1))
    groups = []
    for i, v in enumerate(values):
        if class_names is not None and isinstance(v, (int, np.integer)):
            name = str(class_names[int(v)])
        elif isinstance(v, (int, np.integer)):
            name = f"class {v}"
        else:
            name = str(v)
        groups.append((name, np.flatnonzero(lab == v), cols[i]))
    return groups


def _circle(radius: float = 1.0, n: int = 241) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n)
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)


def _mpl_disk_axes(ax, title: str | None = None) -> None:
    """Unit circle, equal aspect, no ticks."""
    ax.add_patch(Circle((0.0, 0.0), 1.0, fill=False, lw=1.2, color="black"))
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)


def _mpl_outside_legend(fig: Figure, ax, **kw) -> None:
    """A figure legend right of the axes (constrained layout makes room for it)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8, frameon=False, **kw)


def _integer_step(lo: float, hi: float, most: int = 10) -> int:
    """The smallest of 1, 2, 5, 10, 20, ... that puts at most ``most`` ticks on [lo, hi].

    >>> _integer_step(1, 8), _integer_step(0, 20), _integer_step(0, 300)
    (1, 2, 50)
    """
    span = max(float(hi) - float(lo), 1.0)
    step, base = 1, 1
    while span / step > most:
        for m in (2, 5, 10):
            step = m * base
            if span / step <= most:
                break
        base *= 10
    return step


def _plotly_integer_x(fig: go.Figure, x: np.ndarray, **where) -> None:
    """Whole-number ticks on an x axis of counts (epochs): no 1.5 epochs.

    ``where`` selects the axis (``row=..., col=...`` of a subplot figure, else all).
    """
    finite = x[np.isfinite(x)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    fig.update_xaxes(tickmode="linear", tick0=math.floor(lo), dtick=_integer_step(lo, hi), **where)


def _mpl_integer_x(ax) -> None:
    """Whole-number ticks on a matplotlib x axis of counts (epochs)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10, steps=[1, 2, 5, 10]))


def _plotly_disk_axes(fig: go.Figure, row: int | None = None, col: int | None = None) -> None:
    """Draw the unit circle and make the (row, col) xy-subplot square, range [-1.05, 1.05]."""
    circ = _circle()
    kw = {} if row is None else {"row": row, "col": col}
    fig.add_trace(
        go.Scatter(
            x=circ[:, 0],
            y=circ[:, 1],
            mode="lines",
            line={"color": "black", "width": 1.5},
            hoverinfo="skip",
            showlegend=False,
            name="unit circle",
        ),
        **kw,
    )
    if row is None:
        xaxis, yaxis = fig.layout.xaxis, fig.layout.yaxis
    else:
        sub = fig.get_subplot(row, col)
        xaxis, yaxis = sub.xaxis, sub.yaxis
    anchor = "x" + xaxis.plotly_name[len("xaxis") :]
    xaxis.update(range=[-1.05, 1.05], visible=False)
    yaxis.update(range=[-1.05, 1.05], visible=False, scaleanchor=anchor, scaleratio=1)
