"""Progress output stays readable in saved notebooks (no frozen widgets)."""

import io
import sys
import types

from hihpq_lib.utils import runtime


def test_outside_a_kernel_progress_is_tqdm_auto():
    assert not runtime.in_notebook()
    bar = runtime.progress_bar(range(3), disable=True)
    assert list(bar) == [0, 1, 2]


def test_inside_a_kernel_progress_is_plain_text(monkeypatch):
    class ZMQInteractiveShell:  # what ipykernel's get_ipython() returns
        pass

    fake_ipython = types.SimpleNamespace(get_ipython=lambda: ZMQInteractiveShell())
    monkeypatch.setitem(sys.modules, "IPython", fake_ipython)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    assert runtime.in_notebook()
    bar = runtime.progress_bar(range(5), desc="features", total=5)
    assert type(bar).__module__ == "tqdm.std"  # text, not tqdm.notebook's widget
    for _ in bar:
        pass
    bar.close()
    assert "features" in out.getvalue() and "5/5" in out.getvalue()
