"""Sentences about a run, written from the run's own numbers, and checks of the claims.

The notebooks never type a measured number into their prose. A sentence that reports a
result is generated from the variables with :func:`say` (an ``IPython.display.Markdown``
object, so it renders as text), and a qualitative reading ("a clear gain", "within
noise") is chosen by code from the interval (:func:`interval_reading`). A sentence that
stays in markdown but makes a claim about the printed values (a direction, a ratio
range, an interval that excludes 0) is followed by a cell tagged ``claim`` that calls
:func:`check`: if a run changes the result, the notebook fails in CI instead of keeping
a false sentence. ``tests/test_notebooks.py`` requires such cells in every notebook.

>>> interval_reading(0.02, 0.04)
'a clear gain'
>>> interval_reading(-0.01, 0.02)
'within noise'
>>> fmt_interval(-0.0207, -0.0026)
'[-0.0207, -0.0026]'
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "interval_reading",
    "excludes_zero",
    "fmt_interval",
    "direction",
    "ratio_range",
    "check",
    "say",
]


def excludes_zero(low: float, high: float) -> bool:
    """True when the interval ``[low, high]`` lies entirely on one side of 0."""
    _check_interval(low, high)
    return low > 0 or high < 0


def _check_interval(low: float, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"interval bounds must be finite, got [{low}, {high}]")
    if low > high:
        raise ValueError(f"interval [{low}, {high}] has low > high: pass (low, high)")


def interval_reading(
    low: float,
    high: float,
    *,
    gain: str = "a clear gain",
    loss: str = "a clear loss",
    noise: str = "within noise",
) -> str:
    """The reading of a 95% interval for a difference: gain, loss, or noise.

    ``gain`` when the interval lies above 0, ``loss`` when below, ``noise`` when it
    contains 0. The words can be replaced (e.g. ``gain="higher"``).
    """
    _check_interval(low, high)
    if low > 0:
        return gain
    if high < 0:
        return loss
    return noise


def fmt_interval(low: float, high: float, fmt: str = "+.4f") -> str:
    """``[low, high]`` with signs, e.g. ``'[+0.0208, +0.0417]'``.

    >>> fmt_interval(0.0208, 0.0417)
    '[+0.0208, +0.0417]'
    """
    return f"[{low:{fmt}}, {high:{fmt}}]".replace("[+", "[+").replace("+-", "-")


def direction(
    new: float, old: float, *, up: str = "higher", down: str = "lower", same: str = "equal"
) -> str:
    """``up`` when ``new > old``, ``down`` when ``new < old``, else ``same``.

    >>> direction(0.58, 0.54)
    'higher'
    """
    if new > old:
        return up
    if new < old:
        return down
    return same


def ratio_range(new: Sequence[float], old: Sequence[float]) -> tuple[float, float]:
    """Smallest and largest of ``new[i] / old[i]``.

    >>> ratio_range([2.0, 3.0], [2.0, 2.0])
    (1.0, 1.5)
    """
    ratios = [a / b for a, b in zip(new, old, strict=True)]
    if not ratios:
        raise ValueError("ratio_range needs at least one pair of values")
    return min(ratios), max(ratios)


def check(condition: bool, claim: str, **values) -> None:
    """Assert that the text's claim holds for this run; the message quotes the claim.

    >>> check(0.03 > 0, "the difference is positive")
    >>> check(False, "the curves coincide", gap=0.2)
    Traceback (most recent call last):
    ...
    AssertionError: the text claims: the curves coincide (gap=0.2); this run says otherwise: rewrite the sentence or generate it from the numbers
    """
    if not condition:
        shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
        raise AssertionError(
            f"the text claims: {claim}" + (f" ({shown})" if shown else "") + "; this run "
            "says otherwise: rewrite the sentence or generate it from the numbers"
        )


def say(text: str, **values):
    """``text.format(**values)`` as Markdown: a sentence written from the run's numbers.

    Returns an ``IPython.display.Markdown`` object (displayed when it ends a cell), or
    the plain string when IPython is not installed.

    >>> str(say("mAP rose by {d:+.3f}", d=0.0312).data)
    'mAP rose by +0.031'
    """
    sentence = text.format(**values)
    try:
        from IPython.display import Markdown
    except ImportError:  # pragma: no cover - IPython comes with the notebooks' extras
        return sentence
    return Markdown(sentence)
