"""Pictures of the hyperbolic plane: the Poincaré disk, the hyperboloid beside it, geodesic grids.

Every point drawn on a disk goes through :func:`poincare_coords` (norms strictly below 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from matplotlib.figure import Figure
from plotly.subplots import make_subplots

from hihpq_lib.geometry import lorentz as L
from hihpq_lib.utils.arrays import to_numpy
from hihpq_lib.viz.style import (
    _DISK_MAX,
    _check_backend,
    _circle,
    _label_groups,
    _mpl_disk_axes,
    _mpl_outside_legend,
    _plotly_disk_axes,
    _to_tensor,
    palette,
)

__all__ = [
    "poincare_coords",
    "poincare_disk",
    "hyperboloid_data",
    "hyperboloid_and_disk",
    "geodesic_grid_data",
    "geodesic_grid",
]


# ---------------------------------------------------------------------- Poincaré coordinates
def poincare_coords(points, *, k=1.0, coords: str = "auto") -> np.ndarray:
    r"""The one helper through which every point reaches a Poincaré disk or ball.

    Hyperboloid points are mapped with :func:`hihpq_lib.geometry.lorentz.to_poincare`

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
    >>> from hihpq_lib.geometry import lorentz
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
    out = to_numpy(p).copy()
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
        norms = to_numpy(x[:, 1:].norm(dim=-1))
        far = float(np.quantile(norms, 0.9)) if len(norms) else 0.0
        radius = max(2.0 * sk, 1.15 * far)
    zmax = math.sqrt(k + radius**2) if zmax is None else float(zmax)
    r = np.linspace(0.0, radius, resolution)
    t = np.linspace(0.0, 2.0 * math.pi, resolution)
    rr, tt = np.meshgrid(r, t)
    x0 = np.sqrt(k + rr**2)
    surface = (np.where(x0 <= zmax, x0, np.nan), rr * np.cos(tt), rr * np.sin(tt))
    xn = to_numpy(x)

    def visible(a: np.ndarray) -> np.ndarray:
        return (np.linalg.norm(a[:, 1:], axis=1) <= radius * (1 + 1e-9)) & (a[:, 0] <= zmax)

    curves_3d = []
    for c in cs:
        cn = to_numpy(c).copy()
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
