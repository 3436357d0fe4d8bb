"""Module-tree helpers with pytorch-grad-cam's names: find, and swap submodules in place."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn

__all__ = [
    "find_layer_predicate_recursive",
    "find_layer_types_recursive",
    "replace_all_layer_type_recursive",
    "replace_layer_recursive",
]


def replace_layer_recursive(model: nn.Module, old_layer: nn.Module, new_layer: nn.Module) -> bool:
    """Put ``new_layer`` where ``old_layer`` is (the first occurrence, depth-first).

    Returns:
        whether ``old_layer`` was found (and replaced).

    """
    for name, child in model._modules.items():
        if child is None:
            continue
        if child == old_layer:
            model._modules[name] = new_layer
            return True
        if replace_layer_recursive(child, old_layer, new_layer):
            return True
    return False


def replace_all_layer_type_recursive(
    model: nn.Module, old_layer_type: type | tuple[type, ...], new_layer: nn.Module
) -> None:
    """Replace every submodule that is an instance of ``old_layer_type`` by ``new_layer`` (one shared instance)."""
    for name, child in list(model._modules.items()):
        if child is None:
            continue
        if isinstance(child, old_layer_type):
            model._modules[name] = new_layer
        replace_all_layer_type_recursive(child, old_layer_type, new_layer)


def find_layer_types_recursive(model: nn.Module, layer_types: Iterable[type]) -> list[nn.Module]:
    """Every submodule whose exact type is in ``layer_types``, depth-first (the model itself excluded)."""
    types = tuple(layer_types)
    return find_layer_predicate_recursive(model, lambda layer: type(layer) in types)


def find_layer_predicate_recursive(model: nn.Module, predicate: Callable[[nn.Module], bool]) -> list[nn.Module]:
    """Every submodule (depth-first, parents before their children) for which ``predicate`` is true."""
    found: list[nn.Module] = []
    for child in model._modules.values():
        if child is None:
            continue
        if predicate(child):
            found.append(child)
        found.extend(find_layer_predicate_recursive(child, predicate))
    return found
