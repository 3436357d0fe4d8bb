"""Overlays: TorchCAM's ``overlay_mask`` per PIL image against the batched :func:`pycam_fast.utils.overlay`."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _suite import BATCH, SIZE

from pycam_fast.utils import overlay

OVERLAY_BATCH = 4 * BATCH
GROUP = f"overlay, batch {OVERLAY_BATCH}"


@pytest.fixture(scope="module")
def images_and_maps() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(OVERLAY_BATCH, 3, SIZE, SIZE, generator=gen), torch.rand(OVERLAY_BATCH, 7, 7, generator=gen)


def test_overlay_torchcam(bench: Any, images_and_maps: tuple[torch.Tensor, torch.Tensor]) -> None:
    overlay_mask = pytest.importorskip("torchcam.utils").overlay_mask
    to_pil_image = pytest.importorskip("torchvision.transforms.functional").to_pil_image
    images, maps = images_and_maps

    def per_image() -> None:
        for img, cam in zip(images, maps, strict=True):
            overlay_mask(to_pil_image(img), to_pil_image(cam, mode="F"), alpha=0.5)

    bench(GROUP, "TorchCAM overlay_mask", "peer", per_image)


def test_overlay_pycam_fast(bench: Any, images_and_maps: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, maps = images_and_maps
    bench(GROUP, "pycam_fast overlay", "pycam_fast", lambda: overlay(images, maps))
