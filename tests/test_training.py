"""Trainer: learning on synthetic features, exact resume, checkpoints, configs."""

import copy
import json

import pytest
import torch

from hihpq_lib.learning.checkpoint import load_checkpoint, load_model
from hihpq_lib.learning.config import ConfigError, TrainConfig, load_config
from hihpq_lib.learning.schedule import LRSchedule
from hihpq_lib.learning.training import train
from hihpq_lib.learning.views import FeatureSplit, TrainingData


def synthetic_data(seed=0, n_train=400, n_classes=8, dim=32, views=3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, dim, generator=g) * 2

    def sample(n):
        lab = torch.randint(0, n_classes, (n,), generator=g)
        return centres[lab] + torch.randn(n, dim, generator=g), lab

    tr, _ = sample(n_train)
    bank = torch.stack([tr + 0.5 * torch.randn(tr.shape, generator=g) for _ in range(views)], 1)
    vq, vql = sample(80)
    vd, vdl = sample(400)
    return TrainingData(bank.half(), tr, FeatureSplit(vq, vql), FeatureSplit(vd, vdl))


def small_config(**kw):
    items = [
        "epochs=4",
        "hierarchy_warmup=1",
        "num_clusters=[16, 8]",
        "topk=50",
        "K=16",
        "bits=8",
        "feat_dim=16",
        "batch_size=64",
        "head_hidden=32",
        "lr=0.05",
    ] + [f"{k}={v}" for k, v in kw.items()]
    return TrainConfig().with_overrides(items)


def test_training_learns_and_writes_run_files(tmp_path):
    data = synthetic_data()
    res = train(small_config(), data, tmp_path, progress=False)
    hist = res["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    # the hierarchy losses switch on after the warm-up epoch
    assert hist[0]["prototype"] == 0.0 and hist[1]["prototype"] > 0.0
    assert all(0.0 <= h["val_map"] <= 1.0 for h in hist)
    assert max(h["val_map"] for h in hist) > 0.5  # 8 well-separated classes
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ck["epoch"] == 3 and ck["best_epoch"] == res["best_epoch"]
    assert res["best_val_map"] == max(h["val_map"] for h in hist)
    model, cfg = load_model(tmp_path, "best")
    assert cfg.bits == 8 and model.quantizer.M == 2  # 8 bits = 2 x log2(16)


@pytest.mark.parametrize("threads", [1, 2])
def test_resume_gives_the_same_metrics_as_an_uninterrupted_run(tmp_path, threads):
    # threads=1 failed before numba's pool stopped resetting torch's OpenMP thread count
    cfg = small_config(threads=threads)
    full = train(cfg, synthetic_data(), tmp_path / "full", progress=False)
    part = train(cfg, synthetic_data(), tmp_path / "killed", progress=False, stop_after=2)
    assert not part["finished"] and len(part["history"]) == 2
    resumed = train(cfg, synthetic_data(), tmp_path / "killed", progress=False, resume=True)
    assert resumed["finished"]
    strip = [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in full["history"]]
    got = [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in resumed["history"]]
    assert got == strip
    for a, b in zip(full["model"].state_dict().values(), resumed["model"].state_dict().values()):
        assert torch.equal(a, b)


def test_resume_skips_the_data_start_and_still_ends_like_an_uninterrupted_run(
    tmp_path, monkeypatch
):
    from hihpq_lib.learning.model import ProjectionHead
    from hihpq_lib.quantization.quantizer import ProductQuantizer

    cfg = small_config(head_init="pca", codebook_init="kmeans", threads=1)
    full = train(cfg, synthetic_data(), tmp_path / "full", progress=False)
    train(cfg, synthetic_data(), tmp_path / "killed", progress=False, stop_after=2)
    calls = []
    for cls, name in ((ProjectionHead, "init_pca_"), (ProductQuantizer, "init_kmeans")):
        original = getattr(cls, name)

        def counted(self, *a, _original=original, _name=name, **kw):
            calls.append(_name)
            return _original(self, *a, **kw)

        monkeypatch.setattr(cls, name, counted)
    resumed = train(cfg, synthetic_data(), tmp_path / "killed", progress=False, resume=True)
    assert calls == []  # the checkpoint sets what the PCA and k-means starts would
    strip = [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in full["history"]]
    got = [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in resumed["history"]]
    assert got == strip
    for a, b in zip(full["model"].state_dict().values(), resumed["model"].state_dict().values()):
        assert torch.equal(a, b)
    # a fresh run does call them (the counter sees the starts it should)
    train(cfg, synthetic_data(), tmp_path / "fresh", progress=False, stop_after=1)
    assert calls == ["init_pca_", "init_kmeans"]


def test_resume_refuses_another_config(tmp_path):
    train(small_config(), synthetic_data(), tmp_path, progress=False, stop_after=1)
    with pytest.raises(ValueError, match="another configuration"):
        train(small_config(lr=0.02), synthetic_data(), tmp_path, progress=False, resume=True)


def test_resume_accepts_a_checkpoint_saved_before_a_new_optional_key(tmp_path):
    """A key added to TrainConfig later with default None (view_budget) is missing from
    older checkpoints: resuming them works, and a real difference is still refused."""
    cfg = small_config()
    train(cfg, synthetic_data(), tmp_path, progress=False, stop_after=1)
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ck["config"].pop("view_budget") is None
    torch.save(ck, tmp_path / "checkpoint.pt")
    res = train(cfg, synthetic_data(), tmp_path, progress=False, resume=True)
    assert res["finished"] and len(res["history"]) == cfg.epochs
    train(cfg, synthetic_data(), tmp_path / "b", progress=False, stop_after=1)
    with pytest.raises(ValueError, match="another configuration"):
        train(
            small_config(view_budget=100),
            synthetic_data(),
            tmp_path / "b",
            resume=True,
            progress=False,
        )


def test_euclidean_ablation_trains(tmp_path):
    res = train(small_config(geometry="euclidean"), synthetic_data(), tmp_path, progress=False)
    assert res["finished"] and res["best_val_map"] > 0.5


def test_euclidean_records_no_curvature_and_lorentz_does(tmp_path):
    cfg = small_config(geometry="euclidean", epochs=1)
    euc = train(cfg, synthetic_data(), tmp_path / "e", progress=False)
    lor = train(small_config(epochs=1), synthetic_data(), tmp_path / "l", progress=False)
    assert "curvature" not in euc["history"][0]
    assert lor["history"][0]["curvature"] == lor["model"].space.summary()["curvature"]


class _TrainableOnline:
    """A duck-typed OnlineViews whose 'backbone' trains, so its clean features move."""

    def __init__(self, images):
        self.images = images
        self.backbone = torch.nn.Linear(images.shape[1], 16)

    def trainable_parameters(self):
        return list(self.backbone.parameters())

    def sample(self, idx, gen, training=True):
        x = self.images[idx]
        noise = [0.3 * torch.randn(x.shape, generator=gen) for _ in range(2)]
        return self.backbone(x + noise[0]), self.backbone(x + noise[1])

    @torch.no_grad()
    def clean(self, images):
        return self.backbone(images)


def _snapshot(data):
    """The objects and values of everything in ``data`` that train() reads."""
    splits = (data.val_query, data.val_database)
    tensors = [data.train, *(t for s in splits for t in (s.feats, s.labels))]
    if data.bank is not None:
        tensors.append(data.bank)
    return [id(t) for t in tensors], [t.clone() for t in tensors], [id(s) for s in splits]


@pytest.mark.parametrize("path", ["bank", "online"])
def test_train_does_not_modify_its_config_or_data(tmp_path, path):
    cfg = small_config(epochs=2, hierarchy_warmup=1, num_clusters=[6, 3])
    data = synthetic_data(n_train=120)
    if path == "online":
        g = torch.Generator().manual_seed(1)
        labels = torch.randint(0, 4, (120,), generator=g)
        images = torch.randn(120, 32, generator=g) + 3 * torch.eye(32)[labels]
        online = _TrainableOnline(images)
        feats = online.clean(images)
        vq, vd = FeatureSplit(feats[:30], labels[:30]), FeatureSplit(feats, labels)
        data = TrainingData(None, feats, vq, vd, online=online, val_images=(images[:30], images))
        cfg = cfg.with_overrides(["online_augmentation=true"])
    cfg_before = copy.deepcopy(cfg)
    ids, values, split_ids = _snapshot(data)
    res = train(cfg, data, tmp_path, progress=False)
    assert res["finished"]
    assert cfg == cfg_before and cfg.to_dict() == cfg_before.to_dict()
    ids_after, values_after, split_ids_after = _snapshot(data)
    assert ids_after == ids and split_ids_after == split_ids
    assert all(torch.equal(a, b) for a, b in zip(values, values_after))
    if path == "online":  # the backbone trained, so fresh features would differ
        assert not torch.equal(data.online.clean(data.online.images), data.train)


def test_lr_schedule_shape():
    s = LRSchedule(0.1, 0.0, 0.001, total_steps=100, warmup_steps=10)
    lrs = [s(i) for i in range(100)]
    assert lrs[0] == 0.0 and abs(lrs[10] - 0.1) < 1e-12
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] > 0.001


def test_training_data_validation():
    data = synthetic_data()
    with pytest.raises(ValueError, match="bank must be"):
        TrainingData(data.bank[:, :1], data.train, data.val_query, data.val_database)
    with pytest.raises(ValueError, match="disagree"):
        TrainingData(data.bank[:10], data.train, data.val_query, data.val_database)
    with pytest.raises(ValueError, match="empty split"):
        FeatureSplit(torch.zeros(0, 4), torch.zeros(0))


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'epoch'.*did you mean 'epochs'"):
        TrainConfig().with_overrides(["epoch=3"])
    with pytest.raises(ConfigError, match="multiple of 8"):
        TrainConfig().with_overrides(["bits=20"])
    with pytest.raises(ConfigError, match="not divisible by M=4"):
        TrainConfig().with_overrides(["feat_dim=30"])
    with pytest.raises(ConfigError, match="not a valid"):
        TrainConfig().with_overrides(["epochs=three"])
    with pytest.raises(ConfigError, match="protocol must be"):
        TrainConfig().with_overrides(["protocol=III"])
    with pytest.raises(ConfigError, match="attention must be one of"):
        TrainConfig().with_overrides(["attention=cosine"])
    geo = TrainConfig().with_overrides(["attention=sqgeodesic"])
    from hihpq_lib.learning.model import build_model

    assert build_model(geo, 16).quantizer.attention == "sqgeodesic"
    assert build_model(TrainConfig(), 16).quantizer.attention == "sqdist"
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 0.1\nwarmup: 3\n")
    with pytest.raises(ConfigError, match="unknown config key 'warmup'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_every_shipped_config_loads():
    from pathlib import Path

    files = sorted((Path(__file__).parent.parent / "configs").glob("*/*.yaml"))
    # 12 reference scripts + 6 CIFAR-10 CPU profiles + 6 long (three-Lite) ones + 2 folder ones
    assert len(files) == 26
    for f in files:
        cfg = load_config(f)
        assert cfg.bits == cfg.M * 8  # K = 256
    paper = load_config(Path(__file__).parent.parent / "configs/paper/paper_cifar10_ii_32bits.yaml")
    assert (paper.backbone, paper.resolution, paper.online_augmentation) == ("vgg16", 224, True)
