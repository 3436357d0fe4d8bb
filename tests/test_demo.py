"""Tests of the offline demo: synthetic shapes, the shipped CNN and the localisation metrics."""

from __future__ import annotations

import json

import pytest
import torch

from pycam_fast.demo import (
    CLASS_NAMES,
    DEMO_TARGET_LAYER,
    DEMO_WEIGHTS,
    NUM_CLASSES,
    POINTING_TOLERANCE,
    energy_in_mask,
    evaluate_maps,
    evaluate_method,
    generate,
    load_demo_model,
    make_batch,
    make_image,
    masks_to_boxes,
    native_cam,
    pointing_game,
)
from pycam_fast.demo.train import accuracy, cam_outside_share

# A seed that training never used (checked against the shipped metadata below).
EVAL_SEED = 4_242_424
EVAL_SIZE = 400
CAM_SIZE = 200


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_demo_model()


@pytest.fixture(scope="module")
def eval_set():
    return generate(EVAL_SIZE, EVAL_SEED)


# --- generator ----------------------------------------------------------------------------------------------------


def test_generator_is_deterministic_and_seed_dependent():
    a, b, c = generate(64, 7), generate(64, 7), generate(64, 8)
    for name in ("images", "labels", "masks", "boxes"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.masks, c.masks)


def test_generator_shapes_dtypes_and_ranges():
    batch = generate(150, 11)
    assert batch.images.shape == (150, 3, 64, 64) and batch.images.dtype == torch.float32
    assert batch.labels.shape == (150,) and batch.labels.dtype == torch.int64
    assert batch.masks.shape == (150, 64, 64) and batch.masks.dtype == torch.bool
    assert batch.boxes.shape == (150, 4) and batch.boxes.dtype == torch.int64
    assert 0.0 <= batch.images.min() and batch.images.max() <= 1.0
    assert set(batch.labels.tolist()) == set(range(NUM_CLASSES)) and len(CLASS_NAMES) == NUM_CLASSES
    area = batch.masks.flatten(1).float().mean(dim=1)
    assert area.min() > 0.02 and area.max() < 0.5  # one visible object, never the whole image


def test_masks_and_boxes_agree():
    batch = generate(100, 12)
    assert torch.equal(batch.boxes, masks_to_boxes(batch.masks))
    for mask, (x0, y0, x1, y1) in zip(batch.masks, batch.boxes.tolist(), strict=True):
        assert 0 <= x0 <= x1 < 64 and 0 <= y0 <= y1 < 64
        inside = mask[y0 : y1 + 1, x0 : x1 + 1]
        assert inside.sum() == mask.sum()  # the box contains the whole object...
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()  # ...tightly


def test_masks_to_boxes_on_handmade_masks():
    masks = torch.zeros(2, 8, 10, dtype=torch.bool)
    masks[0, 2:5, 3:7] = True
    assert masks_to_boxes(masks).tolist() == [[3, 2, 6, 4], [-1, -1, -1, -1]]


def test_objects_are_visible_in_the_image():
    batch = generate(100, 13)
    m = batch.masks.unsqueeze(1).float()
    inside = (batch.images * m).sum(dim=(2, 3)) / m.sum(dim=(2, 3))
    ring = torch.nn.functional.max_pool2d(m, 5, stride=1, padding=2) - m  # a thin band just outside the object
    outside = (batch.images * ring).sum(dim=(2, 3)) / ring.sum(dim=(2, 3))
    assert (inside - outside).norm(dim=1).median() > 0.2


def test_batch_api_and_forced_labels():
    images, labels, masks = make_batch(32, 21)
    batch = generate(32, 21)
    assert torch.equal(images, batch.images) and torch.equal(labels, batch.labels) and torch.equal(masks, batch.masks)
    forced = torch.arange(12) % NUM_CLASSES
    assert torch.equal(generate(12, 5, labels=forced).labels, forced)
    image, label, mask, box = make_image(99, label=3)
    assert label == 3 and image.shape == (3, 64, 64) and mask.shape == (64, 64)
    assert box == tuple(masks_to_boxes(mask[None])[0].tolist())
    with pytest.raises(ValueError):
        generate(3, 0, labels=torch.tensor([0, 1, NUM_CLASSES]))


# --- metrics ------------------------------------------------------------------------------------------------------


def test_pointing_game_and_energy_on_handmade_maps():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[:, :2, :2] = True
    maps = torch.zeros(3, 4, 4)
    maps[0, 0, 1] = 1.0  # peak on the object, all mass inside
    maps[1, 3, 3] = 1.0  # peak off the object, no mass inside
    maps[2] = 1.0
    maps[2, 3, 3] = 2.0  # peak off the object, 4 of 17 units inside
    assert pointing_game(maps, masks).tolist() == [True, False, False]
    assert torch.allclose(energy_in_mask(maps, masks), torch.tensor([1.0, 0.0, 4 / 17]))
    assert pointing_game(maps, masks, tolerance=2).tolist() == [True, True, True]
    assert energy_in_mask(torch.zeros(1, 4, 4), masks[:1]).item() == 0.0
    scores = evaluate_maps(maps, masks, tolerance=2)
    assert scores.num_images == 3 and scores.pointing_game == pytest.approx(1 / 3)
    assert scores.pointing_game_tolerant == 1.0 and scores.energy_in_mask == pytest.approx((1 + 4 / 17) / 3)
    with pytest.raises(ValueError):
        pointing_game(maps, masks[:, :3])


def test_cam_outside_share_of_the_training_loss():
    model = load_demo_model()
    labels = torch.tensor([0, 1])
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[:, :32] = True  # top half of the image = top 8 rows of the 16x16 CAM layer
    w = model.classifier.weight.detach()
    feats = torch.zeros(2, w.shape[1], 16, 16)
    feats[0, :, :8] = w[0].clamp_min(0).view(-1, 1, 1)  # class-0 evidence on the object only
    feats[1, :, 8:] = w[1].clamp_min(0).view(-1, 1, 1)  # class-1 evidence off the object only
    share = cam_outside_share(model, feats, labels, masks)
    assert share.item() == pytest.approx(0.5, abs=1e-4)


# --- shipped model ------------------------------------------------------------------------------------------------


def test_weights_ship_small_with_metadata_and_eval_seed_is_unseen():
    assert DEMO_WEIGHTS.is_file() and DEMO_WEIGHTS.stat().st_size < 2 * 1024 * 1024
    meta = json.loads(DEMO_WEIGHTS.with_suffix(".json").read_text())
    lo, hi = meta["train_data_seeds"]
    assert not lo <= EVAL_SEED <= hi and EVAL_SEED != meta["test_seed"]
    assert meta["classes"] == list(CLASS_NAMES)


def test_model_loads_offline_in_eval_mode(model):
    assert not model.training
    assert dict(model.named_modules())[DEMO_TARGET_LAYER] is model.features.block3
    assert all(p.requires_grad for p in model.parameters())  # gradient-based CAMs need them
    out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, NUM_CLASSES)
    assert model.features(torch.rand(1, 3, 64, 64)).shape[-2:] == (16, 16)


def test_model_accuracy_on_fresh_seeded_set(model, eval_set):
    assert accuracy(model, eval_set.images, eval_set.labels) >= 0.95


def test_native_cam_localises_the_object(model, eval_set):
    maps = native_cam(model, eval_set.images[:CAM_SIZE], eval_set.labels[:CAM_SIZE])
    masks = eval_set.masks[:CAM_SIZE]
    assert maps.shape == (CAM_SIZE, 64, 64)
    assert pointing_game(maps, masks).float().mean() >= 0.8
    assert pointing_game(maps, masks, tolerance=POINTING_TOLERANCE).float().mean() >= 0.9
    # control: against other images' masks the same maps must score far lower
    assert pointing_game(maps, masks.roll(1, dims=0)).float().mean() < 0.5


def test_gradcam_pointing_game_with_shipped_model(model, eval_set):
    from pycam_fast.methods import GradCAM

    images, labels, masks = eval_set.images[:CAM_SIZE], eval_set.labels[:CAM_SIZE], eval_set.masks[:CAM_SIZE]
    scores = evaluate_method(GradCAM, model, images, labels, masks, batch_size=100)
    assert scores.num_images == CAM_SIZE
    # strict pointing game: the argmax pixel (64x64) on the object mask (ring holes are off the object)
    assert scores.pointing_game >= 0.8
    assert scores.pointing_game_tolerant >= 0.9  # within 3 px (the standard pointing-game tolerance, rescaled)
    assert scores.energy_in_mask > masks.float().mean().item()  # better than a uniform map
    by_name = evaluate_method("GradCAM", model, images[:50], labels[:50], masks[:50], batch_size=25)
    assert 0.0 <= by_name.pointing_game <= 1.0 and by_name.num_images == 50


# --- the `pycam-fast demo` command (issue 17: labelled grid, explained accuracy) ---------------------------------


def test_demo_cli_explains_its_accuracy(tmp_path, capsys):
    from pycam_fast.__main__ import main

    assert main(["demo", "--out", str(tmp_path), "--num-images", "3", "--methods", "CAM", "--seed", "2"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    meta = json.loads(DEMO_WEIGHTS.with_suffix(".json").read_text())
    assert summary["accuracy_at_training"] == {
        "accuracy": meta["test_accuracy"],
        "images": meta["test_size"],
        "seed": meta["test_seed"],
    }
    assert summary["accuracy_held_out"] is None
    preds = summary["predictions"]
    correct = sum(p["true"] == p["predicted"] for p in preds)
    assert len(preds) == 3 and summary["correct"] == correct and summary["accuracy"] == pytest.approx(correct / 3)
    first = capsys.readouterr().out.splitlines()[0]
    assert f"{correct}/3 classified correctly" in first
    assert f"{100 * meta['test_accuracy']:.2f}% on {meta['test_size']} held-out images" in first and "README" in first
    assert "accuracy 0." not in first  # no bare fraction without its context


def test_demo_cli_measures_held_out_accuracy(tmp_path, capsys, model):
    from pycam_fast.__main__ import main
    from pycam_fast.cli.demo import held_out_accuracy

    args = ["demo", "--out", str(tmp_path), "--num-images", "1", "--methods", "CAM", "--accuracy-images", "37"]
    assert main(args) == 0
    held_out = json.loads((tmp_path / "summary.json").read_text())["accuracy_held_out"]
    seed = json.loads(DEMO_WEIGHTS.with_suffix(".json").read_text())["test_seed"]
    assert held_out["images"] == 37 and held_out["seed"] == seed
    batch = generate(37, seed)
    expected = (model(batch.images).argmax(1) == batch.labels).float().mean().item()
    assert held_out["accuracy"] == pytest.approx(expected, abs=1e-6)
    assert held_out_accuracy(model, 37, seed, chunk=5) == pytest.approx(expected, abs=1e-6)
    assert f"{100 * expected:.2f}% on 37 held-out images measured now" in capsys.readouterr().out
    assert main(["demo", "--out", str(tmp_path), "--accuracy-images", "-1"]) == 2


def test_demo_grid_says_titles_are_true_then_predicted(tmp_path, monkeypatch):
    from pycam_fast.cli import demo

    figures = []
    monkeypatch.setattr(demo, "_save_figure", lambda fig, path: figures.append(fig))
    images = torch.rand(3, 3, 8, 11)
    overlays = {"GradCAM": (torch.rand(3, 3, 8, 11) * 255).to(torch.uint8)}
    titles = ["circle→circle", "star→ring", "cross→cross"]
    demo._grid(images, overlays, titles, [True, False, True], tmp_path / "g.png")
    (fig,) = figures
    assert "true class → predicted class" in fig._suptitle.get_text() and "2/3 correct" in fig._suptitle.get_text()
    top = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in top] == titles
    colors = [ax.title.get_color() for ax in top]
    assert colors[1] == "red" and colors[0] == colors[2] == "black"
