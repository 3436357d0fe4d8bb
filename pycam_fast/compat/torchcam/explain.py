"""TorchCAM 0.5.0's ``torchcam.explain``: explain one image's prediction, and save the evidence.

:func:`explain` returns a :class:`PredictionExplanation` (logits, the predicted and optional expected class's maps,
reproducibility metadata) whose :meth:`~PredictionExplanation.save` writes, into a new directory, for each class and
map: ``class-{c}-layer-{l}.npy`` (the float32 map), ``-heatmap.png`` (8-bit grayscale) and ``-overlay.png`` (the
shared :func:`pycam_fast.utils.overlay_mask`), plus ``manifest.json`` (schema version 1). Same fields, files and
errors as TorchCAM 0.5.0; ``versions`` also records ``pycam_fast``.
"""

from __future__ import annotations

import json
import platform
import shutil
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ...methods.extractor import CAMExtractor
from ...utils import overlay_mask
from . import __version__ as _torchcam_version
from .methods import GradCAM

__all__ = ["PredictionExplanation", "explain"]


def _package_version() -> str:
    try:
        return version("pycam_fast")
    except PackageNotFoundError:  # a source tree that is not installed
        return "unknown"


@dataclass(frozen=True)
class PredictionExplanation:
    """One image's prediction, its class activation maps and reproducibility metadata.

    Attributes:
        logits: ``(1, K)`` model output (CPU, detached).
        predicted_class_idx: the top class.
        expected_class_idx: the class the caller expected, if given.
        cams: class index -> one ``(H, W)`` float32 CPU map per extractor output.
        method: the extractor class name.
        target_layers: the extractor's target layer names.
        model: the model's qualified class name.
        input_shape: ``(1, C, H, W)``.
        versions: ``python``, ``torch``, ``torchcam`` (the API version) and ``pycam_fast``.
        class_names: one name per class, if given.

    """

    logits: Tensor
    predicted_class_idx: int
    expected_class_idx: int | None
    cams: Mapping[int, tuple[Tensor, ...]]
    method: str
    target_layers: tuple[str, ...]
    model: str
    input_shape: tuple[int, ...]
    versions: Mapping[str, str]
    class_names: tuple[str, ...] | None = None

    def save(self, directory: str | Path, image: Image.Image, alpha: float = 0.5) -> Path:
        """Write maps (``.npy``), heatmaps and overlays (PNG) and ``manifest.json`` into a new directory.

        Args:
            directory: the directory to create (it must not exist).
            image: the source image of the overlays.
            alpha: opacity of the image in the overlays.

        Returns:
            the directory.

        Raises:
            TypeError: ``image`` is not a PIL image.
            FileExistsError: ``directory`` exists.

        """
        if not isinstance(image, Image.Image):
            raise TypeError("`image` must be a PIL image")
        out = Path(directory)
        if out.exists():
            raise FileExistsError(f"output directory already exists: {out}")
        out.mkdir(parents=True)
        with ExitStack() as undo:  # a failed save leaves no partial directory
            undo.callback(shutil.rmtree, out)
            probs = self.logits.softmax(dim=1)[0]
            classes = {
                str(c): {
                    "class_idx": c,
                    "class_name": self._name(c),
                    "logit": self.logits[0, c].item(),
                    "probability": probs[c].item(),
                    "artifacts": self._save_maps(out, c, maps, image, alpha),
                }
                for c, maps in sorted(self.cams.items())
            }
            manifest = {
                "schema_version": 1,
                "prediction": self._reference(self.predicted_class_idx),
                "expected": self._reference(self.expected_class_idx),
                "classes": classes,
                "method": self.method,
                "target_layers": list(self.target_layers),
                "model": self.model,
                "input_shape": list(self.input_shape),
                "versions": dict(self.versions),
                "image_size": list(image.size),
                "alpha": alpha,
            }
            text = json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n"
            (out / "manifest.json").write_text(text, encoding="utf-8")
            undo.pop_all()
        return out

    def _save_maps(
        self, out: Path, class_idx: int, maps: tuple[Tensor, ...], image: Image.Image, alpha: float
    ) -> list[dict[str, Any]]:
        layers = [list(self.target_layers)] if len(maps) == 1 else [[name] for name in self.target_layers]
        artifacts = []
        for idx, (names, cam) in enumerate(zip(layers, maps, strict=True)):
            stem = f"class-{class_idx}-layer-{idx}"
            array = cam.numpy()
            files = {"map": f"{stem}.npy", "heatmap": f"{stem}-heatmap.png", "overlay": f"{stem}-overlay.png"}
            np.save(out / files["map"], array, allow_pickle=False)
            Image.fromarray((255 * np.clip(array, 0, 1)).round().astype(np.uint8)).save(out / files["heatmap"])
            overlay_mask(image, Image.fromarray(array), alpha=alpha).save(out / files["overlay"])
            artifacts.append({"target_layers": names, **files})
        return artifacts

    def _name(self, class_idx: int) -> str | None:
        return None if self.class_names is None else self.class_names[class_idx]

    def _reference(self, class_idx: int | None) -> dict[str, int | str | None] | None:
        return None if class_idx is None else {"class_idx": class_idx, "class_name": self._name(class_idx)}


def _logits(output: Any) -> Tensor:
    if not isinstance(output, Tensor):
        raise TypeError("model output must be a tensor; wrap models that return tuples or dictionaries")
    if output.ndim != 2 or output.shape[0] != 1 or output.shape[1] < 1:
        raise ValueError("model output must have shape (1, num_classes)")
    if not bool(torch.isfinite(output).all()):
        raise ValueError("model output contains non-finite logits")
    return output


def _maps(cams: list[Tensor]) -> tuple[Tensor, ...]:
    if not cams:
        raise ValueError("extractor returned no CAMs")
    out = []
    for cam in cams:
        if not isinstance(cam, Tensor) or cam.ndim != 3 or cam.shape[0] != 1:
            raise ValueError("CAMs must have shape (1, height, width)")
        if not bool(torch.isfinite(cam).all()):
            raise ValueError("CAM contains non-finite values")
        out.append(cam[0].detach().to(device="cpu", dtype=torch.float32).contiguous())
    return tuple(out)


def _check_request(model: Any, input_tensor: Any, expected_class_idx: Any, method: Any, method_kwargs: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError("`model` must be a torch.nn.Module")
    if any(module.training for module in model.modules()):
        raise ValueError("`model` must be in evaluation mode; call model.eval() first")
    if not isinstance(input_tensor, Tensor):
        raise TypeError("`input_tensor` must be a torch.Tensor")
    if input_tensor.ndim != 4 or input_tensor.shape[0] != 1:
        raise ValueError("`input_tensor` must have shape (1, channels, height, width)")
    if not input_tensor.is_floating_point():
        raise ValueError("`input_tensor` must have a floating-point dtype")
    if expected_class_idx is not None and (
        not isinstance(expected_class_idx, int) or isinstance(expected_class_idx, bool)
    ):
        raise TypeError("`expected_class_idx` must be an integer or None")
    if not isinstance(method, type) or not issubclass(method, CAMExtractor):
        raise TypeError("`method` must be a TorchCAM extractor class")
    if method_kwargs is not None and not isinstance(method_kwargs, Mapping):
        raise TypeError("`method_kwargs` must be a mapping or None")


def _class_names(expected: int | None, names: Sequence[str] | None, num_classes: int) -> tuple[str, ...] | None:
    if expected is not None and not 0 <= expected < num_classes:
        raise ValueError("`expected_class_idx` is outside the model output range")
    if names is None:
        return None
    if isinstance(names, str) or len(names) != num_classes:
        raise ValueError("`class_names` length must match the number of model classes")
    if any(not isinstance(name, str) for name in names):
        raise TypeError("every class name must be a string")
    return tuple(names)


def explain(
    model: nn.Module,
    input_tensor: Tensor,
    *,
    expected_class_idx: int | None = None,
    class_names: Sequence[str] | None = None,
    method: type[CAMExtractor] = GradCAM,
    target_layer: Any = None,
    method_kwargs: Mapping[str, Any] | None = None,
) -> PredictionExplanation:
    """Explain the predicted (and optionally an expected) class of one image ``(1, C, H, W)``.

    The model's parameters' ``.grad`` and the hooks are restored on every exit path.

    Args:
        model: a model in eval mode returning ``(1, K)`` logits.
        input_tensor: the preprocessed image.
        expected_class_idx: a class to explain as well (e.g. the label).
        class_names: one name per class.
        method: the extractor class (a :class:`~pycam_fast.methods.CAMExtractor` subclass).
        target_layer: its target layer(s) (default: automatic).
        method_kwargs: other keyword arguments of ``method``.

    Returns:
        the detached prediction evidence and maps.

    Raises:
        RuntimeError: called under ``torch.inference_mode()``.
        TypeError: an argument of the wrong type.
        ValueError: a bad argument value, model output or map.

    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("`explain` cannot run inside torch.inference_mode() because CAM extraction needs gradients")
    _check_request(model, input_tensor, expected_class_idx, method, method_kwargs)
    kwargs = dict(method_kwargs or {})
    if "target_layer" in kwargs:
        raise ValueError("pass `target_layer` directly, not through `method_kwargs`")
    if target_layer is not None:
        kwargs["target_layer"] = target_layer
    elif method is GradCAM:
        kwargs.setdefault("input_shape", tuple(input_tensor.shape[1:]))
    x = input_tensor.detach().requires_grad_(True)
    params = tuple(model.parameters())
    grads = tuple(p.grad for p in params)
    try:
        with torch.enable_grad(), method(model, **kwargs) as extractor:
            logits = _logits(model(x))
            predicted = int(logits[0].argmax().item())
            names = _class_names(expected_class_idx, class_names, logits.shape[1])
            cams = {predicted: _maps(extractor(predicted, logits))}
            if expected_class_idx is not None and expected_class_idx != predicted:
                again = _logits(model(x))
                if again.shape != logits.shape:
                    raise ValueError("model output shape changed between explanation forwards")
                cams[expected_class_idx] = _maps(extractor(expected_class_idx, again))
            return PredictionExplanation(
                logits=logits.detach().cpu(),
                predicted_class_idx=predicted,
                expected_class_idx=expected_class_idx,
                cams=MappingProxyType(cams),
                method=method.__name__,
                target_layers=tuple(extractor.target_names),
                model=f"{type(model).__module__}.{type(model).__qualname__}",
                input_shape=tuple(input_tensor.shape),
                versions=MappingProxyType(
                    {
                        "python": platform.python_version(),
                        "torch": str(torch.__version__),
                        "torchcam": _torchcam_version,
                        "pycam_fast": _package_version(),
                    }
                ),
                class_names=names,
            )
    finally:
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
