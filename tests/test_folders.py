"""Image folders as first-class data, and class hierarchies of any depth (issue 17, 1-2).

Tiny synthetic folders (a few classes x a few 24 px PNGs) made in tmp_path; the backbone
runs untrained at 32 px through torch, so every test takes seconds.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hihpq_lib import data as D
from hihpq_lib.app import cli, pipeline, prepare
from hihpq_lib.data import images as images_module
from hihpq_lib.data.backbones import build_backbone
from hihpq_lib.data.features import extract_features
from hihpq_lib.learning.config import (
    ConfigError,
    TrainConfig,
    bank_views,
    load_config,
    resolve_num_clusters,
)
from tests.paths import REPO_ROOT
from tests.test_features import DecodedImages

PROFILE = REPO_ROOT / "configs" / "cpu" / "cpu_folder_32bits.yaml"
CLASSES = ("cat", "dog", "car", "bus")

#: A three-level tree of unequal depths: "car" and "bus" stop one level higher.
CHAINS = {
    "cat": ["entity", "animal", "mammal", "feline"],
    "dog": ["entity", "animal", "mammal", "canine"],
    "car": ["entity", "artifact", "vehicle"],
    "bus": ["entity", "artifact", "vehicle"],
}


def image_folder(root: Path, per_class: int, classes=CLASSES, seed: int = 0) -> Path:
    """``root/<class>/<i>.png``: each class a colour plus noise, so classes are separable."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        base = np.array([(c * 70) % 256, (c * 130) % 256, (c * 200) % 256])
        for i in range(per_class):
            noise = rng.integers(-20, 20, (24, 24, 3))
            arr = np.clip(base + noise, 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / name / f"{i:03d}.png")
    return root


def hierarchy_file(path: Path, chains=CHAINS, wordnet: bool = True) -> Path:
    if wordnet:  # the wordnet_hierarchy.json layout
        payload = {c: {"name": c.upper(), "ancestors": a} for c, a in chains.items()}
    else:
        payload = dict(chains)
    path.write_text(json.dumps(payload))
    return path


FAST = [
    "engine=torch",
    "resolution=32",
    "n_views=2",
    "epochs=1",
    "hierarchy_warmup=0",
    "batch_size=16",
    "K=16",
    "bits=8",
    "feat_dim=16",
    "head_hidden=32",
    "topk=50",
]


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def fast_args():
    args = []
    for item in FAST:
        args += ["--set", item]
    return args


# ------------------------------------------------------------------ the folder profile
def test_folder_profile_loads_and_documents_its_keys():
    cfg = load_config(PROFILE)
    assert cfg.dataset == "folder" and cfg.bits == 32
    assert cfg.num_clusters == "auto" and cfg.hierarchy_levels == "auto"
    text = PROFILE.read_text()
    for key in ("dataset", "num_clusters", "hierarchy_levels", "--query-data", "--hierarchy"):
        assert key in text


def test_auto_cluster_rule():
    assert resolve_num_clusters("auto", 10, 5000) == [40, 20, 10]
    assert resolve_num_clusters("auto", 200, 20000) == [800, 400, 200]
    # capped at a tenth of the training images, duplicates dropped
    assert resolve_num_clusters("auto", 200, 5000) == [500, 400, 200]
    assert resolve_num_clusters("auto", 4, 40) == [4]
    assert resolve_num_clusters("auto", 3, 5) == [2]
    assert resolve_num_clusters([7, 3], 200, 10) == [7, 3]
    with pytest.raises(ConfigError, match="num_clusters"):
        TrainConfig().with_overrides(["num_clusters=often"])


def test_config_rejects_both_hierarchy_files_and_query_data_without_folder():
    with pytest.raises(ConfigError, match="not both"):
        TrainConfig().with_overrides(["superclass_file=a.txt", "hierarchy_file=b.json"])
    with pytest.raises(ConfigError, match="dataset=folder"):
        TrainConfig().with_overrides(["query_data=/some/val"])
    with pytest.raises(ConfigError, match="hierarchy_levels"):
        TrainConfig().with_overrides(["hierarchy_levels=[-1]"])


# ------------------------------------------------------------------ hierarchy files
def test_hierarchy_file_both_layouts_and_unequal_depths(tmp_path):
    for wordnet in (True, False):
        path = hierarchy_file(tmp_path / f"h{wordnet}.json", wordnet=wordnet)
        chains = D.read_hierarchy_file(path, list(CLASSES))
        assert chains == CHAINS
    labels = D.level_labels(CHAINS, list(CLASSES), [1, 2, 3])
    to_node, names = labels["depth 1"]
    assert names == ["animal", "artifact"] and to_node.tolist() == [0, 0, 1, 1]
    assert labels["depth 2"][1] == ["mammal", "vehicle"]
    # car and bus have no ancestor at depth 3: each is its own node there
    assert labels["depth 3"][1] == ["feline", "canine", "car", "bus"]


def test_hierarchy_file_missing_class_is_named(tmp_path):
    chains = {k: v for k, v in CHAINS.items() if k != "bus"}
    path = hierarchy_file(tmp_path / "h.json", chains)
    with pytest.raises(ValueError, match=r"no ancestors for 1 class\(es\).*bus"):
        D.read_hierarchy_file(path, list(CLASSES))
    # classes of the file that the data lacks are dropped
    assert set(D.read_hierarchy_file(hierarchy_file(tmp_path / "all.json"), ["cat"])) == {"cat"}


def test_hierarchy_file_bad_entries(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"cat": {"name": "cat"}}))
    with pytest.raises(ValueError, match="list of ancestor names"):
        D.read_hierarchy_file(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        D.read_hierarchy_file(bad)


def test_levels_auto_and_explicit():
    # depth 1 (2 nodes) and depth 2 (2 nodes) have 2..C/2 nodes; depth 0 is the root
    assert D.resolve_levels(CHAINS, "auto") == [1, 2]
    assert D.resolve_levels(CHAINS, [3, 1]) == [1, 3]
    with pytest.raises(ValueError, match="below every ancestor chain"):
        D.resolve_levels(CHAINS, [4])
    deep = {f"c{i}": ["root", f"a{i % 2}", f"b{i % 4}", f"d{i % 8}", f"e{i}"] for i in range(32)}
    # depths 1..3 qualify (2, 4, 8 nodes <= 16), depth 4 has 32 nodes: too many
    assert D.auto_levels(deep) == [1, 2, 3]


# ------------------------------------------------------------------ folders and splits
def test_folder_split_is_recorded_and_named(isolated):
    root = image_folder(isolated / "pets", per_class=20)
    ds = D.load_image_folder(root)
    assert ds.display_name == "pets" and ds.name == "folder"
    s = D.make_splits(ds, seed=0, n_val_per_class=100)
    assert s.meta["rule"] == D.FOLDER_RULE and s.meta["query_source"] == "data folder"
    assert s.sizes()["query"] == 2 * len(CLASSES)  # 10% of the smallest class (20)
    path = D.save_splits(s, isolated / "splits.json")
    saved = json.loads(path.read_text())
    assert saved["sizes"] == s.sizes() and saved["meta"]["title"] == "pets"
    assert D.folder_title(isolated / "tiny" / "train") == "tiny"


def test_query_folder_gives_the_queries(isolated):
    train = image_folder(isolated / "tiny" / "train", per_class=12, seed=1)
    val = image_folder(isolated / "tiny" / "val", per_class=3, seed=2)
    ds = D.load_image_folder(train, query_root=val)
    assert len(ds) == 4 * 15 and ds.display_name == "tiny"
    s = D.make_splits(ds, seed=0, n_val_per_class=100)
    assert s.meta["query_source"] == "query folder" and s.meta["rule"] == D.QUERY_FOLDER_RULE
    q_paths = {ds.images[i] for i in s.query}
    assert all("/val/" in p for p in q_paths) and len(q_paths) == 12
    assert all("/train/" in ds.images[i] for i in s.database)
    assert np.array_equal(s.train, s.database)
    assert s.sizes()["val_query"] == 4  # min(100, 12 // 10) = 1 per class


def test_query_folder_class_mismatch_is_one_clear_error(isolated, capsys):
    train = image_folder(isolated / "d" / "train", per_class=6)
    val = image_folder(isolated / "d" / "val", per_class=2, classes=("cat", "dog", "car", "cow"))
    with pytest.raises(
        ValueError, match="only in the query folder: cow; only in the data folder: bus"
    ):
        D.load_image_folder(train, query_root=val)
    code, _, err = run_cli(capsys, "prepare", PROFILE, "--data", train, "--query-data", val)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "same class" in err


def test_split_folder_root_is_pointed_to_its_train_folder(isolated):
    image_folder(isolated / "d" / "train", per_class=3)
    image_folder(isolated / "d" / "val", per_class=2)
    with pytest.raises(ValueError, match=r"split folders .*--data .*train --query-data .*val"):
        D.load_image_folder(isolated / "d")


def test_cifar10_config_on_a_folder_names_the_fix(isolated, capsys):
    root = image_folder(isolated / "pets", per_class=4)
    code, _, err = run_cli(
        capsys, "prepare", "configs/cpu/cpu_cifar10_ii_32bits.yaml", "--data", root
    )
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert "--set dataset=folder" in lines[0] and "cpu_folder_32bits.yaml" in lines[0]


def test_help_documents_folders(capsys):
    for cmd in ("train", "prepare"):
        with pytest.raises(SystemExit):
            cli.main([cmd, "--help"])
        out = capsys.readouterr().out
        for text in ("--query-data", "--hierarchy", "--superclasses", "dataset=folder"):
            assert text in out, (cmd, text)


# ------------------------------------------------------------------ end to end
def test_folder_profile_prepare_train_evaluate_per_level(isolated, capsys):
    train = image_folder(isolated / "shapes" / "train", per_class=16, seed=3)
    val = image_folder(isolated / "shapes" / "val", per_class=4, seed=4)
    hier = hierarchy_file(isolated / "hierarchy.json")
    data_args = ["--data", train, "--query-data", val, "--hierarchy", hier]
    code, out, err = run_cli(capsys, "prepare", PROFILE, *data_args, *fast_args())
    assert code == 0, err
    assert "'query': 16" in out

    run = isolated / "run"
    code, out, err = run_cli(
        capsys,
        "train",
        PROFILE,
        *data_args,
        *fast_args(),
        "--set",
        "hierarchy_levels=[1, 3]",
        "--out",
        run,
    )
    assert code == 0, err
    res = json.loads((run / "results.json").read_text())
    assert res["dataset"] == "shapes" and res["dataset_kind"] == "folder"
    assert res["protocol"] is None and res["split"].startswith("folder split")
    # auto: [4C, 2C, C] = [16, 8, 4], capped at 64 // 10 = 6
    assert res["num_clusters"] == resolve_num_clusters("auto", 4, 64) == [6, 4]
    assert res["hierarchy"] == {
        "source": "hierarchy_file",
        "levels": {"class": 4, "depth 1": 2, "depth 3": 4},
    }
    levels = res["map@50_levels_val_selected"]
    assert set(levels) == {"class", "depth 1", "depth 3"}
    assert all(0.0 <= v <= 1.0 for v in levels.values())
    assert levels["class"] == res["map@50_val_selected"]
    # depth 3 separates the classes exactly as the class labels do
    assert levels["depth 3"] == pytest.approx(levels["class"])
    pseudo = res["pseudo_hierarchy"]
    assert pseudo["epoch"] == 1 and pseudo["n_train"] == 64
    assert set(pseudo["agreement"]) == {"class", "depth 1", "depth 3"}
    for rows in pseudo["agreement"].values():
        assert [r["n_clusters"] for r in rows] == [6, 4]
        assert all(-1.0 <= r["ari"] <= 1.0 and 0.0 <= r["nmi"] <= 1.0 for r in rows)
    splits = json.loads((run / "splits.json").read_text())
    assert splits["meta"]["query_source"] == "query folder" and splits["sizes"]["query"] == 16
    assert "depth 1" in out and "ARI / NMI" in out

    code, out, err = run_cli(capsys, "evaluate", run, "--json", *data_args)
    assert code == 0, err
    ev = json.loads(out.strip().splitlines()[-1])
    assert ev["dataset"] == "shapes"
    assert ev["map@50_levels_val_selected"] == pytest.approx(levels)
    assert ev["pseudo_hierarchy"]["agreement"]["depth 1"] == pseudo["agreement"]["depth 1"]
    code, out, err = run_cli(
        capsys, "evaluate", run, "--json", *data_args, "--hierarchy-levels", "2"
    )
    assert code == 0, err
    ev = json.loads(out.strip().splitlines()[-1])
    assert set(ev["map@50_levels_val_selected"]) == {"class", "depth 2"}
    code, _, err = run_cli(capsys, "evaluate", run, *data_args, "--hierarchy-levels", "x")
    assert code == 2 and "--hierarchy-levels" in err


def test_evaluate_needs_the_query_folder_again(isolated, capsys):
    train = image_folder(isolated / "s" / "train", per_class=12, seed=5)
    val = image_folder(isolated / "s" / "val", per_class=3, seed=6)
    run = isolated / "run"
    code, _, err = run_cli(
        capsys,
        "train",
        PROFILE,
        "--data",
        train,
        "--query-data",
        val,
        *fast_args(),
        "--out",
        run,
    )
    assert code == 0, err
    code, _, err = run_cli(capsys, "evaluate", run, "--data", train)
    assert code == 2 and "--query-data" in err


def test_superclass_file_reaches_the_run(isolated, capsys):
    root = image_folder(isolated / "pets", per_class=20, seed=7)
    sc = isolated / "super.txt"
    sc.write_text("cat animal\ndog animal\ncar vehicle\nbus vehicle\n")
    run = isolated / "run"
    code, _, err = run_cli(
        capsys,
        "train",
        PROFILE,
        "--data",
        root,
        "--superclasses",
        sc,
        *fast_args(),
        "--out",
        run,
    )
    assert code == 0, err
    res = json.loads((run / "results.json").read_text())
    assert res["dataset"] == "pets"
    assert res["hierarchy"]["levels"] == {"class": 4, "superclass": 2}
    assert set(res["pseudo_hierarchy"]["agreement"]) == {"class", "superclass"}


def test_train_resolves_auto_clusters_without_the_dataset(tmp_path):
    """``training.train`` called directly (benchmarks, notebooks) counts the classes of the
    validation database; the checkpoint records the counts used."""
    import torch

    from hihpq_lib.learning.checkpoint import PSEUDO_HIERARCHY, load_checkpoint
    from hihpq_lib.learning.training import train
    from tests.test_training import small_config, synthetic_data

    data = synthetic_data()
    n_classes = int(torch.unique(data.val_database.labels).numel())
    train(small_config(epochs=2, num_clusters="auto"), data, tmp_path, progress=False)
    used = load_checkpoint(tmp_path / "checkpoint.pt")["config"]["num_clusters"]
    assert used == resolve_num_clusters("auto", n_classes, data.n_train)
    with np.load(tmp_path / PSEUDO_HIERARCHY) as z:
        assert int(z["epoch"]) == 2
        assert [len(np.unique(z[f"level_{i}"])) for i in range(len(used))] == used


def test_prepare_reads_folders_at_the_backbone_size_and_keys_the_cache(isolated, monkeypatch):
    """Issue 17, item 4: folder images are decoded chunk by chunk at the backbone's input
    size (not 224 px); the read size is part of both cache keys, so changing it recomputes
    and never hands back features of the old size."""
    train = image_folder(isolated / "s" / "train", per_class=10, seed=5)
    val = image_folder(isolated / "s" / "val", per_class=2, seed=6)
    cfg = load_config(PROFILE, [*FAST, f"data={train}", f"query_data={val}"])
    counter = DecodedImages(monkeypatch)
    prep = prepare.prepare(cfg, progress=False)
    clean, bank = prepare.read_sizes(cfg, prep.dataset)
    assert (clean, bank) == (32, 40) and counter.sizes == {32, 40} and counter.live == 0

    def keys():
        found = {}
        for meta in sorted((isolated / "cache" / "features").glob("*.json")):
            key = json.loads(meta.read_text())["key"]
            found.setdefault(key["split"].split("-")[0], []).append(key["image_size"])
        return found

    assert keys() == {"clean": [32], "bank": [40]}
    # the clean features are those of the images read at 32 px, through the same backbone
    backbone = build_backbone(cfg.backbone, pretrained=cfg.pretrained)
    pixels = D.read_images(prep.dataset, prep.feat_index, size=32)
    direct = extract_features(backbone, pixels, 32, engine="torch", progress=False)
    assert torch.equal(prep.feats, direct.half())

    monkeypatch.setattr(images_module, "AUGMENT_READ_MARGIN", 1.5)
    counter.sizes.clear()
    again = prepare.prepare(cfg, progress=False)
    assert counter.sizes == {48}  # only the bank is read again, at its new size
    assert sorted(keys()["bank"]) == [40, 48] and keys()["clean"] == [32]
    assert torch.equal(again.feats, prep.feats)
    assert again.bank.shape == prep.bank.shape and not torch.equal(again.bank, prep.bank)


def test_a_concatenation_reuses_each_members_cached_features(isolated, monkeypatch):
    """``backbone: efficientnet_lite1+efficientnet_lite0`` prepares Lite1's and Lite0's
    features and banks side by side, each from the member's own cache entry (a run of
    Lite0 alone computed it: only Lite1 is new), and the encoder that ``search`` and
    ``evaluate`` use gives the stored rows (within float16)."""
    train = image_folder(isolated / "s" / "train", per_class=10, seed=5)
    val = image_folder(isolated / "s" / "val", per_class=2, seed=6)
    common = [*FAST, f"data={train}", f"query_data={val}"]
    alone = prepare.prepare(load_config(PROFILE, common), progress=False)
    cfg = load_config(PROFILE, [*common, "backbone=efficientnet_lite1+efficientnet_lite0"])
    counter = DecodedImages(monkeypatch)
    both = prepare.prepare(cfg, progress=False)
    assert both.feats.shape == (len(alone.feats), 2560)
    assert both.bank.shape == (*alone.bank.shape[:2], 2560)
    assert torch.equal(both.feats[:, 1280:], alone.feats)  # Lite0's, loaded from its entry
    assert torch.equal(both.bank[..., 1280:], alone.bank)
    assert counter.sizes == {32, 40}  # decoded once more: for Lite1 only
    names = {
        json.loads(m.read_text())["key"]["backbone"]
        for m in (isolated / "cache" / "features").glob("*.json")
    }
    assert names == {"efficientnet_lite0", "efficientnet_lite1"}
    lite1 = build_backbone("efficientnet_lite1", pretrained=cfg.pretrained)
    pixels = D.read_images(both.dataset, both.feat_index, size=32)
    direct = extract_features(lite1, pixels, 32, engine="torch", progress=False)
    assert torch.equal(both.feats[:, :1280], direct.half())
    encoded = both.encoder.encode(D.LazyImages(both.dataset, both.feat_index[:6], size=32))
    torch.testing.assert_close(encoded, both.feats[:6].float(), rtol=2e-3, atol=2e-3)


def test_online_path_holds_only_the_training_images(isolated, monkeypatch):
    """The paper's path (``online_augmentation``) on a folder: every step samples the
    training images, so they are held; the validation, query and database images are a
    LazyImages decoded a batch at a time (NUS-WIDE's database at 224 px would be 29 GB),
    with the same features as when read at once."""
    train = image_folder(isolated / "s" / "train", per_class=12, seed=7)
    val = image_folder(isolated / "s" / "val", per_class=3, seed=8)
    cfg = load_config(
        PROFILE,
        [*FAST, "online_augmentation=true", "device=cpu", f"data={train}", f"query_data={val}"],
    )
    prep = prepare.prepare_online(cfg, progress=False)
    prep.online.batch_size = 5
    counter = DecodedImages(monkeypatch)
    lazy = prep.images("database")
    assert isinstance(lazy, D.LazyImages) and counter.decoded == 0
    held = prep.images("train", lazy=False)
    assert isinstance(held, np.ndarray) and held.shape[1:] == (224, 224, 3)
    del held
    feats = prep.split("database").feats
    assert counter.peak <= 5 and counter.decoded == len(prep.splits.database)
    whole = D.read_images(prep.dataset, prep.splits.database, size=224)
    assert torch.equal(feats, prep.online.clean(whole))
    del whole
    # end to end: the training images held, the rest a batch at a time
    base = counter.peak = counter.live
    res = pipeline.run_experiment(cfg, isolated / "run", progress=False, prepared=prep)
    assert counter.peak <= base + len(prep.splits.train) + 5 < base + len(prep.dataset)
    assert 0.0 <= res["map@50_val_selected"] <= 1.0


def test_view_budget_caps_the_bank_in_every_mode(isolated):
    """``view_budget`` bounds the first run of a big folder: the bank (bank mode) and the
    bank maps (tail mode) hold ``max(2, view_budget // N_train)`` views of each image when
    that is below ``n_views``, their cache keys say so, and training samples from them."""
    train = image_folder(isolated / "s" / "train", per_class=10, seed=11)
    val = image_folder(isolated / "s" / "val", per_class=2, seed=12)
    base = [*FAST, "n_views=8", f"data={train}", f"query_data={val}"]
    for budget, expected in (("null", 8), ("120", 3), ("20", 2)):  # 40 training images
        cfg = load_config(PROFILE, [*base, f"view_budget={budget}"])
        prep = prepare.prepare(cfg, progress=False)
        n_train = len(prep.splits.train)
        assert n_train == 40 and bank_views(cfg, n_train) == expected
        assert prep.bank.shape[:2] == (n_train, expected), budget
    keys = [
        json.loads(p.read_text())["key"]
        for p in sorted((isolated / "cache" / "features").glob("folder_bank*.json"))
    ]
    assert sorted(k["n_views"] for k in keys) == [2, 3, 8]
    # the tail mode: the same count of trunk-map views, and a run trains on them
    cfg = load_config(PROFILE, [*base, "view_budget=20", "tail_blocks=1", "threads=1"])
    tail = prepare.prepare_tail(cfg, progress=False)
    assert tail.bank_maps.shape[:2] == (40, 2)
    res = pipeline.run_experiment(cfg, isolated / "run", progress=False, prepared=tail)
    assert 0.0 <= res["map@50_val_selected"] <= 1.0 and res["bank_views"] == 2
    # a run times its own stages: the shared prepared inputs keep only their preparation
    # (a study's seeds used to add up their training seconds)
    assert "train" in res["stage_seconds"] and "train" not in tail.timer.seconds
    assert res["stage_seconds"]["trunk maps"] == round(tail.timer.seconds["trunk maps"], 2)
    with pytest.raises(ConfigError, match="view_budget"):
        load_config(PROFILE, [*base, "view_budget=1"])
