"""The CPU design's guards against losing the frozen features' knowledge (issue 17):
a head that starts at the features' principal components, a term that keeps their
neighbours, and the untrained model as a validation candidate."""

import json
import math

import numpy as np
import pytest
import torch

from hihpq_lib.geometry.manifolds import ProductEuclidean, ProductLorentz
from hihpq_lib.learning.checkpoint import load_model
from hihpq_lib.learning.config import ConfigError, TrainConfig
from hihpq_lib.learning.losses import HiHPQLoss, neighbour_loss
from hihpq_lib.learning.model import ProjectionHead
from hihpq_lib.learning.training import init_model, train
from tests.test_training import small_config, synthetic_data

SPACES = {
    "lorentz": lambda dtype: ProductLorentz(2, 3, curvature=[0.7, 2.0]).to(dtype),
    "euclidean": lambda dtype: ProductEuclidean(2, 3).to(dtype),
}
DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 2e-5, torch.float64: 1e-9}


def _features(n=300, dim=24, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    return (torch.randn(n, dim, generator=g, dtype=torch.float64) @ mix + 2.0).to(dtype)


@pytest.mark.parametrize("hidden", [0, 16])
def test_pca_head_is_the_principal_components_spread_over_subspaces(hidden):
    x = _features()
    head = ProjectionHead(24, 8, hidden, skip=True).init_pca_(x, n_subspaces=2).eval()
    y = head(x).detach().double()
    # independent computation: the SVD of the centred features
    xc = x.double() - x.double().mean(0)
    _, _, vh = torch.linalg.svd(xc, full_matrices=False)
    comps = xc @ vh[:8].T
    for m in range(2):
        for j in range(4):  # output j of subspace m = component j * M + m
            c = torch.corrcoef(torch.stack([y[:, m * 4 + j], comps[:, j * 2 + m]]))[0, 1]
            assert abs(abs(float(c)) - 1.0) < 1e-5
    assert abs(float(y.reshape(-1, 2, 4).norm(dim=-1).median()) - 1.0) < 1e-5
    assert torch.allclose(y.mean(0), torch.zeros(8, dtype=torch.float64), atol=1e-5)


def test_pca_head_rejects_mismatched_features():
    with pytest.raises(ValueError, match="init_pca_ needs features"):
        ProjectionHead(24, 8, 16, skip=True).init_pca_(_features(dim=10), 2)


def _neighbour_loop(teacher, z, space, tau, teacher_tau):
    """KL(teacher || student) per row over j != i, in Python floats."""
    f = teacher.double() / teacher.double().norm(dim=1, keepdim=True)
    B, total = len(z), 0.0
    for i in range(B):
        others = [j for j in range(B) if j != i]
        t = [float(f[i] @ f[j]) / teacher_tau for j in others]
        s = [-float(space.dist(z[i], z[j]).detach().sum()) / tau for j in others]
        lt = math.log(sum(math.exp(v) for v in t))
        ls = math.log(sum(math.exp(v) for v in s))
        total += sum(math.exp(a - lt) * ((a - lt) - (b - ls)) for a, b in zip(t, s))
    return total / B


@pytest.mark.parametrize("geometry", list(SPACES))
@pytest.mark.parametrize("dtype", DTYPES)
def test_neighbour_loss_equals_loop(geometry, dtype):
    space = SPACES[geometry](dtype)
    g = torch.Generator().manual_seed(3)
    z = space.embed(torch.randn(6, 2, 3, generator=g, dtype=torch.float64).to(dtype))
    teacher = torch.rand(6, 10, generator=g, dtype=torch.float64).to(dtype)
    got = float(neighbour_loss(teacher, z, space, tau=0.3, teacher_tau=0.15).detach())
    want = _neighbour_loop(teacher, z, space, 0.3, 0.15)
    assert abs(got - want) < TOL[dtype] * 10
    assert got >= -TOL[dtype]


@pytest.mark.parametrize("geometry", list(SPACES))
def test_neighbour_loss_gradients_are_finite_at_coincident_points(geometry):
    space = SPACES[geometry](torch.float32)
    v = torch.zeros(4, 2, 3, requires_grad=True)  # every point at the origin
    loss = neighbour_loss(torch.rand(4, 5), space.embed(v), space)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(v.grad).all()


def test_neighbour_weight_zero_leaves_the_objective_unchanged():
    space = SPACES["lorentz"](torch.float64)
    g = torch.Generator().manual_seed(0)
    z1 = space.embed(torch.randn(5, 2, 3, generator=g, dtype=torch.float64))
    z2 = space.embed(torch.randn(5, 2, 3, generator=g, dtype=torch.float64))
    teacher = torch.rand(5, 7, dtype=torch.float64)
    with torch.no_grad():
        plain = HiHPQLoss(space)(z1, z2)
        off = HiHPQLoss(space, neighbour_weight=0.0)(z1, z2, teacher=teacher)
        on = HiHPQLoss(space, neighbour_weight=0.5)(z1, z2, teacher=teacher)
        nb = neighbour_loss(teacher, z1, space)
    assert float(off["loss"]) == float(plain["loss"]) and "neighbour" not in off
    want = float(plain["loss"]) + 0.5 * float(nb)
    assert abs(float(on["loss"]) - want) < 1e-12


def test_untrained_pca_model_is_a_validation_candidate(tmp_path):
    data = synthetic_data()
    # a learning rate too small to move: the untrained model is as good as any epoch
    cfg = small_config(head_init="pca", eval_init=True, epochs=2, lr=1e-9, start_lr=1e-9)
    res = train(cfg, data, tmp_path, progress=False)
    assert res["init_val_map"] is not None and res["init_val_map"] > 0.5
    assert res["best_val_map"] >= res["init_val_map"]
    model, _ = load_model(tmp_path, "best")
    if res["best_epoch"] == 0:
        fresh = init_model(cfg, data, torch.device("cpu"))
        for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
            assert torch.equal(a, b)


def test_neighbour_term_trains_and_is_recorded(tmp_path):
    cfg = small_config(head_init="pca", neighbour_weight=1.0, epochs=2)
    res = train(cfg, synthetic_data(), tmp_path, progress=False)
    assert res["finished"] and all(h["neighbour"] > 0 for h in res["history"])
    assert res["best_val_map"] > 0.5


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="head_init must be"):
        TrainConfig(head_init="zeros").validate()
    with pytest.raises(ConfigError, match="neighbour_weight must be >= 0"):
        TrainConfig(neighbour_weight=-1.0).validate()
    with pytest.raises(ConfigError, match="neighbour_tau must be > 0"):
        TrainConfig(neighbour_tau=0.0).validate()


def test_train_reports_the_untrained_baselines_and_warns_below_them(isolated, capsys):
    from tests.test_folders import PROFILE, fast_args, image_folder, run_cli

    train_dir = image_folder(isolated / "shapes" / "train", per_class=16, seed=3)
    val_dir = image_folder(isolated / "shapes" / "val", per_class=4, seed=4)
    run = isolated / "run"
    args = ["--data", train_dir, "--query-data", val_dir, *fast_args(), "--out", run]
    code, out, err = run_cli(capsys, "train", PROFILE, *args)
    assert code == 0, err
    res = json.loads((run / "results.json").read_text())
    base = res["baselines"]
    mine = res["map@50_levels_val_selected"]
    assert set(base["float"]) == set(mine) == {"class"}
    assert 0.0 <= base["float"]["class"] <= 1.0
    assert base["faiss_pq"] is None  # 64 images: fewer than the K = 256 k-means needs
    below = mine["class"] < base["float"]["class"]
    assert bool(base["below"]) == below
    assert ("warning: HiHPQ (validation-selected) is below" in err) == below
    assert "beside the untrained baselines" in out and "float" in out


@pytest.mark.parametrize(
    ("geometry", "label", "who"),
    [("lorentz", "HiHPQ", "HiHPQ"), ("euclidean", "Euclidean", "the Euclidean twin of HiHPQ")],
)
def test_cli_baseline_table_names_the_model_it_trained(capsys, geometry, label, who):
    from hihpq_lib.app.cli import _print_baselines

    res = {
        "geometry": geometry,
        "map@50_levels_val_selected": {"class": 0.40},
        "baselines": {"float": {"class": 0.45}, "faiss_pq": {"class": 0.30}, "below": ["x"]},
    }
    _print_baselines(res)
    lines = capsys.readouterr().out.splitlines()
    header = lines[1].split()
    assert header == ["level", label, "float", "faiss_pq"]
    assert lines[2].split() == ["class", "0.4000", "0.4500", "0.3000"]
    assert f"warning: {who} is below a baseline: x" in lines[-1]


def test_baseline_guard_computes_float_and_pq_and_warns(capsys):
    from types import SimpleNamespace

    from hihpq_lib.app.scoring import baseline_guard
    from hihpq_lib.learning.views import FeatureSplit

    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 32, generator=g) * 3
    lab_db, lab_q = torch.arange(400) % 4, torch.arange(40) % 4
    db = FeatureSplit(centres[lab_db] + torch.randn(400, 32, generator=g), lab_db)
    q = FeatureSplit(centres[lab_q] + torch.randn(40, 32, generator=g), lab_q)
    prep = SimpleNamespace(
        level_labels=lambda name: {"class": lab_q if name == "query" else lab_db},
        split=lambda name: db,
    )
    cfg = TrainConfig().with_overrides(["bits=32", "topk=50"])
    report = baseline_guard(prep, cfg, q, db, {"class": 0.0})
    # four well-separated clusters: both untrained baselines retrieve them
    assert report["float"]["class"] > 0.9 and report["faiss_pq"]["class"] > 0.9
    assert report["below"] and report["below"][0].startswith("class 0.0000 < float")
    gap = report["float"]["class"]
    assert report["below"][0].endswith(f"({-gap:+.4f})")  # the gap, signed
    err = capsys.readouterr().err
    assert "warning: HiHPQ (validation-selected) is below" in err
    assert "also tries a start that keeps" in err  # not the folder default: points to it
    auto = TrainConfig().with_overrides(["bits=32", "topk=50", "dataset=folder", "recipe=auto"])
    assert baseline_guard(prep, auto, q, db, {"class": 0.0})["below"]
    assert "the folder default chose this on the validation queries" in capsys.readouterr().err
    assert not baseline_guard(prep, cfg, q, db, {"class": 1.0})["below"]


def test_folder_benchmark_tables_every_level_with_seeds(isolated):
    from benchmarks import folder_bench
    from tests.test_folders import FAST, hierarchy_file, image_folder

    train_dir = image_folder(isolated / "shapes" / "train", per_class=16, seed=3)
    val_dir = image_folder(isolated / "shapes" / "val", per_class=4, seed=4)
    hier = hierarchy_file(isolated / "hierarchy.json")
    out = isolated / "bench"
    argv = ["--data", str(train_dir), "--query-data", str(val_dir), "--hierarchy", str(hier)]
    argv += ["--methods", "float", "hihpq", "--seeds", "2", "--out", str(out), "--set", *FAST]
    argv += ["hierarchy_levels=[1, 3]"]
    res = folder_bench.main(argv)
    assert res["levels"] == {"class": 4, "depth 1": 2, "depth 3": 4}
    hihpq = res["methods"]["hihpq"]
    assert [r["seed"] for r in hihpq["runs"]] == [0, 1]
    cls = [r["levels"]["class"] for r in hihpq["runs"]]
    assert hihpq["aggregate"]["class"]["mean"] == pytest.approx(sum(cls) / 2)
    md = (out / "results.md").read_text()
    assert "| float features (cosine) | 40960 |" in md and "± " in md
    assert "HiHPQ − float features (cosine): class" in md
    assert json.loads((out / "results.json").read_text())["meta"]["dataset"] == "shapes"


@pytest.mark.parametrize("geometry", ["lorentz", "euclidean"])
def test_kmeans_codebooks_are_the_tangent_kmeans_centroids(geometry):
    from sklearn.cluster import KMeans

    from hihpq_lib.quantization.quantizer import ProductQuantizer

    space = SPACES[geometry](torch.float32)
    pq = ProductQuantizer(space, K=8)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(200, 6, generator=g)
    pq.init_kmeans(feats, seed=3)
    tangent = space.log(space.embed(feats.view(200, 2, 3))).detach().double().numpy()
    for m in range(2):
        want = KMeans(8, n_init=1, max_iter=50, random_state=3 + m).fit(tangent[:, m])
        got = pq.codebooks.detach()[m].double().numpy()
        assert np.allclose(np.sort(got, axis=0), np.sort(want.cluster_centers_, axis=0), atol=1e-5)
    with pytest.raises(ValueError, match="at least K=8"):
        pq.init_kmeans(feats[:5])


def test_kmeans_init_model_starts_better_than_sampled_codewords(tmp_path):
    data = synthetic_data()
    scores = {}
    for init in ("data", "kmeans"):
        cfg = small_config(head_init="pca", codebook_init=init, eval_init=True, epochs=1)
        scores[init] = train(cfg, data, tmp_path / init, progress=False)["init_val_map"]
    assert scores["kmeans"] >= scores["data"] - 0.02 and scores["kmeans"] > 0.5


def test_pca_head_survives_a_degenerate_spectrum(monkeypatch):
    """eigh's divide-and-conquer can fail on repeated eigenvalues: the fallback still gives
    the principal components."""
    from hihpq_lib.learning import model as model_mod

    def failing(_):
        raise torch.linalg.LinAlgError("forced")

    monkeypatch.setattr(model_mod.torch.linalg, "eigh", failing)
    x = _features()
    head = ProjectionHead(24, 8, 16, skip=True).init_pca_(x, n_subspaces=2).eval()
    y = head(x).detach().double()
    xc = x.double() - x.double().mean(0)
    _, _, vh = torch.linalg.svd(xc, full_matrices=False)
    c = torch.corrcoef(torch.stack([y[:, 0], (xc @ vh[0])]))[0, 1]
    assert abs(abs(float(c)) - 1.0) < 1e-5
    # a matrix of identical rows but one: rank one, 23 repeated zero eigenvalues
    flat = torch.ones(50, 24)
    flat[0] += 1.0
    assert torch.isfinite(ProjectionHead(24, 8, 16, skip=True).init_pca_(flat, 2).skip.weight).all()
