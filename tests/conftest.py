"""Shared test fixtures: dtype tolerance table, seeds, hypothesis profile."""

import os
import tarfile
from pathlib import Path

import pytest
import torch
from hypothesis import settings

try:  # the viz extra; a lean install (no extras) runs the core tests without it
    import matplotlib
except ImportError:
    matplotlib = None
else:
    matplotlib.use("Agg")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
# A fixed thread budget (runtime.thread_budget): without it every stage and training run
# would size its threads from the cores free at that moment, and two runs that a test
# compares bit for bit could round differently on a busy machine. Tests of the automatic
# budget unset it with monkeypatch. Set at import, before the environment fixture looks.
os.environ.setdefault("HIHPQ_THREADS", str(torch.get_num_threads()))

# Deterministic property tests: the same examples on every run.
settings.register_profile("hihpq", derandomize=True, max_examples=60, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "hihpq"))

#: One tolerance table per dtype: (rtol, atol) for identities that hold exactly in
#: real arithmetic, evaluated on points within the clip radius.
TOL = {
    torch.float32: {"rtol": 1e-4, "atol": 1e-4},
    torch.float64: {"rtol": 1e-10, "atol": 1e-10},
}

DTYPES = [torch.float32, torch.float64]
SEEDS = [0, 1, 2]


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture(params=SEEDS, ids=[f"seed{s}" for s in SEEDS])
def gen(request):
    g = torch.Generator().manual_seed(request.param)
    return g


@pytest.fixture
def tol(dtype):
    return TOL[dtype]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Own data, cache and runs folders; no CIFAR-10 anywhere."""
    monkeypatch.setenv("HIHPQ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HIHPQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HIHPQ_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HIHPQ_CIFAR10", str(tmp_path / "no-cifar"))
    return tmp_path


#: The development copy of the Tiny-ImageNet subset beside the checkout, used when
#: HIHPQ_TINY_IMAGENET_ARCHIVE is not set (the Makefile sets it to the same file).
_SHARED_TINY_IMAGENET = (
    Path(__file__).resolve().parent.parent.parent
    / "shared"
    / "data"
    / "tiny-imagenet-200-subset.tar.gz"
)


@pytest.fixture(scope="session")
def tiny_imagenet_dir() -> Path:
    """The Tiny-ImageNet subset (``train/``, ``val/``, ``wordnet_hierarchy.json``), unpacked.

    From ``HIHPQ_TINY_IMAGENET_ARCHIVE``, else the shared development copy; unpacked once
    into ``build/tiny-imagenet/`` of the checkout (gitignored) and reused, so its paths,
    and hence the feature-cache keys of its images, stay the same from run to run. Skips
    the test when no archive is found.
    """
    from tests.paths import REPO_ROOT, tiny_imagenet_archive

    archive = tiny_imagenet_archive()
    if archive is None and _SHARED_TINY_IMAGENET.is_file():
        archive = _SHARED_TINY_IMAGENET
    if archive is None:
        pytest.skip(
            "no Tiny-ImageNet archive: set HIHPQ_TINY_IMAGENET_ARCHIVE to a .tar.gz holding "
            "train/, val/ and wordnet_hierarchy.json"
        )
    dest = REPO_ROOT / "build" / "tiny-imagenet"
    done = dest / f".unpacked-{archive.stat().st_size}"
    if not done.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
        done.touch()
    found = sorted(dest.glob("*/wordnet_hierarchy.json")) + sorted(
        dest.glob("wordnet_hierarchy.json")
    )
    if not found:
        pytest.fail(f"{archive} holds no wordnet_hierarchy.json (expected train/, val/ beside it)")
    return found[0].parent
