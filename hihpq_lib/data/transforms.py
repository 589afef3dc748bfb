"""Image transforms: the evaluation transform and the reference's training augmentation.

Images enter the library as ``uint8`` arrays of shape ``(N, H, W, 3)`` (numpy or torch,
channels last, RGB). Everything here works on torch tensors in batches, so the cost
per image stays small next to the backbone.

Two transforms:

* :func:`eval_transform` -- resize to ``resolution`` (bilinear, antialiased), scale to
  ``[0, 1]``, normalise with the backbone's mean/std. The reference
  (``zexuanqiu/HiHPQ``, ``data.py``) used ``Resize(224)`` for CIFAR-10 (and
  ``Resize(256) + CenterCrop(224)`` for Flickr25K / NUS-WIDE); we resize the shorter side
  to ``resolution`` and centre-crop, which is the same for square images. Image files
  reach it already read at a square size (:mod:`hihpq_lib.data.images`): at 224 px
  (``image_geometry: square``), or as ``Resize(256) + CenterCrop(224)`` (``reference``,
  :func:`~hihpq_lib.data.images.reference_read_size`), which this transform then leaves
  as it is.
* :func:`augment_batch` -- the reference's SimCLR-style recipe (``TwoCropsTransform``)::

      RandomResizedCrop(size, scale=(0.5, 1.0))          # ratio (3/4, 4/3), bilinear
      RandomHorizontalFlip(p=0.5)
      RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.7)
      RandomGrayscale(p=0.2)
      GaussianBlur(kernel 3, sigma ~ U(0.1, 2.0)) with p=0.5
      ToTensor + Normalize(mean, std)

  implemented with :mod:`torchvision.transforms.v2` on ``uint8`` tensors, in the same
  order. The reference worked at **224 px on VGG-16**; on a CPU we default to
  **160 px** (CIFAR-10's 32 px images are upsampled either way). The blur kernel stays
  3 px, so at 160 px it blurs relatively more than at 224 px.

Determinism: the random draws for image ``i`` come from a torch RNG seeded with
``(seed, indices[i])`` only, so a view does not depend on the batch size, on the other
images in the batch, or on the global RNG state (which is left untouched).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from hihpq_lib.utils.optional import LazyModule

#: torchvision's transforms v2 (the ``data`` extra), imported at first use.
v2 = LazyModule("torchvision.transforms.v2", "data")

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INCEPTION_MEAN",
    "INCEPTION_STD",
    "REFERENCE_RESOLUTION",
    "DEFAULT_RESOLUTION",
    "check_images",
    "images_to_tensor",
    "normalize",
    "eval_transform",
    "training_augmentation",
    "augment_batch",
    "derive_seed",
]

#: ImageNet channel statistics (torchvision / timm "default"), RGB in [0, 1].
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: Inception-style statistics: maps [0, 1] to [-1, 1] (TensorFlow EfficientNet-Lite).
INCEPTION_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
INCEPTION_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)

#: Input size used by the reference implementation (VGG-16).
REFERENCE_RESOLUTION = 224
#: Our CPU default.
DEFAULT_RESOLUTION = 128


def check_images(images, *, name: str = "images") -> None:
    """Validate a batch of images: ``(N, H, W, 3)`` ``uint8``, numpy array or torch tensor.

    Raises ``TypeError`` / ``ValueError`` whose message names the problem and the fix.

    >>> check_images(np.zeros((2, 32, 32, 3), dtype=np.uint8))
    >>> check_images(np.zeros((32, 32, 3), dtype=np.uint8))
    Traceback (most recent call last):
    ...
    ValueError: images must have shape (N, H, W, 3), got (32, 32, 3); for a single image pass images[None]
    """
    if isinstance(images, np.ndarray):
        dtype_ok = images.dtype == np.uint8
    elif isinstance(images, torch.Tensor):
        dtype_ok = images.dtype == torch.uint8
    else:
        raise TypeError(
            f"{name} must be a numpy array or torch tensor of shape (N, H, W, 3) and dtype "
            f"uint8, got {type(images).__name__}; convert with np.asarray(...)"
        )
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[-1] != 3:
        if len(shape) == 3 and shape[-1] == 3:
            hint = "for a single image pass images[None]"
        elif len(shape) == 3:
            hint = "for grayscale images repeat the channel: np.repeat(images[..., None], 3, -1)"
        else:
            hint = "images must be channels-last RGB; for (N, 3, H, W) use .transpose(0, 2, 3, 1)"
        raise ValueError(f"{name} must have shape (N, H, W, 3), got {shape}; {hint}")
    if not dtype_ok:
        raise TypeError(
            f"{name} must have dtype uint8 (values 0..255), got {images.dtype}; for float "
            "images in [0, 1] use (images * 255).round().astype(np.uint8)"
        )
    if shape[0] == 0:
        raise ValueError(f"{name} is empty (N = 0); pass at least one image")


def images_to_tensor(images) -> torch.Tensor:
    """Channels-last ``uint8`` images ``(N, H, W, 3)`` -> torch ``uint8`` ``(N, 3, H, W)``.

    Shares memory with a contiguous numpy input (no copy); the result is a strided view.
    """
    check_images(images)
    if isinstance(images, np.ndarray):
        images = np.ascontiguousarray(images)
        if not images.flags.writeable:  # PIL arrays, read-only memory maps: torch warns
            images = images.copy()
        images = torch.from_numpy(images)
    return images.permute(0, 3, 1, 2)


def normalize(
    x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """Channel normalisation ``(x - mean) / std`` for ``x: (N, 3, H, W)`` float in ``[0, 1]``.

    The statistics take the dtype of ``x``.
    """
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def _check_resolution(resolution) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
        raise TypeError(f"resolution must be an int (pixels), got {resolution!r}")
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8 pixels, got {resolution}; the default is 128")
    return int(resolution)


def eval_transform(
    images,
    resolution: int = DEFAULT_RESOLUTION,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Deterministic evaluation transform for a batch of images.

    ``uint8 (N, H, W, 3)`` -> resize the shorter side to ``resolution`` (bilinear,
    antialiased) -> centre crop ``resolution x resolution`` -> ``/ 255`` -> normalise:

    .. math:: x' = (\\mathrm{resize}(x) / 255 - \\mu) / \\sigma

    Parameters
    ----------
    images : (N, H, W, 3) uint8, numpy array or torch tensor
    resolution : int
        Output side in pixels (reference: 224; our default: 128).
    mean, std : three floats
        The backbone's normalisation statistics (``backbone.mean``, ``backbone.std``).
    dtype : torch.dtype, optional
        Output dtype; default ``torch.get_default_dtype()``.

    Returns
    -------
    (N, 3, resolution, resolution) float tensor

    >>> x = eval_transform(np.full((2, 32, 32, 3), 255, dtype=np.uint8), 64)
    >>> tuple(x.shape), x.dtype
    ((2, 3, 64, 64), torch.float32)
    >>> [round(v, 4) for v in x[0, :, 0, 0].tolist()]  # (1 - mean) / std
    [2.2489, 2.4286, 2.64]
    """
    resolution = _check_resolution(resolution)
    dtype = dtype or torch.get_default_dtype()
    x = images_to_tensor(images).to(dtype) / 255.0
    h, w = x.shape[-2:]
    if (h, w) != (resolution, resolution):
        scale = resolution / min(h, w)
        size = (max(resolution, round(h * scale)), max(resolution, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        top = (size[0] - resolution) // 2
        left = (size[1] - resolution) // 2
        x = x[:, :, top : top + resolution, left : left + resolution]
    return normalize(x, mean, std).contiguous()


def training_augmentation(
    resolution: int = DEFAULT_RESOLUTION,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    dtype: torch.dtype | None = None,
) -> v2.Compose:
    """The reference's training augmentation as a ``torchvision.transforms.v2`` pipeline.

    Maps one ``uint8 (3, H, W)`` tensor to a normalised float ``(3, R, R)`` tensor, drawing
    its randomness from the global torch RNG (use :func:`augment_batch` for seeded,
    batched use). Parameters as in ``zexuanqiu/HiHPQ`` ``data.py`` (``TwoCropsTransform``),
    except ``resolution`` (reference: 224).
    """
    resolution = _check_resolution(resolution)
    return v2.Compose(
        [
            v2.RandomResizedCrop(
                resolution, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), antialias=True
            ),
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.7),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(kernel_size=3, sigma=(0.1, 2.0))], p=0.5),
            v2.ToDtype(dtype or torch.get_default_dtype(), scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


def derive_seed(seed: int, *words: int) -> int:
    """A 63-bit seed mixed from ``seed`` and further non-negative integers.

    Uses :class:`numpy.random.SeedSequence`, so nearby inputs give unrelated seeds.

    >>> derive_seed(0, 1) == derive_seed(0, 1) != derive_seed(0, 2)
    True
    """
    entropy = [int(seed), *(int(w) for w in words)]
    if any(e < 0 for e in entropy):
        raise ValueError(f"seeds and indices must be non-negative integers, got {entropy}")
    lo, hi = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return (int(hi) << 31) ^ int(lo)


def _seed_from(seed) -> int:
    if isinstance(seed, torch.Generator):
        return int(torch.randint(0, 2**62, (1,), generator=seed).item())
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed must be a non-negative int or a torch.Generator, got {seed!r}")
    return int(seed)


def augment_batch(
    images,
    resolution: int = DEFAULT_RESOLUTION,
    seed: int | torch.Generator = 0,
    *,
    indices: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """One random augmented view of each image, deterministic for a given seed.

    Each image gets its own random crop / flip / jitter / grayscale / blur (the
    :func:`training_augmentation` recipe); image ``i`` is augmented with a torch RNG
    seeded by ``derive_seed(seed, indices[i])``, inside :func:`torch.random.fork_rng`
    so the global RNG state is unchanged.

    Parameters
    ----------
    images : (N, H, W, 3) uint8, numpy array or torch tensor; or a list of N
        ``(H_i, W_i, 3)`` uint8 images of their own sizes (the whole, non-square images
        of ``image_geometry: reference``: each view is cropped from its full image)
    resolution : int
        Output side in pixels (reference 224 px on VGG-16; default 128).
    seed : int or torch.Generator
        Non-negative int; a generator is consumed once to draw an int seed.
    indices : (N,) ints, optional
        Global indices of the images (default ``0..N-1``); pass them when augmenting a
        slice of a larger set so views are independent of the batching.
    mean, std : three floats
        Normalisation statistics (the backbone's).
    dtype : torch.dtype, optional
        Output dtype; default ``torch.get_default_dtype()``.

    Returns
    -------
    (N, 3, resolution, resolution) float tensor

    >>> imgs = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    >>> a, b = augment_batch(imgs, 48, seed=1), augment_batch(imgs, 48, seed=1)
    >>> tuple(a.shape), torch.equal(a, b), torch.equal(a, augment_batch(imgs, 48, seed=2))
    ((3, 3, 48, 48), True, False)
    """
    base = _seed_from(seed)
    if isinstance(images, (list, tuple)):  # images of their own sizes (full, non-square)
        if not images:
            raise ValueError("images is empty (N = 0); pass at least one image")
        x = [images_to_tensor(im[None])[0] for im in images]
    else:
        x = images_to_tensor(images)
    n = len(x)
    if indices is None:
        idx = list(range(n))
    else:
        idx = [int(i) for i in np.asarray(indices).reshape(-1)]
        if len(idx) != n:
            raise ValueError(
                f"indices must have one entry per image: got {len(idx)} for {n} images"
            )
    transform = training_augmentation(resolution, mean=mean, std=std, dtype=dtype)
    out = []
    with torch.random.fork_rng(devices=[]):
        for i in range(n):
            torch.manual_seed(derive_seed(base, idx[i]))
            out.append(transform(x[i]))
    return torch.stack(out)
