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


# -- issue 17: every registered method, seeds, original sizes, messages, progress, help ----------------------------
def _png(path: Path, width: int, height: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("method", ["hirescam", "EigenCAM", "fem", "GradCAMElementWise", "AblationCAM", "eigengradcam"])
def test_explain_accepts_every_registered_method(
    tmp_path: Path, pngs: list[Path], capsys: pytest.CaptureFixture[str], method: str
) -> None:
    from pycam_fast.methods import get_method

    out = tmp_path / "out"
    assert main(["explain", str(pngs[0]), "--method", method, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == get_method(method).name and not manifest["errors"]
    cam = np.load(out / manifest["items"][0]["map"])
    assert cam.shape == (64, 64) and np.isfinite(cam).all() and 0 <= cam.min() and cam.max() <= 1
    assert get_method(method).name in capsys.readouterr().out


def test_method_help_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    from pycam_fast.methods import method_names

    assert main(["explain", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for name in method_names():
        assert name in out


def test_unknown_method_lists_registry(tmp_path: Path, pngs: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    from pycam_fast.methods import method_names

    assert main(["explain", str(pngs[0]), "--method", "HiResCAMM", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in method_names()) and len(err.strip().splitlines()) == 1


def test_torchvision_random_weights_are_seeded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = _png(tmp_path / "x.png", 37, 23)
    maps = {}
    for run, seed in enumerate(["0", "0", "5"]):
        out = tmp_path / f"o{run}"
        args = ["explain", str(image), "--model", "torchvision:resnet18", "--layer", "layer3", "--size", "48"]
        assert main([*args, "--seed", seed, "--out", str(out)]) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["seed"] == int(seed)
        maps[run] = (manifest["items"][0]["class"], np.load(out / "x.npy"))
    assert maps[0][0] == maps[1][0]
    np.testing.assert_array_equal(maps[0][1], maps[1][1])
    assert not np.array_equal(maps[0][1], maps[2][1])  # another seed: another model


@pytest.mark.parametrize(("width", "height"), [(30, 20), (13, 71), (64, 64)])
def test_overlay_keeps_original_size_and_aspect(tmp_path: Path, width: int, height: int) -> None:
    image = _png(tmp_path / "odd.png", width, height, seed=width)
    out = tmp_path / "out"
    assert main(["explain", str(image), "--out", str(out)]) == 0
    with Image.open(out / "odd.png") as img:
        assert img.size == (width, height) and img.mode == "RGB"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["items"][0]["image_size"] == [height, width]
    assert np.load(out / "odd.npy").shape == (64, 64)  # the raw map stays at the model's input size
    # the overlay is a blend of the original pixels: alpha 0.5 keeps it within 128 of them
    with Image.open(image) as src, Image.open(out / "odd.png") as ov:
        diff = np.abs(np.asarray(src, dtype=np.int16) - np.asarray(ov, dtype=np.int16))
    assert diff.max() <= 128


def test_unknown_layer_lists_valid_layers(tmp_path: Path, pngs: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", str(pngs[0]), "--layer", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "valid layers:" in err and "features.block3" in err and "classifier" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("value", "expected"), [("circel", ["did you mean circle", "square", "star"]), ("6", ["0-5", "circle"])]
)
def test_unknown_class_lists_valid_choices(
    tmp_path: Path, pngs: list[Path], capsys: pytest.CaptureFixture[str], value: str, expected: list[str]
) -> None:
    assert main(["explain", str(pngs[0]), "--class", value, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert all(text in err for text in expected) and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "manifest.json").exists()  # reported up front, before any image


def test_class_name_needs_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = _png(tmp_path / "x.png", 16, 16)
    args = ["explain", str(image), "--model", "torchvision:resnet18", "--size", "32", "--class", "cat"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    assert "pass a class index (0-999)" in capsys.readouterr().err


def test_summary_line_has_no_raw_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["explain", str(empty), "--out", str(tmp_path / "o")]) == 1
    out = capsys.readouterr().out
    assert "None" not in out and "explained 0 of 0 image(s) with GradCAM on layer features.block3" in out


def test_unusable_backend_is_reported_once_up_front(
    tmp_path: Path, pngs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("the cuda backend runs here")
    code = main(["explain", *map(str, pngs), "--backend", "cuda", "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--backend cuda" in err and "usable on cpu: auto, torch" in err
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_auto_layer_reported_once_without_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        _png(folder / f"{i}.png", 20 + i, 17, seed=i)
    args = ["explain", str(folder), "--model", "torchvision:resnet18", "--size", "64", "--batch-size", "1"]
    with caplog.at_level("WARNING"):
        assert main([*args, "--out", str(tmp_path / "o")]) == 0
    assert not [r for r in caplog.records if "target_layer" in r.getMessage()]
    out = capsys.readouterr().out
    assert out.count("target layer: layer4") == 1 and "explained 3 of 3" in out


def test_progress_bar_with_eta(tmp_path: Path, pngs: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    args = ["explain", *map(str, pngs), "--method", "ScoreCAM", "--batch-size", "1", "--progress", "on"]
    assert main([*args, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "2/2" in err and "img" in err and "<" in err  # tqdm's [elapsed<remaining]
    assert "fwd" in err  # the masked forwards of the Score-CAM family
    assert main([*args[:-1], "off", "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("command", "text"), [("info", "Captum"), ("bench", "speed-ups"), ("demo", "localises")])
def test_every_subcommand_has_a_description(capsys: pytest.CaptureFixture[str], command: str, text: str) -> None:
    assert main([command, "--help"]) == 0
    assert text in " ".join(capsys.readouterr().out.split())


def test_info_lists_captum(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.metadata

    assert main(["info"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("captum"))
    assert importlib.metadata.version("captum") in line


def test_bench_prints_its_true_duration(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import time

    from pycam_fast.cli import bench

    def slow(*_args: object, **_kwargs: object) -> dict[str, float]:
        time.sleep(0.3)
        return {"a": 0.002, "b": 0.001}

    monkeypatch.setattr(bench, "gradcam_timings", slow)
    monkeypatch.setattr(bench, "overlay_timings", slow)
    assert main(["bench", "--quick"]) == 0
    out = capsys.readouterr().out
    seconds = float(out.split("bench finished in ")[1].split(" s")[0])
    assert 0.6 <= seconds < 30 and "| b | 1.0 | 2.00x |" in out


def test_explain_gradient_filter_variants(tmp_path: Path, pngs: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    maps = {}
    for variant in ("none", "guided", "deconv"):
        out = tmp_path / variant
        args = ["explain", str(pngs[0]), "--method", "gradcam", "--gradient-filter", variant, "--out", str(out)]
        assert main(args) == 0
        item = json.loads((out / "manifest.json").read_text())["items"][0]
        maps[variant] = np.load(out / item["map"])
    assert not np.allclose(maps["none"], maps["guided"]) and not np.allclose(maps["guided"], maps["deconv"])
    assert main(["explain", str(pngs[0]), "--method", "layercam", "--gradient-filter", "guided"]) == 2
    assert "gradient_filter" in capsys.readouterr().err
