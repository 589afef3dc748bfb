"""Fault and hostile-input suite (issue 14): every case of docs/reliability.md.

Tiny data, seconds each. Each test names the defect it pins; before the fixes each one
failed (a traceback, a file created by a payload, stale features, a rewritten run folder).
"""

import errno
import gzip
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hihpq_lib import data as D
from hihpq_lib.app import cli
from hihpq_lib.app.datasets import OneClassWarning
from hihpq_lib.app.pipeline import check_run_folder
from hihpq_lib.app.prepare import prepare
from hihpq_lib.data import sources as data_sources
from hihpq_lib.data.features import FeatureCache, feature_key
from hihpq_lib.learning.checkpoint import CheckpointError, load_checkpoint, load_model
from hihpq_lib.learning.config import ConfigError, TrainConfig, load_config
from hihpq_lib.learning.training import train
from hihpq_lib.utils.atomic import atomic_write_bytes, clean_stale_tmp
from hihpq_lib.utils.runtime import free_cores, thread_budget, use_threads
from tests.paths import REPO_ROOT
from tests.test_training import small_config, synthetic_data

CPU_CONFIG = "configs/cpu/cpu_cifar10_ii_32bits.yaml"


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {lines}"
    assert lines[0].startswith("hihpq: error: ")
    assert "Traceback" not in err
    return lines[0]


class _Payload:
    """Unpickling this touches ``marker``: what a hostile data file would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def image_folder(root: Path, seed: int, n_classes: int = 2, per_class: int = 12) -> Path:
    rng = np.random.default_rng(seed)
    for c in range(n_classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / f"class{c}" / f"{i:03d}.png")
    return root


def folder_config(path: Path, **kw) -> TrainConfig:
    items = [
        "dataset=folder",
        f"data={path}",
        "engine=torch",
        "resolution=32",
        "n_views=2",
        "n_val_per_class=1",
    ] + [f"{k}={v}" for k, v in kw.items()]
    return TrainConfig().with_overrides(items)


# ---------------------------------------------------------------------------------- 1
# The feature cache is keyed by content


def test_cache_two_folders_of_the_same_size_get_their_own_features(isolated):
    a = prepare(folder_config(image_folder(isolated / "a", seed=1)), progress=False)
    b = prepare(folder_config(image_folder(isolated / "b", seed=2)), progress=False)
    assert a.feats.shape == b.feats.shape
    assert not torch.equal(a.feats, b.feats)
    fresh = FeatureCache(isolated / "fresh")
    assert fresh.load(feature_key("x", "y", _Named(), 1)) is None
    # b's features are the ones a fresh computation gives (not a's from the cache)
    shutil.rmtree(isolated / "cache")
    again = prepare(folder_config(isolated / "b"), progress=False)
    assert torch.equal(again.feats, b.feats)


class _Named:
    name, weights_id, mean, std = "n", "w", (0.5,), (0.5,)


@pytest.mark.parametrize("extra", [{}, {"tail_blocks": 1}], ids=["bank", "tail"])
def test_first_run_notice_counts_only_what_is_missing(isolated, capsys, extra):
    """A cached clean entry with a missing bank (here: more views) announces the views
    alone; nothing missing announces nothing (features and the tail mode's trunk maps)."""
    from hihpq_lib.app.prepare import prepare_for

    root = image_folder(isolated / "a", seed=1)
    prepare_for(folder_config(root, **extra), progress=False)
    first = capsys.readouterr().out
    counts = re.search(r"\((\d+) images \+ (\d+) augmented views at 32 px", first)
    assert counts, first
    n_train = int(counts[2]) // 2  # n_views=2
    prepare_for(folder_config(root, n_views=3, **extra), progress=False)
    views_only = capsys.readouterr().out
    assert "FIRST RUN" in views_only and f"({3 * n_train} augmented views at 32 px" in views_only
    prepare_for(folder_config(root, n_views=3, **extra), progress=False)
    assert "FIRST RUN" not in capsys.readouterr().out


def test_a_concatenation_announces_its_uncached_members_up_front_and_only_those(isolated, capsys):
    """``backbone: a+b`` with ``a`` already cached: one line before anything is computed
    names ``b`` alone with the time for it, then ``b``'s own notice; ``a`` announces
    nothing; once both are cached, nothing is announced."""
    root = image_folder(isolated / "a", seed=1)
    prepare(folder_config(root), progress=False)  # efficientnet_lite0 alone
    capsys.readouterr()
    both = folder_config(root, backbone="efficientnet_lite0+efficientnet_lite1")
    prepare(both, progress=False)
    out = capsys.readouterr().out.splitlines()
    first = [line for line in out if line.startswith("FIRST RUN")]
    assert len(first) == 2, out
    assert re.fullmatch(
        r"FIRST RUN: 1 of the 2 backbones side by side is not cached yet "
        r"\(efficientnet_lite1\); computing its features takes about \d+ min in all"
        r" at the measured rates; longer on a busy machine\.",
        first[0],
    ), first[0]
    assert first[1].startswith("FIRST RUN: the frozen efficientnet_lite1 features are"), first[1]
    minutes = [re.search(r"about (\d+) min", line)[1] for line in first]
    assert minutes[0] == minutes[1], first  # the total is the sum of the members' notices
    prepare(both, progress=False)
    assert "FIRST RUN" not in capsys.readouterr().out


def test_cache_notices_a_replaced_image(isolated):
    root = image_folder(isolated / "a", seed=1)
    before = prepare(folder_config(root), progress=False)
    victim = root / "class0" / "000.png"
    Image.fromarray(np.full((24, 24, 3), 255, np.uint8)).save(victim)
    os.utime(victim, ns=(time.time_ns(), time.time_ns() + 10**9))
    after = prepare(folder_config(root), progress=False)
    row = int(np.searchsorted(after.feat_index, 0))  # dataset index 0 is class0/000.png
    assert not torch.equal(before.feats[row], after.feats[row])
    others = [i for i in range(len(after.feat_index)) if i != row]
    assert torch.equal(before.feats[others], after.feats[others])


def test_cache_key_changes_with_resolution_and_backbone_weights(isolated):
    root = image_folder(isolated / "a", seed=1)
    p32 = prepare(folder_config(root), progress=False)
    p40 = prepare(folder_config(root, resolution=40), progress=False)
    assert not torch.equal(p32.feats, p40.feats)
    from hihpq_lib.data.backbones import build_backbone

    bb = build_backbone("efficientnet_lite0", pretrained=False)
    k1 = feature_key("folder", "clean", bb, 32, content="c")
    with torch.no_grad():  # same name and weights_id, other weights
        next(bb.parameters()).add_(1.0)
    k2 = feature_key("folder", "clean", bb, 32, content="c")
    assert k1["weights_id"] == k2["weights_id"] and k1 != k2
    assert feature_key("folder", "clean", bb, 32, content="d") != k2


def test_content_fingerprint_of_in_memory_images():
    imgs = np.zeros((3, 4, 4, 3), np.uint8)
    a = D.ImageDataset(imgs, [0, 1, 0], ["a", "b"])
    imgs2 = imgs.copy()
    imgs2[1, 0, 0, 0] = 1
    b = D.ImageDataset(imgs2, [0, 1, 0], ["a", "b"])
    assert D.content_fingerprint(a) != D.content_fingerprint(b)
    assert D.content_fingerprint(a, [0, 2]) == D.content_fingerprint(b, [0, 2])


# ---------------------------------------------------------------------------------- 2
# No code runs from data files


def cifar_batches(root: Path, payload=None, protocol: int = 2, per_batch: int = 4) -> Path:
    """A torchvision-format CIFAR-10 folder (tiny), optionally with a hostile batch."""
    batches = root / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {
            b"batch_label": b"tiny",
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [b"x.png"] * per_batch,
        }
        if payload is not None and name == "data_batch_1":
            entry[b"data"] = payload
        (batches / name).write_bytes(pickle.dumps(entry, protocol=protocol))
    meta = {b"label_names": [n.encode() for n in D.CIFAR10_CLASSES]}
    (batches / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return root


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_real_cifar_batch_format_still_loads(tmp_path, protocol):
    root = cifar_batches(tmp_path / "tv", protocol=protocol)
    ds = D.load_cifar10(root)
    assert ds.images.shape == (24, 32, 32, 3) and ds.labels.shape == (24,)
    assert ds.class_names == list(D.CIFAR10_CLASSES)


def test_hostile_cifar_batch_runs_no_code(tmp_path, capsys, isolated):
    marker = tmp_path / "pwned"
    root = cifar_batches(tmp_path / "tv", payload=_Payload(marker))
    with pytest.raises(D.CorruptImageError, match="refusing to load posix.system"):
        D.load_cifar10(root)
    code, _, err = run_cli(capsys, "prepare", "--data", root)
    assert code == 2 and "data_batch_1" in one_error_line(err)
    assert "convert it to an image tree" in err
    assert not marker.exists()


def test_evaluate_never_follows_the_data_path_stored_in_a_run(tmp_path, capsys, isolated):
    marker = tmp_path / "pwned"
    hostile = cifar_batches(tmp_path / "sent-to-you", payload=_Payload(marker))
    run = tmp_path / "run"
    cfg = small_config(data=str(hostile))
    train(cfg, synthetic_data(), run, progress=False, stop_after=1)
    read = []
    real = data_sources._load_pickle_batch
    try:
        data_sources._load_pickle_batch = lambda p: read.append(p) or real(p)
        code, _, err = run_cli(capsys, "evaluate", run)
    finally:
        data_sources._load_pickle_batch = real
    assert code == 2 and "no-cifar" in err  # the local (missing) copy, not the stored path
    assert not read and not marker.exists()


# ---------------------------------------------------------------------------------- 3, 4
# Run folders: refuse to mix runs, validate before writing


def finished_run(folder: Path, **kw) -> dict:
    cfg = small_config(**{"epochs": 2, **kw})
    res = train(cfg, synthetic_data(), folder, progress=False)
    index = res["model"].build_index(
        synthetic_data().val_database.feats, metadata={"run_id": res["run_id"]}
    )
    index.save(folder / "index")
    np.save(folder / "database_indices.npy", np.arange(index.ntotal))
    cfg.save(folder / "config.yaml")
    (folder / "splits.json").write_text("{}")
    return res


def snapshot(folder: Path) -> dict:
    return {
        p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_train_refuses_a_non_empty_run_folder(tmp_path, capsys, isolated):
    run = tmp_path / "run"
    finished_run(run)
    before = snapshot(run)
    code, _, err = run_cli(capsys, "train", CPU_CONFIG, "--out", run)
    line = one_error_line(err)
    assert code == 2 and "not empty" in line and "--overwrite" in line and "--resume" in line
    assert snapshot(run) == before


def test_overwrite_removes_the_earlier_run_first(tmp_path):
    run = tmp_path / "run"
    finished_run(run)
    (run / "notes.txt").write_text("mine")
    check_run_folder(small_config(), run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_search_refuses_an_index_of_another_run(tmp_path, capsys):
    old, new = tmp_path / "old", tmp_path / "new"
    finished_run(old)
    finished_run(new, lr=0.02)
    shutil.copy(new / "checkpoint.pt", old / "checkpoint.pt")  # a mixed folder
    img = tmp_path / "q.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    code, _, err = run_cli(capsys, "search", old, img)
    assert code == 2 and "mixes two runs" in one_error_line(err)


def test_best_checkpoint_of_another_run_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    finished_run(a)
    finished_run(b)
    shutil.copy(b / "best.pt", a / "best.pt")
    with pytest.raises(CheckpointError, match="mixes two runs"):
        load_model(a, "best")


def test_refused_resume_writes_nothing(tmp_path, capsys, isolated):
    run = tmp_path / "run"
    cfg_file = tmp_path / "cfg.yaml"
    small_config().save(cfg_file)
    train(small_config(), synthetic_data(), run, progress=False, stop_after=1)
    small_config().save(run / "config.yaml")
    (run / "splits.json").write_text('{"old": true}')
    before = snapshot(run)
    code, _, err = run_cli(capsys, "train", cfg_file, "--set", "lr=0.02", "--out", run, "--resume")
    line = one_error_line(err)
    assert code == 2 and "another configuration" in line and "lr" in line
    assert snapshot(run) == before


# ---------------------------------------------------------------------------------- 5
# Read-only install: numba's cache falls back


_NUMBA_SCRIPT = """
import numpy as np
from hihpq_lib.quantization import adc_kernel
tables = np.random.default_rng(0).random((2, 2, 4), dtype=np.float32)
codes = np.random.default_rng(1).integers(0, 4, (50, 2), dtype=np.uint8)
v, i = adc_kernel.adc_topk(tables, codes, 3)
full = tables[:, 0, codes[:, 0]] + tables[:, 1, codes[:, 1]]
assert np.array_equal(i, np.argsort(full, axis=1, kind="stable")[:, :3])
print("search ok")
"""


@pytest.mark.parametrize("cache_writable", [False, True])
def test_read_only_install_does_not_crash(tmp_path, cache_writable):
    """A copy of the package where nothing can be written, even by root: each
    ``__pycache__`` is a file, and HOME (numba's user cache) lies under a file."""
    pkg = tmp_path / "install"
    shutil.copytree(
        REPO_ROOT / "hihpq_lib", pkg / "hihpq_lib", ignore=shutil.ignore_patterns("__pycache__")
    )
    for folder in [pkg / "hihpq_lib", *(p for p in (pkg / "hihpq_lib").rglob("*") if p.is_dir())]:
        (folder / "__pycache__").write_text("not a folder")  # beside every module
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    cache = tmp_path / "cache" if cache_writable else blocker / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "XDG_"))}
    env.update(
        PYTHONPATH=str(pkg),
        HOME=str(blocker / "home"),
        HIHPQ_CACHE_DIR=str(cache),
        PYTHONDONTWRITEBYTECODE="1",
    )
    proc = subprocess.run(
        [sys.executable, "-c", _NUMBA_SCRIPT],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "search ok" in proc.stdout
    notes = [line for line in proc.stderr.splitlines() if line.startswith("hihpq: note:")]
    assert len(notes) == 1, proc.stderr[-2000:]
    if cache_writable:
        assert str(cache / "numba") in notes[0]
        assert any((cache / "numba").rglob("*.nbi"))
    else:
        assert "compile in each process" in notes[0]


# ---------------------------------------------------------------------------------- 7
# One error line naming the file and the fix, exit 2


def test_malformed_yaml_names_the_file(tmp_path, capsys):
    bad = tmp_path / "broken.yaml"
    bad.write_text("epochs: [1, 2\nbits: 32\n")
    code, _, err = run_cli(capsys, "train", bad)
    line = one_error_line(err)
    assert code == 2 and "broken.yaml" in line and "not valid YAML" in line and "line" in line


@pytest.mark.parametrize("kind", ["truncated", "not-gzip"])
def test_broken_archive_is_one_line(tmp_path, capsys, isolated, kind):
    good = tmp_path / "good.tar.gz"
    src = image_folder(tmp_path / "tree" / "train", seed=0)
    import tarfile

    with tarfile.open(good, "w:gz") as tar:
        tar.add(src, arcname="train")
    bad = tmp_path / f"{kind}.tar.gz"
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if kind == "truncated" else b"plain text\n" * 50)
    code, _, err = run_cli(capsys, "prepare", "--data", bad)
    line = one_error_line(err)
    assert code == 2 and bad.name in line and "download it again" in line


def hostile_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"model": {}, "config": {}, "evil": _Payload(marker)}, path)


@pytest.mark.parametrize("kind", ["empty", "truncated", "hostile", "not-a-checkpoint"])
def test_bad_checkpoint_is_one_line(tmp_path, capsys, kind):
    run = tmp_path / "run"
    finished_run(run)
    ck = run / "checkpoint.pt"
    marker = tmp_path / "pwned"
    if kind == "empty":
        ck.write_bytes(b"")
    elif kind == "truncated":
        ck.write_bytes(ck.read_bytes()[:1000])
    elif kind == "hostile":
        hostile_checkpoint(ck, marker)
    else:
        ck.write_bytes(gzip.compress(b"hello"))
    code, _, err = run_cli(capsys, "evaluate", run)
    line = one_error_line(err)
    assert code == 2 and "checkpoint.pt" in line
    assert "weights_only" not in err and not marker.exists()
    with pytest.raises(CheckpointError):
        load_checkpoint(ck)


def test_permission_error_is_one_line(tmp_path, capsys, isolated, monkeypatch):
    def denied(self, path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(TrainConfig, "save", denied)
    code, _, err = run_cli(capsys, "train", CPU_CONFIG, "--out", tmp_path / "run")
    line = one_error_line(err)
    assert code == 2 and "config.yaml: Permission denied" in line and "HIHPQ_RUNS_DIR" in line


def test_out_that_is_a_file_is_one_line(tmp_path, capsys, isolated):
    out = tmp_path / "taken"
    out.write_text("x")
    code, _, err = run_cli(capsys, "train", CPU_CONFIG, "--out", out)
    assert code == 2 and "is a file" in one_error_line(err)
    assert out.read_text() == "x"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lr=-1", "lr must be > 0.0"),
        ("momentum=1.5", "momentum must be < 1"),
        ("tau=0", "tau must be > 0.0"),
        ("n_val_per_class=0", "n_val_per_class must be >= 1"),
        ("batch_size=1", "batch_size must be >= 2"),
        ("threads=-2", "threads must be >= 0"),
    ],
)
def test_whole_config_is_validated_before_any_work(tmp_path, capsys, isolated, override, message):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", CPU_CONFIG, "--set", override, "--out", out)
    assert code == 2 and message in one_error_line(err)
    assert not out.exists()


# ---------------------------------------------------------------------------------- 8, 9


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = atomic_write_bytes(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


def test_stale_temporaries_are_cleaned_at_start(tmp_path):
    run = tmp_path / "run"
    train(small_config(), synthetic_data(), run, progress=False, stop_after=1)
    dead = run / ".checkpoint.pt.999999999-0123abcd.tmp"  # its process is gone
    old_style = run / ".best.pt.k2j4h5g6.tmp"  # mkstemp's name, two hours old
    live = run / f".metrics.jsonl.{os.getpid()}-89abcdef.tmp"  # a writer still at work
    for p in (dead, old_style, live):
        p.write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    os.utime(old_style, (two_hours_ago, two_hours_ago))
    check_run_folder(small_config(), run, resume=True)
    assert not dead.exists() and not old_style.exists() and live.exists()
    cache = FeatureCache(tmp_path / "cache")
    (tmp_path / "cache").mkdir()
    orphan = tmp_path / "cache" / ".x.pt.999999999-00000000.tmp"
    orphan.write_bytes(b"half")
    cache.get_or_compute({"k": 1}, lambda: torch.zeros(1))
    assert not orphan.exists()
    assert clean_stale_tmp(tmp_path / "nowhere") == []


# ---------------------------------------------------------------------------------- 10


def test_run_names_cannot_leave_the_runs_folder(capsys, isolated):
    for name in ("../../x", "a/b", "..", "a\\b"):
        code, _, err = run_cli(capsys, "train", CPU_CONFIG, "--set", f"name={name}")
        assert code == 2 and "not a plain folder name" in one_error_line(err)
    assert not (isolated / "x").exists()


def test_string_overrides_are_taken_literally():
    cfg = TrainConfig().with_overrides(["data=/tmp/a: b", "name=run_1"])
    assert cfg.data == "/tmp/a: b" and cfg.name == "run_1"
    with pytest.raises(ConfigError, match="'a: b'"):
        TrainConfig().with_overrides(["name=a: b"])
    assert TrainConfig().with_overrides(["data=null"]).data is None


def test_config_path_that_is_a_folder(capsys):
    code, _, err = run_cli(capsys, "train", "configs")
    assert code == 2 and "is a folder, not a file" in one_error_line(err)


def test_binary_config_file(tmp_path, capsys):
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(bytes(range(256)))
    code, _, err = run_cli(capsys, "train", binary)
    line = one_error_line(err)
    assert code == 2 and "weights.yaml" in line and "not UTF-8" in line


def test_empty_validation_queries_say_raise_n_val_per_class():
    with pytest.raises(ValueError, match="raise n_val_per_class"):
        D.Splits(
            train=np.arange(4),
            query=np.array([4]),
            database=np.arange(4),
            val_query=np.array([], np.int64),
            val_database=np.arange(4),
        )


def test_one_class_dataset_warns(isolated):
    root = image_folder(isolated / "one", seed=0, n_classes=1)
    with pytest.warns(OneClassWarning, match="mAP is 1.0"):
        prepare(folder_config(root), progress=False)


def test_search_query_image_raises_no_numpy_warning(tmp_path):
    from hihpq_lib.data.transforms import eval_transform

    img = tmp_path / "q.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img)
    arr = D.read_image_file(img)
    ro = np.zeros((1, 16, 16, 3), np.uint8)
    ro.flags.writeable = False
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eval_transform(arr[None], 16, mean=(0.5,) * 3, std=(0.5,) * 3)
        eval_transform(ro, 16, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_run_folder_line_prints_the_path(tmp_path, capsys, isolated, monkeypatch):
    import hihpq_lib.app.pipeline as P

    def fake(cfg, out_dir, **kw):
        return {"map@1000_final": 0.5, "val_selected_epoch": 1, "val_map_best": 0.5}

    monkeypatch.setattr(P, "run_experiment", fake)
    code, out, _ = run_cli(capsys, "train", CPU_CONFIG)
    runs = (isolated / "runs").resolve()
    assert code == 0 and f"run folder: {runs / load_config(CPU_CONFIG).name}" in out


def test_duplicate_keys_in_a_json_superclass_file(tmp_path):
    f = tmp_path / "super.json"
    f.write_text('{"cat": "animal", "car": "vehicle", "cat": "vehicle"}')
    with pytest.raises(ValueError, match="'cat' appears twice"):
        D.read_superclass_file(f)


def test_read_only_image_cache_fails_before_decoding(tmp_path, monkeypatch):
    tree = tmp_path / "cifar"
    for part in ("train", "test"):
        for name in D.CIFAR10_CLASSES:
            (tree / part / name).mkdir(parents=True)
            Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tree / part / name / "0.png")
    blocked = tmp_path / "cache-is-a-file"
    blocked.write_text("x")  # nothing can be written under it, not even by root
    monkeypatch.setenv("HIHPQ_CACHE_DIR", str(blocked))
    decoded = []
    monkeypatch.setattr(data_sources, "_decode_tree", lambda *a: decoded.append(1))
    with pytest.raises(PermissionError, match="HIHPQ_CACHE_DIR"):
        D.load_cifar10(tree, progress=False)
    assert not decoded


# ---------------------------------------------------------------------------------- 11
# One thread budget


def test_thread_budget_sources(monkeypatch):
    monkeypatch.setenv("HIHPQ_THREADS", "3")
    assert thread_budget(0) == 3 and thread_budget(1) == 1
    monkeypatch.setenv("HIHPQ_THREADS", "many")
    with pytest.raises(ValueError, match="HIHPQ_THREADS"):
        thread_budget(0)
    monkeypatch.delenv("HIHPQ_THREADS")
    assert 1 <= thread_budget(0) <= os.cpu_count()


def test_numba_pool_does_not_change_torch_threads():
    import numba

    before = torch.get_num_threads()
    try:
        use_threads(1)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)  # starts numba's pool
        from hihpq_lib.quantization import adc_kernel

        tables = np.zeros((1, 2, 4), np.float32)
        adc_kernel.adc_topk(tables, np.zeros((5, 2), np.uint8), 2, threads=2)
        assert torch.get_num_threads() == 1
    finally:
        use_threads(before)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
def test_free_cores_sees_a_busy_process():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert free_cores() <= len(os.sched_getaffinity(0)) - 1
    finally:
        busy.kill()
        busy.wait()


def test_a_fresh_claim_of_another_process_counts(tmp_path, monkeypatch):
    """Two copies started together: the second counts the cores the first just took."""
    import hihpq_lib.utils.runtime as R

    monkeypatch.delenv("HIHPQ_THREADS")
    monkeypatch.setattr(R, "_claims_dir", lambda: tmp_path)
    n = len(os.sched_getaffinity(0))
    monkeypatch.setattr(R, "free_cores", lambda: n)  # an idle machine, as both copies see it
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / f"pid-{other.pid}").write_text(str(os.cpu_count()))
        assert thread_budget(0) == 1
        assert (tmp_path / f"pid-{os.getpid()}").read_text() == "1"
        old = time.time() - 3600  # an old claim: the measurement sees that work itself
        os.utime(tmp_path / f"pid-{other.pid}", (old, old))
        assert thread_budget(0) == n
        assert not (tmp_path / f"pid-{other.pid}").exists()
    finally:
        other.kill()
        other.wait()


def test_checkpoint_records_its_thread_count(tmp_path):
    res = train(small_config(threads=1), synthetic_data(), tmp_path, progress=False, stop_after=1)
    assert res["threads"] == 1 and load_checkpoint(tmp_path / "checkpoint.pt")["threads"] == 1


def test_every_case_in_the_docs_table_names_a_test():
    table = (REPO_ROOT / "docs" / "reliability.md").read_text()
    cited = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", table)
    missing = [
        f"{file}::{name}"
        for file, name in cited
        if f"def {name}(" not in (REPO_ROOT / file).read_text()
    ]
    assert len(cited) >= 30 and not missing, missing
