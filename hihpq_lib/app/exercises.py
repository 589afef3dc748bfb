"""Self-checks of the notebooks' exercises, written so that plausible wrong answers fail.

Each ``check_*`` function takes the student's ``answer`` and the inputs it was computed
from, computes the expected value independently, and raises :class:`AssertionError`
with a message that names the likely mistake. It returns the expected value so the
notebook can print it. ``tests/test_exercises.py`` feeds every function the right
answer and the plausible wrong answers each check must reject:

* 01, exercise 1 -- ``x0`` without ``k``, without the square root, with the sign of
  ``k`` flipped, or negative;
* 01, exercise 2 -- the circumference without closing the loop (one step short);
* 03, exercise 2 -- a Lloyd step that moves the empty codewords (e.g. to the origin);
* 03, exercise 3 -- a neighbour on the temperature grid, the largest temperature that
  qualifies, the index or the attention weight instead of the temperature;
* 04, exercise 2 -- a guessable answer (even use, the random start's value, an
  off-by-one rank);
* 04, exercise 3 -- a mean pair distance that includes the zero diagonal;
* 05, exercise 1 -- the ARI against the classes, the unadjusted Rand index;
* 05, exercise 3 -- an instance-wise loss with its sign flipped, divided by the number
  of anchors instead of the batch size, without the anchor in its denominator, without
  the temperature, from one level only or summed over the levels, or with another
  neighbour than the first;
* 05, exercise 4 -- the class-level mAP, the two models swapped;
* 06, exercise 1 -- the mean number of hits, the first query alone, the hit rate;
* 06, exercise 3 -- the asymmetric (ADC) mAP;
* 07, exercise 1 -- ``b - a``, ``ddof=0``, the std instead of the SE, the unpaired SE;
* 07, exercise 3 -- a resolution ratio that is not squared, or inverted;
* 08, exercise 2 -- distances measured from the origin (or from the median node)
  instead of from the root, the levels swapped, a mean instead of a median.

Tolerances fit the dtype a student will use: the notebooks' models and features are
float32, so a correct float32 computation must pass. Every check accepts a relative
error of :data:`FLOAT32_RTOL` (about a thousand float32 roundings; a share, made of
integer counts, gets a quarter of its smallest step instead), and every wrong answer
it names lies much farther away than that (``tests/test_exercises.py`` runs each check
on float32 and float64 answers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from hihpq_lib.geometry import lorentz
from hihpq_lib.utils.arrays import to_numpy

__all__ = [
    "FLOAT32_RTOL",
    "check_circumference",
    "check_lloyd_step",
    "check_top_share",
    "check_mean_pair_distances",
    "check_instance_loss",
    "check_config_ratios",
    "check_tree_radii",
    "check_time_coordinate",
    "check_smallest_temperature",
    "check_split_ari",
    "check_superclass_maps",
    "check_mean_precision",
    "check_sdc_map",
    "check_paired_difference",
]

#: Relative tolerance of every check: far above the round-off of a float32 computation
#: (float32 keeps about 7 digits; sums of thousands of terms lose one or two), far below
#: the gap to any wrong answer a check names.
FLOAT32_RTOL = 1e-4


def _near(value: float, target: float, rtol: float = FLOAT32_RTOL) -> bool:
    """``value`` equals ``target`` up to ``rtol`` (relative; absolute near 0)."""
    return abs(value - target) <= rtol * max(abs(target), 1e-3)


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
    # a float32 Lloyd step passes; a codeword moved to a wrong place does not
    tol = {"rtol": FLOAT32_RTOL, "atol": 1e-5}
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
    ordered = np.sort(to_numpy(counts, np.float64))[::-1]
    return float(ordered[:r].sum() / ordered.sum())


def check_top_share(answer, counts, r: int, *, counts_before=None) -> float:
    """04, exercise 2: the share of the database on the ``r`` most used codewords.

    ``counts`` are the usage counts ``(K,)`` of the model the exercise asks about;
    ``counts_before`` (optional) those of the model it starts from, whose share is a
    wrong answer (the student measured the wrong model).

    Shares are multiples of ``1/N`` (``N`` = ``counts.sum()``): the tolerance is a quarter
    of that step, and at least ``2e-6`` (a float32 cumulative share is off by about
    ``r`` roundings of ``6e-8``), so a float32 answer passes and a share one item away
    does not (for ``N`` up to 125,000).
    """
    value = _finite_float(answer, f"the share of the {r} most used codewords")
    counts = to_numpy(counts, np.float64)
    expected = top_share(counts, r)
    tol = max(0.25 / counts.sum(), 2e-6)
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
        # with the diagonal the mean is (N-1)/N of the right one: 1/N away, far beyond
        # the float32 tolerance for the N = 300 of the notebook
        assert not _near(value, with_diagonal) or _near(with_diagonal, expected), (
            f"{name}: {value:.5f} includes the diagonal (an image with itself is not a "
            f"pair): average over the N(N-1) = {n * (n - 1)} ordered pairs of distinct images"
        )
        assert _near(value, expected), f"{name}: expected {expected:.5f}, got {value:.5f}"
        out.append(expected)
    return out[0], out[1]


def _logsumexp(values: np.ndarray) -> float:
    top = float(values.max())
    return top + math.log(float(np.exp(values - top).sum()))


def _instance_level(d, lab, tau, *, keep_self=True, by_anchors=False, sign=-1.0, last=False):
    """One level of the instance-wise loss, a plain loop over the anchors (float64)."""
    s = sign * d / tau
    B = len(lab)
    terms = []
    for i in range(B):
        mates = [j for j in range(B) if j != i and lab[j] == lab[i]]
        if not mates:
            continue  # no neighbour at this level: the anchor counts as 0
        pos = mates[-1] if last else mates[0]
        cand = np.array([s[i, j] for j in range(B) if keep_self or j != i])
        terms.append(_logsumexp(cand) - s[i, pos])
    if not terms:
        return 0.0
    return sum(terms) / (len(terms) if by_anchors else B)


def instance_loss_variants(distances, labels, tau: float) -> dict[str, float]:
    r"""The reference instance-wise loss and the plausible wrong versions of it.

    ``distances``: ``(B, B)`` product distances :math:`D(z_i, z_j)` of a batch;
    ``labels``: ``L`` arrays ``(B,)`` of cluster indices, one per level; ``tau``: the
    temperature. Key ``"right"`` is

    .. math::
        \mathcal L_{inst} = \frac1L\sum_l \frac1B \sum_{i:\,n(i)} -\log
        \frac{\exp s(z_i, z_{n(i)})}{\sum_{j=1}^{B} \exp s(z_i, z_j)},\qquad s = -D/\tau,

    with :math:`n(i)` the first other image of :math:`i`'s cluster (``losses.instance_loss``,
    ``mode="reference"``), computed here by a loop, independently of the library; every
    other key names one mistake. float64 throughout.
    """
    d = to_numpy(distances, np.float64)
    labs = [to_numpy(lab).reshape(-1) for lab in labels]
    B = d.shape[0]
    if d.shape != (B, B) or not labs or any(len(lab) != B for lab in labs):
        raise ValueError(
            f"distances must be (B, B) and labels a non-empty list of (B,) arrays; got "
            f"{d.shape} and {[len(lab) for lab in labs]}"
        )

    def loss(**kw):
        return [_instance_level(d, lab, tau, **kw) for lab in labs]

    right = loss()
    out = {
        "right": float(np.mean(right)),
        "sign": -float(np.mean(right)),
        "by_anchors": float(np.mean(loss(by_anchors=True))),
        "no_self": float(np.mean(loss(keep_self=False))),
        "masked": float(np.mean(loss(keep_self=False, by_anchors=True))),
        "no_tau": float(np.mean([_instance_level(d, lab, 1.0) for lab in labs])),
        "distance_as_similarity": float(np.mean(loss(sign=1.0))),
        "last_neighbour": float(np.mean(loss(last=True))),
    }
    if len(labs) > 1:
        out["sum_levels"] = float(np.sum(right))
        for level, value in enumerate(right):
            out[f"level_{level}"] = float(value)
    return out


def check_instance_loss(answer, distances, labels, tau: float) -> float:
    """05, exercise 3: the reference instance-wise loss of a tiny batch, by hand.

    Parameters
    ----------
    answer : float (or a 0-d tensor), float32 or float64
    distances : (B, B) float, the product distances of the batch
    labels : list of L (B,) int, each image's cluster at each level
    tau : float, the temperature

    Returns the expected loss (float). Rejects, with a hint, the answers of
    :func:`instance_loss_variants`.
    """
    value = _finite_float(answer, "the instance-wise loss")
    found = instance_loss_variants(distances, labels, tau)
    expected = found.pop("right")
    B, L = len(to_numpy(labels[0]).reshape(-1)), len(labels)
    hints = {
        "sign": "the loss is -log of a probability, so it is positive: flip the sign back",
        "by_anchors": f"divide each level's sum by the batch size B = {B} (the reference), "
        "not by the number of anchors that have a neighbour",
        "no_self": "keep the anchor itself in the denominator: j runs over the whole batch, "
        "s(z_i, z_i) = 0 included (the reference)",
        "masked": "that is mode='masked' (anchor excluded, mean over the anchors with a "
        "neighbour); the exercise asks for the reference: anchor kept, divided by B",
        "no_tau": "divide the distances by the temperature: s = -D/τ",
        "distance_as_similarity": "the similarity is MINUS the distance over τ: "
        "the closer two images, the larger s",
        "last_neighbour": "the positive n(i) is the FIRST other image of the same cluster "
        "in batch order (losses.first_neighbour)",
        "sum_levels": f"that is the sum over the {L} levels: average them (1/L)",
    }
    for name, wrong in found.items():
        if _near(wrong, expected) or not _near(value, wrong):
            continue
        if name.startswith("level_"):
            raise AssertionError(
                f"{value:.5f} is the loss of one level alone (labels[{name[6:]}]): compute "
                f"every level and average the {L} of them"
            )
        raise AssertionError(f"{value:.5f}: {hints[name]}")
    assert _near(value, expected), (
        f"expected {expected:.5f}, got {value:.5f}: per level, sum -log softmax over the "
        "anchors that have a neighbour and divide by B; then average the levels"
    )
    return expected


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
    if not _near(linear, want_pix):
        assert not _near(pix, linear), (
            f"{pix:.4f} is the ratio of the side lengths: an image has resolution² pixels"
        )
    for got, want, what in ((pix, want_pix, "pixels"), (ep, want_ep, "epochs")):
        assert not _near(got, 1 / want) or _near(want, 1 / want), (
            f"{what}: paper over CPU, not inverted"
        )
    assert _near(pix, want_pix), f"pixel ratio: expected {want_pix:.4f}, got {pix:.4f}"
    assert _near(ep, want_ep), f"epoch ratio: expected {want_ep:.4f}, got {ep:.4f}"
    return want_pix, want_ep


def _median_radii(r: np.ndarray, depth: np.ndarray, leaves: np.ndarray) -> tuple[float, float]:
    return float(np.median(r[leaves])), float(np.median(r[depth == 1]))


def check_tree_radii(
    answer, points, depth, leaves, *, root: int = 0, others=None, k: float = 1.0
) -> tuple[float, float]:
    """08, exercise 2: median hyperbolic distance **from the root** of the leaves and of depth 1.

    Parameters
    ----------
    answer : (leaves, depth_1), two floats (float32 or float64)
    points : (n, d+1) float, a tree's nodes on :math:`\\mathbb H^d_k`
    depth : (n,) int, each node's depth (edges from the root)
    leaves : (C,) int, the class leaves
    root : int, the root's index
    others : dict, optional
        ``{description: node}``: nodes a student may measure from by mistake (e.g. the
        median node, which the pictures put at the origin); each is rejected where it
        gives another answer.
    k : float

    Returns the expected pair. Raises ``ValueError`` when the root sits at the origin of
    ``points``: distances from the root and from the origin would coincide and the check
    could not tell them apart (move the tree first, e.g. with
    :func:`hihpq_lib.geometry.tree_embedding.recentre` on another node).
    """
    assert answer is not None, "set answer = (median distance of the leaves, of depth 1)"
    try:
        values = tuple(float(a) for a in answer)
    except (TypeError, ValueError) as err:
        raise AssertionError("answer must be a pair of floats (leaves, depth 1)") from err
    assert len(values) == 2, "answer must be a pair of floats (leaves, depth 1)"
    assert all(math.isfinite(v) for v in values), "answer contains NaN or inf"
    x = torch.as_tensor(points).detach().to(torch.float64)
    depth, leaves = to_numpy(depth), to_numpy(leaves)

    def radii_from(ref: torch.Tensor) -> tuple[float, float]:
        r = to_numpy(lorentz.dist(x, ref.expand_as(x), k=k))
        return _median_radii(r, depth, leaves)

    def same(a, b) -> bool:
        return all(_near(u, v) for u, v in zip(a, b))

    expected = radii_from(x[root])
    o = lorentz.origin(x.shape[-1] - 1, k=k, dtype=x.dtype).to(x.device)
    from_origin = radii_from(o)
    if same(from_origin, expected):
        raise ValueError(
            "the root sits at the origin of these points, so distances from the root and "
            "from the origin coincide: give the exercise a tree moved by an isometry "
            "(tree_embedding.recentre on another node)"
        )
    wrong = {"from_origin": from_origin}
    for what, node in (others or {}).items():
        if int(node) != root:
            wrong[f"from {what} (node {int(node)})"] = radii_from(x[int(node)])
    r_root = to_numpy(lorentz.dist(x, x[root].expand_as(x), k=k))
    wrong["mean"] = (float(r_root[leaves].mean()), float(r_root[depth == 1].mean()))
    for name, pair in wrong.items():
        if same(pair, expected) or not same(values, pair):
            continue
        if name == "from_origin":
            raise AssertionError(
                f"{values[0]:.4f}, {values[1]:.4f} are distances from the ORIGIN: measure "
                f"from the root, node {root} (x[{root}]), which is not at the origin here"
            )
        if name == "mean":
            raise AssertionError("those are means: the exercise asks for medians")
        raise AssertionError(f"those are distances {name}: measure from the root, node {root}")
    if same(values[::-1], expected) and not same(expected[::-1], expected):
        raise AssertionError("swapped: answer = (leaves, depth 1), in that order")
    assert same(values, expected), (
        f"expected ({expected[0]:.4f}, {expected[1]:.4f}): hyperbolic distances (lorentz.dist) "
        f"from node {root}, the root, to the leaves and to the depth-1 nodes, then medians"
    )
    return expected


# --- scalar answers: the inline checks of the notebooks, moved here (issue 27) -------
def _check_scalar(
    value: float, expected: float, wrong: Mapping[str, float], what: str, *, floor: float = 1e-3
) -> None:
    """``value`` is ``expected`` up to :data:`FLOAT32_RTOL`; else name the mistake.

    ``wrong`` maps a hint to the value a mistake gives; a wrong value that coincides
    with ``expected`` (up to the tolerance) is skipped, since no check can tell them apart.
    ``floor``: the scale below which the tolerance stops shrinking (as in :func:`_near`).
    """

    def near(u: float, v: float) -> bool:
        return abs(u - v) <= FLOAT32_RTOL * max(abs(v), floor)

    for hint, bad in wrong.items():
        if math.isfinite(bad) and not near(bad, expected) and near(value, bad):
            raise AssertionError(f"{what}: {value:.6g} -- {hint}")
    assert near(value, expected), f"{what}: expected {expected:.6g}, got {value:.6g}"


def check_time_coordinate(answer, spatial=(3.0, 4.0), *, k: float = 1.0) -> float:
    """01, exercise 1: the time coordinate ``x0 = sqrt(k + |x_s|^2)`` on :math:`\\mathbb H^n_k`.

    Rejects the slips of the formula: ``k`` left out (``|x_s|``), the square root left
    out, the sign of ``k`` flipped (``sqrt(|x_s|^2 - k)``) and the lower sheet (``-x0``).

    >>> round(check_time_coordinate(math.sqrt(26.0)), 6)
    5.09902
    """
    value = _finite_float(answer, "x0")
    sq = float(sum(float(s) ** 2 for s in spatial))
    expected = math.sqrt(k + sq)
    wrong = {
        "that is |x_s|: x0 = sqrt(k + |x_s|^2), k included": math.sqrt(sq),
        "that is x0 squared: take the square root": k + sq,
        "the sign of k is flipped: <x, x> = -x0^2 + |x_s|^2 = -k": math.sqrt(max(sq - k, 0.0)),
        "that is the lower sheet: x0 > 0 on the hyperboloid": -expected,
    }
    _check_scalar(value, expected, wrong, "x0")
    return expected


def check_smallest_temperature(answer, temperatures, mean_max_prob, level: float = 0.9) -> float:
    """03, exercise 3: the smallest of ``temperatures`` whose ``mean_max_prob >= level``.

    The answer is a grid value, so float32 copies of it pass; its grid neighbours, the
    largest qualifying temperature, the index instead of the value and the weight
    instead of the temperature do not (the grid steps are far above the tolerance).
    """
    value = _finite_float(answer, "a temperature from `temperatures`")
    t = to_numpy(temperatures, np.float64).reshape(-1)
    p = to_numpy(mean_max_prob, np.float64).reshape(-1)
    ok = np.flatnonzero(p >= level)
    assert len(ok), f"no temperature of the sweep reaches {level}"
    i = int(ok[0])
    expected = float(t[i])
    wrong = {
        f"its largest weight is below {level}: take the next temperature": float(t[i - 1])
        if i > 0
        else math.nan,
        "a larger temperature than needed: take the SMALLEST one that reaches it": float(
            t[i + 1] if i + 1 < len(t) else math.nan
        ),
        "that is the largest temperature that reaches it: take the smallest": float(t[ok[-1]]),
        "that is the index: store temperatures[index]": float(i),
        "that is the largest attention weight, not the temperature": float(p[i]),
    }
    _check_scalar(value, expected, wrong, "temperature")
    return expected


def _comb2(n: np.ndarray) -> float:
    n = np.asarray(n, dtype=np.float64)
    return float((n * (n - 1) / 2).sum())


def _pair_counts(a, b) -> tuple[float, float, float, float]:
    """Pairs together in both, in ``a``, in ``b``, and all pairs (float64 counts)."""
    a, b = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1), dtype=np.int64)
    np.add.at(table, (ia, ib), 1)
    return _comb2(table), _comb2(table.sum(1)), _comb2(table.sum(0)), _comb2(np.array([len(a)]))


def adjusted_rand_index(a, b) -> float:
    """The adjusted Rand index of two labelings (float64; 1.0 when both are trivial)."""
    both, in_a, in_b, pairs = _pair_counts(a, b)
    chance = in_a * in_b / pairs if pairs else 0.0
    top = (in_a + in_b) / 2
    return 1.0 if top == chance else (both - chance) / (top - chance)


def rand_index(a, b) -> float:
    """The (unadjusted) Rand index: the share of pairs on which two labelings agree."""
    both, in_a, in_b, pairs = _pair_counts(a, b)
    return 1.0 if not pairs else (pairs + 2 * both - in_a - in_b) / pairs


def check_split_ari(answer, split, y_fine, y_super) -> float:
    """05, exercise 1: the ARI of a 2-cluster ``split`` against the superclasses.

    ``split``, ``y_fine`` (the classes) and ``y_super`` (the superclasses): ``(N,)`` int.
    Rejects the ARI against the classes and the unadjusted Rand index.
    """
    value = _finite_float(answer, "the ARI of the 2-cluster cut")
    expected = adjusted_rand_index(y_super, split)
    wrong = {
        "that is the ARI against the 10 classes: score against the superclasses y_super": (
            adjusted_rand_index(y_fine, split)
        ),
        "that is the plain Rand index: use the ADJUSTED one (adjusted_rand_score)": rand_index(
            y_super, split
        ),
    }
    _check_scalar(value, expected, wrong, "ARI")
    return expected


def _mean_ap(hits: np.ndarray) -> float:
    """mAP@K of ``(Q, K)`` hits: per query, P@i averaged over the hit ranks i (0 without)."""
    h = np.asarray(hits, dtype=np.float64)
    precision = np.cumsum(h, axis=1) / np.arange(1, h.shape[1] + 1)
    ap = (precision * h).sum(1) / np.maximum(h.sum(1), 1.0)
    return float(ap.mean())


def check_superclass_maps(answer, ranked, q_labels, db_labels, fine_to_super) -> dict[str, float]:
    """05, exercise 4: each model's mAP when a hit is an image of the query's superclass.

    Parameters
    ----------
    answer : dict ``{model: float}``, float32 or float64
    ranked : dict ``{model: (Q, K) int}``, database rows nearest first
    q_labels, db_labels : (Q,), (N,) int, the classes
    fine_to_super : (C,) int, the superclass of each class

    Returns the expected dict. Rejects the class-level mAP and the models swapped.
    """
    assert isinstance(answer, Mapping), f"answer must be a dict {{model: mAP}} for {list(ranked)}"
    missing = [name for name in ranked if name not in answer]
    assert not missing, f"answer lacks {missing}"
    q, db = to_numpy(q_labels).reshape(-1), to_numpy(db_labels).reshape(-1)
    sup = to_numpy(fine_to_super).reshape(-1)
    expected, fine = {}, {}
    for name, idx in ranked.items():
        idx = to_numpy(idx)
        expected[name] = _mean_ap(sup[db[idx]] == sup[q][:, None])
        fine[name] = _mean_ap(db[idx] == q[:, None])
    for name in ranked:
        value = _finite_float(answer[name], f"the superclass mAP of {name!r}")
        wrong = {"that is the CLASS-level mAP: relabel with the superclasses": fine[name]}
        wrong |= {
            f"that is the mAP of {other!r}: keep the models apart": expected[other]
            for other in ranked
            if other != name
        }
        _check_scalar(value, expected[name], wrong, name)
    return expected


def check_mean_precision(answer, hits) -> float:
    """06, exercise 1: the mean precision@k of ``(Q, k)`` boolean ``hits``.

    Rejects the mean number of hits (not divided by ``k``), the precision of the first
    query alone and the share of queries with at least one hit.
    """
    value = _finite_float(answer, "the mean precision@k")
    h = to_numpy(hits).astype(np.float64)
    assert h.ndim == 2, f"hits must be (Q, k), got shape {h.shape}"
    expected = float(h.mean())
    k = h.shape[1]
    wrong = {
        f"that is the mean NUMBER of hits: divide by k = {k}": float(h.sum(1).mean()),
        "that is the first query alone: average over all the queries": float(h[0].mean()),
        "that is the share of queries with a hit: count the hits in each top k": float(
            (h.sum(1) > 0).mean()
        ),
    }
    _check_scalar(value, expected, wrong, f"precision@{k}")
    return expected


def check_sdc_map(answer, expected: float, *, adc_map: float) -> float:
    """06, exercise 3: the mAP with the symmetric distance (``expected``, from the library).

    Rejects the asymmetric (ADC) mAP ``adc_map`` where the two differ.
    """
    value = _finite_float(answer, "the symmetric mAP")
    wrong = {"that is the ADC mAP: search with mode='symmetric'": float(adc_map)}
    _check_scalar(value, float(expected), wrong, "SDC mAP")
    return float(expected)


def check_paired_difference(answer, a, b) -> tuple[float, float]:
    """07, exercise 1: ``(delta, se)`` of the paired differences ``a[s] - b[s]``.

    ``delta`` is their mean, ``se`` their sample std (``ddof=1``) over ``sqrt(n)``.
    Rejects ``b - a``, ``ddof=0``, the std instead of the SE and the unpaired SE. The
    tolerances are relative to ``max(|delta|, se)``, and at least to a hundredth of the
    largest mAP: a float32 mAP is rounded by ~3e-8 however small ``delta`` and ``se`` are.
    """
    assert answer is not None, "set answer = (delta, se)"
    try:
        delta_v, se_v = (float(x) for x in answer)
    except (TypeError, ValueError) as err:
        raise AssertionError("answer must be a pair of floats (delta, se)") from err
    assert math.isfinite(delta_v) and math.isfinite(se_v), "answer contains NaN or inf"
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = a.size
    diff = a - b
    delta = float(diff.mean())
    std = float(diff.std(ddof=1)) if n > 1 else 0.0
    se = std / math.sqrt(n)
    floor = max(0.01 * float(np.abs(np.concatenate([a, b])).max()), 1e-3)
    scale = max(abs(delta), se, floor)
    if abs(delta_v + delta) <= FLOAT32_RTOL * scale < abs(2 * delta):
        raise AssertionError("delta: the sign is flipped, take a - b (hihpq minus the baseline)")
    assert abs(delta_v - delta) <= FLOAT32_RTOL * scale, (
        f"delta: the mean of the per-seed differences, expected {delta:.6g}, got {delta_v:.6g}"
    )
    unpaired = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / n) if n > 1 else 0.0
    wrong = {
        "divided by n instead of n - 1: np.std(diffs, ddof=1)": float(diff.std()) / math.sqrt(n),
        "that is the std of the differences: divide by sqrt(n) for the SE": std,
        "that is the unpaired SE: pair by seed, the std of the differences": unpaired,
    }
    _check_scalar(se_v, se, wrong, "se", floor=floor)
    return delta, se
