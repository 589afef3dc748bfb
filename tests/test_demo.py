"""Integration: the demo's quick mode on a CIFAR-10 subset (the shared development copy)."""

import json
import math

import pytest

from tests.paths import cifar10_archive

ARCHIVE = cifar10_archive()


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(
    ARCHIVE is None, reason="HIHPQ_CIFAR10 does not name a CIFAR-10 archive (make test sets it)"
)
def test_quick_demo_end_to_end(tmp_path, monkeypatch):
    from hihpq_lib.app.demo import run_demo

    monkeypatch.setenv("HIHPQ_CIFAR10", str(ARCHIVE))
    summary = run_demo(out_dir=tmp_path, quick=True)
    rows = {r["method"].split(" (")[0]: r for r in summary["rows"]}
    assert set(rows) >= {"HiHPQ", "float features", "faiss OPQ"}
    for r in summary["rows"]:
        assert 0.0 <= r["mAP@1000"] <= 1.0 and math.isfinite(r["mAP@1000"])
    # 10 classes: chance level is ~0.1; even the quick run must learn something
    assert rows["HiHPQ"]["mAP@1000"] > 0.15
    for name in (
        "results.json",
        "demo.json",
        "table.md",
        "metrics.jsonl",
        "splits.json",
        "retrieval_grid.png",
        "poincare_disks.png",
        "checkpoint.pt",
        "best.pt",
    ):
        assert (tmp_path / name).is_file(), name
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["n_query"] > 0 and res["val_selected_epoch"] >= 1
    # the saved index answers queries after a reload
    from hihpq_lib.quantization.index import PQIndex

    index = PQIndex.load(tmp_path / "index")
    assert index.ntotal == res["n_database"]


def test_demo_config_full_quick_and_user_overrides():
    from hihpq_lib.learning.config import DEMO_OVERRIDES, QUICK_OVERRIDES, TrainConfig, demo_config

    profile = TrainConfig()
    full, quick = demo_config(), demo_config(quick=True)
    assert full == profile.with_overrides(["name=demo", *DEMO_OVERRIDES])
    # one profile: the demo is the benchmark's II / 32-bit cell (160 px, Lite2)
    assert full.resolution == profile.resolution == 160
    assert full.backbone == "efficientnet_lite2" != quick.backbone
    # the quick subset is the same pipeline shrunk, at 128 px (cheaper CI features)
    assert quick == profile.with_overrides(["name=demo", *QUICK_OVERRIDES])
    assert quick.resolution == 128 and quick.epochs < full.epochs
    # the user's --set comes last and wins
    assert demo_config(overrides=["resolution=128"]).resolution == 128
    assert demo_config(data="/x/cifar").data == "/x/cifar"


def test_demo_is_the_benchmark_cell_ii_32_bits():
    """One CPU profile: `make demo` trains exactly the benchmark's protocol II / 32-bit
    config (seed 0), so the README's demo row and the benchmark table measure the same
    thing; every CIFAR-10 benchmark config shares its backbone and resolution."""
    from pathlib import Path

    from hihpq_lib.learning.config import demo_config, load_config

    root = Path(__file__).resolve().parents[1] / "configs" / "cpu"
    bench = load_config(root / "cpu_cifar10_ii_32bits.yaml").with_overrides(["name=demo"])
    assert bench == demo_config()
    assert demo_config().backbone == "efficientnet_lite2"
    # one CPU profile everywhere: both protocols, every code length
    paths = sorted(root.glob("cpu_cifar10_*.yaml"))
    assert len(paths) == 6
    for path in paths:
        cfg = load_config(path)
        assert (cfg.backbone, cfg.resolution) == (demo_config().backbone, 160), path.name


def test_readme_demo_table_is_the_committed_demo_run():
    """The README's demo table has one source: the run in benchmarks/results/demo/."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    demo = json.loads((root / "benchmarks/results/demo/demo_warm.json").read_text())
    run = json.loads((root / "benchmarks/results/demo/run_results.json").read_text())
    cold = json.loads((root / "benchmarks/results/demo/demo_cold.json").read_text())
    assert [r["mAP@1000"] for r in demo["rows"]] == [r["mAP@1000"] for r in cold["rows"]]
    readme = (root / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| method (CIFAR-10 protocol II, 32 bits") :].split("\n\n")[0]
    cells = [re.findall(r"\|\s*\**([0-9.]+)\**\s*\|\s*$", line) for line in table.splitlines()[2:]]
    shown = [float(c[0]) for c in cells if c]
    assert shown == [round(r["mAP@1000"], 3) for r in demo["rows"]], (shown, demo["rows"])
    epochs = f"epoch {run['val_selected_epoch']} of {run['epochs']}"
    assert epochs in table, f"the README's demo table must say {epochs!r}"


def test_three_lites_profiles_are_the_profiles_with_three_backbones():
    """The long profiles (``configs/cpu/three_lites_cifar10_*.yaml``) differ from the CPU
    profile of the same protocol and code length only in the backbone (and name): every
    other choice stays the profile's."""
    from pathlib import Path

    from hihpq_lib.learning.config import load_config

    root = Path(__file__).resolve().parents[1] / "configs" / "cpu"
    longs = sorted(root.glob("three_lites_cifar10_*.yaml"))
    cells = [p.stem.removeprefix("three_lites_cifar10_") for p in longs]
    assert set(cells) == {f"{p}_{b}bits" for p in ("i", "ii") for b in (16, 32, 64)}, cells
    for path, cell in zip(longs, cells, strict=True):
        long = load_config(path)
        assert long.backbone == "efficientnet_lite2+efficientnet_lite0+efficientnet_lite1"
        profile = load_config(root / f"cpu_cifar10_{cell}.yaml")
        assert long != profile, cell
        back = [f"name={profile.name}", f"backbone={profile.backbone}"]
        assert long.with_overrides(back) == profile


def test_cpu_profile_path_finds_every_cell_and_names_the_profiles_when_one_is_missing(
    tmp_path, monkeypatch
):
    """``config.cpu_profile_path`` (what the benchmark and notebook 07 load) finds the six
    CIFAR-10 profiles of the checkout in either case of the protocol, and a missing cell or
    protocol is a one-line ConfigError that names what there is."""
    from pathlib import Path

    import pytest

    from hihpq_lib.learning.config import ConfigError, cpu_profile_path, load_config

    root = Path(__file__).resolve().parents[1]
    for protocol in ("I", "II", "i", "ii"):
        for bits in (16, 32, 64):
            path = cpu_profile_path(protocol, bits, root=root)
            cfg = load_config(path)
            assert (cfg.protocol, cfg.bits) == (protocol.upper(), bits), path
            assert (
                path == root / "configs" / "cpu" / f"cpu_cifar10_{protocol.lower()}_{bits}bits.yaml"
            )
    with pytest.raises(
        ConfigError, match=r"no CPU profile for protocol II, 48 bits.*cpu_cifar10_ii_32bits\.yaml"
    ):
        cpu_profile_path("II", 48, root=root)
    with pytest.raises(ConfigError, match="protocol must be one of"):
        cpu_profile_path("III", 32, root=root)
    with pytest.raises(ConfigError, match="available: none"):
        cpu_profile_path("I", 32, root=tmp_path)
    # the default root is the project folder (HIHPQ_PROJECT_DIR here)
    (tmp_path / "configs" / "cpu").mkdir(parents=True)
    (tmp_path / "configs" / "cpu" / "cpu_cifar10_i_32bits.yaml").write_text("protocol: I\n")
    monkeypatch.setenv("HIHPQ_PROJECT_DIR", str(tmp_path))
    assert cpu_profile_path("I", 32) == tmp_path / "configs" / "cpu" / "cpu_cifar10_i_32bits.yaml"
