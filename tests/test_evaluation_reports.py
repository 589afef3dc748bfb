"""Tests of the reports of notebooks 06-07: app.experiments (retrieval examples, ablation
runs, trained then loaded), evaluation.metrics (chunked PR curves), evaluation.stats (noise
statistics) and evaluation.benchmarks (the benchmark-table helpers)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hihpq_lib import data as D
from hihpq_lib.app import experiments
from hihpq_lib.app.prepare import Prepared
from hihpq_lib.evaluation import benchmarks, metrics, stats
from hihpq_lib.learning.config import TrainConfig
from hihpq_lib.quantization.index import PQIndex
from hihpq_lib.utils import runtime

N_CLASSES, PER_CLASS, F = 10, 30, 32

TINY = [
    "epochs=2",
    "batch_size=16",
    "bits=16",
    "feat_dim=16",
    "head_hidden=32",
    "num_clusters=[6, 3]",
    "hierarchy_warmup=1",
    "n_views=3",
    "topk=50",
    "threads=1",
]


@pytest.fixture(scope="module")
def prep() -> Prepared:
    """A synthetic Prepared: 10 classes of 30 tiny images, class-clustered features."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    images = rng.integers(0, 256, size=(len(labels), 8, 8, 3), dtype=np.uint8)
    ds = D.ImageDataset(images, labels, [f"c{i}" for i in range(N_CLASSES)], name="folder")
    splits = D.per_class_splits(labels, n_query_per_class=5, n_val_per_class=3, seed=0)
    centres = rng.normal(size=(N_CLASSES, F)) * 3
    feats = torch.from_numpy(centres[labels] + rng.normal(size=(len(labels), F))).float()
    train = np.asarray(splits.train)
    bank = feats[train].unsqueeze(1) + 0.3 * torch.randn(
        len(train), 3, F, generator=torch.Generator().manual_seed(0)
    )
    cfg = TrainConfig().with_overrides(TINY)
    return Prepared(cfg, ds, splits, np.arange(len(labels)), feats, bank)


def test_ablations_match_the_benchmark_methods():
    run_all = pytest.importorskip("benchmarks.run_all")
    for key, overrides in benchmarks.ABLATIONS.items():
        assert tuple(run_all.METHODS[key].overrides) == overrides, key
    # the tables order a cell's rows as run_all runs them
    assert benchmarks.METHOD_ORDER == tuple(run_all.METHODS)


def test_pick_queries_one_per_class(prep):
    picks = experiments.pick_queries(prep, per_class=2, n_classes=4, seed=1)
    labels = prep.dataset.labels[picks]
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert set(picks) <= set(prep.splits.query.tolist())


def test_precision_recall_curve_matches_the_full_ranking():
    gen = torch.Generator().manual_seed(0)
    cw = torch.randn(2, 8, 3, generator=gen)
    index = PQIndex(cw, geometry="euclidean")
    index.add(torch.randint(0, 8, (120, 2), generator=gen, dtype=torch.uint8))
    queries = torch.randn(23, 2, 3, generator=gen)
    yq = torch.randint(0, 4, (23,), generator=gen)
    ydb = torch.randint(0, 4, (120,), generator=gen)
    ydb[:4] = torch.arange(4)  # every class present: every query has a relevant item
    ks = [1, 5, 30, 120]
    got = metrics.precision_recall_curve(index, queries, yq, ydb, ks, chunk_size=7)
    _, full = index.search(queries, 120)
    want = metrics.precision_recall_by_rank(yq, ydb, full, ks)
    np.testing.assert_allclose(got["precision"], want["precision"], rtol=1e-12)
    np.testing.assert_allclose(got["recall"], want["recall"], rtol=1e-12)
    assert got["recall"][-1] == pytest.approx(1.0)  # the whole database retrieved


def test_precision_recall_curve_checks_lengths():
    index = PQIndex(torch.randn(1, 4, 2), geometry="euclidean")
    index.add(torch.zeros(5, 1, dtype=torch.uint8))
    with pytest.raises(ValueError, match="database labels"):
        metrics.precision_recall_curve(index, torch.randn(2, 1, 2), [0, 1], [0, 1], [1])


@pytest.fixture
def runs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("HIHPQ_RUNS_DIR", str(tmp_path))
    return tmp_path


def test_run_ablation_trains_then_loads(prep, runs_in_tmp):
    base = prep.cfg
    runs = experiments.run_ablation(prep, base, ["hihpq", "euclidean_cpq"], [0, 1], tag="abl")
    assert [(r["method"], r["seed"]) for r in runs] == [
        ("hihpq", 0),
        ("hihpq", 1),
        ("euclidean_cpq", 0),
        ("euclidean_cpq", 1),
    ]
    q = prep.split("query")
    for r in runs:
        assert r["ap"].shape == (len(q.feats),)
        assert math.isclose(r["map"], float(r["ap"].mean()))
        assert 0.0 < r["map"] <= 1.0 and 0.0 < r["map_final"] <= 1.0
        assert 1 <= r["val_selected_epoch"] <= base.epochs
    folders = {r["folder"] for r in runs}
    assert len(folders) == 4 and all(f.startswith(str(runs_in_tmp)) for f in folders)
    again = experiments.run_ablation(prep, base, ["hihpq"], [1], tag="abl")
    assert again[0]["folder"] == runs[1]["folder"]
    assert again[0]["map"] == runs[1]["map"]  # loaded from the finished run folder
    table = stats.ablation_table(runs)
    assert [t["method"] for t in table] == ["hihpq", "euclidean_cpq"]
    assert all(t["seeds"] == 2 and t["min"] <= t["mean mAP"] <= t["max"] for t in table)
    with pytest.raises(ValueError, match="unknown methods"):
        experiments.run_ablation(prep, base, ["nope"], [0])


def test_retrieval_examples(prep, runs_in_tmp):
    from hihpq_lib.learning.checkpoint import load_model

    runs = experiments.run_ablation(prep, prep.cfg, ["hihpq"], [0], tag="ex")
    model, _ = load_model(runs[0]["folder"], "best", in_dim=F)
    picks = experiments.pick_queries(prep, n_classes=3)
    ex = experiments.retrieval_examples(prep, model, picks, k=4)
    assert ex["query_images"].shape == (3, 8, 8, 3)
    assert ex["result_images"].shape == (3, 4, 8, 8, 3)
    assert ex["hits"].shape == (3, 4) and ex["titles"] == ["c0", "c1", "c2"]
    labels = prep.dataset.labels
    np.testing.assert_array_equal(ex["hits"], labels[ex["result_indices"]] == labels[picks, None])
    assert set(ex["result_indices"].ravel()) <= set(prep.splits.database.tolist())
    np.testing.assert_array_equal(
        ex["result_images"][0, 0], prep.dataset.images[ex["result_indices"][0, 0]]
    )


def test_paired_difference_and_seeds_needed():
    d = stats.paired_difference([0.5, 0.7, 0.6], [0.4, 0.5, 0.6])
    diffs = np.array([0.1, 0.2, 0.0])
    assert d["delta"] == pytest.approx(diffs.mean())
    assert d["std"] == pytest.approx(diffs.std(ddof=1))
    assert d["se"] == pytest.approx(diffs.std(ddof=1) / math.sqrt(3))
    assert stats.paired_difference([0.5], [0.4])["se"] == 0.0
    with pytest.raises(ValueError):
        stats.paired_difference([0.5, 0.6], [0.4])
    # n seeds put delta z standard errors away: z * std / sqrt(n) <= delta
    for delta, std in [(0.01, 0.01), (0.01, 0.02), (0.005, 0.003)]:
        n = stats.seeds_needed(delta, std)
        assert 2 * std / math.sqrt(n) <= delta + 1e-12
        assert n == 1 or 2 * std / math.sqrt(n - 1) > delta
    with pytest.raises(ValueError):
        stats.seeds_needed(0.0, 0.01)


def test_verdict_never_calls_nan_real():
    assert stats.verdict(0.05, float("nan")).startswith("no error bar")
    assert stats.verdict(0.05, 0.0, n=1).startswith("no error bar")
    assert stats.verdict(0.05, 0.01).startswith("real")
    assert stats.verdict(-0.005, 0.01).startswith("noise")
    assert stats.verdict(0.03, 0.01, z=stats.t_multiplier(3)).startswith("noise")
    with pytest.raises(ValueError):
        stats.verdict(0.03, 0.01, z=float("nan"))


def test_t_multiplier_tends_to_the_normal_quantile():
    assert math.isnan(stats.t_multiplier(1))
    values = [stats.t_multiplier(n) for n in (2, 3, 5, 10, 1000)]
    assert values == sorted(values, reverse=True)
    assert values[1] == pytest.approx(4.303, abs=1e-3)
    assert values[-1] == pytest.approx(1.962, abs=1e-3)


def _fake_results():
    rows = []
    for method, maps in {
        "float": [0.40],
        "faiss_pq": [0.30],
        "faiss_opq": [0.35],
        "euclidean_cpq": [0.36, 0.37, 0.35],
        "euclidean_hier": [0.36, 0.36, 0.36],
        "hihpq_no_hier": [0.37, 0.38, 0.36],
        "hihpq": [0.38, 0.39, 0.38],
    }.items():
        runs = [{"seed": s, "map": m} for s, m in enumerate(maps)]
        rows.append(
            {
                "protocol": "II",
                "bits": 32,
                "method": method,
                "label": method,
                "map": float(np.mean(maps)),
                "map_std": float(np.std(maps, ddof=1)) if len(maps) > 1 else 0.0,
                "n_seeds": len(maps),
                "runs": runs,
            }
        )
    deltas = [
        {"protocol": "II", "bits": 32, "method": r["method"], "delta_map": 0.38 - r["map"]}
        for r in rows
        if r["method"] != "hihpq"
    ]
    return {"rows": rows, "deltas": deltas}


def test_ablation_effects_pair_seeds_and_fall_back_to_a_noise_estimate():
    res = _fake_results()
    eff = {e["contrast"]: e for e in benchmarks.ablation_effects(res)}
    hyp = eff["hyperbolic vs Euclidean, no hierarchy"]
    want = stats.paired_difference([0.37, 0.38, 0.36], [0.36, 0.37, 0.35])
    assert hyp["seeds"] == 3 and hyp["Δ mAP"] == pytest.approx(want["delta"], abs=1e-4)
    assert hyp["reading"] == "real (identical on every seed)"  # δ = 0.01 on every seed
    hier = eff["hierarchy losses, hyperbolic"]  # δ = 0.01, 0.01, 0.02: t(2) = 4.3 needed
    d = stats.paired_difference([0.38, 0.39, 0.38], [0.37, 0.38, 0.36])
    assert hier["reading"] == stats.verdict(d["delta"], d["se"], z=d["t95"])
    opq = eff["OPQ vs PQ (faiss, no learning)"]
    assert opq["seeds"] == 1 and opq["reading"] == "no error bar (1 run)"
    assert opq["SE"] == "—"  # not 0.0000, which would read as "no noise"
    # one seed per learned method: the live seed noise stands in; faiss rows keep none
    for r in res["rows"]:
        r["runs"] = r["runs"][:1]
        r["map"] = r["runs"][0]["map"]
    eff2 = {e["contrast"]: e for e in benchmarks.ablation_effects(res, noise_std=0.004)}
    hyp2 = eff2["hyperbolic vs Euclidean, no hierarchy"]  # 0.37 - 0.36 = 0.01 = 2.5 SE
    assert hyp2["SE"] == 0.004 and hyp2["reading"].startswith("real")
    assert hyp2["reading"].endswith("(SE from the live seeds)")
    assert eff2["OPQ vs PQ (faiss, no learning)"]["reading"] == "no error bar (1 run)"


def test_benchmark_rows_and_paper_comparison():
    res = _fake_results()
    rows = benchmarks.benchmark_rows(res, protocol="II", bits=32)
    assert len(rows) == 7 and rows[-1]["HiHPQ − this"] == "(ref)"
    assert benchmarks.benchmark_rows(res, bits=16) == []
    comp = {(r["protocol"], r["bits"]): r for r in benchmarks.paper_comparison_rows(res)}
    assert set(comp) == set(benchmarks.PAPER_HIHPQ_MAP)
    assert comp[("II", 32)]["HiHPQ (official, VGG-16)"] == 0.652
    assert comp[("II", 32)]["MeCoQ (README)"] == 0.641
    assert comp[("II", 32)]["ours: HiHPQ"] == round(np.mean([0.38, 0.39, 0.38]), 3)
    assert comp[("I", 32)]["ours: HiHPQ"] == "—" and comp[("I", 32)]["MeCoQ (README)"] == "—"
    assert [r["ours: HiHPQ"] for r in benchmarks.paper_comparison_rows(None)] == ["—"] * 6
    print(metrics.format_table(benchmarks.paper_comparison_rows(res)))


def test_load_benchmark_results(tmp_path):
    import json

    assert benchmarks.load_benchmark_results(tmp_path / "missing.json") == (None, None)
    assert benchmarks.load_benchmark_results(folder=tmp_path) == (None, None)
    p = tmp_path / "r.json"
    p.write_text('{"rows": []}')
    assert benchmarks.load_benchmark_results(p) == ({"rows": []}, p)

    def write(rel, complete, quick):
        f = tmp_path / "results" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps({"rows": [], "complete": complete, "meta": {"quick": quick}}))
        return f

    folder = tmp_path / "results"
    quick = write("quick/results.json", True, True)
    assert benchmarks.load_benchmark_results(folder=folder)[1] == quick
    top = write("results.json", False, False)  # interrupted full run
    assert benchmarks.load_benchmark_results(folder=folder)[1] == quick  # complete first
    full = write("protocol_ii/results.json", True, False)
    assert benchmarks.load_benchmark_results(folder=folder)[1] == full  # full over quick
    top = write("results.json", True, False)
    assert benchmarks.load_benchmark_results(folder=folder)[1] == top  # top-level first
    (folder / "broken").mkdir()
    (folder / "broken" / "results.json").write_text("{not json")  # being written: skipped
    assert benchmarks.load_benchmark_results(folder=folder)[1] == top
    res, path = benchmarks.load_benchmark_results()  # the repository's, if any
    if res is not None:
        assert path.name == "results.json" and "rows" in res
        assert path.is_relative_to(runtime.results_dir())
        # the real file parses (it may hold no rows yet while a run is starting)
        assert len(benchmarks.benchmark_rows(res)) == len(res["rows"])
        assert isinstance(benchmarks.ablation_effects(res), list)
        assert len(benchmarks.paper_comparison_rows(res)) == len(benchmarks.PAPER_HIHPQ_MAP)


def test_load_benchmark_suite_merges_the_best_file_per_protocol(tmp_path):
    import json

    assert benchmarks.load_benchmark_suite(tmp_path) == (None, [])
    value = {"quick": 0.1, "ii": 0.2, "i": 0.3, "partial": 0.4, "": 0.0}

    def write(rel, protocols, *, complete=True, quick=False, tag=""):
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        res = {
            "rows": [
                {"protocol": p, "bits": 32, "method": "hihpq", "label": "HiHPQ", "map": value[tag]}
                for p in protocols
            ],
            "deltas": [{"protocol": p, "bits": 32, "method": "faiss_opq"} for p in protocols],
            "adc": [{"protocol": p, "bits": 32} for p in protocols],
            "protocols": {p: {"n_train": tag} for p in protocols},
            "complete": complete,
            "meta": {"quick": quick, "started": tag, "argv": [tag]},
        }
        f.write_text(json.dumps(res))
        return f

    quick = write("quick/results.json", ["II"], quick=True, tag="quick")
    res, paths = benchmarks.load_benchmark_suite(tmp_path)
    assert paths == [quick] and res["meta"]["quick"] and res["complete"]
    ii = write("protocol_ii/results.json", ["II"], tag="ii")
    i = write("protocol_i/results.json", ["I"], tag="i")
    write("broken/results.json", ["I"]).write_text("{not json")  # skipped
    write("partial/results.json", ["I", "II"], complete=False, tag="partial")
    res, paths = benchmarks.load_benchmark_suite(tmp_path)
    assert set(paths) == {i, ii}
    assert [(r["protocol"], r["map"]) for r in res["rows"]] == [("I", 0.3), ("II", 0.2)]
    assert [d["protocol"] for d in res["deltas"]] == ["I", "II"]
    assert [a["protocol"] for a in res["adc"]] == ["I", "II"]
    assert res["protocols"] == {"I": {"n_train": "i"}, "II": {"n_train": "ii"}}
    assert [s["started"] for s in res["meta"]["sources"]] == ["i", "ii"]
    assert res["complete"] and not res["meta"]["quick"]
    # the merged dict feeds the notebook's table functions like one file does
    assert len(benchmarks.benchmark_rows(res)) == 2
    ours = {
        (r["protocol"], r["bits"]): r["ours: HiHPQ"] for r in benchmarks.paper_comparison_rows(res)
    }
    assert ours[("I", 32)] == 0.3 and ours[("II", 32)] == 0.2 and ours[("I", 16)] == "—"
    # a protocol only an interrupted run has is still shown, marked incomplete
    i.unlink()
    res, paths = benchmarks.load_benchmark_suite(tmp_path)
    assert [r["map"] for r in res["rows"]] == [0.4, 0.2] and not res["complete"]


def test_the_repositorys_benchmark_suite_has_both_protocols_if_committed():
    res, paths = benchmarks.load_benchmark_suite()
    if res is None:
        pytest.skip("no benchmark results committed")
    protocols = {r["protocol"] for r in res["rows"]}
    assert protocols <= {"I", "II"} and len(paths) >= 1
    assert isinstance(benchmarks.ablation_effects(res), list)


def test_load_benchmark_suite_adds_methods_run_into_their_own_folder(tmp_path):
    import json
    import os

    def write(rel, rows, *, quick=False):
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        res = {
            "rows": [
                {
                    "protocol": "I",
                    "bits": b,
                    "method": m,
                    "label": m,
                    "map": v,
                    "map_std": 0.0,
                    "n_seeds": 1,
                    "runs": [{"seed": 0, "map": v}],
                }
                for b, m, v in rows
            ],
            "deltas": [],
            "adc": [{"protocol": "I", "bits": 32}],
            "complete": True,
            "meta": {"quick": quick, "started": rel, "argv": []},
        }
        f.write_text(json.dumps(res))
        return f

    main = write("protocol_i/results.json", [(32, "hihpq", 0.59), (32, "faiss_opq", 0.51)])
    extra = write("protocol_i_more/results.json", [(32, "euclidean_hier", 0.56)])
    write("quick/results.json", [(32, "euclidean_cpq", 0.3)], quick=True)  # never mixed in
    os.utime(main, (1, 1))  # older, but it has the HiHPQ rows: it stays the primary
    res, paths = benchmarks.load_benchmark_suite(tmp_path)
    assert paths == [main, extra]
    cells = {(r["method"], r["map"]) for r in res["rows"]}
    assert cells == {("hihpq", 0.59), ("faiss_opq", 0.51), ("euclidean_hier", 0.56)}
    (delta,) = res["deltas"]
    assert delta["method"] == "euclidean_hier" and not delta["paired"]
    assert delta["delta_map"] == pytest.approx(0.59 - 0.56)
    assert len(res["adc"]) == 1  # the primary's only
    assert [s["methods"] for s in res["meta"]["sources"]] == [
        ["faiss_opq", "hihpq"],
        ["euclidean_hier"],
    ]
    table = {r["method"]: r["HiHPQ − this"] for r in benchmarks.benchmark_rows(res)}
    assert table == {"hihpq": "(ref)", "faiss_opq": "—", "euclidean_hier": "+0.0300"}
    # one cell from two files reads in the benchmark's order, HiHPQ last
    assert [r["method"] for r in benchmarks.benchmark_rows(res)] == [
        "faiss_opq",
        "euclidean_hier",
        "hihpq",
    ]
    # the contrasts read the merged rows
    effects = {e["contrast"]: e["Δ mAP"] for e in benchmarks.ablation_effects(res)}
    assert effects["hyperbolic vs Euclidean, with hierarchy"] == pytest.approx(0.03)
    assert effects["HiHPQ vs faiss OPQ"] == pytest.approx(0.08)


def test_benchmark_suite_ranks_files_by_their_runs_start_not_the_checkout(tmp_path):
    """A fresh clone gives every file the checkout's time: the run's own ``meta.started``
    decides which of two files with HiHPQ rows is the primary."""
    import json
    import os

    def write(rel, bits, started):
        f = tmp_path / rel / "results.json"
        f.parent.mkdir(parents=True)
        row = {"protocol": "I", "bits": bits, "method": "hihpq", "map": 0.6, "n_seeds": 1}
        meta = {"quick": False, "argv": [], **({"started": started} if started else {})}
        f.write_text(json.dumps({"rows": [row], "complete": True, "meta": meta}))
        return f

    old = write("protocol_i", 32, "2026-12-02T18:27:24+00:00")
    new = write("protocol_i_16_64", 16, "2026-12-05T03:17:00+00:00")
    os.utime(new, (1, 1))  # checked out first: the older modification time
    _, paths = benchmarks.load_benchmark_suite(tmp_path)
    assert paths == [new, old]
    os.utime(old, (1, 1))
    os.utime(new, (2, 2))
    assert benchmarks.load_benchmark_suite(tmp_path)[1] == [new, old]
    # a file that records no start (or one that does not parse) falls back to its mtime
    bare = write("protocol_i_bare", 64, "not a time")
    os.utime(bare, (4e9, 4e9))  # far in the future: the newest
    assert benchmarks.load_benchmark_suite(tmp_path)[1][0] == bare


def test_benchmark_suite_sources_carry_each_files_run_time_and_memory(tmp_path):
    """Notebook 07 prints how long each benchmark file took from its own ``meta``."""
    import json

    meta = {"quick": False, "started": "s", "argv": [], "total_seconds": 5032.5}
    res = {
        "rows": [{"protocol": "I", "bits": 32, "method": "hihpq", "map": 0.6}],
        "complete": True,
        "meta": dict(meta, peak_rss_mb=3732.3),
    }
    (tmp_path / "protocol_i").mkdir()
    (tmp_path / "protocol_i" / "results.json").write_text(json.dumps(res))
    (tmp_path / "protocol_ii").mkdir()
    res["rows"] = [{"protocol": "II", "bits": 32, "method": "hihpq", "map": 0.6}]
    res["meta"] = {"quick": False, "started": "t", "argv": []}  # an older file: no timing
    (tmp_path / "protocol_ii" / "results.json").write_text(json.dumps(res))
    merged, _ = benchmarks.load_benchmark_suite(tmp_path)
    got = [(s["protocol"], s["seconds"], s["peak_rss_mb"]) for s in merged["meta"]["sources"]]
    assert got == [("I", 5032.5, 3732.3), ("II", None, None)]
    # each source carries its own preparation time and the code lengths it gave
    res["protocols"] = {"II": {"prepare_seconds": {"features": 12.5, "bank": 30.0}}}
    (tmp_path / "protocol_ii" / "results.json").write_text(json.dumps(res))
    merged, _ = benchmarks.load_benchmark_suite(tmp_path)
    got = [(s["prepare_seconds"], s["bits"]) for s in merged["meta"]["sources"]]
    assert got == [(None, [32]), ({"features": 12.5, "bank": 30.0}, [32])]


def test_the_main_table_reads_no_long_profile_run():
    """The README's main table and notebook 07 show the one-backbone CPU profile; a run of
    the long profile (three Lites side by side) lives under ``long_profile/``, where
    :func:`load_benchmark_suite` does not look, so it never becomes a protocol's primary."""
    import json

    from hihpq_lib.data.backbones import backbone_members

    res, paths = benchmarks.load_benchmark_suite()
    if res is None:
        pytest.skip("no benchmark results committed")
    for path in paths:
        argv = json.loads(path.read_text()).get("meta", {}).get("argv") or []
        backbones = [a.removeprefix("backbone=") for a in argv if a.startswith("backbone=")]
        assert not any(len(backbone_members(b)) > 1 for b in backbones), path
    assert not any("long_profile" in str(p) for p in paths)
