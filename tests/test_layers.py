"""The package's layers: a module never imports a higher layer (an import-graph check).

The order, bottom to top, is :data:`LAYERS`; ``hihpq_lib/__init__.py`` documents it. Every
import in every module is read from the source (top-level and inside functions alike), so a
lazy import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hihpq_lib"

#: The subpackages, bottom to top: each may import only itself and the ones before it.
LAYERS = ("utils", "geometry", "quantization", "data", "evaluation", "learning", "viz", "app")


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every import of ``hihpq_lib`` in ``path``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod == "hihpq_lib":  # from hihpq_lib import geometry: the names are modules
                out += [(node.lineno, f"hihpq_lib.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, mod))
    return [(line, m) for line, m in out if m == "hihpq_lib" or m.startswith("hihpq_lib.")]


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_subpackage_is_a_layer():
    found = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert found == set(LAYERS), f"subpackages {sorted(found)} vs LAYERS {LAYERS}"
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside a layer: {loose}"


def _upward(path: Path) -> list[str]:
    """The imports of ``path`` that reach a higher layer (for the top ``__init__``: any)."""
    own = _layer(_module_name(path))
    rank = len(LAYERS) if own is None else LAYERS.index(own)
    return [
        f"line {line}: {mod}"
        for line, mod in _imports(path)
        if own is None or _layer(mod) is None or LAYERS.index(_layer(mod)) > rank
    ]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: _module_name(p))
def test_no_module_imports_a_higher_layer(path):
    upward = _upward(path)
    assert not upward, f"{_module_name(path)} imports a higher layer: {upward}"


def test_the_checker_sees_an_upward_import(tmp_path):
    bad = tmp_path / "hihpq_lib" / "geometry" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("def f():\n    from hihpq_lib.viz import palette\n    from ..app import cli\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "hihpq_lib"
    try:
        assert _imports(bad) == [(2, "hihpq_lib.viz"), (3, "hihpq_lib.app")]
        assert _upward(bad) == ["line 2: hihpq_lib.viz", "line 3: hihpq_lib.app"]
        ok = bad.with_name("ok.py")
        ok.write_text("from hihpq_lib.utils import runtime\nfrom . import lorentz\n")
        assert _upward(ok) == []
    finally:
        PACKAGE = saved


def test_importing_the_package_loads_nothing_heavy():
    code = (
        "import sys, hihpq_lib; "
        "heavy = {'torch', 'numpy', 'geoopt', 'scipy', 'sklearn', 'matplotlib', 'plotly'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE.parent,
    ).stdout.strip()
    assert out == "[]", f"import hihpq_lib loaded {out}"
