"""Codebooks on the disk: Voronoi cells of one codebook and the codewords of every subspace."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from plotly.subplots import make_subplots

from hihpq_lib.geometry import lorentz as L
from hihpq_lib.utils.arrays import to_numpy
from hihpq_lib.viz.hyperbolic import _check_on_hyperboloid, poincare_coords
from hihpq_lib.viz.style import (
    _check_backend,
    _circle,
    _label_groups,
    _mpl_disk_axes,
    _mpl_outside_legend,
    _plotly_disk_axes,
    _to_numpy,
    _to_tensor,
    palette,
)

__all__ = ["voronoi_data", "codebook_voronoi", "subspace_disk_data", "subspace_codewords_disks"]


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
    cells[inside] = to_numpy(cells_in)
    max_prob = np.full(inside.shape, np.nan)
    max_prob[inside] = to_numpy(prob.max(dim=1).values)
    entropy = np.full(inside.shape, np.nan)
    entropy[inside] = to_numpy(entropy_in)
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
        "grid_points": to_numpy(pts),
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
#: The ``radius`` options of :func:`subspace_disk_data`.
_RADIUS = ("true", "scaled", "projected")


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

    * ``"true"`` (default): each point keeps its **true** ball norm (its true hyperbolic
      distance from the origin, :math:`\|p\| = \tanh(d_k(o, x)/2\sqrt k)`) and only its
      direction comes from the projection. Exact radii, but features clipped to one
      tangent norm (HiHPQ clips them all to ``clip_r``) then all land on one thin ring,
      where the colours of the classes hide each other: use ``"scaled"`` for them.
    * ``"scaled"``: the plain projection, then each group (codewords, points,
      soft points) magnified by one factor per subspace (``scale``) so that its farthest
      member sits at its **true** radius. Within a group the picture is an exact linear
      view (relative positions, hence clusters, are kept); across groups the outer radii
      are true. Without the magnification, vectors spread evenly over :math:`d`
      dimensions (e.g. random codewords) keep only about :math:`2/d` of their squared
      norm and collapse into a blob at the centre, while data concentrated along the
      principal directions keep theirs.
    * ``"projected"``: the plain orthogonal projection (norms only shrink).

    Parameters
    ----------
    codewords : (M, K, d+1) float, subspace ``m`` on :math:`\mathbb H^d_{k_m}`
    k : float or (M,) float, the curvature parameters (e.g. ``ProductLorentz.k``)
    points : (N, M, d+1) float, optional
    soft : (S, M, d+1) float, optional; more points (e.g. soft quantizations) drawn with
        the same projection, which they do not influence
    radius : {"true", "scaled", "projected"}

    Returns
    -------
    dict with ``codewords`` (M, K, 2), ``points`` (N, M, 2) or None, ``soft`` (S, M, 2)
    or None, ``exact`` (bool), ``explained`` (M,) the fraction of squared norm the plain
    projection keeps (1 for d = 2), ``radius`` (the option used), ``norms`` (the true
    ball norms: ``{"codewords": (M, K), "points": (N, M) or None, "soft": (S, M) or
    None}``) and ``scale`` (``{"codewords": (M,), ...}``, the magnification of each
    group drawn; 1 unless ``radius="scaled"`` and d > 2).
    """
    if radius not in _RADIUS:
        raise ValueError(f"radius must be one of {_RADIUS}, got {radius!r}")
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
    norms = {"codewords": np.zeros((M, cw.shape[1]))}
    norms["points"] = None if pts is None else np.zeros((pts.shape[0], M))
    norms["soft"] = None if sft is None else np.zeros((sft.shape[0], M))
    scale = {g: np.ones(M) for g in ("codewords", "points", "soft")}

    def _project(ball, proj, m, group):
        flat = ball @ proj
        if radius == "projected":
            return flat
        full = np.linalg.norm(ball, axis=1, keepdims=True)
        norm2 = np.linalg.norm(flat, axis=1, keepdims=True)
        if radius == "true":
            return flat / np.maximum(norm2, 1e-300) * full
        scale[group][m] = float(full.max() / max(float(norm2.max()), 1e-300))
        return flat * scale[group][m]

    for m in range(M):
        pc = poincare_coords(cw[m], k=kk[m], coords="hyperboloid")
        pp = None if pts is None else poincare_coords(pts[:, m], k=kk[m], coords="hyperboloid")
        ps = None if sft is None else poincare_coords(sft[:, m], k=kk[m], coords="hyperboloid")
        norms["codewords"][m] = np.linalg.norm(pc, axis=1)
        if pp is not None:
            norms["points"][:, m] = np.linalg.norm(pp, axis=1)
        if ps is not None:
            norms["soft"][:, m] = np.linalg.norm(ps, axis=1)
        if d > 2:
            both = pc if pp is None else np.concatenate([pc, pp])
            centred = both - both.mean(0)
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
            proj = vt[:2].T  # (d, 2) orthonormal columns
            tot = float((both**2).sum())
            explained[m] = float(((both @ proj) ** 2).sum()) / tot if tot > 0 else 1.0
            pc = _project(pc, proj, m, "codewords")
            pp = None if pp is None else _project(pp, proj, m, "points")
            ps = None if ps is None else _project(ps, proj, m, "soft")
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
        "norms": norms,
        "scale": scale,
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
    radius : {"true", "scaled", "projected"}: for ``d > 2``, every point at its true
        distance from the centre and only its direction projected (default; features
        clipped to one norm then form a thin ring), the 2-D PCA view with each group
        magnified to its true outer radius (readable classes for clipped features), or
        the plain projection; see :func:`subspace_disk_data`.

    Codewords are drawn last, as small black stars with a white edge, so a dense
    codebook stays visible over the data. Dashed circles mark the **true** median disk
    radius of the codewords (black) and of the points (grey). For ``d > 2`` the panel
    titles give the share of squared norm the plain 2-D projection keeps. A caption
    under the panels says how the radii were drawn (the magnification factors) and how
    many points were drawn (the subsample).
    """
    _check_backend(backend)
    n_given = 0 if points is None else len(points)
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
    how = {
        "scaled": "PCA, radially rescaled",
        "true": "PCA directions, true radii",
        "projected": "PCA of the Poincaré ball",
    }[radius]
    title = title or ("Codewords per subspace" + ("" if data["exact"] else f" ({how})"))
    caption = _disk_caption(data, n_given)
    groups = _label_groups(point_labels, 0 if pt is None else pt.shape[0])
    rings = []  # (m, radius, colour, name): the true median radii
    for m in range(M):
        rings.append((m, float(np.median(data["norms"]["codewords"][m])), "black", "codewords"))
        if pt is not None:
            rings.append((m, float(np.median(data["norms"]["points"][:, m])), "grey", "points"))
    if backend == "plotly":
        fig = make_subplots(
            rows=nrow, cols=ncol, subplot_titles=[n.replace(", PCA", "<br>PCA") for n in names]
        )
        fig.update_annotations(font_size=12)  # the panel titles: side by side, no overlap
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
                            marker={"size": 4, "color": col, "opacity": 0.6},
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
                            name=f"true median radius: {what}",
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
        fig.add_annotation(
            text=caption,
            xref="paper",
            yref="paper",
            x=0.0,
            y=0.0,
            yshift=-12,
            yanchor="top",
            xanchor="left",
            align="left",
            showarrow=False,
            font={"size": 11, "color": "#444"},
        )
        fig.update_layout(
            title=title,
            width=260 * ncol + 160,
            height=max(
                260 * nrow + 120, 19 * len({tr.name for tr in fig.data if tr.showlegend}) + 200
            ),
            margin={"b": 80},
            template="plotly_white",
            # one entry per class, ring and marker kind: no gaps, so it fits beside a row
            legend={"tracegroupgap": 0, "font": {"size": 11}, "itemsizing": "constant"},
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
                           label=f"true median radius: {what}")
                )  # fmt: skip
        ax.scatter(
            cw[m, :, 0], cw[m, :, 1], s=22, color="black", marker="*", edgecolors="white",
            linewidths=0.3, zorder=3, label="codewords",
        )  # fmt: skip
        if m == 0:
            _mpl_outside_legend(fig, ax, markerscale=2)
    fig.suptitle(title, fontsize=11)
    fig.supxlabel(caption.replace("<br>", "\n"), fontsize=8, color="#444")
    return fig


def _disk_caption(data: dict[str, Any], n_given: int) -> str:
    """What :func:`subspace_codewords_disks` did to the radii and how many points it drew.

    Lines separated by ``<br>`` (plotly; the matplotlib twin turns them into newlines).
    """
    if data["exact"]:
        how = "Exact Poincaré disks (d = 2)"
    elif data["radius"] == "true":
        how = "2-D PCA directions, every point at its true radius"
    elif data["radius"] == "projected":
        how = "Plain 2-D PCA of each Poincaré ball (radii only shrink)"
    else:
        parts = []
        for group in ("codewords", "points", "soft"):
            if data[group] is None:
                continue
            f = data["scale"][group]
            span = (
                f"×{f.min():.2f}" if f.max() - f.min() < 0.005 else f"×{f.min():.2f}–{f.max():.2f}"
            )
            parts.append(f"{'soft quantizations' if group == 'soft' else group} {span}")
        how = (
            "Radial rescale: the 2-D PCA view, each group magnified so that its farthest "
            f"member sits at its true radius<br>({', '.join(parts)})"
        )
    lines = [how + "; dashed circles: true median radii."]
    if data["points"] is not None:
        n = data["points"].shape[0]
        drawn = f"{n:,} points drawn" + (f", a random {n:,} of {n_given:,}" if n < n_given else "")
        lines.append(drawn + ".")
    return "<br>".join(lines)
