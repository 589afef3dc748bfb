"""Transforms, feature extraction, augmentation banks and the feature cache."""

from __future__ import annotations

import json
import weakref

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from hihpq_lib.data import images as images_module
from hihpq_lib.data.backbones import OnnxBackbone, build_backbone
from hihpq_lib.data.dataset import ImageDataset
from hihpq_lib.data.features import (
    FeatureCache,
    FeatureCacheWarning,
    augmentation_bank,
    extract_features,
    feature_key,
)
from hihpq_lib.data.images import AUGMENT_READ_MARGIN, LazyImages, folder_read_size, read_images
from hihpq_lib.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    augment_batch,
    derive_seed,
    eval_transform,
    training_augmentation,
)
from hihpq_lib.utils.runtime import seed_everything


def _images(n, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny():
    """EfficientNet-Lite0 with fixed random weights: real architecture, fast at 32 px."""
    seed_everything(0)
    return build_backbone("efficientnet_lite0", pretrained=False)


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HIHPQ_CACHE_DIR", str(tmp_path))
    return tmp_path


# ---------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eval_transform_shape_dtype_and_normalisation(dtype):
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    images[1] = 255
    x = eval_transform(images, 64, dtype=dtype)
    assert x.shape == (2, 3, 64, 64) and x.dtype == dtype
    mean = torch.tensor(IMAGENET_MEAN, dtype=dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=dtype).view(3, 1, 1)
    tol = {torch.float32: 1e-6, torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(x[0], (-mean / std).expand(3, 64, 64), rtol=0, atol=tol)
    torch.testing.assert_close(x[1], ((1 - mean) / std).expand(3, 64, 64), rtol=0, atol=tol)


def test_eval_transform_matches_torchvision_resize_and_normalize():
    images = _images(3, 32)
    ours = eval_transform(images, 96, mean=(0.5,) * 3, std=(0.5,) * 3)
    chw = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    theirs = TF.normalize(
        TF.resize(chw, [96], interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
        [0.5] * 3,
        [0.5] * 3,
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_eval_transform_non_square_is_resize_then_centre_crop():
    images = np.zeros((1, 40, 80, 3), dtype=np.uint8)
    images[:, :, 20:60] = 255  # bright centre band, exactly the centre crop at 40 px
    x = eval_transform(images, 40, mean=(0, 0, 0), std=(1, 1, 1))
    assert x.shape == (1, 3, 40, 40)
    torch.testing.assert_close(x, torch.ones_like(x))


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (np.zeros((32, 32, 3), np.uint8), ValueError, r"images\[None\]"),
        (np.zeros((2, 3, 32, 32), np.uint8), ValueError, "channels-last"),
        (np.zeros((2, 32, 32), np.uint8), ValueError, "grayscale"),
        (np.zeros((2, 32, 32, 3), np.float32), TypeError, "uint8"),
        (np.zeros((0, 32, 32, 3), np.uint8), ValueError, "empty"),
        ([[0, 1, 2]], TypeError, "numpy array or torch tensor"),
    ],
)
def test_image_validation_names_problem_and_fix(images, error, match):
    with pytest.raises(error, match=match):
        eval_transform(images, 32)


def test_training_augmentation_is_the_reference_recipe():
    steps = training_augmentation(128).transforms
    crop, flip, jitter, gray, blur = steps[:5]
    assert isinstance(crop, v2.RandomResizedCrop) and tuple(crop.size) == (128, 128)
    assert tuple(crop.scale) == (0.5, 1.0)
    assert crop.ratio == pytest.approx((3 / 4, 4 / 3))
    assert isinstance(flip, v2.RandomHorizontalFlip) and flip.p == 0.5
    assert isinstance(jitter, v2.RandomApply) and jitter.p == 0.7
    cj = jitter.transforms[0]
    assert isinstance(cj, v2.ColorJitter)
    assert cj.brightness == cj.contrast == cj.saturation == pytest.approx((0.6, 1.4))
    assert cj.hue == pytest.approx((-0.1, 0.1))
    assert isinstance(gray, v2.RandomGrayscale) and gray.p == 0.2
    assert isinstance(blur, v2.RandomApply) and blur.p == 0.5
    gb = blur.transforms[0]
    assert isinstance(gb, v2.GaussianBlur) and list(gb.kernel_size) == [3, 3]
    assert list(gb.sigma) == pytest.approx([0.1, 2.0])


def test_augment_batch_deterministic_per_seed_and_independent_of_batching():
    images = _images(5)
    state = torch.get_rng_state()
    a = augment_batch(images, 48, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert a.shape == (5, 3, 48, 48) and a.dtype == torch.float32
    assert torch.equal(a, augment_batch(images, 48, seed=3))
    assert not torch.equal(a, augment_batch(images, 48, seed=4))
    part = augment_batch(images[2:4], 48, seed=3, indices=[2, 3])
    assert torch.equal(part, a[2:4])
    # every image gets its own random parameters
    same = augment_batch(np.repeat(images[:1], 4, axis=0), 48, seed=3)
    assert not torch.equal(same[0], same[1])


def test_augment_batch_seed_forms_and_dtype():
    images = _images(2)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(augment_batch(images, 32, g1), augment_batch(images, 32, g2))
    assert augment_batch(images, 32, 0, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(TypeError, match="non-negative int"):
        augment_batch(images, 32, seed=-1)
    with pytest.raises(ValueError, match="one entry per image"):
        augment_batch(images, 32, seed=0, indices=[0])


def test_derive_seed_differs_across_words():
    seeds = {derive_seed(0, v, i) for v in range(4) for i in range(50)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)


# ---------------------------------------------------------------------- feature extraction


def test_extract_features_torch_matches_direct_forward(tiny):
    images = _images(5)
    feats = extract_features(tiny, images, 32, batch_size=2, engine="torch", progress=False)
    with torch.no_grad():
        direct = tiny(eval_transform(images, 32, mean=tiny.mean, std=tiny.std))
    assert feats.shape == (5, 1280) and feats.dtype == torch.float32
    torch.testing.assert_close(feats, direct, rtol=1e-5, atol=1e-6)


def test_extract_features_onnx_matches_torch(tiny, cache_env):
    images = _images(6, seed=1)
    ref = extract_features(tiny, images, 64, batch_size=4, engine="torch", progress=False)
    got = extract_features(tiny, images, 64, batch_size=4, engine="onnx", progress=False)
    assert list((cache_env / "onnx").glob("*64px.onnx"))
    assert got.dtype == torch.float32
    assert (got - ref).abs().max() / ref.abs().max() < 1e-3
    runner = OnnxBackbone.from_backbone(tiny, 64)
    torch.testing.assert_close(extract_features(runner, images, 64, progress=False), got)


def test_extract_features_validates_arguments(tiny):
    with pytest.raises(ValueError, match="engine must be one of"):
        extract_features(tiny, _images(1), 32, engine="tensorrt", progress=False)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        extract_features(tiny, _images(1), 32, batch_size=0, engine="torch", progress=False)
    with pytest.raises(TypeError, match="resolution must be an int"):
        extract_features(tiny, _images(1), 32.0, engine="torch", progress=False)


def test_augmentation_bank_shape_dtype_determinism(tiny):
    images = _images(4, seed=2)
    kw = dict(n_views=3, resolution=32, engine="torch", progress=False)
    bank = augmentation_bank(tiny, images, seed=0, batch_size=4, **kw)
    assert bank.shape == (4, 3, 1280) and bank.dtype == torch.float16
    assert torch.isfinite(bank).all()
    again = augmentation_bank(tiny, images, seed=0, batch_size=3, **kw)
    torch.testing.assert_close(again.float(), bank.float(), rtol=2e-3, atol=2e-3)
    other = augmentation_bank(tiny, images, seed=1, batch_size=4, **kw)
    assert (other.float() - bank.float()).abs().max() > 1e-2
    assert (bank[:, 0].float() - bank[:, 1].float()).abs().max() > 1e-2  # views differ


def test_augmentation_bank_view_is_augment_batch_through_backbone(tiny):
    images = _images(3, seed=3)
    bank = augmentation_bank(tiny, images, 2, 32, seed=5, engine="torch", progress=False)
    x = augment_batch(images, 32, derive_seed(5, 1), mean=tiny.mean, std=tiny.std)
    with torch.no_grad():
        expected = tiny(x).half()
    torch.testing.assert_close(bank[:, 1], expected, rtol=1e-3, atol=1e-3)


def test_augmentation_bank_onnx_engine(tiny, cache_env):
    images = _images(2, seed=4)
    on = augmentation_bank(tiny, images, 2, 32, seed=0, engine="onnx", progress=False)
    pt = augmentation_bank(tiny, images, 2, 32, seed=0, engine="torch", progress=False)
    torch.testing.assert_close(on.float(), pt.float(), rtol=1e-2, atol=1e-2)


# -------------------------------------------------------------------------------- cache


class Counter:
    def __init__(self, value):
        self.value, self.calls = value, 0

    def __call__(self):
        self.calls += 1
        return self.value.clone()


def _key(**changes):
    key = {
        "dataset": "cifar10",
        "split": "train",
        "backbone": "toy",
        "resolution": 128,
        "weights_id": "w1",
    }
    return {**key, **changes}


def test_cache_hit_returns_identical_tensor_without_compute(tmp_path):
    cache = FeatureCache(tmp_path)
    value = torch.randn(7, 5).half()
    first = cache.get_or_compute(_key(), Counter(value))
    assert torch.equal(first, value)

    def boom():
        raise AssertionError("compute_fn called on a cache hit")

    hit = cache.get_or_compute(_key(), boom)
    assert torch.equal(hit, value) and hit.dtype == torch.float16
    assert _key() in cache
    meta = json.loads(cache.path_for(_key()).with_suffix(".json").read_text())
    assert meta["key"] == _key() and meta["content"] == {"shape": [7, 5], "dtype": "torch.float16"}
    assert not list(tmp_path.glob("*.tmp-*"))


def test_cache_key_is_order_independent_and_changed_key_recomputes(tmp_path):
    cache = FeatureCache(tmp_path)
    compute = Counter(torch.ones(3))
    cache.get_or_compute(_key(), compute)
    cache.get_or_compute(dict(reversed(list(_key().items()))), compute)
    assert compute.calls == 1
    for change in [{"resolution": 64}, {"weights_id": "w2"}, {"n_views": 8, "seed": 0}]:
        assert _key(**change) not in cache
        cache.get_or_compute(_key(**change), compute)
    assert compute.calls == 4
    assert len(list(tmp_path.glob("*.pt"))) == 4
    assert cache.get_or_compute(_key(), compute, recompute=True) is not None
    assert compute.calls == 5


@pytest.mark.parametrize("damage", ["truncate", "garbage", "drop_json", "bad_json", "other_key"])
def test_cache_recomputes_corrupt_or_partial_entries(tmp_path, damage):
    cache = FeatureCache(tmp_path)
    value = torch.arange(1000.0)
    cache.get_or_compute(_key(), Counter(value))
    pt = cache.path_for(_key())
    meta = pt.with_suffix(".json")
    if damage == "truncate":
        pt.write_bytes(pt.read_bytes()[:200])
    elif damage == "garbage":
        pt.write_bytes(b"\x00" * 64)
    elif damage == "drop_json":
        meta.unlink()
    elif damage == "bad_json":
        meta.write_text("{not json")
    elif damage == "other_key":
        data = json.loads(meta.read_text())
        data["key"]["resolution"] = 64
        meta.write_text(json.dumps(data))
    compute = Counter(value)
    with pytest.warns(FeatureCacheWarning, match="recomputing"):
        again = cache.get_or_compute(_key(), compute)
    assert compute.calls == 1 and torch.equal(again, value)
    assert torch.equal(cache.get_or_compute(_key(), Counter(value * 0)), value)  # repaired


def test_cache_validates_keys_and_values(tmp_path):
    cache = FeatureCache(tmp_path)
    with pytest.raises(TypeError, match="non-empty dict"):
        cache.get_or_compute({}, Counter(torch.ones(1)))
    with pytest.raises(TypeError, match="JSON-serialisable"):
        cache.get_or_compute({"x": object()}, Counter(torch.ones(1)))
    with pytest.raises(TypeError, match="return a torch.Tensor"):
        cache.get_or_compute(_key(), lambda: np.ones(3))
    assert _key() not in cache
    # numpy scalars in keys are fine (stored as plain numbers)
    out = cache.get_or_compute({"resolution": np.int64(32)}, Counter(torch.ones(2)))
    assert torch.equal(out, torch.ones(2))
    assert {"resolution": 32} in cache


def test_cache_default_root_and_dict_values(cache_env):
    cache = FeatureCache()
    assert cache.root == cache_env / "features"
    value = {"features": torch.ones(2, 3), "labels": torch.arange(2)}
    cache.get_or_compute(_key(), lambda: value)
    got = cache.get_or_compute(_key(), lambda: None)
    assert set(got) == {"features", "labels"} and torch.equal(got["labels"], value["labels"])


def test_feature_key_with_extract_features_round_trip(tiny, tmp_path):
    images = _images(3)
    cache = FeatureCache(tmp_path)
    key = feature_key("toy", "query", tiny, 32, engine="torch")
    assert key["weights_id"] == tiny.weights_id and key["resolution"] == 32
    calls = []

    def compute():
        calls.append(1)
        return extract_features(tiny, images, 32, engine="torch", progress=False)

    a = cache.get_or_compute(key, compute)
    b = cache.get_or_compute(key, compute)
    assert len(calls) == 1 and torch.equal(a, b)


def test_feature_key_tracks_trainable_parameters(tiny):
    assert "trainable" not in feature_key("toy", "train", tiny, 32)  # frozen
    head = torch.nn.Linear(2, 2)
    head.name, head.weights_id = "linear", "init"
    k1 = feature_key("toy", "train", head, 32)
    with torch.no_grad():
        head.weight.mul_(2.0)
    k2 = feature_key("toy", "train", head, 32)
    assert "trainable" in k1 and k1 != k2


# ------------------------------------------------------ streaming: images read in chunks


class DecodedImages:
    """Counts the images that ``LazyImages`` has decoded and that are still alive.

    Wraps ``hihpq_lib.data.images.read_images`` (what ``LazyImages[a:b]`` calls): every
    array it returns adds its length to ``live`` until the array is garbage collected
    (``weakref.finalize``), so ``peak`` is the largest number of decoded images held at
    once -- by anyone, views and tensors sharing the pixels included.
    """

    def __init__(self, monkeypatch):
        self.live = self.peak = self.decoded = 0
        self.sizes: set = set()
        real = images_module.read_images

        def tracked(dataset, indices=None, *, size=224, progress=False):
            arr = real(dataset, indices, size=size, progress=progress)
            self.live += len(arr)
            self.decoded += len(arr)
            self.peak = max(self.peak, self.live)
            self.sizes.add(size)
            weakref.finalize(arr, self._release, len(arr))
            return arr

        monkeypatch.setattr(images_module, "read_images", tracked)

    def _release(self, n):
        self.live -= n


def _image_files(root, n, seed=0):
    """``n`` PNG files of mixed, non-square shapes in ``root``, as a path-backed dataset."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = ((20, 28), (30, 24), (26, 26))[i % 3]
        path = root / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return ImageDataset(paths, np.arange(n) % 2, ["a", "b"], name="folder")


def test_chunked_features_and_bank_equal_unchunked_bit_for_bit(tiny, tmp_path):
    ds = _image_files(tmp_path / "imgs", 22)
    order = np.arange(22)[::-1].copy()  # any order of items, as prepare's index lists
    pixels = read_images(ds, order, size=36)  # everything at once: the unchunked run
    kw = dict(engine="torch", batch_size=4, progress=False)
    feats = extract_features(tiny, pixels, 32, chunk_size=None, **kw)
    bank = augmentation_bank(tiny, pixels, 3, 32, seed=7, chunk_size=None, **kw)
    # 6 is rounded up to 8 (a multiple of batch_size): the batches stay the same
    for chunk in (6, 8, 12):
        lazy = LazyImages(ds, order, size=36)
        got = extract_features(tiny, lazy, 32, chunk_size=chunk, **kw)
        assert torch.equal(got, feats), chunk
        got_bank = augmentation_bank(tiny, lazy, 3, 32, seed=7, chunk_size=chunk, **kw)
        assert torch.equal(got_bank, bank), chunk
    # a view still is augment_batch of the image at its global index, whatever the chunk
    x = augment_batch(
        pixels[16:20], 32, derive_seed(7, 2), indices=range(16, 20), mean=tiny.mean, std=tiny.std
    )
    with torch.no_grad():
        expected = tiny(x).half()
    torch.testing.assert_close(bank[16:20, 2], expected, rtol=1e-3, atol=1e-3)


def test_chunked_extraction_holds_at_most_one_chunk_of_decoded_images(tiny, tmp_path, monkeypatch):
    ds = _image_files(tmp_path / "imgs", 30, seed=1)
    kw = dict(engine="torch", batch_size=4, progress=False, chunk_size=8)
    counter = DecodedImages(monkeypatch)
    feats = extract_features(tiny, LazyImages(ds, size=32), 32, **kw)
    assert counter.decoded == 30 and 0 < counter.peak <= 8 and counter.live == 0
    counter.decoded = counter.peak = 0
    bank = augmentation_bank(tiny, LazyImages(ds, size=40), 3, 32, **kw)
    # every view of a chunk before the next chunk: each file decoded once, not once a view
    assert counter.decoded == 30 and 0 < counter.peak <= 8 and counter.live == 0
    assert counter.sizes == {32, 40}
    assert feats.shape == (30, 1280) and bank.shape == (30, 3, 1280)
    # without chunks the whole set is decoded at once: what the bound is measured against
    counter.peak = 0
    extract_features(tiny, LazyImages(ds, size=32), 32, **{**kw, "chunk_size": None})
    assert counter.peak == 30


def test_lazy_images_and_read_sizes():
    ds = ImageDataset(np.arange(5 * 48, dtype=np.uint8).reshape(5, 4, 4, 3), [0] * 5, ["a"])
    lazy = LazyImages(ds, [3, 1])
    np.testing.assert_array_equal(lazy[0:2], ds.images[[3, 1]])
    with pytest.raises(TypeError, match="slices"):
        lazy[0]
    with pytest.raises(ValueError, match="size must be a positive int"):
        LazyImages(ds, size=0)
    with pytest.raises(ValueError, match="images is empty"):
        extract_features(None, LazyImages(ds, []), 32, progress=False)
    assert folder_read_size(160) == 160
    assert folder_read_size(160, augment=True) == round(160 * AUGMENT_READ_MARGIN) > 160


def test_chunked_onnx_features_and_bank_equal_unchunked(tiny, tmp_path, cache_env):
    ds = _image_files(tmp_path / "imgs", 10, seed=2)
    pixels = read_images(ds, size=32)
    kw = dict(engine="onnx", batch_size=4, progress=False)
    lazy = LazyImages(ds, size=32)
    assert torch.equal(
        extract_features(tiny, lazy, 32, chunk_size=4, **kw),
        extract_features(tiny, pixels, 32, chunk_size=None, **kw),
    )
    assert torch.equal(
        augmentation_bank(tiny, lazy, 2, 32, seed=3, chunk_size=5, **kw),
        augmentation_bank(tiny, pixels, 2, 32, seed=3, chunk_size=None, **kw),
    )


def test_bank_overflow_is_caught_chunk_by_chunk():
    class Huge(torch.nn.Module):
        name, weights_id, feature_dim = "huge", "none", 2
        mean, std = IMAGENET_MEAN, IMAGENET_STD

        def forward(self, x):
            return torch.full((len(x), 2), 1e6)

    kw = dict(engine="torch", batch_size=2, progress=False, chunk_size=4)
    with pytest.raises(FloatingPointError, match="overflowed float16"):
        augmentation_bank(Huge(), _images(8), 2, 32, **kw)


def test_contains_sees_array_entries_and_refuses_stale_ones_quietly(tmp_path, recwarn):
    """``key in cache`` (what the FIRST RUN notice counts) finds the memory-mapped array
    entries of the tail mode as well as the tensor ones, and calls an entry whose metadata
    names another key missing, without a warning (the load that follows warns once)."""
    cache = FeatureCache(tmp_path)
    arr_key, pt_key = _key(split="maps"), _key()
    assert arr_key not in cache and pt_key not in cache
    cache.get_or_fill_array(arr_key, (4, 3), np.float32, lambda out: out.fill(1.0))
    cache.get_or_compute(pt_key, Counter(torch.ones(2)))
    assert arr_key in cache and pt_key in cache
    meta = cache.path_for(arr_key).with_suffix(".json")
    data = json.loads(meta.read_text())
    data["key"]["resolution"] = 64
    meta.write_text(json.dumps(data))
    assert arr_key not in cache and not recwarn.list
    cache.path_for(pt_key).with_suffix(".json").unlink()
    assert pt_key not in cache
