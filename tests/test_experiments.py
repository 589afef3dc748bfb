"""Tests of the notebooks' helpers: the profiles of learning.config, app.experiments,
evaluation.stats, viz.views_grid and learning.diagnostics (no dataset needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from hihpq_lib import data as D
from hihpq_lib import viz
from hihpq_lib.app import experiments
from hihpq_lib.app.prepare import Prepared
from hihpq_lib.evaluation import metrics, stats
from hihpq_lib.learning import config, diagnostics, retrieval, training
from hihpq_lib.learning.model import build_model
from hihpq_lib.utils import runtime
from tests.paths import REPO_ROOT


def _small_config(**extra):
    """A tiny run: 16 training images, K = 16 codewords, 2 epochs."""
    items = [
        "bits=8",
        "K=16",
        "feat_dim=8",
        "head_hidden=0",
        "batch_size=8",
        "topk=20",
        "num_clusters=[4, 2]",
        "hierarchy_warmup=1",
        "n_views=2",
    ] + [f"{k}={v}" for k, v in extra.items()]
    return config.tutorial_config(True, 2, hierarchy=False).with_overrides(items)


def _fake_prepared(cfg, n_per_class=12, n_classes=3, F=6, seed=0):
    """A Prepared over random features: classes are shifted Gaussians."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    n = labels.size
    images = np.zeros((n, 4, 4, 3), dtype=np.uint8)
    ds = D.ImageDataset(images, labels, [f"c{i}" for i in range(n_classes)], name="toy")
    query = np.concatenate([np.flatnonzero(labels == c)[:2] for c in range(n_classes)])
    database = np.setdiff1d(np.arange(n), query)
    train = np.concatenate([np.flatnonzero(labels == c)[2:8] for c in range(n_classes)])
    vq, vdb = D.add_validation(database, labels, n_val_per_class=1, seed=0)
    splits = D.Splits(train, query, database, vq, vdb)
    centres = 3.0 * rng.standard_normal((n_classes, F))
    feats = torch.as_tensor(centres[labels] + rng.standard_normal((n, F)), dtype=torch.float32)
    bank = feats[train][:, None, :] + 0.1 * torch.randn(len(train), cfg.n_views, F)
    return Prepared(cfg, ds, splits, np.arange(n), feats.half(), bank.half())


def test_tutorial_config_switches_hierarchy_losses():
    off = config.tutorial_config(True, 3, hierarchy=False)
    on = config.tutorial_config(True, 3, hierarchy=True)
    assert off.epochs == on.epochs == 3
    assert off.proto_weight == 0 and off.instance_weight == 0
    assert on.proto_weight > 0 and on.instance_weight > 0
    # everything else is the demo's profile
    assert off.num_clusters == on.num_clusters and off.lr == on.lr and off.seed == on.seed


def test_training_data_carves_validation_from_the_database():
    cfg = _small_config()
    prep = _fake_prepared(cfg)
    td = experiments.training_data(prep, n_val_per_class=2)
    assert len(td.val_query.feats) == 2 * 3
    assert len(td.val_query.feats) + len(td.val_database.feats) == len(prep.splits.database)
    assert td.n_train == len(prep.splits.train)
    assert torch.equal(td.bank, prep.bank)
    # the validation rows are database rows, never test-query rows
    q_feats = prep.feats[prep.rows(prep.splits.query)].float()
    for row in torch.cat([td.val_query.feats, td.val_database.feats]):
        assert not (q_feats == row).all(1).any()
    counts = np.bincount(td.val_query.labels.numpy())
    assert counts.tolist() == [2, 2, 2]


def test_training_data_rejects_too_many_validation_queries():
    cfg = _small_config()
    prep = _fake_prepared(cfg)
    with pytest.raises(ValueError, match="too few"):
        experiments.training_data(prep, n_val_per_class=100)


def test_experiment_folder_depends_on_config_and_extra(tmp_path, monkeypatch):
    monkeypatch.setenv("HIHPQ_RUNS_DIR", str(tmp_path))
    cfg = _small_config()
    a = experiments.experiment_folder("x", cfg, 10)
    assert a.parent == tmp_path / "tutorial" and a.name.startswith("x-")
    assert a == experiments.experiment_folder("x", cfg, 10)
    assert a != experiments.experiment_folder("x", cfg, 11)
    assert a != experiments.experiment_folder("x", cfg.with_overrides(["seed=1"]), 10)
    assert a != experiments.experiment_folder("y", cfg, 10)


def test_load_or_train_and_search_agree_with_evaluate_map(tmp_path, monkeypatch):
    monkeypatch.setenv("HIHPQ_RUNS_DIR", str(tmp_path))
    cfg = _small_config()
    prep = _fake_prepared(cfg)
    td = experiments.training_data(prep, 2)
    run = experiments.experiment_folder("t", cfg, 2)
    first = training.train(cfg, td, run, resume=True, progress=False)
    assert (run / "checkpoint.pt").is_file()
    again = training.train(cfg, td, run, resume=True, progress=False)  # loads, no training
    assert again["history"] == first["history"]
    for p, q in zip(first["model"].parameters(), again["model"].parameters()):
        torch.testing.assert_close(p, q)
    model = again["model"]
    idx = experiments.rank_with_model(model, td.val_query, td.val_database, cfg.topk)
    assert idx.shape == (len(td.val_query.feats), min(cfg.topk, len(td.val_database.feats)))
    mean_ap = metrics.map_at_k(td.val_query.labels, td.val_database.labels, idx)
    expected = retrieval.evaluate_map(model, td.val_query, td.val_database, cfg.topk)
    assert mean_ap == pytest.approx(expected, abs=1e-12)
    # raw tensors work too
    idx2 = experiments.rank_with_model(model, td.val_query.feats, td.val_database.feats, cfg.topk)
    assert torch.equal(idx, idx2)


def test_search_ranks_an_item_first_against_itself():
    cfg = _small_config()
    model = build_model(cfg, 6).eval()
    feats = torch.randn(30, 6)
    idx = experiments.rank_with_model(model, feats[:5], feats, 3)
    # the query's own code is at least as close as any other code: itself or a code twin
    codes = model.encode(feats)
    for q in range(5):
        assert torch.equal(codes[idx[q, 0]], codes[q])


def test_initial_model_is_where_training_starts(tmp_path):
    cfg = _small_config()
    prep = _fake_prepared(cfg)
    td = experiments.training_data(prep, 2)
    a = diagnostics.initial_model(cfg, td)
    b = diagnostics.initial_model(cfg, td)
    torch.manual_seed(cfg.seed)
    c = build_model(cfg, td.train.shape[1])
    for p, q, r in zip(a.state_dict().values(), b.state_dict().values(), c.state_dict().values()):
        torch.testing.assert_close(p, q)
        torch.testing.assert_close(p, r.to(p.dtype))
    assert not a.training
    # with data initialisation the codewords come from training features
    d = diagnostics.initial_model(cfg.with_overrides(["codebook_init=data"]), td)
    assert not torch.allclose(d.quantizer.codebooks, a.quantizer.codebooks)


def test_paired_bootstrap_identical_and_shifted():
    rng = np.random.default_rng(0)
    a = rng.random(200)
    same = stats.paired_bootstrap(a, a)
    assert same["diff"] == same["low"] == same["high"] == 0.0
    shifted = stats.paired_bootstrap(a + 0.1, a)
    assert shifted["diff"] == pytest.approx(0.1)
    assert shifted["low"] == pytest.approx(0.1) and shifted["high"] == pytest.approx(0.1)
    assert shifted["p_a_better"] == 1.0
    noisy = stats.paired_bootstrap(a, rng.random(200), level=0.9, seed=1)
    assert noisy["low"] < noisy["diff"] < noisy["high"]


def test_paired_bootstrap_is_reproducible_and_covers_the_truth():
    rng = np.random.default_rng(1)
    a, b = rng.random(300), rng.random(300)
    assert stats.paired_bootstrap(a, b, seed=3) == stats.paired_bootstrap(a, b, seed=3)
    r = stats.paired_bootstrap(torch.as_tensor(a), torch.as_tensor(b), n_boot=4000)
    assert r["low"] < 0 < r["high"]  # same distribution: 0 inside the interval
    assert r["high"] - r["low"] == pytest.approx(2 * 1.96 * np.std(a - b) / np.sqrt(300), rel=0.15)


@pytest.mark.parametrize(
    "a, b, match",
    [([], [], "non-empty"), ([1.0, 2.0], [1.0], "paired"), ([np.nan], [0.0], "finite")],
)
def test_paired_bootstrap_rejects_bad_input(a, b, match):
    with pytest.raises(ValueError, match=match):
        stats.paired_bootstrap(a, b)


def test_paired_bootstrap_rejects_bad_level():
    with pytest.raises(ValueError, match="level"):
        stats.paired_bootstrap([1.0], [0.0], level=1.5)


def test_purity_against_brute_force():
    rng = np.random.default_rng(0)
    clusters, labels = rng.integers(0, 7, 500), rng.integers(0, 4, 500)
    expected = sum(np.bincount(labels[clusters == c]).max() for c in np.unique(clusters)) / 500
    assert stats.purity(clusters, labels) == pytest.approx(expected)
    assert stats.purity(labels, labels) == 1.0
    assert stats.purity(np.arange(10), rng.integers(0, 3, 10)) == 1.0  # singletons are pure
    assert stats.purity(np.zeros(4), [0, 0, 1, 2]) == 0.5


def test_purity_rejects_mismatched_input():
    with pytest.raises(ValueError, match="equal length"):
        stats.purity([0, 1], [0])


def test_views_grid_shapes_and_errors():
    imgs = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    views = [torch.rand(3, 3, 16, 16), np.zeros((3, 16, 16, 3), dtype=np.uint8)]
    fig = viz.views_grid(imgs, views, row_titles=["a", "b", "c"], title="t")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3 * 3
    assert fig.axes[0].get_title() == "original" and fig.axes[1].get_title() == "view 1"
    with pytest.raises(ValueError, match="uint8"):
        viz.views_grid(imgs.astype(float), views)
    with pytest.raises(ValueError, match="3 images each"):
        viz.views_grid(imgs, [torch.rand(2, 3, 16, 16)])
    with pytest.raises(ValueError, match="one title per view"):
        viz.views_grid(imgs, views, view_titles=["only one"])


def test_runs_dir_default_is_used(monkeypatch):
    monkeypatch.delenv("HIHPQ_RUNS_DIR", raising=False)
    cfg = _small_config()
    assert experiments.experiment_folder("x", cfg).parent == runtime.runs_dir() / "tutorial"


def test_codeword_geometry_against_direct_computation():
    from hihpq_lib.geometry import lorentz

    cfg = _small_config()
    model = build_model(cfg, 6).eval()
    feats = torch.randn(40, 6)
    rows = diagnostics.codeword_geometry(model, feats)
    assert len(rows) == model.quantizer.M
    with torch.no_grad():
        out = model(feats)
        cw = model.quantizer.codewords()
    for m, row in enumerate(rows):
        k = model.space.k[m].detach()
        # brute force: the nearest codeword by geodesic distance, one point at a time
        hard = [
            min(float(lorentz.dist(out.points[i, m], c, k=k)) for c in cw[m]) for i in range(40)
        ]
        assert row["hard error"] == pytest.approx(np.mean(hard), rel=1e-4)
        assert row["soft error"] == pytest.approx(
            float(lorentz.dist(out.points[:, m], out.soft[:, m], k=k).mean()), rel=1e-5
        )
        # distance from the origin = norm of the log map at the origin
        assert row["d(o, codeword)"] == pytest.approx(
            float(lorentz.logmap0(cw[m], k=k)[:, 1:].norm(dim=-1).median()), rel=1e-3
        )
        assert row["c"] == pytest.approx(float(model.space.curvature[m].detach()), rel=1e-5)
        assert 0 < row["PCA share codewords"] <= 1 and 0 < row["PCA share points"] <= 1


def test_hierarchy_folder_reads_the_variable_and_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.delenv(experiments.TINY_IMAGENET_ENV, raising=False)
    assert experiments.hierarchy_folder() is None
    monkeypatch.setenv(experiments.TINY_IMAGENET_ENV, str(tmp_path))
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match=r"lacks val/, wordnet_hierarchy.json"):
        experiments.hierarchy_folder()
    (tmp_path / "val").mkdir()
    (tmp_path / "wordnet_hierarchy.json").write_text("{}")
    folder = experiments.hierarchy_folder()
    assert folder.train == tmp_path / "train" and folder.hierarchy.is_file()


def test_folder_twin_configs_differ_only_in_geometry(tmp_path, monkeypatch):
    monkeypatch.setenv("HIHPQ_PROJECT_DIR", str(REPO_ROOT))
    folder = experiments.HierarchyFolder(tmp_path)
    a = experiments.folder_twin_config(folder, ["epochs=2"], "lorentz")
    b = experiments.folder_twin_config(folder, ["epochs=2"], "euclidean")
    assert (a.dataset, a.epochs, a.query_data) == ("folder", 2, str(tmp_path / "val"))
    diff = {k for k, v in a.to_dict().items() if b.to_dict()[k] != v}
    assert diff == {"geometry", "name"}


def test_levels_table_orders_levels_fine_to_coarse():
    def res(vals):
        return {
            "hierarchy": {"levels": {"class": 4, "depth 1": 2}},
            "map@10_levels_val_selected": dict(zip(("depth 1", "class"), vals)),
        }

    rows = experiments.levels_table({"lorentz": res((0.9, 0.5)), "euclidean": res((0.8, 0.4))}, 10)
    assert rows == [
        {"level": "class", "nodes": 4, "lorentz": 0.5, "euclidean": 0.4},
        {"level": "depth 1", "nodes": 2, "lorentz": 0.9, "euclidean": 0.8},
    ]
    # the untrained baselines come along when the runs measured them
    with_guard = res((0.9, 0.5)) | {
        "baselines": {"faiss_pq": {"class": 0.45, "depth 1": 0.95}, "float": None, "below": []}
    }
    rows = experiments.levels_table({"lorentz": with_guard, "euclidean": res((0.8, 0.4))}, 10)
    assert [r["faiss PQ (untrained)"] for r in rows] == [0.45, 0.95]
    assert all("float features" not in r for r in rows)
