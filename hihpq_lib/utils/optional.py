"""Optional dependencies: import one lazily, or say which extra brings it.

The core (``geometry``, ``quantization``, ``learning.losses``, ``learning.hierarchy``) needs
only torch, geoopt, numpy, scipy and scikit-learn. Everything else comes with an extra of
``pyproject.toml``; a module that needs one imports it through :func:`require` at the point
of use, so the message names the extra to install.

>>> require("math", "viz").pi > 3
True
>>> require("surely_not_installed_module", "viz")
Traceback (most recent call last):
...
ImportError: surely_not_installed_module is needed here and is not installed: pip install "hihpq[viz]"
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "require", "LazyModule"]

#: The extras of ``pyproject.toml`` and what each is for.
EXTRAS = {
    "data": "datasets, image transforms, backbones and the feature cache",
    "fast": "the compiled search (numba) and faiss",
    "viz": "figures (matplotlib, plotly, ipywidgets, umap-learn)",
    "baselines": "the faiss PQ / OPQ baselines",
    "notebooks": "JupyterLab and jupytext for the tutorial series",
    "lite": "ImageNet weights of the EfficientNet-Lite1/2 backbones",
    "all": "every extra above",
}


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` (e.g. ``"faiss"``, ``"plotly.graph_objects"``) or explain the fix.

    Parameters
    ----------
    module : dotted module name
    extra : the ``pyproject.toml`` extra that installs it (a key of :data:`EXTRAS`)

    Raises
    ------
    ImportError
        naming the module and ``pip install "hihpq[<extra>]"``.
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; choose from {sorted(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise ImportError(
            f'{top} is needed here and is not installed: pip install "hihpq[{extra}]"'
        ) from exc


class LazyModule:
    """A module imported at its first attribute access, through :func:`require`.

    ``faiss = LazyModule("faiss", "baselines")`` at the top of a module keeps the code
    reading ``faiss.IndexPQ(...)`` while importing the module without faiss installed.

    >>> m = LazyModule("math", "viz")
    >>> m.sqrt(4.0)
    2.0
    """

    def __init__(self, module: str, extra: str):
        self._module, self._extra = module, extra

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(require(self._module, self._extra), name)

    def __repr__(self) -> str:
        return f"LazyModule({self._module!r}, extra={self._extra!r})"
