"""Paths the tests use: the repository checkout and the development copies of the data.

The archives come from ``HIHPQ_CIFAR10`` and ``HIHPQ_TINY_IMAGENET_ARCHIVE`` (the Makefile
sets them when the copies exist; ``tests/conftest.py`` falls back on the shared copy of
Tiny-ImageNet); the library never looks for them on its own.
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


def tiny_imagenet_archive() -> Path | None:
    """``HIHPQ_TINY_IMAGENET_ARCHIVE`` when it names an existing file, else ``None``."""
    value = os.environ.get("HIHPQ_TINY_IMAGENET_ARCHIVE")
    return Path(value) if value and Path(value).is_file() else None
