"""Image I/O: decode, convert to RGB, resize and centre-crop, as ``uint8`` arrays.

:func:`read_images` decodes a list of items into one array; :class:`LazyImages` stands for
such an array without holding it, and decodes a slice at a time, so that feature
extraction over tens of thousands of files holds only one chunk of pixels at once
(:func:`~hihpq_lib.data.features.extract_features`, ``chunk_size``).
:func:`folder_read_size` is the side at which path-backed images are read for the
backbone.

A *read size* is ``None`` (as stored), an int ``s`` (the shorter side resized to ``s``,
the centre ``s x s`` square cropped) or a pair ``(crop, resize)`` (the reference's
``Resize(resize) + CenterCrop(crop)``, torchvision's rounding; :func:`reference_read_size`).
:class:`EncodedImages` holds the encoded files of a set of images in memory: slices decode
at a read size like :class:`LazyImages`, ``originals(rows)`` gives the full images.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from hihpq_lib.data.dataset import CorruptImageError, ImageDataset, _check_indices

__all__ = [
    "IMAGE_EXTENSIONS",
    "AUGMENT_READ_MARGIN",
    "LazyImages",
    "EncodedImages",
    "folder_read_size",
    "reference_read_size",
    "read_images",
    "read_image_file",
]


#: File name endings recognised as images in image-folder trees (lower case).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
)


# --------------------------------------------------------------------------------------
# Reading image files
# --------------------------------------------------------------------------------------


def _open_rgb(path: str | Path, data: bytes | None = None) -> Image.Image:
    """Open and fully decode one image as RGB (from ``data``, its bytes, when given);
    errors name the file."""
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError as exc:
        raise CorruptImageError(f"image file not found: {path}") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise CorruptImageError(
            f"cannot decode image {path}: {exc}. Replace or delete this file (re-extract the "
            "dataset if it came from an archive)."
        ) from exc


def _check_read_size(size) -> int | tuple[int, int] | None:
    """A read size normalised: ``None``, a positive int, or a ``(crop, resize)`` tuple
    with ``resize >= crop`` (a JSON list of two ints works too)."""
    if size is None:
        return None
    if isinstance(size, (list, tuple)) and len(size) == 2:
        crop, resize = size
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
        if ok and 0 < crop <= resize:
            return int(crop), int(resize)
    elif isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size > 0:
        return int(size)
    raise ValueError(
        f"size must be a positive int, a (crop, resize) pair with resize >= crop, or None, "
        f"got {size!r}"
    )


def _read_side(size) -> int | None:
    """The side of the square images a read size gives."""
    return size[0] if isinstance(size, tuple) else size


def reference_read_size(resolution: int = 224) -> tuple[int, int]:
    """The reference's evaluation read for Flickr25K / NUS-WIDE, ``Resize(256) +
    CenterCrop(224)``, scaled to ``resolution``: ``(crop, resize)``.

    >>> reference_read_size(224), reference_read_size(160)
    ((224, 256), (160, 183))
    """
    return int(resolution), int(round(resolution * 256 / 224))


def _reference_resize_crop(im: Image.Image, crop: int, resize: int) -> Image.Image:
    """torchvision's ``Resize(resize)`` then ``CenterCrop(crop)`` on a PIL image: the
    shorter side to ``resize`` and the longer to ``int(resize * long / short)`` (truncated),
    bilinear; the crop's offsets ``int(round((side - crop) / 2))``."""
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    if short != resize:
        new_long = int(resize * long / short)
        im = im.resize((resize, new_long) if w <= h else (new_long, resize), Image.BILINEAR)
    w, h = im.size
    left, top = int(round((w - crop) / 2.0)), int(round((h - crop) / 2.0))
    return im.crop((left, top, left + crop, top + crop))


def _resize(im: Image.Image, size) -> Image.Image:
    if isinstance(size, tuple):
        return _reference_resize_crop(im, *size)
    return _resize_center_crop(im, int(size))


def _resize_center_crop(im: Image.Image, size: int) -> Image.Image:
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def read_image_file(
    path: str | os.PathLike, *, size: int | tuple[int, int] | None = None
) -> np.ndarray:
    """One image file as a uint8 array ``(H, W, 3)`` (RGB).

    ``size`` resizes the shorter side to ``size`` and centre-crops a square, or with a
    ``(crop, resize)`` pair applies ``Resize(resize) + CenterCrop(crop)``, as
    :func:`read_images` does for path-backed datasets. A missing or corrupt file raises
    :class:`CorruptImageError` naming the path.
    """
    size = _check_read_size(size)
    im = _open_rgb(path)
    if size is not None:
        im = _resize(im, size)
    return np.array(im, dtype=np.uint8)  # a writable copy (np.asarray of PIL is read-only)


def read_images(
    dataset: ImageDataset,
    indices=None,
    *,
    size: int | tuple[int, int] | None = 224,
    progress: bool = False,
) -> np.ndarray:
    """Pixels of the items at ``indices`` as one uint8 array.

    Parameters
    ----------
    dataset : ImageDataset
        In-memory or path-backed dataset.
    indices : (n,) int array-like, optional
        Items to read, in order (default: all).
    size : int or None, default 224
        Path-backed images only: the shorter side is resized to ``size`` (bilinear) and the
        centre ``size x size`` square is cropped, so images of different shapes stack
        (Flickr25K, NUS-WIDE). A ``(crop, resize)`` pair: ``Resize(resize) +
        CenterCrop(crop)`` (:func:`reference_read_size`). ``None`` keeps the stored size
        (all images must then agree). In-memory images are returned at their stored size.
    progress : bool
        Show a tqdm bar while decoding files.

    Returns
    -------
    (n, H, W, 3) uint8 ndarray

    Raises
    ------
    CorruptImageError
        If a file is missing or cannot be decoded; the message names the file.
    """
    if not isinstance(dataset, ImageDataset):
        raise TypeError(f"read_images expects an ImageDataset, got {type(dataset).__name__}")
    idx = np.arange(len(dataset)) if indices is None else _check_indices(indices, len(dataset))
    if dataset.in_memory:
        return dataset.images[idx]
    size = _check_read_size(size)
    out = None
    for k, i in enumerate(_progress(idx, progress, "reading images")):
        path = dataset.images[i]
        im = _open_rgb(path)
        if size is not None:
            im = _resize(im, size)
        arr = np.asarray(im, dtype=np.uint8)
        if out is None:
            out = np.empty((len(idx), *arr.shape), dtype=np.uint8)
        elif arr.shape != out.shape[1:]:
            raise ValueError(
                f"image {path} has shape {arr.shape} but earlier ones have {out.shape[1:]}; "
                "pass size=<int> to resize them to a common size"
            )
        out[k] = arr
    if out is None:
        h = w = _read_side(size) or 0
        out = np.empty((0, h, w, 3), dtype=np.uint8)
    return out


#: Path-backed images for the augmentation bank are read this much larger than the
#: backbone's input (:func:`folder_read_size`): ``RandomResizedCrop`` keeps 50-100% of the
#: area, so a crop of the median area (75%) spans 0.87 of the side, and at 1.25 x the
#: input it still holds about 1.08 input sides -- it is shrunk to the input, as it was when
#: every image was read at 224 px, rather than enlarged.
AUGMENT_READ_MARGIN = 1.25


def folder_read_size(resolution: int, *, augment: bool = False) -> int:
    """The side (px) at which path-backed images are read for a backbone input of
    ``resolution`` px.

    The evaluation transform resizes the shorter side to ``resolution`` and centre-crops,
    so the clean features read at ``resolution`` itself (one resize instead of two, and
    no pixels beyond what the backbone sees). The augmentation bank crops first, so it
    reads ``AUGMENT_READ_MARGIN`` larger. Either is part of the feature-cache key
    (``image_size``): a different read size never reuses features.

    >>> folder_read_size(128), folder_read_size(128, augment=True)
    (128, 160)
    """
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
        raise TypeError(f"resolution must be an int (pixels), got {resolution!r}")
    if resolution < 1:
        raise ValueError(f"resolution must be a positive int, got {resolution}")
    return int(round(resolution * AUGMENT_READ_MARGIN)) if augment else int(resolution)


class LazyImages:
    """The images ``indices`` of ``dataset`` as a virtual ``(n, H, W, 3)`` uint8 array,
    decoded only when sliced.

    ``lazy[a:b]`` is ``read_images(dataset, indices[a:b], size=size)``: a new array of
    ``b - a`` images, nothing kept. :func:`~hihpq_lib.data.features.extract_features`
    and :func:`~hihpq_lib.data.features.augmentation_bank` take it in place of an array
    and decode it one chunk at a time, so peak memory is one chunk of pixels, not the
    whole set.

    Parameters
    ----------
    dataset : ImageDataset
    indices : (n,) int array-like, optional
        Items, in order (default: all).
    size : int, (crop, resize) or None
        As in :func:`read_images` (path-backed images only).

    >>> ds = ImageDataset(np.zeros((5, 4, 4, 3), np.uint8), [0, 1, 0, 1, 0], ["a", "b"])
    >>> lazy = LazyImages(ds, [4, 2, 0])
    >>> len(lazy), lazy.shape, lazy[1:].shape
    (3, (3, 4, 4, 3), (2, 4, 4, 3))
    """

    def __init__(self, dataset: ImageDataset, indices=None, *, size: int | None = None):
        if not isinstance(dataset, ImageDataset):
            raise TypeError(f"LazyImages expects an ImageDataset, got {type(dataset).__name__}")
        self.size = _check_read_size(size)
        self.dataset = dataset
        n = len(dataset)
        self.indices = np.arange(n) if indices is None else _check_indices(indices, n)

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return f"LazyImages({self.dataset.name!r}, n={len(self)}, size={self.size})"

    @property
    def shape(self) -> tuple:
        """``(n, H, W, 3)``; ``H = W = size`` for path-backed images read at a ``size``."""
        images = self.dataset.images
        if isinstance(images, np.ndarray):  # in memory
            return (len(self), *images.shape[1:])
        side = _read_side(self.size)
        return (len(self), side, side, 3)

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError(f"LazyImages takes slices (lazy[a:b]), got {type(key).__name__}")
        return read_images(self.dataset, self.indices[key], size=self.size)


class EncodedImages:
    """The path-backed images ``indices`` of ``dataset`` held in memory as their encoded
    file bytes (a JPEG is a tenth of its decoded 224 px square, or less), for the online
    path's training images with ``image_geometry: reference``.

    * ``enc[a:b]`` decodes images ``a..b-1`` at the read size ``size``, like
      :class:`LazyImages` (the clean features of the training images);
    * ``enc.originals(rows)`` decodes the full images ``rows`` (positions in ``indices``):
      a list of ``(H_i, W_i, 3)`` uint8 arrays of their own shapes, what the reference's
      training transform crops from (``RandomResizedCrop`` on the whole image).

    ``threads`` decode in parallel (PIL releases the GIL while decoding).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (40, 30), (9, 9, 9)).save(d / "a.png")
    >>> ds = ImageDataset([str(d / "a.png")], [0], ["x"])
    >>> enc = EncodedImages(ds, [0], size=(16, 20))
    >>> enc[0:1].shape, enc.originals([0])[0].shape
    ((1, 16, 16, 3), (30, 40, 3))
    """

    def __init__(self, dataset: ImageDataset, indices=None, *, size, threads: int = 8):
        if not isinstance(dataset, ImageDataset):
            raise TypeError(f"EncodedImages expects an ImageDataset, got {type(dataset).__name__}")
        if dataset.in_memory:
            raise ValueError("EncodedImages holds image files; this dataset's images are arrays")
        self.dataset = dataset
        n = len(dataset)
        self.indices = np.arange(n) if indices is None else _check_indices(indices, n)
        self.size = _check_read_size(size)
        self.threads = max(1, int(threads))
        self.paths = [dataset.images[int(i)] for i in self.indices]
        self.data = []
        for path in self.paths:
            try:
                self.data.append(Path(path).read_bytes())
            except OSError as exc:
                raise CorruptImageError(f"cannot read image file {path}: {exc}") from exc

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        mb = sum(len(b) for b in self.data) / 2**20
        return f"EncodedImages({self.dataset.name!r}, n={len(self)}, size={self.size}, {mb:.1f} MB)"

    @property
    def shape(self) -> tuple:
        """``(n, side, side, 3)`` of the images read at ``size``."""
        side = _read_side(self.size)
        return (len(self), side, side, 3)

    def _decode(self, k: int, resize: bool) -> np.ndarray:
        im = _open_rgb(self.paths[k], self.data[k])
        if resize and self.size is not None:
            im = _resize(im, self.size)
        return np.array(im, dtype=np.uint8)

    def _map(self, rows, resize: bool) -> list[np.ndarray]:
        rows = [int(r) for r in np.asarray(rows).reshape(-1)]
        if self.threads == 1 or len(rows) < 2:
            return [self._decode(r, resize) for r in rows]
        with ThreadPoolExecutor(max_workers=min(self.threads, len(rows))) as pool:
            return list(pool.map(lambda r: self._decode(r, resize), rows))

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError(
                f"EncodedImages takes slices (enc[a:b]) or originals(rows), got {type(key).__name__}"
            )
        rows = range(len(self))[key]
        if len(rows) == 0:
            side = _read_side(self.size) or 0
            return np.empty((0, side, side, 3), dtype=np.uint8)
        return np.stack(self._map(np.asarray(rows), resize=True))

    def originals(self, rows) -> list[np.ndarray]:
        """The full decoded images at positions ``rows``: ``(H_i, W_i, 3)`` uint8 each."""
        return self._map(rows, resize=False)


def _progress(iterable, enabled: bool, desc: str, total: int | None = None):
    if not enabled:
        return iterable
    from hihpq_lib.utils.runtime import progress_bar

    return progress_bar(iterable, desc=desc, total=total, unit="img")


def _list_class_folder(root: Path) -> tuple[list[str], list[list[Path]]]:
    """Class names (sorted sub-folders) and their image files (sorted names)."""
    classes, files = [], []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        imgs = sorted(
            f.name
            for f in os.scandir(entry.path)
            if f.is_file() and f.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not imgs:
            raise ValueError(
                f"class folder {entry.path} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "add images or remove the folder"
            )
        classes.append(entry.name)
        files.append([Path(entry.path, name) for name in imgs])
    if not classes:
        raise ValueError(f"{root} holds no class sub-folders; expected {root}/<class>/<image>")
    return classes, files
