"""pytorch-grad-cam's hook holder: the target layers' outputs of a forward, and their gradients after a backward."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

__all__ = ["ActivationsAndGradients"]


class ActivationsAndGradients:
    """Records each target layer's output during ``self(x)`` and, once a backward runs, its gradient.

    Attributes:
        activations: one entry per target-layer call, in forward order (``reshape_transform`` applied and detached
            when ``detach``, on the model's device: pytorch-grad-cam copies them to the CPU; the raw outputs
            otherwise).
        gradients: the matching gradients, in forward order, once a backward reached them (same treatment).
        handles: the hook handles (:meth:`release` removes them).

    Args:
        model: the model to run.
        target_layers: the submodules to record.
        reshape_transform: applied to activations and gradients when ``detach``.
        detach: store detached CPU copies (``True``) or the graph-connected tensors (``False``, for second-order
            methods such as ShapleyCAM).

    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: Sequence[nn.Module],
        reshape_transform: Callable[[Any], Tensor] | None,
        detach: bool = True,
    ) -> None:
        self.model = model
        self.gradients: list[Any] = []
        self.activations: list[Any] = []
        self.reshape_transform = reshape_transform
        self.detach = detach
        self.handles: list[Any] = []
        #: the graph-connected outputs whose gradients are awaited (what a backward must reach)
        self.raw_outputs: list[Tensor] = []
        #: called by :meth:`release` (a CAM's other hooks)
        self.on_release: Callable[[], None] | None = None
        self._pending: list[tuple[int, Any]] = []
        self._versions: list[int] = []
        self._register(target_layers)

    def _register(self, target_layers: Sequence[nn.Module]) -> None:
        for layer in target_layers:
            self.handles.append(layer.register_forward_hook(self.save_activation))
            self.handles.append(layer.register_forward_hook(self.save_gradient))

    @contextmanager
    def recording(self, target_layers: Sequence[nn.Module]) -> Iterator[None]:
        """Hooks on ``target_layers`` for the duration of the block.

        On exit they are removed and everything recorded is dropped (exceptions included).
        """
        first = len(self.handles)
        self._register(target_layers)
        try:
            yield
        finally:
            for handle in self.handles[first:]:
                handle.remove()
            del self.handles[first:]
            self.clear()

    def _prepare(self, value: Any) -> Any:
        if not self.detach:
            return value
        if self.reshape_transform is not None:
            value = self.reshape_transform(value)
        return value.detach()

    def save_activation(self, module: nn.Module, inputs: Any, output: Any) -> None:
        """Forward hook: record ``output``."""
        self.activations.append(self._prepare(output))

    def save_gradient(self, module: nn.Module, inputs: Any, output: Any) -> None:
        """Forward hook: register a tensor hook that records ``output``'s gradient (if it requires grad)."""
        if not isinstance(output, Tensor) or not output.requires_grad:
            return
        slot = len(self.activations) - 1  # the call this output belongs to
        self.raw_outputs.append(output)
        self._versions.append(output._version)

        def store(grad: Tensor) -> None:
            # backward reaches the layers in reverse order: keep forward order whatever the order of arrival
            self._pending.append((slot, self._prepare(grad)))
            self.gradients = [g for _, g in sorted(self._pending, key=lambda item: item[0])]

        output.register_hook(store)

    def __call__(self, x: Any) -> Any:
        """Clear what was recorded and run ``model(x)``."""
        self.gradients = []
        self.activations = []
        self.raw_outputs = []
        self._versions = []
        self._pending = []
        return self.model(x)

    def outputs_modified_in_place(self) -> bool:
        """Whether a recorded output was modified in place after its layer (e.g. by ``ReLU(inplace=True)``).

        Its gradient hook then fires only for a backward that goes past the layer (to the input).
        """
        return any(out._version != version for out, version in zip(self.raw_outputs, self._versions, strict=True))

    def clear(self) -> None:
        """Detach and drop everything recorded."""
        for value in (*self.activations, *self.gradients):
            if isinstance(value, Tensor):
                try:
                    value.detach_()
                except RuntimeError:  # a view cannot be detached in place: dropping the reference is enough
                    pass
        self.activations.clear()
        self.gradients.clear()
        self.raw_outputs = []
        self._versions = []
        self._pending = []

    def release(self) -> None:
        """:meth:`clear`, then remove every hook (idempotent)."""
        self.clear()
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        if self.on_release is not None:
            self.on_release()
