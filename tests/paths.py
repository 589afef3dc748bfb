"""Paths the tests use: the repository checkout and the development copy of CIFAR-10.

The archive comes from ``HIHPQ_CIFAR10`` (the Makefile sets it when the copy exists); the
library never looks for it on its own.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The checkout holding ``tests/`` (the library itself never uses its own location).
REPO_ROOT = Path(__file__).resolve().parent.parent


def cifar10_archive() -> Path | None:
    """``HIHPQ_CIFAR10`` when it names an existing file, else ``None`` (tests then skip)."""
    value = os.environ.get("HIHPQ_CIFAR10")
    return Path(value) if value and Path(value).is_file() else None
