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

from hihpq_lib import data
from hihpq_lib.app import exercises as ex
from hihpq_lib.evaluation import metrics, stats
from hihpq_lib.geometry import lorentz, manifolds
from hihpq_lib.geometry import tree_embedding as TE
from hihpq_lib.learning import losses


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


# --- float32 answers: every check accepts a correct float32 computation (issue 27) ----
def test_circumference_accepts_a_float32_computation():
    t = torch.arange(2000, dtype=torch.float32) * (2 * math.pi / 2000)
    pts = lorentz.expmap0(lorentz.lift(3.0 * torch.stack([torch.cos(t), torch.sin(t)], 1)))
    assert pts.dtype == torch.float32
    ex.check_circumference(lorentz.dist(pts, pts.roll(-1, dims=0)).sum())


def test_lloyd_step_accepts_a_float32_computation(lloyd_setup):
    pts, codes, cw, right, k = lloyd_setup
    p32, answer = pts.float(), cw.float().clone()
    for j in range(3):
        answer[j] = lorentz.lorentz_centroid(p32[codes == j], k=k)
    assert answer.dtype == torch.float32
    ex.check_lloyd_step(answer, pts, codes, cw, k=k)


def _usage(seed, n=5000, K=256):
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.multinomial(n, rng.dirichlet(np.full(K, 0.3))))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_share_accepts_the_notebooks_computation_in_both_dtypes(seed, dtype):
    """Notebook 04's solution: ``np.cumsum`` of the sorted counts over their sum; in
    float32 it is off by ~1e-8, which the old tolerance (1e-9) rejected ("expected
    0.3328, got 0.3328")."""
    counts = _usage(seed)
    ordered = np.sort(counts.numpy().astype(dtype))[::-1]
    answer = (np.cumsum(ordered) / ordered.sum())[26 - 1]
    assert answer.dtype == dtype
    assert ex.check_top_share(answer, counts, 26) == pytest.approx(float(answer), abs=1e-6)
    # the float32 torch version too
    srt = counts.to(torch.float32).sort(descending=True).values
    ex.check_top_share((srt / srt.sum()).cumsum(0)[25], counts, 26)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_share_still_rejects_one_item_off_and_off_by_one(seed):
    counts = _usage(seed)
    right = ex.top_share(counts, 26)
    with pytest.raises(AssertionError, match="expected"):
        ex.check_top_share(right + 1 / 5000, counts, 26)  # one image more
    with pytest.raises(AssertionError, match="off by one"):
        ex.check_top_share(np.float32(ex.top_share(counts, 25)), counts, 26)


def test_mean_pair_distances_accepts_float32_distances():
    gen = torch.Generator().manual_seed(0)
    x = lorentz.expmap0(lorentz.lift(0.8 * torch.randn(300, 4, generator=gen)))  # float32
    d64 = lorentz.pairwise_dist(x.double(), x.double())
    d32 = lorentz.pairwise_dist(x, x)
    answer = float(d32.sum() / (300 * 299))  # the notebook's solution: float32, diagonal ~0
    ex.check_mean_pair_distances((answer, answer), d64, d64)
    with pytest.raises(AssertionError, match="includes the diagonal"):
        ex.check_mean_pair_distances((float(d32.mean()), answer), d64, d64)


def test_config_ratios_accept_float32_ratios():
    paper, cpu = (
        SimpleNamespace(resolution=224, epochs=50),
        SimpleNamespace(resolution=160, epochs=30),
    )
    pix = np.float32(224) / np.float32(160)
    answer = (pix * pix, np.float32(50) / np.float32(30))
    assert abs(float(answer[0]) - (224 / 160) ** 2) > 1e-9  # the old tolerance failed it
    ex.check_config_ratios(answer, paper, cpu)
    with pytest.raises(AssertionError, match="side lengths"):
        ex.check_config_ratios((pix, answer[1]), paper, cpu)


# --- 05, exercise 3: the instance-wise loss by hand ---------------------------------
TAU = 0.2
LEVELS = [torch.tensor([0, 0, 1, 2, 3]), torch.tensor([0, 0, 0, 1, 1])]


def _batch(dtype):
    space = manifolds.ProductLorentz(2, 3, curvature=1.3).to(dtype)
    gen = torch.Generator().manual_seed(0)
    z = space.embed(torch.randn(5, 2, 3, generator=gen, dtype=torch.float64).to(dtype))
    with torch.no_grad():
        return z, space, losses.product_distance(space, z, z)


def _by_hand(D, labels, tau, keep_self=True, by_anchors=False, last=False):
    """The notebook's formula, written again with torch (self kept, divided by B)."""
    s = -D / tau
    per_level = []
    for lab in labels:
        nb = losses.first_neighbour(lab)
        if last:  # the last other image of the cluster instead of the first
            nb = losses.first_neighbour(lab.flip(0)).flip(0)
            nb = torch.where(nb >= 0, len(lab) - 1 - nb, nb)
        rows = [i for i in range(len(lab)) if nb[i] >= 0]
        terms = []
        for i in rows:
            cand = s[i] if keep_self else torch.cat([s[i, :i], s[i, i + 1 :]])
            terms.append(torch.logsumexp(cand, 0) - s[i, nb[i]])
        total = torch.stack(terms).sum() if terms else s.new_zeros(())
        per_level.append(total / (len(terms) if by_anchors else len(lab)))
    return torch.stack(per_level).mean()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_instance_loss_accepts_the_library_and_the_formula(dtype):
    z, space, D = _batch(dtype)
    assert D.dtype == dtype
    with torch.no_grad():
        lib = losses.instance_loss(z, LEVELS, space, TAU, mode="reference")
    by_hand = _by_hand(D, LEVELS, TAU)
    assert by_hand.dtype == dtype
    expected = ex.check_instance_loss(lib, D, LEVELS, TAU)
    ex.check_instance_loss(by_hand, D, LEVELS, TAU)
    ex.check_instance_loss(by_hand.item(), D.double(), LEVELS, TAU)
    assert expected == pytest.approx(float(lib), rel=1e-5)


def _wrong_instance(name, z, space, D):
    with torch.no_grad():
        lib = losses.instance_loss(z, LEVELS, space, TAU)
        if name == "sign":
            return -lib
        if name == "masked":
            return losses.instance_loss(z, LEVELS, space, TAU, mode="masked")
        if name == "by_anchors":
            return _by_hand(D, LEVELS, TAU, by_anchors=True)
        if name == "no_self":
            return _by_hand(D, LEVELS, TAU, keep_self=False)
        if name == "no_tau":
            return losses.instance_loss(z, LEVELS, space, 1.0)
        if name == "similarity":
            return _by_hand(-D, LEVELS, TAU)
        if name == "fine_only":
            return losses.instance_loss(z, LEVELS[:1], space, TAU)
        if name == "coarse_only":
            return losses.instance_loss(z, LEVELS[1:], space, TAU)
        if name == "sum_levels":
            return 2 * lib
        if name == "last":
            return _by_hand(D, LEVELS, TAU, last=True)
        if name == "near":
            return lib * 1.01
    raise KeyError(name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "name, message",
    [
        ("sign", "flip the sign"),
        ("masked", "mode='masked'"),
        ("by_anchors", "batch size B = 5"),
        ("no_self", "anchor itself in the denominator"),
        ("no_tau", "temperature"),
        ("similarity", "MINUS the distance"),
        ("fine_only", r"one level alone \(labels\[0\]\)"),
        ("coarse_only", r"one level alone \(labels\[1\]\)"),
        ("sum_levels", "sum over the 2 levels"),
        ("last", "FIRST other image"),
        ("near", "expected"),
    ],
)
def test_instance_loss_rejects_known_wrong_answers(dtype, name, message):
    z, space, D = _batch(dtype)
    with pytest.raises(AssertionError, match=message):
        ex.check_instance_loss(_wrong_instance(name, z, space, D), D, LEVELS, TAU)


def test_instance_loss_rejects_missing_answers():
    _, _, D = _batch(torch.float64)
    for answer, message in ((None, "set answer"), (float("nan"), "finite")):
        with pytest.raises(AssertionError, match=message):
            ex.check_instance_loss(answer, D, LEVELS, TAU)


# --- 08, exercise 2: distances from the root, on both data paths --------------------
def _tree_points(chains, seed=0):
    tree = data.class_tree(chains)
    gen = torch.Generator().manual_seed(seed)
    v = 1.5 * torch.randn(tree.n_nodes, 2, generator=gen, dtype=torch.float64)
    pts = lorentz.expmap0(lorentz.lift(v))
    centre = int(TE.tree_distances(tree.parent).sum(1).argmin())
    deepest = int(tree.leaves[np.argmax(tree.depth[tree.leaves])])
    return tree, pts, centre, deepest


def _radii(pts, ref, tree):
    r = lorentz.dist(pts, pts[ref].expand_as(pts)).numpy()
    return float(np.median(r[tree.leaves])), float(np.median(r[tree.depth == 1]))


#: A WordNet-like tree whose median node is not the root (like Tiny-ImageNet's).
DEEP_CHAINS = {f"c{i}": ["r", "x", f"y{i % 3}"] for i in range(9)} | {"lone": ["r"]}


@pytest.mark.parametrize("chains", [None, DEEP_CHAINS], ids=["synthetic", "wordnet-like"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tree_radii_accept_distances_from_the_root(chains, dtype):
    tree, pts, centre, deepest = _tree_points(chains or data.example_chains())
    moved = TE.recentre(pts, deepest, "hyperbolic").to(dtype)  # the notebook's exercise
    right = _radii(moved, 0, tree)
    got = ex.check_tree_radii(right, moved, tree.depth, tree.leaves, others={"m": centre})
    assert got == pytest.approx(right, rel=1e-5)
    # the same distances measured on the unmoved tree: an isometry changes none
    ex.check_tree_radii(_radii(pts, 0, tree), moved, tree.depth, tree.leaves)


@pytest.mark.parametrize("chains", [None, DEEP_CHAINS], ids=["synthetic", "wordnet-like"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tree_radii_reject_the_origin_on_every_data_path(chains, dtype):
    """Without Tiny-ImageNet (the synthetic tree) the median node is the root; the
    exercise moves the deepest class to the origin, so the two answers differ on
    both paths."""
    tree, pts, centre, deepest = _tree_points(chains or data.example_chains())
    assert (centre == 0) == (chains is None)  # synthetic: the median node is the root
    moved = TE.recentre(pts, deepest, "hyperbolic").to(dtype)
    o = lorentz.origin(2, dtype=dtype).expand_as(moved)
    r = lorentz.dist(moved, o).numpy()
    from_origin = (float(np.median(r[tree.leaves])), float(np.median(r[tree.depth == 1])))
    with pytest.raises(AssertionError, match="ORIGIN"):
        ex.check_tree_radii(from_origin, moved, tree.depth, tree.leaves, others={"m": centre})
    right = _radii(moved, 0, tree)
    with pytest.raises(AssertionError, match="swapped"):
        ex.check_tree_radii(right[::-1], moved, tree.depth, tree.leaves)
    r0 = lorentz.dist(moved, moved[0].expand_as(moved)).numpy()
    means = (float(r0[tree.leaves].mean()), float(r0[tree.depth == 1].mean()))
    with pytest.raises(AssertionError, match="means"):
        ex.check_tree_radii(means, moved, tree.depth, tree.leaves)
    with pytest.raises(AssertionError, match="expected"):
        ex.check_tree_radii((right[0] * 1.01, right[1]), moved, tree.depth, tree.leaves)


def test_tree_radii_name_the_median_node_on_the_wordnet_like_tree():
    tree, pts, centre, deepest = _tree_points(DEEP_CHAINS)
    moved = TE.recentre(pts, deepest, "hyperbolic")
    wrong = _radii(moved, centre, tree)
    with pytest.raises(AssertionError, match="from the median node"):
        ex.check_tree_radii(
            wrong, moved, tree.depth, tree.leaves, others={"the median node": centre}
        )


def test_tree_radii_refuse_points_with_the_root_at_the_origin():
    """The old exercise's set-up on the synthetic tree: the median node, at the origin,
    is the root, so no check could tell the two answers apart."""
    tree, pts, centre, _ = _tree_points(data.example_chains())
    at_centre = TE.recentre(pts, centre, "hyperbolic")
    with pytest.raises(ValueError, match="root sits at the origin"):
        ex.check_tree_radii(_radii(at_centre, 0, tree), at_centre, tree.depth, tree.leaves)


# --- the checks moved out of the notebooks (issue 27): float32 and float64 pass ------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_time_coordinate_accepts_both_dtypes(dtype):
    answer = np.sqrt(dtype(1) + dtype(3) ** 2 + dtype(4) ** 2)
    assert answer.dtype == dtype
    assert ex.check_time_coordinate(answer, (3.0, 4.0)) == pytest.approx(math.sqrt(26))
    x0 = lorentz.project(torch.tensor([0.0, 3.0, 4.0], dtype=torch.float32), k=1.0)[0]
    ex.check_time_coordinate(x0, (3.0, 4.0))  # the library's float32 x0
    if dtype is np.float32:  # √26 in float32 is off by ~1.4e-8: the old 1e-9 failed it
        assert abs(float(answer) - math.sqrt(26)) > 1e-9
    ex.check_time_coordinate(math.sqrt(2.0 + 25.0), (3.0, 4.0), k=2.0)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (5.0, "k included"),
        (26.0, "square root"),
        (math.sqrt(24.0), "sign of k"),
        (-math.sqrt(26.0), "lower sheet"),
        (math.sqrt(26.0) * 1.01, "expected"),
        (None, "set answer"),
    ],
)
def test_time_coordinate_rejects_known_wrong_answers(wrong, message):
    with pytest.raises(AssertionError, match=message):
        ex.check_time_coordinate(wrong, (3.0, 4.0))


def _sweep(n):
    temperatures = np.logspace(-2, 3, n)
    return temperatures, 1 - 0.9 / (1 + temperatures)  # rises from ~0.1 to ~1


@pytest.mark.parametrize("n", [15, 41])  # fast and full mode
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_smallest_temperature_accepts_both_dtypes(n, dtype):
    temperatures, prob = _sweep(n)
    answer = temperatures.astype(dtype)[np.argmax(prob >= 0.9)]
    assert answer.dtype == dtype
    got = ex.check_smallest_temperature(answer, temperatures, prob.astype(np.float32))
    assert got == pytest.approx(temperatures[prob >= 0.9].min())
    t32 = torch.logspace(-2, 3, n)  # a float32 grid built with torch: also close enough
    ex.check_smallest_temperature(t32[int(np.argmax(prob >= 0.9))], temperatures, prob)


@pytest.mark.parametrize(
    "pick, message",
    [
        (lambda t, p, i: t[i - 1], "below 0.9"),
        (lambda t, p, i: t[i + 1], "SMALLEST"),
        (lambda t, p, i: t[-1], "largest temperature"),
        (lambda t, p, i: i, "index"),
        (lambda t, p, i: p[i], "attention weight"),
        (lambda t, p, i: t[i] * 1.01, "expected"),
    ],
)
def test_smallest_temperature_rejects_known_wrong_answers(pick, message):
    temperatures, prob = _sweep(41)
    i = int(np.argmax(prob >= 0.9))
    with pytest.raises(AssertionError, match=message):
        ex.check_smallest_temperature(pick(temperatures, prob, i), temperatures, prob)


def _labelled(seed=0, n=400):
    rng = np.random.default_rng(seed)
    y_fine = rng.integers(0, 10, n)
    y_super = (y_fine >= 4).astype(int)  # 4 "vehicles", 6 "animals"
    split = np.where(rng.random(n) < 0.8, y_super, 1 - y_super)  # a noisy top split
    return split, y_fine, y_super


def test_adjusted_rand_index_matches_sklearn():
    from sklearn.metrics import adjusted_rand_score, rand_score

    for seed in range(3):
        split, y_fine, y_super = _labelled(seed)
        for a, b in ((y_super, split), (y_fine, split), (y_fine, y_super)):
            assert ex.adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b))
            assert ex.rand_index(a, b) == pytest.approx(rand_score(a, b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_ari_accepts_both_dtypes(dtype):
    from sklearn.metrics import adjusted_rand_score

    split, y_fine, y_super = _labelled()
    answer = dtype(adjusted_rand_score(y_super, split + 1))  # the notebook's fcluster: 1, 2
    assert ex.check_split_ari(answer, split, y_fine, y_super) == pytest.approx(float(answer))


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda s, f, y: ex.adjusted_rand_index(f, s), "10 classes"),
        (lambda s, f, y: ex.rand_index(y, s), "ADJUSTED"),
        (lambda s, f, y: ex.adjusted_rand_index(y, s) * 1.01, "expected"),
    ],
)
def test_split_ari_rejects_known_wrong_answers(wrong, message):
    split, y_fine, y_super = _labelled()
    with pytest.raises(AssertionError, match=message):
        ex.check_split_ari(np.float32(wrong(split, y_fine, y_super)), split, y_fine, y_super)


FINE_TO_SUPER = np.array([0, 0, 1, 1, 1, 1, 1, 1, 0, 0])  # CIFAR-10: 4 vehicles, 6 animals


def _rankings(seed=0, q=40, n=300, k=50):
    gen = torch.Generator().manual_seed(seed)
    q_lab = torch.randint(0, 10, (q,), generator=gen)
    db_lab = torch.randint(0, 10, (n,), generator=gen)
    ranked = {
        name: torch.stack([torch.randperm(n, generator=gen)[:k] for _ in range(q)])
        for name in ("contrastive", "+ hierarchy")
    }
    return ranked, q_lab, db_lab


def _superclass_maps(ranked, q_lab, db_lab, dtype):
    """The notebook's solution: relabel with the superclasses, then map_at_k (in dtype)."""
    sup = torch.as_tensor(FINE_TO_SUPER)
    out = {}
    for name, idx in ranked.items():
        hits = metrics.hits_at_k(sup[q_lab], sup[db_lab], idx).to(dtype)
        ranks = torch.arange(1, hits.shape[1] + 1, dtype=dtype)
        ap = (hits.cumsum(1) / ranks * hits).sum(1) / hits.sum(1).clamp_min(1)
        out[name] = ap.mean()
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_superclass_maps_accept_both_dtypes(dtype):
    ranked, q_lab, db_lab = _rankings()
    answer = _superclass_maps(ranked, q_lab, db_lab, dtype)
    assert all(v.dtype == dtype for v in answer.values())
    got = ex.check_superclass_maps(answer, ranked, q_lab, db_lab, FINE_TO_SUPER)
    sup = torch.as_tensor(FINE_TO_SUPER)
    for name, idx in ranked.items():  # the library's superclass mAP agrees
        assert got[name] == pytest.approx(metrics.map_at_k(sup[q_lab], sup[db_lab], idx))


def test_superclass_maps_reject_the_class_level_map_and_swapped_models():
    ranked, q_lab, db_lab = _rankings()
    class_level = {name: metrics.map_at_k(q_lab, db_lab, idx) for name, idx in ranked.items()}
    with pytest.raises(AssertionError, match="CLASS-level"):
        ex.check_superclass_maps(class_level, ranked, q_lab, db_lab, FINE_TO_SUPER)
    right = _superclass_maps(ranked, q_lab, db_lab, torch.float64)
    swapped = dict(zip(right, list(right.values())[::-1]))
    with pytest.raises(AssertionError, match="keep the models apart"):
        ex.check_superclass_maps(swapped, ranked, q_lab, db_lab, FINE_TO_SUPER)
    with pytest.raises(AssertionError, match="lacks"):
        ex.check_superclass_maps({"contrastive": 0.5}, ranked, q_lab, db_lab, FINE_TO_SUPER)


HITS = np.random.default_rng(0).random((10, 10)) < 0.37


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mean_precision_accepts_both_dtypes(dtype):
    answer = HITS.astype(dtype).sum(axis=1).mean() / dtype(10)  # the notebook's solution
    assert answer.dtype == dtype
    assert ex.check_mean_precision(answer, HITS) == pytest.approx(HITS.mean())
    ex.check_mean_precision(torch.as_tensor(HITS).float().mean(), torch.as_tensor(HITS))


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda h: h.sum(1).mean(), "NUMBER of hits"),
        (lambda h: h[0].mean(), "first query"),
        (lambda h: (h.sum(1) > 0).mean(), "share of queries"),
        (lambda h: h.mean() * 1.01, "expected"),
    ],
)
def test_mean_precision_rejects_known_wrong_answers(wrong, message):
    with pytest.raises(AssertionError, match=message):
        ex.check_mean_precision(float(wrong(HITS.astype(float))), HITS)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sdc_map_accepts_both_dtypes(dtype):
    expected = 0.61234567891
    assert ex.check_sdc_map(dtype(expected), expected, adc_map=0.65) == expected
    ex.check_sdc_map(dtype(expected), dtype(expected), adc_map=0.65)


def test_sdc_map_rejects_the_adc_map():
    with pytest.raises(AssertionError, match="ADC mAP"):
        ex.check_sdc_map(0.65, 0.61, adc_map=0.65)
    with pytest.raises(AssertionError, match="expected"):
        ex.check_sdc_map(0.61 * 1.01, 0.61, adc_map=0.65)
    ex.check_sdc_map(0.61, 0.61, adc_map=0.61)  # equal mAPs: the ADC one is right too


SEED_MAPS = (np.array([0.612, 0.598, 0.631]), np.array([0.604, 0.601, 0.617]))


@pytest.mark.parametrize("maps", [SEED_MAPS, (SEED_MAPS[0], SEED_MAPS[0] - 1e-4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_paired_difference_accepts_both_dtypes(maps, dtype):
    a, b = (m.astype(dtype) for m in maps)
    diffs = a - b  # the notebook's solution, in dtype
    answer = (diffs.mean(), diffs.std(ddof=1) / np.sqrt(len(diffs)))
    assert answer[0].dtype == dtype
    got = ex.check_paired_difference(answer, *maps)
    want = stats.paired_difference(*maps)
    assert got == (pytest.approx(want["delta"]), pytest.approx(want["se"]))


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda d, a, b: (-d.mean(), d.std(ddof=1) / np.sqrt(3)), "sign is flipped"),
        (lambda d, a, b: (d.mean(), d.std(ddof=0) / np.sqrt(3)), "n - 1"),
        (lambda d, a, b: (d.mean(), d.std(ddof=1)), "sqrt\\(n\\)"),
        (
            lambda d, a, b: (d.mean(), np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 3)),
            "unpaired",
        ),
        (lambda d, a, b: (d.mean() * 1.01, d.std(ddof=1) / np.sqrt(3)), "delta"),
        (lambda d, a, b: (d.mean(), d.std(ddof=1) / np.sqrt(3) * 1.01), "expected"),
    ],
)
def test_paired_difference_rejects_known_wrong_answers(wrong, message):
    a, b = SEED_MAPS
    with pytest.raises(AssertionError, match=message):
        ex.check_paired_difference(wrong(a - b, a, b), a, b)
