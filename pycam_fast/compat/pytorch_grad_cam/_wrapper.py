"""The call convention and hook release that the wrapping methods share.

pytorch-grad-cam's FinerCAM, RefineCAM, SESS and DeepFeatureFactorization hold other CAMs (or a hook recorder).
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

__all__ = ["HoldsHooks", "release_cam"]


def release_cam(cam: Any) -> None:
    """Remove a CAM's hooks.

    Its ``release()`` (this package's CAMs, hook recorders), else its ``activations_and_grads`` (a pytorch-grad-cam
    CAM).
    """
    release = getattr(cam, "release", None)
    if release is not None:
        release()
    elif hasattr(cam, "activations_and_grads"):
        cam.activations_and_grads.release()


class HoldsHooks:
    """A wrapping method: ``__call__`` is ``forward``; ``release()``, a ``with`` block or deletion drop its hooks.

    The hooks are those of the CAMs / recorders (or lists of them) in the attributes named by :attr:`_holders`.
    """

    #: names of the attributes that hold hooks
    _holders: ClassVar[tuple[str, ...]] = ()

    def _hook_holders(self) -> list[Any]:
        """What holds hooks (only what is set: the object may be partly built)."""
        held: list[Any] = []
        for name in self._holders:
            value = vars(self).get(name)
            held += value if isinstance(value, list) else [] if value is None else [value]
        return held

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """See ``forward``."""
        return self.forward(*args, **kwargs)  # type: ignore[attr-defined]

    def release(self) -> None:
        """Remove the hooks (idempotent)."""
        for holder in self._hook_holders():
            release_cam(holder)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()
