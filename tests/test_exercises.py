"""The exercise self-checks accept the right answer and reject the known-wrong ones.

The wrong answers are the ones a student walkthrough (issue 15) found passing the old
checks, plus the obvious neighbours (off by one, inverted, not squared).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hihpq_lib.app import exercises as ex
from hihpq_lib.geometry import lorentz


# --- 01, exercise 2: circumference --------------------------------------------------
def _chords(pts, closed):
    steps = lorentz.dist(pts[:-1], pts[1:]).sum()
    if closed:
        steps = steps + lorentz.dist(pts[-1], pts[0])
    return float(steps)


def test_circumference_accepts_closed_loops_and_the_formula():
    pts = ex.circle_points(3.0, 2000)
    ex.check_circumference(_chords(pts, closed=True))
    # the solution's variant: 2001 angles from 0 to 2π, first and last point equal
    t = torch.linspace(0, 2 * math.pi, 2001, dtype=torch.float64)
    ring = lorentz.expmap0(lorentz.lift(3.0 * torch.stack([torch.cos(t), torch.sin(t)], 1)))
    ex.check_circumference(_chords(ring, closed=False))
    ex.check_circumference(2 * math.pi * math.sinh(3.0))


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda: _chords(ex.circle_points(3.0, 2000), closed=False), "close the loop"),
        (lambda: 6 * math.pi, "Euclidean"),
        (lambda: 2 * math.pi * math.sinh(3.0) * 1.002, "expected about"),
        (lambda: float("nan"), "finite"),
        (lambda: None, "set answer"),
    ],
)
def test_circumference_rejects_known_wrong_answers(wrong, message):
    with pytest.raises(AssertionError, match=message):
        ex.check_circumference(wrong())


# --- 03, exercise 2: Lloyd step -----------------------------------------------------
@pytest.fixture
def lloyd_setup():
    gen = torch.Generator().manual_seed(0)
    k = 1.0
    pts = lorentz.expmap0(lorentz.lift(torch.randn(60, 2, generator=gen, dtype=torch.float64)))
    # three codewords near the data and one far away that nobody picks
    tangent = torch.tensor([[1.0, 0.0], [-0.5, 0.8], [-0.5, -0.8], [6.0, 6.0]], dtype=torch.float64)
    cw = lorentz.expmap0(lorentz.lift(tangent), k=k)
    codes = lorentz.pairwise_sqdist(pts, cw, k=k).argmin(1)
    assert not bool((codes == 3).any()), "the setup needs an empty cell"
    right = cw.clone()
    for j in range(3):
        right[j] = lorentz.lorentz_centroid(pts[codes == j], k=k)
    return pts, codes, cw, right, k


def test_lloyd_step_accepts_the_right_answer(lloyd_setup):
    pts, codes, cw, right, k = lloyd_setup
    torch.testing.assert_close(ex.check_lloyd_step(right, pts, codes, cw, k=k), right)


def test_lloyd_step_rejects_moving_the_empty_codeword_to_the_origin(lloyd_setup):
    pts, codes, cw, right, k = lloyd_setup
    wrong = right.clone()
    wrong[3] = lorentz.origin(2, k=k, dtype=torch.float64)
    with pytest.raises(AssertionError, match="no points: keep it unchanged"):
        ex.check_lloyd_step(wrong, pts, codes, cw, k=k)


def test_lloyd_step_rejects_the_centroid_of_all_points_and_no_update(lloyd_setup):
    pts, codes, cw, right, k = lloyd_setup
    wrong = right.clone()
    wrong[3] = lorentz.lorentz_centroid(pts, k=k)  # "centroid of everything" for empty cells
    with pytest.raises(AssertionError, match="keep it unchanged"):
        ex.check_lloyd_step(wrong, pts, codes, cw, k=k)
    with pytest.raises(AssertionError, match="Lorentz centroid"):
        ex.check_lloyd_step(cw, pts, codes, cw, k=k)  # nothing moved


# --- 04, exercise 2: usage share ----------------------------------------------------
COUNTS = np.array([50, 30, 10, 5, 3, 2, 0, 0])
BEFORE = np.array([90, 10, 0, 0, 0, 0, 0, 0])


def test_top_share_accepts_the_right_answer():
    assert ex.check_top_share(0.9, COUNTS, 3, counts_before=BEFORE) == pytest.approx(0.9)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (3 / 8, "even use"),
        (1.0, "before the data initialisation"),
        (0.8, "off by one"),  # r - 1 = 2 codewords
        (0.95, "off by one"),  # r + 1
        (0.02, "LEAST used"),  # 0 + 0 + 2 of 100
        (0.0 + 1e-3, "expected"),
        (1.5, r"\[0, 1\]"),
    ],
)
def test_top_share_rejects_known_wrong_answers(wrong, message):
    with pytest.raises(AssertionError, match=message):
        ex.check_top_share(wrong, COUNTS, 3, counts_before=BEFORE)


# --- 04, exercise 3: mean distance over distinct pairs ------------------------------
def _distances(seed, n=12):
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.cdist(x, x)


def test_mean_pair_distances_accepts_off_diagonal_means():
    a, b = _distances(0), _distances(1)
    off = ~torch.eye(12, dtype=torch.bool)
    want = (float(a[off].mean()), float(b[off].mean()))
    assert ex.check_mean_pair_distances(want, a, b) == pytest.approx(want)
    iu = torch.triu_indices(12, 12, 1)  # each unordered pair once: the same mean
    ex.check_mean_pair_distances((a[iu[0], iu[1]].mean(), b[iu[0], iu[1]].mean()), a, b)


def test_mean_pair_distances_rejects_the_diagonal():
    a, b = _distances(0), _distances(1)
    with pytest.raises(AssertionError, match="includes the diagonal"):
        ex.check_mean_pair_distances((float(a.mean()), float(b.mean())), a, b)


def test_mean_pair_distances_rejects_the_ratio_instead_of_the_pair():
    a, b = _distances(0), _distances(1)
    with pytest.raises(AssertionError, match="pair of floats"):
        ex.check_mean_pair_distances(float(a.mean() / b.mean()), a, b)


# --- 07, exercise 3: configuration ratios -------------------------------------------
PAPER = SimpleNamespace(resolution=224, epochs=50)
CPU = SimpleNamespace(resolution=128, epochs=20)


def test_config_ratios_accept_the_right_answer():
    assert ex.check_config_ratios(((224 / 128) ** 2, 2.5), PAPER, CPU) == (
        pytest.approx(3.0625),
        pytest.approx(2.5),
    )


@pytest.mark.parametrize(
    "wrong, message",
    [
        ((224 / 128, 2.5), "side lengths"),
        (((128 / 224) ** 2, 2.5), "inverted"),
        ((3.0625, 0.4), "inverted"),
        ((3.0625, 2.0), "epoch ratio"),
        ((224, 50), "pixel ratio"),
    ],
)
def test_config_ratios_reject_known_wrong_answers(wrong, message):
    with pytest.raises(AssertionError, match=message):
        ex.check_config_ratios(wrong, PAPER, CPU)
