import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pycam_fast.__main__ import main
from pycam_fast.demo import make_batch


@pytest.fixture(scope="module")
def pngs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    images, _, _ = make_batch(2, seed=3)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"img{i}.png"
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def test_demo_writes_grid_summary_and_overlays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--out", str(tmp_path), "--num-images", "4", "--methods", "GradCAM", "CAM", "--seed", "1"])
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["methods"]) == {"GradCAM", "CAM"}
    for scores in summary["methods"].values():
        assert 0 <= scores["pointing_game"] <= 1 and 0 <= scores["energy_in_mask"] <= 1
    assert summary["versions"]["torch"] and summary["num_images"] == 4
    with Image.open(tmp_path / "demo_grid.png") as grid:
        assert grid.size[0] > 4 * 64
    assert len(list((tmp_path / "overlays" / "GradCAM").glob("*.png"))) == 4
    out = capsys.readouterr().out
    assert "GradCAM" in out and "energy in mask" in out and "demo_grid.png" in out


def test_explain_demo_model(tmp_path: Path, pngs: list[Path]) -> None:
    out = tmp_path / "out"
    code = main(["explain", *map(str, pngs), "--model", "demo", "--method", "gradcampp", "--out", str(out)])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["layer"] == "features.block3" and not manifest["errors"]
    assert [item["file"] for item in manifest["items"]] == [str(p) for p in pngs]
    for item in manifest["items"]:
        cam = np.load(out / item["map"])
        assert cam.shape == (64, 64) and 0 <= cam.min() and cam.max() <= 1
        with Image.open(out / item["overlay"]) as img:
            assert img.size == (64, 64) and img.mode == "RGB"
        assert 0 <= item["score"] <= 1 and isinstance(item["class_name"], str)


def test_explain_folder_with_bad_inputs_keeps_going(
    tmp_path: Path, pngs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "broken.png").write_text("not an image")
    good = tmp_path / pngs[0].name
    good.write_bytes(pngs[0].read_bytes())
    out = tmp_path / "out"
    code = main(["explain", str(tmp_path), str(tmp_path / "missing.jpg"), "--out", str(out), "--class", "star"])
    assert code == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert [Path(item["file"]).name for item in manifest["items"]] == [good.name]
    assert manifest["items"][0]["class_name"] == "star"
    assert {Path(err["file"]).name for err in manifest["errors"]} == {"broken.png", "missing.jpg"}
    err = capsys.readouterr().err
    assert "missing.jpg" in err and "broken.png" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "NoSuchCAM"], "unknown method"),
        (["--layer", "features.blok3"], "features.block3"),
        (["--model", "nowhere.pt"], "nowhere.pt"),
        (["--model", "torchvision:no_such_net"], "no_such_net"),
    ],
)
def test_explain_setup_errors(
    tmp_path: Path, pngs: list[Path], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(["explain", str(pngs[0]), "--out", str(tmp_path), *args])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_explain_full_pickled_model(tmp_path: Path, pngs: list[Path]) -> None:
    import torch

    from pycam_fast.demo import load_demo_model

    path = tmp_path / "model.pt"
    torch.save(load_demo_model(), path)
    code = main(["explain", str(pngs[0]), "--model", str(path), "--size", "64", "--out", str(tmp_path / "o")])
    assert code == 0 and (tmp_path / "o" / "img0.npy").is_file()


def test_info_prints_backends(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "backends:" in out and "torch" in out and "devices:" in out


def test_usage_errors_return_nonzero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["demo", "--methods", "Nope", "--num-images", "1"]) == 2
    assert "unknown method" in capsys.readouterr().err
