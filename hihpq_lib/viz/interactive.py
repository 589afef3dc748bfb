"""Interaction: ipywidgets sliders, plotly frame sliders (no kernel needed), the explorers of
notebooks 01 and 03, and the notebook renderer (plotly JSON plus offline HTML).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
import torch

from hihpq_lib.geometry import lorentz as L
from hihpq_lib.viz.codebooks import codebook_voronoi
from hihpq_lib.viz.hyperbolic import hyperboloid_and_disk
from hihpq_lib.viz.style import _to_tensor

__all__ = [
    "slider_figure",
    "slider_frames",
    "curvature_figure",
    "curvature_explorer",
    "voronoi_figure",
    "voronoi_explorer",
    "RENDERER",
    "use_notebook_renderer",
]


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
    (``make book``) and in slides, with no Python running. Each frame carries its title
    and its annotations (subplot titles included), so text that describes one frame
    changes with it.

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
    # each frame carries its own title and annotations (e.g. subplot titles that say
    # something true of that frame only): without them the first frame's would stay
    fig.frames = [
        go.Frame(
            data=f.data,
            layout={"title": f.layout.title, "annotations": f.layout.annotations},
            name=str(i),
        )
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


#: What the subtitle of :func:`voronoi_figure` says, by what the slider moves.
_VORONOI_SUBTITLE = {
    "temperature": "the bright bands between cells shrink as T grows",
    "curvature": "as c grows the codewords move toward the rim, where cells look smaller than they are",
    "both": "the bright bands shrink as T grows; a larger c moves everything toward the rim",
}


def voronoi_figure(
    tangent_codebook,
    temperature: float,
    c: float,
    *,
    points_tangent=None,
    resolution: int = 200,
    vary: str = "both",
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
    vary : {"both", "temperature", "curvature"}: what a slider moves, which the title
        names first and its subtitle explains (``"both"``: two sliders)
    backend : {"plotly", "matplotlib"}
    """
    if not c > 0:
        raise ValueError(f"c must be positive (c = 1/k), got {c!r}")
    if vary not in _VORONOI_SUBTITLE:
        raise ValueError(f"vary must be one of {sorted(_VORONOI_SUBTITLE)}, got {vary!r}")
    k = 1.0 / float(c)
    cw = L.expmap0(L.lift(_to_tensor(tangent_codebook, "tangent_codebook").double()), k=k)
    pts = None
    if points_tangent is not None:
        pts = L.expmap0(L.lift(_to_tensor(points_tangent, "points_tangent").double()), k=k)
    moving = f"c = {c:.2g}, T = {temperature:.2g}"
    if vary != "curvature":
        moving = f"T = {temperature:.2g}, c = {c:.2g}"
    title = (
        f"{moving}: entropy of the soft assignment<br>"
        f"<sup>dark = certain; {_VORONOI_SUBTITLE[vary]}</sup>"
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
            tangent_codebook,
            t,
            cc,
            points_tangent=points_tangent,
            resolution=resolution,
            vary=vary,  # the title names what the slider moves, the subtitle what it does
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
