"""A trainable backbone tail on cached trunk maps (``tail_blocks``, issue 18 item 1).

EfficientNet-Lite0 split before its last MBConv blocks: the tail on the trunk's maps is
the whole backbone at initialisation; the maps' cache key changes with everything that
changes them; a tiny run trains the tail, saves it with the selected epoch and resumes.
"""

import json

import numpy as np
import pytest
import torch

from hihpq_lib.app import cli
from hihpq_lib.app.prepare import maps_key, prepare_tail
from hihpq_lib.data.backbones import EfficientNetLite0, build_backbone
from hihpq_lib.data.backbones.tail import BackboneTail, split_backbone
from hihpq_lib.data.features import FeatureCache, trunk_maps
from hihpq_lib.learning.checkpoint import load_checkpoint
from hihpq_lib.learning.config import ConfigError, TrainConfig
from hihpq_lib.learning.training import train
from hihpq_lib.learning.views import TailViews, tail_batch_size
from tests.paths import REPO_ROOT
from tests.test_folders import fast_args, image_folder

PROFILE = REPO_ROOT / "configs" / "cpu" / "cpu_folder_32bits.yaml"


@pytest.fixture(scope="module")
def lite0():
    return build_backbone("efficientnet_lite0", pretrained=True)


@pytest.mark.parametrize("n", [1, 2])
def test_tail_of_trunk_is_the_backbone_at_init(lite0, n):
    torch.manual_seed(n)
    x = torch.randn(4, 3, 128, 128)
    trunk, tail = split_backbone(lite0, n)
    with torch.no_grad():
        maps = trunk(x)
        got, want = tail(maps), lite0(x)
    assert maps.dtype == torch.float32 and tuple(maps.shape) == (4, 192, 4, 4)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # only the tail's convolutions train; its BatchNorm is frozen and stays in eval mode
    trainable = {k for k, p in tail.named_parameters() if p.requires_grad}
    assert trainable and all("conv" in k for k in trainable)
    assert not any(p.requires_grad for p in trunk.parameters())
    assert not tail.train().training and not trunk.train().training
    # the tail is a copy: training it leaves the backbone untouched
    assert tail.conv_head.weight.data_ptr() != lite0.model.conv_head.weight.data_ptr()


def test_tail_features_do_not_depend_on_the_batch_size(lite0):
    """The validation and database features go through the tail in batches
    (``tail_batch_size``: 128 on the CPU); a row's features are the same in any batch."""
    _, tail = split_backbone(lite0, 1)
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((37, 192, 4, 4)).astype(np.float16)
    whole = TailViews.features(tail, maps, batch_size=37)
    default = TailViews.features(tail, maps)  # 128 rows on the CPU: one batch here
    for bs in (1, 5, 16):
        torch.testing.assert_close(TailViews.features(tail, maps, batch_size=bs), whole)
    torch.testing.assert_close(default, whole)
    assert whole.shape == (37, 1280) and whole.dtype == torch.float32
    assert tail_batch_size(torch.device("cpu")) == 128


def test_trunk_maps_through_onnx_match_torch(lite0, tmp_path, monkeypatch):
    monkeypatch.setenv("HIHPQ_CACHE_DIR", str(tmp_path))
    trunk, _ = split_backbone(lite0, 1)
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    out = {}
    for engine in ("torch", "onnx"):
        out[engine] = np.zeros((3, 2, 192, 2, 2), np.float16)
        trunk_maps(
            trunk, images, out[engine], n_views=2, resolution=64, engine=engine, progress=False
        )
    assert np.abs(out["torch"]).max() > 0
    np.testing.assert_allclose(out["onnx"], out["torch"], atol=2e-2, rtol=1e-2)


def test_trunk_maps_stream_lazy_chunks_bit_for_bit(lite0, tmp_path, monkeypatch):
    """A folder's images are decoded a chunk at a time (LazyImages) and every view of a
    chunk is computed before the next: the same maps, bit for bit, as one in-memory array,
    for the clean maps and the bank's views."""
    from hihpq_lib.data import ImageDataset, LazyImages

    monkeypatch.setenv("HIHPQ_CACHE_DIR", str(tmp_path))
    trunk, _ = split_backbone(lite0, 1)
    images = np.random.default_rng(1).integers(0, 256, (7, 40, 40, 3), dtype=np.uint8)
    ds = ImageDataset(images, [0, 1, 0, 1, 0, 1, 0], ["a", "b"])
    lazy = LazyImages(ds, [6, 0, 3, 1, 5, 2, 4])
    order = images[[6, 0, 3, 1, 5, 2, 4]]
    for n_views in (None, 3):
        shape = (7, 192, 2, 2) if n_views is None else (7, n_views, 192, 2, 2)
        whole, streamed = np.zeros(shape, np.float16), np.zeros(shape, np.float16)
        common = {"n_views": n_views, "resolution": 64, "engine": "torch", "progress": False}
        trunk_maps(trunk, order, whole, batch_size=2, chunk_size=None, **common)
        trunk_maps(trunk, lazy, streamed, batch_size=2, chunk_size=3, **common)
        assert np.abs(whole).max() > 0
        np.testing.assert_array_equal(streamed, whole)


def test_trunk_maps_fill_a_memory_map_and_refuse_float16_overflow(lite0, tmp_path):
    """``out`` is usually a memory map (the cache's): it is filled in place, the same maps
    as an in-memory array; maps beyond float16's range stop the run with one line."""
    trunk, _ = split_backbone(lite0, 1)
    images = np.random.default_rng(2).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    common = {"resolution": 64, "engine": "torch", "progress": False}
    mapped = np.lib.format.open_memmap(
        tmp_path / "maps.npy", mode="w+", dtype=np.float16, shape=(3, 192, 2, 2)
    )
    assert trunk_maps(trunk, images, mapped, **common) is mapped
    mapped.flush()
    whole = trunk_maps(trunk, images, np.zeros((3, 192, 2, 2), np.float16), **common)
    assert np.abs(whole).max() > 0
    np.testing.assert_array_equal(np.load(tmp_path / "maps.npy"), whole)

    class Loud(torch.nn.Module):  # the same trunk, its maps scaled past 65504
        def __init__(self):
            super().__init__()
            self.trunk, self.mean, self.std = trunk, trunk.mean, trunk.std

        def forward(self, x):
            return self.trunk(x) * 1e6

    with pytest.raises(FloatingPointError, match="trunk maps overflowed float16"):
        trunk_maps(Loud(), images, np.zeros((3, 2, 192, 2, 2), np.float16), n_views=2, **common)


def test_split_rejects_other_backbones_and_counts():
    with pytest.raises(ValueError, match="EfficientNet-Lite"):
        BackboneTail(object(), 1)
    with pytest.raises(ValueError, match="tail_blocks"):
        split_backbone(EfficientNetLite0(pretrained=False), 3)


@pytest.mark.parametrize(
    "override, match",
    [
        ({"tail_blocks": 3}, "tail_blocks must be 0, 1 or 2"),
        ({"tail_blocks": 1, "backbone": "vgg16"}, "EfficientNet-Lite"),
        ({"tail_blocks": 1, "online_augmentation": True}, "online_augmentation"),
        (
            {"tail_blocks": 1, "backbone": "efficientnet_lite2+efficientnet_lite0"},
            "not a concatenation",
        ),
    ],
)
def test_config_validates_tail_blocks(override, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**override).validate()
    assert TrainConfig().tail_blocks == 0


def test_maps_cache_key_changes_with_what_changes_the_maps(isolated):
    from hihpq_lib import data as D

    root = image_folder(isolated / "pets", per_class=4)
    ds = D.load_image_folder(root)
    cfg = TrainConfig(dataset="folder", data=str(root), tail_blocks=1)
    idx = np.arange(8)
    trunk, _ = split_backbone(EfficientNetLite0(pretrained=False), 1)
    cache = FeatureCache()
    base = maps_key(cfg, ds, idx, trunk, bank=True)
    paths = {cache.path_for(base)}
    variants = [
        maps_key(TrainConfig(**{**cfg.to_dict(), "resolution": 64}), ds, idx, trunk, bank=True),
        maps_key(TrainConfig(**{**cfg.to_dict(), "n_views": 4}), ds, idx, trunk, bank=True),
        maps_key(TrainConfig(**{**cfg.to_dict(), "seed": 1}), ds, idx, trunk, bank=True),
        maps_key(TrainConfig(**{**cfg.to_dict(), "tail_blocks": 2}), ds, idx, trunk, bank=True),
        maps_key(cfg, ds, idx[:-1], trunk, bank=True),
        maps_key(cfg, ds, idx, trunk, bank=False),
        maps_key(
            cfg, ds, idx, split_backbone(EfficientNetLite0(pretrained=False), 1)[0], bank=True
        ),
    ]
    for key in variants:
        paths.add(cache.path_for(key))
    assert len(paths) == len(variants) + 1
    # weights: a change of one trunk weight changes the key
    with torch.no_grad():
        trunk.conv_stem.weight[0, 0, 0, 0] += 1.0
    assert cache.path_for(maps_key(cfg, ds, idx, trunk, bank=True)) not in paths
    # a stale entry (its stored key differs) is never reused
    calls = []
    arr = cache.get_or_fill_array(base, (2, 3), np.float16, lambda out: calls.append(out.fill(1)))
    assert arr.dtype == np.float16 and float(arr.sum()) == 6.0 and len(calls) == 1
    cache.get_or_fill_array(base, (2, 3), np.float16, lambda out: calls.append(1))
    assert len(calls) == 1
    meta = cache.array_path_for(base).with_suffix(".json")
    stored = json.loads(meta.read_text())
    stored["key"]["seed"] = 99
    meta.write_text(json.dumps(stored))
    with pytest.warns(UserWarning, match="stored key differs"):
        cache.get_or_fill_array(base, (2, 3), np.float16, lambda out: calls.append(out.fill(2)))
    assert len(calls) == 2


TAIL = ["--set", "tail_blocks=1", "--set", "threads=1", "--set", "epochs=2"]


def test_tiny_run_trains_the_tail_and_resumes(isolated, capsys):
    root = image_folder(isolated / "shapes", per_class=12, seed=3)
    code = cli.main([str(a) for a in ["prepare", PROFILE, "--data", root, *fast_args(), *TAIL]])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "trunk maps (48, 192, 1, 1)" in out and "bank maps (" in out
    run = isolated / "run"
    argv = ["train", PROFILE, "--data", root, *fast_args(), *TAIL, "--out", run]
    code = cli.main([str(a) for a in argv])
    _, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads((run / "results.json").read_text())
    assert 0.0 <= res["map@50_val_selected"] <= 1.0
    assert {"trunk maps", "trunk bank maps"} <= set(res["stage_seconds"])
    ck, best = load_checkpoint(run / "checkpoint.pt"), load_checkpoint(run / "best.pt")
    assert ck["backbone"] is not None and best["backbone"] is not None
    # the tail trained: only its convolutions moved from the pretrained weights
    pretrained = split_backbone(build_backbone("efficientnet_lite0"), 1)[1].state_dict()
    assert set(ck["backbone"]) == set(pretrained)
    moved = [k for k, v in ck["backbone"].items() if not torch.equal(v, pretrained[k])]
    assert moved and all("conv" in k for k in moved)

    # `hihpq evaluate` encodes with each model's own tail: the same figures
    code = cli.main(["evaluate", str(run), "--json", "--data", str(root)])
    out, err = capsys.readouterr()
    assert code == 0, err
    ev = json.loads(out.strip().splitlines()[-1])
    for key in ("map@50_final", "map@50_val_selected"):
        assert ev[key] == pytest.approx(res[key]), key

    # killed after one epoch and resumed: the same history and the same tail
    cfg = TrainConfig(**ck["config"])
    run2 = isolated / "run2"
    train(
        cfg, prepare_tail(cfg, progress=False).training_data(), run2, progress=False, stop_after=1
    )
    again = train(
        cfg, prepare_tail(cfg, progress=False).training_data(), run2, resume=True, progress=False
    )
    ck2 = load_checkpoint(run2 / "checkpoint.pt")
    assert again["finished"]
    for key in ("loss", "val_map"):
        assert [h[key] for h in ck2["history"]] == [h[key] for h in ck["history"]]
    for k, v in ck["backbone"].items():
        assert torch.equal(ck2["backbone"][k], v), k
