"""Tests of the benchmark scripts: table and ratio helpers (fast), quick mode (slow)."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch

from benchmarks import adc_throughput, run_all
from hihpq_lib.evaluation import stats
from hihpq_lib.learning.config import ConfigError, TrainConfig
from tests.paths import cifar10_archive


# ----------------------------------------------------------------------------- configs
def test_profile_config_per_cell():
    cfg = run_all.profile_config("II", 64)
    assert (cfg.protocol, cfg.bits, cfg.M, cfg.feat_dim) == ("II", 64, 8, 128)
    cfg = run_all.profile_config("I", 32)
    assert (cfg.protocol, cfg.n_views, cfg.cluster_method) == ("I", 4, "scalable")
    quick = run_all.profile_config("II", 16, quick=True, epochs=2, threads=1)
    assert quick.subsample_per_class == 300 and quick.epochs == 2 and quick.threads == 1


def test_profile_config_missing_bits_names_the_available_profiles():
    with pytest.raises(ConfigError, match="cpu_cifar10_ii_32bits.yaml"):
        run_all.profile_config("II", 48)
    with pytest.raises(ConfigError, match="protocol"):
        run_all.profile_config("III", 32)


def test_method_configs_and_seeds():
    base = TrainConfig()
    hihpq = run_all.method_config(base, "hihpq", 1)
    assert (hihpq.geometry, hihpq.proto_weight, hihpq.seed) == ("lorentz", 1.0, 1)
    no_hier = run_all.method_config(base, "hihpq_no_hier", 0)
    assert (no_hier.geometry, no_hier.proto_weight, no_hier.instance_weight) == (
        "lorentz",
        0.0,
        0.0,
    )
    hier = run_all.method_config(base, "euclidean_hier", 0)
    assert (hier.geometry, hier.proto_weight) == ("euclidean", 1.0)
    # the budget is the same for every learned method
    cfgs = [
        run_all.method_config(base, m, 0) for m, s in run_all.METHODS.items() if s.kind == "learned"
    ]
    assert len({(c.epochs, c.n_views, c.batch_size, c.lr) for c in cfgs}) == 1
    with pytest.raises(ValueError, match="baseline"):
        run_all.method_config(base, "faiss_pq", 0)
    with pytest.raises(ValueError, match="known methods"):
        run_all.method_config(base, "mecoq", 0)
    assert run_all.seeds_for("II", 32, "euclidean_cpq", 3) == [0, 1, 2]
    assert run_all.seeds_for("I", 32, "hihpq", 3) == [0]
    assert run_all.seeds_for("II", 32, "float", 3) == [0]
    assert run_all.seeds_for("I", 32, "hihpq", 2, cells=(("I", 32), ("II", 32))) == [0, 1]
    args = run_all.parse_args(["--seed-cells", "I:32", "II:16"])
    assert args.seed_cells == [("I", 32), ("II", 16)]
    with pytest.raises(SystemExit):
        run_all.parse_args(["--seed-cells", "III:32"])


def test_parse_args_defaults_and_errors(monkeypatch):
    monkeypatch.delenv("HIHPQ_FAST", raising=False)
    args = run_all.parse_args(["--quick", "--threads", "1"])
    assert args.protocols == ["II"] and args.bits == [16, 32] and args.seeds == 1
    assert args.out.name == "quick"
    full = run_all.parse_args([])
    assert full.protocols == ["I", "II"] and full.bits == [16, 32, 64] and full.seeds == 3
    assert full.methods == list(run_all.METHODS)
    for bad in (["--methods", "nope"], ["--bits", "48"], ["--seeds", "0"], ["--threads", "0"]):
        with pytest.raises(SystemExit):
            run_all.parse_args(bad)


# ----------------------------------------------------------------------------- tables
def _run(seed, value, bits=32):
    return {
        "seed": seed,
        "map": value,
        "map_final": value - 0.01,
        "train_seconds": 1.0,
        "encode_seconds": 0.1,
        "search_qps": 100.0,
        "rss_peak_mb": 500.0 + seed,
        "rss_delta_mb": 10.0 + seed,
        "code_bits": bits,
    }


def _rows():
    agg = run_all.aggregate_runs
    return [
        agg("II", 32, "hihpq", [_run(0, 0.70), _run(1, 0.72), _run(2, 0.74)]),
        agg("II", 32, "euclidean_cpq", [_run(0, 0.65), _run(1, 0.68), _run(2, 0.68)]),
        agg("II", 32, "faiss_pq", [_run(0, 0.30)]),
        agg("II", 16, "hihpq", [_run(0, 0.60, 16)]),
        agg("II", 16, "float", [dict(_run(0, 0.50, 40960), shared_across_bits=True)]),
    ]


def test_aggregate_runs_mean_std_and_memory_max():
    row = _rows()[0]
    assert row["map"] == pytest.approx(0.72)
    assert row["map_std"] == pytest.approx(0.02)
    assert row["map_final"] == pytest.approx(0.71)
    assert row["rss_peak_mb"] == 502.0 and row["rss_delta_mb"] == 12.0
    assert row["n_seeds"] == 3 and row["seeds"] == [0, 1, 2]
    assert _rows()[-1]["shared_across_bits"] is True
    with pytest.raises(ValueError, match="no runs"):
        run_all.aggregate_runs("II", 32, "hihpq", [])


def test_compute_deltas_paired_and_unpaired():
    deltas = {(d["bits"], d["method"]): d for d in run_all.compute_deltas(_rows())}
    assert set(deltas) == {(32, "euclidean_cpq"), (32, "faiss_pq"), (16, "float")}
    paired = deltas[(32, "euclidean_cpq")]
    diffs = np.array([0.05, 0.04, 0.06])
    assert paired["paired"] and paired["n"] == 3
    assert paired["delta_map"] == pytest.approx(diffs.mean())
    assert paired["delta_std"] == pytest.approx(diffs.std(ddof=1))
    assert paired["delta_se"] == pytest.approx(diffs.std(ddof=1) / math.sqrt(3))
    unpaired = deltas[(32, "faiss_pq")]
    assert not unpaired["paired"]
    assert unpaired["delta_map"] == pytest.approx(0.72 - 0.30)
    assert unpaired["delta_std"] == pytest.approx(0.02)  # HiHPQ's seeds; faiss: one run
    assert deltas[(16, "float")]["delta_map"] == pytest.approx(0.10)


def _results():
    rows = _rows()
    adc = {"protocol": "II", "bits": 32, "N": 1000, "M": 4, "K": 256, "Q": 10, "threads": 1}
    adc.update(
        faiss_qps=100.0,
        lorentz_qps=50.0,
        euclidean_qps=120.0,
        ratio_lorentz=0.5,
        ratio_euclidean=1.2,
        lorentz_table_share=0.3,
        top10_agreement=1.0,
    )
    return {
        "meta": {"quick": True, "threads": 1, "load_before": 0.1, "load_after": 0.2},
        "rows": rows,
        "deltas": run_all.compute_deltas(rows),
        "adc": [adc],
        "protocols": {"II": {"n_train": 10, "process_peak_rss_mb": 900.0, "under_8gb": True}},
        "complete": False,
    }


def test_markdown_and_text_tables_hold_every_row_and_ratio():
    res = _results()
    md = run_all.format_markdown(res)
    assert "incomplete" in md
    assert "0.7200 ± 0.0200 (n=3)" in md
    assert "+0.0500 ± 0.0100" in md  # paired HiHPQ - Euclidean contrastive PQ
    assert "+0.4200" in md and "(reference)" in md
    assert "| 0.50 | 1.20 |" in md  # ADC ratios
    table_lines = [ln for ln in md.splitlines() if ln.startswith("| II |")]
    assert len(table_lines) == len(res["rows"]) + len(res["adc"])
    # rows ordered by protocol, bits, then the METHODS order (baselines first)
    labels = [ln.split(" | ")[2] for ln in table_lines[: len(res["rows"])]]
    assert labels[:2] == ["float features (cosine)", "HiHPQ (full)"]
    txt = run_all.format_text(res)
    assert "faiss PQ" in txt and "Lorentz/faiss" in txt
    res["complete"] = True
    assert "incomplete" not in run_all.format_markdown(res)


def test_tables_carry_the_dataset_name():
    res = _results()
    assert "# HiHPQ benchmark: CIFAR-10," in run_all.format_markdown(res)
    res["meta"]["dataset"] = "tiny-imagenet-200-subset"
    md = run_all.format_markdown(res)
    assert "# HiHPQ benchmark: tiny-imagenet-200-subset," in md and "CIFAR-10" not in md
    folder = TrainConfig().with_overrides(["dataset=folder"])

    class _Named:
        display_name = "pets"

    assert run_all.dataset_label(folder, _Named()) == "pets"
    assert run_all.dataset_label(TrainConfig(), _Named()) == "CIFAR-10"


def test_adc_only_remeasures_the_adc_table_in_place(tmp_path):
    """``--adc-only`` keeps the main table, measures each ADC cell on 1 and --threads
    threads, and says in results.md that (and when) the ADC table was re-measured."""
    res = _results()
    (tmp_path / "results.json").write_text(json.dumps(res))
    out = run_all.main(["--adc-only", "--quick", "--threads", "2", "--out", str(tmp_path)])
    assert out["rows"] == res["rows"]
    assert [(a["protocol"], a["bits"], a["threads"]) for a in out["adc"]] == [
        ("II", 32, 1),
        ("II", 32, 2),
    ]
    for a in out["adc"]:
        assert (a["N"], a["M"], a["K"], a["Q"]) == (1000, 4, 256, 10)
        assert a["faiss_qps"] > 0 and a["lorentz_qps"] > 0 and a["top10_agreement"] > 0.9
    assert out["meta"]["adc_remeasured"]["threads"] == [1, 2]
    md = (tmp_path / "results.md").read_text()
    assert "re-measured " + out["meta"]["adc_remeasured"]["date"] in md
    assert json.loads((tmp_path / "results.json").read_text())["adc"] == out["adc"]
    with pytest.raises(FileNotFoundError, match="needs an earlier run"):
        run_all.main(["--adc-only", "--quick", "--out", str(tmp_path / "none")])


def test_write_atomic_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "results.json"
    run_all.write_atomic(target, "{}")
    run_all.write_atomic(target, '{"a": 1}')
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in target.parent.iterdir()] == ["results.json"]


def test_rss_sampler_sees_an_allocation():
    with run_all.RSSSampler(interval=0.005) as mem:
        block = np.ones(64 * 2**20 // 8)  # 64 MB, touched
        block += 1
        # hold it until the sampler's thread has had a turn (on a loaded machine the
        # block could otherwise come and go between two samples); 10 s at most
        deadline = time.monotonic() + 10
        while mem.peak_mb - mem.start_mb <= 32 and time.monotonic() < deadline:
            time.sleep(0.01)
        del block
    assert mem.peak_mb >= mem.start_mb
    assert mem.delta_mb > 32


# ----------------------------------------------------------------------------- ADC
def test_adc_faiss_and_ours_compute_the_same_euclidean_distances():
    problem = adc_throughput.make_problem(N=500, M=4, K=256, d=32, Q=8, seed=1)
    fx = adc_throughput.faiss_index(problem)
    ours, q = adc_throughput.ours_index(problem, "euclidean")
    fd, fi = fx.search(np.ascontiguousarray(problem.queries.reshape(8, -1)), 20)
    od, oi = ours.search(q, 20)
    np.testing.assert_allclose(od.numpy(), fd, rtol=1e-4, atol=1e-5)
    # brute force: the distance to item n is the squared distance to its decoded vector
    decoded = problem.centroids[np.arange(4), problem.codes].reshape(500, -1)
    brute = ((problem.queries.reshape(8, 1, -1) - decoded[None]) ** 2).sum(-1)
    np.testing.assert_allclose(np.sort(brute, axis=1)[:, :20], od.numpy(), rtol=1e-4, atol=1e-5)
    lor, lq = adc_throughput.ours_index(problem, "lorentz")
    assert lor.geometry == "lorentz" and lq.shape == (8, 4, 9)
    with pytest.raises(ValueError, match="geometry"):
        adc_throughput.ours_index(problem, "spherical")
    with pytest.raises(ValueError, match="K = 256"):
        adc_throughput.faiss_index(adc_throughput.make_problem(N=50, M=2, K=16))


def test_adc_compare_reports_ratios_and_restores_threads():
    before = torch.get_num_threads()
    row = adc_throughput.compare(N=3000, M=2, K=256, Q=20, topk=100, threads=1, repeats=1)
    assert torch.get_num_threads() == before
    for key in ("faiss_qps", "lorentz_qps", "euclidean_qps"):
        assert math.isfinite(row[key]) and row[key] > 0
    assert row["ratio_lorentz"] == pytest.approx(row["lorentz_qps"] / row["faiss_qps"])
    assert row["ratio_euclidean"] == pytest.approx(row["euclidean_qps"] / row["faiss_qps"])
    assert row["top10_agreement"] > 0.95
    assert 0 < row["lorentz_table_share"] <= 1
    lines = adc_throughput.summary_lines([dict(row, ratio_lorentz=0.5, ratio_euclidean=1.0)])
    assert "2.00x SLOWER" in lines[0] and "about as fast" in lines[1]
    assert adc_throughput.format_rows([row]).count("\n") == 1


def test_adc_make_problem_checks_inputs():
    with pytest.raises(ValueError, match="divisible"):
        adc_throughput.make_problem(N=10, M=3, d=32)
    with pytest.raises(ValueError, match="power of two"):
        adc_throughput.make_problem(N=10, M=2, K=300)
    with pytest.raises(ValueError, match="N must be"):
        adc_throughput.make_problem(N=0, M=2)


def test_adc_main_writes_json(tmp_path, capsys):
    out = tmp_path / "adc.json"
    argv = ["--n", "2000", "--m", "2", "--queries", "10", "--topk", "50", "--threads", "1"]
    assert adc_throughput.main([*argv, "--repeats", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 1 and rows[0]["N"] == 2000
    assert "ADC search is" in capsys.readouterr().out


# ----------------------------------------------------------------------------- quick mode
def _quick_cifar_env(tmp_path, monkeypatch) -> None:
    """Skip without the shared CIFAR-10 copy; run folders in ``tmp_path``; full mode."""
    if cifar10_archive() is None:
        pytest.skip("HIHPQ_CIFAR10 does not name a CIFAR-10 archive (make test sets it)")
    monkeypatch.setenv("HIHPQ_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("HIHPQ_FAST", raising=False)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quick_benchmark_end_to_end(tmp_path, monkeypatch):
    """``run_all --quick`` on the shared CIFAR-10 copy: every method x bits row, finite mAP."""
    _quick_cifar_env(tmp_path, monkeypatch)
    out = tmp_path / "results"
    run_all.main(["--quick", "--out", str(out), "--quiet"])
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] is True
    assert (out / "results.md").is_file()
    assert not list(out.glob("*.tmp"))
    cells = {(r["bits"], r["method"]): r for r in res["rows"]}
    assert set(cells) == {(b, m) for b in (16, 32) for m in run_all.METHODS}
    for row in res["rows"]:
        for key in ("map", "map_final"):
            assert math.isfinite(row[key]) and 0.0 <= row[key] <= 1.0, row
        assert row["search_qps"] > 0 and row["rss_peak_mb"] > 0
    adc = {a["bits"]: a for a in res["adc"]}
    assert set(adc) == {16, 32}
    for a in adc.values():
        assert math.isfinite(a["ratio_lorentz"]) and a["ratio_lorentz"] > 0
        assert math.isfinite(a["ratio_euclidean"]) and a["ratio_euclidean"] > 0
    deltas = {(d["bits"], d["method"]) for d in res["deltas"]}
    assert deltas == {(b, m) for b in (16, 32) for m in run_all.METHODS if m != "hihpq"}
    assert res["protocols"]["II"]["under_8gb"] is True


def test_reference_cells_study_chooses_on_validation_and_records_test(tmp_path, monkeypatch):
    """``reference_cells --quick`` at II / 64 bits, where the profile keeps its own head
    width: the profile and the reference's ``feat_dim`` 64; the preferred variant is the one
    with the higher mean validation mAP, whatever the test queries say. (The one-setting
    variants, for cells where several settings differ, are the doctest of ``variants``.)"""
    from benchmarks import reference_cells

    _quick_cifar_env(tmp_path, monkeypatch)
    out = tmp_path / "study"
    reference_cells.main(["--quick", "--cells", "II:64", "--seeds", "1", "--out", str(out)])
    res = json.loads((out / "results.json").read_text())
    (cell,) = res["cells"]
    assert (cell["protocol"], cell["bits"]) == ("II", 64)
    got = {n: v["overrides"] for n, v in cell["variants"].items()}
    assert got == {"profile": [], "reference": ["feat_dim=64"]}
    val = {n: v["runs"][0]["val_map_best"] for n, v in cell["variants"].items()}
    assert cell["preferred"] == max(val, key=val.get)
    for v in cell["variants"].values():
        (run,) = v["runs"]
        assert 0.0 <= run["map"] <= 1.0 and 0.0 <= run["val_map_best"] <= 1.0
    # each variant trained with its own settings, in its own folder
    runs = tmp_path / "runs" / "bench" / "reference_cells"
    assert {p.name for p in runs.iterdir()} == {"II_64_profile", "II_64_feat_dim64"}
    heads = {
        p.name: torch.load(next(p.glob("*/checkpoint.pt")), weights_only=False)["config"][
            "feat_dim"
        ]
        for p in runs.iterdir()
    }
    assert heads == {"II_64_profile": 128, "II_64_feat_dim64": 64}
    md = (out / "results.md").read_text()
    assert md.count("| II · 64 |") == 2 and "**yes**" in md


def test_results_name_the_commit_and_say_when_the_code_differed_from_it(tmp_path):
    """``git_commit`` is the short hash, marked ``+changes`` when a tracked file outside
    ``benchmarks/results/`` was edited (a run started before its code was committed);
    results files being written do not count."""
    import subprocess

    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )

    git("init", "-q")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("a = 1\n")
    (tmp_path / "benchmarks" / "results" / "r.json").write_text("{}")
    git("add", ".")
    git("commit", "-qm", "first")
    clean = run_all._git_commit(tmp_path)
    assert clean and "+" not in clean
    (tmp_path / "benchmarks" / "results" / "r.json").write_text('{"rows": []}')
    assert run_all._git_commit(tmp_path) == clean
    assert run_all._git_commit(tmp_path / "benchmarks") == clean  # from a subfolder too
    (tmp_path / "code.py").write_text("a = 2\n")
    assert run_all._git_commit(tmp_path) == clean + "+changes"
    assert run_all._git_commit(tmp_path / "benchmarks") == clean + "+changes"
    not_a_repo = tmp_path.parent / (tmp_path.name + "_plain")
    not_a_repo.mkdir()
    assert run_all._git_commit(not_a_repo) is None


def test_a_trained_backbone_variant_starts_every_seed_from_the_pretrained_backbone(
    tmp_path, monkeypatch
):
    """Seeds of a variant whose backbone trains share one prepared input (the trunk maps);
    each seed's training starts from the backbone as it was prepared, and the prepared
    backbone is the pretrained one again afterwards."""
    from benchmarks import reference_cells
    from hihpq_lib.app.prepare import TailEncoder

    class Encoder(TailEncoder):
        def __init__(self):  # a stand-in tail; nothing is built or read
            self.tail = torch.nn.Linear(3, 2)

    class Prep:
        encoder = Encoder()

        def _encoder(self):
            return self.encoder

        def restored(self, state):
            return self.encoder.restored(state)

    prep = Prep()
    pretrained = prep.encoder.tail.weight.detach().clone()
    seen = []

    def fake_run_experiment(cfg, out, **kwargs):
        assert kwargs["prepared"] is prep and kwargs["overwrite"]
        seen.append((cfg.seed, prep.encoder.tail.weight.detach().clone()))
        with torch.no_grad():
            prep.encoder.tail.weight.add_(1.0)  # training moves the tail
        return {
            "map@1000_val_selected": 0.5,
            "map@1000_final": 0.4,
            "val_selected_epoch": 3,
            "val_map_best": 0.45 + cfg.seed,
            "input_mode": "tail",
            "stage_seconds": {"train": 1.0},
            "peak_rss_mb": 10.0,
        }

    monkeypatch.setattr(reference_cells, "run_experiment", fake_run_experiment)
    cfg = TrainConfig(topk=1000)
    runs = [reference_cells.run_trained_backbone(prep, cfg, s, tmp_path) for s in (0, 1)]
    assert [s for s, _ in seen] == [0, 1]
    for _, weight in seen:
        torch.testing.assert_close(weight, pretrained, rtol=0, atol=0)
    torch.testing.assert_close(prep.encoder.tail.weight, pretrained, rtol=0, atol=0)
    assert [r["val_map_best"] for r in runs] == [0.45, 1.45]
    assert runs[0]["map"] == 0.5 and runs[0]["map_final"] == 0.4
    assert runs[0]["input_mode"] == "tail" and runs[0]["val_selected_epoch"] == 3
    # an online backbone that does not train has no state to put back: the run just runs
    from hihpq_lib.app.prepare import _Encoder

    frozen = _Encoder()
    frozen.mode = "online"
    prep.encoder = frozen
    online = {
        "map@1000_val_selected": 0.3,
        "map@1000_final": 0.3,
        "val_selected_epoch": 1,
        "val_map_best": 0.3,
        "input_mode": "online",
        "stage_seconds": {},
        "peak_rss_mb": 1.0,
    }
    monkeypatch.setattr(reference_cells, "run_experiment", lambda cfg, out, **k: online)
    assert reference_cells.run_trained_backbone(prep, cfg, 0, tmp_path)["input_mode"] == "online"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_reference_cells_runs_a_tail_variant_as_hihpq_train_does(tmp_path, monkeypatch):
    """``--extra tail_blocks=1``: the adapted tail trains in its own mode on the profile's
    splits and is scored with the selected epoch's tail (``run_experiment``)."""
    from benchmarks import reference_cells

    _quick_cifar_env(tmp_path, monkeypatch)
    monkeypatch.setenv("HIHPQ_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "study"
    extra = "tail_blocks=1,backbone_lr=scaled,lr_backbone_scale=0.1,epochs=4"
    argv = ["--quick", "--cells", "II:32", "--seeds", "1", "--out", str(out)]
    reference_cells.main([*argv, "--only-reference", "--extra", extra])
    (cell,) = json.loads((out / "results.json").read_text())["cells"]
    (variant,) = cell["variants"].values()
    (run,) = variant["runs"]
    assert run["input_mode"] == "tail" and run["epochs"] == 4
    assert 0.0 < run["map"] <= 1.0 and 0.0 < run["val_map_best"] <= 1.0
    (folder,) = (tmp_path / "runs" / "bench" / "reference_cells").iterdir()
    (run_dir,) = folder.iterdir()
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["input_mode"] == "tail"
    assert saved["map@1000_val_selected"] == run["map"]
    assert json.loads((run_dir / "splits.json").read_text())  # the profile's splits, saved


def test_reference_cells_no_reference_sets_the_profile_against_the_extras(tmp_path, monkeypatch):
    """``--no-reference``: at II · 64, where the reference's head width differs from the
    profile's, only the profile and the ``--extra`` variants train."""
    from types import SimpleNamespace

    from benchmarks import reference_cells

    monkeypatch.setenv("HIHPQ_RUNS_DIR", str(tmp_path / "runs"))
    prep = SimpleNamespace(split=lambda name: name)
    monkeypatch.setattr(reference_cells, "prepare", lambda cfg, **k: prep)
    trained = []

    def fake_run(prep_, cfg, method, seed, q, db, folder):
        trained.append((folder.name, cfg.feat_dim, cfg.batch_size, seed))
        return {"seed": seed, "val_map_best": 0.5, "map": 0.5}

    monkeypatch.setattr(reference_cells, "run_learned", fake_run)
    out = tmp_path / "o"
    argv = ["--cells", "II:64", "--seeds", "1", "--no-reference", "--extra", "batch_size=64"]
    assert reference_cells.main([*argv, "--out", str(out)]) == 0
    assert trained == [("II_64_profile", 128, 128, 0), ("II_64_batch_size64", 128, 64, 0)]
    (cell,) = json.loads((out / "results.json").read_text())["cells"]
    assert list(cell["variants"]) == ["profile", "other: batch_size=64"]


def test_reference_cells_gives_a_variant_with_other_features_its_own(tmp_path, monkeypatch):
    """A variant that changes the frozen features (``--extra backbone=...``) trains on
    features prepared for it on the profile's splits, never on the profile's features;
    one that does not (``batch_size``) shares the profile's."""
    from types import SimpleNamespace

    from benchmarks import reference_cells

    monkeypatch.setenv("HIHPQ_RUNS_DIR", str(tmp_path / "runs"))
    base = SimpleNamespace(name="profile", splits="profile splits", split=lambda n: ("profile", n))
    own = SimpleNamespace(name="own", split=lambda n: ("own", n))
    asked = []

    def fake_prepare_for(cfg, *, progress, splits):
        asked.append((cfg.backbone, splits))
        return own

    monkeypatch.setattr(reference_cells, "prepare", lambda cfg, **k: base)
    monkeypatch.setattr(reference_cells, "prepare_for", fake_prepare_for)
    trained = []

    def fake_run(prep_, cfg, method, seed, q, db, folder):
        trained.append((folder.name, cfg.backbone, prep_.name, q, db))
        return {"seed": seed, "val_map_best": 0.5, "map": 0.5}

    monkeypatch.setattr(reference_cells, "run_learned", fake_run)
    extra = "backbone=efficientnet_lite2+efficientnet_lite0"
    argv = ["--cells", "II:32", "--seeds", "1", "--no-reference", "--extra", extra, "batch_size=64"]
    assert reference_cells.main([*argv, "--out", str(tmp_path / "o")]) == 0
    assert asked == [("efficientnet_lite2+efficientnet_lite0", "profile splits")]
    by_folder = {t[0]: t[1:] for t in trained}
    assert by_folder["II_32_profile"][1] == "profile"
    assert by_folder["II_32_batch_size64"][1] == "profile"
    both = by_folder["II_32_backboneefficientnet_lite2+efficientnet_lite0"]
    assert both == (
        "efficientnet_lite2+efficientnet_lite0",
        "own",
        ("own", "query"),
        ("own", "database"),
    )


def test_reference_cells_rejects_a_bad_extra_before_any_training(tmp_path, monkeypatch, capsys):
    """A malformed or unknown ``--extra`` stops the study with exit 2 and one line naming
    it, before the data is prepared or a run folder made."""
    from benchmarks import reference_cells

    monkeypatch.setenv("HIHPQ_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(
        reference_cells, "prepare", lambda *a, **k: pytest.fail("prepared the data")
    )
    for bad, says in (("batch_size", "KEY=VALUE"), ("batch_sise=64", "batch_sise")):
        with pytest.raises(SystemExit) as exc:
            reference_cells.main(["--cells", "II:32", "--extra", bad, "--out", str(tmp_path / "o")])
        assert exc.value.code == 2
        assert says in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "o").exists()


def test_reference_cells_pairs_each_variant_with_the_profile_by_seed(tmp_path):
    """The table's paired column is the variant's validation mAP minus the profile's over
    the seeds both ran (here seeds 0 and 1; the variant's seed 2 has no partner)."""
    from benchmarks import reference_cells

    def run(seed, val):
        return {"seed": seed, "val_map_best": val, "map": val + 0.01}

    results = {
        "meta": {"started": "t", "threads": 2, "argv": ["--cells", "II:32"]},
        "cells": [
            {
                "protocol": "II",
                "bits": 32,
                "variants": {
                    "profile": {"overrides": [], "runs": [run(0, 0.60), run(1, 0.62)]},
                    "other: batch_size=64": {
                        "overrides": ["batch_size=64"],
                        "runs": [run(0, 0.63), run(1, 0.63), run(2, 0.50)],
                    },
                },
            }
        ],
    }
    reference_cells._write(tmp_path, results)
    md = (tmp_path / "results.md").read_text()
    want = stats.paired_difference([0.63, 0.63], [0.60, 0.62])
    row = next(line for line in md.splitlines() if "other: batch_size=64" in line)
    assert f"{want['delta']:+.4f} ± {want['se']:.4f} (n=2)" in row
    # the profile wins on mean validation (0.61 against 0.587) whatever the pairs say
    assert json.loads((tmp_path / "results.json").read_text())["cells"][0]["preferred"] == "profile"

    def preferred(other_vals):
        variants = results["cells"][0]["variants"]
        variants["other: batch_size=64"]["runs"] = [run(s, v) for s, v in enumerate(other_vals)]
        reference_cells._write(tmp_path, results)
        return json.loads((tmp_path / "results.json").read_text())["cells"][0]["preferred"]

    # a higher mean that the pairs do not carry (+0.03 and -0.01: 0.5 SE) leaves the profile
    assert preferred([0.63, 0.61]) == "profile"
    # the same gain on both seeds (+0.03, +0.03) is beyond any multiple of its zero SE
    assert preferred([0.63, 0.65]) == "other: batch_size=64"


def test_backbone_study_reads_runs_and_tables_costs(tmp_path):
    """The study's mAP part reads what `hihpq train` writes (results.json + config.yaml),
    and its table holds every cost row and run row with the figures read."""
    from benchmarks import backbone_study

    run = tmp_path / "lite2"
    run.mkdir()
    TrainConfig().with_overrides(["backbone=efficientnet_lite2", "tail_blocks=1"]).save(
        run / "config.yaml"
    )
    (run / "results.json").write_text(
        json.dumps(
            {
                "map@1000_val_selected": 0.61,
                "map@1000_final": 0.6,
                "val_map_best": 0.62,
                "val_selected_epoch": 9,
                "baselines": {"float": {"class": 0.58}, "faiss_pq": {"class": 0.55}, "below": []},
                "stage_seconds": {"features": 300.0, "train": 120.0},
                "peak_rss_mb": 3072.0,
            }
        )
    )
    row = backbone_study.read_run(run)
    assert (row["backbone"], row["resolution"], row["tail_blocks"]) == (
        "efficientnet_lite2",
        160,
        1,
    )
    assert (row["test_map"], row["val_map"], row["epoch"], row["float"]) == (0.61, 0.62, 9, 0.58)
    cost = {
        "backbone": "efficientnet_lite0",
        "resolution": 160,
        "ms_per_image": 2.0,
        "demo_feature_s": 200.0,
        "tail1_map_elements": 4800,
        "tail1_cache_gb": 0.96,
    }
    text = backbone_study.markdown([cost], [row], {"date": "d", "machine": "m", "threads": 2})
    assert "| efficientnet_lite0 | 160 | 2.00 | 3.3 | 4,800 | 0.96 |" in text
    assert (
        "| efficientnet_lite2 | 160 | 1 | 0.620 | 0.610 | 0.600 | 9 | 0.580 | 0.550 | 7.0 | 3.0 |"
        in text
    )
    assert row["change"] == "backbone=efficientnet_lite2, tail_blocks=1"
    with pytest.raises(FileNotFoundError):
        backbone_study.read_run(tmp_path / "missing")
    # the profile's own run comes from a make bench file: its II / 32-bit HiHPQ seed 0
    bench = tmp_path / "results.json"
    hihpq = _summary_row("II", 32, "hihpq", [0.59, 0.6])
    hihpq["runs"][0].update(val_map_best=0.58, map_final=0.585, val_selected_epoch=18)
    bench.write_text(json.dumps({"rows": [hihpq, _summary_row("II", 32, "float", [0.56])]}))
    cell = backbone_study.read_bench_cell(bench)

    def read_lite2(path):
        return backbone_study.read_bench_cell(path, backbone="efficientnet_lite2")

    assert (cell["test_map"], cell["val_map"], cell["epoch"], cell["float"]) == (
        0.59,
        0.58,
        18,
        0.56,
    )
    assert cell["change"] == "make bench seed 0 (git ?)" and cell["faiss_pq"] is None
    assert read_lite2(bench)["backbone"] == "efficientnet_lite2"
    with pytest.raises(ValueError, match="no HiHPQ seed 5"):
        backbone_study.read_bench_cell(bench, seed=5)


def _summary_row(protocol, bits, method, maps, label=None):
    return {
        "protocol": protocol,
        "bits": bits,
        "method": method,
        "label": label or method,
        "n_seeds": len(maps),
        "map": float(np.mean(maps)),
        "map_std": float(np.std(maps, ddof=1)) if len(maps) > 1 else 0.0,
        "runs": [{"seed": s, "map": m} for s, m in enumerate(maps)],
    }


def test_summary_table_and_targets_from_results():
    """benchmarks.summary: mean ± std (n) where seeds ran, the paper row, and each target
    decided by its figure (the ordering by > 2 SE of the paired seed difference)."""
    from benchmarks import summary

    results = {
        "rows": [
            _summary_row("II", 32, "hihpq", [0.60, 0.62, 0.61], "HiHPQ (full)"),
            _summary_row("II", 32, "euclidean_hier", [0.59, 0.625, 0.60]),
            _summary_row("II", 32, "hihpq_no_hier", [0.55, 0.56, 0.555]),
            _summary_row("II", 32, "faiss_opq", [0.55]),
            _summary_row("II", 32, "float", [0.58]),
            _summary_row("II", 16, "hihpq", [0.55], "HiHPQ (full)"),
            _summary_row("II", 16, "hihpq_no_hier", [0.54]),
        ]
    }
    table = summary.main_table(results)
    assert "| HiHPQ (full) | **0.550** | **0.610 ± 0.010 (3)** |" in table
    assert "*0.633* | *0.652* |" in table
    got = {(t["target"], t["cell"]): t for t in summary.targets(results)}
    assert got[("protocol II / 32 bits ≥ 0.62", "II · 32")]["holds"] is False
    assert got[("HiHPQ ≥ faiss OPQ + 0.05", "II · 32")]["holds"] is True  # +0.060
    assert got[("HiHPQ ≥ float features", "II · 32")]["holds"] is True
    # paired differences +0.01, -0.005, +0.01: mean 0.005, SE 0.005 -> 1 SE
    assert got[("HiHPQ > Euclidean + hierarchy by > 2 SE", "II · 32")]["holds"] is False
    assert got[("HiHPQ > HiHPQ without hierarchy by > 2 SE", "II · 32")]["holds"] is True
    one = got[("HiHPQ > HiHPQ without hierarchy by > 2 SE", "II · 16")]
    assert one["holds"] is None and "one seed" in one["figure"]


def test_summary_without_results_exits_2(tmp_path, capsys):
    from benchmarks import summary

    assert summary.main(["--results", str(tmp_path)]) == 2
    assert "run `make bench` first" in capsys.readouterr().out


def test_digits_folder_is_an_image_folder_the_cli_reads(tmp_path):
    """benchmarks.digits_folder: scikit-learn's bundled digits as FOLDER/<class>/<png>,
    every image once, read back by the folder loader with the right classes and pixels."""
    import numpy as np
    from sklearn.datasets import load_digits

    from benchmarks.digits_folder import NAMES, main
    from hihpq_lib import data as D

    assert main([str(tmp_path / "digits")]) == 0
    ds = D.load_image_folder(tmp_path / "digits")
    digits = load_digits()
    assert len(ds) == len(digits.images) == 1797 and ds.n_classes == 10
    assert sorted(ds.class_names) == sorted(NAMES)
    counts = {name: int((ds.labels == i).sum()) for i, name in enumerate(ds.class_names)}
    assert counts == {NAMES[c]: int((digits.target == c).sum()) for c in range(10)}
    first = D.read_images(ds, np.arange(len(ds))[:1], size=8)[0]
    assert first.shape == (8, 8, 3) and first.max() > 200 and first.min() == 0


def test_opq_row_names_the_width_it_reduced():
    """A concatenation of backbones gives 3,840-d features: the OPQ row says 3840->256,
    not the single backbone's 1280->256; a run that did not record the width keeps 1280."""
    from benchmarks.run_all import aggregate_runs

    def run(**extra):
        return {
            "seed": 0,
            "map": 0.5,
            "map_final": 0.5,
            "train_seconds": 1.0,
            "encode_seconds": 0.1,
            "search_qps": 10.0,
            "rss_peak_mb": 1.0,
            "rss_delta_mb": 0.0,
            "code_bits": 32,
            **extra,
        }

    wide = aggregate_runs("II", 32, "faiss_opq", [run(feature_dim=3840)])
    assert wide["label"] == "faiss OPQ (3840->256)"
    assert aggregate_runs("II", 32, "faiss_opq", [run()])["label"] == "faiss OPQ (1280->256)"
    assert aggregate_runs("II", 32, "faiss_pq", [run(feature_dim=3840)])["label"] == "faiss PQ"


def test_untrained_start_block_normalisation_centres_and_scales_each_block():
    """The study's ``block-normalised`` rows: each row minus the mean, every one of its
    ``m`` contiguous blocks at unit length (checked against torch's normalize); ``m = 1``
    scales the whole centred vector; a block equal to the mean stays zero (no NaN)."""
    from benchmarks.untrained_start import _block_normalised

    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 12)).astype(np.float32)
    mean = x.mean(0)
    x[0, :3] = mean[:3]  # one block exactly at the mean
    out = _block_normalised(mean, 4)(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    ref = torch.nn.functional.normalize(torch.from_numpy(x - mean).double().view(6, 4, 3), dim=-1)
    np.testing.assert_allclose(out, ref.view(6, 12).numpy(), atol=1e-6)
    norms = np.linalg.norm(out.reshape(6, 4, 3), axis=-1)
    assert np.all(norms[0, 0] == 0) and np.allclose(np.delete(norms.ravel(), 0), 1, atol=1e-6)
    whole = _block_normalised(mean, 1)(x)
    np.testing.assert_allclose(np.linalg.norm(whole, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(
        whole * np.linalg.norm(x - mean, axis=1, keepdims=True), x - mean, atol=1e-5
    )


def test_cifar10_folder_writes_the_splits_and_hierarchy_the_loader_reads(tmp_path):
    """benchmarks.cifar10_folder: the first n images of each class from CIFAR-10's training
    and test splits, pixels exact (PNG), and a hierarchy file whose levels the folder
    loader reads (vehicle/animal, then four groups)."""
    if cifar10_archive() is None:
        pytest.skip("HIHPQ_CIFAR10 does not name a CIFAR-10 archive (make test sets it)")
    from benchmarks.cifar10_folder import CHAINS, main
    from hihpq_lib import data as D
    from hihpq_lib.data.taxonomy import auto_levels, read_hierarchy_file

    out = tmp_path / "cifar"
    argv = [str(out), "--source", str(cifar10_archive())]
    assert main([*argv, "--train-per-class", "3", "--query-per-class", "2"]) == 0
    full = D.load_cifar10(cifar10_archive(), progress=False)
    for split, is_train, n in (("train", True, 3), ("val", False, 2)):
        ds = D.load_image_folder(out / split)
        assert len(ds) == 10 * n and sorted(ds.class_names) == sorted(CHAINS)
        for label, name in enumerate(full.class_names):
            rows = np.flatnonzero((full.labels == label) & (full.is_train == is_train))[:n]
            mine = np.flatnonzero(np.asarray(ds.class_names)[ds.labels] == name)
            np.testing.assert_array_equal(D.read_images(ds, mine, size=None), full.images[rows])
    chains = read_hierarchy_file(out / "hierarchy.json", sorted(CHAINS))
    assert {c[1] for c in chains.values()} == {"vehicle", "animal"}
    assert len({c[2] for c in chains.values()}) == 4
    assert auto_levels(chains) == [1, 2]  # what the folder default scores: 2 and 4 groups
    with pytest.raises(SystemExit):
        main([*argv, "--train-per-class", "0"])
