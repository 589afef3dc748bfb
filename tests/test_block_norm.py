"""``block_norm_power``: each centred block of the features at ``|block| ** power`` before
the head (:class:`~hihpq_lib.learning.model.BlockNorm`), the recipe's ``kept_sqrt``
candidate. Pinned to an independent NumPy computation in float32 and float64, finite
gradients at a block equal to the mean, the raw start through it equal to the study's
transform (``benchmarks/untrained_start.py``), and the mean saved with the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.untrained_start import _block_normalised
from hihpq_lib.learning.checkpoint import load_model
from hihpq_lib.learning.config import ConfigError, TrainConfig
from hihpq_lib.learning.model import BlockNorm
from hihpq_lib.learning.training import init_model, train
from tests.test_training import small_config, synthetic_data


def _reference(x: np.ndarray, mean: np.ndarray, blocks: int, power: float) -> np.ndarray:
    """Block by block in float64, one loop per row and block."""
    out = np.empty_like(x, dtype=np.float64)
    width = x.shape[1] // blocks
    for i in range(len(x)):
        for b in range(blocks):
            v = (
                x[i, b * width : (b + 1) * width].astype(np.float64)
                - mean[b * width : (b + 1) * width]
            )
            n = np.sqrt((v * v).sum())
            out[i, b * width : (b + 1) * width] = v * max(n, BlockNorm.eps) ** (power - 1)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("power", [0.0, 0.5, 0.25])
@pytest.mark.parametrize("blocks", [1, 4])
def test_block_norm_is_the_loop_in_both_precisions(dtype, power, blocks):
    g = torch.Generator().manual_seed(0)
    train_x = torch.randn(50, 12, generator=g, dtype=torch.float64) * 3 + 1
    x = torch.randn(7, 12, generator=g, dtype=torch.float64) * 3 + 1
    bn = BlockNorm(12, blocks, power).to(dtype).fit_(train_x)
    got = bn(x.to(dtype))
    want = _reference(x.numpy(), train_x.numpy().mean(0), blocks, power)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert got.dtype == dtype
    np.testing.assert_allclose(got.double().numpy(), want, rtol=tol, atol=tol)
    # each block's norm is the centred block's norm to the power
    c = (x - train_x.mean(0)).reshape(7, blocks, -1).norm(dim=-1)
    n = got.double().reshape(7, blocks, -1).norm(dim=-1)
    np.testing.assert_allclose(n.numpy(), (c**power).numpy(), rtol=10 * tol)


@pytest.mark.parametrize("power", [0.0, 0.5])
def test_block_norm_gradients_are_finite_where_a_block_is_the_mean(power):
    bn = BlockNorm(6, 2, power).fit_(torch.ones(3, 6))
    x = torch.ones(2, 6, dtype=torch.float32)  # both blocks of row 0 at the mean
    x[1, :3] += 1e-7  # a block barely off it
    x.requires_grad_(True)
    out = bn(x)
    (out.sum() + out.pow(2).sum()).backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert float(out[0].detach().abs().max()) == 0.0


def test_the_raw_start_through_it_is_the_study_transform():
    """``head_init: raw`` with power 0: the head's output is the study's block-normalised
    features (centred again, scaled to the median norm): the library setting measures what
    benchmarks/untrained_start.py measured."""
    data = synthetic_data(dim=32)
    cfg = small_config(head_init="raw", feat_dim=32, bits=16, K=16, head_hidden=0)
    cfg = cfg.with_overrides(["block_norm_power=0", "pca_norm=0.3"])  # M = 4 blocks of 8
    model = init_model(cfg, data, torch.device("cpu")).eval()
    x = data.train.double().numpy()
    study = _block_normalised(x.mean(0), cfg.M)
    z = study(x).astype(np.float64)
    want = z - z.mean(0)
    want *= 0.3 / np.median(np.linalg.norm(want.reshape(len(z), cfg.M, -1), axis=-1))
    with torch.no_grad():
        got = model.project(data.train.float()).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=5e-5)  # float32 model


def test_power_one_builds_no_module_and_changes_nothing():
    data = synthetic_data()
    plain = init_model(small_config(head_init="pca"), data, torch.device("cpu"))
    assert plain.block_norm is None
    sq = init_model(small_config(head_init="pca", block_norm_power=0.5), data, torch.device("cpu"))
    assert sq.block_norm is not None and sq.block_norm.blocks == sq.space.M
    with torch.no_grad():
        assert not torch.allclose(plain.project(data.train), sq.project(data.train))


def test_the_mean_is_saved_with_the_model(tmp_path):
    """The validation-selected untrained model, loaded back, is the fresh one: the
    BlockNorm's mean (a buffer fitted on the training features) travels in the checkpoint."""
    data = synthetic_data()
    cfg = small_config(
        head_init="pca", eval_init=True, block_norm_power=0.5, epochs=1, lr=1e-9, start_lr=1e-9
    )
    res = train(cfg, data, tmp_path, progress=False)
    model, loaded_cfg = load_model(tmp_path, "final")
    assert loaded_cfg.block_norm_power == 0.5
    assert torch.allclose(model.block_norm.mean, data.train.float().mean(0), atol=1e-5)
    fresh = init_model(cfg, data, torch.device("cpu"))
    if res["best_epoch"] == 0:
        best, _ = load_model(tmp_path, "best")
        for a, b in zip(best.state_dict().values(), fresh.state_dict().values()):
            assert torch.equal(a, b)


def test_config_bounds():
    with pytest.raises(ConfigError, match="block_norm_power must be <= 1"):
        TrainConfig(block_norm_power=1.5).validate()
    with pytest.raises(ConfigError, match="block_norm_power must be >= 0"):
        TrainConfig(block_norm_power=-0.5).validate()
    TrainConfig(block_norm_power=0.0).validate()


def test_the_study_transform_at_a_power_is_the_module():
    g = torch.Generator().manual_seed(1)
    train_x = torch.randn(40, 16, generator=g, dtype=torch.float64) + 2
    x = torch.randn(9, 16, generator=g, dtype=torch.float64) + 2
    bn = BlockNorm(16, 4, 0.5).double().fit_(train_x)
    study = _block_normalised(train_x.numpy().mean(0), 4, 0.5)
    np.testing.assert_allclose(study(x.numpy()), bn(x).numpy(), rtol=1e-6, atol=1e-6)
