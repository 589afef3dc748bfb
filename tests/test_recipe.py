"""``recipe: auto``: the candidate recipes screened on validation queries, the winner finished
(``hihpq_lib/app/recipe.py``), and the folder default that ``hihpq train --data FOLDER``
runs without a config."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from hihpq_lib.app import recipe
from hihpq_lib.app.scoring import restore_run
from hihpq_lib.learning.checkpoint import load_checkpoint
from hihpq_lib.learning.config import (
    FOLDER_DEFAULTS,
    ConfigError,
    TrainConfig,
    folder_config,
    load_config,
)
from tests.paths import REPO_ROOT
from tests.test_folders import FAST, image_folder, run_cli

AUTO_YAML = REPO_ROOT / "configs" / "cpu" / "cpu_folder_auto_32bits.yaml"


def test_the_folder_default_is_the_yaml_file():
    assert load_config(AUTO_YAML) == folder_config()
    assert folder_config().recipe == "auto" and folder_config().dataset == "folder"
    assert set(FOLDER_DEFAULTS) <= set(TrainConfig.fields())


def test_recipe_keys_are_validated():
    with pytest.raises(ConfigError, match="recipe must be"):
        TrainConfig(recipe="best")
    with pytest.raises(ConfigError, match="recipe=auto .* tail_blocks=0"):
        TrainConfig(recipe="auto", tail_blocks=1)
    with pytest.raises(ConfigError, match="recipe_screen_epochs must be >= 1"):
        TrainConfig(recipe="auto", recipe_screen_epochs=0)


def test_candidate_configs_keep_the_run_and_change_only_the_recipe():
    base = folder_config(["bits=24", "feat_dim=48", "epochs=7", "seed=3"])  # M = 3
    configs = recipe.candidate_configs(base)
    assert list(configs) == list(recipe.CANDIDATES)
    for name, c in configs.items():
        assert c.recipe == "fixed" and c.feat_dim % c.M == 0
        changed = {k for k, v in c.to_dict().items() if base.to_dict()[k] != v}
        assert changed <= set(recipe.CANDIDATES[name]) | {"recipe", "name"}
        assert (c.epochs, c.seed, c.bits) == (7, 3, 24)
    # 1280 features do not split into 3 blocks: the kept start falls back to 256 (+2) PCs
    assert configs["kept"].feat_dim == 258 and configs["contrastive"].feat_dim == 66
    assert configs["kept"].eval_init and configs["kept"].head_init == "pca"
    assert configs["contrastive"].head_init == "random"
    # the square-root candidate is the kept one with its blocks' norms compressed
    sq, kp = configs["kept_sqrt"].to_dict(), configs["kept"].to_dict()
    assert {k for k in sq if sq[k] != kp[k]} == {"block_norm_power", "name"}
    assert (configs["kept_sqrt"].block_norm_power, configs["kept"].block_norm_power) == (0.5, 1.0)
    # 32 bits, M = 4: the kept start is the features' own four blocks of 320
    kept = recipe.candidate_configs(folder_config(), in_dim=1280)["kept"]
    assert (kept.head_init, kept.feat_dim, kept.sub_dim) == ("raw", 1280, 320)


_DATA = SimpleNamespace(train=torch.zeros(2, 1280))  # what choose_and_train reads of the data


class _FakeTrain:
    """Stands in for ``training.train``: each candidate's validation mAP is given; records
    the calls and writes the files a run folder holds."""

    def __init__(self, val):
        self.val, self.calls, self.done = val, [], {}

    def __call__(self, cfg, data, out, *, resume, progress, stop_after=None):
        name = cfg.name.rsplit("-", 1)[1]
        self.calls.append((name, stop_after, resume))
        start = self.done.get(name, 0) if resume else 0
        end = cfg.epochs if stop_after is None else min(cfg.epochs, start + stop_after)
        self.done[name] = end
        out.mkdir(parents=True, exist_ok=True)
        for f in ("checkpoint.pt", "best.pt", "metrics.jsonl"):
            (out / f).write_text(f"{name} {end}")
        return {"best_val_map": self.val[name], "best_epoch": end, "config": cfg}


def test_the_validation_winner_is_finished_and_its_files_become_the_run(tmp_path, monkeypatch):
    fake = _FakeTrain({"kept": 0.30, "kept_sqrt": 0.33, "contrastive": 0.41})
    monkeypatch.setattr(recipe, "train", fake)
    monkeypatch.setattr(recipe, "_epochs_done", lambda d: 0)
    cfg = folder_config(["epochs=10", "recipe_screen_epochs=3"])
    res, report = recipe.choose_and_train(cfg, _DATA, tmp_path, progress=False)
    assert report["chosen"] == "contrastive" and report["screen_epochs"] == 3
    assert {n: c["val_map_best"] for n, c in report["candidates"].items()} == fake.val
    # each candidate screened for 3 epochs, then only the winner continues to the end
    assert fake.calls == [
        ("kept", 3, False),
        ("kept_sqrt", 3, False),
        ("contrastive", 3, False),
        ("contrastive", None, True),
    ]
    assert (tmp_path / "checkpoint.pt").read_text() == "contrastive 10"
    assert (tmp_path / "candidates" / "kept" / "checkpoint.pt").read_text() == "kept 3"
    assert res["config"].name.endswith("-contrastive")


def test_a_tie_keeps_the_first_candidate(tmp_path, monkeypatch):
    monkeypatch.setattr(
        recipe, "train", _FakeTrain({"kept": 0.5, "kept_sqrt": 0.5, "contrastive": 0.5})
    )
    cfg = folder_config(["epochs=4"])
    _, report = recipe.choose_and_train(cfg, _DATA, tmp_path, progress=False)
    assert report["chosen"] == next(iter(recipe.CANDIDATES))


def test_a_screening_longer_than_the_run_is_the_run(tmp_path, monkeypatch):
    fake = _FakeTrain({"kept": 0.5, "kept_sqrt": 0.4, "contrastive": 0.2})
    monkeypatch.setattr(recipe, "train", fake)
    cfg = folder_config(["epochs=2", "recipe_screen_epochs=4"])
    _, report = recipe.choose_and_train(cfg, _DATA, tmp_path, progress=False)
    assert report["screen_epochs"] == 2 and fake.calls[0] == ("kept", 2, False)


def _auto_args():
    # the tiny-run settings, less those the candidates set
    own = {"feat_dim"}
    out = []
    for item in FAST:
        if item.split("=")[0] not in own:
            out += ["--set", item]
    return out


def test_train_with_no_config_on_a_folder_screens_and_scores_one_run(tmp_path, isolated, capsys):
    """End to end: ``hihpq train --data FOLDER`` (no config) runs the folder default; the
    winner is the candidate with the higher validation mAP; its checkpoint is the run's;
    ``hihpq evaluate`` gives train's numbers; ``--resume`` of a killed screening continues."""
    data = image_folder(tmp_path / "imgs", per_class=12)
    out = tmp_path / "run"
    args = ["train", "--data", data, "--out", out, *_auto_args(), "--set", "epochs=2"]
    args += ["--set", "recipe_screen_epochs=1"]
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    block = res["recipe"]
    assert set(block["candidates"]) == set(recipe.CANDIDATES)
    best = max(c["val_map_best"] for c in block["candidates"].values())
    assert block["candidates"][block["chosen"]]["val_map_best"] == best
    assert res["val_map_best"] >= best  # the winner only went on from its screening
    assert f"recipe                        {block['chosen']}" in stdout
    # the run's checkpoint is the winner's, finished
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck["config"]["head_init"] == recipe.CANDIDATES[block["chosen"]]["head_init"]
    assert ck["epoch"] + 1 == 2
    assert restore_run(out).cfg.recipe == "fixed"
    # evaluate scores the same run
    code, ev, err = run_cli(capsys, "evaluate", out, "--data", data, "--json")
    assert code == 0, err
    ev = json.loads(ev)
    assert ev["map@50_val_selected"] == pytest.approx(res["map@50_val_selected"], abs=1e-6)
    # a resumed run changes nothing that finished
    before = (out / "candidates" / "kept" / "checkpoint.pt").read_bytes()
    code, _, err = run_cli(capsys, *args, "--resume")
    assert code == 0, err
    assert (out / "candidates" / "kept" / "checkpoint.pt").read_bytes() == before
    assert json.loads((out / "results.json").read_text())["recipe"]["chosen"] == block["chosen"]
    # a setting of the run (not of a recipe) changed: the resume is refused before anything runs
    code, _, err = run_cli(capsys, *args, "--resume", "--set", "lr=0.02")
    assert code == 2 and "differs in lr" in err


def test_overwrite_removes_the_candidates(tmp_path, isolated, capsys):
    data = image_folder(tmp_path / "imgs", per_class=12)
    out = tmp_path / "run"
    args = ["train", "--data", data, "--out", out, *_auto_args(), "--set", "epochs=1"]
    assert run_cli(capsys, *args)[0] == 0
    stray = out / "candidates" / "old_candidate"
    stray.mkdir()
    code, _, err = run_cli(capsys, *args, "--set", "seed=1", "--overwrite")
    assert code == 0, err
    assert not stray.exists()


def test_train_without_a_config_needs_an_image_folder(tmp_path, isolated, capsys):
    code, _, err = run_cli(capsys, "train", "--out", tmp_path / "run")
    assert code == 2 and "needs a config" in err and "--data FOLDER" in err
    assert not (tmp_path / "run").exists()


def test_patience_stops_where_validation_stopped_improving_and_resumes_there(
    tmp_path, isolated, capsys, monkeypatch
):
    """``patience: 2``: validation mAP 0.5 at epoch 1, then lower: the run stops after
    epoch 3; a run killed after epoch 2 and resumed stops at the same place."""
    from hihpq_lib.learning import training

    curve = iter([0.5, 0.4, 0.3, 0.2, 0.1, 0.05] * 3)
    monkeypatch.setattr(training, "evaluate_epoch", lambda cfg, model, data: next(curve))
    data = image_folder(tmp_path / "imgs", per_class=8)
    sets = [*_auto_args(), "--set", "feat_dim=16", "--set", "recipe=fixed"]
    sets += ["--set", "epochs=6", "--set", "patience=2"]
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", out, *sets)
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    assert res["val_selected_epoch"] == 1
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] + 1 == 3  # epochs 2 and 3 lost
    # killed after 2 epochs, resumed: it stops after epoch 3 too
    from hihpq_lib.app.prepare import prepare_for

    curve = iter([0.5, 0.4, 0.3, 0.2, 0.1, 0.05] * 3)
    overrides = [a for a in sets if a != "--set"] + [f"data={data}"]
    cfg = folder_config(overrides)
    prep = prepare_for(cfg, progress=False)
    first = training.train(
        cfg, prep.training_data(), tmp_path / "killed", progress=False, stop_after=2
    )
    assert not first["finished"] and len(first["history"]) == 2
    again = training.train(
        cfg, prep.training_data(), tmp_path / "killed", resume=True, progress=False
    )
    assert again["finished"] and again["stopped_early"] and len(again["history"]) == 3
    with pytest.raises(ConfigError, match="patience must be >= 0"):
        TrainConfig(patience=-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_raw_head_start_is_the_centred_features_in_contiguous_blocks(dtype):
    """``head_init: raw``: the head's output is ``s * (x - mean)``, sub-vector ``m`` the
    ``m``-th block of the features (faiss PQ's split), ``s`` giving median block norm 0.1."""
    from hihpq_lib.learning.model import ProjectionHead

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 12, generator=gen, dtype=torch.float64) * 3 + 5
    head = ProjectionHead(12, 12, hidden=8, skip=True).to(dtype)
    head.init_pca_(x.to(dtype), 3, 0.1, raw=True)
    with torch.no_grad():
        out = head(x.to(dtype)).double()
    centred = x - x.mean(0)
    scale = out[:, 0] / centred[:, 0]
    assert torch.allclose(out, scale.mean() * centred, rtol=1e-5, atol=1e-6)
    blocks = (scale.mean() * centred).reshape(200, 3, 4).norm(dim=-1)
    assert blocks.median().item() == pytest.approx(0.1, rel=1e-4)
    with pytest.raises(ValueError, match="feat_dim must equal"):
        ProjectionHead(12, 8, hidden=8, skip=True).init_pca_(x, 2, raw=True)


def test_a_screening_killed_midway_resumes_without_redoing_finished_candidates(
    tmp_path, monkeypatch
):
    class Killed(RuntimeError):
        pass

    fake = _FakeTrain({"kept": 0.5, "kept_sqrt": 0.55, "contrastive": 0.6})
    calls = []

    def dies_on_contrastive(cfg, data, out, **kw):
        if cfg.name.endswith("-contrastive") and not calls:
            calls.append("killed")
            raise Killed
        return fake(cfg, data, out, **kw)

    monkeypatch.setattr(recipe, "train", dies_on_contrastive)
    monkeypatch.setattr(recipe, "_epochs_done", lambda d: fake.done.get(d.name, 0))
    cfg = folder_config(["epochs=6", "recipe_screen_epochs=2"])
    with pytest.raises(Killed):
        recipe.choose_and_train(cfg, _DATA, tmp_path, progress=False)
    _, report = recipe.choose_and_train(cfg, _DATA, tmp_path, resume=True, progress=False)
    # kept and kept_sqrt had finished their 2 screening epochs: resumed with nothing left
    assert fake.calls[:2] == [("kept", 2, False), ("kept_sqrt", 2, False)]
    assert fake.calls[2:4] == [("kept", 0, True), ("kept_sqrt", 0, True)]
    assert fake.calls[4] == ("contrastive", 2, True) and report["chosen"] == "contrastive"
    assert fake.done == {"kept": 2, "kept_sqrt": 2, "contrastive": 6}
