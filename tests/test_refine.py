"""``codebook_refine``: Lloyd iterations on a trained model's codebooks (not in the paper).

The cluster centroids are checked against a hand computation of the Lorentz centroid
(Euclidean: the mean), in float32 and float64; each iteration must not raise the
quantization error the codes pay (the Lorentz centroid minimises the sum of squared
Lorentzian distances); no codeword stays unused; gradients stay finite when a codeword
sits exactly on a point; and in training each saved model keeps its refinement only
when its validation mAP does not fall, once, also across a resumed run.
"""

from __future__ import annotations

import pytest
import torch

from hihpq_lib.geometry.manifolds import ProductEuclidean, ProductLorentz
from hihpq_lib.learning.checkpoint import load_checkpoint, load_model
from hihpq_lib.learning.config import ConfigError, TrainConfig
from hihpq_lib.learning.retrieval import evaluate_map
from hihpq_lib.learning.training import train
from hihpq_lib.quantization.quantizer import ProductQuantizer
from tests.test_training import small_config, synthetic_data


def _pq(geometry, dtype, M=2, d=3, K=8, seed=0):
    torch.manual_seed(seed)
    if geometry == "lorentz":
        space = ProductLorentz(M, d, curvature=[0.5, 2.0][:M], clip_r=2.0)
    else:
        space = ProductEuclidean(M, d, normalize=geometry == "sphere")
    return ProductQuantizer(space, K=K, temperature=5.0).to(dtype)


def _points(pq, n, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return pq.embed(torch.randn(n, pq.feature_dim, generator=g, dtype=dtype))


def _error(pq, points):
    """The quantization error the hard codes pay: summed squared distance to the codeword."""
    with torch.no_grad():
        codes = pq.encode_points(points)
        return float(pq.space.sqdist(points, pq.decode(codes)).sum())


@pytest.mark.parametrize("geometry", ["lorentz", "flat"])
def test_cluster_centroids_equal_a_hand_computation(geometry, dtype):
    pq = _pq(geometry, dtype)
    points = _points(pq, 60, dtype)
    g = torch.Generator().manual_seed(2)
    codes = torch.randint(0, pq.K - 2, (60, pq.M), generator=g)  # the last two codewords empty
    cw, counts = pq.cluster_centroids(points, codes)
    assert cw.shape == (pq.M, pq.K, points.shape[-1]) and cw.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for m in range(pq.M):
        for j in range(pq.K):
            mine = points[codes[:, m] == j, m]
            assert counts[m, j] == len(mine)
            if not len(mine):
                continue
            a = mine.mean(0)
            if geometry == "lorentz":
                k = float(pq.space.k[m].detach())
                inner = -(a[0] ** 2) + (a[1:] ** 2).sum()  # <a, a>_L < 0: a is time-like
                want = (k**0.5) * a / (-inner) ** 0.5
                # on the hyperboloid <x, x>_L = -k
                got = cw[m, j]
                assert float(-(got[0] ** 2) + (got[1:] ** 2).sum()) == pytest.approx(
                    -k, rel=tol * 10
                )
            else:
                want = a
            assert torch.allclose(cw[m, j], want, atol=tol, rtol=tol), (m, j)


def test_the_lorentz_centroid_minimises_the_cluster_error(dtype):
    # the property Lloyd's update step needs: no other point of the hyperboloid has a
    # smaller sum of squared Lorentzian distances to the cluster (tried: every member and
    # small moves of the centroid along each tangent direction)
    pq = _pq("lorentz", dtype, M=1, d=3, K=4)
    points = _points(pq, 40, dtype)
    codes = torch.zeros(40, 1, dtype=torch.long)
    cw, _ = pq.cluster_centroids(points, codes)
    space = pq.space

    @torch.no_grad()
    def cost(x):
        return float(space.sqdist(points, x.expand_as(points)).sum())

    best = cost(cw[0, 0].view(1, 1, -1))
    for i in range(len(points)):
        assert cost(points[i].view(1, 1, -1)) >= best
    v = space.log(cw[:, 0].unsqueeze(0))  # (1, 1, d)
    for axis in range(v.shape[-1]):
        for step in (-0.05, 0.05):
            moved = v.clone()
            moved[..., axis] += step
            assert cost(space.expmap0(moved)) >= best - 1e-9


@pytest.mark.parametrize("geometry", ["lorentz", "flat", "sphere"])
def test_refine_never_raises_the_error_and_leaves_no_codeword_unused(geometry, dtype):
    pq = _pq(geometry, dtype, K=16)
    points = _points(pq, 300, dtype)
    with torch.no_grad():  # half the codewords on one point: (almost) all of them unused
        pq.codebooks[:, 8:] = 0.3
    usage = torch.stack(
        [torch.bincount(c, minlength=16) for c in pq.encode_points(points).T.long()]
    )
    assert ((usage == 0).sum(1) >= 6).all(), usage
    errors = [_error(pq, points)]
    for _ in range(6):  # one iteration at a time
        pq.refine_(points, iterations=1)
        errors.append(_error(pq, points))
    slack = 1e-4 if dtype == torch.float32 else 1e-9
    for before, after in zip(errors, errors[1:]):
        assert after <= before * (1 + slack), errors
    assert errors[-1] < 0.8 * errors[0]
    codes = pq.encode_points(points).long()
    for m in range(pq.M):
        assert torch.bincount(codes[:, m], minlength=16).min() > 0  # every codeword holds a point
    changed = pq.refine_(points, iterations=50)  # runs until no code changes
    assert changed[-1] == 0 and len(changed) < 50


@pytest.mark.parametrize("attention", ["sqdist", "sqgeodesic"])
def test_gradients_stay_finite_when_a_codeword_sits_on_a_point(attention, dtype):
    pq = _pq("lorentz", dtype, K=16)
    pq.attention = attention
    feats = torch.randn(300, pq.feature_dim, dtype=dtype)
    with torch.no_grad():
        pq.codebooks[:, 8:] = 0.3
    pq.refine_(pq.embed(feats).detach(), iterations=1)  # dead codewords moved onto points
    x = feats.clone().requires_grad_(True)
    out = pq(x)
    assert float(out.sqdist.detach().min()) <= 1e-5  # some point is (about) on its codeword
    (out.soft.sum() + out.points.sum()).backward()
    for name, grad in (("features", x.grad), ("codebooks", pq.codebooks.grad)):
        assert torch.isfinite(grad).all(), name
    assert torch.isfinite(pq.space.curvature.grad).all()


def test_refine_names_bad_input():
    pq = _pq("lorentz", torch.float64)
    with pytest.raises(ValueError, match=r"points must have shape \(N, 2, D'\)"):
        pq.refine_(torch.zeros(20, 4))
    with pytest.raises(ValueError, match="need at least K=8 points"):
        pq.refine_(_points(pq, 5, torch.float64))
    with pytest.raises(ConfigError, match="codebook_refine must be >= 0"):
        TrainConfig().with_overrides(["codebook_refine=-1"])


def _assert_same_saved_models(run_a, run_b):
    """Both runs' validation-selected and final models hold the same weights, bit for bit."""
    for which in ("best", "final"):
        a, _ = load_model(run_a, which)
        b, _ = load_model(run_b, which)
        for k, v in a.state_dict().items():
            assert torch.equal(v, b.state_dict()[k]), (which, k)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_training_refines_both_saved_models_and_scores_what_it_saved(tmp_path):
    data = synthetic_data()
    plain = train(small_config(), data, tmp_path / "plain", progress=False)
    res = train(small_config(codebook_refine=5), data, tmp_path / "run", progress=False)
    assert plain["refine"] is None and set(res["refine"]) == {"val_selected", "final"}
    # the same training: the refinement starts from the models the plain run saved
    for which, before in (
        ("val_selected", plain["best_val_map"]),
        ("final", plain["final_val_map"]),
    ):
        rec = res["refine"][which]
        assert rec["val_map_before"] == pytest.approx(before, abs=1e-9)
        assert rec["iterations"] == len(rec["codes_changed"]) >= 1
        assert rec["kept"] == (rec["val_map_after"] >= rec["val_map_before"])
    best, _ = load_model(tmp_path / "run", "best")
    final, _ = load_model(tmp_path / "run", "final")
    for model, which, key in (
        (best, "val_selected", "best_val_map"),
        (final, "final", "final_val_map"),
    ):
        rec = res["refine"][which]
        got = evaluate_map(model, data.val_query, data.val_database, 50)
        assert got == pytest.approx(rec["val_map_after" if rec["kept"] else "val_map_before"])
        assert res[key] == pytest.approx(got)
    # the returned final model is the saved one
    for a, b in zip(final.state_dict().values(), res["model"].state_dict().values()):
        assert torch.equal(a, b)
    assert load_checkpoint(tmp_path / "run" / "best.pt")["refine"] == res["refine"]["val_selected"]

    # a resumed finished run does not refine again: same records, same models
    saved = _state(best)
    again = train(
        small_config(codebook_refine=5), data, tmp_path / "run", progress=False, resume=True
    )
    assert again["refine"] == res["refine"] and again["best_val_map"] == res["best_val_map"]
    best2, _ = load_model(tmp_path / "run", "best")
    for k, v in best2.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_a_refinement_validation_dislikes_is_not_kept(tmp_path, monkeypatch):
    data = synthetic_data()
    plain = train(small_config(), data, tmp_path / "plain", progress=False)

    def collapse(self, points, iterations=10, batch_size=4096):  # every codeword the same
        with torch.no_grad():
            self.codebooks[:] = self.codebooks[:, :1]
        return [len(points)]

    monkeypatch.setattr(ProductQuantizer, "refine_", collapse)
    res = train(small_config(codebook_refine=3), data, tmp_path / "run", progress=False)
    for which in ("val_selected", "final"):
        rec = res["refine"][which]
        assert not rec["kept"] and rec["val_map_after"] < rec["val_map_before"]
    assert res["best_val_map"] == plain["best_val_map"]
    _assert_same_saved_models(tmp_path / "plain", tmp_path / "run")


def test_a_killed_run_resumed_refines_like_an_uninterrupted_one(tmp_path):
    cfg = small_config(codebook_refine=5, threads=1)
    full = train(cfg, synthetic_data(), tmp_path / "full", progress=False)
    part = train(cfg, synthetic_data(), tmp_path / "killed", progress=False, stop_after=2)
    assert part["refine"] is None  # not finished: nothing refined yet
    assert "refine" not in load_checkpoint(tmp_path / "killed" / "best.pt")
    resumed = train(cfg, synthetic_data(), tmp_path / "killed", progress=False, resume=True)
    strip = {"seconds"}
    for which in ("val_selected", "final"):
        a = {k: v for k, v in full["refine"][which].items() if k not in strip}
        b = {k: v for k, v in resumed["refine"][which].items() if k not in strip}
        assert a == b
    _assert_same_saved_models(tmp_path / "full", tmp_path / "killed")


def test_too_few_training_images_skip_the_refinement_and_say_why(tmp_path):
    data = synthetic_data(n_train=12)  # 12 images, 16 codewords per codebook
    res = train(
        small_config(codebook_refine=3, batch_size=8, num_clusters="[4, 2]"),
        data,
        tmp_path,
        progress=False,
    )
    for rec in res["refine"].values():
        assert not rec["kept"] and rec["iterations"] == 0
        assert rec["skipped"] == "12 training images, fewer than the K=16 codewords"
