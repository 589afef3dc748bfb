"""Checks shared by the unit tests (``tests/``) and the doctests (``hihpq_lib/``).

Every test must leave ``os.environ`` as it found it. ``make test`` runs the notebooks in
the same pytest process after the unit tests, and each notebook kernel inherits this
process's environment: a test that left ``HIHPQ_FAST=0`` behind would turn the notebooks'
fast mode off and make them time out in CI.
"""

import importlib
import os

import pytest

# Importing torch, torchvision, faiss, numba and the library sets variables of their own (KMP_*,
# TORCHINDUCTOR_CACHE_DIR): do it before any test, so that the first test to import them
# is not blamed for it. A lean install (no extras) lacks some of them: skip those.
for _name in (
    "torch",
    "geoopt",
    "torchvision",
    "faiss",
    "numba",
    "hihpq_lib.quantization.index",
    "hihpq_lib.app.demo",
):
    try:
        importlib.import_module(_name)
    except ImportError:
        pass

#: Variables pytest itself changes between the phases of a test, and torch's own cache
#: folder, which torch sets (to its default) the first time it needs it: without the
#: extras imported above, that can happen inside any test.
_PYTEST_OWN = {"PYTEST_CURRENT_TEST", "TORCHINDUCTOR_CACHE_DIR"}


@pytest.fixture(autouse=True)
def _environment_is_restored():
    before = dict(os.environ)
    yield
    after = dict(os.environ)
    changed = sorted(
        k for k in (before.keys() | after.keys()) - _PYTEST_OWN if before.get(k) != after.get(k)
    )
    if not changed:
        return
    for key in changed:
        if key in before:
            os.environ[key] = before[key]
        else:
            os.environ.pop(key, None)
    pytest.fail(
        f"the test changed os.environ and did not restore it: {', '.join(changed)} "
        "(use monkeypatch.setenv or unittest.mock.patch.dict)"
    )


#: Doctests that need an optional package (an extra): skipped, with the reason, on a lean
#: install (``pip install hihpq`` without extras), where the core's tests still run.
_DOCTEST_NEEDS = {
    "hihpq_lib.quantization.adc_kernel.": "numba",
    "hihpq_lib.quantization.index.FaissExport": "faiss",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for prefix, module in _DOCTEST_NEEDS.items():
            if type(item).__name__ == "DoctestItem" and item.name.startswith(prefix):
                try:
                    importlib.import_module(module)
                except ImportError:
                    item.add_marker(pytest.mark.skip(reason=f"needs {module} (an extra)"))
