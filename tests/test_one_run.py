"""One run, scored one way (issue 26): for every training-input mode — a frozen backbone's
bank (one backbone, or two concatenated), a trained backbone tail (``tail_blocks: 1``) and
the paper's online path with trainable VGG-16 layers — a tiny run is trained, then

* ``hihpq evaluate`` reproduces the mAP ``hihpq train`` reported (to 1e-6);
* ``hihpq search`` with a database image file as the query returns that image at rank 1;
* the query features ``search`` computes equal the database features of the same image
  (to 1e-5).

Before the run became one object (``app/prepare.py``, ``app/scoring.py``), ``search``
encoded the query with the pretrained backbone whatever had trained, and ``evaluate``
scored an online run with the untrained one: the tail and online rows failed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import gpu_check
from hihpq_lib.app import cli
from hihpq_lib.app.prepare import input_mode, prepare_for
from hihpq_lib.app.scoring import encode_query_files, evaluate_run, restore_run
from hihpq_lib.data import load_splits, read_images
from hihpq_lib.learning.config import load_config
from hihpq_lib.quantization.index import PQIndex
from hihpq_lib.utils.arrays import to_numpy
from tests.paths import REPO_ROOT, cifar10_archive
from tests.test_folders import PROFILE, fast_args

PAPER = REPO_ROOT / "configs" / "paper" / "paper_cifar10_ii_32bits.yaml"
ARCHIVE = cifar10_archive()  # read before the isolated fixture points HIHPQ_CIFAR10 away

#: A paper config on a tiny CIFAR-10 subset (``benchmarks/gpu_check.py --tiny``): random
#: VGG-16 weights (none offline), fc6/fc7 training (``trainable_layers: 2``), 64 px.
PAPER_TINY = ["pretrained=false", "device=cpu", "resolution=64", "topk=5"]


def _sets(items):
    out = []
    for item in items:
        out += ["--set", item]
    return out


def _cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _mode_setup(mode: str, root: Path, monkeypatch):
    """``(config file, CLI data arguments, overrides)`` of a tiny run in ``mode``."""
    if mode == "online":
        if ARCHIVE is None:
            pytest.skip("needs the CIFAR-10 archive (HIHPQ_CIFAR10; make test sets it)")
        monkeypatch.setenv("HIHPQ_CIFAR10", str(ARCHIVE))
        return PAPER, [], PAPER_TINY
    data = _noise_folder(root / "noise", per_class=12)
    # the tail at a tenth of the lr (the documented option): at the full lr this tiny run
    # collapses to a few codes
    tail = ["tail_blocks=1", "threads=1", "backbone_lr=scaled", "lr_backbone_scale=0.1"]
    # two frozen backbones side by side, through ONNX Runtime as the profiles run them
    both = ["backbone=efficientnet_lite1+efficientnet_lite0", "engine=onnx"]
    extra = {"tail": tail, "concatenated": both}.get(mode, [])
    # 16 bits = 4 subspaces of 16 codewords: distinct images rarely share a code
    return PROFILE, ["--data", data], [*_overrides(fast_args()), "epochs=2", "bits=16", *extra]


def _noise_folder(root: Path, per_class: int, classes=("a", "b", "c", "d")) -> Path:
    """``root/<class>/<i>.png``: 24 px images of full-range noise over a class tint, so
    every image has its own features (and its own code) and classes still differ."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        tint = np.array([(c * 70) % 256, (c * 130) % 256, (c * 200) % 256])
        for i in range(per_class):
            arr = (0.5 * tint + 0.5 * rng.integers(0, 256, (24, 24, 3))).astype(np.uint8)
            Image.fromarray(arr).save(root / name / f"{i:03d}.png")
    return root


def _overrides(args):
    return [a for a in args if a != "--set"]


def _query_file(prep, row: int, folder: Path) -> Path:
    """The database image at ``row`` as a file: its own file for an image folder, else a
    lossless PNG of the stored pixels (CIFAR-10 is held in memory)."""
    index = int(np.asarray(prep.splits.database)[row])
    if not prep.dataset.in_memory:
        return Path(prep.dataset.images[index])
    path = folder / f"database_{index}.png"
    Image.fromarray(read_images(prep.dataset, [index], size=None)[0]).save(path)
    return path


#: what a "+" suffix of a mode adds to its run
VARIANTS = {"sqrt": "block_norm_power=0.5", "refine": "codebook_refine=3"}


@pytest.mark.parametrize(
    "mode",
    [
        "bank",
        "concatenated",
        "tail",
        "online",
        "bank+sqrt",
        "tail+sqrt",
        "online+sqrt",
        "tail+refine",
    ],
)
def test_train_evaluate_search_agree(mode, isolated, capsys, monkeypatch):
    # "+sqrt": the same run with the features' block norms compressed before the head
    # (block_norm_power 0.5, the recipe's kept_sqrt candidate): its fitted mean travels with
    # the model into evaluate and search, and in the tail mode the gradient flows through it.
    # "+refine": Lloyd iterations on both saved models' codebooks after training, each
    # through the backbone state saved with that model (the trained tail; the online mode
    # runs the same code, and its 7 training images are fewer than its 256 codewords)
    mode, _, variant = mode.partition("+")
    sqrt, refine = variant == "sqrt", variant == "refine"
    config, data_args, overrides = _mode_setup(mode, isolated, monkeypatch)
    if variant:
        overrides = [*overrides, VARIANTS[variant]]
    run = isolated / "run"
    if mode == "online":  # benchmarks/gpu_check.py --tiny: a handful of CIFAR-10 images
        more = ["--set", VARIANTS[variant]] if variant else []
        report = gpu_check.main(["--tiny", "--device", "cpu", "--out", str(isolated), *more])
        assert report["weights"] == "random" and report["device"] == "cpu"
        assert report["history"][-1]["epoch"] == 2 and report["search_at_first_distance"]
        assert report["query_feature_gap"] <= 1e-5
        for which in ("final", "val_selected"):
            assert abs(report[f"evaluate_map_{which}"] - report[f"map_{which}"]) <= 1e-6
    else:
        printed = _cli(capsys, "train", config, *data_args, *_sets(overrides), "--out", run)
        # the terminal says what the refinement did to each saved model
        assert ("codebook refinement (val-selected) " in printed) == refine
    reported = json.loads((run / "results.json").read_text())
    mode = "bank" if mode == "concatenated" else mode  # frozen features, cached: the bank mode
    assert reported["input_mode"] == mode
    topk = load_config(config, overrides).topk
    if refine:  # each saved model refined from its own state, validation deciding
        for which in ("val_selected", "final"):
            rec = reported["codebook_refine"][which]
            assert rec["iterations"] >= 1 and rec["kept"] == (
                rec["val_map_after"] >= rec["val_map_before"]
            )
    else:
        assert reported["codebook_refine"] is None

    # evaluate: the same figures as train reported, each model with its own backbone
    ev = json.loads(_cli(capsys, "evaluate", run, "--json", *data_args).strip().splitlines()[-1])
    for key in (f"map@{topk}_final", f"map@{topk}_val_selected"):
        assert abs(ev[key] - reported[key]) <= 1e-6, (key, ev[key], reported[key])

    # the database features of the final model's backbone, as the index holds them
    trained = restore_run(run)
    for model in (trained.final, trained.best):
        if sqrt:  # the fitted mean came back with the model, not a fresh zero
            assert model.block_norm is not None and model.block_norm.power == 0.5
            assert float(model.block_norm.mean.abs().max()) > 0
        else:
            assert model.block_norm is None
    cfg = trained.cfg.with_overrides([f"data={data_args[1]}"] if data_args else [])
    prep = prepare_for(cfg, progress=False, splits=load_splits(run / "splits.json"))
    assert input_mode(cfg) == mode
    scores = evaluate_run(trained, prep)
    assert scores.best["class"] == pytest.approx(reported[f"map@{topk}_val_selected"], abs=1e-6)
    if mode != "bank":  # the backbone trained: the run's state differs from the pretrained one
        assert trained.final_backbone is not None and trained.best_backbone is not None

    # rows to query: the first and last database images, and every image whose code no
    # other database image shares (where "rank 1" is decided by distance alone)
    codes = [tuple(c) for c in to_numpy(PQIndex.load(run / "index").codes).tolist()]
    unique = [r for r, c in enumerate(codes) if codes.count(c) == 1]
    assert unique, "every database code is shared: the tiny run collapsed"
    rows = sorted({0, len(codes) - 1, unique[0]})
    for row in rows:
        path = _query_file(prep, row, isolated)
        # search's query features equal the database features of the same image
        query = encode_query_files(trained, [path])
        gap = float((query[0] - scores.database.feats[row]).abs().max())
        assert gap <= 1e-5, (row, gap)
        # search returns that image first; where other images share its code exactly, they
        # tie with it (the same distance) and the tie is ordered by database position
        out = _cli(capsys, "search", run, path, "--k", str(len(codes)))
        found = [line.split() for line in out.splitlines()[1:]]
        ids, dist = [int(f[3]) for f in found], [float(f[5]) for f in found]
        index = int(np.asarray(prep.splits.database)[row])
        rank = ids.index(index)
        assert dist[rank] == dist[0], (row, out)
        if row in unique:
            assert rank == 0, (row, out)
