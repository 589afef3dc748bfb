"""The install: a lean core (five dependencies), extras for the rest, and a core that
imports and runs with every optional package missing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: What ``pip install hihpq`` (no extras) brings.
CORE = {"torch", "geoopt", "numpy", "scipy", "scikit-learn"}

#: Packages the core must not need (each belongs to an extra).
OPTIONAL = (
    "matplotlib",
    "plotly",
    "faiss",
    "numba",
    "tqdm",
    "torchvision",
    "PIL",
    "yaml",
    "onnx",
    "onnxruntime",
    "timm",
    "ipywidgets",
    "umap",
    "IPython",
)


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


def test_required_dependencies_are_the_core_only():
    assert {_name(r) for r in PYPROJECT["project"]["dependencies"]} == CORE


def test_extras_cover_what_the_library_imports():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"data", "fast", "viz", "baselines", "notebooks", "lite", "all", "dev"} <= set(extras)
    assert {_name(r) for r in extras["fast"]} == {"numba", "faiss-cpu"}
    assert {"matplotlib", "plotly", "ipywidgets", "umap-learn"} <= {_name(r) for r in extras["viz"]}
    assert "hihpq[data,fast,viz,baselines,notebooks,lite]" in extras["all"]
    assert "hihpq[all]" in extras["dev"]
    from hihpq_lib.utils.optional import EXTRAS

    assert set(EXTRAS) == set(extras) - {"dev"}


def test_require_names_the_extra():
    from hihpq_lib.utils.optional import require

    with pytest.raises(ImportError, match=r'pip install "hihpq\[viz\]"'):
        require("surely_not_a_module_hihpq", "viz")
    with pytest.raises(ValueError, match="unknown extra"):
        require("math", "nope")


_CORE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys

    BLOCKED = set(sys.argv[1].split(","))

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, Refuse())
    import torch
    from hihpq_lib.geometry import lorentz, manifolds
    from hihpq_lib.learning import hierarchy, losses
    from hihpq_lib.quantization import index, quantizer

    torch.manual_seed(0)
    space = manifolds.make_space("lorentz", M=2, dim=3)
    pq = quantizer.ProductQuantizer(space, K=4)
    feats = torch.randn(32, 6)
    codes = pq.encode(feats)
    db = index.PQIndex(pq.codewords().detach(), space.k.detach(), geometry="lorentz")
    db.add(codes)
    _, nearest = db.search(pq.decode(codes), 1)  # each item's own codeword comes first
    assert (codes[nearest[:, 0]] == codes).all()
    import warnings
    with warnings.catch_warnings(record=True) as caught:  # asked for: falls back, says why
        warnings.simplefilter("always")
        _, again = db.search(pq.decode(codes), 1, backend="compiled")
    assert (again == nearest).all()
    assert any('hihpq[fast]' in str(w.message) for w in caught), [str(w.message) for w in caught]
    print("ok", sorted(m for m in BLOCKED if m in sys.modules))
    """
)


def test_the_core_runs_without_any_optional_package(tmp_path):
    code = _CORE_SCRIPT
    out = subprocess.run(
        [sys.executable, "-c", code, ",".join(OPTIONAL)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HIHPQ_CACHE_DIR": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "ok []"


def test_default_folders_follow_the_working_directory_not_the_package(tmp_path, monkeypatch):
    from hihpq_lib.utils import runtime

    for var in (
        "HIHPQ_PROJECT_DIR",
        "HIHPQ_DATA_DIR",
        "HIHPQ_CACHE_DIR",
        "HIHPQ_RUNS_DIR",
        "HIHPQ_RESULTS_DIR",
    ):
        monkeypatch.delenv(var, raising=False)
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no hihpq checkout above it: the working directory
    assert runtime.project_dir() == elsewhere
    assert runtime.data_dir() == elsewhere / "data"
    assert runtime.cache_dir() == elsewhere / "data" / "cache"
    assert runtime.runs_dir() == elsewhere / "runs"
    assert runtime.results_dir() == elsewhere / "benchmarks" / "results"
    checkout = tmp_path / "checkout"
    (checkout / "notebooks").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text('[project]\nname = "hihpq"\n')
    monkeypatch.chdir(checkout / "notebooks")  # a notebook's kernel: the checkout's folders
    assert runtime.data_dir() == checkout / "data"
    assert runtime.runs_dir() == checkout / "runs"
    monkeypatch.setenv("HIHPQ_PROJECT_DIR", str(elsewhere))  # e.g. the book's kernels
    assert runtime.runs_dir() == elsewhere / "runs"
    monkeypatch.setenv("HIHPQ_DATA_DIR", str(tmp_path / "d"))
    assert runtime.cache_dir() == tmp_path / "d" / "cache"
    package = Path(runtime.__file__).resolve().parent.parent
    assert not runtime.data_dir().is_relative_to(package)


def test_the_development_data_path_stays_out_of_the_library_and_notebooks():
    found = [
        str(p.relative_to(ROOT))
        for folder in ("hihpq_lib", "notebooks")
        for p in (ROOT / folder).rglob("*.py")
        if "../shared" in p.read_text()
    ]
    assert not found, f"the development data path appears in {found} (use HIHPQ_CIFAR10)"


def test_environment_yml_installs_the_project_with_pip_only():
    text = (ROOT / "environment.yml").read_text()
    pip_lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith('- "')]
    assert pip_lines == ['- "-e .[dev]"'], pip_lines


def test_make_help_lists_every_target():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    help_block = makefile[makefile.index("help:") : makefile.index("$(STAMP): pyproject.toml")]
    listed = set(re.findall(r"make ([a-z][a-z-]*)", help_block))
    assert targets == listed, f"targets {sorted(targets)} vs make help {sorted(listed)}"
