"""``pycam-fast explain`` with the hook-based methods (LeGrad, RefineCAM, FinerCAM) and repeated ``--layer``."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from pycam_fast.__main__ import main
from pycam_fast.demo import make_batch


@pytest.fixture(scope="module")
def png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    images, _, _ = make_batch(1, seed=5)
    path = tmp_path_factory.mktemp("images") / "shape.png"
    Image.fromarray((images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
    return path


def _map(out: Path, method: str) -> np.ndarray:
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == method and not manifest["errors"]
    cam = np.load(out / manifest["items"][0]["map"])
    assert np.isfinite(cam).all() and 0 <= cam.min() and cam.max() <= 1 and cam.max() > 0.99
    return cam


def test_finercam_and_refinecam_on_the_demo_model(tmp_path: Path, png: Path) -> None:
    assert main(["explain", str(png), "--method", "finercam", "--out", str(tmp_path / "f")]) == 0
    assert _map(tmp_path / "f", "FinerCAM").shape == (64, 64)
    layers = ["--layer", "features.block2", "--layer", "features.block3"]
    assert main(["explain", str(png), "--method", "RefineCAM", *layers, "--out", str(tmp_path / "r")]) == 0
    assert _map(tmp_path / "r", "RefineCAM").shape == (64, 64)
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["layer"] == ["features.block2", "features.block3"]


def test_legrad_on_a_pickled_vision_transformer(tmp_path: Path, png: Path) -> None:
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=4
    ).eval()
    torch.nn.init.normal_(vit.heads.head.weight)  # torchvision starts the head at zero: no gradient at all
    path = tmp_path / "vit.pt"
    torch.save(vit, path)
    args = ["explain", str(png), "--model", str(path), "--size", "32", "--method", "legrad", "--out", str(tmp_path)]
    assert main(args) == 0
    assert _map(tmp_path, "LeGrad").shape == (32, 32)  # maps at the model's input size


def test_layer_count_errors(tmp_path: Path, png: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", str(png), "--method", "refinecam", "--out", str(tmp_path)]) == 2
    assert "two or more" in capsys.readouterr().err
    layers = ["--layer", "features.block2", "--layer", "features.block3"]
    assert main(["explain", str(png), "--method", "gradcam", *layers, "--out", str(tmp_path)]) == 2
    assert "--layer" in capsys.readouterr().err
    assert main(["explain", str(png), "--method", "legrad", "--out", str(tmp_path)]) == 2
    assert "self_attention" in capsys.readouterr().err


def test_help_lists_the_hook_based_methods(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert all(name in out for name in ("LeGrad", "RefineCAM", "FinerCAM"))
