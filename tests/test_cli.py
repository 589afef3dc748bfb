"""The command line: bad input gives one clear error line and exit code 2."""

import numpy as np
import pytest
from PIL import Image

from hihpq_lib.app import cli


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["epoch=3"], "unknown config key 'epoch' (did you mean 'epochs'?)"),
        (["bits=20"], "20 bits is not M * log2(K)"),
        (["dataset=mnist"], "unknown dataset 'mnist'"),
        (["backbone=resnet50"], "unknown backbone 'resnet50'"),
        (["backbone=efficientnet_lite2+resnet50"], "joined by '+'"),
        (
            ["backbone=efficientnet_lite2+efficientnet_lite0", "trainable_layers=1"],
            "concatenates frozen backbones",
        ),
        (["K=100"], "not a power of 2"),
    ],
)
def test_bad_config_values(capsys, overrides, message):
    argv = ["train", "configs/cpu/cpu_cifar10_ii_32bits.yaml"]
    for item in overrides:
        argv += ["--set", item]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    first = err.strip().splitlines()[0]
    assert first.startswith("hihpq: error: ") and message in first


def test_missing_config_file(capsys):
    code, _, err = run_cli(capsys, "train", "configs/nope.yaml")
    assert code == 2 and "does not exist" in err


def test_missing_dataset_source_lists_the_options(capsys, tmp_path):
    code, _, err = run_cli(capsys, "prepare", "--data", str(tmp_path / "nowhere"))
    assert code == 2
    assert err.startswith("hihpq: error: ")


def test_empty_image_folder(capsys, tmp_path):
    (tmp_path / "cats").mkdir()
    code, _, err = run_cli(capsys, "prepare", "--set", "dataset=folder", "--data", str(tmp_path))
    assert code == 2 and err.startswith("hihpq: error: ")


def test_corrupt_query_image_is_named(capsys, tmp_path):
    bad = tmp_path / "broken.jpg"
    good = tmp_path / "good.jpg"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    bad.write_bytes(good.read_bytes()[:20])
    code, _, err = run_cli(capsys, "search", str(tmp_path / "run"), str(bad))
    assert code == 2 and "broken.jpg" in err


def test_evaluate_needs_a_run_folder(capsys, tmp_path):
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path))
    assert code == 2 and "not a run folder" in err


def test_missing_weights_error_is_reported(capsys, tmp_path, monkeypatch):
    from hihpq_lib.data import backbones
    from hihpq_lib.data.backbones import vgg

    def offline(*a, **k):
        raise backbones.MissingWeightsError("missing weights: VGG-16 ImageNet weights (offline)")

    monkeypatch.setattr(vgg, "_vgg16_imagenet_state_dict", offline)
    data = tmp_path / "data"
    for c in ("a", "b"):
        (data / c).mkdir(parents=True)
        for i in range(30):
            Image.fromarray(np.full((8, 8, 3), i * 5, np.uint8)).save(data / c / f"{i}.png")
    code, _, err = run_cli(
        capsys,
        "train",
        "configs/paper/paper_cifar10_ii_32bits.yaml",
        "--set",
        "dataset=folder",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 2 and "missing weights" in err


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("prepare", "train", "evaluate", "search", "demo"):
        assert cmd in out


def test_importing_the_library_prints_no_deprecation_noise():
    # geoopt's import-time torch.jit.script FutureWarning is silenced at its one source
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-W",
            "default",
            "-c",
            "import hihpq_lib.geometry.manifolds, hihpq_lib.app.cli",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "jit.script" not in out.stderr, out.stderr
