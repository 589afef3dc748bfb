r"""Figures for the notebooks and reports: plotly (interactive) and matplotlib (static) twins.

Every key figure has a *data* function that computes what is drawn (plain numpy arrays
in a dict) and a *figure* function with ``backend="plotly"`` (an interactive
``plotly.graph_objects.Figure``) or ``backend="matplotlib"`` (a static
``matplotlib.figure.Figure`` that renders without a browser). Both backends draw from the
same data, so the two versions always agree.

=================================  ==========================================================
data                               figure
=================================  ==========================================================
:func:`poincare_coords`            :func:`poincare_disk`
:func:`hyperboloid_data`           :func:`hyperboloid_and_disk`
:func:`geodesic_grid_data`         :func:`geodesic_grid`
:func:`voronoi_data`               :func:`codebook_voronoi`
:func:`subspace_disk_data`         :func:`subspace_codewords_disks`
:func:`geodesic_segment`           :func:`tree_embeddings`
:func:`umap_coords`                :func:`embedding_umap`
(inputs used as given)             :func:`pr_curve`, :func:`precision_at_k_plot`,
                                   :func:`line_plot`
(matplotlib only)                  :func:`dendrogram_vs_labels`, :func:`retrieval_grid`
=================================  ==========================================================

:func:`slider_figure` puts any of them under ipywidgets sliders in a notebook, redrawn
in place; :func:`slider_frames` gives a plotly figure its own slider over precomputed
frames, which needs no kernel (exported HTML, the book): :func:`curvature_explorer` and
:func:`voronoi_explorer` are the two explorations of notebooks 01 and 03. Imported in a
Jupyter kernel, this module selects :func:`use_notebook_renderer` (plotly's JSON plus
offline HTML for every figure).

Geometry is computed on the hyperboloid (:mod:`hihpq_lib.lorentz`); Poincaré coordinates
are only for pictures and every point drawn on a Poincaré disk goes through
:func:`poincare_coords`, which uses :func:`hihpq_lib.lorentz.to_poincare` and guarantees
norms strictly below 1 (the unit disk's boundary is "infinitely far away").

Curvature follows :mod:`hihpq_lib.lorentz`: ``k > 0`` is geoopt's parameter, the
sectional curvature is :math:`-1/k` (HiHPQ's curvature magnitude is ``c = 1/k``).

matplotlib figures are built with :class:`matplotlib.figure.Figure` (not ``pyplot``), so
no global figure is left open; in a notebook end a cell with the figure to display it.
The visualisation layer sits on top of the library: nothing in ``hihpq_lib`` imports it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from matplotlib import colormaps
from matplotlib.colors import ListedColormap, to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Patch
from plotly.subplots import make_subplots

from . import lorentz as L

__all__ = [
    "BACKENDS",
    "OKABE_ITO",
    "palette",
    "poincare_coords",
    "poincare_disk",
    "hyperboloid_data",
    "hyperboloid_and_disk",
    "geodesic_grid_data",
    "geodesic_grid",
    "voronoi_data",
    "codebook_voronoi",
    "subspace_disk_data",
    "subspace_codewords_disks",
    "geodesic_segment",
    "tree_embeddings",
    "dendrogram_vs_labels",
    "retrieval_grid",
    "pr_curve",
    "precision_at_k_plot",
    "line_plot",
    "slider_figure",
    "slider_frames",
    "curvature_figure",
    "curvature_explorer",
    "voronoi_figure",
    "voronoi_explorer",
    "RENDERER",
    "use_notebook_renderer",
    "umap_coords",
    "embedding_umap",
]

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
        return x.detach().cpu().numpy()
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


# ---------------------------------------------------------------------- Poincaré coordinates
def poincare_coords(points, *, k=1.0, coords: str = "auto") -> np.ndarray:
    r"""The one helper through which every point reaches a Poincaré disk or ball.

    Hyperboloid points are mapped with :func:`hihpq_lib.lorentz.to_poincare`

    .. math:: p = \frac{x_{1:n}}{x_0 + \sqrt k}, \qquad \|p\| = \tanh\frac{d_k(o, x)}{2\sqrt k}

    and Poincaré coordinates given directly are checked; either way the result is clipped
    to norm at most ``1 - 1e-9`` and asserted to lie strictly inside the unit ball.

    Parameters
    ----------
    points : (..., n+1) hyperboloid points or (..., n) unit-ball coordinates, tensor or array
    k : float or tensor broadcastable to (..., 1)
        Curvature parameter of hyperboloid points (ignored for Poincaré input).
    coords : {"auto", "hyperboloid", "poincare"}
        ``auto`` reads a last dimension of 3 as hyperboloid points of :math:`\mathbb H^2`
        and 2 as disk coordinates; other sizes must be named.

    Returns
    -------
    (..., n) float64 numpy array, every row of norm < 1.

    Examples
    --------
    >>> from hihpq_lib import lorentz
    >>> far = lorentz.expmap0(lorentz.lift(torch.tensor([[40.0, 0.0]])))  # 40 from the origin
    >>> bool(np.linalg.norm(poincare_coords(far), axis=-1).max() < 1)
    True
    """
    if coords not in ("auto", "hyperboloid", "poincare"):
        raise ValueError(f"coords must be 'auto', 'hyperboloid' or 'poincare', got {coords!r}")
    x = _to_tensor(points, "points")
    if x.dim() < 1 or x.shape[-1] < 1:
        raise ValueError(f"points must have shape (..., n+1) or (..., n), got {tuple(x.shape)}")
    if coords == "auto":
        if x.shape[-1] == 3:
            coords = "hyperboloid"
        elif x.shape[-1] == 2:
            coords = "poincare"
        else:
            raise ValueError(
                f"cannot tell hyperboloid points from Poincaré coordinates with last "
                f"dimension {x.shape[-1]}: pass coords='hyperboloid' or coords='poincare'"
            )
    if not bool(torch.isfinite(x).all()):
        raise ValueError("points contain NaN or inf")
    if coords == "hyperboloid":
        kk = k if torch.is_tensor(k) else float(k)
        p = L.to_poincare(x, k=kk).double()
    else:
        p = x.double()
        if bool((p.norm(dim=-1) >= 1.0).any()):
            raise ValueError(
                "Poincaré coordinates must have norm < 1 (the boundary is at infinity); "
                "pass hyperboloid points with coords='hyperboloid' instead"
            )
    out = p.numpy().copy()
    if out.shape[-1] == 0:
        return out
    norm = np.linalg.norm(out, axis=-1, keepdims=True)
    out = out * np.minimum(1.0, _DISK_MAX / np.maximum(norm, 1e-300))
    assert bool((np.linalg.norm(out, axis=-1) < 1.0).all()), "Poincaré norms must be < 1"
    return out


def _curves_to_disk(curves, k) -> list[np.ndarray]:
    """Polylines of (T, 3) hyperboloid points or (T, 2) disk points -> (T, 2) disk points."""
    return [poincare_coords(c, k=k).reshape(-1, 2) for c in (curves or [])]


def poincare_disk(
    points,
    labels=None,
    *,
    k=1.0,
    coords: str = "auto",
    class_names: Sequence[str] | None = None,
    curves: Sequence[Any] | None = None,
    marker_size: float = 7.0,
    title: str | None = "Poincaré disk",
    backend: str = "plotly",
):
    """Points on the Poincaré disk, coloured by label, with the unit circle drawn.

    Parameters
    ----------
    points : (N, 3) hyperboloid points of :math:`\\mathbb H^2_k` or (N, 2) disk coordinates
        (see :func:`poincare_coords`).
    labels : (N,) int or str, optional
        Colour groups (legend entries); ``class_names[label]`` names integer labels.
    k : float
        Curvature parameter of hyperboloid input.
    curves : list of (T, 3) or (T, 2) arrays, optional
        Polylines (e.g. geodesics) drawn under the points.
    backend : {"plotly", "matplotlib"}

    Returns
    -------
    plotly.graph_objects.Figure or matplotlib.figure.Figure
    """
    _check_backend(backend)
    p = poincare_coords(points, k=k, coords=coords).reshape(-1, 2)
    lines = _curves_to_disk(curves, k)
    groups = _label_groups(labels, p.shape[0], class_names)
    if backend == "plotly":
        fig = go.Figure()
        _plotly_disk_axes(fig)
        for c in lines:
            fig.add_trace(
                go.Scatter(
                    x=c[:, 0], y=c[:, 1], mode="lines", line={"color": "grey"}, showlegend=False
                )
            )
        for name, idx, col in groups:
            fig.add_trace(
                go.Scatter(
                    x=p[idx, 0],
                    y=p[idx, 1],
                    mode="markers",
                    marker={"size": marker_size, "color": col},
                    name=name or "points",
                    showlegend=name is not None,
                )
            )
        fig.update_layout(
            title=title,
            width=560,
            height=520,
            template="plotly_white",
            legend={"itemsizing": "constant"},  # legend markers readable at any point size
        )
        return fig
    fig = Figure(figsize=(5.2, 5.0), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    _mpl_disk_axes(ax, title)
    for c in lines:
        ax.plot(c[:, 0], c[:, 1], color="grey", lw=1)
    for name, idx, col in groups:
        ax.scatter(p[idx, 0], p[idx, 1], s=marker_size**2 / 2, color=col, label=name, zorder=3)
    if labels is not None:
        _mpl_outside_legend(fig, ax)
    return fig


# ---------------------------------------------------------------------- hyperboloid + disk
def _check_on_hyperboloid(x: torch.Tensor, k: float, name: str) -> None:
    if x.dim() != 2 or x.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3): points of H^2 (time first)")
    resid = (L.inner(x, x) + k).abs()
    scale = k + (x[:, 1:] ** 2).sum(-1)
    if bool((resid > 1e-3 * scale).any()) or bool((x[:, 0] <= 0).any()):
        raise ValueError(
            f"{name} must lie on the upper sheet <x, x>_L = -k with k={k}; "
            "make them with lorentz.expmap0 or lorentz.project (same k)"
        )


def hyperboloid_data(
    points,
    k: float = 1.0,
    *,
    curves: Sequence[Any] | None = None,
    radius: float | None = None,
    zmax: float | None = None,
    resolution: int = 40,
) -> dict[str, Any]:
    r"""What :func:`hyperboloid_and_disk` draws: the sheet, the points and their projections.

    The Poincaré disk is the stereographic projection of the sheet
    :math:`x_0 = \sqrt{k + x_1^2 + x_2^2}` from the pole :math:`s = (-\sqrt k, 0, 0)`
    onto the plane :math:`x_0 = 0`: the straight line from :math:`s` through :math:`x`
    meets the plane at :math:`\sqrt k\, p` with :math:`p` the unit-disk coordinates of
    :func:`poincare_coords` (the plane disk has radius :math:`\sqrt k`).

    Parameters
    ----------
    points : (N, 3) float, on :math:`\mathbb H^2_k`
    k : float > 0
    curves : list of (T, 3) float on the sheet, optional (e.g. :func:`lorentz.geodesic0`)
    radius : float, optional
        Spatial radius of the drawn sheet (default: a bit beyond 90 % of the points, at
        least :math:`2\sqrt k`; the spatial coordinates grow like :math:`e^{d}` with the
        distance :math:`d` from the origin, so sizing the view for the farthest outlier
        would squeeze every other point into the bottom of a tall bowl).
    zmax : float, optional
        Top of the 3-D view (default: the top of the drawn sheet).
    resolution : int
        Grid size of the sheet surface.

    Returns
    -------
    dict with ``k``, ``points`` (N, 3), ``disk`` (N, 2) unit-disk coordinates,
    ``plane`` (N, 3) the projections on the plane :math:`x_0 = 0`, ``in_view`` (N,) bool
    (inside the drawn part of the sheet: the 3-D view shows only these, the disk view
    shows all), ``pole`` (3,), ``surface`` (x0, x1, x2 grids of shape
    (resolution, resolution)), ``radius``, ``zmax``, ``rim`` (C, 3) the disk's circle of
    radius :math:`\sqrt k`, ``curves`` (list of (T, 3), NaN outside the view) and
    ``curves_disk`` (list of (T, 2)). All 3-D coordinates are time first.
    """
    if not (isinstance(k, (int, float)) and k > 0):
        raise ValueError(f"k must be a positive float, got {k!r}")
    k = float(k)
    x = _to_tensor(points, "points").double().reshape(-1, 3)
    _check_on_hyperboloid(x, k, "points")
    cs = [_to_tensor(c, "curves").double().reshape(-1, 3) for c in (curves or [])]
    for c in cs:
        _check_on_hyperboloid(c, k, "curves")
    disk = poincare_coords(x, k=k, coords="hyperboloid")
    sk = math.sqrt(k)
    if radius is None:
        norms = x[:, 1:].norm(dim=-1).numpy()
        far = float(np.quantile(norms, 0.9)) if len(norms) else 0.0
        radius = max(2.0 * sk, 1.15 * far)
    zmax = math.sqrt(k + radius**2) if zmax is None else float(zmax)
    r = np.linspace(0.0, radius, resolution)
    t = np.linspace(0.0, 2.0 * math.pi, resolution)
    rr, tt = np.meshgrid(r, t)
    x0 = np.sqrt(k + rr**2)
    surface = (np.where(x0 <= zmax, x0, np.nan), rr * np.cos(tt), rr * np.sin(tt))
    xn = x.numpy()

    def visible(a: np.ndarray) -> np.ndarray:
        return (np.linalg.norm(a[:, 1:], axis=1) <= radius * (1 + 1e-9)) & (a[:, 0] <= zmax)

    curves_3d = []
    for c in cs:
        cn = c.numpy().copy()
        cn[~visible(cn)] = np.nan
        curves_3d.append(cn)
    return {
        "k": k,
        "points": xn,
        "disk": disk,
        "plane": np.concatenate([np.zeros((len(disk), 1)), sk * disk], axis=1),
        "in_view": visible(xn),
        "pole": np.array([-sk, 0.0, 0.0]),
        "surface": surface,
        "radius": float(radius),
        "zmax": zmax,
        "rim": np.concatenate([np.zeros((241, 1)), _circle(sk)], axis=1),
        "curves": curves_3d,
        "curves_disk": [poincare_coords(c, k=k, coords="hyperboloid") for c in cs],
    }


def _segments(starts: np.ndarray, ends: np.ndarray) -> dict[str, list]:
    """3-D segments (time-first points) as one plotly polyline with None breaks."""
    xs, ys, zs = [], [], []
    for a, b in zip(starts, ends):
        xs += [a[1], b[1], None]
        ys += [a[2], b[2], None]
        zs += [a[0], b[0], None]
    return {"x": xs, "y": ys, "z": zs}


def hyperboloid_and_disk(
    points,
    k: float = 1.0,
    *,
    labels=None,
    class_names: Sequence[str] | None = None,
    curves: Sequence[Any] | None = None,
    radius: float | None = None,
    zmax: float | None = None,
    resolution: int = 40,
    curve_names: Sequence[str] | None = None,
    title: str | None = None,
    backend: str = "plotly",
):
    """The hyperboloid sheet with the Poincaré disk below it, and the disk on its own.

    Left: the sheet :math:`\\mathbb H^2_k` in 3-D (height = time coordinate
    :math:`x_0`), the points on it, the disk of radius :math:`\\sqrt k` in the plane
    :math:`x_0 = 0` and the projection line from each point toward the pole
    :math:`(-\\sqrt k, 0, 0)`, crossing the plane at the point's disk image. Right: the
    same points (same colours) on the unit Poincaré disk. Data from
    :func:`hyperboloid_data`.

    Parameters
    ----------
    points : (N, 3) float on :math:`\\mathbb H^2_k`
    k : float
    labels, class_names : colour groups as in :func:`poincare_disk`
    curves : list of (T, 3) polylines on the sheet (e.g. geodesics), drawn in both views
    curve_names : their legend entries (default ``"geodesic"``, numbered if several)
    radius, zmax : fix the drawn part of the sheet (useful under a curvature slider);
        points beyond it appear in the disk view only.
    backend : {"plotly", "matplotlib"}
    """
    _check_backend(backend)
    data = hyperboloid_data(
        points, k, curves=curves, radius=radius, zmax=zmax, resolution=resolution
    )
    x, disk, plane, pole = data["points"], data["disk"], data["plane"], data["pole"]
    view = data["in_view"]
    x0, x1, x2 = data["surface"]
    lim, top = data["radius"], data["zmax"]
    groups = _label_groups(labels, len(x), class_names)
    hidden = int((~view).sum())
    title = title or f"Hyperboloid (k={k:g}, curvature -1/k={-1 / k:.3g}) and Poincaré disk"
    left = "hyperboloid with the disk below" + (
        f" ({hidden} point{'s' * (hidden > 1)} beyond the drawn sheet)" if hidden else ""
    )
    red = "#d62728"
    n_curves = len(data["curves"])
    if curve_names is None:
        curve_names = (
            ["geodesic"] if n_curves == 1 else [f"geodesic {i + 1}" for i in range(n_curves)]
        )
    if len(curve_names) != n_curves:
        raise ValueError(f"give one curve name per curve ({n_curves}), got {len(curve_names)}")
    if backend == "plotly":
        fig = make_subplots(
            rows=1,
            cols=2,
            specs=[[{"type": "scene"}, {"type": "xy"}]],
            column_widths=[0.58, 0.42],
            subplot_titles=(left, "Poincaré disk"),
        )
        rim = data["rim"]
        sheet_traces = [
            go.Surface(
                x=x1,
                y=x2,
                z=x0,
                opacity=0.35,
                showscale=False,
                colorscale=[[0, "#9ecae1"], [1, "#3182bd"]],
                hoverinfo="skip",
            ),
            go.Scatter3d(
                x=rim[:, 1], y=rim[:, 2], z=rim[:, 0], mode="lines", line={"color": "black"}
            ),
            go.Scatter3d(  # projection: point -> its image on the plane
                **_segments(x[view], plane[view]), mode="lines", line={"color": "grey"}
            ),
            go.Scatter3d(  # ... and on to the pole
                **_segments(plane[view], np.repeat(pole[None], int(view.sum()), 0)),
                mode="lines",
                line={"color": "lightgrey", "dash": "dot"},
            ),
            go.Scatter3d(
                x=[pole[1]],
                y=[pole[2]],
                z=[pole[0]],
                mode="markers+text",
                marker={"size": 3, "color": "black"},
                text=["pole (-√k, 0, 0)"],
                textposition="bottom center",  # below the pole, under the projection lines
            ),
        ]
        sheet_traces += [
            go.Scatter3d(
                x=c[:, 1],
                y=c[:, 2],
                z=c[:, 0],
                mode="lines",
                line={"color": red, "width": 5},
                name=nm,
                legendgroup=nm,
            )
            for c, nm in zip(data["curves"], curve_names)
        ]
        for name, tr in zip(
            ["sheet", "disk rim", "projection", "to the pole", "pole"], sheet_traces
        ):
            tr.update(name=name)
        for tr in sheet_traces:
            tr.update(showlegend=False, hoverinfo="skip")
            fig.add_trace(tr, row=1, col=1)
        for cd, nm in zip(data["curves_disk"], curve_names):
            fig.add_trace(
                go.Scatter(
                    x=cd[:, 0],
                    y=cd[:, 1],
                    mode="lines",
                    line={"color": red, "width": 2.5},
                    name=nm,
                    legendgroup=nm,
                ),
                row=1,
                col=2,
            )
        for name, idx, col in groups:
            iv = idx[view[idx]]
            group = {"legendgroup": name or "points", "name": name or "points"}
            fig.add_trace(
                go.Scatter3d(
                    x=x[iv, 1],
                    y=x[iv, 2],
                    z=x[iv, 0],
                    mode="markers",
                    marker={"size": 4, "color": col},
                    showlegend=False,  # the disk trace below holds every point: its entry
                    **group,
                ),
                row=1,
                col=1,
            )
            fig.add_trace(
                go.Scatter3d(
                    x=plane[iv, 1],
                    y=plane[iv, 2],
                    z=plane[iv, 0],
                    mode="markers",
                    marker={"size": 3, "color": col, "symbol": "diamond"},
                    showlegend=False,
                    **group,
                ),
                row=1,
                col=1,
            )
            fig.add_trace(
                go.Scatter(
                    x=disk[idx, 0],
                    y=disk[idx, 1],
                    mode="markers",
                    marker={"size": 8, "color": col},
                    showlegend=name is not None,
                    **group,
                ),
                row=1,
                col=2,
            )
        _plotly_disk_axes(fig, 1, 2)
        fig.update_scenes(
            xaxis={"title": "x1", "range": [-lim, lim]},
            yaxis={"title": "x2", "range": [-lim, lim]},
            zaxis={"title": "x0 (time)", "range": [pole[0] - 0.1, top]},
            # true proportions, at most as tall as wide: a "cube" box stretched the
            # height and left the points in a small region at the bottom
            aspectmode="manual",
            aspectratio={"x": 1, "y": 1, "z": min(1.0, (top - pole[0] + 0.1) / (2 * lim))},
            camera={"eye": {"x": 1.2, "y": 1.2, "z": 0.65}},
        )
        fig.update_layout(
            title=title,
            width=980,
            height=520,
            template="plotly_white",
            showlegend=True,
            legend={"itemsizing": "constant"},
        )
        return fig
    fig = Figure(figsize=(11, 5), layout="constrained")
    ax3 = fig.add_subplot(1, 2, 1, projection="3d")
    ax3.plot_surface(x1, x2, x0, alpha=0.25, color="#6baed6", linewidth=0)
    ax3.plot(data["rim"][:, 1], data["rim"][:, 2], data["rim"][:, 0], color="black", lw=1)
    for xi, pi in zip(x[view], plane[view]):
        ax3.plot([xi[1], pi[1]], [xi[2], pi[2]], [xi[0], pi[0]], color="grey", lw=0.8)
        ax3.plot([pi[1], pole[1]], [pi[2], pole[2]], [pi[0], pole[0]], color="lightgrey", lw=0.5)
    ax3.scatter([pole[1]], [pole[2]], [pole[0]], color="black", s=8)
    for c in data["curves"]:
        ax3.plot(c[:, 1], c[:, 2], c[:, 0], color=red, lw=2)
    for _name, idx, col in groups:
        iv = idx[view[idx]]
        ax3.scatter(x[iv, 1], x[iv, 2], x[iv, 0], color=col, s=18, depthshade=False)
        ax3.scatter(plane[iv, 1], plane[iv, 2], plane[iv, 0], color=col, s=8, marker="D")
    ax3.set_xlabel("x1")
    ax3.set_ylabel("x2")
    ax3.set_zlabel("x0 (time)")
    ax3.set_xlim(-lim, lim)
    ax3.set_ylim(-lim, lim)
    ax3.set_zlim(pole[0] - 0.1, top)
    ax3.set_box_aspect((1, 1, min(1.0, (top - pole[0] + 0.1) / (2 * lim))), zoom=1.2)
    ax3.set_title(left.replace(" (", "\n("), fontsize=10)  # two lines: no overlap
    ax2 = fig.add_subplot(1, 2, 2)
    _mpl_disk_axes(ax2, "Poincaré disk")
    for cd, nm in zip(data["curves_disk"], curve_names):
        ax2.plot(cd[:, 0], cd[:, 1], color=red, lw=1.5, label=nm)
    for name, idx, col in groups:
        ax2.scatter(disk[idx, 0], disk[idx, 1], color=col, s=25, label=name, zorder=3)
    if labels is not None or n_curves:
        _mpl_outside_legend(fig, ax2)
    fig.suptitle(title, fontsize=11)
    return fig


# ---------------------------------------------------------------------- geodesic grid
def geodesic_grid_data(
    k: float = 1.0,
    *,
    radii: Sequence[float] | None = None,
    n_rays: int = 12,
    n_arcs: int = 6,
    samples: int = 200,
) -> dict[str, Any]:
    r"""Circles of equal hyperbolic radius, geodesics from the origin, and geodesic arcs.

    * the circle of hyperbolic radius :math:`r` is :math:`\{\exp_o(r u) : \|u\| = 1\}`
      (:func:`lorentz.expmap0`); on the unit disk its Euclidean radius is
      :math:`\tanh(r / 2\sqrt k)`, so equally spaced circles crowd toward the boundary;
    * geodesics from the origin (:func:`lorentz.geodesic0`) are diameters;
    * a geodesic between two other points :math:`x, y` is traced by the weighted Lorentz
      centroid of :math:`\{x, y\}` with weights :math:`(1-t, t)`
      (:func:`lorentz.lorentz_centroid`: it lies on the plane through 0, x and y, whose
      intersection with the sheet is the geodesic); on the disk it is a circular arc
      meeting the boundary at right angles.

    Parameters
    ----------
    k : float > 0
    radii : hyperbolic radii of the circles (default ``1, 2, ..., 5`` times :math:`\sqrt k`)
    n_rays, n_arcs : numbers of geodesics from the origin and of arcs
    samples : points per curve

    Returns
    -------
    dict with ``radii`` (R,), ``circles`` (list of (samples, 2)), ``disk_radius`` (R,)
    the Euclidean radii on the unit disk, ``rays`` and ``arcs`` (lists of (samples, 2)).
    """
    if not (isinstance(k, (int, float)) and k > 0):
        raise ValueError(f"k must be a positive float, got {k!r}")
    k = float(k)
    sk = math.sqrt(k)
    radii = [sk * r for r in (1, 2, 3, 4, 5)] if radii is None else [float(r) for r in radii]
    if any(r <= 0 for r in radii):
        raise ValueError(f"radii must be positive, got {radii}")
    theta = torch.linspace(0.0, 2.0 * math.pi, samples, dtype=torch.float64)
    unit = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    circles = [
        poincare_coords(L.expmap0(L.lift(r * unit), k=k), k=k, coords="hyperboloid") for r in radii
    ]
    rmax = max(radii)
    t = torch.linspace(0.0, rmax, samples, dtype=torch.float64)
    rays = []
    for j in range(n_rays):
        a = 2.0 * math.pi * j / max(n_rays, 1)
        v = torch.tensor([math.cos(a), math.sin(a)], dtype=torch.float64)
        rays.append(poincare_coords(L.geodesic0(v, t, k=k), k=k, coords="hyperboloid"))
    arcs = []
    w = torch.linspace(0.0, 1.0, samples, dtype=torch.float64)
    weights = torch.stack([1.0 - w, w], dim=1)
    for j in range(n_arcs):
        a = 2.0 * math.pi * (j + 0.5) / max(n_arcs, 1)
        ends = torch.tensor(
            [[math.cos(a - 0.9), math.sin(a - 0.9)], [math.cos(a + 0.9), math.sin(a + 0.9)]],
            dtype=torch.float64,
        )
        xy = L.expmap0(L.lift(rmax * ends), k=k)
        arc = L.lorentz_centroid(xy, weights, k=k)
        arcs.append(poincare_coords(arc, k=k, coords="hyperboloid"))
    return {
        "k": k,
        "radii": np.array(radii),
        "circles": circles,
        "disk_radius": np.tanh(np.array(radii) / (2.0 * sk)),
        "rays": rays,
        "arcs": arcs,
    }


def geodesic_grid(
    k: float = 1.0,
    *,
    radii: Sequence[float] | None = None,
    n_rays: int = 12,
    n_arcs: int = 6,
    title: str | None = None,
    backend: str = "plotly",
):
    """Distance growth toward the boundary: the picture of :func:`geodesic_grid_data`.

    Circles of equal hyperbolic radius (labelled ``d = r``), geodesics from the origin
    (grey diameters) and geodesics between far points (dashed black arcs).
    """
    _check_backend(backend)
    data = geodesic_grid_data(k, radii=radii, n_rays=n_rays, n_arcs=n_arcs)
    title = title or f"Circles of equal hyperbolic radius (k={k:g})"
    cols = palette(len(data["circles"]))
    if backend == "plotly":
        fig = go.Figure()
        _plotly_disk_axes(fig)
        for ray in data["rays"]:
            fig.add_trace(
                go.Scatter(
                    x=ray[:, 0],
                    y=ray[:, 1],
                    mode="lines",
                    line={"color": "lightgrey", "width": 1},
                    showlegend=False,
                    hoverinfo="skip",
                )
            )
        for arc in data["arcs"]:
            fig.add_trace(
                go.Scatter(
                    x=arc[:, 0],
                    y=arc[:, 1],
                    mode="lines",
                    line={"color": "black", "width": 1, "dash": "dash"},
                    showlegend=False,
                    hoverinfo="skip",
                )
            )
        for r, rd, c, col in zip(data["radii"], data["disk_radius"], data["circles"], cols):
            fig.add_trace(
                go.Scatter(
                    x=c[:, 0],
                    y=c[:, 1],
                    mode="lines",
                    line={"color": col, "width": 2},
                    name=f"d = {r:.3g} (disk radius {rd:.3f})",
                )
            )
        fig.update_layout(title=title, width=640, height=520, template="plotly_white")
        return fig
    fig = Figure(figsize=(6.4, 5.0), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    _mpl_disk_axes(ax, title)
    for ray in data["rays"]:
        ax.plot(ray[:, 0], ray[:, 1], color="lightgrey", lw=0.8)
    for arc in data["arcs"]:
        ax.plot(arc[:, 0], arc[:, 1], color="black", lw=0.8, ls="--")
    for r, rd, c, col in zip(data["radii"], data["disk_radius"], data["circles"], cols):
        ax.plot(c[:, 0], c[:, 1], color=col, lw=1.8, label=f"d = {r:.3g} (radius {rd:.3f})")
    _mpl_outside_legend(fig, ax)
    return fig


# ---------------------------------------------------------------------- codebook Voronoi
def voronoi_data(
    codewords,
    k: float = 1.0,
    *,
    temperature: float = 1.0,
    resolution: int = 200,
    margin: float = 1e-3,
) -> dict[str, Any]:
    r"""Hard and soft assignment of a grid of disk points to a hyperbolic codebook.

    A ``resolution x resolution`` grid over :math:`[-1, 1]^2` is kept inside the disk
    (norm ``< 1 - margin``), mapped to the hyperboloid with
    :func:`lorentz.from_poincare` and compared with the codewords by the squared
    Lorentzian distance :func:`lorentz.pairwise_sqdist` (the quantizer's score):

    .. math:: \mathrm{cell}(x) = \arg\min_j d^2_{\mathcal L}(x, c_j), \qquad
              p_j(x) = \operatorname{softmax}_j\left(-T\, d^2_{\mathcal L}(x, c_j)\right)

    (the argmin is the same for the geodesic distance, an increasing function of
    :math:`d^2_{\mathcal L}`). Larger :math:`T` makes the soft assignment harder.

    Parameters
    ----------
    codewords : (K, 3) float on :math:`\mathbb H^2_k`
    k : float > 0
    temperature : float > 0, the quantizer's :math:`T`
    resolution : int, grid size per axis
    margin : float, grid points need norm ``< 1 - margin``

    Returns
    -------
    dict with ``xs``, ``ys`` (resolution,) grid coordinates; ``inside`` (R, R) bool;
    ``cells`` (R, R) int64 (-1 outside the disk); ``max_prob``, ``entropy`` (R, R) float64
    (NaN outside; entropy in nats, at most ``log K``); ``codewords_disk`` (K, 2);
    ``grid_disk`` (G, 2) and ``grid_points`` (G, 3) the inside grid points, row-major, so
    ``cells[inside]`` lists their cells.
    """
    cw = _to_tensor(codewords, "codewords").double()
    if cw.dim() != 2 or cw.shape[1] != 3 or cw.shape[0] < 1:
        raise ValueError(
            f"codewords must be (K, 3) points of H^2 (time first), got {tuple(cw.shape)}; "
            "for a product quantizer pass one subspace, e.g. quantizer.codewords()[m]"
        )
    if not (isinstance(k, (int, float)) and k > 0):
        raise ValueError(f"k must be a positive float, got {k!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if int(resolution) < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    k = float(k)
    _check_on_hyperboloid(cw, k, "codewords")
    res = int(resolution)
    xs = np.linspace(-1.0, 1.0, res)
    gx, gy = np.meshgrid(xs, xs)  # (R, R): row = y index, column = x index
    inside = gx**2 + gy**2 < (1.0 - margin) ** 2
    grid_disk = np.stack([gx[inside], gy[inside]], axis=1)
    pts = L.from_poincare(torch.from_numpy(grid_disk), k=k)
    sq = L.pairwise_sqdist(pts, cw, k=k)  # (G, K)
    cells_in = sq.argmin(dim=1)
    logits = -float(temperature) * sq
    logp = torch.log_softmax(logits, dim=1)
    prob = logp.exp()
    entropy_in = -(prob * logp).sum(dim=1)
    cells = np.full(inside.shape, -1, dtype=np.int64)
    cells[inside] = cells_in.numpy()
    max_prob = np.full(inside.shape, np.nan)
    max_prob[inside] = prob.max(dim=1).values.numpy()
    entropy = np.full(inside.shape, np.nan)
    entropy[inside] = entropy_in.numpy()
    return {
        "k": k,
        "temperature": float(temperature),
        "xs": xs,
        "ys": xs.copy(),
        "inside": inside,
        "cells": cells,
        "max_prob": max_prob,
        "entropy": entropy,
        "codewords_disk": poincare_coords(cw, k=k, coords="hyperboloid"),
        "grid_disk": grid_disk,
        "grid_points": pts.numpy(),
        "n_codewords": int(cw.shape[0]),
    }


def _cell_boundaries(cells: np.ndarray) -> np.ndarray:
    """Pixels whose right or upper neighbour lies in another cell (inside the disk)."""
    inside = cells >= 0
    b = np.zeros(cells.shape, dtype=bool)
    b[:, :-1] |= (cells[:, :-1] != cells[:, 1:]) & inside[:, 1:]
    b[:-1, :] |= (cells[:-1, :] != cells[1:, :]) & inside[1:, :]
    return b & inside


def codebook_voronoi(
    codewords,
    k: float = 1.0,
    *,
    temperature: float = 1.0,
    resolution: int = 200,
    background: str | None = "cells",
    points=None,
    title: str | None = None,
    backend: str = "plotly",
):
    """Voronoi cells of a hyperbolic codebook on the Poincaré disk (data: :func:`voronoi_data`).

    Parameters
    ----------
    codewords : (K, 3) float on :math:`\\mathbb H^2_k`
    k, temperature, resolution : see :func:`voronoi_data`
    background : {"cells", "entropy", "max_prob", None}
        Colour the disk by hard cell, by the entropy of the soft assignment (0 = hard,
        ``log K`` = uniform), or by its largest probability. Cell boundaries are always
        drawn in black.
    points : (N, 3) float on the same sheet, optional; drawn as white dots with a dark
        rim (readable on the dark and the light end of the colour scale).
    backend : {"plotly", "matplotlib"}
    """
    _check_backend(backend)
    if background not in ("cells", "entropy", "max_prob", None):
        raise ValueError(
            f"background must be 'cells', 'entropy', 'max_prob' or None, got {background!r}"
        )
    data = voronoi_data(codewords, k, temperature=temperature, resolution=resolution)
    K = data["n_codewords"]
    cols = palette(K)
    bound = _cell_boundaries(data["cells"]).astype(float)
    bound[bound == 0] = np.nan
    pts = None if points is None else poincare_coords(points, k=k, coords="hyperboloid")
    cwd = data["codewords_disk"]
    ink = "white" if background in ("entropy", "max_prob") else "black"  # on viridis / light
    title = title or f"Codebook cells on the Poincaré disk (K={K}, k={k:g}, T={temperature:g})"
    if background == "cells":
        z = data["cells"].astype(float)
        z[~data["inside"]] = np.nan
        zrange, cbar = (-0.5, K - 0.5), "cell"
    elif background == "entropy":
        z, zrange, cbar = data["entropy"], (0.0, math.log(K) if K > 1 else 1.0), "entropy (nats)"
    elif background == "max_prob":
        z, zrange, cbar = data["max_prob"], (1.0 / K, 1.0), "max probability"
    else:
        z = None
    if backend == "plotly":
        fig = go.Figure()
        if z is not None:
            if background == "cells":
                scale = []
                for j, c in enumerate(cols):
                    scale += [[j / K, c], [(j + 1) / K, c]]
                hm = {"colorscale": scale, "showscale": False, "opacity": 0.45}
            else:
                hm = {
                    "colorscale": "Viridis",
                    "colorbar": {"title": {"text": cbar, "side": "right"}, "len": 0.8},
                }
            fig.add_trace(
                go.Heatmap(
                    x=data["xs"],
                    y=data["ys"],
                    z=z.astype(np.float32),  # half the bytes of a page or a frame
                    name=cbar,
                    zmin=zrange[0],
                    zmax=zrange[1],
                    hoverinfo="skip",
                    **hm,
                )
            )
        fig.add_trace(
            go.Heatmap(
                x=data["xs"],
                y=data["ys"],
                z=bound.astype(np.float32),
                colorscale=[[0, "black"], [1, "black"]],
                showscale=False,
                hoverinfo="skip",
                name="cell boundaries",
            )
        )
        _plotly_disk_axes(fig)
        if pts is not None:
            fig.add_trace(
                go.Scatter(
                    x=pts[:, 0],
                    y=pts[:, 1],
                    mode="markers",
                    marker={
                        "size": 5,
                        "color": "rgba(255,255,255,0.85)",
                        "line": {"width": 0.8, "color": "#222222"},
                    },
                    name="data points",
                )
            )
        fig.add_trace(
            go.Scatter(
                x=cwd[:, 0],
                y=cwd[:, 1],
                mode="markers+text",
                marker={"size": 12, "color": cols, "symbol": "star", "line": {"width": 1}},
                text=[str(j) for j in range(K)],
                textposition="top center",
                textfont={"color": ink, "size": 13},
                name="codewords",
            )
        )
        fig.update_layout(
            title=title,
            width=600,
            height=580,
            template="plotly_white",
            # below the disk: at the right it sat on top of the colour bar's title
            legend={"orientation": "h", "x": 0.5, "xanchor": "center", "y": -0.02},
            margin={"b": 40},
        )
        return fig
    fig = Figure(figsize=(6.0, 5.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    extent = (-1.0, 1.0, -1.0, 1.0)
    if z is not None:
        if background == "cells":
            cmap = ListedColormap(cols)
            im = ax.imshow(
                np.ma.masked_invalid(z),
                origin="lower",
                extent=extent,
                cmap=cmap,
                vmin=zrange[0],
                vmax=zrange[1],
                alpha=0.45,
                interpolation="nearest",
            )
        else:
            im = ax.imshow(
                np.ma.masked_invalid(z),
                origin="lower",
                extent=extent,
                cmap="viridis",
                vmin=zrange[0],
                vmax=zrange[1],
                interpolation="nearest",
            )
            fig.colorbar(im, ax=ax, shrink=0.8, label=cbar)
    ax.imshow(
        np.ma.masked_invalid(bound),
        origin="lower",
        extent=extent,
        cmap=ListedColormap(["black"]),
        interpolation="nearest",
    )
    _mpl_disk_axes(ax, title)
    if pts is not None:
        ax.scatter(
            pts[:, 0],
            pts[:, 1],
            s=9,
            color="white",
            edgecolors="0.15",
            linewidths=0.5,
            alpha=0.85,
            label="data points",
            zorder=3,
        )
    ax.scatter(
        cwd[:, 0],
        cwd[:, 1],
        s=160,
        c=cols,
        marker="*",
        edgecolors="black",
        zorder=4,
        label="codewords",
    )
    for j, (u, v) in enumerate(cwd):
        ax.annotate(
            str(j),
            (u, v),
            textcoords="offset points",
            xytext=(0, 7),
            ha="center",
            color=ink,
            fontweight="bold",
            zorder=5,
        )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=2, frameon=False, fontsize=8)
    return fig


# ---------------------------------------------------------------------- product subspaces
def subspace_disk_data(
    codewords, k, points=None, *, soft=None, radius: str = "true"
) -> dict[str, Any]:
    r"""2-D disk coordinates of each subspace's codewords (and points) for plotting.

    For :math:`d = 2` the coordinates are the exact Poincaré-disk coordinates
    (:func:`poincare_coords`). For :math:`d > 2` the :math:`d`-dimensional Poincaré-ball
    coordinates are projected onto their two principal directions (PCA of the
    codewords and points of that subspace, directions through the ball's centre, no
    mean shift). It is **not** a hyperbolic isometry: angles and cells are distorted.

    ``radius`` decides what happens to the norms when :math:`d > 2`:

    * ``"true"`` (default): each point keeps its **true** ball norm (so its true
      hyperbolic distance from the origin, :math:`\|p\| = \tanh(d_k(o, x)/2\sqrt k)`)
      and only its direction comes from the projection. Without it, vectors spread
      evenly over :math:`d` dimensions (e.g. random codewords) keep only about
      :math:`2/d` of their squared norm and collapse into a blob at the centre, while
      data concentrated along the principal directions keep theirs.
    * ``"projected"``: the plain orthogonal projection (norms only shrink).

    Parameters
    ----------
    codewords : (M, K, d+1) float, subspace ``m`` on :math:`\mathbb H^d_{k_m}`
    k : float or (M,) float, the curvature parameters (e.g. ``ProductLorentz.k``)
    points : (N, M, d+1) float, optional
    soft : (S, M, d+1) float, optional; more points (e.g. soft quantizations) drawn with
        the same projection, which they do not influence
    radius : {"true", "projected"}

    Returns
    -------
    dict with ``codewords`` (M, K, 2), ``points`` (N, M, 2) or None, ``soft`` (S, M, 2)
    or None, ``exact`` (bool), ``explained`` (M,) the fraction of squared norm the plain
    projection keeps (1 for d = 2), ``radius`` (the option used).
    """
    if radius not in ("true", "projected"):
        raise ValueError(f"radius must be 'true' or 'projected', got {radius!r}")
    cw = _to_tensor(codewords, "codewords").double()
    if cw.dim() != 3 or cw.shape[2] < 3:
        raise ValueError(
            f"codewords must be (M, K, d+1) with d >= 2, got {tuple(cw.shape)}; "
            "use quantizer.codewords() for a ProductQuantizer"
        )
    M = cw.shape[0]
    kk = _to_tensor(k, "k").double().reshape(-1)
    if kk.numel() == 1:
        kk = kk.expand(M)
    if kk.shape != (M,) or not bool((kk > 0).all()):
        raise ValueError(f"k must be a positive float or (M,) = ({M},) values, got {k!r}")

    def _points(x, name):
        if x is None:
            return None
        x = _to_tensor(x, name).double()
        if x.dim() != 3 or x.shape[1:] != (M, cw.shape[2]):
            raise ValueError(
                f"{name} must be (N, M, d+1) = (N, {M}, {cw.shape[2]}), got {tuple(x.shape)}"
            )
        return x

    pts, sft = _points(points, "points"), _points(soft, "soft")
    d = cw.shape[2] - 1
    cw_out = np.zeros((M, cw.shape[1], 2))
    pt_out = None if pts is None else np.zeros((pts.shape[0], M, 2))
    sf_out = None if sft is None else np.zeros((sft.shape[0], M, 2))
    explained = np.ones(M)

    def _project(ball, proj):
        flat = ball @ proj
        if radius == "projected":
            return flat
        norm2 = np.linalg.norm(flat, axis=1, keepdims=True)
        return flat / np.maximum(norm2, 1e-300) * np.linalg.norm(ball, axis=1, keepdims=True)

    for m in range(M):
        pc = poincare_coords(cw[m], k=kk[m], coords="hyperboloid")
        pp = None if pts is None else poincare_coords(pts[:, m], k=kk[m], coords="hyperboloid")
        ps = None if sft is None else poincare_coords(sft[:, m], k=kk[m], coords="hyperboloid")
        if d > 2:
            both = pc if pp is None else np.concatenate([pc, pp])
            centred = both - both.mean(0)
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
            proj = vt[:2].T  # (d, 2) orthonormal columns
            tot = float((both**2).sum())
            explained[m] = float(((both @ proj) ** 2).sum()) / tot if tot > 0 else 1.0
            pc = _project(pc, proj)
            pp = None if pp is None else _project(pp, proj)
            ps = None if ps is None else _project(ps, proj)
        cw_out[m] = poincare_coords(pc, coords="poincare")
        if pp is not None:
            pt_out[:, m] = poincare_coords(pp, coords="poincare")
        if ps is not None:
            sf_out[:, m] = poincare_coords(ps, coords="poincare")
    return {
        "codewords": cw_out,
        "points": pt_out,
        "soft": sf_out,
        "exact": d == 2,
        "explained": explained,
        "radius": radius,
    }


def subspace_codewords_disks(
    codewords,
    k,
    points=None,
    *,
    point_labels=None,
    soft_points=None,
    max_points: int = 2000,
    cols: int = 4,
    title: str | None = None,
    radius: str = "true",
    backend: str = "plotly",
    seed: int = 0,
):
    """Each subspace's codewords on its own Poincaré disk (data: :func:`subspace_disk_data`).

    Parameters
    ----------
    codewords : (M, K, d+1) float; k : float or (M,)
    points : (N, M, d+1) float, optional; at most ``max_points`` (random, ``seed``) drawn.
    point_labels : (N,) labels colouring the points, optional.
    soft_points : (N, M, d+1) float, optional: the points' soft quantizations (the
        Lorentz centroids of the codewords they attend to), drawn as grey crosses with
        the same subsample.
    cols : panels per row.
    radius : {"true", "projected"}: for ``d > 2``, keep every point's true distance
        from the centre and project only its direction (default), or project plainly.

    Codewords are drawn last, as small black stars with a white edge, so a dense
    codebook stays visible over the data. Dashed circles mark the median disk radius of
    the codewords (black) and of the points (grey). For ``d > 2`` the panel titles give
    the share of squared norm the plain 2-D projection keeps.
    """
    _check_backend(backend)
    if points is not None:
        n = len(points)
        if n > max_points:
            keep = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
            points = _to_tensor(points, "points")[torch.from_numpy(keep)]
            if soft_points is not None:
                soft_points = _to_tensor(soft_points, "soft_points")[torch.from_numpy(keep)]
            if point_labels is not None:
                point_labels = _to_numpy(point_labels, "point_labels")[keep]
    data = subspace_disk_data(codewords, k, points, soft=soft_points, radius=radius)
    cw, pt, sf = data["codewords"], data["points"], data["soft"]
    M = cw.shape[0]
    kk = _to_numpy(k, "k").reshape(-1)
    kk = np.broadcast_to(kk, (M,)) if kk.size == 1 else kk
    ncol = min(cols, M)
    nrow = math.ceil(M / ncol)
    names = [
        f"subspace {m} (k={kk[m]:.3g})"
        + ("" if data["exact"] else f", PCA {data['explained'][m]:.0%}")
        for m in range(M)
    ]
    how = "PCA directions, true radii" if radius == "true" else "PCA of the Poincaré ball"
    title = title or ("Codewords per subspace" + ("" if data["exact"] else f" ({how})"))
    groups = _label_groups(point_labels, 0 if pt is None else pt.shape[0])
    rings = []  # (m, radius, colour, name)
    for m in range(M):
        rings.append((m, float(np.median(np.linalg.norm(cw[m], axis=1))), "black", "codewords"))
        if pt is not None:
            rings.append((m, float(np.median(np.linalg.norm(pt[:, m], axis=1))), "grey", "points"))
    if backend == "plotly":
        fig = make_subplots(rows=nrow, cols=ncol, subplot_titles=names)
        for m in range(M):
            r, c = m // ncol + 1, m % ncol + 1
            _plotly_disk_axes(fig, r, c)
            if pt is not None:
                for name, idx, col in groups:
                    fig.add_trace(
                        go.Scatter(
                            x=pt[idx, m, 0],
                            y=pt[idx, m, 1],
                            mode="markers",
                            marker={"size": 3, "color": col, "opacity": 0.5},
                            name=name or "points",
                            legendgroup=name or "points",
                            showlegend=(m == 0 and name is not None),
                        ),
                        row=r,
                        col=c,
                    )
            if sf is not None:
                fig.add_trace(
                    go.Scatter(
                        x=sf[:, m, 0],
                        y=sf[:, m, 1],
                        mode="markers",
                        marker={"size": 4, "color": "dimgrey", "symbol": "x-thin-open"},
                        name="soft quantizations",
                        legendgroup="soft",
                        showlegend=m == 0,
                    ),
                    row=r,
                    col=c,
                )
            for mm, rad, col, what in rings:
                if mm == m:
                    circ = _circle(rad)
                    fig.add_trace(
                        go.Scatter(
                            x=circ[:, 0],
                            y=circ[:, 1],
                            mode="lines",
                            line={"color": col, "width": 1, "dash": "dash"},
                            name=f"median radius: {what}",
                            legendgroup=f"ring {what}",
                            showlegend=m == 0,
                            hoverinfo="skip",
                        ),
                        row=r,
                        col=c,
                    )
            fig.add_trace(
                go.Scatter(
                    x=cw[m, :, 0],
                    y=cw[m, :, 1],
                    mode="markers",
                    marker={
                        "size": 6,
                        "color": "black",
                        "symbol": "star",
                        "line": {"color": "white", "width": 0.5},
                    },
                    name="codewords",
                    legendgroup="codewords",
                    showlegend=m == 0,
                ),
                row=r,
                col=c,
            )
        fig.update_layout(
            title=title, width=260 * ncol + 160, height=260 * nrow + 80, template="plotly_white"
        )
        return fig
    fig = Figure(figsize=(2.8 * ncol + 1.6, 2.8 * nrow + 0.4), layout="constrained")
    for m in range(M):
        ax = fig.add_subplot(nrow, ncol, m + 1)
        _mpl_disk_axes(ax, names[m])
        if pt is not None:
            for name, idx, col in groups:
                ax.scatter(pt[idx, m, 0], pt[idx, m, 1], s=3, color=col, alpha=0.5, label=name)
        if sf is not None:
            ax.scatter(
                sf[:, m, 0], sf[:, m, 1], s=6, color="dimgrey", marker="x", lw=0.5,
                label="soft quantizations", zorder=2,
            )  # fmt: skip
        for mm, rad, col, what in rings:
            if mm == m:
                ax.add_patch(
                    Circle((0, 0), rad, fill=False, ls="--", lw=0.8, color=col,
                           label=f"median radius: {what}")
                )  # fmt: skip
        ax.scatter(
            cw[m, :, 0], cw[m, :, 1], s=22, color="black", marker="*", edgecolors="white",
            linewidths=0.3, zorder=3, label="codewords",
        )  # fmt: skip
        if m == 0:
            _mpl_outside_legend(fig, ax, markerscale=2)
    fig.suptitle(title, fontsize=11)
    return fig


# ---------------------------------------------------------------------- trees
def geodesic_segment(x, y, *, k=1.0, samples: int = 50) -> torch.Tensor:
    r"""Points along the geodesic segment from ``x`` to ``y`` on :math:`\mathbb H^n_k`.

    The weighted Lorentz centroid of :math:`\{x, y\}` with weights :math:`(1-t, t)`
    (:func:`lorentz.lorentz_centroid`) lies on the plane through 0, x and y, whose
    intersection with the sheet is the geodesic; ``t`` from 0 to 1 sweeps the segment
    (not at constant speed).

    Parameters
    ----------
    x, y : (n+1,) float on :math:`\mathbb H^n_k`

    Returns
    -------
    (samples, n+1) float, from ``x`` to ``y``.
    """
    x, y = _to_tensor(x, "x"), _to_tensor(y, "y")
    if x.shape != y.shape or x.dim() != 1:
        raise ValueError(
            f"x and y must be two (n+1,) points, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    t = torch.linspace(0.0, 1.0, samples, dtype=x.dtype)
    return L.lorentz_centroid(torch.stack([x, y]), torch.stack([1.0 - t, t], dim=1), k=k)


def tree_embeddings(
    parent,
    poincare_xy,
    euclidean_xy,
    *,
    titles: tuple[str, str] = ("hyperbolic (Poincaré disk)", "Euclidean plane"),
    radial: str = "poincare",
    backend: str = "plotly",
):
    """One tree drawn twice: in the hyperbolic plane (edges are geodesics) and in the plane.

    Parameters
    ----------
    parent : (n,) int, ``parent[i]`` of node ``i`` (``-1`` for the root)
    poincare_xy : (n, 2) unit-disk coordinates of the hyperbolic embedding (k = 1)
    euclidean_xy : (n, 2) coordinates of the Euclidean embedding
    titles : panel titles (e.g. with the distortion of each)
    radial : {"poincare", "distance"}
        How the hyperbolic panel is drawn. ``"poincare"``: the Poincaré disk, where the
        deep levels crowd against the rim (a tiny Euclidean gap there is a large
        hyperbolic distance). ``"distance"``: geodesic polar coordinates around the
        origin, i.e. :func:`~hihpq_lib.lorentz.logmap0` of every node and of every
        point of the edges: each node sits at its **true** hyperbolic distance from the
        origin, in its true direction, so the depths spread out evenly; dotted circles
        mark each depth's median distance. Distances between nodes are only exact
        along the rays from the origin.
    backend : {"plotly", "matplotlib"}

    Nodes are coloured by depth; hyperbolic edges are drawn as geodesic arcs
    (:func:`geodesic_segment`).
    """
    if radial not in ("poincare", "distance"):
        raise ValueError(f"radial must be 'poincare' or 'distance', got {radial!r}")
    _check_backend(backend)
    par = _to_numpy(parent, "parent").astype(np.int64).reshape(-1)
    n = par.shape[0]
    ph = poincare_coords(poincare_xy, coords="poincare").reshape(n, 2)
    pe = np.asarray(_to_numpy(euclidean_xy, "euclidean_xy"), dtype=np.float64).reshape(n, 2)
    depth = np.zeros(n, dtype=np.int64)
    for i in range(n):  # parents come before children in any sensible numbering
        j, d = i, 0
        while par[j] >= 0:
            j, d = par[j], d + 1
            if d > n:
                raise ValueError("parent does not describe a tree (cycle found)")
        depth[i] = d
    xh = L.from_poincare(torch.from_numpy(ph))

    def to_panel(x):  # hyperboloid points -> coordinates of the hyperbolic panel
        if radial == "distance":
            return L.logmap0(x)[..., 1:].numpy()
        return poincare_coords(x, coords="hyperboloid")

    arcs_h, arcs_e = [], []
    for i in range(n):
        if par[i] >= 0:
            seg = geodesic_segment(xh[par[i]], xh[i], samples=20)
            arcs_h.append(to_panel(seg))
            arcs_e.append(pe[[par[i], i]])
    rings = []
    if radial == "distance":
        ph = to_panel(xh)
        r_nodes = np.linalg.norm(ph, axis=1)
        rings = [float(np.median(r_nodes[depth == d])) for d in range(1, depth.max() + 1)]
    groups = _label_groups(depth, n, [f"depth {d}" for d in range(depth.max() + 1)])
    if backend == "plotly":
        fig = make_subplots(rows=1, cols=2, subplot_titles=titles)
        for c, arcs in ((1, arcs_h), (2, arcs_e)):
            xs, ys = [], []
            for a in arcs:
                xs += a[:, 0].tolist() + [None]
                ys += a[:, 1].tolist() + [None]
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines",
                    line={"color": "grey", "width": 1},
                    showlegend=False,
                    hoverinfo="skip",
                ),
                row=1,
                col=c,
            )
        for name, idx, col in groups:
            for c, pts in ((1, ph), (2, pe)):
                fig.add_trace(
                    go.Scatter(
                        x=pts[idx, 0],
                        y=pts[idx, 1],
                        mode="markers",
                        marker={"size": 6, "color": col},
                        name=name,
                        legendgroup=name,
                        showlegend=c == 1,
                    ),
                    row=1,
                    col=c,
                )
        if radial == "poincare":
            _plotly_disk_axes(fig, 1, 1)
        else:
            for rad in rings:
                circ = _circle(rad)
                fig.add_trace(
                    go.Scatter(
                        x=circ[:, 0],
                        y=circ[:, 1],
                        mode="lines",
                        line={"color": "lightgrey", "width": 1, "dash": "dot"},
                        showlegend=False,
                        hoverinfo="skip",
                    ),
                    row=1,
                    col=1,
                )
        for col in (1, 2) if radial == "distance" else (2,):
            sub = fig.get_subplot(1, col)
            sub.yaxis.update(scaleanchor="x" + sub.xaxis.plotly_name[len("xaxis") :], visible=False)
            sub.xaxis.update(visible=False)
        fig.update_layout(width=980, height=500, template="plotly_white")
        return fig
    fig = Figure(figsize=(11, 5), layout="constrained")
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    if radial == "poincare":
        _mpl_disk_axes(ax1, titles[0])
    else:
        for rad in rings:
            ax1.add_patch(Circle((0, 0), rad, fill=False, ls=":", lw=0.8, color="lightgrey"))
        ax1.set_aspect("equal")
        ax1.set_xticks([])
        ax1.set_yticks([])
        ax1.set_title(titles[0], fontsize=10)
    for a in arcs_h:
        ax1.plot(a[:, 0], a[:, 1], color="grey", lw=0.7)
    for a in arcs_e:
        ax2.plot(a[:, 0], a[:, 1], color="grey", lw=0.7)
    for name, idx, col in groups:
        ax1.scatter(ph[idx, 0], ph[idx, 1], s=14, color=col, label=name, zorder=3)
        ax2.scatter(pe[idx, 0], pe[idx, 1], s=14, color=col, zorder=3)
    ax2.set_aspect("equal")
    ax2.set_xticks([])
    ax2.set_yticks([])
    ax2.set_title(titles[1], fontsize=10)
    _mpl_outside_legend(fig, ax1)
    return fig


# ---------------------------------------------------------------------- hierarchy
def seed_strip(
    values: Mapping[str, Sequence[float]],
    seeds: Sequence[int],
    *,
    ylabel: str = "value",
    title: str | None = None,
    backend: str = "plotly",
):
    """One marker per (method, seed), methods side by side: no line joins seeds.

    Seeds are separate runs, not points of a curve, so they are drawn as a strip per
    method (a small horizontal offset per seed), each seed in its own colour in every
    method, with the method's mean as a short black bar. Same-coloured markers that sit
    high or low together show the pairing that paired differences exploit.

    Parameters
    ----------
    values : {method: (S,) values in seed order}
    seeds : (S,) seed numbers (legend)
    ylabel, title : str
    backend : {"plotly", "matplotlib"}
    """
    _check_backend(backend)
    names = list(values)
    seeds = [int(s) for s in seeds]
    if not names or any(len(values[n]) != len(seeds) for n in names):
        raise ValueError(f"values needs one list of {len(seeds)} numbers (one per seed) per method")
    cols = palette(len(seeds))
    offsets = np.linspace(-0.15, 0.15, len(seeds)) if len(seeds) > 1 else np.zeros(1)
    means = [float(np.mean(values[n])) for n in names]
    if backend == "plotly":
        fig = go.Figure()
        for j, (seed, col) in enumerate(zip(seeds, cols)):
            fig.add_trace(
                go.Scatter(
                    x=np.arange(len(names)) + offsets[j],
                    y=[values[n][j] for n in names],
                    mode="markers",
                    marker={"size": 9, "color": col},
                    name=f"seed {seed}",
                )
            )
        for i, mean in enumerate(means):
            fig.add_trace(
                go.Scatter(
                    x=[i - 0.25, i + 0.25],
                    y=[mean, mean],
                    mode="lines",
                    line={"color": "black", "width": 2},
                    name="mean",
                    legendgroup="mean",
                    showlegend=i == 0,
                )
            )
        fig.update_layout(
            title=title,
            yaxis_title=ylabel,
            xaxis={"tickmode": "array", "tickvals": list(range(len(names))), "ticktext": names},
            width=620,
            height=440,
            template="plotly_white",
        )
        return fig
    fig = Figure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    for j, (seed, col) in enumerate(zip(seeds, cols)):
        ax.scatter(
            np.arange(len(names)) + offsets[j],
            [values[n][j] for n in names],
            s=40,
            color=col,
            label=f"seed {seed}",
            zorder=3,
        )
    for i, mean in enumerate(means):
        ax.plot(
            [i - 0.25, i + 0.25],
            [mean, mean],
            color="black",
            lw=2,
            label="mean" if i == 0 else None,
        )
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=11)
    return fig


def _leaf_members(Z: np.ndarray, node_ids: Sequence[int]) -> list[np.ndarray]:
    from scipy.cluster.hierarchy import to_tree

    _, nodes = to_tree(Z, rd=True)
    return [np.asarray(nodes[i].pre_order(), dtype=np.int64) for i in node_ids]


def dendrogram_vs_labels(
    linkage,
    true_labels,
    class_names: Sequence[str],
    superclass_of: Mapping[str, str] | None = None,
    *,
    point_of=None,
    p: int = 30,
    title: str | None = "Ward dendrogram vs. true labels",
) -> Figure:
    """A truncated dendrogram with, under each leaf, the class (and superclass) make-up.

    Each of the ``p`` leaves of the truncated tree is a cluster; the bars beneath it are
    stacked by the fraction of its members in each true class (and superclass). A
    hierarchy that agrees with the labels shows one dominant colour per leaf and
    neighbouring leaves sharing a superclass.

    Parameters
    ----------
    linkage : (P-1, 4) scipy linkage matrix (e.g. ``TangentWardHierarchy.linkage_``)
    true_labels : (N,) int class indices
    class_names : sequence of C str
    superclass_of : mapping class name -> superclass name, optional (adds a second bar row)
    point_of : (N,) int, optional
        The linkage leaf of each labelled item when the linkage was built on anchors
        (``TangentWardHierarchy.anchor_labels_`` in scalable mode); default: item ``i`` is
        leaf ``i`` (then ``N == P``).
    p : int, leaves shown (``truncate_mode="lastp"``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from scipy.cluster.hierarchy import dendrogram

    Z = np.asarray(_to_numpy(linkage, "linkage"), dtype=np.float64)
    if Z.ndim != 2 or Z.shape[1] != 4:
        raise ValueError(f"linkage must be a (P-1, 4) scipy linkage matrix, got {Z.shape}")
    P = Z.shape[0] + 1
    lab = _to_numpy(true_labels, "true_labels").astype(np.int64).reshape(-1)
    C = len(class_names)
    if lab.size and (lab.min() < 0 or lab.max() >= C):
        raise ValueError(f"true_labels must lie in [0, {C}) (one per class name)")
    if point_of is None:
        if lab.shape[0] != P:
            raise ValueError(
                f"true_labels has {lab.shape[0]} entries but the linkage has {P} leaves; "
                "pass point_of (the leaf of each item) for an anchor linkage"
            )
        point_of = np.arange(P)
    point_of = _to_numpy(point_of, "point_of").astype(np.int64).reshape(-1)
    if point_of.shape != lab.shape or point_of.min() < 0 or point_of.max() >= P:
        raise ValueError(f"point_of must be (N,) = ({lab.shape[0]},) leaf ids in [0, {P})")
    rows = [("class", lab, list(class_names))]
    if superclass_of is not None:
        missing = [c for c in class_names if c not in superclass_of]
        if missing:
            raise KeyError(f"superclass_of has no entry for classes {missing[:5]}")
        snames = list(dict.fromkeys(superclass_of[c] for c in class_names))
        fine_to_super = np.array([snames.index(superclass_of[c]) for c in class_names])
        rows.append(("superclass", fine_to_super[lab], snames))
    fig = Figure(figsize=(11, 5.2), layout="constrained")
    heights = [4] + [0.6] * len(rows)
    gs = fig.add_gridspec(len(rows) + 1, 2, height_ratios=heights, width_ratios=[5, 1.3])
    ax = fig.add_subplot(gs[0, 0])
    R = dendrogram(
        Z,
        truncate_mode="lastp",
        p=min(p, P),
        ax=ax,
        no_labels=True,
        above_threshold_color="0.4",
        color_threshold=0,
    )
    ax.set_ylabel("Ward merge height")
    ax.set_xticks([])
    if title:
        ax.set_title(title, fontsize=11)
    # node id of each displayed leaf, in display order
    n_leaves = len(R["leaves"])
    members_of_node = _leaf_members(Z, R["leaves"])
    leaf_to_items = np.empty(P, dtype=object)
    order = np.argsort(point_of, kind="stable")
    bounds = np.searchsorted(point_of[order], np.arange(P + 1))
    for leaf in range(P):
        leaf_to_items[leaf] = order[bounds[leaf] : bounds[leaf + 1]]
    lax = fig.add_subplot(gs[:, 1])  # legends
    lax.axis("off")
    for r, (row_name, row_lab, row_names) in enumerate(rows, start=1):
        bax = fig.add_subplot(gs[r, 0], sharex=ax)
        cols = palette(len(row_names))
        for i, mem in enumerate(members_of_node):
            items = np.concatenate([leaf_to_items[j] for j in mem]) if len(mem) else []
            counts = np.bincount(row_lab[items], minlength=len(row_names)).astype(float)
            frac = counts / max(counts.sum(), 1.0)
            bottom = 0.0
            for c in np.argsort(-frac):
                if frac[c] <= 0:
                    break
                bax.bar(10 * i + 5, frac[c], width=9, bottom=bottom, color=cols[c], linewidth=0)
                bottom += frac[c]
        bax.set_xlim(0, 10 * n_leaves)
        bax.set_ylim(0, 1)
        bax.set_yticks([])
        bax.set_xticks([])
        bax.set_ylabel(row_name, rotation=0, ha="right", va="center", fontsize=9)
        handles = [Patch(color=cols[j], label=n) for j, n in enumerate(row_names)]
        lax.legend(
            handles=handles,
            title=row_name,
            fontsize=7,
            title_fontsize=8,
            frameon=False,
            loc="upper left" if r == 1 else "lower left",
        )
        if r == 1 and len(rows) > 1:
            lax.add_artist(lax.get_legend())
    return fig


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


def _line_figure(curves, xlabel, ylabel, title, backend, ylim=(0.0, 1.02), log_x=False):
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
        return fig
    fig = Figure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    for (x, y, lab), col in zip(curves, cols):
        ax.plot(x, y, label=lab, color=col)
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
        :func:`hihpq_lib.metrics.precision_recall_by_rank`
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
        :func:`hihpq_lib.metrics.precision_at_k_curve`
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
    """
    _check_backend(backend)
    curves = _as_curves(x, ys, labels, "x", "ys")
    return _line_figure(curves, xlabel, ylabel, title, backend, ylim=ylim, log_x=log_x)


def _mimebundle(obj) -> dict[str, Any]:
    """The display data of ``obj`` as a Jupyter output dict, without displaying it.

    plotly figures give plotly's own mimetype (what JupyterLab, Notebook 7 and VS Code
    render; ``display`` would show them through ``_ipython_display_`` instead of
    returning data); anything else goes through the running IPython's formatters (so a
    matplotlib figure becomes a PNG), or a plain formatter outside IPython.
    """
    if isinstance(obj, go.Figure):
        import plotly.io as pio

        data = pio.renderers["plotly_mimetype"].to_mimebundle(obj.to_dict())
        data["text/plain"] = f"<plotly figure: {obj.layout.title.text or 'untitled'}>"
        return {"output_type": "display_data", "data": data, "metadata": {}}
    from IPython import get_ipython
    from IPython.core.formatters import DisplayFormatter

    shell = get_ipython()
    formatter = shell.display_formatter if shell is not None else DisplayFormatter()
    data, metadata = formatter.format(obj)
    return {"output_type": "display_data", "data": data, "metadata": metadata}


def slider_figure(make_figure, **sliders):
    """``make_figure(**values)`` under ipywidgets sliders, redrawn in place when one moves.

    Returns one widget (the sliders above an ``ipywidgets.Output``); end a notebook cell
    with this call to show it. Each move calls ``make_figure`` with the sliders' values
    and **replaces the Output widget's content** (its ``outputs`` trait) with the new
    figure's display data. The front end re-renders the Output widget from that state, so
    the redraw lands in the cell in JupyterLab, Notebook 7 and VS Code alike; the figure
    is rendered by the front end's own renderers (plotly's mimetype in JupyterLab).

    Why not the alternatives: replacing a display handle (``handle.update``) is ignored by
    plotly's JupyterLab renderer, whose redraws went to the Log Console; printing into the
    Output widget (``with out: display(...)``) relies on the front end capturing messages
    by their parent, which headless runners (nbclient, so nbmake) must emulate; plotly's
    ``FigureWidget`` needs anywidget and one fixed set of traces. Setting ``outputs`` is
    plain widget state: nbmake executes it without a front end and without hanging.

    A live slider needs a kernel; for exported HTML and the book, see
    :func:`slider_frames` (a plotly slider over precomputed frames).

    Parameters
    ----------
    make_figure : callable(**values) -> any displayable object (plotly or matplotlib figure)
    **sliders : ipywidgets value widgets, keyed by ``make_figure``'s argument names

    Returns
    -------
    ipywidgets.VBox with ``.children == (HBox(sliders), Output)``

    Examples
    --------
    >>> import ipywidgets as widgets
    >>> c = widgets.FloatSlider(1.0)
    >>> box = slider_figure(lambda c: f"figure for c = {c}", c=c)
    >>> out = box.children[1]
    >>> out.outputs[0]["data"]["text/plain"]
    "'figure for c = 1.0'"
    >>> c.value = 2.0  # moving the slider redraws
    >>> out.outputs[0]["data"]["text/plain"]
    "'figure for c = 2.0'"
    """
    import ipywidgets as widgets

    if not sliders:
        raise ValueError("give at least one slider, e.g. c=ipywidgets.FloatSlider(1.0)")
    out = widgets.Output(layout={"min_height": "120px"})

    def redraw(_change=None):
        fig = make_figure(**{name: w.value for name, w in sliders.items()})
        out.outputs = (_mimebundle(fig),)

    redraw()
    for w in sliders.values():
        w.observe(redraw, names="value")
    return widgets.VBox([widgets.HBox(list(sliders.values())), out])


def slider_frames(
    make_figure,
    values: Sequence[float],
    *,
    name: str,
    active: int | None = None,
    fmt: str = "{:.3g}",
) -> go.Figure:
    """A plotly figure with its own slider over precomputed frames: interactive without a kernel.

    ``make_figure(v)`` is called for every value ``v`` (each must return a plotly figure
    with the same traces in the same order); the figure for ``values[active]`` is shown,
    the others become plotly frames, and a plotly slider switches between them in the
    browser. So the exploration keeps working in exported HTML, in the built book
    (``make book``) and in slides, with no Python running. Each frame carries its title.

    Parameters
    ----------
    make_figure : callable(value) -> plotly.graph_objects.Figure
    values : the slider's values (at least 2), in slider order
    name : what the slider sets (shown as "name = value" above it)
    active : index of the value shown first (default: the middle one)
    fmt : format of the step labels

    Returns
    -------
    plotly.graph_objects.Figure with ``len(values)`` frames and one slider

    >>> f = slider_frames(
    ...     lambda v: go.Figure(go.Scatter(y=[0, v]), layout={"title": f"v = {v}"}),
    ...     [1.0, 2.0, 3.0],
    ...     name="v",
    ... )
    >>> len(f.frames), f.layout.sliders[0].active, f.layout.title.text
    (3, 1, 'v = 2.0')
    >>> f.frames[2].layout.title.text, list(f.frames[2].data[0].y)
    ('v = 3.0', [0, 3.0])
    """
    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"give at least 2 slider values, got {len(values)}")
    active = len(values) // 2 if active is None else int(active)
    if not 0 <= active < len(values):
        raise ValueError(f"active must index values (0..{len(values) - 1}), got {active}")
    figs = [make_figure(v) for v in values]
    if not all(isinstance(f, go.Figure) for f in figs):
        raise TypeError("make_figure must return plotly figures (backend='plotly')")
    n = len(figs[active].data)
    if any(len(f.data) != n for f in figs):
        raise ValueError(
            "every frame needs the same traces: make_figure returned "
            f"{sorted({len(f.data) for f in figs})} traces for different values"
        )
    fig = go.Figure(figs[active])
    fig.frames = [
        go.Frame(data=f.data, layout={"title": f.layout.title}, name=str(i))
        for i, f in enumerate(figs)
    ]
    steps = [
        {
            "label": fmt.format(v),
            "method": "animate",
            "args": [
                [str(i)],
                {
                    "mode": "immediate",
                    "frame": {"duration": 0, "redraw": True},
                    "transition": {"duration": 0},
                },
            ],
        }
        for i, v in enumerate(values)
    ]
    height = (fig.layout.height or 520) + 90
    fig.update_layout(
        height=height,
        sliders=[
            {
                "active": active,
                "currentvalue": {"prefix": f"{name} = "},
                "pad": {"t": 30},
                "steps": steps,
            }
        ],
    )
    return fig


def curvature_figure(
    tangent,
    c: float,
    *,
    labels=None,
    class_names: Sequence[str] | None = None,
    geodesic=None,
    pair: tuple[int, int] = (0, 1),
    radius: float = 4.5,
    zmax: float = 5.0,
    backend: str = "plotly",
):
    r"""The same tangent vectors mapped onto the sheet of curvature magnitude :math:`c = 1/k`.

    Points :math:`\exp_o^k(v)` with :math:`k = 1/c` (:func:`lorentz.expmap0`), drawn by
    :func:`hyperboloid_and_disk` on a fixed part of the sheet (``radius``, ``zmax``) so
    that figures for different ``c`` compare. The title gives the distance between the
    points ``pair`` (it grows with ``c``: more curvature, more room).

    Parameters
    ----------
    tangent : (N, 2) float, tangent vectors at the origin (the "features")
    c : float > 0, curvature magnitude
    labels, class_names : colour groups as in :func:`poincare_disk`
    geodesic : (2,) float, optional: direction of a geodesic from the origin (length 2.2)
    pair : two point indices whose distance the title reports
    radius, zmax : the drawn part of the sheet
    backend : {"plotly", "matplotlib"}
    """
    if not c > 0:
        raise ValueError(f"c must be positive (c = 1/k), got {c!r}")
    v = _to_tensor(tangent, "tangent").double()
    if v.dim() != 2 or v.shape[1] != 2:
        raise ValueError(f"tangent must be (N, 2) tangent vectors, got {tuple(v.shape)}")
    k = 1.0 / float(c)
    pts = L.expmap0(L.lift(v), k=k)
    curves = None
    if geodesic is not None:
        direction = _to_tensor(geodesic, "geodesic").double().reshape(2)
        t = torch.linspace(0.0, 2.2, 60, dtype=torch.float64)
        curves = [L.geodesic0(direction / direction.norm(), t, k=k)]
    a, b = pair
    d_ab = L.dist(pts[a], pts[b], k=k).item()
    title = (
        f"c = {c:.2f} (k = {k:.2f}): the first two points are {d_ab:.2f} apart; "
        "larger c pushes the points toward the rim"
    )
    return hyperboloid_and_disk(
        pts,
        k,
        labels=labels,
        class_names=class_names,
        curves=curves,
        radius=radius,
        zmax=zmax,
        title=title,
        backend=backend,
    )


def curvature_explorer(tangent, cs: Sequence[float], **kwargs) -> go.Figure:
    """:func:`curvature_figure` for every ``c`` in ``cs``, under a kernel-free plotly slider.

    ``kwargs`` go to :func:`curvature_figure`; see :func:`slider_frames`.
    """
    return slider_frames(
        lambda c: curvature_figure(tangent, c, **kwargs), cs, name="c = 1/k", fmt="{:.2g}"
    )


def voronoi_figure(
    tangent_codebook,
    temperature: float,
    c: float,
    *,
    points_tangent=None,
    resolution: int = 200,
    backend: str = "plotly",
):
    r"""A codebook given as tangent vectors, on the sheet of curvature ``c``, at temperature ``T``.

    The codewords :math:`\exp_o^k(t_j)` (and the data :math:`\exp_o^k(v_n)`) with
    :math:`k = 1/c`, drawn by :func:`codebook_voronoi` with the entropy of the soft
    assignment as background.

    Parameters
    ----------
    tangent_codebook : (K, 2) float, codewords as tangent vectors at the origin
    temperature : float > 0 (larger = harder assignment)
    c : float > 0, curvature magnitude
    points_tangent : (N, 2) float, optional data points as tangent vectors
    resolution : grid size per axis
    backend : {"plotly", "matplotlib"}
    """
    if not c > 0:
        raise ValueError(f"c must be positive (c = 1/k), got {c!r}")
    k = 1.0 / float(c)
    cw = L.expmap0(L.lift(_to_tensor(tangent_codebook, "tangent_codebook").double()), k=k)
    pts = None
    if points_tangent is not None:
        pts = L.expmap0(L.lift(_to_tensor(points_tangent, "points_tangent").double()), k=k)
    title = (
        f"T = {temperature:.2g}, c = {c:.2g}: entropy of the soft assignment<br>"
        "<sup>dark = certain; the bright bands between cells shrink as T grows</sup>"
    )
    return codebook_voronoi(
        cw,
        k,
        temperature=temperature,
        resolution=resolution,
        background="entropy",
        points=pts,
        title=title,
        backend=backend,
    )


def voronoi_explorer(
    tangent_codebook,
    values: Sequence[float],
    *,
    vary: str = "temperature",
    temperature: float = 1.0,
    c: float = 1.0,
    points_tangent=None,
    resolution: int = 120,
) -> go.Figure:
    """:func:`voronoi_figure` over ``values`` of the temperature or the curvature, kernel-free.

    ``vary="temperature"`` slides :math:`T` at curvature ``c``; ``vary="curvature"``
    slides :math:`c` at temperature ``temperature``. See :func:`slider_frames`; a
    coarser default grid (120 per axis) keeps a page with its frames small.
    """
    if vary not in ("temperature", "curvature"):
        raise ValueError(f"vary must be 'temperature' or 'curvature', got {vary!r}")

    def make(v):
        t, cc = (v, c) if vary == "temperature" else (temperature, v)
        return voronoi_figure(
            tangent_codebook, t, cc, points_tangent=points_tangent, resolution=resolution
        )

    return slider_frames(make, values, name="T" if vary == "temperature" else "c = 1/k")


# ---------------------------------------------------------------------- notebook display
#: Name under which :func:`use_notebook_renderer` registers its plotly renderer.
RENDERER = "hihpq_notebook"


def use_notebook_renderer() -> str:
    """Make every plotly figure display as plotly's mimetype **and** offline HTML.

    Sets ``plotly.io.renderers.default = "plotly_mimetype+hihpq_notebook"``:

    * ``application/vnd.plotly.v1+json`` -- what JupyterLab and VS Code render;
    * ``text/html`` -- a ``<div>`` and a ``Plotly.newPlot`` call, what ``jupyter
      nbconvert --to html`` and the book (``make book``) keep. plotly.js itself is
      embedded **once**, in the output of the cell that calls this (inside a kernel,
      activating the renderer displays it), so exported pages work offline.

    The HTML of plotly's own ``notebook`` renderer also loads MathJax from a CDN for
    every figure; this renderer does not (the book bundles MathJax itself), so a page
    opened offline has no failed request.

    Importing :mod:`hihpq_lib.viz` inside a Jupyter kernel calls this, unless
    ``PLOTLY_RENDERER`` is set (plotly's own way to choose). Returns the renderer string.
    """
    import plotly.io as pio
    from plotly.io._base_renderers import NotebookRenderer

    class _OfflineNotebookRenderer(NotebookRenderer):
        def to_mimebundle(self, fig_dict):
            html = pio.to_html(
                fig_dict,
                config=self.config,
                include_plotlyjs=False,
                include_mathjax=False,
                full_html=False,
                auto_play=False,  # a figure with frames (slider_frames) starts where it says
                default_width="100%",
                default_height=525,
                validate=False,
            )
            return {"text/html": html}

    pio.renderers[RENDERER] = _OfflineNotebookRenderer()
    choice = f"plotly_mimetype+{RENDERER}"
    pio.renderers.default = choice
    return choice


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


# ---------------------------------------------------------------------- UMAP
def umap_coords(
    features,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "euclidean",
    random_state: int | None = 0,
    max_points: int = 5000,
    reducer=None,
) -> tuple[np.ndarray, np.ndarray]:
    """2-D UMAP coordinates of (a random subset of at most ``max_points``) features.

    Parameters
    ----------
    features : (N, F) float
    n_neighbors, min_dist, metric, random_state : passed to ``umap.UMAP``
        (``random_state`` makes it reproducible and single-threaded).
    max_points : int
        Larger inputs are subsampled (seeded by ``random_state``): UMAP on 5,000 points
        takes seconds on a laptop CPU, plus about 10 s of one-off numba compilation per
        Python process.
    reducer : object with ``fit_transform``, optional
        Replaces UMAP (e.g. ``sklearn.decomposition.PCA(2)`` for a quick look).

    Returns
    -------
    coords : (n, 2) float64
    kept : (n,) int64 indices of the rows used
    """
    X = _to_numpy(features, "features")
    if X.ndim != 2 or X.shape[0] < 3:
        raise ValueError(f"features must be (N, F) with N >= 3, got {X.shape}")
    X = X.astype(np.float32, copy=False)
    n = X.shape[0]
    kept = np.arange(n)
    if n > max_points:
        rng = np.random.default_rng(0 if random_state is None else random_state)
        kept = np.sort(rng.choice(n, max_points, replace=False))
    if reducer is None:
        import umap  # slow import (numba): only when asked for

        reducer = umap.UMAP(
            n_components=2,
            n_neighbors=min(int(n_neighbors), len(kept) - 1),
            min_dist=min_dist,
            metric=metric,
            random_state=random_state,
            n_jobs=1 if random_state is not None else -1,
        )
    coords = np.asarray(reducer.fit_transform(X[kept]), dtype=np.float64)
    if coords.shape != (len(kept), 2):
        raise ValueError(f"the reducer must return (n, 2) coordinates, got {coords.shape}")
    return coords, kept


def embedding_umap(
    features,
    labels=None,
    class_names: Sequence[str] | None = None,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "euclidean",
    random_state: int | None = 0,
    max_points: int = 5000,
    reducer=None,
    title: str | None = "UMAP of the embedding",
    backend: str = "plotly",
):
    """A 2-D UMAP map of features coloured by label (data: :func:`umap_coords`).

    Parameters
    ----------
    features : (N, F) float (e.g. tangent features :func:`hierarchy.tangent_features`)
    labels : (N,) int or str, optional; class_names names integer labels
    backend : {"plotly", "matplotlib"}
    """
    _check_backend(backend)
    coords, kept = umap_coords(
        features,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        metric=metric,
        random_state=random_state,
        max_points=max_points,
        reducer=reducer,
    )
    lab = None if labels is None else _to_numpy(labels, "labels").reshape(-1)[kept]
    groups = _label_groups(lab, len(kept), class_names)
    if backend == "plotly":
        fig = go.Figure()
        for name, idx, col in groups:
            fig.add_trace(
                go.Scattergl(
                    x=coords[idx, 0],
                    y=coords[idx, 1],
                    mode="markers",
                    marker={"size": 4, "color": col},
                    name=name or "points",
                    showlegend=name is not None,
                )
            )
        fig.update_layout(
            title=title,
            width=680,
            height=560,
            template="plotly_white",
            xaxis={"visible": False},
            yaxis={"visible": False},
            legend={"itemsizing": "constant"},  # 4-px points, readable legend markers
        )
        return fig
    fig = Figure(figsize=(7.0, 5.6), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    for name, idx, col in groups:
        ax.scatter(coords[idx, 0], coords[idx, 1], s=4, color=col, label=name)
    ax.set_xticks([])
    ax.set_yticks([])
    if labels is not None:
        _mpl_outside_legend(fig, ax, markerscale=3)
    if title:
        ax.set_title(title, fontsize=11)
    return fig


if _in_kernel() and not os.environ.get("PLOTLY_RENDERER"):
    use_notebook_renderer()
