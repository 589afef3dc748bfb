"""Shared test fixtures: dtype tolerance table, seeds, hypothesis profile."""

import os

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
