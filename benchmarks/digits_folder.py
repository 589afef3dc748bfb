"""scikit-learn's bundled handwritten digits as an image folder: a dataset the folder
default was not chosen on (issue 28, "judged where it was not tuned").

Run: ``python -m benchmarks.digits_folder OUT`` writes ``OUT/<zero..nine>/<index>.png``
(1,797 greyscale 8x8 images, 174-183 per class, saved as RGB PNGs with the 0-16 ink scale
stretched to 0-255); then e.g. ``python -m benchmarks.recipe_study --data OUT --seeds 3
--out DIR``. The images ship with scikit-learn (``sklearn.datasets.load_digits``): nothing
is downloaded. Nothing like them was in the backbone's ImageNet pretraining or in the
two datasets the default was chosen on (CIFAR-10, the Tiny-ImageNet subset).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_digits_folder(out: Path) -> dict[str, int]:
    """Write the folder; return the count of images per class."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    counts: dict[str, int] = {}
    for i, (img, y) in enumerate(zip(digits.images, digits.target)):
        folder = Path(out) / NAMES[int(y)]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(np.asarray(img) / 16.0 * 255.0, 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").convert("RGB").save(folder / f"{i:04d}.png")
        counts[NAMES[int(y)]] = counts.get(NAMES[int(y)], 0) + 1
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to write (created)")
    args = ap.parse_args(argv)
    counts = write_digits_folder(args.out)
    print(f"{sum(counts.values())} images in {len(counts)} class folders under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
