"""A paper config on a GPU, end to end: train two epochs with clustering, then ``hihpq
evaluate`` and ``hihpq search``; wall time, peak GPU memory and mAP.

Run (one GPU, under 10 minutes)::

    python -m benchmarks.gpu_check --device cuda --out runs/gpu_check

It takes ``configs/paper/paper_cifar10_ii_32bits.yaml`` (VGG-16 at 224 px, fc6/fc7 training,
online augmentation), with ImageNet weights when torchvision can fetch them and random
weights otherwise (said in the output), for ``--epochs`` epochs (default 2, clustering in
the second), on the protocol II splits cut to ``--per-class`` database images per class
(``--per-class`` N: 10 N database images, 5 N of them for training, N queries,
N / 3 validation queries; default 300). Then it runs ``hihpq
evaluate`` on the run folder (it must give the mAP ``train`` reported) and ``hihpq
search`` with a database image written to a file (it must come back first). ``--tiny``
shrinks everything to a handful of 64-px images so that the same path runs on a CPU in
CI (``tests/test_benchmarks.py``). Results go to ``OUT/gpu_check.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "paper" / "paper_cifar10_ii_32bits.yaml"


def spread(indices, n: int) -> np.ndarray:
    """``n`` of ``indices`` spread evenly over them (CIFAR-10 is stored class by class)."""
    indices = np.asarray(indices)
    n = min(int(n), len(indices))
    return indices[np.linspace(0, len(indices) - 1, n).astype(int)]


def cut_splits(splits, n_train: int, n_val: int, n_query: int, n_database: int):
    """The splits cut to ``n_train`` training images, ``n_val`` validation queries and
    validation-database images, ``n_query`` queries and a database of ``n_database`` images
    holding every training and validation image (protocol II's nesting kept)."""
    train = spread(splits.train, n_train)
    val_query = spread(np.setdiff1d(splits.val_query, train), n_val)
    more = max(n_val, n_database - len(train) - len(val_query))
    val_database = np.union1d(train, spread(np.setdiff1d(splits.val_database, train), more))
    database = np.union1d(val_query, val_database)  # val_database = database - val_query
    return dataclasses.replace(
        splits,
        train=train,
        query=spread(splits.query, n_query),
        database=database,
        val_query=val_query,
        val_database=val_database,
    )


def paper_config(device: str, epochs: int, tiny: bool, pretrained: bool, extra=()):
    """The paper config of the check; ``extra``: further ``key=value`` overrides."""
    from hihpq_lib.learning.config import load_config

    overrides = [
        f"device={device}",
        f"epochs={epochs}",
        "hierarchy_warmup=1",  # epoch 1 warms up, epoch 2 clusters
        "eval_interval=1",
        f"pretrained={str(pretrained).lower()}",
    ]
    if tiny:
        overrides += ["resolution=64", "num_clusters=[3, 2]", "batch_size=4", "topk=5"]
    return load_config(CONFIG, [*overrides, *extra])


def vgg_weights_available() -> bool:
    """Whether torchvision's ImageNet VGG-16 weights can be had (cached or downloadable)."""
    from hihpq_lib.data.backbones import MissingWeightsError, build_backbone

    try:
        build_backbone("vgg16", pretrained=True, progress=False)
    except (MissingWeightsError, OSError, RuntimeError):
        return False
    return True


def _distinct_codes(run: Path) -> int:
    from hihpq_lib.quantization.index import PQIndex
    from hihpq_lib.utils.arrays import to_numpy

    return len({tuple(c) for c in to_numpy(PQIndex.load(run / "index").codes).tolist()})


def main(argv=None) -> dict:
    """Run the check; return (and write, and print) the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--per-class", type=int, default=300, help="database images per class")
    ap.add_argument("--tiny", action="store_true", help="a handful of 64-px images (CPU, CI)")
    ap.add_argument("--random-weights", action="store_true", help="skip the weights download")
    ap.add_argument("--out", default="runs/gpu_check")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a further config override (repeatable), e.g. block_norm_power=0.5",
    )
    args = ap.parse_args(argv)

    from hihpq_lib.app import cli
    from hihpq_lib.app.pipeline import run_experiment
    from hihpq_lib.app.prepare import prepare_for
    from hihpq_lib.data import read_images

    out = Path(args.out)
    run = out / "run"
    pretrained = not args.random_weights and not args.tiny and vgg_weights_available()
    cfg = paper_config(args.device, args.epochs, args.tiny, pretrained, args.overrides)
    cuda = cfg.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    prep = prepare_for(cfg, progress=False)
    n = args.per_class
    sizes = (7, 3, 4, 13) if args.tiny else (5 * n, n // 3, n, 10 * n)  # train, val, query, db
    prep.splits = cut_splits(prep.splits, *sizes)
    res = run_experiment(cfg, run, progress=False, prepared=prep, overwrite=True)
    t_train = time.perf_counter() - t0
    peak_train = torch.cuda.max_memory_allocated() / 2**20 if cuda else None

    t1 = time.perf_counter()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(["evaluate", str(run), "--json"])
    t_eval = time.perf_counter() - t1
    if code != 0:
        raise SystemExit(f"hihpq evaluate failed (exit {code})")
    evaluated = json.loads(printed.getvalue().strip().splitlines()[-1])
    key = f"map@{cfg.topk}_val_selected"

    row = len(prep.splits.database) // 2
    index = int(np.asarray(prep.splits.database)[row])
    query = out / f"database_{index}.png"
    Image.fromarray(read_images(prep.dataset, [index], size=None)[0]).save(query)
    t2 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["search", str(run), str(query), "--k", "5"])
    t_search = time.perf_counter() - t2
    if code != 0:
        raise SystemExit(f"hihpq search failed (exit {code})")

    from hihpq_lib.app.scoring import encode_query_files, evaluate_run, restore_run, search_files

    trained = restore_run(run)
    # the query's features against its own database entry (the final backbone's)
    database = evaluate_run(trained, res["prepared"]).database.feats
    gap = float((encode_query_files(trained, [query])[0] - database[row]).abs().max())
    # where it ranks: first, or tied at the first distance with images sharing its code
    dist, _, ids = search_files(trained, [query], len(database))
    rank = int(np.flatnonzero(ids[0] == index)[0])
    ties = int((dist[0] == dist[0][0]).sum())
    report = {
        "device": cfg.device,
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "weights": "imagenet" if pretrained else "random",
        "resolution": cfg.resolution,
        "epochs": cfg.epochs,
        "splits": prep.splits.sizes(),
        "train_seconds": round(t_train, 1),
        "evaluate_seconds": round(t_eval, 1),
        "search_seconds": round(t_search, 1),
        "peak_gpu_mb": None if peak_train is None else round(peak_train, 1),
        "peak_gpu_mb_all": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
        "map_final": res[f"map@{cfg.topk}_final"],
        "map_val_selected": res[key],
        "evaluate_map_final": evaluated[f"map@{cfg.topk}_final"],
        "evaluate_map_val_selected": evaluated[key],
        "val_selected_epoch": res["val_selected_epoch"],
        "history": [
            {k: h[k] for k in ("epoch", "loss", "val_map") if k in h} for h in res["history"]
        ],
        "search_query_index": index,
        "search_top": [int(i) for i in ids[0][:5]],
        "search_rank": rank,
        "search_at_first_distance": bool(dist[0][rank] == dist[0][0]),
        "search_tied_at_first": ties,
        "distinct_database_codes": _distinct_codes(run),
        "query_feature_gap": gap,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
