"""Run-time settings shared by the library, the notebooks, the CLI and the tests.

Everything a notebook or script would otherwise hard-code lives here: fast mode,
seeding, and the folders for data, caches and runs (each overridable by an
environment variable).

Environment variables
---------------------
``HIHPQ_FAST``
    ``1`` switches on fast mode: smaller data, fewer epochs (used by CI).
``HIHPQ_DATA_DIR``
    Where downloads and extracted datasets live (default ``<repo>/data``).
``HIHPQ_CACHE_DIR``
    Where cached features live (default ``<data dir>/cache``).
``HIHPQ_RUNS_DIR``
    Where training runs, checkpoints and figures go (default ``<repo>/runs``).
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "REPO_ROOT",
    "fast_mode",
    "pick",
    "seed_everything",
    "data_dir",
    "cache_dir",
    "runs_dir",
    "shared_cifar10_archive",
    "in_notebook",
    "progress_bar",
]

#: The repository root (the folder holding ``hihpq_lib``).
REPO_ROOT = Path(__file__).resolve().parent.parent


def fast_mode() -> bool:
    """Whether fast mode is on (``HIHPQ_FAST`` set to ``1``, ``true`` or ``yes``).

    >>> from unittest import mock
    >>> with mock.patch.dict("os.environ", {"HIHPQ_FAST": "1"}):
    ...     fast_mode()
    True
    >>> with mock.patch.dict("os.environ", {"HIHPQ_FAST": "0"}):
    ...     fast_mode()
    False
    """
    return os.environ.get("HIHPQ_FAST", "0").strip().lower() in {"1", "true", "yes", "on"}


def pick(full, fast):
    """Return ``fast`` in fast mode and ``full`` otherwise.

    The single switch notebooks use to shrink data and epochs, e.g.
    ``epochs = pick(30, 2)``.
    """
    return fast if fast_mode() else full


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 (seeds code that uses the legacy global RNG)
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    path = Path(value).expanduser() if value else default
    return path


def data_dir() -> Path:
    """Folder for downloads and extracted datasets (``HIHPQ_DATA_DIR``, default ``data/``)."""
    return _env_path("HIHPQ_DATA_DIR", REPO_ROOT / "data")


def cache_dir() -> Path:
    """Folder for cached features (``HIHPQ_CACHE_DIR``, default ``data/cache``)."""
    return _env_path("HIHPQ_CACHE_DIR", data_dir() / "cache")


def runs_dir() -> Path:
    """Folder for runs, checkpoints and figures (``HIHPQ_RUNS_DIR``, default ``runs/``)."""
    return _env_path("HIHPQ_RUNS_DIR", REPO_ROOT / "runs")


def shared_cifar10_archive() -> Path | None:
    """The development copy of CIFAR-10 beside the checkout, if present.

    ``../shared/data/cifar10-jpeg.tar.gz`` relative to the repository root; used by
    tests, CI and benchmarks only (never committed).
    """
    path = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    return path if path.is_file() else None


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where tqdm.auto would draw a widget)."""
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    ip = shell.get_ipython() if hasattr(shell, "get_ipython") else None
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def progress_bar(iterable=None, **kwargs):
    """A tqdm progress bar that stays readable in a saved notebook.

    In a terminal it is ``tqdm.auto.tqdm``. In a Jupyter kernel it is plain-text tqdm on
    stdout, redrawn at most every 10 s: a widget would be saved in the executed
    notebook frozen at its first state ("0/39"), while text ends at its final line.
    Keyword arguments go to tqdm (``total``, ``desc``, ``unit``, ``disable``, ...).
    """
    if in_notebook():
        from tqdm.std import tqdm

        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("mininterval", 10.0)
        kwargs.setdefault("ascii", True)
        return tqdm(iterable, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)
