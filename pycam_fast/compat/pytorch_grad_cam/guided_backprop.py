"""``pytorch_grad_cam.guided_backprop``: guided backpropagation of an input image.

Built on :mod:`pycam_fast.forward.guided`: the ReLU backward rule is applied through hooks for the duration of a
call, so the user's model is never modified (pytorch-grad-cam swaps every ``nn.ReLU`` module for its guided version
and back, losing ``inplace`` flags).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ...forward.guided import relu_with_rule, rule_input_gradients
from ...forward.private_copy import FastModel, foreign_hooks
from ...model_state import model_eval
from .utils.find_layers import replace_all_layer_type_recursive

__all__ = ["GuidedBackpropReLU", "GuidedBackpropReLUModel", "GuidedBackpropReLUasModule"]


class GuidedBackpropReLU:
    """pytorch-grad-cam's autograd-function name.

    ``GuidedBackpropReLU.apply(x)`` is ``relu(x)`` whose backward passes ``g * [g > 0] * [x > 0]``.
    """

    @staticmethod
    def apply(input_img: Tensor) -> Tensor:
        """``relu(input_img)`` with the guided backward."""
        return relu_with_rule(input_img, "guided")


class GuidedBackpropReLUasModule(nn.Module):
    """A ReLU module with the guided backward (see :class:`GuidedBackpropReLU`)."""

    def forward(self, input_img: Tensor) -> Tensor:
        """``relu(input_img)``."""
        return relu_with_rule(input_img, "guided")


class GuidedBackpropReLUModel:
    """Guided-backpropagation image of one input: ``d output[0, category] / d input`` with guided ReLUs.

    Args:
        model: the model (its ``nn.ReLU`` modules get the guided backward during each call).
        device: move the model there (default: leave it on its parameters' device).

    Example:
        >>> gb = GuidedBackpropReLUModel(model)(x)  # (H, W, C) float32 array

    """

    def __init__(self, model: nn.Module, device: Any = None) -> None:
        self.model = model
        if device is None:
            param = next(iter(model.parameters()), None)
            self.device = param.device if param is not None else torch.device("cpu")
        else:
            self.device = torch.device(device)
            self.model = model.to(self.device)

    def forward(self, input_img: Tensor) -> Any:
        """``model(input_img)``."""
        return self.model(input_img)

    def recursive_replace_relu_with_guidedrelu(self, module_top: nn.Module) -> None:
        """Swap every ``nn.ReLU`` below ``module_top`` for a :class:`GuidedBackpropReLUasModule` (in place)."""
        replace_all_layer_type_recursive(module_top, nn.ReLU, GuidedBackpropReLUasModule())

    def recursive_replace_guidedrelu_with_relu(self, module_top: nn.Module) -> None:
        """Undo :meth:`recursive_replace_relu_with_guidedrelu` (plain ``nn.ReLU()`` modules)."""
        replace_all_layer_type_recursive(module_top, GuidedBackpropReLUasModule, nn.ReLU())

    def __call__(self, input_img: Tensor, target_category: int | None = None) -> np.ndarray:
        """The guided gradient of ``output[0, target_category]`` w.r.t. the first image: ``(H, W, C)`` float32.

        Args:
            input_img: ``(N, C, H, W)`` batch (only the first image's gradient is returned).
            target_category: the explained class (default: the arg-max of the flattened output, as
                pytorch-grad-cam).

        Raises:
            TypeError: ``input_img`` is not a tensor.
            ValueError: a default category that is not a class of the first image (a batch whose highest score
                is in a later image).

        """
        if not isinstance(input_img, Tensor):
            raise TypeError(f"`input_img` must be a torch.Tensor (N, C, H, W), got {type(input_img).__name__}")
        x = input_img.to(self.device)
        # Only the first image is explained, and in eval mode its gradient does not depend on the others: they are
        # not back-propagated (pytorch-grad-cam back-propagates the whole batch); they only matter for the default
        # category, the arg-max over the whole batch.
        # the copy runs none of the model's hooks nor an overridden forward (checked before the guided rule's hooks)
        copy_ok = type(self).forward is GuidedBackpropReLUModel.forward and not foreign_hooks(self.model)
        with model_eval(self.model):
            (grad,) = rule_input_gradients(
                self.model,
                [x[:1]],
                lambda out: self._first_image_score(out, x, target_category, copy_ok),
                "guided",
                forward=self.forward,
            )
        return grad[0].permute(1, 2, 0).float().cpu().numpy()

    def _first_image_score(self, output: Tensor, batch: Tensor, target_category: int | None, copy_ok: bool) -> Tensor:
        """``output[0, category]``: the given category, else the first image's top class.

        The default is pytorch-grad-cam's arg-max over the flattened batch output, so it must lie in the first image.
        """
        if target_category is not None:
            return output[0, target_category]
        row = output[0].detach()
        if batch.shape[0] > 1 and bool(self._others_max(batch[1:], row.max(), copy_ok) > row.max()):
            raise ValueError(
                "the highest score of the batch is not in the first image: pass `target_category` (only the first "
                "image is explained)"
            )
        return output[0, int(row.argmax())]

    def _others_max(self, others: Tensor, first_max: Tensor, copy_ok: bool) -> Tensor:
        """The highest score of ``others`` ``(M, C, H, W)``.

        From the optimised inference copy, or from the model itself when the two maxima are too close for the copy's
        rounding to decide.
        """
        if copy_ok:
            if self._copy is None or self._copy.source is not self.model:
                self._copy = FastModel(self.model, channels_last=True)
            top = self._copy(others).max()
            if (top - first_max).abs() > 1e-4 * (first_max.abs() + 1):
                return top
        with torch.inference_mode():
            return self.forward(others).max()

    _copy: FastModel | None = None
