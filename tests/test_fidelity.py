"""Reference fidelity: each behaviour of the reference implementation, pinned.

Every reference behaviour that our code offers as an option (``FIDELITY_OPTIONS``, see
docs/fidelity.md) is checked here against a small brute-force computation written from
its definition — the reference's own quirks included — in float32 and float64.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hihpq_lib.geometry import lorentz as L
from hihpq_lib.geometry.manifolds import ProductEuclidean, ProductLorentz
from hihpq_lib.learning.config import (
    CURRENT_OPTIONS,
    FIDELITY_OPTIONS,
    REFERENCE_OPTIONS,
    ConfigError,
    TrainConfig,
    load_config,
    with_legacy_fidelity,
)
from hihpq_lib.learning.losses import HiHPQLoss, instance_loss, prototype_loss
from hihpq_lib.learning.model import build_model
from hihpq_lib.learning.training import (
    FeatureSplit,
    LRSchedule,
    TrainingData,
    steps_per_epoch,
    train,
)
from tests.paths import cifar10_archive

ROOT = Path(__file__).resolve().parent.parent
TOL = {torch.float32: 2e-5, torch.float64: 1e-11}


def _space(geometry, dtype, M=3, d=4):
    if geometry == "lorentz":
        c = [0.7, 1.0, 1.6][:M]
        return ProductLorentz(M, d, curvature=c, clip_r=1.5, learn_curvature=False).to(dtype)
    return ProductEuclidean(M, d).to(dtype)


def _sim(space, a, b, tau):
    """Brute-force similarity of two single points ``(M, D')``: -sum_m d_m / tau."""
    return -float(space.dist(a[None], b[None]).sum().detach()) / tau


# ------------------------------------------------------------------ prototype-wise loss
@pytest.mark.parametrize("geometry", ["lorentz", "euclidean"])
def test_reference_prototype_loss_equals_duplicated_column_loop(geometry, dtype):
    torch.manual_seed(0)
    space, tau = _space(geometry, dtype), 0.2
    B, C = 7, 5
    z = space.embed(torch.randn(B, space.M, space.dim, dtype=dtype))
    lab = torch.tensor([0, 2, 2, 0, 2, 4, 0])  # clusters 1 and 3 absent from the batch
    cent = torch.randn(C, space.M * space.dim, dtype=dtype)
    got = prototype_loss(z, [lab], [cent], space, tau, mode="reference")
    assert got.dtype == dtype
    # the reference's logits: one column per batch sample (its own prototype), then one per
    # cluster absent from the batch; the target of row i is column i
    mu = space.embed(cent.view(C, space.M, space.dim))
    columns = [int(c) for c in lab] + [c for c in range(C) if c not in set(lab.tolist())]
    total = 0.0
    for i in range(B):
        logits = [_sim(space, z[i], mu[c], tau) for c in columns]
        total += -(logits[i] - math.log(sum(math.exp(v) for v in logits)))
    assert abs(float(got) - total / B) < TOL[dtype] * max(1.0, abs(total / B))
    # the plain cross-entropy over clusters differs here (clusters repeat in the batch)
    plain = prototype_loss(z, [lab], [cent], space, tau, mode="clusters")
    assert abs(float(plain) - float(got)) > 1e-3


@pytest.mark.parametrize("geometry", ["lorentz", "euclidean"])
def test_prototype_modes_agree_when_every_sample_has_its_own_cluster(geometry, dtype):
    torch.manual_seed(1)
    space = _space(geometry, dtype)
    z = space.embed(torch.randn(4, space.M, space.dim, dtype=dtype))
    lab, cent = torch.tensor([3, 0, 5, 1]), torch.randn(6, space.M * space.dim, dtype=dtype)
    a = prototype_loss(z, [lab], [cent], space, mode="reference")
    b = prototype_loss(z, [lab], [cent], space, mode="clusters")
    assert a.dtype == dtype and abs(float(a) - float(b)) < TOL[dtype]


# ------------------------------------------------------------------- instance-wise loss
@pytest.mark.parametrize("geometry", ["lorentz", "euclidean"])
def test_reference_instance_loss_keeps_self_and_divides_by_batch(geometry, dtype):
    torch.manual_seed(2)
    space, tau = _space(geometry, dtype), 0.2
    B = 8
    z = space.embed(torch.randn(B, space.M, space.dim, dtype=dtype))
    levels = [torch.tensor([0, 1, 0, 2, 1, 3, 0, 4]), torch.tensor([0, 0, 1, 1, 2, 2, 3, 5])]
    got = instance_loss(z, levels, space, tau, mode="reference")
    assert got.dtype == dtype
    want = []
    for lab in levels:
        total = 0.0
        for i in range(B):
            nbrs = [j for j in range(B) if j != i and lab[j] == lab[i]]
            if not nbrs:
                continue  # no neighbour: the anchor is left out of the sum, not of the count
            sims = [_sim(space, z[i], z[j], tau) for j in range(B)]  # j = i included
            assert abs(sims[i]) < 1e-3  # s(z_i, z_i) = 0, the largest similarity
            total += -(sims[nbrs[0]] - math.log(sum(math.exp(s) for s in sims)))
        want.append(total / B)
    want = sum(want) / len(want)
    assert abs(float(got) - want) < TOL[dtype] * max(1.0, abs(want)) * 10
    masked = instance_loss(z, levels, space, tau, mode="masked")
    assert abs(float(masked) - float(got)) > 1e-2


def test_reference_instance_loss_gradient_is_finite_at_the_self_term(dtype):
    torch.manual_seed(3)
    space = _space("lorentz", dtype)
    v = torch.randn(6, space.M, space.dim, dtype=dtype, requires_grad=True)
    z = space.embed(v)
    z = torch.cat([z, z[:1]])  # an exact duplicate as well as the self terms
    loss = instance_loss(z, [torch.tensor([0, 0, 1, 1, 2, 3, 0])], space, mode="reference")
    loss.backward()
    assert torch.isfinite(v.grad).all()


def test_loss_modes_are_checked():
    space = _space("lorentz", torch.float64)
    z = space.embed(torch.randn(3, space.M, space.dim, dtype=torch.float64))
    with pytest.raises(ValueError, match="prototype loss mode"):
        prototype_loss(z, [torch.tensor([0, 1, 0])], [torch.zeros(2, 12)], space, mode="x")
    with pytest.raises(ValueError, match="instance loss mode"):
        instance_loss(z, [torch.tensor([0, 1, 0])], space, mode="x")
    with pytest.raises(ValueError, match="prototype_mode"):
        HiHPQLoss(space, prototype_mode="x")


# --------------------------------------------------------------------------- subspace
def _cfg(**kw):
    base = ["bits=16", "feat_dim=16", "K=256", "head_hidden=0", "clip_r=1.5"]
    return TrainConfig().with_overrides(base + [f"{k}={v}" for k, v in kw.items()])


@pytest.mark.parametrize("geometry", ["lorentz", "euclidean"])
def test_ambient_subspace_discards_the_first_coordinate(geometry, dtype):
    cfg = _cfg(subspace="ambient", geometry=geometry)
    assert (cfg.M, cfg.sub_dim, cfg.space_dim) == (2, 8, 7)
    model = build_model(cfg, 10).to(dtype)
    q = model.quantizer
    assert q.dim == 7 and q.feature_dim == 16 and q.codebooks.shape == (2, 256, 7)
    # codewords: unit 8-vectors with the first coordinate dropped, so norms <= 1
    assert q.codebooks.dtype == dtype and bool((q.codebooks.norm(dim=-1) <= 1 + 1e-6).all())
    # brute force from the definition: chunk of 8, first coordinate set to zero, the rest
    # is a tangent vector at the origin of H^7 (a vector of R^7 for the Euclidean twin)
    x = torch.randn(5, 16, dtype=dtype, requires_grad=True)
    pts = q.embed(x)
    assert pts.shape == (5, 2, 8 if geometry == "lorentz" else 7) and pts.dtype == dtype
    for m in range(2):
        chunk = x[:, 8 * m : 8 * (m + 1)].detach().clone()
        chunk[:, 0] = 0.0
        v = chunk[:, 1:]
        if geometry == "lorentz":
            k = model.space.k[m].to(dtype)
            want = L.expmap0(L.lift(v), k=k, clip_r=1.5)
        else:
            want = torch.nn.functional.normalize(v, dim=-1)
        torch.testing.assert_close(pts[:, m].detach(), want, rtol=TOL[dtype], atol=TOL[dtype])
    # the discarded coordinates get exactly zero gradient; the others do not
    out = q(x)
    (out.soft.square().sum() + out.points.sum()).backward()
    g = x.grad.view(5, 2, 8)
    assert bool((g[..., 0] == 0).all()) and bool((g[..., 1:].abs().sum(-1) > 0).all())


def test_tangent_subspace_keeps_every_coordinate():
    cfg = _cfg(subspace="tangent")
    assert cfg.space_dim == cfg.sub_dim == 8
    assert build_model(cfg, 10).quantizer.codebooks.shape == (2, 256, 8)


# -------------------------------------------------------------------- cluster input
@pytest.mark.parametrize("subspace", ["ambient", "tangent"])
def test_raw_cluster_input_is_the_unclipped_head_output(subspace, dtype):
    cfg = _cfg(subspace=subspace)
    model = build_model(cfg, 10).to(dtype)
    feats = 50 * torch.randn(20, 10, dtype=dtype)  # large outputs: far beyond the clip radius
    raw = model.tangent(feats, raw=True)
    head = model.project(feats).detach().view(20, cfg.M, cfg.sub_dim)
    want = head[..., 1:] if subspace == "ambient" else head
    assert raw.dtype == dtype
    torch.testing.assert_close(raw, want.reshape(20, -1), rtol=TOL[dtype], atol=TOL[dtype])
    assert float(raw.view(20, cfg.M, -1).norm(dim=-1).max()) > 1.5
    clipped = model.tangent(feats).view(20, cfg.M, -1)
    assert float(clipped.norm(dim=-1).max()) <= 1.5 * (1 + 1e-4)


# ----------------------------------------------------------- schedule, steps, eval mode
def _reference_lr_schedule(start, base, final, epochs, steps, warm_epochs):
    """The reference's table, from its definition: linspace warm-up, then cosine."""
    W, T = steps * warm_epochs, steps * epochs
    warm = [start + (base - start) * i / (W - 1) for i in range(W)] if W > 1 else [start] * W
    cos = [
        final + 0.5 * (base - final) * (1 + math.cos(math.pi * i / (T - W))) for i in range(T - W)
    ]
    return warm + cos


def test_lr_schedule_linspace_matches_the_reference_table():
    ref = _reference_lr_schedule(1e-5, 0.01, 1e-5, 5, 7, 2)
    s = LRSchedule(0.01, 1e-5, 1e-5, 35, 14, warmup="linspace")
    np.testing.assert_allclose([s(t) for t in range(35)], ref, rtol=1e-12, atol=0)
    np.testing.assert_allclose(ref[:14], np.linspace(1e-5, 0.01, 14), rtol=1e-12)
    lin = LRSchedule(0.01, 1e-5, 1e-5, 35, 14)
    assert lin(13) < 0.01 and abs(lin(14) - 0.01) < 1e-15  # ours reaches base one step later
    assert LRSchedule(0.01, 1e-5, 1e-5, 10, 1, warmup="linspace")(0) == 1e-5
    with pytest.raises(ValueError, match="warmup must be"):
        LRSchedule(0.01, 0, 0, 10, 1, warmup="cosine")


def test_steps_per_epoch():
    assert [steps_per_epoch(n, 128) for n in (5000, 128, 100)] == [39, 1, 1]
    assert [steps_per_epoch(n, 128, drop_last=False) for n in (5000, 256, 257, 258)] == [
        40,
        2,
        2,
        3,
    ]


class _TinyOnline:
    """A duck-typed OnlineViews: a trainable 'backbone' with dropout, records its mode."""

    def __init__(self, n, dim=12, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, dim, generator=g)
        self.labels = torch.randint(0, 4, (n,), generator=g)
        self.images += 3 * torch.nn.functional.one_hot(self.labels, dim).float()
        self.backbone = torch.nn.Sequential(torch.nn.Linear(dim, 16), torch.nn.Dropout(0.5))
        self.modes: list[bool] = []

    def trainable_parameters(self):
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def sample(self, idx, gen, training=True):
        self.backbone.train(training)
        self.modes.append(self.backbone.training)
        x = self.images[idx]
        return (
            self.backbone(x + 0.1 * torch.randn(x.shape, generator=gen)),
            self.backbone(x + 0.1 * torch.randn(x.shape, generator=gen)),
        )

    @torch.no_grad()
    def clean(self, images):
        was = self.backbone.training
        self.backbone.eval()
        out = self.backbone(images)
        self.backbone.train(was)
        return out


def _online_data(n=70):
    online = _TinyOnline(n)
    feats = online.clean(online.images)
    val = FeatureSplit(feats[:20], online.labels[:20])
    db = FeatureSplit(feats, online.labels)
    return TrainingData(
        None, feats, val, db, online=online, val_images=(online.images[:20], online.images)
    ), online


@pytest.mark.parametrize("fidelity", ["reference", "current"])
def test_trainer_lr_of_every_group_steps_and_mode_per_epoch(fidelity, tmp_path, monkeypatch):
    opts = REFERENCE_OPTIONS if fidelity == "reference" else CURRENT_OPTIONS
    cfg = TrainConfig().with_overrides(
        [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in opts.items()]
        + [
            "epochs=4",
            "lr_warmup_epochs=1",
            "hierarchy_warmup=2",
            "batch_size=16",
            "bits=8",
            "K=16",
            "feat_dim=16",
            "head_hidden=8",
            "num_clusters=[6, 3]",
            "topk=10",
            "online_augmentation=true",
            "lr=0.02",
            "lr_backbone_scale=0.001",
        ]
    )
    data, online = _online_data(70)  # 70 = 4 * 16 + 6: 4 steps with drop_last, else 5
    recorded, head_modes = [], []
    import geoopt

    original = geoopt.optim.RiemannianSGD.step

    def spy(self, *a, **k):
        recorded.append([g["lr"] for g in self.param_groups])
        return original(self, *a, **k)

    monkeypatch.setattr(geoopt.optim.RiemannianSGD, "step", spy)
    import hihpq_lib.learning.training as T

    real_build = T.build_model

    def build(cfg_, in_dim):
        model = real_build(cfg_, in_dim)
        model.register_forward_pre_hook(lambda mod, inp: head_modes.append(mod.training))
        return model

    monkeypatch.setattr(T, "build_model", build)
    res = train(cfg, data, tmp_path, progress=False)
    assert res["finished"]
    steps = 5 if fidelity == "reference" else 4
    assert steps == steps_per_epoch(70, 16, cfg.drop_last)
    assert len(recorded) == 4 * steps and all(len(r) == 2 for r in recorded)
    # brute force: the lr of every group at every step
    W, T_ = steps, 4 * steps
    for t, (head_lr, bb_lr) in enumerate(recorded):
        if t < W:
            frac = t / (W - 1) if fidelity == "reference" else t / W
            lr = 1e-5 + (0.02 - 1e-5) * frac
        else:
            lr = 1e-5 + 0.5 * (0.02 - 1e-5) * (1 + math.cos(math.pi * (t - W) / (T_ - W)))
        assert abs(head_lr - lr) < 1e-12
        want_bb = lr if fidelity == "reference" else lr * 1e-3
        assert abs(bb_lr - want_bb) < 1e-12
    # dropout state per epoch: on during the warm-up epochs, then off with the reference
    per_epoch = [online.modes[e * steps : (e + 1) * steps] for e in range(4)]
    want = [True, True, False, False] if fidelity == "reference" else [True] * 4
    assert [all(m) if w else not any(m) for m, w in zip(per_epoch, want)] == [True] * 4
    # the head (its forward runs only in training steps, twice a step) follows suit
    assert len(head_modes) == 2 * 4 * steps
    per_epoch = [head_modes[2 * e * steps : 2 * (e + 1) * steps] for e in range(4)]
    assert [all(m) if w else not any(m) for m, w in zip(per_epoch, want)] == [True] * 4


# ----------------------------------------------------------------------------- configs
def test_every_paper_config_is_in_reference_mode():
    files = sorted((ROOT / "configs" / "paper").glob("*.yaml"))
    assert len(files) == 12
    for f in files:
        cfg = load_config(f)
        assert cfg.fidelity() == REFERENCE_OPTIONS, f.name
        assert cfg.space_dim == cfg.sub_dim - 1


def test_fidelity_options_are_validated_and_legacy_runs_keep_their_behaviour():
    assert set(REFERENCE_OPTIONS) == set(CURRENT_OPTIONS) == set(FIDELITY_OPTIONS)
    with pytest.raises(ConfigError, match="prototype_loss must be one of"):
        TrainConfig().with_overrides(["prototype_loss=proto"])
    with pytest.raises(ConfigError, match="subspace=ambient drops"):
        TrainConfig().with_overrides(["subspace=ambient", "bits=64", "feat_dim=8"])
    old = {k: v for k, v in TrainConfig().to_dict().items() if k not in FIDELITY_OPTIONS}
    assert TrainConfig.from_dict(with_legacy_fidelity(old)).fidelity() == CURRENT_OPTIONS


# ----------------------------------------------------------- the paper path, end to end
ARCHIVE = cifar10_archive()


@pytest.mark.timeout(300)
@pytest.mark.skipif(
    ARCHIVE is None, reason="../shared/data/cifar10-jpeg.tar.gz is not beside the checkout"
)
def test_paper_config_runs_online_vgg16_end_to_end(tmp_path, monkeypatch):
    """configs/paper on the CPU: online VGG-16 at 224 px with random weights, reference mode,
    a tiny subset, the clustering epoch and the evaluation on the test queries."""
    import dataclasses

    from hihpq_lib.app.pipeline import prepare_online, run_experiment

    monkeypatch.setenv("HIHPQ_CIFAR10", str(ARCHIVE))
    cfg = load_config(
        ROOT / "configs/paper/paper_cifar10_ii_32bits.yaml",
        [
            "pretrained=false",  # random VGG-16 weights: offline there are none
            "device=cpu",
            "epochs=2",
            "hierarchy_warmup=1",  # epoch 1 warms up, epoch 2 clusters
            "num_clusters=[3, 2]",
            "batch_size=3",
            "eval_interval=1",
            "topk=5",
        ],
    )
    assert cfg.fidelity() == REFERENCE_OPTIONS
    assert (cfg.backbone, cfg.resolution, cfg.online_augmentation) == ("vgg16", 224, True)
    assert cfg.trainable_layers == 2 and cfg.head_hidden == 0
    prep = prepare_online(cfg, progress=False)
    # a tiny subset of the protocol II splits: every image costs a VGG-16 pass at 224 px
    sp = prep.splits
    train = sp.train[:7]  # 7 = 2 * 3 + 1: drop_last false gives 2 steps (a batch of 1 is skipped)
    val_query = np.setdiff1d(sp.val_query, train)[:3]
    val_database = np.union1d(train, np.setdiff1d(sp.val_database, train)[:3])
    prep.splits = dataclasses.replace(
        sp,
        train=train,
        query=sp.query[:4],
        database=np.union1d(val_query, val_database),
        val_query=val_query,
        val_database=val_database,
    )
    bb = prep.online.backbone
    fc6_before = bb.classifier[0].weight.detach().clone()
    conv_before = bb.features[0].weight.detach().clone()
    res = run_experiment(cfg, tmp_path / "run", progress=False, prepared=prep)
    hist = res["history"]
    assert [h["epoch"] for h in hist] == [1, 2]
    assert hist[0]["prototype"] == 0.0 and hist[1]["prototype"] > 0 and hist[1]["instance"] >= 0
    assert hist[0]["cluster_seconds"] == 0.0 and hist[1]["cluster_seconds"] > 0
    assert all(math.isfinite(h["loss"]) and "val_map" in h for h in hist)
    for key in ("map@5_final", "map@5_val_selected"):
        assert 0.0 <= res[key] <= 1.0
    assert res["n_train"] == 7 and res["n_query"] == 4 and res["n_database"] == 13
    # fc6 trained (shared lr), the convolutions stayed frozen
    assert not torch.equal(bb.classifier[0].weight.detach(), fc6_before)
    assert torch.equal(bb.features[0].weight.detach(), conv_before)
    assert (tmp_path / "run" / "results.json").is_file()


# ---------------------------------------------------------------- the ablation script
def test_fidelity_ablation_rows_and_paired_summary():
    from benchmarks import fidelity_ablation as F

    assert F.row_options("current") == CURRENT_OPTIONS
    ref = F.row_options("reference")
    assert ref == {**REFERENCE_OPTIONS, "backbone_lr": CURRENT_OPTIONS["backbone_lr"]}
    sched = F.row_options("schedule")
    assert (sched["lr_warmup"], sched["drop_last"], sched["prototype_loss"]) == (
        "linspace",
        False,
        "clusters",
    )
    cfg = TrainConfig().with_overrides(F.row_overrides("subspace"))
    assert cfg.subspace == "ambient" and cfg.instance_loss == "masked"
    runs = []
    for row, bump in (("current", 0.0), ("prototype_loss", 0.01)):
        for seed, base in enumerate((0.50, 0.52, 0.51)):
            for geo, off in (("lorentz", 0.004), ("euclidean", 0.0)):
                m = base + bump + off + 0.001 * seed * (geo == "lorentz")
                runs.append(
                    {
                        "row": row,
                        "geometry": geo,
                        "seed": seed,
                        "map": m,
                        "val_map_best": m - 0.01,
                        "map_final": m,
                        "val_selected_epoch": 5,
                        "train_wall_seconds": 1.0,
                        "options": F.row_options(row),
                    }
                )
    summary = {s["row"]: s for s in F.summarize(runs)}
    assert summary["prototype_loss"]["options"] == ["prototype_loss"]
    d = summary["prototype_loss"]["lorentz"]["delta_map"]
    assert abs(d["delta"] - 0.01) < 1e-12 and d["n"] == 3 and d["std"] < 1e-12
    margin = summary["current"]["margin"]
    assert [round(v, 6) for v in margin["per_seed"].values()] == [0.004, 0.005, 0.006]
    assert abs(margin["delta"] - 0.005) < 1e-12 and abs(margin["std"] - 0.001) < 1e-12
    text = F.format_markdown(
        {
            "meta": {"protocol": "II", "bits": 32, "command": "x", "started": "now"},
            "runs": runs,
            "summary": F.summarize(runs),
        }
    )
    assert "| `prototype_loss`: prototype_loss | 3 |" in text and "+0.0100" in text


def test_cpu_defaults_are_the_documented_choice():
    from hihpq_lib.learning.config import CPU_DEFAULT_OPTIONS

    assert TrainConfig().fidelity() == CPU_DEFAULT_OPTIONS
    for f in sorted((ROOT / "configs" / "cpu").glob("*.yaml")):
        assert load_config(f).fidelity() == CPU_DEFAULT_OPTIONS, f.name
    doc = (ROOT / "docs" / "fidelity.md").read_text()
    for key, value in CPU_DEFAULT_OPTIONS.items():
        assert f"`{key}: {json.dumps(value).strip(chr(34))}`" in doc, key
