"""Target-layer resolution: which modules of the user's model a CAM explains.

Resolution follows TorchCAM 0.5: a module, its dotted name, a list of those, or ``None`` for automatic
resolution (the last module, in call order, whose output keeps the input's rank with a spatial dim != 1).
"""

from __future__ import annotations

from difflib import get_close_matches

import torch
from torch import Tensor, nn

from ._log import logger
from .model_state import model_eval

__all__ = ["LayerSpec", "locate_candidate_layer", "module_name", "resolve_target_names"]

LayerSpec = nn.Module | str | list[nn.Module | str] | None


def _probe_input(model: nn.Module, input_shape: tuple[int, ...]) -> Tensor:
    param = next(iter(model.parameters()), None)
    if param is None:
        return torch.zeros((1, *input_shape))
    dtype = param.dtype if param.is_floating_point() else torch.get_default_dtype()
    return torch.zeros((1, *input_shape), device=param.device, dtype=dtype)


def locate_candidate_layer(model: nn.Module, input_shape: tuple[int, ...] = (3, 224, 224)) -> str | None:
    """Find the layer to explain: one no-grad forward of zeros with a hook on every module.

    Args:
        model: the model to inspect.
        input_shape: one sample's input shape ``(C, *S)``.

    Returns:
        the name of the last module (in call order) whose output has ``len(input_shape) + 1`` dims and a spatial
        dim != 1, or ``None`` if there is none.

    """
    records: list[tuple[str, torch.Size]] = []
    handles = []

    def _record(name: str, _module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, Tensor):
            records.append((name, output.shape))

    with model_eval(model):
        try:
            for name, module in model.named_modules():
                handles.append(module.register_forward_hook(lambda m, i, o, name=name: _record(name, m, i, o)))
            with torch.no_grad():
                model(_probe_input(model, input_shape))
        finally:
            for handle in handles:
                handle.remove()

    for name, shape in reversed(records):
        if len(shape) == len(input_shape) + 1 and any(v != 1 for v in shape[2:]):
            return name
    return None


def module_name(module: nn.Module, submodules: dict[str, nn.Module]) -> str:
    """Dotted name of ``module`` in ``submodules``.

    Raises:
        ValueError: the module is not part of the model.

    """
    for name, candidate in submodules.items():
        if candidate is module:
            return name
    raise ValueError(
        "unable to locate module inside the specified model. Pass a submodule of `model` (see "
        "`model.named_modules()`) or its dotted name as `target_layer`."
    )


def resolve_target_names(
    model: nn.Module,
    target_layer: LayerSpec,
    input_shape: tuple[int, ...],
    submodules: dict[str, nn.Module],
) -> list[str]:
    """Turn a ``target_layer`` argument into a list of module names.

    Args:
        model: the model.
        target_layer: module, dotted name, list of those, or ``None`` (automatic).
        input_shape: one sample's input shape, used by the automatic resolution.
        submodules: ``dict(model.named_modules())``.

    Returns:
        the target layer names.

    Raises:
        TypeError: ``target_layer`` of another type.
        ValueError: a module outside the model, an unknown name (with close matches), or no candidate found.

    """
    if isinstance(target_layer, str):
        names = [target_layer]
    elif isinstance(target_layer, nn.Module):
        names = [module_name(target_layer, submodules)]
    elif isinstance(target_layer, list):
        if not target_layer or any(not isinstance(layer, (str, nn.Module)) for layer in target_layer):
            raise TypeError("invalid argument type for `target_layer`: expected a module, a name or a non-empty list")
        names = [layer if isinstance(layer, str) else module_name(layer, submodules) for layer in target_layer]
    elif target_layer is None:
        name = locate_candidate_layer(model, input_shape)
        if name is None:
            raise ValueError(
                "unable to resolve `target_layer` automatically: specify it (see `model.named_modules()`) or pass "
                f"the model's real `input_shape` (got {input_shape})"
            )
        logger.warning(f"no value was provided for `target_layer`, thus set to '{name}'.")
        names = [name]
    else:
        raise TypeError(
            "invalid argument type for `target_layer`: expected a module, a name, a list of those or None, "
            f"got {type(target_layer).__name__}"
        )

    missing = [name for name in names if name not in submodules]
    if missing:
        hints = {name: matches for name in missing if (matches := get_close_matches(name, submodules))}
        found = f", closest matches: {hints}" if hints else ""
        raise ValueError(f"unknown `target_layer` names: {missing}{found}; see `model.named_modules()`")
    return names
