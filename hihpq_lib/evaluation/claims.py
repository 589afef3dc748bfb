"""Sentences about a run, written from the run's own numbers, and checks of the claims.

The notebooks never type a measured number into their prose. A sentence that reports a
result is generated from the variables with :func:`say` (an ``IPython.display.Markdown``
object, so it renders as text), and a qualitative reading ("a clear gain", "within
noise") is chosen by code from the interval (:func:`interval_reading`). A sentence that
stays in markdown but makes a claim about the printed values (a direction, a ratio
range, an interval that excludes 0) is followed by a cell tagged ``claim`` that calls
:func:`check`: if a run changes the result, the notebook fails in CI instead of keeping
a false sentence. ``tests/test_notebooks.py`` requires such cells in every notebook, and
:mod:`hihpq_lib.evaluation.claim_scan` (re-exported here: :func:`scan_notebook`) finds
the sentences that are neither generated nor checked (``tests/test_claims_scan.py``).

>>> interval_reading(0.02, 0.04)
'a clear gain'
>>> interval_reading(-0.01, 0.02)
'within noise'
>>> fmt_interval(-0.0207, -0.0026)
'[-0.0207, -0.0026]'
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence

__all__ = [
    "interval_reading",
    "excludes_zero",
    "fmt_interval",
    "direction",
    "ratio_range",
    "tally",
    "joint_reading",
    "majority_reading",
    "check",
    "say",
    "Finding",
    "Allowance",
    "notebook_cells",
    "split_sentences",
    "claim_words",
    "names",
    "scan_notebook",
    "load_allowlist",
    "unused_allowances",
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

    A NaN is no direction: it raises instead of reading as ``same``.
    """
    if not (math.isfinite(new) and math.isfinite(old)):
        raise ValueError(f"direction needs finite values, got new={new}, old={old}")
    if new > old:
        return up
    if new < old:
        return down
    return same


def joint_reading(
    first: tuple[float, float],
    second: tuple[float, float],
    *,
    names: tuple[str, str] = ("first", "second"),
) -> str:
    """One sentence on two 95% intervals read together: do they point the same way?

    Only an interval clear of 0 has a direction (:func:`interval_reading`): a gain and a
    difference within noise do not "point the same way", and a significant loss is never
    read as agreeing with a gain.

    >>> joint_reading((0.08, 0.11), (0.01, 0.03), names=("superclass", "class"))
    'Both levels show a clear gain: they point the same way.'
    >>> joint_reading((-0.03, -0.01), (0.01, 0.03), names=("superclass", "class"))
    'The two levels point in **opposite directions**: a clear loss at the superclass level, a clear gain at the class level.'
    >>> joint_reading((-0.01, 0.02), (0.01, 0.03), names=("superclass", "class"))
    'Only the class level shows a clear gain; the superclass level is within noise.'
    """
    a = interval_reading(*first, gain="gain", loss="loss", noise="noise")
    b = interval_reading(*second, gain="gain", loss="loss", noise="noise")
    if a == b == "noise":
        return "Neither level shows a clear difference."
    if "noise" in (a, b):
        clear, other, reading = (names[1], names[0], b) if a == "noise" else (*names, a)
        return f"Only the {clear} level shows a clear {reading}; the {other} level is within noise."
    if a == b:
        return f"Both levels show a clear {a}: they point the same way."
    return (
        f"The two levels point in **opposite directions**: a clear {a} at the {names[0]} "
        f"level, a clear {b} at the {names[1]} level."
    )


def tally(deltas: Sequence[float], stands_out: Sequence[bool]) -> dict[str, int]:
    """How many differences are clear gains, clear losses, or noise.

    ``deltas[i]`` is a difference (new - old) and ``stands_out[i]`` whether it stands out
    of its noise (an interval clear of 0, ``stats.verdict`` reading "real"). A difference
    that stands out counts by its sign: "stands out" alone is not "a gain".

    >>> tally([0.02, -0.03, 0.001], [True, True, False])
    {'gain': 1, 'loss': 1, 'noise': 1}
    """
    counts = {"gain": 0, "loss": 0, "noise": 0}
    for delta, real in zip(deltas, stands_out, strict=True):
        if not math.isfinite(delta):
            raise ValueError(f"tally needs finite differences, got {delta}")
        counts["noise" if not real or delta == 0 else "gain" if delta > 0 else "loss"] += 1
    return counts


def majority_reading(
    counts: dict[str, int],
    *,
    gain: str = "a measurable gain at most settings",
    loss: str = "a measurable loss at most settings",
    mixed: str = "measurable differences at most settings, in both directions",
    noise: str = "mostly within noise",
) -> str:
    """What most of a set of differences say, from :func:`tally`'s counts.

    ``gain`` only when the clear gains alone are more than half of all the differences
    (clear losses never count towards a gain), ``loss`` likewise, ``mixed`` when
    differences that stand out are the majority but neither sign is, ``noise`` otherwise.

    >>> majority_reading({"gain": 4, "loss": 2, "noise": 2})
    'measurable differences at most settings, in both directions'
    >>> majority_reading({"gain": 5, "loss": 0, "noise": 3})
    'a measurable gain at most settings'
    """
    n = sum(counts.values())
    if n == 0:
        raise ValueError("majority_reading needs at least one difference")
    if 2 * counts.get("gain", 0) > n:
        return gain
    if 2 * counts.get("loss", 0) > n:
        return loss
    if 2 * (counts.get("gain", 0) + counts.get("loss", 0)) > n:
        return mixed
    return noise


def split_reading(wins: dict[str, int], n: int) -> str:
    """One sentence on per-seed win counts: which contrasts split, which one side swept.

    A split count is the picture of "not significant"; a sweep is not proof of the
    opposite with few seeds: under no difference at all, one side wins all ``n`` seeds
    with probability ``2 / 2**n`` (the two-sided sign test).

    >>> split_reading({"a − b": 3, "a − c": 1}, 3)
    '`a − c` split (1 of 3): the picture of "not significant". `a − b` went one way at every seed, which with 3 seeds happens by chance with probability 0.25 (sign test), so it is a hint, not a verdict.'
    >>> split_reading({"a − b": 0}, 3)
    '`a − b` went one way at every seed, which with 3 seeds happens by chance with probability 0.25 (sign test), so it is a hint, not a verdict.'
    """
    if n < 1 or any(not 0 <= v <= n for v in wins.values()):
        raise ValueError(f"win counts must lie in 0..{n}, got {wins}")
    split = [f"`{k}` split ({v} of {n})" for k, v in wins.items() if 0 < v < n]
    swept = [f"`{k}`" for k, v in wins.items() if v in (0, n)]
    parts = []
    if split:
        parts.append(f'{", ".join(split)}: the picture of "not significant".')
    if swept:
        p = min(1.0, 2 / 2**n)
        verb = "went" if len(swept) == 1 else "each went"
        verdict = "a hint, not a verdict" if p > 0.05 else "unlikely to be chance alone"
        parts.append(
            f"{', '.join(swept)} {verb} one way at every seed, which with {n} seeds happens "
            f"by chance with probability {p:.2g} (sign test), so it is {verdict}."
        )
    return " ".join(parts)


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

    A failed claim is also shown to the reader as a visible warning in the cell's output
    (:func:`_tell_the_reader`), then raised as ``AssertionError`` so that the notebook
    stops and CI fails. With the environment variable ``HIHPQ_CLAIMS=warn`` (for a
    reader on other data; CI never sets it) it only warns.

    >>> check(0.03 > 0, "the difference is positive")
    >>> check(False, "the curves coincide", gap=0.2)
    Traceback (most recent call last):
    ...
    AssertionError: the text claims: the curves coincide (gap=0.2); this run says otherwise: rewrite the sentence or generate it from the numbers
    """
    if not condition:
        shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
        message = (
            f"the text claims: {claim}" + (f" ({shown})" if shown else "") + "; this run "
            "says otherwise: rewrite the sentence or generate it from the numbers"
        )
        _tell_the_reader(message)
        if os.environ.get("HIHPQ_CLAIMS", "").strip().lower() != "warn":
            raise AssertionError(message)


def _tell_the_reader(message: str) -> None:
    """Show a failed claim as a visible line of the cell's output, not only in a traceback.

    In a notebook it is a highlighted Markdown block right under the cell; elsewhere one
    line on stderr. ``check`` raises after it (``HIHPQ_CLAIMS=warn`` lets a reader
    continue past it; CI never sets it).
    """
    line = f"⚠ CLAIM NOT SUPPORTED BY THIS RUN: {message}"
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:  # pragma: no cover - IPython comes with the notebooks' extras
        get_ipython = None
    shell = get_ipython() if get_ipython is not None else None
    if shell is not None and getattr(shell, "kernel", None) is not None:
        display(
            Markdown(
                "> **⚠ A sentence above is not supported by this run.** "
                + message[0].upper()
                + message[1:]
                + "."
            )
        )
    print(line, file=sys.stderr, flush=True)


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


# The scanner of notebook prose lives in its own module; its names are available here too.
from hihpq_lib.evaluation.claim_scan import (  # noqa: E402
    Allowance,
    Finding,
    claim_words,
    load_allowlist,
    names,
    notebook_cells,
    scan_notebook,
    split_sentences,
    unused_allowances,
)
