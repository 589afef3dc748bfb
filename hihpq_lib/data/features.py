"""Backbone features computed once and cached: evaluation features and augmentation banks.

On a CPU the frozen backbone is the expensive part, so it runs once per image (or per
augmented view) and everything downstream trains on cached features:

* :func:`extract_features` -- ``(N, F)`` float32 features of the evaluation transform.
* :func:`augmentation_bank` -- ``(N, V, F)`` float16 features of ``V`` random augmented
  views per training image; each training step later samples two of the ``V`` views per
  image (the reference draws two fresh views per step; a bank of ``V`` views gives
  ``V * (V - 1) / 2`` distinct pairs per image). Memory: ``N * V * F * 2`` bytes, e.g.
  CIFAR-10 training set ``50,000 x 8 x 1280 x 2 B = 1.0 GB``.
* :class:`FeatureCache` -- tensors on disk keyed by a dict that identifies the content
  (:func:`feature_key`: a digest of the images, the backbone and a digest of its
  weights, the resolution, the transform, the feature code's version, and for banks
  n_views and seed). The key is hashed into the file name *and* stored beside the
  tensor, and compared on load, so a changed key recomputes and never reuses stale
  features.

Both take the images as an array or as a :class:`~hihpq_lib.data.images.LazyImages`
(files decoded on demand) and work through them ``chunk_size`` images at a time (default
:data:`DEFAULT_CHUNK_SIZE`): a lazy source is decoded one chunk at a time and each chunk is
released before the next is read, so at most one chunk of pixels is held (the bank runs
all its views over a chunk before moving on, so each file is decoded once). Chunks are
rounded up to a multiple of ``batch_size``, so the backbone sees the same batches whatever
the chunk size: chunked and unchunked runs give identical features, bit for bit.

Throughput (EfficientNet-Lite0, 2 CPU threads, 128 px, batches of 256, on a shared
2-core machine): 35-80 img/s in torch eager, 220-620 img/s through ONNX Runtime
(``engine="onnx"``, the default). The training augmentation runs at ~500 img/s on one
thread, so a bank costs roughly 4-5 ms per view: 50,000 x 8 views in ~30 min.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import secrets
import warnings
import zipfile
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from hihpq_lib.data.backbones import OnnxBackbone, weights_fingerprint
from hihpq_lib.data.images import LazyImages
from hihpq_lib.data.transforms import (
    DEFAULT_RESOLUTION,
    _check_resolution,
    _seed_from,
    augment_batch,
    check_images,
    derive_seed,
    eval_transform,
)
from hihpq_lib.utils.atomic import atomic_write, check_writable, clean_stale_tmp, file_mode
from hihpq_lib.utils.runtime import cache_dir, progress_bar

__all__ = [
    "ENGINES",
    "DEFAULT_CHUNK_SIZE",
    "FeatureCacheWarning",
    "FeatureCache",
    "feature_key",
    "FEATURE_CODE_VERSION",
    "extract_features",
    "augmentation_bank",
    "trunk_maps",
    "MAPS_CODE_VERSION",
]

#: Inference engines accepted by :func:`extract_features` and :func:`augmentation_bank`.
ENGINES = ("onnx", "torch")

#: Images decoded and held at once by :func:`extract_features` and
#: :func:`augmentation_bank` (rounded up to a multiple of ``batch_size``): 1,024 images of
#: 160 px are 79 MB of uint8 pixels.
DEFAULT_CHUNK_SIZE = 1024


# ----------------------------------------------------------------------------- runners


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _runner(backbone, resolution: int, engine: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable ``(B, 3, R, R) float -> (B, F)`` for the chosen engine."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if isinstance(backbone, OnnxBackbone) or engine == "onnx":
        return OnnxBackbone.from_backbone(backbone, resolution)
    if not isinstance(backbone, nn.Module):
        raise TypeError(
            f"backbone must be an nn.Module from build_backbone or an OnnxBackbone, "
            f"got {type(backbone).__name__}"
        )
    return backbone


def _check_source(images) -> int:
    """Validate an array of images or a :class:`LazyImages`; return its length."""
    if isinstance(images, LazyImages):
        if len(images) == 0:
            raise ValueError("images is empty (N = 0); pass at least one image")
        return len(images)
    check_images(images)
    return len(images)


def _chunks(images, chunk_size: int | None, batch_size: int):
    """``(start, stop, pixels)`` for consecutive chunks of ``images``.

    ``chunk_size`` (``None``: everything at once) is rounded up to a multiple of
    ``batch_size``, so batches start at the same indices as without chunks. A lazy source
    is decoded here, one chunk per step; the caller must drop its reference to a chunk
    before asking for the next, or two are held at once.
    """
    n = len(images)
    if chunk_size is None:
        step = n
    else:
        chunk_size = _check_positive_int(chunk_size, "chunk_size")
        step = -(-chunk_size // batch_size) * batch_size
    for start in range(0, n, step):
        stop = min(start + step, n)
        pixels = images[start:stop]
        check_images(pixels)
        yield start, stop, pixels
        del pixels  # or this frame would hold it while the next chunk is decoded


def _run(
    runner: Callable[[torch.Tensor], torch.Tensor],
    images,
    prepare: Callable[[object, int, int], torch.Tensor],
    out: torch.Tensor,
    view: int | None,
    batch_size: int,
    bar,
) -> None:
    """Fill ``out[i]`` (or ``out[i, view]``) with ``runner(prepare(images[a:b], a, b))``."""
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            stop = min(start + batch_size, len(images))
            feats = runner(prepare(images[start:stop], start, stop))
            if view is None:
                out[start:stop] = feats
            else:
                out[start:stop, view] = feats
            bar.update(stop - start)


def _model_input(batch, model, resolution: int, view_seed, start: int) -> torch.Tensor:
    """The float32 input of ``model`` for the images ``batch`` (global indices ``start``,
    ``start + 1``, ...): the evaluation transform when ``view_seed`` is None, else the
    augmented view drawn with ``view_seed`` (per image, from its global index)."""
    if view_seed is None:
        return eval_transform(
            batch, resolution, mean=model.mean, std=model.std, dtype=torch.float32
        )
    return augment_batch(
        batch,
        resolution,
        view_seed,
        indices=range(start, start + len(batch)),
        mean=model.mean,
        std=model.std,
        dtype=torch.float32,
    )


def _fill(
    runner,
    model,
    images,
    out: torch.Tensor,
    views,
    *,
    resolution,
    batch_size,
    chunk_size,
    bar,
    overflow: str | None = None,
) -> None:
    """Fill ``out`` from ``images`` a chunk at a time (:func:`_chunks`), every view of a
    chunk before the next chunk is decoded, so each image is decoded once.

    ``views``: ``(view, view_seed)`` pairs; ``out[i]`` (``view`` None) or ``out[i, view]``
    gets ``runner`` of :func:`_model_input` (the evaluation transform when ``view_seed``
    is None). ``overflow``: raised as a FloatingPointError when a chunk of ``out`` is not
    finite (a float16 store), checked a chunk at a time: ``isfinite`` of the whole would
    transiently take about 2.4x its size (1 GB for a 20,000 x 8 x 1280 bank).
    """
    for first, last, pixels in _chunks(images, chunk_size, batch_size):
        for view, view_seed in views:

            def prepare(batch, start, stop, view_seed=view_seed, first=first):
                return _model_input(batch, model, resolution, view_seed, first + start)

            _run(runner, pixels, prepare, out[first:last], view, batch_size, bar)
        del pixels  # release this chunk before the next one is decoded
        if overflow is not None and not torch.isfinite(out[first:last]).all():
            raise FloatingPointError(overflow)


class _EvalMode:
    """Put a torch backbone in eval mode for the duration; restore its mode after."""

    def __init__(self, backbone):
        self.module = backbone if isinstance(backbone, nn.Module) else None

    def __enter__(self):
        if self.module is not None:
            self.was_training = self.module.training
            self.module.eval()

    def __exit__(self, *exc):
        if self.module is not None:
            self.module.train(self.was_training)


def extract_features(
    backbone,
    images,
    resolution: int = DEFAULT_RESOLUTION,
    batch_size: int = 256,
    engine: str = "onnx",
    progress: bool = True,
    *,
    desc: str = "features",
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """Backbone features of the evaluation transform of each image.

    Parameters
    ----------
    backbone : nn.Module from :func:`~hihpq_lib.data.backbones.build_backbone`, or OnnxBackbone
        Its ``mean``/``std`` normalise the images.
    images : (N, H, W, 3) uint8, numpy array (memory maps work) or torch tensor; or LazyImages
        A :class:`~hihpq_lib.data.images.LazyImages` is decoded ``chunk_size`` images at
        a time.
    resolution : int
        Input side in pixels (reference 224; default 128).
    batch_size : int
    engine : {"onnx", "torch"}
        ``"onnx"`` exports once (cached under ``cache_dir()/onnx``) and runs ONNX
        Runtime; ``"torch"`` runs the module in eval mode under ``inference_mode``.
    progress : bool
        Show a tqdm bar.
    chunk_size : int or None
        Images held at once (rounded up to a multiple of ``batch_size``); ``None``: all.
        The result does not depend on it.

    Returns
    -------
    (N, F) float32 tensor

    Notes
    -----
    Images are converted batch by batch, so the full float array is never held.
    """
    n = _check_source(images)
    resolution = _check_resolution(resolution)
    batch_size = _check_positive_int(batch_size, "batch_size")
    runner = _runner(backbone, resolution, engine)
    out = torch.empty(n, int(backbone.feature_dim), dtype=torch.float32)
    with (
        progress_bar(total=n, desc=desc, unit="img", disable=not progress) as bar,
        _EvalMode(backbone),
    ):
        _fill(
            runner,
            backbone,
            images,
            out,
            [(None, None)],
            resolution=resolution,
            batch_size=batch_size,
            chunk_size=chunk_size,
            bar=bar,
        )
    return out


def augmentation_bank(
    backbone,
    images,
    n_views: int = 8,
    resolution: int = DEFAULT_RESOLUTION,
    seed: int | torch.Generator = 0,
    engine: str = "onnx",
    batch_size: int = 256,
    progress: bool = True,
    *,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """Features of ``n_views`` random augmented views of every image, through the frozen
    backbone once.

    View ``v`` of image ``i`` is :func:`~hihpq_lib.data.transforms.augment_batch` with seed
    ``derive_seed(seed, v)`` and index ``i``: deterministic for a seed, and independent
    of ``chunk_size``, of ``batch_size`` and of the engine's batching.

    Parameters
    ----------
    backbone : nn.Module from ``build_backbone``, or OnnxBackbone
    images : (N, H, W, 3) uint8 array or tensor, or LazyImages
    n_views : int
        ``V``; memory is ``N * V * F * 2`` bytes (50,000 x 8 x 1280 x 2 B = 1.0 GB).
    resolution : int
        Reference 224 px (VGG-16); default 128.
    seed : int or torch.Generator
    engine : {"onnx", "torch"}
    batch_size : int
    progress : bool
    chunk_size : int or None
        Images held at once (rounded up to a multiple of ``batch_size``); every view of a
        chunk is computed before the next chunk is read, so each image is decoded once.
        ``None``: all. The bank does not depend on it.

    Returns
    -------
    (N, V, F) float16 tensor
    """
    n = _check_source(images)
    resolution = _check_resolution(resolution)
    n_views = _check_positive_int(n_views, "n_views")
    batch_size = _check_positive_int(batch_size, "batch_size")
    base = _seed_from(seed)
    runner = _runner(backbone, resolution, engine)
    bank = torch.empty(n, n_views, int(backbone.feature_dim), dtype=torch.float16)
    view_seeds = [derive_seed(base, view) for view in range(n_views)]
    with (
        progress_bar(
            total=n * n_views,
            desc=f"augmentation bank ({n_views} views)",
            unit="view",
            disable=not progress,
        ) as bar,
        _EvalMode(backbone),
    ):
        _fill(
            runner,
            backbone,
            images,
            bank,
            list(enumerate(view_seeds)),
            resolution=resolution,
            batch_size=batch_size,
            chunk_size=chunk_size,
            bar=bar,
            overflow="augmentation bank overflowed float16 (|feature| > 65504); this backbone's "
            "features are too large for a float16 bank -- rescale them or store float32",
        )
    return bank


def trunk_maps(
    trunk,
    images,
    out: np.ndarray,
    *,
    n_views: int | None = None,
    resolution: int = DEFAULT_RESOLUTION,
    seed: int | torch.Generator = 0,
    engine: str = "onnx",
    batch_size: int = 256,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
) -> np.ndarray:
    """Fill ``out`` with the frozen trunk's output maps (the tail's input), float16.

    ``n_views=None``: the evaluation transform of every image, ``out`` is
    ``(N, C, h, w)``. ``n_views=V``: the ``V`` augmented views of
    :func:`augmentation_bank` (same seeds, same views), ``out`` is ``(N, V, C, h, w)``.
    ``out`` is typically a memory map (:meth:`FeatureCache.get_or_fill_array`), so the
    maps of a whole dataset never need to fit in memory; a :class:`LazyImages` source is
    decoded ``chunk_size`` images at a time (every view of a chunk before the next), so
    neither do the images. The maps do not depend on ``chunk_size``.

    Parameters
    ----------
    trunk : :class:`~hihpq_lib.data.backbones.tail.BackboneTrunk` (or an OnnxBackbone
        exported from one)
    images : (N, H, W, 3) uint8, or :class:`LazyImages`
    out : float16 array of the shape above
    n_views, resolution, seed, engine, batch_size, chunk_size, progress
        As in :func:`augmentation_bank` / :func:`extract_features`.

    Returns
    -------
    ``out``
    """
    n = _check_source(images)
    resolution = _check_resolution(resolution)
    batch_size = _check_positive_int(batch_size, "batch_size")
    runner = _runner(trunk, resolution, engine)
    if n_views is None:
        views, desc = [(None, None)], "trunk maps"
    else:
        base = _seed_from(seed)
        n_views = _check_positive_int(n_views, "n_views")
        views = [(v, derive_seed(base, v)) for v in range(n_views)]
        desc = f"trunk maps ({n_views} views)"
    with (
        progress_bar(total=n * len(views), desc=desc, unit="img", disable=not progress) as bar,
        _EvalMode(trunk),
    ):
        _fill(  # torch.from_numpy shares out's memory: a memory map is filled in place
            runner,
            trunk,
            images,
            torch.from_numpy(out),
            views,
            resolution=resolution,
            batch_size=batch_size,
            chunk_size=chunk_size,
            bar=bar,
            overflow="trunk maps overflowed float16 (|value| > 65504); store them in float32",
        )
    return out


# ------------------------------------------------------------------------------- cache


class FeatureCacheWarning(UserWarning):
    """A cache entry was unreadable or stale and is being recomputed."""


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (Path, torch.dtype)):
        return str(value)
    raise TypeError(
        f"cache key values must be JSON-serialisable (str, int, float, bool, None, lists, "
        f"dicts), got {type(value).__name__}: {value!r}; convert it to a string"
    )


def _canonical(key: Mapping) -> str:
    if not isinstance(key, Mapping) or not key:
        raise TypeError(f"cache key must be a non-empty dict, got {key!r}")
    bad = [k for k in key if not isinstance(k, str)]
    if bad:
        raise TypeError(f"cache key names must be strings, got {bad}")
    return json.dumps(dict(key), sort_keys=True, separators=(",", ":"), default=_json_default)


#: Version of the code that turns images into cached features (the evaluation transform,
#: the augmentation recipe, the ONNX export, the batching). Bump it when any of them
#: changes what a feature holds, so that older cache entries are recomputed.
FEATURE_CODE_VERSION = 2

#: Version of the code that computes cached trunk maps (:func:`trunk_maps`, the split
#: of :mod:`hihpq_lib.data.backbones.tail`); part of their cache key.
MAPS_CODE_VERSION = 1


def feature_key(dataset: str, split: str, backbone, resolution: int, **extra) -> dict:
    """The standard cache key for features of ``backbone`` on ``dataset``/``split``.

    The key identifies the content, not names: ``extra`` should carry ``content=`` (a
    digest of the images, :func:`~hihpq_lib.data.content_fingerprint`), and the key holds
    the backbone's name, ``weights_id`` and (for a torch module) a digest of all its
    weights, the resolution, the normalisation of the transform and
    :data:`FEATURE_CODE_VERSION`. Extra entries (``n_views=8, seed=0`` for banks,
    ``engine``, ...) are added as given. A backbone with trainable parameters (VGG-16
    with ``trainable_layer_num > 0``) also gets ``trainable``: the fingerprint of those
    parameters now, so features are not reused after they change.

    >>> class B: name, weights_id, mean, std = "efficientnet_lite0", "w1", (0.5,), (0.5,)
    >>> key = feature_key("cifar10", "train", B(), 128, n_views=8, seed=0)
    >>> key["backbone"], key["resolution"], key["transform"], key["n_views"]
    ('efficientnet_lite0', 128, {'mean': [0.5], 'std': [0.5]}, 8)
    """
    key = {
        "dataset": str(dataset),
        "split": str(split),
        "backbone": str(backbone.name),
        "weights_id": str(backbone.weights_id),
        "resolution": int(resolution),
        "transform": {
            name: [round(float(v), 6) for v in np.asarray(getattr(backbone, name)).reshape(-1)]
            for name in ("mean", "std")
            if getattr(backbone, name, None) is not None
        },
        "code_version": FEATURE_CODE_VERSION,
    }
    if isinstance(backbone, nn.Module):
        key["weights_digest"] = weights_fingerprint(backbone, length=32)
        tuned = weights_fingerprint(backbone, trainable_only=True)
        if tuned is not None:
            key["trainable"] = tuned
    return {**key, **extra}


class FeatureCache:
    """Tensors on disk, keyed by a dict; stale or broken entries are recomputed.

    Each entry is two files in ``root``: ``<prefix>-<hash>.pt`` (``torch.save``; loaded
    with ``weights_only=True``) and ``<prefix>-<hash>.json`` holding the full key, the
    tensor shape/dtype and the creation time. ``hash`` is the SHA-256 of the canonical
    JSON of the key; on load the stored key must equal the requested one. Both files are
    written atomically (temporary file + ``os.replace``), the JSON last, so an
    interrupted write leaves no entry that looks complete.

    Parameters
    ----------
    root : path, optional
        Default ``cache_dir() / "features"`` (``HIHPQ_CACHE_DIR``).

    Examples
    --------
    >>> import tempfile
    >>> cache = FeatureCache(tempfile.mkdtemp())
    >>> key = {"dataset": "toy", "split": "train", "resolution": 32}
    >>> cache.get_or_compute(key, lambda: torch.arange(3.0))
    tensor([0., 1., 2.])
    >>> cache.get_or_compute(key, lambda: 1 / 0)  # cached: compute_fn is not called
    tensor([0., 1., 2.])
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else cache_dir() / "features"

    def __repr__(self) -> str:
        return f"FeatureCache(root='{self.root}')"

    def path_for(self, key: Mapping) -> Path:
        """The ``.pt`` file for ``key`` (the ``.json`` sits beside it)."""
        canonical = _canonical(key)
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:20]
        parts = [str(key[k]) for k in ("dataset", "split", "backbone", "resolution") if k in key]
        prefix = re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(parts)).strip("_")[:60] or "features"
        return self.root / f"{prefix}-{digest}.pt"

    def _matching_meta(self, key: Mapping, path: Path, *, quiet: bool = False) -> dict | None:
        """The metadata beside ``path`` if it is readable and stores ``key``, else ``None``
        (with a warning when a file is there but unreadable or for another key, unless
        ``quiet``)."""
        warn = (lambda *a: None) if quiet else self._warn
        meta_path = path.with_suffix(".json")
        if not path.exists() and not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            warn(path, f"metadata unreadable ({type(exc).__name__})")
            return None
        stored = meta.get("key") if isinstance(meta, dict) else object()
        try:
            same = json.dumps(stored, sort_keys=True, separators=(",", ":")) == _canonical(key)
        except TypeError:
            same = False
        if not same:
            warn(path, "stored key differs from the requested key")
            return None
        return meta

    def load(self, key: Mapping):
        """The cached value for ``key``, or ``None`` if absent, stale or unreadable."""
        path = self.path_for(key)
        meta = self._matching_meta(key, path)
        if meta is None:
            return None
        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
        except (
            OSError,
            RuntimeError,
            EOFError,
            ValueError,
            pickle.UnpicklingError,
            zipfile.BadZipFile,
        ) as exc:
            self._warn(path, f"tensor file unreadable ({type(exc).__name__}: {exc})")
            return None
        if _describe(value) != meta.get("content"):
            self._warn(path, "tensor shape/dtype differ from the metadata")
            return None
        return value

    def save(self, key: Mapping, value) -> Path:
        """Store ``value`` (a tensor, or a dict/list of tensors) under ``key``; atomic."""
        canonical = _canonical(key)
        content = _describe(value)
        if content is None:
            raise TypeError(
                f"FeatureCache stores tensors or dicts/lists of tensors, got "
                f"{type(value).__name__}; return a torch.Tensor from compute_fn"
            )
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "key": json.loads(canonical),
            "content": content,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
        }
        atomic_write(path, lambda f: torch.save(value, f))
        atomic_write(
            path.with_suffix(".json"),
            lambda f: f.write(json.dumps(meta, indent=1, sort_keys=True).encode()),
        )
        return path

    def _ready_to_write(self) -> None:
        """Before computing a missing entry: a read-only cache fails now (one line naming
        the fix), not after minutes of feature extraction; leftovers of killed writes go."""
        check_writable(
            self.root,
            "feature cache folder",
            "set HIHPQ_CACHE_DIR (or HIHPQ_DATA_DIR) to a writable folder",
        )
        clean_stale_tmp(self.root)

    def get_or_compute(
        self, key: Mapping, compute_fn: Callable[[], object], *, recompute: bool = False
    ):
        """Return the cached value for ``key``, else ``compute_fn()`` (then cached).

        Parameters
        ----------
        key : dict of JSON-serialisable values
            E.g. :func:`feature_key` ``(dataset, split, backbone, resolution, ...)``.
        compute_fn : callable with no arguments returning a tensor (or dict of tensors)
        recompute : bool
            Ignore any cached value.
        """
        if not callable(compute_fn):
            raise TypeError(f"compute_fn must be callable, got {type(compute_fn).__name__}")
        if not recompute:
            value = self.load(key)
            if value is not None:
                return value
        self._ready_to_write()
        value = compute_fn()
        self.save(key, value)
        return value

    def array_path_for(self, key: Mapping) -> Path:
        """The ``.npy`` file of an array entry (:meth:`get_or_fill_array`) for ``key``."""
        return self.path_for(key).with_suffix(".npy")

    def load_array(self, key: Mapping) -> np.ndarray | None:
        """The cached array for ``key``, memory-mapped read-only; ``None`` if absent or
        stale (the stored key, shape or dtype differ)."""
        path = self.array_path_for(key)
        meta = self._matching_meta(key, path)
        if meta is None:
            return None
        try:
            value = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            self._warn(path, f"array file unreadable ({type(exc).__name__}: {exc})")
            return None
        if meta.get("content") != {"shape": list(value.shape), "dtype": str(value.dtype)}:
            self._warn(path, "array shape/dtype differ from the metadata")
            return None
        return value

    def get_or_fill_array(
        self,
        key: Mapping,
        shape: tuple[int, ...],
        dtype,
        fill_fn: Callable[[np.ndarray], object],
        *,
        recompute: bool = False,
    ) -> np.ndarray:
        """A memory-mapped ``.npy`` array for ``key``: cached, else ``fill_fn(out)`` fills a
        new one of ``shape``/``dtype`` on disk (then cached).

        The array is written to a temporary file and renamed, and its ``.json`` (key,
        shape, dtype) is written last, so an interrupted fill leaves no entry that looks
        complete. Returns the array memory-mapped read-only.
        """
        if not callable(fill_fn):
            raise TypeError(f"fill_fn must be callable, got {type(fill_fn).__name__}")
        if not recompute:
            value = self.load_array(key)
            if value is not None and value.shape == tuple(shape):
                return value
        self._ready_to_write()
        canonical = _canonical(key)
        path = self.array_path_for(key)
        tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
            fill_fn(out)
            out.flush()
            content = {"shape": list(out.shape), "dtype": str(out.dtype)}
            del out
            os.chmod(tmp, file_mode())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        meta = {
            "key": json.loads(canonical),
            "content": content,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write(
            path.with_suffix(".json"),
            lambda f: f.write(json.dumps(meta, indent=1, sort_keys=True).encode()),
        )
        return np.load(path, mmap_mode="r", allow_pickle=False)

    def __contains__(self, key: Mapping) -> bool:
        """Whether an entry for ``key`` is stored (a value file, ``.pt`` or ``.npy``, and its
        metadata naming ``key``), without reading the value: what the FIRST RUN notice
        counts. A value that then fails to load is recomputed as if absent."""
        return any(
            p.is_file() and self._matching_meta(key, p, quiet=True) is not None
            for p in (self.path_for(key), self.array_path_for(key))
        )

    @staticmethod
    def _warn(path: Path, reason: str) -> None:
        warnings.warn(
            f"feature cache entry {path.name}: {reason}; recomputing",
            FeatureCacheWarning,
            stacklevel=4,
        )


def _describe(value):
    """JSON description (shape/dtype) of a tensor or a dict/list of tensors; None if not."""
    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, Mapping) and value:
        parts = {str(k): _describe(v) for k, v in value.items()}
        return None if any(p is None for p in parts.values()) else parts
    if isinstance(value, (list, tuple)) and value:
        parts = [_describe(v) for v in value]
        return None if any(p is None for p in parts) else parts
    return None
