"""Figures: types for both backends, the Poincaré helper's norms, and the data behind them.

Runs headless: matplotlib on Agg (conftest), plotly figures are built, never shown.
"""

import io
import math

import matplotlib.pyplot as plt
import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

from hihpq_lib import viz
from hihpq_lib.geometry import lorentz as L

FIG_TYPE = {"plotly": go.Figure, "matplotlib": Figure}


def _render(fig):
    """Draw a figure fully (plotly: serialise; matplotlib: rasterise) to catch draw errors."""
    if isinstance(fig, go.Figure):
        assert fig.to_json()
    else:
        fig.savefig(io.BytesIO(), format="png", dpi=40)


def _points(n=12, k=1.0, seed=0, scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    v = scale * torch.randn(n, 2, generator=g, dtype=dtype)
    return L.expmap0(L.lift(v), k=k)


@pytest.fixture(autouse=True)
def _no_pyplot_leak():
    """viz builds matplotlib figures without pyplot: no global figure stays open."""
    before = set(plt.get_fignums())
    yield
    assert set(plt.get_fignums()) == before


# ---------------------------------------------------------------------- Poincaré helper
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [0.01, 1.0, 100.0])
def test_poincare_coords_norms_below_one_even_for_far_points(dtype, k):
    radii = torch.tensor([1e-8, 1.0, 10.0, 40.0, 300.0, 1e3], dtype=dtype)
    v = radii[:, None] * torch.tensor([[0.6, 0.8]], dtype=dtype) * math.sqrt(k)
    x = L.expmap0(L.lift(v), k=k)
    p = viz.poincare_coords(x, k=k)
    assert p.dtype == np.float64 and p.shape == (6, 2)
    norms = np.linalg.norm(p, axis=1)
    assert np.all(np.isfinite(norms)) and np.all(norms < 1.0)
    assert norms[-1] > 0.999  # far points really are drawn near the rim


def test_poincare_coords_agrees_with_library_and_round_trips():
    x = _points(30, k=0.5, scale=1.0)
    p = viz.poincare_coords(x, k=0.5)
    np.testing.assert_allclose(p, L.to_poincare(x, k=0.5).numpy(), rtol=1e-12, atol=1e-12)
    back = L.from_poincare(torch.from_numpy(p), k=0.5)
    torch.testing.assert_close(back, x, rtol=1e-9, atol=1e-9)
    # Poincaré coordinates pass through unchanged; numpy input works too
    np.testing.assert_array_equal(viz.poincare_coords(p), p)


def test_poincare_coords_checks_input():
    with pytest.raises(ValueError, match="norm < 1"):
        viz.poincare_coords(np.array([[0.6, 0.8]]))
    with pytest.raises(ValueError, match="coords='hyperboloid'"):
        viz.poincare_coords(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        viz.poincare_coords(np.array([[np.nan, 0.0]]))
    # named hyperboloid points of H^3 go through to_poincare
    x3 = L.expmap0(L.lift(torch.randn(5, 3, dtype=torch.float64)))
    assert viz.poincare_coords(x3, coords="hyperboloid").shape == (5, 3)


# ---------------------------------------------------------------------- figure types
@pytest.mark.parametrize("backend", viz.BACKENDS)
def test_every_twin_returns_its_backend_type(backend):
    x = _points(15)
    geo = L.geodesic0(torch.tensor([1.0, 0.5], dtype=torch.float64), torch.linspace(0, 2, 20))
    km = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    cw = L.expmap0(L.lift(torch.randn(3, 8, 4, dtype=torch.float64)), k=km.view(3, 1, 1))
    pts = L.expmap0(L.lift(torch.randn(40, 3, 4, dtype=torch.float64)), k=km.view(3, 1))
    feats = np.random.default_rng(0).normal(size=(60, 8))
    figs = [
        viz.hyperboloid_and_disk(x, 1.0, labels=np.arange(15) % 2, curves=[geo], backend=backend),
        viz.poincare_disk(x, np.arange(15) % 3, class_names=["a", "b", "c"], backend=backend),
        viz.poincare_disk(viz.poincare_coords(x), curves=[geo], backend=backend),
        viz.geodesic_grid(0.5, backend=backend),
        viz.codebook_voronoi(x[:4], resolution=40, background="entropy", points=x, backend=backend),
        viz.codebook_voronoi(x[:4], resolution=40, background="cells", backend=backend),
        viz.codebook_voronoi(x[:4], resolution=40, background="max_prob", backend=backend),
        viz.subspace_codewords_disks(cw, km, pts, point_labels=np.arange(40) % 2, backend=backend),
        viz.subspace_codewords_disks(cw[:, :, :3], 1.0, backend=backend),
        viz.pr_curve([np.linspace(1, 0.2, 9)] * 2, [np.linspace(0, 1, 9)] * 2, ["a", "b"], backend=backend),
        viz.precision_at_k_plot(np.arange(1, 11), np.linspace(1, 0.5, 10), "m", backend=backend),
        viz.embedding_umap(feats, np.arange(60) % 4, reducer=PCA(2), backend=backend),
        viz.line_plot(np.logspace(-2, 2, 5), [np.arange(5.0)] * 2, ["a", "b"], log_x=True, backend=backend),
        viz.tree_embeddings([-1, 0, 0, 1], 0.3 * np.eye(4, 2), np.eye(4, 2), backend=backend),
    ]  # fmt: skip
    for fig in figs:
        assert isinstance(fig, FIG_TYPE[backend])
        _render(fig)


def test_bad_backend_and_background_are_rejected():
    with pytest.raises(ValueError, match="backend"):
        viz.geodesic_grid(backend="bokeh")
    with pytest.raises(ValueError, match="background"):
        viz.codebook_voronoi(_points(3), background="voronoi")


# ---------------------------------------------------------------------- hyperboloid data
def test_hyperboloid_projection_lines_pass_through_the_pole():
    k = 2.0
    data = viz.hyperboloid_data(_points(10, k=k), k)
    x, plane, pole = data["points"], data["plane"], data["pole"]
    np.testing.assert_allclose(plane[:, 0], 0.0)
    np.testing.assert_allclose(plane[:, 1:], math.sqrt(k) * data["disk"], atol=1e-12)
    # pole, plane point and sheet point are collinear
    a, b = x - pole, plane - pole
    cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0], a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1]
    np.testing.assert_allclose(np.stack(cross), 0.0, atol=1e-9)
    x0, x1, x2 = data["surface"]
    np.testing.assert_allclose(x0**2 - x1**2 - x2**2, k)


def test_hyperboloid_data_fixed_extent_hides_far_points_in_3d_only():
    x = L.expmap0(L.lift(torch.tensor([[0.5, 0.0], [6.0, 0.0]])))
    geo = L.geodesic0(torch.tensor([1.0, 0.0]), torch.linspace(0, 6, 30))
    data = viz.hyperboloid_data(x, 1.0, curves=[geo], radius=3.0, zmax=4.0)
    assert data["in_view"].tolist() == [True, False]
    assert data["disk"].shape == (2, 2)  # the disk view keeps every point
    assert np.isnan(data["curves"][0][-1]).all() and not np.isnan(data["curves"][0][0]).any()
    assert np.nanmax(data["surface"][0]) <= 4.0
    fig = viz.hyperboloid_and_disk(x, 1.0, radius=3.0, zmax=4.0, backend="matplotlib")
    assert "1 point beyond" in fig.axes[0].get_title()


def test_hyperboloid_data_rejects_points_off_the_sheet():
    with pytest.raises(ValueError, match="upper sheet"):
        viz.hyperboloid_data(np.array([[1.0, 1.0, 1.0]]), 1.0)
    with pytest.raises(ValueError, match="upper sheet"):
        viz.hyperboloid_data(_points(3, k=1.0), 4.0)  # right points, wrong k


# ---------------------------------------------------------------------- geodesic grid
@pytest.mark.parametrize("k", [0.5, 1.0, 3.0])
def test_geodesic_grid_circles_and_arcs_are_what_they_claim(k):
    data = viz.geodesic_grid_data(k, radii=[0.5, 1.5, 3.0], n_rays=4, n_arcs=2, samples=50)
    o = L.origin(2, k=k, dtype=torch.float64)
    for r, rd, circ in zip(data["radii"], data["disk_radius"], data["circles"]):
        np.testing.assert_allclose(np.linalg.norm(circ, axis=1), rd, rtol=1e-9)
        d = L.dist(L.from_poincare(torch.from_numpy(circ), k=k), o, k=k)
        torch.testing.assert_close(d, torch.full_like(d, r), rtol=1e-6, atol=1e-6)
    radii = data["disk_radius"]
    assert np.all(np.diff(radii) > 0) and radii[-1] < 1.0
    for arc in data["arcs"]:  # every arc point lies on the geodesic between its ends
        pts = L.from_poincare(torch.from_numpy(arc), k=k)
        total = L.dist(pts[0], pts[-1], k=k)
        via = L.dist(pts[0], pts, k=k) + L.dist(pts, pts[-1], k=k)
        torch.testing.assert_close(via, total.expand_as(via), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------- Voronoi
@pytest.mark.parametrize("k", [0.3, 1.0, 4.0])
def test_voronoi_cells_equal_brute_force_argmin(k):
    g = torch.Generator().manual_seed(1)
    cw = L.expmap0(L.lift(torch.randn(7, 2, generator=g, dtype=torch.float64)), k=k)
    data = viz.voronoi_data(cw, k, temperature=2.0, resolution=41)
    inside_cells = data["cells"][data["inside"]]
    assert np.all(data["cells"][~data["inside"]] == -1)
    rng = np.random.default_rng(0)
    for i in rng.choice(len(inside_cells), 40, replace=False):
        x = torch.from_numpy(data["grid_disk"][i])
        xh = L.from_poincare(x, k=k)
        brute = min(range(7), key=lambda j: float(L.dist(xh, cw[j], k=k)))
        assert inside_cells[i] == brute
    np.testing.assert_allclose(data["codewords_disk"], L.to_poincare(cw, k=k).numpy())


def test_voronoi_soft_assignment_hardens_with_temperature():
    cw = _points(5, seed=2)
    soft = viz.voronoi_data(cw, temperature=0.05, resolution=31)
    hard = viz.voronoi_data(cw, temperature=50.0, resolution=31)
    for d in (soft, hard):
        ent, mp = d["entropy"][d["inside"]], d["max_prob"][d["inside"]]
        assert np.all(ent >= -1e-12) and np.all(ent <= math.log(5) + 1e-9)
        assert np.all(mp >= 1 / 5 - 1e-12) and np.all(mp <= 1 + 1e-12)
    assert np.nanmean(hard["entropy"]) < np.nanmean(soft["entropy"])
    np.testing.assert_array_equal(soft["cells"], hard["cells"])  # hard cells ignore T


# ---------------------------------------------------------------------- product subspaces
def test_subspace_disk_data_exact_for_d2_and_inside_for_d_gt_2():
    km = torch.tensor([0.5, 2.0], dtype=torch.float64)
    cw2 = L.expmap0(L.lift(torch.randn(2, 6, 2, dtype=torch.float64)), k=km.view(2, 1, 1))
    d2 = viz.subspace_disk_data(cw2, km)
    assert d2["exact"]
    for m in range(2):
        np.testing.assert_allclose(d2["codewords"][m], L.to_poincare(cw2[m], k=km[m]).numpy())
    cw5 = L.expmap0(L.lift(5 * torch.randn(2, 6, 5, dtype=torch.float64)), k=km.view(2, 1, 1))
    d5 = viz.subspace_disk_data(cw5, km)
    assert not d5["exact"] and d5["codewords"].shape == (2, 6, 2)
    assert np.all(np.linalg.norm(d5["codewords"], axis=-1) < 1.0)
    assert np.all((d5["explained"] > 0) & (d5["explained"] <= 1 + 1e-12))


# ---------------------------------------------------------------------- matplotlib-only
def test_dendrogram_vs_labels_exact_and_anchor_linkages():
    from hihpq_lib.learning.hierarchy import TangentWardHierarchy

    rng = np.random.default_rng(0)
    feats = np.concatenate([rng.normal(c, 0.3, size=(30, 4)) for c in (0, 3, 6)])
    lab = np.repeat([0, 1, 2], 30)
    names, sup = ["cat", "dog", "car"], {"cat": "animal", "dog": "animal", "car": "vehicle"}
    exact = TangentWardHierarchy((6, 3), method="exact").fit(feats)
    fig = viz.dendrogram_vs_labels(exact.linkage_, lab, names, sup, p=12)
    assert isinstance(fig, Figure)
    _render(fig)
    scal = TangentWardHierarchy((6, 3), method="scalable", n_anchors=20).fit(feats)
    fig = viz.dendrogram_vs_labels(scal.linkage_, lab, names, point_of=scal.anchor_labels_)
    _render(fig)
    with pytest.raises(ValueError, match="point_of"):
        viz.dendrogram_vs_labels(scal.linkage_, lab, names)


def test_retrieval_grid_frames_hits_green_and_misses_red():
    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, size=(2, 6, 6, 3), dtype=np.uint8)
    r = rng.integers(0, 256, size=(2, 3, 6, 6, 3), dtype=np.uint8)
    hits = np.array([[True, False, True], [False, False, True]])
    fig = viz.retrieval_grid(q, r, hits, query_titles=["q0", "q1"])
    assert isinstance(fig, Figure)
    axes = fig.axes
    assert len(axes) == 2 * 4
    for i in range(2):
        for j in range(3):
            edge = axes[i * 4 + j + 1].spines["top"].get_edgecolor()
            expected = (0.173, 0.627, 0.173) if hits[i, j] else (0.839, 0.153, 0.157)
            np.testing.assert_allclose(edge[:3], expected, atol=2e-3)
    _render(fig)
    grey = viz.retrieval_grid(q[..., 0], r[..., 0], hits)  # (Q, H, W) grey images
    _render(grey)
    with pytest.raises(TypeError, match="uint8"):
        viz.retrieval_grid(q.astype(float), r, hits)
    with pytest.raises(ValueError, match="hits"):
        viz.retrieval_grid(q, r, hits[:, :2])


def test_curves_check_lengths():
    with pytest.raises(ValueError, match="one recall"):
        viz.pr_curve([np.ones(3)] * 2, [np.ones(3)] * 2, ["only one"])
    with pytest.raises(ValueError, match="differ"):
        viz.precision_at_k_plot(np.arange(1, 5), np.ones(3), "m")


def test_geodesic_segment_lies_on_the_geodesic():
    a, b = _points(2, k=2.0, seed=3, scale=2.0)
    seg = viz.geodesic_segment(a, b, k=2.0, samples=30)
    torch.testing.assert_close(seg[0], a)
    torch.testing.assert_close(seg[-1], b)
    via = L.dist(a, seg, k=2.0) + L.dist(seg, b, k=2.0)
    torch.testing.assert_close(via, L.dist(a, b, k=2.0).expand(30), rtol=1e-7, atol=1e-7)


def test_tree_embeddings_rejects_a_cycle():
    with pytest.raises(ValueError, match="cycle"):
        viz.tree_embeddings([1, 0], np.zeros((2, 2)), np.zeros((2, 2)), backend="matplotlib")


def test_slider_figure_redraws_in_place_in_its_output_widget():
    ipywidgets = pytest.importorskip("ipywidgets")
    t = ipywidgets.FloatSlider(1.0)
    c = ipywidgets.FloatSlider(2.0)
    calls = []

    def make(t, c):
        calls.append((t, c))
        return go.Figure(go.Scatter(y=[t, c]), layout={"title": f"t = {t}, c = {c}"})

    box = viz.slider_figure(make, t=t, c=c)
    sliders, out = box.children
    assert list(sliders.children) == [t, c] and isinstance(out, ipywidgets.Output)
    (first,) = out.outputs
    assert first["data"]["application/vnd.plotly.v1+json"]["layout"]["title"]["text"] == (
        "t = 1.0, c = 2.0"
    )
    c.value = 3.0
    assert calls == [(1.0, 2.0), (1.0, 3.0)]
    (after,) = out.outputs  # replaced, not appended: one figure in the cell
    plotly_json = after["data"]["application/vnd.plotly.v1+json"]
    assert plotly_json["layout"]["title"]["text"] == "t = 1.0, c = 3.0"
    with pytest.raises(ValueError, match="slider"):
        viz.slider_figure(make)


def test_slider_frames_hold_one_frame_per_value_and_a_slider_that_animates_them():
    def make(v):
        return go.Figure(
            [go.Scatter(y=[0, v], name="a"), go.Scatter(y=[v, 0], name="b")],
            layout={"title": f"v = {v}"},
        )

    fig = viz.slider_frames(make, [0.5, 1.0, 2.0, 4.0], name="v", active=2)
    assert [f.name for f in fig.frames] == ["0", "1", "2", "3"]
    assert fig.layout.title.text == "v = 2.0"  # the active frame is what shows first
    slider = fig.layout.sliders[0]
    assert slider.active == 2 and slider.currentvalue.prefix == "v = "
    assert [s.label for s in slider.steps] == ["0.5", "1", "2", "4"]
    for i, step in enumerate(slider.steps):
        assert step.method == "animate" and list(step.args[0]) == [str(i)]
        assert step.args[1]["frame"]["redraw"] is True
        assert list(fig.frames[i].data[1].y) == [[0.5, 1.0, 2.0, 4.0][i], 0]
    _render(fig)
    with pytest.raises(ValueError, match="same traces"):
        viz.slider_frames(lambda v: go.Figure([go.Scatter(y=[0])] * int(v)), [1, 2], name="n")
    with pytest.raises(ValueError, match="at least 2"):
        viz.slider_frames(make, [1.0], name="v")
    with pytest.raises(TypeError, match="plotly"):
        viz.slider_frames(lambda v: Figure(), [1, 2], name="v")


def test_curvature_explorer_frames_match_the_library_geometry():
    g = torch.Generator().manual_seed(0)
    tangent = torch.randn(9, 2, generator=g, dtype=torch.float64)
    labels = torch.arange(9) % 3
    cs = [0.25, 1.0, 4.0]
    fig = viz.curvature_explorer(tangent, cs, labels=labels, geodesic=[0.6, 0.8])
    assert len(fig.frames) == 3
    names = [tr.name for tr in fig.data]
    assert (
        "geodesic" in names
        and "class 0" in names
        and not any(n is None or n.startswith("trace") for n in names)
    )
    disk_index = [
        i for i, tr in enumerate(fig.data) if tr.type == "scatter" and tr.name == "class 0"
    ][0]
    for c, frame in zip(cs, fig.frames):
        k = 1.0 / c
        pts = L.expmap0(L.lift(tangent), k=k)
        expected = L.to_poincare(pts, k=k)[labels == 0].numpy()
        disk = frame.data[disk_index]
        np.testing.assert_allclose(np.c_[disk.x, disk.y], expected, atol=1e-12)
        d01 = L.dist(pts[0], pts[1], k=k).item()
        assert f"{d01:.2f} apart" in frame.layout.title.text
    # more curvature, farther toward the rim
    radius = [np.hypot(f.data[disk_index].x, f.data[disk_index].y).mean() for f in fig.frames]
    assert radius[0] < radius[1] < radius[2] < 1.0
    with pytest.raises(ValueError, match="positive"):
        viz.curvature_figure(tangent, 0.0)


def test_voronoi_explorer_frames_soften_with_temperature_and_follow_curvature():
    tangent_codebook = torch.tensor([[1.0, 0.0], [-0.5, 0.8], [-0.5, -0.8]], dtype=torch.float64)
    temps = [0.3, 1.0, 10.0]
    fig = viz.voronoi_explorer(tangent_codebook, temps, resolution=40)
    entropy = [np.nanmean(np.asarray(f.data[0].z, dtype=float)) for f in fig.frames]
    assert entropy[0] > entropy[1] > entropy[2]  # harder assignment, less entropy
    ref = viz.voronoi_data(
        L.expmap0(L.lift(tangent_codebook), k=1.0), 1.0, temperature=10.0, resolution=40
    )
    np.testing.assert_allclose(
        np.asarray(fig.frames[2].data[0].z, dtype=float), ref["entropy"], rtol=1e-6, atol=1e-6
    )
    fig_c = viz.voronoi_explorer(tangent_codebook, [0.5, 2.0], vary="curvature", resolution=40)
    cw = [f.data[-1] for f in fig_c.frames]  # the codewords trace
    assert np.hypot(cw[0].x, cw[0].y).mean() < np.hypot(cw[1].x, cw[1].y).mean()
    assert "c = 2" in fig_c.frames[1].layout.title.text
    with pytest.raises(ValueError, match="vary"):
        viz.voronoi_explorer(tangent_codebook, temps, vary="k")


def test_notebook_renderer_gives_plotly_json_and_offline_html():
    import plotly.io as pio

    before = pio.renderers.default
    try:
        assert viz.use_notebook_renderer() == "plotly_mimetype+hihpq_notebook"
        bundle = pio.renderers._build_mime_bundle(go.Figure(go.Scatter(y=[1, 2])).to_dict())
    finally:
        pio.renderers.default = before
    assert "application/vnd.plotly.v1+json" in bundle
    html = bundle["text/html"]
    assert "Plotly.newPlot" in html
    assert "Plotly.animate" not in html  # a figure with frames does not play on load
    assert "cdn" not in html.lower() and "mathjax" not in html.lower()  # nothing to fetch
    assert len(html) < 20_000  # plotly.js is not repeated in every figure


def test_label_groups_name_unnamed_integer_classes():
    fig = viz.poincare_disk(_points(6), [0, 1, 2, 0, 1, 2])
    assert [tr.name for tr in fig.data if tr.showlegend] == ["class 0", "class 1", "class 2"]
    assert viz.palette(3) == viz.OKABE_ITO[:3]


# ---------------------------------------------------------------------- UMAP
def test_umap_coords_subsample_and_reducer():
    feats = np.random.default_rng(0).normal(size=(300, 6))
    coords, kept = viz.umap_coords(feats, max_points=100, reducer=PCA(2))
    assert coords.shape == (100, 2) and kept.shape == (100,)
    assert np.all(np.diff(kept) > 0)


@pytest.mark.slow
def test_embedding_umap_with_umap_learn():
    """The real UMAP path (about 10 s of one-off numba compilation)."""
    rng = np.random.default_rng(0)
    feats = np.concatenate([rng.normal(c, 0.2, size=(40, 5)) for c in (0, 4)])
    coords, kept = viz.umap_coords(feats, n_neighbors=8)
    assert coords.shape == (80, 2) and np.all(np.isfinite(coords))
    # two well-separated blobs stay separated
    a, b = coords[:40].mean(0), coords[40:].mean(0)
    assert np.linalg.norm(a - b) > coords[:40].std(0).max()
    fig = viz.embedding_umap(feats, np.repeat([0, 1], 40), ["a", "b"], n_neighbors=8)
    assert isinstance(fig, go.Figure)


def test_subspace_disk_data_true_radius_keeps_ball_norms_and_direction():
    km = torch.tensor([0.5, 2.0], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    cw = L.expmap0(
        L.lift(torch.randn(2, 30, 16, generator=gen, dtype=torch.float64)), k=km.view(2, 1, 1)
    )
    pts = L.expmap0(
        L.lift(torch.randn(50, 2, 16, generator=gen, dtype=torch.float64)), k=km.view(2, 1)
    )
    true = viz.subspace_disk_data(cw, km, pts, soft=pts[:5], radius="true")
    flat = viz.subspace_disk_data(cw, km, pts, soft=pts[:5], radius="projected")
    for m in range(2):
        ball = L.to_poincare(cw[m], k=km[m]).numpy()
        np.testing.assert_allclose(
            np.linalg.norm(true["codewords"][m], axis=1), np.linalg.norm(ball, axis=1), rtol=1e-9
        )
        # same direction as the plain projection, which only shrinks norms
        a, b = true["codewords"][m], flat["codewords"][m]
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        np.testing.assert_allclose(cos, 1.0, atol=1e-9)
        assert np.all(np.linalg.norm(b, axis=1) <= np.linalg.norm(a, axis=1) + 1e-12)
    np.testing.assert_allclose(true["soft"], true["points"][:5])  # same projection
    with pytest.raises(ValueError, match="radius"):
        viz.subspace_disk_data(cw, km, radius="log")


def test_tree_embeddings_distance_view_puts_nodes_at_their_hyperbolic_distance():
    parent = [-1, 0, 0, 1, 1, 2]
    xy = np.array([[0, 0], [0.5, 0], [-0.5, 0.1], [0.8, 0.1], [0.8, -0.1], [-0.85, 0.2]])
    fig = viz.tree_embeddings(parent, xy, xy, radial="distance", backend="matplotlib")
    ax = fig.axes[0]
    plotted = np.concatenate([c.get_offsets() for c in ax.collections])
    expected = L.logmap0(L.from_poincare(torch.as_tensor(xy, dtype=torch.float64)))[:, 1:].numpy()
    for row in expected:  # every node appears at its log-map position
        assert np.min(np.linalg.norm(plotted - row, axis=1)) < 1e-9
    assert isinstance(viz.tree_embeddings(parent, xy, xy, radial="distance"), go.Figure)
    with pytest.raises(ValueError, match="radial"):
        viz.tree_embeddings(parent, xy, xy, radial="klein")


def test_seed_strip_draws_markers_only_one_per_seed_and_method():
    vals = {"a": [0.5, 0.6, 0.55], "b": [0.4, 0.5, 0.45]}
    fig = viz.seed_strip(vals, [0, 1, 2], backend="matplotlib")
    ax = fig.axes[0]
    assert len(ax.collections) == 3 and all(len(c.get_offsets()) == 2 for c in ax.collections)
    assert [len(line.get_xdata()) for line in ax.lines] == [2, 2]  # only the two mean bars
    pf = viz.seed_strip(vals, [0, 1, 2])
    assert all(t.mode == "markers" for t in pf.data if t.name.startswith("seed"))
    with pytest.raises(ValueError, match="one per seed"):
        viz.seed_strip({"a": [0.1]}, [0, 1])


def test_tree_embeddings_hover_names():
    parent, xy = [-1, 0, 0], 0.3 * np.eye(3, 2)
    fig = viz.tree_embeddings(parent, xy, xy, node_names=["root", "a", "b"])
    shown = {t for tr in fig.data if tr.mode == "markers" and tr.text for t in tr.text}
    assert shown == {"root", "a", "b"}
    with pytest.raises(ValueError, match="one name per node"):
        viz.tree_embeddings(parent, xy, xy, node_names=["root"])


# ---------------------------------------------------------------------- issue 27: figures
def test_curvature_explorer_says_per_frame_how_many_points_lie_beyond_the_sheet():
    """The subplot title of each frame counts that frame's hidden points (not frame 0's)."""
    tangent = torch.tensor([[0.3, 0.1], [-0.2, 0.4], [3.0, 0.0]], dtype=torch.float64)
    cs = [0.1, 1.0, 4.0]
    fig = viz.curvature_explorer(tangent, cs)
    texts = []
    for c, frame in zip(cs, fig.frames):
        k = 1.0 / c
        hidden = int(
            (
                ~viz.hyperboloid_data(L.expmap0(L.lift(tangent), k=k), k, radius=4.5, zmax=5.0)[
                    "in_view"
                ]
            ).sum()
        )
        left = frame.layout.annotations[0].text
        assert left.startswith("hyperboloid with the disk below")
        assert ("beyond the drawn sheet" in left) == (hidden > 0), (c, left)
        if hidden:
            assert f"({hidden} point" in left
        texts.append(left)
    assert texts[0] != texts[-1]  # the far point is on the sheet at c = 0.1, beyond it at c = 4
    assert fig.layout.annotations[0].text == texts[1]  # the figure opens on the middle frame


def test_voronoi_explorer_titles_name_what_the_slider_moves():
    cb = torch.tensor([[1.0, 0.0], [-0.5, 0.8], [-0.5, -0.8]], dtype=torch.float64)
    by_c = viz.voronoi_explorer(cb, [0.5, 2.0], vary="curvature", resolution=20)
    by_t = viz.voronoi_explorer(cb, [0.5, 2.0], vary="temperature", resolution=20)
    for frame in by_c.frames:
        title = frame.layout.title.text
        assert title.startswith("c = ") and "c grows" in title and "T grows" not in title
    for frame in by_t.frames:
        title = frame.layout.title.text
        assert title.startswith("T = ") and "T grows" in title and "c grows" not in title
    assert by_c.layout.sliders[0].currentvalue.prefix.startswith("c")
    both = viz.voronoi_figure(cb, 1.0, 1.0, resolution=20).layout.title.text
    assert both.startswith("T = 1, c = 1") and "T grows" in both  # the two live sliders
    with pytest.raises(ValueError, match="vary"):
        viz.voronoi_figure(cb, 1.0, 1.0, vary="k")


def _integer_ticks(fig):
    """The x ticks a figure shows: plotly's linear ticks or matplotlib's tick locations."""
    if isinstance(fig, go.Figure):
        axes = [fig.layout[a] for a in fig.layout if a.startswith("xaxis")]
        return [(a.tickmode, a.tick0, a.dtick) for a in axes]
    fig.canvas.draw()
    return [t for ax in fig.axes for t in ax.get_xticks()]


def test_history_series_puts_the_start_at_epoch_0_and_line_plot_ticks_whole_epochs():
    hist = [{"epoch": e, "curvature": [1.0 + 0.1 * e, 1.0 - 0.1 * e]} for e in (1, 2, 3)]
    ep, c = viz.history_series(hist, "curvature", initial={"curvature": [1.0, 1.0]})
    assert ep.tolist() == [0, 1, 2, 3] and c.shape == (4, 2)
    np.testing.assert_allclose(c[0], [1.0, 1.0])  # the start c = 1 is drawn
    ep_no, _ = viz.history_series(hist, "curvature")
    assert ep_no.tolist() == [1, 2, 3]
    one = [{"epoch": 1, "curvature": [0.9]}]
    assert viz.history_series(one, "curvature", initial={"curvature": [1.0]})[1].shape == (2, 1)
    ev = [{"epoch": 1, "val_map": 0.2}, {"epoch": 2}, {"epoch": 3, "val_map": 0.3}]
    assert np.isnan(viz.history_series(ev, "val_map")[1][1])
    with pytest.raises(ValueError, match="no record"):
        viz.history_series(hist, "loss")
    pf = viz.line_plot(ep, list(c.T), ["a", "b"], integer_x=True)
    assert _integer_ticks(pf) == [("linear", 0, 1)]
    mf = viz.line_plot(ep, list(c.T), ["a", "b"], integer_x=True, backend="matplotlib")
    ticks = _integer_ticks(mf)
    assert ticks and all(float(t).is_integer() for t in ticks)


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
def test_training_history_has_a_metric_axis_a_loss_axis_and_whole_epochs(backend):
    hist = [
        {"epoch": e, "loss": 5.0 - 0.2 * e + (1.0 if e > 3 else 0.0), "contrastive": 5.0 - 0.2 * e}
        for e in range(1, 8)
    ]
    for h in hist:
        h["val_map"] = 0.3 + 0.01 * h["epoch"]
    fig = viz.training_history(hist, selected_epoch=5, backend=backend)
    _render(fig)
    if backend == "plotly":
        on_axis = {tr.name: tr.yaxis for tr in fig.data}
        assert on_axis == {"validation mAP": "y", "contrastive loss": "y2", "total loss": "y2"}
        np.testing.assert_allclose(fig.data[1].y, [h["contrastive"] for h in hist])  # not / 10
        assert {t[0] for t in _integer_ticks(fig)} == {"linear"}
        assert all(float(t[2]).is_integer() and t[2] >= 1 for t in _integer_ticks(fig))
    else:
        top, bottom = fig.axes
        assert [ln.get_label() for ln in top.get_lines()][:1] == ["validation mAP"]
        np.testing.assert_allclose(
            bottom.get_lines()[0].get_ydata(), [h["contrastive"] for h in hist]
        )
        ticks = _integer_ticks(fig)
        assert all(float(t).is_integer() for t in ticks)


def test_subspace_disks_scaled_radius_spreads_clipped_points_and_says_so():
    """Features clipped to one norm form a ring at their true radius; "scaled" shows a view."""
    km = torch.tensor([1.0, 0.5], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(200, 2, 8, generator=gen, dtype=torch.float64)
    v[..., :2] += 3.0 * torch.randn(200, 2, 2, generator=gen, dtype=torch.float64)
    v = 1.5 * v / v.norm(dim=-1, keepdim=True)  # every point clipped to tangent norm 1.5
    pts = L.expmap0(L.lift(v), k=km.view(2, 1))
    cw = L.expmap0(
        L.lift(0.8 * torch.randn(2, 16, 8, generator=gen, dtype=torch.float64)), k=km.view(2, 1, 1)
    )
    true = viz.subspace_disk_data(cw, km, pts, radius="true")
    flat = viz.subspace_disk_data(cw, km, pts, radius="projected")
    scaled = viz.subspace_disk_data(cw, km, pts, radius="scaled")
    for m in range(2):
        r_true = np.linalg.norm(true["points"][:, m], axis=1)
        assert r_true.std() < 1e-9  # the thin ring of the issue
        r = np.linalg.norm(scaled["points"][:, m], axis=1)
        assert r.std() > 0.1 * r.max()  # spread over the disk
        np.testing.assert_allclose(r.max(), r_true.max(), rtol=1e-9)  # outermost at the true radius
        f = scaled["scale"]["points"][m]
        assert f >= 1.0
        np.testing.assert_allclose(scaled["points"][:, m], f * flat["points"][:, m], rtol=1e-9)
        cr = np.linalg.norm(scaled["codewords"][m], axis=1)
        np.testing.assert_allclose(cr.max(), scaled["norms"]["codewords"][m].max(), rtol=1e-9)
        assert np.all(r < 1.0) and np.all(cr < 1.0)
    labels = np.arange(200) % 3
    pf = viz.subspace_codewords_disks(
        cw, km, pts, point_labels=labels, radius="scaled", max_points=150
    )
    caption = [a.text for a in pf.layout.annotations if "Radial rescale" in a.text]
    assert len(caption) == 1 and "points ×" in caption[0] and "a random 150 of 200" in caption[0]
    rings = [tr for tr in pf.data if (tr.name or "").startswith("true median radius: points")]
    ring0 = np.median(np.linalg.norm(true["points"][:, 0], axis=1))  # subspace 0's true radius
    np.testing.assert_allclose(np.hypot(rings[0].x, rings[0].y), ring0, rtol=1e-6)
    mf = viz.subspace_codewords_disks(cw, km, pts, radius="scaled", backend="matplotlib")
    assert "Radial rescale" in mf._supxlabel.get_text()
    _render(mf)


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
def test_seed_strip_keeps_every_marker_inside_the_axes(backend):
    vals = {"a": [0.382, 0.344, 0.377], "b": [0.356, 0.366, 0.370], "c": [0.364, 0.338, 0.362]}
    fig = viz.seed_strip(vals, [0, 1, 2], backend=backend)
    ys = np.array(list(vals.values()))
    if backend == "plotly":
        lo, hi = fig.layout.yaxis.range
        xlo, xhi = fig.layout.xaxis.range
        xs = np.concatenate([tr.x for tr in fig.data])
    else:
        (lo, hi), (xlo, xhi) = fig.axes[0].get_ylim(), fig.axes[0].get_xlim()
        xs = np.concatenate([c.get_offsets()[:, 0] for c in fig.axes[0].collections])
    margin = 0.08 * (ys.max() - ys.min())  # room for a whole marker at either end
    assert lo < ys.min() - margin and hi > ys.max() + margin
    assert xlo < xs.min() - 0.2 and xhi > xs.max() + 0.2
    _render(fig)
