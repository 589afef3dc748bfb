"""Notebooks 01-05 in full mode: their sentences must hold with the demo profile too.

``make test`` executes every notebook in fast mode (the quick subset, fewer epochs). A
claim that holds there can fail on the full profile (5,000 training images, the
EfficientNet-Lite2 features of ``make demo``), so these tests execute notebooks 01-05
once more without ``HIHPQ_FAST``: every ``claims.check`` cell runs against the full run.

They need the frozen features of the demo profile in the feature cache (``make demo``
computes them, about 7 minutes once); without them each test is skipped with that
reason, never silently. With the cache the five notebooks take about 8 minutes the first
time (notebooks 04-05 train their two short runs and save them under ``runs/tutorial``)
and about 4 minutes afterwards. To run them against another cache::

    HIHPQ_DATA_DIR=/path/to/data HIHPQ_CACHE_DIR=/path/to/cache \\
        .venv/bin/python -m pytest tests/test_notebooks_full.py -p no:cacheprovider

``HIHPQ_FULL_NOTEBOOKS=0`` skips them (with that reason) on a machine that has the cache
but not the time.
"""

from __future__ import annotations

import os
from pathlib import Path

import jupytext
import pytest

from hihpq_lib.learning import config
from hihpq_lib.utils import runtime

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
FULL = sorted(p for p in NOTEBOOKS.glob("0[1-5]_*.py"))


def missing_profile_features() -> str | None:
    """Why full mode cannot run from the cache, or ``None`` when the demo profile's clean
    features and augmentation bank are both cached (``runtime.cache_dir()/features``)."""
    cfg = config.demo_config(False)
    folder = runtime.cache_dir() / "features"
    tag = f"{cfg.backbone}_{cfg.resolution}"
    missing = [
        kind
        for kind in ("clean", "bank")
        if not any(folder.glob(f"{cfg.data or 'cifar10'}_{kind}-*_{tag}-*.pt"))
    ]
    if not missing:
        return None
    return (
        f"the demo profile's {' and '.join(missing)} features ({tag}) are not cached in "
        f"{folder}: run `make demo` first, or point HIHPQ_CACHE_DIR / HIHPQ_DATA_DIR at its caches"
    )


def test_the_full_mode_notebooks_exist():
    assert [p.name[:2] for p in FULL] == ["01", "02", "03", "04", "05"]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", FULL, ids=[p.stem for p in FULL])
def test_claims_hold_in_full_mode(path, monkeypatch):
    if os.environ.get("HIHPQ_FULL_NOTEBOOKS", "").strip() == "0":
        pytest.skip(f"{path.stem} not executed in full mode: HIHPQ_FULL_NOTEBOOKS=0")
    reason = missing_profile_features()
    if reason is not None:
        pytest.skip(f"{path.stem} not executed in full mode: {reason}")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("HIHPQ_FAST", "0")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = jupytext.read(path, fmt="py:percent")
    timeout = int(nb.metadata.get("execution", {}).get("timeout", 600))
    client = nbclient.NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()  # a failed claims.check raises here, naming the claim
