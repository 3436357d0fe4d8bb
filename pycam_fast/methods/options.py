"""Method options: one validator per option name, shared by every method and front-end."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .spec import MethodSpec

__all__ = [
    "GRADIENT_FILTERS",
    "OPTION_ANNOTATIONS",
    "SIGN_CONVENTIONS",
    "check_option",
    "check_output_size",
    "positive_int",
    "resolve_options",
]

#: Xplique's gradient filters for Grad-CAM weights (``None``: the plain gradients)
GRADIENT_FILTERS = (None, "guided", "deconv")
#: sign conventions of a principal component (see :func:`pycam_fast.methods.eigencam.principal_projection`)
SIGN_CONVENTIONS = ("max", "numpy", "none")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_int(name: str, value: Any) -> Any:
    """``value`` if it is an int >= 1 (not a bool).

    Raises:
        ValueError: any other value, naming ``name``.

    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}")
    return value


def _non_negative(name: str, value: Any) -> Any:
    if not _is_number(value) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative float, got {value!r}")
    return value


def _finite(name: str, value: Any) -> Any:
    if not _is_number(value) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, e.g. 2.0; got {value!r}")
    return float(value)


def _one_of(choices: tuple[Any, ...]) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        if value not in choices:
            raise ValueError(f"`{name}` must be one of {choices}, got {value!r}")
        return value

    return check


def _optional_positive_int(name: str, value: Any) -> Any:
    return None if value is None else positive_int(name, value)


def _ablation_value(name: str, value: Any) -> Any:
    if value in ("auto", "zero") or callable(value):
        return value
    if _is_number(value):
        return float(value)
    raise ValueError(
        f"`{name}` must be 'auto', 'zero', a number or a callable A -> (N,) / (N, C) values; got {value!r}"
    )


def _eps(name: str, value: Any) -> Any:
    if not _is_number(value):
        raise ValueError(f"`{name}` must be a number, got {value!r}")
    return float(value)


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "eps": _eps,
    "num_samples": positive_int,
    "std": _non_negative,
    "k": _finite,
    "sign": _one_of(SIGN_CONVENTIONS),
    "gradient_filter": _one_of(GRADIENT_FILTERS),
    "top_k": _optional_positive_int,
    "ablation_value": _ablation_value,
}


#: each option's annotation in the constructor signatures that take it positionally (TorchCAM's)
OPTION_ANNOTATIONS: dict[str, str] = {
    "eps": "float",
    "num_samples": "int",
    "std": "float",
    "k": "float",
    "sign": "str",
    "gradient_filter": "str | None",
    "top_k": "int | None",
    "ablation_value": "Any",
}


def check_option(name: str, value: Any) -> Any:
    """Validate one option value (normalised, e.g. ints as floats where a float is meant).

    Raises:
        ValueError: a bad value, naming the option.

    """
    return _CHECKS[name](name, value)


def resolve_options(spec: MethodSpec, given: Mapping[str, Any]) -> dict[str, Any]:
    """The method's options: its defaults overridden by ``given``, every value validated.

    Raises:
        TypeError: an option the method does not take (the message lists the ones it takes).
        ValueError: a bad value.

    """
    unknown = sorted(set(given) - set(spec.options))
    if unknown:
        raise TypeError(f"{spec.name} does not take {unknown}; it takes {sorted(spec.options)}")
    return {name: check_option(name, value) for name, value in {**spec.options, **given}.items()}


def check_output_size(output_size: Any, spatial_dims: int | None = None) -> tuple[int, ...] | None:
    """Validate a map size: ``None``, or positive ints (``spatial_dims`` of them when given).

    Raises:
        ValueError: anything else, naming ``output_size`` and an example.

    """
    if output_size is None:
        return None
    try:
        size = tuple(int(s) for s in output_size)
    except (TypeError, ValueError):
        size = ()
    dims_ok = len(size) == spatial_dims if spatial_dims is not None else 1 <= len(size) <= 3
    if not dims_ok or any(s <= 0 for s in size) or size != tuple(output_size):
        count = f"{spatial_dims} positive ints matching the map's spatial dims" if spatial_dims else "1-3 positive ints"
        raise ValueError(f"`output_size` must be {count}, e.g. {(224,) * (spatial_dims or 2)}; got {output_size!r}")
    return size
