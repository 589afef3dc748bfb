"""Device-safe tensor -> numpy conversions (issue 26, item 3).

``tensor.numpy()`` raises on a CUDA (or any non-CPU) tensor, and ``np.asarray(tensor)``
does too (it calls ``Tensor.__array__``, which calls ``.numpy()``); code run only on the
CPU never notices. Every conversion in ``hihpq_lib`` therefore goes through
:func:`hihpq_lib.utils.arrays.to_numpy` (``.detach().cpu().numpy()``). Two checks:

* a static one: no attribute call ``.numpy()`` anywhere in ``hihpq_lib`` but in
  ``hihpq_lib/utils/arrays.py``;
* a dynamic one, for the implicit conversions a grep cannot see (``np.asarray(t)``,
  ``np.array(t)``, ``np.<func>(t)``): a tiny run through the CLI (train with clustering,
  ``evaluate``, ``search``) with ``torch.Tensor.numpy`` replaced, see
  :func:`gpu_like_numpy`.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
import torch

from hihpq_lib.app import cli
from tests.test_folders import PROFILE, fast_args, hierarchy_file, image_folder

PACKAGE = Path(__file__).resolve().parent.parent / "hihpq_lib"
#: The one module allowed to call ``.numpy()``.
ARRAYS = PACKAGE / "utils" / "arrays.py"
ARRAYS_MODULE = "hihpq_lib.utils.arrays"


def bare_numpy_calls() -> list[str]:
    """``file:line`` of every attribute call ``<expr>.numpy()`` in ``hihpq_lib`` outside
    ``hihpq_lib/utils/arrays.py``."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in path.parts or path == ARRAYS:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "numpy"
            ):
                found.append((path.relative_to(PACKAGE.parent), node.lineno))
    return [f"{path}:{line}" for path, line in sorted(found)]


def test_no_bare_numpy_call_outside_to_numpy():
    found = bare_numpy_calls()
    assert not found, (
        "tensor.numpy() fails on a GPU tensor; use hihpq_lib.utils.arrays.to_numpy(x) at:\n"
        + "\n".join(found)
    )


@pytest.fixture
def gpu_like_numpy(monkeypatch):
    """Make every tensor behave, for ``.numpy()``, like one on a GPU, unless
    :func:`~hihpq_lib.utils.arrays.to_numpy` converts it.

    Simulation (no GPU here): ``torch.Tensor.numpy`` is replaced by a wrapper that looks at
    the frame that called it. Called from ``hihpq_lib.utils.arrays`` (``to_numpy``, which
    moves the tensor to the CPU first), it converts as usual; called from anywhere else it
    records the call site and raises, as ``.numpy()`` on a CUDA tensor does. That covers a
    bare ``t.numpy()`` and ``t.cpu().numpy()`` in the library as well as the implicit
    conversions ``np.asarray(t)``, ``np.array(t)`` and ``np.<func>(t)``, which reach
    ``.numpy()`` through ``Tensor.__array__`` (their caller frame is ``torch._tensor``).
    Checking the caller frame, rather than wrapping ``to_numpy``, also holds for modules
    that bound ``to_numpy`` by ``from ... import`` before the test ran. Third-party code
    (scikit-learn, scipy, faiss) receives numpy arrays already. The call sites are
    recorded as well as raised, so a conversion inside a ``try`` that falls back on
    another path still fails the test. Returns the list of recorded call sites.
    """
    real = torch.Tensor.numpy
    offences: list[str] = []

    def numpy(self, *args, **kwargs):
        caller = sys._getframe(1)
        if caller.f_globals.get("__name__") == ARRAYS_MODULE:
            return real(self, *args, **kwargs)
        # the first frame in hihpq_lib names the offending line (np.asarray goes via torch)
        frame, site = caller, None
        while frame is not None:
            if frame.f_globals.get("__name__", "").startswith("hihpq_lib."):
                site = f"{frame.f_code.co_filename}:{frame.f_lineno}"
                break
            frame = frame.f_back
        site = site or f"{caller.f_code.co_filename}:{caller.f_lineno}"
        offences.append(site)
        raise RuntimeError(
            f"simulated GPU tensor: .numpy() outside hihpq_lib.utils.arrays.to_numpy at {site}"
        )

    monkeypatch.setattr(torch.Tensor, "numpy", numpy)
    return offences


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_gpu_like_numpy_catches_implicit_conversions(gpu_like_numpy):
    import numpy as np

    from hihpq_lib.utils.arrays import to_numpy

    t = torch.arange(3.0, requires_grad=True)
    assert to_numpy(t).tolist() == [0.0, 1.0, 2.0]
    assert to_numpy(t, np.float64).dtype == np.float64
    assert not gpu_like_numpy
    for convert in (lambda x: x.cpu().numpy(), np.asarray, np.array, np.unique):
        with pytest.raises(RuntimeError, match="simulated GPU tensor"):
            convert(t.detach())
    assert len(gpu_like_numpy) == 4


#: The input modes of hihpq_lib.app.prepare.input_mode, each as --set overrides.
MODES = {
    "bank": [],
    "tail": ["tail_blocks=1"],
    "online": ["online_augmentation=true", "device=cpu"],
}


@pytest.mark.parametrize("mode", list(MODES))
def test_tiny_run_converts_only_through_to_numpy(mode, isolated, capsys, gpu_like_numpy):
    """Train (epoch 1 clusters: ``hierarchy_warmup=0``), ``evaluate`` and ``search`` with
    every tensor -> numpy conversion outside ``to_numpy`` failing (:func:`gpu_like_numpy`)."""
    train = image_folder(isolated / "shapes" / "train", per_class=20, seed=3)
    val = image_folder(isolated / "shapes" / "val", per_class=2, seed=4)
    hier = hierarchy_file(isolated / "hierarchy.json")
    data = ["--data", train, "--query-data", val, "--hierarchy", hier]
    sets = [*fast_args(), "--set", "pretrained=false", "--set", "threads=1"]
    for item in MODES[mode]:
        sets += ["--set", item]
    run = isolated / "run"

    def hihpq(*argv):
        code = cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        assert not gpu_like_numpy, "\n".join(dict.fromkeys(gpu_like_numpy))
        assert code == 0, err
        return out

    hihpq("train", PROFILE, *data, *sets, "--out", run)
    res = json.loads((run / "results.json").read_text())
    assert res["input_mode"] == mode
    # auto clusters for 4 classes and 80 training images: [16, 8, 4] capped at 8
    assert res["num_clusters"] == [8, 4] and res["pseudo_hierarchy"]["epoch"] == 1
    hihpq("evaluate", run, "--json", *data)
    out = hihpq("search", run, val / "cat" / "000.png", "--k", "3")
    assert out.startswith("top 3 of")


def test_peak_memory_is_this_process_not_its_parent():
    """A child started by a process that had grown large reports its own peak: ``ru_maxrss``
    survives fork + exec, so a notebook kernel started by a long test run would report the
    test run's memory (6.6 GB in CI for a 2 GB notebook); ``peak_rss_mb`` reads VmHWM."""
    import subprocess
    import sys

    from hihpq_lib.utils.timing import peak_rss_mb

    ballast = bytearray(600 * 2**20)  # the parent grows by 600 MB
    ballast[::4096] = b"x" * len(ballast[::4096])
    code = "from hihpq_lib.utils.timing import peak_rss_mb; print(peak_rss_mb())"
    child = float(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
    )
    assert peak_rss_mb() > 600
    assert child < peak_rss_mb() - 400, (child, peak_rss_mb())
    del ballast
