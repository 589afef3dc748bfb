"""Self-checks of the notebooks' exercises, written so that plausible wrong answers fail.

Each ``check_*`` function takes the student's ``answer`` and the inputs it was computed
from, computes the expected value independently, and raises :class:`AssertionError`
with a message that names the likely mistake. It returns the expected value so the
notebook can print it. ``tests/test_exercises.py`` feeds every function the right
answer and the plausible wrong answers each check must reject:

* 01, exercise 2 -- the circumference without closing the loop (one step short);
* 03, exercise 2 -- a Lloyd step that moves the empty codewords (e.g. to the origin);
* 04, exercise 2 -- a guessable answer (even use, the random start's value, an
  off-by-one rank);
* 04, exercise 3 -- a mean pair distance that includes the zero diagonal;
* 07, exercise 3 -- a resolution ratio that is not squared, or inverted.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hihpq_lib.geometry import lorentz

__all__ = [
    "check_circumference",
    "check_lloyd_step",
    "check_top_share",
    "check_mean_pair_distances",
    "check_config_ratios",
]


def _finite_float(answer, what: str) -> float:
    assert answer is not None, f"set answer to {what}"
    try:
        value = float(answer)
    except (TypeError, ValueError) as err:
        raise AssertionError(f"answer must be {what} (a float), got {answer!r}") from err
    assert math.isfinite(value), f"answer must be a finite number, got {value}"
    return value


def circle_points(r: float, n: int, *, k: float = 1.0) -> torch.Tensor:
    """``n`` points ``exp_o(r (cos t, sin t))`` at evenly spaced angles in ``[0, 2π)``.

    Returns ``(n, 3)`` float64 points on :math:`\\mathbb H^2_k`.
    """
    t = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    v = r * torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    return lorentz.expmap0(lorentz.lift(v), k=k)


def check_circumference(answer, *, r: float = 3.0, n: int = 2000, k: float = 1.0) -> float:
    """01, exercise 2: the circumference measured with ``n`` chords, loop closed.

    The tolerance is a tenth of one chord, so forgetting the last-to-first step (one
    chord short) fails, while any correct sampling of ``n`` (or ``n + 1`` with the
    first point repeated) passes.

    >>> expected = check_circumference(2 * math.pi * math.sinh(3.0))
    >>> round(expected, 2)
    62.94
    """
    value = _finite_float(answer, "the measured circumference")
    pts = circle_points(r, n, k=k)
    expected = float(lorentz.dist(pts, pts.roll(-1, dims=0), k=k).sum())
    step = expected / n
    if abs(value - (expected - step)) < 0.1 * step:
        raise AssertionError(
            f"{value:.4f} is one chord ({step:.4f}) short of {expected:.4f}: close the loop "
            "(add the distance from the last point back to the first)"
        )
    euclid = 2 * math.pi * r
    assert abs(value - euclid) > 0.1 * step, (
        f"{value:.4f} is the Euclidean 2πr: measure with lorentz.dist on the hyperboloid"
    )
    assert abs(value - expected) < 0.1 * step, (
        f"expected about {expected:.4f} (2π√k sinh(r/√k) = "
        f"{2 * math.pi * math.sqrt(k) * math.sinh(r / math.sqrt(k)):.4f}), got {value:.4f}"
    )
    return expected


def check_lloyd_step(
    answer, points: torch.Tensor, codes: torch.Tensor, codewords: torch.Tensor, *, k
) -> torch.Tensor:
    """03, exercise 2: one Lloyd step on the hyperboloid.

    Every codeword with points becomes the (equal-weight) Lorentz centroid of its
    points; a codeword with **no** points stays exactly where it was.

    Parameters
    ----------
    answer : (K, n+1) tensor-like
    points : (N, n+1) float, on the sheet
    codes : (N,) int, the hard code of every point
    codewords : (K, n+1) float, the codewords before the step
    k : float

    Returns
    -------
    (K, n+1) float, the expected codewords.
    """
    assert answer is not None, (
        f"set answer to the ({len(codewords)}, {codewords.shape[1]}) codewords"
    )
    new = torch.as_tensor(answer, dtype=codewords.dtype)
    assert new.shape == codewords.shape, (
        f"answer must have shape {tuple(codewords.shape)}, got {tuple(new.shape)}"
    )
    assert bool(torch.isfinite(new).all()), "answer contains NaN or inf"
    tol = {"rtol": 1e-6, "atol": 1e-8}
    expected = codewords.clone()
    for j in range(len(codewords)):
        members = points[codes == j]
        if len(members):
            expected[j] = lorentz.lorentz_centroid(members, k=k)
            assert torch.allclose(new[j], expected[j], **tol), (
                f"codeword {j}: expected the Lorentz centroid of its {len(members)} points"
            )
        else:
            assert torch.allclose(new[j], codewords[j], **tol), (
                f"codeword {j} has no points: keep it unchanged (it was moved to {new[j].tolist()})"
            )
    return expected


def top_share(counts, r: int) -> float:
    """Share of all items held by the ``r`` most used codewords (``counts``: (K,))."""
    ordered = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    return float(ordered[:r].sum() / ordered.sum())


def check_top_share(answer, counts, r: int, *, counts_before=None) -> float:
    """04, exercise 2: the share of the database on the ``r`` most used codewords.

    ``counts`` are the usage counts ``(K,)`` of the model the exercise asks about;
    ``counts_before`` (optional) those of the model it starts from, whose share is a
    wrong answer (the student measured the wrong model).
    """
    value = _finite_float(answer, f"the share of the {r} most used codewords")
    counts = np.asarray(counts)
    expected = top_share(counts, r)
    tol = 1e-9
    assert 0.0 <= value <= 1.0, f"a share lies in [0, 1], got {value}"
    assert abs(value - r / len(counts)) > tol or abs(expected - r / len(counts)) < tol, (
        f"{value:.4f} = r/K is the share under even use: measure the actual usage"
    )
    if counts_before is not None:
        before = top_share(counts_before, r)
        assert abs(value - before) > tol or abs(expected - before) < tol, (
            f"{value:.4f} is the share of the model before the data initialisation"
        )
    for wrong_r, why in ((r - 1, "r - 1"), (r + 1, "r + 1")):
        if 0 < wrong_r <= len(counts):
            other = top_share(counts, wrong_r)
            assert abs(value - other) > tol or abs(expected - other) < tol, (
                f"{value:.4f} is the share of the {why} most used codewords: off by one?"
            )
    ascending = float(np.sort(counts)[:r].sum() / counts.sum())
    assert abs(value - ascending) > tol or abs(expected - ascending) < tol, (
        f"{value:.4f} is the share of the {r} LEAST used codewords: sort in decreasing order"
    )
    assert abs(value - expected) < tol, f"expected {expected:.4f}, got {value:.4f}"
    return expected


def check_mean_pair_distances(answer, d_learned, d_flat) -> tuple[float, float]:
    """04, exercise 3: mean product distance over pairs of **distinct** images.

    ``d_learned``, ``d_flat``: the ``(N, N)`` all-pairs product distances in the two
    spaces. ``answer = (mean_learned, mean_flat)``. The diagonal (an image with itself)
    is not a pair: including it divides by ``N^2`` instead of ``N(N-1)``.

    Returns the expected pair of means.
    """
    assert answer is not None, "set answer = (mean distance learned, mean distance flat)"
    try:
        values = [float(a) for a in answer]
    except TypeError as err:
        raise AssertionError("answer must be a pair of floats (learned, flat)") from err
    assert len(values) == 2, "answer must be a pair of floats (learned, flat)"
    assert all(math.isfinite(v) for v in values), "answer contains NaN or inf"
    out = []
    for value, d, name in zip(values, (d_learned, d_flat), ("learned", "flat")):
        d = torch.as_tensor(d, dtype=torch.float64)
        n = d.shape[0]
        off = ~torch.eye(n, dtype=torch.bool)
        expected = float(d[off].mean())
        with_diagonal = float(d.mean())
        assert abs(value - with_diagonal) > 1e-6 * abs(expected) or n == 1, (
            f"{name}: {value:.5f} includes the diagonal (an image with itself is not a "
            f"pair): average over the N(N-1) = {n * (n - 1)} ordered pairs of distinct images"
        )
        assert abs(value - expected) < 1e-6 * abs(expected), (
            f"{name}: expected {expected:.5f}, got {value:.5f}"
        )
        out.append(expected)
    return out[0], out[1]


def check_config_ratios(answer, paper_cfg, cpu_cfg) -> tuple[float, float]:
    """07, exercise 3: ``(pixels per image, epochs)`` of the paper's config over the CPU one.

    Pixels per image is ``resolution ** 2`` (a square input), so the first ratio is the
    squared ratio of the resolutions.
    """
    assert answer is not None, "set answer = (pixel ratio, epoch ratio)"
    try:
        pix, ep = (float(a) for a in answer)
    except (TypeError, ValueError) as err:
        raise AssertionError("answer must be a pair of floats (pixels, epochs)") from err
    assert math.isfinite(pix) and math.isfinite(ep), "answer contains NaN or inf"
    want_pix = (paper_cfg.resolution / cpu_cfg.resolution) ** 2
    want_ep = paper_cfg.epochs / cpu_cfg.epochs
    linear = paper_cfg.resolution / cpu_cfg.resolution
    if want_pix != linear:
        assert abs(pix - linear) > 1e-9, (
            f"{pix:.4f} is the ratio of the side lengths: an image has resolution² pixels"
        )
    assert abs(pix * want_pix - 1) > 1e-9 or want_pix == 1, "pixels: paper over CPU, not inverted"
    assert abs(ep * want_ep - 1) > 1e-9 or want_ep == 1, "epochs: paper over CPU, not inverted"
    assert abs(pix - want_pix) < 1e-9, f"pixel ratio: expected {want_pix:.4f}, got {pix:.4f}"
    assert abs(ep - want_ep) < 1e-9, f"epoch ratio: expected {want_ep:.4f}, got {ep:.4f}"
    return want_pix, want_ep
