"""CIFAR-10 written as an image folder with a three-level hierarchy: the folder default's
CIFAR-10 row (docs/folders.md, "CIFAR-10 run as a folder"), reproducible.

Run: ``python -m benchmarks.cifar10_folder OUT [--source CIFAR10] [--train-per-class 500]
[--query-per-class 100]`` writes

* ``OUT/train/<class>/<index>.png``: the first ``--train-per-class`` images of each class
  from CIFAR-10's training split (the folder's training = database images);
* ``OUT/val/<class>/<index>.png``: the first ``--query-per-class`` of each class from its
  test split (the test queries, ``--query-data``);
* ``OUT/hierarchy.json``: each class's ancestors, root first (:data:`CHAINS`): one root,
  then vehicle or animal (depth 1), then road vehicle, air or water, mammal or other animal
  (depth 2).

"First" is CIFAR-10's own order as :func:`hihpq_lib.data.load_cifar10` loads it (a
torchvision root in batch order; an image tree class by class, files sorted). PNG keeps
the pixels exactly. Then e.g. ``python -m benchmarks.recipe_study --data OUT/train
--query-data OUT/val --hierarchy OUT/hierarchy.json --seeds 3 --out DIR``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

#: class -> ancestors, root first (depth 0: one root; depth 1: vehicle / animal; depth 2:
#: four groups), so that ``levels: auto`` scores depths 1 and 2 (it skips the root)
CHAINS: dict[str, list[str]] = {
    "airplane": ["object", "vehicle", "air or water"],
    "ship": ["object", "vehicle", "air or water"],
    "automobile": ["object", "vehicle", "road vehicle"],
    "truck": ["object", "vehicle", "road vehicle"],
    "cat": ["object", "animal", "mammal"],
    "deer": ["object", "animal", "mammal"],
    "dog": ["object", "animal", "mammal"],
    "horse": ["object", "animal", "mammal"],
    "bird": ["object", "animal", "other animal"],
    "frog": ["object", "animal", "other animal"],
}


def write_cifar10_folder(
    out: Path, source=None, train_per_class: int = 500, query_per_class: int = 100
) -> dict[str, int]:
    """Write the folder (see the module docstring); return the images written per split."""
    from PIL import Image

    from hihpq_lib.data import load_cifar10

    if train_per_class < 1 or query_per_class < 1:
        raise ValueError("train_per_class and query_per_class must be >= 1")
    ds = load_cifar10(source, progress=False)
    out = Path(out)
    written = {"train": 0, "val": 0}
    for split, is_train, n in (("train", True, train_per_class), ("val", False, query_per_class)):
        for label, name in enumerate(ds.class_names):
            rows = np.flatnonzero((ds.labels == label) & (ds.is_train == is_train))[:n]
            if len(rows) < n:
                raise ValueError(f"CIFAR-10 {split}: class {name} has {len(rows)} images < {n}")
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in rows:
                Image.fromarray(ds.images[i]).save(folder / f"{int(i):05d}.png")
            written[split] += len(rows)
    (out / "hierarchy.json").write_text(
        json.dumps({c: CHAINS[c] for c in ds.class_names}, indent=1), encoding="utf-8"
    )
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to write (created)")
    ap.add_argument("--source", help="a CIFAR-10 source (default: the library's resolution)")
    ap.add_argument("--train-per-class", type=int, default=500)
    ap.add_argument("--query-per-class", type=int, default=100)
    args = ap.parse_args(argv)
    try:  # the function's own checks (counts >= 1, enough images per class) exit 2
        n = write_cifar10_folder(args.out, args.source, args.train_per_class, args.query_per_class)
    except ValueError as exc:
        ap.error(str(exc))
    print(f"{n['train']} training and {n['val']} query images, 10 classes, under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
