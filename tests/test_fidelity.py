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
from hihpq_lib.learning.schedule import LRSchedule, steps_per_epoch
from hihpq_lib.learning.training import train
from hihpq_lib.learning.views import FeatureSplit, TrainingData
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

    from hihpq_lib.app.pipeline import run_experiment
    from hihpq_lib.app.prepare import prepare_online

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


# ------------------------------------------------- frozen backbone: dropout in train mode
class _FrozenNet(torch.nn.Module):
    """A tiny frozen backbone with BatchNorm and Dropout, ImageNet statistics."""

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, out=64):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3),
            torch.nn.BatchNorm2d(4),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(4, out),
            torch.nn.Dropout(0.5),
        )
        self.body[1].running_mean.fill_(0.3)  # not the default, so an update would show
        self.requires_grad_(False)

    def forward(self, x):
        return self.body(x)


def _eval_views(bb, images, rows, seed_gen, resolution):
    """Brute force: the two views ``OnlineViews.sample`` draws, through ``bb`` in eval mode."""
    from hihpq_lib.data.transforms import augment_batch

    seeds = torch.randint(0, 2**62, (2,), generator=seed_gen).tolist()
    bb.eval()
    with torch.no_grad():
        return [
            bb(augment_batch(images[rows], resolution, s, indices=rows, mean=bb.mean, std=bb.std))
            for s in seeds
        ]


def test_frozen_backbone_dropout_switches_only_the_dropout_layers():
    from hihpq_lib.learning.views import OnlineViews

    images = np.random.default_rng(0).integers(0, 256, (6, 20, 20, 3), dtype=np.uint8)
    rows = torch.tensor([4, 1, 3])
    bb = _FrozenNet()
    bn, drop = bb.body[1], bb.body[5]
    running = bn.running_mean.clone()
    views = OnlineViews(bb, images, 16, frozen_dropout=True)
    want = _eval_views(bb, images, rows.numpy(), torch.Generator().manual_seed(5), 16)
    x1, x2 = views.sample(rows, torch.Generator().manual_seed(5), training=True)
    assert drop.training and not bn.training and not bb.body[0].training
    assert torch.equal(bn.running_mean, running)  # BatchNorm: running statistics untouched
    for got, ref in zip((x1, x2), want):
        kept = got != 0
        assert 0.2 < float(kept.float().mean()) < 0.8  # p = 0.5 of the 3 x 64 outputs dropped
        torch.testing.assert_close(got[kept], 2 * ref[kept])  # the rest scaled by 1 / (1 - p)
    # eval-mode epochs (after the first clustering with eval_mode_after_clustering): off
    y1, y2 = views.sample(rows, torch.Generator().manual_seed(5), training=False)
    assert not drop.training
    torch.testing.assert_close(y1, want[0]) and torch.testing.assert_close(y2, want[1])
    # our earlier behaviour: a frozen backbone always in eval mode
    views = OnlineViews(bb, images, 16)
    z1, _ = views.sample(rows, torch.Generator().manual_seed(5), training=True)
    assert not drop.training and not bn.training
    torch.testing.assert_close(z1, want[0])
    # a backbone with trainable layers follows the model's mode entirely, either way
    bb.body[4].requires_grad_(True)
    for flag in (False, True):
        OnlineViews(bb, images, 16, frozen_dropout=flag).sample(
            rows, torch.Generator().manual_seed(5), training=True
        )
        assert drop.training and bn.training


def test_online_encoder_passes_frozen_backbone_dropout_to_vgg16_views():
    from hihpq_lib.app.prepare import OnlineEncoder

    base = [
        "backbone=vgg16",
        "pretrained=false",
        "online_augmentation=true",
        "trainable_layers=0",
        "resolution=32",
    ]
    assert OnlineEncoder(TrainConfig().with_overrides(base)).views.frozen_dropout is False
    enc = OnlineEncoder(TrainConfig().with_overrides(base + ["frozen_backbone_dropout=true"]))
    views, vgg = enc.views, enc.views.backbone
    assert views.frozen_dropout and not views.trainable_parameters()
    # VGG-16's classifier keeps the reference's two Dropout layers (after fc6 and fc7)
    drops = [m for m in vgg.classifier if isinstance(m, torch.nn.Dropout)]
    assert [vgg.classifier[2], vgg.classifier[5]] == drops and all(m.p == 0.5 for m in drops)
    images = np.random.default_rng(1).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    views.images = images
    views.sample(torch.tensor([0, 1]), torch.Generator().manual_seed(0), training=True)
    assert all(m.training for m in drops) and not vgg.features.training
    views.sample(torch.tensor([0, 1]), torch.Generator().manual_seed(0), training=False)
    assert not any(m.training for m in drops)


# ------------------------------------------------------ image geometry (Flickr, NUS-WIDE)
def _save(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)  # PNG: lossless, so decoded pixels are exact
    return str(path)


@pytest.mark.parametrize("wh", [(333, 250), (250, 333), (257, 256), (500, 375), (100, 80)])
def test_reference_geometry_reads_resize256_centercrop224(tmp_path, wh):
    from PIL import Image
    from torchvision import transforms as T

    from hihpq_lib import data as D

    w, h = wh  # 333 x 250: torchvision truncates the long side (340.99 -> 340), not rounds
    path = _save(tmp_path / "a.png", np.random.default_rng(w).integers(0, 256, (h, w, 3), np.uint8))
    assert D.reference_read_size(224) == (224, 256)
    got = D.read_image_file(path, size=(224, 256))
    ref = T.Compose([T.Resize(256), T.CenterCrop(224)])(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(got, np.asarray(ref))
    # the index metadata stores the read size as JSON: the list reads the same
    np.testing.assert_array_equal(D.read_image_file(path, size=json.loads("[224, 256]")), got)
    ds = D.ImageDataset([path], np.zeros(1, np.int64), ["x"])
    np.testing.assert_array_equal(D.read_images(ds, [0], size=(224, 256))[0], got)
    np.testing.assert_array_equal(D.LazyImages(ds, [0], size=(224, 256))[0:1][0], got)
    enc = D.EncodedImages(ds, [0], size=(224, 256))
    np.testing.assert_array_equal(enc[0:1][0], got)
    np.testing.assert_array_equal(enc.originals([0])[0], np.asarray(Image.open(path)))
    with pytest.raises(ValueError, match="resize >= crop"):
        D.read_image_file(path, size=(256, 224))


class _ViewStats(torch.nn.Module):
    """A 'backbone' that returns each view's pixel standard deviation."""

    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    def forward(self, x):
        return x.flatten(1).std(dim=1, keepdim=True)


def _edge_image():
    """400 x 300, white but for a black band at the left 10%: outside the centre square."""
    img = np.full((300, 400, 3), 255, np.uint8)
    img[:, :40] = 0
    return img


def test_reference_geometry_views_crop_the_whole_image(tmp_path):
    from hihpq_lib import data as D
    from hihpq_lib.learning.views import OnlineViews

    paths = [_save(tmp_path / f"{i}.png", _edge_image()) for i in range(8)]
    ds = D.ImageDataset(paths, np.zeros(8, np.int64), ["x"])
    rows = torch.arange(8)
    # ours: the 224 px centre square holds none of the band; every view is uniform
    square = D.read_images(ds, size=224)
    assert (square == 255).all()
    s1, s2 = OnlineViews(_ViewStats(), square, 32).sample(rows, torch.Generator().manual_seed(0))
    assert float(torch.cat([s1, s2]).max()) < 1e-3
    # the reference: RandomResizedCrop(scale 0.5-1) of the whole 400 x 300 image
    enc = D.EncodedImages(ds, size=D.reference_read_size(224))
    assert [im.shape for im in enc.originals([0, 7])] == [(300, 400, 3)] * 2
    r1, r2 = OnlineViews(_ViewStats(), enc, 32).sample(rows, torch.Generator().manual_seed(0))
    stds = torch.cat([r1, r2]).flatten()
    assert int((stds > 0.1).sum()) >= 2  # some views reach the band
    # and its clean images are Resize(256) + CenterCrop(224): the band is outside them too
    assert enc.shape == (8, 224, 224, 3) and (enc[0:8] == 255).all()


def test_reference_geometry_reads_database_and_query_files_alike(tmp_path):
    from hihpq_lib import data as D
    from hihpq_lib.app.prepare import OnlineEncoder, PreparedOnline
    from hihpq_lib.learning.views import OnlineViews

    rng = np.random.default_rng(3)
    paths = [
        _save(tmp_path / f"{i}.png", rng.integers(0, 256, (260 + 7 * i, 300, 3), np.uint8))
        for i in range(12)
    ]
    ds = D.ImageDataset(paths, np.arange(12) % 2, ["a", "b"])
    cifar = D.ImageDataset(np.zeros((2, 32, 32, 3), np.uint8), np.array([0, 1]), ["a", "b"])
    sq = TrainConfig().with_overrides(["online_augmentation=true", "resolution=224"])
    ref = sq.with_overrides(["image_geometry=reference"])
    assert OnlineEncoder.read_size_for(ref, ds) == (224, 256)
    assert OnlineEncoder.read_size_for(sq, ds) == 224  # our earlier behaviour, unchanged
    assert OnlineEncoder.read_size_for(ref, cifar) is None  # in memory: as stored
    splits = D.Splits(
        train=np.arange(0, 6),
        query=np.arange(10, 12),
        database=np.arange(0, 10),
        val_query=np.arange(6, 8),
        val_database=np.r_[0:6, 8:10],
    )
    prep = PreparedOnline(ref, ds, splits, OnlineViews(_ViewStats(), None, 224))
    train, query = prep.images("train", lazy=False), prep.images("query")
    assert isinstance(train, D.EncodedImages) and isinstance(query, D.LazyImages)
    assert train.originals([0])[0].shape == (260, 300, 3)  # whole images for the views
    # a query file read at the index metadata's read size (JSON) matches the database's read
    size = json.loads(json.dumps(prep.read_size()))
    for i, k in ((0, 10), (1, 11)):
        np.testing.assert_array_equal(D.read_image_file(paths[k], size=size), query[i : i + 1][0])
    np.testing.assert_array_equal(train[0:2], D.read_images(ds, [0, 1], size=(224, 256)))
    prep_sq = PreparedOnline(sq, ds, splits, OnlineViews(_ViewStats(), None, 224))
    assert prep_sq.images("train", lazy=False).shape == (6, 224, 224, 3)


# --------------------------------------------------------------- NUS-WIDE training list
def test_train_list_reads_the_reference_nuswide_training_file(tmp_path):
    from hihpq_lib.app.datasets import load_data

    root = tmp_path / "nus"
    root.mkdir()

    def write(name, ids):
        rows = [
            f"img/{i:03d}.jpg " + " ".join(str(int((i + j) % 3 == 0)) for j in range(4))
            for i in ids
        ]
        (root / name).write_text("\n".join(rows) + "\n")

    write("database.txt", range(0, 20))
    write("test.txt", range(20, 25))
    write("train.txt", range(0, 10))
    write("train_10500.txt", [3, 7, 11, 12])
    cfg = TrainConfig().with_overrides(["dataset=nuswide", f"data={root}"])
    assert cfg.train_list == "train"
    ds = load_data(cfg, progress=False)
    assert [Path(ds.images[i]).name for i in ds.predefined["train"]] == [
        f"{i:03d}.jpg" for i in range(10)
    ]
    ds = load_data(cfg.with_overrides(["train_list=train_10500"]), progress=False)
    assert [Path(ds.images[i]).name for i in ds.predefined["train"]] == [
        "003.jpg",
        "007.jpg",
        "011.jpg",
        "012.jpg",
    ]
    with pytest.raises(ConfigError, match="train_list must be"):
        cfg.with_overrides(["train_list=train_500"])
    for f in sorted((ROOT / "configs" / "paper").glob("paper_nuswide_*.yaml")):
        assert load_config(f).train_list == "train_10500", f.name


# ---------------------------------------------------------------------------- the seed
def test_paper_seed_repeats_the_reference_split_permutations():
    from hihpq_lib import data as D
    from hihpq_lib.app.datasets import make_run_splits

    files = sorted((ROOT / "configs" / "paper").glob("*.yaml"))
    assert [load_config(f).seed for f in files] == [2021] * 12  # the reference's --seed default
    # Flickr25K: the reference seeds numpy's global RNG, then draws one permutation
    n = 2100
    labels = (np.random.default_rng(0).random((n, 5)) < 0.3).astype(np.uint8)
    ds = D.ImageDataset([f"{i}.jpg" for i in range(n)], labels, list("abcde"), name="flickr25k")
    cfg = load_config(ROOT / "configs/paper/paper_flickr25k_32bits.yaml")
    s = make_run_splits(cfg, ds)
    state = np.random.get_state()  # noqa: NPY002
    try:
        np.random.seed(2021)  # noqa: NPY002 (the reference uses the global RNG)
        perm = np.random.permutation(n)  # noqa: NPY002
    finally:
        np.random.set_state(state)  # noqa: NPY002
    np.testing.assert_array_equal(s.query, perm[:2000])
    np.testing.assert_array_equal(s.database, perm[2000:])
    np.testing.assert_array_equal(s.train, perm[2000:7000])
    # CIFAR-10: one permutation per class, in class order, from the same seeded stream
    lab = np.repeat(np.arange(3), 1600)[np.random.default_rng(1).permutation(4800)]
    got = D.per_class_splits(lab, n_query_per_class=1000, n_train_per_class=500, seed=2021)
    rs = np.random.RandomState(2021)
    q, t = [], []
    for c in range(3):
        members = np.flatnonzero(lab == c)
        p = members[rs.permutation(members.size)]
        q.append(p[:1000])
        t.append(p[1000:1500])
    np.testing.assert_array_equal(got.query, np.concatenate(q))
    np.testing.assert_array_equal(got.train, np.concatenate(t))


# ----------------------------------------------------------------------------- the docs
def test_fidelity_doc_has_a_row_per_option_and_the_corrected_claims():
    doc = (ROOT / "docs" / "fidelity.md").read_text()
    for key, (ref, _, _) in FIDELITY_OPTIONS.items():
        assert f"`{key}: {json.dumps(ref).strip(chr(34))} /" in doc, key
    for setting in ("seed: 2021", "train_list: train_10500"):
        assert f"`{setting}`" in doc, setting
    row = next(line for line in doc.splitlines() if line.startswith("| `--assymetric_loss`"))
    assert "both inputs are soft-quantized" in row
    readme = (ROOT / "README.md").read_text()
    assert "One deliberate difference remains" not in readme


@pytest.mark.timeout(300)
def test_reference_geometry_and_dropout_run_end_to_end_on_non_square_files(tmp_path, monkeypatch):
    """The online path on an image folder of non-square files, with both options on:
    training views from the whole images, clean images Resize + CenterCrop, and query
    files encoded exactly as the database (the index's ``read_size``)."""
    from hihpq_lib.app import pipeline
    from hihpq_lib.app.prepare import prepare_online
    from hihpq_lib.app.scoring import encode_query_files, index_metadata, restore_run

    for var in ("DATA_DIR", "CACHE_DIR", "RUNS_DIR"):
        monkeypatch.setenv(f"HIHPQ_{var}", str(tmp_path / var.lower()))
    rng = np.random.default_rng(0)
    for root, n in (("train", 10), ("val", 3)):
        for c in range(3):
            for i in range(n):
                noise = rng.integers(-20, 20, (30 + 3 * i, 44, 3))
                arr = np.clip(np.array([c * 80, 255 - c * 60, 120]) + noise, 0, 255)
                _save(tmp_path / root / f"c{c}" / f"{i:02d}.png", arr.astype(np.uint8))
    cfg = load_config(
        ROOT / "configs/cpu/cpu_folder_32bits.yaml",
        [
            f"data={tmp_path / 'train'}",
            f"query_data={tmp_path / 'val'}",
            "online_augmentation=true",
            "image_geometry=reference",
            "frozen_backbone_dropout=true",
            "engine=torch",
            "device=cpu",
            "resolution=32",
            "epochs=2",
            "hierarchy_warmup=1",
            "batch_size=8",
            "K=16",
            "bits=8",
            "feat_dim=16",
            "head_hidden=16",
            "topk=20",
        ],
    )
    prep = prepare_online(cfg, progress=False)
    assert prep.read_size() == (32, 37)
    res = pipeline.run_experiment(cfg, tmp_path / "run", progress=False, prepared=prep)
    assert 0.0 <= res["map@20_val_selected"] <= 1.0
    assert index_metadata(tmp_path / "run")["read_size"] == [32, 37]
    db = np.asarray(prep.splits.database)[:4]
    paths = [prep.dataset.images[i] for i in db]
    queried = encode_query_files(restore_run(tmp_path / "run"), paths)
    stored = prep.online.clean(_lazy(prep, db))
    torch.testing.assert_close(queried, stored)


def _lazy(prep, indices):
    from hihpq_lib import data as D

    return D.LazyImages(prep.dataset, indices, size=prep.read_size())


#: Where a CPU profile's value of a setting differs from its cell's reference script, and
#: why (docs/fidelity.md, "settings per code length"): measured on validation, or not
#: measured.
PROFILE_DIFFERS = {
    ("ii", 16, "instance_weight"): "validation 0.6104 against 0.6028 with the reference's 0.1",
    ("ii", 16, "neighbour_weight"): "validation 0.6159 against 0.6104 without the term",
    ("i", 16, "instance_weight"): "validation 0.6475 against 0.6249 with 0.1 and no term",
    ("i", 16, "neighbour_weight"): "validation 0.6475 against 0.6249 with 0.1 and no term",
    ("i", 32, "instance_weight"): "validation 0.6615 against 0.6400 with 0.1 and no term",
    ("i", 32, "neighbour_weight"): "validation 0.6615 against 0.6400 with 0.1 and no term",
    ("i", 32, "softmax_temp"): "validation 0.6400 against 0.6361 with the reference's 5 / 0.6",
    ("i", 32, "clip_r"): "validation 0.6400 against 0.6361 with the reference's 5 / 0.6",
    ("ii", 64, "feat_dim"): "validation 0.6253 against 0.6199 with the reference's 64",
    ("i", 64, "feat_dim"): "follows protocol II / 64 bits",
}

#: The settings compared: those the reference changes with the cell, and the loss weights.
PER_CELL_KEYS = (
    "softmax_temp",
    "clip_r",
    "feat_dim",
    "instance_weight",
    "proto_weight",
    "neighbour_weight",
)


@pytest.mark.parametrize("protocol", ["i", "ii"])
@pytest.mark.parametrize("bits", [16, 32, 64])
def test_cpu_profiles_take_the_reference_settings_per_cell_or_say_why_not(protocol, bits):
    """The reference's scripts change the attention temperature, the clip radius and the
    head width with the code length; a CPU profile takes its cell's values (and the
    reference's loss weights) except where ``PROFILE_DIFFERS`` names the measurement that
    chose its own."""
    cpu = load_config(ROOT / f"configs/cpu/cpu_cifar10_{protocol}_{bits}bits.yaml")
    ref = load_config(ROOT / f"configs/paper/paper_cifar10_{protocol}_{bits}bits.yaml")
    for key in PER_CELL_KEYS:
        differs = (protocol, bits, key) in PROFILE_DIFFERS
        assert (getattr(cpu, key) != getattr(ref, key)) == differs, (protocol, bits, key)
