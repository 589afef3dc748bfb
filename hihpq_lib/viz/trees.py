"""Trees and hierarchies: embedded trees with their geodesics, seed strips, dendrograms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Patch
from plotly.subplots import make_subplots

from hihpq_lib.geometry import lorentz as L
from hihpq_lib.utils.arrays import to_numpy
from hihpq_lib.viz.hyperbolic import poincare_coords
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

__all__ = ["geodesic_segment", "tree_embeddings", "dendrogram_vs_labels"]


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
    node_names=None,
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
        origin, i.e. :func:`~hihpq_lib.geometry.lorentz.logmap0` of every node and of every
        point of the edges: each node sits at its **true** hyperbolic distance from the
        origin, in its true direction, so the depths spread out evenly; dotted circles
        mark each depth's median distance. Distances between nodes are only exact
        along the rays from the origin.
    node_names : optional (n,) names shown when hovering over a node (plotly)
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
    if node_names is not None and len(node_names) != n:
        raise ValueError(f"node_names must have one name per node ({n}), got {len(node_names)}")
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
            return to_numpy(L.logmap0(x)[..., 1:])
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
                        text=None if node_names is None else [str(node_names[i]) for i in idx],
                        hoverinfo=None if node_names is None else "text+name",
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
    # explicit ranges with room for a whole marker beyond the extreme values: autoscaled
    # axes clipped the highest and lowest seeds' markers
    ys = np.array([values[n] for n in names], dtype=np.float64)
    span = float(np.nanmax(ys) - np.nanmin(ys))
    pad = max(0.12 * span, 0.02 * max(abs(float(np.nanmax(ys))), 1e-3))
    yrange = [float(np.nanmin(ys)) - pad, float(np.nanmax(ys)) + pad]
    xrange = [-0.5, len(names) - 0.5]
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
                    cliponaxis=False,
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
            yaxis={"title": ylabel, "range": yrange},
            xaxis={
                "tickmode": "array",
                "tickvals": list(range(len(names))),
                "ticktext": names,
                "range": xrange,
            },
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
            clip_on=False,
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
    ax.set_xlim(*xrange)
    ax.set_ylim(*yrange)
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
